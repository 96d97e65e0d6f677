//! STOMP 1.2 over WebSocket: frames are `COMMAND\n`, `name:value\n` headers, an empty line,
//! the body and a NUL; a lone end-of-line between frames is a heart-beat. A WebSocket message
//! may carry several frames, or only heart-beats.
//!
//! The client connects (`CONNECT` with `accept-version:1.2` and `heart-beat:cx,cy`), the
//! broker answers `CONNECTED` with its own `heart-beat:sx,sy`; the client then sends every
//! `max(cx, sy)` ms and expects something from the broker every `max(sx, cy)` ms (0 on
//! either side: none). `SUBSCRIBE` (with an `id`) makes the broker send `MESSAGE` frames;
//! any frame may ask for a `RECEIPT`; `ERROR` ends the connection.

use std::io::Write;

/// Commands a broker sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The answer to CONNECT.
    Connected,
    /// A message of a subscription.
    Message,
    /// A receipt for a frame that asked for one.
    Receipt,
    /// An error; the broker closes the connection after it.
    Error,
}

/// One received frame: its command, its header block as received, its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The command.
    pub command: Command,
    headers: &'a [u8],
    /// The body (without the NUL).
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The value of the first header `name` (STOMP 1.2: repeated headers, the first wins),
    /// as received (escapes not decoded).
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        lines(self.headers).find_map(|l| {
            let colon = l.iter().position(|&c| c == b':')?;
            (&l[..colon] == name).then(|| &l[colon + 1..])
        })
    }
}

fn lines(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    b.split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

/// The bytes are not STOMP frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A frame was cut short (no blank line or no NUL).
    Truncated,
    /// A command a broker does not send.
    Command,
    /// A header line without a colon, or a bad `content-length`.
    Header,
}

/// What is in one WebSocket message: frames and heart-beats, in order.
pub struct Frames<'a> {
    b: &'a [u8],
    i: usize,
}

/// One item of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// An end-of-line outside a frame.
    HeartBeat,
    /// A frame.
    Frame(Frame<'a>),
}

/// The frames and heart-beats of the message `b`.
pub fn frames(b: &[u8]) -> Frames<'_> {
    Frames { b, i: 0 }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Item<'a>, Malformed>;
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.b;
        let rest = b.get(self.i..).filter(|r| !r.is_empty())?;
        if rest[0] == b'\n' {
            self.i += 1;
            return Some(Ok(Item::HeartBeat));
        }
        if rest.starts_with(b"\r\n") {
            self.i += 2;
            return Some(Ok(Item::HeartBeat));
        }
        let r = frame(rest);
        match r {
            Ok((f, used)) => {
                self.i += used;
                Some(Ok(Item::Frame(f)))
            }
            Err(e) => {
                self.i = b.len();
                Some(Err(e))
            }
        }
    }
}

/// One frame at the start of `b`, and the bytes it takes (its NUL included).
fn frame(b: &[u8]) -> Result<(Frame<'_>, usize), Malformed> {
    let eol = b
        .iter()
        .position(|&c| c == b'\n')
        .ok_or(Malformed::Truncated)?;
    let cmd = b[..eol].strip_suffix(b"\r").unwrap_or(&b[..eol]);
    let command = match cmd {
        b"CONNECTED" => Command::Connected,
        b"MESSAGE" => Command::Message,
        b"RECEIPT" => Command::Receipt,
        b"ERROR" => Command::Error,
        _ => return Err(Malformed::Command),
    };
    // Headers end at the first empty line.
    let hstart = eol + 1;
    let mut i = hstart;
    let hend = loop {
        let rest = b.get(i..).ok_or(Malformed::Truncated)?;
        if rest.starts_with(b"\n") {
            break (i, i + 1);
        }
        if rest.starts_with(b"\r\n") {
            break (i, i + 2);
        }
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or(Malformed::Truncated)?;
        if !rest[..n].contains(&b':') {
            return Err(Malformed::Header);
        }
        i += n + 1;
    };
    let headers = &b[hstart..hend.0];
    let f = Frame {
        command,
        headers,
        body: &[],
    };
    let bstart = hend.1;
    let body_end = match f.header(b"content-length") {
        Some(v) => {
            let n: usize = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or(Malformed::Header)?;
            let end = bstart.checked_add(n).ok_or(Malformed::Header)?;
            if b.get(end) != Some(&0) {
                return Err(Malformed::Truncated);
            }
            end
        }
        None => {
            bstart
                + b[bstart..]
                    .iter()
                    .position(|&c| c == 0)
                    .ok_or(Malformed::Truncated)?
        }
    };
    Ok((
        Frame {
            body: &b[bstart..body_end],
            ..f
        },
        body_end + 1,
    ))
}

