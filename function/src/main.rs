//! `ferry`: the Cloud Run service and the CLI, one binary.

fn main() {
    println!("ferry {}", env!("CARGO_PKG_VERSION"));
}
