# Shared by the bench/ scripts (sourced, not run): a work directory, the processes started into
# PIDS and stopped on exit, and ports chosen by the OS.
#
#   bench_work NAME     # WORK=/tmp/authsidecar-NAME.XXXXXX, PIDS=(), cleanup on exit
#                       # (KEEP_LOGS=1 keeps WORK and says where)
#   free_port           # a free 127.0.0.1 port
#   wait_port PORT [NAME]   # until something listens on PORT (15 s), else the logs in WORK and fail
#   cc_sidecar_config, key_profile   # the sidecar config text of the header and HTTPS scenarios

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
