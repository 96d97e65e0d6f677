//! TLS for client connections, sans-IO: rustls runs the handshake and the record layer on bytes
//! the backend hands to [`crate::proto::conn::Conn`]. This module builds each shard's client
//! configurations, owns the per-shard session store that makes resumption work at storm scale,
//! and names every TLS failure so that reports count them by kind.

mod failure;
mod store;
mod verify;

use crate::proto::rng::Rng;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::client::{ClientSessionStore, ResolvesClientCert, Resumption, Tls12Resumption};
use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Error, HandshakeKind, NamedGroup, RootCertStore,
    SignatureScheme, SupportedCipherSuite, SupportedProtocolVersion,
};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub use failure::{alert_name, TlsFailure};
use store::FullOnly;
pub use store::SessionStore;
use verify::{CachedVerifier, NoVerify, PinnedVerifier};

/// Which handshakes try to resume a previous session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resume {
    /// Every handshake is full; tickets are not even asked for.
    Off,
    /// Every handshake offers a session when the store has one.
    On,
    /// This share of handshakes (0..1) offers a session; the rest are forced full.
    Fraction(f64),
}

/// A client certificate chain and its key for mutual TLS (the key never appears in `Debug`).
pub struct ClientIdentity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientIdentity({} certificate(s), key hidden)",
            self.chain.len()
        )
    }
}

/// Validated TLS settings of a run; each shard builds its own configurations from them.
#[derive(Debug)]
pub struct TlsSettings {
    /// Name sent in SNI and verified against the certificate.
    pub server_name: ServerName<'static>,
    /// Trust anchors (webpki-roots plus `--cacert`).
    pub roots: Arc<RootCertStore>,
    /// Certificates trusted as the server's own when it presents one byte for byte, though
    /// webpki refuses a CA certificate (CA:TRUE, as `openssl req -x509` makes) as a server's
    /// (`--cacert`'s certificates; default empty). The name and the handshake signature are
    /// still verified.
    pub pinned: Vec<CertificateDer<'static>>,
    /// Skip certificate verification (handshake signatures are still checked).
    pub insecure: bool,
    /// Reuse a successful chain verification for the identical chain and name (10 s).
    pub verify_cache: bool,
    /// Protocol versions offered, in preference order (`--tls-version`; `run`'s default: TLS 1.3,
    /// then 1.2).
    pub versions: Vec<&'static SupportedProtocolVersion>,
    /// Cipher suites offered, in preference order.
    pub suites: Vec<SupportedCipherSuite>,
    /// Key-exchange groups offered, in preference order (the first gets the key share).
    pub kx: Vec<&'static dyn SupportedKxGroup>,
    /// ALPN protocol names offered, in order (`--alpn`); default empty: no ALPN extension.
    pub alpn: Vec<Vec<u8>>,
    /// Client certificate chain and key for mutual TLS (`--cert`, `--key`); default `None`: none
    /// offered.
    pub identity: Option<ClientIdentity>,
    /// Write session secrets to the file `SSLKEYLOGFILE` names (for Wireshark); on when that
    /// variable is set and not empty, default off.
    pub keylog: bool,
    /// Which handshakes offer a stored session (`--resume`; default [`Resume::On`]).
    pub resume: Resume,
    /// TLS 1.3 tickets asked for per handshake (RFC 9149 ticket request; 0 = do not ask).
    pub tickets: u8,
    /// TLS 1.3 tickets a shard keeps at most (default 1024; `run` sizes it to the shard's
    /// connections, within 1024..=2^20, since every ticket held costs memory).
    pub store_capacity: usize,
}

impl TlsSettings {
    /// Verifying settings for `server_name` against `roots`: `versions`, the default suites,
    /// X25519, no ALPN or client certificate, resumption on with 4 tickets asked for.
    pub fn new(
        server_name: ServerName<'static>,
        roots: Arc<RootCertStore>,
        versions: Vec<&'static SupportedProtocolVersion>,
    ) -> Self {
        Self {
            server_name,
            roots,
            pinned: Vec::new(),
            insecure: false,
            verify_cache: true,
            suites: default_suites(&versions),
            versions,
            kx: vec![aws_lc_rs::kx_group::X25519],
            alpn: Vec::new(),
            identity: None,
            keylog: false,
            resume: Resume::On,
            tickets: 4,
            store_capacity: 1024,
        }
    }

