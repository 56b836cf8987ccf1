//! The `mysql` source against the stack's MariaDB: each test makes its own tables (as the
//! stack's user `ferry`) and calls the `Source` trait directly.

use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Decimal256Type, Float64Type, Int64Type, Time64MicrosecondType, TimestampMicrosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::TimeUnit;
use chrono::{NaiveDate, Utc};
use ferry_core::config::{Components, Config, ConfigErrors, Destination, ExportSpec, RawConfig};
use ferry_core::cursor::{CursorType, CursorValue};
use ferry_core::rows::{is_json, DataType, SQL_TYPE};
use ferry_core::{ErrorClass, Failure, NullRows, RetryPolicy, Source, Window};
use ferry_mysql::{MySqlSettings, MySqlSource};
use ferry_testkit::{stack, unique};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

/// Knows the `mysql` source and the `sftp` destination; validates configs as ferry does.
struct Registry;

impl Components for Registry {
    fn source_types(&self) -> Vec<&'static str> {
        vec!["mysql"]
    }
    fn destination_types(&self) -> Vec<&'static str> {
        vec!["sftp"]
    }
    fn source(&self, type_name: &str, value: &Value, cx: &ferry_core::config::Check<'_>) -> Option<Option<ferry_core::config::Component>> {
        (type_name == "mysql").then(|| ferry_mysql::validate_source(value, cx))
    }
    fn destination(&self, type_name: &str, value: &Value, cx: &ferry_core::config::Check<'_>) -> Option<Option<Destination>> {
        (type_name == "sftp").then(|| ferry_sftp::component::validate_destination(value, cx))
    }
}

/// The stack's MariaDB, and a direct connection for setting up tables (zero dates allowed,
/// TIMESTAMP literals read in +02:00).
pub(crate) struct My {
    conn: tokio::sync::Mutex<mysql_async::Conn>,
}

impl My {
    pub(crate) async fn connect() -> Self {
        let s = stack();
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(s.var("FERRY_MYSQL_HOST"))
            .tcp_port(s.var("FERRY_MYSQL_PORT").parse().expect("FERRY_MYSQL_PORT"))
            .user(Some(s.var("FERRY_MYSQL_USER")))
            .pass(Some(s.file("FERRY_MYSQL_PASSWORD_FILE")))
            .db_name(Some(s.var("FERRY_MYSQL_DATABASE")))
            .prefer_socket(false);
        let mut conn =
            mysql_async::Conn::new(opts).await.unwrap_or_else(|e| panic!("connecting to the stack's MariaDB (dev/stack up): {e}"));
        conn.query_drop("SET SESSION sql_mode = '', time_zone = '+02:00'").await.expect("session");
        Self { conn: tokio::sync::Mutex::new(conn) }
    }

    /// Runs one or more statements.
    pub(crate) async fn exec(&self, sql: &str) {
        self.conn.lock().await.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}\n-> {e:?}"));
    }

    /// The first column of every row, as text.
    pub(crate) async fn column(&self, sql: &str) -> Vec<String> {
        let rows: Vec<mysql_async::Row> = self.conn.lock().await.query(sql).await.unwrap_or_else(|e| panic!("{sql}\n-> {e:?}"));
        rows.into_iter().map(|mut r| r.take::<String, _>(0).unwrap_or_default()).collect()
    }
}

/// A source of the stack's MariaDB (TLS verify-full with the stack's CA unless `fields`
/// override), as a validated export with `cursor` as its timestamp_column.
fn export(fields: Value, cursor: Option<&str>) -> Result<ExportSpec, ConfigErrors> {
    export_env(fields, cursor, &|_| None)
}

