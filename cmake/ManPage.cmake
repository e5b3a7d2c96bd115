# The man page portlens.8 and the bash and zsh completion, made at build time from the built
# binary's --help output (deploy/completion/from_help.py), so that they follow the CLI; and the
# Debian changelog, gzipped as Debian policy wants. All of them go into the package
# (cmake/Packaging.cmake installs the rest); tests/deploy/check_package.sh checks them.
#
#   portlens.8.gz  help2man (Debian package help2man) on `portlens --help` and `--version`, with
#                  a COMMANDS section made from each command's --help; gzip -9n
#   portlens.bash  /usr/share/bash-completion/completions/portlens
#   _portlens      /usr/share/zsh/vendor-completions/_portlens
#   changelog.gz   deploy/debian/changelog, gzip -9n: /usr/share/doc/portlens/changelog.gz
#
# The binary only prints its help here: no privileges, no BPF.

find_program(PORTLENS_HELP2MAN help2man)
find_program(PORTLENS_GZIP gzip REQUIRED)
# /usr/bin/python3 as for the deploy tests: the generator uses nothing beyond the standard library.
find_program(PORTLENS_PYTHON3 python3 PATHS /usr/bin NO_DEFAULT_PATH REQUIRED)

set(PORTLENS_GEN_DIR ${PROJECT_BINARY_DIR}/deploy)
set(PORTLENS_FROM_HELP ${PROJECT_SOURCE_DIR}/deploy/completion/from_help.py)
file(MAKE_DIRECTORY ${PORTLENS_GEN_DIR})

# The man page's date is the changelog's latest entry's, not the build's: rebuilding the same
# version makes the same page (help2man reads SOURCE_DATE_EPOCH).
set(PORTLENS_CHANGELOG ${PROJECT_SOURCE_DIR}/deploy/debian/changelog)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PORTLENS_CHANGELOG})
execute_process(COMMAND dpkg-parsechangelog -l ${PORTLENS_CHANGELOG} -S Timestamp
                OUTPUT_VARIABLE PORTLENS_CHANGELOG_EPOCH OUTPUT_STRIP_TRAILING_WHITESPACE
                ERROR_QUIET RESULT_VARIABLE status)
if(NOT status EQUAL 0 OR PORTLENS_CHANGELOG_EPOCH STREQUAL "")
  string(TIMESTAMP PORTLENS_CHANGELOG_EPOCH "%s" UTC)
endif()
# The package's version is the changelog's latest: they must agree.
execute_process(COMMAND dpkg-parsechangelog -l ${PORTLENS_CHANGELOG} -S Version
                OUTPUT_VARIABLE changelog_version OUTPUT_STRIP_TRAILING_WHITESPACE
                ERROR_QUIET RESULT_VARIABLE status)
if(status EQUAL 0 AND NOT changelog_version STREQUAL PROJECT_VERSION)
  message(WARNING "deploy/debian/changelog's latest entry is ${changelog_version}, the project "
                  "is ${PROJECT_VERSION}: add a changelog entry (lintian and the package test "
                  "will fail)")
endif()

set(portlens_generated)
foreach(kind bash zsh)
  if(kind STREQUAL bash)
    set(out ${PORTLENS_GEN_DIR}/portlens.bash)
  else()
    set(out ${PORTLENS_GEN_DIR}/_portlens)
  endif()
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${PORTLENS_PYTHON3} ${PORTLENS_FROM_HELP} ${kind} $<TARGET_FILE:portlens> ${out}
    DEPENDS portlens ${PORTLENS_FROM_HELP}
    COMMENT "portlens ${kind} completion from --help"
    VERBATIM)
  list(APPEND portlens_generated ${out})
endforeach()

if(PORTLENS_HELP2MAN)
  set(h2m ${PORTLENS_GEN_DIR}/portlens.h2m)
  set(man ${PORTLENS_GEN_DIR}/portlens.8)
  add_custom_command(
    OUTPUT ${man}.gz
    COMMAND ${PORTLENS_PYTHON3} ${PORTLENS_FROM_HELP} h2m $<TARGET_FILE:portlens> ${h2m}
    # help2man runs `portlens --help` through PATH, so the page names `portlens`, not the path.
    COMMAND ${CMAKE_COMMAND} -E env "PATH=$<TARGET_FILE_DIR:portlens>:/usr/bin:/bin"
            SOURCE_DATE_EPOCH=${PORTLENS_CHANGELOG_EPOCH} LC_ALL=C.UTF-8
            ${PORTLENS_HELP2MAN} --section 8 --no-info
            --name "eBPF port and TIME_WAIT observability agent"
            --include ${h2m} --output ${man} portlens
    COMMAND ${PORTLENS_GZIP} -9nf ${man}
    DEPENDS portlens ${PORTLENS_FROM_HELP}
    BYPRODUCTS ${h2m}
    COMMENT "portlens.8 from --help (help2man)"
    VERBATIM)
  list(APPEND portlens_generated ${man}.gz)
  install(FILES ${man}.gz DESTINATION share/man/man8)
else()
  message(WARNING "help2man not found (Debian package help2man; scripts/install-deps.sh): the "
                  "package will have no man page, and its test will fail")
endif()

set(changelog_gz ${PORTLENS_GEN_DIR}/changelog.gz)
add_custom_command(
  OUTPUT ${changelog_gz}
  COMMAND ${CMAKE_COMMAND} -E copy ${PORTLENS_CHANGELOG} ${PORTLENS_GEN_DIR}/changelog
  COMMAND ${PORTLENS_GZIP} -9nf ${PORTLENS_GEN_DIR}/changelog
  DEPENDS ${PORTLENS_CHANGELOG}
  COMMENT "changelog.gz"
  VERBATIM)
list(APPEND portlens_generated ${changelog_gz})

add_custom_target(portlens_docs ALL DEPENDS ${portlens_generated})

install(FILES ${PORTLENS_GEN_DIR}/portlens.bash
        DESTINATION share/bash-completion/completions RENAME portlens)
install(FILES ${PORTLENS_GEN_DIR}/_portlens DESTINATION share/zsh/vendor-completions)
install(FILES ${changelog_gz} DESTINATION share/doc/portlens)
