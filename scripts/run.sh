#!/usr/bin/env bash
# Quick start: installs what is needed, builds, and starts the portlens agent on its defaults
# (metrics on :10130/metrics, local API on /run/portlens/api.sock). Extra arguments are passed
# to `portlens agent`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
exec "${PORTLENS_BUILD_DIR:-$root/build}/portlens" agent "$@"
