/// @brief Sampler (counter-based Fisher–Yates per (seed, epoch)), augmenter (crop with zero
/// padding, flip; keyed by (seed, epoch, index)) and the prefetch thread.
#include "firetrain/data/loader.hpp"

#include <algorithm>

#include "firetrain/core/error.hpp"

namespace ft {

namespace {

/// splitmix64's finalizer: a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
inline uint64_t key3(uint64_t a, uint64_t b, uint64_t c) {
  return mix64(mix64(mix64(a) ^ b) ^ c);
}
constexpr uint64_t kShuffleTag = 0x53485546464c4531ULL;  // "SHUFFLE1"
constexpr uint64_t kAugTag = 0x4155474d454e5431ULL;      // "AUGMENT1"

/// Uniform integer in [0, bound) from 64 random bits (multiply-shift; bias < bound / 2^64).
inline uint64_t below(uint64_t r, uint64_t bound) {
  return uint64_t((static_cast<unsigned __int128>(r) * bound) >> 64);
}

}  // namespace

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  if (!shuffle) return order;
  const uint64_t key = key3(seed ^ kShuffleTag, uint64_t(epoch), 0);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = int64_t(below(mix64(key ^ uint64_t(i)), uint64_t(i) + 1));
    std::swap(order[size_t(i)], order[size_t(j)]);
  }
  return order;
}

AugChoice aug_choice(uint64_t seed, int64_t epoch, int64_t index, int pad, bool flip) {
  const uint64_t h = key3(seed ^ kAugTag, uint64_t(epoch), uint64_t(index));
  AugChoice a;
  if (pad > 0) {
    const uint64_t span = uint64_t(2 * pad + 1);
    a.dy = int(below(mix64(h ^ 1), span)) - pad;
    a.dx = int(below(mix64(h ^ 2), span)) - pad;
  }
  a.flip = flip && (h >> 63) != 0;
  return a;
}

namespace {

/// out(y, x) = map(c, in(y + dy, xs + dx)) with xs = x or w - 1 - x (flip), zero[c] outside.
/// Per row, the columns that read inside the image form one range [x0, x1): no per-pixel
/// branches. C > 0 fixes the channel count at compile time (0: use c).
template <int C, class T, class Map>
void augment_impl(const T* in, float* out, int h, int w, int c, const AugChoice& a,
                  const float* zero, Map map) {
  if (C > 0) c = C;
  const int x0 = a.flip ? std::max(0, a.dx) : std::max(0, -a.dx);
  const int x1 = std::max(x0, a.flip ? std::min(w, w + a.dx) : std::min(w, w - a.dx));
  auto fill = [&](float* o, int from, int to) {
    for (int x = from; x < to; ++x)
      for (int ch = 0; ch < c; ++ch) o[size_t(x) * c + ch] = zero[ch];
  };
  for (int y = 0; y < h; ++y) {
    float* o = out + size_t(y) * w * c;
    const int sy = y + a.dy;
    if (sy < 0 || sy >= h) {
      fill(o, 0, w);
      continue;
    }
    const T* row = in + size_t(sy) * w * c;
    fill(o, 0, x0);
    if (a.flip) {
      for (int x = x0; x < x1; ++x) {
        const T* p = row + size_t(w - 1 + a.dx - x) * c;
        for (int ch = 0; ch < c; ++ch) o[size_t(x) * c + ch] = map(ch, p[ch]);
      }
    } else {
      for (int x = x0; x < x1; ++x) {
        const T* p = row + size_t(x + a.dx) * c;
        for (int ch = 0; ch < c; ++ch) o[size_t(x) * c + ch] = map(ch, p[ch]);
      }
    }
    fill(o, x1, w);
  }
}

template <class T, class Map>
void augment_dispatch(const T* in, float* out, int h, int w, int c, const AugChoice& a,
                      const float* zero, Map map) {
  if (c == 1)
    augment_impl<1>(in, out, h, w, c, a, zero, map);
  else if (c == 3)
    augment_impl<3>(in, out, h, w, c, a, zero, map);
  else
    augment_impl<0>(in, out, h, w, c, a, zero, map);
}

}  // namespace

void augment_image(const float* in, float* out, int h, int w, int c, const AugChoice& a,
                   const float* zero) {
  augment_dispatch(in, out, h, w, c, a, zero, [](int, float v) { return v; });
}

void augment_image_u8(const uint8_t* in, float* out, int h, int w, int c, const AugChoice& a,
                      const float* lut) {
  FT_REQUIRE(c >= 1 && c <= 3, "augment_image_u8: 1 to 3 channels");
  float zero[3];
  for (int ch = 0; ch < c; ++ch) zero[ch] = lut[ch * 256];
  augment_dispatch(in, out, h, w, c, a, zero,
                   [lut](int ch, uint8_t v) { return lut[ch * 256 + v]; });
}

