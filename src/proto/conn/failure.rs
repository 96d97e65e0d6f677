//! Why a connection attempt or session failed: one cause per counter, with its report key and a
//! one-line explanation of what to check.

use crate::proto::tls::TlsFailure;
use crate::proto::ws::frame::Violation;
use crate::proto::ws::handshake::UpgradeFailure;
use std::fmt;

/// Why a connection attempt or session failed; each cause has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// TCP connection refused (RST to our SYN).
    Refused,
    /// No connection within `--connect-timeout` (or the kernel gave up on the SYN).
    ConnectTimeout,
    /// No 101 response within `--connect-timeout` of the connect start.
    UpgradeTimeout,
    /// Connection reset by the peer (ECONNRESET, EPIPE, ECONNABORTED): the server or a middlebox
    /// dropped it.
    Reset,
    /// An established connection timed out (the peer stopped acknowledging data).
    TcpTimeout,
    /// Network or host unreachable (ENETUNREACH, EHOSTUNREACH, ENETDOWN, EHOSTDOWN): check the
    /// target address and routes.
    Unreachable,
    /// No local port or source address available (EADDRNOTAVAIL / EADDRINUSE).
    NoSourcePort,
    /// Out of file descriptors (EMFILE / ENFILE).
    TooManyFiles,
    /// The server closed the TCP connection before completing the upgrade.
    ClosedDuringHandshake,
    /// The upgrade response was not an acceptable 101.
    Upgrade(UpgradeFailure),
    /// The server violated RFC 6455.
    Protocol(Violation),
    /// The server closed the TCP connection of an open session without a close frame.
    EofWithoutClose,
    /// No pong within `--pong-timeout` of a ping, or no heartbeat reply within
    /// `--heartbeat-timeout`: the session was closed as dead.
    HeartbeatTimeout,
    /// The expected reply (`--expect`) did not arrive within `--expect-timeout`.
    ExpectTimeout,
    /// The TLS handshake or record layer failed.
    Tls(TlsFailure),
    /// The application protocol (`--protocol`) refused or ended the session.
    App(AppFailure),
    /// Another OS error, by its errno (reported as `os_error_N`).
    Os(i32),
}

/// How an application protocol refused or ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppFailure {
    /// Refused at its handshake: a Socket.IO CONNECT_ERROR, a STOMP ERROR for CONNECT.
    Refused,
    /// A STOMP ERROR frame during the session (the broker closes it).
    Error,
    /// The server left the namespace (Socket.IO DISCONNECT: `io server disconnect`).
    Disconnected,
    /// The server closed the Engine.IO session (packet `1`).
    Closed,
    /// A message that is not the protocol's (unparseable envelope).
    Malformed,
    /// No handshake answer (CONNECTED, connection_ack, namespace CONNECT) within
    /// `--connect-timeout`.
    Timeout,
    /// A GraphQL operation answered with `error` (the session goes on).
    OperationError,
}

impl AppFailure {
    fn name(self) -> &'static str {
        match self {
            Self::Refused => "app_refused",
            Self::Error => "app_error",
            Self::Disconnected => "app_server_disconnect",
            Self::Closed => "app_closed",
            Self::Malformed => "app_malformed",
            Self::Timeout => "app_handshake_timeout",
            Self::OperationError => "app_operation_error",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Refused => "the application protocol refused the session at its handshake (Socket.IO connect_error, STOMP ERROR for CONNECT: check the login, the namespace, --init-payload)",
            Self::Error => "the STOMP broker sent an ERROR frame and closed the session",
            Self::Disconnected => "the Socket.IO server disconnected the client from its namespace (io server disconnect)",
            Self::Closed => "the Engine.IO server closed the session (packet 1)",
            Self::Malformed => "the server sent a message that is not the --protocol's (is this the right endpoint and protocol?)",
            Self::Timeout => "no answer to the protocol's handshake (namespace CONNECT, STOMP CONNECTED, connection_ack) within --connect-timeout",
            Self::OperationError => "a GraphQL operation was answered with `error` (its query is invalid or its resolver failed); the session goes on",
        }
    }
}

