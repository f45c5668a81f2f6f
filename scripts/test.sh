#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs them all (every
# test binary, even after one fails, so a run shows every failure)
# and closes with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
mkdir -p target
rc=0
cargo test --locked --all-targets --no-fail-fast "$@" 2>&1 | tee target/test-output.log || rc=$?
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' \
  target/test-output.log | tee target/test-summary.txt
exit "$rc"
