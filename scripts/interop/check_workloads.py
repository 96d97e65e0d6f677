"""Compares a sockstorm --json result of scripts/interop/workloads.toml with what the Python
websockets server counted (scripts/interop/workload_server.py --stats). Exits non-zero with
every difference."""
import json
import sys

r = json.load(open(sys.argv[1]))
s = json.load(open(sys.argv[2]))
c = r["counters"]
problems = []


def same(what, ours, theirs):
    if ours != theirs:
        problems.append(f"{what}: sockstorm {ours}, server {theirs}")


same("connections", c["attempts"], s["connections"])
same("established", c["established"], s["connections"])
ids = s["client_ids"]
same("distinct clientId values", len(set(ids)), len(ids))
if r["failures"]:
    problems.append(f"failures: {r['failures']}")
answered = 0
for name in ("apply_operation", "publish"):
    q = r["requests"][name]
    if q["sent"] == 0 or q["answered"] != q["sent"] or q["unanswered"] != 0:
        problems.append(f"{name}: {q['sent']} sent, {q['answered']} answered, {q['unanswered']} unanswered")
    answered += q["answered"]
same("replies matched vs acks sent", answered, s["acks"])
same("quotes", c["stream_msgs"], s["quotes"])
same("stream gaps", c["stream_gaps"], s["gaps_visible"])
same("stream seqs skipped", c["stream_skipped"], s["gaps_visible"])
same("stream duplicates", c["stream_duplicates"], 0)
same("checks passed", r["checks"]["price positive"]["passed"], s["quotes"])
same("checks failed", r["checks"]["price positive"]["failed"], 0)
same("1011 closes", r["close_codes"].get("1011", 0), s["close_codes_sent"].get("1011", 0))
same("1011 closes (the silent clients)", r["close_codes"].get("1011", 0), 10)
if problems:
    print("interop workloads FAILED: " + "; ".join(problems))
    sys.exit(1)
print(f"interop workloads ok: {c['established']} connections with distinct clientIds, "
      f"{answered} replies matched to {s['acks']} acks, {s['quotes']} quotes with "
      f"{s['gaps_visible']} gaps seen exactly, {r['close_codes'].get('1011', 0)} keepalive closes (1011)")
