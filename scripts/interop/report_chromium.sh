#!/usr/bin/env bash
# The HTML report in a real browser (issue 14): Debian's Chromium, headless, opens reports made
# from short real runs, with every way out of the file closed (host names resolve nowhere, the
# proxy is a dead port, the page's own CSP forbids fetches). It checks:
#   - no console message at all (a script error, a blocked fetch and a CSP violation each log one;
#     a probe page first shows that they do);
#   - the report's self-check (<pre id="selfcheck">, written by src/report/report.js after
#     drawing): every chart has a canvas of non-zero size with data points and painted, coloured
#     pixels, the page recorded no script error and loaded no resource;
#   - the HTML names no http(s) address in a src= or href=, and none at all outside the embedded
#     result documents;
#   - `run --html` writes the same kind of page at the end of a run.
# A screenshot is saved to target/report-screenshot.png (the comparison report).
# Usage: scripts/interop/report_chromium.sh [path/to/sockstorm]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-./target/release/sockstorm}

if ! command -v chromium >/dev/null 2>&1; then
  apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }
fi
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# Headless Chromium with no way out: every name resolves nowhere, every request goes to a
# dead proxy, nothing of its own phones home.
browse() { # browse ARGS… FILE
  timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$(mktemp -d -p "$tmp")" --host-resolver-rules="MAP * ~NOTFOUND" \
    --proxy-server=127.0.0.1:9 --enable-logging=stderr --v=0 --virtual-time-budget=5000 "$@"
}

# The detector works: a page that logs an error and tries two fetches shows three console lines.
cat > "$tmp/probe.html" <<'EOF'
<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'"></head>
<body><img src="https://example.com/x.png"><script>console.error("probe"); fetch("http://example.com/").catch(function () {});</script></body></html>
EOF
browse --dump-dom "file://$tmp/probe.html" > /dev/null 2> "$tmp/probe.err"
probe=$(grep -c ':CONSOLE' "$tmp/probe.err" || true)
[ "$probe" -ge 3 ] || { echo "FAIL: the console detector saw $probe lines on the probe page (want >= 3)"; exit 1; }

serve() { # serve NAME ARGS…: a built-in gateway (stopped on exit); its address in $tmp/NAME.addr
  "$BIN" serve --listen 127.0.0.1:0 --duration 40s "${@:2}" > "$tmp/$1.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q 'listening on' "$tmp/$1.out" 2>/dev/null && break; sleep 0.1; done
  grep -o '127\.0\.0\.1:[0-9]*' "$tmp/$1.out" | head -1 > "$tmp/$1.addr" || true
}
serve events --publish-rate 5
serve tls --tls --ca-out "$tmp/ca.pem" --close-after 2s:1012
serve capped --max-connections 300
events=$(cat "$tmp/events.addr")
capped=$(cat "$tmp/capped.addr")
tls=$(cat "$tmp/tls.addr")
[ -n "$events" ] && [ -n "$tls" ] && [ -n "$capped" ] || { echo "FAIL: a gateway did not start"; exit 1; }
# A port nothing listens on: a run whose connections are refused.
dead=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# Baseline: stages, echoes, pings, one-way latency of the gateway's events, a threshold;
# --html writes its report at the end.
"$BIN" run "ws://$events/" --stages 1s:150,2s:150,1s:0 --connect-rate 400 --message hi \
  --message-rate 4 --ping-interval 1s --latency-from json:ts_us --latency-unit us \
  --threshold 'ws_connecting: p(95)<500ms' -q --json "$tmp/baseline.json" \
  --html "$tmp/baseline.html" > "$tmp/baseline.txt"
# Candidate: TLS with resumption, the gateway closing every session after 2 s (1012), reconnects.
"$BIN" run "wss://$tls/" --cacert "$tmp/ca.pem" --resume 0.5 -c 100 --connect-rate 200 -d 4s \
  --message hi --message-rate 2 -q --json "$tmp/candidate.json" > "$tmp/candidate.txt" || true
