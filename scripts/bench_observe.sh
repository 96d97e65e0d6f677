#!/usr/bin/env bash
# The cost of watching a run (issue 14): client CPU and RSS per open connection with
# --metrics-listen scraped every second, --hdr-log and --csv, against the same run without
# them, on the echo and storm benchmarks; then how long `sockstorm report` takes for a
# 10-minute run's document. Client on CPU 0, gateway on CPU 1. Each pair runs twice, plain and
# watched interleaved, so drift of this shared machine falls on both. Ratios, not seconds.
# Usage: scripts/bench_observe.sh   (NO_BUILD=1: use the release binary as it is)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${NO_BUILD:-}" ]; then cargo build --release --bins >/dev/null; fi
bin=./target/release/sockstorm
tmp=$(mktemp -d)
gw=
scraper=
cleanup() { kill $gw $scraper 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
port=$((20000 + RANDOM % 10000))
mport=$((port + 1))
taskset -c 1 "$bin" serve --listen "127.0.0.1:$port" --cpus 1 --duration 900s -q >"$tmp/gw.out" &
gw=$!
for _ in $(seq 50); do grep -q listening "$tmp/gw.out" 2>/dev/null && break; sleep 0.1; done
url="ws://127.0.0.1:$port/bench"

# One run: $1 name, $2 watched (0/1), rest: run flags. Prints "cpu_s rss_per_conn".
one() {
  local name=$1 watched=$2; shift 2
  local extra=()
  if [ "$watched" = 1 ]; then
    extra=(--metrics-listen "127.0.0.1:$mport" --hdr-log "$tmp/$name.hlog" --csv "$tmp/$name.csv")
    ( while :; do curl -s -o /dev/null "http://127.0.0.1:$mport/metrics" || true; sleep 1; done ) &
    scraper=$!
  fi
  taskset -c 0 "$bin" run "$url" --cpus 0 -q --json "$tmp/$name.json" "${extra[@]}" "$@" >/dev/null || true
  if [ -n "$scraper" ]; then kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; scraper=; fi
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); p=r['process']; print(round(p['cpu_user_s']+p['cpu_sys_s'],3), p['rss_per_open_connection_bytes'], r['counters']['msgs_received'], r['counters']['established'])" "$tmp/$name.json"
}

pair() { # file name, label, run flags
  local name=$1 label=$2; shift 2
  local a1 b1 a2 b2
  a1=$(one "$name-a1" 0 "$@"); b1=$(one "$name-b1" 1 "$@")
  b2=$(one "$name-b2" 1 "$@"); a2=$(one "$name-a2" 0 "$@")
  python3 - "$label" "$a1" "$a2" "$b1" "$b2" <<'PY'
import sys
label, runs = sys.argv[1], [list(map(float, r.split())) for r in sys.argv[2:]]
(a1, a2, b1, b2) = runs
cpu_a, cpu_b = a1[0] + a2[0], b1[0] + b2[0]
rss_a, rss_b = (a1[1] + a2[1]) / 2, (b1[1] + b2[1]) / 2
print(f"{label}: client CPU plain {a1[0]:.3f}+{a2[0]:.3f} s, watched {b1[0]:.3f}+{b2[0]:.3f} s: "
      f"watched/plain = {cpu_b / cpu_a:.3f}; RSS per open connection plain {rss_a:.0f} B, watched {rss_b:.0f} B "
      f"({rss_b / rss_a:.3f}); messages received {a1[2]:.0f}/{a2[2]:.0f} vs {b1[2]:.0f}/{b2[2]:.0f}")
PY
}

pair echo "echo 2000 conns x 10/s, 15 s" -c 2000 --connect-rate 4000 -d 15s --message hello --message-rate 10
pair storm "storm 10000 conns at 5000/s, held 10 s" -c 10000 --connect-rate 5000 -d 12s

# Report generation for a 10-minute run: a real 60 s run's document with its timeline
# repeated to 600 seconds (the page's size and work grow with the timeline; histograms are
# whole already).
taskset -c 0 "$bin" run "$url" --cpus 0 -q -c 1000 --connect-rate 5000 -d 60s --message hello \
  --message-rate 10 --json "$tmp/m60.json" >/dev/null || true
python3 - "$tmp" <<'PY'
import json, sys, copy
d = json.load(open(sys.argv[1] + "/m60.json"))
tl = d["timeline"]
out = []
for k in range(600):
    s = copy.deepcopy(tl[k % len(tl)])
    s["t_s"] = round(k + 0.5, 1)
    s["unix_s"] = tl[0]["unix_s"] + k
    out.append(s)
d["timeline"] = out
d["elapsed_s"] = 600.0
json.dump(d, open(sys.argv[1] + "/m600.json", "w"))
PY
best=
for _ in 1 2 3 4 5; do
  t0=$(date +%s%N); taskset -c 0 "$bin" report "$tmp/m600.json" -o "$tmp/m600.html" >/dev/null 2>&1; t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 )); if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
done
echo "report of a 600-second document ($(stat -c %s "$tmp/m600.json") bytes): best of 5 ${best} ms, page $(stat -c %s "$tmp/m600.html") bytes"
