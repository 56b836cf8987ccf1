//! Benchmark (see `dev/bench`): encodes generated rows of 10 mixed columns, as typed Arrow
//! batches of 10,000 rows (what a source hands the encoder), to CSV bytes on one core, and
//! prints `rows/s bytes seconds sha256_seconds` (the last: hashing that many bytes alone, the
//! share of the SHA-256 every export computes).
//!
//! Usage: encode [ROWS] [none|gzip]

use std::sync::Arc;
use std::time::Instant;

use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use ferry_core::config::Compression;
use ferry_core::encode::{CsvEncoder, CsvOptions};
use sha2::{Digest, Sha256};

const BATCH: u64 = 10_000;

fn batch(schema: &Arc<Schema>, from: u64, to: u64) -> RecordBatch {
    let ids = from..to;
    let ts = |i: u64| (1_704_067_200_000_000 + i * 1_000_000) as i64;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| i as i64))),
        Arc::new(StringArray::from_iter_values(ids.clone().map(|i| format!("customer-{i}")))),
        Arc::new(Decimal128Array::from_iter_values(ids.clone().map(|i| i as i128 * 10_000_000)).with_precision_and_scale(38, 9).unwrap()),
        Arc::new(Float64Array::from_iter_values(ids.clone().map(|i| i as f64 * 1.5))),
        Arc::new(BooleanArray::from_iter(ids.clone().map(|i| Some(i % 2 == 0)))),
        Arc::new(TimestampMicrosecondArray::from_iter_values(ids.clone().map(ts)).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from_iter_values(ids.clone().map(ts)).with_timezone("UTC")),
        Arc::new(Date32Array::from_iter_values(ids.clone().map(|_| 19_723))),
        Arc::new(StringArray::from_iter(ids.clone().map(|i| (i % 10 != 0).then_some("category-a, \"quoted\"")))),
        Arc::new(Int64Array::from_iter_values(ids.map(|i| (i % 7) as i64))),
    ];
    RecordBatch::try_new(schema.clone(), columns).expect("batch")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args.first().map(|a| a.parse().expect("ROWS")).unwrap_or(1_000_000);
    let compression = match args.get(1).map(String::as_str) {
        Some("gzip") => Compression::Gzip,
        _ => Compression::None,
    };
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Decimal128(38, 9), true),
        Field::new("score", DataType::Float64, true),
        Field::new("active", DataType::Boolean, true),
        Field::new("created_at", ts.clone(), true),
        Field::new("updated_at", ts, true),
        Field::new("day", DataType::Date32, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("qty", DataType::Int64, true),
    ]));
    let batches: Vec<RecordBatch> =
        (0..n.div_ceil(BATCH)).map(|b| batch(&schema, 1 + b * BATCH, (1 + (b + 1) * BATCH).min(n + 1))).collect();

    let t0 = Instant::now();
    let mut enc = CsvEncoder::new(&schema, CsvOptions { delimiter: b',', header: true, compression }).expect("schema");
    for b in &batches {
        enc.write_batch(b).expect("encode");
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
