//! Google Cloud Storage through its JSON API, for staged exports: list the objects under a
//! prefix (size, generation, CRC32C, MD5), stream one generation's bytes, delete by generation.
//! [`Gcs`] implements ferry's [`Staging`] role for one bucket.
//!
//! Downloads ask for the listed generation (`generation=`), so an object replaced since it was
//! listed answers 404 instead of other bytes, and are checked against the object's CRC32C as
//! they stream: a copy that ends with other bytes than the object's is an error, not a file.
//! Deletes carry `ifGenerationMatch`. Listing and deleting are retried on transient errors
//! (both are idempotent); a download that breaks off is an error of the copy, which the run
//! repeats as a whole.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use ferry_core::{Classify, ErrorClass, Failure, ObjectReader, RetryPolicy, StagedObject, Staging};
use ferry_google::{percent_encode, ApiError, Auth, GoogleError, TokenSource};
use serde_json::Value;

/// Google's Cloud Storage endpoint.
pub const GCS_ENDPOINT: &str = "https://storage.googleapis.com";

/// Errors of a GCS call; each names the bucket (and object) and the endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcsError {
    /// No answer, or the connection broke off.
    #[error("GCS {endpoint}: {what}: no answer: {reason}")]
    Transport { endpoint: String, what: String, reason: String },
    /// The API answered with an error.
    #[error("GCS: {what}: {api}")]
    Api { what: String, api: ApiError },
    /// The answer is not what the API documents.
    #[error("GCS: {what}: unexpected answer: {reason}")]
    Answer { what: String, reason: String },
    /// No access token.
    #[error("GCS: {0}")]
    Auth(#[from] GoogleError),
}

impl Classify for GcsError {
    fn class(&self) -> ErrorClass {
        match self {
            GcsError::Transport { .. } => ErrorClass::Transient,
            GcsError::Api { api, .. } => api.class(),
            GcsError::Answer { .. } => ErrorClass::Permanent,
            GcsError::Auth(e) => e.class(),
        }
    }
}

/// One bucket of Cloud Storage.
#[derive(Clone)]
pub struct Gcs {
    http: reqwest::Client,
    endpoint: String,
    bucket: String,
    tokens: TokenSource,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Gcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gcs").field("endpoint", &self.endpoint).field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

impl Gcs {
    /// The bucket `bucket` at `endpoint` (an emulator's, or [`GCS_ENDPOINT`]); a request
    /// without an answer for `timeout` fails (a download: no new bytes for that long).
    pub fn new(endpoint: &str, bucket: &str, auth: Auth, timeout: Duration) -> Self {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).read_timeout(timeout).build().expect("HTTP client");
        Self {
            tokens: TokenSource::new(http.clone(), auth),
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            bucket: bucket.to_owned(),
            retry: RetryPolicy::default(),
        }
    }

    /// The same bucket with another retry policy for listing and deleting.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    fn object_url(&self, name: &str) -> String {
        format!("{}/storage/v1/b/{}/o/{}", self.endpoint, percent_encode(&self.bucket), percent_encode(name))
    }

    fn transport(&self, what: &str) -> impl Fn(reqwest::Error) -> GcsError + '_ {
        let what = what.to_owned();
        move |e| GcsError::Transport { endpoint: self.endpoint.clone(), what: what.clone(), reason: e.without_url().to_string() }
    }

    /// Every object whose name starts with `prefix`, by name (all pages).
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<StagedObject>, GcsError> {
        let what = format!("listing gs://{}/{prefix}", self.bucket);
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut query = vec![("prefix", prefix.to_owned()), ("maxResults", "1000".to_owned())];
            if let Some(p) = &page {
                query.push(("pageToken", p.clone()));
            }
            let url = format!("{}/storage/v1/b/{}/o", self.endpoint, percent_encode(&self.bucket));
            let body = self
                .retry
                .run("gcs list", || async {
                    let req = self.tokens.authorize(self.http.get(&url).query(&query)).await?;
                    let resp = req.send().await.map_err(self.transport(&what))?;
                    let status = resp.status();
                    let bytes = resp.bytes().await.map_err(self.transport(&what))?;
                    if !status.is_success() {
                        return Err(GcsError::Api { what: what.clone(), api: ApiError::parse(status.as_u16(), &bytes) });
                    }
                    serde_json::from_slice::<Value>(&bytes).map_err(|e| GcsError::Answer { what: what.clone(), reason: e.to_string() })
                })
                .await
                .map_err(|g| g.into_inner())?;
            for item in body["items"].as_array().into_iter().flatten() {
                // Folder placeholders (`a/b/`, zero bytes) are not files.
                if item["name"].as_str().is_some_and(|n| n.ends_with('/')) {
                    continue;
                }
                out.push(object_of(item).map_err(|reason| GcsError::Answer { what: what.clone(), reason })?);
            }
            match body["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => page = Some(t.to_owned()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Starts a download of `object`'s listed generation.
    pub async fn download(&self, object: &StagedObject) -> Result<Download, GcsError> {
        let what = format!("downloading gs://{}/{} (generation {})", self.bucket, object.name, object.generation);
        let req = self
            .http
            .get(self.object_url(&object.name))
            .query(&[("alt", "media"), ("generation", object.generation.as_str())])
            // The stored bytes as they are: GCS decompresses an object stored with
            // `Content-Encoding: gzip` unless the client accepts gzip (and this client does not
            // decode it).
            .header(reqwest::header::ACCEPT_ENCODING, "gzip");
        let resp = self.tokens.authorize(req).await?.send().await.map_err(self.transport(&what))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut api = ApiError::parse(status.as_u16(), &bytes);
            if status.as_u16() == 404 {
                api.message = format!("{}; the object was deleted or replaced since it was listed", api.message);
            }
            return Err(GcsError::Api { what, api });
        }
        Ok(Download { resp, crc: 0, bytes: 0, object: object.clone(), what, endpoint: self.endpoint.clone() })
    }

    /// Deletes `object` if it still has its listed generation; an object already gone counts
    /// as deleted.
    pub async fn delete_object(&self, object: &StagedObject) -> Result<(), GcsError> {
        let what = format!("deleting gs://{}/{}", self.bucket, object.name);
        self.retry
            .run("gcs delete", || async {
                let req = self.http.delete(self.object_url(&object.name)).query(&[("ifGenerationMatch", object.generation.as_str())]);
                let resp = self.tokens.authorize(req).await?.send().await.map_err(self.transport(&what))?;
                let status = resp.status();
                let bytes = resp.bytes().await.map_err(self.transport(&what))?;
                match status.as_u16() {
                    200..=299 | 404 => Ok(()),
                    s => Err(GcsError::Api { what: what.clone(), api: ApiError::parse(s, &bytes) }),
                }
            })
            .await
            .map_err(|g| g.into_inner())
    }
}