/// The `heart-beat` header's two numbers (ms).
pub fn heart_beat(v: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (a, b) = s.trim().split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// How often each side beats once `CONNECTED` answered: `(we send every, we expect every)`,
/// ms, 0 for never (STOMP 1.2 §Heart-beating).
pub fn negotiate(ours: (u64, u64), theirs: (u64, u64)) -> (u64, u64) {
    let (cx, cy) = ours;
    let (sx, sy) = theirs;
    let send = if cx == 0 || sy == 0 { 0 } else { cx.max(sy) };
    let expect = if sx == 0 || cy == 0 { 0 } else { sx.max(cy) };
    (send, expect)
}

/// The settings of the frames we send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// CONNECT's `host` (the virtual host; RabbitMQ's `/`).
    pub host: String,
    /// CONNECT's `login` and `passcode`, if given.
    pub login: Option<(String, String)>,
    /// CONNECT's `heart-beat`: we can send every .0 ms, we want the broker's every .1 ms.
    pub heart_beat: (u64, u64),
}

/// Appends the CONNECT frame.
pub fn connect(out: &mut Vec<u8>, c: &Client) {
    // CONNECT's headers are not escaped (STOMP 1.2 §Value Encoding).
    let _ = write!(out, "CONNECT\naccept-version:1.2\nhost:{}\n", c.host);
    if let Some((l, p)) = &c.login {
        let _ = write!(out, "login:{l}\npasscode:{p}\n");
    }
    let _ = write!(
        out,
        "heart-beat:{},{}\n\n\0",
        c.heart_beat.0, c.heart_beat.1
    );
}

/// Appends a SUBSCRIBE to `destination` with subscription `id`, asking for a receipt
/// `receipt` if given.
pub fn subscribe(out: &mut Vec<u8>, id: u64, destination: &str, receipt: Option<&str>) {
    let _ = write!(out, "SUBSCRIBE\nid:{id}\ndestination:");
    escaped(out, destination);
    out.extend_from_slice(b"\nack:auto\n");
    if let Some(r) = receipt {
        let _ = writeln!(out, "receipt:{r}");
    }
    out.extend_from_slice(b"\n\0");
}

/// Appends a SEND of `body` to `destination`, asking for receipt `receipt` if given.
pub fn send(out: &mut Vec<u8>, destination: &str, receipt: Option<u64>, body: &[u8]) {
    out.extend_from_slice(b"SEND\ndestination:");
    escaped(out, destination);
    let json = matches!(body.first(), Some(b'{' | b'['));
    if json {
        out.extend_from_slice(b"\ncontent-type:application/json");
    }
    if let Some(r) = receipt {
        let _ = write!(out, "\nreceipt:{r}");
    }
    let _ = write!(out, "\ncontent-length:{}\n\n", body.len());
    out.extend_from_slice(body);
    out.push(0);
}

/// Appends a DISCONNECT asking for receipt `receipt`.
pub fn disconnect(out: &mut Vec<u8>, receipt: &str) {
    let _ = write!(out, "DISCONNECT\nreceipt:{receipt}\n\n\0");
}

/// A header value, escaped (STOMP 1.2: `\\`, `\n`, `\r`, `\c` for `:`).
fn escaped(out: &mut Vec<u8>, v: &str) {
    for &c in v.as_bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b':' => out.extend_from_slice(b"\\c"),
            c => out.push(c),
        }
    }
}

