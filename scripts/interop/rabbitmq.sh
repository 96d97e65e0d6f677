#!/usr/bin/env bash
# A private RabbitMQ node (Debian's rabbitmq-server, Erlang/OTP) with rabbitmq_web_stomp, for the
# STOMP-over-WebSocket interop test. Loopback only; every wait is bounded.
#
#   rabbitmq.sh install      apt-get install rabbitmq-server if missing (root; idempotent). The
#                            package's own service is kept from starting (policy-rc.d) and
#                            stopped if it runs anyway, so nothing listens on 0.0.0.0.
#   rabbitmq.sh start DIR    start node sockstorm-<pid>@localhost whose whole state lives under
#                            DIR (mnesia, logs, config, enabled_plugins, cookie via HOME=DIR,
#                            its own epmd on a free 127.0.0.1 port); web_stomp on 127.0.0.1:<free
#                            port>/ws, plain STOMP TCP listener off, AMQP on 127.0.0.1:<free>,
#                            guest/guest (loopback). Waits (<= 60 s) until web_stomp accepts,
#                            prints exactly `READY <web_stomp_port>` on stdout and returns; the
#                            broker runs on in the background. Already running there: prints the
#                            same line again.
#   rabbitmq.sh stop DIR     rabbitmqctl stop, then TERM/KILL by recorded pid; kills the epmd it
#                            started. Idempotent (nothing running: exit 0).
#   rabbitmq.sh stats DIR    one JSON line: open connections by protocol ("Web STOMP 1.2": n)
#                            and the node's cumulative message counters (see cmd_stats; core
#                            rabbit_global_counters, no management plugin needed).
#   rabbitmq.sh ctl DIR ARGS rabbitmqctl against that node (debugging).
#
# Everything but `READY` goes to stderr. Files in DIR: env (the node's environment), pids,
# ports, server.out (broker stdout/stderr), log/ (RabbitMQ's log), mnesia/.
set -euo pipefail

RMQ_BIN=/usr/lib/rabbitmq/bin # the real scripts: /usr/sbin/* are wrappers that `su rabbitmq`
START_TIMEOUT=${RABBITMQ_START_TIMEOUT:-60}

die() { echo "rabbitmq.sh: $*" >&2; exit 1; }

have_rabbitmq() {
  [ -x "$RMQ_BIN/rabbitmq-server" ] && command -v epmd >/dev/null \
    && compgen -G "/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/rabbitmq_web_stomp-*" >/dev/null
}

# The package's postinst runs `invoke-rc.d rabbitmq-server start` (and `|| exit 1`), which
# starts node rabbit@<host> on 0.0.0.0:5672/25672 plus epmd on 0.0.0.0:4369. A policy-rc.d
# that exits 101 makes invoke-rc.d skip it (Docker-style images already have one).
cmd_install() {
  if have_rabbitmq; then stop_default_service; return 0; fi
  [ "$(id -u)" = 0 ] || die "install needs root (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  local policy=/usr/sbin/policy-rc.d made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary, from sockstorm scripts/interop/rabbitmq.sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  local log
  log=$(mktemp)
  { timeout 300 apt-get update -qq \
      && timeout 600 apt-get install -y -qq --no-install-recommends rabbitmq-server; } \
    > "$log" 2>&1 || { tail -30 "$log" >&2; rm -f "$log"; die "apt-get install rabbitmq-server failed"; }
  rm -f "$log"
  if [ -n "$made_policy" ]; then rm -f "$policy"; trap - EXIT; fi
  have_rabbitmq || die "rabbitmq-server installed but $RMQ_BIN/rabbitmq-server or web_stomp missing"
  stop_default_service
}

# If the packaged service runs anyway (a machine without policy-rc.d where it was installed
# before), stop it and keep it from starting at boot; then an epmd it left behind.
stop_default_service() {
  [ "$(id -u)" = 0 ] || return 0
  if [ -d /run/systemd/system ]; then
    systemctl disable --now rabbitmq-server.service epmd.socket epmd.service >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/rabbitmq-server ] && [ -s /var/run/rabbitmq/pid ] \
      && kill -0 "$(cat /var/run/rabbitmq/pid)" 2>/dev/null; then
    echo "rabbitmq.sh: stopping the packaged rabbitmq-server service" >&2
    timeout 60 /etc/init.d/rabbitmq-server stop >/dev/null 2>&1 || true
  fi
}

