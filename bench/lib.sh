# Shared by the bench/ scripts (sourced, not run): a work directory, the processes started into
# PIDS and stopped on exit, and ports chosen by the OS.
#
#   bench_work NAME     # WORK=/tmp/authsidecar-NAME.XXXXXX, PIDS=(), cleanup on exit
#                       # (KEEP_LOGS=1 keeps WORK and says where)
#   free_port           # a free 127.0.0.1 port
#   wait_port PORT [NAME]   # until something listens on PORT (15 s), else the logs in WORK and fail
#   cc_sidecar_config, key_profile   # the sidecar config text of the header and HTTPS scenarios
#   upstream_nginx_conf DIR PORT TLS_PORT API_KEY   # the upstream nginx both scenarios share

bench_work() {
  WORK=$(mktemp -d "/tmp/authsidecar-$1.XXXXXX")
  PIDS=()
  KEEP_LOGS=${KEEP_LOGS:-0}
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$KEEP_LOGS" = 1 ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_port() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "port $1 (${2:-?}) did not open within 15 s; logs:" >&2
  for f in "$WORK"/*.log "$WORK"/*/*.log; do
    [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }
  done
  return 1
}

# The sidecar of the header scenario: listen port, admin port, upstream URL, mock provider port. One
# route, a client-credentials profile whose token comes from the mock (fetched once, then cached).
cc_sidecar_config() {
  cat <<EOF
[proxy]
listen = "127.0.0.1:$1"
access_log = false
[admin]
listen = "127.0.0.1:$2"
[[routes]]
prefix = "/"
upstream = "$3"
profiles = ["cc"]
[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://127.0.0.1:$4/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
EOF
}

# The HTTPS scenario's profile: the API key (argument) in an X-Api-Key header, as profile "key".
key_profile() {
  cat <<EOF
[profiles.key]
type = "api_key"
api_key = "$1"
[[profiles.key.fields]]
in = "header"
key = "X-Api-Key"
value = "{{api_key}}"
EOF
}

# The upstream nginx (one worker) in DIR: 200 "ok" over plain HTTP on PORT, and over TLS with
# keep-alive and session resumption on TLS_PORT, where it answers 401 without the API key (so a
# missing injection shows as errors). The certificate is $WORK/tls/server.pem (scripts/dev-certs.sh).
upstream_nginx_conf() {
  cat <<EOF
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1; uwsgi_temp_path $1; scgi_temp_path $1;
  server {
    listen 127.0.0.1:$2 reuseport;
    location / { return 200 "ok\n"; }
  }
  server {
    listen 127.0.0.1:$3 ssl reuseport;
    ssl_certificate $WORK/tls/server.pem;
    ssl_certificate_key $WORK/tls/server.key;
    ssl_session_cache shared:up_tls:1m;
    location / {
      if (\$http_x_api_key != "$4") { return 401 "no key\n"; }
      return 200 "ok\n";
    }
  }
}
EOF
}
