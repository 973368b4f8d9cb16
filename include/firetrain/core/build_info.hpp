/// @brief What this binary is: git commit, compiler, build type and backends, generated at
/// build time (CMake's `firetrain_build_info` target rewrites a small generated .cpp when the
/// commit or the dirty state changes, so only that file recompiles).
#pragma once

#include <string>

namespace ft {

struct BuildInfo {
  const char* version;     // FIRETRAIN_VERSION, e.g. "0.1.0"
  const char* git;         // short commit hash, "-dirty" appended when tracked files differ;
                           // "unknown" without git
  const char* compiler;    // e.g. "GNU 12.2.0"
  const char* build_type;  // e.g. "Release"
  const char* backends;    // e.g. "CPU (oneDNN), MPI" or "CPU (oneDNN), MPI, CUDA, cuDNN, NCCL"
};

const BuildInfo& build_info();

/// One line: "firetrain 0.1.0, git 85745d1-dirty, GNU 12.2.0, Release, CPU (oneDNN), MPI".
std::string build_id();

/// The build id that ranks compare at start-up (Communicator::check_consistent): build_id(),
/// or the value of the environment variable FT_TEST_BUILD_ID when set. That variable exists
/// for tests only (tests/faults/disagree.sh makes one rank look like another build).
std::string build_id_for_ranks();

}  // namespace ft