/// A destination as given: not empty, no NUL or end-of-line.
pub fn destination(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains(['\0', '\n', '\r']) {
        return Err(format!(
            "`{}` is not a destination (e.g. /topic/prices)",
            s.escape_debug()
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(b: &[u8]) -> Vec<Result<Item<'_>, Malformed>> {
        frames(b).collect()
    }

    #[test]
    fn broker_frames() {
        let connected = b"CONNECTED\nserver:RabbitMQ/3.12.1\nsession:session-x\nheart-beat:5000,5000\nversion:1.2\n\n\0";
        let items = all(connected);
        let Ok(Item::Frame(f)) = items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(f.command, Command::Connected);
        assert_eq!(
            f.header(b"heart-beat").and_then(heart_beat),
            Some((5000, 5000))
        );
        assert_eq!(f.header(b"version"), Some(&b"1.2"[..]));
        let msg = b"MESSAGE\r\nsubscription:0\r\ndestination:/topic/bench\r\nmessage-id:T_0@@session-x@@1\r\ncontent-length:7\r\n\r\n{\"a\":1}\0\n\nRECEIPT\nreceipt-id:9\n\n\0";
        let items = all(msg);
        assert_eq!(items.len(), 4, "{items:?}");
        let Ok(Item::Frame(m)) = items[0] else {
            panic!()
        };
        assert_eq!((m.command, m.body), (Command::Message, &b"{\"a\":1}"[..]));
        assert_eq!(m.header(b"subscription"), Some(&b"0"[..]));
        assert_eq!(items[1], Ok(Item::HeartBeat));
        assert_eq!(items[2], Ok(Item::HeartBeat));
        let Ok(Item::Frame(r)) = items[3] else {
            panic!()
        };
        assert_eq!(r.header(b"receipt-id"), Some(&b"9"[..]));
        // A body with NULs, delimited by content-length.
        let bin = b"MESSAGE\ncontent-length:3\n\na\0b\0";
        let Some(Ok(Item::Frame(f))) = frames(bin).next() else {
            panic!()
        };
        assert_eq!(f.body, b"a\0b");
        assert_eq!(all(b"\n"), vec![Ok(Item::HeartBeat)]);
        assert_eq!(all(b"\r\n"), vec![Ok(Item::HeartBeat)]);
    }

    #[test]
    fn malformed_frames() {
        assert_eq!(all(b"SEND\n\n\0")[0], Err(Malformed::Command));
        assert_eq!(all(b"MESSAGE\nno colon\n\n\0")[0], Err(Malformed::Header));
        assert_eq!(
            all(b"MESSAGE\ncontent-length:x\n\n\0")[0],
            Err(Malformed::Header)
        );
        assert_eq!(
            all(b"MESSAGE\ncontent-length:99999999999999999999999\n\n\0")[0],
            Err(Malformed::Header)
        );
        assert_eq!(
            all(b"MESSAGE\ncontent-length:5\n\nab\0")[0],
            Err(Malformed::Truncated)
        );
        assert_eq!(all(b"MESSAGE\n\nbody")[0], Err(Malformed::Truncated));
    }

    /// Every prefix of a valid message parses or fails cleanly; the whole one gives every item.
    #[test]
    fn every_prefix() {
        let m = b"MESSAGE\nsubscription:0\ncontent-length:2\n\nhi\0\nERROR\nmessage:bad\n\noops\0";
        for i in 0..m.len() {
            for item in frames(&m[..i]) {
                let _ = item;
            }
        }
        let items = all(m);
        assert_eq!(items.len(), 3);
        let Ok(Item::Frame(e)) = items[2] else {
            panic!()
        };
        assert_eq!(
            (e.command, e.header(b"message"), e.body),
            (Command::Error, Some(&b"bad"[..]), &b"oops"[..])
        );
    }

    #[test]
    fn heart_beats_negotiated() {
        assert_eq!(negotiate((5000, 10000), (1000, 7000)), (7000, 10000));
        assert_eq!(negotiate((0, 10000), (1000, 7000)), (0, 10000));
        assert_eq!(negotiate((5000, 0), (1000, 0)), (0, 0));
        assert_eq!(heart_beat(b"0,0"), Some((0, 0)));
        assert_eq!(heart_beat(b"x"), None);
    }

    #[test]
    fn client_frames() {
        let mut o = Vec::new();
        let c = Client {
            host: "/".into(),
            login: Some(("guest".into(), "guest".into())),
            heart_beat: (10000, 10000),
        };
        connect(&mut o, &c);
        assert_eq!(o, b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:10000,10000\n\n\0");
        o.clear();
        subscribe(&mut o, 0, "/topic/a:b", Some("sub-0"));
        assert_eq!(
            o,
            b"SUBSCRIBE\nid:0\ndestination:/topic/a\\cb\nack:auto\nreceipt:sub-0\n\n\0"
        );
        o.clear();
        send(&mut o, "/topic/x", Some(4), b"{}");
        assert_eq!(o, b"SEND\ndestination:/topic/x\ncontent-type:application/json\nreceipt:4\ncontent-length:2\n\n{}\0");
        o.clear();
        send(&mut o, "/queue/q", None, b"hi");
        assert_eq!(o, b"SEND\ndestination:/queue/q\ncontent-length:2\n\nhi\0");
        assert!(destination("").is_err());
        assert!(destination("/topic/a\nb").is_err());
    }
}
