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
        let sub = self.name.replace("/topics/", "/subscriptions/") + "-push";
        let body = json!({"topic": self.name, "pushConfig": {"pushEndpoint": endpoint}, "ackDeadlineSeconds": 10});
        let resp = self.http.put(format!("{}/{sub}", self.base)).json(&body).send().await.expect("create subscription");
        assert!(resp.status().is_success(), "creating subscription {sub}: {} {}", resp.status(), resp.text().await.unwrap_or_default());
        sub
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
