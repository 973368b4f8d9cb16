/// @brief Sampler + augmenter + prefetching loader with the data-parallel semantics of DESIGN.md.
///
/// Per epoch there is one global order of the N samples: the identity when shuffle is off, else
/// a Fisher–Yates permutation driven by a counter-based hash of (seed, epoch), the same on every
/// machine and standard library. Global step s of the epoch takes positions s·B … s·B + m − 1 of
/// that order (m = B, or what is left for the last batch when drop_last is off); rank r of
/// `world` takes the contiguous slice [r·m/world, (r+1)·m/world) of them (B % world == 0 is
/// required, so full batches split evenly; the last partial batch of an evaluation may give a
/// rank fewer samples or none: next() then returns true with n = 0, so every rank still takes
/// part in the step's collectives).
///
/// Augmentation (when on): random crop with zero padding `pad` (torchvision
/// RandomCrop(size, padding=pad): a raw 0 pixel, normalized like any other) and a horizontal flip
/// with probability 1/2, both decided by a hash of (seed, epoch, dataset index): the same image
/// gets the same crop and flip whatever the number of ranks.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "firetrain/data/dataset.hpp"

namespace ft {

struct LoaderOptions {
  int64_t global_batch = 128;
  int rank = 0, world = 1;
  uint64_t seed = 0;
  bool shuffle = true;
  bool augment = true;
  int pad = 2;
  bool flip = true;
  int prefetch = 2;  // batches prepared ahead by the prefetch thread (0: no thread)
  bool drop_last = true;
};

struct Batch {
  int64_t epoch = 0, step_in_epoch = 0;
  int n = 0;
  std::vector<float> images;     // (n, H, W, C) normalized
  std::vector<int32_t> labels;   // (n,)
  std::vector<int64_t> indices;  // (n,) dataset index of each sample
  int64_t global_offset = 0;     // position of this rank's first sample in the global batch
};

/// The global order of one epoch: identity, or the (seed, epoch) permutation.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle);

/// The augmentation of one sample: crop offsets in [-pad, pad] and a flip.
struct AugChoice {
  int dy = 0, dx = 0;
  bool flip = false;
};
AugChoice aug_choice(uint64_t seed, int64_t epoch, int64_t index, int pad, bool flip);

/// Applies `a` to one normalized (H, W, C) image: out(y, x) = in(y + dy, x + dx) (or
/// zero[c] outside), then mirrored when a.flip. `in` and `out` must not overlap.
void augment_image(const float* in, float* out, int h, int w, int c, const AugChoice& a,
                   const float* zero);

/// The same from raw uint8 pixels, normalized through lut (C, 256) (see Dataset::lut()).
void augment_image_u8(const uint8_t* in, float* out, int h, int w, int c, const AugChoice& a,
                      const float* lut);

class Loader {
 public:
  Loader(const Dataset& ds, LoaderOptions opt);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Global steps per epoch: N / B (drop_last) or ceil(N / B).
  int64_t steps_per_epoch() const;
  /// Begins (or restarts) `epoch` at global step `first_step`; abandons any epoch in progress.
  void start_epoch(int64_t epoch, int64_t first_step = 0);
  /// The next batch of this rank; false at the end of the epoch. Rethrows the prefetch
  /// thread's exceptions. `out`'s buffers are recycled.
  bool next(Batch& out);

  const LoaderOptions& options() const { return opt_; }

 private:
  void produce(int64_t step, Batch& b) const;
  void run(int64_t first_step);  // the prefetch thread's body
  void stop();

  const Dataset& ds_;
  LoaderOptions opt_;
  int64_t epoch_ = -1, next_step_ = 0;
  std::vector<int64_t> order_;  // (N,) global order of the current epoch

  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> ready_;  // produced, in step order
  std::vector<Batch> free_;  // recycled buffers
  bool abort_ = false, done_ = false;
  std::exception_ptr error_;
};

}  // namespace ft
