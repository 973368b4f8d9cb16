/// @brief Converters (ConvertTest): synthetic Fashion-MNIST IDX .gz, CIFAR-10 .bin and PNG/JPEG
/// folders generated here, their validation errors, resizing, and the real Fashion-MNIST when
/// installed (/usr/share/datasets/fashion-mnist).
#include <gtest/gtest.h>
#include <jpeglib.h>
#include <png.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "firetrain/core/error.hpp"
#include "firetrain/data/convert.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/h5.hpp"

namespace {

namespace fs = std::filesystem;

void put_be32(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(uint8_t(x >> s));
}

void write_gz(const std::string& path, const std::vector<uint8_t>& data) {
  gzFile g = gzopen(path.c_str(), "wb");
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(gzwrite(g, data.data(), unsigned(data.size())), int(data.size()));
  gzclose(g);
}

void write_png(const std::string& path, int h, int w, int channels, const uint8_t* px) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = png_uint_32(w);
  img.height = png_uint_32(h);
  img.format = channels == 1 ? PNG_FORMAT_GRAY : channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_RGBA;
  ASSERT_TRUE(png_image_write_to_file(&img, path.c_str(), 0, px, 0, nullptr)) << img.message;
}

void write_jpeg(const std::string& path, int h, int w, const uint8_t* rgb) {
  FILE* fp = std::fopen(path.c_str(), "wb");
  ASSERT_NE(fp, nullptr);
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, fp);
  c.image_width = JDIMENSION(w);
  c.image_height = JDIMENSION(h);
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 95, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(rgb) + size_t(c.next_scanline) * size_t(w) * 3;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::fclose(fp);
}

class ConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("firetrain_cv_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "src");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string src(const std::string& name = "") const { return (dir_ / "src" / name).string(); }
  std::string out(const std::string& name = "") const { return (dir_ / "out" / name).string(); }

  /// IDX files for n images of h x w: pixel (i, p) = (i * 31 + p) % 256, label i % 10.
  void write_idx(const std::string& prefix, uint32_t n, uint32_t h, uint32_t w) {
    std::vector<uint8_t> im, lb;
    put_be32(im, 0x803);
    put_be32(im, n);
    put_be32(im, h);
    put_be32(im, w);
    for (uint32_t i = 0; i < n; ++i)
      for (uint32_t p = 0; p < h * w; ++p) im.push_back(uint8_t((i * 31 + p) % 256));
    put_be32(lb, 0x801);
    put_be32(lb, n);
    for (uint32_t i = 0; i < n; ++i) lb.push_back(uint8_t(i % 10));
    write_gz(src(prefix + "-images-idx3-ubyte.gz"), im);
    write_gz(src(prefix + "-labels-idx1-ubyte.gz"), lb);
  }

  template <class Fn>
  void expect_input_error(Fn fn, const std::vector<std::string>& words) {
    try {
      fn();
      ADD_FAILURE() << "no ft::InputError (expected one mentioning " << words[0] << ")";
    } catch (const ft::InputError& e) {
      for (auto& w : words)
        EXPECT_NE(std::string(e.what()).find(w), std::string::npos)
            << "message lacks '" << w << "': " << e.what();
    }
  }

  /// Raw uint8 pixels of sample i, recovered from the normalized values.
  static std::vector<int> raw_pixels(const ft::Dataset& ds, int64_t i) {
    std::vector<float> v(size_t(ds.sample_size()));
    ds.read_images(&i, 1, v.data());
    std::vector<int> r;
    for (size_t j = 0; j < v.size(); ++j) {
      const int c = int(j % size_t(ds.channels()));
      const double m = ds.mean().empty() ? 0 : ds.mean()[size_t(c)];
      const double s = ds.stddev().empty() ? 1 : ds.stddev()[size_t(c)];
      r.push_back(int(std::lround((v[j] * s + m) * 255.0)));
    }
    return r;
  }

  fs::path dir_;
};