    fn provider(&self) -> Arc<CryptoProvider> {
        Arc::new(CryptoProvider {
            cipher_suites: self.suites.clone(),
            kx_groups: self.kx.clone(),
            ..aws_lc_rs::default_provider()
        })
    }

    /// A configuration without resumption; callers set `resumption`. Without a client
    /// certificate, `requests` counts the servers' requests for one.
    fn config(&self, requests: &Arc<CertRequests>) -> Result<ClientConfig, Error> {
        let provider = self.provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions)?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        } else if self.verify_cache || !self.pinned.is_empty() {
            builder
                .dangerous()
                .with_custom_certificate_verifier(self.verifier(provider)?)
        } else {
            builder.with_root_certificates(self.roots.clone())
        };
        let mut c = match &self.identity {
            Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
            None => builder.with_client_cert_resolver(requests.clone()),
        };
        c.alpn_protocols = self.alpn.clone();
        if self.keylog {
            c.key_log = Arc::new(rustls::KeyLogFile::new());
        }
        c.resumption = Resumption::disabled();
        if self.resume != Resume::Off && self.tickets > 0 {
            c.send_ticket_request = Some(rustls::client::TicketRequest {
                new_session_count: self.tickets,
                resumption_count: self.tickets,
            });
        }
        Ok(c)
    }

    /// The certificate verifier: webpki, behind the verification cache (`verify_cache`), behind
    /// the pinned certificates (when there are any).
    fn verifier(
        &self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ServerCertVerifier>, Error> {
        let webpki = WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider)
            .build()
            .map_err(|e| Error::General(format!("certificate verifier: {e}")))?;
        let inner: Arc<dyn ServerCertVerifier> = if self.verify_cache {
            Arc::new(CachedVerifier {
                inner: webpki,
                cache: Mutex::new(VecDeque::new()),
            })
        } else {
            webpki
        };
        if self.pinned.is_empty() {
            return Ok(inner);
        }
        Ok(Arc::new(PinnedVerifier {
            inner,
            pinned: self.pinned.clone(),
        }))
    }

    /// One shard's client: its own configurations and session store, built once.
    pub fn client(&self) -> Result<TlsClient, Error> {
        let store = Arc::new(SessionStore::new(self.store_capacity));
        let cert_requests = Arc::new(CertRequests::default());
        let base = self.config(&cert_requests)?;
        let with = |s: Arc<dyn ClientSessionStore>| {
            let mut c = base.clone();
            c.resumption =
                Resumption::store(s).tls12_resumption(Tls12Resumption::SessionIdOrTickets);
            Arc::new(c)
        };
        // Both configurations are clones of one, sharing its verifier and client-certificate
        // resolver: rustls only resumes a session under the same ones it was made with.
        let (resume, full) = match self.resume {
            Resume::Off => {
                let c = Arc::new(base);
                (c.clone(), c)
            }
            // Forced-full handshakes still feed the store, so the resuming share never runs
            // dry, but never take from it.
            Resume::On | Resume::Fraction(_) => {
                (with(store.clone()), with(Arc::new(FullOnly(store.clone()))))
            }
        };
        Ok(TlsClient {
            resume,
            full,
            server_name: self.server_name.clone(),
            policy: self.resume,
            store,
            waits_expired: AtomicU64::new(0),
            cert_requests,
        })
    }
}

/// The client-certificate resolver when the run has no certificate (no `--cert`/`--key`): it
/// answers a server's CertificateRequest with none, as rustls' own
/// `with_no_client_auth` does, and counts the requests, so that a handshake the server then
/// refuses can say it wants a certificate instead of guessing at parameters.
#[derive(Debug, Default)]
struct CertRequests(AtomicU64);

