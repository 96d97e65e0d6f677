#!/usr/bin/env bash
# Fan-out over application protocols: client CPU per delivered message with 200 subscribers
# and 5 publishers (20 messages/s each) of one topic, over raw WebSocket (the built-in gateway),
# STOMP (RabbitMQ web-stomp) and Socket.IO (python-socketio, a room), servers pinned to CPU 1,
# the client to CPU 0. Each is run twice: publishers send for 15 s (300 messages each), then
# one message each (the baseline: setup, subscribing, idle holding, close); deliveries per
# client-CPU-second = extra deliveries / extra client CPU. The servers differ (a Python server
# delivers less than a Rust one): the figure is the client's cost per delivery, whatever the
# server's rate. About 2 minutes; loopback only, bounded.
# Uses ./target/release/sockstorm as built (or $SOCKSTORM_BIN); needs the peers
# scripts/test.sh installs (.venv, rabbitmq-server).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/interop/tls_peers.sh
bin=$(realpath "${SOCKSTORM_BIN:-./target/release/sockstorm}")
tmp=$(mktemp -d)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  bash scripts/interop/rabbitmq.sh stop "$tmp/rabbitmq" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

scenario() { # url, protocol keys…: the fan-out file
  cat <<TOML
url = "$1"
duration = "20s"
cpus = "0"
reconnect = false
$2
[[scenario]]
name = "subscribers"
role = "subscriber"
channel = "$3"
connections = 200
connect_rate = 1000
[[scenario]]
name = "publishers"
role = "publisher"
channel = "$3"
connections = 5
start = "2s"
message_rate = 20
message_count = 300
TOML
}
run() { # name, file
  taskset -c 0 timeout 120 "$bin" run "$2" -q --json "$tmp/$1-full.json" > "$tmp/$1-full.txt" || true
  taskset -c 0 timeout 120 "$bin" run "$2" -q --message-count 1 --json "$tmp/$1-base.json" > "$tmp/$1-base.txt" || true
}

port=$(free_port)
taskset -c 1 timeout 300 "$bin" serve --listen "127.0.0.1:$port" --threads 1 --cpus 1 -q > "$tmp/gw.out" 2>&1 &
pids+=($!)
wait_port "$port" || { cat "$tmp/gw.out"; exit 1; }
scenario "ws://127.0.0.1:$port/ws" "" ticks > "$tmp/raw.toml"
run raw "$tmp/raw.toml"

sport=$(taskset -c 1 bash scripts/interop/rabbitmq.sh start "$tmp/rabbitmq" 2>"$tmp/rabbitmq.err") || { tail "$tmp/rabbitmq.err"; exit 1; }
sport=${sport#READY }
scenario "ws://127.0.0.1:$sport/ws" $'protocol = "stomp"\nstomp_login = "guest:guest"' /topic/ticks > "$tmp/stomp.toml"
run stomp "$tmp/stomp.toml"
bash scripts/interop/rabbitmq.sh stop "$tmp/rabbitmq" >/dev/null 2>&1

taskset -c 1 .venv/bin/python scripts/interop/socketio_server.py --seconds 200 --tick-ms 0 --stats "$tmp/sio.json" > "$tmp/sio.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q READY "$tmp/sio.out" 2>/dev/null && break; sleep 0.1; done
pport=$(awk '/READY/ {print $2}' "$tmp/sio.out")
scenario "ws://127.0.0.1:$pport/" $'protocol = "socketio"\nnamespace = "/chat"' ticks > "$tmp/sio.toml"
run socketio "$tmp/sio.toml"

python3 - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
def cpu(v): return v["process"]["cpu_user_s"] + v["process"]["cpu_sys_s"]
print(f"{'protocol':<10}{'published':>10}{'delivered':>11}{'lost':>6}{'cpu s':>8}{'base cpu s':>11}{'p99 lat':>10}{'deliveries/client-cpu-s':>25}")
for k in ("raw", "stomp", "socketio"):
    full, base = (json.load(open(f"{d}/{k}-{r}.json")) for r in ("full", "base"))
    cf, cb = full["counters"], base["counters"]
    extra = cf["fanout_delivered"] - cb["fanout_delivered"]
    dcpu = cpu(full) - cpu(base)
    lat = full["histograms"]["ws_msg_latency"]["p99_us"] / 1000
    print(f"{k:<10}{cf['fanout_published']:>10}{cf['fanout_delivered']:>11}{cf['fanout_lost']:>6}{cpu(full):>8.2f}{cpu(base):>11.2f}{lat:>8.1f}ms{extra / dcpu if dcpu > 0 else float('nan'):>25,.0f}")
PY
