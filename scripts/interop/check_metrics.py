"""`sockstorm run --metrics-listen` read by Prometheus' own parsers: the Python prometheus_client
package's text format parser (`prometheus_client.parser`) and its strict OpenMetrics parser
(`prometheus_client.openmetrics.parser`) each parse scrapes taken during a whole run against
`sockstorm serve` without an error; in every scrape each histogram's buckets are cumulative
and its `+Inf` bucket equals its `_count`; the final figures equal the JSON's. Then the Grafana
dashboard (deploy/grafana/sockstorm.json) parses, has its DS_PROMETHEUS input, and queries
only metrics the endpoint exports.

Usage: check_metrics.py SOCKSTORM_BINARY DASHBOARD_JSON. Exits non-zero with the reason."""
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"

binary, dashboard = sys.argv[1], sys.argv[2]


def fail(why):
    print(f"metrics interop FAILED: {why}")
    sys.exit(1)


def scrape(addr, accept):
    """GET /metrics over a plain socket; (content type, body) or None when not served."""
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(f"GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\n"
                      "Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200"):
        fail(f"scrape answered {lines[0]!r}")
    ctype = next((l.split(":", 1)[1].strip() for l in lines[1:]
                  if l.lower().startswith("content-type:")), "")
    return ctype, body.decode()


def check_histograms(families, fmt):
    """Cumulative buckets, +Inf == _count, per series."""
    for fam in families:
        if fam.type != "histogram":
            continue
        series = {}
        for s in fam.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, {"buckets": [], "count": None})
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
        for key, v in series.items():
            b = sorted(v["buckets"])
            if not b or not math.isinf(b[-1][0]):
                fail(f"{fmt}: {fam.name}{dict(key)} has no +Inf bucket")
            counts = [n for _, n in b]
            if any(x > y for x, y in zip(counts, counts[1:])):
                fail(f"{fmt}: {fam.name}{dict(key)} buckets are not cumulative: {counts}")
            if counts[-1] != v["count"]:
                fail(f"{fmt}: {fam.name}{dict(key)} +Inf {counts[-1]} != _count {v['count']}")


def value(families, sample, labels=None):
    for fam in families:
        for s in fam.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                return s.value
    return None


def watched_run(args, name):
    """Runs `sockstorm run ARGS` with the endpoint, parsing a scrape in each format every
    0.2 s until the final figures are in; returns (scrape counts, final families, JSON)."""
    result = os.path.join(tmp, f"{name}.json")
    run = subprocess.Popen(
        [binary, "run", *args, "--metrics-listen", "127.0.0.1:0", "--metrics-linger", "30s",
         "-q", "--json", result],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = run.stderr.readline()
        m = re.search(r"metrics on http://([0-9.:]+)/metrics", line)
        if not m:
            fail(f"no `metrics on` line: {line!r}")
        addr = m.group(1)
        scrapes = {"text": 0, "openmetrics": 0}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for fmt, accept in (("openmetrics", OPENMETRICS), ("text", "text/plain")):
                got = scrape(addr, accept)
                if got is None:
                    fail("the endpoint went away before serving the final figures")
                ctype, body = got
                want = ("application/openmetrics-text" if fmt == "openmetrics"
                        else "text/plain; version=0.0.4")
                if not ctype.startswith(want):
                    fail(f"{fmt}: content type {ctype!r}")
                parse = openmetrics_families if fmt == "openmetrics" else text_families
                try:
                    families = list(parse(body))
                except Exception as e:  # the parser's own error is the finding
                    fail(f"{fmt} parser: {type(e).__name__}: {e}")
                check_histograms(families, fmt)
                scrapes[fmt] += 1
                if fmt == "openmetrics":
                    # Declared families (a family shows once it has a series).
                    types.update(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M))
                if value(families, "sockstorm_run_finished") == 1:
                    # This scrape ended the linger: the process exits.
                    if run.wait(timeout=30) not in (0, 3):
                        fail(f"the run exited {run.returncode}: {run.stderr.read()}")
                    return scrapes, families, json.load(open(result))
            time.sleep(0.2)
        fail("the run did not finish within 60 s")
    finally:
        if run.poll() is None:
            run.kill()


tmp = tempfile.mkdtemp()
types = {}
gw = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                      stderr=subprocess.DEVNULL, text=True)
try:
    line = gw.stdout.readline()
    m = re.search(r"ws://(127\.0\.0\.1:\d+)/", line)
    if not m:
        fail(f"the gateway did not say where it listens: {line!r}")
    scrapes, families, doc = watched_run(
        [f"ws://{m.group(1)}/ws", "-c", "100", "--connect-rate", "200", "--message", "metrics",
         "--message-rate", "5", "--ping-interval", "1s", "-d", "4s"], "echo")
    for sample, counter in (("sockstorm_ws_sessions_total", "established"),
                            ("sockstorm_ws_msgs_received_total", "msgs_received"),
                            ("sockstorm_ws_msgs_sent_total", "msgs_sent")):
        got = value(families, sample, {"scenario": "default"})
        if got != doc["counters"][counter]:
            fail(f"final {sample} {got} != the JSON's {counter} {doc['counters'][counter]}")
    for h in ("ws_connecting", "ws_msg_rtt", "ws_ping"):
        got = value(families, f"sockstorm_{h}_seconds_count", {"scenario": "default"})
        if got != doc["histograms"][h]["count"]:
            fail(f"final sockstorm_{h}_seconds_count {got} != the JSON's {doc['histograms'][h]['count']}")
    if min(scrapes.values()) < 2:
        fail(f"too few scrapes: {scrapes}")
finally:
    gw.kill()
# A run whose attempts are refused (nothing listens on port 9): the failures family, by cause.
_, families, doc = watched_run(["ws://127.0.0.1:9/ws", "-c", "5", "-d", "1s"], "refused")
if value(families, "sockstorm_ws_failures_total", {"cause": "refused"}) != doc["failures"].get("refused"):
    fail(f"refused failures differ from the JSON's {doc['failures']}")

# The names a query may use (from the OpenMetrics `# TYPE` lines): a counter family's name + _total, a histogram's + _bucket,
# _count and _sum, a gauge's as is.
exported = set()
for name, kind in types.items():
    if kind == "counter":
        exported.add(name + "_total")
    elif kind == "histogram":
        exported.update(name + s for s in ("_bucket", "_count", "_sum"))
    else:
        exported.add(name)
try:
    dash = json.load(open(dashboard))
except ValueError as e:
    fail(f"{dashboard} is not JSON: {e}")
if not any(i.get("name") == "DS_PROMETHEUS" and i.get("pluginId") == "prometheus"
           for i in dash.get("__inputs", [])):
    fail(f"{dashboard}: no DS_PROMETHEUS datasource input")
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("definition")]
used = {n for e in exprs for n in re.findall(r"\bsockstorm_[a-z0-9_]+", e)}
unknown = sorted(used - exported)
if unknown or not used:
    fail(f"{dashboard} queries metrics the endpoint does not export: {unknown}")
print(f"metrics interop ok: prometheus_client parsed {scrapes['text']} text and "
      f"{scrapes['openmetrics']} OpenMetrics scrapes (buckets cumulative, +Inf = _count), final "
      f"figures = the JSON's; the dashboard's {len(exprs)} queries use {len(used)} exported metrics")
