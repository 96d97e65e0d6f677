#!/usr/bin/env bash
# Fan-out benchmark: client CPU per delivered message with 19,500 subscribers of one channel
# of the built-in gateway (`serve`, one thread, pinned to CPU 1) and 10 publishers, the client
# pinned to CPU 0. 20,000 subscribers do not fit: the gateway holds one file descriptor per
# connection and the hard limit is 20,000 per process (the client's sockets live in io_uring
# tables and would fit). Two runs of the same file: publishers send 1 message/s for 25 s
# (4,875,000 deliveries), then only 1 message each (195,000 deliveries, the baseline: setup,
# subscribe, idle holding, close); deliveries per client-CPU-second = extra deliveries / extra
# client CPU. About 90 s, loopback only, bounded; one run each on a shared machine.
# The publishers get their own connect rate: a share of the total (10 of 19,510) would take
# 4 s to open them.
# Uses ./target/release/sockstorm as built (or $SOCKSTORM_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/interop/tls_peers.sh
bin=${SOCKSTORM_BIN:-./target/release/sockstorm}
[ -x "$bin" ] || cargo build --release --bins
subs=${SUBS:-19500}
tmp=$(mktemp -d)
gw=
cleanup() { [ -n "$gw" ] && kill "$gw" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
port=$(free_port)
taskset -c 1 timeout 300 "$bin" serve --listen "127.0.0.1:$port" --threads 1 --cpus 1 -q \
  > "$tmp/gateway.out" 2>&1 &
gw=$!
wait_port "$port" || { cat "$tmp/gateway.out"; exit 1; }
cat > "$tmp/fanout.toml" <<TOML
url = "ws://127.0.0.1:$port/ws"
duration = "34s"
connect_rate = 5000
cpus = "0"
[[scenario]]
name = "subscribers"
role = "subscriber"
channel = "ticks"
connections = $subs
[[scenario]]
name = "publishers"
role = "publisher"
channel = "ticks"
connections = 10
connect_rate = 100
start = "6s"
message_rate = 1
message_count = 25
TOML
run() { # name, extra flags
  taskset -c 0 "$bin" run "$tmp/fanout.toml" -q --json "$tmp/$1.json" "${@:2}" > "$tmp/$1.txt" || true
}
run full
run base --message-count 1
python3 - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
r = {k: json.load(open(f"{d}/{k}.json")) for k in ("full", "base")}
def cpu(v): return v["process"]["cpu_user_s"] + v["process"]["cpu_sys_s"]
print(f"{'run':<6}{'subs':>8}{'published':>11}{'delivered':>11}{'lost':>6}{'cpu s':>8}{'p50 lat':>9}{'p99 lat':>9}{'to 100% p50':>13}")
for k, v in r.items():
    f, h = v["fanout"], v["scenarios"][0]["histograms"]["ws_msg_latency"]
    bc = f["broadcast_completion"]["to_100pct"] or {}
    print(f"{k:<6}{f['subscriber_sessions']:>8}{f['published']:>11}{f['delivered_owed']:>11}{f['lost']:>6}{cpu(v):>8.2f}"
          f"{h['p50_us']/1000:>8.1f}m{h['p99_us']/1000:>8.1f}m{(bc.get('p50_us') or 0)/1000:>12.1f}m")
dd = r["full"]["fanout"]["delivered_owed"] - r["base"]["fanout"]["delivered_owed"]
dc = cpu(r["full"]) - cpu(r["base"])
print(f"extra deliveries {dd}, extra client CPU {dc:.2f} s: {dd/dc:,.0f} deliveries per client-CPU-second ({dc/dd*1e6:.2f} µs each)")
PY
