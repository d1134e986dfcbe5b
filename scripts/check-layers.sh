#!/usr/bin/env bash
# Checks STYLE §1: the domain core does no I/O and never imports the edge.
# Core code may not name tokio, tonic, sled, std::fs, std::net, read the wall
# clock, or use the edge modules. Test code (from `#[cfg(test)]` on, and
# tests.rs files) is exempt.
set -euo pipefail
cd "$(dirname "$0")/.."

core=(src/id src/keyring src/authority src/registry src/policy src/audit src/secret.rs
      src/agent/rotation.rs src/attest/parse.rs)
forbidden='(\btokio\b|\btonic\b|\bsled\b|std::fs|std::net|std::process|clock::now|SystemTime::now|Instant::now|crate::(store|api|tls|config|server|cli)\b)'

status=0
while IFS= read -r file; do
  case "$file" in */tests.rs|*/tests/*) continue ;; esac
  hits=$(awk '/#\[cfg\(test\)\]/ { exit } { print FILENAME ":" FNR ": " $0 }' "$file" \
    | grep -E "$forbidden" | grep -vE '^[^:]+:[0-9]+: *//' || true)
  if [ -n "$hits" ]; then
    echo "$hits"
    status=1
  fi
done < <(find "${core[@]}" -name '*.rs' | sort)

if [ $status -ne 0 ]; then
  echo "layer check failed: the core above reaches into I/O or the edge (STYLE.md §1)" >&2
  exit 1
fi
echo "layer check: core is free of I/O and edge imports"