# N distinct free TCP ports on 127.0.0.1 (all held open while picked, so no duplicates; another
# process may still take one before the broker binds it: start then fails with the log tail).
free_ports() { # n
  python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# PID is alive and its command line contains WORD (guards against a recycled pid in DIR/pids).
ours() { # pid word
  alive "${1:-}" && tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# Sets up the node's environment (from DIR/env, written by start).
load_env() {
  local dir=$1
  [ -f "$dir/env" ] || return 1
  set -a
  # shellcheck disable=SC1091
  . "$dir/env"
  set +a
}

ctl() { # dir args...
  local dir=$1; shift
  ( load_env "$dir" && timeout 60 "$RMQ_BIN/rabbitmqctl" -q "$@" )
}

pid_of() { # dir name
  [ -s "$1/pids/$2" ] && cat "$1/pids/$2" || true
}

cmd_start() {
  local dir=${1:?usage: rabbitmq.sh start DIR}
  have_rabbitmq || die "rabbitmq-server not installed: run rabbitmq.sh install"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if alive "$(pid_of "$dir" server)" && [ -s "$dir/ports" ]; then
    local ws; ws=$(sed -n 's/^web_stomp=//p' "$dir/ports")
    port_open "$ws" && { echo "READY $ws"; return 0; }
  fi
  cmd_stop "$dir" 2>/dev/null || true
  mkdir -p "$dir/mnesia" "$dir/log" "$dir/pids"

  local node="sockstorm-$$@localhost"
  local amqp dist epmd_port ws
  read -r amqp dist epmd_port ws < <(free_ports 4)
  printf 'web_stomp=%s\namqp=%s\ndist=%s\nepmd=%s\nnode=%s\n' \
    "$ws" "$amqp" "$dist" "$epmd_port" "$node" > "$dir/ports"

  # Erlang cookie: HOME=DIR makes the server and rabbitmqctl use DIR/.erlang.cookie.
  [ -s "$dir/.erlang.cookie" ] || { (umask 077; python3 -c 'import secrets; print(secrets.token_hex(20).upper(), end="")' > "$dir/.erlang.cookie"); }
  chmod 400 "$dir/.erlang.cookie"

  cat > "$dir/rabbitmq.conf" <<EOF
# sockstorm interop: loopback only
listeners.tcp.default = 127.0.0.1:$amqp
listeners.ssl = none
# rabbitmq_stomp (needed by web_stomp) would listen on 0.0.0.0:61613: no plain TCP STOMP
stomp.listeners.tcp = none
stomp.listeners.ssl = none
web_stomp.tcp.ip = 127.0.0.1
web_stomp.tcp.port = $ws
web_stomp.ws_path = /ws
default_user = guest
default_pass = guest
default_vhost = /
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
# guest may log in from loopback only (the default, stated)
loopback_users.guest = true
log.file.level = info
log.console = false
EOF
  echo '[rabbitmq_web_stomp].' > "$dir/enabled_plugins"
  : > "$dir/rabbitmq-env.conf" # instead of /etc/rabbitmq/rabbitmq-env.conf

  cat > "$dir/env" <<EOF
HOME='$dir'
RABBITMQ_NODENAME='$node'
RABBITMQ_USE_LONGNAME=false
RABBITMQ_MNESIA_BASE='$dir/mnesia'
RABBITMQ_LOG_BASE='$dir/log'
RABBITMQ_CONFIG_FILE='$dir/rabbitmq.conf'
RABBITMQ_ADVANCED_CONFIG_FILE='$dir/advanced.config'
RABBITMQ_CONF_ENV_FILE='$dir/rabbitmq-env.conf'
RABBITMQ_ENABLED_PLUGINS_FILE='$dir/enabled_plugins'
RABBITMQ_PID_FILE='$dir/pids/beam'
RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
RABBITMQ_NODE_PORT=$amqp
RABBITMQ_DIST_PORT=$dist
RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
ERL_EPMD_ADDRESS=127.0.0.1
ERL_EPMD_PORT=$epmd_port
EOF

  load_env "$dir"
  # Our own epmd, loopback, on a private port (never a shared one on 0.0.0.0:4369).
  setsid epmd -address 127.0.0.1 -port "$epmd_port" < /dev/null > "$dir/epmd.out" 2>&1 &
  echo $! > "$dir/pids/epmd"
  local t0=$SECONDS
  until port_open "$epmd_port"; do
    (( SECONDS - t0 < 10 )) || die "epmd did not listen on 127.0.0.1:$epmd_port: $(cat "$dir/epmd.out")"
    sleep 0.1
  done

  # Own session, no inherited stdout: a caller's $(...) must not wait on the broker.
  setsid "$RMQ_BIN/rabbitmq-server" < /dev/null > "$dir/server.out" 2>&1 &
  echo $! > "$dir/pids/server"
  local spid=$!
  t0=$SECONDS
  until port_open "$ws"; do
    if ! alive "$spid" || (( SECONDS - t0 >= START_TIMEOUT )); then
      echo "rabbitmq.sh: web_stomp did not accept on 127.0.0.1:$ws within ${START_TIMEOUT}s" >&2
      echo "--- $dir/server.out (tail)" >&2; tail -30 "$dir/server.out" >&2 || true
      echo "--- $dir/log (tail)" >&2; tail -30 "$dir"/log/*.log >&2 2>/dev/null || true
      cmd_stop "$dir" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  echo "rabbitmq.sh: $node up in $((SECONDS - t0))s (web_stomp 127.0.0.1:$ws/ws, amqp $amqp)" >&2
  echo "READY $ws"
}

cmd_stop() {
  local dir=${1:?usage: rabbitmq.sh stop DIR}
  [ -d "$dir" ] || return 0
  local spid bpid epid
  spid=$(pid_of "$dir" server); bpid=$(pid_of "$dir" beam); epid=$(pid_of "$dir" epmd)
  ours "$spid" rabbitmq-server || spid=
  ours "$bpid" beam || bpid=
  ours "$epid" epmd || epid=
  if alive "$spid" || alive "$bpid"; then
    ctl "$dir" stop >/dev/null 2>&1 || true
    local t0=$SECONDS
    while { alive "$spid" || alive "$bpid"; } && (( SECONDS - t0 < 20 )); do sleep 0.2; done
    for sig in TERM KILL; do
      alive "$bpid" && kill -"$sig" "$bpid" 2>/dev/null || true
      alive "$spid" && kill -"$sig" "$spid" 2>/dev/null || true
      t0=$SECONDS
      while { alive "$spid" || alive "$bpid"; } && (( SECONDS - t0 < 10 )); do sleep 0.2; done
    done
  fi
  if alive "$epid"; then
    kill "$epid" 2>/dev/null || true
    local t0=$SECONDS
    while alive "$epid" && (( SECONDS - t0 < 5 )); do sleep 0.1; done
    alive "$epid" && kill -KILL "$epid" 2>/dev/null || true
  fi
  rm -f "$dir/pids/server" "$dir/pids/beam" "$dir/pids/epmd"
}

# Open connections by protocol come from rabbit_connection_tracking (Web STOMP connections are
# "direct" ones: `rabbitmqctl list_connections` does not show them). Message counters are
# rabbit_global_counters: node-wide, cumulative since start, kept after connections close; the
# STOMP adapter publishes/consumes through internal AMQP channels, so they are under amqp091.
# Checked on 3.10.8 (2 subscribers on /topic/bench, 10 SENDs + 1 SEND to a topic nobody reads):
#   amqp091.messages_received_total      SENDs accepted (11)
#   amqp091.messages_routed_total        SEND x subscriber queues reached (20)
#   amqp091.messages_unroutable_dropped_total  SENDs to a topic without subscriber (1)
#   amqp091.messages_confirmed_total     SENDs on sessions in confirm mode: a session switches
#                                        at its first SEND with receipt, so this is NOT the
#                                        number of RECEIPTs (11 here, for 5 RECEIPTs)
#   classic_queue.messages_delivered_total  MESSAGE frames sent (20; topic subscriptions are
#                                        classic queues; the *_ack_total splits stay 0)
# The publishers/consumers gauges are left out: 3.10.8 lets them go negative with STOMP.
cmd_stats() {
  local dir=${1:?usage: rabbitmq.sh stats DIR}
  alive "$(pid_of "$dir" server)" || die "no broker running in $dir"
  local out
  out=$(ctl "$dir" eval '
    Fmt = fun({P, V}) -> iolist_to_binary(io_lib:format("~s ~s", [P, V]));
             (P) -> iolist_to_binary(io_lib:format("~p", [P])) end,
    Conns = lists:foldl(fun(C, M) -> maps:update_with(Fmt(element(7, C)), fun(N) -> N + 1 end, 1, M) end,
                        #{}, rabbit_connection_tracking:list()),
    O = rabbit_global_counters:overview(),
    G = fun(K) -> maps:without([publishers, consumers], maps:get(K, O, #{})) end,
    io:format("~s~n", [rabbit_json:encode(#{connections => Conns,
        connections_total => lists:sum(maps:values(Conns)),
        amqp091 => G([{protocol, amqp091}]),
        classic_queue => G([{protocol, amqp091}, {queue_type, rabbit_classic_queue}])})]).' 2>&1) \
    || die "stats: $out"
  grep -m1 '^{' <<< "$out" || die "stats: unexpected output: $out"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  stats) cmd_stats "${2:-}" ;;
  ctl) d=${2:?usage: rabbitmq.sh ctl DIR ARGS}; shift 2; ctl "$d" "$@" ;;
  *) echo "usage: $0 install | start DIR | stop DIR | stats DIR | ctl DIR ARGS..." >&2; exit 2 ;;
esac
