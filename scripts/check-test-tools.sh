#!/usr/bin/env bash
# Check that every program from outside the Rust build that the services tier
# (tests/services/ and crates/floodgate-load/tests/services/), the deployment validation
# (scripts/validate-deploy.sh) and the image test (scripts/test-image.sh) use is installed.
# Prints each one found; for each one missing, what needs it and the command that installs
# it; exits 1 if any is missing. scripts/test.sh runs it before compiling anything.
#
#   scripts/check-test-tools.sh
#
# Looks on PATH after sourcing scripts/tools-env.sh (so also under
# ${FLOODGATE_TOOLS:-~/.cache/floodgate-tools}, where scripts/install-test-tools.sh puts the
# tools that are not Debian packages).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/tools-env.sh
. "$ROOT/scripts/tools-env.sh"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo "
fi
INSTALL_ALL="scripts/install-test-tools.sh"
VENV="$FLOODGATE_TOOLS/venv"

missing=0

found() { printf '  ok       %-22s %s\n' "$1" "$2"; }
# lacking NAME WHAT-NEEDS-IT INSTALL-COMMAND
lacking() {
  missing=$((missing + 1))
  printf '  MISSING  %-22s needed by %s\n' "$1" "$2"
  printf '           %-22s install: %s\n' "" "$3"
}

# program NAME WHAT-NEEDS-IT INSTALL-COMMAND: NAME on PATH, executable (bash's `command -v`
# also names a file that is not).
program() {
  local path
  if path="$(command -v "$1")" && [ -x "$path" ] && [ -f "$path" ]; then
    found "$1" "$path"
  else
    lacking "$@"
  fi
}

# deb NAME PACKAGE WHAT-NEEDS-IT: a program from a Debian package.
deb() { program "$1" "$3" "${SUDO}apt-get install $2"; }

# tools NAME WHAT-NEEDS-IT: a program scripts/install-test-tools.sh installs under FLOODGATE_TOOLS.
tools() { program "$1" "$2" "$INSTALL_ALL"; }

echo "Programs from outside the Rust build (scripts/test.sh needs every one):"

deb redis-server redis-server "tests/services (redis, prometheus), floodgate-load tests/services (redis)"
initdb=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n1)
if [ -n "$initdb" ] && id postgres >/dev/null 2>&1; then
  found "postgresql" "$(dirname "$initdb")"
else
  lacking "postgresql" "tests/services (postgres): /usr/lib/postgresql/<version>/bin and the postgres user" \
    "${SUDO}apt-get install postgresql"
fi
deb prometheus prometheus "tests/services (prometheus), floodgate-load tests/services (live_metrics), scripts/test-image.sh"
deb promtool prometheus "tests/services (prometheus), scripts/validate-deploy.sh"
deb chromium chromium "tests/services (browser), floodgate-load tests/services (browser)"
if [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  found "fonts-dejavu-core" "/usr/share/fonts/truetype/dejavu"
else
  lacking "fonts-dejavu-core" "the browser tests' screenshots" "${SUDO}apt-get install fonts-dejavu-core"
fi
deb curl curl "tests/services (clients), scripts/test-image.sh"
deb python3 python3 "tests/services (prometheus: scripts/check-dashboard-queries.py), floodgate-load tests/services (live_metrics: the same), scripts/test-image.sh"
deb podman podman "scripts/test-image.sh"
deb runc runc "scripts/test-image.sh"
deb docker-compose docker-compose "scripts/validate-deploy.sh"
deb node nodejs "scripts/validate-deploy.sh (scripts/validate-crds.mjs)"

tools rotel-agent "tests/services (collector), floodgate-load tests/services (live_metrics)"
tools helm "tests/services (chart), scripts/validate-deploy.sh"
tools k6 "tests/services (clients)"
tools st "tests/services (schemathesis)"
tools kubernetes-validate "scripts/validate-deploy.sh"
tools yamllint "scripts/validate-deploy.sh"
tools hadolint "scripts/validate-deploy.sh"

# The test tools' Python and the client libraries the tests import from it.
if [ -x "$VENV/bin/python" ]; then
  found "tools venv" "$VENV"
  modules=(websockets grpc grpc_health grpc_reflection playwright yaml jsonschema)
  absent=()
  for module in "${modules[@]}"; do
    "$VENV/bin/python" -c "import $module" >/dev/null 2>&1 || absent+=("$module")
  done
  if [ "${#absent[@]}" -eq 0 ]; then
    found "python modules" "${modules[*]}"
  else
    lacking "python modules" "tests/services (clients, browser), scripts/validate-deploy.sh: ${absent[*]}" \
      "$INSTALL_ALL"
  fi
else
  lacking "tools venv" "tests/services (clients, browser), floodgate-load tests/services (browser), scripts/validate-deploy.sh: $VENV" \
    "$INSTALL_ALL"
fi

# The custom-resource models, exactly as scripts/crd-models/package-lock.json pins them.
if [ -d "$FLOODGATE_TOOLS/npm/node_modules/@kubernetes-models" ] \
  && cmp -s "$ROOT/scripts/crd-models/package-lock.json" "$FLOODGATE_TOOLS/npm/package-lock.json"; then
  found "npm models" "$FLOODGATE_TOOLS/npm/node_modules"
else
  lacking "npm models" "scripts/validate-deploy.sh: $FLOODGATE_TOOLS/npm, as scripts/crd-models/package-lock.json pins them" \
    "$INSTALL_ALL"
fi

if [ "$missing" -gt 0 ]; then
  printf '%d missing; install every test tool with: %s\n' "$missing" "$INSTALL_ALL" >&2
  exit 1
fi
echo "all present"
