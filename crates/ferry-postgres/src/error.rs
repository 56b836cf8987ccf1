use std::error::Error as _;

use ferry_core::{Classify, ErrorClass};

use crate::tls::CertificateRefused;

/// Errors of the PostgreSQL source. Each message names the server (`host:port/database`) and,
/// where known, the table or query and the column; server errors quote the server's message and
/// SQLSTATE. No message contains the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The server answered with an error.
    #[error("PostgreSQL {server}: {what}: {message} (SQLSTATE {code})")]
    Server { server: String, what: String, code: String, message: String },
    /// No connection could be made, or it broke: refused, reset, timed out, closed.
    #[error("PostgreSQL {server}: {what}: {reason}")]
    Connection { server: String, what: String, reason: String },
    /// TLS could not be set up: the server's certificate was refused, the CA file is unusable,
    /// or the server does not speak TLS.
    #[error("PostgreSQL {server}: TLS: {reason}")]
    Tls { server: String, reason: String },
    /// A call failed on the client's side for another reason (an unexpected message, a
    /// parameter the server typed differently).
    #[error("PostgreSQL {server}: {what}: {reason}")]
    Client { server: String, what: String, reason: String },
    /// A column or value ferry cannot deliver: a cursor column of another type, a NULL array
    /// element, an infinite date, a numeric that does not fit.
    #[error("PostgreSQL {server}: {what}: {reason}")]
    Data { server: String, what: String, reason: String },
    /// The last error of a call that was retried and still failed; `context` says how often
    /// and why it stopped.
    #[error("{last}{context}")]
    GaveUp { last: Box<PostgresError>, context: String },
}

impl PostgresError {
    /// The error itself, or the last error of a call that was retried.
    pub fn last(&self) -> &PostgresError {
        match self {
            PostgresError::GaveUp { last, .. } => last.last(),
            other => other,
        }
    }

    /// The server's SQLSTATE, for an error the server sent.
    pub fn sqlstate(&self) -> Option<&str> {
        match self.last() {
            PostgresError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// A client error of `server` during `what`, classified by what it carries: the server's
    /// error (with its SQLSTATE), a refused certificate, or a broken connection.
    pub(crate) fn from_pg(e: tokio_postgres::Error, server: &str, what: &str) -> Self {
        let (server, what) = (server.to_owned(), what.to_owned());
        if let Some(db) = e.as_db_error() {
            let mut message = db.message().to_owned();
            if let Some(detail) = db.detail() {
                message.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                message.push_str(&format!(" (hint: {hint})"));
            }
            return PostgresError::Server { server, what, code: db.code().code().to_owned(), message };
        }
        let mut cause = e.source();
        let mut io = false;
        while let Some(c) = cause {
            if let Some(refused) = c.downcast_ref::<CertificateRefused>() {
                return PostgresError::Tls { server, reason: refused.to_string() };
            }
            io |= c.is::<std::io::Error>();
            cause = c.source();
        }
        let reason = e.to_string();
        if io || e.is_closed() || reason.starts_with("timeout waiting for server") {
            return PostgresError::Connection { server, what, reason };
        }
        if reason.starts_with("error performing TLS handshake") {
            return PostgresError::Tls { server, reason };
        }
        PostgresError::Client { server, what, reason }
    }
}

/// SQLSTATEs worth another attempt: the connection or the server is briefly unavailable, or the
/// statement lost a conflict with another transaction.
fn transient_sqlstate(code: &str) -> bool {
    // Class 08: connection exception; 53: insufficient resources (53300 too_many_connections);
    // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now; 40001
    // serialization_failure, 40P01 deadlock_detected; 55P03 lock_not_available; 57014
    // query_canceled (a statement timeout or a cancelled backend).
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03" | "57014")
}

impl Classify for PostgresError {
    fn class(&self) -> ErrorClass {
        match self {
            PostgresError::Server { code, .. } if transient_sqlstate(code) => ErrorClass::Transient,
            // 28P01/28000 authentication, 42P01 undefined_table, 42703 undefined_column, 42501
            // insufficient_privilege, 3D000 invalid_catalog_name, 42601 syntax_error, data
            // exceptions: the same statement gets the same answer.
            PostgresError::Server { .. } => ErrorClass::Permanent,
            PostgresError::Connection { .. } => ErrorClass::Transient,
            PostgresError::Tls { .. } | PostgresError::Client { .. } | PostgresError::Data { .. } => ErrorClass::Permanent,
            PostgresError::GaveUp { last, .. } => last.class(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> PostgresError {
        PostgresError::Server { server: "db:5432/app".into(), what: "table public.orders".into(), code: code.into(), message: "m".into() }
    }

    #[test]
    fn sqlstates_are_classified() {
        for code in ["40001", "40P01", "57P01", "53300", "08006", "57P03"] {
            assert_eq!(server(code).class(), ErrorClass::Transient, "{code}");
        }
        for code in ["28P01", "28000", "42P01", "42703", "42501", "3D000", "42601", "22012"] {
            assert_eq!(server(code).class(), ErrorClass::Permanent, "{code}");
        }
        let c = PostgresError::Connection { server: "db:5432/app".into(), what: "connect".into(), reason: "refused".into() };
        assert_eq!(c.class(), ErrorClass::Transient);
        assert_eq!(c.to_string(), "PostgreSQL db:5432/app: connect: refused");
    }

    #[test]
    fn messages_name_server_what_and_sqlstate() {
        let e = PostgresError::Server {
            server: "db:5432/app".into(),
            what: "table public.nope".into(),
            code: "42P01".into(),
            message: "relation \"public.nope\" does not exist".into(),
        };
        assert_eq!(e.to_string(), "PostgreSQL db:5432/app: table public.nope: relation \"public.nope\" does not exist (SQLSTATE 42P01)");
        let wrapped = PostgresError::GaveUp { last: Box::new(server("40001")), context: " (gave up after 2 attempts)".into() };
        assert_eq!(wrapped.class(), ErrorClass::Transient);
        assert_eq!(wrapped.sqlstate(), Some("40001"));
        assert!(wrapped.to_string().ends_with("(SQLSTATE 40001) (gave up after 2 attempts)"));
    }
}
