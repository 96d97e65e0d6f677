"""Checks a sockstorm --json result of an echo run: every connection established, every
message sent came back and was matched, nothing failed. Exits non-zero with the reason."""
import json
import sys

path, want = sys.argv[1], int(sys.argv[2])
r = json.load(open(path))
c = r["counters"]
problems = []
if c["attempts"] != want or c["established"] != want:
    problems.append(f"attempts={c['attempts']} established={c['established']}, want {want}")
if r["failures"]:
    problems.append(f"failures: {r['failures']}")
if c["msgs_sent"] < want:
    problems.append(f"only {c['msgs_sent']} messages sent")
if c["msgs_received"] != c["msgs_sent"] or c["msgs_unanswered"] != 0:
    problems.append(f"sent={c['msgs_sent']} received={c['msgs_received']} unanswered={c['msgs_unanswered']}")
if r["histograms"]["ws_msg_rtt"]["count"] != c["msgs_sent"]:
    problems.append("RTT histogram count differs from messages sent")
if r["close_codes"].get("1000") != want:
    problems.append(f"close codes: {r['close_codes']}")
if problems:
    print("interop FAILED: " + "; ".join(problems))
    sys.exit(1)
print(f"interop ok: {want} connections, {c['msgs_sent']} messages echoed and matched, "
      f"rtt p99 {r['histograms']['ws_msg_rtt']['p99_us']} us")
