// What every harness in tests/fuzz shares: a check that stops the run on a broken invariant, in
// the fuzzer (libFuzzer saves the input as a crash) and in the corpus replay alike.
#pragma once

#include <cstdio>
#include <cstdlib>

// Not assert(): it must hold in every build type, NDEBUG or not.
#define FUZZ_CHECK(condition)                                                                \
  do {                                                                                       \
    if (!(condition)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (false)
