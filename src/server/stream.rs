//! The byte stream under a gateway connection: the plain socket, or TLS over it, plus the
//! request bytes the gateway read ahead to route the request.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use super::tls::TlsStream;

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
        let n = self.read_inner(buf)?;
        self.read_total += n as u64;
        Ok(n)
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
        match &mut self.transport {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.transport {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}