# Refused: failures by cause (exit 3 by design).
"$BIN" run "ws://127.0.0.1:$dead/" -c 20 --connect-rate 20 -d 2s --connect-timeout 1s -q \
  --json "$tmp/refused.json" > "$tmp/refused.txt" && { echo "FAIL: a refused run exited 0"; exit 1; }
"$BIN" report "$tmp/baseline.json" "$tmp/candidate.json" "$tmp/refused.json" -o "$tmp/compare.html" 2> /dev/null

# A capacity search against the gateway capped at 300 open WebSockets, with its report.
"$BIN" find-max connections "ws://$capped/" --start 100 --step-hold 1s --connect-rate 1000 -q \
  --json "$tmp/search.json" --html "$tmp/search.html" > "$tmp/search.txt" \
  || { echo "FAIL: find-max against a capped gateway"; cat "$tmp/search.txt"; exit 1; }

check() { # check NAME.html MIN_CHARTS
  local page=$tmp/$1
  browse --dump-dom "file://$page" > "$page.dom" 2> "$page.err"
  if grep -q ':CONSOLE' "$page.err"; then
    echo "FAIL: $1: console messages:"; grep ':CONSOLE' "$page.err" | head; exit 1
  fi
  "$PY" - "$page" "$page.dom" "$2" <<'EOF'
import json, re, sys
page, dom, want = sys.argv[1], open(sys.argv[2]).read(), int(sys.argv[3])
html = open(page).read()
m = re.search(r'<pre id="selfcheck">(\{.*?\})</pre>', dom)
assert m, "no self-check in the rendered page: report.js did not finish"
sc = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
assert sc["errors"] == [], sc["errors"]
assert sc["resources"] == [], ("resources loaded", sc["resources"])
charts = sc["charts"]
assert len(charts) >= want and sc["canvases"] == len(charts), (len(charts), sc["canvases"], want)
for c in charts:
    assert c["width"] > 0 and c["height"] > 0 and c["points"] > 0 and c["colored"] > 0, c
assert sc["ok"], sc
# No address to fetch from: none in src=/href=, and no http(s) text outside the embedded data.
assert not re.search(r'''(src|href)\s*=\s*["']?\s*(https?:)?//''', html, re.I), "src/href to the network"
data = re.search(r'<script type="application/json" id="sockstorm-results">(.*?)</script>', html, re.S)
assert data, "no embedded data"
rest = html[:data.start(1)] + html[data.end(1):]
assert not re.search(r"https?://", rest, re.I), "an http(s) address outside the data"
assert "</script" not in data.group(1).lower()
docs = json.loads(data.group(1))["documents"]
print("   %s: %d documents, %d charts drawn (%s), no console message, no request, %d KiB"
      % (page.rsplit("/", 1)[1], len(docs), len(charts), ", ".join(c["id"] for c in charts), len(html) // 1024))
EOF
}
# Baseline: open, connects, messages, one-way latency, and a spectrum per histogram with samples.
check baseline.html 8
# Comparison: the above plus failures by cause and TLS per second.
check compare.html 10
grep -q 'refused' "$tmp/compare.html" || { echo "FAIL: the refused run is not in the comparison"; exit 1; }
# The search: its steps drawn (chart-find-max-0) and its table and verdict in the page.
check search.html 4
grep -q 'chart-find-max-0' "$tmp/search.html.dom" && grep -q 'Capacity search (find-max)' "$tmp/search.html.dom" \
  && grep -q 'the gateway refuses upgrades' "$tmp/search.html.dom" \
  || { echo "FAIL: the search's section is not in its report"; exit 1; }

mkdir -p target
browse --hide-scrollbars --window-size=1400,3000 --screenshot="$PWD/target/report-screenshot.png" \
  "file://$tmp/compare.html" > /dev/null 2>&1
[ -s target/report-screenshot.png ] || { echo "FAIL: no screenshot"; exit 1; }
echo "   screenshot: target/report-screenshot.png"
