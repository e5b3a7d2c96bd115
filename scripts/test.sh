#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test: unit tests, kernel tests (BPF loaded
# for real, in private network namespaces; root needed), the lint checks, then the sanitizer
# build (scripts/sanitize.sh: the unit tests under ASan+UBSan, and each fuzzer for a bounded
# time). PORTLENS_REQUIRE_BPF=1 turns a kernel test that cannot load BPF into a failure (CI sets
# it). PORTLENS_SKIP_SANITIZERS=1 leaves the sanitizer build out (a quicker local run); arguments
# go to ctest, and with any the sanitizer build is left out too.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${PORTLENS_BUILD_DIR:-$root/build}
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
status=0
(cd "$build" && ctest --output-on-failure --timeout 600 "$@") || status=$?
if [ "${PORTLENS_SKIP_SANITIZERS:-0}" != 1 ] && [ $# -eq 0 ]; then
  "$root/scripts/sanitize.sh" || status=1
fi
exit $status
