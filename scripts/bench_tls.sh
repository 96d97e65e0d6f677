#!/usr/bin/env bash
# TLS handshake benchmark: sockstorm's handshake mode and Debian's `openssl s_time`, both pinned
# to CPU 0, against two servers pinned to CPU 1 with the same ECDSA P-256 certificate (made
# with openssl): the built-in gateway (`serve --tls`, rustls) and nginx (OpenSSL, one worker,
# session cache + tickets). Cases: TLS 1.3 / 1.2, full / resumed. Then the client's RSS per
# idle wss:// connection at 10,000 connections against the gateway. About 2.5 minutes,
# loopback only, everything bounded and cleaned up. One run each on a shared 2-core machine:
# compare ratios and CPU per handshake, not absolute rates ("other" shows foreign load).
# Uses ./target/release/sockstorm as built (or $SOCKSTORM_BIN); build it first.
#
# sockstorm: `run wss://... --mode handshake --concurrency 32 -d 5s --close rst
#   --kx x25519,secp256r1` (connect, handshake, RST; no HTTP). x25519 is the key share and
#   the group negotiated; secp256r1 must be listed too, or OpenSSL refuses TLS 1.2 with an
#   ECDSA P-256 certificate (handshake_failure): in TLS 1.2 the client's supported groups
#   also bound the curve of the server's ECDSA key (RFC 8422 5.1), which OpenSSL enforces.
#   hs/s = completed handshakes per wall second; us/hs client = client CPU (user+sys) per
#   handshake, hs/cpu-s its inverse; us/hs server = server process CPU per handshake.
#   Full handshakes run twice: with sockstorm's verified-chain cache (default: a chain
#   identical to one verified in the last 10 s is trusted again) and with --no-verify-cache,
#   which verifies every chain as OpenSSL's client does.
# s_time: `openssl s_time -new|-reuse -time 5 -tls1_x` (one connection at a time, handshake,
#   close with FIN, no HTTP); conn/s = connections / wall time (its own "real seconds" are
#   whole seconds), client CPU from /usr/bin/time, conn/user-s as s_time prints it,
#   "resumed" from its per-connection `r` marks. s_time -reuse cannot resume TLS 1.3 without
#   reading application data (the NewSessionTicket is only processed inside SSL_read), so an
#   extra row uses `-www /`: one HTTP GET per connection, which nginx answers (the gateway
#   answers no plain GET, so there is no such row for it).
# other = CPU busy on CPUs 0-1 during the run minus client and server, in CPUs: load from
#   anything else on this shared machine (each run first waits up to 4 s for quiet CPUs).
#   --drain 0s --close-wait 0s: handshake mode has nothing to drain; with the defaults a 5 s
#   run lasts 9.2 s, the last 4 s idle.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/interop/tls_peers.sh
bin=${SOCKSTORM_BIN:-./target/release/sockstorm}
[ -x "$bin" ] || cargo build --release --bins
ensure_tls_tools
if [ ! -x /usr/bin/time ]; then
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq >/dev/null
  timeout 300 apt-get install -y -qq time >/dev/null
fi

tmp=$(mktemp -d)
cleanup() { stop_tls_peers; rm -rf "$tmp"; }
trap cleanup EXIT
make_certs "$tmp"

gw_port=$(free_port)
taskset -c 1 timeout 300 "$bin" serve --tls --cert "$tmp/leaf.pem" --key "$tmp/leaf.key" \
  --listen "127.0.0.1:$gw_port" --cpus 1 --duration 290s -q > "$tmp/gateway.out" 2>&1 &
tls_peer_pids+=($!)
wait_port "$gw_port" || { cat "$tmp/gateway.out"; exit 1; }
gw_pids=$(pgrep -P "${tls_peer_pids[-1]}")
nginx_port=$(free_port)
start_nginx "$tmp" "$nginx_port" 0 1 # no backend (handshakes only), pinned to CPU 1
nginx_master=$(pgrep -P "${tls_peer_pids[-1]}")
for _ in $(seq 50); do pgrep -P "$nginx_master" >/dev/null && break; sleep 0.1; done
nginx_pids="$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')"

# CPU accounting around each run, in clock ticks: the server's processes, and all busy time on
# CPUs 0-1 (to show load from anything else on this shared machine).
server_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
busy_ticks() { awk '/^cpu[01] / {b += $2 + $3 + $4 + $7 + $8 + $9} END {print b}' /proc/stat; }
hz=$(getconf CLK_TCK)
wait_quiet() { # up to 4 s for CPUs 0-1 to be under 10% busy for half a second
  local b0
  for _ in $(seq 8); do
    b0=$(busy_ticks); sleep 0.5
    [ $(($(busy_ticks) - b0)) -le $((hz / 10)) ] && return
  done
}
measured() { # name gateway|nginx cmd... : runs cmd; name.cpu = server_ticks busy_ticks wall_s
  local name=$1 pids s0 b0 t0 rc=0
  wait_quiet
  pids=$([ "$2" = gateway ] && echo "$gw_pids" || echo "$nginx_pids")
  shift 2
  # shellcheck disable=SC2086
  s0=$(server_ticks $pids) b0=$(busy_ticks) t0=$(date +%s.%N)
  "$@" || rc=$?
  # shellcheck disable=SC2086
  echo "$(($(server_ticks $pids) - s0)) $(($(busy_ticks) - b0)) $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')" > "$name.cpu"
  return $rc
}

