/// @brief The dataset contract (DatasetTest): writer/reader round trip, normalization, cached vs
/// on-demand reads, and one ft::InputError naming the file and the problem per bad file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "firetrain/core/error.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/h5.hpp"

namespace {

namespace fs = std::filesystem;

/// What a (possibly broken) dataset file holds; write_spec() writes it with raw HDF5 types.
struct Spec {
  hid_t image_type = H5T_STD_U8LE;
  std::vector<int64_t> image_shape = {6, 4, 5, 1};
  std::vector<double> pixels;  // empty: a pattern
  bool images = true, labels = true;
  hid_t label_type = H5T_STD_I32LE;
  std::vector<int64_t> label_shape = {6};
  std::vector<double> label_values;  // empty: i % 3
  bool num_classes = true;
  double num_classes_value = 3;
  std::vector<float> mean, std;
  std::vector<std::string> names_attr, names_dataset;
};

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("firetrain_ds_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  std::string write_spec(const Spec& s, const std::string& name = "d.h5") {
    const std::string p = file(name);
    std::lock_guard<std::mutex> lock(ft::h5_mutex());
    ft::h5::AtomicFile f(p);
    if (s.images) {
      int64_t n = 1;
      for (auto d : s.image_shape) n *= d;
      std::vector<double> px = s.pixels;
      if (px.empty())
        for (int64_t i = 0; i < n; ++i) px.push_back(double((i * 37) % 256));
      ft::h5::Handle d = ft::h5::create_dataset(f, "images", s.image_type, s.image_shape);
      if (n) ft::h5::write_all(d, H5T_NATIVE_DOUBLE, px.data());
    }
    if (s.labels) {
      int64_t n = 1;
      for (auto d : s.label_shape) n *= d;
      std::vector<double> lv = s.label_values;
      if (lv.empty())
        for (int64_t i = 0; i < n; ++i) lv.push_back(double(i % 3));
      ft::h5::Handle d = ft::h5::create_dataset(f, "labels", s.label_type, s.label_shape);
      if (n) ft::h5::write_all(d, H5T_NATIVE_DOUBLE, lv.data());
    }
    if (s.num_classes) {
      if (s.num_classes_value == std::floor(s.num_classes_value))
        ft::h5::write_attr(f, "num_classes", int64_t(s.num_classes_value));
      else
        ft::h5::write_attr(f, "num_classes", s.num_classes_value);
    }
    if (!s.mean.empty()) ft::h5::write_attr(f, "mean", s.mean);
    if (!s.std.empty()) ft::h5::write_attr(f, "std", s.std);
    if (!s.names_attr.empty()) ft::h5::write_attr(f, "class_names", s.names_attr);
    if (!s.names_dataset.empty()) {
      ft::h5::Handle t = ft::h5::type_handle(FT_H5_ID(H5Tcopy(H5T_C_S1)));
      FT_H5(H5Tset_size(t, H5T_VARIABLE));
      std::vector<const char*> ptr;
      for (auto& n : s.names_dataset) ptr.push_back(n.c_str());
      ft::h5::Handle d =
          ft::h5::create_dataset(f, "class_names", t, {int64_t(s.names_dataset.size())});
      ft::h5::write_all(d, t, ptr.data());
    }
    f.commit();
    return p;
  }

  /// Expects Dataset::open (and, if given, a read) to throw ft::InputError naming the file and
  /// containing every word.
  void expect_bad(const Spec& s, const std::vector<std::string>& words, bool on_read = false,
                  int64_t cache_bytes = 4LL << 30) {
    const std::string p = write_spec(s);
    try {
      ft::Dataset ds = ft::Dataset::open(p, cache_bytes);
      if (on_read) {
        std::vector<int64_t> idx(size_t(ds.size()));
        for (size_t i = 0; i < idx.size(); ++i) idx[i] = int64_t(i);
        std::vector<float> out(idx.size() * size_t(ds.sample_size()));
        ds.read_images(idx.data(), int(idx.size()), out.data());
      }
      ADD_FAILURE() << "no ft::InputError for a dataset that should fail with '" << words[0]
                    << "'";
    } catch (const ft::InputError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << "message lacks the file name: " << msg;
      for (auto& w : words)
        EXPECT_NE(msg.find(w), std::string::npos) << "message lacks '" << w << "': " << msg;
    }
  }

  fs::path dir_;
};

