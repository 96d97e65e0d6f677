#!/usr/bin/env bash
# Client-side benchmarks against the built-in gateway, client pinned to CPU 0 and the gateway
# to CPU 1 (see BENCHMARKS.md). Figures are ratios from one run each (CPU-seconds per 10k
# connections, bytes per connection, messages per CPU-second), because this machine is shared.
# Usage: scripts/bench.sh [storm|rss|echo|replies|streams|merge|merge-fanout|all]   (default all)
# NO_BUILD=1 uses the release binary as it is (build it first, under the shared cargo lock).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --bins >/dev/null 2>&1 || cargo build --release --bins
fi
bin=./target/release/sockstorm
tmp=$(mktemp -d)
gw_pid=
cleanup() { [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

start_gateway() { # port
  taskset -c 1 "$bin" serve --listen "127.0.0.1:$1" --cpus 1 --duration 600s -q > "$tmp/gw.out" &
  gw_pid=$!
  for _ in $(seq 50); do grep -q listening "$tmp/gw.out" 2>/dev/null && return; sleep 0.1; done
  echo "gateway did not start"; exit 1
}

field() { python3 -c "import json,sys; r=json.load(open('$1')); print(eval(sys.argv[1]))" "$2"; }

port=$((20000 + RANDOM % 10000))
start_gateway "$port"
url="ws://127.0.0.1:$port/bench"

if [ "$what" = all ] || [ "$what" = storm ]; then
  # 10,000 connections at 5,000/s held for 10 s (12 s run): CPU-seconds for the whole storm.
  taskset -c 0 "$bin" run "$url" -c 10000 --connect-rate 5000 -d 12s --cpus 0 -q --json "$tmp/storm.json" >/dev/null
  cpu=$(field "$tmp/storm.json" "round(r['process']['cpu_user_s'] + r['process']['cpu_sys_s'], 3)")
  echo "storm: 10000 conns, client CPU ${cpu} s (user $(field "$tmp/storm.json" "r['process']['cpu_user_s']") sys $(field "$tmp/storm.json" "r['process']['cpu_sys_s']")), established $(field "$tmp/storm.json" "r['counters']['established']"), failures $(field "$tmp/storm.json" "r['failures']")"
  # Connection rate: as fast as the pair allows, 10,000 connections.
  taskset -c 0 "$bin" run "$url" -c 10000 --connect-rate 100000 -d 6s --cpus 0 -q --json "$tmp/rate.json" >/dev/null
  echo "rate: 10000 conns opened in $(field "$tmp/rate.json" "r['ramp_s']") s = $(field "$tmp/rate.json" "r['established_per_s']") established/s, CPU $(field "$tmp/rate.json" "round(r['process']['cpu_user_s'] + r['process']['cpu_sys_s'], 3)") s, failures $(field "$tmp/rate.json" "r['failures']")"
fi

if [ "$what" = all ] || [ "$what" = rss ]; then
  taskset -c 0 "$bin" run "$url" -c 15000 --connect-rate 5000 -d 8s --cpus 0 -q --json "$tmp/rss.json" >/dev/null
  echo "rss: 15000 idle conns, RSS $(field "$tmp/rss.json" "r['process']['rss_before_bytes']") -> $(field "$tmp/rss.json" "r['process']['rss_at_peak_open_bytes']") bytes = $(field "$tmp/rss.json" "r['process']['rss_per_open_connection_bytes']") B per open connection (peak open $(field "$tmp/rss.json" "r['process']['peak_open']"))"
fi

if [ "$what" = all ] || [ "$what" = echo ]; then
  for tr in 1ms 20ms; do
    taskset -c 0 "$bin" run "$url" -c 1000 --connect-rate 5000 -d 10s --cpus 0 -q --message 0123456789abcdef0123456789abcdef \
      --message-rate 100 --timer-resolution "$tr" --json "$tmp/echo.json" >/dev/null
    echo "echo ($tr grid): $(field "$tmp/echo.json" "r['counters']['msgs_received']") msgs matched, client CPU $(field "$tmp/echo.json" "round(r['process']['cpu_user_s'] + r['process']['cpu_sys_s'], 3)") s = $(field "$tmp/echo.json" "int(r['counters']['msgs_received'] / (r['process']['cpu_user_s'] + r['process']['cpu_sys_s']))") msgs per client-CPU-second, rtt p50 $(field "$tmp/echo.json" "r['histograms']['ws_msg_rtt']['p50_us']") us p99 $(field "$tmp/echo.json" "r['histograms']['ws_msg_rtt']['p99_us']") us, unanswered $(field "$tmp/echo.json" "r['counters']['msgs_unanswered']")"
  done
fi

if [ "$what" = all ] || [ "$what" = replies ]; then
  # Reply matching vs echo matching, 1,000 connections x 100 msg/s, the same templated text
  # (echoed by the gateway: the same server work), messages per client-CPU-second; then the
  # gateway's ack route (apply_operation -> operation_applied{opId}).
  body='{"action":"x","opId":"{{conn_id}}-{{seq}}","text":"hello"}'
  common=(-c 1000 --connect-rate 5000 -d 10s --cpus 0 -q)
  per_cpu() { field "$1" "int($2 / (r['process']['cpu_user_s'] + r['process']['cpu_sys_s']))"; }
  taskset -c 0 "$bin" run "$url" "${common[@]}" --message "$body" --message-rate 100 --json "$tmp/e.json" >/dev/null
  e=$(per_cpu "$tmp/e.json" "r['counters']['msgs_received']")
  taskset -c 0 "$bin" run "$url" "${common[@]}" --request "op=$body" --request-rate op=100 \
    --request-reply op=json:opId --json "$tmp/q.json" >/dev/null
  q=$(per_cpu "$tmp/q.json" "r['counters']['replies_received']")
  taskset -c 0 "$bin" run "$url" "${common[@]}" --request 'op={"action":"apply_operation","opId":"{{conn_id}}-{{seq}}","text":"hello"}' \
    --request-rate op=100 --request-reply op=json:opId --json "$tmp/a.json" >/dev/null
  a=$(per_cpu "$tmp/a.json" "r['counters']['replies_received']")
  echo "replies: templated echo ${e} msgs/client-CPU-s ($(field "$tmp/e.json" "r['counters']['msgs_unanswered']") unanswered); json:opId reply to the same echo ${q} ($(field "$tmp/q.json" "r['counters']['replies_unanswered']") unanswered) = $(python3 -c "print(round($q/$e, 3))") x echo; ack route ${a} ($(field "$tmp/a.json" "r['counters']['replies_unanswered']") unanswered)"
  # Memory of pending replies: 1,000 connections, 20 requests/s each that no reply matches
  # (the echo is not the rule's json:type=never), RSS sampled 5.2 s in (about 100 pending per
  # connection) against the same run without requests.
  rss_at() { # json, extra args...: VmRSS (kB) 5.2 s into the run
    local out=$1; shift
    taskset -c 0 "$bin" run "$url" -c 1000 --connect-rate 5000 -d 6s --cpus 0 -q --json "$out" "$@" >/dev/null &
    local pid=$!; sleep 5.2
    awk '/VmRSS/ {print $2}' "/proc/$pid/status"; wait "$pid"
  }
  base=$(rss_at "$tmp/r0.json")
  pend=$(rss_at "$tmp/r1.json" --request "op=$body" --request-rate op=20 --request-reply op=json:opId \
    --request-reply-on op=json:type=never --reply-timeout 60s --drain 0s)
  echo "pending replies: RSS ${base} kB without, ${pend} kB with about 100 pending per connection = $(( (pend - base) * 1024 / 1000 )) B per connection ($(( (pend - base) * 1024 / 100000 )) B per pending reply)"
fi

if [ "$what" = all ] || [ "$what" = streams ]; then
  # Stream sequence tracking: 500 connections x 2 streams x 50 quotes/s from a second gateway;
  # client CPU per message with and without `--stream-seq/--stream-key` (and a check).
  sport=$((port + 1))
  taskset -c 1 "$bin" serve --listen "127.0.0.1:$sport" --cpus 1 --duration 120s -q --stream-rate 50 --stream-gap-every 100 > "$tmp/gw2.out" &
  gw2=$!
  sleep 0.5
  sub='{"op":"subscribe","streams":["quotes.NASDAQ:AAPL","quotes.NYSE:IBM"]}'
  common=("ws://127.0.0.1:$sport/ws/quotes" -c 500 --connect-rate 5000 -d 10s --cpus 0 -q --send-on-open "$sub" --expect json:op=subscribed)
  taskset -c 0 "$bin" run "${common[@]}" --json "$tmp/s0.json" >/dev/null
  taskset -c 0 "$bin" run "${common[@]}" --stream-seq json:seq --stream-key json:stream --json "$tmp/s1.json" >/dev/null
  kill "$gw2" 2>/dev/null || true
  ns() { field "$1" "round((r['process']['cpu_user_s'] + r['process']['cpu_sys_s']) * 1e9 / max(1, r['counters']['msgs_pushed']))"; }
  echo "streams: $(field "$tmp/s1.json" "r['counters']['stream_msgs']") quotes, $(field "$tmp/s1.json" "r['counters']['stream_gaps']") gaps; client CPU per message $(ns "$tmp/s0.json") ns untracked, $(ns "$tmp/s1.json") ns tracked (seq + key per message)"
fi

if [ "$what" = all ] || [ "$what" = merge ]; then
  # The cost of mergeable results (schema 2). (1) A 10,000-connection run (10 s, 1 echo/s
  # each): the document's size, the share of it that is the encoded histograms (`hdr`: the
  # size without them is what schema 1 wrote, less the few new identity fields), and the time
  # to merge that one document to a file (read, decode, add, encode, write: an upper bound of
  # what writing it costs the run). (2) `sockstorm merge` of 16 documents of a 60 s run
  # (1,000 connections, 10 echoes/s each): one real run, copied 16 times with other host
  # names and run ids (16 real 60 s runs take 16 minutes on this shared machine).
  taskset -c 0 "$bin" run "$url" -c 10000 --connect-rate 5000 -d 10s --cpus 0 -q --message hello \
    --message-rate 1 --json "$tmp/m10k.json" >/dev/null
  python3 - "$tmp/m10k.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
size = len(open(sys.argv[1]).read())
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k != "hdr"}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v
hdr = []
def walk(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "hdr": hdr.append(len(x))
            else: walk(x)
    elif isinstance(v, list):
        for x in v: walk(x)
walk(d)
bare = len(json.dumps(strip(d), indent=2))
print(f"json 10k: {size} bytes written, {bare} without the histograms; {len(hdr)} histograms, {sum(hdr)} bytes of base64 (largest {max(hdr)}); established {d['counters']['established']}, rtt samples {d['histograms']['ws_msg_rtt']['count']}")
PY
  t0=$(date +%s%N); taskset -c 0 "$bin" merge "$tmp/m10k.json" -o "$tmp/m10k-again.json" >/dev/null; t1=$(date +%s%N)
  echo "json 10k: merge of that one document to a file: $(( (t1 - t0) / 1000000 )) ms"
  taskset -c 0 "$bin" run "$url" -c 1000 --connect-rate 5000 -d 60s --cpus 0 -q --message hello \
    --message-rate 10 --json "$tmp/m60.json" >/dev/null
  python3 - "$tmp" <<'PY'
import json, sys
d = json.load(open(sys.argv[1] + "/m60.json"))
for k in range(16):
    d["host"]["name"] = f"loadgen-{k}"
    d["run_id"] = f"{k:016x}"
    json.dump(d, open(f"{sys.argv[1]}/seg{k}.json", "w"), indent=2)
PY
  best=
  for _ in 1 2 3 4 5; do
    t0=$(date +%s%N)
    taskset -c 0 "$bin" merge "$tmp"/seg*.json -o "$tmp/m60-all.json" >/dev/null
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  done
  echo "merge 16 x 60 s: each $(stat -c %s "$tmp/seg0.json") bytes, $(field "$tmp/m60.json" "len(r['timeline'])") timeline seconds; best of 5: ${best} ms; merged established $(field "$tmp/m60-all.json" "r['counters']['established']") (16 x $(field "$tmp/m60.json" "r['counters']['established']")), rtt samples $(field "$tmp/m60-all.json" "r['histograms']['ws_msg_rtt']['count']") (16 x $(field "$tmp/m60.json" "r['histograms']['ws_msg_rtt']['count']"))"
fi

if [ "$what" = all ] || [ "$what" = merge-fanout ]; then
  # The cost of settling fan-out across hosts: a fan-out run's per-scenario `fanout_log`
  # (publish log, subscriber sessions, per-publisher counts, per-message delivery buckets),
  # its size per published message, and the merge of three copies of it (the three hosts of
  # a split run would each carry their part; the copies are a worst case, three full logs).
  cat > "$tmp/fan.toml" <<EOF
url = "$url"
duration = "12s"
connect_rate = 5000
[[scenario]]
name = "subscribers"
role = "subscriber"
channel = "prices"
connections = 1000
[[scenario]]
name = "publishers"
role = "publisher"
channel = "prices"
connections = 10
start = "1s"
message_rate = 20
message_count = 200
EOF
  taskset -c 0 "$bin" run "$tmp/fan.toml" --cpus 0 -q --json "$tmp/fan.json" >/dev/null
  python3 - "$tmp" <<'PY'
import json, sys
d = json.load(open(sys.argv[1] + "/fan.json"))
logs = [len(s.get("fanout_log") or "") for s in d["scenarios"]]
size = len(open(sys.argv[1] + "/fan.json").read())
f = d["fanout"]
print(f"fanout log: {f['published']} published, {f['owed']} owed, {f['delivered_owed']} delivered; "
      f"fanout_log base64 {logs} bytes = {sum(logs) / f['published']:.1f} bytes per published message "
      f"(timed messages {f['broadcast_completion']['messages_timed']}); document {size} bytes")
for k in range(3):
    d["host"]["name"] = f"loadgen-{k}"
    d["run_id"] = f"{k:016x}"
    json.dump(d, open(f"{sys.argv[1]}/fan{k}.json", "w"), indent=2)
PY
  best=
  for _ in 1 2 3 4 5; do
    t0=$(date +%s%N)
    taskset -c 0 "$bin" merge "$tmp"/fan[0-9].json -o "$tmp/fan-all.json" >/dev/null || true
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  done
  echo "fanout merge of 3 copies: best of 5: ${best} ms; owed $(field "$tmp/fan-all.json" "r['fanout']['owed']") (9 x $(field "$tmp/fan.json" "r['fanout']['owed']"): each copy's publishes owed to all three copies' sessions), delivered_owed $(field "$tmp/fan-all.json" "r['fanout']['delivered_owed']")"
fi
