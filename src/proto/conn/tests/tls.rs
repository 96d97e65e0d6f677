//! wss:// connections on a fake clock against an in-memory rustls server: handshakes, ticket
//! accounting, resumption policy, handshake cycles and every TLS failure kind.

use super::*;
use crate::certs::{generate_test_ca, TestCa};
use crate::proto::tls::{Resume, TlsSettings};
use crate::server::{server_tls_config, ServerTlsOptions};
use rustls::pki_types::ServerName;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use std::io::Read;
use std::io::Write;
use std::sync::OnceLock;

fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| generate_test_ca().unwrap())
}

/// One server configuration (one ticket key, one session cache) for every test.
fn server_cfg() -> Arc<ServerConfig> {
    static CFG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let ca = ca();
        server_tls_config(&ServerTlsOptions::new(ca.chain.clone(), ca.key.clone_key())).unwrap()
    })
    .clone()
}

fn settings(version: u16, resume: Resume) -> TlsSettings {
    let ca_der = rustls::pki_types::CertificateDer::pem_slice_iter(ca().ca_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca_der).unwrap();
    let v = if version == 12 {
        &rustls::version::TLS12
    } else {
        &rustls::version::TLS13
    };
    TlsSettings {
        resume,
        ..TlsSettings::new(
            ServerName::try_from("localhost").unwrap(),
            Arc::new(roots),
            vec![v],
        )
    }
}

use rustls::pki_types::pem::PemObject;

fn tls_harness(s: &TlsSettings, mode: Mode) -> Harness {
    Harness {
        tls: Some(s.client().unwrap()),
        ..Harness::new(ConnConfig { mode, ..cfg() })
    }
}

/// Handshake-mode cycles, with or without the upgrade, closed with RST or gracefully.
fn cycles(upgrade: bool, rst: bool) -> Mode {
    Mode::Handshake { upgrade, rst }
}

/// A server that issues no TLS 1.3 tickets, even when asked.
fn ticketless_server() -> Arc<ServerConfig> {
    let ca = ca();
    let mut opts = ServerTlsOptions::new(ca.chain.clone(), ca.key.clone_key());
    opts.tickets_per_handshake = 0;
    server_tls_config(&opts).unwrap()
}

/// Moves bytes both ways until neither side has anything to say; returns the plaintext the
/// server received.
fn pump(h: &mut Harness, c: &mut Conn, s: &mut ServerConnection, now: Micros) -> Vec<u8> {
    let mut plain = Vec::new();
    for _ in 0..20 {
        let out = h.tx(c, now);
        let mut moved = !out.is_empty();
        let mut rd = &out[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            // A server-side error (bad client cert) leaves an alert to send; keep going.
            let _ = s.process_new_packets();
        }
        let _ = s.reader().read_to_end(&mut plain);
        let mut back = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut back).unwrap();
        }
        if !back.is_empty() && !c.is_done() {
            moved = true;
            c.handle_recv(&mut h.ctx(), now, &back);
        }
        if !moved || c.is_done() {
            break;
        }
    }
    plain
}

/// Connects `c` and completes whatever the server and the mode allow at `now`.
fn connect(h: &mut Harness, s: &mut ServerConnection, now: Micros) -> (Conn, Vec<u8>) {
    let mut c = Conn::new(&mut h.ctx(), now);
    c.handle_connected(&mut h.ctx(), now);
    assert_eq!(c.phase(), Phase::TlsHandshake);
    let plain = pump(h, &mut c, s, now + MS);
    (c, plain)
}

/// A full wss session: handshake, upgrade through TLS, on-open message, echo.
fn session(h: &mut Harness, now: Micros) -> Conn {
    let mut s = ServerConnection::new(server_cfg()).unwrap();
    let (mut c, req) = connect(h, &mut s, now);
    assert_eq!(
        c.phase(),
        Phase::Upgrading,
        "upgrade request sent with our Finished"
    );
    assert!(req.starts_with(b"GET /ws HTTP/1.1\r\n"));
    s.writer().write_all(&response_for(&req)).unwrap();
    let first = pump(h, &mut c, &mut s, now + 2 * MS);
    assert_eq!(c.phase(), Phase::Open);
    assert_eq!(
        client_frames(&first),
        vec![(OpCode::Text, b"{\"type\":\"subscribe\"}".to_vec())]
    );
    c
}

