/// @brief Shared test helpers for tests that run the firetrain binary and read what it wrote:
/// a command runner (stdout + stderr, exit code) and a bit-for-bit comparison of checkpoint
/// tensors.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ft::test {

struct CmdResult {
  int code = -1;    // the exit code (-1: killed by a signal)
  std::string out;  // stdout + stderr
};

/// Runs `cmdline` with /bin/sh, capturing stdout and stderr together.
CmdResult run_shell(const std::string& cmdline);
/// Runs the firetrain binary (FT_BINARY) with `args`; `env`: "NAME=value ..." put before it.
CmdResult run_firetrain(const std::string& args, const std::string& env = "");

/// Whether every dataset of `group` (e.g. "model", "optimizer/momentum") holds the same float
/// bits in the HDF5 files a and b (same dataset names too); the failure names the first that
/// differs.
::testing::AssertionResult same_tensors(const std::string& a, const std::string& b,
                                        const std::string& group);

/// A small learnable dataset for short trainings: n images of 28x28x1, label i % 10, a bright
/// 6x6 square whose place depends on the class on a fixed background pattern. `std`: the
/// dataset's normalization (mean 0; empty: none, pixels in [0, 1]).
void write_square_dataset(const std::string& path, int n, const std::vector<float>& std = {});

}  // namespace ft::test
