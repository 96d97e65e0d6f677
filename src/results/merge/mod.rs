//! `sockstorm merge`: result documents of one plan, run on several hosts (or, later, as
//! segments of one run), merged into one document of the same layout, exactly: histograms
//! added (HdrHistogram `add` of the decoded `hdr`s), counts summed, timelines summed per Unix
//! second, the other figures combined as `figures` says, and the plan's thresholds
//! evaluated again on the merged data. Documents of another plan or layout version are
//! refused, naming the key that differs; the same run given twice is refused unless
//! `partial`.
//!
//! The merged document carries `merged.documents`, one row per input run (host, sessions,
//! client CPU, verdict), and can itself be merged again.

mod check;
mod error;
mod figures;
mod measures;
mod read;
mod stats;
mod summary;
mod timeline;

pub use error::ResultsError;
pub use read::{documents, Input};
pub use summary::summary;

use crate::metrics::fanout::FanoutSummary;
use crate::plan::threshold::{Outcome, Threshold};
use crate::proto::conn::Counters;
use serde_json::{json, Value};

/// One input document as the merge reads it: its name for errors, and its JSON (or a section
/// of it: a scenario's).
#[derive(Debug, Clone, Copy)]
struct Part<'a> {
    file: &'a str,
    v: &'a Value,
}