impl Failure {
    /// Maps a connect/recv/send errno to a cause.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ECONNREFUSED => Self::Refused,
            libc::ETIMEDOUT => Self::ConnectTimeout,
            libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => Self::Reset,
            libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN | libc::EHOSTDOWN => {
                Self::Unreachable
            }
            libc::EADDRNOTAVAIL | libc::EADDRINUSE => Self::NoSourcePort,
            libc::EMFILE | libc::ENFILE => Self::TooManyFiles,
            e => Self::Os(e),
        }
    }

    /// Stable snake_case key used in reports and JSON.
    pub fn name(&self) -> String {
        match self {
            Self::Refused => "refused".into(),
            Self::ConnectTimeout => "connect_timeout".into(),
            Self::UpgradeTimeout => "upgrade_timeout".into(),
            Self::Reset => "reset".into(),
            Self::TcpTimeout => "tcp_timeout".into(),
            Self::Unreachable => "unreachable".into(),
            Self::NoSourcePort => "no_source_port".into(),
            Self::TooManyFiles => "too_many_open_files".into(),
            Self::ClosedDuringHandshake => "closed_during_handshake".into(),
            Self::Upgrade(u) => u.to_string(),
            Self::Protocol(v) => format!("protocol_{v}"),
            Self::EofWithoutClose => "eof_without_close_frame".into(),
            Self::HeartbeatTimeout => "heartbeat_timeout".into(),
            Self::ExpectTimeout => "expect_timeout".into(),
            Self::Tls(t) => format!("tls_{}", t.name()),
            Self::App(a) => a.name().into(),
            Self::Os(e) => format!("os_error_{e}"),
        }
    }

    /// One line: what happened and what to check.
    pub fn describe(&self) -> String {
        match self {
            Self::Refused => "connection refused: nothing listens on the target address/port".into(),
            Self::ConnectTimeout => "TCP connect timed out: target overloaded, SYN backlog full or filtered".into(),
            Self::UpgradeTimeout => "no HTTP 101 before --connect-timeout: the server accepted TCP but did not upgrade".into(),
            Self::Reset => "connection reset by peer".into(),
            Self::TcpTimeout => "established connection timed out: the peer stopped acknowledging data".into(),
            Self::Unreachable => "network or host unreachable: check the target address and routes".into(),
            Self::NoSourcePort => {
                "no free local port: add source addresses (--source-ip 127.0.0.2-127.0.0.20) or widen ip_local_port_range".into()
            }
            Self::TooManyFiles => "out of file descriptors: raise the NOFILE hard limit (see `sockstorm doctor`)".into(),
            Self::ClosedDuringHandshake => "server closed the connection before answering the upgrade".into(),
            Self::Upgrade(UpgradeFailure::Status(s)) => format!("server answered HTTP {s} instead of 101 Switching Protocols"),
            Self::Upgrade(UpgradeFailure::MissingUpgrade) => "101 response without `Upgrade: websocket`".into(),
            Self::Upgrade(UpgradeFailure::MissingConnection) => "101 response without `Connection: Upgrade`".into(),
            Self::Upgrade(UpgradeFailure::BadAccept) => "Sec-WebSocket-Accept does not match our Sec-WebSocket-Key".into(),
            Self::Upgrade(UpgradeFailure::BadSubprotocol) => "server selected a subprotocol we did not offer".into(),
            Self::Upgrade(UpgradeFailure::BadDeflate) => "server's permessage-deflate answer has a parameter we did not offer, an invalid value or more than one extension (RFC 7692 §7.1)".into(),
            Self::Upgrade(UpgradeFailure::BadExtension) => "server answered with a WebSocket extension we did not offer (Sec-WebSocket-Extensions): RFC 6455 fails such a connection".into(),
            Self::Upgrade(UpgradeFailure::TooManyHeaders) => format!("the 101 response has more than {} header fields", crate::proto::ws::handshake::MAX_HEADERS),
            Self::Upgrade(UpgradeFailure::Malformed) => "upgrade response is not valid HTTP/1.1 (is this a WebSocket endpoint?)".into(),
            Self::Protocol(v) => format!("server violated RFC 6455: {v}"),
            Self::EofWithoutClose => "server dropped an open session without a close frame (1006)".into(),
            Self::HeartbeatTimeout => "no pong within --pong-timeout of a ping: session closed as dead".into(),
            Self::ExpectTimeout => "the expected reply (--expect) did not arrive within --expect-timeout; the session stays open".into(),
            Self::Tls(t) => t.describe(),
            Self::App(a) => a.describe().into(),
            Self::Os(e) => format!("{}", std::io::Error::from_raw_os_error(*e)),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
