/// @brief Helper for tests/onnx/check_onnx_opencv.py, which reads no HDF5 (no h5py needed):
///   ft_onnx_tool dataset OUT.h5 RAW N C H W K SEED   N random float32 images (values ~N(0, 1),
///                                                    as normalized pixels) in the dataset layout
///                                                    (N, H, W, C), labels i % K; the same images
///                                                    to RAW as float32 NCHW, little endian
///   ft_onnx_tool logits IN.h5 RAW                    /logits of `firetrain predict` to RAW
///                                                    (float32, row-major); prints "N K"
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "firetrain/data/dataset.hpp"
#include "firetrain/io/h5.hpp"

namespace {

void write_raw(const std::string& path, const std::vector<float>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
  if (!f) throw std::runtime_error(path + ": write failed");
}

int make_dataset(const std::string& out, const std::string& raw, int N, int C, int H, int W,
                 int K, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> nhwc(size_t(N) * C * H * W), nchw(nhwc.size());
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h)
      for (int w = 0; w < W; ++w)
        for (int c = 0; c < C; ++c) {
          const float v = nd(rng);
          nhwc[((size_t(n) * H + h) * W + w) * C + c] = v;
          nchw[((size_t(n) * C + c) * H + h) * W + w] = v;
        }
  std::vector<int32_t> labels(static_cast<size_t>(N));
  for (int n = 0; n < N; ++n) labels[size_t(n)] = n % K;
  {
    std::lock_guard<std::mutex> lock(ft::h5_mutex());
    ft::h5::AtomicFile f(out);
    ft::h5::write_dataset<float>(f, "images", nhwc.data(), {N, H, W, C});
    ft::h5::write_dataset<int32_t>(f, "labels", labels.data(), {N});
    ft::h5::write_attr(f, "num_classes", int64_t(K));
    f.commit();
  }
  write_raw(raw, nchw);
  return 0;
}

int dump_logits(const std::string& in, const std::string& raw) {
  std::vector<int64_t> shape;
  std::vector<float> v;
  {
    std::lock_guard<std::mutex> lock(ft::h5_mutex());
    ft::h5::Handle f = ft::h5::open_file(in);
    v = ft::h5::read_dataset<float>(f, "logits", &shape);
  }
  if (shape.size() != 2) throw std::runtime_error(in + ": /logits is not 2-D");
  write_raw(raw, v);
  std::printf("%lld %lld\n", (long long)shape[0], (long long)shape[1]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "dataset" && argc == 10)
      return make_dataset(argv[2], argv[3], std::atoi(argv[4]), std::atoi(argv[5]),
                          std::atoi(argv[6]), std::atoi(argv[7]), std::atoi(argv[8]),
                          unsigned(std::atoi(argv[9])));
    if (cmd == "logits" && argc == 4) return dump_logits(argv[2], argv[3]);
    std::fprintf(stderr,
                 "usage: ft_onnx_tool dataset OUT.h5 RAW N C H W K SEED | logits IN.h5 RAW\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ft_onnx_tool: %s\n", e.what());
    return 1;
  }
}
