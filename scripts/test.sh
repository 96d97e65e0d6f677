#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need (idempotently), runs
# every Rust test and 12 s of each fuzz target (scripts/fuzz.sh), the whole-run suites that
# touch the sockets again on the epoll backend, the deploy recipes (the Slurm one on a one-node
# cluster, scripts/interop/slurm.sh), the live Prometheus endpoint against Python
# prometheus_client's parsers, the HTML report in headless Chromium
# (scripts/interop/report_chromium.sh), the HDR interval log read by Java's HdrHistogram
# (scripts/interop/hdr_log.sh), then the interop tests against software nobody here wrote: a
# WebSocket server and TLS stacks (nginx, openssl s_server; scripts/interop/tls.sh), the
# articles' workloads (acks, stream gaps, per-connection URLs, keepalive closes) against Python
# websockets, python-socketio, RabbitMQ's web-stomp, graphql-ws, and Python and Node clients of
# `serve --compression`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
if ! "$VENV/bin/python" -c 'import websockets, yaml, prometheus_client, socketio, aiohttp' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'websockets==13.1' 'PyYAML==6.0.2' \
    'prometheus-client==0.26.0' 'python-socketio==5.18.1' 'python-engineio==4.15.1' 'aiohttp==3.14.5'
fi

# Node's `ws` (permessage-deflate) and graphql-ws (GraphQL subscriptions) for the interop
# tests, pinned by package-lock.json.
if [ ! -f scripts/interop/node/node_modules/graphql-ws/package.json ]; then
  timeout 300 npm ci --prefix scripts/interop/node --no-audit --no-fund --silent
fi

# Debian's RabbitMQ for the STOMP interop test (its stock service is kept from starting).
bash scripts/interop/rabbitmq.sh install

cargo build --release --bins
cargo test --release
# Every fuzz target for 12 s on a copy of its seed corpus (skipped, saying why, without nightly).
bash scripts/fuzz.sh 12

# The whole-run suites again on the epoll backend, with the same exact assertions (each reads
# SOCKSTORM_BACKEND through the binary's --backend default, and tests/common checks that every
# run's JSON names it). The default run above used `auto`: io_uring where the kernel allows it.
# Left out here, to keep CI within its half hour: the suites about what is done with results
# once measured (merge, segments, logs, output, live), which read the same documents whichever
# backend measured them.
echo "== the whole-run suites on the epoll backend"
SOCKSTORM_BACKEND=epoll cargo test --release --test run --test tls --test fanout --test scenario \
  --test examples --test storms --test signals --test misbehave --test unfinished \
  --test workloads --test attack --test generator --test targets --test compression

# deploy/ (Kubernetes Indexed Job, Slurm recipe, Dockerfile), checked offline.
"$VENV/bin/python" scripts/check_deploy.py ./target/release/sockstorm
# The live endpoint read by Prometheus' own parsers, and the Grafana dashboard on its names.
echo "== --metrics-listen scraped during runs, parsed by Python prometheus_client $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("prometheus-client"))') (text and OpenMetrics); deploy/grafana/sockstorm.json's queries"
"$VENV/bin/python" scripts/interop/check_metrics.py ./target/release/sockstorm deploy/grafana/sockstorm.json
# The HTML report in headless Chromium, with no network: drawn, no console message, no request.
echo "== the HTML report (sockstorm report, run --html) in headless Chromium, offline"
bash scripts/interop/report_chromium.sh ./target/release/sockstorm
# The Slurm recipe for real: Debian's slurmctld, slurmd and munge as a one-node cluster.
echo "== deploy/slurm/sockstorm.sbatch on a one-node Slurm cluster: 3 tasks, their merge against the gateway's counts"
bash scripts/interop/slurm.sh ./target/release/sockstorm
# --hdr-log read by Debian's libhdrhistogram-java: counts, max and p99 per tag = the JSON's.
echo "== --hdr-log read by Java's HdrHistogram (HistogramLogProcessor, HistogramLogReader): counts, max and p99 per tag = the JSON's"
bash scripts/interop/hdr_log.sh ./target/release/sockstorm

