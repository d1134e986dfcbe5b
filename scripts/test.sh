#!/usr/bin/env bash
# The one gate (README's test command; .ci/run calls it): layer check,
# rustfmt, clippy with warnings denied, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the tests call: openssl (certificate checks), setpriv (running
# the CLI as another uid) and the system python3. All are Debian packages;
# install them if a machine lacks them.
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v setpriv >/dev/null || missing+=(util-linux)
# The flood test's helper runs as another uid, which cannot reach a per-user
# Python install: it needs the system interpreter.
[ -x /usr/bin/python3 ] || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi

# The interop tests' Python clients (grpcio, hvac, PyJWT), pinned in
# tests/python/requirements.txt, in a venv under target/. Rebuilt only when
# the pins change (or it was never completed).
pyenv=target/pyenv
pyreqs=tests/python/requirements.txt
if ! [ -x "$pyenv/bin/python" ] || ! cmp -s "$pyreqs" "$pyenv/requirements.txt"; then
  echo "== python venv for the interop tests ($pyenv)"
  rm -rf "$pyenv"
  if ! python3 -m venv "$pyenv"; then
    # Debian's own python3 ships venv (with ensurepip) as a separate package.
    echo "installing: python3 python3-venv"
    apt-get update -qq
    apt-get install -y -qq python3 python3-venv
    rm -rf "$pyenv"
    /usr/bin/python3 -m venv "$pyenv"
  fi
  "$pyenv/bin/python" -m pip install -q --disable-pip-version-check \
    --only-binary=:all: -r "$pyreqs"
  cp "$pyreqs" "$pyenv/requirements.txt"
fi

# The interop test's Node.js Vault client: node-vault, pinned in
# tests/node/package-lock.json, installed into target/node. Reinstalled only
# when package.json or the lock changes (or the install never completed).
# Node and npm are Debian packages; installed if the machine lacks them.
nodedir=target/node
nodelock=tests/node/package-lock.json
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing: nodejs npm"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm
fi
# node-vault and axios need Node 18 or later (Debian 12 ships 18).
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
  echo "node $(node --version) is too old for the interop test's node-vault: install Node 18 or later" >&2
  exit 1
fi
if ! [ -d "$nodedir/node_modules/node-vault" ] \
  || ! cmp -s "$nodelock" "$nodedir/package-lock.json" \
  || ! cmp -s tests/node/package.json "$nodedir/package.json" \
  || ! [ -e "$nodedir/installed" ]; then
  echo "== node modules for the interop test ($nodedir)"
  rm -rf "$nodedir"
  mkdir -p "$nodedir"
  cp tests/node/package.json "$nodelock" "$nodedir/"
  (cd "$nodedir" && npm ci --no-audit --no-fund --ignore-scripts)
  touch "$nodedir/installed"
fi

# The rotation tests' PostgreSQL server: a throwaway cluster on a free
# loopback port (scripts/postgres.sh installs Debian's postgresql if needed),
# stopped and removed when this script exits. Outside /root, because as root
# the cluster runs as the postgres user, who must reach its directory.
pgdir=$(mktemp -d /tmp/sigil-pg.XXXXXX)
stop_pg() { scripts/postgres.sh stop "$pgdir" >/dev/null 2>&1 || true; rm -rf "$pgdir"; }
trap stop_pg EXIT
echo "== postgresql for the rotation tests ($pgdir)"
eval "$(scripts/postgres.sh start "$pgdir")"

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
