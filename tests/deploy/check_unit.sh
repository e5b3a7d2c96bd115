#!/bin/sh
# Checks deploy/systemd/portlens.service with systemd's own tools; no privileges needed.
#   check_unit.sh BINARY UNIT
# 1. `systemd-analyze verify` must say nothing at all. It insists that ExecStart='s binary exists,
#    so it checks a copy whose ExecStart= points at the built BINARY instead of /usr/sbin.
# 2. `systemd-analyze security --offline=true` must rate the unit's exposure at most
#    MAX_EXPOSURE (3.1 when written: what remains is root, SYS_ADMIN, the host network and /proc).
set -eu

MAX_EXPOSURE=3.5
binary=$1
unit=$2

fail() {
  echo "check_unit: $*" >&2
  exit 1
}

command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (Debian package systemd)"
[ -x "$binary" ] || fail "$binary is not built"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sed "s#^ExecStart=/usr/sbin/portlens #ExecStart=$binary #" "$unit" >"$tmp/portlens.service"
grep -q "^ExecStart=$binary agent " "$tmp/portlens.service" ||
  fail "$unit: no 'ExecStart=/usr/sbin/portlens agent ...' line to check"

status=0
out=$(cd "$tmp" && systemd-analyze verify ./portlens.service 2>&1) || status=$?
if [ "$status" -ne 0 ] || [ -n "$out" ]; then
  fail "systemd-analyze verify (exit $status) is not clean:
$out"
fi

report=$(systemd-analyze security --offline=true "$tmp/portlens.service" 2>&1) ||
  fail "systemd-analyze security failed:
$report"
score=$(echo "$report" | sed -n 's/.*Overall exposure level for portlens\.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "no exposure level in:
$report"
awk -v s="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(s <= max) }' ||
  fail "exposure level $score is above $MAX_EXPOSURE: a sandboxing line was lost?
$report"
echo "check_unit: systemd-analyze verify is clean; exposure level $score (at most $MAX_EXPOSURE)"
