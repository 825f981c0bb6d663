#!/usr/bin/env bash
# Whole-process benchmark: authsidecar side by side with nginx and HAProxy, in one run, alternating
# rounds so machine drift hits all of them equally.
#
#   bench/compare.sh                      # throughput + latency comparison (5 rounds x 5 s, 64 conns)
#   bench/compare.sh --all                # plus payload, query, per-user tokens, open-loop latency,
#                                         # refresh storm, memory per token / grant / idle connection
#   bench/compare.sh --smoke              # ~30 s, plain and HTTPS: proves the script works (used by .ci/run)
#   options: --rounds N --duration S --connections C --threads T --out FILE
#   AUTHSIDECAR_BIN=path bench/compare.sh   # measure another build (e.g. an earlier commit's)
#   BASELINE_BIN=path bench/compare.sh      # add a fifth target, "baseline": that build beside this
#                                         # one in the same run, alternating rounds (ratio
#                                         # authsidecar/baseline), for "no worse than build X"
#
# Targets (all on 127.0.0.1, ports chosen by the OS):
#   direct     the upstream itself (nginx answering 200 "ok"): the physical limit
#   nginx      nginx proxy_pass with proxy_set_header Authorization "Bearer …", upstream keep-alive
#   haproxy    HAProxy with http-request set-header Authorization …, http-reuse always
#   authsidecar  a client-credentials profile; the token is fetched once from the built-in mock
#              provider (a separate process) and then served from the cache
# HTTPS upstream (scenario "https", run after the plain one, in --smoke too): the same four targets in
# front of the same nginx serving TLS with keep-alive (a CA and a server certificate for
# 127.0.0.1/localhost made by scripts/dev-certs.sh in the temp dir); each proxy verifies the upstream's
# certificate against that CA, keeps its upstream TLS connections open and injects the same API key
# header (X-Api-Key); the upstream answers 401 without it, so a missing injection shows as errors.
# Each proxy gets the same worker/thread count (--threads, default 2). Results: a table on stdout and
# JSON in bench/results/latest.json (or --out).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ROUNDS=5 DURATION=5 CONNS=64 THREADS=2 ALL=0 SMOKE=0 OUT="$ROOT/bench/results/latest.json"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --connections) CONNS=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --all) ALL=1 ;;
    --smoke) SMOKE=1; ROUNDS=1; DURATION=1; CONNS=8 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

bash scripts/setup.sh bench
# The HTTPS scenario's certificates are made with the openssl tool, which `setup.sh bench` does not
# install (`setup.sh` without an argument does, as .ci/run's test step runs it).
command -v openssl >/dev/null || { echo "openssl not found: run scripts/setup.sh (or apt-get install openssl)" >&2; exit 1; }
echo "building (release)…"
cargo build --release --quiet --bin authsidecar --example loadgen
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="${AUTHSIDECAR_BIN:-$TARGET_DIR/release/authsidecar}"
LOADGEN="$TARGET_DIR/release/examples/loadgen"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

. bench/lib.sh
bench_work bench
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

UP=$(free_port); NG=$(free_port); HA=$(free_port); AS=$(free_port); ADM=$(free_port); MOCK=$(free_port); MOCK2=$(free_port)
AUTH=$(free_port)
UPS=$(free_port); NGS=$(free_port); HAS=$(free_port)
TOKEN="static-benchmark-token-0123456789abcdef"
APIKEY="benchmark-api-key-0123456789abcdef"

# --- a CA and a server certificate (127.0.0.1, localhost) for the HTTPS upstream
bash scripts/dev-certs.sh "$WORK/tls" 2 > /dev/null
CA="$WORK/tls/ca.pem"

# --- upstream: nginx answering 200 "ok", one worker (shared by every target)
mkdir -p "$WORK/up" "$WORK/ng"
upstream_nginx_conf "$WORK/up" "$UP" "$UPS" "$APIKEY" > "$WORK/up/nginx.conf"
"$NGINX" -c "$WORK/up/nginx.conf" -g 'daemon off;' &
PIDS+=($!); UP_PID=$!

