//! How a server certificate is verified: `--insecure` (signatures only), a `--cacert`
//! certificate pinned as the server's own, and the verified-chain cache.

use super::TlsFailure;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error, SignatureScheme};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// `--insecure`: accepts any certificate, but still checks the handshake signatures so the
/// client does the same crypto work as a verifying one minus the chain.
#[derive(Debug)]
pub(super) struct NoVerify(pub(super) Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A server certificate given in `--cacert` is trusted when the server presents exactly it,
/// even if it is a CA certificate (CA:TRUE) that webpki refuses as a server's own
/// (`CaUsedAsEndEntity`): `openssl req -x509 ... -addext subjectAltName=...` makes such
/// certificates, and curl and `openssl s_client` accept them pinned that way.
///
/// Only that refusal is overridden, and only for a byte-identical certificate; webpki has
/// checked its validity dates before it got there. Everything else is [`Self::inner`]'s
/// verdict. The server still proves it holds the certificate's key: the handshake signature
/// is verified by `inner` as for any certificate.
#[derive(Debug)]
pub(super) struct PinnedVerifier {
    pub(super) inner: Arc<dyn ServerCertVerifier>,
    pub(super) pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(e)
                if TlsFailure::of(&e) == TlsFailure::CaAsServerCert
                    && self.pinned.iter().any(|p| p[..] == end_entity[..]) =>
            {
                // Pinned, but still for its names only: as curl does with a pinned
                // certificate, the URL's host (or --sni) must be one it was issued for.
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&cert, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// How long a verified chain is trusted without verifying it again.
const VERIFIED_FOR_SECS: u64 = 10;
/// Distinct verified chains remembered (one target; a few certificates behind a balancer).
const VERIFIED_CHAINS: usize = 8;

/// Full verification (webpki: chain to a trusted root, validity, name) the first time a chain
/// is seen, then, for [`VERIFIED_FOR_SECS`], the byte-identical chain for the same name is
/// accepted without redoing it, as browsers cache verification results. The server still
/// proves it holds the certificate's key in every handshake: its signature over the handshake
/// (CertificateVerify, or the TLS 1.2 key exchange) is always checked. This saves one ECDSA
/// verification and the path building per full handshake: about a quarter of its client CPU.
#[derive(Debug)]
pub(super) struct CachedVerifier {
    pub(super) inner: Arc<WebPkiServerVerifier>,
    pub(super) cache: Mutex<VecDeque<Verified>>,
}

#[derive(Debug)]
pub(super) struct Verified {
    name: String,
    chain: Vec<Vec<u8>>,
    until: u64,
}

impl Verified {
    fn matches(&self, name: &str, ee: &[u8], rest: &[CertificateDer<'_>]) -> bool {
        self.name == name
            && self.chain.len() == rest.len() + 1
            && self.chain[0] == ee
            && self.chain[1..]
                .iter()
                .zip(rest)
                .all(|(a, b)| a[..] == b[..])
    }
}

impl ServerCertVerifier for CachedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let name = server_name.to_str();
        let t = now.as_secs();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache
            .iter()
            .any(|v| t < v.until && v.matches(&name, end_entity, intermediates))
        {
            return Ok(ServerCertVerified::assertion());
        }
        let ok =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        cache.retain(|v| t < v.until && !v.matches(&name, end_entity, intermediates));
        if cache.len() >= VERIFIED_CHAINS {
            cache.pop_front();
        }
        cache.push_back(Verified {
            name: name.into_owned(),
            chain: std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.to_vec())
                .collect(),
            until: t + VERIFIED_FOR_SECS,
        });
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
