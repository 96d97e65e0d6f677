#!/usr/bin/env bash
# The gateway's side of permessage-deflate (`serve --compression`) against clients nobody here
# wrote: Python websockets and Node ws, 200 connections each, with and without context
# takeover, and with the gateway's own asks (window bits). Every client's echo must be the very
# message it sent, every 101 must carry the expected answer, and the gateway's totals (messages
# in and out, compressed sessions) must equal the clients' counts.
# Usage: scripts/interop/deflate_gateway.sh path/to/sockstorm
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$1
VENV=.venv
tmp=$(mktemp -d)
gw=""
trap '[ -n "$gw" ] && kill "$gw" 2>/dev/null; rm -rf "$tmp"' EXIT

conns=200
msgs=20
# serve's asks | client flag | the answer every client must get
cases=(
  "deflate||permessage-deflate"
  "deflate|--no-context-takeover|permessage-deflate; server_no_context_takeover; client_no_context_takeover"
  "deflate:server_max_window_bits=10,client_max_window_bits=9||permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"
)
for case in "${cases[@]}"; do
  IFS='|' read -r asks flag answer <<< "$case"
  "$BIN" serve --listen 127.0.0.1:0 --compression "$asks" -q --duration 120s > "$tmp/gw.out" &
  gw=$!
  for _ in $(seq 100); do grep -q listening "$tmp/gw.out" 2>/dev/null && break; sleep 0.1; done
  url=$(grep -o 'ws://[0-9.:]*/' "$tmp/gw.out" | head -1)
  [ -n "$url" ] || { echo "serve --compression did not start"; cat "$tmp/gw.out"; exit 1; }
  "$VENV/bin/python" scripts/interop/deflate_client.py --url "$url" --connections $conns --messages $msgs $flag > "$tmp/python.json"
  node scripts/interop/node/deflate_client.js --url "$url" --connections $conns --messages $msgs $flag > "$tmp/node.json"
  kill -INT "$gw"
  wait "$gw" || true
  gw=""
  "$VENV/bin/python" - "$tmp/python.json" "$tmp/node.json" "$tmp/gw.out" "$answer" $conns $msgs "$asks" <<'PY'
import json, re, sys
py, node, gw_out, answer, conns, msgs, asks = sys.argv[1:]
conns, msgs = int(conns), int(msgs)
each = msgs + 1  # the text messages, then one binary (Python) or one fragmented (Node)
out = open(gw_out).read()
stopped = re.search(r"accepted (\d+) connections, (\d+) messages in, (\d+) out", out)
sessions = re.search(r"permessage-deflate: (\d+) compressed sessions", out)
total = 0
for name, path in (("python websockets", py), ("node ws", node)):
    c = json.load(open(path))
    assert c["errors"] == [], (name, c["errors"][:3])
    assert c["connections"] == conns, (name, c)
    assert c["answers"] == {answer: conns}, (name, c["answers"])
    assert (c["sent"], c["matched"], c["mismatched"]) == (conns * each, conns * each, 0), (name, c)
    total += c["sent"]
    print(f"   {name}: {c['connections']} connections agreed `{answer}`, {c['matched']} echoes matched")
assert stopped and sessions, out
accepted, m_in, m_out = map(int, stopped.groups())
assert (accepted, m_in, m_out, int(sessions.group(1))) == (2 * conns, total, total, 2 * conns), out
print(f"   serve --compression {asks}: {m_in} messages in = {m_out} out = the clients' {total}; {sessions.group(1)} compressed sessions")
PY
done
