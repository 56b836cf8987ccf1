//! gRPC over HTTP/2, as much as the Storage Read API needs: unary calls and server streams of
//! length-prefixed protobuf messages, the status in the trailers (or in the headers of a
//! "trailers-only" answer). Written on hyper rather than taken from tonic: two methods do not
//! need tonic's channel, balancing and codegen stack (see the README's "Choice of crates").
//!
//! `http://` endpoints (the local emulator) speak HTTP/2 without TLS; `https://` ones use rustls
//! with the web PKI roots and ALPN `h2`.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferry_core::{Classify, ErrorClass};
use ferry_google::{percent_decode, GoogleError, TokenSource};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The largest message accepted (a record batch of the emulator can hold a million rows).
const MAX_MESSAGE: usize = 256 << 20;

/// The largest message whose room is reserved as soon as its length is known.
const RESERVE_AT_ONCE: usize = 64 << 20;

/// What the server may send on one call before ferry reads it.
const STREAM_WINDOW: u32 = 2 << 20;

/// What the server may send on all calls together: the most streams open at once and a
/// session call, each with a full window.
const CONNECTION_WINDOW: u32 = (ferry_core::config::MAX_STORAGE_STREAMS + 1) * STREAM_WINDOW;

/// A failed gRPC call.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The server answered with a non-OK gRPC status.
    #[error("{method}: {code_name} ({code}): {message}")]
    Status { method: &'static str, code: u32, code_name: &'static str, message: String },
    /// No answer, or the answer broke off.
    #[error("{method}: no answer from {endpoint}: {reason}")]
    Transport { method: &'static str, endpoint: String, reason: String },
    /// The answer was not gRPC, or a message did not decode.
    #[error("{method}: unexpected answer: {reason}")]
    Protocol { method: &'static str, reason: String },
    #[error("credentials: {0}")]
    Credentials(#[from] GoogleError),
}

/// The names of gRPC status codes.
fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

impl Classify for GrpcError {
    fn class(&self) -> ErrorClass {
        match self {
            // CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE.
            GrpcError::Status { code: 1 | 4 | 8 | 10 | 13 | 14, .. } => ErrorClass::Transient,
            GrpcError::Status { .. } | GrpcError::Protocol { .. } => ErrorClass::Permanent,
            GrpcError::Transport { .. } => ErrorClass::Transient,
            GrpcError::Credentials(e) => e.class(),
        }
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A connection pool to one gRPC endpoint.
#[derive(Clone)]
pub struct Channel {
    client: Client<Https, Full<Bytes>>,
    endpoint: String,
    tokens: TokenSource,
    /// How long a call may wait for its answer, and an answer between two of its frames.
    timeout: Duration,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl Channel {
    /// A channel to `endpoint` (`https://bigquerystorage.googleapis.com`, or an emulator's
    /// `http://host:port`), authorised by `tokens`. A call waits at most `timeout` for its
    /// answer, and a stream at most `timeout` for its next frame; either is a transient
    /// failure.
    pub fn new(endpoint: &str, tokens: TokenSource, timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http2().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_initial_stream_window_size(STREAM_WINDOW)
            // Room for every stream's window at once: a stream whose data waits unread (its
            // reader has no place to hand a batch to yet) holds connection window too, and
            // would otherwise starve the stream being read.
            .http2_initial_connection_window_size(CONNECTION_WINDOW)
            .build(https);
        Self { client, endpoint: endpoint.trim_end_matches('/').to_owned(), tokens, timeout }
    }

    /// Sends `request` to `method` (`/package.Service/Method`); the answer's messages.
    /// `routing` is the `x-goog-request-params` header Google routes by.
    pub async fn call(&self, method: &'static str, request: &impl prost::Message, routing: &str) -> Result<Messages, GrpcError> {
        let mut body = BytesMut::with_capacity(5 + request.encoded_len());
        body.put_u8(0);
        body.put_u32(request.encoded_len() as u32);
        request.encode(&mut body).map_err(|e| GrpcError::Protocol { method, reason: e.to_string() })?;
        let mut req = hyper::Request::post(format!("{}{method}", self.endpoint))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", format!("{}S", self.timeout.as_secs().max(1)))
            .header("x-goog-request-params", routing);
        if let Some(token) = self.tokens.bearer().await? {
            req = req.header("authorization", format!("Bearer {}", token.expose()));
        }
        let req = req.body(Full::new(body.freeze())).map_err(|e| GrpcError::Protocol { method, reason: e.to_string() })?;
        let transport = |reason: String| GrpcError::Transport { method, endpoint: self.endpoint.clone(), reason };
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| transport(format!("no answer within {} s", self.timeout.as_secs())))?
            .map_err(|e| transport(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        // Trailers-only: the status came with the headers, and no message follows.
        let trailers_only = match status_of(method, &parts.headers) {
            Some(status) => {
                status?;
                true
            }
            None => false,
        };
        if parts.status != hyper::StatusCode::OK {
            // An answer from a proxy or front end, not from the service: gRPC's mapping of
            // HTTP statuses (429, 502, 503, 504: UNAVAILABLE).
            let code = match parts.status.as_u16() {
                429 | 502 | 503 | 504 => 14,
                401 => 16,
                403 => 7,
                404 => 12,
                _ => 2,
            };
            let message = format!("HTTP status {}", parts.status);
            return Err(GrpcError::Status { method, code, code_name: code_name(code), message });
        }
        let grpc = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/grpc"));
        if !grpc {
            return Err(GrpcError::Protocol { method, reason: "the answer is not gRPC (content-type)".into() });
        }
        Ok(Messages { method, endpoint: self.endpoint.clone(), body, buf: BytesMut::new(), done: trailers_only, idle: self.timeout })
    }
}

/// The status in `headers`, when they carry one: `Ok(())` for OK.
fn status_of(method: &'static str, headers: &hyper::HeaderMap) -> Option<Result<(), GrpcError>> {
    let code: u32 = headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    if code == 0 {
        return Some(Ok(()));
    }
    let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).map(percent_decode).unwrap_or_default();
    Some(Err(GrpcError::Status { method, code, code_name: code_name(code), message }))
}

/// The messages of an answer, in order; the call's status once they end.
pub struct Messages {
    method: &'static str,
    endpoint: String,
    body: Incoming,
    buf: BytesMut,
    done: bool,
    /// How long to wait for the next frame.
    idle: Duration,
}

impl Messages {
    /// The next message; `None` after the last, once the trailers said OK.
    pub async fn next<M: prost::Message + Default>(&mut self) -> Result<Option<M>, GrpcError> {
        let method = self.method;
        loop {
            if self.buf.len() >= 5 {
                if self.buf[0] != 0 {
                    return Err(GrpcError::Protocol { method, reason: "a compressed message (none was asked for)".into() });
                }
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if len > MAX_MESSAGE {
                    return Err(GrpcError::Protocol { method, reason: format!("a message of {len} bytes, more than {MAX_MESSAGE}") });
                }
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    let bytes = self.buf.split_to(len).freeze();
                    return M::decode(bytes).map(Some).map_err(|e| GrpcError::Protocol { method, reason: e.to_string() });
                }
                // Room for the rest of the message at once, and a frame more (the last frame
                // can carry the start of the next message): growing by doubling would hold up to
                // twice a large message. Above RESERVE_AT_ONCE it grows as data arrives, so that
                // a length alone cannot reserve 256 MiB.
                if len <= RESERVE_AT_ONCE {
                    self.buf.reserve(5 + len - self.buf.len() + (64 << 10));
                }
            }
            if self.done {
                if !self.buf.is_empty() {
                    return Err(GrpcError::Protocol { method, reason: "the answer ended inside a message".into() });
                }
                return Ok(None);
            }
            let frame = tokio::time::timeout(self.idle, self.body.frame()).await.map_err(|_| GrpcError::Transport {
                method,
                endpoint: self.endpoint.clone(),
                reason: format!("no data for {} s", self.idle.as_secs()),
            })?;
            match frame {
                None => {
                    return Err(GrpcError::Transport {
                        method,
                        endpoint: self.endpoint.clone(),
                        reason: "the answer ended without a gRPC status".into(),
                    })
                }
                Some(Err(e)) => return Err(GrpcError::Transport { method, endpoint: self.endpoint.clone(), reason: e.to_string() }),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            match status_of(method, &trailers) {
                                Some(status) => status?,
                                None => return Err(GrpcError::Protocol { method, reason: "trailers without grpc-status".into() }),
                            }
                            self.done = true;
                        }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode("table%20not%20found%3A%20x"), "table not found: x");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn transient_codes_are_retried() {
        let s = |code| GrpcError::Status { method: "/m", code, code_name: code_name(code), message: String::new() };
        assert_eq!(s(14).class(), ErrorClass::Transient);
        assert_eq!(s(3).class(), ErrorClass::Permanent);
        assert_eq!(s(14).to_string(), "/m: UNAVAILABLE (14): ");
    }
}
