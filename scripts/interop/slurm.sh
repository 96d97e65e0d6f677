#!/usr/bin/env bash
# deploy/slurm/sockstorm.sbatch on a real single-node Slurm cluster (Debian's slurm-wlm and
# munge): the recipe runs 3 tasks against the built-in gateway, and the merge is checked
# against the gateway's own counts (established, messages exact, no failures) and the
# segments' histograms (merged counts = sums).
#
#   bash scripts/interop/slurm.sh [path/to/sockstorm]   (default ./target/release/sockstorm)
#
# Root only (it installs packages and runs slurmd, which must be root to launch tasks). Every
# daemon is started here, in the foreground of a background job, with its configuration,
# state, spool, sockets and logs under $SLURM_DIR, and stopped on exit; nothing in /etc is
# changed and no service manager is needed. A re-run stops what a killed earlier run left
# (by the pid files there) and starts from a clean directory. About 15 s once installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(realpath "${1:-./target/release/sockstorm}")
PY=${PYTHON:-python3}   # the check below needs only the standard library
SLURM_DIR=${SLURM_DIR:-/run/sockstorm-slurm}
# Not the default 6817/6818, so that a real Slurm on this machine is not in the way.
CTLD_PORT=${SLURM_CTLD_PORT:-16817}
SLURMD_PORT=${SLURM_SLURMD_PORT:-16818}
NODE=$(hostname -s)

[ "$(id -u)" = 0 ] || { echo "slurm.sh: needs root (slurmd launches the tasks)"; exit 1; }
[ -x "$BIN" ] || { echo "slurm.sh: no sockstorm binary at $BIN (cargo build --release --bins)"; exit 1; }

# 1. Packages, only when missing: the controller, the node daemon, the client commands
#    (sbatch, srun, sinfo) and munge, Slurm's authentication.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
  || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  echo "   installing slurmctld slurmd slurm-client munge (Debian)"
  apt_log=$(mktemp)
  { apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client munge; } >"$apt_log" 2>&1 \
    || { cat "$apt_log"; echo "slurm.sh: apt-get failed"; exit 1; }
  rm -f "$apt_log"
fi

# What a killed earlier run left: its jobs (cancelled through its own controller, so that
# slurmd ends their steps), its daemons and gateway (by their pid files), its directory.
cancel_jobs() {
  SLURM_CONF=$SLURM_DIR/slurm.conf timeout 10 scancel --user=root 2>/dev/null || return 0
  for _ in $(seq 50); do
    [ -z "$(SLURM_CONF=$SLURM_DIR/slurm.conf timeout 5 squeue -h 2>/dev/null || true)" ] && break
    sleep 0.2
  done
}
if [ -e "$SLURM_DIR/slurmctld.pid" ] && kill -0 "$(cat "$SLURM_DIR/slurmctld.pid")" 2>/dev/null; then
  echo "   cancelling the jobs of an earlier run"
  cancel_jobs
fi
for name in gateway slurmd slurmctld munged; do
  pidfile=$SLURM_DIR/$name.pid
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile" 2>/dev/null || true)
  [ -n "$pid" ] || continue
  echo "   stopping pid $pid, left by an earlier run ($pidfile)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
done
rm -rf "$SLURM_DIR"
for port in "$CTLD_PORT" "$SLURMD_PORT"; do
  command -v ss >/dev/null || break
  ! ss -Hltn "sport = :$port" | grep -q . \
    || { echo "slurm.sh: port $port is taken (set SLURM_CTLD_PORT / SLURM_SLURMD_PORT)"; exit 1; }
done
# munged refuses group- or world-writable directories on the way to its socket and key.
install -d -m 0755 "$SLURM_DIR" "$SLURM_DIR/munge" "$SLURM_DIR/state" "$SLURM_DIR/spool" \
  "$SLURM_DIR/job"
tmp=$SLURM_DIR/job

