use ferry_core::{Classify, ErrorClass};
use mysql_async::{DriverError, IoError};

use crate::tls::tls_failure;

/// Errors of the MySQL source. Each message names the server (`host:port/database`) and, where
/// known, the table or query and the column; server errors quote the server's message, error
/// code and SQLSTATE. No message contains the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MySqlError {
    /// The server answered with an error.
    #[error("MySQL {server}: {what}: {message} (error {code}, SQLSTATE {state})")]
    Server { server: String, what: String, code: u16, state: String, message: String },
    /// No connection could be made, or it broke: refused, reset, timed out, closed.
    #[error("MySQL {server}: {what}: {reason}")]
    Connection { server: String, what: String, reason: String },
    /// TLS could not be set up: the server's certificate was refused, the CA file is unusable,
    /// or the server does not offer TLS.
    #[error("MySQL {server}: TLS: {reason}")]
    Tls { server: String, reason: String },
    /// A call failed on the client's side for another reason (an unexpected packet, a
    /// parameter count the server did not expect).
    #[error("MySQL {server}: {what}: {reason}")]
    Client { server: String, what: String, reason: String },
    /// A column or value ferry cannot deliver: a cursor column of another type, a TIME outside
    /// a day, a DECIMAL that does not fit, a type without a mapping.
    #[error("MySQL {server}: {what}: {reason}")]
    Data { server: String, what: String, reason: String },
    /// The last error of a call that was retried and still failed; `context` says how often
    /// and why it stopped.
    #[error("{last}{context}")]
    GaveUp { last: Box<MySqlError>, context: String },
}

impl MySqlError {
    /// The error itself, or the last error of a call that was retried.
    pub fn last(&self) -> &MySqlError {
        match self {
            MySqlError::GaveUp { last, .. } => last.last(),
            other => other,
        }
    }

