//! TLS for client connections, sans-IO: rustls runs the handshake and the record layer on bytes
//! the backend hands to [`crate::proto::conn::Conn`]. This module builds each shard's client
//! configurations, owns the per-shard session store that makes resumption work at storm scale,
//! and names every TLS failure so that reports count them by kind.

use crate::proto::rng::Rng;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::client::{
    ClientSessionStore, ResolvesClientCert, Resumption, Tls12ClientSessionValue, Tls12Resumption,
    Tls13ClientSessionValue,
};
use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct,
    Error, HandshakeKind, NamedGroup, RootCertStore, SignatureScheme, SupportedCipherSuite,
    SupportedProtocolVersion,
};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

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

/// A shard's session store. Only its shard's thread uses it, so the lock is never contended;
/// rustls' trait asks for `Sync` because configurations may be shared across threads.
///
/// TLS 1.3 tickets are single-use: the store keeps up to `capacity` of them (rustls' default
/// cache keeps 8 per server, which a burst of new connections exhausts at once) and hands out
/// the newest first. The TLS 1.2 session is reusable and shared by every connection. The run
/// has one target, so entries are not keyed by server name.
pub struct SessionStore {
    inner: Mutex<StoreInner>,
    capacity: usize,
    /// Sessions handed to a ClientHello.
    taken: AtomicU64,
    /// TLS 1.3 tickets received.
    inserted: AtomicU64,
}

#[derive(Default)]
struct StoreInner {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

impl SessionStore {
    fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(StoreInner::default()),
            capacity: capacity.max(1),
            taken: AtomicU64::new(0),
            inserted: AtomicU64::new(0),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut StoreInner) -> R) -> R {
        // A panic while holding the lock cannot leave the store inconsistent; go on.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.with(|s| s.tls13.len());
        write!(f, "SessionStore({n} TLS 1.3 tickets of {})", self.capacity)
    }
}

