#!/usr/bin/env bash
# Interop: sockstorm's wss:// client against TLS stacks nobody here wrote (called by
# scripts/test.sh; runs alone too). Debian's nginx (OpenSSL) terminates TLS 1.2/1.3 in front of
# a plain ws:// `sockstorm serve` echo backend; `openssl s_server` is the bare handshake peer.
#   A: 500 wss sessions with echo through nginx, TLS 1.3 then 1.2, resumption on: all
#      established, every message echoed, version as asked, >= 90% of handshakes resumed, and
#      nginx's access log ($ssl_session_reused) counts the same resumptions.
#   B: handshake mode (no HTTP) against openssl s_server, TLS 1.3 then 1.2, resumption on:
#      > 100 cycles, no failures, >= 90% resumed.
# Certificates: an ECDSA P-256 CA and leaf made with openssl in a temp dir. Loopback only;
# every server and run is bounded by `timeout` and killed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/interop/tls_peers.sh

bin=./target/release/sockstorm
[ -x "$bin" ] || cargo build --release --bins
ensure_tls_tools

tmp=$(mktemp -d)
cleanup() { stop_tls_peers; rm -rf "$tmp"; }
trap cleanup EXIT

make_certs "$tmp"

# ws:// echo backend for nginx; port 0 lets it pick, we read it back.
timeout 120 "$bin" serve --listen 127.0.0.1:0 --duration 110s -q > "$tmp/backend.out" 2>&1 &
tls_peer_pids+=($!)
for _ in $(seq 100); do grep -q listening "$tmp/backend.out" 2>/dev/null && break; sleep 0.1; done
backend=$(sed -n 's#.*listening on ws://127\.0\.0\.1:\([0-9]*\)/.*#\1#p' "$tmp/backend.out")
[ -n "$backend" ] || { echo "echo backend did not start:"; cat "$tmp/backend.out"; exit 1; }

nginx_port=$(free_port)
start_nginx "$tmp" "$nginx_port" "$backend"
echo "== interop: wss:// through $(nginx -v 2>&1 | sed 's/.*: //') ($(openssl version | cut -d' ' -f1-2)), ECDSA P-256, echo backend sockstorm serve"

# A. Sessions through nginx. 500 connections at 250/s: a handshake can only resume once its
# shard holds a session from an earlier one, so the first ones (the first tens of ms per shard,
# including the client's start-up lag) are full; at 2000/s that was ~20% of 500, at 250/s ~2%.
for v in 1.3 1.2; do
  out=$tmp/nginx-$v
  timeout 60 "$bin" run "wss://127.0.0.1:$nginx_port/ws" -c 500 --connect-rate 250 -d 5s \
    --cacert "$tmp/ca.pem" --tls-version "$v" --resume on --message 'interop tls' --message-rate 2 \
    --no-reconnect -q --json "$out.json" > "$out.txt" 2>&1 \
    || { cat "$out.txt"; tail -20 "$tmp/nginx-error.log"; exit 1; }
  python3 scripts/interop/check_echo.py "$out.json" 500
  python3 scripts/interop/check_tls.py "$out.json" --label "nginx TLS $v sessions" --version "$v" \
    --handshakes 500 --min-resumed 0.9 --nginx-log "$tmp/nginx-access.log"
done

# B. Handshake cycles against openssl s_server (serves one connection at a time; the other
# three of --concurrency 4 wait in its backlog). RST close, no HTTP.
echo "== interop: handshake mode against openssl s_server"
s_port=$(free_port)
start_s_server "$tmp" "$s_port"
for v in 1.3 1.2; do
  out=$tmp/s_server-$v
  timeout 30 "$bin" run "wss://127.0.0.1:$s_port/" --mode handshake --concurrency 4 -d 3s \
    --close rst --cacert "$tmp/ca.pem" --tls-version "$v" --resume on -q --json "$out.json" \
    > "$out.txt" 2>&1 || { cat "$out.txt"; exit 1; }
  python3 scripts/interop/check_tls.py "$out.json" --label "openssl s_server TLS $v handshakes" \
    --version "$v" --min-cycles 100 --min-resumed 0.9
done
echo "== interop tls: all passed"
