#!/usr/bin/env bash
# find-max benchmark: the capacity search against servers nobody capped, on this 2-core
# machine: the client pinned to CPU 0, the server to CPU 1. Searches (each step held 3 s):
#   1. connections, ws://, unmodified built-in gateway (ceiling: what this client holds);
#   2. messages/s over 100 echo sessions, unmodified built-in gateway;
#   3. full TLS 1.3 handshakes/s (--resume off), built-in gateway (rustls);
#   4. full TLS 1.3 handshakes/s (--resume off), nginx (OpenSSL, one worker, no backend).
# Prints each search's answer, whose limit it is, why, and how long it took (the `find_max`
# section of each JSON). Loopback only; every search is bounded by its steps. ~3 minutes.
# Uses ./target/release/sockstorm as built (or $SOCKSTORM_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/interop/tls_peers.sh
bin=${SOCKSTORM_BIN:-./target/release/sockstorm}
[ -x "$bin" ] || cargo build --release --bins
ensure_tls_tools
tmp=$(mktemp -d)
cleanup() { stop_tls_peers; rm -rf "$tmp"; }
trap cleanup EXIT
make_certs "$tmp"

gw_port=$(free_port)
taskset -c 1 timeout 600 "$bin" serve --listen "127.0.0.1:$gw_port" --cpus 1 --duration 590s -q \
  > "$tmp/gw.out" 2>&1 &
tls_peer_pids+=($!)
wait_port "$gw_port" || { cat "$tmp/gw.out"; exit 1; }
gws_port=$(free_port)
taskset -c 1 timeout 600 "$bin" serve --tls --cert "$tmp/leaf.pem" --key "$tmp/leaf.key" \
  --listen "127.0.0.1:$gws_port" --cpus 1 --duration 590s -q > "$tmp/gws.out" 2>&1 &
tls_peer_pids+=($!)
wait_port "$gws_port" || { cat "$tmp/gws.out"; exit 1; }
nginx_port=$(free_port)
start_nginx "$tmp" "$nginx_port" 0 1

search() { # name args...
  local name=$1; shift
  set +e
  taskset -c 0 timeout 300 "$bin" find-max "$@" --cpus 0 --step-hold 3s -q --json "$tmp/$name.json" \
    > "$tmp/$name.out" 2>&1
  local code=$?
  set -e
  python3 - "$tmp/$name.json" "$name" "$code" <<'PY'
import json, sys
fm = json.load(open(sys.argv[1]))["find_max"]
steps = fm["steps"]
busy = max((s["generator"]["busy_pct"] or 0) for s in steps)
print(f"{sys.argv[2]:<22} max {fm['max']:>9,.0f} {fm['unit']:<13} limit {fm['limit']:<8} "
      f"{len(steps)} steps in {fm['search_s']:.1f} s (exit {sys.argv[3]}; busiest client shard {busy:.0f}%)")
print(f"{'':<22} cause: {fm['cause']}")
PY
}
echo "== find-max on $(uname -r), $(getconf _NPROCESSORS_ONLN) CPUs, HEAD $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
search connections-gateway connections "ws://127.0.0.1:$gw_port/" --connect-rate 5000 --start 2000
search messages-gateway messages "ws://127.0.0.1:$gw_port/" -c 100 --message 'find-max {{seq}}' --start 10000
search handshakes-gateway handshakes "wss://localhost:$gws_port/" --cacert "$tmp/ca.pem" --resume off --start 500
search handshakes-nginx handshakes "wss://localhost:$nginx_port/" --cacert "$tmp/ca.pem" --resume off --start 500
