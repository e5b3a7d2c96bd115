# The sanitizer build (scripts/sanitize.sh, run by scripts/test.sh and so by CI): the same code
# and tests compiled with AddressSanitizer and UndefinedBehaviorSanitizer, and, with clang, the
# libFuzzer harnesses of tests/fuzz. Both options are off in every other build.
option(PORTLENS_SANITIZE "build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
option(PORTLENS_FUZZ "build the libFuzzer harnesses of tests/fuzz (clang only)" OFF)

if(PORTLENS_SANITIZE)
  if(PORTLENS_HARDENING)
    # _FORTIFY_SOURCE's checked copies would stand between ASan and the accesses it checks.
    message(FATAL_ERROR "PORTLENS_SANITIZE needs -DPORTLENS_HARDENING=OFF")
  endif()
  # Every finding stops the test that made it (no "recover and carry on"); frame pointers keep
  # the reports' stacks whole at -O1 and above.
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

if(PORTLENS_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "PORTLENS_FUZZ needs clang (libFuzzer): configure with CXX=clang++")
  endif()
  # Coverage feedback for libFuzzer in all the code the harnesses reach; only the harnesses
  # themselves link libFuzzer's main (tests/fuzz/CMakeLists.txt).
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
