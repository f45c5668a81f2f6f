#!/usr/bin/env bash
# Runs each fuzz target for FUZZ_SECONDS (default 60) with libFuzzer; exits
# non-zero on the first crash, leaving the input under fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes unstable compiler flags; this lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
secs="${FUZZ_SECONDS:-60}"
for target in config policy; do
  mkdir -p "corpus/$target"
  cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
  echo "fuzzing $target for ${secs}s"
  cargo fuzz run --sanitizer none "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10
done
