#!/bin/sh
# Builds the Debian package from a finished build and checks what is in it.
#   check_package.sh BUILD_DIR
# cpack writes into a temporary directory (the build directory keeps no package), then:
# dpkg-deb -c for the files and their modes, -f for the control fields (Depends must name
# real runtime packages, and cover every library the binary links), -I for conffiles and
# maintainer scripts, and -x to run the packaged binary.
set -eu

build=$1

fail() {
  echo "check_package: $*" >&2
  exit 1
}

for tool in cpack dpkg-deb readelf ldd; do
  command -v "$tool" >/dev/null || fail "$tool is missing (Debian packages cmake, dpkg, binutils, libc-bin)"
done
[ -f "$build/CPackConfig.cmake" ] || fail "$build/CPackConfig.cmake missing: configure with cmake first"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/out" >"$tmp/cpack.log" 2>&1 ||
  fail "cpack failed:
$(cat "$tmp/cpack.log")"
set -- "$tmp"/out/portlens_*.deb
if [ $# -ne 1 ] || [ ! -f "$1" ]; then
  fail "expected one portlens_*.deb, got: $*"
fi
deb=$1
arch=$(dpkg --print-architecture)
case "$deb" in
  */portlens_*_"$arch".deb) ;;
  *) fail "unexpected file name $(basename "$deb") (want portlens_VERSION_$arch.deb)" ;;
esac

# Files, as "mode owner path".
dpkg-deb -c "$deb" | awk '{ print $1, $2, $6 }' >"$tmp/contents"
has() { # MODE PATH
  grep -qx -- "$1 root/root $2" "$tmp/contents" || fail "the package lacks $2 with mode $1:
$(cat "$tmp/contents")"
}
has -rwxr-xr-x ./usr/sbin/portlens
has -rw-r--r-- ./lib/systemd/system/portlens.service
has -rw-r--r-- ./etc/default/portlens
has -rw-r--r-- ./usr/share/portlens/dashboards/portlens-overview.json
has -rw-r--r-- ./usr/share/portlens/provisioning/dashboards.yaml
has -rw-r--r-- ./usr/share/portlens/provisioning/datasource.yaml
has -rw-r--r-- ./usr/share/portlens/alerts/portlens.rules.yml
has -rw-r--r-- ./usr/share/doc/portlens/README.md
has -rw-r--r-- ./usr/share/doc/portlens/runbook.md
# Nothing else: no test files, no stray directories, everything root's.
unexpected=$(awk '$3 !~ /^\.\/(usr\/sbin|usr\/share\/portlens|usr\/share\/doc\/portlens|lib\/systemd\/system|etc\/default)?\/?/ || $3 ~ /test/ || $2 != "root/root"' "$tmp/contents")
[ -z "$unexpected" ] || fail "unexpected entries:
$unexpected"

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = portlens ] || fail "Package: $(field Package)"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture)"
[ "$(field Section)" = net ] || fail "Section: $(field Section)"
[ -n "$(field Maintainer)" ] || fail "no Maintainer"
[ -n "$(field Description)" ] || fail "no Description"
version=$(field Version)
depends=$(field Depends)
names=$(echo "$depends" | tr ',' '\n' | sed 's/(.*//; s/|.*//; s/ //g')
# Each dependency is a package installed here (the binary was built and runs here), or provided
# by one (libspdlog1.10-fmt9 is), and none is a -dev package.
dpkg-query -W -f='${Package} ${Provides}\n' | tr -d ',' >"$tmp/installed"
for pkg in $names; do
  case "$pkg" in *-dev) fail "Depends names a -dev package: $pkg" ;; esac
  awk -v p="$pkg" '{ for (i = 1; i <= NF; i++) if ($i == p) found = 1 } END { exit !found }' \
    "$tmp/installed" || fail "Depends names $pkg, which no installed package is or provides"
done
for lib in libc6 libstdc++6 libbpf1 libmicrohttpd12 libgnutls30 libcrypt1 libyaml-cpp0.7 zlib1g \
  libfmt9 libmnl0 libprometheus-cpp-core1.0; do
  echo "$names" | grep -qx "$lib" || fail "Depends lacks $lib: $depends"
done

# Control archive: the conffile, and the maintainer scripts, executable.
dpkg-deb -I "$deb" conffiles | grep -qx /etc/default/portlens || fail "/etc/default/portlens is not a conffile"
dpkg-deb --ctrl-tarfile "$deb" | tar -tvf - >"$tmp/control"
for script in postinst prerm postrm; do
  grep -q -- "^-rwxr-xr-x .* \./$script$" "$tmp/control" || fail "no executable $script:
$(cat "$tmp/control")"
done

# The packaged binary runs, and is the one this build made (stripped of debug information).
dpkg-deb -x "$deb" "$tmp/root"
bin=$tmp/root/usr/sbin/portlens
if readelf -S "$bin" | grep -q '\.debug_info'; then
  fail "the packaged binary carries debug information (not stripped)"
fi
# Every library the binary links directly comes from a package that Depends names (or that
# provides a name in Depends).
for soname in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
  path=$(ldd "$bin" | awk -v s="$soname" '$1 == s { print $3 }')
  [ -n "$path" ] || fail "$soname, needed by portlens, is not found here"
  owner=$(dpkg -S "$path" 2>/dev/null || dpkg -S "/usr$path" 2>/dev/null ||
    dpkg -S "${path#/usr}" 2>/dev/null) || fail "no package owns $path ($soname)"
  owner=${owner%%:*}
  provided=$(awk -v p="$owner" '$1 == p' "$tmp/installed")
  ok=no
  for name in $provided; do
    if echo "$names" | grep -qx "$name"; then ok=yes; fi
  done
  [ "$ok" = yes ] || fail "portlens needs $soname from $owner, which Depends does not name: $depends"
done
out=$("$tmp/root/usr/sbin/portlens" --version) || fail "the packaged portlens --version failed"
[ "$out" = "portlens $version" ] || fail "portlens --version says '$out', the package is $version"
grep -q '^ExecStart=/usr/sbin/portlens agent ' "$tmp/root/lib/systemd/system/portlens.service" ||
  fail "the unit's ExecStart does not run /usr/sbin/portlens agent"

echo "check_package: ok: $(basename "$deb"), $(wc -l <"$tmp/contents") entries, Depends: $depends"
