//! The command line's fuzz body (`fuzz/` target `scenario`): a scenario file and the `run`
//! words after it, read into a run; its smoke test on stable; and the replay of every target's
//! committed corpus and regression inputs (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`)
//! through its body, so an input that crashed once stays a test on stable. See
//! `proto::fuzz_smoke` for how the bodies are shared with the fuzz crate.
#![allow(
    unreachable_pub,
    reason = "the bodies are `pub` for the fuzz crate (feature `fuzzing`)"
)]

use super::scenario::read_text;
use crate::plan::{PlanError, Run};
use std::path::{Path, PathBuf};

/// Where the fuzzed file is said to be: beside the examples, so their relative data paths
/// (`{{line data/chat-lines.txt}}`) resolve. Nothing is written there.
fn scenario_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fuzzed.toml")
}

/// What of a read is compared between two reads of the same input.
fn summary(r: &Result<(Run, String), PlanError>) -> String {
    match r {
        Ok((run, url_at)) => {
            let scenarios: Vec<String> = run
                .scenarios
                .iter()
                .map(|p| {
                    format!(
                        "{} {} {:?} {:?} {} {:?}",
                        p.name, p.connections, p.duration, p.start, p.url_text, p.thresholds
                    )
                })
                .collect();
            format!(
                "{scenarios:?} {:?} {:?} {url_at}",
                run.thresholds, run.abort_on_fail
            )
        }
        Err(e) => e.to_string(),
    }
}

