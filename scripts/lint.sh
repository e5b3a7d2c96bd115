#!/usr/bin/env bash
# Format and lint checks: clang-format on every C/C++ file we write (bpf/ in kernel style,
# bpf/include/ generated and excluded), clang-tidy on the C++ sources.
# usage: scripts/lint.sh [format|tidy|layers|all] [BUILD_DIR]   (BUILD_DIR holds compile_commands.json)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
what=${1:-all}
build=${2:-${PORTLENS_BUILD_DIR:-$root/build}}
cd "$root"

cxx_files() { git ls-files -- 'agent/*.cpp' 'agent/*.hpp' 'exporters/*.cpp' 'exporters/*.hpp' \
  'tests/*.cpp' 'tests/*.hpp' 'bench/*.cpp' 'bench/*.hpp'; }
bpf_files() { git ls-files -- 'bpf/*.c' 'bpf/*.h' | grep -v '^bpf/include/'; }

status=0
if [ "$what" = layers ] || [ "$what" = all ]; then
  # The pure layers never include libbpf or netlink headers (kernel/ headers stop the build on
  # their own: agent/kernel/kernel_only.hpp; links are checked by cmake/Layers.cmake).
  pure='agent/model agent/diagnose agent/tracker agent/live agent/render exporters tests/unit :(exclude)tests/unit/host'
  # shellcheck disable=SC2086
  if git ls-files -- $pure | grep -E '\.(c|h)pp$' | xargs grep -nE '#include <(bpf|libmnl|linux/(netlink|sock_diag|inet_diag))' ; then
    echo "lint: a pure layer includes a kernel library header (above); move that code to agent/kernel/" >&2
    status=1
  fi
fi
if [ "$what" = format ] || [ "$what" = all ]; then
  # shellcheck disable=SC2046
  if ! clang-format --dry-run -Werror $(cxx_files) $(bpf_files); then
    echo "lint: formatting differs; run: clang-format -i \$(git ls-files '*.cpp' '*.hpp' 'bpf/*.c' 'bpf/*.h' | grep -v bpf/include)" >&2
    status=1
  fi
fi
if [ "$what" = tidy ] || [ "$what" = all ]; then
  if [ ! -f "$build/compile_commands.json" ]; then
    echo "lint: $build/compile_commands.json missing; build first (scripts/build.sh)" >&2
    exit 1
  fi
  mapfile -t sources < <(cxx_files | grep '\.cpp$')
  # One clang-tidy per core; headers are checked through the sources that include them. GCC-only
  # flags in compile_commands.json (-Wno-restrict, see CMakeLists.txt) are unknown to clang.
  if ! printf '%s\n' "${sources[@]}" | xargs -P "$(nproc)" -n 4 clang-tidy -p "$build" --quiet \
      --extra-arg=-Wno-unknown-warning-option 2>/dev/null; then
    echo "lint: clang-tidy found problems (see above)" >&2
    status=1
  fi
fi
exit $status
