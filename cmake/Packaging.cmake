# The Debian package: `cmake --build build --target package` (or `cd build && cpack -G DEB`)
# writes build/portlens_<version>_<arch>.deb. It holds the agent, its systemd unit and
# /etc/default/portlens, the Grafana dashboards and provisioning examples, the Prometheus alert
# rules, the docs, the man page and the bash and zsh completion. tests/deploy/check_package.sh
# checks what it contains, and that lintian finds nothing to say (no error, no warning).
#
# The binary's own rule is in agent/CMakeLists.txt (/usr/sbin/portlens, as the unit expects).
# The rest is installed from here. Directories are installed with FILES_MATCHING, so a file that
# is not there yet is simply not packaged, and nothing fails.

set(PORTLENS_SHARE share/portlens)
set(PORTLENS_DOC share/doc/portlens)

# Debian 12 keeps units in /lib/systemd/system (where debhelper puts them too) and defaults in
# /etc/default; both lie outside the /usr prefix, hence the absolute destinations.
install(FILES ${PROJECT_SOURCE_DIR}/deploy/systemd/portlens.service
        DESTINATION /lib/systemd/system)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/systemd/portlens.default
        DESTINATION /etc/default RENAME portlens)

# Grafana: dashboards/*.json is what dashboards/provisioning/dashboards.yaml points at
# (/usr/share/portlens/dashboards); the provisioning examples go next to it.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/dashboards/
        DESTINATION ${PORTLENS_SHARE}/dashboards
        FILES_MATCHING PATTERN "*.json"
        PATTERN "provisioning" EXCLUDE
        PATTERN "alerts" EXCLUDE
        PATTERN "mixin" EXCLUDE)  # the jsonnet sources of the rendered rules and dashboard
install(DIRECTORY ${PROJECT_SOURCE_DIR}/dashboards/provisioning/
        DESTINATION ${PORTLENS_SHARE}/provisioning
        FILES_MATCHING PATTERN "*.yaml")
# Prometheus: rule_files: [/usr/share/portlens/alerts/portlens.rules.yml]. Their promtool tests
# (*.test.yml) stay in the source tree.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/dashboards/alerts/
        DESTINATION ${PORTLENS_SHARE}/alerts
        FILES_MATCHING PATTERN "*.rules.yml")
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${PORTLENS_DOC})
# Debian policy 12.5 and 12.7: the machine-readable copyright, and the changelog (made into
# changelog.gz, with the man page and the shell completion, by cmake/ManPage.cmake).
install(FILES ${PROJECT_SOURCE_DIR}/deploy/debian/copyright DESTINATION ${PORTLENS_DOC})
# No lintian overrides: lintian has no error and no warning to say (check_package.sh runs it).
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/
        DESTINATION ${PORTLENS_DOC}
        FILES_MATCHING PATTERN "runbook.md")

# Debian policy 5.6.2: the Maintainer is a name and a working address (lintian rejects
# @localhost). Set your own when you build packages you distribute:
#   cmake -DPORTLENS_PACKAGE_MAINTAINER="Jane Doe <jane@example.org>" ...
set(PORTLENS_PACKAGE_MAINTAINER "portlens maintainers <portlens@users.noreply.github.com>"
    CACHE STRING "Maintainer field of the Debian package (name <email>)")
# Build directories configured before carry the old @localhost default in their cache.
if(PORTLENS_PACKAGE_MAINTAINER STREQUAL "portlens maintainers <portlens@localhost>")
  set_property(CACHE PORTLENS_PACKAGE_MAINTAINER
               PROPERTY VALUE "portlens maintainers <portlens@users.noreply.github.com>")
endif()
if(NOT PORTLENS_PACKAGE_MAINTAINER MATCHES "^[^<>]+ <[^<>@ ]+@[^<>@ ]+\\.[^<>@ ]+>$")
  message(FATAL_ERROR "PORTLENS_PACKAGE_MAINTAINER must read 'Name <user@domain.tld>', not "
                      "'${PORTLENS_PACKAGE_MAINTAINER}'")
endif()
if(PORTLENS_PACKAGE_MAINTAINER MATCHES "@(localhost|localdomain)")
  message(FATAL_ERROR "PORTLENS_PACKAGE_MAINTAINER needs a real mail domain, not "
                      "'${PORTLENS_PACKAGE_MAINTAINER}'")
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME portlens)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_CONTACT ${PORTLENS_PACKAGE_MAINTAINER})
set(CPACK_DEBIAN_PACKAGE_MAINTAINER ${PORTLENS_PACKAGE_MAINTAINER})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "eBPF port and TIME_WAIT observability agent")
# The long description; CPack puts the summary above it as the first line. Lines of at most 79
# characters: with the leading space dpkg adds, lintian wants 80 at most.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "portlens watches every bind(), listen() and connect() on the host, and every
TCP state change, from kernel tracepoints. It explains why a bind() or
connect() failed (which socket and process is in the way, and how to fix it),
counts TIME_WAIT sockets by port and destination, and measures how close each
destination is to running out of ephemeral ports. The agent exports
Prometheus metrics on port 10130; the package also ships a systemd unit,
Grafana dashboards and Prometheus alert rules.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # portlens_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Depends: computed by dpkg-shlibdeps (Debian package dpkg-dev, which needs `file`) from the
# binary's shared libraries. Without them, the list it computes on Debian 12, written out
# (tests/deploy/check_package.sh checks that it covers every library the binary links).
find_program(PORTLENS_DPKG_SHLIBDEPS dpkg-shlibdeps)
find_program(PORTLENS_FILE_TOOL file)
if(PORTLENS_DPKG_SHLIBDEPS AND PORTLENS_FILE_TOOL)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  string(CONCAT CPACK_DEBIAN_PACKAGE_DEPENDS
         "libbpf1 (>= 1:0.2), libc6 (>= 2.34), libcrypt1 (>= 1:4.1.0), libfmt9 (>= 9.1.0+ds1), "
         "libgcc-s1 (>= 3.0), libgnutls30 (>= 3.7.2), libmicrohttpd12 (>= 0.9.75), "
         "libmnl0 (>= 1.0.4-1~), libprometheus-cpp-core1.0 (>= 1.0.1), libspdlog1.10-fmt9, "
         "libstdc++6 (>= 11), libyaml-cpp0.7 (>= 0.7.0), zlib1g (>= 1:1.2.0)")
endif()
set(CPACK_DEBIAN_PACKAGE_SUGGESTS prometheus)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/deploy/debian/conffiles
    ${PROJECT_SOURCE_DIR}/deploy/debian/postinst
    ${PROJECT_SOURCE_DIR}/deploy/debian/prerm
    ${PROJECT_SOURCE_DIR}/deploy/debian/postrm)
# Maintainer scripts 0755 and conffiles 0644, whatever the checkout's modes.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
# The build's debug information stays out of the package.
set(CPACK_STRIP_FILES TRUE)
include(CPack)
