//! A hostile WebSocket server for the attack suite: each [`Mode`] misbehaves one way, from the
//! first byte of the handshake to floods of an open session. Plain std threads, one per
//! connection, each bounded in time ([`LIFETIME`]) and stopped when the server is dropped;
//! the client-facing behaviour is exact so the tests can assert exact counts.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest any connection of the server lives, whatever the client does.
pub const LIFETIME: Duration = Duration::from_secs(30);

/// How the server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    // --- the handshake ---
    /// Accepts TCP, never reads or answers.
    Silent,
    /// Reads the upgrade request, then closes (FIN) without a word.
    CloseAtOnce,
    /// Reads the upgrade request, then resets the connection (RST).
    ResetAtOnce,
    /// Answers with a status line that is not HTTP.
    GarbageStatus,
    /// Answers `404 Not Found`.
    NotFound,
    /// Answers `503 Service Unavailable` with `Retry-After: 1`.
    Unavailable,
    /// A 101 whose `Sec-WebSocket-Accept` is for another key.
    BadAccept,
    /// A 101 without `Upgrade: websocket`.
    NoUpgrade,
    /// A 101 without `Connection: Upgrade`.
    NoConnection,
    /// A valid 101 with this many extra header fields.
    Headers(usize),
    /// A 101 selecting an extension the client did not offer.
    Extension,
    /// A 101 selecting a subprotocol the client did not offer.
    Subprotocol,
    /// A 101 status line, then header fields forever (1 KiB each, one per millisecond).
    EndlessHeader,
    /// A valid 101, one byte per second (slowloris toward the client).
    Trickle,
    // --- frames after a valid 101 ---
    /// A masked text frame.
    MaskedFrame,
    /// A text frame with RSV1 set.
    ReservedBits,
    /// A frame with opcode 0x3.
    ReservedOpcode,
    /// A ping without FIN.
    FragmentedControl,
    /// A ping of 200 bytes.
    LongControl,
    /// A text frame that is not UTF-8.
    BadUtf8,
    /// A continuation frame with no message begun.
    LoneContinuation,
    /// A close frame carrying 1005 (may not be sent on the wire).
    CloseCode1005,
    /// A close frame carrying 999.
    CloseCode999,
    /// Two close frames (1000, then 1001) back to back.
    TwoCloses,
    /// A binary frame whose 64-bit length has the top bit set.
    LengthTopBit,
    /// A binary frame declaring 2^40 bytes, then zeros at 64 MB/s for the session; never
    /// answers the close (it is inside its frame).
    HugeLength,
    // --- floods and stalls ---
    /// Pings of 4 bytes, 64 per millisecond; answers the close.
    PingFlood,
    /// Binary messages of 64 KiB, 2 per millisecond; answers the close.
    MessageFlood,
    /// Upgrades (a 4 KiB receive buffer), then never reads again.
    NonReading,
    /// Acks the subscribe, then sends this many deliveries, each from a new publisher id;
    /// answers the close.
    FanoutIds(u64),
    /// Upgrades, reads everything, answers nothing (not even the close).
    Mute,
    /// Upgrades, then answers the close with a masked close frame.
    MaskedCloseReply,
}

/// What the server saw and did, over all its connections.
#[derive(Debug, Default)]
pub struct Stats {
    /// TCP connections accepted.
    pub accepted: AtomicU64,
    /// Valid 101 responses written whole.
    pub upgraded: AtomicU64,
    /// Pongs received.
    pub pongs: AtomicU64,
    /// Close frames received.
    pub closes: AtomicU64,
    /// Data messages written whole (floods, deliveries).
    pub msgs_written: AtomicU64,
    /// The request lines of the first 16 upgrade requests.
    pub request_lines: Mutex<Vec<String>>,
}

