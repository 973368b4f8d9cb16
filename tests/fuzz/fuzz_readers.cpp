/// @brief libFuzzer target for the HDF5 readers, through the entry points the CLI uses: the input
/// bytes are written to a file and opened as a dataset (then samples read: train, eval,
/// predict), as a checkpoint and as a weights file of a small model (train --resume, eval),
/// through spec_from_file (eval / predict / export) and describe_h5 (`firetrain info`). Every
/// HDF5 file is validated in a child process first (src/io/sandbox.cpp), so crashes inside
/// libhdf5 happen there and come back as ft::InputError. Anything but success or an
/// ft::InputError (exit code 2: a crash, an abort, a hang, a sanitizer report, another
/// exception, an ft::Error that would exit 1) is a finding. Built and run by
/// tests/fuzz/run_fuzz.sh (clang -fsanitize=fuzzer,address).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "firetrain/core/error.hpp"
#include "firetrain/core/params.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/inspect.hpp"
#include "firetrain/io/sandbox.hpp"
#include "firetrain/io/weights.hpp"

namespace {

std::string temp_path() {
  static const std::string p = "/tmp/ft_fuzz_input." + std::to_string(getpid()) + ".h5";
  return p;
}

/// A small model: two tensors, as a checkpoint's /model and /optimizer/momentum expect.
struct Model {
  std::vector<float> arena = std::vector<float>(4 * 1 * 3 * 3 + 4);
  std::vector<ft::ParamView> views;
  Model() {
    views.resize(2);
    views[0].name = "features.0.weight", views[0].shape = {4, 1, 3, 3}, views[0].offset = 0;
    views[1].name = "features.0.bias", views[1].shape = {4}, views[1].offset = 36;
    for (auto& v : views) v.data = arena.data() + v.offset;
  }
};

/// Runs one reader: success or ft::InputError are fine; anything else is reported and aborts
/// (libFuzzer records the input as a crash).
template <class F>
void expect_clean(const char* reader, F body) {
  try {
    body();
  } catch (const ft::InputError&) {
  } catch (const ft::Error& e) {
    std::fprintf(stderr, "FUZZ FINDING: %s threw ft::Error (exit code %d, not 2): %s\n", reader,
                 e.exit_code(), e.what());
    std::abort();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FUZZ FINDING: %s threw %s\n", reader, e.what());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = temp_path();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  // The same path gets new bytes faster than its modification time changes: validate again.
  ft::sandbox::forget_all();
  expect_clean("Dataset::open", [&] {
    // Small cache limit: exercise the on-demand (hyperslab) path as well.
    ft::Dataset ds = ft::Dataset::open(path, size % 2 ? (1 << 20) : 0);
    std::vector<float> out(size_t(ds.sample_size()) * 2);
    int64_t idx[2] = {0, ds.size() - 1};
    ds.read_images(idx, 2, out.data());
  });
  Model m;
  std::vector<float> mom(m.arena.size());
  expect_clean("load_checkpoint", [&] { ft::load_checkpoint(path, m.views, mom.data()); });
  expect_clean("load_weights_h5", [&] { ft::load_weights_h5(path, m.views); });
  expect_clean("spec_from_file", [&] { ft::spec_from_file(path, ""); });
  expect_clean("describe_h5", [&] { ft::describe_h5(path); });
  expect_clean("is_checkpoint", [&] { ft::is_checkpoint(path); });
  std::remove(path.c_str());
  return 0;
}