fn export_env(fields: Value, cursor: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<ExportSpec, ConfigErrors> {
    let s = stack();
    let mut source = json!({
        "type": "mysql",
        "host": s.var("FERRY_MYSQL_HOST"),
        "port": s.var("FERRY_MYSQL_PORT").parse::<u16>().unwrap(),
        "database": s.var("FERRY_MYSQL_DATABASE"),
        "user": s.var("FERRY_MYSQL_USER"),
        "password_file": s.var("FERRY_MYSQL_PASSWORD_FILE"),
        "ca_file": s.var("FERRY_MYSQL_CA"),
    });
    for (k, v) in fields.as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            source.as_object_mut().unwrap().remove(&k);
        } else {
            source[k] = v;
        }
    }
    let mut x = json!({
        "name": unique("my"),
        "source": source,
        "destination": {
            "type": "sftp", "host": s.var("FERRY_SFTP_HOST"), "port": s.var("FERRY_SFTP_PORT").parse::<u16>().unwrap(),
            "username": s.var("FERRY_SFTP_KEY_USER"), "private_key_file": s.var("FERRY_SFTP_KEY_FILE"),
            "known_hosts_file": s.var("FERRY_SFTP_KNOWN_HOSTS"), "path": "/upload", "file": {"name": "{name}_{datetime}.csv"},
        },
    });
    if let Some(c) = cursor {
        x["timestamp_column"] = json!(c);
        x["incremental"] = json!(true);
    }
    let config = json!({"exports": [x], "bigquery": {"project": s.bq_project(), "endpoint": s.bq_endpoint(), "auth": "none"}});
    let env = |k: &str| env(k).or_else(|| (k == "FERRY_ALLOW_PLAINTEXT_LOOPBACK").then(|| "1".to_owned()));
    let config: Config = RawConfig::from_json(&config.to_string())?.validate(&Registry, &env)?;
    Ok(config.exports.into_iter().next().expect("one export"))
}

fn source_of(x: &ExportSpec) -> MySqlSource {
    let settings = x.source.settings::<MySqlSettings>().expect("mysql settings").clone();
    // Unreachable servers fail fast in tests.
    MySqlSource::new(settings).with_retry(RetryPolicy::fast(2, Duration::from_secs(5)))
}

/// Every batch of `window`.
async fn read_all(source: &MySqlSource, x: &ExportSpec, window: &Window, run_date: &str) -> Result<Vec<RecordBatch>, Failure> {
    let mut reader = source.read(x, window, run_date).await?;
    let mut batches = Vec::new();
    while let Some(b) = reader.next_batch().await? {
        assert_eq!(b.schema(), reader.schema());
        batches.push(b);
    }
    Ok(batches)
}

/// The Int64 column `name` of every batch, in order.
fn ints(batches: &[RecordBatch], name: &str) -> Vec<Option<i64>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
            c.as_primitive::<Int64Type>().iter().collect::<Vec<_>>()
        })
        .collect()
}

fn sorted(mut v: Vec<Option<i64>>) -> Vec<Option<i64>> {
    v.sort();
    v
}

fn server() -> String {
    format!("{}:{}/{}", stack().var("FERRY_MYSQL_HOST"), stack().var("FERRY_MYSQL_PORT"), stack().var("FERRY_MYSQL_DATABASE"))
}

const TODAY: &str = "2024-06-01";

