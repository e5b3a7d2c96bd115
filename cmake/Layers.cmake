# The layers' dependency order, enforced by the build (see agent/CMakeLists.txt).
#
# portlens_pure_library(NAME sources...) makes a static library of a pure layer: it is compiled
# with PORTLENS_PURE_LAYER, under which every agent/kernel/ header stops the build with #error
# (agent/kernel/kernel_only.hpp), and portlens_check_pure_targets() fails the configuration if
# such a target links, directly or through another target, libbpf, libmnl, the BPF skeletons or
# the kernel/ and cmd/ layers.
set(PORTLENS_PURE_TARGETS "" CACHE INTERNAL "")
set(PORTLENS_IMPURE_LINKS portlens_kernel portlens_cmd portlens_skel snapshot_skel
    PkgConfig::LIBBPF PkgConfig::LIBMNL CACHE INTERNAL "")

function(portlens_pure_library name)
  add_library(${name} STATIC ${ARGN})
  target_compile_definitions(${name} PRIVATE PORTLENS_PURE_LAYER)
  set(PORTLENS_PURE_TARGETS ${PORTLENS_PURE_TARGETS} ${name} CACHE INTERNAL "")
endfunction()

# Marks an executable (a test binary) as pure: the same #error and link checks.
function(portlens_pure_executable name)
  target_compile_definitions(${name} PRIVATE PORTLENS_PURE_LAYER)
  set(PORTLENS_PURE_TARGETS ${PORTLENS_PURE_TARGETS} ${name} CACHE INTERNAL "")
endfunction()

function(_portlens_links_of target out)
  set(result "")
  get_target_property(type ${target} TYPE)
  set(props INTERFACE_LINK_LIBRARIES)
  if(NOT type STREQUAL "INTERFACE_LIBRARY")
    list(APPEND props LINK_LIBRARIES)
  endif()
  foreach(prop ${props})
    get_target_property(links ${target} ${prop})
    if(links)
      foreach(link ${links})
        string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" link "${link}")
        list(APPEND result ${link})
      endforeach()
    endif()
  endforeach()
  set(${out} ${result} PARENT_SCOPE)
endfunction()

function(portlens_check_pure_targets)
  foreach(pure ${PORTLENS_PURE_TARGETS})
    set(queue ${pure})
    set(seen "")
    while(queue)
      list(POP_FRONT queue current)
      if(current IN_LIST seen)
        continue()
      endif()
      list(APPEND seen ${current})
      if(current IN_LIST PORTLENS_IMPURE_LINKS)
        message(FATAL_ERROR "pure target ${pure} links ${current}: a pure layer must not reach "
                            "libbpf, libmnl or agent/kernel (see agent/CMakeLists.txt)")
      endif()
      if(TARGET ${current})
        _portlens_links_of(${current} links)
        list(APPEND queue ${links})
      endif()
    endwhile()
  endforeach()
endfunction()
