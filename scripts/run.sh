#!/usr/bin/env bash
# Quick start: installs what is needed, builds, and starts portlens on its defaults.
# Extra arguments are passed to `portlens trace`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
exec "${PORTLENS_BUILD_DIR:-$root/build}/portlens" trace "$@"