# Interop against software nobody here wrote, once per backend.
interop() {
  echo "== interop ($SOCKSTORM_BACKEND backend): 1000 connections against Python websockets $("$VENV/bin/python" -c 'import websockets; print(websockets.__version__)')"
  tmp=$(mktemp -d)
  trap 'kill "$srv" 2>/dev/null || true; rm -rf "$tmp"' EXIT
  "$VENV/bin/python" scripts/interop/echo_server.py --seconds 90 > "$tmp/server.out" &
  srv=$!
  for _ in $(seq 100); do grep -q READY "$tmp/server.out" 2>/dev/null && break; sleep 0.1; done
  port=$(awk '/READY/ {print $2}' "$tmp/server.out")
  [ -n "$port" ] || { echo "interop server did not start"; exit 1; }
  ./target/release/sockstorm run "ws://127.0.0.1:$port/" -c 1000 --connect-rate 1000 -d 5s \
    --message 'interop echo' --message-rate 2 --no-reconnect -q --json "$tmp/interop.json" > "$tmp/summary.txt" \
    || { cat "$tmp/summary.txt"; exit 1; }
  "$VENV/bin/python" scripts/interop/check_echo.py "$tmp/interop.json" 1000
  "$VENV/bin/python" -c 'import json, sys; d = json.load(open(sys.argv[1])); want = sys.argv[2]
assert want == "auto" or d["backend"]["name"] == want, d["backend"]
print("   backend:", d["backend"]["name"], "-", d["backend"]["reason"])' "$tmp/interop.json" "$SOCKSTORM_BACKEND"
  kill "$srv" 2>/dev/null || true

  echo "== interop ($SOCKSTORM_BACKEND backend): permessage-deflate, 1000 connections against Python websockets and Node ws, with and without context takeover"
  payload=$("$VENV/bin/python" -c 'r = "{\"id\":1,\"name\":\"sockstorm\",\"ok\":true},"; p = "[" + r * 40; print(p[:999] + "]")')
  for peer in python node; do
    for mode in takeover no-takeover; do
      flag=""; offer=deflate
      if [ "$mode" = no-takeover ]; then
        flag=--no-context-takeover; offer=deflate:client_no_context_takeover,server_no_context_takeover
      fi
      if [ "$peer" = python ]; then
        "$VENV/bin/python" scripts/interop/deflate_server.py --seconds 60 --stats "$tmp/deflate-$mode.json" $flag > "$tmp/deflate.out" &
      else
        node scripts/interop/node/deflate_server.js --seconds 60 --stats "$tmp/deflate-$mode.json" $flag > "$tmp/deflate.out" &
      fi
      dfl=$!
      for _ in $(seq 100); do grep -q READY "$tmp/deflate.out" 2>/dev/null && break; sleep 0.1; done
      port=$(awk '/READY/ {print $2}' "$tmp/deflate.out")
      [ -n "$port" ] || { echo "deflate server ($peer) did not start"; exit 1; }
      ./target/release/sockstorm run "ws://127.0.0.1:$port/" -c 1000 --connect-rate 1000 -d 4s \
        --compression "$offer" --message "$payload" --message-rate 2 --no-reconnect -q \
        --json "$tmp/deflate-run-$mode.json" > "$tmp/deflate-summary.txt" \
        || { cat "$tmp/deflate-summary.txt"; exit 1; }
      sleep 0.5 # the server rewrites its counts every 200 ms
      echo -n "   $peer:"
      "$VENV/bin/python" scripts/interop/check_deflate.py "$tmp/deflate-run-$mode.json" "$tmp/deflate-$mode.json" 1000 "$mode"
      kill "$dfl" 2>/dev/null || true
      wait "$dfl" 2>/dev/null || true
    done
  done

  echo "== interop ($SOCKSTORM_BACKEND backend): the articles' workloads against Python websockets (acks by id, stream gaps, per-connection URLs, keepalive 1011)"
  "$VENV/bin/python" scripts/interop/workload_server.py --seconds 60 --stats "$tmp/wl-stats.json" > "$tmp/wl.out" &
  wl=$!
  trap 'kill "$srv" "$wl" 2>/dev/null || true; rm -rf "$tmp"' EXIT
  for _ in $(seq 100); do grep -q READY "$tmp/wl.out" 2>/dev/null && break; sleep 0.1; done
  port=$(awk '/READY/ {print $2}' "$tmp/wl.out")
  [ -n "$port" ] || { echo "interop workload server did not start"; exit 1; }
  ./target/release/sockstorm run scripts/interop/workloads.toml \
    --url "ws://127.0.0.1:$port/ws/quotes?clientId=terminal-{{conn_id}}&format=json" -q --json "$tmp/wl.json" > "$tmp/wl-summary.txt" \
    || { cat "$tmp/wl-summary.txt"; exit 1; }
  sleep 0.5 # the server rewrites its counts every 200 ms
  "$VENV/bin/python" scripts/interop/check_workloads.py "$tmp/wl.json" "$tmp/wl-stats.json"
  kill "$wl" 2>/dev/null || true
  bash scripts/interop/tls.sh
}
for backend in auto epoll; do
  SOCKSTORM_BACKEND=$backend interop
done
# Socket.IO (python-socketio), STOMP (RabbitMQ web-stomp), GraphQL (graphql-ws): once, on the
# default backend (the protocol layers sit above the backends, which the runs above cover).
bash scripts/interop/protocols.sh ./target/release/sockstorm
# The gateway's permessage-deflate (serve --compression) against Python websockets and Node ws
# clients: once (the gateway does not depend on the client's backend).
echo "== serve --compression against Python websockets and Node ws clients: 200 connections each, with and without context takeover, with window bits"
bash scripts/interop/deflate_gateway.sh ./target/release/sockstorm
echo "== all tests passed"
