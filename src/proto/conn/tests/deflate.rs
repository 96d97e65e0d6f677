//! permessage-deflate on the connection: offered in the upgrade, the server's answer checked,
//! our messages compressed (RSV1), the server's inflated as they stream (split at every
//! byte), bounded, and echo matching on the inflated bytes.

use super::*;
use crate::proto::ws::deflate::{self, Offer};

fn cfg_deflate(offer: &str) -> ConnConfig {
    let mut c = cfg();
    c.template = RequestTemplate::new("127.0.0.1:9", "/ws", &[], &[])
        .with_deflate(Offer::parse(offer).unwrap());
    c.on_open.clear();
    c
}

/// The 101 for `request`, answering its offer with `ext`.
fn response_with(request: &[u8], ext: &str) -> Vec<u8> {
    let mut r = response_for(request);
    r.truncate(r.len() - 2);
    r.extend_from_slice(format!("Sec-WebSocket-Extensions: {ext}\r\n\r\n").as_bytes());
    r
}

fn opened(h: &mut Harness, ext: &str) -> Conn {
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_connected(&mut h.ctx(), MS);
    let req = h.tx(&mut c, MS);
    let text = String::from_utf8_lossy(&req).into_owned();
    assert!(
        text.contains(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ),
        "{text}"
    );
    c.handle_recv(&mut h.ctx(), 2 * MS, &response_with(&req, ext));
    c
}

/// A server frame with FIN and RSV1: a compressed text message (`reset`: the server keeps
/// no context between messages).
fn compressed_frame(z: &mut flate2::Compress, payload: &[u8], reset: bool) -> Vec<u8> {
    let mut body = Vec::new();
    deflate::deflate_message(z, payload, reset, &mut body);
    server_frame(0xC1, &body)
}

#[test]
fn messages_go_compressed_and_echoes_inflate_split_anywhere() {
    for reset in [true, false] {
        session(reset);
    }
}

fn session(server_resets: bool) {
    let mut h = Harness::new(cfg_deflate("deflate"));
    let answer = if server_resets {
        "permessage-deflate; server_no_context_takeover"
    } else {
        "permessage-deflate"
    };
    let mut c = opened(&mut h, answer);
    assert_eq!(c.phase(), Phase::Open);
    let agreed = Offer::default().accept(b"permessage-deflate").unwrap();
    let mut server = deflate::compressor(&agreed);
    let mut client_side = deflate::inflater();
    let mut echoes = 0;
    while echoes < 3 {
        let now = c.poll_timeout(&h.cfg).unwrap();
        c.handle_timer(&mut h.ctx(), now);
        let wire = h.tx(&mut c, now);
        if wire.is_empty() {
            continue;
        }
        // FIN + RSV1 + text, masked; it inflates (with our context kept) to our message.
        assert_eq!(wire[0], 0xC1);
        let (op, body) = client_frames(&wire).remove(0);
        assert_eq!(op, OpCode::Text);
        let mut got = Vec::new();
        deflate::inflate_part(
            &mut client_side,
            &body,
            true,
            &mut 1024,
            &mut |p: &[u8]| {
                got.extend_from_slice(p);
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert_eq!(got, b"hello");
        // The echo comes back compressed, one byte per read.
        let echo = compressed_frame(&mut server, b"hello", server_resets);
        for b in &echo {
            c.handle_recv(&mut h.ctx(), now + 3 * MS, std::slice::from_ref(b));
        }
        echoes += 1;
    }
    let k = &h.stats.counters;
    assert_eq!(
        (k.msgs_sent, k.msgs_received, k.deflate_msgs_received),
        (3, 3, 3)
    );
    assert_eq!(k.deflate_payload_received, 15);
    assert_eq!(k.deflate_payload_sent, 15);
    assert!(k.deflate_wire_sent > 0 && k.deflate_wire_received > 0);
    assert_eq!(h.stats.hist(Hist::WsMsgRtt).len(), 3);
    assert_eq!(h.stats.failure_total(), 0);
}

#[test]
fn a_bad_answer_or_an_oversized_message_fails_with_its_cause() {
    for ext in [
        "permessage-deflate; server_max_window_bits=20",
        "permessage-deflate; mystery",
        "permessage-deflate; client_no_context_takeover=1",
    ] {
        let mut h = Harness::new(cfg_deflate("deflate"));
        let c = opened(&mut h, ext);
        assert!(c.is_done(), "{ext}");
        assert_eq!(
            h.stats.failures.keys().next(),
            Some(&Failure::Upgrade(UpgradeFailure::BadDeflate)),
            "{ext}"
        );
    }
    // Inflating beyond --max-message-size fails the connection, whatever it would allocate.
    let mut cfg = cfg_deflate("deflate");
    cfg.max_message_size = 64;
    let mut h = Harness::new(cfg);
    let mut c = opened(&mut h, "permessage-deflate");
    let agreed = Offer::default().accept(b"permessage-deflate").unwrap();
    let mut server = deflate::compressor(&agreed);
    let mut body = Vec::new();
    deflate::deflate_message(&mut server, &[b'a'; 100_000], false, &mut body);
    let mut frame = vec![0xC1, 126];
    frame.extend_from_slice(&(body.len() as u16).to_be_bytes());
    frame.extend_from_slice(&body);
    c.handle_recv(&mut h.ctx(), 3 * MS, &frame);
    assert!(c.is_done());
    assert_eq!(
        h.stats.failures.keys().next(),
        Some(&Failure::Protocol(Violation::MessageTooBig))
    );
    // RSV1 on a control frame is a violation even with deflate agreed.
    let mut h = Harness::new(cfg_deflate("deflate"));
    let mut c = opened(&mut h, "permessage-deflate");
    c.handle_recv(&mut h.ctx(), 3 * MS, &server_frame(0xC9, b"x"));
    assert_eq!(
        h.stats.failures.keys().next(),
        Some(&Failure::Protocol(Violation::ReservedBits))
    );
    // Garbage that does not inflate.
    let mut h = Harness::new(cfg_deflate("deflate"));
    let mut c = opened(&mut h, "permessage-deflate");
    c.handle_recv(&mut h.ctx(), 3 * MS, &server_frame(0xC1, &[0xff; 20]));
    assert_eq!(
        h.stats.failures.keys().next(),
        Some(&Failure::Protocol(Violation::BadDeflate))
    );
}
