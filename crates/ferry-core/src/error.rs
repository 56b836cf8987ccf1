//! Errors shared by the roles: every failure carries a retry class.

use std::fmt;

/// A boxed error from a role implementation.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Whether trying again later can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A network hiccup, a timeout, a server that is briefly unavailable: retrying may work.
    Transient,
    /// Wrong credentials, an untrusted host key, a missing table, invalid data: retrying the
    /// same thing gives the same answer until a person fixes something.
    Permanent,
}

impl ErrorClass {
    /// `transient` or `permanent`, for logs and the metadata table.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// Implemented by each integration crate's error type.
pub trait Classify {
    /// The retry class of this error.
    fn class(&self) -> ErrorClass;
}

/// The error a role (Source, Sink, StateStore, Notifier) returns: the integration's own error,
/// boxed, with its retry class. Its `Display` is the integration's message, which names the
/// server or object involved and never contains a secret.
pub struct Failure {
    class: ErrorClass,
    source: BoxError,
}

impl Failure {
    /// Wraps an integration error that knows its class.
    pub fn new<E>(err: E) -> Self
    where
        E: Classify + std::error::Error + Send + Sync + 'static,
    {
        Self { class: err.class(), source: Box::new(err) }
    }

    /// Wraps any error with an explicit class.
    pub fn with_class(class: ErrorClass, err: impl Into<BoxError>) -> Self {
        Self { class, source: err.into() }
    }

    /// The retry class.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// The integration's error, for tests and callers that need the concrete type.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.downcast_ref::<E>()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failure({}: {})", self.class.as_str(), self.source)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

impl<E> From<E> for Failure
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    fn from(err: E) -> Self {
        Failure::new(err)
    }
}
