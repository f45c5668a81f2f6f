#!/usr/bin/env bash
# Builds the release binary that ships (container image, systemd) in two profiled steps,
# both trained on the proxy carrying token calls:
# 1. profile-guided optimisation in rustc: a build that counts its branches and calls
#    runs the training load, then the release build is compiled again with those counts
#    (inlining, branch layout, what is kept hot): per proxied request, valgrind counted
#    17 % fewer instructions;
# 2. BOLT lays out that binary's machine code from a profile of the same load: hot code
#    packed together, so that it misses the instruction cache less often.
#
#   bash scripts/build-optimized.sh   # -> target/optimized/amity-mtls-proxy (+ .fdata, BOLT's profile,
#                                     #    and .cdx.json, its SBOM)
#
# The binary is built with `cargo auditable`: it carries its dependency list, which
# `cargo audit bin` and scanners read; the SBOM beside it is checked against that
# list after BOLT.
#
# The training runs use only this repository and loopback: the binary's own dev CA
# and stand-in Amity (`mock-amity`), and wrk as the backends. It ends with
# `demo --once` run by the optimized binary. Needs Debian's bolt-19 and llvm-19 (its
# llvm-profdata reads the raw profile format that rustc's LLVM 22 writes, version 10),
# wrk and curl (installed when missing), on x86-64 Linux.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# The tools in LLVM's own folder: from there llvm-bolt finds its runtime libraries.
llvm=/usr/lib/llvm-19/bin
bash scripts/deps.sh --build wrk curl "bolt-19=$llvm/llvm-bolt" "llvm-19=$llvm/llvm-profdata"
bash scripts/supply-chain.sh install cargo-auditable cargo-cyclonedx rust-audit-info

# Target folders of their own, so that these flags do not rebuild target/release. The
# counting build keeps its flags, and so stays incremental; the guided build is compiled
# again, dependencies included, whenever the counts change (cargo tracks the profile).
pgo="$root/target/pgo"
# Where a counting run without LLVM_PROFILE_FILE writes: the build scripts compiled with
# these flags, as they run during the build. Not part of the training's profile.
rm -rf "$pgo/raw"
mkdir -p "$pgo"
RUSTFLAGS="${RUSTFLAGS:-} -C profile-generate=$pgo/raw" \
  cargo build --release --locked --target-dir target/pgo-build
counting="$root/target/pgo-build/release/amity-mtls-proxy"
out="$root/target/optimized/amity-mtls-proxy"

