#!/usr/bin/env bash
# Installs what the build needs beyond Rust (make and a C compiler, for jemalloc)
# and the Debian tools the tests use as independent peers and checkers:
# openssl (CSR and certificate checks), nginx (a real mTLS upstream), curl,
# chromium (the status page, loaded in a real browser) and systemd's
# systemd-socket-activate (listeners held across a restart).
#
#   bash scripts/deps.sh [--build] [TOOL | PACKAGE=PATH ...]
#
# --build: the build tools only, not the tests' peers. Each further argument is a
# command that is also a Debian package (benches/compare.sh adds haproxy, wrk and
# python3), or a package and the file it provides (bolt-19=/usr/lib/llvm-19/bin/llvm-bolt).
set -euo pipefail
tests=1
if [ "${1:-}" = --build ]; then tests=""; shift; fi
missing=()
need() { # need PACKAGE [PATH]: installs PACKAGE unless its command (or PATH) exists
  if [ -n "${2:-}" ]; then [ -x "$2" ] && return 0
  else command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] && return 0; fi
  missing+=("$1")
}
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc)
if [ -n "$tests" ]; then
  need openssl
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  need curl
  need chromium
  # systemd-socket-activate holds the listeners in the socket-activated restart test.
  need systemd /usr/bin/systemd-socket-activate
fi
for spec in "$@"; do
  case "$spec" in
    *=*) need "${spec%%=*}" "${spec#*=}" ;;
    *) need "$spec" ;;
  esac
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