TEST_F(ConvertTest, FashionMnistIdxToDatasets) {
  write_idx("train", 30, 4, 5);
  write_idx("t10k", 10, 4, 5);
  ft::convert_fashion_mnist(src(), out());
  ft::Dataset tr = ft::Dataset::open(out("fashion-mnist-train.h5"));
  ft::Dataset te = ft::Dataset::open(out("fashion-mnist-test.h5"));
  EXPECT_EQ(tr.size(), 30);
  EXPECT_EQ(te.size(), 10);
  EXPECT_EQ(tr.height(), 4);
  EXPECT_EQ(tr.width(), 5);
  EXPECT_EQ(tr.channels(), 1);
  EXPECT_EQ(tr.num_classes(), 10);
  EXPECT_EQ(tr.class_names()[0], "T-shirt/top");
  EXPECT_EQ(tr.class_names()[9], "Ankle boot");
  for (int64_t i = 0; i < 30; ++i) EXPECT_EQ(tr.label(i), int32_t(i % 10));
  auto px = raw_pixels(tr, 7);
  for (int p = 0; p < 20; ++p) ASSERT_EQ(px[size_t(p)], (7 * 31 + p) % 256);
  // mean/std over the training pixels, written into both files.
  double s = 0, sq = 0;
  for (int i = 0; i < 30; ++i)
    for (int p = 0; p < 20; ++p) {
      const double x = ((i * 31 + p) % 256) / 255.0;
      s += x;
      sq += x * x;
    }
  const double m = s / 600, sd = std::sqrt(sq / 600 - m * m);
  ASSERT_EQ(tr.mean().size(), 1u);
  EXPECT_NEAR(tr.mean()[0], m, 1e-6);
  EXPECT_NEAR(tr.stddev()[0], sd, 1e-6);
  EXPECT_EQ(te.mean(), tr.mean());
  EXPECT_EQ(te.stddev(), tr.stddev());
}

TEST_F(ConvertTest, FashionMnistBadFilesNameTheFile) {
  expect_input_error([&] { ft::convert_fashion_mnist(src(), out()); },
                     {"train-images-idx3-ubyte.gz", "no such file"});
  write_idx("train", 30, 4, 5);
  write_idx("t10k", 10, 4, 5);
  // Bad magic.
  std::vector<uint8_t> bad;
  put_be32(bad, 0x802);
  put_be32(bad, 10);
  write_gz(src("t10k-labels-idx1-ubyte.gz"), bad);
  expect_input_error([&] { ft::convert_fashion_mnist(src(), out()); },
                     {"t10k-labels-idx1-ubyte.gz", "magic"});
  // Truncated data.
  bad.clear();
  put_be32(bad, 0x801);
  put_be32(bad, 10);
  for (int i = 0; i < 7; ++i) bad.push_back(1);
  write_gz(src("t10k-labels-idx1-ubyte.gz"), bad);
  expect_input_error([&] { ft::convert_fashion_mnist(src(), out()); },
                     {"t10k-labels-idx1-ubyte.gz", "size"});
  // Count mismatch.
  write_idx("t10k", 10, 4, 5);
  bad.clear();
  put_be32(bad, 0x801);
  put_be32(bad, 9);
  for (int i = 0; i < 9; ++i) bad.push_back(1);
  write_gz(src("t10k-labels-idx1-ubyte.gz"), bad);
  expect_input_error([&] { ft::convert_fashion_mnist(src(), out()); },
                     {"t10k-labels-idx1-ubyte.gz", "9 labels for 10 images"});
  // Not gzip at all: zlib reads plain files transparently, so this is a bad magic.
  std::ofstream(src("t10k-labels-idx1-ubyte.gz")) << "hello";
  expect_input_error([&] { ft::convert_fashion_mnist(src(), out()); },
                     {"t10k-labels-idx1-ubyte.gz"});
}