    /// The server's error code, for an error the server sent.
    pub fn code(&self) -> Option<u16> {
        match self.last() {
            MySqlError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A client error of `server` during `what`, classified by what it carries: the server's
    /// error (with its code), a TLS failure, or a broken connection.
    pub(crate) fn from_mysql(e: mysql_async::Error, server: &str, what: &str) -> Self {
        let (server, what) = (server.to_owned(), what.to_owned());
        if let Some(t) = tls_failure(&e) {
            let reason = match t {
                rustls::Error::InvalidCertificate(_) => format!("the server's certificate was refused: {t}"),
                _ => format!("the TLS handshake failed: {t}"),
            };
            return MySqlError::Tls { server, reason };
        }
        match e {
            mysql_async::Error::Server(s) => MySqlError::Server { server, what, code: s.code, state: s.state, message: s.message },
            mysql_async::Error::Io(IoError::Io(io)) => MySqlError::Connection { server, what, reason: io.to_string() },
            mysql_async::Error::Io(IoError::Tls(t)) => MySqlError::Tls { server, reason: t.to_string() },
            mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => MySqlError::Tls {
                server,
                reason: "the server does not offer TLS (set it up there; tls: disable is only for a server on this machine)".into(),
            },
            mysql_async::Error::Driver(DriverError::ConnectionClosed | DriverError::PacketOutOfOrder) => {
                MySqlError::Connection { server, what, reason: e.to_string() }
            }
            other => MySqlError::Client { server, what, reason: other.to_string() },
        }
    }
}

/// Server errors worth another attempt: the connection or the server is briefly unavailable, or
/// the statement lost a conflict with another transaction.
fn transient_code(code: u16, state: &str) -> bool {
    // 1040 too many connections, 1203 too many connections of the user, 1053 server shutdown,
    // 1037/1038/1041 out of memory, 1158-1161 network read/write errors, 1184 aborted
    // connection, 1205 lock wait timeout, 1213 deadlock, 1317 query interrupted, 1615 statement
    // needs to be re-prepared, 1927 connection killed (MariaDB), 1969 statement time-out
    // (MariaDB), 2006 server gone away, 2013 lost connection, 3024 execution time exceeded,
    // 4031 disconnected for inactivity (MySQL 8).
    matches!(
        code,
        1037 | 1038 | 1040 | 1041 | 1053 | 1158..=1161 | 1184 | 1203 | 1205 | 1213 | 1317 | 1615 | 1927 | 1969 | 2006 | 2013 | 3024 | 4031
    ) || state.starts_with("08")
        || state == "40001"
}

impl Classify for MySqlError {
    fn class(&self) -> ErrorClass {
        match self {
            MySqlError::Server { code, state, .. } if transient_code(*code, state) => ErrorClass::Transient,
            // 1045 access denied, 1049 unknown database, 1146 no such table, 1054 unknown
            // column, 1064 syntax, 1142/1143/1044 denied, data errors: the same statement gets
            // the same answer.
            MySqlError::Server { .. } => ErrorClass::Permanent,
            MySqlError::Connection { .. } => ErrorClass::Transient,
            MySqlError::Tls { .. } | MySqlError::Client { .. } | MySqlError::Data { .. } => ErrorClass::Permanent,
            MySqlError::GaveUp { last, .. } => last.class(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16, state: &str) -> MySqlError {
        MySqlError::Server { server: "db:3306/app".into(), what: "table orders".into(), code, state: state.into(), message: "m".into() }
    }

    #[test]
    fn codes_are_classified() {
        for (code, state) in [(1205, "HY000"), (1213, "40001"), (2006, "HY000"), (2013, "HY000"), (1040, "08004"), (1927, "70100")] {
            assert_eq!(server(code, state).class(), ErrorClass::Transient, "{code}");
        }
        for (code, state) in [(1045, "28000"), (1049, "42000"), (1146, "42S02"), (1054, "42S22"), (1064, "42000"), (1142, "42000")] {
            assert_eq!(server(code, state).class(), ErrorClass::Permanent, "{code}");
        }
        let c = MySqlError::Connection { server: "db:3306/app".into(), what: "connect".into(), reason: "refused".into() };
        assert_eq!(c.class(), ErrorClass::Transient);
        assert_eq!(c.to_string(), "MySQL db:3306/app: connect: refused");
    }

    #[test]
    fn client_errors_are_classified_by_what_they_carry() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = MySqlError::from_mysql(mysql_async::Error::from(refused), "db:3306/app", "connect");
        assert!(matches!(e, MySqlError::Connection { .. }), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Transient);
        let closed = mysql_async::Error::Driver(DriverError::ConnectionClosed);
        assert_eq!(MySqlError::from_mysql(closed, "db:3306/app", "table t").class(), ErrorClass::Transient);
        let no_tls = mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer);
        let e = MySqlError::from_mysql(no_tls, "db:3306/app", "connect");
        assert_eq!(
            (e.class(), e.to_string().starts_with("MySQL db:3306/app: TLS: the server does not offer TLS")),
            (ErrorClass::Permanent, true)
        );
        let bad_cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, bad_cert);
        let e = MySqlError::from_mysql(mysql_async::Error::from(io), "db:3306/app", "connect");
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert_eq!(e.to_string(), "MySQL db:3306/app: TLS: the server's certificate was refused: invalid peer certificate: UnknownIssuer");
    }

    #[test]
    fn messages_name_server_what_and_code() {
        let e = MySqlError::Server {
            server: "db:3306/app".into(),
            what: "table nope".into(),
            code: 1146,
            state: "42S02".into(),
            message: "Table 'app.nope' doesn't exist".into(),
        };
        assert_eq!(e.to_string(), "MySQL db:3306/app: table nope: Table 'app.nope' doesn't exist (error 1146, SQLSTATE 42S02)");
        let wrapped = MySqlError::GaveUp { last: Box::new(server(1213, "40001")), context: " (gave up after 2 attempts)".into() };
        assert_eq!(wrapped.class(), ErrorClass::Transient);
        assert_eq!(wrapped.code(), Some(1213));
        assert!(wrapped.to_string().ends_with("(error 1213, SQLSTATE 40001) (gave up after 2 attempts)"));
    }
}
