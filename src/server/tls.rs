//! TLS for the gateway: rustls' `ServerConnection` over a non-blocking mio socket.
//!
//! A TLS connection starts in [`TlsStream::drive_accept`], which runs the TLS handshake by
//! itself and hands the stream on only once the client has sent its first application bytes.
//! Handshake-only clients (`sockstorm run --mode handshake`: connect, handshake, close) thus
//! never cost a tungstenite handshake; they are counted in the handshake totals and dropped.
//!
//! After that, [`TlsStream`] is a non-blocking `Read + Write` for tungstenite. Two rules keep it
//! from stalling on an edge-triggered poller:
//! - every read first writes out pending TLS records and then, after decrypting, tries again:
//!   the handshake flight, TLS 1.3 session tickets and alerts are produced by *reading*;
//! - socket `WouldBlock` surfaces as `WouldBlock`; the connection stays registered for WRITABLE
//!   all its life (see the worker), so buffered TLS output is flushed by the next drive, which
//!   the WRITABLE edge triggers.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{HandshakeKind, ServerConfig, ServerConnection};

use super::conn::Finished;
use super::ThreadStats;
use crate::certs::{self, CertError};

/// TLS 1.2 sessions remembered by ID for resumption: about 200 bytes each, so ~20 MB when full.
const TLS12_SESSION_CACHE: usize = 100_000;

/// What [`server_tls_config`] builds the gateway's TLS settings from.
#[derive(Debug)]
pub struct ServerTlsOptions {
    /// The server's certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// Mutual TLS: CA certificates that must have issued the client's certificate. Default
    /// `None` = no client certificate asked for.
    pub client_ca: Option<Vec<CertificateDer<'static>>>,
    /// TLS 1.3 session tickets sent after each full handshake. Default 2; 0 turns TLS 1.3
    /// resumption off.
    pub tickets_per_handshake: usize,
    /// Most tickets sent to a client that asks for a number (RFC 9149 `ticket_request`).
    /// Default 8; 0 ignores such requests.
    pub max_tls13_tickets: usize,
}

impl ServerTlsOptions {
    /// Options for `chain` and `key` with the defaults above.
    #[must_use]
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        Self {
            chain,
            key,
            client_ca: None,
            tickets_per_handshake: 2,
            max_tls13_tickets: 8,
        }
    }
}