impl Stats {
    /// A counter's value.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

/// A running hostile server; dropping it stops every connection within ~100 ms.
pub struct Hostile {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// What it saw and did.
    pub stats: Arc<Stats>,
}

impl Hostile {
    /// Listens on 127.0.0.1 (a free port) and serves every connection in `mode`.
    pub fn start(mode: Mode) -> Self {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if mode == Mode::NonReading {
            // Inherited by accepted sockets: the client's sends back up at once.
            sock.set_recv_buffer_size(4096).unwrap();
        }
        sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        sock.listen(1024).unwrap();
        let l: TcpListener = sock.into();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let (st, sx) = (stop.clone(), stats.clone());
        thread::spawn(move || {
            let born = Instant::now();
            while !st.load(Relaxed) && born.elapsed() < LIFETIME {
                match l.accept() {
                    Ok((s, _)) => {
                        sx.accepted.fetch_add(1, Relaxed);
                        let conn = Conn {
                            s,
                            stop: st.clone(),
                            stats: sx.clone(),
                            born: Instant::now(),
                        };
                        thread::spawn(move || conn.serve(mode));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => return,
                }
            }
        });
        Self { addr, stop, stats }
    }

    /// `ws://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// One accepted connection.
struct Conn {
    s: TcpStream,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    born: Instant,
}

const STATUS_101: &str = "HTTP/1.1 101 Switching Protocols\r\n";

impl Conn {
    fn alive(&self) -> bool {
        !self.stop.load(Relaxed) && self.born.elapsed() < LIFETIME
    }

    /// Holds the connection without reading until the server stops.
    fn hold(&self) {
        while self.alive() {
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads and discards until EOF, an error or the server stops.
    fn drain(&mut self) {
        self.s
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut buf = [0u8; 16384];
        while self.alive() {
            match self.s.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    }

    /// Reads the upgrade request; its `Sec-WebSocket-Key`.
    fn request(&mut self) -> Option<String> {
        self.s.set_nonblocking(false).unwrap();
        self.s
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut req = Vec::new();
        let mut b = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match self.s.read(&mut b) {
                Ok(0) | Err(_) => return None,
                Ok(n) => req.extend_from_slice(&b[..n]),
            }
            if req.len() > 16384 {
                return None;
            }
        }
        let text = String::from_utf8_lossy(&req);
        let mut lines = self.stats.request_lines.lock().unwrap();
        if lines.len() < 16 {
            lines.push(text.lines().next().unwrap_or_default().to_owned());
        }
        drop(lines);
        text.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-key"))
                .map(|(_, v)| v.trim().to_owned())
        })
    }

    /// A 101 for `key`, with `extra` header lines (each ending in CRLF).
    fn response(key: &str, extra: &str) -> String {
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        format!(
            "{STATUS_101}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
    }

    fn serve(mut self, mode: Mode) {
        if mode == Mode::Silent {
            return self.hold();
        }
        let Some(key) = self.request() else { return };
        let head = match mode {
            Mode::CloseAtOnce => return,
            Mode::ResetAtOnce => {
                let _ = socket2::SockRef::from(&self.s).set_linger(Some(Duration::ZERO));
                return;
            }
            Mode::GarbageStatus => "SSH-2.0-OpenSSH_9.6\r\n\r\n".to_owned(),
            Mode::NotFound => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
            Mode::Unavailable => {
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
                    .to_owned()
            }
            Mode::BadAccept => Self::response("dGhlIHNhbXBsZSBub25jZQ==", ""),
            Mode::NoUpgrade => {
                let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
                format!("{STATUS_101}Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
            }
            Mode::NoConnection => {
                let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
                format!("{STATUS_101}Upgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
            }
            Mode::Headers(n) => {
                let extra: String = (0..n).map(|i| format!("X-Hop-{i}: v\r\n")).collect();
                Self::response(&key, &extra)
            }
            Mode::Extension => {
                Self::response(&key, "Sec-WebSocket-Extensions: permessage-deflate\r\n")
            }
            Mode::Subprotocol => Self::response(&key, "Sec-WebSocket-Protocol: mqtt\r\n"),
            Mode::EndlessHeader => return self.endless_header(),
            Mode::Trickle => return self.trickle(&Self::response(&key, "")),
            _ => Self::response(&key, ""),
        };
        if self.s.write_all(head.as_bytes()).is_err() {
            return;
        }
        if head.starts_with(STATUS_101) {
            self.stats.upgraded.fetch_add(1, Relaxed);
        }
        match Self::frames(mode) {
            Some(bytes) => {
                if self.s.write_all(&bytes).is_err() {
                    return;
                }
                self.session(mode)
            }
            None if head.starts_with(STATUS_101) => self.session(mode),
            // A refusal: wait for the client to hang up.
            None => self.drain(),
        }
    }

    /// Header fields that never end the head.
    fn endless_header(&mut self) {
        let line = format!("X-Pad: {}\r\n", "a".repeat(1016));
        if self.s.write_all(STATUS_101.as_bytes()).is_err() {
            return;
        }
        while self.alive() {
            if self.s.write_all(line.as_bytes()).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// `head`, one byte per second.
    fn trickle(&mut self, head: &str) {
        for b in head.bytes() {
            if !self.alive() || self.s.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_secs(1));
        }
    }

    /// The violation a frame mode writes right after its 101.
    fn frames(mode: Mode) -> Option<Vec<u8>> {
        Some(match mode {
            Mode::MaskedFrame => vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2],
            Mode::ReservedBits => vec![0xC1, 0x02, b'h', b'i'],
            Mode::ReservedOpcode => vec![0x83, 0x00],
            Mode::FragmentedControl => vec![0x09, 0x00],
            Mode::LongControl => {
                let mut f = vec![0x89, 126, 0, 200];
                f.resize(4 + 200, b'p');
                f
            }
            Mode::BadUtf8 => vec![0x81, 0x02, 0xC3, 0x28],
            Mode::LoneContinuation => vec![0x80, 0x01, b'a'],
            Mode::CloseCode1005 => vec![0x88, 0x02, 0x03, 0xED],
            Mode::CloseCode999 => vec![0x88, 0x02, 0x03, 0xE7],
            Mode::TwoCloses => vec![0x88, 0x02, 0x03, 0xE8, 0x88, 0x02, 0x03, 0xE9],
            Mode::LengthTopBit => vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0],
            Mode::HugeLength => vec![0x82, 127, 0, 0, 0x01, 0, 0, 0, 0, 0],
            _ => return None,
        })
    }

    /// An open session: a reader answers (or ignores) the client's frames while this thread
    /// runs the mode's writes.
    fn session(self, mode: Mode) {
        if mode == Mode::NonReading {
            return self.hold();
        }
        let w = Arc::new(Mutex::new(self.s.try_clone().unwrap()));
        let closing = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicBool::new(false));
        let reader = {
            let (w, closing, subscribed) = (w.clone(), closing.clone(), subscribed.clone());
            let r = self.s.try_clone().unwrap();
            let (stop, stats, born) = (self.stop.clone(), self.stats.clone(), self.born);
            thread::spawn(move || {
                read_frames(r, mode, &w, &closing, &subscribed, &stop, &stats, born)
            })
        };
        let go = |c: &Self| c.alive() && !closing.load(Relaxed);
        let send = |frame: &[u8]| w.lock().unwrap().write_all(frame).is_ok();
        match mode {
            Mode::PingFlood => {
                let mut i = 0u32;
                'flood: while go(&self) {
                    for _ in 0..64 {
                        i += 1;
                        let b = i.to_be_bytes();
                        if !send(&[0x89, 0x04, b[0], b[1], b[2], b[3]]) {
                            break 'flood;
                        }
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }
            Mode::MessageFlood => {
                let mut frame = vec![0x82, 127];
                frame.extend_from_slice(&65536u64.to_be_bytes());
                frame.resize(frame.len() + 65536, 0x5A);
                'flood: while go(&self) {
                    for _ in 0..2 {
                        // Under the lock as one frame: the close reply never lands inside it.
                        let mut g = w.lock().unwrap();
                        if closing.load(Relaxed) || g.write_all(&frame).is_err() {
                            break 'flood;
                        }
                        self.stats.msgs_written.fetch_add(1, Relaxed);
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }
            Mode::HugeLength => {
                let zeros = vec![0u8; 65536];
                while go(&self) && send(&zeros) {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            Mode::FanoutIds(n) => {
                while go(&self) && !subscribed.load(Relaxed) {
                    thread::sleep(Duration::from_millis(1));
                }
                if subscribed.load(Relaxed) && send(&text_frame(br#"{"type":"subscribed"}"#)) {
                    let mut batch = Vec::with_capacity(1 << 16);
                    for id in 1..=n {
                        let ts = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap()
                            .as_micros();
                        let msg = format!(r#"{{"pub":{id},"seq":1,"ts":{ts}}}"#);
                        batch.extend_from_slice(&text_frame(msg.as_bytes()));
                        if batch.len() >= 60_000 || id == n {
                            let k = batch.len();
                            let mut g = w.lock().unwrap();
                            if closing.load(Relaxed) || g.write_all(&batch).is_err() {
                                break;
                            }
                            drop(g);
                            let sent = batch_msgs(&batch[..k]);
                            self.stats.msgs_written.fetch_add(sent, Relaxed);
                            batch.clear();
                        }
                    }
                }
            }
            _ => {}
        }
        let _ = reader.join();
    }
}

/// The number of frames in `batch` (unmasked, short or 16-bit lengths).
fn batch_msgs(mut batch: &[u8]) -> u64 {
    let mut n = 0;
    while batch.len() >= 2 {
        let (len, hdr) = match batch[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([batch[2], batch[3]])), 4),
            l => (usize::from(l), 2),
        };
        batch = &batch[hdr + len..];
        n += 1;
    }
    n
}

/// An unmasked text frame (payload below 64 KiB).
pub fn text_frame(p: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    if p.len() < 126 {
        f.push(p.len() as u8);
    } else {
        f.push(126);
        f.extend_from_slice(&(p.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(p);
    f
}

/// Reads the client's (masked) frames until EOF: counts pongs and closes, notes a subscribe,
/// and answers a close the way `mode` does (echoing its code, or never).
#[allow(clippy::too_many_arguments)] // one thread's whole context, passed once
fn read_frames(
    mut r: TcpStream,
    mode: Mode,
    w: &Mutex<TcpStream>,
    closing: &AtomicBool,
    subscribed: &AtomicBool,
    stop: &AtomicBool,
    stats: &Stats,
    born: Instant,
) {
    r.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let answers_close = !matches!(mode, Mode::Mute | Mode::HugeLength);
    let mut buf: Vec<u8> = Vec::new();
    let mut b = [0u8; 16384];
    while !stop.load(Relaxed) && born.elapsed() < LIFETIME {
        match r.read(&mut b) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        while let Some((op, payload, used)) = parse_client_frame(&buf) {
            buf.drain(..used);
            match op {
                0xA => {
                    stats.pongs.fetch_add(1, Relaxed);
                }
                0x8 => {
                    stats.closes.fetch_add(1, Relaxed);
                    if answers_close {
                        let mut g = w.lock().unwrap();
                        closing.store(true, Relaxed);
                        if mode == Mode::MaskedCloseReply {
                            let _ = g.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]);
                        } else if mode != Mode::TwoCloses {
                            let mut reply = vec![0x88, payload.len().min(2) as u8];
                            reply.extend_from_slice(&payload[..payload.len().min(2)]);
                            let _ = g.write_all(&reply);
                        }
                        // The server closes the TCP connection first (RFC 6455 §7.1.1).
                        let _ = g.shutdown(Shutdown::Write);
                    }
                }
                0x1 if payload.windows(9).any(|x| x == b"subscribe") => {
                    subscribed.store(true, Relaxed);
                }
                _ => {}
            }
        }
        if buf.len() > 1 << 20 {
            return;
        }
    }
}

/// One masked client frame at the start of `buf`: opcode, unmasked payload, bytes used.
fn parse_client_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let op = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        l => (usize::from(l), 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(at..at + 4)?.try_into().unwrap();
        at += 4;
        m
    } else {
        [0; 4]
    };
    let end = at.checked_add(len)?;
    let p = buf.get(at..end)?;
    let payload = p.iter().enumerate().map(|(i, x)| x ^ mask[i % 4]).collect();
    Some((op, payload, end))
}