impl ClientSessionStore for SessionStore {
    fn set_kx_hint(&self, _: ServerName<'static>, group: NamedGroup) {
        self.with(|s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(|s| s.kx_hint)
    }

    fn set_tls12_session(&self, _: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with(|s| s.tls12 = Some(value));
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        let v = self.with(|s| s.tls12.clone());
        if v.is_some() {
            self.taken.fetch_add(1, Relaxed);
        }
        v
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {
        self.with(|s| s.tls12 = None);
    }

    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.inserted.fetch_add(1, Relaxed);
        let cap = self.capacity;
        self.with(|s| {
            if s.tls13.len() >= cap {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        let v = self.with(|s| s.tls13.pop_back());
        if v.is_some() {
            self.taken.fetch_add(1, Relaxed);
        }
        v
    }
}

/// The store as seen by forced-full handshakes: they add what they receive, take nothing.
#[derive(Debug)]
struct FullOnly(Arc<SessionStore>);

impl ClientSessionStore for FullOnly {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.0.set_kx_hint(name, group);
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.kx_hint(name)
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.0.set_tls12_session(name, value);
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.0.insert_tls13_ticket(name, value);
    }

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        None
    }
}

/// `--insecure`: accepts any certificate, but still checks the handshake signatures so the
/// client does the same crypto work as a verifying one minus the chain.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

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
struct PinnedVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    pinned: Vec<CertificateDer<'static>>,
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
struct CachedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    cache: Mutex<VecDeque<Verified>>,
}

#[derive(Debug)]
struct Verified {
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

/// Why a TLS handshake or session failed, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsFailure {
    /// The certificate chain does not lead to a trusted root.
    UnknownIssuer,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotValidYet,
    /// The certificate is not valid for the server name.
    NameMismatch,
    /// The certificate has been revoked.
    Revoked,
    /// A signature on the certificate or handshake does not verify.
    BadSignature,
    /// The server's certificate is a CA certificate (CA:TRUE), which is not accepted as a
    /// server's own unless pinned (the same file in `--cacert`).
    CaAsServerCert,
    /// The certificate's extended key usage does not allow TLS server authentication.
    WrongPurpose,
    /// The certificate is otherwise unacceptable (encoding, extensions).
    BadCertificate,
    /// The server sent a fatal alert (by description code).
    Alert(u8),
    /// The server's bytes are not TLS (plain HTTP on a wss:// URL?).
    NotTls,
    /// No common protocol version, cipher suite or group.
    Incompatible,
    /// The server broke the TLS protocol: it misbehaved, sent an unexpected handshake message or an
    /// oversized record, or a record did not decrypt.
    Protocol,
    /// No completed handshake before `--connect-timeout`.
    Timeout,
    /// The server closed the connection during the handshake.
    Closed,
    /// The server asked for a client certificate, we had none to send, and it then refused
    /// the handshake (an alert such as certificate_required or handshake_failure, or it closed
    /// the connection): pass one with --cert/--key.
    ClientCertRequired,
    /// Any other rustls error (reported as `tls_other`, "other TLS error").
    Other,
}

impl TlsFailure {
    /// Classifies a rustls error.
    pub fn of(e: &Error) -> Self {
        match e {
            Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => Self::UnknownIssuer,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Self::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Self::NotValidYet
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Self::NameMismatch,
                CertificateError::Revoked => Self::Revoked,
                CertificateError::BadSignature => Self::BadSignature,
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => Self::WrongPurpose,
                // rustls passes webpki's reason on as text only: its `Debug` name.
                CertificateError::Other(o) if o.to_string() == "CaUsedAsEndEntity" => {
                    Self::CaAsServerCert
                }
                _ => Self::BadCertificate,
            },
            Error::AlertReceived(a) => Self::Alert(u8::from(*a)),
            Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => Self::NotTls,
            Error::PeerIncompatible(_) | Error::NoCertificatesPresented => Self::Incompatible,
            Error::PeerMisbehaved(_)
            | Error::InappropriateHandshakeMessage { .. }
            | Error::DecryptError
            | Error::PeerSentOversizedRecord => Self::Protocol,
            _ => Self::Other,
        }
    }

    /// This failure of a handshake in which the server asked for a client certificate and got
    /// none: a refusal (the alerts that answer a missing or refused certificate, or
    /// handshake_failure) or a close is [`Self::ClientCertRequired`]; anything else stays.
    pub fn after_cert_request(self) -> Self {
        match self {
            Self::Alert(40 | 42..=46 | 48 | 49 | 116) | Self::Closed => Self::ClientCertRequired,
            f => f,
        }
    }

    /// Stable snake_case key used in reports.
    pub fn name(&self) -> String {
        match self {
            Self::UnknownIssuer => "cert_unknown_issuer".into(),
            Self::Expired => "cert_expired".into(),
            Self::NotValidYet => "cert_not_valid_yet".into(),
            Self::NameMismatch => "cert_name_mismatch".into(),
            Self::Revoked => "cert_revoked".into(),
            Self::BadSignature => "cert_bad_signature".into(),
            Self::CaAsServerCert => "cert_ca_as_server".into(),
            Self::WrongPurpose => "cert_wrong_purpose".into(),
            Self::BadCertificate => "cert_invalid".into(),
            Self::Alert(a) => format!("alert_{}", alert_name(*a)),
            Self::NotTls => "not_tls".into(),
            Self::Incompatible => "incompatible".into(),
            Self::Protocol => "protocol".into(),
            Self::Timeout => "handshake_timeout".into(),
            Self::Closed => "closed_during_handshake".into(),
            Self::ClientCertRequired => "client_cert_required".into(),
            Self::Other => "other".into(),
        }
    }

