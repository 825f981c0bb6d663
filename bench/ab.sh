#!/usr/bin/env bash
# Two builds of authsidecar head to head on the plain-upstream header scenario: many short rounds,
# A and B alternating (A first in odd rounds, B first in even ones), so drift of a shared machine
# falls on both alike. For changes of a few per cent that bench/compare.sh's five rounds cannot
# separate (a build setting, an allocator).
#
#   bench/ab.sh BIN_A BIN_B [ROUNDS=16] [SECONDS=3]
#
# Each round: `wrk -t2 -c64` against one build (a client-credentials profile in front of an nginx
# upstream answering 200; token from the built-in mock provider, run from BIN_A). Per round it
# prints req/s, p99, and CPU ticks of the whole machine (irq: hard and soft interrupts), of the
# build's process and of the upstream nginx worker. At the end: mean req/s, the ratio A/B,
# how many rounds A won against the B round next to it, and CPU µs per request of each process.
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?BIN_A} B=${2:?BIN_B} R=${3:-16} D=${4:-3}
bash scripts/setup.sh bench >/dev/null
. bench/lib.sh
bench_work ab
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
UP=$(free_port) MOCK=$(free_port)
cat > "$WORK/up.conf" <<EOF
worker_processes 1;
pid $WORK/up.pid;
error_log $WORK/up.err warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK; uwsgi_temp_path $WORK; scgi_temp_path $WORK;
  server { listen 127.0.0.1:$UP reuseport; location / { return 200 "ok\n"; } }
}
EOF
"$NGINX" -c "$WORK/up.conf" -g 'daemon off;' &
UP_PID=$!; PIDS+=($UP_PID)
"$A" mock-provider --listen "127.0.0.1:$MOCK" 2>"$WORK/mock.log" &
PIDS+=($!)
declare -A PORT PID
for t in a b; do
  PORT[$t]=$(free_port)
  cc_sidecar_config "${PORT[$t]}" "$(free_port)" "http://127.0.0.1:$UP/" "$MOCK" > "$WORK/$t.toml"
  bin=$A; [ $t = b ] && bin=$B
  RUST_LOG=warn "$bin" -c "$WORK/$t.toml" run 2>"$WORK/$t.log" &
  PID[$t]=$!; PIDS+=($!)
done
for p in "$UP" "$MOCK" "${PORT[a]}" "${PORT[b]}"; do wait_port "$p"; done
NGW=$(pgrep -P "$UP_PID" | head -1)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for t in a b; do # warm-up: token, pools
  curl -s -o /dev/null "http://127.0.0.1:${PORT[$t]}/"
  wrk -t2 -c64 -d1s "http://127.0.0.1:${PORT[$t]}/" >/dev/null
done
: > "$WORK/rounds"
for r in $(seq 1 "$R"); do
  order="a b"; [ $((r % 2)) = 0 ] && order="b a"
  for t in $order; do
    s0=$(awk '/^cpu / {print $2 + $3 + $4, $7 + $8}' /proc/stat); p0=$(ticks "${PID[$t]}"); n0=$(ticks "$NGW")
    out=$(wrk -t2 -c64 -d"${D}s" --latency "http://127.0.0.1:${PORT[$t]}/")
    s1=$(awk '/^cpu / {print $2 + $3 + $4, $7 + $8}' /proc/stat); p1=$(ticks "${PID[$t]}"); n1=$(ticks "$NGW")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '/ 99%/ {print $2}')
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
for t, rs in by.items():
    n = sum(r for r, _ in rs) * dur
    per = lambda k: sum(float(kv[k]) for _, kv in rs) / tck / n * 1e6
    print(f"{t}: {statistics.mean(r for r, _ in rs):.0f} req/s mean; CPU µs per request: "
          + ", ".join(f"{k} {per(k):.2f}" for k in ("proxy", "upstream", "cpu", "irq")))
pairs = list(zip(by["a"], by["b"]))
wins = sum(1 for (ra, _), (rb, _) in pairs if ra > rb)
print(f"A/B: {statistics.mean(r for r, _ in by['a']) / statistics.mean(r for r, _ in by['b']):.3f} "
      f"(A ahead in {wins} of {len(pairs)} rounds)")
PY
