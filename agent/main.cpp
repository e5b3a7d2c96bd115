// portlens: eBPF port and TIME_WAIT observability. All logic lives in portlens_core.
#include "agent/cmd/cli.hpp"

int main(int argc, char** argv) { return portlens::run_main(argc, argv); }
