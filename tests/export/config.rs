use std::process::Command;

use ferry::components::Registry;
use ferry_core::config::RawConfig;
use ferry_testkit::stack;
use serde_json::{json, Value};

use crate::common::{ferry_bin, orders, Fixture};

fn base() -> Value {
    json!({
        "exports": [{
            "name": "orders", "source_table": "shop.orders", "destination_filename": "ORDERS_{datetime}.csv",
            "timestamp_column": "updated_at", "incremental": true, "columns": ["id", "updated_at"]
        }],
        "sftp": {"path": "/upload", "host": "127.0.0.1", "username": "u", "host_key_fingerprint": "SHA256:AnxDfrPmOL4De0eahuVc3Rk2UV15ZF6y0jItw/GoFp4"},
        "metadata_table": "proj-1.ops.export_metadata"
    })
}

fn env(k: &str) -> Option<String> {
    (k == "SFTP_PASSWORD").then(|| "pw".to_owned())
}

fn errors_of(v: &Value) -> String {
    match RawConfig::from_json(&v.to_string()).and_then(|r| r.validate(&Registry, &env)) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

fn with(path: &str, value: Value) -> Value {
    let mut v = base();
    let mut cur = &mut v;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = match p.parse::<usize>() {
            Ok(i) => &mut cur[i],
            Err(_) => &mut cur[*p],
        };
    }
    let last = parts[parts.len() - 1];
    if value.is_null() {
        cur.as_object_mut().unwrap().remove(last);
    } else {
        cur[last] = value;
    }
    v
}

#[test]
fn the_base_fixture_is_valid() {
    assert_eq!(errors_of(&base()), "");
}

#[test]
fn window_settings_apply_to_incremental_exports_and_set_the_date_zone() {
    let mut v = with("exports.0.incremental", json!(false));
    for (k, val) in
        [("settle", json!(0)), ("cursor_time_zone", json!("Etc/UTC")), ("partial_days", json!(true)), ("null_cursor", json!("fail"))]
    {
        v["exports"][0][k] = val;
    }
    let e = errors_of(&v);
    for f in ["settle", "cursor_time_zone", "partial_days", "null_cursor"] {
        assert!(e.contains(&format!("exports[0].{f}: {f} applies to incremental exports only")), "{e}");
    }

    let mut v = base();
    v["exports"][0]["settle"] = json!(0);
    v["exports"][0]["cursor_time_zone"] = json!("Europe/Berlin");
    v["exports"][0]["null_cursor"] = json!("fail");
    v["schedules"] = json!([{"name": "a", "cron": "0 2 * * *", "time_zone": "Pacific/Auckland"}]);
    let config = RawConfig::from_json(&v.to_string()).unwrap().validate(&Registry, &env).expect("valid");
    let x = &config.exports[0];
    assert_eq!((x.settle, x.cursor_zone.name(), x.null_cursor.clone()), (0, "Europe/Berlin", ferry_core::config::NullCursor::Fail));
    assert_eq!(x.date_zone.name(), "Pacific/Auckland", "the run date follows the schedule's zone");
    let defaults = RawConfig::from_json(&base().to_string()).unwrap().validate(&Registry, &env).expect("valid");
    let x = &defaults.exports[0];
    assert_eq!((x.settle, x.cursor_zone.name(), x.date_zone.name(), x.partial_days), (300, "UTC", "UTC", false));
}

