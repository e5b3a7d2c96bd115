#!/usr/bin/env bash
# Runs every libFuzzer harness built in BUILD (scripts/sanitize.sh builds them: PORTLENS_FUZZ=ON)
# for PORTLENS_FUZZ_SECONDS each (default 40), starting from a copy of its checked-in corpus
# (tests/fuzz/corpus/NAME), so the tree is never written to. A crash, a leak, a timeout or a
# sanitizer report fails the run; the input that caused it is left in $PORTLENS_FUZZ_ARTIFACTS
# (default: a temp dir, printed) to be added to the corpus and turned into a unit test.
#   scripts/fuzz.sh BUILD [NAME...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: scripts/fuzz.sh BUILD [NAME...] (BUILD configured with -DPORTLENS_FUZZ=ON)}
shift
seconds=${PORTLENS_FUZZ_SECONDS:-40}
case $seconds in '' | *[!0-9]*) echo "fuzz: PORTLENS_FUZZ_SECONDS must be a whole number of seconds" >&2; exit 2 ;; esac
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for dir in "$root"/tests/fuzz/corpus/*/; do names+=("$(basename "$dir")"); done
fi
work=$(mktemp -d /tmp/portlens-fuzz.XXXXXX)
artifacts=${PORTLENS_FUZZ_ARTIFACTS:-$work/artifacts}
mkdir -p "$artifacts"
status=0
for name in "${names[@]}"; do
  bin="$build/tests/fuzz/${name}_fuzzer"
  if [ ! -x "$bin" ]; then
    echo "fuzz: $bin is not built; build BUILD with -DPORTLENS_FUZZ=ON (scripts/sanitize.sh)" >&2
    exit 2
  fi
  corpus="$work/corpus/$name"
  mkdir -p "$corpus"
  cp "$root/tests/fuzz/corpus/$name"/* "$corpus"/
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: one using over 2 GiB a leak
  # or a blow-up; both count as findings.
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$artifacts/$name-" "$corpus" >"$work/$name.log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$name.log" | grep -o '[0-9]*$' || true)
    echo "fuzz: $name: ${runs:-?} inputs in ${seconds} s, corpus $(ls "$corpus" | wc -l) files, no finding"
  else
    echo "fuzz: $name FOUND A PROBLEM; the input is in $artifacts, the log follows" >&2
    tail -n 60 "$work/$name.log" >&2
    status=1
  fi
done
if [ $status -eq 0 ] && [ -z "${PORTLENS_FUZZ_ARTIFACTS:-}" ]; then
  rm -rf "$work"
fi
exit $status
