#!/usr/bin/env bash
# Client-side benchmarks against the built-in gateway, client pinned to CPU 0 and the gateway
# to CPU 1 (see BENCHMARKS.md). Figures are ratios from one run each (CPU-seconds per 10k
# connections, bytes per connection, messages per CPU-second), because this machine is shared.
# Usage: scripts/bench.sh [storm|rss|echo|all]   (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
cargo build --release --bins >/dev/null 2>&1 || cargo build --release --bins
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