TEST_F(ConvertTest, Cifar10BinaryToHwcDatasets) {
  auto batch = [&](const std::string& name, int n, int first) {
    std::ofstream f(src(name), std::ios::binary);
    for (int r = 0; r < n; ++r) {
      const int id = first + r;
      f.put(char(id % 10));
      for (int c = 0; c < 3; ++c)
        for (int p = 0; p < 1024; ++p) f.put(char((id * 7 + c * 50 + p) % 256));
    }
  };
  for (int b = 1; b <= 5; ++b) batch("data_batch_" + std::to_string(b) + ".bin", 3, (b - 1) * 3);
  batch("test_batch.bin", 2, 100);
  {
    std::ofstream m(src("batches.meta.txt"));
    for (const char* n : {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                          "ship", "truck"})
      m << n << "\n";
    m << "\n";
  }
  ft::convert_cifar10(src(), out());
  ft::Dataset tr = ft::Dataset::open(out("cifar10-train.h5"));
  ft::Dataset te = ft::Dataset::open(out("cifar10-test.h5"));
  EXPECT_EQ(tr.size(), 15);
  EXPECT_EQ(te.size(), 2);
  EXPECT_EQ(tr.height(), 32);
  EXPECT_EQ(tr.width(), 32);
  EXPECT_EQ(tr.channels(), 3);
  EXPECT_EQ(tr.class_names()[1], "automobile");
  EXPECT_EQ(tr.label(13), 3);
  EXPECT_EQ(te.label(1), 1);
  ASSERT_EQ(tr.mean().size(), 3u);
  auto px = raw_pixels(tr, 13);
  for (int p = 0; p < 1024; p += 37)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(px[size_t(p * 3 + c)], (13 * 7 + c * 50 + p) % 256);
  // A file of the wrong size.
  std::ofstream(src("data_batch_3.bin"), std::ios::binary) << "short";
  expect_input_error([&] { ft::convert_cifar10(src(), out()); }, {"data_batch_3.bin", "size"});
}

TEST_F(ConvertTest, ImageFolderPngAndJpeg) {
  fs::create_directories(src("zebra"));
  fs::create_directories(src("ant"));
  fs::create_directories(src("cat"));
  // ant: a 20x30 red RGB PNG and a gray 8x8 PNG; cat: a blue-ish 40x20 JPEG and an RGBA PNG;
  // zebra: a 16x16 green JPEG. A text file is ignored.
  std::vector<uint8_t> red(20 * 30 * 3), gray(64, 77), blue(40 * 20 * 3), rgba(12 * 12 * 4, 0),
      green(16 * 16 * 3);
  for (size_t i = 0; i < rgba.size(); i += 4) rgba[i] = 10, rgba[i + 1] = 20, rgba[i + 2] = 30,
                                              rgba[i + 3] = 100;  // alpha is dropped
  for (size_t i = 0; i < red.size(); i += 3) red[i] = 200, red[i + 1] = 10, red[i + 2] = 20;
  for (size_t i = 0; i < blue.size(); i += 3) blue[i] = 30, blue[i + 1] = 60, blue[i + 2] = 220;
  for (size_t i = 0; i < green.size(); i += 3) green[i] = 0, green[i + 1] = 180, green[i + 2] = 0;
  write_png(src("ant/b.png"), 20, 30, 3, red.data());
  write_png(src("ant/a.PNG"), 8, 8, 1, gray.data());
  write_jpeg(src("cat/x.jpg"), 40, 20, blue.data());
  write_png(src("cat/y.png"), 12, 12, 4, rgba.data());
  write_jpeg(src("zebra/z.jpeg"), 16, 16, green.data());
  std::ofstream(src("zebra/notes.txt")) << "not an image";
  const std::string o = (dir_ / "folder.h5").string();
  ft::convert_folder(src(), o, 12);
  ft::Dataset ds = ft::Dataset::open(o);
  EXPECT_EQ(ds.size(), 5);
  EXPECT_EQ(ds.height(), 12);
  EXPECT_EQ(ds.width(), 12);
  EXPECT_EQ(ds.channels(), 3);
  EXPECT_EQ(ds.num_classes(), 3);
  EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"ant", "cat", "zebra"}));
  EXPECT_EQ(ds.labels(), (std::vector<int32_t>{0, 0, 1, 1, 2}));
  auto gray_px = raw_pixels(ds, 0);  // ant/a.PNG sorts before ant/b.png
  for (int v : gray_px) ASSERT_EQ(v, 77);
  auto red_px = raw_pixels(ds, 1);
  for (size_t i = 0; i < red_px.size(); i += 3) {
    ASSERT_EQ(red_px[i], 200);
    ASSERT_EQ(red_px[i + 1], 10);
    ASSERT_EQ(red_px[i + 2], 20);
  }
  auto blue_px = raw_pixels(ds, 2);  // JPEG: lossy
  for (size_t i = 0; i < blue_px.size(); i += 3) {
    ASSERT_NEAR(blue_px[i], 30, 6);
    ASSERT_NEAR(blue_px[i + 1], 60, 6);
    ASSERT_NEAR(blue_px[i + 2], 220, 6);
  }
  auto rgba_px = raw_pixels(ds, 3);
  for (size_t i = 0; i < rgba_px.size(); i += 3) {
    ASSERT_EQ(rgba_px[i], 10);
    ASSERT_EQ(rgba_px[i + 1], 20);
    ASSERT_EQ(rgba_px[i + 2], 30);
  }
  // An unreadable image names the file.
  std::ofstream(src("cat/broken.jpg")) << "\xFF\xD8\xFF garbage";
  expect_input_error([&] { ft::convert_folder(src(), o, 12); }, {"broken.jpg", "JPEG"});
  std::ofstream(src("cat/broken.jpg")) << "plain text";
  expect_input_error([&] { ft::convert_folder(src(), o, 12); },
                     {"broken.jpg", "not a JPEG or PNG"});
  expect_input_error([&] { ft::convert_folder(src("nope"), o, 12); }, {"nope", "no such"});
}