#[tokio::test]
async fn every_mapped_type_reads_its_exact_values() {
    let my = My::connect().await;
    let t = unique("my_types");
    my.exec(&format!(
        "CREATE TABLE {t} (
           id INT, bo BOOL, t1 TINYINT(1), ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,
           mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
           d1 DECIMAL(10,2), d2 DECIMAL(38,9), d3 DECIMAL(65,30), d4 DECIMAL(30,0), du DECIMAL(5,2) UNSIGNED,
           f FLOAT, db DOUBLE,
           c CHAR(3), vc VARCHAR(20), tx TEXT, lt LONGTEXT, l1 VARCHAR(10) CHARACTER SET latin1, e ENUM('sad', 'happy'), st SET('a', 'b', 'c'),
           bn BINARY(3), vb VARBINARY(10), bl BLOB,
           d DATE, dt DATETIME, dt6 DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6), y YEAR, j JSON, b1 BIT(1), b9 BIT(9), g GEOMETRY,
           zd DATE, zdt DATETIME, zts TIMESTAMP NULL, zm DATE
         ) CHARACTER SET utf8mb4;
         INSERT INTO {t} VALUES
          (1, TRUE, 0, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615,
           -12345678.91, 12345678901234567890.123456789, -12345678901234567890123456789012345.123456789012345678901234567890,
           123456789012345678901234567890, 999.99,
           1.5, -0.1,
           'ab', 'varchar ünï', 'text 😀', 'long', 'café', 'happy', 'c,a',
           X'00FF10', X'0102', X'DEADBEEF',
           '2024-02-29', '2024-01-02 03:04:05', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.654321', '23:59:59.999999',
           2024, '{{\"k\": [1, 2]}}', b'1', b'101010101', ST_GeomFromText('POINT(1 2)'),
           '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '2024-00-15');
         INSERT INTO {t} (id) VALUES (2);"
    ))
    .await;
    let x = export(json!({"table": t}), None).expect("config");
    let source = source_of(&x);
    let batches = read_all(&source, &x, &Window::between(None, None), TODAY).await.expect("read");
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(b.num_rows(), 2);
    let id = ints(&batches, "id");
    let (r, nulls) = if id == [Some(1), Some(2)] { (0, 1) } else { (1, 0) };
    let col = |name: &str| b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")).clone();
    let ty = |name: &str| b.schema().field_with_name(name).unwrap().data_type().clone();
    let meta = |name: &str| b.schema().field_with_name(name).unwrap().metadata().get(SQL_TYPE).cloned();

    for (name, v) in [("bo", true), ("t1", false), ("b1", true)] {
        assert_eq!(ty(name), DataType::Boolean, "{name}");
        assert_eq!(col(name).as_boolean().value(r), v, "{name}");
    }
    for (name, v) in [
        ("ti", -128),
        ("tu", 255),
        ("si", -32768),
        ("su", 65535),
        ("mi", -8388608),
        ("mu", 16777215),
        ("i", -2147483648),
        ("iu", 4294967295),
        ("bi", i64::MIN),
        ("y", 2024),
        ("b9", 0b1_0101_0101),
    ] {
        assert_eq!(ty(name), DataType::Int64, "{name}");
        assert_eq!(col(name).as_primitive::<Int64Type>().value(r), v, "{name}");
    }
    for (name, v) in [
        ("bu", "18446744073709551615.000000000"),
        ("d1", "-12345678.910000000"),
        ("d2", "12345678901234567890.123456789"),
        ("du", "999.990000000"),
    ] {
        assert_eq!(ty(name), DataType::Decimal128(38, 9), "{name}");
        assert_eq!(col(name).as_primitive::<Decimal128Type>().value_as_string(r), v, "{name}");
    }
    for (name, v) in [
        ("d3", "-12345678901234567890123456789012345.12345678901234567890123456789000000000"),
        ("d4", "123456789012345678901234567890.00000000000000000000000000000000000000"),
    ] {
        assert_eq!(ty(name), DataType::Decimal256(76, 38), "{name}");
        assert_eq!(col(name).as_primitive::<Decimal256Type>().value_as_string(r), v, "{name}");
    }
    assert_eq!(col("f").as_primitive::<Float64Type>().value(r), 1.5);
    assert_eq!(col("db").as_primitive::<Float64Type>().value(r), -0.1);
    for (name, v) in [("c", "ab"), ("vc", "varchar ünï"), ("tx", "text 😀"), ("lt", "long"), ("l1", "café"), ("e", "happy"), ("st", "a,c")]
    {
        assert_eq!(ty(name), DataType::Utf8, "{name}");
        assert_eq!(meta(name), None, "{name}");
        assert!(!is_json(b.schema().field_with_name(name).unwrap()), "{name}");
        assert_eq!(col(name).as_string::<i32>().value(r), v, "{name}");
    }
    for (name, v) in [("bn", &[0x00, 0xff, 0x10][..]), ("vb", &[1, 2]), ("bl", &[0xde, 0xad, 0xbe, 0xef])] {
        assert_eq!(ty(name), DataType::Binary, "{name}");
        assert_eq!(col(name).as_binary::<i32>().value(r), v, "{name}");
    }
    assert_eq!(ty("d"), DataType::Date32);
    assert_eq!(
        col("d").as_primitive::<Date32Type>().value(r),
        (NaiveDate::from_ymd_opt(2024, 2, 29).unwrap() - NaiveDate::default()).num_days() as i32
    );
    assert_eq!(ty("dt"), DataType::Timestamp(TimeUnit::Microsecond, None));
    assert_eq!(col("dt").as_primitive::<TimestampMicrosecondType>().value(r), micros("2024-01-02T03:04:05Z"));
    assert_eq!(col("dt6").as_primitive::<TimestampMicrosecondType>().value(r), micros("2024-01-02T03:04:05.123456Z"));
    assert_eq!(ty("ts"), DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
    // Inserted at +02:00, read in UTC.
    assert_eq!(col("ts").as_primitive::<TimestampMicrosecondType>().value(r), micros("2024-01-02T01:04:05.654321Z"));
    assert_eq!(ty("tm"), DataType::Time64(TimeUnit::Microsecond));
    assert_eq!(col("tm").as_primitive::<Time64MicrosecondType>().value(r), 86_399_999_999);
    assert!(is_json(b.schema().field_with_name("j").unwrap()), "MariaDB's JSON is found in the catalog");
    assert_eq!(col("j").as_string::<i32>().value(r), r#"{"k": [1, 2]}"#);
    assert_eq!((ty("g"), meta("g").as_deref()), (DataType::Utf8, Some("GEOMETRY")));
    assert_eq!(col("g").as_string::<i32>().value(r), "POINT(1 2)");
    for name in ["zd", "zdt", "zts", "zm"] {
        assert!(col(name).is_null(r), "the zero date of {name} is NULL");
    }
    // Row 2: every column NULL.
    for f in b.schema().fields() {
        if f.name() != "id" {
            assert!(col(f.name()).is_null(nulls), "{} is not NULL", f.name());
        }
    }

    // Through a query, MariaDB's JSON is text, and columns keep their types.
    let x = export(json!({"query": format!("SELECT id, j, bu, g FROM {t} WHERE id = 1")}), None).expect("config");
    let batches = read_all(&source_of(&x), &x, &Window::between(None, None), TODAY).await.expect("read");
    let schema = batches[0].schema();
    assert!(!is_json(schema.field_with_name("j").unwrap()));
    assert_eq!(batches[0].column_by_name("j").unwrap().as_string::<i32>().value(0), r#"{"k": [1, 2]}"#);
    assert_eq!(schema.field_with_name("bu").unwrap().data_type(), &DataType::Decimal128(38, 9));
    assert_eq!(batches[0].column_by_name("g").unwrap().as_string::<i32>().value(0), "POINT(1 2)");
    my.exec(&format!("DROP TABLE {t}")).await;
}

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).expect("RFC 3339").timestamp_micros()
}

