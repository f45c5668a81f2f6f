#!/usr/bin/env bash
# Builds the container image with podman and runs it as deploy/README.md tells
# users to (image user 65532, read-only root, every capability dropped,
# no-new-privileges, config and keys mounted read-only), then checks its labels
# (version, revision) and the SBOM it carries, and in the
# container: --version, `demo --once`, the stand-in Amity and the proxy in two
# containers with a token fetched through them, /readyz, a certificate rotated
# by changing the mounted files and another by SIGHUP, `podman stop` ending
# with exit 0 within the grace period, and JSON logs. Prints each check's
# result; exits non-zero naming the checks that failed.
#
#   bash deploy/container.sh                  # runtime stage around target/optimized/amity-mtls-proxy
#   bash deploy/container.sh --binary PATH    # ... around another binary (a debug build, say,
#                                             #     made with `cargo auditable build`: the SBOM is checked against it)
#   bash deploy/container.sh --full           # the whole Dockerfile, build stage included
#   add --keep to leave the containers and their files for inspection
#
# Runs as root (rootful podman). Installs podman, buildah and runc from Debian
# when missing. Nothing is pulled: the Dockerfile's base images are stand-ins
# made here from Debian packages and tagged with the names its FROM lines use,
# made once and reused. All podman state (configuration, storage, stand-ins)
# lives in target/container/ (CONTAINER_STATE overrides), never in the
# machine's own configuration. Containers use the host network and listen on
# 127.0.0.1 only.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

FULL="" KEEP="" BINARY="$ROOT/target/optimized/amity-mtls-proxy"
while [ $# -gt 0 ]; do
  case "$1" in
    --full) FULL=1 ;;
    --keep) KEEP=1 ;;
    --binary) BINARY="$(realpath "${2:?--binary needs a path}")"; shift ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "deploy/container.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "deploy/container.sh: run as root (rootful podman)" >&2; exit 2; }

STATE="${CONTAINER_STATE:-$ROOT/target/container}"
IMAGE=localhost/amity-mtls-proxy:check
RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot
RUST_VERSION="$(sed -n 's/^ARG RUST_VERSION=//p' deploy/docker/Dockerfile)"
# The name `FROM rust:...` means, as Docker and podman both resolve it.
BUILD_BASE="docker.io/library/rust:$RUST_VERSION-slim-bookworm"
# Bumped when a stand-in's recipe changes, so that an older one is made again.
STANDIN_RECIPE=3
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
# The image's labels and OCI annotations: the release and the commit it is built from.
META=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION"
  --annotation "org.opencontainers.image.version=$VERSION" --annotation "org.opencontainers.image.revision=$REVISION")
SBOM=/usr/share/doc/amity-mtls-proxy/sbom.cdx.json
WORK="$STATE/work.$$"
NAME="amity-mtls-proxy-check-$$"
MOCK="$NAME-mock-amity" PROXY="$NAME-proxy"
STOP_GRACE=10 # seconds: `docker stop`'s default, and the proxy's shutdown_grace_ms
SERVER_KEY=local-dev-server-key

log() { printf '== %s\n' "$*"; }
# Inside a check (a subshell): say why and end it.
die() {
  echo "$*" >"$WORK/reason"
  echo "   FAILED: $*" >&2
  exit 1
}

# --- podman, configured for this machine ---------------------------------------------

install_tools() {
  local tools=(podman buildah runc curl python3)
  [ -z "$FULL" ] || tools+=(debootstrap)
  bash scripts/deps.sh --build "${tools[@]}"
}

