//! wss:// whole runs: the real binary against the in-process gateway serving TLS, with exact
//! accounting of handshakes (client and gateway agree), resumption shares, mutual TLS and every
//! bad TLS input.

mod common;

use common::*;
use serde_json::Value;
use sockstorm::certs::{generate_client_identity, generate_test_ca};
use sockstorm::server::Gateway;

fn wss(gw: &Gateway) -> String {
    format!("wss://{}/ws", gw.local_addr())
}

fn tls(v: &Value, key: &str) -> u64 {
    v["tls"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("tls.{key} missing"))
}

fn failures(v: &Value) -> Vec<(String, u64)> {
    v["failures"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

#[test]
fn two_thousand_wss_echo_connections_every_message_matched() {
    let _g = lock();
    let ca = generate_test_ca().unwrap();
    let (gw, ca_pem) = tls_gateway(&ca, "echo2000", |_| {});
    let out = json_path("wss-echo");
    let o = sockstorm(&[
        "run",
        &wss(&gw),
        "-c",
        "2000",
        "--connect-rate",
        "2000",
        "-d",
        "4s",
        "--cacert",
        ca_pem.to_str().unwrap(),
        "--message",
        "hello over tls",
        "--message-rate",
        "2",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = read_json(&out);
    assert_eq!(counter(&v, "attempts"), 2000);
    assert_eq!(counter(&v, "established"), 2000);
    assert_eq!(counter(&v, "closed_clean"), 2000);
    let sent = counter(&v, "msgs_sent");
    assert!(sent >= 2000 * 4, "{sent}");
    assert_eq!(counter(&v, "msgs_received"), sent);
    assert_eq!(counter(&v, "msgs_unanswered"), 0);
    assert_eq!(failures(&v), vec![]);
    // The gateway saw exactly our handshakes, of the same kinds.
    let s = gw.stats();
    gw.shutdown();
    assert_eq!(tls(&v, "full") + tls(&v, "resumed"), 2000);
    assert_eq!(s.tls_handshakes_full, tls(&v, "full"));
    assert_eq!(s.tls_handshakes_resumed, tls(&v, "resumed"));
    assert_eq!(s.msgs_in, sent);
    assert_eq!(v["tls"]["negotiated"]["versions"]["TLSv1.3"], 2000);
    assert_eq!(v["tls"]["negotiated"]["groups"]["x25519"], 2000);
    assert_eq!(v["tls"]["verify_certificates"], true);
}

/// A handshake-mode run against a fresh gateway; returns the JSON and the gateway's counts.
fn handshakes(extra: &[&str]) -> (Value, sockstorm::server::GatewayStats) {
    let ca = generate_test_ca().unwrap();
    let (gw, ca_pem) = tls_gateway(&ca, "hs", |_| {});
    let out = json_path("hs");
    let mut args = vec![
        "run",
        "--mode",
        "handshake",
        "--concurrency",
        "16",
        "-d",
        "2s",
        "--cacert",
        ca_pem.to_str().unwrap(),
        "-q",
        "--json",
        out.to_str().unwrap(),
    ];
    let url = wss(&gw);
    args.insert(1, &url);
    args.extend_from_slice(extra);
    let o = sockstorm(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let s = gw.stats();
    gw.shutdown();
    (read_json(&out), s)
}

#[test]
fn resume_on_resumes_nearly_every_handshake_and_the_gateway_agrees() {
    let _g = lock();
    for version in ["1.3", "1.2"] {
        let (v, s) = handshakes(&["--tls-version", version, "--resume", "on"]);
        let (full, resumed) = (tls(&v, "full"), tls(&v, "resumed"));
        let cycles = counter(&v, "handshake_cycles");
        assert!(cycles > 500, "TLS {version}: only {cycles} cycles");
        assert_eq!(failures(&v), vec![], "TLS {version}");
        // Only the first burst (one per slot in flight) can be full.
        assert!(full <= 16, "TLS {version}: {full} full");
        assert!(resumed * 100 >= (full + resumed) * 95, "TLS {version}");
        // Every offer accepted; offers of cycles cut short by the stop never complete.
        assert_eq!(tls(&v, "resume_refused"), 0);
        assert!((0..=16).contains(&(tls(&v, "resume_attempted") - resumed)));
        // Confirmed by the server side: its own handshake kinds match ours exactly.
        assert_eq!(
            (s.tls_handshakes_full, s.tls_handshakes_resumed),
            (full, resumed),
            "TLS {version}"
        );
        let version_name = format!("TLSv{version}");
        assert_eq!(
            v["tls"]["negotiated"]["versions"][&version_name].as_u64(),
            Some(full + resumed)
        );
        assert!(v["handshake_mode"]["per_client_cpu_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn full_handshake_cycles_are_completed_on_the_server_too() {
    let _g = lock();
    let (v, s) = handshakes(&["--tls-version", "1.3", "--resume", "off"]);
    let full = tls(&v, "full");
    assert!(full > 500, "{full}");
    assert_eq!((tls(&v, "resumed"), tls(&v, "resume_attempted")), (0, 0));
    assert_eq!(failures(&v), vec![]);
    // Our Finished reached the gateway before each RST: it completed every handshake we did.
    // Only handshakes cut short by the stop (at most one per slot) failed on its side.
    assert_eq!(s.tls_handshakes_full, full);
    assert!(s.tls_failures <= counter(&v, "abandoned").min(16), "{s:?}");
}

#[test]
fn resume_fraction_sets_the_resumed_share() {
    let _g = lock();
    let (v, s) = handshakes(&["--resume", "0.5"]);
    let (full, resumed) = (tls(&v, "full"), tls(&v, "resumed"));
    let share = resumed as f64 / (full + resumed) as f64;
    assert!((0.45..=0.55).contains(&share), "resumed share {share}");
    assert_eq!(s.tls_handshakes_resumed, resumed);
    assert_eq!(tls(&v, "resume_refused"), 0);
}

#[test]
fn mutual_tls_accepts_the_right_client_cert_and_counts_refusals() {
    let _g = lock();
    let ca = generate_test_ca().unwrap();
    let ca_pem = write_file("mtls-ca", &ca.ca_pem);
    let client_ca = sockstorm::certs::load_certs("--client-ca", &ca_pem).unwrap();
    let (gw, _) = tls_gateway(&ca, "mtls", |o| o.client_ca = Some(client_ca));
    let (cert, key) = generate_client_identity(&ca).unwrap();
    let (cert, key) = (write_file("mtls-cert", &cert), write_file("mtls-key", &key));
    let out = json_path("mtls");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            &wss(&gw),
            "-c",
            "50",
            "-d",
            "2s",
            "--no-reconnect",
            "--cacert",
            ca_pem.to_str().unwrap(),
            "-q",
            "--json",
            out.to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        sockstorm(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let o = run(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), 50);
    assert_eq!(v["tls"]["client_certificate"], true);
    // Without a certificate: the server asks for one and refuses each handshake with an
    // alert (TLS 1.3: certificate_required; TLS 1.2: handshake_failure); either way the cause
    // says that a client certificate is what it wants.
    for version in ["1.3", "1.2"] {
        let o = run(&["--tls-version", version]);
        assert_eq!(o.status.code(), Some(3), "failures → exit 3");
        let v = read_json(&out);
        assert_eq!(counter(&v, "established"), 0);
        assert_eq!(
            failures(&v),
            vec![("tls_client_cert_required".into(), 50)],
            "TLS {version}"
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains("the server requires a client certificate (--cert/--key)"),
            "TLS {version}: {stdout}"
        );
        assert!(!stdout.contains("--kx"), "TLS {version}: {stdout}");
    }
    let s = gw.stats();
    gw.shutdown();
    assert_eq!(s.tls_failures, 100);
}

/// Regression: a TLS 1.2 server that requires a client certificate refused our handshake
/// with handshake_failure, and the hint was about `--kx` curves. Against `openssl s_server
/// -Verify 1` (the reference peer), TLS 1.3 and 1.2: the cause is `tls_client_cert_required`
/// and the summary names --cert/--key. Skipped (and says so) without the `openssl` command.
#[test]
fn openssl_requiring_a_client_certificate_is_named_as_such() {
    let _g = lock();
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `openssl` command");
        return;
    }
    let (cert, key) = self_signed_ca_cert("verify1");
    for version in ["1_3", "1_2"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = std::process::Command::new("openssl")
            .args(["s_server", "-accept", &port.to_string(), "-naccept", "4"])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .args(["-Verify", "1", &format!("-tls{version}"), "-quiet"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let up = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(up.elapsed() < std::time::Duration::from_secs(5), "s_server");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = json_path(&format!("verify1-{version}"));
        // One connection at a time: s_server serves them in turn (the probe above took one
        // of its four accepts).
        let o = sockstorm(&[
            "run",
            &format!("wss://127.0.0.1:{port}/"),
            "-c",
            "1",
            "-d",
            "1s",
            "--no-reconnect",
            "--cacert",
            cert.to_str().unwrap(),
            "--json",
            out.to_str().unwrap(),
        ]);
        let _ = server.kill();
        let _ = server.wait();
        assert_eq!(o.status.code(), Some(3), "TLS {version}");
        let v = read_json(&out);
        assert_eq!(
            failures(&v),
            vec![("tls_client_cert_required".into(), 1)],
            "TLS {version}"
        );
        assert!(
            v["failure_descriptions"]["tls_client_cert_required"]
                .as_str()
                .unwrap()
                .starts_with("the server requires a client certificate (--cert/--key)"),
            "{}",
            v["failure_descriptions"]
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains("the server requires a client certificate (--cert/--key)"),
            "TLS {version}: {stdout}"
        );
    }
}

#[test]
fn unknown_issuer_without_cacert_fails_every_connection() {
    let _g = lock();
    let ca = generate_test_ca().unwrap();
    let (gw, _) = tls_gateway(&ca, "unknown", |_| {});
    let out = json_path("unknown-issuer");
    let o = sockstorm(&[
        "run",
        &wss(&gw),
        "-c",
        "100",
        "-d",
        "1s",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let v = read_json(&out);
    assert_eq!(counter(&v, "attempts"), 100);
    assert_eq!(failures(&v), vec![("tls_cert_unknown_issuer".into(), 100)]);
    // --insecure: accepted, and said so.
    let o = sockstorm(&[
        "run",
        &wss(&gw),
        "-c",
        "100",
        "-d",
        "1s",
        "--no-reconnect",
        "--insecure",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("certificate verification OFF (--insecure)")
    );
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), 100);
    assert_eq!(v["tls"]["verify_certificates"], false);
    gw.shutdown();
}

/// A plain HTTP server that answers anything with 400, `n` times.
fn http_400_server(n: usize) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (addr, h)
}

#[test]
fn plain_http_and_plain_ws_ports_on_a_wss_url_are_tls_failures() {
    let _g = lock();
    let out = json_path("not-tls");
    let (addr, h) = http_400_server(20);
    let url = format!("wss://{addr}/");
    let o = sockstorm(&[
        "run",
        &url,
        "-c",
        "20",
        "-d",
        "1s",
        "--no-reconnect",
        "--insecure",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    h.join().unwrap();
    let v = read_json(&out);
    assert_eq!(counter(&v, "connect_failed"), 20);
    assert_eq!(failures(&v), vec![("tls_not_tls".into(), 20)]);
    // The built-in gateway on ws:// closes on a ClientHello without answering.
    let gw = gateway(None);
    let o = sockstorm(&[
        "run",
        &wss(&gw),
        "-c",
        "20",
        "-d",
        "1s",
        "--no-reconnect",
        "--insecure",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let v = read_json(&out);
    assert_eq!(
        failures(&v),
        vec![("tls_closed_during_handshake".into(), 20)]
    );
    gw.shutdown();
}

#[test]
fn bad_tls_input_is_refused_before_any_connection() {
    let ca = generate_test_ca().unwrap();
    let ca_pem = write_file("bad-ca", &ca.ca_pem);
    let (cert, key) = generate_client_identity(&ca).unwrap();
    let (other_cert, _) = generate_client_identity(&ca).unwrap();
    let cert = write_file("bad-cert", &cert);
    let other = write_file("bad-other", &other_cert);
    let key = write_file("bad-key", &key);
    let empty = write_file("bad-empty", "not a pem file\n");
    let url = "wss://127.0.0.1:9/";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--cacert", "/nonexistent/ca.pem"],
            "--cacert: cannot read `/nonexistent/ca.pem`",
        ),
        (
            vec!["--cacert", empty.to_str().unwrap()],
            "holds no CERTIFICATE block",
        ),
        (
            vec!["--cert", cert.to_str().unwrap()],
            "--cert: needs --key",
        ),
        (
            vec![
                "--cert",
                other.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
            "--key: the key does not match the certificate in --cert",
        ),
        (
            vec!["--ciphers", "TLS_FOO"],
            "--ciphers: unknown cipher suite `TLS_FOO`",
        ),
        (
            vec![
                "--tls-version",
                "1.3",
                "--ciphers",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            ],
            "is a TLS 1.2 suite but --tls-version does not enable that version",
        ),
        (vec!["--kx", "x448"], "--kx: unknown group `x448`"),
        (vec!["--resume", "2"], "not off, on or a fraction"),
        (
            vec!["--sni", "bad name!"],
            "--sni: `bad name!` is not a valid DNS name",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["run", url, "-d", "1s", "-q"];
        args.extend(extra.iter().copied());
        let o = sockstorm(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    // TLS flags on ws:// are a mistake too.
    let o = sockstorm(&[
        "run",
        "ws://127.0.0.1:9/",
        "--cacert",
        ca_pem.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--cacert: only applies to wss:// URLs"));
}

#[test]
fn demo_over_wss_and_keylog_file() {
    let _g = lock();
    let out = json_path("demo-tls");
    let o = sockstorm(&[
        "demo",
        "--tls",
        "-c",
        "300",
        "-d",
        "3s",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), 300);
    let echo = &v["scenarios"][0]["counters"];
    assert_eq!(echo["msgs_received"], echo["msgs_sent"]);
    assert_eq!(v["fanout"]["lost"], 0);
    assert_eq!(tls(&v, "full") + tls(&v, "resumed"), 300);
    // SSLKEYLOGFILE: one TLS 1.3 client traffic secret line per handshake, and the JSON says so.
    let ca = generate_test_ca().unwrap();
    let (gw, ca_pem) = tls_gateway(&ca, "keylog", |_| {});
    let keylog = json_path("keylog").with_extension("txt");
    let _ = std::fs::remove_file(&keylog);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sockstorm"))
        .args([
            "run",
            &wss(&gw),
            "-c",
            "10",
            "-d",
            "1s",
            "--cacert",
            ca_pem.to_str().unwrap(),
            "-q",
            "--json",
            out.to_str().unwrap(),
        ])
        .env("SSLKEYLOGFILE", &keylog)
        .output()
        .unwrap();
    assert!(o.status.success());
    gw.shutdown();
    let log = std::fs::read_to_string(&keylog).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.starts_with("CLIENT_TRAFFIC_SECRET_0 "))
            .count(),
        10
    );
    assert_eq!(read_json(&out)["tls"]["keylog_file"], true);
}

/// A self-signed server certificate made the common way, CA:TRUE included:
/// `openssl req -x509 -newkey ec ... -addext subjectAltName=DNS:localhost,IP:127.0.0.1`
/// (rcgen's equivalent when the `openssl` command is missing). Its PEM and key files.
fn self_signed_ca_cert(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = json_path(&format!("{name}-cert")).with_extension("pem");
    let key = json_path(&format!("{name}-key")).with_extension("pem");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-addext"])
        .arg("subjectAltName=DNS:localhost,IP:127.0.0.1")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .is_ok_and(|o| o.status.success());
    if !made {
        eprintln!("no `openssl` command: rcgen makes the CA:TRUE certificate instead");
        let mut p =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let k = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&cert, p.self_signed(&k).unwrap().pem()).unwrap();
        std::fs::write(&key, k.serialize_pem()).unwrap();
    }
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
    (cert, key)
}

/// A gateway serving wss:// with the certificate and key in these files.
fn gateway_with(cert: &std::path::Path, key: &std::path::Path) -> Gateway {
    let chain = sockstorm::certs::load_certs("--cert", cert).unwrap();
    let key = sockstorm::certs::load_key("--key", key).unwrap();
    let opts = sockstorm::server::ServerTlsOptions::new(chain, key);
    Gateway::start(sockstorm::server::ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(sockstorm::server::server_tls_config(&opts).unwrap()),
        ..sockstorm::server::ServeConfig::default()
    })
    .unwrap()
}

#[test]
fn a_self_signed_ca_certificate_given_as_cacert_is_pinned() {
    let _g = lock();
    let (cert, key) = self_signed_ca_cert("pinned");
    let gw = gateway_with(&cert, &key);
    let out = json_path("pinned");
    let run = |cacert: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "run".to_owned(),
            wss(&gw),
            "-c".into(),
            "50".into(),
            "-d".into(),
            "2s".into(),
            "--no-reconnect".into(),
            "--cacert".into(),
            cacert.to_str().unwrap().into(),
            "-q".into(),
            "--json".into(),
            out.to_str().unwrap().into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        sockstorm(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // Pinned: every connection verified and established, through the cache or not.
    for extra in [&[][..], &["--no-verify-cache"], &["--sni", "localhost"]] {
        let before = gw.stats();
        let o = run(&cert, extra);
        assert_ok(&o);
        let v = read_json(&out);
        assert_eq!(counter(&v, "established"), 50, "{extra:?}");
        assert_eq!(failures(&v), vec![], "{extra:?}");
        assert_eq!(tls(&v, "full") + tls(&v, "resumed"), 50, "{extra:?}");
        let s = gw.stats();
        let done =
            |s: &sockstorm::server::GatewayStats| s.tls_handshakes_full + s.tls_handshakes_resumed;
        assert_eq!(done(&s) - done(&before), 50, "{extra:?}");
    }
    // Pinned, yet its names are still checked (as curl does).
    let o = run(&cert, &["--sni", "example.com"]);
    assert_eq!(o.status.code(), Some(3));
    let v = read_json(&out);
    assert_eq!(failures(&v), vec![("tls_cert_name_mismatch".into(), 50)]);
    // Another CA:TRUE certificate in --cacert: refused, with the reason and the fix.
    let (other, _) = self_signed_ca_cert("pinned-other");
    let o = run(&other, &[]);
    assert_eq!(o.status.code(), Some(3));
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), 0);
    assert_eq!(failures(&v), vec![("tls_cert_ca_as_server".into(), 50)]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("is a CA certificate (CA:TRUE) used as a server certificate: pass that exact file with --cacert to pin it"),
        "{stdout}"
    );
    gw.shutdown();
}

#[test]
fn identical_tls_failures_stop_the_run_early_with_the_cause() {
    let _g = lock();
    let ca = generate_test_ca().unwrap();
    let (gw, _) = tls_gateway(&ca, "same-failures", |_| {});
    let out = json_path("same-failures");
    // No --cacert: every attempt fails as unknown_issuer, replaced at the connect rate.
    let t0 = std::time::Instant::now();
    let o = sockstorm(&[
        "run",
        &wss(&gw),
        "-c",
        "10",
        "-d",
        "30s",
        "--cpus",
        "0",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let took = t0.elapsed();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    let v = read_json(&out);
    let stop = &v["stopped_by_identical_failures"];
    assert_eq!(stop["cause"], "tls_cert_unknown_issuer", "{stop}");
    assert_eq!(stop["attempts"], 100);
    assert_eq!(counter(&v, "established"), 0);
    let failed = failures(&v);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "tls_cert_unknown_issuer");
    // Attempts in flight when the limit was reached may still fail; none more were opened.
    assert!((100..=110).contains(&failed[0].1), "{failed:?}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    for text in [&stdout, &stderr] {
        assert!(
            text.contains("100 attempts in a row failed with tls_cert_unknown_issuer and no connection ever succeeded (--max-identical-failures 100)"),
            "{text}"
        );
        assert!(text.contains("pass the CA that signed it"), "{text}");
    }
    // A scenario file's key sets the limit too.
    let file = json_path("same-failures-scenario").with_extension("toml");
    std::fs::write(
        &file,
        format!(
            "url = \"{}\"\nconnections = 10\nduration = \"30s\"\nmax_identical_failures = 20\n",
            wss(&gw)
        ),
    )
    .unwrap();
    let o = sockstorm(&[
        "run",
        file.to_str().unwrap(),
        "--cpus",
        "0",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = read_json(&out);
    assert_eq!(v["stopped_by_identical_failures"]["attempts"], 20);
    // 0: the run goes on for its whole duration.
    let t0 = std::time::Instant::now();
    let o = sockstorm(&[
        "run",
        &wss(&gw),
        "-c",
        "10",
        "--connect-rate",
        "200",
        "-d",
        "2s",
        "--max-identical-failures",
        "0",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(t0.elapsed() >= std::time::Duration::from_secs(2));
    let v = read_json(&out);
    assert!(v["stopped_by_identical_failures"].is_null());
    assert!(failures(&v)[0].1 > 100, "{:?}", failures(&v));
    gw.shutdown();
}