echo "== TLS handshakes: client on CPU 0, server on CPU 1, ECDSA P-256 leaf, x25519"
echo "   sockstorm $("$bin" --version | awk '{print $2}') (binary of $(date -u -r "$bin" '+%F %T') UTC; HEAD $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ', uncommitted changes in src')), $(openssl version | cut -d' ' -f1-2), $(nginx -v 2>&1 | sed 's/.*: //'), kernel $(uname -r), $(getconf _NPROCESSORS_ONLN) CPUs"

hs_run() { # gateway|nginx full|resumed|fullverify version off|on [flags...]
  local out="$tmp/ss-$1-$2-$3" port
  port=$([ "$1" = gateway ] && echo "$gw_port" || echo "$nginx_port")
  measured "$out" "$1" taskset -c 0 timeout 30 "$bin" run "wss://127.0.0.1:$port/" --mode handshake \
    --concurrency 32 -d 5s --drain 0s --close-wait 0s --close rst --kx x25519,secp256r1 --cpus 0 \
    --cacert "$tmp/ca.pem" \
    --tls-version "$3" --resume "$4" "${@:5}" -q --json "$out.json" > "$out.txt" 2>&1 \
    || echo "   (sockstorm exit $? for $1 TLS $3 --resume $4; failures in the table)"
}

st_run() { # gateway|nginx version new|reuse [www]
  local out="$tmp/st-$1-$2-$3${4:+-www}" port
  port=$([ "$1" = gateway ] && echo "$gw_port" || echo "$nginx_port")
  local args=(-connect "127.0.0.1:$port" "-$3" -time 5 "-tls1_${2#1.}" -CAfile "$tmp/ca.pem")
  [ -n "${4:-}" ] && args+=(-www /)
  measured "$out" "$1" /usr/bin/time -o "$out.time" -f '%U %S %e' \
    taskset -c 0 timeout 30 openssl s_time "${args[@]}" > "$out.out" 2>&1 \
    || echo "   (s_time failed for $1 TLS $2 -$3: $(tail -1 "$out.out"))"
}

verify_cache=false
"$bin" run --help | grep -q -- --no-verify-cache && verify_cache=true
for server in gateway nginx; do
  for v in 1.3 1.2; do
    hs_run "$server" full "$v" off
    $verify_cache && hs_run "$server" fullverify "$v" off --no-verify-cache
    hs_run "$server" resumed "$v" on
    st_run "$server" "$v" new
    st_run "$server" "$v" reuse
  done
done
st_run nginx 1.3 reuse www

python3 - "$tmp" "$hz" <<'EOF'
import json, os, re, sys
tmp, hz = sys.argv[1], int(sys.argv[2])

def usage(path, n, client_cpu):
    srv, busy, wall = open(path + ".cpu").read().split()
    srv, busy, wall = int(srv) / hz, int(busy) / hz, float(wall)
    return f"{srv / n * 1e6:.0f}" if n else "-", f"{max(busy - srv - client_cpu, 0) / wall:.2f}"

def ss(server, case, v):
    p = f"{tmp}/ss-{server}-{case}-{v}"
    if not os.path.exists(p + ".json"):
        return ["-"] * 7, "-"
    r = json.load(open(p + ".json"))
    h, t, pr = r["handshake_mode"], r["tls"], r["process"]
    n = h["cycles"]
    srv, other = usage(p, n, pr["cpu_user_s"] + pr["cpu_sys_s"])
    groups = t["negotiated"]["groups"]
    group = max(groups, key=groups.get) if groups else "-"
    return [f"{h['per_s']:.0f}", f"{h['client_cpu_us_per_handshake']:.0f}", f"{h['per_client_cpu_s']:.0f}",
            srv, f"{t['resumed_share']:.0%}" if t["handshakes"] else "-", group,
            str(sum(r["failures"].values()))], other

def st(server, v, mode, www=False):
    p = f"{tmp}/st-{server}-{v}-{mode}{'-www' if www else ''}"
    try:
        out = open(p + ".out").read()
        u, s, wall = map(float, open(p + ".time").read().split()[-3:])
        n = int(re.search(r"(\d+) connections in [\d.]+s;", out).group(1))
        user_rate = float(re.search(r"([\d.]+) connections/user sec", out).group(1))
    except (OSError, AttributeError, ValueError):
        return ["-"] * 6, "-"
    marks = "".join(l for l in out.splitlines() if re.fullmatch(r"[r*]+", l))
    cpu = u + s
    srv, other = usage(p, n, cpu)
    return [f"{n / wall:.0f}", f"{cpu / n * 1e6:.0f}", f"{n / cpu:.0f}" if cpu else "-", srv,
            f"{marks.count('r') / len(marks):.0%}" if marks else "-", f"{user_rate:.0f}"], other

