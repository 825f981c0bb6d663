#!/usr/bin/env bash
# Installs what the tests and benchmarks need beyond the Rust toolchain (Debian packages).
# Skips what is already installed; safe to run again. Called by .ci/run and bench/compare.sh.
#
#   scripts/setup.sh            # everything (tests: tinyproxy as the connector, redis-server for replicas,
#                               # openssl for dev certificates, chromium + chromium-driver for the
#                               # admin console's browser test, libfaketime for the wall-clock
#                               # jump test, and the Python verifiers of the signing tests)
#   scripts/setup.sh bench      # only the benchmark tools (nginx, haproxy, wrk, valgrind, openssl)
#
# The signing tests check our signatures with independent implementations (oauthlib, PyJWT,
# jwcrypto, botocore: tests/verify/). They live in a virtualenv at .venv, pinned by
# tests/verify/requirements.txt; it is made again only when that file changes. The JWT client
# authentication test runs a certified OpenID provider (oidc-provider, npm) from
# tests/verify/oidc/, pinned by its package-lock.json (`npm ci`, again only when the lock changes).
set -euo pipefail
cd "$(dirname "$0")/.."

python_verifiers() {
  local req=tests/verify/requirements.txt stamp=.venv/.requirements.sha256
  local want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ -x .venv/bin/python3 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  echo "setup: installing the Python verifiers into .venv ($req)"
  rm -rf .venv
  if ! python3 -m venv .venv 2>/dev/null; then
    # Debian's python3 needs its venv package.
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv .venv
  fi
  .venv/bin/pip install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
}
if [ "${1:-all}" = all ]; then python_verifiers; fi

node_verifiers() {
  local dir=tests/verify/oidc
  local stamp=$dir/node_modules/.lock.sha256 want
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  echo "setup: installing oidc-provider into $dir/node_modules (npm ci)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
}

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
  [nodejs]=node
  [npm]=npm
)
case "${1:-all}" in
  bench) WANT=(nginx haproxy wrk valgrind openssl) ;;
  all) WANT=(nginx haproxy wrk valgrind tinyproxy openssl redis-server chromium chromium-driver libfaketime nodejs npm) ;;
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
  if [ "${1:-all}" = all ]; then node_verifiers; fi
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
if [ "${1:-all}" = all ]; then node_verifiers; fi
echo "setup: done"