#[test]
fn bad_configs_name_the_field_and_what_was_expected() {
    let cases: Vec<(Value, &str)> = vec![
        (with("exports.0.colour", json!("red")), "exports[0].colour: unknown field `colour`, expected one of `name`"),
        (with("sftp.hostname", json!("x")), "sftp.hostname: unknown field `hostname`"),
        (with("exports.0.incremental", json!("yes")), "exports[0].incremental: invalid type: string \"yes\", expected a boolean"),
        (with("sftp.port", json!(70000)), "sftp.port: invalid value: integer `70000`, expected u16"),
        (with("exports.0.compression", json!("ZIP")), "exports[0].compression: unknown variant `ZIP`, expected `NONE` or `GZIP`"),
        (with("metadata_table", json!(5)), "metadata_table: invalid type: integer `5`, expected a string"),
        (with("exports.0.destination_filename", Value::Null), "exports[0]: missing field `destination_filename`"),
        (
            with("exports.0.source_table", json!("shop.orders; DROP TABLE x")),
            "exports[0].source_table: \"orders; DROP TABLE x\" is not a valid table name",
        ),
        (
            with("exports.0.columns", json!(["id", "a; DROP TABLE x"])),
            "exports[0].columns[1]: \"a; DROP TABLE x\" is not a valid column name",
        ),
        (with("exports.0.columns", json!(["id", "ID"])), "exports[0].columns[1]: duplicate column \"ID\""),
        (with("exports.0.columns", json!([])), "exports[0].columns: expected at least one column"),
        (with("exports.0.timestamp_column", json!("updated at")), "exports[0].timestamp_column: \"updated at\" is not a valid column name"),
        (with("exports.0.timestamp_column", Value::Null), "exports[0].timestamp_column: incremental exports need a timestamp_column"),
        (with("exports.0.query", json!("SELECT 1")), "exports[0].query: set either source_table or query, not both"),
        (with("exports.0.source_table", Value::Null), "exports[0].source_table: missing: set source_table (dataset.table) or query"),
        (
            with("exports.0.destination_filename", json!("../etc/passwd")),
            "exports[0].destination_filename: \"../etc/passwd\" contains a path separator",
        ),
        (with("exports.0.destination_filename", json!("{year}.csv")), "exports[0].destination_filename: unknown placeholder {year}"),
        (
            with("exports.0.destination_filename", json!(".hidden_{date}")),
            "exports[0].destination_filename: \".hidden_{date}\" starts with '.'",
        ),
        (with("exports.0.name", json!("bad name")), "exports[0].name: expected 1 to 64 letters, digits, '_' or '-'"),
        (with("exports.0.delimiter", json!(";;")), "exports[0].delimiter: expected one ASCII character"),
        (with("metadata_table", json!("justatable")), "metadata_table: expected `dataset.table` or `project.dataset.table`"),
        (with("sftp.host", Value::Null), "sftp.host: missing: set sftp.host or the SFTP_HOST environment variable"),
        (with("sftp.host_key_fingerprint", Value::Null), "sftp.known_hosts_file: missing: ferry never trusts an unknown host key"),
        (
            with("sftp.host_key_fingerprint", json!("MD5:aa:bb")),
            "sftp.host_key_fingerprint: expected SHA256: followed by 43 base64 characters",
        ),
        (
            with("sftp.password_env", json!("NOT_SET_ANYWHERE")),
            "sftp.password_env: no credentials: environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            with("sftp.known_hosts_file", json!("/nonexistent/known_hosts")),
            "sftp.host_key_fingerprint: set either known_hosts_file or host_key_fingerprint, not both",
        ),
        (with("exports.0.format", json!("PARQUET")), "exports[0].format: unknown variant `PARQUET`, expected `CSV`"),
        (with("bigquery.auth", json!("token_env")), "bigquery.token_env: auth is token_env"),
        (
            with("notifications", json!({"email": {"smtp_host": "h", "from": "not-an-address", "to": []}})),
            "notifications.email.from: expected an email address",
        ),
        (
            with("notifications", json!({"slack": {"webhook_url_env": "NO_SUCH_VAR"}})),
            "notifications.slack.webhook_url_env: environment variable NO_SUCH_VAR is not set",
        ),
        (json!([1, 2]), "expected a JSON object with `exports`, `sftp` and `metadata_table`"),
        (with("exports.0.max_rows_per_file", json!(0)), "exports[0].max_rows_per_file: expected a number of rows of at least 1, found 0"),
        (with("exports.0.max_bytes_per_file", json!(100)), "exports[0].max_bytes_per_file: expected at least 1024 bytes, found 100"),
        (with("exports.0.max_rows_per_file", json!(-5)), "exports[0].max_rows_per_file: invalid value: integer `-5`, expected u64"),
        (
            with("schedules", json!([{"name": "nightly", "cron": "0 2 * *"}])),
            "schedules[0].cron: expected five cron fields (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\", found \"0 2 * *\"",
        ),
        (
            with("schedules", json!([{"name": "nightly", "cron": "0 2 * * *", "exports": ["order"]}])),
            "schedules[0].exports[0]: no export is named \"order\"",
        ),
        (with("schedules", json!([{"name": "Nightly Run", "cron": "0 2 * * *"}])), "schedules[0].name: expected 1 to 40 lowercase letters"),
        (
            with("schedules", json!([{"name": "a", "cron": "0 2 * * *", "time_zone": "Europe Berlin"}])),
            "schedules[0].time_zone: expected an IANA time zone",
        ),
        (
            with("schedules", json!([{"name": "a", "cron": "0 2 * * *"}, {"name": "a", "cron": "0 3 * * *"}])),
            "schedules[1].name: duplicate schedule name \"a\"",
        ),
        (with("schedules", json!([{"name": "a", "cron": "0 2 * * *", "when": "daily"}])), "schedules[0].when: unknown field `when`"),
        (with("exports.0.settle", json!(86_401)), "exports[0].settle: expected at most 86400 seconds (a day), found 86401"),
        (with("exports.0.settle", json!(-1)), "exports[0].settle: invalid value: integer `-1`, expected u64"),
        (
            with("exports.0.cursor_time_zone", json!("Mars/Olympus")),
            "exports[0].cursor_time_zone: expected an IANA time zone such as \"Europe/Berlin\" or \"Etc/UTC\", found \"Mars/Olympus\"",
        ),
        (
            with("exports.0.null_cursor", json!("skip")),
            "exports[0].null_cursor: unknown variant `skip`, expected one of `report`, `fail`, `arrival_column`",
        ),
        (
            with("exports.0.null_cursor", json!({"arrival_column": "loaded at"})),
            "exports[0].null_cursor.arrival_column: \"loaded at\" is not a valid column name",
        ),
        (
            with("exports.0.null_cursor", json!({"arrival_column": "updated_at"})),
            "exports[0].null_cursor.arrival_column: \"updated_at\" is the timestamp_column itself",
        ),
        (with("exports.0.lookback", json!(31_622_401)), "exports[0].lookback: expected at most 31622400 (a year in seconds), found 31622401"),
        (
            with("schedules", json!([{"name": "a", "cron": "0 2 * * *", "time_zone": "Mars/Olympus"}])),
            "schedules[0].time_zone: expected an IANA time zone",
        ),
        (
            with(
                "schedules",
                json!([{"name": "a", "cron": "0 2 * * *", "time_zone": "Europe/Berlin"}, {"name": "b", "cron": "0 3 * * *", "time_zone": "Asia/Tokyo"}]),
            ),
            "schedules[1].time_zone: export \"orders\" is also run by schedules[0] in Europe/Berlin",
        ),
        (
            with("exports.0.max_rows_per_file", json!(1000)),
            "exports[0].destination_filename: \"ORDERS_{datetime}.csv\" has no {part} placeholder, which max_rows_per_file needs to name each file, e.g. \"ORDERS_{datetime}_{part}.csv\"",
        ),
    ];
    assert!(cases.len() >= 20);
    for (i, (cfg, expected)) in cases.iter().enumerate() {
        let got = errors_of(cfg);
        assert!(got.contains(expected), "case {i}: expected {expected:?} in:\n{got}");
    }
    // Every problem is reported at once.
    let mut many = with("exports.0.columns", json!(["a b"]));
    many["sftp"]["port"] = json!(0);
    let got = errors_of(&many);
    assert!(got.contains("2 problems") && got.contains("columns[0]") && got.contains("sftp.port"), "{got}");
}

