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

. bench/lib.sh
bench_work instr

MOCK=$(free_port) AS=$(free_port) ADM=$(free_port)
"$BIN" mock-provider --listen "127.0.0.1:$MOCK" 2>"$WORK/mock.log" &
PIDS+=($!)
cc_sidecar_config "$AS" "$ADM" "http://127.0.0.1:$MOCK/api/" "$MOCK" > "$WORK/authsidecar.toml"

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
