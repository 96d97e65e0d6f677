//! The HTML report through the binary: `run --html` after a real run against the in-process
//! gateway, `sockstorm report` of two documents, and the refusals (exit 2, naming the file).
//! That the page draws in a browser is scripts/interop/report_chromium.sh's part.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

/// The embedded data's text, and the page without it.
fn split_data(html: &str) -> (&str, String) {
    let open = "<script type=\"application/json\" id=\"sockstorm-results\">";
    let start = html.find(open).expect("embedded data") + open.len();
    let len = html[start..].find("</script>").unwrap();
    (
        &html[start..start + len],
        format!("{}{}", &html[..start], &html[start + len..]),
    )
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn run_html_and_a_report_of_two_documents() {
    let _l = lock();
    let gw = gateway(None);
    let url = format!("ws://{}/", gw.local_addr());
    let run = |name: &str, html: Option<&Path>| {
        let json = json_path(name);
        let mut args = vec![
            "run",
            url.as_str(),
            "-c",
            "20",
            "--connect-rate",
            "200",
            "-d",
            "2s",
            "--message",
            "hi",
            "--message-rate",
            "5",
            "-q",
            "--json",
            json.to_str().unwrap(),
        ];
        if let Some(h) = html {
            args.extend(["--html", h.to_str().unwrap()]);
        }
        let o = sockstorm(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        json
    };
    let dir = json_path("report").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let first_html = dir.join("first.html");
    let first = run("report-first", Some(&first_html));
    let second = run("report-second", None);
    gw.shutdown();

    // `run --html`: the run's own document, as the JSON has it.
    let page = std::fs::read_to_string(&first_html).unwrap();
    let (data, _) = split_data(&page);
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["documents"].as_array().unwrap().len(), 1);
    assert_eq!(v["documents"][0]["doc"], read_json(&first));
    assert!(v["documents"][0]["spectra"]["ws_msg_rtt"]["points"]
        .as_array()
        .is_some_and(|p| p.len() > 2));

    // `report A B`: both, in order, named by their files.
    let out = dir.join("compare.html");
    let o = sockstorm(&[
        "report",
        first.to_str().unwrap(),
        second.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = std::fs::read_to_string(&out).unwrap();
    let (data, rest) = split_data(&page);
    assert!(!data.to_ascii_lowercase().contains("</script"));
    let v: Value = serde_json::from_str(data).unwrap();
    let docs = v["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["name"], first.to_str().unwrap());
    assert_eq!(docs[1]["name"], second.to_str().unwrap());
    assert_eq!(docs[1]["doc"], read_json(&second));
    assert_ne!(docs[0]["doc"]["run_id"], docs[1]["doc"]["run_id"]);
    // Nothing outside the data points anywhere (the documents hold the ws:// URL, masked).
    let lower = rest.to_ascii_lowercase();
    assert!(!lower.contains("http://") && !lower.contains("https://"));
    assert!(!lower.contains(" src=") && !lower.contains(" href="));
    assert!(page.len() < 400 * 1024, "{} bytes", page.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refusals_name_the_file_and_exit_2() {
    let dir = json_path("report-refusals").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.json");
    let out = dir.join("r.html");
    let o = sockstorm(&[
        "report",
        missing.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.json"), "{}", stderr(&o));

    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"not\": \"a result\"}").unwrap();
    let o = sockstorm(&["report", bad.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.json"), "{}", stderr(&o));
    assert!(!out.exists());

    // A path the page cannot go to is found before anything is read or run.
    let nowhere = dir.join("no/such/dir/r.html");
    let o = sockstorm(&[
        "report",
        bad.to_str().unwrap(),
        "-o",
        nowhere.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("-o") && stderr(&o).contains("does not exist"));
    let o = sockstorm(&[
        "run",
        "ws://127.0.0.1:9/",
        "-d",
        "30s",
        "--html",
        nowhere.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--html") && stderr(&o).contains("r.html"));
    let o = sockstorm(&["run", "ws://127.0.0.1:9/", "-d", "30s", "--html", "-"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A scenario file cannot name the page (it would be ignored): the flag can.
    let file = dir.join("s.toml");
    std::fs::write(&file, "url = \"ws://127.0.0.1:9/\"\nhtml = \"r.html\"\n").unwrap();
    let o = sockstorm(&["run", file.to_str().unwrap(), "-d", "30s"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--html FILE on the command line"));
    let _ = std::fs::remove_dir_all(&dir);
}
