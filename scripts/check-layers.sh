#!/usr/bin/env bash
# Checks STYLE §1: the domain core does no I/O and never imports the edge.
# The rules and the list of core modules live in check-layers.py; this
# wrapper first proves the checker catches each kind of violation, then
# checks the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/check-layers.py --self-test
python3 scripts/check-layers.py .
