//! Publishing to Pub/Sub over its REST API (`projects.topics.publish`): how a person triggers
//! an export by hand, the way Cloud Scheduler does.
//!
//! REST rather than the gRPC client crates: publishing one small message needs one HTTPS call,
//! and the gRPC stack (tonic, prost) would add minutes to every build of the binary.

use std::time::Duration;

use base64::Engine;
use ferry_core::{Classify, ErrorClass, Secret};
use serde_json::{json, Value};

/// The production endpoint.
pub const PUBSUB_ENDPOINT: &str = "https://pubsub.googleapis.com";

/// What failed while publishing.
#[derive(Debug, thiserror::Error)]
pub enum PubSubError {
    #[error("topic {0:?} is not a topic name: expected projects/PROJECT/topics/TOPIC, or TOPIC with a project")]
    Topic(String),
    #[error("Pub/Sub at {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    #[error("Pub/Sub refused to publish to {topic}: HTTP {status}: {message}")]
    Api { topic: String, status: u16, message: String },
    #[error("access token: {0}")]
    Auth(String),
}

impl Classify for PubSubError {
    fn class(&self) -> ErrorClass {
        match self {
            PubSubError::Transport { .. } => ErrorClass::Transient,
            PubSubError::Api { status, .. } if *status >= 500 || *status == 429 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

/// How requests are authorised.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No credentials: the emulator.
    None,
    /// A bearer token (for example `gcloud auth print-access-token`).
    Token(Secret),
    /// The metadata server of the Cloud Run / GCE instance.
    MetadataServer,
}

/// `projects/P/topics/T` from a full name, or from `T` and a project.
pub fn topic_name(topic: &str, project: Option<&str>) -> Result<String, PubSubError> {
    let parts: Vec<&str> = topic.split('/').collect();
    let ok =
        |s: &str| s.starts_with(|c: char| c.is_ascii_alphabetic()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c));
    match (parts.as_slice(), project) {
        (["projects", p, "topics", t], _) if ok(p) && ok(t) => Ok(topic.to_owned()),
        ([t], Some(p)) if ok(t) && ok(p) => Ok(format!("projects/{p}/topics/{t}")),
        _ => Err(PubSubError::Topic(topic.to_owned())),
    }
}

/// Publishes messages to topics.
pub struct Publisher {
    http: reqwest::Client,
    endpoint: String,
    auth: Auth,
}

impl Publisher {
    /// `endpoint` is [`PUBSUB_ENDPOINT`] or an emulator's `http://host:port`.
    pub fn new(endpoint: &str, auth: Auth) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client");
        Self { http, endpoint: endpoint.trim_end_matches('/').to_owned(), auth }
    }

    async fn token(&self) -> Result<Option<String>, PubSubError> {
        match &self.auth {
            Auth::None => Ok(None),
            Auth::Token(t) => Ok(Some(t.expose().to_owned())),
            Auth::MetadataServer => {
                let v: Value = self
                    .http
                    .get("http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token")
                    .header("Metadata-Flavor", "Google")
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| PubSubError::Auth(format!("metadata server: {}", e.without_url())))?
                    .json()
                    .await
                    .map_err(|e| PubSubError::Auth(format!("metadata server: {e}")))?;
                v["access_token"]
                    .as_str()
                    .map(|t| Some(t.to_owned()))
                    .ok_or_else(|| PubSubError::Auth("metadata server sent no token".into()))
            }
        }
    }

    /// Publishes `data` with `attributes` to `topic` (`projects/P/topics/T`); returns the
    /// message id.
    pub async fn publish(&self, topic: &str, data: &[u8], attributes: &[(&str, &str)]) -> Result<String, PubSubError> {
        let attrs: serde_json::Map<String, Value> = attributes.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect();
        let body = json!({"messages": [{"data": base64::engine::general_purpose::STANDARD.encode(data), "attributes": attrs}]});
        let mut req = self.http.post(format!("{}/v1/{topic}:publish", self.endpoint)).json(&body);
        if let Some(t) = self.token().await? {
            req = req.bearer_auth(t);
        }
        let transport = |e: reqwest::Error| PubSubError::Transport { endpoint: self.endpoint.clone(), reason: e.without_url().to_string() };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = v["error"]["message"].as_str().unwrap_or("no details").to_owned();
            return Err(PubSubError::Api { topic: topic.to_owned(), status: status.as_u16(), message });
        }
        v["messageIds"][0].as_str().map(str::to_owned).ok_or_else(|| PubSubError::Api {
            topic: topic.to_owned(),
            status: status.as_u16(),
            message: "the answer has no message id".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert_eq!(topic_name("projects/p-1/topics/ferry", None).unwrap(), "projects/p-1/topics/ferry");
        assert_eq!(topic_name("ferry", Some("p-1")).unwrap(), "projects/p-1/topics/ferry");
        assert!(topic_name("ferry", None).is_err());
        assert!(topic_name("projects/p/topics/../x", None).is_err());
        assert!(topic_name("projects/p/subscriptions/s", None).is_err());
    }
}