impl ResolvesClientCert for CertRequests {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.fetch_add(1, Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// One shard's TLS client side: configurations built once, shared by all its connections.
#[derive(Debug)]
pub struct TlsClient {
    resume: Arc<ClientConfig>,
    full: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    policy: Resume,
    store: Arc<SessionStore>,
    /// Handshake cycles that waited for a TLS 1.3 ticket in vain.
    waits_expired: AtomicU64,
    /// CertificateRequests answered without a certificate (none configured).
    cert_requests: Arc<CertRequests>,
}

/// Waits in vain, with no ticket ever received, after which a shard stops waiting: the
/// server issues no TLS 1.3 tickets, and waiting would only slow every cycle down.
const FUTILE_WAITS: u64 = 8;

/// A new client connection and whether its ClientHello offers a stored session.
#[derive(Debug)]
pub struct Started {
    /// The rustls connection, ClientHello queued.
    pub conn: ClientConnection,
    /// Whether a stored session (TLS 1.3 ticket or TLS 1.2 session) was offered.
    pub attempted: bool,
}

impl TlsClient {
    /// Starts a handshake; the policy decides (with `rng`) whether it may resume.
    pub fn start(&self, rng: &mut Rng) -> Result<Started, Error> {
        let resume = match self.policy {
            Resume::Off => false,
            Resume::On => true,
            Resume::Fraction(f) => (rng.below(1 << 24) as f64) < f * (1u64 << 24) as f64,
        };
        let before = self.store.taken.load(Relaxed);
        let cfg = if resume { &self.resume } else { &self.full };
        let mut conn = ClientConnection::new(cfg.clone(), self.server_name.clone())?;
        // Messages are framed and written whole; rustls must not refuse part of one.
        conn.set_buffer_limit(None);
        let attempted = self.store.taken.load(Relaxed) != before;
        Ok(Started { conn, attempted })
    }

    /// TLS 1.3 tickets stored so far on this shard (to tell which connection got one).
    pub fn tickets_stored(&self) -> u64 {
        self.store.inserted.load(Relaxed)
    }

    /// CertificateRequests from servers answered without a certificate so far on this shard
    /// (to tell which connection got one: the shard is one thread).
    pub fn cert_requests(&self) -> u64 {
        self.cert_requests.0.load(Relaxed)
    }

    /// Whether waiting for a TLS 1.3 ticket is worth it: handshakes may resume, and the
    /// server has sent tickets (or has not yet had the chance to show that it sends none).
    pub fn awaits_tickets(&self) -> bool {
        self.policy != Resume::Off
            && (self.store.inserted.load(Relaxed) > 0
                || self.waits_expired.load(Relaxed) < FUTILE_WAITS)
    }

    /// A handshake cycle waited for a ticket in vain.
    pub fn wait_expired(&self) {
        self.waits_expired.fetch_add(1, Relaxed);
    }
}

/// What a completed handshake negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The server accepted the offered session.
    pub resumed: bool,
    /// The server asked for another key share first (HelloRetryRequest).
    pub retried: bool,
    /// Protocol version by wire number (0x0303: TLS 1.2, 0x0304: TLS 1.3; 0 if rustls reports
    /// none).
    pub version: u16,
    /// Cipher suite (IANA number).
    pub cipher: u16,
    /// Key-exchange group (IANA number; 0 when resumed without a key exchange).
    pub group: u16,
}

impl Negotiated {
    /// Reads what `c` negotiated (call once the handshake is complete).
    pub fn of(c: &ClientConnection) -> Self {
        let kind = c.handshake_kind();
        Self {
            resumed: kind == Some(HandshakeKind::Resumed),
            retried: kind == Some(HandshakeKind::FullWithHelloRetryRequest),
            version: c.protocol_version().map_or(0, u16::from),
            cipher: c
                .negotiated_cipher_suite()
                .map_or(0, |s| u16::from(s.suite())),
            group: c
                .negotiated_key_exchange_group()
                .map_or(0, |g| u16::from(g.name())),
        }
    }
}

/// The cipher suites offered when `--ciphers` is not given: the provider's defaults for
/// `versions`, SHA-256 suites first (as browsers order them). The provider lists the SHA-384
/// ones first, whose transcript and key-schedule hashing has no hardware support on x86 and
/// costs ~10 % of a full handshake's client CPU.
pub fn default_suites(versions: &[&SupportedProtocolVersion]) -> Vec<SupportedCipherSuite> {
    let mut suites: Vec<SupportedCipherSuite> = aws_lc_rs::DEFAULT_CIPHER_SUITES
        .iter()
        .filter(|s| versions.contains(&s.version()))
        .copied()
        .collect();
    suites.sort_by_key(|s| cipher_name(u16::from(s.suite())).ends_with("SHA384"));
    suites
}

/// Display name of a protocol version number.
pub fn version_name(v: u16) -> String {
    match v {
        0x0304 => "TLSv1.3".into(),
        0x0303 => "TLSv1.2".into(),
        v => format!("0x{v:04x}"),
    }
}

/// IANA name of a cipher suite number (rustls' `TLS13_` prefix becomes IANA's `TLS_`).
pub fn cipher_name(c: u16) -> String {
    match rustls::CipherSuite::from(c).as_str() {
        Some(s) => match s.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => s.to_owned(),
        },
        None => format!("0x{c:04x}"),
    }
}

