//! An open [`Conn`] in steady-state echo: one message out through `poll_transmit`, its echo in
//! through `handle_recv`, on a fake clock; optionally with pings both ways. Shared by `benches/codec.rs` (per-message cost) and
//! `tests/alloc.rs` (no allocation per message); cargo does not build this directory as a bench.

use sockstorm::metrics::ShardStats;
use sockstorm::proto::conn::{Conn, ConnConfig, Ctx, Message, Micros, Mode, Phase};
use sockstorm::proto::rng::Rng;
use sockstorm::proto::ws::frame::apply_mask;
use sockstorm::proto::ws::handshake::RequestTemplate;

/// Interval between messages on the fake clock, µs.
const INTERVAL: Micros = 1000;
/// Simulated round-trip time, µs.
const RTT: Micros = 300;

/// A connection opened against a scripted correct server, plus everything a handler needs.
pub struct EchoSession {
    cfg: ConnConfig,
    stats: ShardStats,
    rng: Rng,
    conn: Conn,
    now: Micros,
    /// The server's (unmasked) echo of our message, built once.
    echo: Vec<u8>,
    /// The caller-owned output buffer, reused across round trips.
    out: Vec<u8>,
    /// Whether pings flow both ways (see [`EchoSession::open`]).
    pings: bool,
    /// Round trips so far.
    trips: u64,
    /// Wire size of one message frame (more output means a ping or pong went along).
    frame_len: usize,
}

impl EchoSession {
    /// Opens a connection whose rate-driven message is `payload` as a text message. With
    /// `pings`, the client pings every 10 intervals and the server answers at once, and the
    /// server pings every 10th round trip (the client's pong goes out with the next message).
    pub fn open(payload: &str, pings: bool) -> Self {
        let cfg = ConnConfig {
            mode: Mode::Session,
            tls: None,
            template: RequestTemplate::new("127.0.0.1:9001", "/echo", &[], &[]),
            connect_timeout: 5_000_000,
            on_open: Vec::new(),
            message: Some(Message {
                opcode: sockstorm::proto::ws::frame::OpCode::Text,
                payload: payload.as_bytes().into(),
                template: None,
            }),
            message_interval: INTERVAL,
            ping_interval: if pings { 10 * INTERVAL } else { 0 },
            pong_timeout: 0,
            latency_from: None,
            expect: None,
            epoch_unix_us: 0,
            session_lifetime: 0,
            close_wait: 1_000_000,
            validate_utf8: true,
            message_count: 0,
            on_reconnect: None,
            fanout: None,
            channel: 0,
            heartbeat: None,
            timer_resolution: 1,
        };
        let mut stats = ShardStats::new();
        let mut rng = Rng::new(0x5eed);
        let mut out = Vec::with_capacity(64 * 1024);
        let mut ctx = Ctx {
            token: None,
            cfg: &cfg,
            stats: &mut stats,
            rng: &mut rng,
        };
        let mut conn = Conn::new(&mut ctx, 0);
        conn.handle_connected(&mut ctx, 100);
        conn.poll_transmit(&mut ctx, 100, &mut out);
        let resp = response_for(&out);
        conn.handle_recv(&mut ctx, 200, &resp);
        assert_eq!(
            conn.phase(),
            Phase::Open,
            "the scripted 101 opens the session"
        );
        out.clear();
        // The first message is due at a random phase within the first interval.
        let now = conn.poll_timeout(&cfg).expect("a message timer is armed");
        let echo = server_frame(0x81, payload.as_bytes());
        Self {
            cfg,
            stats,
            rng,
            conn,
            now,
            frame_len: payload.len() + 2 + 4 + if payload.len() < 126 { 0 } else { 2 },
            echo,
            out,
            pings,
            trips: 0,
        }
    }

    /// One message written by `poll_transmit` and its echo fed back through `handle_recv`
    /// `RTT` later; returns the bytes written. The clock then advances one interval.
    pub fn round_trip(&mut self) -> usize {
        self.out.clear();
        let mut ctx = Ctx {
            token: None,
            cfg: &self.cfg,
            stats: &mut self.stats,
            rng: &mut self.rng,
        };
        if self.pings {
            // Pings are due on the timer, as a driver would deliver it.
            self.conn.handle_timer(&mut ctx, self.now);
        }
        let n = self.conn.poll_transmit(&mut ctx, self.now, &mut self.out);
        self.conn.handle_recv(&mut ctx, self.now + RTT, &self.echo);
        if self.pings {
            if n > self.frame_len {
                // Our ping (or a pong) went along: answer a ping with its own payload, as a
                // server must; a pong from us needs no answer.
                // Walk our (small, masked) frames to find the ping.
                let mut at = 0;
                while at + 6 <= self.out.len() {
                    let (op, len) = (self.out[at] & 0x0F, usize::from(self.out[at + 1] & 0x7F));
                    if len > 125 || at + 6 + len > self.out.len() {
                        break;
                    }
                    if op == 0x9 {
                        let mask = [
                            self.out[at + 2],
                            self.out[at + 3],
                            self.out[at + 4],
                            self.out[at + 5],
                        ];
                        let mut pong = [0u8; 2 + 125];
                        pong[0] = 0x8A;
                        pong[1] = len as u8;
                        pong[2..2 + len].copy_from_slice(&self.out[at + 6..at + 6 + len]);
                        apply_mask(&mut pong[2..2 + len], mask, 0);
                        self.conn
                            .handle_recv(&mut ctx, self.now + RTT, &pong[..2 + len]);
                    }
                    at += 6 + len;
                }
            }
            self.trips += 1;
            if self.trips % 10 == 0 {
                self.conn
                    .handle_recv(&mut ctx, self.now + RTT, &[0x89, 4, b'p', b'i', b'n', b'g']);
            }
        }
        self.now += INTERVAL;
        n
    }

    /// The statistics gathered so far.
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }
}

/// The 101 a correct server sends for the upgrade `request`.
fn response_for(request: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(request).expect("the request is ASCII");
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("the request carries a key");
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        tungstenite::handshake::derive_accept_key(key.as_bytes())
    )
    .into_bytes()
}

/// A server (unmasked) frame with first byte `b0`.
pub fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![b0];
    let l = payload.len();
    if l < 126 {
        v.push(l as u8);
    } else if l <= 0xFFFF {
        v.push(126);
        v.extend_from_slice(&(l as u16).to_be_bytes());
    } else {
        v.push(127);
        v.extend_from_slice(&(l as u64).to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}
