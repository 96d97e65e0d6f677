//! The self-contained HTML report (`sockstorm report`, `run --html`): one file that opens
//! offline and fetches nothing.
//!
//! The model: the result documents themselves are the report's data. Each is embedded whole
//! (it is already free of secrets: header values, tokens and query values are masked when it is
//! written) in a `<script type="application/json">`, next to what only Rust can compute
//! cheaply, the percentile spectrum of every histogram from its `hdr` (`spectrum`). A small
//! hand-written script (`report.js`) builds the charts and tables from that data with uPlot
//! (vendored under `assets/uplot/`, MIT, see its README), both inlined. Several documents
//! overlay as a comparison: one series per document on the same axes, seconds from each run's
//! start. A Content-Security-Policy in the page forbids every fetch, so a report that tried one
//! would say so in the browser's console instead of quietly reaching out.
//!
//! After drawing, the script writes a self-check into `<pre id="selfcheck">` (charts drawn,
//! canvas sizes and painted pixels, script errors, resources loaded), which
//! scripts/interop/report_chromium.sh reads from headless Chromium.

mod spectrum;

use crate::results::merge::Input;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

/// uPlot's script, unmodified (its first line is a banner comment with the project's URL).
const UPLOT_JS: &str = include_str!("assets/uplot/uPlot.iife.min.js");
/// uPlot's stylesheet, unmodified.
const UPLOT_CSS: &str = include_str!("assets/uplot/uPlot.min.css");
/// uPlot's licence, copied into every report beside the script.
const UPLOT_LICENSE: &str = include_str!("assets/uplot/LICENSE");
/// The vendored uPlot's version (assets/uplot/README.md).
const UPLOT_VERSION: &str = "1.6.32";
/// The report's own script: reads the embedded data, draws the charts and tables.
const REPORT_JS: &str = include_str!("report.js");
/// The report's own stylesheet.
const REPORT_CSS: &str = include_str!("report.css");

/// The id of the `<script type="application/json">` holding the data.
pub const DATA_ID: &str = "sockstorm-results";

/// The report of `docs` (one or more result documents; several are compared), as one HTML
/// page. Histograms whose `hdr` does not decode are drawn from their percentile fields.
pub fn render(docs: &[Input]) -> String {
    let data = json!({
        "tool": {"name": "sockstorm", "version": env!("CARGO_PKG_VERSION")},
        "documents": docs.iter().map(document).collect::<Vec<_>>(),
    });
    let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
    let mut html = String::with_capacity(UPLOT_JS.len() + 64 * 1024);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    // Everything is inline; nothing may be fetched (a data: image is the most a canvas export
    // would need).
    html.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\n",
    );
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        html,
        "<title>sockstorm report: {}</title>",
        escape_html(&names.join(" vs "))
    );
    let _ = writeln!(html, "<style>\n{UPLOT_CSS}\n</style>");
    let _ = writeln!(html, "<style>\n{REPORT_CSS}</style>\n</head>\n<body>");
    html.push_str(
        "<main id=\"report\"><noscript>This report draws its charts and tables with \
         JavaScript; the result documents are in the script element \
         <code>sockstorm-results</code> of this file.</noscript></main>\n",
    );
    let _ = writeln!(
        html,
        "<script type=\"application/json\" id=\"{DATA_ID}\">{}</script>",
        script_json(&data)
    );
    let _ = writeln!(html, "<script>\n{}\n</script>", uplot_script());
    let _ = writeln!(html, "<script>\n{REPORT_JS}</script>\n</body>\n</html>");
    html
}

/// One document's entry in the data: its name (the file, or `-#k` on stdin), the document,
/// and the spectrum of each of its histograms that holds samples.
fn document(input: &Input) -> Value {
    let mut spectra = Map::new();
    if let Some(hists) = input.doc["histograms"].as_object() {
        for (name, h) in hists {
            if let Some(s) = spectrum::spectrum(h) {
                spectra.insert(name.clone(), s);
            }
        }
    }
    json!({"name": input.name, "doc": input.doc, "spectra": spectra})
}

