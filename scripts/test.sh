#!/usr/bin/env bash
# Run every test, in both tiers: formatting and lints; the in-process tier (`cargo test
# --workspace`: the unit tests, tests/api/ and the load client's tests/load/, which need
# nothing but the Rust build); the services tier (`cargo test --workspace --test services`:
# tests/services/ and crates/floodgate-load/tests/services/, which run Redis, PostgreSQL,
# Prometheus, the rotel collector, Chromium, Python and k6 clients, curl, schemathesis and
# Helm); then the deployment validation (Helm, Kubernetes and CRD schemas, promtool,
# hadolint, dashboards), and the container image built from the Dockerfile's runtime stage
# and run with podman (scripts/test-image.sh; it says SKIP where podman cannot run).
#
# Missing tools are installed by scripts/install-test-tools.sh (apt-get and a venv under
# ${FLOODGATE_TOOLS:-~/.cache/floodgate-tools}) while the in-process tier runs; set
# FLOODGATE_NO_INSTALL=1 to skip that. scripts/check-test-tools.sh then checks that every
# program the services tier and the deployment checks need is there, and fails naming each
# one missing with the command that installs it (with FLOODGATE_NO_INSTALL=1, before
# anything is compiled). Each step's time is printed when it ends, and all of them at the
# end.
set -euo pipefail
cd "$(dirname "$0")/.."

# step NAME: end the current step (printing its time) and start NAME.
current=""
started=0
times=()
end_step() { # [STATUS]
  [[ -n "$current" ]] || return 0
  local took=$((SECONDS - started)) outcome=""
  [[ "${1:-0}" -eq 0 ]] || outcome=" (failed)"
  times+=("$(printf '%4dm%02ds  %s%s' $((took / 60)) $((took % 60)) "$current" "$outcome")")
  printf '<== %s: %dm%02ds%s\n' "$current" $((took / 60)) $((took % 60)) "$outcome"
  current=""
}
step() {
  end_step
  current="$*"
  started=$SECONDS
  printf '\n==> %s\n' "$*"
}
finish() {
  local status=$?
  end_step "$status"
  # A failure before the tools were waited for: let the installation finish rather than
  # leave apt or pip half done.
  if [[ -n "${install_pid:-}" ]]; then
    wait "$install_pid" 2>/dev/null || true
  fi
  if [[ "${#times[@]}" -gt 0 ]]; then
    printf '\n==> time per step (%dm%02ds in all)\n' $((SECONDS / 60)) $((SECONDS % 60))
    printf '%s\n' "${times[@]}"
  fi
  exit "$status"
}
trap finish EXIT

# The tools are installed while the in-process tier compiles and runs, which needs none of
# them: installing is mostly waiting on the network and the disk, compiling on the CPU.
install_pid=""
install_log=""
if [[ -z "${FLOODGATE_NO_INSTALL:-}" ]]; then
  install_log=$(mktemp)
  step "install the test tools in the background (scripts/install-test-tools.sh, log: $install_log)"
  scripts/install-test-tools.sh >"$install_log" 2>&1 &
  install_pid=$!
else
  # Nothing to wait for: the missing are named before anything is compiled.
  step "test tools present (scripts/check-test-tools.sh)"
  scripts/check-test-tools.sh
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets, --test services -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --locked --test services -- -D warnings

step "cargo test --workspace (the in-process tier)"
cargo test --workspace --locked

if [[ -n "$install_pid" ]]; then
  step "the test tools installed (scripts/install-test-tools.sh)"
  install_status=0
  wait "$install_pid" || install_status=$?
  cat "$install_log"
  [[ "$install_status" -eq 0 ]] || { echo "installing the test tools failed" >&2; exit "$install_status"; }
  step "test tools present (scripts/check-test-tools.sh)"
  scripts/check-test-tools.sh
fi
# shellcheck source=scripts/tools-env.sh
. scripts/tools-env.sh

step "cargo test --workspace --test services (the services tier)"
cargo test --workspace --locked --test services

step "deployment validation"
scripts/validate-deploy.sh

step "container image: the Dockerfile's runtime stage built and run with podman"
# With the binary the tests above ran (tests/api starts it): the image test checks the
# runtime stage and the container, not the build's speed or size (the published build is
# scripts/release-build.sh, which the Dockerfile runs and which bounds the binary's size).
scripts/test-image.sh "${CARGO_TARGET_DIR:-target}/debug/floodgate"
