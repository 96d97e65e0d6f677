#!/usr/bin/env bash
# permessage-deflate benchmark against Python websockets (deflate on, one process pinned to
# CPU 1), the client pinned to CPU 0. For each of: no compression, deflate with context
# takeover, deflate without (client_ and server_no_context_takeover):
#   - RSS per open connection at 1,000 connections that each sent and got back one 1 KiB JSON
#     message (so every compressor and inflater that will ever exist has been allocated);
#   - client CPU per echoed message and messages per client CPU-second at 1,000 connections ×
#     2 messages/s for 8 s (the server, in Python, bounds the rate; the figure is per message).
# Loopback only, bounded, ~1.5 minutes. Uses ./target/release/sockstorm (or $SOCKSTORM_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SOCKSTORM_BIN:-./target/release/sockstorm}
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
tmp=$(mktemp -d)
srv=
cleanup() { [ -n "$srv" ] && kill "$srv" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
payload=$("$PY" -c 'r = "{\"id\":1,\"name\":\"sockstorm\",\"ok\":true},"; p = "[" + r * 40; print(p[:999] + "]")')

start_server() { # [--no-context-takeover]
  [ -n "$srv" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null || true
  taskset -c 1 "$PY" scripts/interop/deflate_server.py --seconds 120 --stats "$tmp/stats.json" "$@" > "$tmp/srv.out" &
  srv=$!
  for _ in $(seq 100); do grep -q READY "$tmp/srv.out" 2>/dev/null && break; sleep 0.1; done
  port=$(awk '/READY/ {print $2}' "$tmp/srv.out")
}

run() { # name offer|- args...
  local name=$1 offer=$2; shift 2
  local comp=()
  [ "$offer" != - ] && comp=(--compression "$offer")
  taskset -c 0 "$bin" run "ws://127.0.0.1:$port/" --cpus 0 -c 1000 --connect-rate 2000 "${comp[@]}" \
    --message "$payload" --no-reconnect -q --json "$tmp/$name.json" "$@" > /dev/null
}

echo "== permessage-deflate vs Python websockets $("$PY" -c 'import websockets; print(websockets.__version__)'), HEAD $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
printf '%-14s %14s %16s %18s %12s\n' case "RSS/conn (B)" "CPU µs/message" "msgs/CPU-second" "wire/payload"
for c in plain:-: takeover:deflate: no-takeover:deflate:client_no_context_takeover,server_no_context_takeover:--no-context-takeover; do
  name=${c%%:*}; rest=${c#*:}; offer=${rest%:*}; flag=${rest##*:}
  if [ -n "$flag" ]; then start_server "$flag"; else start_server; fi
  # Idle after one message each: RSS per open connection.
  run "$name-idle" "$offer" --message-count 1 --message-rate 1 -d 6s
  # Throughput: 2 messages/s per connection.
  run "$name-rate" "$offer" --message-rate 2 -d 8s
  "$PY" - "$tmp/$name-idle.json" "$tmp/$name-rate.json" "$name" <<'PY'
import json, sys
idle, rate = (json.load(open(p)) for p in sys.argv[1:3])
per_conn = idle["process"]["rss_per_open_connection_bytes"] or 0
c = rate["counters"]
cpu = rate["process"]["cpu_user_s"] + rate["process"]["cpu_sys_s"]
msgs = c["msgs_received"]
ratio = (c["deflate_wire_sent"] / c["deflate_payload_sent"]) if c.get("deflate_payload_sent") else 1.0
print(f"{sys.argv[3]:<14} {per_conn:>14,.0f} {cpu / msgs * 1e6:>16.1f} {msgs / cpu:>18,.0f} {ratio:>12.4f}")
PY
done
