//! The `postgres` source against the stack's PostgreSQL: each test makes its own tables (as
//! the stack's user `ferry`) and calls the `Source` trait directly.

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
use ferry_postgres::{PostgresSettings, PostgresSource};
use ferry_testkit::{stack, unique};
use serde_json::{json, Value};

/// Knows the `postgres` source and the `sftp` destination (ferry's wiring does not know the
/// source yet); validates configs as ferry does.
struct Registry;

impl Components for Registry {
    fn source_types(&self) -> Vec<&'static str> {
        vec!["postgres"]
    }
    fn destination_types(&self) -> Vec<&'static str> {
        vec!["sftp"]
    }
    fn source(&self, type_name: &str, value: &Value, cx: &ferry_core::config::Check<'_>) -> Option<Option<ferry_core::config::Component>> {
        (type_name == "postgres").then(|| ferry_postgres::validate_source(value, cx))
    }
    fn destination(&self, type_name: &str, value: &Value, cx: &ferry_core::config::Check<'_>) -> Option<Option<Destination>> {
        (type_name == "sftp").then(|| ferry_sftp::component::validate_destination(value, cx))
    }
}

/// The stack's PostgreSQL, and a direct connection for setting up tables.
struct Pg {
    client: tokio_postgres::Client,
}

fn password() -> String {
    stack().file("FERRY_PG_PASSWORD_FILE")
}

impl Pg {
    async fn connect() -> Self {
        let s = stack();
        let mut config = tokio_postgres::Config::new();
        config
            .host(s.var("FERRY_PG_HOST"))
            .port(s.var("FERRY_PG_PORT").parse().expect("FERRY_PG_PORT"))
            .dbname(s.var("FERRY_PG_DATABASE"))
            .user(s.var("FERRY_PG_USER"))
            .password(password());
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to the stack's PostgreSQL (dev/stack up): {e}"));
        tokio::spawn(connection);
        Self { client }
    }

    async fn exec(&self, sql: &str) {
        self.client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}\n-> {e:?}"));
    }
}

/// A source of the stack's PostgreSQL (TLS verify-full with the stack's CA unless `fields`
/// override), as a validated export with `cursor` as its timestamp_column.
fn export(fields: Value, cursor: Option<&str>) -> Result<ExportSpec, ConfigErrors> {
    export_env(fields, cursor, &|_| None)
}

