//! The flags' checks, each error naming the flag and the fix.

use crate::cli::args::RunArgs;
use crate::plan::{prepare, PlanError, Run, RunPlan};

fn plan(args: &[&str]) -> Result<RunPlan, PlanError> {
    RunArgs::from_words(args.iter().copied()).unwrap().plan()
}

/// Errors of the plan and of `prepare` (DNS, source addresses) alike.
fn prepared(args: &[&str]) -> Result<crate::plan::Prepared, PlanError> {
    prepare(Run::single(plan(args)?)?)
}

#[test]
fn flags_validate_with_the_fix_in_the_message() {
    let p = prepared(&[
        "ws://127.0.0.1:9/",
        "-c",
        "10000",
        "--message",
        "hi",
        "--message-rate",
        "2",
    ])
    .unwrap();
    assert_eq!(
        p.source_ips.len(),
        5,
        "loopback spreads 10k connections over 5 sources"
    );
    assert_eq!(p.main().message_rate, 2.0);
    let msg = |args: &[&str]| prepared(args).unwrap_err().to_string();
    assert!(msg(&["ws://127.0.0.1:9/", "-c", "0"]).contains("--connections"));
    assert!(msg(&["ws://127.0.0.1:9/", "--connect-rate", "0"]).contains("--connect-rate"));
    assert!(
        msg(&["ws://127.0.0.1:9/", "--message", "x", "--message-rate", "0"])
            .contains("--message-rate")
    );
    assert!(msg(&["ws://127.0.0.1:9/", "-H", "Host: a"]).contains("cannot be overridden"));
    assert!(msg(&["ws://127.0.0.1:9/", "--message", "@/nonexistent/file"]).contains("cannot read"));
    assert!(msg(&["ws://127.0.0.1:9/", "--cpus", "999"]).contains("not available"));
    assert!(msg(&["ws://127.0.0.1:9/", "--source-ip", "::1"]).contains("address family"));
    assert!(msg(&["ws://no-such-host.invalid/"]).contains("cannot resolve"));
    assert!(msg(&["ws://127.0.0.1:9/", "--insecure"]).contains("only applies to wss://"));
    assert!(msg(&["ws://127.0.0.1:9/", "--mode", "handshake"]).contains("--upgrade"));
    assert!(msg(&["ws://127.0.0.1:9/", "--upgrade"]).contains("--mode handshake"));
}

#[test]
fn the_plan_is_pure_and_prepare_resolves() {
    // Building the plan makes no DNS request: an unresolvable host is found by `prepare`.
    let p = plan(&["ws://no-such-host.invalid/"]).unwrap();
    assert_eq!(p.url.host, "no-such-host.invalid");
    let e = prepare(Run::single(p).unwrap()).unwrap_err();
    assert!(
        matches!(e, PlanError::Resolve { .. }),
        "{e}: expected a DNS error from prepare"
    );
}

