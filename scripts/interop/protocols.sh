#!/usr/bin/env bash
# The application protocols against servers nobody here wrote: examples/protocols/*.toml as
# they are (their --url pointed at the server), each a whole run with exact counts
# (scripts/interop/check_protocols.py):
#   Socket.IO: python-socketio (aiohttp), 30 s with pingInterval 5 s: namespace, emits with
#              acks, server-emitted ticks, pings, no disconnect but ours;
#   STOMP:     Debian's RabbitMQ with rabbitmq_web_stomp (scripts/interop/rabbitmq.sh):
#              subscribers and publishers on one topic, receipts, heart-beats;
#   GraphQL:   Node graphql-ws + ws: a counter subscription, query operations, pings both ways.
# Usage: protocols.sh SOCKSTORM
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "$1")
VENV=.venv
tmp=$(mktemp -d)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  bash scripts/interop/rabbitmq.sh stop "$tmp/rabbitmq" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

ready() { # FILE: the port a server printed as `READY <port>`
  for _ in $(seq 150); do grep -q READY "$1" 2>/dev/null && break; sleep 0.1; done
  awk '/READY/ {print $2}' "$1"
}

echo "== Socket.IO against python-socketio $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("python-socketio"))'): 200 connections for 30 s, pingInterval 5 s"
"$VENV/bin/python" scripts/interop/socketio_server.py --seconds 60 --ping-interval 5 --ping-timeout 5 \
  --stats "$tmp/sio.json" > "$tmp/sio.out" 2>"$tmp/sio.err" &
pids+=($!)
port=$(ready "$tmp/sio.out")
[ -n "$port" ] || { cat "$tmp/sio.err"; echo "socketio server did not start"; exit 1; }
"$bin" run examples/protocols/socketio-chat.toml --url "ws://127.0.0.1:$port/" -q --json "$tmp/sio-run.json" > "$tmp/sio-summary.txt" \
  || { cat "$tmp/sio-summary.txt"; exit 1; }
sleep 0.5 # the server rewrites its counts every 200 ms
"$VENV/bin/python" scripts/interop/check_protocols.py socketio "$tmp/sio-run.json" "$tmp/sio.json" 200

echo "== STOMP against RabbitMQ $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null) web-stomp: 100 subscribers and 5 publishers on /topic/prices, receipts, heart-beats every 2 s"
port=$(bash scripts/interop/rabbitmq.sh start "$tmp/rabbitmq" 2>"$tmp/rabbitmq.err") \
  || { tail -20 "$tmp/rabbitmq.err"; exit 1; }
port=${port#READY }
"$bin" run examples/protocols/stomp-fanout.toml --url "ws://127.0.0.1:$port/ws" -q --json "$tmp/stomp-run.json" > "$tmp/stomp-summary.txt" \
  || { cat "$tmp/stomp-summary.txt"; exit 1; }
bash scripts/interop/rabbitmq.sh stats "$tmp/rabbitmq" > "$tmp/stomp-stats.json"
"$VENV/bin/python" scripts/interop/check_protocols.py stomp "$tmp/stomp-run.json" "$tmp/stomp-stats.json" 105 100
bash scripts/interop/rabbitmq.sh stop "$tmp/rabbitmq" >/dev/null 2>&1

echo "== GraphQL (graphql-transport-ws) against Node graphql-ws $(node -p 'require("./scripts/interop/node/node_modules/graphql-ws/package.json").version'): 200 counter subscriptions, query operations, pings both ways"
node scripts/interop/node/graphql_server.js --seconds 60 --server-ping-ms 1000 --stats "$tmp/gql.json" \
  > "$tmp/gql.out" 2>"$tmp/gql.err" &
pids+=($!)
port=$(ready "$tmp/gql.out")
[ -n "$port" ] || { cat "$tmp/gql.err"; echo "graphql server did not start"; exit 1; }
"$bin" run examples/protocols/graphql-subscriptions.toml --url "ws://127.0.0.1:$port/graphql" -q \
  --json "$tmp/gql-run.json" > "$tmp/gql-summary.txt" \
  || { cat "$tmp/gql-summary.txt"; exit 1; }
sleep 0.5
"$VENV/bin/python" scripts/interop/check_protocols.py graphql "$tmp/gql-run.json" "$tmp/gql.json" 200 50