/// The gateway's TLS settings: TLS 1.2 and 1.3, resumption by stateless tickets (both versions)
/// and by session ID (TLS 1.2), client certificates required if `client_ca` is set. Build it
/// once and share it: a TLS context per connection is what makes some load tools slow.
///
/// # Errors
/// The key does not match the chain, is of an unsupported type, or a client CA is unusable.
pub fn server_tls_config(opts: &ServerTlsOptions) -> Result<Arc<ServerConfig>, CertError> {
    certs::check_key_matches("--cert", "--key", &opts.chain, &opts.key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(CertError::Config)?;
    let builder = match &opts.client_ca {
        None => builder.with_no_client_auth(),
        Some(cas) => {
            let roots = certs::root_store("--client-ca", cas)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| CertError::BadCa {
                    flag: "--client-ca",
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(opts.chain.clone(), opts.key.clone_key())
        .map_err(CertError::Config)?;
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(CertError::Config)?;
    config.session_storage = ServerSessionMemoryCache::new(TLS12_SESSION_CACHE);
    config.send_tls13_tickets = opts.tickets_per_handshake;
    // No tickets means none, even for clients that ask (RFC 9149 requests are honoured up to
    // this maximum only when the server issues tickets at all).
    config.max_tls13_tickets = if opts.tickets_per_handshake == 0 {
        0
    } else {
        opts.max_tls13_tickets
    };
    Ok(Arc::new(config))
}

/// How far [`TlsStream::drive_accept`] got.
pub(super) enum Accept {
    /// Waiting for the socket.
    Pending,
    /// Handshake done and application bytes are waiting: start the WebSocket upgrade.
    Ready,
}

/// A server-side TLS connection over a non-blocking socket.
pub(super) struct TlsStream {
    /// The TLS state machine and its buffers.
    tls: ServerConnection,
    /// The client socket.
    sock: TcpStream,
    /// Decrypted bytes waiting in `tls`, as of the last `process_new_packets`.
    plaintext: usize,
    /// The handshake completed (and was counted).
    established: bool,
}

impl TlsStream {
    /// The client socket under the TLS layer.
    pub(super) fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Starts a TLS server connection on a freshly accepted socket.
    pub(super) fn new(sock: TcpStream, config: &Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            tls: ServerConnection::new(Arc::clone(config))?,
            sock,
            plaintext: 0,
            established: false,
        })
    }

    /// Runs the TLS handshake and waits for the first application bytes. `Err` = drop the
    /// connection: counted in `tls_failures` if the handshake had not completed, not counted if
    /// a client closed after a good handshake (a handshake-only client).
    pub(super) fn drive_accept(&mut self, stats: &ThreadStats) -> Result<Accept, Finished> {
        let res = self.accept_step(stats);
        if res.is_err() && !self.established {
            stats.tls_failures.fetch_add(1, Relaxed);
        }
        res
    }

    /// [`Self::drive_accept`] without the failure count.
    fn accept_step(&mut self, stats: &ThreadStats) -> Result<Accept, Finished> {
        loop {
            self.flush_pending().map_err(|_| Finished)?;
            let pulled = self.pull();
            // Before judging the read: a client's Finished and its close often arrive together,
            // and that is a completed handshake.
            if !self.established && !self.tls.is_handshaking() {
                self.established = true;
                let counter = match self.tls.handshake_kind() {
                    Some(HandshakeKind::Resumed) => &stats.tls_handshakes_resumed,
                    _ => &stats.tls_handshakes_full,
                };
                counter.fetch_add(1, Relaxed);
            }
            match pulled {
                Ok(0) => return Err(Finished),
                Ok(_) if self.established && self.plaintext > 0 => {
                    self.flush_pending().map_err(|_| Finished)?;
                    return Ok(Accept::Ready);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Accept::Pending),
                Err(_) => return Err(Finished),
            }
        }
    }

    /// Reads TLS records from the socket and decrypts them. `Ok(0)` = the client closed (EOF
    /// or close_notify). A TLS error (bad record, refused certificate) becomes `InvalidData`
    /// after the alert rustls queued has been sent, so the client learns why.
    fn pull(&mut self) -> io::Result<usize> {
        let n = loop {
            match self.tls.read_tls(&mut self.sock) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                res => break res?,
            }
        };
        match self.tls.process_new_packets() {
            Ok(state) => {
                self.plaintext = state.plaintext_bytes_to_read();
                if state.peer_has_closed() && self.plaintext == 0 {
                    return Ok(0);
                }
            }
            Err(e) => {
                let _ = self.write_tls();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        Ok(n)
    }

    /// Writes pending TLS records until done or the socket is full (`WouldBlock`).
    fn write_tls(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// [`Self::write_tls`], where a full socket is fine: the WRITABLE edge resumes it.
    fn flush_pending(&mut self) -> io::Result<()> {
        match self.write_tls() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Sends close_notify (best effort) so the client sees a clean end, not a truncation.
    pub(super) fn close(&mut self) {
        self.tls.send_close_notify();
        let _ = self.write_tls();
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => {
                    self.plaintext = self.plaintext.saturating_sub(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            self.flush_pending()?;
            // 0 = closed: the reader reports it (Ok(0) after close_notify, else
            // UnexpectedEof) on the next turn.
            self.pull()?;
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Backpressure: while earlier records are stuck, take nothing more, so the plaintext
        // queues in tungstenite (bounded) rather than in rustls.
        self.write_tls()?;
        let n = self.tls.writer().write(buf)?;
        self.flush_pending()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_tls()
    }
}
