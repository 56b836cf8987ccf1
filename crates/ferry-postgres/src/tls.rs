//! TLS for tokio-postgres on rustls with the *ring* provider: a small `MakeTlsConnect` over
//! tokio-rustls, with `tls-server-end-point` channel binding, so that SCRAM-SHA-256-PLUS ties
//! the login to the certificate the server presented.
//!
//! - `verify-full`: the certificate chains to the CA file (else the webpki roots) and names the
//!   host (a DNS name, or an IP address in its subjectAltName).
//! - `require`: encrypted, the certificate not checked (libpq's `sslmode=require`); the
//!   handshake's signatures are still verified, and with SCRAM the channel binding refuses a
//!   server that relays the login to another.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::component::Tls;

/// The rustls client configuration of a TLS mode; `None` for `disable`. The error names the CA
/// file when it cannot be used.
pub(crate) fn client_config(tls: &Tls) -> Result<Option<Arc<ClientConfig>>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS protocol version: {e}"))?;
    let config = match tls {
        Tls::Disable => return Ok(None),
        Tls::Require => builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))).with_no_client_auth(),
        Tls::VerifyFull { ca_file: Some(path) } => {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
            builder
                .with_root_certificates(roots_from_pem(&pem).map_err(|e| format!("CA file {}: {e}", path.display()))?)
                .with_no_client_auth()
        }
        Tls::VerifyFull { ca_file: None } => {
            builder.with_root_certificates(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

/// Every certificate of a PEM file as a trust anchor; an error when there is none or one is
/// not a usable CA certificate.
pub(crate) fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not a PEM certificate file: {e}"))?;
        roots.add(cert).map_err(|e| format!("a certificate in it cannot be a trust anchor: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(roots)
}

/// `require`: any certificate is accepted, but the handshake must be signed by its key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The server's certificate or handshake was refused (an unknown issuer, another host name, an
/// expired certificate): permanent until someone changes the server or the configuration.
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate was refused: {0}")]
pub struct CertificateRefused(rustls::Error);

/// Makes a TLS connection per host for tokio-postgres.
#[derive(Clone)]
pub(crate) struct MakeRustls(pub Arc<ClientConfig>);

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect { name: ServerName::try_from(domain.to_owned())?, config: self.0.clone() })
    }
}

/// One TLS connection to come.
pub(crate) struct RustlsConnect {
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, Self::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            match tokio_rustls::TlsConnector::from(self.config).connect(self.name, stream).await {
                Ok(s) => Ok(RustlsStream(s)),
                Err(e) => match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                    Some(refused) => Err(Box::new(CertificateRefused(refused.clone())) as Self::Error),
                    None => Err(Box::new(e) as Self::Error),
                },
            }
        })
    }
}

/// A TLS connection to the server.
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// `tls-server-end-point` (RFC 5929): the hash of the server's certificate with the hash of
    /// its signature algorithm (SHA-256 for MD5 and SHA-1); none for algorithms without one
    /// (Ed25519, RSA-PSS), which leaves SCRAM without channel binding.
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        let Some(cert) = session.peer_certificates().and_then(|c| c.first()) else { return ChannelBinding::none() };
        match signature_hash(cert.as_ref()) {
            Some(alg) => ChannelBinding::tls_server_end_point(ring::digest::digest(alg, cert.as_ref()).as_ref().to_vec()),
            None => ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// One DER element: `(tag, content, rest)`.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The hash of a certificate's signature algorithm for `tls-server-end-point`, from its
/// `signatureAlgorithm` (Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, … }).
fn signature_hash(cert: &[u8]) -> Option<&'static ring::digest::Algorithm> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, body, _) = der(cert)? else { return None };
    let (SEQUENCE, _tbs, rest) = der(body)? else { return None };
    let (SEQUENCE, algorithm, _) = der(rest)? else { return None };
    let (OID, oid, _) = der(algorithm)? else { return None };
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]; // 1.2.840.113549.1.1
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04]; // 1.2.840.10045.4
    match oid {
        // md5WithRSA, sha1WithRSA, sha256WithRSA; ecdsa-with-SHA1, ecdsa-with-SHA256.
        [r @ .., 0x04 | 0x05 | 0x0b] if r == RSA => Some(&ring::digest::SHA256),
        [e @ .., 0x01] if e == ECDSA => Some(&ring::digest::SHA256),
        [e @ .., 0x03, 0x02] if e == ECDSA => Some(&ring::digest::SHA256),
        [r @ .., 0x0c] if r == RSA => Some(&ring::digest::SHA384),
        [e @ .., 0x03, 0x03] if e == ECDSA => Some(&ring::digest::SHA384),
        [r @ .., 0x0d] if r == RSA => Some(&ring::digest::SHA512),
        [e @ .., 0x03, 0x04] if e == ECDSA => Some(&ring::digest::SHA512),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate skeleton: SEQUENCE { SEQUENCE {tbs}, SEQUENCE { OID oid }, BIT STRING }.
    fn cert_with(oid: &[u8]) -> Vec<u8> {
        let tbs = [0x30, 0x03, 0x02, 0x01, 0x01];
        let mut alg = vec![0x30, (oid.len() + 2) as u8, 0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        let sig = [0x03, 0x02, 0x00, 0xff];
        let body: Vec<u8> = tbs.iter().chain(alg.iter()).chain(sig.iter()).copied().collect();
        let mut cert = vec![0x30, 0x81, body.len() as u8];
        cert.extend(body);
        cert
    }

    #[test]
    fn channel_binding_hash_follows_the_signature_algorithm() {
        let rsa = |last: u8| cert_with(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, last]);
        let ecdsa = |tail: &[u8]| cert_with(&[&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04][..], tail].concat());
        let hash = |c: Vec<u8>| signature_hash(&c).map(|a| a.output_len());
        assert_eq!(hash(rsa(0x0b)), Some(32));
        assert_eq!(hash(rsa(0x05)), Some(32), "SHA-1 is upgraded to SHA-256");
        assert_eq!(hash(rsa(0x0c)), Some(48));
        assert_eq!(hash(rsa(0x0d)), Some(64));
        assert_eq!(hash(ecdsa(&[0x03, 0x02])), Some(32));
        assert_eq!(hash(ecdsa(&[0x03, 0x03])), Some(48));
        assert_eq!(hash(cert_with(&[0x2b, 0x65, 0x70])), None, "Ed25519 has no hash");
        assert_eq!(signature_hash(&[0x30, 0x05, 0x30]), None, "truncated");
    }

    #[test]
    fn a_ca_file_needs_certificates() {
        assert!(roots_from_pem(b"").unwrap_err().contains("no certificate"));
        assert!(roots_from_pem(b"hello").unwrap_err().contains("no certificate"));
    }
}