# --- nginx as the injecting proxy
cat > "$WORK/ng/nginx.conf" <<EOF
worker_processes $THREADS;
pid $WORK/ng/nginx.pid;
error_log $WORK/ng/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/ng; proxy_temp_path $WORK/ng; fastcgi_temp_path $WORK/ng; uwsgi_temp_path $WORK/ng; scgi_temp_path $WORK/ng;
  upstream up { server 127.0.0.1:$UP; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NG;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer $TOKEN";
    }
  }
  # HTTPS upstream: verified against the bench's CA, TLS sessions reused, 64 idle connections kept.
  upstream ups { server 127.0.0.1:$UPS; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGS;
    location / {
      proxy_pass https://ups;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Api-Key "$APIKEY";
      proxy_ssl_session_reuse on;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $CA;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
    }
  }
}
EOF
"$NGINX" -c "$WORK/ng/nginx.conf" -g 'daemon off;' &
PIDS+=($!); NG_PID=$!

# --- HAProxy
cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread $THREADS
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend f
  bind 127.0.0.1:$HA
  default_backend b
backend b
  http-reuse always
  http-request set-header Authorization "Bearer $TOKEN"
  server s1 127.0.0.1:$UP
frontend fs
  bind 127.0.0.1:$HAS
  default_backend bs
backend bs
  http-reuse always
  http-request set-header X-Api-Key "$APIKEY"
  server s1 127.0.0.1:$UPS ssl verify required ca-file $CA verifyhost localhost sni str(localhost)
EOF
"$HAPROXY" -f "$WORK/haproxy.cfg" -q &
PIDS+=($!); HA_PID=$!

# --- mock provider (its own process) and authsidecar
"$BIN" mock-provider --listen "127.0.0.1:$MOCK" 2>"$WORK/mock.log" &
PIDS+=($!)
# A second mock with 2-second tokens, for the refresh storm.
"$BIN" mock-provider --listen "127.0.0.1:$MOCK2" --token-lifetime 2s 2>"$WORK/mock2.log" &
PIDS+=($!)
cat > "$WORK/authsidecar.toml" <<EOF
[proxy]
listen = "127.0.0.1:$AS"
max_body_bytes = 1048576
access_log = false
[admin]
listen = "127.0.0.1:$ADM"
[auth]
listen = "127.0.0.1:$AUTH"
public_url = "http://127.0.0.1:$AUTH"

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:$UP/"
profiles = ["cc", "json", "query"]

# HTTPS upstream, an API key header (the "https" scenario).
[[routes]]
prefix = "/s/"
upstream = "https://127.0.0.1:$UPS/"
profiles = ["key"]
tls = { ca_file = "$CA" }

[[routes]]
prefix = "/t/"
upstream = "http://127.0.0.1:$UP/{tenant}/"
profiles = ["tenant"]

[[routes]]
prefix = "/u/"
upstream = "http://127.0.0.1:$UP/"
profiles = ["user"]

[[routes]]
prefix = "/storm/"
upstream = "http://127.0.0.1:$UP/"
profiles = ["storm"]

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://127.0.0.1:$MOCK/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"

[profiles.json]
type = "oauth2_client_credentials"
token_url = "http://127.0.0.1:$MOCK/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
[[profiles.json.fields]]
in = "payload"
key = "/auth/token"
value = "{{access_token}}"

[profiles.query]
type = "oauth2_client_credentials"
token_url = "http://127.0.0.1:$MOCK/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
[[profiles.query.fields]]
in = "query"
key = "access_token"
value = "{{access_token}}"

[profiles.tenant]
type = "oauth2_client_credentials"
tenancy = true
token_url = "http://127.0.0.1:$MOCK/{tenant}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"

# End users' tokens (authorization code + PKCE against the mock, which approves at once).
[profiles.user]
type = "oauth2_authorization_code"
authorization_url = "http://127.0.0.1:$MOCK/oauth/authorize"
token_url = "http://127.0.0.1:$MOCK/oauth/token"
issuer = "http://127.0.0.1:$MOCK"
client_id = "demo-client"
client_secret = "demo-secret"