/// `v` as JSON that cannot end the `<script>` element it is in: every `<`, `>` and `&` (only
/// ever inside JSON strings) written as a `\u` escape, which `JSON.parse` reads back as the
/// same character. So neither `</script` nor `<!--` can appear in it.
fn script_json(v: &Value) -> String {
    let text = v.to_string();
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

/// uPlot's script with its banner line (the project's URL) replaced by a comment naming it,
/// its version and its licence: the report then holds no `http(s)://` outside the data.
fn uplot_script() -> String {
    let body = match UPLOT_JS.split_once('\n') {
        Some((first, rest)) if first.starts_with("/*!") => rest,
        _ => UPLOT_JS,
    };
    format!(
        "/*! uPlot v{UPLOT_VERSION} (github.com/leeoniya/uPlot), vendored unmodified but for \
         this comment; its licence:\n\n{}\n*/\n{body}",
        UPLOT_LICENSE.trim_end().replace("*/", "* /")
    )
}

/// `s` safe in HTML text.
fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, doc: Value) -> Input {
        Input {
            name: name.into(),
            doc,
        }
    }

    /// The text of the embedded data element, and the page without it.
    fn split_data(html: &str) -> (&str, String) {
        let open = format!("<script type=\"application/json\" id=\"{DATA_ID}\">");
        let start = html.find(&open).unwrap() + open.len();
        let len = html[start..].find("</script>").unwrap();
        let rest = format!("{}{}", &html[..start], &html[start + len..]);
        (&html[start..start + len], rest)
    }

    #[test]
    fn nothing_breaks_out_of_the_data_and_nothing_points_outside() {
        let hostile = json!({
            "schema_version": 2,
            "verdict": "ok",
            "settings": {"url": "wss://gw.example/ws?a=</script><script>alert(1)</script><!--",
                          "auth": "https://auth.example/token"},
            "histograms": {},
        });
        let html = render(&[input("a</script>.json", hostile.clone())]);
        let (data, rest) = split_data(&html);
        assert!(!data.to_ascii_lowercase().contains("</script"), "{data}");
        assert!(!data.contains("<!--"));
        let back: Value = serde_json::from_str(data).unwrap();
        assert_eq!(back["documents"][0]["doc"], hostile);
        assert_eq!(back["documents"][0]["name"], "a</script>.json");
        // Outside the data: no address to fetch from, the scripts end where they should.
        let lower = rest.to_ascii_lowercase();
        assert!(!lower.contains("http://") && !lower.contains("https://"));
        assert_eq!(lower.matches("<script").count(), 3);
        assert_eq!(lower.matches("</script>").count(), 3);
        assert!(!lower.contains(" src=") && !lower.contains(" href="));
        assert!(lower.contains("content-security-policy"));
        assert!(html.contains("<title>sockstorm report: a&lt;/script&gt;.json</title>"));
        // uPlot's licence travels with it.
        assert!(html.contains("Copyright (c) 2022 Leon Sorokin"));
    }

    #[test]
    fn the_vendored_files_are_what_the_page_expects() {
        assert!(UPLOT_JS.starts_with(&format!(
            "/*! https://github.com/leeoniya/uPlot (v{UPLOT_VERSION}) */\n"
        )));
        for (name, text) in [
            ("uPlot.iife.min.js", UPLOT_JS),
            ("report.js", REPORT_JS),
            ("uPlot.min.css", UPLOT_CSS),
            ("report.css", REPORT_CSS),
        ] {
            let lower = text.to_ascii_lowercase();
            assert!(
                !lower.contains("</script") && !lower.contains("</style"),
                "{name}"
            );
        }
        assert!(!uplot_script().contains("http"));
    }

    #[test]
    fn several_documents_are_all_there_with_their_spectra() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        h.saturating_record_n(100, 99);
        h.saturating_record(9_000);
        let doc = |id: &str| {
            json!({"schema_version": 2, "run_id": id,
                   "histograms": {"ws_connecting": crate::results::hdr::to_json(&h),
                                  "tcp_connect": {"count": 0}}})
        };
        let html = render(&[input("base.json", doc("r1")), input("cand.json", doc("r2"))]);
        let (data, _) = split_data(&html);
        let v: Value = serde_json::from_str(data).unwrap();
        let docs = v["documents"].as_array().unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["name"], "base.json");
        assert_eq!(docs[1]["doc"]["run_id"], "r2");
        for d in docs {
            let s = &d["spectra"]["ws_connecting"];
            assert_eq!(s["source"], "hdr");
            assert_eq!(s["points"].as_array().unwrap().last().unwrap()[1], h.max());
            assert!(d["spectra"].get("tcp_connect").is_none());
        }
        assert!(html.contains("<title>sockstorm report: base.json vs cand.json</title>"));
    }
}
