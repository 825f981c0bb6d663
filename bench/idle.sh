#!/usr/bin/env bash
# Memory per idle keep-alive connection: 5,000 connections through `loadgen idle`, one request each
# (a GET, or with --post a POST with a 2-byte body), RSS of the sidecar before and after.
#
#   bench/idle.sh [--post]       # this build (release; built if needed)
#   AUTHSIDECAR_BIN=path bench/idle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin authsidecar --example loadgen
TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
BIN=${AUTHSIDECAR_BIN:-$TARGET_DIR/release/authsidecar}
LOADGEN=$TARGET_DIR/release/examples/loadgen
. bench/lib.sh
bench_work idle
M=$(free_port); A=$(free_port); D=$(free_port)
"$BIN" mock-provider --listen "127.0.0.1:$M" 2>/dev/null &
PIDS+=($!)
cat > "$WORK/c.toml" <<T
[proxy]
listen = "127.0.0.1:$A"
access_log = false
[admin]
listen = "127.0.0.1:$D"
[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:$M/echo/"
profiles = ["k"]
[profiles.k]
type = "api_key"
api_key = "k"
[[profiles.k.fields]]
in = "header"
key = "X-Key"
value = "{{api_key}}"
T
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$BIN" -c "$WORK/c.toml" run 2>/dev/null &
SP=$!
PIDS+=($SP)
sleep 1.5
"$LOADGEN" idle --addr "127.0.0.1:$A" --n 500 --hold 1 "$@" >/dev/null   # warm-up
sleep 0.5
before=$(awk '/VmRSS/ {print $2}' "/proc/$SP/status")
"$LOADGEN" idle --addr "127.0.0.1:$A" --n 5000 --hold 4 "$@" > "$WORK/idle.json" &
LG=$!
sleep 3.5
after=$(awk '/VmRSS/ {print $2}' "/proc/$SP/status")
wait $LG
echo "$(cat "$WORK/idle.json") rss $before -> $after kB: $(( (after - before) * 1024 / 5000 )) bytes per idle connection"