fn ts(rfc3339: &str) -> Option<CursorValue> {
    Some(CursorValue::Timestamp(micros(rfc3339)))
}

#[tokio::test]
async fn values_that_cannot_be_delivered_are_permanent_errors_naming_column_and_value() {
    let my = My::connect().await;
    let t = unique("my_bad");
    my.exec(&format!(
        "CREATE TABLE {t} (neg TIME, day TIME, flag TINYINT(1), big DECIMAL(65,0), bits BIT(64));
         INSERT INTO {t} VALUES ('-01:02:03', '25:00:00', 2, 1e40, b'1111111111111111111111111111111111111111111111111111111111111111')"
    ))
    .await;
    for (column, expected) in [
        ("neg", "column neg: TIME value -01:02:03.000000 cannot be delivered: BigQuery TIME is a time of day"),
        ("day", "column day: TIME value 25:00:00.000000 cannot be delivered"),
        ("flag", "column flag: TINYINT(1) value 2 is neither 0 nor 1"),
        ("big", "column big: DECIMAL value 10000000000000000000000000000000000000000 does not fit BigQuery BIGNUMERIC"),
        ("bits", "column bits: BIT value 18446744073709551615 does not fit INT64"),
    ] {
        let x = export(json!({"table": t, "columns": [column]}), None).expect("config");
        let e = read_all(&source_of(&x), &x, &Window::between(None, None), TODAY).await.expect_err(column);
        assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
        assert!(e.to_string().contains(expected), "{column}: {e}");
        assert!(e.to_string().contains(&format!("MySQL {}: table {t}, column", server())), "names the server and the table: {e}");
    }
    my.exec(&format!("DROP TABLE {t}")).await;
}

/// `(id, updated_at, loaded_at)`: ids 3 and 4 tie at the window's `hi`, 5 is beyond it, 6 and 7
/// have no cursor value and arrived at different times.
async fn window_table(my: &My) -> String {
    let t = unique("my_window");
    my.exec(&format!(
        "SET time_zone = '+00:00';
         CREATE TABLE {t} (id INT, updated_at TIMESTAMP(6) NULL, loaded_at TIMESTAMP(6) NULL);
         INSERT INTO {t} VALUES
           (1, '2024-01-01 00:00:00', '2024-01-01 00:00:00'),
           (2, '2024-01-02 00:00:00', '2024-01-02 00:00:00'),
           (3, '2024-01-03 00:00:00', '2024-01-03 00:00:00'),
           (4, '2024-01-03 00:00:00', '2024-01-03 00:00:00'),
           (5, '2024-01-04 00:00:00.000001', '2024-01-04 00:00:00'),
           (6, NULL, '2024-01-02 12:00:00'),
           (7, NULL, '2024-01-05 00:00:00');
         SET time_zone = '+02:00'"
    ))
    .await;
    t
}

