/// @brief Sampler, augmenter and prefetching loader (LoaderTest): the data-parallel semantics of
/// DESIGN.md (rank slices of a global batch union to the 1-rank batch, the order depends only on
/// (seed, epoch), augmentation is keyed by dataset index), partial batches, resume, shutdown,
/// exceptions carried out of the prefetch thread, throughput.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "firetrain/core/error.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/data/loader.hpp"
#include "firetrain/io/h5.hpp"

namespace {

namespace fs = std::filesystem;

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("firetrain_ld_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// n images (h, w, c) whose pixels depend on the index, labels i % k.
  std::string make(int64_t n, int h, int w, int c, int k = 10, const std::string& name = "d.h5",
                   std::vector<float> mean = {}, std::vector<float> sd = {}) {
    std::vector<uint8_t> img(size_t(n * h * w * c));
    for (size_t i = 0; i < img.size(); ++i)
      img[i] = uint8_t(1 + (i * 7 + i / size_t(h * w * c) * 13) % 250);  // never 0
    std::vector<int32_t> lab(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) lab[size_t(i)] = int32_t(i % k);
    const std::string p = (dir_ / name).string();
    ft::write_dataset(p, img.data(), lab.data(), n, h, w, c, k, {}, mean, sd);
    return p;
  }

  /// All batches of one epoch.
  static std::vector<ft::Batch> epoch(ft::Loader& l, int64_t e, int64_t first = 0) {
    l.start_epoch(e, first);
    std::vector<ft::Batch> out;
    ft::Batch b;
    while (l.next(b)) out.push_back(b);
    return out;
  }

  fs::path dir_;
};

TEST_F(LoaderTest, NoShuffleTakesTheDatasetInOrder) {
  ft::Dataset ds = ft::Dataset::open(make(100, 6, 5, 1));
  ft::LoaderOptions o;
  o.global_batch = 10;
  o.shuffle = false;
  o.augment = false;
  ft::Loader l(ds, o);
  EXPECT_EQ(l.steps_per_epoch(), 10);
  auto batches = epoch(l, 3);
  ASSERT_EQ(batches.size(), 10u);
  std::vector<float> ref(10 * 30);
  for (int64_t s = 0; s < 10; ++s) {
    const auto& b = batches[size_t(s)];
    EXPECT_EQ(b.epoch, 3);
    EXPECT_EQ(b.step_in_epoch, s);
    ASSERT_EQ(b.n, 10);
    std::vector<int64_t> want(10);
    std::iota(want.begin(), want.end(), s * 10);
    EXPECT_EQ(b.indices, want);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(b.labels[size_t(i)], int32_t((s * 10 + i) % 10));
    ds.read_images(want.data(), 10, ref.data());
    EXPECT_EQ(b.images, ref);
  }
}

TEST_F(LoaderTest, RankSlicesUnionToTheOneRankBatch) {
  ft::Dataset ds = ft::Dataset::open(make(130, 7, 6, 3, 10, "d.h5", {0.4f, 0.5f, 0.6f},
                                          {0.2f, 0.25f, 0.3f}));
  ft::LoaderOptions o;
  o.global_batch = 20;
  o.seed = 1234;
  o.pad = 2;
  ft::Loader one(ds, o);
  auto ref = epoch(one, 2);
  ASSERT_EQ(ref.size(), 6u);  // 130 / 20, last partial batch dropped
  {
    // The fused uint8 path (cached) and the read-then-augment path (on demand) agree.
    ft::Dataset lazy = ft::Dataset::open(ds.path(), 0);
    ASSERT_FALSE(lazy.cached());
    ft::Loader l(lazy, o);
    auto lz = epoch(l, 2);
    ASSERT_EQ(lz.size(), ref.size());
    for (size_t s = 0; s < lz.size(); ++s) EXPECT_TRUE(lz[s].images == ref[s].images) << s;
  }
  for (int world : {2, 4, 5, 10}) {
    std::vector<std::vector<ft::Batch>> per_rank;
    for (int r = 0; r < world; ++r) {
      ft::LoaderOptions ro = o;
      ro.world = world;
      ro.rank = r;
      ft::Loader l(ds, ro);
      per_rank.push_back(epoch(l, 2));
    }
    for (size_t s = 0; s < ref.size(); ++s) {
      ft::Batch u;
      for (int r = 0; r < world; ++r) {
        const ft::Batch& b = per_rank[size_t(r)][s];
        EXPECT_EQ(b.n, 20 / world);
        EXPECT_EQ(b.global_offset, int64_t(r) * 20 / world);
        u.indices.insert(u.indices.end(), b.indices.begin(), b.indices.end());
        u.labels.insert(u.labels.end(), b.labels.begin(), b.labels.end());
        u.images.insert(u.images.end(), b.images.begin(), b.images.end());
      }
      EXPECT_EQ(u.indices, ref[s].indices) << "world " << world << " step " << s;
      EXPECT_EQ(u.labels, ref[s].labels) << "world " << world << " step " << s;
      EXPECT_TRUE(u.images == ref[s].images)
          << "augmented images differ with world " << world << " at step " << s;
    }
  }
}

TEST_F(LoaderTest, PermutationDependsOnlyOnSeedAndEpoch) {
  const int64_t n = 1000;
  auto a = ft::epoch_order(n, 7, 3, true);
  EXPECT_EQ(a, ft::epoch_order(n, 7, 3, true));
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> id(static_cast<size_t>(n));
  std::iota(id.begin(), id.end(), 0);
  EXPECT_EQ(sorted, id) << "not a permutation";
  EXPECT_NE(a, id);
  EXPECT_NE(a, ft::epoch_order(n, 7, 4, true));
  EXPECT_NE(a, ft::epoch_order(n, 8, 3, true));
  EXPECT_EQ(ft::epoch_order(n, 7, 3, false), id);
  // Pinned values: the order must not change with the platform or standard library.
  EXPECT_EQ(ft::epoch_order(10, 42, 0, true),
            (std::vector<int64_t>{6, 3, 1, 7, 8, 0, 4, 2, 9, 5}));

  // The loader follows it, and a new Loader object (another process) gets the same order.
  ft::Dataset ds = ft::Dataset::open(make(n, 2, 2, 1));
  ft::LoaderOptions o;
  o.global_batch = 100;
  o.seed = 7;
  o.augment = false;
  ft::Loader l1(ds, o), l2(ds, o);
  auto b1 = epoch(l1, 3), b2 = epoch(l2, 3);
  std::vector<int64_t> got;
  for (size_t s = 0; s < b1.size(); ++s) {
    got.insert(got.end(), b1[s].indices.begin(), b1[s].indices.end());
    EXPECT_EQ(b1[s].indices, b2[s].indices);
  }
  EXPECT_EQ(got, a);
}

TEST_F(LoaderTest, AugmentationMatchesANaiveReference) {
  const int h = 5, w = 6, c = 2;
  std::vector<float> in(size_t(h * w * c)), out(in.size());
  for (size_t i = 0; i < in.size(); ++i) in[i] = float(i) + 0.5f;
  const float zero[2] = {-7.f, -9.f};
  for (int dy = -2; dy <= 2; ++dy)
    for (int dx = -3; dx <= 3; ++dx)
      for (bool flip : {false, true}) {
        ft::AugChoice a{dy, dx, flip};
        ft::augment_image(in.data(), out.data(), h, w, c, a, zero);
        for (int y = 0; y < h; ++y)
          for (int x = 0; x < w; ++x)
            for (int ch = 0; ch < c; ++ch) {
              // torchvision: pad, crop at (pad + dy, pad + dx), then mirror.
              const int xc = flip ? w - 1 - x : x;
              const int sy = y + dy, sx = xc + dx;
              const float want = (sy < 0 || sy >= h || sx < 0 || sx >= w)
                                     ? zero[ch]
                                     : in[size_t((sy * w + sx) * c + ch)];
              ASSERT_EQ(out[size_t((y * w + x) * c + ch)], want)
                  << "dy " << dy << " dx " << dx << " flip " << flip;
            }
      }
  // The choices cover the range and flip about half of the time.
  int flips = 0, lo = 0, hi = 0;
  for (int64_t i = 0; i < 4000; ++i) {
    ft::AugChoice a = ft::aug_choice(5, 1, i, 2, true);
    ASSERT_GE(a.dy, -2);
    ASSERT_LE(a.dy, 2);
    ASSERT_GE(a.dx, -2);
    ASSERT_LE(a.dx, 2);
    flips += a.flip;
    lo += a.dx == -2;
    hi += a.dy == 2;
  }
  EXPECT_NEAR(flips / 4000.0, 0.5, 0.05);
  EXPECT_NEAR(lo / 4000.0, 0.2, 0.04);
  EXPECT_NEAR(hi / 4000.0, 0.2, 0.04);
  EXPECT_FALSE(ft::aug_choice(5, 1, 3, 2, false).flip);
}

TEST_F(LoaderTest, PaddingIsARawZeroPixelAfterNormalization) {
  ft::Dataset ds = ft::Dataset::open(make(40, 4, 4, 1, 10, "d.h5", {0.5f}, {0.25f}));
  ft::LoaderOptions o;
  o.global_batch = 40;
  o.pad = 3;
  o.flip = false;
  ft::Loader l(ds, o);
  auto b = epoch(l, 0);
  ASSERT_EQ(b.size(), 1u);
  int padded = 0;
  for (float v : b[0].images) padded += v == ds.zero_value(0);
  EXPECT_GT(padded, 0);
  EXPECT_FLOAT_EQ(ds.zero_value(0), -2.f);
}

TEST_F(LoaderTest, EvaluationKeepsTheLastPartialBatchSplitOverRanks) {
  ft::Dataset ds = ft::Dataset::open(make(13, 2, 2, 1));
  ft::LoaderOptions o;
  o.global_batch = 6;
  o.shuffle = false;
  o.augment = false;
  o.drop_last = false;
  {
    ft::Loader l(ds, o);
    EXPECT_EQ(l.steps_per_epoch(), 3);
    auto b = epoch(l, 0);
    ASSERT_EQ(b.size(), 3u);
    EXPECT_EQ(b[2].n, 1);
    EXPECT_EQ(b[2].indices, std::vector<int64_t>{12});
  }
  // 3 ranks: the last global batch holds one sample; ranks 0 and 1 get none (n = 0, still a step).
  std::vector<int64_t> all;
  for (int r = 0; r < 3; ++r) {
    ft::LoaderOptions ro = o;
    ro.world = 3;
    ro.rank = r;
    ft::Loader l(ds, ro);
    auto b = epoch(l, 0);
    ASSERT_EQ(b.size(), 3u);
    EXPECT_EQ(b[0].n, 2);
    EXPECT_EQ(b[2].n, r == 2 ? 1 : 0);
    EXPECT_EQ(b[2].global_offset, r == 2 ? 0 : 0);
    for (auto& x : b)
      for (auto i : x.indices) all.push_back(i);
  }
  std::sort(all.begin(), all.end());
  std::vector<int64_t> id(13);
  std::iota(id.begin(), id.end(), 0);
  EXPECT_EQ(all, id) << "every sample exactly once over the ranks";
  ft::LoaderOptions bad = o;
  bad.world = 4;
  EXPECT_THROW(ft::Loader(ds, bad), ft::InputError);  // 6 % 4 != 0
}

TEST_F(LoaderTest, ResumingMidEpochAndSynchronousModeGiveTheSameBatches) {
  ft::Dataset ds = ft::Dataset::open(make(200, 5, 5, 1));
  ft::LoaderOptions o;
  o.global_batch = 16;
  o.seed = 99;
  ft::Loader l(ds, o);
  auto full = epoch(l, 4);
  auto tail = epoch(l, 4, 5);
  ASSERT_EQ(tail.size(), full.size() - 5);
  for (size_t i = 0; i < tail.size(); ++i) {
    EXPECT_EQ(tail[i].step_in_epoch, int64_t(i + 5));
    EXPECT_EQ(tail[i].indices, full[i + 5].indices);
    EXPECT_EQ(tail[i].images, full[i + 5].images);
  }
  ft::LoaderOptions so = o;
  so.prefetch = 0;
  ft::Loader sync(ds, so);
  auto s = epoch(sync, 4);
  ASSERT_EQ(s.size(), full.size());
  for (size_t i = 0; i < s.size(); ++i) EXPECT_EQ(s[i].images, full[i].images);
}

TEST_F(LoaderTest, PrefetchThreadShutsDownMidway) {
  ft::Dataset ds = ft::Dataset::open(make(500, 8, 8, 1));
  ft::LoaderOptions o;
  o.global_batch = 10;
  o.prefetch = 3;
  const auto t0 = std::chrono::steady_clock::now();
  for (int rep = 0; rep < 20; ++rep) {
    ft::Loader l(ds, o);
    l.start_epoch(0);
    ft::Batch b;
    ASSERT_TRUE(l.next(b));
    l.start_epoch(1);  // abandon epoch 0 midway
    ASSERT_TRUE(l.next(b));
    EXPECT_EQ(b.epoch, 1);
    EXPECT_EQ(b.step_in_epoch, 0);
    l.start_epoch(2, 3);
    // destroyed here with the thread blocked on a full queue
  }
  {
    ft::Loader never_started(ds, o);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 10.0);
}

TEST_F(LoaderTest, PrefetchThreadExceptionsReachNext) {
  const std::string p = (dir_ / "nan.h5").string();
  {
    std::lock_guard<std::mutex> lock(ft::h5_mutex());
    ft::h5::AtomicFile f(p);
    std::vector<float> px(40 * 4, 0.5f);
    px[35 * 4 + 1] = std::nanf("");
    std::vector<int32_t> lab(40, 1);
    ft::h5::write_dataset<float>(f, "images", px.data(), {40, 2, 2, 1});
    ft::h5::write_dataset<int32_t>(f, "labels", lab.data(), {40});
    ft::h5::write_attr(f, "num_classes", int64_t(2));
    f.commit();
  }
  ft::Dataset ds = ft::Dataset::open(p, 0);  // on demand: NaN found when read
  ft::LoaderOptions o;
  o.global_batch = 10;
  o.shuffle = false;
  ft::Loader l(ds, o);
  l.start_epoch(0);
  ft::Batch b;
  int ok = 0;
  try {
    while (l.next(b)) ++ok;
    ADD_FAILURE() << "no exception";
  } catch (const ft::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("sample 35"), std::string::npos) << e.what();
  }
  EXPECT_EQ(ok, 3);  // the batches before the bad one arrive first
}

TEST_F(LoaderTest, ThroughputOf28x28IsFarAboveTraining) {
  ft::Dataset ds = ft::Dataset::open(make(20000, 28, 28, 1, 10, "d.h5", {0.286f}, {0.353f}));
  ft::LoaderOptions o;
  o.global_batch = 256;
  ft::Loader l(ds, o);
  const auto t0 = std::chrono::steady_clock::now();
  l.start_epoch(0);
  ft::Batch b;
  int64_t images = 0;
  while (l.next(b)) images += b.n;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double ips = double(images) / s;
  std::printf("[ loader ] %.0f images/s (28x28x1, shuffle + crop + flip, prefetch thread)\n", ips);
#ifdef NDEBUG
  // Lenient (~700k images per CPU-second measured on one core): the test machine is shared.
  EXPECT_GT(ips, 20000.0);
#endif
}

}  // namespace
