#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test: unit tests, kernel tests (BPF loaded
# for real, in private network namespaces; root needed) and the lint checks.
# PORTLENS_REQUIRE_BPF=1 turns a kernel test that cannot load BPF into a failure (CI sets it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${PORTLENS_BUILD_DIR:-$root/build}
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
cd "$build"
ctest --output-on-failure --timeout 600 "$@"