# runc: crun refuses these machines' hybrid cgroups. The limits stay at or below
# the hard limits, which a container without CAP_SYS_RESOURCE cannot raise. The
# host network, so that containers reach each other on 127.0.0.1 as a compose
# project's shared network namespace does; ports are then not published.
configure_podman() {
  local nofile nproc
  nofile="$(ulimit -Hn)" nproc="$(ulimit -Hu)"
  [ "$nofile" = unlimited ] && nofile=1048576
  { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
  mkdir -p "$STATE/conf" "$STATE/tmp"
  cat >"$STATE/conf/containers.conf" <<EOF
[containers]
netns = "host"
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$STATE/tmp/libpod"
EOF
  cat >"$STATE/conf/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$STATE/storage"
runroot = "$STATE/tmp/storage"
EOF
  # No registry is searched or reached: every image is local or made here.
  printf 'unqualified-search-registries = []\n' >"$STATE/conf/registries.conf"
  export CONTAINERS_CONF="$STATE/conf/containers.conf"
  export CONTAINERS_STORAGE_CONF="$STATE/conf/storage.conf"
  export CONTAINERS_REGISTRIES_CONF="$STATE/conf/registries.conf"
}
# buildah keeps cache mounts and scratch layers in TMPDIR (else /var/tmp).
podman() { TMPDIR="$STATE/tmp" command podman "$@"; }

standin_current() {
  [ "$(podman image inspect --format '{{index .Labels "amity-mtls-proxy.standin"}}' "$1" 2>/dev/null)" = "$STANDIN_RECIPE" ]
}

# What gcr.io/distroless/cc-debian12:nonroot holds: glibc, libgcc_s, CA
# certificates, /etc/services, time zones, and the nonroot user 65532 with its
# home; no shell, no package manager. From the packages of this Debian release.
make_runtime_base() {
  standin_current "$RUNTIME_BASE" && return 0
  log "stand-in for $RUNTIME_BASE, from Debian's packages"
  local dir="$STATE/bases/runtime" r
  r="$dir/rootfs"
  rm -rf "$dir" && mkdir -p "$dir/debs" "$r"
  chmod 777 "$dir/debs" # apt's download sandbox user writes there
  local debs=(libc6 libgcc-s1 ca-certificates netbase tzdata)
  (cd "$dir/debs" && { apt-get download -q "${debs[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get download -q "${debs[@]}" >/dev/null; }; })
  for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$r"; done
  mkdir -p "$r/etc/ssl/certs" "$r/home/nonroot" "$r/root" "$r/tmp"
  # What ca-certificates' postinst would make: every root in one bundle.
  cat "$r"/usr/share/ca-certificates/mozilla/*.crt >"$r/etc/ssl/certs/ca-certificates.crt"
  printf '%s\n' root:x:0:0:root:/root:/sbin/nologin nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin \
    nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin >"$r/etc/passwd"
  printf '%s\n' root:x:0: nobody:x:65534: tty:x:5: staff:x:50: nonroot:x:65532: >"$r/etc/group"
  printf 'hosts: files dns\n' >"$r/etc/nsswitch.conf"
  chmod 1777 "$r/tmp" && chmod 700 "$r/root" "$r/home/nonroot"
  chown 65532:65532 "$r/home/nonroot"
  tar -C "$r" --numeric-owner -cf - . | podman import -q \
    --change "LABEL amity-mtls-proxy.standin=$STANDIN_RECIPE" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'USER 65532' --change 'WORKDIR /home/nonroot' - "$RUNTIME_BASE" >/dev/null
  rm -rf "$dir"
}

# What rust:<version>-slim-bookworm holds: a minimal bookworm with gcc and
# libc6-dev, rustup and the toolchain in /usr/local. The toolchain is this
# machine's (no download), which must be the Dockerfile's RUST_VERSION. This
# machine's extra CA certificates go in too, so that apt and cargo inside
# reach their servers through the same TLS-inspecting egress as the host.
make_build_base() {
  standin_current "$BUILD_BASE" && return 0
  local sysroot have dir r triple=x86_64-unknown-linux-gnu mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  sysroot="$(rustc --print sysroot)"
  have="$(rustc --version | cut -d' ' -f2)"
  case "$have" in
    "$RUST_VERSION" | "$RUST_VERSION".*) ;;
    *) echo "rustc here is $have; the Dockerfile wants $RUST_VERSION" >&2; return 1 ;;
  esac
  log "stand-in for $BUILD_BASE: debootstrap bookworm, with rustc $have from $sysroot"
  dir="$STATE/bases/build" r="$STATE/bases/build/rootfs"
  rm -rf "$dir" && mkdir -p "$dir"
  debootstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev \
    bookworm "$r" "$mirror" >"$dir/debootstrap.log" 2>&1 || {
    tail -20 "$dir/debootstrap.log" >&2
    return 1
  }
  # The image's sources: bookworm with its updates and security suites.
  rm -f "$r/etc/apt/sources.list"
  cat >"$r/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$r/usr/local/share/ca-certificates/"
    chroot "$r" update-ca-certificates >>"$dir/debootstrap.log" 2>&1
  fi
  mkdir -p "$r/usr/local/rustup/toolchains/$have-$triple" "$r/usr/local/cargo/bin"
  # Without rust-docs (800 MB), as rustup's minimal profile, which the image uses.
  tar -C "$sysroot" --exclude=./share/doc -cf - . | tar -C "$r/usr/local/rustup/toolchains/$have-$triple" -xf -
  cp -a "$(dirname "$(command -v rustup)")/." "$r/usr/local/cargo/bin/"
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' \
    "$have-$triple" >"$r/usr/local/rustup/settings.toml"
  chroot "$r" apt-get clean
  tar -C "$r" --numeric-owner -cf - . | podman import -q \
    --change "LABEL amity-mtls-proxy.standin=$STANDIN_RECIPE" \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV RUST_VERSION=$have" - "$BUILD_BASE" >/dev/null
  rm -rf "$dir"
}

# Every run: the Dockerfile's runtime stage, unchanged, around a binary built
# before. `--build-context build=DIR` stands in for the stage named `build`
# (BuildKit and buildah both let a named context override a stage of that
# name), so COPY --from=build takes DIR/out/amity-mtls-proxy and the build stage
# is skipped; beside it goes the SBOM that scripts/build-optimized.sh wrote beside
# the binary (made now for another binary), checked against the dependency list
# embedded in it. --full: the whole Dockerfile.
build_image() {
  local started=$SECONDS
  if [ -n "$FULL" ]; then
    log "podman build: the whole Dockerfile (build stage: scripts/build-optimized.sh)"
    podman build --pull=never --network host "${META[@]}" -f deploy/docker/Dockerfile -t "$IMAGE" .
  else
    [ -x "$BINARY" ] || { echo "no binary at $BINARY: run scripts/build-optimized.sh, or pass --binary" >&2; return 1; }
    log "podman build: the Dockerfile's runtime stage around $BINARY"
    rm -rf "$STATE/prebuilt" && mkdir -p "$STATE/prebuilt/out"
    cp "$BINARY" "$STATE/prebuilt/out/amity-mtls-proxy"
    # The SBOM the build wrote beside the binary, else one made now; either way
    # checked against the list embedded in the binary.
    if [ -f "$BINARY.cdx.json" ]; then
      cp "$BINARY.cdx.json" "$STATE/prebuilt/out/amity-mtls-proxy.cdx.json"
      bash scripts/supply-chain.sh verify "$BINARY" "$STATE/prebuilt/out/amity-mtls-proxy.cdx.json"
    else
      bash scripts/supply-chain.sh sbom "$BINARY" "$STATE/prebuilt/out/amity-mtls-proxy.cdx.json"
    fi
    podman build -q --pull=never --build-context "build=$STATE/prebuilt" "${META[@]}" \
      -f deploy/docker/Dockerfile -t "$IMAGE" . >/dev/null
    rm -rf "$STATE/prebuilt"
  fi
  podman image prune -f >/dev/null # the previous run's image, now untagged
  BUILD_SECONDS=$((SECONDS - started))
  IMAGE_SIZE="$(podman image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec)"
}

# --- helpers for the checks ---------------------------------------------------------

# As deploy/README.md's `docker run`: the image's own user, read-only root, no
# capabilities, no-new-privileges. Podman mounts tmpfs on /tmp and /run with
# --read-only, Docker does not: off, so that /tmp is as read-only as there.
run_hardened() {
  podman run --pull=never --read-only --read-only-tmpfs=false \
    --cap-drop ALL --security-opt no-new-privileges "$@"
}

# pick_port VAR: a free port on 127.0.0.1, none picked twice.
PICKED=" "
pick_port() {
  local p
  for p in $(shuf -i 20000-32000 -n 200); do
    case "$PICKED" in *" $p "*) continue ;; esac
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    PICKED+="$p "
    printf -v "$1" %s "$p"
    return
  done
  echo "no free port on 127.0.0.1" >&2
  return 1
}

# wait_for SECONDS COMMAND...: until COMMAND succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

admin() { curl -fsS --max-time 5 "http://127.0.0.1:$ADMIN_PORT$1"; }

# The serial of the certificate /certs reports as active.
active_serial() {
  admin /certs | python3 -c 'import json, sys
print(next((c["serial"] for c in json.load(sys.stdin) if c["role"] == "active"), ""))'
}

# Fetches a token through the proxy; prints the serial of the client
# certificate the stand-in saw (it echoes it in x-mock-client-serial).
token_serial() {
  local headers="$WORK/token.headers" body="$WORK/token.body" status
  status="$(curl -sS --max-time 10 -D "$headers" -o "$body" -w '%{http_code}' \
    -H "x-server-key: $SERVER_KEY" "http://127.0.0.1:$LISTEN_PORT/api/v3/authentication/token?userId=alice")" ||
    die "token call failed: curl could not reach the proxy on 127.0.0.1:$LISTEN_PORT"
  [ "$status" = 200 ] || die "token call answered $status: $(head -c 300 "$body")"
  # v3 answers the token as a JSON string.
  python3 -c 'import json, sys; t = json.load(open(sys.argv[1])); assert isinstance(t, str) and t' "$body" 2>/dev/null ||
    die "token call: no token in $(head -c 300 "$body")"
  tr -d '\r' <"$headers" | sed -n 's/^x-mock-client-serial: //Ip'
}

# rotated_from OLD WHAT: once /certs names another active serial than OLD (at
# most 15 s after WHAT), a token call shows the stand-in sees that one; prints it.
rotated_from() {
  local old=$1 new seen deadline=$((SECONDS + 15))
  until new="$(active_serial)" && [ -n "$new" ] && [ "$new" != "$old" ]; do
    [ $SECONDS -lt $deadline ] || die "/certs still names serial $old active 15 s after $2"
    sleep 0.2
  done
  seen="$(token_serial)"
  [ "$seen" = "$new" ] || die "/certs says serial $new is active, but the stand-in saw $seen"
  echo "$new"
}

# in_dev_home ARGS...: the image's CLI with the dev home (dev CA, certificates) mounted.
in_dev_home() {
  run_hardened --rm -v "$WORK/home:/home/nonroot" "$IMAGE" "$@" -c /home/nonroot/config.yaml
}

# new_client_cert NAME: key + CSR (`cert new`) and the dev CA's signature, in the
# dev home; prints nothing.
new_client_cert() {
  in_dev_home cert new --name "$1" >/dev/null 2>"$WORK/cert-new.err" || die "cert new: $(cat "$WORK/cert-new.err")"
  in_dev_home dev-ca sign --csr "/home/nonroot/certs/$1.csr" --out "/home/nonroot/certs/$1.crt" \
    >/dev/null 2>"$WORK/sign.err" || die "dev-ca sign: $(cat "$WORK/sign.err")"
}

# Every line a container wrote to stderr is a JSON object.
json_lines() {
  local what=$1 file=$2
  python3 - "$file" <<'EOF' || die "$what: stderr is not JSON lines (see $file)"
import json, sys
lines = [l for l in open(sys.argv[1], encoding="utf-8").read().splitlines() if l.strip()]
assert lines, "no log lines"
for n, line in enumerate(lines, 1):
    try:
        assert isinstance(json.loads(line), dict)
    except Exception:
        sys.exit(f"line {n} is not a JSON object: {line[:200]}")
EOF
}

# --- the checks, in order; each runs in a subshell with set -e --------------------

check_image() {
  local user
  user="$(podman image inspect --format '{{.Config.User}}' "$IMAGE")"
  [ "$user" = 65532:65532 ] || die "image user is '$user', not 65532:65532"
  run_hardened --rm --entrypoint /bin/sh "$IMAGE" -c true 2>/dev/null && die "the image has a shell"
  echo "   user $user, no shell, $IMAGE_SIZE, built in ${BUILD_SECONDS}s"
}

# The labels name this release and commit; the SBOM in the image is this
# binary's (its name and version, and the crates it is made of).
check_contents() {
  local label want c
  for label in version revision; do
    want=$VERSION
    [ $label = version ] || want=$REVISION
    [ "$(podman image inspect --format "{{index .Labels \"org.opencontainers.image.$label\"}}" "$IMAGE")" = "$want" ] ||
      die "label org.opencontainers.image.$label is not $want"
  done
  c="$(podman create "$IMAGE")"
  podman cp "$c:$SBOM" "$WORK/sbom.cdx.json" || { podman rm "$c" >/dev/null; die "no $SBOM in the image"; }
  podman rm "$c" >/dev/null
  python3 - "$WORK/sbom.cdx.json" "$VERSION" "$REVISION" <<'EOF' || die "$SBOM is not this binary's SBOM"
import json, sys
bom = json.load(open(sys.argv[1]))
root = bom["metadata"]["component"]
assert bom["bomFormat"] == "CycloneDX", bom.get("bomFormat")
assert (root["name"], root["version"]) == ("amity-mtls-proxy", sys.argv[2]), root
names = {c["name"] for c in bom["components"]}
assert {"rustls", "aws-lc-rs", "hyper", "tokio"} <= names, sorted(names)
print(f"   labels: version {sys.argv[2]}, revision {sys.argv[3][:12]}; SBOM: {len(bom['components'])} crates")
EOF
}

check_version() {
  local out
  out="$(run_hardened --rm "$IMAGE" --version)" || die "--version exited non-zero"
  [ "$out" = "amity-mtls-proxy $VERSION" ] || die "--version printed '$out', not 'amity-mtls-proxy $VERSION'"
  echo "   $out"
}

# As docker-compose.yaml's dev-certs service: makes the dev CA and the
# local-dev certificate in the dev home (owned by the image's user, as a new
# compose volume is) and checks the whole flow once, inside the container.
check_demo() {
  mkdir -p "$WORK/home"
  chown 65532:65532 "$WORK/home"
  # The repository's local default (what demo runs), on free ports.
  local listen admin amity
  pick_port listen && pick_port admin && pick_port amity
  sed -e "s|127.0.0.1:8080|127.0.0.1:$listen|; s|127.0.0.1:9901|127.0.0.1:$admin|" \
    -e "s|https://127.0.0.1:9443|https://127.0.0.1:$amity|" config.yaml >"$WORK/home/config.yaml"
  for port in "$listen" "$admin" "$amity"; do
    grep -q "127.0.0.1:$port" "$WORK/home/config.yaml" || die "config.yaml: listen, admin_listen or upstream.url changed; update this script"
  done
  in_dev_home demo --once --log-format json >"$WORK/demo.out" 2>"$WORK/demo.err" ||
    die "demo --once exited non-zero: $(tail -5 "$WORK/demo.err")"
  grep -q 'authentication/token?userId=demo-user -> 200 OK' "$WORK/demo.out" || die "demo --once did not fetch a token"
  json_lines "demo --once" "$WORK/demo.err"
  [ -f "$WORK/home/certs/local-dev.key" ] || die "demo --once left no certs/local-dev.key"
  echo "   dev CA and local-dev certificate made; token fetched; $(wc -l <"$WORK/demo.err") JSON log lines"
}

# docker-compose.yaml's topology with the host network: the stand-in Amity and
# the proxy in their own containers, on 127.0.0.1. The proxy runs as the
# README's `docker run`: the image's default command, a folder mounted
# read-only at /etc/amity-mtls-proxy holding docker/config.yaml (on 127.0.0.1
# ports) and the files it names. Its certs/ is a link to certs.1/ (see
# check_rotate_hup).
check_topology() {
  local etc="$WORK/etc"
  run_hardened -d --name "$MOCK" -v "$WORK/home:/home/nonroot:ro" "$IMAGE" \
    mock-amity --listen "127.0.0.1:$AMITY_PORT" -c /home/nonroot/config.yaml --log-format json >/dev/null
  mkdir -p "$etc/certs.1"
  ln -s certs.1 "$etc/certs"
  cp -p "$WORK"/home/certs/{dev-ca.crt,local-dev.crt,local-dev.key} "$etc/certs.1/"
  sed -e "s|0.0.0.0:8080|127.0.0.1:$LISTEN_PORT|; s|0.0.0.0:9901|127.0.0.1:$ADMIN_PORT|" \
    -e "s|https://127.0.0.1:9443|https://127.0.0.1:$AMITY_PORT|" deploy/docker/config.yaml >"$etc/config.yaml"
  for port in "$LISTEN_PORT" "$ADMIN_PORT" "$AMITY_PORT"; do
    grep -q "127.0.0.1:$port" "$etc/config.yaml" || die "deploy/docker/config.yaml: listen, admin_listen or upstream.url changed; update this script"
  done
  run_hardened -d --name "$PROXY" -v "$etc:/etc/amity-mtls-proxy:ro" "$IMAGE" >/dev/null
  wait_for 20 admin /healthz >/dev/null 2>&1 || die "the proxy did not answer /healthz: $(podman logs "$PROXY" 2>&1 | tail -5)"
  local seen active
  seen="$(token_serial)"
  active="$(active_serial)"
  [ -n "$seen" ] || die "the stand-in named no client certificate serial"
  [ "$seen" = "$active" ] || die "the stand-in saw serial $seen; /certs says the active one is $active"
  echo "$active" >"$WORK/serial.1"
  echo "   token through the proxy, client certificate serial $seen"
}

# Both containers run as 65532 with no capability at all, no-new-privileges
# and a read-only root, seen from the host in /proc, not from podman's word.
check_hardening() {
  local c pid
  for c in "$PROXY" "$MOCK"; do
    pid="$(podman inspect --format '{{.State.Pid}}' "$c")"
    [ "$pid" -gt 0 ] || die "$c is not running"
    awk '/^Uid:|^Gid:/ { for (i = 2; i <= 5; i++) if ($i != 65532) exit 1 }' "/proc/$pid/status" ||
      die "$c: $(grep -E '^(Uid|Gid):' "/proc/$pid/status" | tr '\n\t' '  ')"
    awk '/^Cap(Inh|Prm|Eff|Bnd|Amb):/ && $2 !~ /^0+$/ { exit 1 }' "/proc/$pid/status" ||
      die "$c has capabilities: $(grep ^Cap "/proc/$pid/status" | tr '\n\t' '  ')"
    grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$pid/status" || die "$c: no-new-privileges is off"
    awk '$5 == "/" { split($6, o, ","); if (o[1] != "ro") exit 1 }' "/proc/$pid/mountinfo" ||
      die "$c: the root filesystem is writable"
  done
  echo "   proxy and stand-in: uid/gid 65532, no capabilities, NoNewPrivs 1, / read-only"
}

check_readyz() {
  local body
  body="$(admin /readyz)" || die "/readyz did not answer 200: $(curl -sS "http://127.0.0.1:$ADMIN_PORT/readyz")"
  python3 -c 'import json, sys; assert json.loads(sys.argv[1])["ready"] is True' "$body" ||
    die "/readyz: $body"
  echo "   $body"
}

# The README's runbook: the next certificate's files are added to the mounted
# folder, then config.yaml is replaced with one that lists it as active. The
# proxy sees the change and reloads by itself.
check_rotate_files() {
  local etc="$WORK/etc" old new
  old="$(cat "$WORK/serial.1")"
  new_client_cert next
  cp -p "$WORK"/home/certs/next.{crt,key} "$etc/certs.1/"
  {
    sed '/^client_certs:/,$d' "$etc/config.yaml"
    printf 'client_certs:\n'
    for name in local-dev next; do
      printf '  - name: %s\n    cert: certs/%s.crt\n    key: certs/%s.key\n' "$name" "$name" "$name"
    done
    printf 'active: next\n'
  } >"$etc/config.yaml.new"
  mv "$etc/config.yaml.new" "$etc/config.yaml"
  new="$(rotated_from "$old" "the files changed")"
  echo "$new" >"$WORK/serial.2"
  echo "   reloaded by itself: the stand-in now sees serial $new (was $old)"
}

# `next` re-issued under the same name, in a new folder certs.2; the certs link
# is swapped to it in one rename. The file watch follows only config.yaml, the
# files it names and Kubernetes' `..` links, not this link, so the new
# certificate is presented only once SIGHUP makes the proxy reload.
check_rotate_hup() {
  local etc="$WORK/etc" old new
  old="$(cat "$WORK/serial.2")"
  rm -f "$WORK"/home/certs/next.*
  new_client_cert next
  cp -a "$etc/certs.1" "$etc/certs.2"
  cp -p "$WORK"/home/certs/next.{crt,key} "$etc/certs.2/"
  ln -s certs.2 "$etc/certs.new" && mv -T "$etc/certs.new" "$etc/certs"
  podman kill --signal HUP "$PROXY" >/dev/null
  new="$(rotated_from "$old" SIGHUP)"
  podman logs "$PROXY" 2>&1 | grep '"trigger":"SIGHUP"' | grep -q "serial $new" ||
    die "no log line of a reload by SIGHUP presenting serial $new"
  [ "$(podman inspect --format '{{.State.Running}}' "$PROXY")" = true ] || die "the proxy is not running after SIGHUP"
  echo "   reloaded on SIGHUP: the stand-in now sees serial $new (was $old)"
}

# SIGTERM to PID 1: the proxy drains and exits 0 before podman's SIGKILL.
check_stop() {
  local started code ms
  started="$(date +%s%N)"
  podman stop --time "$STOP_GRACE" "$PROXY" >/dev/null
  ms=$((($(date +%s%N) - started) / 1000000))
  code="$(podman inspect --format '{{.State.ExitCode}}' "$PROXY")"
  [ "$code" = 0 ] || die "the proxy exited $code after podman stop (137: killed when the grace period ran out)"
  [ "$ms" -lt $((STOP_GRACE * 1000)) ] || die "podman stop took ${ms} ms, the whole grace period"
  grep -q '"message":"SIGTERM received"' <(podman logs "$PROXY" 2>&1) || die "the proxy logged no SIGTERM"
  podman stop --time "$STOP_GRACE" "$MOCK" >/dev/null
  echo "   SIGTERM logged, exit 0 after $ms ms (grace period ${STOP_GRACE} s)"
}

check_json_logs() {
  local c lines=0
  for c in "$PROXY" "$MOCK"; do
    podman logs "$c" >"$WORK/$c.out" 2>"$WORK/$c.err"
    json_lines "$c" "$WORK/$c.err"
    [ ! -s "$WORK/$c.out" ] || die "$c wrote to stdout: $(head -c 200 "$WORK/$c.out")"
    lines=$((lines + $(wc -l <"$WORK/$c.err")))
  done
  echo "   $lines lines from the proxy and the stand-in, each a JSON object"
}

# --- run ---------------------------------------------------------------------------

RESULTS=()
PASSED=" "
FAILED=()
# run_check NAME [NEEDS]: runs check_NAME, unless check NEEDS did not pass.
run_check() {
  local name=$1 needs=${2:-} rc
  if [ -n "$needs" ] && [[ "$PASSED" != *" $needs "* ]]; then
    RESULTS+=("skip  $name (needs $needs)")
    return
  fi
  log "check: $name"
  rm -f "$WORK/reason"
  set +e
  (set -e; "check_$name")
  rc=$?
  set -e
  if [ $rc -eq 0 ]; then
    RESULTS+=("pass  $name")
    PASSED+="$name "
  else
    local reason="exited $rc (a command failed; its output is above)"
    [ ! -s "$WORK/reason" ] || reason="$(head -c 300 "$WORK/reason" | tr '\n' ' ')"
    RESULTS+=("FAIL  $name: $reason")
    FAILED+=("$name")
  fi
}

STEP="installing podman"
cleanup() {
  local rc=$?
  [ $rc -eq 0 ] || [ -z "$STEP" ] || echo "deploy/container.sh: failed: $STEP" >&2
  if [ -n "$KEEP" ]; then
    echo "kept: containers $MOCK and $PROXY, files in $WORK (CONTAINERS_CONF=${CONTAINERS_CONF:-} CONTAINERS_STORAGE_CONF=${CONTAINERS_STORAGE_CONF:-})"
    return
  fi
  [ -z "${CONTAINERS_CONF:-}" ] || podman rm -f -t 0 "$MOCK" "$PROXY" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}

started=$SECONDS
trap cleanup EXIT
install_tools
configure_podman
mkdir -p "$WORK"
STEP="the stand-in base images"
make_runtime_base
[ -z "$FULL" ] || make_build_base
STEP="podman build"
build_image
pick_port LISTEN_PORT && pick_port ADMIN_PORT && pick_port AMITY_PORT
STEP="" # from here on, the summary names what failed

run_check image
run_check contents
run_check version
run_check demo
run_check topology demo
run_check hardening topology
run_check readyz topology
run_check rotate_files topology
run_check rotate_hup rotate_files
run_check stop topology
run_check json_logs topology

printf '\n== deploy/container.sh: %s, image %s (%s), %ss in all\n' \
  "$([ -n "$FULL" ] && echo "whole Dockerfile" || echo "runtime stage around $BINARY")" \
  "$IMAGE" "$IMAGE_SIZE" "$((SECONDS - started))"
printf '   %s\n' "${RESULTS[@]}"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "deploy/container.sh: failed: ${FAILED[*]}" >&2
  exit 1
fi
echo "deploy/container.sh: every check passed"
