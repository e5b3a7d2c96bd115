#!/usr/bin/env bash
# Renders the portlens mixin into the files checked in next to it:
#   dashboards/portlens-overview.json, dashboards/alerts/portlens.rules.yml,
#   deploy/kubernetes/base/prometheusrule.yaml, deploy/kubernetes/base/dashboard-configmap.yaml
#
#   dashboards/mixin/render.sh            # writes them in this source tree
#   dashboards/mixin/render.sh OUTDIR     # writes them under OUTDIR instead (same relative paths)
#
# Needs jsonnet (Debian package jsonnet) and PyYAML (python3-yaml); scripts/install-deps.sh
# installs both. The ctest test mixin.rendered renders into a temporary directory and fails when
# the checked-in files differ.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$(cd "$here/../.." && pwd)}
if ! command -v jsonnet >/dev/null; then
  echo "render.sh: jsonnet not found: run scripts/install-deps.sh (Debian package jsonnet)" >&2
  exit 1
fi
json=$(jsonnet -J "$here" "$here/render.jsonnet")
printf '%s' "$json" | /usr/bin/python3 "$here/render.py" "$out"