#[tokio::test]
async fn windows_are_lo_exclusive_hi_inclusive_with_null_cursors_as_the_window_says() {
    let my = My::connect().await;
    let t = window_table(&my).await;
    for spec in [json!({"table": t}), json!({"query": format!("SELECT id, updated_at, loaded_at FROM {t}")})] {
        let x = export(spec.clone(), Some("updated_at")).expect("config");
        let source = source_of(&x);
        let before = Utc::now();
        let b = source.bounds(&x, TODAY).await.expect("bounds");
        assert_eq!(b.max, ts("2024-01-04T00:00:00.000001Z"), "{spec}");
        assert_eq!(b.null_rows, 2);
        assert!((b.now - before).num_seconds().abs() < 60, "the server's clock: {} against {before}", b.now);

        let (lo, hi) = (ts("2024-01-01T00:00:00Z"), ts("2024-01-03T00:00:00Z"));
        let arrived = |lo: Option<&str>, hi: &str| NullRows::Arrived { column: "loaded_at".into(), lo: lo.map(micros), hi: micros(hi) };
        for (nulls, expected) in [
            (NullRows::Excluded, vec![2, 3, 4]),
            (NullRows::Included, vec![2, 3, 4, 6, 7]),
            (arrived(Some("2024-01-02T00:00:00Z"), "2024-01-03T00:00:00Z"), vec![2, 3, 4, 6]),
            (arrived(None, "2024-01-06T00:00:00Z"), vec![2, 3, 4, 6, 7]),
            (arrived(Some("2024-01-02T12:00:00Z"), "2024-01-06T00:00:00Z"), vec![2, 3, 4, 7]),
        ] {
            let w = Window { lo: lo.clone(), hi: hi.clone(), nulls };
            let batches = read_all(&source, &x, &w, TODAY).await.expect("read");
            let ids = sorted(ints(&batches, "id"));
            assert_eq!(ids, expected.iter().map(|i| Some(*i)).collect::<Vec<_>>(), "{w} of {spec}");
            assert_eq!(source.count(&x, &w, TODAY).await.expect("count"), expected.len() as u64, "{w}");
        }
        // No bounds: every row with a cursor value; or every row.
        let all = Window::between(None, None);
        assert_eq!(sorted(ints(&read_all(&source, &x, &all, TODAY).await.unwrap(), "id")).len(), 5);
        let everything = Window { nulls: NullRows::Included, ..all };
        assert_eq!(source.count(&x, &everything, TODAY).await.unwrap(), 7);
        // Only NULL cursors that arrived: no cursor value bounds the window.
        let arrivals = Window { lo: None, hi: None, nulls: arrived(None, "2024-01-03T00:00:00Z") };
        assert_eq!(sorted(ints(&read_all(&source, &x, &arrivals, TODAY).await.unwrap(), "id")), [Some(6)]);
        let sql = source.read_sql(&x, &Window::between(lo.clone(), hi.clone()));
        assert!(sql.ends_with(" s WHERE s.`updated_at` > ? AND s.`updated_at` <= ?"), "{sql}");
    }
    my.exec(&format!("DROP TABLE {t}")).await;
}

/// `INSERT` of rows `1..=n` as `(id, 'row <id>')`.
fn numbered_rows(t: &str, n: i64) -> String {
    let values: Vec<String> = (1..=n).map(|i| format!("({i}, 'row {i}')")).collect();
    format!("INSERT INTO {t} VALUES {}", values.join(", "))
}

