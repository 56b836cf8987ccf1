//! TLS for mysql_async on rustls with the *ring* provider (the only provider compiled in, so
//! mysql_async's rustls configuration picks it).
//!
//! - `verify-full`: the certificate chains to the CA file (and nothing else), or, without one,
//!   to the webpki roots, and names the host (a DNS name, or an IP address in its
//!   subjectAltName).
//! - `require`: encrypted, the certificate not checked (`--ssl-mode=REQUIRED`); the handshake's
//!   signatures are still verified.
//!
//! A server that does not offer TLS is refused: the connection never falls back to plaintext.

use mysql_async::SslOpts;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::component::Tls;

/// mysql_async's TLS options of a TLS mode; `None` for `disable`. The CA file is read here, so
/// that an unreadable file is a configuration error, not a failed connection.
pub(crate) fn ssl_opts(tls: &Tls) -> Result<Option<SslOpts>, String> {
    Ok(Some(match tls {
        Tls::Disable => return Ok(None),
        Tls::Require => SslOpts::default().with_danger_accept_invalid_certs(true),
        Tls::VerifyFull { ca_file: Some(path) } => {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
            check_ca_pem(&pem).map_err(|e| format!("CA file {}: {e}", path.display()))?;
            SslOpts::default().with_root_certs(vec![pem.into()]).with_disable_built_in_roots(true)
        }
        Tls::VerifyFull { ca_file: None } => SslOpts::default(),
    }))
}

/// Checks that a PEM file holds certificates that can each be a trust anchor.
pub(crate) fn check_ca_pem(pem: &[u8]) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not a PEM certificate file: {e}"))?;
        roots.add(cert).map_err(|e| format!("a certificate in it cannot be a trust anchor: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

/// The TLS error inside a mysql_async error, if it is one: the handshake failed because the
/// server's certificate was refused or the peers did not agree.
pub(crate) fn tls_failure(e: &mysql_async::Error) -> Option<&rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // An I/O error's source() skips the error it wraps: look at it directly.
        if let Some(inner) = c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                return Some(t);
            }
        }
        cause = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_needs_certificates() {
        assert!(check_ca_pem(b"").unwrap_err().contains("no certificate"));
        assert!(check_ca_pem(b"hello").unwrap_err().contains("no certificate"));
        let e = ssl_opts(&Tls::VerifyFull { ca_file: Some("/nonexistent/ca.pem".into()) }).unwrap_err();
        assert!(e.starts_with("cannot read the CA file /nonexistent/ca.pem"), "{e}");
        assert!(ssl_opts(&Tls::Disable).unwrap().is_none());
        assert!(ssl_opts(&Tls::Require).unwrap().unwrap().accept_invalid_certs());
        let opts = ssl_opts(&Tls::VerifyFull { ca_file: None }).unwrap().unwrap();
        assert!(!opts.accept_invalid_certs() && !opts.skip_domain_validation() && !opts.disable_built_in_roots());
    }

    #[test]
    fn a_refused_certificate_is_found_inside_io_errors() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, refused.clone());
        let e = mysql_async::Error::from(io);
        assert_eq!(tls_failure(&e), Some(&refused));
        let plain = mysql_async::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(tls_failure(&plain), None);
    }
}
