//! Scenario files: whole runs of several scenarios against the gateway, and bad files.

mod common;
use common::child::Run;
use common::*;
use std::path::PathBuf;
use std::time::Duration;

fn scenario_file(name: &str, text: &str) -> PathBuf {
    let p = json_path(name).with_extension("toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn two_scenarios_run_together_with_their_own_metrics_and_thresholds() {
    let _l = lock();
    let gw = gateway(None);
    let out = json_path("scenarios");
    let file = scenario_file(
        "two",
        &format!(
            r#"
url = "ws://{addr}/ws"
duration = "4s"
connections = 600
connect_rate = 3000
thresholds = ["ws_connecting: p(95)<2s", "msgs_received{{scenario:chat}}: count>0"]

[[scenario]]
name = "chat"
weight = 2
on_open = ['{{"type":"subscribe","channel":"{{{{scenario}}}}"}}', '{{"type":"subscribe","channel":"news"}}']
expect = "json:type=subscribed"
message = '{{"seq":{{{{seq}}}},"from":{{{{conn_id}}}}}}'
message_rate = 2
thresholds = ["msg_loss: rate==0"]

[[scenario]]
name = "feed"
url = "ws://{addr}/feed"
start = "1s"
ping_interval = "1s"
"#,
            addr = gw.local_addr()
        ),
    );
    let o = sockstorm(&[
        "run",
        file.to_str().unwrap(),
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let v = read_json(&out);
    let s = v["scenarios"].as_array().unwrap();
    assert_eq!(s.len(), 2);
    let (chat, feed) = (&s[0], &s[1]);
    assert_eq!(
        (chat["name"].as_str(), feed["name"].as_str()),
        (Some("chat"), Some("feed"))
    );
    // 600 by weight 2:1; every connection of each opened and closed cleanly.
    assert_eq!(chat["connections"], 400);
    assert_eq!(feed["connections"], 200);
    for (sc, n) in [(chat, 400), (feed, 200)] {
        assert_eq!(sc["counters"]["established"], n);
        assert_eq!(sc["counters"]["closed_clean"], n);
    }
    // Chat subscribed with its own name, every ack timed, every echo matched.
    assert_eq!(
        chat["counters"]["on_open_sent"], 800,
        "two on-open messages each"
    );
    assert_eq!(chat["counters"]["expects_met"], 400);
    let sent = chat["counters"]["msgs_sent"].as_u64().unwrap();
    assert!(sent > 400, "{sent}");
    assert_eq!(chat["counters"]["msgs_received"].as_u64(), Some(sent));
    // Feed started a second late, sent no messages, and pinged.
    assert_eq!(feed["counters"]["msgs_sent"], 0);
    assert!(feed["counters"]["pongs_received"].as_u64().unwrap() >= 200);
    assert_eq!(chat["counters"]["pings_sent"], 0);
    // Overall = the sum of the scenarios.
    assert_eq!(counter(&v, "established"), 600);
    assert_eq!(counter(&v, "msgs_received"), sent);
    // Thresholds: overall, tagged on the command line style, and the scenario's own.
    let th: Vec<&str> = v["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert_eq!(
        th,
        [
            "ws_connecting: p(95)<2s",
            "msgs_received{scenario:chat}: count>0",
            "msg_loss{scenario:chat}: rate==0"
        ]
    );
    assert!(v["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["pass"] == true));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("scenario") && text.contains("chat") && text.contains("feed"));
    assert_eq!(gw.stats().accepted, 600);
}

#[test]
fn command_line_flags_override_the_file() {
    let _l = lock();
    let gw = gateway(None);
    let out = json_path("override");
    let file = scenario_file(
        "override",
        r#"
url = "ws://127.0.0.1:1/ws"
duration = "30s"
connections = 5000
reconnect = false
[[scenario]]
name = "a"
connections = 1000
[[scenario]]
name = "b"
weight = 3
reconnect = true
"#,
    );
    // --url replaces the target, -c the total, -d the duration; a failing threshold → 99.
    let o = sockstorm(&[
        "run",
        file.to_str().unwrap(),
        "--url",
        &format!("ws://{}", gw.local_addr()),
        "-c",
        "40",
        "-d",
        "1s",
        "-q",
        "--threshold",
        "established{scenario:b}: count<30",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(99),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = read_json(&out);
    assert_eq!(v["scenarios"][0]["counters"]["established"], 10);
    assert_eq!(v["scenarios"][1]["counters"]["established"], 30);
    assert_eq!(v["settings"]["duration_s"], 1.0);
    assert_eq!(v["thresholds"][0]["actual"], 30.0);
    // Tags on the command line must name a scenario of the file.
    let o = sockstorm(&[
        "run",
        file.to_str().unwrap(),
        "--threshold",
        "established{scenario:zz}: count>0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no scenario is named `zz` (scenarios: a, b)")
    );
}

#[test]
fn a_block_replaces_the_top_levels_value_of_a_key() {
    let file = scenario_file(
        "replace",
        r#"
url = "ws://127.0.0.1:9/ws"
reconnect = false
headers = { Authorization = "Bearer top", X-Team = "load" }
on_open = ["a", "b"]
[[scenario]]
name = "a"
reconnect = true
headers = { Authorization = "Bearer mine" }
on_open = "c"
[[scenario]]
name = "b"
"#,
    );
    // Nothing listens on port 9: both scenarios fail to connect, which is fine here; what
    // matters is what each one was configured with.
    let out = json_path("replace");
    let o = sockstorm(&[
        "run",
        file.to_str().unwrap(),
        "-d",
        "1s",
        "-c",
        "4",
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
    // `a` turned reconnecting back on and retried; `b` kept the top's `reconnect = false`.
    assert!(
        v["scenarios"][0]["counters"]["reconnects"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(v["scenarios"][1]["counters"]["reconnects"], 0);
    assert_eq!(v["scenarios"][1]["counters"]["attempts"], 2);
    let (a, b) = (&v["scenarios"][0], &v["scenarios"][1]);
    assert_eq!(
        (a["reconnect"].as_bool(), b["reconnect"].as_bool()),
        (Some(true), Some(false))
    );
    // Headers replace by name; a list replaces the whole list.
    assert_eq!(
        a["header_names"],
        serde_json::json!(["X-Team", "Authorization"])
    );
    assert_eq!(
        b["header_names"],
        serde_json::json!(["Authorization", "X-Team"])
    );
    assert_eq!(a["send_on_open_bytes"], serde_json::json!([1]));
    assert_eq!(b["send_on_open_bytes"], serde_json::json!([1, 1]));
}

#[test]
fn bad_files_are_rejected_at_their_line_and_column_with_a_hint() {
    let u = "url = \"ws://127.0.0.1:9/\"\n";
    let cases: &[(&str, String, &str)] = &[
        (
            "unknown",
            format!("{u}[[scenario]]\nname = \"a\"\nmesage = \"hi\"\n"),
            "4:1: unknown key `mesage` in [[scenario]]: did you mean `message`?",
        ),
        (
            "type",
            format!("{u}connections = \"many\"\n"),
            "2:15: `connections`: invalid value 'many' for '--connections <CONNECTIONS>': invalid digit found in string",
        ),
        (
            "rate0",
            format!("{u}connect_rate = 0\n"),
            "2:16: `connect_rate`: must be a positive number of connections per second, got 0",
        ),
        (
            "negramp",
            format!("{u}stages = [{{duration = \"10s\", target = -5}}]\n"),
            "2:39: stage 1: target is a number of connections, 0 or more",
        ),
        (
            "header",
            format!("{u}headers = {{ \"X-Ok\" = \"fine\", \"X-Bad\" = \"s3cr3t\\nb\" }}\n"),
            "2:40: `headers.X-Bad`: header `X-Bad` value contains a line break or NUL",
        ),
        (
            "metric",
            format!("{u}thresholds = [\"ws_conecting: p(95)<200ms\"]\n"),
            "2:15: threshold `ws_conecting: p(95)<200ms`: unknown metric `ws_conecting`",
        ),
        (
            "syntax",
            format!("{u}[[scenario]\nname = \"a\"\n"),
            "2:12: invalid TOML: unclosed array table, expected `]`",
        ),
        (
            "msgrate",
            format!("{u}message = \"x\"\nmessage_rate = 0\n"),
            "3:16: `message_rate`: must be a positive rate per connection, got 0",
        ),
        (
            "runwide",
            format!("{u}[[scenario]]\nname = \"a\"\ncpus = \"0\"\n"),
            "4:1: `cpus` applies to the whole run: move it above the first [[scenario]]",
        ),
        (
            "noname",
            format!("{u}[[scenario]]\nweight = 2\n"),
            "2:1: this [[scenario]] has no `name`: add name = \"...\" (it tags its metrics)",
        ),
        (
            "dup",
            format!("{u}[[scenario]]\nname = \"a\"\n[[scenario]]\nname = \"a\"\n"),
            "5:8: scenario name `a` is used twice (also at",
        ),
        (
            "target",
            format!("{u}[[scenario]]\nname = \"a\"\nurl = \"ws://127.0.0.1:9999/x\"\n"),
            "4:7: scenario `a`: one run has one target (ws://127.0.0.1:9); a scenario may change the path only (url = \"/path\")",
        ),
        (
            "bool",
            format!("{u}ping_interval = true\n"),
            "2:17: `ping_interval`: invalid value 'true' for '--ping-interval <PING_INTERVAL>': invalid duration `true`",
        ),
        (
            "tag",
            format!("{u}[[scenario]]\nname = \"a\"\n[[scenario]]\nname = \"b\"\nthresholds = [\"ws_ping{{scenario:zz}}: count>0\"]\n"),
            "6:15: threshold `ws_ping{scenario:zz}: count>0` is in scenario `b` but tagged `zz`",
        ),
        (
            "weight",
            format!("{u}[[scenario]]\nname = \"a\"\nweight = -1\n"),
            "4:10: `weight` must be a number above 0, got -1",
        ),
        (
            "stormtable",
            format!("{u}storm = {{ at = \"1s\", fractoin = 0.5 }}\n"),
            "2:22: unknown key `fractoin` in `storm`: did you mean `fraction`?",
        ),
        (
            "start",
            format!("{u}duration = \"5s\"\n[[scenario]]\nname = \"a\"\nstart = \"9s\"\n"),
            "5:9: `start` 9s is not within the run (5s)",
        ),
        (
            "header",
            format!("{u}headers = {{ X-Id = \"c{{{{conn}}}}\" }}\n"),
            "2:20: `headers.X-Id`: unknown template expression `{{conn}}`",
        ),
        (
            "requires",
            format!("{u}session_lifetime = \"6m\"\n"),
            "1:1: the following required arguments were not provided: --arrival-rate <ARRIVAL_RATE>",
        ),
        (
            "order",
            format!("{u}zzz = 1\naaa = 2\n"),
            "2:1: unknown key `zzz` at the top level: every `sockstorm run --flag` is a key",
        ),
        (
            "headername",
            format!("{u}headers = {{ \"X-A: b\" = \"c\" }}\n"),
            "2:13: `X-A: b` is not a header name (no colon, spaces or control characters)",
        ),
        (
            // A top-level channel and a scenario without a role: placed at the channel.
            "channelrole",
            format!("{u}channel = \"prices\"\n[[scenario]]\nname = \"pub\"\nrole = \"publisher\"\n[[scenario]]\nname = \"a\"\n"),
            "2:11: scenario `a`: `channel`: a channel needs a role: add role = \"publisher\" or role = \"subscriber\" to scenario `a`",
        ),
        (
            "channelrole-own",
            format!("{u}[[scenario]]\nname = \"a\"\nchannel = \"x\"\n"),
            "4:11: scenario `a`: `channel`: a channel needs a role: add role = \"publisher\" or role = \"subscriber\" to this scenario",
        ),
        (
            "seqfield",
            format!("{u}last_seq_field = 'a\"b'\n"),
            "2:18: `last_seq_field`: `a\"b`: expected a JSON key without quotes or backslashes",
        ),
        (
            "notarget",
            "connections = 5\n".to_owned(),
            "1:1: no target: add url = \"ws://host:port/path\" at the top (or pass --url)",
        ),
    ];
    for (name, text, want) in cases {
        let file = scenario_file(&format!("bad-{name}"), text);
        let o = sockstorm(&["run", file.to_str().unwrap(), "-q"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        let expected = format!("sockstorm: error: {}:{want}", file.display());
        assert!(
            err.starts_with(&expected),
            "{name}:\n got {err}\nwant {expected}"
        );
    }
}

#[test]
fn a_top_level_auth_runs_once_per_run_and_a_scenarios_own_once_more() {
    let _l = lock();
    let gw = gateway(None);
    let file = scenario_file(
        "auth-once",
        &format!(
            r#"
url = "ws://{addr}/ws"
duration = "1s"
connections = 30
connect_rate = 3000
auth = {{ url = "http://{addr}/v1/auth/token", body = '{{"user":"load"}}', token_field = "token" }}
headers = {{ Authorization = "Bearer {{{{token}}}}" }}

[[scenario]]
name = "a"

[[scenario]]
name = "b"

[[scenario]]
name = "own"
auth = {{ url = "http://{addr}/v1/auth/token", body = '{{"user":"own"}}', token_field = "token" }}
"#,
            addr = gw.local_addr()
        ),
    );
    let o = sockstorm(&["run", file.to_str().unwrap(), "-q"]);
    assert_ok(&o);
    // `a` and `b` share the top level's token; `own` asks its own request.
    assert_eq!(gw.stats().auth_requests, 2);
    gw.shutdown();
}

/// Regression: every scenario used to cost ~8 MB (ten 136 KiB histograms allocated up front
/// in each of its per-shard and per-interval statistics), so a 1,000-scenario file took 10 GB.
/// Histograms are now allocated when first used.
/// Regression (issue 11, item 8): each scenario cost ~8 MB, and its histograms were copied
/// every second for every scenario. Now a scenario holds its totals (the histograms it used)
/// and nothing while idle: 200 one-connection scenarios for 3 s peak well under 1 MiB each.
/// The peak is read from the child's VmHWM while it runs (the run's own RSS sample comes at
/// whole seconds and would miss the end).
#[test]
fn many_scenarios_stay_small() {
    let _g = lock();
    let gw = gateway(None);
    let mut text = format!(
        "url = \"ws://{}/ws\"\nduration = \"3s\"\nconnect_rate = 4000\n",
        gw.local_addr()
    );
    for i in 0..200 {
        text.push_str(&format!(
            "\n[[scenario]]\nname = \"s{i}\"\nconnections = 1\n"
        ));
    }
    let file = json_path("many-scenarios").with_extension("toml");
    std::fs::write(&file, text).unwrap();
    let out = json_path("many-scenarios");
    // A 3 s run: killed as hung after a minute.
    let exit = Run::start(
        "many-scenarios",
        &[
            "run",
            file.to_str().unwrap(),
            "-q",
            "--json",
            out.to_str().unwrap(),
        ],
    )
    .finish(Duration::from_secs(60));
    assert!(exit.status.success(), "{}\n{}", exit.status, exit.text());
    let peak_kib = exit.hwm_kib;
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), 200);
    assert_eq!(v["scenarios"].as_array().unwrap().len(), 200);
    // Measured: ~170 MiB while the run holds (0.8 MiB per scenario: its totals' three
    // histograms plus the second's, 136 KiB each); before, 1.2 MiB per scenario, and 8 MiB
    // before that. Writing the JSON at the end sometimes adds a transient of up to ~1.8 MiB
    // per scenario (peaks of 376-528 MiB sampled in the last 100 ms, with this release and the
    // one before; never without --json): allowed here, still far below the 8 MiB regression.
    let bound_kib = 32 * 1024 + 200 * 3 * 1024;
    assert!(
        peak_kib < bound_kib,
        "{} MiB peak for 200 scenarios (bound {} MiB)",
        peak_kib >> 10,
        bound_kib >> 10
    );
    gw.shutdown();
}

/// Regression: `@FILE` inputs were read whole with no limit (`--message @/dev/zero` grew to
/// 24 GB). Devices and FIFOs are refused, and each input has a size limit. Run under
/// `prlimit --as` so a regression fails instead of eating the machine.
#[test]
fn file_inputs_are_regular_files_within_their_limit() {
    let bin = env!("CARGO_BIN_EXE_sockstorm");
    let run = |args: &[&str]| {
        let o = std::process::Command::new("prlimit")
            .arg("--as=2147483648")
            .arg("--")
            .arg(bin)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, err) = run(&["run", "ws://127.0.0.1:9/", "--message", "@/dev/zero"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`/dev/zero`: not a regular file"), "{err}");
    let big = json_path("big-message").with_extension("txt");
    std::fs::write(&big, vec![b'x'; 17 << 20]).unwrap();
    let arg = format!("@{}", big.display());
    let (code, err) = run(&["run", "ws://127.0.0.1:9/", "--message", &arg]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("over the 16 MiB limit"), "{err}");
    let (code, err) = run(&["run", "ws://127.0.0.1:9/?u={{line /dev/zero}}"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    let mut toml = b"url = \"ws://127.0.0.1:9/\"\n#".to_vec();
    toml.resize(17 << 20, b'x');
    let file = json_path("big-scenario").with_extension("toml");
    std::fs::write(&file, toml).unwrap();
    let (code, err) = run(&["run", file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("over the 16 MiB limit"), "{err}");
    std::fs::remove_file(big).ok();
    std::fs::remove_file(file).ok();
}
