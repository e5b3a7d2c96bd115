#!/usr/bin/env bash
# The ctest test mixin.rendered: renders the mixin into a temporary directory and fails when a
# checked-in file differs from its rendering (someone edited a rendered file, or changed the
# mixin without running render.sh).
#
#   dashboards/mixin/check_rendered.sh [SOURCE_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=${1:-$(cd "$here/../.." && pwd)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$here/render.sh" "$tmp" >/dev/null
status=0
count=0
while IFS= read -r -d '' file; do
  rel=${file#"$tmp"/}
  count=$((count + 1))
  if ! diff -u --label "$rel (checked in)" --label "$rel (rendered)" "$src/$rel" "$file"; then
    echo "mixin.rendered: $rel differs from the mixin's rendering: run dashboards/mixin/render.sh" >&2
    status=1
  fi
done < <(find "$tmp" -type f -print0 | sort -z)
if [ "$count" -eq 0 ]; then
  echo "mixin.rendered: render.sh wrote nothing" >&2
  exit 1
fi
[ "$status" -eq 0 ] && echo "mixin.rendered: $count files equal their rendering"
exit "$status"
