/// @brief libFuzzer target for the dataset and checkpoint readers: the input bytes are written
/// to a file and opened as a dataset (then a few samples read) and as a checkpoint of a small
/// model. Anything but a clean ft::Error (a crash, an abort, another exception, a sanitizer
/// report) is a bug. Built and run by tests/fuzz/run_fuzz.sh (clang -fsanitize=fuzzer).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "firetrain/core/error.hpp"
#include "firetrain/core/params.hpp"
#include "firetrain/data/dataset.hpp"
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = temp_path();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    // Small cache limit: exercise the on-demand (hyperslab) path as well.
    ft::Dataset ds = ft::Dataset::open(path, size % 2 ? (1 << 20) : 0);
    std::vector<float> out(size_t(ds.sample_size()) * 2);
    int64_t idx[2] = {0, ds.size() - 1};
    ds.read_images(idx, 2, out.data());
  } catch (const ft::Error&) {
  }
  Model m;
  std::vector<float> mom(m.arena.size());
  try {
    ft::load_checkpoint(path, m.views, mom.data());
  } catch (const ft::Error&) {
  }
  try {
    ft::load_weights_h5(path, m.views);
  } catch (const ft::Error&) {
  }
  std::remove(path.c_str());
  return 0;
}