#[test]
fn a_connections_own_token_goes_in_its_upgrade_request_only() {
    let dir = std::env::temp_dir().join(format!("sockstorm-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("open.json");
    std::fs::write(&file, r#"{"auth":"{{token}}"}"#).unwrap();
    let at_file = format!("@{}", file.display());
    let per_connection = [
        "ws://127.0.0.1:9/",
        "--auth-url",
        "http://127.0.0.1:9/token",
        "--auth-per-connection",
        "-H",
        "Authorization: Bearer {{token}}",
    ];
    let with = |extra: &[&str]| {
        let words: Vec<&str> = per_connection.iter().chain(extra).copied().collect();
        plan(&words)
    };
    // In the request: one slot per connection, filled when its request is rendered.
    let p = with(&[]).unwrap();
    assert!(p.conn.template.wants_token() && p.auth_pool.is_some());
    // Anywhere else it would go out as the literal text: refused, naming the flag.
    for (extra, flag) in [
        (
            &[
                "--heartbeat-interval",
                "1s",
                "--heartbeat-message",
                "{{token}}",
            ][..],
            "--heartbeat-message",
        ),
        (&["--send-on-open", &at_file][..], "--send-on-open"),
        (&["--message", &at_file][..], "--message"),
        (
            &["--role", "subscriber", "--channel", "{{token}}"][..],
            "--send-on-open",
        ),
    ] {
        let e = with(extra).unwrap_err().to_string();
        assert!(
            e.starts_with(flag) && e.contains("{{token}}"),
            "{extra:?}: {e}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_pre_steps_token_fills_every_place_and_stays_out_of_reports() {
    use crate::proto::rng::Rng;
    use crate::proto::template::Vars;
    use crate::server::{Gateway, ServeConfig};
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        report: false,
        ..ServeConfig::default()
    })
    .unwrap();
    let url = format!("ws://{}/ws?t={{{{token}}}}", gw.local_addr());
    let auth = format!("http://{}/v1/auth/token", gw.local_addr());
    let run = prepared(&[
        &url,
        "--auth-url",
        &auth,
        "-H",
        "Authorization: Bearer {{token}}",
        "--send-on-open",
        r#"{"auth":"{{token}}"}"#,
        "--message",
        r#"{"t":"{{token}}","seq":{{seq}}}"#,
        "--on-reconnect",
        "resume {{token}}",
        "--heartbeat-interval",
        "1s",
        "--heartbeat-message",
        "hb {{token}}",
    ])
    .unwrap();
    gw.shutdown();
    let token = "sockstorm-demo-token";
    let p = run.main();
    let c = &p.conn;
    let mut request = Vec::new();
    let mut rng = Rng::new(1);
    let mut vars = Vars {
        conn_id: 0,
        seq: 0,
        last_seq: 0,
        now_unix_us: 0,
        rng: &mut rng,
    };
    c.template
        .render(&[b'k'; 24], None, &mut vars, &mut request);
    let request = String::from_utf8(request).unwrap();
    assert!(
        request.starts_with(&format!("GET /ws?t={token} HTTP/1.1\r\n")),
        "{request}"
    );
    assert!(request.contains(&format!("\r\nAuthorization: Bearer {token}\r\n")));
    assert!(!c.template.wants_token());
    let render = |m: &crate::proto::conn::Message| match &m.template {
        None => String::from_utf8(m.payload.to_vec()).unwrap(),
        Some(t) => {
            let mut out = Vec::new();
            let mut rng = Rng::new(1);
            let mut v = Vars {
                conn_id: 0,
                seq: 7,
                now_unix_us: 0,
                last_seq: 0,
                rng: &mut rng,
            };
            t.render(&mut v, &mut out);
            String::from_utf8(out).unwrap()
        }
    };
    assert_eq!(render(&c.on_open[0]), format!(r#"{{"auth":"{token}"}}"#));
    assert_eq!(
        render(c.message.as_ref().unwrap()),
        format!(r#"{{"t":"{token}","seq":7}}"#)
    );
    assert_eq!(
        render(c.on_reconnect.as_ref().unwrap()),
        format!("resume {token}")
    );
    assert_eq!(
        render(&c.heartbeat.as_ref().unwrap().message),
        format!("hb {token}")
    );
    // What reports show keeps the placeholder: the URL as given and the header names.
    assert!(p.url_text.ends_with("/ws?t=***"));
    let shown = plan(&["ws://127.0.0.1:1/ws?token=s3cr3t#x", "--show-query"]).unwrap();
    assert_eq!(shown.url_text, "ws://127.0.0.1:1/ws?token=s3cr3t#x");
    assert_eq!(c.template.header_names(), ["Authorization"]);
}

#[test]
fn latency_in_seconds_and_the_last_seq_field_reach_the_config() {
    use crate::proto::inspect::{LatencyField, TimeUnit};
    let p = plan(&[
        "ws://127.0.0.1:9/",
        "--latency-from",
        "json:timestamp",
        "--latency-unit",
        "s",
        "--last-seq-field",
        "sequence",
    ])
    .unwrap();
    assert_eq!(
        p.conn.latency_from,
        Some(LatencyField::new("timestamp", TimeUnit::Seconds))
    );
    assert_eq!(
        p.conn.last_seq_field,
        LatencyField::new("sequence", TimeUnit::Micros)
    );
    let default = plan(&["ws://127.0.0.1:9/"]).unwrap();
    assert_eq!(
        default.conn.last_seq_field,
        LatencyField::new("seq", TimeUnit::Micros)
    );
    let e = plan(&["ws://127.0.0.1:9/", "--last-seq-field", ""]).unwrap_err();
    assert!(e.to_string().contains("--last-seq-field"), "{e}");
}