#[test]
fn an_offline_check_leaves_out_only_what_the_deployment_provides() {
    use ferry_core::config::Deployment;
    let nothing = |_: &str| None;
    // The seed form takes host, user, password and host-key trust from the environment, and
    // names files that exist only where it is deployed.
    let mut v = with("sftp", json!({"path": "/upload", "known_hosts_file": "/secrets/known-hosts/known_hosts"}));
    v["notifications"] = json!({"slack": {}, "email": {"smtp_host": "h", "from": "a@b.example", "to": ["c@d.example"], "username": "u", "ca_file": "/secrets/ca.pem"}});
    let raw = RawConfig::from_json(&v.to_string()).expect("parses");
    let here = raw.validate(&Registry, &nothing).expect_err("secrets and files are missing here").to_string();
    for missing in [
        "sftp.host",
        "sftp.username",
        "sftp.password_env",
        "sftp.known_hosts_file",
        "notifications.slack",
        "notifications.email.password_env",
        "ca_file",
    ] {
        assert!(here.contains(missing), "{missing} not reported in:\n{here}");
    }
    raw.validate_with(&Registry, &nothing, Deployment::Elsewhere).expect("nothing else is wrong");

    // Everything that is the config's own is still checked.
    let mut bad = v.clone();
    bad["exports"][0]["columns"] = json!(["id", "a; DROP TABLE x"]);
    bad["schedules"] = json!([{"name": "n", "cron": "every night"}]);
    let raw = RawConfig::from_json(&bad.to_string()).expect("parses");
    let got = raw.validate_with(&Registry, &nothing, Deployment::Elsewhere).expect_err("bad column and cron").to_string();
    assert!(got.contains("2 problems") && got.contains("exports[0].columns[1]") && got.contains("schedules[0].cron"), "{got}");
}

fn workspace_file(rel: &str) -> std::path::PathBuf {
    ferry_testkit::workspace_root().join(rel)
}