#[tokio::test]
async fn batches_hold_batch_rows_and_count_matches_the_rows_read() {
    let my = My::connect().await;
    let t = unique("my_batches");
    my.exec(&format!("CREATE TABLE {t} (id BIGINT, note VARCHAR(20)); {}", numbered_rows(&t, 2500))).await;
    let x = export(
        json!({"table": format!("{}.{t}", stack().var("FERRY_MYSQL_DATABASE")), "batch_rows": 1000, "columns": ["note", "id"]}),
        Some("id"),
    )
    .expect("config");
    let source = source_of(&x);
    assert_eq!(source.bounds(&x, TODAY).await.unwrap().max, Some(CursorValue::Int64(2500)));
    let all = Window::between(None, Some(CursorValue::Int64(2500)));
    let batches = read_all(&source, &x, &all, TODAY).await.expect("read");
    assert_eq!(batches.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(), [1000, 1000, 500]);
    assert_eq!(batches[0].schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["note", "id"]);
    assert_eq!(sorted(ints(&batches, "id")), (1..=2500).map(Some).collect::<Vec<_>>());
    assert_eq!(source.count(&x, &all, TODAY).await.unwrap(), 2500);
    let part = Window::between(Some(CursorValue::Int64(100)), Some(CursorValue::Int64(2000)));
    let batches = read_all(&source, &x, &part, TODAY).await.expect("read");
    assert_eq!(batches.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(), [1000, 900]);
    assert_eq!(source.count(&x, &part, TODAY).await.unwrap(), 1900);
    // Exactly two full batches, and no empty third.
    let two = Window::between(Some(CursorValue::Int64(500)), Some(CursorValue::Int64(2500)));
    assert_eq!(read_all(&source, &x, &two, TODAY).await.unwrap().iter().map(RecordBatch::num_rows).collect::<Vec<_>>(), [1000, 1000]);
    // Nothing in the window: no batch at all.
    let none = Window::between(Some(CursorValue::Int64(2500)), Some(CursorValue::Int64(2500)));
    assert!(read_all(&source, &x, &none, TODAY).await.unwrap().is_empty());
    my.exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn an_abandoned_read_ends_its_connection() {
    let my = My::connect().await;
    let t = unique("my_abandoned");
    my.exec(&format!("CREATE TABLE {t} (id BIGINT, note VARCHAR(20)); {}", numbered_rows(&t, 20_000))).await;
    // A millisecond per row: the whole result would take the server 20 s to send.
    let x = export(json!({"query": format!("SELECT id, note FROM {t} WHERE SLEEP(0.001) = 0"), "batch_rows": 100}), None).expect("config");
    let source = source_of(&x);
    let mut reader = source.read(&x, &Window::between(None, None), TODAY).await.expect("read");
    assert_eq!(reader.next_batch().await.expect("a batch").expect("rows").num_rows(), 100);
    let running =
        format!("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%FROM {t} WHERE SLEEP(0.001)%' AND ID <> CONNECTION_ID()");
    assert_eq!(my.column(&running).await.len(), 1, "the read runs");
    drop(reader);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !my.column(&running).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the abandoned read still runs after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    my.exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn cursor_columns_of_each_type() {
    let my = My::connect().await;
    let t = unique("my_cursors");
    my.exec(&format!(
        "CREATE TABLE {t} (dt DATETIME(1), d DATE, i2 SMALLINT, i4 INT UNSIGNED, i8 BIGINT, tx VARCHAR(5));
         INSERT INTO {t} VALUES ('2024-01-02 03:04:05.5', '2024-01-02', 7, 70000, -1, 'z'), ('2024-01-01 00:00:00', '2023-12-31', -1, 1, -2, 'a')"
    ))
    .await;
    let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    for (cursor, ty, max) in [
        ("dt", CursorType::Datetime, "2024-01-02T03:04:05.500000"),
        ("d", CursorType::Date, "2024-01-02"),
        ("i2", CursorType::Int64, "7"),
        ("i4", CursorType::Int64, "70000"),
        ("i8", CursorType::Int64, "-1"),
    ] {
        let x = export(json!({"table": t}), Some(cursor)).expect("config");
        let source = source_of(&x);
        let b = source.bounds(&x, TODAY).await.expect(cursor);
        let max = CursorValue::parse(ty, max).unwrap();
        assert_eq!(b.max.as_ref(), Some(&max), "{cursor}");
        assert_eq!(b.null_rows, 0);
        // The maximum as `hi` selects both rows; as `lo` none.
        assert_eq!(source.count(&x, &Window::between(None, Some(max.clone())), TODAY).await.unwrap(), 2, "{cursor}");
        assert_eq!(source.count(&x, &Window::between(Some(max), None), TODAY).await.unwrap(), 0, "{cursor}");
    }
    let x = export(json!({"table": t}), Some("d")).expect("config");
    let w = Window::between(Some(CursorValue::Date(date("2023-12-31"))), Some(CursorValue::Date(date("2024-01-02"))));
    assert_eq!(read_all(&source_of(&x), &x, &w, TODAY).await.unwrap()[0].num_rows(), 1);
    let x = export(json!({"table": t}), Some("tx")).expect("config");
    let e = source_of(&x).bounds(&x, TODAY).await.expect_err("a text cursor");
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(
        e.to_string().contains(&format!("{t}, column tx: timestamp_column tx is of type VARCHAR; expected TIMESTAMP, DATETIME, DATE")),
        "{e}"
    );
    my.exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn a_query_gets_the_run_date_as_a_parameter_and_its_decimal_types() {
    let my = My::connect().await;
    let t = unique("my_query");
    my.exec(&format!(
        "CREATE TABLE {t} (id INT, day DATE, amount DECIMAL(12,3));
         INSERT INTO {t} VALUES (1, '2024-06-01', 1.5), (2, '2024-06-02', 2.25), (3, '2024-06-01', -3)"
    ))
    .await;
    let q = format!(
        "SELECT id, amount, SUM(amount) AS total, CAST(amount AS DECIMAL(20,1)) AS rounded FROM {t} WHERE day = {{date}} OR day = '{{date}}' GROUP BY id, amount"
    );
    let x = export(json!({"query": q}), None).expect("config");
    let source = source_of(&x);
    assert_eq!(source.describe(&x), format!("mysql://{}/query", server()));
    let batches = read_all(&source, &x, &Window::between(None, None), "2024-06-01").await.expect("read");
    assert_eq!(sorted(ints(&batches, "id")), [Some(1), Some(3)]);
    let schema = batches[0].schema();
    assert_eq!(schema.field_with_name("amount").unwrap().data_type(), &DataType::Decimal128(38, 9));
    assert_eq!(schema.field_with_name("rounded").unwrap().data_type(), &DataType::Decimal128(38, 9));
    assert_eq!(schema.field_with_name("total").unwrap().data_type(), &DataType::Decimal256(76, 38), "SUM(DECIMAL(12,3)) is DECIMAL(34,3)");
    assert_eq!(source.count(&x, &Window::between(None, None), "2024-06-02").await.unwrap(), 1);
    let e = source.count(&x, &Window::between(None, None), "June").await.expect_err("not a date");
    assert!(e.to_string().contains("run date \"June\" is not a date"), "{e}");
    my.exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn tls_verify_full_trusts_the_stacks_ca_and_nothing_else() {
    let my = My::connect().await;
    let t = window_table(&my).await;
    let all = Window::between(None, None);
    for ok in [
        json!({"table": t, "tls": "verify-full"}),
        json!({"table": t, "tls": "require", "ca_file": null}),
        json!({"table": t, "tls": "disable", "ca_file": null}),
    ] {
        let x = export(ok.clone(), None).expect("config");
        assert_eq!(source_of(&x).count(&x, &all, TODAY).await.unwrap_or_else(|e| panic!("{ok}: {e}")), 7);
    }
    let other = format!("{}/tls/other-ca.pem", stack().var("FERRY_STACK_DIR"));
    let x = export(json!({"table": t, "ca_file": other}), None).expect("config");
    let e = read_all(&source_of(&x), &x, &all, TODAY).await.expect_err("another CA");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(
        e.to_string()
            .contains(&format!("MySQL {}: TLS: the server's certificate was refused: invalid peer certificate: UnknownIssuer", server())),
        "{e}"
    );
    assert!(!e.to_string().contains("gave up"), "not retried: {e}");
    // The webpki roots do not hold the stack's CA either.
    let x = export(json!({"table": t, "ca_file": null}), None).expect("config");
    let e = source_of(&x).count(&x, &all, TODAY).await.expect_err("webpki roots");
    assert!(e.to_string().contains("certificate was refused"), "{e}");
    // A connection over TLS is encrypted.
    let x = export(
        json!({"query": "SELECT VARIABLE_VALUE AS v FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version'"}),
        None,
    )
    .expect("config");
    let b = read_all(&source_of(&x), &x, &all, TODAY).await.expect("read");
    assert!(b[0].column(0).as_string::<i32>().value(0).starts_with("TLSv1."), "{:?}", b[0].column(0));
    my.exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn a_wrong_password_is_permanent_and_not_repeated() {
    let sentinel = "wrong-Sentinel-pw-4711";
    let env = |k: &str| (k == "MY_WRONG").then(|| sentinel.to_owned());
    let x = export_env(json!({"table": "whatever", "password_file": null, "password_env": "MY_WRONG"}), Some("id"), &env).expect("config");
    let e = source_of(&x).bounds(&x, TODAY).await.expect_err("wrong password");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    let user = stack().var("FERRY_MYSQL_USER");
    assert!(
        e.to_string().contains(&format!("MySQL {}: connect: Access denied for user '{user}'@'", server()))
            && e.to_string().contains("(using password: YES) (error 1045, SQLSTATE 28000)"),
        "{e}"
    );
    assert!(!e.to_string().contains(sentinel) && !e.to_string().contains("gave up"), "{e}");
    assert!(!format!("{e:?}").contains(sentinel));
}

#[tokio::test]
async fn an_unreachable_server_is_transient_and_named() {
    let x = export(json!({"table": "whatever", "port": 1}), None).expect("config");
    let host = stack().var("FERRY_MYSQL_HOST");
    let e = source_of(&x).count(&x, &Window::between(None, None), TODAY).await.expect_err("nothing listens on port 1");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert!(e.to_string().contains(&format!("MySQL {host}:1/ferry: connect: Connection refused")), "{e}");
    assert!(e.to_string().contains("(gave up after 2 attempts"), "retried: {e}");
    let e = read_all(&source_of(&x), &x, &Window::between(None, None), TODAY).await.expect_err("read");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
}

#[tokio::test]
async fn a_missing_table_or_column_is_permanent_and_named() {
    let t = unique("my_missing");
    let x = export(json!({"table": t}), Some("updated_at")).expect("config");
    let source = source_of(&x);
    let e = read_all(&source, &x, &Window::between(None, None), TODAY).await.expect_err("no table");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(
        e.to_string().contains(&format!("MySQL {}: table {t}: Table 'ferry.{t}' doesn't exist (error 1146, SQLSTATE 42S02)", server())),
        "{e}"
    );
    let e = source.bounds(&x, TODAY).await.expect_err("no table");
    assert!(e.to_string().contains("(error 1146") && !e.to_string().contains("gave up"), "not retried: {e}");

    let my = My::connect().await;
    my.exec(&format!("CREATE TABLE {t} (id INT)")).await;
    let e = source.bounds(&x, TODAY).await.expect_err("no cursor column");
    // MariaDB 10.11 says `in 'SELECT'`, MySQL `in 'field list'`.
    assert!(e.to_string().contains("Unknown column 's.updated_at' in '") && e.to_string().contains("(error 1054, SQLSTATE 42S22)"), "{e}");
    let x = export(json!({"table": t, "columns": ["id", "nope"]}), None).expect("config");
    let e = read_all(&source_of(&x), &x, &Window::between(None, None), TODAY).await.expect_err("no column");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(e.to_string().contains("Unknown column 's.nope'") && e.to_string().contains("(error 1054"), "{e}");
    let x = export(json!({"query": format!("SELEC id FROM {t}")}), None).expect("config");
    let e = read_all(&source_of(&x), &x, &Window::between(None, None), TODAY).await.expect_err("syntax");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(e.to_string().contains("(error 1064, SQLSTATE 42000)"), "{e}");
    my.exec(&format!("DROP TABLE {t}")).await;
}

#[test]
fn identifier_injection_is_refused_when_the_config_is_checked() {
    for (fields, path) in [
        (json!({"table": "orders; DROP TABLE orders"}), "exports[0].source.table"),
        (json!({"table": "`orders`"}), "exports[0].source.table"),
        (json!({"table": "a.b.c"}), "exports[0].source.table"),
        (json!({"table": "orders", "columns": ["id", "x` FROM mysql.user --"]}), "exports[0].source.columns[1]"),
        (json!({"table": "orders", "columns": ["id) UNION SELECT password FROM mysql.user --"]}), "exports[0].source.columns[0]"),
        (json!({"query": "SELECT * FROM orders WHERE id = ?"}), "exports[0].source.query"),
    ] {
        let ConfigErrors(errors) = export(fields.clone(), None).expect_err("refused");
        assert_eq!(errors.len(), 1, "{fields}: {errors:?}");
        assert_eq!(errors[0].path, path, "{fields}");
    }
    let ConfigErrors(errors) = export(json!({"password": "x"}), None).expect_err("refused");
    assert_eq!(errors[0].path, "exports[0].source.password");
}
