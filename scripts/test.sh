#!/usr/bin/env bash
# Run every test: formatting and lints, the Rust suites (unit tests and the integration
# suite, which starts real Prometheus and OpenTelemetry collectors), then the deployment
# validation (Helm, Kubernetes and CRD schemas, promtool, hadolint, dashboards), and the
# container image built from the Dockerfile's runtime stage and run with podman
# (scripts/test-image.sh; it says SKIP where podman cannot run).
#
# Missing tools are installed first by scripts/install-test-tools.sh (apt-get and a venv
# under ${FLOODGATE_TOOLS:-~/.cache/floodgate-tools}); set FLOODGATE_NO_INSTALL=1 to skip that.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${FLOODGATE_NO_INSTALL:-}" ]]; then
  scripts/install-test-tools.sh
fi
# shellcheck source=scripts/tools-env.sh
. scripts/tools-env.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --locked --test services -- -D warnings

step "cargo test --workspace"
cargo test --workspace --locked

step "cargo test --workspace --test services"
cargo test --workspace --locked --test services

step "deployment validation"
scripts/validate-deploy.sh

step "container image: the Dockerfile's runtime stage built and run with podman"
# The ci profile: the release profile without whole-program optimisation, for a test of
# behaviour (the published build is scripts/release-build.sh, which the Dockerfile runs).
cargo build --profile ci --locked --bin floodgate
scripts/test-image.sh "${CARGO_TARGET_DIR:-target}/ci/floodgate"