[profiles.storm]
type = "oauth2_client_credentials"
token_url = "http://127.0.0.1:$MOCK2/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
EOF
key_profile "$APIKEY" >> "$WORK/authsidecar.toml"
start_sidecar() {
  RUST_LOG=warn "$BIN" -c "$WORK/authsidecar.toml" run 2>"$WORK/authsidecar.log" &
  SIDECAR=$!
  PIDS+=($SIDECAR)
  wait_port "$AS" authsidecar
}
start_sidecar
if [ -n "${BASELINE_BIN:-}" ]; then
  # The same config on its own ports.
  BAS=$(free_port) BADM=$(free_port) BAUTH=$(free_port)
  sed -e "s/127.0.0.1:$AS\"/127.0.0.1:$BAS\"/; s/127.0.0.1:$ADM\"/127.0.0.1:$BADM\"/; s/127.0.0.1:$AUTH\"/127.0.0.1:$BAUTH\"/g" \
    "$WORK/authsidecar.toml" > "$WORK/baseline.toml"
  RUST_LOG=warn "$BASELINE_BIN" -c "$WORK/baseline.toml" run 2>"$WORK/baseline.log" &
  BASELINE=$!
  PIDS+=($BASELINE)
  wait_port "$BAS" baseline
fi
for p in "$UP upstream" "$NG nginx" "$HA haproxy" "$MOCK mock" "$MOCK2 mock2" "$AS authsidecar" "$AUTH auth" \
  "$UPS upstream-https" "$NGS nginx-https" "$HAS haproxy-https"; do
  wait_port $p
done

declare -A URL=(
  [direct]="http://127.0.0.1:$UP/"
  [nginx]="http://127.0.0.1:$NG/"
  [haproxy]="http://127.0.0.1:$HA/"
  [authsidecar]="http://127.0.0.1:$AS/"
)
ORDER=(direct nginx haproxy authsidecar)
if [ -n "${BASELINE:-}" ]; then
  URL[baseline]="http://127.0.0.1:$BAS/"
  ORDER+=(baseline)
fi
RAW="$WORK/raw.jsonl"
: > "$RAW"

# The processes that do a target's work (nginx: its workers), for CPU time per request.
procs_of() {
  case "$1" in
    direct) pgrep -P "$UP_PID" | tr '\n' ' ' ;;
    nginx) pgrep -P "$NG_PID" | tr '\n' ' ' ;;
    haproxy) echo "$HA_PID" ;;
    authsidecar) echo "$SIDECAR" ;;
    baseline) echo "$BASELINE" ;;
  esac
}
# "user sys" clock ticks of the given processes (all their threads), and the machine's busy ticks.
ticks_of() { for p in $1; do cat "/proc/$p/stat" 2>/dev/null; done | awk '{u += $14; s += $15} END {print u + 0, s + 0}'; }
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

run_wrk() { # scenario target url [script]
  local scenario=$1 target=$2 url=$3 script=${4:-}
  local args=(-t "$THREADS" -c "$CONNS" -d "${DURATION}s" --latency)
  [ -n "$script" ] && args+=(-s "$script")
  local procs; procs=$(procs_of "$target")
  local t0 b0 t1 b1
  t0=$(ticks_of "$procs"); b0=$(busy_ticks)
  wrk "${args[@]}" "$url" > "$WORK/wrk.out" 2>&1 || true
  t1=$(ticks_of "$procs"); b1=$(busy_ticks)
  python3 - "$scenario" "$target" "$WORK/wrk.out" "$t0 $b0 $t1 $b1 $(getconf CLK_TCK) $DURATION" >> "$RAW" <<'PY'
import json, re, sys
scenario, target, path, cpu = sys.argv[1:5]
text = open(path).read()
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
# CPU time per request (microseconds): the target's own processes (user, kernel) and the whole
# machine (load generator, upstream and target together).
u0, s0, b0, u1, s1, b1, tck, dur = map(float, cpu.split())
n = (float(rps.group(1)) if rps else 0.0) * dur
per = lambda ticks: round(ticks / tck / n * 1e6, 2) if n else 0.0
print(json.dumps({"scenario": scenario, "target": target,
                  "cpu_user_us": per(u1 - u0), "cpu_sys_us": per(s1 - s0), "machine_cpu_us": per(b1 - b0),
                  "rps": float(rps.group(1)) if rps else 0.0,
                  "p50_ms": lat.get("50", 0.0), "p99_ms": lat.get("99", 0.0),
                  "non2xx": int(errors.group(1)) if errors else 0,
                  "socket_errors": sum(map(int, sock.groups())) if sock else 0}))
PY
}