/// Every config the repository ships passes `ferry check --no-secrets`, and the examples also
/// pass the full `ferry check` once their secrets and files are supplied.
#[test]
fn every_shipped_config_passes_ferry_check() {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for dir in ["configs", "configs/examples"] {
        for e in std::fs::read_dir(workspace_file(dir)).expect("configs directory") {
            let p = e.expect("entry").path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if name.ends_with(".json") && !name.ends_with(".schema.json") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 6, "expected default.json and the examples, found {files:?}");
    let bin = ferry_bin();
    for f in &files {
        let out =
            Command::new(&bin).env_clear().args(["--config", f.to_str().unwrap(), "check", "--no-secrets"]).output().expect("ferry check");
        assert!(out.status.success(), "{}: {}{}", f.display(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"), "{}", f.display());
    }

    // The full check: the same file with its secret files pointed at real ones (the only
    // change), and its environment variables set.
    let dir = std::env::temp_dir().join(ferry_testkit::unique("ferry-examples"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("known_hosts"),
        "sftp.partner.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
    )
    .unwrap();
    std::fs::write(dir.join("id_ed25519"), "not read by check\n").unwrap();
    for f in files.iter().filter(|f| f.parent().is_some_and(|p| p.ends_with("examples"))) {
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        // The mounted files, in the seed form's sftp section and in component destinations.
        let mut sections = vec![v["sftp"].clone()];
        sections.extend(v["exports"].as_array().unwrap().iter().map(|x| x["destination"].clone()));
        let local = |mut s: Value| {
            if s.get("known_hosts_file").is_some() {
                s["known_hosts_file"] = json!(dir.join("known_hosts"));
            }
            if s.get("private_key_file").is_some() {
                s["private_key_file"] = json!(dir.join("id_ed25519"));
            }
            s
        };
        if v.get("sftp").is_some() {
            v["sftp"] = local(sections.remove(0));
        } else {
            sections.remove(0);
        }
        for (i, d) in sections.into_iter().enumerate() {
            if !d.is_null() {
                v["exports"][i]["destination"] = local(d);
            }
        }
        let path = dir.join(f.file_name().unwrap());
        std::fs::write(&path, v.to_string()).unwrap();
        let out = Command::new(&bin)
            .env_clear()
            .envs([
                ("SFTP_HOST", "sftp.partner.example"),
                ("SFTP_USERNAME", "acme"),
                ("SFTP_PASSWORD", "pw"),
                ("SFTP_KNOWN_HOSTS", dir.join("known_hosts").to_str().unwrap()),
                ("EMAIL_PASSWORD", "pw"),
                ("SLACK_WEBHOOK_URL", "https://hooks.slack.example/services/T/B/X"),
            ])
            .args(["--config", path.to_str().unwrap(), "check"])
            .output()
            .expect("ferry check");
        assert!(out.status.success(), "{}: {}{}", f.display(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `configs/ferry.schema.json` is generated from the code; this fails when they drift apart.
#[test]
fn the_checked_in_json_schema_matches_the_code() {
    let path = workspace_file("configs/ferry.schema.json");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = ferry::components::json_schema();
    assert!(
        checked_in == generated,
        "{} is out of date with the config types: regenerate it with `cargo run -q -p ferry -- schema > configs/ferry.schema.json`",
        path.display()
    );
    // It describes the real shape: both forms' required fields, no unknown fields, and every
    // component type with its own fields.
    let schema: Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(schema["required"], json!(["exports"]));
    assert_eq!(schema["additionalProperties"], json!(false));
    let export = &schema["$defs"]["RawExport"];
    assert_eq!(export["additionalProperties"], json!(false));
    for field in ["source", "destination", "source_table", "destination_filename", "compression"] {
        assert!(export["properties"].get(field).is_some(), "{field} is not in the export's schema");
    }
    assert_eq!(export["properties"]["source"]["oneOf"][0]["properties"]["type"]["const"], json!("bigquery"));
    let sftp = &export["properties"]["destination"]["oneOf"][0];
    assert_eq!(sftp["properties"]["type"]["const"], json!("sftp"));
    assert_eq!(sftp["additionalProperties"], json!(false));
    assert!(schema["properties"]["sftp"]["allOf"][0]["properties"].get("host").is_some());
}

#[test]
fn a_query_keeps_only_one_statement() {
    let mut v = with("exports.0.source_table", Value::Null);
    v["exports"][0]["query"] = json!("SELECT * FROM shop.orders WHERE day = '{date}'; DELETE FROM shop.orders WHERE TRUE");
    assert!(errors_of(&v).contains("exports[0].query: expected a single SELECT statement"), "{}", errors_of(&v));
}

#[test]
fn the_seed_configuration_loads_unchanged() {
    let seed = r#"{
      "exports": [
        {"name": "shopify_customers", "source_table": "prod_staging.shopify_customerdata", "destination_filename": "SHOPIFYCUSTOMERDATA_{datetime}.csv",
         "timestamp_column": "last_updated_at", "incremental": true, "columns": ["id", "email", "last_updated_at"]},
        {"name": "klaviyo_customers", "source_table": "prod_staging.klaviyo_customerdata", "destination_filename": "KLAVIYOCUSTOMERDATA_{datetime}.csv",
         "timestamp_column": "last_updated_at", "incremental": true, "columns": ["id", "address_key", "_run_id"]}
      ],
      "sftp": {"path": "/To_Verite", "port": 22},
      "metadata_table": "project.dataset.export_metadata"
    }"#;
    let env = |k: &str| match k {
        "SFTP_HOST" => Some("sftp.partner.example".to_owned()),
        "SFTP_USERNAME" => Some("verite".to_owned()),
        "SFTP_PASSWORD" => Some("pw".to_owned()),
        "SFTP_HOST_KEY_FINGERPRINT" => Some("SHA256:AnxDfrPmOL4De0eahuVc3Rk2UV15ZF6y0jItw/GoFp4".to_owned()),
        _ => None,
    };
    let raw = RawConfig::from_json(seed).expect("parses");
    let config = raw.validate(&Registry, &env).expect("valid");
    assert_eq!(config.exports.len(), 2);
    assert_eq!(config.bigquery.project, "project");
    // Each export reads its BigQuery table and writes to the one SFTP server of the file.
    for x in &config.exports {
        let sftp = x.destination.component.settings::<ferry_sftp::SftpSettings>().expect("an sftp destination");
        assert_eq!(
            (sftp.host.as_str(), sftp.port, sftp.username.as_str(), sftp.directory.as_str()),
            ("sftp.partner.example", 22, "verite", "/To_Verite")
        );
        let file = x.file().expect("a file destination");
        assert_eq!(file.on_existing, ferry_core::config::OnExisting::Fail);
        assert!(!file.split.is_split() && file.header && file.delimiter == b',');
    }
    let source = config.exports[1].source.settings::<ferry_bigquery::component::SourceSettings>().expect("a bigquery source");
    assert_eq!(source.columns, ["id", "address_key", "_run_id"]);
    assert_eq!(config.exports[1].source.describe, "prod_staging.klaviyo_customerdata");
    // The component form it maps to, as `ferry check --explain` prints it.
    assert_eq!(
        raw.normalized()["exports"][0],
        json!({
            "name": "shopify_customers", "timestamp_column": "last_updated_at", "incremental": true,
            "source": {"type": "bigquery", "table": "prod_staging.shopify_customerdata", "columns": ["id", "email", "last_updated_at"]},
            "destination": {"type": "sftp", "path": "/To_Verite", "port": 22, "file": {"name": "SHOPIFYCUSTOMERDATA_{datetime}.csv"}}
        })
    );
}

/// The CLI end to end, and a sentinel secret that must not appear in anything it prints.
#[tokio::test]
async fn cli_runs_an_export_and_never_prints_the_password() {
    let f = Fixture::new("cli").await;
    orders(&f, &[(1, "2026-08-01 00:00:00+00"), (2, "2026-08-02 00:00:00+00")]).await;
    let export = json!({"name": f.export, "source_table": format!("{}.orders", f.ds.name), "destination_filename": "cli_{datetime}.csv", "timestamp_column": "updated_at", "incremental": true});
    let good = f.json(export.clone(), json!({}));
    let path = f.dir.path.join("config.json");
    std::fs::write(&path, good.to_string()).unwrap();
    let bin = ferry_bin();
    let out = Command::new(&bin).args(["--config", path.to_str().unwrap(), "run"]).output().expect("run ferry");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("SUCCESS  2 rows"), "{stdout}");
    let files: Vec<String> = f.dir.names().into_iter().filter(|n| n.starts_with("cli_")).collect();
    assert_eq!(files.len(), 1);

    let history = Command::new(&bin).args(["--config", path.to_str().unwrap(), "history"]).output().expect("history");
    assert!(String::from_utf8_lossy(&history.stdout).contains("2026-08-02T00:00:00.000000Z"));

    // Wrong password, given as a sentinel through the environment.
    let sentinel = "sentinel-Pw-3c8d0a77";
    let bad = f.json(export, json!({"username": stack().var("FERRY_SFTP_PASSWORD_USER"), "private_key_file": null}));
    std::fs::write(&path, bad.to_string()).unwrap();
    let out = Command::new(&bin)
        .args(["--config", path.to_str().unwrap(), "run"])
        .env("SFTP_PASSWORD", sentinel)
        .env("FERRY_LOG", "debug")
        .output()
        .expect("run");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("rejected password authentication"), "{all}");
    assert!(!all.contains(sentinel), "the password leaked:\n{all}");

    let check = Command::new(&bin).args(["--config", path.to_str().unwrap(), "check"]).env_remove("SFTP_PASSWORD").output().expect("check");
    assert_eq!(check.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&check.stderr).contains("sftp.password_env"), "{}", String::from_utf8_lossy(&check.stderr));
}

/// The component form: the same export written with `source` and `destination` delivers the
/// same bytes as its seed form, and its errors name the component's own fields.
#[tokio::test]
async fn the_component_form_delivers_what_the_seed_form_does() {
    let f = Fixture::new("components").await;
    orders(&f, &[(1, "2026-08-01 00:00:00+00"), (2, "2026-08-02 00:00:00+00")]).await;
    let export = json!({"name": f.export, "source_table": format!("{}.orders", f.ds.name), "destination_filename": "{name}_seed.csv", "columns": ["id", "note"]});
    let seed = f.json(export, json!({}));
    let mut components = RawConfig::from_json(&seed.to_string()).expect("parses").normalized().clone();
    let destination = &mut components["exports"][0]["destination"];
    assert_eq!(destination["type"], json!("sftp"));
    destination["file"]["name"] = json!("{name}_components.csv");
    assert!(components.get("sftp").is_none(), "{components}");

    for config in [&seed, &components] {
        let r = f.run(&f.load(config).expect("valid"), false).await;
        assert!(r.succeeded(), "{r:?}");
    }
    let seed_name = format!("{}_seed.csv", f.export);
    let components_name = format!("{}_components.csv", f.export);
    assert_eq!(f.dir.read(&seed_name), b"id,note\r\n1,row 1\r\n2,row 2\r\n");
    assert_eq!(f.dir.read(&components_name), f.dir.read(&seed_name));

    let mut bad = components.clone();
    bad["exports"][0]["destination"]["file"]["name"] = json!("../up.csv");
    bad["exports"][0]["source"]["colour"] = json!("red");
    let got = f.load(&bad).expect_err("two problems").to_string();
    assert!(got.contains("exports[0].destination.file.name: \"../up.csv\" contains a path separator"), "{got}");
    assert!(got.contains("exports[0].source.colour: unknown field `colour`"), "{got}");
    let mut unknown = components.clone();
    unknown["exports"][0]["destination"]["type"] = json!("ftp");
    let got = f.load(&unknown).expect_err("unknown type").to_string();
    assert!(got.contains("exports[0].destination.type: unknown destination type \"ftp\"; expected one of sftp"), "{got}");
}

/// An incremental export that overwrites needs names that cannot repeat between runs: a repeated
/// name replaces a file the partner may not have collected yet. The check names the field, says
/// why and how to fix it; `allow_repeating_names` turns it into a warning.
#[test]
fn an_incremental_export_that_overwrites_needs_names_that_do_not_repeat() {
    let overwrite = |name: &str| {
        let mut v = with("exports.0.destination_filename", json!(name));
        v["sftp"]["on_existing"] = json!("overwrite");
        v
    };
    let got = errors_of(&overwrite("ORDERS_{date}.csv"));
    assert!(got.contains("1 problem"), "{got}");
    for part in [
        "exports[0].destination_filename: \"ORDERS_{date}.csv\" can repeat between runs",
        "{date} stays the same all day",
        "sftp.on_existing = overwrite",
        "its rows are lost",
        "Add {run_id} to the name (e.g. \"ORDERS_{date}_{run_id}.csv\")",
        "set sftp.on_existing to fail",
        "set exports[0].allow_repeating_names to true",
    ] {
        assert!(got.contains(part), "{part:?} missing in:\n{got}");
    }
    assert!(errors_of(&overwrite("ORDERS.csv")).contains("\"ORDERS.csv\" can repeat between runs"));

    // Names that cannot repeat, or a file that is never replaced, or a full export (every run
    // delivers every row again) are fine.
    for name in ["ORDERS_{run_id}.csv", "ORDERS_{datetime_ms}.csv", "ORDERS_{datetime}.csv", "ORDERS_{date}_{run_id}.csv"] {
        assert_eq!(errors_of(&overwrite(name)), "", "{name}");
    }
    assert_eq!(errors_of(&with("exports.0.destination_filename", json!("ORDERS_{date}.csv"))), "", "on_existing: fail");
    let mut full = overwrite("ORDERS_{date}.csv");
    full["exports"][0]["incremental"] = json!(false);
    assert_eq!(errors_of(&full), "", "a full export");

    // The opt-in: valid, with a warning at the same field.
    let mut allowed = overwrite("ORDERS_{date}.csv");
    allowed["exports"][0]["allow_repeating_names"] = json!(true);
    let config = RawConfig::from_json(&allowed.to_string()).unwrap().validate(&Registry, &env).expect("allowed");
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    let w = config.warnings[0].to_string();
    assert!(w.starts_with("exports[0].destination_filename: \"ORDERS_{date}.csv\" can repeat between runs"), "{w}");
    assert!(w.ends_with("allowed by exports[0].allow_repeating_names"), "{w}");
    let fine = RawConfig::from_json(&overwrite("ORDERS_{run_id}.csv").to_string()).unwrap().validate(&Registry, &env).unwrap();
    assert_eq!(fine.warnings, [], "no warning when nothing is risky");

    // Component form: the same rule, with the component paths.
    let mut components = RawConfig::from_json(&overwrite("ORDERS_{date}.csv").to_string()).unwrap().normalized().clone();
    let got = errors_of(&components);
    assert!(got.contains("exports[0].destination.file.name: \"ORDERS_{date}.csv\" can repeat"), "{got}");
    assert!(got.contains("set exports[0].destination.file.allow_repeating_names to true"), "{got}");
    components["exports"][0]["destination"]["file"]["allow_repeating_names"] = json!(true);
    assert_eq!(errors_of(&components), "");
}

/// `ferry check` refuses the repeating name (exit 2, the message on stderr) and, when allowed,
/// passes and prints the warning.
#[test]
fn ferry_check_refuses_repeating_names_and_prints_the_warning_when_allowed() {
    let dir = std::env::temp_dir().join(ferry_testkit::unique("ferry-names"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut v = with("exports.0.destination_filename", json!("ORDERS_{date}.csv"));
    v["sftp"]["on_existing"] = json!("overwrite");
    let check = |v: &Value| {
        let path = dir.join("ferry.json");
        std::fs::write(&path, v.to_string()).unwrap();
        let out = Command::new(ferry_bin())
            .env_clear()
            .args(["--config", path.to_str().unwrap(), "check", "--no-secrets"])
            .output()
            .expect("check");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, _, stderr) = check(&v);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("exports[0].destination_filename: \"ORDERS_{date}.csv\" can repeat between runs"), "{stderr}");

    v["exports"][0]["allow_repeating_names"] = json!(true);
    let (code, stdout, stderr) = check(&v);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(": ok"), "{stdout}");
    assert!(
        stderr.contains("warning: exports[0].destination_filename: \"ORDERS_{date}.csv\" can repeat between runs")
            && stderr.contains("allowed by exports[0].allow_repeating_names"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn errors_with(v: &Value, vars: &[(&str, &str)]) -> String {
    let lookup = |k: &str| vars.iter().find(|(name, _)| *name == k).map(|(_, v)| (*v).to_owned()).or_else(|| env(k));
    match RawConfig::from_json(&v.to_string()).and_then(|r| r.validate(&Registry, &lookup)) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn oversized_values_get_one_short_error_that_names_the_field() {
    let three_mb = "x".repeat(3 << 20);
    let cases = [
        ("exports.0.destination_filename", json!(format!("{three_mb}.csv")), "exports[0].destination_filename: \"xxxxxxxx"),
        ("sftp.path", json!(format!("/{three_mb}")), "sftp.path: \"/xxxxxxx"),
        ("exports.0.columns", json!(vec!["id"; 10_001]), "exports[0].columns: expected at most 10000 items, found 10001"),
        ("sftp.path", json!("/a".repeat(2100)), "is longer than 4096 bytes, the longest path a server accepts"),
        ("sftp.path", json!(format!("/upload/{}", "d".repeat(256))), "the directory name \"dddd"),
        ("sftp.host", json!("bad host;rm"), "sftp.host: expected a host name or IP address, found \"bad host;rm\""),
    ];
    for (path, value, want) in cases {
        let e = errors_of(&with(path, value));
        assert!(e.contains(want), "{want:?} in {e}");
        assert!(e.len() < 600, "{path}: a short message, not the value: {} bytes", e.len());
    }
    let file = RawConfig::from_json(&format!("{{\"pad\": \"{}\"}}", "y".repeat(5 << 20))).unwrap_err().to_string();
    assert!(file.contains("more than 4194304 bytes") && file.len() < 200, "{file}");
}

#[test]
fn file_names_may_be_255_bytes_once_rendered_and_temporary_names_fit() {
    let name = |n: usize| with("exports.0.destination_filename", json!(format!("{}.csv", "n".repeat(n - 4))));
    let e = errors_of(&name(303));
    assert!(e.contains("can render names of 303 bytes; servers accept at most 255 bytes per name"), "{e}");
    assert_eq!(errors_of(&name(255)), "", "the temporary name is shortened, so a 255-byte name is fine");
    assert_eq!(errors_of(&name(239)), "");
    let e = errors_of(&with("exports.0.destination_filename", json!(format!("{}_{{datetime}}_{{part}}.csv", "n".repeat(230)))));
    assert!(e.contains("can render names of 261 bytes"), "{{part}} counts ten digits: {e}");
    let e = errors_of(&with("exports.0.destination_filename", json!(format!("{}_{{datetime}}.csv", "n".repeat(240)))));
    assert!(e.contains("can render names of 260 bytes"), "placeholders count at their widest: {e}");
}

#[test]
fn project_ids_are_checked_before_they_reach_sql_or_a_path() {
    let e = errors_of(&with("bigquery", json!({"project": "p`; DROP TABLE x; --"})));
    assert!(e.contains("bigquery.project: \"p`; DROP TABLE x; --\" is not a project id"), "{e}");
    let e = errors_with(&base(), &[("GOOGLE_CLOUD_PROJECT", "Evil/../x")]);
    assert!(e.contains("bigquery.project: \"Evil/../x\" (from GOOGLE_CLOUD_PROJECT) is not a project id"), "{e}");
    assert_eq!(errors_with(&base(), &[("GOOGLE_CLOUD_PROJECT", "my-proj-7")]), "");
    let e = errors_of(&with("metadata_table", json!("Bad_Proj.ops.meta")));
    assert!(e.contains("metadata_table: \"Bad_Proj\" is not a valid project id"), "{e}");
}

#[test]
fn credentials_travel_only_over_tls_unless_allowed_to_this_machine() {
    let token = [("BQ_TOKEN", "ya29.secret-token")];
    let bq = |endpoint: &str| with("bigquery", json!({"endpoint": endpoint, "auth": "token_env", "token_env": "BQ_TOKEN"}));
    let e = errors_with(&bq("http://bigquery.example.com"), &token);
    assert!(e.contains("bigquery.endpoint: an http:// URL would send the access token unencrypted: use https://"), "{e}");
    let e = errors_with(&bq("http://127.0.0.1:9050"), &token);
    assert!(e.contains("set FERRY_ALLOW_PLAINTEXT_LOOPBACK=1"), "{e}");
    assert_eq!(errors_with(&bq("http://127.0.0.1:9050"), &[token[0], ("FERRY_ALLOW_PLAINTEXT_LOOPBACK", "1")]), "");
    assert_eq!(errors_with(&bq("https://bigquery.example.com"), &token), "");
    let emulator = with("bigquery", json!({"endpoint": "http://10.1.2.3:9050", "auth": "none"}));
    assert_eq!(errors_of(&emulator), "", "no credentials, nothing to protect");

    let slack = with("notifications", json!({"slack": {}}));
    let e = errors_with(&slack, &[("SLACK_WEBHOOK_URL", "http://hooks.example.com/services/T/B/secret")]);
    assert!(e.contains("notifications.slack.webhook_url_env: an http:// URL would send the webhook URL (a secret) unencrypted"), "{e}");
    assert!(!e.contains("secret\""), "the URL is not quoted: {e}");
    assert_eq!(errors_with(&slack, &[("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/X")]), "");

    let mail = |host: &str| {
        with(
            "notifications",
            json!({"email": {"smtp_host": host, "tls": "none", "username": "u", "password_env": "MAIL_PW", "from": "f@example.com", "to": ["t@example.com"]}}),
        )
    };
    let e = errors_with(&mail("smtp.example.com"), &[("MAIL_PW", "pw")]);
    assert!(e.contains("notifications.email.tls: tls none would send the SMTP password unencrypted"), "{e}");
    let e = errors_with(&mail("127.0.0.1"), &[("MAIL_PW", "pw")]);
    assert!(e.contains("FERRY_ALLOW_PLAINTEXT_LOOPBACK=1"), "{e}");
    assert_eq!(errors_with(&mail("127.0.0.1"), &[("MAIL_PW", "pw"), ("FERRY_ALLOW_PLAINTEXT_LOOPBACK", "1")]), "");
}

#[test]
fn deadlines_are_configurable_within_bounds() {
    let e = errors_of(&with("bigquery", json!({"timeout_secs": 0, "query_deadline_secs": 5})));
    assert!(
        e.contains(
            "bigquery.timeout_secs: expected 30 to 3600 seconds (BigQuery holds a call open up to 10 s while a query runs), found 0"
        ),
        "{e}"
    );
    assert!(e.contains("bigquery.query_deadline_secs: expected 10 to 86400 seconds, found 5"), "{e}");
    let n = json!({"email": {"smtp_host": "smtp.example.com", "from": "f@example.com", "to": ["t@example.com"], "timeout_secs": 601},
                   "slack": {"timeout_secs": 0}});
    let e = errors_with(&with("notifications", n), &[("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/X")]);
    assert!(e.contains("notifications.email.timeout_secs: expected 1 to 600 seconds, found 601"), "{e}");
    assert!(e.contains("notifications.slack.timeout_secs: expected 1 to 600 seconds, found 0"), "{e}");

    let raw = RawConfig::from_json(&with("bigquery", json!({"timeout_secs": 42, "query_deadline_secs": 600})).to_string()).unwrap();
    let config = raw.validate(&Registry, &env).unwrap();
    assert_eq!((config.bigquery.timeout.as_secs(), config.bigquery.query_deadline.as_secs()), (42, 600));
    let config = RawConfig::from_json(&base().to_string()).unwrap().validate(&Registry, &env).unwrap();
    assert_eq!((config.bigquery.timeout.as_secs(), config.bigquery.query_deadline.as_secs()), (300, 1800), "the defaults");
}

#[test]
fn a_job_export_needs_a_job_to_start_and_its_settings_are_checked() {
    use ferry_core::config::{Deployment, Execution};
    let job = with("exports.0.execution", json!("job"));
    let got = errors_of(&job);
    assert!(
        got.contains("cloud_run_job.job: an export has execution \"job\"") && got.contains("FERRY_CLOUD_RUN_JOB"),
        "names the field and the variable: {got}"
    );
    let name = "projects/acme-data/locations/europe-west1/jobs/ferry-run";
    let config = RawConfig::from_json(&job.to_string())
        .unwrap()
        .validate(&Registry, &|k| if k == "FERRY_CLOUD_RUN_JOB" { Some(name.to_owned()) } else { env(k) })
        .expect("the job from the environment");
    assert_eq!(config.exports[0].execution, Execution::Job);
    let c = config.cloud_run_job.expect("the job");
    assert_eq!((c.job.as_str(), c.endpoint.as_str(), c.timeout.as_secs()), (name, "https://run.googleapis.com", 30));
    assert!(errors_of(&base()).is_empty() && base()["cloud_run_job"].is_null(), "inline exports need no job");
    // Before deployment the variable is the deployment's to set.
    RawConfig::from_json(&job.to_string()).unwrap().validate_with(&Registry, &|_| None, Deployment::Elsewhere).expect("offline");

    let mut bad = job.clone();
    bad["cloud_run_job"] =
        json!({"job": "ferry-run", "timeout_secs": 600, "endpoint": "http://run.example.com", "auth": "metadata_server"});
    let got = errors_of(&bad);
    for want in [
        "cloud_run_job.job: \"ferry-run\" is not a job name: expected projects/PROJECT/locations/REGION/jobs/JOB",
        "cloud_run_job.timeout_secs: expected 5 to 120 seconds, found 600",
        "cloud_run_job.endpoint",
    ] {
        assert!(got.contains(want), "{want} not in:\n{got}");
    }
    let mut unknown = job.clone();
    unknown["cloud_run_job"] = json!({"job": name, "region": "x"});
    assert!(errors_of(&unknown).contains("unknown field `region`"), "{}", errors_of(&unknown));
    assert!(
        errors_of(&with("exports.0.execution", json!("later"))).contains("exports[0].execution"),
        "{}",
        errors_of(&with("exports.0.execution", json!("later")))
    );
}

#[test]
fn the_storage_read_endpoint_is_checked_only_when_used() {
    let mut v = base();
    v["bigquery"] = json!({"read_api": "storage", "storage_endpoint": "ftp://x", "auth": "none"});
    assert!(errors_of(&v).contains("bigquery.storage_endpoint: expected an http(s) URL, found \"ftp://x\""), "{}", errors_of(&v));
    v["bigquery"] = json!({"read_api": "storage", "storage_endpoint": "http://storage.example.com"});
    assert!(errors_of(&v).contains("bigquery.storage_endpoint"), "a token over plain HTTP: {}", errors_of(&v));
    v["bigquery"] = json!({"read_api": "rest", "storage_endpoint": "ftp://x"});
    assert_eq!(errors_of(&v), "", "not read with rest");
    v["bigquery"] = json!({"read_api": "fast"});
    assert!(errors_of(&v).contains("bigquery.read_api"), "{}", errors_of(&v));
}

#[test]
fn auto_reads_through_storage_only_where_a_storage_endpoint_is_known() {
    use ferry_core::config::ReadApi;
    let read_api = |bq: Value, storage_env: Option<&str>| {
        let mut v = base();
        v["bigquery"] = bq;
        let env = |k: &str| match k {
            "SFTP_PASSWORD" => Some("pw".to_owned()),
            "FERRY_BIGQUERY_STORAGE_ENDPOINT" => storage_env.map(str::to_owned),
            _ => None,
        };
        RawConfig::from_json(&v.to_string()).and_then(|r| r.validate(&Registry, &env)).expect("a valid config").bigquery.read_api
    };
    let emulator = "http://127.0.0.1:9050";
    assert_eq!(read_api(json!({}), None), ReadApi::Auto, "Google's endpoints");
    assert_eq!(read_api(json!({"endpoint": "https://bigquery.googleapis.com/"}), None), ReadApi::Auto, "a trailing slash");
    assert_eq!(read_api(json!({"endpoint": emulator, "auth": "none"}), None), ReadApi::Rest, "an emulator, no Storage Read endpoint");
    assert_eq!(read_api(json!({"endpoint": emulator, "auth": "none", "storage_endpoint": "http://127.0.0.1:9060"}), None), ReadApi::Auto);
    assert_eq!(
        read_api(json!({"endpoint": emulator, "auth": "none"}), Some("http://127.0.0.1:9060")),
        ReadApi::Auto,
        "from the environment"
    );
    assert_eq!(read_api(json!({"endpoint": emulator, "auth": "none", "read_api": "rest"}), Some("http://127.0.0.1:9060")), ReadApi::Rest);
    for streams in [0, 17] {
        let got = errors_of(&with("bigquery", json!({"storage_streams": streams})));
        assert!(got.contains(&format!("bigquery.storage_streams: expected 1 to 16 streams, found {streams}")), "{got}");
    }
}