TEST_F(DatasetTest, WriteThenOpenRoundTripsAndNormalizes) {
  const int n = 7, h = 3, w = 4, c = 3;
  std::vector<uint8_t> img(size_t(n * h * w * c));
  for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t((i * 29 + 3) % 256);
  std::vector<int32_t> lab = {0, 1, 2, 3, 0, 1, 2};
  const std::vector<float> mean = {0.5f, 0.25f, 0.125f}, sd = {0.5f, 0.2f, 0.1f};
  const std::string p = file("rt.h5");
  ft::write_dataset(p, img.data(), lab.data(), n, h, w, c, 4, {"a", "b", "c", "d"}, mean, sd);
  EXPECT_FALSE(fs::exists(p + ".tmp." + std::to_string(getpid())));
  for (int64_t cache : {int64_t(4) << 30, int64_t(0)}) {
    ft::Dataset ds = ft::Dataset::open(p, cache);
    EXPECT_EQ(ds.cached(), cache > 0);
    EXPECT_EQ(ds.size(), n);
    EXPECT_EQ(ds.height(), h);
    EXPECT_EQ(ds.width(), w);
    EXPECT_EQ(ds.channels(), c);
    EXPECT_EQ(ds.num_classes(), 4);
    EXPECT_EQ(ds.path(), p);
    EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"a", "b", "c", "d"}));
    EXPECT_EQ(ds.mean(), mean);
    EXPECT_EQ(ds.stddev(), sd);
    for (int i = 0; i < n; ++i) EXPECT_EQ(ds.label(i), lab[size_t(i)]);
    const std::vector<int64_t> idx = {5, 0, 5, 2};  // unsorted, with a repeat
    std::vector<float> out(idx.size() * size_t(h * w * c));
    ds.read_images(idx.data(), int(idx.size()), out.data());
    for (size_t k = 0; k < idx.size(); ++k)
      for (int j = 0; j < h * w * c; ++j) {
        const int ch = j % c;
        const double x = img[size_t(idx[k]) * h * w * c + size_t(j)] / 255.0;
        ASSERT_NEAR(out[k * size_t(h * w * c) + size_t(j)], (x - mean[size_t(ch)]) / sd[size_t(ch)],
                    1e-5);
      }
    EXPECT_NEAR(ds.zero_value(1), (0 - 0.25) / 0.2, 1e-6);
  }
}

TEST_F(DatasetTest, WithoutMeanStdPixelsAreDividedBy255AndNamesDefault) {
  Spec s;
  const std::string p = write_spec(s);
  ft::Dataset ds = ft::Dataset::open(p);
  EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"0", "1", "2"}));
  std::vector<float> out(size_t(ds.sample_size()));
  const int64_t i = 1;
  ds.read_images(&i, 1, out.data());
  for (int j = 0; j < 20; ++j) EXPECT_FLOAT_EQ(out[size_t(j)], float(((20 + j) * 37) % 256) / 255.f);
}

TEST_F(DatasetTest, FloatImagesAreUsedAsTheyAre) {
  Spec s;
  s.image_type = H5T_IEEE_F32LE;
  for (int i = 0; i < 6 * 20; ++i) s.pixels.push_back(0.25 * i - 3);
  s.mean = {100.f};  // ignored for float pixels
  s.std = {7.f};
  const std::string p = write_spec(s);
  for (int64_t cache : {int64_t(1) << 20, int64_t(0)}) {
    ft::Dataset ds = ft::Dataset::open(p, cache);
    EXPECT_FALSE(ds.is_uint8());
    std::vector<float> out(size_t(ds.sample_size()) * 2);
    const int64_t idx[2] = {3, 0};
    ds.read_images(idx, 2, out.data());
    EXPECT_FLOAT_EQ(out[0], 0.25f * 60 - 3);
    EXPECT_FLOAT_EQ(out[20], -3.f);
    EXPECT_EQ(ds.zero_value(0), 0.f);
  }
}

TEST_F(DatasetTest, OtherIntegerLabelTypesAndClassNamesDatasetAreAccepted) {
  for (hid_t t : {H5T_STD_U8LE, H5T_STD_I64LE, H5T_STD_U16BE}) {
    Spec s;
    s.label_type = t;
    s.names_dataset = {"x", "y", "z"};
    ft::Dataset ds = ft::Dataset::open(write_spec(s));
    EXPECT_EQ(ds.label(4), 1);
    EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"x", "y", "z"}));
  }
}

TEST_F(DatasetTest, CachedAndOnDemandReadsAgreeAcrossThreads) {
  const int n = 600, h = 8, w = 8;
  std::vector<uint8_t> img(size_t(n * h * w));
  for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t((i * 131 + i / 64) % 256);
  std::vector<int32_t> lab(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) lab[size_t(i)] = i % 10;
  const std::string p = file("big.h5");
  ft::write_dataset(p, img.data(), lab.data(), n, h, w, 1, 10, {}, {0.3f}, {0.4f});
  ft::Dataset cached = ft::Dataset::open(p), lazy = ft::Dataset::open(p, 0);
  ASSERT_TRUE(cached.cached());
  ASSERT_FALSE(lazy.cached());
  auto check = [&](int seed) {
    std::vector<int64_t> idx(64);
    for (int rep = 0; rep < 20; ++rep) {
      for (size_t k = 0; k < idx.size(); ++k) idx[k] = int64_t((k * 97 + size_t(rep * 13 + seed)) % n);
      std::vector<float> a(idx.size() * 64), b(idx.size() * 64);
      cached.read_images(idx.data(), int(idx.size()), a.data());
      lazy.read_images(idx.data(), int(idx.size()), b.data());
      if (a != b) return false;
    }
    return true;
  };
  bool ok1 = false, ok2 = false;
  std::thread t1([&] { ok1 = check(1); }), t2([&] { ok2 = check(2); });
  t1.join();
  t2.join();
  EXPECT_TRUE(ok1);
  EXPECT_TRUE(ok2);
}

