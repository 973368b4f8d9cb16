/// @brief Helper for the fault-injection scripts (tests/faults/*.sh), which have no h5py:
///   ft_fault_tool dataset OUT.h5 N [H C K S] a small learnable uint8 dataset (firetrain layout;
///                                            label of image i: (i + S) % K)
///   ft_fault_tool check CKPT                 exit 0 if CKPT is a complete, checksum-valid
///                                            checkpoint (prints its step), else 1 and why
///   ft_fault_tool diff A B [TOL]             max |a - b| over /model of two checkpoints;
///                                            exit 0 if <= TOL (default 0: bit-identical)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "firetrain/core/params.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/h5.hpp"
#include "firetrain/io/weights.hpp"

namespace {

int make_dataset(const std::string& out, int n, int s, int c, int k, int shift) {
  std::vector<uint8_t> img(size_t(n) * s * s * c);
  std::vector<int32_t> lab(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    lab[size_t(i)] = (i + shift) % k;
    uint8_t* x = img.data() + size_t(i) * s * s * c;
    for (int j = 0; j < s * s * c; ++j) x[j] = uint8_t((j * 37 + i * 11) % 40);  // noise
    const int r0 = (lab[size_t(i)] * 3) % (s - 6), c0 = (lab[size_t(i)] * 7) % (s - 6);
    for (int r = r0; r < r0 + 6; ++r)
      for (int q = c0; q < c0 + 6; ++q)
        for (int ch = 0; ch < c; ++ch) x[(size_t(r) * s + q) * c + ch] = 220;
  }
  ft::write_dataset(out, img.data(), lab.data(), n, s, s, c, k, {});
  return 0;
}

/// Parameter views laid out from the shapes of a checkpoint's /model group.
std::vector<ft::ParamView> views_of(const std::string& path, std::vector<float>& arena) {
  std::vector<ft::ParamView> v;
  std::lock_guard<std::mutex> lock(ft::h5_mutex());
  ft::h5::Handle f = ft::h5::open_file(path);
  size_t off = 0;
  for (auto& name : ft::h5::list_datasets(f, "model")) {
    ft::h5::Handle d = ft::h5::dataset_handle(ft::h5::open_dataset(f, "model/" + name));
    ft::ParamView p;
    p.name = name;
    p.shape = ft::h5::dataset_info(d).shape;
    p.offset = off;
    off += p.numel();
    v.push_back(p);
  }
  arena.assign(off, 0.f);
  for (auto& p : v) p.data = arena.data() + p.offset;
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "dataset" && argc >= 4)
      return make_dataset(argv[2], std::atoi(argv[3]), argc > 4 ? std::atoi(argv[4]) : 28,
                          argc > 5 ? std::atoi(argv[5]) : 1, argc > 6 ? std::atoi(argv[6]) : 10,
                          argc > 7 ? std::atoi(argv[7]) : 0);
    if (cmd == "check" && argc == 3) {
      std::vector<float> arena;
      auto views = views_of(argv[2], arena);
      std::string why = ft::checkpoint_problem(argv[2], views);
      if (!why.empty()) {
        std::printf("INVALID %s\n", why.c_str());
        return 1;
      }
      std::vector<float> mom(arena.size());
      ft::CheckpointState st = ft::load_checkpoint(argv[2], views, mom.data());
      std::printf("valid step %lld world_size %d\n", (long long)st.step, st.world_size);
      return 0;
    }
    if (cmd == "diff" && argc >= 4) {
      const double tol = argc > 4 ? std::atof(argv[4]) : 0.0;
      std::vector<float> a, b;
      auto va = views_of(argv[2], a), vb = views_of(argv[3], b);
      if (a.size() != b.size()) {
        std::printf("different models\n");
        return 1;
      }
      ft::load_weights_h5(argv[2], va);
      ft::load_weights_h5(argv[3], vb);
      double worst = 0, scale = 0;
      size_t differ = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, double(std::fabs(a[i] - b[i])));
        scale = std::max(scale, double(std::fabs(a[i])));
        differ += a[i] != b[i];
      }
      std::printf("max_abs_diff %.3g (max |w| %.3g), %zu of %zu weights differ\n", worst, scale,
                  differ, a.size());
      return worst <= tol ? 0 : 1;
    }
    std::fprintf(stderr,
                 "usage: ft_fault_tool dataset OUT N [H C K] | check CKPT | diff A B [TOL]\n");
    return 2;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
