#!/usr/bin/env bash
# The sanitizer build: the unit, host and HTTP tests built with clang under AddressSanitizer and
# UndefinedBehaviorSanitizer into build-sanitize/ (or $PORTLENS_SANITIZE_BUILD_DIR) and run, then
# every libFuzzer harness of tests/fuzz run for a bounded time (scripts/fuzz.sh). Any report of
# either sanitizer, any leak, and any fuzzer crash fails it. scripts/test.sh runs it after ctest.
#   PORTLENS_FUZZ_SECONDS   seconds per harness (default 40; 5 harnesses)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${PORTLENS_SANITIZE_BUILD_DIR:-$root/build-sanitize}

"$root/scripts/install-deps.sh"
# Debug info and -O1: readable reports at a speed the tests' timeouts allow.
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DPORTLENS_SANITIZE=ON -DPORTLENS_FUZZ=ON -DPORTLENS_HARDENING=OFF >/dev/null
tests=(portlens_unit_tests portlens_host_tests portlens_http_tests)
cmake --build "$build" -j"$(nproc)" --target "${tests[@]}" fuzzers

# halt_on_error: the first report ends the run (UBSan's are fatal by -fno-sanitize-recover).
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in "${tests[@]}"; do
  bin=$(find "$build/tests" -type f -name "$t" -perm -u+x | head -n1)
  echo "sanitize: $t"
  # gtest's brief output: failures and the summary, not 800 lines of OK.
  if ! "$bin" --gtest_brief=1; then
    echo "sanitize: $t FAILED under ASan+UBSan" >&2
    status=1
  fi
done
if ! "$root/scripts/fuzz.sh" "$build"; then
  status=1
fi
exit $status
