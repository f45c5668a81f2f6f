#!/usr/bin/env bash
# What is inside the gateway, checked and recorded.
#
#   bash scripts/supply-chain.sh                  # cargo deny: advisories, licenses, bans, sources
#   bash scripts/supply-chain.sh install TOOL...  # only install these pinned tools
#   bash scripts/supply-chain.sh sbom BINARY OUT  # CycloneDX SBOM of BINARY, checked against its embedded list
#   bash scripts/supply-chain.sh verify BINARY SBOM  # only that check
#
# The check runs offline against the RustSec snapshot in ../shared/advisory-db/
# (beside the repository, as CI has it: GitHub is out of reach), prints that
# snapshot's date, and fails on any finding (deny.toml says what counts).
# Tools come from crates.io with `cargo install --locked` at the versions below,
# only when that version is not already installed (CI keeps ~/.cargo/bin).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# A new release is taken on purpose, by changing its version here.
declare -A version=(
  [cargo-deny]=0.20.2      # the four checks, from deny.toml
  [cargo-auditable]=0.7.7  # embeds the dependency list in the binary
  [cargo-cyclonedx]=0.5.9  # the SBOM: licenses, checksums, purls
  [rust-audit-info]=0.5.4  # reads the embedded list back
)

install() {
  local tool v started
  for tool; do
    v="${version[$tool]:?no pinned version for $tool}"
    # What `cargo install` recorded: no network needed to see it is there.
    if [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/$tool" ] && cargo install --list | grep -x "$tool v$v:" >/dev/null; then
      continue
    fi
    started=$SECONDS
    echo "installing $tool $v"
    cargo install --locked --quiet --version "$v" "$tool"
    echo "installed $tool $v in $((SECONDS - started)) s"
  done
}

# verify BINARY SBOM: the SBOM names exactly the crates (name@version) that
# BINARY says it holds. Fails if BINARY carries no list (built without
# `cargo auditable`, or the section was lost on the way, e.g. by BOLT) or the
# SBOM was made from other sources.
verify() {
  local bin="${1:?verify needs a binary}" bom="${2:?verify needs an SBOM}" embedded listed
  install rust-audit-info
  embedded="$(rust-audit-info "$bin" | grep -oE '"name":"[^"]+","version":"[^"]+"' |
    sed -E 's/"name":"([^"]+)","version":"([^"]+)"/\1@\2/' | sort)" || {
    echo "no dependency list in $bin: build it with cargo auditable" >&2
    return 1
  }
  listed="$(grep -oE '"purl": "pkg:cargo/[^"?#]+' "$bom" | sed 's|.*pkg:cargo/||' | sort)"
  if [ "$embedded" != "$listed" ]; then
    echo "$bom and the list embedded in $bin differ (< binary, > SBOM):" >&2
    diff <(echo "$embedded") <(echo "$listed") >&2 || true
    return 1
  fi
  echo "SBOM $bom: $(echo "$listed" | wc -l) packages (the proxy and its crates), as embedded in $bin"
}

# sbom BINARY OUT: the SBOM of this tree's binary for the shipped target, in
# OUT, verified against BINARY (OUT is removed if they differ).
sbom() {
  local bin="${1:?sbom needs a binary}" out="${2:?sbom needs an output file}"
  install cargo-cyclonedx
  # cargo cyclonedx writes it beside Cargo.toml, as <bin>_bin.cdx.json.
  cargo cyclonedx --quiet --describe binaries --format json --spec-version 1.5 \
    --target x86_64-unknown-linux-gnu
  mv "$root/amity-mtls-proxy_bin.cdx.json" "$out"
  verify "$bin" "$out" || { rm -f "$out"; return 1; }
}

check() {
  local bundle="$root/../shared/advisory-db/advisory-db.bundle" db
  [ -f "$bundle" ] || { echo "no advisory snapshot at $bundle" >&2; return 1; }
  install cargo-deny
  # Cloned anew each run, so a refreshed bundle is always the one used. The
  # folder name is the one cargo-deny derives from deny.toml's db-urls.
  db="$root/target/advisory-dbs/advisory-db-3157b0e258782691"
  rm -rf "$db"
  git clone -q -b snapshot "$bundle" "$db"
  # The bundle's commit says which upstream state it holds; its own date is when it was bundled.
  echo "advisory database: $(git -C "$db" log -1 --format=%s); newest advisory" \
    "$(grep -rhoE '^date = "[0-9-]+"' "$db/crates" | sort | tail -1 | tr -d '"' | cut -d' ' -f3);" \
    "bundle commit $(git -C "$db" log -1 --format='%h of %cs')"
  # crates.io is reachable: the index cache refreshed (which versions are
  # yanked) without touching Cargo.lock, and every locked crate's sources
  # fetched (license files), so that the check itself needs no network.
  cargo update --dry-run --quiet
  cargo fetch --locked --quiet
  cargo deny --locked --offline check advisories licenses bans sources
}

case "${1:-check}" in
  check) check ;;
  install) shift; install "$@" ;;
  sbom) shift; sbom "$@" ;;
  verify) shift; verify "$@" ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
