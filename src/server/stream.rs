//! The byte stream under a gateway connection: the plain socket, or TLS over it.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use super::tls::TlsStream;

/// A client connection's transport, as tungstenite and the refusal path see it.
pub(super) enum ServerStream {
    /// `ws://`: the socket itself.
    Plain(TcpStream),
    /// `wss://`: boxed, so plain connections do not pay for rustls' state.
    Tls(Box<TlsStream>),
}

impl ServerStream {
    /// Ends the stream politely where the protocol has a way (TLS close_notify); best effort.
    pub(super) fn close(&mut self) {
        if let Self::Tls(tls) = self {
            tls.close();
        }
    }
}

impl Read for ServerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for ServerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}