#[test]
fn wss_sessions_resume_with_tls13_tickets_and_tls12_sessions() {
    for version in [13, 12] {
        let mut h = tls_harness(&settings(version, Resume::On), Mode::Session);
        let first = session(&mut h, 0);
        let second = session(&mut h, 10 * MS);
        let k = &h.stats.counters;
        assert_eq!(
            (k.tls_handshakes_full, k.tls_handshakes_resumed),
            (1, 1),
            "TLS 1.{}",
            version - 10
        );
        assert_eq!((k.tls_resume_attempted, k.tls_resume_refused), (1, 0));
        assert_eq!(k.established, 2);
        // TLS 1.3: 4 tickets asked for (RFC 9149) and granted per handshake; TLS 1.2: none.
        assert_eq!(k.tls_tickets_received, if version == 13 { 8 } else { 0 });
        assert_eq!(h.stats.hist(Hist::TlsFull).len(), 1);
        assert_eq!(h.stats.hist(Hist::TlsResumed).len(), 1);
        let v = if version == 13 { 0x0304 } else { 0x0303 };
        assert_eq!(h.stats.tls_params[&crate::metrics::TlsParam::Version(v)], 2);
        drop((first, second));
    }
}

#[test]
fn resumption_off_never_offers_a_session() {
    let mut h = tls_harness(&settings(13, Resume::Off), Mode::Session);
    for i in 0..3 {
        session(&mut h, i * 10 * MS);
    }
    let k = &h.stats.counters;
    assert_eq!((k.tls_handshakes_full, k.tls_handshakes_resumed), (3, 0));
    assert_eq!((k.tls_resume_attempted, k.tls_tickets_received), (0, 0));
}

#[test]
fn handshake_cycle_waits_for_its_ticket_then_closes() {
    let rst = cycles(false, true);
    let mut h = tls_harness(&settings(13, Resume::On), rst);
    let mut s = ServerConnection::new(server_cfg()).unwrap();
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_connected(&mut h.ctx(), 0);
    // ClientHello → server flight.
    let hello = h.tx(&mut c, 0);
    let mut rd = &hello[..];
    s.read_tls(&mut rd).unwrap();
    s.process_new_packets().unwrap();
    let mut flight = Vec::new();
    while s.wants_write() {
        s.write_tls(&mut flight).unwrap();
    }
    c.handle_recv(&mut h.ctx(), MS, &flight);
    // Handshake complete on our side, but no ticket yet: the cycle is not over.
    assert_eq!(h.stats.counters.tls_handshakes_full, 1);
    assert_eq!(c.phase(), Phase::TlsHandshake);
    assert!(c.poll_timeout(&h.cfg).is_some_and(|t| t <= 21 * MS));
    assert_eq!(
        pump(&mut h, &mut c, &mut s, 2 * MS),
        b"",
        "no HTTP in handshake mode"
    );
    assert!(c.is_done());
    assert_eq!(c.outcome(), Some(Outcome::Completed));
    assert_eq!(h.stats.counters.handshake_cycles, 1);
    assert_eq!(h.stats.counters.tls_tickets_received, 4);
    // The next cycle resumes with one of them.
    let mut s2 = ServerConnection::new(server_cfg()).unwrap();
    let (c2, _) = connect(&mut h, &mut s2, 10 * MS);
    assert!(c2.is_done());
    assert_eq!(h.stats.counters.tls_handshakes_resumed, 1);
    assert_eq!(h.stats.counters.handshake_cycles, 2);
}