/// Reads an object resource of the JSON API.
fn object_of(v: &Value) -> Result<StagedObject, String> {
    let name = v["name"].as_str().ok_or("an object without a name")?.to_owned();
    // The JSON API writes 64-bit numbers as strings.
    let number = |field: &str| -> Result<String, String> {
        match &v[field] {
            Value::String(s) if s.parse::<u64>().is_ok() => Ok(s.clone()),
            Value::Number(n) if n.is_u64() => Ok(n.to_string()),
            other => Err(format!("object {name}: {field} is {other}, not a number")),
        }
    };
    let bytes = number("size")?.parse().map_err(|_| format!("object {name}: size is not a number"))?;
    let generation = number("generation")?;
    let crc32c = match v["crc32c"].as_str() {
        Some(b64) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| format!("object {name}: crc32c {b64:?} is not base64"))?;
            let raw: [u8; 4] = raw.try_into().map_err(|_| format!("object {name}: crc32c {b64:?} is not 4 bytes"))?;
            // Big-endian, as GCS documents.
            Some(u32::from_be_bytes(raw))
        }
        None => None,
    };
    let md5 = v["md5Hash"].as_str().map(str::to_owned);
    Ok(StagedObject { name, bytes, generation, crc32c, md5 })
}

/// A download in progress; its CRC32C and size are checked against the object's at the end.
pub struct Download {
    resp: reqwest::Response,
    crc: u32,
    bytes: u64,
    object: StagedObject,
    what: String,
    endpoint: String,
}

impl Download {
    /// The next chunk; `None` after the last, once the bytes matched the object's size and
    /// CRC32C.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, GcsError> {
        let chunk = self.resp.chunk().await.map_err(|e| GcsError::Transport {
            endpoint: self.endpoint.clone(),
            what: self.what.clone(),
            reason: format!("{} after {} of {} bytes", e.without_url(), self.bytes, self.object.bytes),
        })?;
        match chunk {
            Some(c) => {
                self.crc = crc32c::crc32c_append(self.crc, &c);
                self.bytes += c.len() as u64;
                Ok(Some(c))
            }
            None => {
                let mismatch = |reason: String| GcsError::Answer { what: self.what.clone(), reason };
                if self.bytes != self.object.bytes {
                    return Err(mismatch(format!(
                        "{} bytes arrived, the object has {}; it may have changed during the copy",
                        self.bytes, self.object.bytes
                    )));
                }
                if let Some(expected) = self.object.crc32c.filter(|c| *c != self.crc) {
                    return Err(mismatch(format!("the bytes that arrived have CRC32C {:08x}, the object has {expected:08x}", self.crc)));
                }
                Ok(None)
            }
        }
    }
}

#[async_trait]
impl ObjectReader for Download {
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, Failure> {
        self.chunk().await.map_err(Failure::new)
    }
}

#[async_trait]
impl Staging for Gcs {
    async fn list(&self, prefix: &str) -> Result<Vec<StagedObject>, Failure> {
        self.list_objects(prefix).await.map_err(Failure::new)
    }

    async fn open(&self, object: &StagedObject) -> Result<Box<dyn ObjectReader>, Failure> {
        Ok(Box::new(self.download(object).await.map_err(Failure::new)?))
    }

    async fn delete(&self, object: &StagedObject) -> Result<(), Failure> {
        self.delete_object(object).await.map_err(Failure::new)
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_resources() {
        let v = serde_json::json!({"name": "a/b.csv", "size": "5", "generation": "1796283233567561",
            "crc32c": "mnG7TA==", "md5Hash": "XUFAKrxLKna5cZ2REBfFkg=="});
        let o = object_of(&v).unwrap();
        assert_eq!((o.name.as_str(), o.bytes, o.generation.as_str()), ("a/b.csv", 5, "1796283233567561"));
        // The CRC32C of "hello".
        assert_eq!(o.crc32c, Some(crc32c::crc32c(b"hello")));
        assert_eq!(o.md5.as_deref(), Some("XUFAKrxLKna5cZ2REBfFkg=="));
        assert!(object_of(&serde_json::json!({"name": "x", "size": "big", "generation": "1"})).unwrap_err().contains("size"));
        assert!(object_of(&serde_json::json!({"name": "x", "size": "1", "generation": "1", "crc32c": "AAA="})).is_err());
    }
}