    /// Whether every attempt against the same server fails this way: a certificate, its
    /// verification or the TLS configuration on either side is the cause, not load or chance
    /// (`--max-identical-failures` stops a run that only ever fails so).
    pub fn is_persistent(&self) -> bool {
        match self {
            Self::UnknownIssuer
            | Self::Expired
            | Self::NotValidYet
            | Self::NameMismatch
            | Self::Revoked
            | Self::BadSignature
            | Self::CaAsServerCert
            | Self::WrongPurpose
            | Self::BadCertificate
            | Self::NotTls
            | Self::Incompatible
            | Self::ClientCertRequired => true,
            // The alerts that refuse our parameters, client certificate, name or ALPN.
            Self::Alert(a) => matches!(a, 40 | 42..=49 | 70 | 71 | 112 | 116 | 120),
            Self::Protocol | Self::Timeout | Self::Closed | Self::Other => false,
        }
    }

    /// One line: what happened and what to check.
    pub fn describe(&self) -> String {
        match self {
            Self::UnknownIssuer => "certificate not issued by a trusted CA: pass the CA that signed it (or a self-signed server certificate itself) with --cacert FILE, or --insecure to skip verification".into(),
            Self::Expired => "server certificate has expired: renew it on the server (or check this host's clock)".into(),
            Self::NotValidYet => "server certificate is not valid yet: check the clocks of this host and the server, or reissue it".into(),
            Self::NameMismatch => "certificate does not match the host name: use the name it was issued for in the URL or --sni NAME, or reissue it with that name in subjectAltName".into(),
            Self::Revoked => "server certificate is revoked: the server needs a new one".into(),
            Self::BadSignature => "a certificate signature does not verify: the server's chain is corrupt or not signed by the CA it names; check the chain the server sends".into(),
            Self::CaAsServerCert => "the server's certificate is a CA certificate (CA:TRUE) used as a server certificate: pass that exact file with --cacert to pin it, or issue a leaf certificate signed by a CA".into(),
            Self::WrongPurpose => "the server's certificate does not allow TLS server authentication (extendedKeyUsage without serverAuth): reissue it with extendedKeyUsage=serverAuth".into(),
            Self::BadCertificate => "server certificate is malformed or not usable for TLS server authentication: inspect it with `openssl x509 -noout -text`".into(),
            Self::Alert(a) => format!("server sent the fatal TLS alert `{}`: {}", alert_name(*a), alert_hint(*a)),
            Self::NotTls => "server did not answer in TLS: is this a plain ws:// port?".into(),
            Self::Incompatible => "no common TLS version, cipher suite or key-exchange group: check --tls-version, --ciphers, --kx".into(),
            Self::Protocol => "server violated the TLS protocol".into(),
            Self::Timeout => "no completed TLS handshake before --connect-timeout".into(),
            Self::Closed => "server closed the connection during the TLS handshake".into(),
            Self::ClientCertRequired => "the server requires a client certificate (--cert/--key): it asked for one, none was configured, and it refused the handshake without".into(),
            Self::Other => "other TLS error".into(),
        }
    }
}

/// What a fatal alert from the server usually means, and what to check.
fn alert_hint(code: u8) -> &'static str {
    match code {
        40 => "no acceptable parameters; with TLS 1.2 and an ECDSA certificate --kx must also list the certificate's curve (e.g. x25519,secp256r1); else check --tls-version, --ciphers, --kx",
        70 => "the server does not speak the offered versions: check --tls-version",
        71 => "the server wants stronger parameters: check --ciphers, --kx",
        42 | 44 | 45 | 46 | 48 | 49 | 116 => "the server refused our client certificate (or the lack of one): check --cert/--key",
        112 => "the server does not know the name we sent: check --sni or the URL's host",
        120 => "no common application protocol: check --alpn",
        _ => "see the server's log",
    }
}

/// snake_case name of an alert description code.
pub fn alert_name(code: u8) -> String {
    let debug = format!("{:?}", AlertDescription::from(code));
    if debug.starts_with("Unknown") || debug.contains('(') {
        return format!("unknown_{code}");
    }
    let mut s = String::with_capacity(debug.len() + 4);
    for (i, ch) in debug.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(ch.to_ascii_lowercase());
        } else {
            s.push(ch);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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