Loader::Loader(const Dataset& ds, LoaderOptions opt) : ds_(ds), opt_(opt) {
  if (opt_.global_batch <= 0) throw InputError("loader: the global batch must be > 0");
  if (opt_.world < 1 || opt_.rank < 0 || opt_.rank >= opt_.world)
    throw InputError("loader: rank " + std::to_string(opt_.rank) + " outside world of " +
                     std::to_string(opt_.world));
  if (opt_.global_batch % opt_.world != 0)
    throw InputError("loader: global batch " + std::to_string(opt_.global_batch) +
                     " is not divisible by the " + std::to_string(opt_.world) + " ranks");
  if (opt_.pad < 0) throw InputError("loader: pad must be >= 0");
  if (opt_.prefetch < 0) opt_.prefetch = 0;
}

Loader::~Loader() { stop(); }

int64_t Loader::steps_per_epoch() const {
  const int64_t n = ds_.size(), b = opt_.global_batch;
  return opt_.drop_last ? n / b : (n + b - 1) / b;
}

void Loader::produce(int64_t step, Batch& b) const {
  const int64_t B = opt_.global_batch, N = ds_.size();
  const int64_t m = std::min(B, N - step * B);  // samples in this global batch
  const int64_t lo = m * opt_.rank / opt_.world, hi = m * (opt_.rank + 1) / opt_.world;
  const int n = int(hi - lo);
  const int64_t per = ds_.sample_size();
  b.epoch = epoch_;
  b.step_in_epoch = step;
  b.n = n;
  b.global_offset = lo;
  b.indices.resize(size_t(n));
  b.labels.resize(size_t(n));
  b.images.resize(size_t(n) * size_t(per));
  for (int i = 0; i < n; ++i) {
    b.indices[size_t(i)] = order_[size_t(step * B + lo + i)];
    b.labels[size_t(i)] = ds_.label(b.indices[size_t(i)]);
  }
  const bool aug = opt_.augment && (opt_.pad > 0 || opt_.flip);
  if (!aug) {
    ds_.read_images(b.indices.data(), n, b.images.data());
    return;
  }
  if (ds_.cached_u8(0)) {
    // Cached uint8: crop, flip and normalize in one pass from the raw pixels.
    for (int i = 0; i < n; ++i) {
      const int64_t idx = b.indices[size_t(i)];
      const AugChoice a = aug_choice(opt_.seed, epoch_, idx, opt_.pad, opt_.flip);
      augment_image_u8(ds_.cached_u8(idx), b.images.data() + size_t(i) * per, ds_.height(),
                       ds_.width(), ds_.channels(), a, ds_.lut());
    }
    return;
  }
  thread_local std::vector<float> staging;
  staging.resize(size_t(n) * size_t(per));
  ds_.read_images(b.indices.data(), n, staging.data());
  std::vector<float> zero(size_t(ds_.channels()));
  for (int ch = 0; ch < ds_.channels(); ++ch) zero[size_t(ch)] = ds_.zero_value(ch);
  for (int i = 0; i < n; ++i) {
    const AugChoice a = aug_choice(opt_.seed, epoch_, b.indices[size_t(i)], opt_.pad, opt_.flip);
    augment_image(staging.data() + size_t(i) * per, b.images.data() + size_t(i) * per,
                  ds_.height(), ds_.width(), ds_.channels(), a, zero.data());
  }
}

void Loader::run(int64_t first_step) {
  try {
    const int64_t spe = steps_per_epoch();
    for (int64_t s = first_step; s < spe; ++s) {
      Batch b;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return abort_ || int(ready_.size()) < opt_.prefetch; });
        if (abort_) return;
        if (!free_.empty()) {
          b = std::move(free_.back());
          free_.pop_back();
        }
      }
      produce(s, b);
      std::lock_guard<std::mutex> lock(mu_);
      if (abort_) return;
      ready_.push_back(std::move(b));
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::current_exception();
  }
  std::lock_guard<std::mutex> lock(mu_);
  done_ = true;
  cv_.notify_all();
}

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    abort_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& b : ready_) free_.push_back(std::move(b));
  ready_.clear();
  abort_ = false;
  done_ = false;
  error_ = nullptr;
}

void Loader::start_epoch(int64_t epoch, int64_t first_step) {
  stop();
  FT_REQUIRE(epoch >= 0, "epoch must be >= 0");
  FT_REQUIRE(first_step >= 0 && first_step <= steps_per_epoch(),
             "first_step outside the epoch");
  if (epoch != epoch_ || order_.empty()) order_ = epoch_order(ds_.size(), opt_.seed, epoch,
                                                              opt_.shuffle);
  epoch_ = epoch;
  next_step_ = first_step;
  if (opt_.prefetch > 0) thread_ = std::thread(&Loader::run, this, first_step);
}

bool Loader::next(Batch& out) {
  FT_REQUIRE(epoch_ >= 0, "Loader::next called before start_epoch");
  if (opt_.prefetch == 0) {
    if (next_step_ >= steps_per_epoch()) return false;
    produce(next_step_++, out);
    return true;
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !ready_.empty() || done_; });
  if (!ready_.empty()) {
    free_.push_back(std::move(out));  // recycle the caller's buffers
    out = std::move(ready_.front());
    ready_.pop_front();
    ++next_step_;
    cv_.notify_all();
    return true;
  }
  if (error_) std::rethrow_exception(error_);
  return false;
}

}  // namespace ft
