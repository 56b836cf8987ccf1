//! Pub/Sub emulator administration over its REST API, and a local push endpoint.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use base64::Engine;
use serde_json::{json, Value};

use crate::{stack, unique};

/// A topic of its own for one test.
pub struct TestTopic {
    http: reqwest::Client,
    base: String,
    /// Full topic name `projects/P/topics/T`.
    pub name: String,
}

impl TestTopic {
    /// Creates `prefix_<hex>` in the emulator.
    pub async fn create(prefix: &str) -> Self {
        let s = stack();
        let base = format!("{}/v1", s.var("FERRY_PUBSUB_ENDPOINT"));
        let name = format!("projects/{}/topics/{}", s.var("FERRY_PUBSUB_PROJECT"), unique(prefix));
        let http = reqwest::Client::new();
        let resp = http.put(format!("{base}/{name}")).send().await.unwrap_or_else(|e| panic!("Pub/Sub emulator unreachable: {e}"));
        assert!(resp.status().is_success(), "creating topic {name}: {}", resp.status());
        Self { http, base, name }
    }

    /// Creates a push subscription delivering to `endpoint`; returns its full name.
    pub async fn push_to(&self, endpoint: &str) -> String {
        self.push_to_with(endpoint, json!({})).await
    }

    /// [`TestTopic::push_to`] with more subscription fields (`extra`, e.g. a
    /// `deadLetterPolicy`).
    pub async fn push_to_with(&self, endpoint: &str, extra: Value) -> String {
        let sub = self.name.replace("/topics/", "/subscriptions/") + "-push";
        let mut body = json!({"topic": self.name, "pushConfig": {"pushEndpoint": endpoint}, "ackDeadlineSeconds": 10});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        let resp = self.http.put(format!("{}/{sub}", self.base)).json(&body).send().await.expect("create subscription");
        assert!(resp.status().is_success(), "creating subscription {sub}: {} {}", resp.status(), resp.text().await.unwrap_or_default());
        sub
    }

    /// Creates a pull subscription of the topic (to see what reaches a dead-letter topic).
    pub async fn pull_subscription(&self) -> PullSubscription {
        let name = self.name.replace("/topics/", "/subscriptions/") + "-pull";
        let resp =
            self.http.put(format!("{}/{name}", self.base)).json(&json!({"topic": self.name})).send().await.expect("create subscription");
        assert!(resp.status().is_success(), "creating subscription {name}: {}", resp.status());
        PullSubscription { http: self.http.clone(), base: self.base.clone(), name }
    }

    /// Publishes one message; returns its message id.
    pub async fn publish(&self, data: &[u8], attributes: Value) -> String {
        let body = json!({"messages": [{"data": base64::engine::general_purpose::STANDARD.encode(data), "attributes": attributes}]});
        let resp = self.http.post(format!("{}/{}:publish", self.base, self.name)).json(&body).send().await.expect("publish");
        assert!(resp.status().is_success(), "publishing to {}: {}", self.name, resp.status());
        let v: Value = resp.json().await.expect("publish response");
        v["messageIds"][0].as_str().expect("message id").to_owned()
    }
}

/// A pull subscription in the emulator.
pub struct PullSubscription {
    http: reqwest::Client,
    base: String,
    /// Full name `projects/P/subscriptions/S`.
    pub name: String,
}

impl PullSubscription {
    /// The messages waiting (at most 100), acknowledged; their decoded `data`.
    pub async fn pull(&self) -> Vec<Vec<u8>> {
        let url = format!("{}/{}:pull", self.base, self.name);
        let resp = self.http.post(url).json(&json!({"maxMessages": 100, "returnImmediately": true})).send().await.expect("pull");
        assert!(resp.status().is_success(), "pulling {}: {}", self.name, resp.status());
        let v: Value = resp.json().await.expect("pull response");
        let received = v["receivedMessages"].as_array().cloned().unwrap_or_default();
        let ack: Vec<&str> = received.iter().filter_map(|m| m["ackId"].as_str()).collect();
        if !ack.is_empty() {
            let url = format!("{}/{}:acknowledge", self.base, self.name);
            self.http.post(url).json(&json!({"ackIds": ack})).send().await.expect("acknowledge");
        }
        received
            .iter()
            .map(|m| {
                base64::engine::general_purpose::STANDARD.decode(m["message"]["data"].as_str().unwrap_or_default()).unwrap_or_default()
            })
            .collect()
    }
}

/// A request received by [`PushEndpoint`].
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
}

/// An HTTP endpoint on 127.0.0.1 that records every push and answers with a fixed status.
pub struct PushEndpoint {
    /// `http://127.0.0.1:PORT/push`.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl PushEndpoint {
    /// Starts the endpoint; it answers every request with `status`.
    pub async fn start(status: u16) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = received.clone();
        let app = axum::Router::new().route(
            "/push",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    sink.lock().expect("lock").push(Received { headers, body });
                    axum::http::StatusCode::from_u16(status).expect("status")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/push", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, received }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}
