#!/usr/bin/env bash
# io_uring vs epoll, side by side in one sitting, runs interleaved (uring, epoll, uring, epoll…),
# client pinned to CPU 0 and the built-in gateway (plain and TLS) to CPU 1, the same commands
# as scripts/bench.sh and scripts/bench_tls.sh:
#   storm     10,000 connections at 5,000/s held 10 s: client CPU-seconds
#   rss       15,000 idle ws:// connections: RSS bytes per open connection
#   rss_wss   10,000 idle wss:// connections: RSS bytes per open connection
#   echo      1,000 connections x 100 msg/s for 10 s: messages per client-CPU-second
#   tls_full  TLS 1.3 handshakes (handshake mode, --resume off): per client-CPU-second
#   tls_res   TLS 1.3 resumed handshakes (--resume on): per client-CPU-second
# Figures are per-unit costs from one run each; the last column is epoll / io_uring.
# Usage: scripts/bench_backends.sh [ROUNDS]   (default 1; each round runs both backends)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/interop/tls_peers.sh
rounds=${1:-1}
cargo build --release --bins >/dev/null 2>&1 || cargo build --release --bins
bin=./target/release/sockstorm
ensure_tls_tools
tmp=$(mktemp -d)
cleanup() { stop_tls_peers; rm -rf "$tmp"; }
trap cleanup EXIT
make_certs "$tmp"

port=$(free_port)
taskset -c 1 timeout 1800 "$bin" serve --listen "127.0.0.1:$port" --cpus 1 --duration 1790s -q > "$tmp/gw.out" 2>&1 &
tls_peer_pids+=($!)
wait_port "$port" || { cat "$tmp/gw.out"; exit 1; }
tport=$(free_port)
taskset -c 1 timeout 1800 "$bin" serve --tls --cert "$tmp/leaf.pem" --key "$tmp/leaf.key" \
  --listen "127.0.0.1:$tport" --cpus 1 --duration 1790s -q > "$tmp/tgw.out" 2>&1 &
tls_peer_pids+=($!)
wait_port "$tport" || { cat "$tmp/tgw.out"; exit 1; }

url="ws://127.0.0.1:$port/bench"
wss="wss://127.0.0.1:$tport/bench"
run() { # backend name args...
  local be=$1 name=$2; shift 2
  taskset -c 0 timeout 120 "$bin" run "$@" --cpus 0 -q --backend "$be" --json "$tmp/$name-$be-$round.json" > "$tmp/out.txt" 2>&1 \
    || { echo "$name on $be failed:"; cat "$tmp/out.txt"; exit 1; }
}

for round in $(seq "$rounds"); do
  for be in uring epoll; do
    echo "round $round: $be" >&2
    run "$be" storm "$url" -c 10000 --connect-rate 5000 -d 12s
    run "$be" rss "$url" -c 15000 --connect-rate 5000 -d 8s
    run "$be" rss_wss "$wss" -c 10000 --connect-rate 2500 -d 8s --cacert "$tmp/ca.pem"
    run "$be" echo "$url" -c 1000 --connect-rate 5000 -d 10s --message 0123456789abcdef0123456789abcdef \
      --message-rate 100
    for r in off on; do
      run "$be" "tls_$r" "$wss" --mode handshake --concurrency 32 -d 5s --close rst --kx x25519,secp256r1 \
        --tls-version 1.3 --resume "$r" --cacert "$tmp/ca.pem" --drain 0s --close-wait 0s
    done
  done
done

python3 - "$tmp" "$rounds" <<'EOF'
import json, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def doc(name, be, rnd):
    return json.load(open(f"{tmp}/{name}-{be}-{rnd}.json"))
def cpu(r):
    return r["process"]["cpu_user_s"] + r["process"]["cpu_sys_s"]
rows = [
    ("storm: client CPU-s per 10k connections", "storm", lambda r: cpu(r), "{:.3f}", "lower"),
    ("idle ws:// at 15,000: RSS B per connection", "rss", lambda r: r["process"]["rss_per_open_connection_bytes"], "{:.0f}", "lower"),
    ("idle wss:// at 10,000: RSS B per connection", "rss_wss", lambda r: r["process"]["rss_per_open_connection_bytes"], "{:.0f}", "lower"),
    ("echo 1,000 x 100/s: msgs per client-CPU-s", "echo", lambda r: r["counters"]["msgs_received"] / cpu(r), "{:.0f}", "higher"),
    ("TLS 1.3 full: handshakes per client-CPU-s", "tls_off", lambda r: r["handshake_mode"]["per_client_cpu_s"], "{:.0f}", "higher"),
    ("TLS 1.3 resumed: handshakes per client-CPU-s", "tls_on", lambda r: r["handshake_mode"]["per_client_cpu_s"], "{:.0f}", "higher"),
]
print(f"{'':46} {'round':>5} {'uring':>10} {'epoll':>10} {'epoll/uring':>12}")
for label, name, f, fmt, better in rows:
    for rnd in range(1, rounds + 1):
        u, e = doc(name, "uring", rnd), doc(name, "epoll", rnd)
        for r, be in ((u, "uring"), (e, "epoll")):
            assert r["backend"]["name"] == be, r["backend"]
            bad = {k: v for k, v in r["failures"].items()}
            assert not bad, f"{name} on {be}: failures {bad}"
        a, b = f(u), f(e)
        print(f"{label:46} {rnd:>5} {fmt.format(a):>10} {fmt.format(b):>10} {b / a:>11.2f}x  ({better} is better)")
u, e = doc("echo", "uring", 1), doc("echo", "epoll", 1)
print(f"echo rtt p99: uring {u['histograms']['ws_msg_rtt']['p99_us']} us, epoll {e['histograms']['ws_msg_rtt']['p99_us']} us; "
      f"unanswered: {u['counters']['msgs_unanswered']} / {e['counters']['msgs_unanswered']}")
EOF
