//! PostgreSQL → BigQuery through `ferry run`: the stack's PostgreSQL as the source, the
//! emulator's tables as the destination, in each mode.

use std::time::Duration;

use ferry_core::config::Config;
use ferry_core::roles::RunStatus;
use ferry_testkit::{stack, unique, TestDataset};
use serde_json::{json, Value};

use crate::common::text;

/// A PostgreSQL table of this test, a BigQuery dataset, and ferry's config for them.
struct PgFixture {
    pg: tokio_postgres::Client,
    /// The PostgreSQL table, unique per test.
    table: String,
    ds: TestDataset,
    export: String,
}

impl PgFixture {
    async fn new(prefix: &str) -> Self {
        let s = stack();
        let mut config = tokio_postgres::Config::new();
        config
            .host(s.var("FERRY_PG_HOST"))
            .port(s.var("FERRY_PG_PORT").parse().expect("FERRY_PG_PORT"))
            .dbname(s.var("FERRY_PG_DATABASE"))
            .user(s.var("FERRY_PG_USER"))
            .password(s.file("FERRY_PG_PASSWORD_FILE"));
        let (pg, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to the stack's PostgreSQL (dev/stack up): {e}"));
        tokio::spawn(connection);
        Self { pg, table: unique(prefix), ds: TestDataset::create(prefix).await, export: unique("x") }
    }

    async fn exec(&self, sql: &str) {
        self.pg.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}\n-> {e:?}"));
    }

    async fn pg_ids(&self) -> Vec<i64> {
        let rows = self.pg.query(&format!("SELECT id FROM {} ORDER BY id", self.table), &[]).await.expect("ids");
        rows.iter().map(|r| r.get::<_, i64>(0)).collect()
    }

