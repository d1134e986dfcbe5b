#!/usr/bin/env bash
# The one gate (README's test command; .ci/run calls it): layer check,
# rustfmt, clippy with warnings denied, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the tests call: openssl (certificate checks) and setpriv (running
# the CLI as another uid). Both are in Debian's base packages; install them
# if a machine lacks them.
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v setpriv >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

echo "== layer check"
scripts/check-layers.sh
echo "== rustfmt"
cargo fmt --all --check
echo "== clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== tests"
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
