//! An open [`Conn`] in steady-state echo: one message out through `poll_transmit`, its echo in
//! through `handle_recv`, on a fake clock; optionally with pings both ways. Shared by `benches/codec.rs` (per-message cost) and
//! `tests/alloc.rs` (no allocation per message); cargo does not build this directory as a bench.

use sockstorm::metrics::ShardStats;
use sockstorm::proto::conn::{Conn, ConnConfig, Ctx, Fanout, Message, Micros, Phase};
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
            template: RequestTemplate::new("127.0.0.1:9001", "/echo", &[], &[]),
            connect_timeout: 5_000_000,
            message: Some(Message {
                opcode: sockstorm::proto::ws::frame::OpCode::Text,
                payload: payload.as_bytes().into(),
                template: None,
            }),
            message_interval: INTERVAL,
            ping_interval: if pings { 10 * INTERVAL } else { 0 },
            timer_resolution: 1,
            ..Default::default()
        };
        let mut stats = ShardStats::new();
        let mut rng = Rng::new(0x5eed);
        let mut out = Vec::with_capacity(64 * 1024);
        let conn = open_conn(&cfg, &mut stats, &mut rng, 0, &mut out);
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
            cfg: &self.cfg,
            stats: &mut self.stats,
            rng: &mut self.rng,
            tls: None,
            epoch_unix_us: 0,
            token: None,
        };
        if self.pings {
            // Pings are due on the timer, as a driver would deliver it.
            self.conn.handle_timer(&mut ctx, self.now);
        }
        let n = self.conn.poll_transmit(&mut ctx, self.now, &mut self.out);
        self.conn.handle_sent(self.now);
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
/// A connection of `cfg` opened by a scripted correct 101 at t = 200 µs.
fn open_conn(
    cfg: &ConnConfig,
    stats: &mut ShardStats,
    rng: &mut Rng,
    epoch_unix_us: u64,
    out: &mut Vec<u8>,
) -> Conn {
    let mut ctx = Ctx {
        cfg,
        stats,
        rng,
        tls: None,
        epoch_unix_us,
        token: None,
    };
    let mut conn = Conn::new(&mut ctx, 0);
    conn.handle_connected(&mut ctx, 100);
    conn.poll_transmit(&mut ctx, 100, out);
    conn.handle_sent(100);
    let resp = response_for(out);
    conn.handle_recv(&mut ctx, 200, &resp);
    assert_eq!(
        conn.phase(),
        Phase::Open,
        "the scripted 101 opens the session"
    );
    out.clear();
    conn
}

/// The subscribers' shard epoch, Unix µs (deliveries are stamped relative to it).
const SUBSCRIBERS_EPOCH: u64 = 1_000_000;

/// Fan-out subscribers of one shard receiving the same publisher's messages, as a channel
/// relays them (a driver would feed each connection its own copy).
pub struct Subscribers {
    cfg: ConnConfig,
    stats: ShardStats,
    rng: Rng,
    conns: Vec<Conn>,
    frame: Vec<u8>,
}

impl Subscribers {
    /// `n` open subscribers, subscribed from their open (no ack awaited).
    pub fn open(n: usize) -> Self {
        let cfg = ConnConfig {
            on_open: Vec::new(),
            message: None,
            message_interval: 0,
            fanout: Some(Fanout::Subscriber),
            channel: 1,
            ..EchoSession::open("x", false).cfg
        };
        let (mut stats, mut rng, mut out) = (ShardStats::new(), Rng::new(7), Vec::new());
        let conns = (0..n)
            .map(|_| open_conn(&cfg, &mut stats, &mut rng, SUBSCRIBERS_EPOCH, &mut out))
            .collect();
        Self {
            cfg,
            stats,
            rng,
            conns,
            frame: Vec::with_capacity(128),
        }
    }

    /// Message `seq` of publisher 3, sent at 1 ms after the subscription, to everyone.
    pub fn deliver(&mut self, seq: u64) {
        use std::io::Write;
        self.frame.clear();
        self.frame.extend_from_slice(&[0x81, 0]);
        let _ = write!(
            self.frame,
            r#"{{"pub":3,"seq":{seq},"ts":1001000,"x":"quote"}}"#
        );
        self.frame[1] = (self.frame.len() - 2) as u8;
        let mut ctx = Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            rng: &mut self.rng,
            tls: None,
            epoch_unix_us: SUBSCRIBERS_EPOCH,
            token: None,
        };
        for c in &mut self.conns {
            c.handle_recv(&mut ctx, 2_000, &self.frame);
        }
    }

    /// The shard's statistics.
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }
}

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
