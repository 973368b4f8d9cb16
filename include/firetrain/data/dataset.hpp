/// @brief The dataset contract (HDF5 images + labels), its validating reader with an in-memory
/// cache or hyperslab reads, and the writer. The contract is documented in datasets/README.md:
///
///   /images       uint8 or float32, (N, H, W, C), C = 1 or 3, 1 <= H, W <= 4096, N >= 1
///   /labels       any HDF5 integer type, (N,), values in [0, num_classes)
///   @num_classes  integer root attribute >= 1
///   @class_names  optional: root attribute (or root dataset) of num_classes strings
///   @mean, @std   optional float root attributes of length C (std > 0), in x/255 units
///
/// uint8 pixels become (x/255 - mean[c]) / std[c] (x/255 without mean/std); float32 pixels are
/// used as they are (and must be finite).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ft {

class Dataset {
 public:
  /// Opens and validates `path` (every problem is one ft::InputError naming the file, the
  /// dataset and the problem). The images are read into memory when they take at most
  /// `cache_bytes`; otherwise samples are read on demand.
  static Dataset open(const std::string& path, int64_t cache_bytes = 4LL << 30);

  int64_t size() const;
  int height() const;
  int width() const;
  int channels() const;
  int num_classes() const;
  /// num_classes names; "0", "1", ... when the file has none.
  const std::vector<std::string>& class_names() const;
  const std::string& path() const;
  /// Elements per sample: H * W * C.
  int64_t sample_size() const;
  /// Whether the pixels are stored as uint8 (else float32).
  bool is_uint8() const;
  /// Whether the images are held in memory.
  bool cached() const;
  /// The stored mean/std (empty when absent).
  const std::vector<float>& mean() const;
  const std::vector<float>& stddev() const;
  /// The normalized value of a raw 0 pixel in channel c: what zero padding becomes.
  float zero_value(int c) const;

  /// Fast path for the loader: the raw pixels of sample i (H, W, C) when the images are
  /// cached uint8 (else nullptr), and the (C, 256) table mapping a raw value to its normalized
  /// value: normalized(c, x) = lut()[c * 256 + x].
  const uint8_t* cached_u8(int64_t i) const;
  const float* lut() const;

  int32_t label(int64_t i) const;
  const std::vector<int32_t>& labels() const;

  /// Reads samples idx[0..n) into out (n, H, W, C), normalized. Thread-safe (HDF5 calls are
  /// serialized by ft::h5_mutex()). ft::InputError for float pixels that are NaN/Inf.
  void read_images(const int64_t* idx, int n, float* out) const;

  struct State;  // shared by copies; closes the file with the last copy

 private:
  static Dataset open_impl(const std::string& path, int64_t cache_bytes);
  std::shared_ptr<State> s_;
};

/// Writes a dataset in the contract's layout, atomically: /images uint8 (N, H, W, C) chunked
/// (a few hundred images, at most ~1 MiB per chunk) with gzip level 1, /labels int32 (N,),
/// attributes num_classes, class_names (if given), mean/std (if given).
void write_dataset(const std::string& path, const uint8_t* images, const int32_t* labels,
                   int64_t n, int h, int w, int c, int num_classes,
                   const std::vector<std::string>& class_names,
                   const std::vector<float>& mean = {}, const std::vector<float>& std = {});

/// The chunk length (images per chunk) write_dataset uses for images of `sample_bytes` bytes.
int64_t dataset_chunk_images(int64_t sample_bytes);

}  // namespace ft