fn export_env(fields: Value, cursor: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<ExportSpec, ConfigErrors> {
    let s = stack();
    let mut source = json!({
        "type": "postgres",
        "host": s.var("FERRY_PG_HOST"),
        "port": s.var("FERRY_PG_PORT").parse::<u16>().unwrap(),
        "database": s.var("FERRY_PG_DATABASE"),
        "user": s.var("FERRY_PG_USER"),
        "password_file": s.var("FERRY_PG_PASSWORD_FILE"),
        "ca_file": s.var("FERRY_PG_CA"),
    });
    for (k, v) in fields.as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            source.as_object_mut().unwrap().remove(&k);
        } else {
            source[k] = v;
        }
    }
    let mut x = json!({
        "name": unique("pg"),
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

fn source_of(x: &ExportSpec) -> PostgresSource {
    let settings = x.source.settings::<PostgresSettings>().expect("postgres settings").clone();
    // Unreachable servers fail fast in tests.
    PostgresSource::new(settings).with_retry(RetryPolicy::fast(2, Duration::from_secs(5)))
}

/// Every batch of `window`.
async fn read_all(source: &PostgresSource, x: &ExportSpec, window: &Window, run_date: &str) -> Result<Vec<RecordBatch>, Failure> {
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

const TODAY: &str = "2024-06-01";

#[tokio::test]
async fn every_mapped_type_reads_its_exact_values() {
    let pg = Pg::connect().await;
    let t = unique("pg_types");
    let mood = unique("mood");
    pg.exec("CREATE EXTENSION IF NOT EXISTS citext").await;
    pg.exec(&format!(
        "CREATE TYPE {mood} AS ENUM ('sad', 'happy');
         CREATE TABLE {t} (
           id int4, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
           n numeric(10,2), nn numeric(38,9), bn numeric, bn2 numeric(40,5),
           t text, vc varchar(10), c char(3), nm name, ci citext, e {mood},
           by bytea, d date, ts timestamp, tz timestamptz, tm time, u uuid, j json, jb jsonb,
           ai int4[], at text[], an numeric(10,2)[], ad date[],
           iv interval, ip inet, mo money, tt timetz, ivs interval[]);
         INSERT INTO {t} VALUES
          (1, true, -32768, 2147483647, -9223372036854775808, 1.5, -0.1,
           -12345678.91, 12345678901234567890.123456789, 12345678901234567890123456789012345678.12345678901234567890123456789012345678, -12345678901234567890123456789012345.12345,
           'plain ünï', 'varchar', 'ab', 'a_name', 'MiXeD', 'happy',
           '\\x00ff10', '2024-02-29', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.654321+02', '23:59:59.999999',
           '123e4567-e89b-12d3-a456-426614174000', '{{\"k\": [1, 2]}}', '{{\"k\": [1, 2], \"a\": null}}',
           '{{1,-2,3}}', '{{\"x\",\"\"}}', '{{1.50,-2.25}}', '{{2000-01-01}}',
           '1 year 2 mons 3 days 04:05:06', '192.168.0.1/24', 12.34, '01:02:03+04', '{{\"1 day\",\"2 hours\"}}');
         INSERT INTO {t} (id, ai) VALUES (2, '{{}}');"
    ))
    .await;
    let x = export(json!({"table": format!("public.{t}")}), None).expect("config");
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

    assert_eq!(ty("b"), DataType::Boolean);
    assert!(col("b").as_boolean().value(r));
    for (name, v) in [("i2", -32768), ("i4", 2147483647), ("i8", i64::MIN)] {
        assert_eq!(ty(name), DataType::Int64);
        assert_eq!(col(name).as_primitive::<Int64Type>().value(r), v, "{name}");
    }
    assert_eq!(col("f4").as_primitive::<Float64Type>().value(r), 1.5);
    assert_eq!(col("f8").as_primitive::<Float64Type>().value(r), -0.1);
    assert_eq!(ty("n"), DataType::Decimal128(38, 9));
    assert_eq!(col("n").as_primitive::<Decimal128Type>().value_as_string(r), "-12345678.910000000");
    assert_eq!(ty("nn"), DataType::Decimal128(38, 9), "numeric(38,9) fits NUMERIC");
    assert_eq!(col("nn").as_primitive::<Decimal128Type>().value_as_string(r), "12345678901234567890.123456789");
    assert_eq!(ty("bn"), DataType::Decimal256(76, 38), "unconstrained numeric is BIGNUMERIC");
    assert_eq!(
        col("bn").as_primitive::<Decimal256Type>().value_as_string(r),
        "12345678901234567890123456789012345678.12345678901234567890123456789012345678"
    );
    assert_eq!(ty("bn2"), DataType::Decimal256(76, 38));
    assert_eq!(
        col("bn2").as_primitive::<Decimal256Type>().value_as_string(r),
        format!("-12345678901234567890123456789012345.12345{}", "0".repeat(33))
    );
    for (name, v) in [("t", "plain ünï"), ("vc", "varchar"), ("c", "ab "), ("nm", "a_name"), ("ci", "MiXeD"), ("e", "happy")] {
        assert_eq!(ty(name), DataType::Utf8, "{name}");
        assert_eq!(meta(name), None, "{name}");
        assert_eq!(col(name).as_string::<i32>().value(r), v, "{name}");
    }
    assert_eq!(col("by").as_binary::<i32>().value(r), [0x00, 0xff, 0x10]);
    assert_eq!(ty("d"), DataType::Date32);
    assert_eq!(
        col("d").as_primitive::<Date32Type>().value(r),
        (NaiveDate::from_ymd_opt(2024, 2, 29).unwrap() - NaiveDate::default()).num_days() as i32
    );
    assert_eq!(ty("ts"), DataType::Timestamp(TimeUnit::Microsecond, None));
    assert_eq!(col("ts").as_primitive::<TimestampMicrosecondType>().value(r), micros("2024-01-02T03:04:05.123456Z"));
    assert_eq!(ty("tz"), DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
    assert_eq!(col("tz").as_primitive::<TimestampMicrosecondType>().value(r), micros("2024-01-02T01:04:05.654321Z"));
    assert_eq!(col("tm").as_primitive::<Time64MicrosecondType>().value(r), 86_399_999_999);
    assert_eq!(col("u").as_string::<i32>().value(r), "123e4567-e89b-12d3-a456-426614174000");
    for name in ["j", "jb"] {
        assert!(is_json(b.schema().field_with_name(name).unwrap()), "{name}");
    }
    assert_eq!(col("j").as_string::<i32>().value(r), r#"{"k": [1, 2]}"#);
    assert_eq!(col("jb").as_string::<i32>().value(r), r#"{"a": null, "k": [1, 2]}"#);
    let list = |name: &str| col(name).as_list::<i32>().value(r);
    assert_eq!(list("ai").as_primitive::<Int64Type>().values(), &[1, -2, 3]);
    assert_eq!(list("at").as_string::<i32>().iter().collect::<Vec<_>>(), [Some("x"), Some("")]);
    let an = list("an");
    assert_eq!((0..2).map(|i| an.as_primitive::<Decimal128Type>().value_as_string(i)).collect::<Vec<_>>(), ["1.500000000", "-2.250000000"]);
    assert_eq!(list("ad").as_primitive::<Date32Type>().values(), &[10_957]);
    for (name, pg_type, v) in [
        ("iv", "interval", "1 year 2 mons 3 days 04:05:06"),
        ("ip", "inet", "192.168.0.1/24"),
        ("mo", "money", "$12.34"),
        ("tt", "timetz", "01:02:03+04"),
        ("ivs", "interval[]", "{\"1 day\",02:00:00}"),
    ] {
        assert_eq!((ty(name), meta(name).as_deref()), (DataType::Utf8, Some(pg_type)), "{name}");
        assert_eq!(col(name).as_string::<i32>().value(r), v, "{name}");
    }
    // Row 2: every column NULL but the empty array.
    for f in b.schema().fields() {
        if f.name() == "id" {
            continue;
        }
        let c = col(f.name());
        if f.name() == "ai" {
            assert!(!c.is_null(nulls) && c.as_list::<i32>().value(nulls).is_empty(), "an empty array is not NULL");
        } else {
            assert!(c.is_null(nulls), "{} is not NULL", f.name());
        }
    }
    pg.exec(&format!("DROP TABLE {t}; DROP TYPE {mood}")).await;
}

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).expect("RFC 3339").timestamp_micros()
}

fn ts(rfc3339: &str) -> Option<CursorValue> {
    Some(CursorValue::Timestamp(micros(rfc3339)))
}

#[tokio::test]
async fn values_that_cannot_be_delivered_are_permanent_errors_naming_column_and_value() {
    let pg = Pg::connect().await;
    let t = unique("pg_bad");
    pg.exec(&format!(
        "CREATE TABLE {t} (nan numeric, big numeric(40,0), inf timestamptz, ninf date, holes int4[], grid int4[]);
         INSERT INTO {t} VALUES ('NaN', 1e39, 'infinity', '-infinity', '{{1,NULL}}', '{{{{1}},{{2}}}}')"
    ))
    .await;
    for (column, expected) in [
        ("nan", "column nan: numeric value NaN cannot be delivered"),
        ("big", "column big: numeric value 1000000000000000000000000000000000000000 does not fit BigQuery BIGNUMERIC"),
        ("inf", "column inf: timestamp infinity cannot be delivered"),
        ("ninf", "column ninf: date -infinity cannot be delivered"),
        ("holes", "column holes: element 2 of an array is NULL: BigQuery arrays cannot hold NULL"),
        ("grid", "column grid: a 2-dimensional array cannot be delivered"),
    ] {
        let x = export(json!({"table": t, "columns": [column]}), None).expect("config");
        let e = read_all(&source_of(&x), &x, &Window::between(None, None), TODAY).await.expect_err(column);
        assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
        assert!(e.to_string().contains(expected), "{column}: {e}");
        assert!(e.to_string().contains(&format!("{t}, column")), "names the table: {e}");
    }
    pg.exec(&format!("DROP TABLE {t}")).await;
}

/// `(id, updated_at, loaded_at)`: ids 3 and 4 tie at the window's `hi`, 5 is beyond it, 6 and 7
/// have no cursor value and arrived at different times.
async fn window_table(pg: &Pg) -> String {
    let t = unique("pg_window");
    pg.exec(&format!(
        "CREATE TABLE {t} (id int4, updated_at timestamptz, loaded_at timestamptz);
         INSERT INTO {t} VALUES
           (1, '2024-01-01 00:00:00+00', '2024-01-01 00:00:00+00'),
           (2, '2024-01-02 00:00:00+00', '2024-01-02 00:00:00+00'),
           (3, '2024-01-03 00:00:00+00', '2024-01-03 00:00:00+00'),
           (4, '2024-01-03 00:00:00+00', '2024-01-03 00:00:00+00'),
           (5, '2024-01-04 00:00:00.000001+00', '2024-01-04 00:00:00+00'),
           (6, NULL, '2024-01-02 12:00:00+00'),
           (7, NULL, '2024-01-05 00:00:00+00')"
    ))
    .await;
    t
}

#[tokio::test]
async fn windows_are_lo_exclusive_hi_inclusive_with_null_cursors_as_the_window_says() {
    let pg = Pg::connect().await;
    let t = window_table(&pg).await;
    for spec in [json!({"table": format!("public.{t}")}), json!({"query": format!("SELECT id, updated_at, loaded_at FROM {t}")})] {
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
        assert!(sql.ends_with(r#" s WHERE s."updated_at" > $1::timestamptz AND s."updated_at" <= $2::timestamptz"#), "{sql}");
    }
    pg.exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn batches_hold_batch_rows_and_count_matches_the_rows_read() {
    let pg = Pg::connect().await;
    let t = unique("pg_batches");
    pg.exec(&format!("CREATE TABLE {t} AS SELECT g::int8 AS id, 'row ' || g AS note FROM generate_series(1, 2500) g")).await;
    let x = export(json!({"table": t, "batch_rows": 1000, "columns": ["note", "id"]}), Some("id")).expect("config");
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
    // Exactly two full batches: the third FETCH finds nothing and adds no batch.
    let two = Window::between(Some(CursorValue::Int64(500)), Some(CursorValue::Int64(2500)));
    assert_eq!(read_all(&source, &x, &two, TODAY).await.unwrap().iter().map(RecordBatch::num_rows).collect::<Vec<_>>(), [1000, 1000]);
    // Nothing in the window: no batch at all.
    let none = Window::between(Some(CursorValue::Int64(2500)), Some(CursorValue::Int64(2500)));
    assert!(read_all(&source, &x, &none, TODAY).await.unwrap().is_empty());
    pg.exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn cursor_columns_of_each_type() {
    let pg = Pg::connect().await;
    let t = unique("pg_cursors");
    pg.exec(&format!(
        "CREATE TABLE {t} (dt timestamp, d date, i2 int2, i4 int4, tx text);
         INSERT INTO {t} VALUES ('2024-01-02 03:04:05.5', '2024-01-02', 7, 70000, 'z'), ('2024-01-01 00:00:00', '2023-12-31', -1, 1, 'a')"
    ))
    .await;
    let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    for (cursor, ty, max) in [
        ("dt", CursorType::Datetime, "2024-01-02T03:04:05.500000"),
        ("d", CursorType::Date, "2024-01-02"),
        ("i2", CursorType::Int64, "7"),
        ("i4", CursorType::Int64, "70000"),
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
    assert!(e.to_string().contains(&format!("{t}, column tx: timestamp_column tx is of type text; expected timestamptz")), "{e}");
    pg.exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn a_query_gets_the_run_date_as_a_parameter_and_its_numeric_casts() {
    let pg = Pg::connect().await;
    let t = unique("pg_query");
    pg.exec(&format!(
        "CREATE TABLE {t} (id int4, day date, amount numeric(12,3));
         INSERT INTO {t} VALUES (1, '2024-06-01', 1.5), (2, '2024-06-02', 2.25), (3, '2024-06-01', -3)"
    ))
    .await;
    let q = format!("SELECT id, amount, amount * 2 AS doubled, amount::numeric(20,1) AS rounded FROM {t} WHERE day = {{date}}");
    let x = export(json!({"query": q}), None).expect("config");
    let source = source_of(&x);
    assert_eq!(source.describe(&x), format!("postgres://{}:{}/ferry/query", stack().var("FERRY_PG_HOST"), stack().var("FERRY_PG_PORT")));
    let batches = read_all(&source, &x, &Window::between(None, None), "2024-06-01").await.expect("read");
    assert_eq!(sorted(ints(&batches, "id")), [Some(1), Some(3)]);
    let schema = batches[0].schema();
    assert_eq!(schema.field_with_name("amount").unwrap().data_type(), &DataType::Decimal128(38, 9), "a table's column keeps its typmod");
    assert_eq!(schema.field_with_name("rounded").unwrap().data_type(), &DataType::Decimal128(38, 9), "a cast carries its typmod");
    assert_eq!(schema.field_with_name("doubled").unwrap().data_type(), &DataType::Decimal256(76, 38), "a computed numeric has none");
    assert_eq!(source.count(&x, &Window::between(None, None), "2024-06-02").await.unwrap(), 1);
    let e = source.count(&x, &Window::between(None, None), "June").await.expect_err("not a date");
    assert!(e.to_string().contains("run date \"June\" is not a date"), "{e}");
    pg.exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn tls_verify_full_trusts_the_stacks_ca_and_nothing_else() {
    let pg = Pg::connect().await;
    let t = window_table(&pg).await;
    let server = format!("{}:{}/ferry", stack().var("FERRY_PG_HOST"), stack().var("FERRY_PG_PORT"));
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
        e.to_string().contains(&format!("PostgreSQL {server}: TLS: the server's certificate was refused: invalid peer certificate")),
        "{e}"
    );
    // The webpki roots do not hold the stack's CA either.
    let x = export(json!({"table": t, "ca_file": null}), None).expect("config");
    let e = source_of(&x).count(&x, &all, TODAY).await.expect_err("webpki roots");
    assert!(e.to_string().contains("certificate was refused"), "{e}");
    pg.exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn a_wrong_password_is_permanent_and_not_repeated() {
    let sentinel = "wrong-Sentinel-pw-4711";
    let env = |k: &str| (k == "PG_WRONG").then(|| sentinel.to_owned());
    let x = export_env(json!({"table": "whatever", "password_file": null, "password_env": "PG_WRONG"}), Some("id"), &env).expect("config");
    let e = source_of(&x).bounds(&x, TODAY).await.expect_err("wrong password");
    let server = format!("{}:{}/ferry", stack().var("FERRY_PG_HOST"), stack().var("FERRY_PG_PORT"));
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(
        e.to_string()
            .contains(&format!("PostgreSQL {server}: connect: password authentication failed for user \"ferry\" (SQLSTATE 28P01)")),
        "{e}"
    );
    assert!(!e.to_string().contains(sentinel) && !e.to_string().contains("gave up"), "{e}");
    assert!(!format!("{e:?}").contains(sentinel));
}

#[tokio::test]
async fn an_unreachable_server_is_transient_and_named() {
    let x = export(json!({"table": "whatever", "port": 1}), None).expect("config");
    let host = stack().var("FERRY_PG_HOST");
    let e = source_of(&x).count(&x, &Window::between(None, None), TODAY).await.expect_err("nothing listens on port 1");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert!(e.to_string().contains(&format!("PostgreSQL {host}:1/ferry: connect: error connecting to server")), "{e}");
    assert!(e.to_string().contains("(gave up after 2 attempts"), "retried: {e}");
    let e = read_all(&source_of(&x), &x, &Window::between(None, None), TODAY).await.expect_err("read");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
}

#[tokio::test]
async fn a_missing_table_or_column_is_permanent_and_named() {
    let t = unique("pg_missing");
    let x = export(json!({"table": format!("public.{t}")}), Some("updated_at")).expect("config");
    let source = source_of(&x);
    let e = read_all(&source, &x, &Window::between(None, None), TODAY).await.expect_err("no table");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(e.to_string().contains(&format!("ferry: table public.{t}: relation \"public.{t}\" does not exist (SQLSTATE 42P01)")), "{e}");
    let e = source.bounds(&x, TODAY).await.expect_err("no table");
    assert!(e.to_string().contains("42P01") && !e.to_string().contains("gave up"), "not retried: {e}");

    let pg = Pg::connect().await;
    pg.exec(&format!("CREATE TABLE {t} (id int4)")).await;
    let e = source.bounds(&x, TODAY).await.expect_err("no cursor column");
    assert!(e.to_string().contains("column s.updated_at does not exist (SQLSTATE 42703)"), "{e}");
    let x = export(json!({"table": t, "columns": ["id", "nope"]}), None).expect("config");
    let e = read_all(&source_of(&x), &x, &Window::between(None, None), TODAY).await.expect_err("no column");
    assert!(e.to_string().contains("column s.nope does not exist (SQLSTATE 42703)"), "{e}");
    pg.exec(&format!("DROP TABLE {t}")).await;
}

#[test]
fn identifier_injection_is_refused_when_the_config_is_checked() {
    for (fields, path) in [
        (json!({"table": "orders; DROP TABLE orders"}), "exports[0].source.table"),
        (json!({"table": "public.\"orders\""}), "exports[0].source.table"),
        (json!({"table": "a.b.c"}), "exports[0].source.table"),
        (json!({"table": "orders", "columns": ["id", "x\" FROM pg_authid --"]}), "exports[0].source.columns[1]"),
        (json!({"table": "orders", "columns": ["id) UNION SELECT passwd FROM pg_shadow --"]}), "exports[0].source.columns[0]"),
    ] {
        let ConfigErrors(errors) = export(fields.clone(), None).expect_err("refused");
        assert_eq!(errors.len(), 1, "{fields}: {errors:?}");
        assert_eq!(errors[0].path, path, "{fields}");
        assert!(errors[0].message.contains("is not a valid") || errors[0].message.contains("expected `schema.table`"), "{errors:?}");
    }
    let ConfigErrors(errors) = export(json!({"password": "x"}), None).expect_err("refused");
    assert_eq!(errors[0].path, "exports[0].source.password");
}