# Warm-up: connections, pools, and the sidecar's token cache.
for t in "${ORDER[@]}"; do curl -s -o /dev/null "${URL[$t]}"; done
DURATION_SAVED=$DURATION; DURATION=1
for t in "${ORDER[@]}"; do run_wrk warmup "$t" "${URL[$t]}"; done
DURATION=$DURATION_SAVED

echo "header injection: $ROUNDS rounds x ${DURATION}s, $CONNS connections, $THREADS threads each"
for r in $(seq 1 "$ROUNDS"); do
  # Rotate the order every round.
  for i in "${!ORDER[@]}"; do
    t=${ORDER[$(( (i + r) % ${#ORDER[@]} ))]}
    run_wrk header "$t" "${URL[$t]}"
  done
done

# HTTPS upstream: the same targets, each keeping TLS connections to the upstream and injecting the
# API key; direct sends the key itself (wrk over TLS to the upstream).
declare -A URLS=(
  [direct]="https://127.0.0.1:$UPS/"
  [nginx]="http://127.0.0.1:$NGS/"
  [haproxy]="http://127.0.0.1:$HAS/"
  [authsidecar]="http://127.0.0.1:$AS/s/"
)
[ -n "${BASELINE:-}" ] && URLS[baseline]="http://127.0.0.1:$BAS/s/"
printf 'wrk.headers["X-Api-Key"] = "%s"\n' "$APIKEY" > "$WORK/apikey.lua"
https_script() { [ "$1" = direct ] && echo "$WORK/apikey.lua" || true; }
for t in "${ORDER[@]}"; do
  key=(); [ "$t" = direct ] && key=(-H "X-Api-Key: $APIKEY")
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CA" "${key[@]}" "${URLS[$t]}")
  if [ "$code" != 200 ]; then
    echo "https: $t answered $code to a first request (expected 200)" >&2
    for f in "$WORK"/*.log "$WORK"/*/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -5 "$f" >&2; }; done
    exit 1
  fi
done
# The plain upstream would answer 200 as well: check that the sidecar took the HTTPS route.
# (Asked a few times: on a loaded machine the admin listener may answer a moment late.)
served=0
for _ in 1 2 3 4 5 6 7 8 9 10; do
  if curl -s --max-time 2 "http://127.0.0.1:$ADM/metrics" | grep -q '^authsidecar_requests_total{route="/s/",profile="key",status="2xx"} [1-9]'; then
    served=1; break
  fi
  sleep 0.5
done
if [ "$served" != 1 ]; then
  echo "https: authsidecar did not serve the first request on its HTTPS route" >&2
  curl -s --max-time 2 "http://127.0.0.1:$ADM/metrics" | grep '^authsidecar_requests_total' >&2 || echo "(no metrics from the admin listener)" >&2
  exit 1
fi
DURATION=1
for t in "${ORDER[@]}"; do run_wrk warmup "$t" "${URLS[$t]}" "$(https_script "$t")"; done
DURATION=$DURATION_SAVED

echo "https upstream: $ROUNDS rounds x ${DURATION}s, $CONNS connections, $THREADS threads each"
for r in $(seq 1 "$ROUNDS"); do
  for i in "${!ORDER[@]}"; do
    t=${ORDER[$(( (i + r) % ${#ORDER[@]} ))]}
    run_wrk https "$t" "${URLS[$t]}" "$(https_script "$t")"
  done
done

if [ "$ALL" = 1 ]; then
  # 4 KiB JSON body, payload injection (only the sidecar can do it; compared with direct).
  python3 - "$WORK/body.json" <<'PY'
import json, sys
items = []
while len(json.dumps({"items": items})) < 4000:
    i = len(items)
    items.append({"id": i, "name": f"item-{i}", "price": 12.34, "tags": ["a", "b"]})
open(sys.argv[1], "w").write(json.dumps({"items": items}))
PY
  cat > "$WORK/post.lua" <<EOF
local f = io.open("$WORK/body.json"); local body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Authsidecar-Profile"] = "json"
EOF
  cat > "$WORK/query.lua" <<EOF
wrk.headers["X-Authsidecar-Profile"] = "query"
wrk.path = "/search?q=abc&limit=10&access_token=client-copy"
EOF
  for r in $(seq 1 "$ROUNDS"); do
    run_wrk payload direct "${URL[direct]}" "$WORK/post.lua"
    run_wrk payload authsidecar "${URL[authsidecar]}" "$WORK/post.lua"
    run_wrk query direct "${URL[direct]}" "$WORK/query.lua"
    run_wrk query authsidecar "${URL[authsidecar]}" "$WORK/query.lua"
  done

  echo "open loop: 1,000 req/s for 10 s, direct vs authsidecar"
  for t in direct authsidecar nginx; do
    "$LOADGEN" rate --url "${URL[$t]}" --rps 1000 --seconds 10 --connections 32 \
      | python3 -c "import json,sys; d=json.load(sys.stdin); d.update(scenario='open_loop_1000', target='$t'); print(json.dumps(d))" >> "$RAW"
  done

  echo "refresh storm: 1,000 concurrent requests on an expired token"
  # One request caches a 2-second token; wait until it has expired; then 1,000 at once.
  curl -s -o /dev/null "http://127.0.0.1:$AS/storm/x"
  sleep 2.2
  before=$(curl -s "http://127.0.0.1:$MOCK2/__mock/counters" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token_requests"])')
  "$LOADGEN" burst --url "http://127.0.0.1:$AS/storm/x" --n 1000 > "$WORK/storm.json"
  after=$(curl -s "http://127.0.0.1:$MOCK2/__mock/counters" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token_requests"])')
  python3 -c "import json; d=json.load(open('$WORK/storm.json')); d.update(scenario='storm', target='authsidecar', idp_requests=$after-$before); print(json.dumps(d))" >> "$RAW"

  echo "per-user tokens: 100,000 end users log in (memory per grant), then calls spread over 10,000 of them"
  # 10,000 other users first, so one-time costs (the blocking pool's threads and their allocator
  # arenas, first table growth) are not counted per grant; both figures are kept.
  cold=$(rss_kb "$SIDECAR")
  "$LOADGEN" users --url "http://127.0.0.1:$AS/u/x" --n 10000 --concurrency 64 --from 1000000 > "$WORK/warm.json" || true
  sleep 1
  base=$(rss_kb "$SIDECAR")
  "$LOADGEN" users --url "http://127.0.0.1:$AS/u/x" --n 100000 --concurrency 64 > "$WORK/users.json" || true
  sleep 1
  after=$(rss_kb "$SIDECAR")
  python3 -c "import json; d=json.load(open('$WORK/users.json')); w=json.load(open('$WORK/warm.json')); d.update(scenario='memory_per_grant', target='authsidecar', rss_cold_kb=$cold, rss_before_kb=$base, rss_after_kb=$after, bytes_per_grant=($after-$base)*1024/max(1,d['ok']), bytes_per_grant_from_cold=($after-$cold)*1024/max(1,d['ok']+w['ok'])); print(json.dumps(d))" >> "$RAW"
  cat > "$WORK/users.lua" <<EOF
math.randomseed(1)
request = function()
  return wrk.format("GET", "/u/x", {["X-Authsidecar-User"] = "u" .. math.random(0, 9999)})
end
EOF
  for r in $(seq 1 "$ROUNDS"); do
    run_wrk per_user direct "${URL[direct]}" "$WORK/users.lua"
    run_wrk per_user authsidecar "${URL[authsidecar]}" "$WORK/users.lua"
  done

  echo "memory: 100,000 cached tokens (one per tenant) and 10,000 idle keep-alive connections"
  base=$(rss_kb "$SIDECAR")
  "$LOADGEN" keys --url "http://127.0.0.1:$AS/t/x" --n 100000 --concurrency 64 > "$WORK/keys.json" || true
  sleep 1
  after=$(rss_kb "$SIDECAR")
  python3 -c "import json; d=json.load(open('$WORK/keys.json')); d.update(scenario='memory_per_token', target='authsidecar', rss_before_kb=$base, rss_after_kb=$after, bytes_per_token=($after-$base)*1024/max(1,d['ok'])); print(json.dumps(d))" >> "$RAW"
  base=$(rss_kb "$SIDECAR")
  "$LOADGEN" idle --addr "127.0.0.1:$AS" --n 10000 --hold 6 > "$WORK/idle.json" &
  LG=$!
  sleep 5
  after=$(rss_kb "$SIDECAR")
  wait $LG || true
  python3 -c "import json; d=json.load(open('$WORK/idle.json')); d.update(scenario='memory_per_connection', target='authsidecar', rss_before_kb=$base, rss_after_kb=$after, bytes_per_connection=($after-$base)*1024/max(1,d['open'])); print(json.dumps(d))" >> "$RAW"
fi

mkdir -p "$(dirname "$OUT")"
python3 - "$RAW" "$OUT" "$ROUNDS" "$DURATION" "$CONNS" "$THREADS" "$SMOKE" <<'PY'
import json, statistics, sys, datetime, os, platform
raw, out, rounds, duration, conns, threads, smoke = sys.argv[1:8]
rows = [json.loads(l) for l in open(raw) if l.strip()]
rows = [r for r in rows if r.get("scenario") != "warmup"]
TARGETS = ["direct", "nginx", "haproxy", "authsidecar"] + (["baseline"] if any(r["target"] == "baseline" for r in rows) else [])
def agg(scenario, target):
    rs = [r for r in rows if r["scenario"] == scenario and r["target"] == target]
    if not rs: return None
    med = lambda k: statistics.median(r[k] for r in rs)
    return {"rounds": len(rs), "rps": med("rps"), "rps_min": min(r["rps"] for r in rs), "rps_max": max(r["rps"] for r in rs),
            "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"), "p99_ms_max": max(r["p99_ms"] for r in rs),
            "cpu_user_us": med("cpu_user_us"), "cpu_sys_us": med("cpu_sys_us"), "machine_cpu_us": med("machine_cpu_us"),
            "errors": sum(r.get("non2xx", 0) + r.get("socket_errors", 0) for r in rs)}
result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "machine": {"cores": os.cpu_count(), "kernel": platform.release()},
          "settings": {"rounds": int(rounds), "duration_s": int(duration), "connections": int(conns), "threads": int(threads)},
          "header": {t: agg("header", t) for t in TARGETS}}
h = result["header"]
def ratio(a, b):
    return round(h[a]["rps"] / h[b]["rps"], 3) if h.get(a) and h.get(b) and h[b]["rps"] else None
result["ratios"] = {"authsidecar/nginx": ratio("authsidecar", "nginx"), "authsidecar/haproxy": ratio("authsidecar", "haproxy"),
                    "nginx/direct": ratio("nginx", "direct"), "haproxy/direct": ratio("haproxy", "direct"),
                    "authsidecar/direct": ratio("authsidecar", "direct")}
if h.get("baseline"):
    result["ratios"]["authsidecar/baseline"] = ratio("authsidecar", "baseline")
    result["ratios"]["baseline/nginx"] = ratio("baseline", "nginx")
# HTTPS upstream: the same targets, API key header, TLS to the upstream.
result["https"] = {t: agg("https", t) for t in TARGETS}
hs = result["https"]
def ratio_s(a, b):
    return round(hs[a]["rps"] / hs[b]["rps"], 3) if hs.get(a) and hs.get(b) and hs[b]["rps"] else None
result["https_ratios"] = {"authsidecar/nginx": ratio_s("authsidecar", "nginx"), "authsidecar/haproxy": ratio_s("authsidecar", "haproxy"),
                          "nginx/direct": ratio_s("nginx", "direct"), "haproxy/direct": ratio_s("haproxy", "direct"),
                          "authsidecar/direct": ratio_s("authsidecar", "direct")}
if hs.get("baseline"):
    result["https_ratios"]["authsidecar/baseline"] = ratio_s("authsidecar", "baseline")
    result["https_ratios"]["baseline/nginx"] = ratio_s("baseline", "nginx")
for sc in ["payload", "query", "per_user"]:
    v = {t: agg(sc, t) for t in ["direct", "authsidecar"]}
    if any(v.values()): result[sc] = v
for r in rows:
    if r["scenario"] in ("open_loop_1000", "storm", "memory_per_token", "memory_per_grant", "memory_per_connection"):
        result.setdefault(r["scenario"], {})[r["target"]] = r
json.dump(result, open(out, "w"), indent=2)

print()
print(f"| target | req/s (median) | min–max | p50 ms | p99 ms | errors |")
print(f"| --- | ---: | ---: | ---: | ---: | ---: |")
for t, v in h.items():
    if v: print(f"| {t} | {v['rps']:.0f} | {v['rps_min']:.0f}–{v['rps_max']:.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['errors']} |")
print()
print("CPU time per request, µs (medians; direct: the upstream's own; machine: load generator, upstream and target together)")
print(f"| target | user | kernel | machine |")
print(f"| --- | ---: | ---: | ---: |")
for t, v in h.items():
    if v: print(f"| {t} | {v['cpu_user_us']:.2f} | {v['cpu_sys_us']:.2f} | {v['machine_cpu_us']:.2f} |")
n, d = h.get("nginx"), h.get("direct")
if n and d and n["rps"]:
    # 1.2 x nginx's rate on the same cores: the machine may spend 1/1.2 of nginx's CPU per request;
    # what the load generator and upstream take (the direct run) is not the proxy's to spend.
    budget = n["machine_cpu_us"] / 1.2 - d["machine_cpu_us"]
    print(f"budget of a proxy for 1.2 x nginx: {budget:.2f} µs per request in all (nginx's kernel time alone: {n['cpu_sys_us']:.2f} µs)")
    result["budget_for_1_2x_nginx_us"] = round(budget, 2)
    json.dump(result, open(out, "w"), indent=2)
print()
for k, v in result["ratios"].items():
    print(f"{k}: {v}")
print()
print("HTTPS upstream (TLS with keep-alive, certificate verified; API key header; direct: wrk over TLS to the upstream)")
print(f"| target | req/s (median) | min–max | p50 ms | p99 ms | user µs | kernel µs | errors |")
print(f"| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for t, v in hs.items():
    if v: print(f"| {t} | {v['rps']:.0f} | {v['rps_min']:.0f}–{v['rps_max']:.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['cpu_user_us']:.2f} | {v['cpu_sys_us']:.2f} | {v['errors']} |")
for k, v in result["https_ratios"].items():
    print(f"https {k}: {v}")
for sc in ["payload", "query", "per_user"]:
    if sc in result:
        for t, v in result[sc].items():
            if v: print(f"{sc} {t}: {v['rps']:.0f} req/s, p99 {v['p99_ms']:.2f} ms")
if "open_loop_1000" in result:
    for t, v in result["open_loop_1000"].items():
        print(f"open loop 1000 req/s {t}: p50 {v['p50_ms']:.3f} ms, p99 {v['p99_ms']:.3f} ms, errors {v['errors']}")
    d, a = result["open_loop_1000"].get("direct"), result["open_loop_1000"].get("authsidecar")
    if d and a: print(f"added p99 at 1000 req/s: {a['p99_ms'] - d['p99_ms']:.3f} ms")
if "storm" in result:
    s = result["storm"]["authsidecar"]
    print(f"storm: {s['ok']}/{s['n']} ok, IdP requests {s['idp_requests']}, drained in {s['elapsed_ms']:.0f} ms")
for sc, key in [("memory_per_token", "bytes_per_token"), ("memory_per_grant", "bytes_per_grant"), ("memory_per_connection", "bytes_per_connection")]:
    if sc in result:
        v = result[sc]["authsidecar"]
        cold = f", {v['bytes_per_grant_from_cold']:.0f} counted from a cold process" if "bytes_per_grant_from_cold" in v else ""
        print(f"{sc}: {v[key]:.0f} bytes (RSS {v['rss_before_kb']} → {v['rss_after_kb']} KiB{cold})")
print(f"\nJSON: {out}")
if smoke == "1":
    # The smoke run proves the script works: every HTTPS target answered 2xx (the upstream answers 401
    # without the key). Socket errors are left to the figures: a busy CI machine may time one out.
    non2xx = lambda t: sum(r.get("non2xx", 0) for r in rows if r["scenario"] == "https" and r["target"] == t)
    bad = [t for t, v in hs.items() if not v or not v["rps"] or non2xx(t)]
    if bad:
        print(f"smoke: HTTPS targets without answers or with errors: {', '.join(bad)}", file=sys.stderr)
        sys.exit(1)
PY
