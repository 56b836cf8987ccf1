//! Benchmark (see `dev/bench`): encodes generated rows of 10 mixed columns, as the BigQuery
//! REST API hands them to ferry (scalars as text, TIMESTAMP as microseconds), to CSV bytes on
//! one core, and prints `rows/s bytes seconds sha256_seconds` (the last: hashing that many
//! bytes alone, the share of the SHA-256 every export computes).
//!
//! Usage: encode [ROWS] [none|gzip]

use std::time::Instant;

use ferry_core::config::Compression;
use ferry_core::encode::{Cell, Column, ColumnType, CsvEncoder, CsvOptions};
use sha2::{Digest, Sha256};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args.first().map(|a| a.parse().expect("ROWS")).unwrap_or(1_000_000);
    let compression = match args.get(1).map(String::as_str) {
        Some("gzip") => Compression::Gzip,
        _ => Compression::None,
    };
    let col = |name: &str, ty: ColumnType| Column { name: name.to_owned(), ty, repeated: false };
    let columns = vec![
        col("id", ColumnType::Int64),
        col("name", ColumnType::String),
        col("amount", ColumnType::Numeric),
        col("score", ColumnType::Float64),
        col("active", ColumnType::Bool),
        col("created_at", ColumnType::Timestamp),
        col("updated_at", ColumnType::Timestamp),
        col("day", ColumnType::Date),
        col("category", ColumnType::String),
        col("qty", ColumnType::Int64),
    ];
    let t = |s: String| Cell::Text(s);
    let rows: Vec<Vec<Cell>> = (1..=n)
        .map(|i| {
            let ts = (1_704_067_200_000_000 + i * 1_000_000).to_string();
            vec![
                t(i.to_string()),
                t(format!("customer-{i}")),
                t(format!("{}.{:02}", i / 100, i % 100)),
                t(format!("{}", i as f64 * 1.5)),
                t(if i % 2 == 0 { "true" } else { "false" }.to_owned()),
                t(ts.clone()),
                t(ts),
                t("2024-01-01".to_owned()),
                if i % 10 == 0 { Cell::Null } else { t("category-a, \"quoted\"".to_owned()) },
                t((i % 7).to_string()),
            ]
        })
        .collect();

    let t0 = Instant::now();
    let mut enc = CsvEncoder::new(columns, CsvOptions { delimiter: b',', header: true, compression });
    for row in &rows {
        enc.write_row(row).expect("encode");
        if enc.buffered() >= 1 << 20 {
            std::hint::black_box(enc.take());
        }
    }
    let (tail, totals) = enc.finish();
    std::hint::black_box(tail);
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(totals.rows, n);
    // The part of that which is the SHA-256 every export records: the same number of bytes hashed alone.
    let block = vec![b'x'; 1 << 20];
    let t1 = Instant::now();
    let mut sha = Sha256::new();
    for _ in 0..totals.bytes >> 20 {
        sha.update(&block);
    }
    std::hint::black_box(sha.finalize());
    println!("{:.0} {} {secs:.3} {:.3}", n as f64 / secs, totals.bytes, t1.elapsed().as_secs_f64());
}
