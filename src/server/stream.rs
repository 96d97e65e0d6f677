//! The byte stream under a gateway connection: the plain socket, or TLS over it, plus the
//! request bytes the gateway read ahead to route the request.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use super::deflate::Deflate;
use super::tls::TlsStream;
use crate::proto::ws::deflate::Negotiated;

/// A client connection's transport, as tungstenite and the answering paths see it.
pub(super) struct ServerStream {
    /// The socket, or TLS over it.
    transport: Transport,
    /// Bytes read ahead (the request head, to route it) that reads return first; emptied, and
    /// its memory freed, once they have all been read.
    replay: Vec<u8>,
    /// How much of `replay` has been read.
    replayed: usize,
    /// Bytes returned by reads so far (replayed ones included): with what tungstenite has
    /// made into messages, how much it still holds (the budget of unfinished messages).
    read_total: u64,
    /// permessage-deflate, once agreed ([`Self::agree_deflate`]); between tungstenite and the
    /// transport once the upgrade is written ([`Self::start_deflate`]).
    deflate: Option<Box<Deflate>>,
    /// The 101 is written: `deflate` transcodes.
    deflating: bool,
}

/// The transport of a [`ServerStream`].
enum Transport {
    /// `ws://`: the socket itself.
    Plain(TcpStream),
    /// `wss://`: boxed, so plain connections do not pay for rustls' state.
    Tls(Box<TlsStream>),
}

impl ServerStream {
    /// The socket itself (`ws://`).
    pub(super) fn plain(sock: TcpStream) -> Self {
        Self::new(Transport::Plain(sock))
    }

    /// TLS over the socket (`wss://`).
    pub(super) fn tls(tls: Box<TlsStream>) -> Self {
        Self::new(Transport::Tls(tls))
    }

    /// `transport` with nothing to replay.
    fn new(transport: Transport) -> Self {
        Self {
            transport,
            replay: Vec::new(),
            replayed: 0,
            read_total: 0,
            deflate: None,
            deflating: false,
        }
    }

    /// Bytes returned by reads so far.
    pub(super) fn read_total(&self) -> u64 {
        self.read_total
    }

    /// Makes the next reads return `bytes` (already read from the transport) before anything
    /// new, so tungstenite sees the request the gateway peeked at.
    pub(super) fn replay(&mut self, bytes: Vec<u8>) {
        self.replay = bytes;
        self.replayed = 0;
    }

    /// Like [`Self::replay`] for an upgrade that agreed permessage-deflate: only the request
    /// head (`head` bytes of `bytes`) is replayed to tungstenite's handshake; what the client
    /// sent after it is already WebSocket frames, kept for the compression layer. Nothing is
    /// read from the transport before [`Self::start_deflate`], since the head is all there.
    pub(super) fn agree_deflate(
        &mut self,
        mut bytes: Vec<u8>,
        head: usize,
        agreed: Negotiated,
        max_message: usize,
    ) {
        let early = bytes.split_off(head.min(bytes.len()));
        self.replay(bytes);
        self.deflate = Some(Box::new(Deflate::new(agreed, max_message, early)));
    }

    /// The upgrade is complete: from now on reads inflate and writes compress, if that was
    /// agreed (then true).
    pub(super) fn start_deflate(&mut self) -> bool {
        self.deflating = self.deflate.is_some();
        self.deflating
    }

    /// Makes the coming close a reset (SO_LINGER 0): the client learns at once, even when
    /// it stopped reading and our unsent data fills its window; best effort.
    pub(super) fn abort(&self) {
        let sock = match &self.transport {
            Transport::Plain(s) => s,
            Transport::Tls(t) => t.socket(),
        };
        let _ = socket2::SockRef::from(sock).set_linger(Some(std::time::Duration::ZERO));
    }

    /// Ends the stream politely where the protocol has a way (TLS close_notify); best effort.
    pub(super) fn close(&mut self) {
        if let Transport::Tls(tls) = &mut self.transport {
            tls.close();
        }
    }
}

impl Read for ServerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.with_deflate(|z, raw| z.read(raw, buf)) {
            Some(r) => r?,
            None => self.read_inner(buf)?,
        };
        self.read_total += n as u64;
        Ok(n)
    }
}

/// The transport under the compression layer.
struct Raw<'a>(&'a mut ServerStream);

impl Read for Raw<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_inner(buf)
    }
}

impl Write for Raw<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_inner(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush_inner()
    }
}

impl ServerStream {
    /// [`Read::read`] without the count.
    fn read_inner(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(mut rest) = self.replay.get(self.replayed..).filter(|r| !r.is_empty()) {
            let n = rest.read(buf)?;
            self.replayed += n;
            if self.replayed >= self.replay.len() {
                self.replay = Vec::new();
                self.replayed = 0;
            }
            return Ok(n);
        }
        match &mut self.transport {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for ServerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.with_deflate(|z, raw| z.write(raw, buf))
            .unwrap_or_else(|| self.write_inner(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.with_deflate(|z, raw| z.flush(raw))
            .unwrap_or_else(|| self.flush_inner())
    }
}

impl ServerStream {
    /// Runs `f` on the compression layer over the transport; `None` when there is none.
    fn with_deflate<T>(
        &mut self,
        f: impl FnOnce(&mut Deflate, &mut Raw<'_>) -> io::Result<T>,
    ) -> Option<io::Result<T>> {
        if !self.deflating {
            return None;
        }
        let mut z = self.deflate.take()?;
        let r = f(&mut z, &mut Raw(self));
        self.deflate = Some(z);
        Some(r)
    }

    /// [`Write::write`] to the transport.
    fn write_inner(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.transport {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    /// [`Write::flush`] of the transport.
    fn flush_inner(&mut self) -> io::Result<()> {
        match &mut self.transport {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}
