"""Checks the TLS side of a sockstorm --json result against a foreign TLS server (the echo side
of session runs is check_echo.py's job): the version negotiated is the one asked for, nothing
failed, enough handshakes resumed, and, with --nginx-log, that nginx saw the same resumptions.
Exits non-zero with the reason.

  check_tls.py RESULT.json --label L --version 1.3 --min-resumed 0.9 [--handshakes N]
               [--min-cycles N] [--nginx-log FILE]

--handshakes N: session mode, exactly N handshakes (one per connection).
--min-cycles N: handshake mode, at least N connect/handshake/close cycles.
--nginx-log: access log written with `log_format '$ssl_protocol $ssl_session_reused $status'`
  (one line per upgrade request); its lines for this version must match the client's counts:
  as many 101s as handshakes, as many "r" (reused) as client-side resumptions.
"""
import argparse
import json
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("result")
p.add_argument("--label", required=True)
p.add_argument("--version", choices=["1.2", "1.3"], required=True)
p.add_argument("--min-resumed", type=float, required=True, help="share of all handshakes")
p.add_argument("--handshakes", type=int)
p.add_argument("--min-cycles", type=int)
p.add_argument("--nginx-log")
a = p.parse_args()

r = json.load(open(a.result))
c, t = r["counters"], r["tls"]
version = "TLSv" + a.version
n = t["handshakes"]
problems = []
if r["failures"]:
    problems.append(f"failures: {r['failures']}")
if a.handshakes is not None and n != a.handshakes:
    problems.append(f"{n} handshakes, want {a.handshakes}")
if a.min_cycles is not None:
    cycles = c["handshake_cycles"]
    if cycles < a.min_cycles:
        problems.append(f"{cycles} handshake cycles, want > {a.min_cycles}")
    if cycles != n:
        problems.append(f"{cycles} cycles but {n} handshakes")
if t["negotiated"]["versions"] != {version: n}:
    problems.append(f"versions negotiated {t['negotiated']['versions']}, want {version} only")
if t["full"] + t["resumed"] != n:
    problems.append(f"full {t['full']} + resumed {t['resumed']} != handshakes {n}")
share = t["resumed"] / n if n else 0.0
if share < a.min_resumed:
    problems.append(f"resumed {t['resumed']}/{n} = {share:.1%}, want >= {a.min_resumed:.0%}")

nginx = ""
if a.nginx_log:
    # nginx writes a line when the proxied upgrade ends; give the last closes a moment.
    deadline = time.monotonic() + 5
    while True:
        lines = [l.split() for l in open(a.nginx_log)]
        mine = [l for l in lines if l and l[0] == version]
        if len(mine) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    upgraded = sum(1 for l in mine if l[2] == "101")
    reused = sum(1 for l in mine if l[1] == "r")
    if upgraded != n or len(mine) != n:
        problems.append(f"nginx logged {len(mine)} {version} requests ({upgraded} upgraded), client made {n}")
    if reused != t["resumed"]:
        problems.append(f"nginx logged {reused} reused sessions, client counted {t['resumed']} resumed")
    nginx = f"; nginx access log: {upgraded} upgrades, {reused} with ssl_session_reused=r"

if problems:
    print(f"{a.label} FAILED: " + "; ".join(problems))
    sys.exit(1)
first = t["full"] - t["resume_refused"]  # full handshakes that had no session to offer
what = (f"{c['handshake_cycles']} handshake cycles ({r['handshake_mode']['per_s']:.0f}/s)"
        if a.min_cycles is not None else f"{n} handshakes")
print(f"{a.label} ok: {what}, {version} {'/'.join(t['negotiated']['ciphers'])}, "
      f"resumed {t['resumed']} ({share:.1%}), full {t['full']} "
      f"({first} of them with no stored session to offer), "
      f"resumption offered {t['resume_attempted']} refused {t['resume_refused']}"
      + (f", TLS 1.3 tickets received {c['tls_tickets_received']}" if a.version == "1.3" else "")
      + nginx)
