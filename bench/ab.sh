#!/usr/bin/env bash
# Two proxies head to head on one header scenario: many short rounds, A and B alternating (A first in
# odd rounds, B first in even ones), so drift of a shared machine falls on both alike. For changes
# of a few per cent that bench/compare.sh's five rounds cannot separate (a build setting, an
# allocator, a scheduling change).
#
#   bench/ab.sh BIN_A BIN_B [ROUNDS=16] [SECONDS=3]
#   SCENARIO=https bench/ab.sh BIN_A nginx 24 3
#
# Each of A and B is an authsidecar binary or the word `nginx` (nginx as the injecting proxy, set
# up as in bench/compare.sh, with the same worker count).
# SCENARIO=plain (default): a client-credentials profile in front of an nginx upstream answering
# 200 over plain HTTP; the token comes from the built-in mock provider (run from the first binary).
# SCENARIO=https: an API key header, injected on the way to the same nginx serving TLS with
# keep-alive (it answers 401 without the key); each proxy verifies its certificate against a CA
# made for the run and keeps its TLS connections open.
# Each round: `wrk -t2 -c64`. Per round it prints req/s, p99, and CPU ticks of the whole machine
# (irq: hard and soft interrupts), of the proxy's processes and of the upstream nginx worker. At
# the end: mean req/s, the ratio A/B, how many rounds A won against the B round next to it, CPU µs
# per request of each process, and the mean p99 of each.
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?BIN_A} B=${2:?BIN_B} R=${3:-16} D=${4:-3}
SCENARIO=${SCENARIO:-plain}
case "$SCENARIO" in plain | https) ;; *) echo "SCENARIO is plain or https" >&2; exit 2 ;; esac
bash scripts/setup.sh bench >/dev/null
. bench/lib.sh
bench_work ab
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
UP=$(free_port) UPS=$(free_port) MOCK=$(free_port)
APIKEY="benchmark-api-key-0123456789abcdef"
TOKEN="static-benchmark-token-0123456789abcdef"
bash scripts/dev-certs.sh "$WORK/tls" 2 >/dev/null
CA="$WORK/tls/ca.pem"
mkdir -p "$WORK/up"
upstream_nginx_conf "$WORK/up" "$UP" "$UPS" "$APIKEY" > "$WORK/up/nginx.conf"
"$NGINX" -c "$WORK/up/nginx.conf" -g 'daemon off;' &
UP_PID=$!; PIDS+=($UP_PID)
MOCK_BIN=$A; [ "$A" = nginx ] && MOCK_BIN=$B
"$MOCK_BIN" mock-provider --listen "127.0.0.1:$MOCK" 2>"$WORK/mock.log" &
PIDS+=($!)
declare -A PORT PID
for t in a b; do
  PORT[$t]=$(free_port)
  bin=$A; [ $t = b ] && bin=$B
  if [ "$bin" = nginx ]; then
    mkdir -p "$WORK/ng-$t"
    if [ "$SCENARIO" = https ]; then
      loc="proxy_pass https://ups; proxy_set_header X-Api-Key \"$APIKEY\"; proxy_ssl_session_reuse on;
        proxy_ssl_verify on; proxy_ssl_trusted_certificate $CA; proxy_ssl_name localhost; proxy_ssl_server_name on;"
    else
      loc="proxy_pass http://up; proxy_set_header Authorization \"Bearer $TOKEN\";"
    fi
    cat > "$WORK/ng-$t/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/ng-$t/nginx.pid;
error_log $WORK/ng-$t/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK; uwsgi_temp_path $WORK; scgi_temp_path $WORK;
  upstream up { server 127.0.0.1:$UP; keepalive 256; keepalive_requests 1000000; }
  upstream ups { server 127.0.0.1:$UPS; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${PORT[$t]};
    location / { proxy_http_version 1.1; proxy_set_header Connection ""; $loc }
  }
}
EOF
    "$NGINX" -c "$WORK/ng-$t/nginx.conf" -g 'daemon off;' &
  else
    if [ "$SCENARIO" = https ]; then
      cat > "$WORK/$t.toml" <<EOF