#[test]
fn handshake_cycle_without_a_ticket_gives_up_after_the_short_wait() {
    let rst = cycles(false, true);
    let mut h = tls_harness(&settings(13, Resume::On), rst);
    let mut s = ServerConnection::new(ticketless_server()).unwrap();
    let (mut c, _) = connect(&mut h, &mut s, 0);
    assert_eq!(c.phase(), Phase::TlsHandshake);
    let t = c.poll_timeout(&h.cfg).unwrap();
    assert_eq!(
        t,
        21 * MS,
        "20 ms (or 4× the handshake) after it completed at 1 ms"
    );
    c.handle_timer(&mut h.ctx(), t);
    assert!(c.is_done());
    assert_eq!(h.stats.counters.tls_ticket_waits_expired, 1);
    assert_eq!(h.stats.counters.handshake_cycles, 1);
    assert_eq!(h.stats.counters.connect_failed, 0);
    let server = ticketless_server();
    for i in 1..8 {
        let mut s = ServerConnection::new(server.clone()).unwrap();
        let (mut c, _) = connect(&mut h, &mut s, i * 100 * MS);
        let t = c.poll_timeout(&h.cfg).unwrap();
        c.handle_timer(&mut h.ctx(), t);
        assert!(c.is_done());
    }
    assert_eq!(h.stats.counters.tls_ticket_waits_expired, 8);
    // Eight waits in vain and not one ticket: the shard stops waiting.
    let mut s = ServerConnection::new(server).unwrap();
    let (c, _) = connect(&mut h, &mut s, 900 * MS);
    assert!(c.is_done(), "no wait");
    assert_eq!(h.stats.counters.tls_ticket_waits_expired, 8);
    assert_eq!(h.stats.counters.handshake_cycles, 9);
}

#[test]
fn graceful_handshake_cycle_sends_close_notify_and_waits_for_the_servers() {
    let fin = cycles(false, false);
    let mut h = tls_harness(&settings(12, Resume::On), fin);
    let mut s = ServerConnection::new(server_cfg()).unwrap();
    let (mut c, _) = connect(&mut h, &mut s, 0);
    assert_eq!(c.phase(), Phase::Closing);
    assert_eq!(h.stats.counters.handshake_cycles, 1);
    // pump delivered our close_notify; the server answers with its own.
    let st = s.process_new_packets().unwrap();
    assert!(st.peer_has_closed());
    s.send_close_notify();
    let mut back = Vec::new();
    while s.wants_write() {
        s.write_tls(&mut back).unwrap();
    }
    c.handle_recv(&mut h.ctx(), 2 * MS, &back);
    assert!(c.is_done());
    assert_eq!(c.outcome(), Some(Outcome::Completed));
    assert_eq!(h.stats.failure_total(), 0);
}

#[test]
fn upgrade_cycles_count_as_sessions_and_cycles() {
    let mode = cycles(true, true);
    let mut h = tls_harness(&settings(13, Resume::On), mode);
    let mut s = ServerConnection::new(server_cfg()).unwrap();
    let (mut c, req) = connect(&mut h, &mut s, 0);
    s.writer().write_all(&response_for(&req)).unwrap();
    pump(&mut h, &mut c, &mut s, 2 * MS);
    assert!(c.is_done());
    let k = &h.stats.counters;
    assert_eq!((k.established, k.handshake_cycles, k.closed_rst), (1, 1, 1));
}

#[test]
fn resume_fraction_forces_the_other_share_full() {
    let rst = cycles(false, true);
    let mut h = tls_harness(&settings(12, Resume::Fraction(0.5)), rst);
    let server = server_cfg();
    for i in 0..400 {
        let mut s = ServerConnection::new(server.clone()).unwrap();
        let (c, _) = connect(&mut h, &mut s, i * MS);
        assert!(c.is_done());
    }
    let k = &h.stats.counters;
    assert_eq!(k.handshake_cycles, 400);
    assert_eq!(k.tls_handshakes_full + k.tls_handshakes_resumed, 400);
    assert_eq!(
        k.tls_resume_attempted, k.tls_handshakes_resumed,
        "every offer accepted"
    );
    assert!((160..=240).contains(&k.tls_handshakes_resumed), "{k:?}");
}

fn failure_of(h: &Harness) -> Vec<String> {
    h.stats.failures.keys().map(|f| f.name()).collect()
}

