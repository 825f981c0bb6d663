#!/usr/bin/env bash
# The README's test command: installs what the tests need (tinyproxy as a real connector, openssl for
# development certificates, the Python verifiers of the signing tests in .venv, oidc-provider for the
# JWT client authentication and OpenID sign-in tests in tests/verify/oidc; skipped when present)
# and runs every test, then the request-path suites
# once more with `proxy.fast_path = false` (AUTHSIDECAR_TEST_FAST_PATH, read by the test harness), so
# each of their tests runs in both settings.
#
#   scripts/test.sh [cargo test arguments]
#
# With arguments, only `cargo test "$@"` runs (the second run is for the whole suite).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 scripts/check-doc-links.py
cargo test "$@"
if [ "$#" -eq 0 ]; then
    echo "== the request-path suites again with fast_path = false"
    AUTHSIDECAR_TEST_FAST_PATH=false cargo test --test integration -- \
        injection:: forwarding:: oauth:: oauth1_flow:: user_auth:: discovery:: dynamic_fields:: authcode_test:: edge:: errors:: fast_path:: limits:: sign_phase:: sign_test:: token_shapes:: presets:: \
        --skip auth_limits::
fi
