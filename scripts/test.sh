#!/usr/bin/env bash
# The README's test command: installs what the tests need (tinyproxy as a real connector, openssl for
# development certificates; skipped when present) and runs every test.
#
#   scripts/test.sh [cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test "$@"
