/// @brief Writes the fuzzer's seed corpus: a valid dataset (uint8 and float32) and a valid
/// checkpoint and weights file of fuzz_readers.cpp's small model, so mutations start from
/// well-formed HDF5.
#include <string>
#include <vector>

#include "firetrain/core/params.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/h5.hpp"
#include "firetrain/io/weights.hpp"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  std::vector<uint8_t> img(4 * 6 * 6);
  for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(i * 7);
  std::vector<int32_t> lab = {0, 1, 2, 1};
  ft::write_dataset(dir + "/dataset_u8.h5", img.data(), lab.data(), 4, 6, 6, 1, 3, {"a", "b", "c"},
                    {0.5f}, {0.25f});
  {
    std::vector<float> x(img.begin(), img.end());
    std::lock_guard<std::mutex> lock(ft::h5_mutex());
    ft::h5::AtomicFile f(dir + "/dataset_f32.h5");
    ft::h5::write_dataset<float>(f, "images", x.data(), {4, 6, 6, 1});
    ft::h5::write_dataset<int32_t>(f, "labels", lab.data(), {4});
    ft::h5::write_attr(f, "num_classes", int64_t(3));
    f.commit();
  }
  std::vector<float> arena(40), mom(40, 0.125f);
  for (size_t i = 0; i < arena.size(); ++i) arena[i] = 0.01f * float(i);
  std::vector<ft::ParamView> v(2);
  v[0].name = "features.0.weight", v[0].shape = {4, 1, 3, 3}, v[0].offset = 0;
  v[1].name = "features.0.bias", v[1].shape = {4}, v[1].offset = 36;
  for (auto& p : v) p.data = arena.data() + p.offset;
  ft::CheckpointState st;
  st.step = 3;
  ft::save_checkpoint(dir + "/ckpt_3.h5", v, mom.data(), mom.size(), st);
  ft::save_weights_h5(dir + "/weights.h5", v);
  return 0;
}
