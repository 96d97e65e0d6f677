# TLS peers nobody here wrote, for scripts/interop/tls.sh and scripts/bench_tls.sh (sourced,
# not run): nginx (Debian's, installed on demand), openssl s_server, and an ECDSA P-256 test CA
# made with openssl. Everything lives in the caller's temp dir; the caller kills the pids it
# gets back (tls_peer_pids) in its EXIT trap. Loopback only.

tls_peer_pids=()

# Installs nginx (nginx-light where Debian still has it, else nginx) and the openssl command
# if missing; `apt-get update` only when something has to be installed.
ensure_tls_tools() {
  local want=()
  command -v nginx >/dev/null || want+=(nginx-light)
  command -v openssl >/dev/null || want+=(openssl)
  [ ${#want[@]} -eq 0 ] && return
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq >/dev/null
  timeout 300 apt-get install -y -qq "${want[@]}" >/dev/null 2>&1 \
    || timeout 300 apt-get install -y -qq "${want[@]/nginx-light/nginx}" >/dev/null
  command -v nginx >/dev/null && command -v openssl >/dev/null \
    || { echo "could not install ${want[*]}"; return 1; }
}

# A free TCP port on 127.0.0.1 (the kernel's pick; a race with other processes is possible but
# harmless here: the server then fails to bind and the caller stops with its error log).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts on 127.0.0.1:PORT (at most 10 s).
wait_port() { # port
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1"
  return 1
}

# DIR/ca.pem (CA), DIR/leaf.pem + DIR/leaf.key (127.0.0.1, ::1 and localhost), all ECDSA P-256.
make_certs() { # dir
  local d=$1
  cat > "$d/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = sockstorm interop test CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  cat > "$d/leaf.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 2 \
    -config "$d/ca.cnf" -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -subj /CN=localhost -keyout "$d/leaf.key" -out "$d/leaf.csr" 2>/dev/null
  openssl x509 -req -in "$d/leaf.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -sha256 -days 2 -extfile "$d/leaf.ext" -out "$d/leaf.pem" 2>/dev/null
  openssl verify -CAfile "$d/ca.pem" "$d/leaf.pem" >/dev/null
}

# nginx terminating TLS 1.2 and 1.3 on LISTEN_PORT with DIR/leaf.{pem,key}, one worker, session
# tickets and a shared session cache, proxying WebSocket upgrades to 127.0.0.1:BACKEND_PORT
# (0 = no backend: answer 200 to anything, for handshake-only runs). Each request is logged to
# DIR/nginx-access.log as "<protocol> <ssl_session_reused> <status>" ("r" = resumed).
# CPU: run with `taskset -c N` around the call to pin master and worker.
start_nginx() { # dir listen_port backend_port [cpu]
  local d=$1 port=$2 backend=$3 cpu=${4:-} location
  mkdir -p "$d/nginx"
  if [ "$backend" != 0 ]; then
    location="proxy_pass http://127.0.0.1:$backend;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \"upgrade\";
      proxy_read_timeout 120s;"
  else
    location="return 200 \"ok\\n\";"
  fi
  cat > "$d/nginx.conf" <<EOF
daemon off;
master_process on;
user root;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $d/nginx.pid;
error_log $d/nginx-error.log warn;
events { worker_connections 16000; }
http {
  client_body_temp_path $d/nginx/body;
  proxy_temp_path $d/nginx/proxy;
  fastcgi_temp_path $d/nginx/fastcgi;
  uwsgi_temp_path $d/nginx/uwsgi;
  scgi_temp_path $d/nginx/scgi;
  log_format tls '\$ssl_protocol \$ssl_session_reused \$status';
  access_log $d/nginx-access.log tls;
  server {
    listen 127.0.0.1:$port ssl backlog=4096;
    ssl_certificate $d/leaf.pem;
    ssl_certificate_key $d/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 10m;
    location / {
      $location
    }
  }
}
EOF
  if [ -n "$cpu" ]; then
    taskset -c "$cpu" timeout 600 nginx -p "$d/nginx" -c "$d/nginx.conf" 2>>"$d/nginx-error.log" &
  else
    timeout 600 nginx -p "$d/nginx" -c "$d/nginx.conf" 2>>"$d/nginx-error.log" &
  fi
  tls_peer_pids+=($!)
  wait_port "$port" || { cat "$d/nginx-error.log"; return 1; }
}

# openssl s_server on PORT with DIR/leaf.{pem,key}: one connection at a time, tickets and its
# internal session cache on (its defaults), `-www` answers a GET with a status page.
start_s_server() { # dir port [cpu]
  local d=$1 port=$2 cpu=${3:-}
  local cmd=(timeout 600 openssl s_server -accept "127.0.0.1:$port" -cert "$d/leaf.pem"
    -key "$d/leaf.key" -www -quiet)
  if [ -n "$cpu" ]; then cmd=(taskset -c "$cpu" "${cmd[@]}"); fi
  "${cmd[@]}" > "$d/s_server-$port.log" 2>&1 &
  tls_peer_pids+=($!)
  wait_port "$port" || { cat "$d/s_server-$port.log"; return 1; }
}

# Stops every server started above (SIGTERM to the `timeout` wrappers, which pass it on).
stop_tls_peers() {
  local p
  for p in "${tls_peer_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${tls_peer_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  tls_peer_pids=()
}