#[test]
fn certificate_failures_are_counted_by_kind() {
    // Only the public roots: the test CA is unknown.
    let mut s = settings(13, Resume::On);
    let mut public = RootCertStore::empty();
    public.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    s.roots = Arc::new(public);
    let mut h = tls_harness(&s, Mode::Session);
    let mut srv = ServerConnection::new(server_cfg()).unwrap();
    let (c, _) = connect(&mut h, &mut srv, 0);
    assert!(c.is_done());
    assert_eq!(failure_of(&h), ["tls_cert_unknown_issuer"]);
    assert_eq!(h.stats.counters.connect_failed, 1);
    // A name the certificate is not for.
    let mut s = settings(13, Resume::On);
    s.server_name = ServerName::try_from("example.com").unwrap();
    let mut h = tls_harness(&s, Mode::Session);
    let mut srv = ServerConnection::new(server_cfg()).unwrap();
    connect(&mut h, &mut srv, 0);
    assert_eq!(failure_of(&h), ["tls_cert_name_mismatch"]);
    // --insecure accepts both.
    s.insecure = true;
    s.roots = Arc::new(RootCertStore::empty());
    let mut h = tls_harness(&s, Mode::Session);
    let mut srv = ServerConnection::new(server_cfg()).unwrap();
    let (c, _) = connect(&mut h, &mut srv, 0);
    assert_eq!(c.phase(), Phase::Upgrading);
}

/// A server that asks every client for a certificate issued by the test CA.
fn mutual_tls_server() -> Arc<ServerConfig> {
    let ca = ca();
    let mut opts = ServerTlsOptions::new(ca.chain.clone(), ca.key.clone_key());
    opts.client_ca = Some(ca.chain.clone());
    server_tls_config(&opts).unwrap()
}

#[test]
fn a_server_that_requires_a_client_certificate_is_named_as_such() {
    // TLS 1.2 refuses with handshake_failure (the hint used to be about --kx curves), TLS 1.3
    // with certificate_required, which arrives after our Finished (while upgrading).
    for version in [12, 13] {
        let mut h = tls_harness(&settings(version, Resume::On), Mode::Session);
        let mut srv = ServerConnection::new(mutual_tls_server()).unwrap();
        let (c, _) = connect(&mut h, &mut srv, 0);
        assert!(c.is_done(), "TLS 1.{}", version - 10);
        assert_eq!(
            failure_of(&h),
            ["tls_client_cert_required"],
            "TLS {version}"
        );
        assert_eq!(h.stats.counters.connect_failed, 1);
        let f = *h.stats.failures.keys().next().unwrap();
        assert!(f
            .describe()
            .starts_with("the server requires a client certificate (--cert/--key)"));
    }
    // A server that asks and then hangs up without an alert: the same cause.
    let mut h = tls_harness(&settings(12, Resume::On), Mode::Session);
    let mut srv = ServerConnection::new(mutual_tls_server()).unwrap();
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_connected(&mut h.ctx(), 0);
    let hello = h.tx(&mut c, 0);
    srv.read_tls(&mut &hello[..]).unwrap();
    srv.process_new_packets().unwrap();
    let mut flight = Vec::new();
    while srv.wants_write() {
        srv.write_tls(&mut flight).unwrap();
    }
    c.handle_recv(&mut h.ctx(), MS, &flight);
    assert_eq!(c.phase(), Phase::TlsHandshake);
    c.handle_eof(&mut h.ctx(), 2 * MS);
    assert_eq!(failure_of(&h), ["tls_client_cert_required"]);
    // A server that never asks: a close is still just a close.
    let mut h = tls_harness(&settings(12, Resume::On), Mode::Session);
    let mut srv = ServerConnection::new(server_cfg()).unwrap();
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_connected(&mut h.ctx(), 0);
    let hello = h.tx(&mut c, 0);
    srv.read_tls(&mut &hello[..]).unwrap();
    srv.process_new_packets().unwrap();
    let mut flight = Vec::new();
    while srv.wants_write() {
        srv.write_tls(&mut flight).unwrap();
    }
    c.handle_recv(&mut h.ctx(), MS, &flight);
    c.handle_eof(&mut h.ctx(), 2 * MS);
    assert_eq!(failure_of(&h), ["tls_closed_during_handshake"]);
}