pids=()
gw=
cleanup() {
  local rc=$?
  [ -n "$gw" ] && kill "$gw" 2>/dev/null || true
  # A job still running (sbatch timed out, or this script was interrupted) is cancelled first.
  [ "${#pids[@]}" -ge 2 ] && cancel_jobs
  # slurmd first (it may still have job steps), then the controller, then munge.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.1; done
    kill -9 "${pids[i]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -f "$SLURM_DIR"/*.pid
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

logs() {
  for f in "$SLURM_DIR"/*.log "$tmp"/*.out; do
    [ -e "$f" ] || continue
    echo "---- $f (last 30 lines)"
    tail -n 30 "$f"
  done
}
die() { echo "slurm.sh: $*"; logs; exit 1; }

# 2. munge with its own key and socket.
dd if=/dev/urandom of="$SLURM_DIR/munge/munge.key" bs=1 count=1024 status=none
chmod 0400 "$SLURM_DIR/munge/munge.key"
munged --foreground --socket="$SLURM_DIR/munge/munge.socket" \
  --key-file="$SLURM_DIR/munge/munge.key" --pid-file="$SLURM_DIR/munged.pid" \
  --seed-file="$SLURM_DIR/munge/munged.seed" --log-file="$SLURM_DIR/munged.log" \
  >>"$SLURM_DIR/munged.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$SLURM_DIR/munge/munge.socket" ] && break; sleep 0.1; done
munge -n --socket="$SLURM_DIR/munge/munge.socket" | unmunge --socket="$SLURM_DIR/munge/munge.socket" >/dev/null \
  || die "munge does not work"

# The smallest slurm.conf that runs jobs without systemd or cgroups: processes are tracked by
# their parent pids (proctrack/linuxproc), tasks are not bound (task/none), no accounting.
# The node declares at least 3 CPUs (config_overrides lets it claim more than it has): Slurm
# refuses --ntasks-per-node above a node's CPUs even with --overcommit ("Requested node
# configuration is not available"), and the tasks are not pinned, so nothing else changes.
cpus=$(nproc)
[ "$cpus" -ge 3 ] || cpus=3
cat >"$SLURM_DIR/slurm.conf" <<EOF
ClusterName=sockstorm
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SLURM_DIR/munge/munge.socket
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdParameters=config_overrides
PlugStackConfig=$SLURM_DIR/plugstack.conf
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
: >"$SLURM_DIR/plugstack.conf"
export SLURM_CONF=$SLURM_DIR/slurm.conf

# In the foreground (-D), without a log file, so each logs to its stderr: one log each.
slurmctld -D >>"$SLURM_DIR/slurmctld.log" 2>&1 &
pids+=($!)
slurmd -D -N "$NODE" >>"$SLURM_DIR/slurmd.log" 2>&1 &
pids+=($!)
state=
for _ in $(seq 150); do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.2
done
[ "$state" = idle ] || die "node $NODE is not idle after 30 s (sinfo: ${state:-no answer})"
echo "   slurm $(sinfo -V | awk '{print $2}'): node $NODE idle ($cpus CPUs declared, $(nproc) online), controller on 127.0.0.1:$CTLD_PORT"

# 3. The gateway, on a free loopback port, exiting by itself if this script is killed.
"$BIN" serve --listen 127.0.0.1:0 --duration 120s -q >"$tmp/gateway.out" 2>&1 &
gw=$!
echo "$gw" >"$SLURM_DIR/gateway.pid"
for _ in $(seq 100); do grep -q 'listening on' "$tmp/gateway.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's|.*listening on ws://\([^/]*\)/.*|\1|p' "$tmp/gateway.out")
[ -n "$addr" ] || die "the gateway did not start: $(cat "$tmp/gateway.out")"

# Echo sessions in two scenarios and a fan-out channel, 31 connections that split unevenly
# over 3 tasks (chat 4+3+3, ticks 3+2+2, subscribers 5+4+4): the one publisher sits in task 0,
# the subscribers in all three, so owed and lost are settled across the segments' documents.
# No reconnects; a drain so every echo and delivery is back.
cat >"$tmp/scenario.toml" <<EOF
url = "ws://$addr/ws?c={{conn_id}}"
duration = "4s"
connect_rate = 310
drain = "1s"
no_reconnect = true

[[scenario]]
name = "chat"
connections = 10
message = '{"seq":{{seq}},"text":"{{rand_choice hi hello hey}}"}'
message_rate = 4

[[scenario]]
name = "ticks"
connections = 7
message = 'tick {{seq}}'
message_rate = 10

[[scenario]]
name = "subscribers"
role = "subscriber"
channel = "prices"
connections = 13

[[scenario]]
name = "publisher"
role = "publisher"
channel = "prices"
connections = 1
start = "1s"
message_rate = 10
message_count = 20
EOF

# 4. The checked-in recipe, 3 tasks on the one node (its --ntasks-per-node=1 is for one task
#    per host on a real cluster; command-line options override #SBATCH lines).
out=$tmp/out
SOCKSTORM_BIN=$BIN SOCKSTORM_OUT=$out SOCKSTORM_START_IN=3 \
  timeout 90 sbatch --wait --quiet --nodes=1 --ntasks=3 --ntasks-per-node=3 \
  --chdir="$tmp" --output="$tmp/sbatch-%j.out" \
  deploy/slurm/sockstorm.sbatch "$tmp/scenario.toml" \
  || die "sbatch --wait failed (exit $?)"

# The gateway's own totals, printed when it stops.
kill -TERM "$gw"
wait "$gw" || true
gw=
totals=$(grep -E 'stopped; accepted|channels:' "$tmp/gateway.out") || die "no totals from the gateway"

# 5. Segments, merge and gateway agree.
"$PY" - "$out" "$totals" <<'EOF'
import json, re, sys, glob, os
out, totals = sys.argv[1], sys.argv[2]
m = re.search(r"accepted (\d+) connections, (\d+) messages in, (\d+) out, (\d+) handshakes rejected", totals)
accepted, gw_in, gw_out, rejected = map(int, m.groups())
m = re.search(r"channels: (\d+) publishes, (\d+) deliveries", totals)
gw_pub, gw_deliv = map(int, m.groups()) if m else (0, 0)
segs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "segment-*.json")))]
merged = json.load(open(os.path.join(out, "merged.json")))
assert len(segs) == 3, f"{len(segs)} segment files"
assert sorted(s["segment"]["index"] for s in segs) == [0, 1, 2], [s["segment"] for s in segs]
for s in segs:
    assert s["segment"]["count"] == 3 and s["segment"]["source"] == "SLURM_PROCID", s["segment"]
    assert not s["failures"], s["failures"]
    assert s["start_at"]["unix_us"] == segs[0]["start_at"]["unix_us"], "one --start-at for all"
# Fan-out owed, lost and foreign are settled on the merged log (each segment alone takes the
# publisher of segment 0 for a stranger's); every other count is the segments' sum.
settled = {"fanout_delivered_owed", "fanout_foreign", "fanout_owed", "fanout_lost"}
for k, v in merged["counters"].items():
    assert k in settled or v == sum(s["counters"][k] for s in segs), k
assert [s["segment"]["connections"] for s in segs] == [13, 9, 9], [s["segment"] for s in segs]
assert [s["counters"]["fanout_published"] for s in segs] == [20, 0, 0]
c = merged["counters"]
assert c["established"] == 31 == accepted, (c["established"], accepted)
# The gateway's messages in: echoes, publishes and the subscribers' subscribe messages; out:
# echoes, and pushes (deliveries and subscribe acks).
assert c["msgs_sent"] + c["fanout_published"] + c["on_open_sent"] == gw_in, (c, gw_in)
assert c["msgs_received"] + c["msgs_pushed"] == gw_out, (c, gw_out)
assert c["msgs_pushed"] == c["fanout_delivered"] + c["expects_met"], c
assert c["msgs_sent"] > 0 and c["msgs_unanswered"] == 0, c
f = merged["fanout"]
assert f["published"] == 20 == gw_pub, (f, gw_pub)
assert f["owed"] == 20 * 13 == f["delivered_owed"] == gw_deliv, (f, gw_deliv)
assert f["lost"] == 0 and f["foreign"] == 0 and f["broadcast_completion"]["messages_incomplete"] == 0, f
assert not merged["failures"] and rejected == 0, (merged["failures"], rejected)
hist = {}
for name, h in merged["histograms"].items():
    want = sum(s["histograms"].get(name, {}).get("count", 0) for s in segs)
    assert h.get("count", 0) == want, (name, h.get("count"), want)
    hist[name] = want
assert len(merged["merged"]["documents"]) == 3, merged["merged"]
assert merged["verdict"] == "ok", merged["verdict"]
offsets = ", ".join(str(s["start_at"]["offset_us"]) for s in segs)
print(f"   PASS: 3 Slurm tasks (SLURM_PROCID 0-2), established "
      f"{'+'.join(str(s['counters']['established']) for s in segs)} = {c['established']} = gateway accepted; "
      f"echoes {c['msgs_sent']} + published {c['fanout_published']} + subscribes {c['on_open_sent']} = gateway in, "
      f"echoes {c['msgs_received']} + pushed {c['msgs_pushed']} = gateway out; "
      f"fan-out across segments: owed {f['owed']} = delivered {f['delivered_owed']} = gateway deliveries, lost 0; 0 failures; "
      f"merged histogram counts = sums ({', '.join(f'{k} {v}' for k, v in hist.items() if v)}); "
      f"start offsets from --start-at {offsets} µs")
EOF