/// Name of a key-exchange group number, in the spelling `--kx` accepts.
pub fn group_name(g: u16) -> String {
    match g {
        0 => "none".into(),
        g => NamedGroup::from(g)
            .as_str()
            .map_or_else(|| format!("0x{g:04x}"), |s| s.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::UnixTime;
    use rustls::{AlertDescription, CertificateError};

    /// A self-signed certificate with CA:TRUE for localhost and 127.0.0.1, as
    /// `openssl req -x509 -newkey ec ... -addext subjectAltName=...` makes it.
    fn self_signed_ca() -> CertificateDer<'static> {
        let mut p =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    fn verifier(
        trusted: &CertificateDer<'static>,
        pinned: bool,
        cache: bool,
    ) -> Arc<dyn ServerCertVerifier> {
        let mut roots = RootCertStore::empty();
        roots.add(trusted.clone()).unwrap();
        let s = TlsSettings {
            pinned: if pinned {
                vec![trusted.clone()]
            } else {
                Vec::new()
            },
            verify_cache: cache,
            ..TlsSettings::new(
                ServerName::try_from("localhost").unwrap(),
                Arc::new(roots),
                vec![&rustls::version::TLS13],
            )
        };
        s.verifier(s.provider()).unwrap()
    }

    fn verify(
        v: &Arc<dyn ServerCertVerifier>,
        cert: &CertificateDer<'_>,
        name: &str,
    ) -> Result<(), TlsFailure> {
        v.verify_server_cert(
            cert,
            &[],
            &ServerName::try_from(name).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| TlsFailure::of(&e))
    }

    #[test]
    fn a_pinned_ca_certificate_is_trusted_for_its_names_only() {
        let cert = self_signed_ca();
        // Through the verification cache and without it.
        for cache in [true, false] {
            // Without pinning, webpki's reason is named (this also guards the text match
            // on rustls' `CertificateError::Other`).
            let c = verifier(&cert, false, cache);
            assert_eq!(
                verify(&c, &cert, "localhost"),
                Err(TlsFailure::CaAsServerCert)
            );
            let c = verifier(&cert, true, cache);
            assert_eq!(verify(&c, &cert, "localhost"), Ok(()));
            assert_eq!(verify(&c, &cert, "127.0.0.1"), Ok(()));
            assert_eq!(
                verify(&c, &cert, "example.com"),
                Err(TlsFailure::NameMismatch)
            );
            // Another CA:TRUE certificate than the pinned one.
            let other = self_signed_ca();
            assert_eq!(
                verify(&c, &other, "localhost"),
                Err(TlsFailure::CaAsServerCert)
            );
        }
        assert!(TlsFailure::CaAsServerCert
            .describe()
            .contains("pass that exact file with --cacert"));
        assert!(TlsFailure::CaAsServerCert.is_persistent());
        assert!(!TlsFailure::Timeout.is_persistent());
    }

    #[test]
    fn names() {
        assert_eq!(alert_name(40), "handshake_failure");
        assert_eq!(alert_name(116), "certificate_required");
        assert_eq!(alert_name(250), "unknown_250");
        assert_eq!(cipher_name(0x1301), "TLS_AES_128_GCM_SHA256");
        assert_eq!(
            cipher_name(0xc02b),
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        );
        assert_eq!(group_name(0x001d), "x25519");
        assert_eq!(group_name(0x11ec), "x25519mlkem768");
        assert_eq!(version_name(0x0304), "TLSv1.3");
        assert_eq!(
            TlsFailure::of(&Error::InvalidCertificate(CertificateError::UnknownIssuer)).name(),
            "cert_unknown_issuer"
        );
        assert_eq!(
            TlsFailure::of(&Error::AlertReceived(AlertDescription::CertificateRequired)).name(),
            "alert_certificate_required"
        );
    }
}