    /// The export: this test's PostgreSQL table (verify-full TLS) into `<ds>.<dest>`.
    fn json(&self, source: Value, destination: Value, extra: Value) -> Value {
        let s = stack();
        let mut src = json!({
            "type": "postgres", "host": s.var("FERRY_PG_HOST"), "port": s.var("FERRY_PG_PORT").parse::<u16>().unwrap(),
            "database": s.var("FERRY_PG_DATABASE"), "user": s.var("FERRY_PG_USER"),
            "password_file": s.var("FERRY_PG_PASSWORD_FILE"), "ca_file": s.var("FERRY_PG_CA"), "table": self.table,
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

    async fn bq_exists(&self, table: &str) -> bool {
        !self.bq(&format!("SELECT 1 FROM `{{ds}}`.INFORMATION_SCHEMA.TABLES WHERE table_name = '{table}'")).await.is_empty()
    }

    async fn run(&self, config: &Config, full: bool) -> ferry_core::run::RunReport {
        let mut opts = ferry_core::run::RunOptions::new();
        opts.full = full;
        ferry::run(config, &opts, None).await
    }

    async fn success_notes(&self) -> Vec<String> {
        self.bq(&format!(
            "SELECT IFNULL(error_message, '') FROM `{{ds}}.export_metadata` WHERE export_name = '{}' AND export_status = 'SUCCESS' ORDER BY completed_at",
            self.export
        ))
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
    }
}

#[tokio::test]
async fn every_postgres_type_lands_in_bigquery_with_its_type_and_exact_value() {
    let f = PgFixture::new("pg_types").await;
    let mood = unique("mood");
    f.exec(&format!(
        "CREATE TYPE {mood} AS ENUM ('sad', 'happy');
         CREATE TABLE {t} (id int8 PRIMARY KEY, flag bool, small int2, medium int4, real8 float8, amount numeric(12,3),
           big numeric, name text, code varchar(10), raw bytea, day date, local_at timestamp, at timestamptz, clock time,
           uid uuid, doc json, docb jsonb, counts int4[], tags text[], feeling {mood}, span interval);
         INSERT INTO {t} VALUES
           (1, true, -32768, 2147483647, 1.5, -123456789.125, 12345678901234567890.123456789012345678, 'zürich, \"q\"', 'ab',
            '\\x00ff10', '2024-02-29', '2024-05-01 01:02:03.5', '2024-05-01 12:34:56.123456+02', '12:00:01.25',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{\"k\": [1, 2]}}', '{{\"b\": 1, \"a\": null}}', '{{1,2,3}}', '{{x,y}}',
            'happy', '1 day 02:03:04'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{{}}', NULL, NULL, NULL);",
        t = f.table
    ))
    .await;
    let config = f.config(&f.json(json!({}), f.dest("types", json!({"mode": "catalog"})), json!({})));
    let r = f.run(&config, false).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 2), "{:?}", r.outcomes[0].error);

    let types = f
        .bq("SELECT column_name, data_type FROM `{ds}`.INFORMATION_SCHEMA.COLUMNS WHERE table_name = 'types' ORDER BY ordinal_position")
        .await;
    let want_types = [
        ("id", "INT64"),
        ("flag", "BOOL"),
        ("small", "INT64"),
        ("medium", "INT64"),
        ("real8", "FLOAT64"),
        ("amount", "NUMERIC"),
        ("big", "BIGNUMERIC"),
        ("name", "STRING"),
        ("code", "STRING"),
        ("raw", "BYTES"),
        ("day", "DATE"),
        ("local_at", "DATETIME"),
        ("at", "TIMESTAMP"),
        ("clock", "TIME"),
        ("uid", "STRING"),
        ("doc", "JSON"),
        ("docb", "JSON"),
        ("counts", "ARRAY<INT64>"),
        ("tags", "ARRAY<STRING>"),
        ("feeling", "STRING"),
        ("span", "STRING"),
    ];
    let got: Vec<(String, String)> = types.into_iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert_eq!(got, want_types.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());

    let values = f
        .bq("SELECT CAST(flag AS STRING), CAST(small AS STRING), CAST(medium AS STRING), CAST(real8 AS STRING), CAST(amount AS STRING), \
             CAST(big AS STRING), name, code, TO_BASE64(raw), CAST(day AS STRING), CAST(local_at AS STRING), \
             FORMAT_TIMESTAMP('%Y-%m-%d %H:%M:%E6S', at, 'UTC'), CAST(clock AS STRING), uid, TO_JSON_STRING(doc), TO_JSON_STRING(docb), \
             ARRAY_TO_STRING(ARRAY(SELECT CAST(c AS STRING) FROM UNNEST(counts) c), ','), ARRAY_TO_STRING(tags, ','), feeling, span \
             FROM `{ds}.types` ORDER BY id")
        .await;
    let want = [
        "true",
        "-32768",
        "2147483647",
        "1.5",
        "-123456789.125000000",
        "12345678901234567890.123456789012345678",
        "zürich, \"q\"",
        "ab",
        "AP8Q",
        "2024-02-29",
        "2024-05-01 01:02:03.5",
        "2024-05-01 10:34:56.123456",
        "12:00:01.25",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "{\"k\":[1,2]}",
        "{\"a\":null,\"b\":1}",
        "1,2,3",
        "x,y",
        "happy",
        "1 day 02:03:04",
    ];
    assert_eq!(values[0], want.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    // NULLs stay NULL (TO_JSON_STRING prints a NULL JSON as `null`); an empty array is empty.
    let nulls: Vec<String> = (0..20)
        .map(|i| match i {
            14 | 15 => "null",
            16 => "",
            _ => "NULL",
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(values[1], nulls);
}

#[tokio::test]
async fn transactional_appends_each_window_once_with_tied_and_late_cursor_values() {
    let f = PgFixture::new("pg_append").await;
    f.exec(&format!(
        "CREATE TABLE {t} (id int8, note text, updated_at timestamptz);
         INSERT INTO {t} SELECT i, 'row ' || i, '2024-01-01 00:00:00+00' FROM generate_series(1, 2500) i;
         INSERT INTO {t} VALUES (2501, 'tied', '2024-01-01 00:00:05+00'), (2502, 'tied', '2024-01-01 00:00:05+00');",
        t = f.table
    ))
    .await;
    let x = json!({"timestamp_column": "updated_at", "incremental": true});
    let config = f.config(&f.json(
        json!({"batch_rows": 700}),
        f.dest("facts", json!({"mode": "transactional", "batch_rows": 1000, "job_rows": 1000})),
        x.clone(),
    ));
    let r = f.run(&config, false).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 2502), "{:?}", r.outcomes[0].error);
    assert_eq!(f.bq_ids("facts").await, (1..=2502).collect::<Vec<_>>());

    // A row tied with the watermark arriving late is behind it (the window rules say so);
    // a later one is delivered, and nothing is added twice.
    f.exec(&format!(
        "INSERT INTO {t} VALUES (2503, 'late tie', '2024-01-01 00:00:05+00'), (2504, 'new', '2024-01-01 00:00:06+00');",
        t = f.table
    ))
    .await;
    let r = f.run(&config, false).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 1), "{:?}", r.outcomes[0].error);
    let mut want: Vec<i64> = (1..=2502).collect();
    want.push(2504);
    assert_eq!(f.bq_ids("facts").await, want);
    assert_eq!(f.run(&config, false).await.outcomes[0].status, RunStatus::Empty);
}

/// The start of the current hour, minus `hours`.
fn hour_ago(hours: i64) -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    now - chrono::Duration::microseconds(now.timestamp_micros().rem_euclid(3_600_000_000)) - chrono::Duration::hours(hours)
}

#[tokio::test]
async fn hourly_recovers_three_missed_hours_and_deletes_exactly_the_verified_ones() {
    let f = PgFixture::new("pg_hourly").await;
    f.exec(&format!("CREATE TABLE {t} (id int8, note text, created_at timestamptz)", t = f.table)).await;
    // Rows at both edges of each of the last five hours, and in the current hour.
    let mut values = Vec::new();
    for h in 0..=5i64 {
        let start = hour_ago(h);
        for (k, at) in
            [start, start + chrono::Duration::minutes(30), start + chrono::Duration::microseconds(3_599_999_999)].iter().enumerate()
        {
            values.push(format!("({}, 'h{h}', '{}')", h * 10 + k as i64, at.format("%Y-%m-%d %H:%M:%S%.6f+00")));
        }
    }
    f.exec(&format!("INSERT INTO {} VALUES {}", f.table, values.join(", "))).await;
    let dest = f.dest("hourly", json!({"mode": "hourly", "delete_from_source": true}));
    let x = |settle: u64| json!({"timestamp_column": "created_at", "incremental": true, "settle": settle});
    // Four hours of settle: the last complete hour is five hours ago, loaded alone.
    let config = f.config(&f.json(json!({}), dest.clone(), x(4 * 3600)));
    let r = f.run(&config, false).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 3), "{:?}", r.outcomes[0].error);
    assert_eq!(f.pg_ids().await, vec![0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32, 40, 41, 42]);

    // Three missed hours are recovered in order; each is deleted once BigQuery holds it.
    let config = f.config(&f.json(json!({}), dest.clone(), x(3600)));
    let r = f.run(&config, false).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 9), "{:?}", r.outcomes[0].error);
    assert_eq!(f.pg_ids().await, vec![0, 1, 2, 10, 11, 12], "only the loaded hours are deleted");
    let hours = f.bq("SELECT MIN(note), COUNT(*) FROM `{ds}.hourly` GROUP BY import_hour ORDER BY import_hour").await;
    assert_eq!(hours, [5, 4, 3, 2].iter().map(|h| vec![format!("h{h}"), "3".to_owned()]).collect::<Vec<_>>());
    let notes = f.success_notes().await;
    assert_eq!(notes.len(), 4);
    assert!(notes.iter().all(|n| n.contains("deleted 3 rows")), "{notes:?}");

    // A row arriving in the hour being loaded, between the load and the delete: the delete
    // finds 4 rows where 3 were loaded and deletes nothing; the next run loads all 4 and
    // deletes them.
    let config = f.config(&f.json(json!({}), dest, x(0)));
    ferry_core::failpoint::arm_sleep("load:commit", &f.export, Duration::from_secs(8));
    let late = async {
        // Once the hour is committed (the run then stalls before counting and deleting).
        let hour = hour_ago(1).format("%Y-%m-%d %H:%M:%S+00").to_string();
        let committed = format!("SELECT COUNT(*) FROM `{{ds}}.hourly` WHERE import_hour = TIMESTAMP '{hour}'");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while f.bq(&committed).await != vec![vec!["3".to_owned()]] {
            assert!(std::time::Instant::now() < deadline, "the hour was not committed within 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let at = (hour_ago(1) + chrono::Duration::minutes(5)).format("%Y-%m-%d %H:%M:%S+00");
        f.exec(&format!("INSERT INTO {} VALUES (99, 'late', '{at}')", f.table)).await;
    };
    let (r, ()) = tokio::join!(f.run(&config, false), late);
    assert_eq!(r.outcomes[0].status, RunStatus::Failed);
    assert!(r.outcomes[0].error.as_deref().unwrap_or_default().contains("nothing was deleted"), "{:?}", r.outcomes[0].error);
    assert_eq!(f.pg_ids().await, vec![0, 1, 2, 10, 11, 12, 99]);
    let r = f.run(&config, false).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 4), "{:?}", r.outcomes[0].error);
    assert_eq!(f.pg_ids().await, vec![0, 1, 2], "the current hour is not complete");
    assert_eq!(f.bq("SELECT COUNT(*) FROM `{ds}.hourly`").await, vec![vec!["16".to_owned()]]);
}

