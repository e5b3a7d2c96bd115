# portlens_bpf_object(NAME SOURCES a.bpf.c b.bpf.c ...)
#
# Compiles each source with clang to a CO-RE BPF object, links them into one object with
# `bpftool gen object` (so programs in different files share maps), and generates the skeleton
# NAME.skel.h. Exposes an INTERFACE target NAME_skel that carries the include path and libbpf.
#
# The pinned vmlinux.h in bpf/include/<arch>/ is used, never the build host's kernel.

find_program(BPF_CLANG NAMES clang clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)
set(PORTLENS_BPF_ARCH x86 CACHE STRING "architecture of the pinned vmlinux.h (bpf/include/<arch>)")

function(portlens_bpf_object name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPENDS" ${ARGN})
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR})
  set(objects)
  foreach(src IN LISTS ARG_SOURCES)
    get_filename_component(stem ${src} NAME_WE)
    set(obj ${out_dir}/${stem}.tmp.o)
    add_custom_command(
      OUTPUT ${obj}
      COMMAND ${BPF_CLANG} -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_${PORTLENS_BPF_ARCH}
              -I${CMAKE_CURRENT_SOURCE_DIR}/include/${PORTLENS_BPF_ARCH}
              -I${CMAKE_CURRENT_SOURCE_DIR}
              -c ${CMAKE_CURRENT_SOURCE_DIR}/${src} -o ${obj}
      DEPENDS ${src} ${ARG_DEPENDS}
      COMMENT "BPF ${src}"
      VERBATIM)
    list(APPEND objects ${obj})
  endforeach()
  set(linked ${out_dir}/${name}.bpf.o)
  set(skel ${out_dir}/${name}.skel.h)
  add_custom_command(
    OUTPUT ${linked} ${skel}
    COMMAND ${BPFTOOL} gen object ${linked} ${objects}
    COMMAND ${BPFTOOL} gen skeleton ${linked} name ${name}_bpf > ${skel}
    DEPENDS ${objects}
    COMMENT "BPF link and skeleton ${name}"
    VERBATIM)
  add_custom_target(${name}_skel_gen DEPENDS ${skel})
  add_library(${name}_skel INTERFACE)
  add_dependencies(${name}_skel ${name}_skel_gen)
  # SYSTEM: the generated skeleton is C; its casts must not trip our -Werror flags.
  target_include_directories(${name}_skel SYSTEM INTERFACE ${out_dir})
  target_link_libraries(${name}_skel INTERFACE PkgConfig::LIBBPF)
endfunction()
