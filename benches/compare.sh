#!/usr/bin/env bash
# Side-by-side benchmark: amity-mtls-proxy vs nginx vs HAProxy as an mTLS egress proxy.
#
#   bash benches/compare.sh            # full run (how long: benches/README.md)
#   bash benches/compare.sh --quick    # shorter rounds, for a smoke test
#
# Environment:
#   AMITY_BIN=/path/to/amity-mtls-proxy   use this binary instead of the one that ships
#   SKIP_BUILD=1                          use target/optimized as it is (no rebuild)
# Everything runs on 127.0.0.1; every process started is stopped on exit.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

bash "$root/scripts/deps.sh" haproxy wrk python3
export PATH="$PATH:/usr/sbin:/sbin"

if [ -z "${AMITY_BIN:-}" ]; then
  if [ -z "${SKIP_BUILD:-}" ]; then
    # The binary that ships: the profile-guided release build, laid out by BOLT.
    bash "$root/scripts/build-optimized.sh"
  fi
  export AMITY_BIN="$root/target/optimized/amity-mtls-proxy"
fi

# 10,000 idle connections need file descriptors in the proxies and in the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
  echo "warning: ulimit -n is $(ulimit -n); the 10,000-idle-connection figure needs about 10,100" >&2
fi

py=""
cleanup() { [ -n "$py" ] && kill -TERM "$py" 2>/dev/null && wait "$py" 2>/dev/null; true; }
trap cleanup EXIT INT TERM
python3 "$here/bench.py" --root "$root" "$@" &
py=$!
wait "$py"
rc=$?
py=""
exit $rc
