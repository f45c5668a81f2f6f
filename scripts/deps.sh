#!/usr/bin/env bash
# Installs what the build needs beyond Rust (make and a C compiler, for jemalloc)
# and the Debian tools the tests use as independent peers and checkers:
# openssl (CSR and certificate checks), nginx (a real mTLS upstream), curl.
# Extra tools named as arguments (command name = Debian package) are installed too:
# benches/compare.sh adds haproxy, wrk and python3.
set -euo pipefail
missing=()
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc)
command -v openssl >/dev/null || missing+=(openssl)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v curl >/dev/null || missing+=(curl)
for tool in "$@"; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
