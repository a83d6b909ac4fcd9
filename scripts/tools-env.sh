# shellcheck shell=bash
# Source this file to put the deployment test tools on PATH:
#
#   . scripts/tools-env.sh
#
# The tools are installed by scripts/install-test-tools.sh under
# ${FLOODGATE_TOOLS:-$HOME/.cache/floodgate-tools}.
FLOODGATE_TOOLS="${FLOODGATE_TOOLS:-$HOME/.cache/floodgate-tools}"
export FLOODGATE_TOOLS
case ":$PATH:" in
  *":$FLOODGATE_TOOLS/bin:"*) ;;
  *) PATH="$FLOODGATE_TOOLS/bin:$FLOODGATE_TOOLS/venv/bin:$PATH" ;;
esac
export PATH