#[test]
fn plain_http_garbage_eof_and_timeout_are_tls_failures() {
    let mut h = tls_harness(&settings(13, Resume::On), Mode::Session);
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_connected(&mut h.ctx(), 0);
    h.tx(&mut c, 0);
    c.handle_recv(
        &mut h.ctx(),
        MS,
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(c.is_done());
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_connected(&mut h.ctx(), 0);
    h.tx(&mut c, 0);
    c.handle_eof(&mut h.ctx(), MS);
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_connected(&mut h.ctx(), 0);
    h.tx(&mut c, 0);
    let t = c.poll_timeout(&h.cfg).unwrap();
    c.handle_timer(&mut h.ctx(), t);
    assert!(c.is_done());
    assert_eq!(
        failure_of(&h),
        [
            "tls_not_tls",
            "tls_handshake_timeout",
            "tls_closed_during_handshake"
        ]
    );
    assert_eq!(h.stats.counters.connect_failed, 3);
}

#[test]
fn rst_cycle_sends_our_last_flight_before_it_ends() {
    let rst = cycles(false, true);
    // TLS 1.3 without resumption (no ticket wait) and a TLS 1.2 resumption: in both, our
    // Finished is the last flight, and the server only completes once it has it.
    for (version, resume, warmups) in [(13, Resume::Off, 0), (12, Resume::On, 1)] {
        let mut h = tls_harness(&settings(version, resume), rst);
        for i in 0..warmups {
            let mut s = ServerConnection::new(server_cfg()).unwrap();
            connect(&mut h, &mut s, i * MS);
        }
        let mut s = ServerConnection::new(server_cfg()).unwrap();
        let mut c = Conn::new(&mut h.ctx(), 10 * MS);
        c.handle_connected(&mut h.ctx(), 10 * MS);
        let hello = h.tx(&mut c, 10 * MS);
        s.read_tls(&mut &hello[..]).unwrap();
        s.process_new_packets().unwrap();
        let mut flight = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut flight).unwrap();
        }
        c.handle_recv(&mut h.ctx(), 11 * MS, &flight);
        assert_eq!(h.stats.counters.handshake_cycles, 1 + warmups);
        assert!(
            !c.is_done(),
            "TLS 1.{}: Finished still to send",
            version - 10
        );
        assert!(c.wants_transmit(&h.cfg, 11 * MS));
        let fin = h.tx(&mut c, 11 * MS);
        assert!(c.is_done());
        s.read_tls(&mut &fin[..]).unwrap();
        s.process_new_packets().unwrap();
        assert!(
            !s.is_handshaking(),
            "the server completed the handshake we counted"
        );
    }
}

#[test]
fn bytes_after_the_servers_close_notify_are_ignored_not_spun_on() {
    let mut h = tls_harness(&settings(13, Resume::On), Mode::Session);
    let mut s = ServerConnection::new(server_cfg()).unwrap();
    let (mut c, req) = connect(&mut h, &mut s, 0);
    s.writer().write_all(&response_for(&req)).unwrap();
    pump(&mut h, &mut c, &mut s, 2 * MS);
    assert_eq!(c.phase(), Phase::Open);
    s.send_close_notify();
    let mut back = Vec::new();
    while s.wants_write() {
        s.write_tls(&mut back).unwrap();
    }
    back.extend_from_slice(b"junk after close_notify");
    c.handle_recv(&mut h.ctx(), 3 * MS, &back);
    // An orderly end of the stream without a close frame: 1006, session dropped.
    assert!(c.is_done());
    assert_eq!(h.stats.counters.sessions_dropped, 1);
    assert_eq!(h.stats.close_codes.get(&1006), Some(&1));
}

#[test]
fn a_reset_while_waiting_for_the_ticket_still_completes_the_cycle() {
    let rst = cycles(false, true);
    let mut h = tls_harness(&settings(13, Resume::On), rst);
    let mut s = ServerConnection::new(ticketless_server()).unwrap();
    let (mut c, _) = connect(&mut h, &mut s, 0);
    assert_eq!(c.phase(), Phase::TlsHandshake, "waiting for a ticket");
    c.handle_error(&mut h.ctx(), 2 * MS, Failure::Reset);
    assert!(c.is_done());
    assert_eq!(h.stats.counters.handshake_cycles, 1);
    assert_eq!(h.stats.counters.connect_failed, 0);
    assert_eq!(h.stats.failure_total(), 0);
}
