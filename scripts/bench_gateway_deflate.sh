#!/usr/bin/env bash
# What permessage-deflate costs a gateway: the built-in gateway (`serve`, one thread, pinned to
# CPU 1) without compression, with `--compression deflate` (context takeover both ways), with
# `deflate:server_no_context_takeover` (the gateway's messages compressed by one compressor
# per thread) and with `deflate:server_no_context_takeover,client_no_context_takeover` (no
# zlib state kept per connection); the client pinned to CPU 0 offers deflate in the compressed
# cases. For each:
#   - fan-out: 1,000 subscribers of one channel, 4 publishers × 20 messages/s × 10 s of a 1 KiB
#     JSON book (800,000 deliveries): the gateway's CPU over the publishing window (read from
#     /proc between 2.5 s and 14.5 s of the run) per delivery, deliveries per gateway
#     CPU-second, lost deliveries, and the client's wire/payload ratio;
#   - idle memory: the gateway's RSS per open connection at 1,000 connections that each sent
#     one 1 KiB message and got it back (every zlib state that will exist is allocated).
# Loopback only, bounded, ~2 minutes. Uses ./target/release/sockstorm (or $SOCKSTORM_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/interop/tls_peers.sh
bin=${SOCKSTORM_BIN:-./target/release/sockstorm}
[ -x "$bin" ] || cargo build --release --bins
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
tmp=$(mktemp -d)
gw=
cleanup() { [ -n "$gw" ] && kill "$gw" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
tck=$(getconf CLK_TCK)
book=$("$PY" -c 'r = "{\"px\":187.25,\"qty\":100,\"venue\":\"XNAS\"},"; print("[" + r * 23 + "{}]")')
payload=$("$PY" -c 'r = "{\"id\":1,\"name\":\"sockstorm\",\"ok\":true},"; p = "[" + r * 40; print(p[:999] + "]")')

start_gateway() { # compression|-
  [ -n "$gw" ] && kill -INT "$gw" 2>/dev/null && wait "$gw" 2>/dev/null || true
  port=$(free_port)
  local comp=()
  [ "$1" != - ] && comp=(--compression "$1")
  taskset -c 1 timeout 300 "$bin" serve --listen "127.0.0.1:$port" --threads 1 --cpus 1 -q \
    "${comp[@]}" > "$tmp/gateway.out" 2>&1 &
  gw=$!
  wait_port "$port" || { cat "$tmp/gateway.out"; exit 1; }
  # `timeout` runs the gateway as its child.
  gwpid=$(pgrep -P "$gw" | head -1)
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$gwpid/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$gwpid/status"; }

echo "== permessage-deflate in the built-in gateway, HEAD $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
printf '%-22s %14s %16s %20s %8s %12s\n' case "gw RSS/conn (B)" "gw CPU µs/deliv" "deliv/gw-CPU-second" lost "wire/payload"
for c in plain:- takeover:deflate server-no-takeover:deflate:server_no_context_takeover both-no-takeover:deflate:server_no_context_takeover,client_no_context_takeover; do
  name=${c%%:*}; serve=${c#*:}
  offer=()
  [ "$serve" != - ] && offer=(--compression deflate)
  # Idle memory: 1,000 connections, one echoed message each, then held.
  start_gateway "$serve"
  before=$(rss_kib)
  taskset -c 0 "$bin" run "ws://127.0.0.1:$port/ws" --cpus 0 -c 1000 --connect-rate 2000 \
    "${offer[@]}" --message "$payload" --message-count 1 --message-rate 1 -d 6s --no-reconnect \
    -q --json "$tmp/$name-idle.json" > /dev/null &
  client=$!
  sleep 4
  held=$(rss_kib)
  wait "$client"
  # Fan-out, on a fresh gateway.
  start_gateway "$serve"
  cat > "$tmp/fanout.toml" <<TOML
url = "ws://127.0.0.1:$port/ws"
duration = "16s"
connect_rate = 4000
cpus = "0"
[[scenario]]
name = "subscribers"
role = "subscriber"
channel = "book"
connections = 1000
[[scenario]]
name = "publishers"
role = "publisher"
channel = "book"
connections = 4
start = "3s"
message_rate = 20
message_count = 200
message = '{"action":"publish","channel":"book","pub":{{conn_id}},"seq":{{seq}},"ts":{{now_us}},"bids":$book}'
TOML
  taskset -c 0 "$bin" run "$tmp/fanout.toml" "${offer[@]}" -q --json "$tmp/$name-fanout.json" \
    > "$tmp/$name-fanout.txt" &
  client=$!
  sleep 2.5
  t0=$(cpu_ticks)
  sleep 12
  t1=$(cpu_ticks)
  wait "$client" || true
  "$PY" - "$tmp/$name-fanout.json" "$tmp/$name-idle.json" "$name" "$before" "$held" "$t0" "$t1" "$tck" <<'PY'
import json, sys
fan, idle = (json.load(open(p)) for p in sys.argv[1:3])
name = sys.argv[3]
before, held, t0, t1, tck = map(int, sys.argv[4:9])
open_ = idle["counters"]["established"] - idle["counters"]["sessions_dropped"]
assert idle["counters"]["msgs_received"] == 1000, idle["counters"]["msgs_received"]
per_conn = (held - before) * 1024 / open_
f = fan["fanout"]
deliveries = f["delivered_total"]
cpu_s = (t1 - t0) / tck
c = fan["counters"]
ratio = c["deflate_wire_received"] / c["deflate_payload_received"] if c["deflate_payload_received"] else 1.0
print(f"{name:<22} {per_conn:>14,.0f} {cpu_s / deliveries * 1e6:>16.2f} {deliveries / cpu_s:>20,.0f} {f['lost']:>8} {ratio:>12.4f}")
PY
done