head = ["server", "case", "hs/s", "us/hs", "hs/cpu-s", "us/hs", "resumed", "group", "fail",
        "conn/s", "us/conn", "conn/cpu-s", "us/conn", "resumed", "conn/user-s", "other"]
rows = []
def row(server, case, a, b):
    rows.append([server, case] + a[0] + b[0] + [f"{a[1]}/{b[1]}"])
for server in ("gateway", "nginx"):
    for v in ("1.3", "1.2"):
        row(server, f"TLS {v} full", ss(server, "full", v), st(server, v, "new"))
        if os.path.exists(f"{tmp}/ss-{server}-fullverify-{v}.json"):
            row(server, "  same, no verify cache", ss(server, "fullverify", v), (["", "", "", "", "", ""], "-"))
        row(server, f"TLS {v} resumed", ss(server, "resumed", v), st(server, v, "reuse"))
row("nginx", "TLS 1.3 resumed+GET", (["(s_time only)", "", "", "", "", "", ""], "-"), st("nginx", "1.3", "reuse", True))
w = [max(len(str(x[i])) for x in rows + [head]) for i in range(len(head))]
def fmt(r):
    return "  ".join(str(c).ljust(w[i]) if i < 2 else str(c).rjust(w[i]) for i, c in enumerate(r)).rstrip()
span = lambda a, b: sum(w[a:b]) + 2 * (b - a) - 2
print(" " * (w[0] + w[1] + 4) + "sockstorm -c 32".center(span(2, 9), "-") + "  "
      + "openssl s_time (serial)".center(span(9, 15), "-") + "  " + "other".rjust(w[15]))
print(" " * (w[0] + w[1] + 4) + " " * (w[2] + 2) + "client".center(w[3] + w[4] + 2) + "  " + "server".rjust(w[5])
      + " " * (span(6, 9) + 2) + "  " + " " * (w[9] + 2) + "client".center(w[10] + w[11] + 2) + "  " + "server".rjust(w[12]))
print(fmt(head))
for r in rows:
    print(fmt(r))
print("other = foreign CPU load during the sockstorm run / the s_time run, in CPUs (0 = quiet machine)")
EOF

echo "== client RSS per idle wss:// connection (gateway, 10,000 connections at 5,000/s, resumption on)"
taskset -c 0 timeout 60 "$bin" run "wss://127.0.0.1:$gw_port/" -c 10000 --connect-rate 5000 -d 8s \
  --cpus 0 --cacert "$tmp/ca.pem" -q --json "$tmp/rss.json" > "$tmp/rss.txt" 2>&1 \
  || echo "   (sockstorm exit $?; failures below)"
python3 - "$tmp/rss.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
p, c, t = r["process"], r["counters"], r["tls"]
print(f"   {c['established']} established of {c['attempts']}, peak open {p['peak_open']}: RSS "
      f"{p['rss_before_bytes'] / 2**20:.1f} MiB -> {p['rss_at_peak_open_bytes'] / 2**20:.1f} MiB = "
      f"{p['rss_per_open_connection_bytes']} B per open connection")
print(f"   handshakes {t['full']} full + {t['resumed']} resumed ({', '.join(t['negotiated']['versions'])}), "
      f"ramp {r['ramp_s']:.2f} s, client CPU {p['cpu_user_s'] + p['cpu_sys_s']:.2f} s, "
      f"failures {r['failures'] or 'none'}")
EOF

echo "== crypto floor (criterion, benches/tls.rs, pinned to CPU 0) vs client CPU per full TLS 1.3 handshake above"
taskset -c 0 cargo bench --bench tls -- --warm-up-time 1 --measurement-time 3 > "$tmp/criterion.txt" 2>&1 \
  || { tail -20 "$tmp/criterion.txt"; exit 1; }
python3 - "$tmp" <<'EOF'
import json, sys
tmp = sys.argv[1]
def crit(name):
    return json.load(open(f"target/criterion/{name}/new/estimates.json"))["median"]["point_estimate"] / 1000
def run(case):
    return json.load(open(f"{tmp}/ss-gateway-{case}-1.3.json"))["handshake_mode"]["client_cpu_us_per_handshake"]
x, v = crit("floor/x25519_keygen_agree"), crit("floor/p256_verify")
floor2, floor1 = x + 2 * v, x + v
print(f"   aws-lc-rs: X25519 keygen+agree {x:.1f} us, P-256 verify {v:.1f} us")
print(f"   floor, verifying the chain (X25519 + 2 verifies): {floor2:.1f} us; chain cached (X25519 + CertificateVerify): {floor1:.1f} us")
for name in ("full_tls13_no_verify_cache", "full_tls13", "resumed_tls13", "full_tls12", "resumed_tls12"):
    print(f"   rustls client side of an in-memory handshake, {name}: {crit('rustls_client/' + name):.1f} us")
full, verify = run("full"), run("fullverify")
print(f"   sockstorm --mode handshake vs gateway, TLS 1.3 full: {verify:.1f} us/hs verifying every chain = "
      f"{verify / floor2:.2f}x its floor; {full:.1f} us/hs with the chain cache = {full / floor1:.2f}x its floor")
EOF
