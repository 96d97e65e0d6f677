"""Checks a compressed echo run against the deflate server's own counts: every connection
agreed permessage-deflate, every message went compressed and came back compressed and
matched, and the compression ratio on the known payload is what deflate gives it.

Usage: check_deflate.py RESULT.json SERVER_STATS.json CONNECTIONS (takeover|no-takeover)
"""
import json
import sys

doc = json.load(open(sys.argv[1]))
srv = json.load(open(sys.argv[2]))
n = int(sys.argv[3])
mode = sys.argv[4]
c = doc["counters"]
assert c["established"] == n, ("established", c["established"], n)
assert srv["connections"] == n and srv["deflate_connections"] == n, srv
# One answer for every connection; without takeover it names both no_context_takeover
# parameters, with takeover neither.
assert len(srv["params"]) == 1, srv["params"]
want = next(iter(srv["params"]))
names = {p.strip().split("=")[0] for p in want.split(";")}
takeover_off = {"server_no_context_takeover", "client_no_context_takeover"}
assert "permessage-deflate" in names, want
assert (names >= takeover_off) if mode == "no-takeover" else not (names & takeover_off), want
sent = c["msgs_sent"]
assert sent > 0 and c["msgs_received"] == sent and c["msgs_unanswered"] == 0, c
assert srv["messages"] == sent, ("server echoed", srv["messages"], "sent", sent)
assert c["deflate_msgs_received"] == sent, ("compressed echoes", c["deflate_msgs_received"], sent)
assert doc["failures"] == {}, doc["failures"]
# The payload is 1,000 bytes of one repeated JSON record: deflate shrinks one message alone
# to under 10 %; with context takeover, repeats of it are a few bytes each.
size = c["deflate_payload_sent"] / sent
assert size == 1000, size
ratio_out = c["deflate_wire_sent"] / c["deflate_payload_sent"]
ratio_in = c["deflate_wire_received"] / c["deflate_payload_received"]
bound = 0.1 if mode == "no-takeover" else 0.03
assert ratio_out < bound and ratio_in < bound, (ratio_out, ratio_in, bound)
assert c["deflate_payload_received"] == c["deflate_payload_sent"], c
print(f"   deflate ({mode}): {n} connections agreed `{want}`; {sent} messages sent compressed, "
      f"echoed and matched; wire/payload {ratio_out:.4f} out, {ratio_in:.4f} in")
