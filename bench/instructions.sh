#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind. The count is the same for the
# same binary and inputs whatever else the machine is doing, where req/s on a shared 2-core machine
# moves by ±10 % between rounds and hides changes of a few per cent.
#
#   bench/instructions.sh [N]     # N GET requests (default 2000) on one keep-alive connection
#   AUTHSIDECAR_BIN=path bench/instructions.sh    # count another build (e.g. an earlier commit's)
#
# The sidecar runs under callgrind twice: 200 requests, then 200 + N. The difference divided by N
# leaves start-up and shutdown out. Route: a client-credentials profile (token fetched once, then
# from the cache) in front of the built-in mock provider, which is also the upstream (its own
# process, not counted): the fast path, as in bench/compare.sh. Needs valgrind (scripts/setup.sh
# bench installs it) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
WARM=200
bash scripts/setup.sh bench >/dev/null
if [ -n "${AUTHSIDECAR_BIN:-}" ]; then
  BIN=$AUTHSIDECAR_BIN
else
  cargo build --release --quiet --bin authsidecar
  BIN=${CARGO_TARGET_DIR:-$(pwd)/target}/release/authsidecar
fi

WORK=$(mktemp -d /tmp/authsidecar-instr.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

MOCK=$(free_port) AS=$(free_port) ADM=$(free_port)
"$BIN" mock-provider --listen "127.0.0.1:$MOCK" 2>"$WORK/mock.log" &
PIDS+=($!)
cat > "$WORK/authsidecar.toml" <<TOML
[proxy]
listen = "127.0.0.1:$AS"
access_log = false
[admin]
listen = "127.0.0.1:$ADM"
[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:$MOCK/api/"
profiles = ["cc"]
[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://127.0.0.1:$MOCK/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
TOML

count() { # requests -> instructions the sidecar process executed in all
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
    "$BIN" -c "$WORK/authsidecar.toml" run 2>"$WORK/sidecar.log" &
  local p=$!
  python3 - "$AS" "$1" <<'PY'
import http.client, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
deadline = time.time() + 120
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/x"); r = c.getresponse(); r.read()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("the sidecar did not start under valgrind within 120 s")
        time.sleep(0.2)
assert r.status == 200, r.status
for _ in range(n):
    c.request("GET", "/x")
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
  kill -INT "$p"
  wait "$p" || true
  callgrind_annotate "$WORK"/cg.* 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
  rm -f "$WORK"/cg.*
}

a=$(count "$WARM")
b=$(count $((WARM + N)))
echo "instructions per request: $(( (b - a) / N )) (sidecar total: $a for $WARM requests, $b for $((WARM + N)))"