/// Input: the file's text, then the `run` words after the file, each after a NUL byte (at
/// most 8). Must hold: no panic, whatever the bytes; the answer is a run or a `PlanError`,
/// the same when read again; an error placed in the file (`FILE:LINE:COL`) names the file and
/// a line and column inside the text; a run has at least one scenario, each with a name, a
/// connection, a positive duration, a start within it and a URL whose query is redacted
/// unless `--show-query` (`show_query`) is given.
pub fn scenario(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or(&[]));
    let words: Vec<String> = parts
        .take(8)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let path = scenario_path();
    let first = read_text(&path, &text, &words);
    assert_eq!(summary(&first), summary(&read_text(&path, &text, &words)));
    match &first {
        Err(PlanError::Scenario { at, reason }) => {
            assert!(!reason.is_empty());
            let place = at
                .strip_prefix(&format!("{}:", path.display()))
                .unwrap_or_else(|| panic!("`{at}` does not name the file"));
            let (line, col) = place
                .split_once(':')
                .and_then(|(l, c)| Some((l.parse::<usize>().ok()?, c.parse::<usize>().ok()?)))
                .unwrap_or_else(|| panic!("`{at}` is not FILE:LINE:COL"));
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                (1..=lines.len()).contains(&line),
                "{at}: the text has {} lines",
                lines.len()
            );
            assert!(
                (1..=lines[line - 1].chars().count() + 1).contains(&col),
                "{at}: line {line} is {:?}",
                lines[line - 1]
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok((run, url_at)) => {
            assert!(url_at.starts_with(&path.display().to_string()));
            assert!(!run.scenarios.is_empty());
            let shows = words.iter().any(|w| w == "--show-query") || text.contains("show_query");
            for p in &run.scenarios {
                assert!(
                    !p.name.is_empty() && p.connections > 0,
                    "{}",
                    summary(&first)
                );
                assert!(
                    !p.duration.is_zero() && p.start < p.duration,
                    "{}",
                    summary(&first)
                );
                if let (false, Some((_, q))) = (shows, p.url_text.split_once('?')) {
                    let q = q.strip_suffix("#***").unwrap_or(q);
                    assert!(
                        q.split('&').all(|item| match item.split_once('=') {
                            Some((_, v)) => v == "***",
                            None => item.is_empty() || item == "***",
                        }),
                        "query shown: {}",
                        p.url_text
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fuzz_smoke::{smoke_runs, Gen};
    use std::collections::BTreeSet;

    const EXAMPLES: [&str; 9] = [
        include_str!("../../examples/chat.toml"),
        include_str!("../../examples/collab-resume.toml"),
        include_str!("../../examples/enterprise-mix.toml"),
        include_str!("../../examples/keepalive-abuse.toml"),
        include_str!("../../examples/market-data.toml"),
        include_str!("../../examples/notifications.toml"),
        include_str!("../../examples/orders-feed.toml"),
        include_str!("../../examples/rating-stream.toml"),
        include_str!("../../examples/collab-resume.toml"),
    ];

    /// Lines that change a scenario file: keys of every kind with good and bad values, tables.
    const LINES: [&str; 24] = [
        "connections = 0",
        "connections = -1",
        "connections = 99999999999999999999",
        "duration = \"0s\"",
        "duration = 5",
        "duration = \"1h\"",
        "connect_rate = 1e400",
        "start = \"10m\"",
        "weight = 0",
        "url = \"ws://127.0.0.1:9/?token=secret&x\"",
        "url = \"http://nope\"",
        "thresholds = [\"ws_connecting: p(95)<\", 3]",
        "message = \"{{rand_int 5 1}}\"",
        "message = '{{line data/missing.txt}}'",
        "expect = \"json:\"",
        "misbehave = \"nonsense\"",
        "[[scenario]]",
        "[[scenario.message]]",
        "[stages]",
        "stages = [{ duration = \"1s\", target = 10 }]",
        "[tls]",
        "headers = { \"X-A\" = \"b\\r\\nc\" }",
        "unknown_key = 1",
        "name = \"\"",
    ];

    const WORDS: [&str; 14] = [
        "-d",
        "1s",
        "-c",
        "5",
        "--show-query",
        "--url",
        "ws://127.0.0.1:1/x?token=t",
        "--connections",
        "0",
        "--bogus",
        "--message-rate",
        "abc",
        "--threshold",
        "checks: rate>1%",
    ];

    pub(super) fn file(g: &mut Gen) -> Vec<u8> {
        let mut lines: Vec<String> = g.pick(&EXAMPLES).lines().map(str::to_owned).collect();
        for _ in 0..g.below(4) {
            let n = lines.len();
            match g.below(4) {
                0 => {
                    let at = g.below(n + 1);
                    lines.insert(at, g.pick(&LINES).to_owned());
                }
                1 if n > 0 => {
                    lines.remove(g.below(n));
                }
                2 if n > 0 => {
                    let i = g.below(n);
                    lines.push(lines[i].clone());
                }
                _ => lines.push(g.pick(&LINES).to_owned()),
            }
        }
        let mut v = lines.join("\n").into_bytes();
        for _ in 0..g.below(4) {
            v.push(0);
            v.extend_from_slice(g.pick(&WORDS).as_bytes());
        }
        v
    }

    #[test]
    fn scenario_smoke() {
        smoke_runs(61, 3000, file, scenario);
    }

    /// The generator reaches runs, errors placed in the file and errors of the command line.
    #[test]
    fn scenario_generator_reaches_deep_paths() {
        let mut g = Gen::new(62);
        let (mut ok, mut placed, mut other) = (0, 0, 0);
        for _ in 0..600 {
            let d = file(&mut g);
            let mut parts = d.split(|&b| b == 0);
            let text = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
            let words: Vec<String> = parts
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            match read_text(&scenario_path(), &text, &words) {
                Ok(_) => ok += 1,
                Err(PlanError::Scenario { .. }) => placed += 1,
                Err(_) => other += 1,
            }
        }
        assert!(
            ok > 30 && placed > 30 && other > 10,
            "{ok} {placed} {other}"
        );
    }

    /// A target's body.
    type Body = fn(&[u8]);

    /// Every fuzz target, by its name in `fuzz/Cargo.toml`, with its body.
    fn targets() -> Vec<(&'static str, Body)> {
        use crate::proto::fuzz_smoke as p;
        vec![
            ("frame_decoder", p::frame_decoder),
            ("upgrade_response", p::upgrade_response),
            ("deflate", p::deflate),
            ("app_protocols", p::app_protocols),
            ("conn_recv", p::conn_recv),
            ("frame_differential", p::frame_differential),
            ("template", p::template),
            ("json_scan", p::json_scan),
            ("tls_failure", p::tls_failure),
            ("threshold", crate::plan::fuzz_smoke::threshold),
            (
                "gateway_command",
                crate::server::fuzz_smoke::gateway_command,
            ),
            (
                "gateway_deflate",
                crate::server::fuzz_smoke::gateway_deflate,
            ),
            ("scenario", scenario),
        ]
    }

    /// The files in `dir`, sorted; none if it does not exist.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.path()))
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Every committed corpus and regression input replays through its target's body, and
    /// the targets here are exactly those of `fuzz/Cargo.toml`, each with a seed corpus.
    #[test]
    fn fuzz_corpora_and_regressions_replay() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let bins: BTreeSet<&str> = manifest
            .split("[[bin]]")
            .skip(1)
            .filter_map(|b| b.lines().find_map(|l| l.trim().strip_prefix("name = ")))
            .map(|n| n.trim_matches('"'))
            .collect();
        let ours: BTreeSet<&str> = targets().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            bins, ours,
            "fuzz/Cargo.toml's targets and the bodies here differ"
        );
        for dir in ["corpus", "regressions"] {
            for d in files(&root.join(dir)).into_iter().chain(
                std::fs::read_dir(root.join(dir))
                    .map(|r| {
                        r.filter_map(|e| Some(e.ok()?.path()))
                            .filter(|p| p.is_dir())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
            ) {
                let name = d.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    ours.contains(name.as_str()),
                    "fuzz/{dir}/{name} is no target's"
                );
            }
        }
        for (name, body) in targets() {
            let seeds = files(&root.join("corpus").join(name));
            assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seed");
            for f in seeds
                .iter()
                .chain(&files(&root.join("regressions").join(name)))
            {
                let bytes = std::fs::read(f).unwrap();
                if let Err(p) = std::panic::catch_unwind(|| body(&bytes)) {
                    std::panic::resume_unwind(Box::new(format!(
                        "{name} on {}: {}",
                        f.display(),
                        p.downcast_ref::<String>().map_or("panic", |s| s)
                    )));
                }
            }
        }
    }
}
