use std::time::Duration;

use base64::Engine;
use ferry_testkit::eventually;
use ferry_testkit::pubsub::{PushEndpoint, TestTopic};
use serde_json::json;

#[tokio::test]
async fn published_message_is_pushed_to_a_local_endpoint() {
    let endpoint = PushEndpoint::start(204).await;
    let topic = TestTopic::create("smoke").await;
    let sub = topic.push_to(&endpoint.url).await;
    let id = topic.publish(br#"{"config":"default"}"#, json!({"origin": "smoke"})).await;

    let got = eventually(Duration::from_secs(30), "the emulator's push", || async { endpoint.received().into_iter().next() }).await;
    let msg = &got.body["message"];
    assert_eq!(got.body["subscription"], json!(sub));
    assert_eq!(msg["messageId"], json!(id));
    assert_eq!(msg["attributes"]["origin"], json!("smoke"));
    let data = base64::engine::general_purpose::STANDARD.decode(msg["data"].as_str().expect("data")).expect("base64");
    assert_eq!(data, br#"{"config":"default"}"#);
}

#[tokio::test]
async fn a_failed_push_is_redelivered() {
    let endpoint = PushEndpoint::start(500).await;
    let topic = TestTopic::create("smoke").await;
    topic.push_to(&endpoint.url).await;
    let id = topic.publish(b"retry me", json!({})).await;
    let got = eventually(Duration::from_secs(60), "a redelivery after HTTP 500", || async {
        let r = endpoint.received();
        (r.len() >= 2).then_some(r)
    })
    .await;
    assert!(got.iter().all(|r| r.body["message"]["messageId"] == json!(id)));
}
