//! The GCS emulator answers the JSON API calls a GCS client makes: list by prefix (sizes as
//! strings) and download media, with the bytes that were uploaded.

use ferry_testkit::{stack, unique};
use futures::TryStreamExt;
use serde_json::Value;

/// An object name as one URL path segment.
fn segment(name: &str) -> String {
    name.replace('/', "%2F")
}

#[tokio::test]
async fn list_by_prefix_and_streamed_download() {
    let endpoint = stack().var("FERRY_GCS_ENDPOINT");
    let http = reqwest::Client::new();
    let bucket = unique("smoke").replace('_', "-");
    let r = http
        .post(format!("{endpoint}/storage/v1/b?project=ferry-test"))
        .json(&serde_json::json!({"name": bucket}))
        .send()
        .await
        .expect("create bucket");
    assert!(r.status().is_success(), "create bucket: {}", r.status());

    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    for name in ["export/part-0.csv", "export/part-1.csv", "other/x.csv"] {
        let r = http
            .post(format!("{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}", segment(name)))
            .body(payload.clone())
            .send()
            .await
            .expect("upload");
        assert!(r.status().is_success(), "upload {name}: {}", r.status());
    }

    let r = http.get(format!("{endpoint}/storage/v1/b/{bucket}/o?prefix=export%2F")).send().await.expect("list");
    assert!(r.status().is_success(), "list: {}", r.status());
    let listing: Value = r.json().await.expect("listing");
    let mut listed: Vec<(String, String)> = listing["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| (o["name"].as_str().expect("name").to_owned(), o["size"].as_str().expect("size as a string").to_owned()))
        .collect();
    listed.sort();
    let size = payload.len().to_string();
    assert_eq!(listed, [("export/part-0.csv".to_owned(), size.clone()), ("export/part-1.csv".to_owned(), size)]);

    let r =
        http.get(format!("{endpoint}/storage/v1/b/{bucket}/o/{}?alt=media", segment("export/part-1.csv"))).send().await.expect("download");
    assert!(r.status().is_success(), "download: {}", r.status());
    let chunks: Vec<bytes::Bytes> = r.bytes_stream().try_collect().await.expect("stream");
    assert!(chunks.len() > 1, "the body arrives in several chunks");
    assert_eq!(chunks.concat(), payload);

    let r =
        http.get(format!("{endpoint}/storage/v1/b/{bucket}/o/{}?alt=media", segment("export/missing.csv"))).send().await.expect("download");
    assert_eq!(r.status(), 404);
}
