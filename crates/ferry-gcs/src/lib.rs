//! Google Cloud Storage for ferry: list objects by prefix and stream an object's bytes, over
//! the JSON API with reqwest. Enough for the staged `EXPORT DATA` → GCS → SFTP path; works
//! against GCS and fake-gcs-server alike.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use serde::Deserialize;

/// Errors of the GCS client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcsError {
    /// GCS answered with an error status.
    #[error("GCS {op} gs://{bucket}/{object}: HTTP {status}: {message}")]
    Api { op: &'static str, bucket: String, object: String, status: u16, message: String },
    /// No answer.
    #[error("GCS {op} gs://{bucket}/{object}: {reason}")]
    Transport { op: &'static str, bucket: String, object: String, reason: String },
}

/// One object in a listing.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Object name.
    pub name: String,
    /// Size in bytes (the JSON API sends it as a string).
    #[serde(deserialize_with = "de_u64_str")]
    pub size: u64,
}

fn de_u64_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// A GCS JSON API client.
#[derive(Debug, Clone)]
pub struct Gcs {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

impl Gcs {
    /// `endpoint` is `https://storage.googleapis.com` in production or the emulator's address.
    pub fn new(endpoint: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build().expect("reqwest client");
        Self { http, endpoint: endpoint.trim_end_matches('/').to_owned(), token }
    }

    fn req(&self, url: String) -> reqwest::RequestBuilder {
        let r = self.http.get(url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Every object under `prefix`, following page tokens.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, GcsError> {
        #[derive(Deserialize)]
        struct Listing {
            #[serde(default)]
            items: Vec<ObjectInfo>,
            #[serde(rename = "nextPageToken")]
            next: Option<String>,
        }
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/storage/v1/b/{}/o?prefix={}", self.endpoint, enc(bucket), enc(prefix));
            if let Some(t) = &token {
                url.push_str(&format!("&pageToken={}", enc(t)));
            }
            let err = |reason: String| GcsError::Transport { op: "list", bucket: bucket.into(), object: prefix.into(), reason };
            let resp = self.req(url).send().await.map_err(|e| err(e.without_url().to_string()))?;
            let status = resp.status();
            if !status.is_success() {
                let message = resp.text().await.unwrap_or_default().chars().take(300).collect();
                return Err(GcsError::Api { op: "list", bucket: bucket.into(), object: prefix.into(), status: status.as_u16(), message });
            }
            let page: Listing = resp.json().await.map_err(|e| err(e.without_url().to_string()))?;
            out.extend(page.items);
            match page.next {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// The object's bytes as a stream; nothing is buffered beyond one network chunk.
    pub async fn download(
        &self,
        bucket: &str,
        object: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, GcsError>> + Send + 'static, GcsError> {
        let url = format!("{}/storage/v1/b/{}/o/{}?alt=media", self.endpoint, enc(bucket), enc(object));
        let (b, o) = (bucket.to_owned(), object.to_owned());
        let resp = self.req(url).send().await.map_err(|e| GcsError::Transport {
            op: "download",
            bucket: b.clone(),
            object: o.clone(),
            reason: e.without_url().to_string(),
        })?;
        let status = resp.status();
        if !status.is_success() {
            let message = resp.text().await.unwrap_or_default().chars().take(300).collect();
            return Err(GcsError::Api { op: "download", bucket: b, object: o, status: status.as_u16(), message });
        }
        Ok(resp.bytes_stream().map_err(move |e| GcsError::Transport {
            op: "download",
            bucket: b.clone(),
            object: o.clone(),
            reason: e.without_url().to_string(),
        }))
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
