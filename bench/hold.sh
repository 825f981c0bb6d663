#!/usr/bin/env bash
# Load hold and soak for the proxy listener (reliability matrix A16/B16; targets in DESIGN.md §11).
#
#   bench/hold.sh                 # 1,000 slowloris connections (1 header byte per 5 s) with traffic
#                                 # beside them, 10,000 idle keep-alive connections held for 60 s,
#                                 # then 2,000 concurrent in-flight requests against a 2-second upstream
#   bench/hold.sh --soak 1800 --rps 6000
#                                 # soak: a fixed request rate for 1800 s (default: 30 min at 6,000
#                                 # req/s), RSS and open fds sampled every 30 s
#   options: --idle N --hold S --inflight N --out FILE
#
# Everything runs on 127.0.0.1 with ports chosen by the OS: the built-in mock provider as IdP and
# upstream (it can delay its answers), authsidecar in release mode, and the project's load generator
# (examples/loadgen.rs). Prints a summary and writes JSON to bench/results/hold.json (or --out).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

IDLE=10000 HOLD=60 INFLIGHT=2000 SOAK=0 RPS=6000 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --idle) IDLE=$2; shift ;;
    --hold) HOLD=$2; shift ;;
    --inflight) INFLIGHT=$2; shift ;;
    --soak) SOAK=$2; shift ;;
    --rps) RPS=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT" ]; then
  if [ "$SOAK" -gt 0 ]; then OUT="$ROOT/bench/results/soak.json"; else OUT="$ROOT/bench/results/hold.json"; fi
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "building (release)…"
cargo build --release --quiet --bin authsidecar --example loadgen
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="$TARGET_DIR/release/authsidecar"
LOADGEN="$TARGET_DIR/release/examples/loadgen"

. bench/lib.sh
bench_work hold
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
threads() { awk '/^Threads/ {print $2}' "/proc/$1/status"; }

AS=$(free_port); ADM=$(free_port); MOCK=$(free_port)
"$BIN" mock-provider --listen "127.0.0.1:$MOCK" 2>"$WORK/mock.log" &
PIDS+=($!)
cat > "$WORK/authsidecar.toml" <<EOF
[proxy]
listen = "127.0.0.1:$AS"
idle_timeout = "$((HOLD + 60))s"
access_log = false
[admin]
listen = "127.0.0.1:$ADM"