TEST_F(ConvertTest, ResizeShorterSideThenCenterCrop) {
  // A horizontal ramp 10 x 40 -> shorter side 5 (20 wide), crop 5 x 5 from the middle.
  const int h = 10, w = 40;
  std::vector<uint8_t> img(size_t(h * w * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) img[size_t((y * w + x) * 3 + c)] = uint8_t(x * 6 + c);
  auto r = ft::resize_center_crop(img, h, w, 5);
  ASSERT_EQ(r.size(), 75u);
  // Output column x of the 20-wide image covers source columns 2x, 2x+1 -> value ~ (4x + 1) * 3
  // around the center; the crop starts at column 8 of 20.
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 5; ++x) {
      const double src_center = (x + 8 + 0.5) * 2 - 0.5;
      EXPECT_NEAR(r[size_t((y * 5 + x) * 3)], src_center * 6, 1.01) << x;
    }
  // Identity when already size x size; upscaling a constant stays constant.
  std::vector<uint8_t> sq(4 * 4 * 3, 9);
  EXPECT_EQ(ft::resize_center_crop(sq, 4, 4, 4), sq);
  for (uint8_t v : ft::resize_center_crop(sq, 4, 4, 9)) ASSERT_EQ(v, 9);
}

TEST_F(ConvertTest, RealFashionMnist) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << dir << " is not installed (Debian package dataset-fashion-mnist)";
  ft::convert_fashion_mnist(dir, out());
  ft::Dataset tr = ft::Dataset::open(out("fashion-mnist-train.h5"));
  ft::Dataset te = ft::Dataset::open(out("fashion-mnist-test.h5"));
  EXPECT_EQ(tr.size(), 60000);
  EXPECT_EQ(te.size(), 10000);
  for (auto* ds : {&tr, &te}) {
    EXPECT_EQ(ds->height(), 28);
    EXPECT_EQ(ds->width(), 28);
    EXPECT_EQ(ds->channels(), 1);
    EXPECT_EQ(ds->num_classes(), 10);
  }
  std::vector<int64_t> counts(10, 0), tcounts(10, 0);
  for (auto l : tr.labels()) counts[size_t(l)]++;
  for (auto l : te.labels()) tcounts[size_t(l)]++;
  EXPECT_EQ(counts, std::vector<int64_t>(10, 6000));
  EXPECT_EQ(tcounts, std::vector<int64_t>(10, 1000));
  // The well-known training statistics (torchvision users write 0.2860 / 0.3530).
  EXPECT_NEAR(tr.mean()[0], 0.2860, 1e-3);
  EXPECT_NEAR(tr.stddev()[0], 0.3530, 1e-3);
  EXPECT_LT(fs::file_size(out("fashion-mnist-train.h5")), 47000000u) << "gzip did not compress";
}

}  // namespace