#[tokio::test]
async fn a_bad_source_fails_clearly_and_loads_or_deletes_nothing() {
    let f = PgFixture::new("pg_bad").await;
    f.exec(&format!(
        "CREATE TABLE {t} (id int8, created_at timestamptz); INSERT INTO {t} VALUES (1, now() - interval '3 hours');",
        t = f.table
    ))
    .await;
    let s = stack();
    let dir = ferry_testkit::TestDir::create("pgbad");
    let wrong = std::path::PathBuf::from(dir.remote()).join("wrong-password");
    std::fs::write(&wrong, "not-the-password").expect("write");
    let hourly = json!({"timestamp_column": "created_at", "incremental": true, "settle": 0});
    let cases = [
        (json!({"password_file": wrong.to_str().unwrap()}), "password authentication failed"),
        (json!({"port": 1}), "127.0.0.1:1"),
        (json!({"table": "no_such_table"}), "no_such_table"),
    ];
    for (source, words) in cases {
        let config =
            f.config(&f.json(source.clone(), f.dest("never", json!({"mode": "hourly", "delete_from_source": true})), hourly.clone()));
        let r = f.run(&config, false).await;
        let error = r.outcomes[0].error.clone().unwrap_or_default();
        assert_eq!(r.outcomes[0].status, RunStatus::Failed, "{source}");
        assert!(error.contains(words), "{source}: {error}");
        assert!(!error.contains(&s.file("FERRY_PG_PASSWORD_FILE")), "{error}");
    }
    assert!(!f.bq_exists("never").await, "nothing was loaded");
    assert_eq!(f.pg_ids().await, vec![1], "nothing was deleted");
    // Identifiers are checked before anything runs.
    for source in [json!({"table": "t; DROP TABLE x"}), json!({"columns": ["id\"; --"]})] {
        let json = f.json(source.clone(), f.dest("never", json!({"mode": "replace"})), json!({}));
        let err = ferry::components::validate(
            &ferry_core::config::RawConfig::from_json(&json.to_string()).unwrap(),
            &|_| None,
            ferry_core::config::Deployment::Here,
        )
        .expect_err("refused")
        .to_string();
        assert!(err.contains("exports[0].source."), "{source}: {err}");
    }
}
