//! Google credentials as the binary finds them: the default `bigquery.auth` and `ferry publish`
//! use Application Default Credentials. No server is needed: a credentials file that cannot be
//! used stops the run before any request. (The token exchange itself is proved against a local
//! token endpoint in `crates/ferry-google/src/auth/tests/adc.rs`.)

use std::process::Command;

use serde_json::{json, Value};

use crate::common::ferry_bin;

fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn config(auth: Option<&str>) -> Value {
    let mut bigquery = json!({"project": "proj-1", "endpoint": format!("http://{}", closed_port())});
    if let Some(auth) = auth {
        bigquery["auth"] = json!(auth);
    }
    json!({
        "exports": [{"name": "orders", "source_table": "shop.orders", "destination_filename": "ORDERS_{datetime}.csv"}],
        "sftp": {"path": "/upload", "host": "127.0.0.1", "username": "u", "host_key_fingerprint": "SHA256:AnxDfrPmOL4De0eahuVc3Rk2UV15ZF6y0jItw/GoFp4"},
        "metadata_table": "proj-1.ops.export_metadata",
        "bigquery": bigquery,
    })
}

/// Runs ferry with only these variables (no HOME: no gcloud file is found by accident).
fn ferry(args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(ferry_bin()).env_clear().envs(vars.iter().copied()).args(args).output().expect("ferry");
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn bigquery_and_publish_find_credentials_as_googles_clients_do() {
    let dir = std::env::temp_dir().join(ferry_testkit::unique("ferry-adc"));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.json");
    std::fs::write(&key, r#"{"type": "external_account", "audience": "//iam.googleapis.com/x"}"#).unwrap();
    let key_str = key.to_str().unwrap();
    let refused = format!(
        r#"Google credentials file {key_str} (named by GOOGLE_APPLICATION_CREDENTIALS): type: "external_account" is not supported"#
    );
    let metadata = closed_port();
    let vars = [
        ("SFTP_PASSWORD", "pw"),
        ("GOOGLE_APPLICATION_CREDENTIALS", key_str),
        ("GCE_METADATA_HOST", metadata.as_str()),
        // The endpoint is plain HTTP on this machine.
        ("FERRY_ALLOW_PLAINTEXT_LOOPBACK", "1"),
    ];

    let run = |auth: Option<&str>| {
        let path = dir.join(format!("{}.json", auth.unwrap_or("default")));
        std::fs::write(&path, config(auth).to_string()).unwrap();
        ferry(&["--config", path.to_str().unwrap(), "plan"], &vars)
    };
    // The default is application_default: the file named by GOOGLE_APPLICATION_CREDENTIALS.
    for auth in [None, Some("application_default")] {
        let (code, out) = run(auth);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(&format!("BigQuery credentials: {refused}")), "{auth:?}: {out}");
    }
    // metadata_server asks only the metadata server.
    let (code, out) = run(Some("metadata_server"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("metadata server {metadata}: no answer")) && !out.contains("key.json"), "{out}");

    // ferry publish: without a token in GOOGLE_OAUTH_ACCESS_TOKEN, the same discovery.
    let (code, out) = ferry(&["publish", "--topic", "projects/proj-1/topics/ferry"], &vars);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&refused), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}
