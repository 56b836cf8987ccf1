//! MySQL → BigQuery through `ferry run`: the stack's MariaDB as the source, the emulator's
//! tables as the destination.

use ferry_core::config::Config;
use ferry_core::roles::RunStatus;
use ferry_testkit::{stack, unique, TestDataset};
use serde_json::{json, Value};

use crate::common::text;
use crate::mysql_source::My;

/// A MariaDB table of this test, a BigQuery dataset, and ferry's config for them.
struct MyFixture {
    my: My,
    /// The MariaDB table, unique per test.
    table: String,
    ds: TestDataset,
    export: String,
}

impl MyFixture {
    async fn new(prefix: &str) -> Self {
        Self { my: My::connect().await, table: unique(prefix), ds: TestDataset::create(prefix).await, export: unique("x") }
    }

    /// The export: this test's table (verify-full TLS) into `<ds>.<dest>`.
    fn json(&self, source: Value, destination: Value, extra: Value) -> Value {
        let s = stack();
        let mut src = json!({
            "type": "mysql", "host": s.var("FERRY_MYSQL_HOST"), "port": s.var("FERRY_MYSQL_PORT").parse::<u16>().unwrap(),
            "database": s.var("FERRY_MYSQL_DATABASE"), "user": s.var("FERRY_MYSQL_USER"),
            "password_file": s.var("FERRY_MYSQL_PASSWORD_FILE"), "ca_file": s.var("FERRY_MYSQL_CA"), "table": self.table,
        });
        for (k, v) in source.as_object().cloned().unwrap_or_default() {
            src[k] = v;
        }
        let mut x = json!({"name": self.export, "source": src, "destination": destination});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            x[k] = v;
        }
        json!({
            "exports": [x],
            "metadata_table": format!("{}.export_metadata", self.ds.name),
            "bigquery": {"project": s.bq_project(), "endpoint": s.bq_endpoint(), "auth": "none", "read_api": "rest"},
        })
    }

    fn config(&self, json: &Value) -> Config {
        ferry::components::validate(
            &ferry_core::config::RawConfig::from_json(&json.to_string()).expect("JSON"),
            &|_| None,
            ferry_core::config::Deployment::Here,
        )
        .expect("valid config")
    }

    fn dest(&self, table: &str, mode: Value) -> Value {
        let mut d = json!({"type": "bigquery", "table": format!("{}.{table}", self.ds.name)});
        for (k, v) in mode.as_object().cloned().unwrap_or_default() {
            d[k] = v;
        }
        d
    }

    async fn bq(&self, sql: &str) -> Vec<Vec<String>> {
        let rows = self.ds.rows(&sql.replace("{ds}", &self.ds.name)).await;
        rows.iter().map(|r| r.iter().map(|c| text(c).unwrap_or_else(|| "NULL".into())).collect()).collect()
    }

    async fn bq_ids(&self, table: &str) -> Vec<i64> {
        self.bq(&format!("SELECT id FROM `{{ds}}.{table}` ORDER BY id")).await.iter().map(|r| r[0].parse().expect("id")).collect()
    }

    async fn run(&self, config: &Config) -> ferry_core::run::RunReport {
        ferry::run(config, &ferry_core::run::RunOptions::new(), None).await
    }
}