work="$(mktemp -d)"
# Stops whatever this script left running (the stand-in, a proxy), also on failure.
cleanup() {
  local running
  running="$(jobs -p)"
  [ -z "$running" ] || kill -TERM $running 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  local p
  for p in $(shuf -i 20000-32000 -n 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  echo "no free port on 127.0.0.1" >&2
  return 1
}
listen="127.0.0.1:$(free_port)"
admin="127.0.0.1:$(free_port)"
amity="127.0.0.1:$(free_port)"
# The repository's local default (what `demo` runs), on free ports.
sed -e "s|127.0.0.1:8080|$listen|; s|127.0.0.1:9901|$admin|; s|https://127.0.0.1:9443|https://$amity|" \
  config.yaml >"$work/config.yaml"
for addr in "$listen" "$admin" "$amity"; do
  grep -q "$addr" "$work/config.yaml" || {
    echo "config.yaml: its listen, admin_listen or upstream.url address changed; update the ports this script replaces" >&2
    exit 1
  }
done
# Runs of the counting build outside the training leave their counts here, unused.
discard="$work/discard/%p.profraw"
# Makes the dev CA and the client certificate, and checks the build end to end.
LLVM_PROFILE_FILE="$discard" "$counting" -c "$work/config.yaml" demo --once >"$work/demo-counting.log" 2>&1 || {
  cat "$work/demo-counting.log" >&2
  exit 1
}

wait_ready() {
  local i
  for i in $(seq 100); do
    curl -fsS -o /dev/null "http://$admin/readyz" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "the instrumented proxy did not become ready; its log:" >&2
  cat "$1" >&2
  return 1
}

# train BIN NAME: BIN as the proxy at both log levels that deployments use (warn, and
# info with its access log), 4 s of wrk at 32 and then 256 connections each; the
# stand-in must be running. A profiling build writes its profile when it exits.
train() {
  local level conns proxy
  for level in warn info; do
    RUST_LOG=$level "$1" -c "$work/config.yaml" run >"$work/$2-$level.log" 2>&1 &
    proxy=$!
    wait_ready "$work/$2-$level.log"
    for conns in 32 256; do
      wrk -t1 -c"$conns" -d4s -H "x-server-key: local-dev-server-key" \
        "http://$listen/api/v3/authentication/token?userId=u1" >"$work/wrk-$2-$level-$conns.log"
      grep -qE "Non-2xx|Socket errors" "$work/wrk-$2-$level-$conns.log" && {
        echo "training requests failed:" >&2
        cat "$work/wrk-$2-$level-$conns.log" >&2
        exit 1
      }
    done
    kill -TERM "$proxy"
    wait "$proxy"
  done
}

# 1. Profile-guided optimisation.
LLVM_PROFILE_FILE="$discard" RUST_LOG=warn "$counting" -c "$work/config.yaml" mock-amity --listen "$amity" \
  >"$work/mock.log" 2>&1 &
mock=$!
LLVM_PROFILE_FILE="$work/pgo/%p.profraw" train "$counting" counting
kill -TERM "$mock"
wait "$mock" || true
"$llvm/llvm-profdata" merge -o "$pgo/merged.profdata" "$work"/pgo/*.profraw

# 2. BOLT moves whole functions only in a binary that kept its relocations.
# The build that ships, so `cargo auditable`: its dependency list goes into the binary.
RUSTFLAGS="${RUSTFLAGS:-} -C profile-use=$pgo/merged.profdata -C link-arg=-Wl,--emit-relocs" \
  cargo auditable build --release --locked --target-dir target/bolt-build
guided="$root/target/bolt-build/release/amity-mtls-proxy"
RUST_LOG=warn "$guided" -c "$work/config.yaml" mock-amity --listen "$amity" >"$work/mock.log" 2>&1 &
mock=$!
"$llvm/llvm-bolt" "$guided" -o "$work/instrumented" -instrument \
  --instrumentation-file="$work/profile" --instrumentation-file-append-pid \
  >"$work/bolt-instrument.log" 2>&1 || {
  tail -20 "$work/bolt-instrument.log" >&2
  exit 1
}
train "$work/instrumented" bolt
"$llvm/merge-fdata" "$work"/profile.*.fdata >"$work/merged.fdata" 2>"$work/merge.log"

mkdir -p "$(dirname "$out")"
# Hot blocks and functions packed together, cold ones split off; -plt=hot calls libc's
# hot functions through the GOT directly, which is safe as rustc links with -z now.
"$llvm/llvm-bolt" "$guided" -o "$out.new" -data="$work/merged.fdata" \
  -reorder-blocks=ext-tsp -reorder-functions=cdsort -split-functions -split-all-cold \
  -split-eh -icf=1 -use-gnu-stack -plt=hot -peepholes=all -frame-opt=hot \
  -x86-strip-redundant-address-size >"$work/bolt.log" 2>&1 || {
  tail -20 "$work/bolt.log" >&2
  exit 1
}
kill -TERM "$mock"
wait "$mock" || true
"$out.new" -c "$work/config.yaml" demo --once >"$work/demo-optimized.log" 2>&1 || {
  echo "the optimized binary failed the demo:" >&2
  cat "$work/demo-optimized.log" >&2
  exit 1
}
# Checked against the laid-out binary, so this also fails if BOLT dropped the list.
bash scripts/supply-chain.sh sbom "$out.new" "$out.cdx.json"
mv "$out.new" "$out"
# Kept beside the binary, for llvm-bolt experiments and for inspection.
cp "$work/merged.fdata" "$out.fdata"
grep -h "have non-empty execution profile" "$work/bolt.log" || true
echo "built $out"
