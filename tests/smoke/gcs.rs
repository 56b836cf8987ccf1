use ferry_gcs::Gcs;
use ferry_testkit::{stack, unique};
use futures::TryStreamExt;

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
            .post(format!("{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}", name.replace('/', "%2F")))
            .body(payload.clone())
            .send()
            .await
            .expect("upload");
        assert!(r.status().is_success(), "upload {name}: {}", r.status());
    }

    let gcs = Gcs::new(&endpoint, None);
    let mut listed = gcs.list(&bucket, "export/").await.expect("list");
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["export/part-0.csv", "export/part-1.csv"]);
    assert!(listed.iter().all(|o| o.size == payload.len() as u64));

    let stream = gcs.download(&bucket, "export/part-1.csv").await.expect("download");
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("stream");
    assert!(chunks.len() > 1, "the body arrives in several chunks");
    assert_eq!(chunks.concat(), payload);

    let err = gcs.download(&bucket, "export/missing.csv").await.err().expect("missing object");
    assert!(err.to_string().contains("404"), "{err}");
}