[proxy]
listen = "127.0.0.1:${PORT[$t]}"
access_log = false
[admin]
listen = "127.0.0.1:$(free_port)"
[[routes]]
prefix = "/"
upstream = "https://127.0.0.1:$UPS/"
profiles = ["key"]
tls = { ca_file = "$CA" }
EOF
      key_profile "$APIKEY" >> "$WORK/$t.toml"
    else
      cc_sidecar_config "${PORT[$t]}" "$(free_port)" "http://127.0.0.1:$UP/" "$MOCK" > "$WORK/$t.toml"
    fi
    RUST_LOG=warn "$bin" -c "$WORK/$t.toml" run 2>"$WORK/$t.log" &
  fi
  PID[$t]=$!; PIDS+=($!)
done
for p in "$UP" "$UPS" "$MOCK" "${PORT[a]}" "${PORT[b]}"; do wait_port "$p"; done
NGW=$(pgrep -P "$UP_PID" | head -1)
# The processes doing a proxy's work: nginx's workers, or the sidecar's one process.
procs() { if [ -n "$(pgrep -P "$1")" ]; then pgrep -P "$1" | tr '\n' ' '; else echo "$1"; fi; }
ticks() { for p in $1; do cat "/proc/$p/stat"; done | awk '{t += $14 + $15} END {print t}'; }
for t in a b; do # warm-up: token, pools; a request that fails shows at once
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$t]}/")
  [ "$code" = 200 ] || { echo "$t answered $code to a first request (expected 200)" >&2; KEEP_LOGS=1; exit 1; }
  wrk -t2 -c64 -d1s "http://127.0.0.1:${PORT[$t]}/" >/dev/null
done
: > "$WORK/rounds"
for r in $(seq 1 "$R"); do
  order="a b"; [ $((r % 2)) = 0 ] && order="b a"
  for t in $order; do
    pp=$(procs "${PID[$t]}")
    s0=$(awk '/^cpu / {print $2 + $3 + $4, $7 + $8}' /proc/stat); p0=$(ticks "$pp"); n0=$(ticks "$NGW")
    out=$(wrk -t2 -c64 -d"${D}s" --latency "http://127.0.0.1:${PORT[$t]}/")
    s1=$(awk '/^cpu / {print $2 + $3 + $4, $7 + $8}' /proc/stat); p1=$(ticks "$pp"); n1=$(ticks "$NGW")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '/ 99%/ {print $2}')
    if echo "$out" | grep -q 'Non-2xx'; then echo "$t: $(echo "$out" | grep 'Non-2xx')" >&2; exit 1; fi
    line="$t $rps p99=$p99 $(echo "$s0 $s1" | awk '{print "cpu=" $3 - $1, "irq=" $4 - $2}') proxy=$((p1 - p0)) upstream=$((n1 - n0))"
    echo "$line"; echo "$line" >> "$WORK/rounds"
  done
done
python3 - "$WORK/rounds" "$D" "$(getconf CLK_TCK)" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
dur, tck = float(sys.argv[2]), float(sys.argv[3])
by = {"a": [], "b": []}
for f in rows:
    by[f[0]].append((float(f[1]), dict(x.split("=", 1) for x in f[2:])))
def ms(v):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
for t, rs in by.items():
    n = sum(r for r, _ in rs) * dur
    per = lambda k: sum(float(kv[k]) for _, kv in rs) / tck / n * 1e6
    busy = sum(float(kv["cpu"]) + float(kv["irq"]) for _, kv in rs) / tck / (dur * len(rs))
    print(f"{t}: {statistics.mean(r for r, _ in rs):.0f} req/s mean; p99 mean {statistics.mean(ms(kv['p99']) for _, kv in rs):.2f} ms; "
          f"cores busy (interrupts included) {busy:.2f}; CPU µs per request: "
          + ", ".join(f"{k} {per(k):.2f}" for k in ("proxy", "upstream", "cpu", "irq")))
pairs = list(zip(by["a"], by["b"]))
wins = sum(1 for (ra, _), (rb, _) in pairs if ra > rb)
print(f"A/B: {statistics.mean(r for r, _ in by['a']) / statistics.mean(r for r, _ in by['b']):.3f} "
      f"(A ahead in {wins} of {len(pairs)} rounds)")
PY