/// A count in a document (0 when absent).
fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A figure in a document (0 when absent).
fn real(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// A merge's outcome: the document, the thresholds as evaluated on it, and the runs given
/// more than once that `--partial` let through (each merged once).
#[derive(Debug)]
pub struct Merged {
    /// The merged result document.
    pub doc: Value,
    /// The plan's thresholds evaluated on the merged data.
    pub outcomes: Vec<Outcome>,
    /// "`B.json` is the same run as `A.json`" for each duplicate skipped.
    pub duplicates: Vec<String>,
    /// The fan-out settled across every document, and the merged counters it settled.
    pub fanout: Option<(FanoutSummary, Counters)>,
}

/// Merges `inputs` (at least one). `partial`: merge each run once and go on when one is given
/// twice, instead of refusing.
pub fn merge(inputs: &[Input], partial: bool) -> Result<Merged, ResultsError> {
    let Some(first) = inputs.first() else {
        return Err(ResultsError::Empty(String::new()));
    };
    if let Some(search) = inputs.iter().find(|i| !i.doc["find_max"].is_null()) {
        if inputs.len() > 1 {
            return Err(ResultsError::Search {
                file: search.name.clone(),
            });
        }
    }
    let check::Checked {
        kept,
        skipped: duplicates,
        missing,
    } = check::inputs(inputs, partial)?;
    let parts: Vec<Part<'_>> = kept
        .iter()
        .map(|i| Part {
            file: &i.name,
            v: &i.doc,
        })
        .collect();
    let mut doc = first.doc.clone();
    let timeline = timeline::merge(parts.iter().map(|p| &p.v["timeline"]));
    measures::measures(&parts, &mut doc)?;
    run_figures(&parts, &timeline, &mut doc)?;
    doc["scenarios"] = scenarios(&parts, &timeline)?;
    let fanout = figures::fanout(&parts, &mut doc)?;
    let outcomes = thresholds(&doc, &first.name)?;
    doc["thresholds"] = outcomes
        .iter()
        .map(|t| {
            json!({"expr": t.expr, "actual": t.actual, "pass": t.pass,
                   "unreliable": t.unreliable.is_some(), "unreliable_reason": t.unreliable})
        })
        .collect();
    doc["timeline"] = serde_json::to_value(&timeline).unwrap_or_default();
    identity(&parts, &mut doc, partial);
    doc["merged"]["missing_segments"] = missing.as_ref().map(|(gaps, _)| gaps.clone()).into();
    doc["segment"] = match missing {
        // The merged document is the whole split run, or the part of it given.
        None => Value::Null,
        Some((_, count)) => json!({"count": count, "partial": true}),
    };
    doc["verdict"] = super::verdict(&doc).into();
    Ok(Merged {
        doc,
        outcomes,
        duplicates,
        fanout,
    })
}

/// Run-wide figures: process, TLS, fan-out, auth, storm, stages, clock, handshake mode and
/// the scalars (longest elapsed time, any interruption, worst schedule lag, slowest ramp).
fn run_figures(
    parts: &[Part<'_>],
    tl: &[crate::metrics::run::Sample],
    doc: &mut Value,
) -> Result<(), ResultsError> {
    let max = |k: &str| parts.iter().map(|p| real(&p.v[k])).fold(0.0, f64::max);
    doc["elapsed_s"] = max("elapsed_s").into();
    doc["interrupted"] = parts.iter().any(|p| p.v["interrupted"] == true).into();
    doc["schedule_lag_max_us"] = parts
        .iter()
        .map(|p| num(&p.v["schedule_lag_max_us"]))
        .max()
        .into();
    let ramp: Option<Vec<f64>> = parts.iter().map(|p| p.v["ramp_s"].as_f64()).collect();
    let ramp = ramp.and_then(|v| v.into_iter().reduce(f64::max));
    doc["ramp_s"] = ramp.into();
    let connections = real(&doc["settings"]["connections"]);
    doc["established_per_s"] = ramp
        .filter(|d| *d > 0.0)
        .map(|d| (connections / d).round())
        .into();
    doc["process"] = figures::process(parts, tl);
    doc["tls"] = figures::tls(parts);
    doc["auth_per_connection"] = figures::auth(parts)?;
    let storms: Vec<&Value> = parts.iter().map(|p| &p.v["storm"]).collect();
    doc["storm"] = figures::storm(&storms, tl);
    doc["stages"] = figures::stages(parts);
    doc["clock"] = figures::clock(parts);
    doc["generator"] = figures::generator(parts);
    let secs = real(&doc["settings"]["duration_s"]).min(real(&doc["elapsed_s"]));
    let cpu = real(&doc["process"]["cpu_user_s"]) + real(&doc["process"]["cpu_sys_s"]);
    doc["handshake_mode"] = figures::handshake(parts, secs, cpu);
    doc["machine"] = Value::Null;
    for k in ["aborted_by_threshold", "stopped_by_identical_failures"] {
        doc[k] = parts
            .iter()
            .map(|p| &p.v[k])
            .find(|x| !x.is_null())
            .cloned()
            .unwrap_or_default();
    }
    let names: Vec<&Value> = parts.iter().map(|p| &p.v["backend"]["name"]).collect();
    if names.iter().any(|n| *n != names[0]) {
        doc["backend"] = json!({"name": "mixed", "reason": "the hosts used different backends: see merged.documents"});
    }
    let mut sources: Vec<Value> = Vec::new();
    for ip in parts.iter().flat_map(|p| {
        p.v["settings"]["source_ips"]
            .as_array()
            .into_iter()
            .flatten()
    }) {
        if !sources.contains(ip) {
            sources.push(ip.clone());
        }
    }
    doc["settings"]["source_ips"] = sources.into();
    Ok(())
}

/// Each scenario's section merged like the run's; its peak of open sessions from the merged
/// timeline when the run has several scenarios (else the run's).
fn scenarios(
    parts: &[Part<'_>],
    tl: &[crate::metrics::run::Sample],
) -> Result<Value, ResultsError> {
    let n = parts[0].v["scenarios"].as_array().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let each: Vec<Part<'_>> = parts
            .iter()
            .map(|p| Part {
                file: p.file,
                v: &p.v["scenarios"][k],
            })
            .collect();
        let mut s = each[0].v.clone();
        measures::measures(&each, &mut s)?;
        let peak = if n > 1 {
            tl.iter()
                .map(|x| x.open_by_scenario.get(k).copied().unwrap_or(0))
                .max()
        } else {
            tl.iter().map(|x| x.open).max()
        };
        s["peak_open"] = peak
            .unwrap_or_else(|| each.iter().map(|p| num(&p.v["peak_open"])).sum())
            .into();
        let storms: Vec<&Value> = each.iter().map(|p| &p.v["storm"]).collect();
        s["storm"] = figures::storm(&storms, tl);
        let ramp: Option<Vec<f64>> = each.iter().map(|p| p.v["ramp_s"].as_f64()).collect();
        s["ramp_s"] = ramp.and_then(|v| v.into_iter().reduce(f64::max)).into();
        s["ramp_deficit_max"] = each
            .iter()
            .map(|p| num(&p.v["ramp_deficit_max"]))
            .sum::<u64>()
            .into();
        s["schedule_lag_max_us"] = each
            .iter()
            .map(|p| num(&p.v["schedule_lag_max_us"]))
            .max()
            .into();
        out.push(s);
    }
    Ok(out.into())
}

/// The plan's thresholds (`plan.keys.thresholds`) evaluated on merged document `doc`, over
/// the planned duration or the longest host's run, whichever is shorter.
fn thresholds(doc: &Value, file: &str) -> Result<Vec<Outcome>, ResultsError> {
    let secs = real(&doc["settings"]["duration_s"]).min(real(&doc["elapsed_s"]));
    let total = stats::of_section(file, doc)?;
    let scenarios = doc["scenarios"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for e in doc["plan"]["keys"]["thresholds"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let expr = e.as_str().unwrap_or_default();
        let t = Threshold::parse(expr).map_err(|err| ResultsError::NotADocument {
            file: file.to_owned(),
            reason: err.to_string(),
        })?;
        let own = t
            .scenario
            .as_deref()
            .and_then(|name| scenarios.iter().find(|s| s["name"] == name));
        let s = match own {
            Some(sc) => stats::of_section(file, sc)?,
            None => total.clone(),
        };
        out.push(t.eval(&s, secs));
    }
    Ok(out)
}

/// The merged document's identity: its runs' rows in `merged.documents` (flattened when an
/// input is itself a merge), a `run_id` of their ids, no single host.
fn identity(parts: &[Part<'_>], doc: &mut Value, partial: bool) {
    let mut rows: Vec<Value> = parts
        .iter()
        .flat_map(|p| check::rows(p.file, p.v))
        .collect();
    let skew = start_skew(&mut rows);
    let mut ids: Vec<&str> = rows.iter().filter_map(|r| r["run_id"].as_str()).collect();
    ids.sort_unstable();
    let id = super::identity::fnv1a64(ids.join(",").as_bytes());
    doc["run_id"] = format!("{id:016x}").into();
    doc["host"] = Value::Null;
    doc["merged"] = json!({"documents": rows, "partial": partial, "start_skew_us": skew});
}

/// Start skew: how much later each run started than the earliest, µs, into its row's
/// `start_skew_us`; the largest is returned. With `--start-at` on every run it is measured
/// from each run's offset to the common instant (each host timing its own start, so clock
/// offsets between hosts do not enter); else from the runs' start times (`host.started_unix_us`,
/// which do include them). `None` for a run without either.
fn start_skew(rows: &mut [Value]) -> Option<i64> {
    let offsets: Option<Vec<i64>> = rows.iter().map(|r| r["start_offset_us"].as_i64()).collect();
    let starts =
        offsets.or_else(|| rows.iter().map(|r| r["started_unix_us"].as_i64()).collect())?;
    let first = *starts.iter().min()?;
    for (r, t) in rows.iter_mut().zip(&starts) {
        r["start_skew_us"] = (t - first).into();
    }
    starts.iter().map(|t| t - first).max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::new_histogram;
    use crate::results::{hdr, identity as id};

    /// A small result document of a plan of `connections`, run `run_id`, with `rtt` samples.
    fn doc(connections: u64, run_id: &str, rtt: &[u64]) -> Value {
        let mut h = new_histogram();
        for v in rtt {
            h.saturating_record(*v);
        }
        let mut d = json!({
            "schema_version": crate::results::SCHEMA_VERSION,
            "run_id": run_id,
            "host": {"name": run_id, "started_unix_us": 1},
            "settings": {"url": "ws://h/", "connections": connections, "duration_s": 10.0, "source_ips": [run_id]},
            "elapsed_s": 10.0,
            "counters": {"attempts": connections, "established": connections, "msgs_sent": rtt.len()},
            "failures": {}, "close_codes": {"1000": connections},
            "histograms": {"ws_msg_rtt": hdr::to_json(&h)},
            "scenarios": [{"name": "default", "url": "ws://h/", "connections": connections,
                           "counters": {"established": connections}, "histograms": {"ws_msg_rtt": hdr::to_json(&h)}}],
            "thresholds": [{"expr": "ws_msg_rtt: p(50)<=300us"}, {"expr": "established{scenario:default}: count>=10"}],
            "timeline": [{"t_s": 1.0, "unix_s": 50, "open": connections}],
        });
        let keys = id::plan_keys(&d);
        d["plan"] = json!({"identity": id::identity(&keys), "keys": keys});
        d
    }

    fn input(name: &str, doc: Value) -> Input {
        Input {
            name: name.to_owned(),
            doc,
        }
    }

    #[test]
    fn merges_counts_histograms_timeline_and_reevaluates_thresholds() {
        let m = merge(
            &[
                input("a", doc(5, "A", &[100, 200])),
                input("b", doc(5, "B", &[300, 400, 500])),
            ],
            false,
        )
        .unwrap();
        assert_eq!(m.doc["counters"]["established"], 10);
        assert_eq!(m.doc["close_codes"]["1000"], 10);
        assert_eq!(m.doc["histograms"]["ws_msg_rtt"]["count"], 5);
        assert_eq!(m.doc["scenarios"][0]["counters"]["established"], 10);
        assert_eq!(m.doc["timeline"][0]["open"], 10);
        assert_eq!(m.doc["merged"]["documents"].as_array().unwrap().len(), 2);
        // p50 of {100..500} is 300: passes; each scenario has 5 established, merged 10: passes.
        assert!(m.outcomes.iter().all(|t| t.pass), "{:?}", m.outcomes);
        let m = merge(
            &[
                input("a", doc(5, "A", &[100, 200])),
                input("b", doc(5, "B", &[400, 500, 600])),
            ],
            false,
        )
        .unwrap();
        assert!(!m.outcomes[0].pass);
        assert_eq!(m.outcomes[0].actual, Some(400.0));
        assert_eq!(crate::results::verdict(&m.doc), "thresholds failed");
    }

    #[test]
    fn another_plan_is_refused_naming_the_key() {
        let e = merge(
            &[
                input("a.json", doc(5, "A", &[])),
                input("b.json", doc(6, "B", &[])),
            ],
            false,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`b.json` is a run of another plan than `a.json`: plan.keys.scenarios[0].connections is 6 there and 5 in `a.json`"
        );
    }

    #[test]
    fn another_version_and_duplicates_are_refused() {
        let mut old = doc(5, "B", &[]);
        old["schema_version"] = 1.into();
        let e = merge(&[input("a", doc(5, "A", &[])), input("b", old)], false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`b`: schema_version 1, this sockstorm merges schema_version 2 only"
        );
        let twice = [input("a", doc(5, "A", &[1])), input("b", doc(5, "A", &[1]))];
        let e = merge(&twice, false).unwrap_err();
        assert!(
            e.to_string().starts_with("`b` is the same run as `a`"),
            "{e}"
        );
        let m = merge(&twice, true).unwrap();
        assert_eq!(m.duplicates.len(), 1);
        assert_eq!(m.doc["counters"]["established"], 5);
    }

    #[test]
    fn a_merge_merges_again() {
        let ab = merge(
            &[input("a", doc(5, "A", &[1])), input("b", doc(5, "B", &[2]))],
            false,
        )
        .unwrap();
        let abc = merge(&[input("ab", ab.doc), input("c", doc(5, "C", &[3]))], false).unwrap();
        assert_eq!(abc.doc["counters"]["established"], 15);
        assert_eq!(abc.doc["histograms"]["ws_msg_rtt"]["count"], 3);
        assert_eq!(abc.doc["merged"]["documents"].as_array().unwrap().len(), 3);
    }

    /// Segment `i` of `n` of a plan of 7 connections (3, 2, 2 over three), started `skew` µs
    /// after the instant.
    fn segment(i: u64, n: u64, skew: i64) -> Input {
        let mut d = doc(7, &format!("S{i}"), &[100 + i]);
        let share = 7 / n + u64::from(i < 7 % n);
        d["segment"] = json!({"index": i, "count": n, "source": "flag", "connections": share});
        d["start_at"] = json!({"unix_us": 5_000_000, "offset_us": 300 + skew});
        input(&format!("s{i}.json"), d)
    }

    #[test]
    fn segments_must_all_be_there_once() {
        let all = merge(
            &[segment(2, 3, 40), segment(0, 3, 0), segment(1, 3, 1_500)],
            false,
        )
        .unwrap();
        let rows = all.doc["merged"]["documents"].as_array().unwrap();
        let skews: Vec<i64> = rows
            .iter()
            .map(|r| r["start_skew_us"].as_i64().unwrap())
            .collect();
        assert_eq!(skews, [40, 0, 1_500]);
        assert_eq!(all.doc["merged"]["start_skew_us"], 1_500);
        assert_eq!(rows[0]["connections"], 2);
        assert!(all.doc["segment"].is_null());
        let text = summary(&all);
        assert!(text.contains("start skew: 1.500 ms between the first and the last run to start (from each run's offset to --start-at)"), "{text}");

        let e = merge(&[segment(0, 3, 0), segment(2, 3, 0)], false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "segments 1 of 3 are missing: add their documents, or pass --partial to merge the segments given"
        );
        let part = merge(&[segment(0, 3, 0), segment(2, 3, 0)], true).unwrap();
        assert_eq!(part.doc["merged"]["missing_segments"], json!([1]));
        assert_eq!(part.doc["segment"], json!({"count": 3, "partial": true}));
        assert!(summary(&part).contains("PARTIAL: segments 1 of 3 are missing"));

        // The same segment run twice (two runs): refused, or merged once with --partial.
        let mut again = segment(1, 3, 0);
        again.doc["run_id"] = "S1-again".into();
        again.name = "again.json".into();
        let twice = [segment(0, 3, 0), segment(1, 3, 0), again, segment(2, 3, 0)];
        let e = merge(&twice, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`again.json` holds segment 1/3, as `s1.json` does; give each segment once, or pass --partial"
        );
        let m = merge(&twice, true).unwrap();
        assert_eq!(m.doc["counters"]["established"], 21);
        assert_eq!(m.duplicates.len(), 1);

        // Another split of the plan, or a whole run beside segments: refused even with --partial.
        let e = merge(&[segment(0, 3, 0), segment(1, 2, 0)], true).unwrap_err();
        assert_eq!(e.to_string(), "`s1.json` is a segment of 2, `s0.json` a segment of 3: merge the segments of one split");
        let e = merge(&[segment(0, 3, 0), input("w.json", doc(7, "W", &[]))], true).unwrap_err();
        assert_eq!(e.to_string(), "`w.json` is a whole run and `s0.json` one of 3 segments: merge the segments of one split, or whole runs");

        // A merge of every segment merges again, and still knows its segments.
        let e = merge(
            &[input("all.json", all.doc.clone()), segment(1, 3, 0)],
            false,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`s1.json` is the same run as `all.json`"),
            "{e}"
        );
        let mut other = segment(1, 3, 0);
        other.doc["run_id"] = "S1-again".into();
        let e = merge(&[input("all.json", all.doc.clone()), other], false).unwrap_err();
        assert!(
            e.to_string()
                .contains("holds segment 1/3, as `all.json` does"),
            "{e}"
        );
    }

    #[test]
    fn fan_out_is_settled_across_documents() {
        use crate::metrics::fanout::FanoutStats;
        // Host A publishes 10 messages of publisher 7 and subscribes nobody; hosts B and C
        // each hold one subscriber session, C's misses message 4.
        let mut logs = [
            FanoutStats::default(),
            FanoutStats::default(),
            FanoutStats::default(),
        ];
        for seq in 1..=10 {
            logs[0].publish(1, 7, seq, 1_000 * seq);
        }
        for (k, log) in logs.iter_mut().enumerate().skip(1) {
            log.session(1, 500, 50_000);
            for seq in (1..=10).filter(|s| k == 1 || *s != 4) {
                log.delivered(7, seq, 100);
            }
        }
        let docs: Vec<Input> = ["A", "B", "C"]
            .iter()
            .zip(&logs)
            .map(|(id, log)| {
                let mut d = doc(5, id, &[]);
                let own = u64::from(*id != "A") * 10 - u64::from(*id == "C");
                d["fanout"] = json!({"published": 10 * u64::from(*id == "A")});
                let counts = json!({"established": 5, "fanout_published": 10 * u64::from(*id == "A"),
                    // Each host alone takes the other hosts' publisher for a stranger's.
                    "fanout_delivered": own, "fanout_foreign": own});
                d["counters"] = counts.clone();
                d["scenarios"][0]["counters"] = counts;
                d["scenarios"][0]["fanout_log"] = log.to_text().into();
                input(id, d)
            })
            .collect();
        let m = merge(&docs, false).unwrap();
        let f = &m.doc["fanout"];
        assert_eq!(f["published"], 10);
        assert_eq!(f["subscriber_sessions"], 2);
        assert_eq!(f["owed"], 20);
        assert_eq!(f["delivered_owed"], 19);
        assert_eq!(f["lost"], 1);
        assert_eq!(f["foreign"], 0);
        assert_eq!(f["broadcast_completion"]["messages_incomplete"], 1);
        let c = &m.doc["counters"];
        assert_eq!(
            (
                c["fanout_owed"].as_u64(),
                c["fanout_lost"].as_u64(),
                c["fanout_foreign"].as_u64()
            ),
            (Some(20), Some(1), Some(0))
        );
        assert_eq!(m.doc["scenarios"][0]["counters"]["fanout_lost"], 1);
        assert!(
            summary(&m).contains("owed 20 deliveries, received 19 (95.0000%), lost 1"),
            "{}",
            summary(&m)
        );
        // The merged log merges again: the same figures.
        let again = merge(&[input("m", m.doc.clone())], false).unwrap();
        assert_eq!(again.doc["fanout"], m.doc["fanout"]);
        // A damaged log names its document and scenario.
        let mut bad = docs
            .iter()
            .map(|i| input(&i.name, i.doc.clone()))
            .collect::<Vec<_>>();
        bad[1].doc["scenarios"][0]["fanout_log"] = "AAAA".into();
        let e = merge(&bad, false).unwrap_err().to_string();
        assert!(
            e.starts_with("`B`: scenario `default`: fan-out log: "),
            "{e}"
        );
    }
}