#[tokio::test]
async fn every_mysql_type_lands_in_bigquery_with_its_type_and_exact_value() {
    let f = MyFixture::new("my_types").await;
    f.my.exec(&format!(
        "CREATE TABLE {t} (id BIGINT PRIMARY KEY, flag TINYINT(1), bit1 BIT(1), small SMALLINT, medium INT UNSIGNED, uns BIGINT UNSIGNED,
           amount DECIMAL(12,3), big DECIMAL(65,30), real8 DOUBLE, name VARCHAR(40), code ENUM('a', 'b'), raw VARBINARY(8),
           day DATE, zero_day DATE, local_at DATETIME(6), at TIMESTAMP(6) NULL, clock TIME(6), doc JSON, yr YEAR, bits BIT(9), shape GEOMETRY
         ) CHARACTER SET utf8mb4;
         INSERT INTO {t} VALUES
           (1, 1, b'1', -32768, 4294967295, 18446744073709551615, -123456789.125, 12345678901234567890.123456789012345678,
            1.5, 'zürich, \"q\"', 'b', X'00FF10', '2024-02-29', '0000-00-00', '2024-05-01 01:02:03.5', '2024-05-01 12:34:56.123456',
            '12:00:01.25', '{{\"b\": 1, \"a\": null}}', 1999, b'100000001', ST_GeomFromText('LINESTRING(0 0, 1 1)')),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
        t = f.table
    ))
    .await;
    let config = f.config(&f.json(json!({}), f.dest("types", json!({"mode": "replace"})), json!({})));
    let r = f.run(&config).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 2), "{:?}", r.outcomes[0].error);

    let types = f
        .bq("SELECT column_name, data_type FROM `{ds}`.INFORMATION_SCHEMA.COLUMNS WHERE table_name = 'types' ORDER BY ordinal_position")
        .await;
    let want_types = [
        ("id", "INT64"),
        ("flag", "BOOL"),
        ("bit1", "BOOL"),
        ("small", "INT64"),
        ("medium", "INT64"),
        ("uns", "NUMERIC"),
        ("amount", "NUMERIC"),
        ("big", "BIGNUMERIC"),
        ("real8", "FLOAT64"),
        ("name", "STRING"),
        ("code", "STRING"),
        ("raw", "BYTES"),
        ("day", "DATE"),
        ("zero_day", "DATE"),
        ("local_at", "DATETIME"),
        ("at", "TIMESTAMP"),
        ("clock", "TIME"),
        ("doc", "JSON"),
        ("yr", "INT64"),
        ("bits", "INT64"),
        ("shape", "STRING"),
    ];
    let got: Vec<(String, String)> = types.into_iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert_eq!(got, want_types.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());

    let values = f
        .bq(
            "SELECT CAST(flag AS STRING), CAST(bit1 AS STRING), CAST(small AS STRING), CAST(medium AS STRING), CAST(uns AS STRING), \
             CAST(amount AS STRING), CAST(big AS STRING), CAST(real8 AS STRING), name, code, TO_BASE64(raw), CAST(day AS STRING), \
             CAST(zero_day AS STRING), CAST(local_at AS STRING), FORMAT_TIMESTAMP('%Y-%m-%d %H:%M:%E6S', at, 'UTC'), CAST(clock AS STRING), \
             TO_JSON_STRING(doc), CAST(yr AS STRING), CAST(bits AS STRING), shape \
             FROM `{ds}.types` ORDER BY id",
        )
        .await;
    let want = [
        "true",
        "true",
        "-32768",
        "4294967295",
        // The emulator prints NUMERIC with its nine decimals.
        "18446744073709551615.000000000",
        "-123456789.125000000",
        "12345678901234567890.123456789012345678",
        "1.5",
        "zürich, \"q\"",
        "b",
        "AP8Q",
        "2024-02-29",
        "NULL",
        "2024-05-01 01:02:03.5",
        // Inserted at +02:00.
        "2024-05-01 10:34:56.123456",
        "12:00:01.25",
        "{\"b\":1,\"a\":null}",
        "1999",
        "257",
        "LINESTRING(0 0,1 1)",
    ];
    assert_eq!(values[0], want.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    // NULLs stay NULL (TO_JSON_STRING prints a NULL JSON as `null`).
    let nulls: Vec<String> = (0..want.len()).map(|i| if i == 16 { "null" } else { "NULL" }).map(str::to_owned).collect();
    assert_eq!(values[1], nulls);
}

#[tokio::test]
async fn appends_each_window_once_with_tied_and_late_cursor_values() {
    let f = MyFixture::new("my_append").await;
    let rows: Vec<String> = (1..=2500).map(|i| format!("({i}, 'row {i}', '2024-01-01 00:00:00')")).collect();
    f.my.exec(&format!(
        "SET time_zone = '+00:00';
         CREATE TABLE {t} (id BIGINT, note VARCHAR(20), updated_at TIMESTAMP(6) NULL);
         INSERT INTO {t} VALUES {rows};
         INSERT INTO {t} VALUES (2501, 'tied', '2024-01-01 00:00:05'), (2502, 'tied', '2024-01-01 00:00:05');",
        t = f.table,
        rows = rows.join(", ")
    ))
    .await;
    let x = json!({"timestamp_column": "updated_at", "incremental": true});
    let config = f.config(&f.json(json!({"batch_rows": 700}), f.dest("facts", json!({"mode": "append", "batch_rows": 1000})), x.clone()));
    let r = f.run(&config).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 2502), "{:?}", r.outcomes[0].error);
    assert_eq!(f.bq_ids("facts").await, (1..=2502).collect::<Vec<_>>());
    let mark = f
        .bq(&format!(
            "SELECT last_exported_value, cursor_type FROM `{{ds}}.export_metadata` WHERE export_name = '{}' AND export_status = 'SUCCESS'",
            f.export
        ))
        .await;
    assert_eq!(mark, [["2024-01-01T00:00:05.000000Z".to_owned(), "TIMESTAMP".to_owned()]]);

    // A row tied with the watermark arriving late is behind it (the window rules say so);
    // a later one is delivered, and nothing is added twice.
    f.my.exec(&format!(
        "SET time_zone = '+00:00';
         INSERT INTO {t} VALUES (2503, 'late tie', '2024-01-01 00:00:05'), (2504, 'new', '2024-01-01 00:00:06');",
        t = f.table
    ))
    .await;
    let r = f.run(&config).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 1), "{:?}", r.outcomes[0].error);
    let mut want: Vec<i64> = (1..=2502).collect();
    want.push(2504);
    assert_eq!(f.bq_ids("facts").await, want);
    assert_eq!(f.run(&config).await.outcomes[0].status, RunStatus::Empty);
}
