#!/usr/bin/env bash
# Per-scenario tags cost: the same load (10,000 connections, one echoed message per second
# each, 20 s) as one scenario and as eight scenarios of 1,250, against the built-in gateway
# (pinned to CPU 1), client pinned to CPU 0. Runs alternate 1, 8, 1, 8 to spread machine
# noise; the figure is the ratio of client CPU (user+sys) of the 8-scenario runs to the
# 1-scenario runs. About 2 minutes, loopback only, bounded.
# Uses ./target/release/sockstorm as built (or $SOCKSTORM_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/interop/tls_peers.sh
bin=${SOCKSTORM_BIN:-./target/release/sockstorm}
[ -x "$bin" ] || cargo build --release --bins
tmp=$(mktemp -d)
gw=
cleanup() { [ -n "$gw" ] && kill "$gw" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
port=$(free_port)
taskset -c 1 timeout 600 "$bin" serve --listen "127.0.0.1:$port" --threads 1 --cpus 1 -q \
  > "$tmp/gateway.out" 2>&1 &
gw=$!
wait_port "$port" || { cat "$tmp/gateway.out"; exit 1; }
common="url = \"ws://127.0.0.1:$port/ws\"
duration = \"20s\"
connections = 10000
connect_rate = 5000
cpus = \"0\"
linger_zero = true
message = '{\"type\":\"chat\",\"text\":\"hello\"}'
message_rate = 1"
printf '%s\n' "$common" > "$tmp/one.toml"
{ printf '%s\n' "$common"; for i in $(seq 1 8); do printf '[[scenario]]\nname = "s%d"\n' "$i"; done; } > "$tmp/eight.toml"
for round in 1 2; do
  for n in one eight; do
    taskset -c 0 "$bin" run "$tmp/$n.toml" -q --json "$tmp/$n-$round.json" > /dev/null
  done
done
python3 - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
def cpu(v): return v["process"]["cpu_user_s"] + v["process"]["cpu_sys_s"]
tot = {}
print(f"{'run':<10}{'scenarios':>10}{'established':>12}{'msgs matched':>14}{'cpu s':>8}{'p99 rtt':>9}")
for r in (1, 2):
    for n in ("one", "eight"):
        v = json.load(open(f"{d}/{n}-{r}.json"))
        c = v["counters"]
        tot[n] = tot.get(n, 0) + cpu(v)
        print(f"{n}-{r:<6}{len(v['scenarios']):>10}{c['established']:>12}{c['msgs_received']:>14}{cpu(v):>8.2f}{v['histograms']['ws_msg_rtt']['p99_us']/1000:>8.2f}m")
print(f"client CPU, 8 scenarios / 1 scenario: {tot['eight']/tot['one']:.3f}")
PY
