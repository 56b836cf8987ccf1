//! Access tokens: none, a fixed one, the metadata server's, or Google's Application Default
//! Credentials (a service-account key or authorized-user file, else the metadata server), cached.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferry_core::Secret;
use serde::Deserialize;

use crate::{ApiError, GoogleError};

mod adc;
mod exchange;

use adc::{AdcEnv, Found};
pub use adc::{Origin, CLOUDSDK_CONFIG_ENV, CREDENTIALS_ENV, DEFAULT_TOKEN_URI};

/// The metadata server's name on Cloud Run and Compute Engine.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// The environment variable that moves the metadata server (`host` or `host:port`, plain
/// HTTP), as Google's own client libraries honour it: for a local stand-in.
pub const METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";

const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// A token is refreshed this long before it expires, so that no request goes out with a token
/// that expires on the way.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A bound on one token request; the metadata server normally answers in milliseconds.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// How requests to a Google API are authorised.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No credentials (an emulator).
    None,
    /// A fixed OAuth access token (for example from `gcloud auth print-access-token`).
    Token(Secret),
    /// The token of the service account attached to the Cloud Run service or Compute Engine
    /// instance, from the metadata server.
    MetadataServer,
    /// Application Default Credentials, found as Google's client libraries find them: the file
    /// named by `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's application-default file
    /// (`$CLOUDSDK_CONFIG` or `~/.config/gcloud`), else the metadata server. Files hold a
    /// service-account key or a user's refresh token.
    ApplicationDefault,
}

/// The bearer token of each request for one [`Auth`]. Clones share one cache: a token from the
/// metadata server or a token endpoint is fetched once and reused until a minute before it
/// expires; callers that arrive while it is being fetched wait for that one request and share
/// its result (a failure too). Which credentials are used is logged once, when they are first
/// needed. `Debug` never shows a token.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    auth: Auth,
    /// `host[:port]` of the metadata server.
    metadata_host: String,
    /// Where [`Auth::ApplicationDefault`] looks for a credentials file.
    adc: AdcEnv,
    /// The cache, locked only to read or replace it, never across a request.
    state: Mutex<State>,
    /// Held by the one caller that asks for a token.
    refresh: tokio::sync::Mutex<()>,
    /// Whether the credentials in use were logged.
    logged: AtomicBool,
}

#[derive(Default)]
struct State {
    token: Option<(Secret, Instant)>,
    /// Completed token requests, to tell whether one finished while a caller waited.
    requests: u64,
    /// The error of the last request, if it failed.
    failure: Option<GoogleError>,
    /// The credentials [`Auth::ApplicationDefault`] settled on: found once, then kept.
    found: Option<Arc<Found>>,
}

impl State {
    fn fresh(&self) -> Option<Secret> {
        self.token.as_ref().filter(|(_, refresh_at)| Instant::now() < *refresh_at).map(|(token, _)| token.clone())
    }
}

impl TokenSource {
    /// Tokens for `auth`, requested with `http`, with the process environment: the metadata
    /// server is `metadata.google.internal`, or the `host[:port]` in `GCE_METADATA_HOST` when
    /// set; [`Auth::ApplicationDefault`] reads `GOOGLE_APPLICATION_CREDENTIALS`,
    /// `CLOUDSDK_CONFIG` and `HOME`.
    pub fn new(http: reqwest::Client, auth: Auth) -> Self {
        Self::with_env(http, auth, &|name| std::env::var(name).ok())
    }

    /// Like [`TokenSource::new`], reading the environment through `env`. The variables are read
    /// now; a credentials file is read when the first token is needed.
    pub fn with_env(http: reqwest::Client, auth: Auth, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let host = env(METADATA_HOST_ENV).filter(|h| !h.trim().is_empty());
        Self::build(http, auth, host.as_deref().unwrap_or(DEFAULT_METADATA_HOST), AdcEnv::read(env))
    }

    /// Like [`TokenSource::new`], with the metadata server at `host` (`host` or `host:port`).
    pub fn with_metadata_host(http: reqwest::Client, auth: Auth, host: &str) -> Self {
        Self::build(http, auth, host, AdcEnv::read(&|name| std::env::var(name).ok()))
    }

