//! Email over SMTP with lettre: STARTTLS (required, not opportunistic), implicit TLS, or plain
//! for local relays.

use async_trait::async_trait;
use ferry_core::config::{EmailSpec, SmtpTls};
use ferry_core::run::RunReport;
use ferry_core::{ErrorClass, Failure, Notifier, RetryPolicy};
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::{error_chain, message, wants, NotifyError};

/// Sends the run summary by email.
pub struct EmailNotifier {
    spec: EmailSpec,
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    retry: RetryPolicy,
}

impl EmailNotifier {
    /// Prepares the transport; reads and parses `ca_file`. Connects only when sending.
    pub fn new(spec: &EmailSpec, retry: RetryPolicy) -> Result<Self, NotifyError> {
        let from = spec
            .from
            .parse::<Mailbox>()
            .map_err(|e| NotifyError::Setup { field: "notifications.email.from", reason: format!("{:?}: {e}", spec.from) })?;
        let to = spec
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>().map_err(|e| NotifyError::Setup { field: "notifications.email.to", reason: format!("{t:?}: {e}") })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match spec.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(tls_parameters(spec)?),
            SmtpTls::Implicit => Tls::Wrapper(tls_parameters(spec)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(spec.host.as_str())
            .port(spec.port)
            .tls(tls)
            .timeout(Some(spec.timeout));
        if let (Some(user), Some(password)) = (&spec.username, &spec.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(Self { spec: spec.clone(), from, to, transport: builder.build(), retry })
    }

    fn server(&self) -> String {
        format!("{}:{}", self.spec.host, self.spec.port)
    }

    fn build(&self, report: &RunReport) -> Result<Message, NotifyError> {
        let mut b = Message::builder().from(self.from.clone()).subject(message::subject(report)).header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(to.clone());
        }
        // Quoted-printable: readable in any client and in raw form, safe for every relay.
        let body = Body::new_with_encoding(message::text(report), ContentTransferEncoding::QuotedPrintable)
            .unwrap_or_else(|raw| Body::new(String::from_utf8_lossy(&raw).into_owned()));
        let mut m = b.body(body).map_err(|e| NotifyError::Smtp {
            server: self.server(),
            reason: format!("building the message: {e}"),
            class: ErrorClass::Permanent,
        })?;
        m.headers_mut().insert_raw(HeaderValue::new(HeaderName::new_from_ascii_str("X-Ferry-Run-Id"), report.run_id.clone()));
        Ok(m)
    }

    fn explain(&self, e: &lettre::transport::smtp::Error) -> NotifyError {
        let chain = error_chain(e);
        let (reason, class) = if e.is_tls() || chain.contains("certificate") {
            (
                format!(
                    "TLS failed ({chain}); if the server's certificate is signed by a private CA, set notifications.email.ca_file to that CA's PEM file"
                ),
                ErrorClass::Permanent,
            )
        } else if let Some(code) = e.status().filter(|_| e.is_permanent()) {
            let hint = if code.to_string().starts_with("53") {
                match &self.spec.username {
                    Some(u) => format!("the server rejected the login of user {u:?}; check the SMTP password (notifications.email.password_env or password_file)"),
                    None => "the server requires a login; set notifications.email.username and its password".into(),
                }
            } else {
                "the server refused the message".into()
            };
            (format!("{hint} ({chain})"), ErrorClass::Permanent)
        } else if e.is_transient() || e.is_timeout() {
            (format!("the server is temporarily unavailable ({chain})"), ErrorClass::Transient)
        } else {
            (format!("cannot talk to the server ({chain})"), ErrorClass::Transient)
        };
        NotifyError::Smtp { server: self.server(), reason, class }
    }
}

fn tls_parameters(spec: &EmailSpec) -> Result<TlsParameters, NotifyError> {
    let mut b = TlsParameters::builder(spec.host.clone());
    if let Some(path) = &spec.ca_file {
        let pem = std::fs::read(path).map_err(|e| NotifyError::Setup {
            field: "notifications.email.ca_file",
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        // lettre accepts a file without any certificate (and would then trust nothing extra).
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(NotifyError::Setup {
                field: "notifications.email.ca_file",
                reason: format!("{} is not a PEM certificate: no -----BEGIN CERTIFICATE----- block", path.display()),
            });
        }
        let cert = Certificate::from_pem(&pem).map_err(|e| NotifyError::Setup {
            field: "notifications.email.ca_file",
            reason: format!("{} is not a PEM certificate: {e}", path.display()),
        })?;
        b = b.add_root_certificate(cert);
    }
    b.build_rustls().map_err(|e| NotifyError::Setup { field: "notifications.email.tls", reason: e.to_string() })
}

#[async_trait]
impl Notifier for EmailNotifier {
    async fn notify(&self, report: &RunReport) -> Result<(), Failure> {
        if !wants(self.spec.when, report) {
            return Ok(());
        }
        let message = self.build(report)?;
        let sent = self.retry.run("email", || async { self.transport.send(message.clone()).await.map_err(|e| self.explain(&e)) }).await;
        match sent {
            Ok(_) => {
                tracing::info!(run_id = %report.run_id, server = %self.server(), recipients = self.to.len(), "email sent");
                Ok(())
            }
            Err(given_up) => Err(crate::retry::gave_up(given_up)),
        }
    }

    fn name(&self) -> &'static str {
        "email"
    }
}
