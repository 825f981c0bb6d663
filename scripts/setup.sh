#!/usr/bin/env bash
# Installs what the tests and benchmarks need beyond the Rust toolchain (Debian packages).
# Skips what is already installed; safe to run again. Called by .ci/run and bench/compare.sh.
#
#   scripts/setup.sh            # everything (tests: tinyproxy as the connector, redis-server for replicas,
#                               # openssl for dev certificates, chromium + chromium-driver for the
#                               # admin console's browser test, libfaketime for the wall-clock
#                               # jump test)
#   scripts/setup.sh bench      # only the benchmark tools (nginx, haproxy, wrk, valgrind, openssl)
set -euo pipefail

declare -A BIN_OF=(
  [nginx]=nginx
  [haproxy]=haproxy
  [wrk]=wrk
  [tinyproxy]=tinyproxy
  [openssl]=openssl
  [redis-server]=redis-server
  [chromium]=chromium
  [chromium-driver]=chromedriver
  [libfaketime]=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
  [valgrind]=valgrind
)
case "${1:-all}" in
  bench) WANT=(nginx haproxy wrk valgrind openssl) ;;
  all) WANT=(nginx haproxy wrk valgrind tinyproxy openssl redis-server chromium chromium-driver libfaketime) ;;
  *) echo "usage: $0 [all|bench]" >&2; exit 2 ;;
esac

missing=()
for pkg in "${WANT[@]}"; do
  bin="${BIN_OF[$pkg]}"
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ] && [ ! -e "$bin" ]; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: nothing to install"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages start system services on install where an init system runs; the benchmark starts
# its own instances on free ports, so stop those if they came up.
for svc in nginx haproxy tinyproxy redis-server; do
  if command -v service >/dev/null 2>&1; then $SUDO service "$svc" stop >/dev/null 2>&1 || true; fi
done
echo "setup: done"