[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:$MOCK/echo/"
profiles = ["cc"]

[[routes]]
prefix = "/slow/"
upstream = "http://127.0.0.1:$MOCK/echo/"
profiles = ["slow"]
timeout = "30s"

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://127.0.0.1:$MOCK/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"

[profiles.slow]
type = "oauth2_client_credentials"
token_url = "http://127.0.0.1:$MOCK/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
[[profiles.slow.fields]]
in = "header"
key = "Authorization"
value = "Bearer {{access_token}}"
[[profiles.slow.fields]]
in = "header"
key = "X-Mock-Delay-Ms"
value = "2000"
EOF
RUST_LOG=warn "$BIN" run -c "$WORK/authsidecar.toml" 2>"$WORK/sidecar.log" &
SIDECAR=$!
PIDS+=($SIDECAR)
wait_port "$MOCK"; wait_port "$AS"
# Warm the token cache and the upstream pool.
"$LOADGEN" burst --url "http://127.0.0.1:$AS/api/warm" --n 50 > /dev/null
sleep 1

if [ "$SOAK" -gt 0 ]; then
  echo "soak: $RPS req/s for $SOAK s; RSS and fds every 30 s"
  echo '{"scenario":"soak","rps":'"$RPS"',"seconds":'"$SOAK"',"samples":[' > "$OUT.tmp"
  first=1 t0=$(date +%s) errors=0 sent=0 worst_p99=0
  while [ $(( $(date +%s) - t0 )) -lt "$SOAK" ]; do
    r=$("$LOADGEN" rate --url "http://127.0.0.1:$AS/api/soak" --rps "$RPS" --seconds 30 --connections 64)
    now=$(( $(date +%s) - t0 ))
    line=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(json.dumps({'t':$now,'rss_kb':$(rss_kb $SIDECAR),'fds':$(fds $SIDECAR),'threads':$(threads $SIDECAR),'ok':d['ok'],'errors':d['errors'],'p50_ms':d['p50_ms'],'p99_ms':d['p99_ms'],'achieved_rps':d['achieved_rps']}))" "$r")
    echo "  $line"
    [ $first = 1 ] || echo ',' >> "$OUT.tmp"
    echo "$line" >> "$OUT.tmp"; first=0
  done
  echo ']}' >> "$OUT.tmp"
  mv "$OUT.tmp" "$OUT"
  python3 - "$OUT" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["samples"]
ok = sum(x["ok"] for x in s); err = sum(x["errors"] for x in s)
print(f"soak: {len(s)} samples over {s[-1]['t']} s; {ok} ok, {err} errors")
print(f"  RSS first/min/max/last KiB: {s[0]['rss_kb']}/{min(x['rss_kb'] for x in s)}/{max(x['rss_kb'] for x in s)}/{s[-1]['rss_kb']}")
print(f"  fds first/max/last: {s[0]['fds']}/{max(x['fds'] for x in s)}/{s[-1]['fds']}")
print(f"  p99 ms median/max: {sorted(x['p99_ms'] for x in s)[len(s)//2]:.2f}/{max(x['p99_ms'] for x in s):.2f}")
PY
  exit 0
fi

echo "slowloris: 1,000 connections sending one header byte every 5 s, traffic beside them"
baseline=$("$LOADGEN" rate --url "http://127.0.0.1:$AS/api/base" --rps 500 --seconds 5 --connections 16)
"$LOADGEN" slowloris --addr "127.0.0.1:$AS" --n 1000 --every 5 --seconds 30 > "$WORK/slow.json" &
SLOW=$!
sleep 2
attacked=$("$LOADGEN" rate --url "http://127.0.0.1:$AS/api/attacked" --rps 500 --seconds 10 --connections 16)
wait "$SLOW" || true
sleep 1

base_rss=$(rss_kb "$SIDECAR"); base_fds=$(fds "$SIDECAR")
echo "idle: opening $IDLE keep-alive connections, holding them $HOLD s"
"$LOADGEN" idle --addr "127.0.0.1:$AS" --n "$IDLE" --hold "$HOLD" > "$WORK/idle.json" &
IDLER=$!
for _ in $(seq 1 1200); do [ -s "$WORK/idle.json" ] && break; sleep 0.1; done
sleep 2
idle_rss=$(rss_kb "$SIDECAR"); idle_fds=$(fds "$SIDECAR")
# Traffic while the connections are held: the sidecar must keep serving.
during=$("$LOADGEN" rate --url "http://127.0.0.1:$AS/api/during" --rps 500 --seconds 5 --connections 16)
sleep $((HOLD > 20 ? HOLD - 15 : 1))
late_fds=$(fds "$SIDECAR")
wait "$IDLER" || true
sleep 2
after_idle_fds=$(fds "$SIDECAR")

echo "in flight: $INFLIGHT concurrent requests to a 2-second upstream"
peak=0
( while :; do rss_kb "$SIDECAR"; sleep 0.2; done ) > "$WORK/rss.txt" 2>/dev/null &
SAMPLER=$!
inflight=$("$LOADGEN" burst --url "http://127.0.0.1:$AS/slow/x" --n "$INFLIGHT")
kill "$SAMPLER" 2>/dev/null || true
peak=$(sort -n "$WORK/rss.txt" | tail -1)
sleep 3
end_fds=$(fds "$SIDECAR"); end_rss=$(rss_kb "$SIDECAR")

python3 - "$OUT" <<PY
import json, sys
idle = json.load(open("$WORK/idle.json"))
slow = json.load(open("$WORK/slow.json"))
baseline = json.loads('''$baseline''')
attacked = json.loads('''$attacked''')
during = json.loads('''$during''')
inflight = json.loads('''$inflight''')
d = {
  "scenario": "hold",
  "slowloris": {"attack": slow, "traffic_before": baseline, "traffic_during": attacked},
  "idle": {"connections": idle["open"], "held_s": $HOLD, "rss_before_kb": $base_rss, "rss_held_kb": $idle_rss,
           "bytes_per_connection": ($idle_rss - $base_rss) * 1024 / max(1, idle["open"]),
           "fds_before": $base_fds, "fds_held": $idle_fds, "fds_late_in_hold": $late_fds, "fds_after": $after_idle_fds,
           "traffic_during": during},
  "inflight": {"requests": $INFLIGHT, "ok": inflight["ok"], "elapsed_ms": inflight["elapsed_ms"],
               "rss_peak_kb": $peak, "bytes_per_request": ($peak - $base_rss) * 1024 / max(1, $INFLIGHT),
               "fds_after": $end_fds, "rss_after_kb": $end_rss},
}
json.dump(d, open(sys.argv[1], "w"), indent=1)
sl = d["slowloris"]
print(f"slowloris: {slow['closed']}/{slow['n']} closed by the sidecar (after {slow['closed_after_p50_s']:.1f} s median, {slow['closed_after_max_s']:.1f} s max), {slow['still_open']} still open")
print(f"  traffic beside it: p99 {attacked['p99_ms']:.2f} ms ({attacked['errors']} errors) vs {baseline['p99_ms']:.2f} ms before")
i, f = d["idle"], d["inflight"]
print(f"idle: {i['connections']} connections held {i['held_s']} s; RSS {i['rss_before_kb']} -> {i['rss_held_kb']} KiB = {i['bytes_per_connection']:.0f} bytes/connection; fds {i['fds_before']} -> {i['fds_held']} (late {i['fds_late_in_hold']}) -> {i['fds_after']}")
t = i["traffic_during"]
print(f"  traffic during the hold: {t['ok']} ok, {t['errors']} errors, p50 {t['p50_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms")
print(f"in flight: {f['ok']}/{f['requests']} ok in {f['elapsed_ms']:.0f} ms; RSS peak {f['rss_peak_kb']} KiB ({f['bytes_per_request']:.0f} bytes/request in flight); fds after {f['fds_after']}, RSS after {f['rss_after_kb']} KiB")
PY