TEST_F(DatasetTest, MissingFileAndNonHdf5) {
  const std::string missing = file("missing.h5");
  try {
    ft::Dataset::open(missing);
    ADD_FAILURE() << "no error";
  } catch (const ft::InputError& e) {
    EXPECT_EQ(std::string(e.what()), missing + ": no such file");
  }
  const std::string text = file("text.h5");
  std::ofstream(text) << "not hdf5";
  try {
    ft::Dataset::open(text);
    ADD_FAILURE() << "no error";
  } catch (const ft::InputError& e) {
    EXPECT_EQ(std::string(e.what()), text + ": not an HDF5 file");
  }
}

TEST_F(DatasetTest, MissingImagesOrLabels) {
  Spec s;
  s.images = false;
  expect_bad(s, {"/images", "missing"});
  s = Spec();
  s.labels = false;
  expect_bad(s, {"/labels", "missing"});
}

TEST_F(DatasetTest, WrongImageDtype) {
  Spec s;
  s.image_type = H5T_STD_I16LE;
  expect_bad(s, {"/images", "dtype", "int16"});
  s.image_type = H5T_IEEE_F64LE;
  expect_bad(s, {"/images", "dtype", "float64"});
}

TEST_F(DatasetTest, WrongImageRank) {
  Spec s;
  s.image_shape = {6, 4, 5};
  expect_bad(s, {"/images", "rank"});
}

TEST_F(DatasetTest, AbsurdOrZeroDimensions) {
  Spec s;
  s.image_shape = {1, 5000, 1, 1};
  s.label_shape = {1};
  expect_bad(s, {"/images", "H = 5000"});
  s.image_shape = {1, 4, 0, 1};
  expect_bad(s, {"/images", "W = 0"});
  s.image_shape = {6, 4, 5, 2};
  s.label_shape = {6};
  expect_bad(s, {"/images", "C = 2"});
  s.image_shape = {0, 4, 5, 1};
  s.label_shape = {0};
  expect_bad(s, {"/images", "N = 0", "empty"});
}

TEST_F(DatasetTest, LabelProblems) {
  Spec s;
  s.label_shape = {5};
  expect_bad(s, {"/labels", "mismatch", "5 labels for 6 images"});
  s = Spec();
  s.label_values = {0, 1, 2, 3, 0, 1};
  expect_bad(s, {"/labels", "out of range", "label 3 at index 3"});
  s.label_values = {0, 1, -1, 2, 0, 1};
  expect_bad(s, {"/labels", "negative"});
  s = Spec();
  s.label_type = H5T_IEEE_F32LE;
  expect_bad(s, {"/labels", "dtype", "float32"});
  s = Spec();
  s.label_shape = {6, 1};
  expect_bad(s, {"/labels", "rank"});
}

TEST_F(DatasetTest, NumClassesProblems) {
  Spec s;
  s.num_classes = false;
  expect_bad(s, {"num_classes", "missing"});
  s = Spec();
  s.num_classes_value = 0;
  expect_bad(s, {"num_classes", ">= 1"});
  s.num_classes_value = 2.5;
  expect_bad(s, {"num_classes", "integer"});
}

TEST_F(DatasetTest, MeanStdAndClassNameProblems) {
  Spec s;
  s.mean = {0.5f, 0.5f, 0.5f};
  expect_bad(s, {"mean", "length"});
  s = Spec();
  s.std = {0.f};
  expect_bad(s, {"std", "> 0"});
  s.std = {-1.f};
  expect_bad(s, {"std", "> 0"});
  s = Spec();
  s.names_attr = {"a", "b"};
  expect_bad(s, {"class_names", "2 names"});
}

TEST_F(DatasetTest, NonFiniteFloatPixels) {
  Spec s;
  s.image_type = H5T_IEEE_F32LE;
  for (int i = 0; i < 6 * 20; ++i) s.pixels.push_back(i == 47 ? std::nan("") : 0.1 * i);
  expect_bad(s, {"/images", "NaN", "sample 2"});  // cached: found at open
  s.pixels[47] = std::numeric_limits<double>::infinity();
  expect_bad(s, {"/images", "Inf", "sample 2"}, /*on_read=*/true, /*cache_bytes=*/0);
}

}  // namespace