    fn build(http: reqwest::Client, auth: Auth, host: &str, adc: AdcEnv) -> Self {
        let inner = Inner {
            http,
            auth,
            metadata_host: host.trim().trim_end_matches('/').to_owned(),
            adc,
            state: Mutex::default(),
            refresh: tokio::sync::Mutex::new(()),
            logged: AtomicBool::new(false),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The bearer token for the next request; `None` with [`Auth::None`].
    pub async fn bearer(&self) -> Result<Option<Secret>, GoogleError> {
        match &self.inner.auth {
            Auth::None => {
                self.log_once(|| "none (requests carry no token)".to_owned());
                Ok(None)
            }
            Auth::Token(token) => {
                self.log_once(|| "a fixed access token from the environment".to_owned());
                Ok(Some(token.clone()))
            }
            Auth::MetadataServer | Auth::ApplicationDefault => self.cached_token().await.map(Some),
        }
    }

    /// `req` with its `Authorization: Bearer` header (marked sensitive), if there is a token.
    pub async fn authorize(&self, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, GoogleError> {
        Ok(match self.bearer().await? {
            Some(token) => req.bearer_auth(token.expose()),
            None => req,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock guards plain assignments: a panic cannot leave the state half-written.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs which credentials this source uses, once per source, and once per process for the
    /// same description (every run makes its own clients).
    fn log_once(&self, describe: impl FnOnce() -> String) {
        static LOGGED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
        if self.inner.logged.swap(true, Ordering::Relaxed) {
            return;
        }
        let description = describe();
        if LOGGED.lock().unwrap_or_else(PoisonError::into_inner).insert(description.clone()) {
            tracing::info!(credentials = %description, "Google credentials: {description}");
        }
    }

    async fn cached_token(&self) -> Result<Secret, GoogleError> {
        let seen = {
            let state = self.state();
            if let Some(token) = state.fresh() {
                return Ok(token);
            }
            state.requests
        };
        let _refreshing = self.inner.refresh.lock().await;
        {
            let state = self.state();
            if let Some(token) = state.fresh() {
                return Ok(token);
            }
            // A request finished while this caller waited and failed: share its answer
            // rather than queue one more request behind it.
            if state.requests != seen {
                if let Some(failure) = &state.failure {
                    return Err(failure.clone());
                }
            }
        }
        let asked = Instant::now();
        let result = self.request_token().await;
        let mut state = self.state();
        state.requests += 1;
        match result {
            Ok((token, expires_in)) => {
                state.token = Some((token.clone(), asked + expires_in.saturating_sub(REFRESH_MARGIN)));
                state.failure = None;
                Ok(token)
            }
            Err(e) => {
                state.failure = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The credentials to ask with: for [`Auth::ApplicationDefault`] found on first use (a file
    /// that cannot be used is an error and is looked at again by the next caller).
    fn found(&self) -> Result<Arc<Found>, GoogleError> {
        if let Some(found) = &self.state().found {
            return Ok(found.clone());
        }
        let found = Arc::new(match self.inner.auth {
            Auth::ApplicationDefault => adc::discover(&self.inner.adc)?,
            _ => Found::MetadataServer,
        });
        self.log_once(|| match &*found {
            Found::File(file) => file.describe(),
            Found::MetadataServer if matches!(self.inner.auth, Auth::ApplicationDefault) => format!(
                "the metadata server {} (no GOOGLE_APPLICATION_CREDENTIALS, no gcloud application-default file)",
                self.inner.metadata_host
            ),
            Found::MetadataServer => format!("the metadata server {}", self.inner.metadata_host),
        });
        self.state().found = Some(found.clone());
        Ok(found)
    }

    /// One token request: the token and how long it is valid.
    async fn request_token(&self) -> Result<(Secret, Duration), GoogleError> {
        match &*self.found()? {
            Found::MetadataServer => self.metadata_request().await,
            Found::File(file) => exchange::token(&self.inner.http, file).await,
        }
    }

    async fn metadata_request(&self) -> Result<(Secret, Duration), GoogleError> {
        #[derive(Deserialize)]
        struct TokenAnswer {
            access_token: String,
            expires_in: u64,
        }
        let host = &self.inner.metadata_host;
        let unreachable = |e: reqwest::Error| GoogleError::MetadataUnreachable { host: host.clone(), reason: e.without_url().to_string() };
        let resp = self
            .inner
            .http
            .get(format!("http://{host}{TOKEN_PATH}"))
            .header("Metadata-Flavor", "Google")
            .timeout(METADATA_TIMEOUT)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(GoogleError::MetadataRefused { host: host.clone(), api: ApiError::parse(status.as_u16(), &body) });
        }
        // serde's message could quote a value of the answer: say only where it went wrong.
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| GoogleError::MetadataToken {
            host: host.clone(),
            reason: format!("invalid JSON or missing field at line {} column {}", e.line(), e.column()),
        })?;
        if answer.access_token.is_empty() {
            return Err(GoogleError::MetadataToken { host: host.clone(), reason: "the access token is empty".into() });
        }
        Ok((Secret::new(answer.access_token), Duration::from_secs(answer.expires_in)))
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("auth", &self.inner.auth)
            .field("metadata_host", &self.inner.metadata_host)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
