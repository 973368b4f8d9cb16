/// @brief Converters to the dataset contract: Fashion-MNIST (IDX .gz via zlib), CIFAR-10
/// (binary batches, CHW -> HWC) and image folders (libjpeg / libpng, resize + center crop).
#include "firetrain/data/convert.hpp"

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "firetrain/core/error.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/h5.hpp"

namespace ft {

namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------------------------------------
// Statistics.

/// Per-channel sums of x/255 and (x/255)^2 over uint8 (.., C) pixels, exact in integers.
struct ChannelStats {
  std::vector<uint64_t> sum, sq;
  uint64_t count = 0;  // pixels per channel
  explicit ChannelStats(int c) : sum(size_t(c), 0), sq(size_t(c), 0) {}
  void add(const uint8_t* px, int64_t pixels) {
    const size_t c = sum.size();
    for (int64_t i = 0; i < pixels; ++i)
      for (size_t ch = 0; ch < c; ++ch) {
        const uint64_t x = px[size_t(i) * c + ch];
        sum[ch] += x;
        sq[ch] += x * x;
      }
    count += uint64_t(pixels);
  }
  /// Mean and population std in x/255 units.
  void get(std::vector<float>& mean, std::vector<float>& std) const {
    mean.clear();
    std.clear();
    for (size_t ch = 0; ch < sum.size(); ++ch) {
      const double m = double(sum[ch]) / double(count);
      const double v = std::max(0.0, double(sq[ch]) / double(count) - m * m);
      mean.push_back(float(m / 255.0));
      // A constant image set would give std 0, which the reader rejects: fall back to 1.
      std.push_back(v > 0 ? float(std::sqrt(v) / 255.0) : 1.f);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST.

std::vector<uint8_t> read_gz(const std::string& path) {
  if (!fs::exists(path)) throw InputError(path + ": no such file");
  gzFile g = gzopen(path.c_str(), "rb");
  if (!g) throw InputError(path + ": cannot open");
  std::vector<uint8_t> out;
  std::array<uint8_t, 1 << 16> buf;
  for (;;) {
    const int r = gzread(g, buf.data(), unsigned(buf.size()));
    if (r < 0) {
      int err = 0;
      std::string msg = gzerror(g, &err);
      gzclose(g);
      throw InputError(path + ": corrupt gzip data (" + msg + ")");
    }
    if (r == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + r);
  }
  gzclose(g);
  return out;
}

uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

struct Idx {
  std::vector<uint8_t> data;  // payload after the header
  std::vector<int64_t> dims;
};

Idx read_idx(const std::string& path, int ndims) {
  std::vector<uint8_t> raw = read_gz(path);
  const size_t header = 4 + 4 * size_t(ndims);
  if (raw.size() < header)
    throw InputError(path + ": truncated IDX file (" + std::to_string(raw.size()) + " bytes)");
  const uint32_t magic = be32(raw.data());
  const uint32_t want = 0x00000800u | uint32_t(ndims);  // unsigned byte, ndims dims
  if (magic != want) {
    char b[96];
    std::snprintf(b, sizeof b, ": bad IDX magic number 0x%08x, expected 0x%08x", magic, want);
    throw InputError(path + b);
  }
  Idx idx;
  int64_t total = 1;
  for (int d = 0; d < ndims; ++d) {
    idx.dims.push_back(be32(raw.data() + 4 + 4 * d));
    total *= idx.dims.back();
  }
  if (raw.size() != header + size_t(total))
    throw InputError(path + ": bad IDX size: header says " + std::to_string(total) +
                     " bytes of data, the file holds " + std::to_string(raw.size() - header));
  idx.data.assign(raw.begin() + std::ptrdiff_t(header), raw.end());
  return idx;
}

struct Split {
  std::vector<uint8_t> images;
  std::vector<int32_t> labels;
  int64_t n = 0;
  int h = 0, w = 0;
};

Split read_mnist_split(const std::string& dir, const std::string& prefix) {
  const std::string ip = dir + "/" + prefix + "-images-idx3-ubyte.gz";
  const std::string lp = dir + "/" + prefix + "-labels-idx1-ubyte.gz";
  Idx im = read_idx(ip, 3), lb = read_idx(lp, 1);
  if (im.dims[0] != lb.dims[0])
    throw InputError(lp + ": " + std::to_string(lb.dims[0]) + " labels for " +
                     std::to_string(im.dims[0]) + " images in " + ip);
  if (im.dims[0] == 0 || im.dims[1] == 0 || im.dims[2] == 0 || im.dims[1] > 4096 ||
      im.dims[2] > 4096)
    throw InputError(ip + ": bad image dimensions " + std::to_string(im.dims[0]) + " x " +
                     std::to_string(im.dims[1]) + " x " + std::to_string(im.dims[2]));
  Split s;
  s.n = im.dims[0];
  s.h = int(im.dims[1]);
  s.w = int(im.dims[2]);
  s.images = std::move(im.data);
  s.labels.resize(size_t(s.n));
  for (int64_t i = 0; i < s.n; ++i) {
    if (lb.data[size_t(i)] > 9)
      throw InputError(lp + ": label " + std::to_string(lb.data[size_t(i)]) + " at index " +
                       std::to_string(i) + " out of range [0, 10)");
    s.labels[size_t(i)] = lb.data[size_t(i)];
  }
  return s;
}

void ensure_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw InputError(dir + ": cannot create the output directory");
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10.

constexpr int kCifarRecord = 1 + 3072;

void read_cifar_file(const std::string& path, Split& s) {
  if (!fs::exists(path)) throw InputError(path + ": no such file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path + ": cannot open");
  std::vector<uint8_t> raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (raw.empty() || raw.size() % kCifarRecord != 0)
    throw InputError(path + ": bad size " + std::to_string(raw.size()) +
                     " bytes, expected a positive multiple of 3073 (1 label + 3x32x32 pixels)");
  const int64_t n = int64_t(raw.size() / kCifarRecord);
  const size_t base = s.images.size();
  s.images.resize(base + size_t(n) * 3072);
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t* rec = raw.data() + size_t(r) * kCifarRecord;
    if (rec[0] > 9)
      throw InputError(path + ": label " + std::to_string(rec[0]) + " in record " +
                       std::to_string(r) + " out of range [0, 10)");
    s.labels.push_back(rec[0]);
    uint8_t* dst = s.images.data() + base + size_t(r) * 3072;  // (32, 32, 3)
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p) dst[p * 3 + c] = rec[1 + c * 1024 + p];
  }
  s.n += n;
  s.h = s.w = 32;
}

// ---------------------------------------------------------------------------------------------
// Images.

struct JpegErr {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char msg[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegErr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->msg);
  std::longjmp(e->jump, 1);
}

/// Decodes with libjpeg; returns false (and the library's message) on failure. Kept free of
/// C++ objects with destructors between setjmp and longjmp.
bool decode_jpeg(FILE* fp, std::vector<uint8_t>& out, int& h, int& w, std::string& err) {
  jpeg_decompress_struct cinfo;
  JpegErr jerr;
  cinfo.err = jpeg_std_error(&jerr.mgr);
  jerr.mgr.error_exit = jpeg_error_exit;
  jerr.mgr.output_message = [](j_common_ptr) {};  // warnings: quiet (errors are thrown)
  jerr.msg[0] = '\0';
  if (setjmp(jerr.jump)) {
    jpeg_destroy_decompress(&cinfo);
    err = jerr.msg;
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, fp);
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;  // grayscale and YCbCr -> RGB (CMYK fails: an error)
  jpeg_start_decompress(&cinfo);
  h = int(cinfo.output_height);
  w = int(cinfo.output_width);
  out.resize(size_t(h) * size_t(w) * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.data() + size_t(cinfo.output_scanline) * size_t(w) * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

/// Separable resampling with a triangle (bilinear) filter widened by the scale when
/// shrinking (as PIL's BILINEAR), so downscaling does not alias. in (h, w, 3) -> (oh, ow, 3).
std::vector<float> resample(const std::vector<float>& in, int h, int w, int oh, int ow) {
  auto weights = [](int n_in, int n_out, std::vector<int>& first, std::vector<int>& count,
                    std::vector<float>& wt, int& stride) {
    const double scale = double(n_in) / n_out, support = std::max(1.0, scale);
    stride = int(std::ceil(support)) * 2 + 1;
    first.assign(size_t(n_out), 0);
    count.assign(size_t(n_out), 0);
    wt.assign(size_t(n_out) * size_t(stride), 0.f);
    for (int o = 0; o < n_out; ++o) {
      const double center = (o + 0.5) * scale;
      int lo = std::max(0, int(std::floor(center - support)));
      int hi = std::min(n_in, int(std::ceil(center + support)));
      double total = 0;
      std::vector<double> tmp;
      for (int x = lo; x < hi; ++x) {
        const double t = std::max(0.0, 1.0 - std::abs((x + 0.5 - center) / support));
        tmp.push_back(t);
        total += t;
      }
      // Trim leading/trailing zero weights so count <= stride.
      int a = 0, b = int(tmp.size());
      while (a < b && tmp[size_t(a)] == 0) ++a;
      while (b > a && tmp[size_t(b - 1)] == 0) --b;
      if (a == b) {  // cannot happen for n_in >= 1, but stay safe: nearest pixel
        a = 0;
        b = 1;
        tmp.assign(1, 1.0);
        total = 1;
        lo = std::min(n_in - 1, std::max(0, int(center)));
      }
      first[size_t(o)] = lo + a;
      count[size_t(o)] = std::min(b - a, stride);
      for (int k = 0; k < count[size_t(o)]; ++k)
        wt[size_t(o) * stride + k] = float(tmp[size_t(a + k)] / total);
    }
  };
  std::vector<int> fx, cx, fy, cy;
  std::vector<float> wx, wy;
  int sx = 0, sy = 0;
  weights(w, ow, fx, cx, wx, sx);
  weights(h, oh, fy, cy, wy, sy);
  std::vector<float> mid(size_t(h) * ow * 3, 0.f), out(size_t(oh) * ow * 3, 0.f);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < ow; ++x)
      for (int k = 0; k < cx[size_t(x)]; ++k) {
        const float t = wx[size_t(x) * sx + k];
        const float* p = &in[(size_t(y) * w + size_t(fx[size_t(x)] + k)) * 3];
        float* q = &mid[(size_t(y) * ow + x) * 3];
        q[0] += t * p[0];
        q[1] += t * p[1];
        q[2] += t * p[2];
      }
  for (int y = 0; y < oh; ++y)
    for (int k = 0; k < cy[size_t(y)]; ++k) {
      const float t = wy[size_t(y) * sy + k];
      const float* p = &mid[size_t(fy[size_t(y)] + k) * ow * 3];
      float* q = &out[size_t(y) * ow * 3];
      for (int i = 0; i < ow * 3; ++i) q[i] += t * p[i];
    }
  return out;
}

std::string lower(std::string s) {
  for (auto& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

void convert_fashion_mnist(const std::string& src_dir, const std::string& out_dir) {
  static const std::vector<std::string> kNames = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                                  "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                                  "Bag",         "Ankle boot"};
  Split train = read_mnist_split(src_dir, "train");
  Split test = read_mnist_split(src_dir, "t10k");
  if (test.h != train.h || test.w != train.w)
    throw InputError(src_dir + "/t10k-images-idx3-ubyte.gz: images are " +
                     std::to_string(test.h) + "x" + std::to_string(test.w) +
                     ", the training images " + std::to_string(train.h) + "x" +
                     std::to_string(train.w));
  ChannelStats st(1);
  st.add(train.images.data(), train.n * train.h * train.w);
  std::vector<float> mean, std;
  st.get(mean, std);
  ensure_dir(out_dir);
  write_dataset(out_dir + "/fashion-mnist-train.h5", train.images.data(), train.labels.data(),
                train.n, train.h, train.w, 1, 10, kNames, mean, std);
  write_dataset(out_dir + "/fashion-mnist-test.h5", test.images.data(), test.labels.data(),
                test.n, test.h, test.w, 1, 10, kNames, mean, std);
}

void convert_cifar10(const std::string& src_dir, const std::string& out_dir) {
  std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                    "dog",      "frog",       "horse", "ship", "truck"};
  const std::string meta = src_dir + "/batches.meta.txt";
  if (fs::exists(meta)) {
    std::ifstream f(meta);
    std::vector<std::string> read;
    for (std::string line; std::getline(f, line);) {
      while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back())))
        line.pop_back();
      size_t b = 0;
      while (b < line.size() && std::isspace(static_cast<unsigned char>(line[b]))) ++b;
      if (b < line.size()) read.push_back(line.substr(b));
    }
    if (read.size() != 10)
      throw InputError(meta + ": " + std::to_string(read.size()) +
                       " class names, expected 10 (one per line)");
    names = read;
  }
  Split train, test;
  for (int i = 1; i <= 5; ++i)
    read_cifar_file(src_dir + "/data_batch_" + std::to_string(i) + ".bin", train);
  read_cifar_file(src_dir + "/test_batch.bin", test);
  ChannelStats st(3);
  st.add(train.images.data(), train.n * 1024);
  std::vector<float> mean, std;
  st.get(mean, std);
  ensure_dir(out_dir);
  write_dataset(out_dir + "/cifar10-train.h5", train.images.data(), train.labels.data(),
                train.n, 32, 32, 3, 10, names, mean, std);
  write_dataset(out_dir + "/cifar10-test.h5", test.images.data(), test.labels.data(), test.n,
                32, 32, 3, 10, names, mean, std);
}

std::vector<uint8_t> read_image_rgb(const std::string& path, int& h, int& w) {
  std::unique_ptr<FILE, int (*)(FILE*)> fp(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!fp) throw InputError(path + ": cannot open image");
  unsigned char magic[8] = {0};
  const size_t got = std::fread(magic, 1, 8, fp.get());
  std::rewind(fp.get());
  std::vector<uint8_t> out;
  if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
    std::string err;
    if (!decode_jpeg(fp.get(), out, h, w, err))
      throw InputError(path + ": unreadable JPEG image (" + err + ")");
  } else if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) {
    png_image img;
    std::memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_stdio(&img, fp.get()))
      throw InputError(path + ": unreadable PNG image (" + img.message + ")");
    // Gray, palette and 16-bit are converted; alpha is then dropped, as PIL's convert("RGB")
    // (what torchvision's ImageFolder does) drops it.
    img.format = PNG_FORMAT_RGBA;
    h = int(img.height);
    w = int(img.width);
    out.resize(PNG_IMAGE_SIZE(img));
    if (!png_image_finish_read(&img, nullptr, out.data(), 0, nullptr)) {
      std::string msg = img.message;
      png_image_free(&img);
      throw InputError(path + ": unreadable PNG image (" + msg + ")");
    }
    const size_t px = size_t(h) * size_t(w);
    for (size_t i = 0; i < px; ++i)
      for (int c = 0; c < 3; ++c) out[i * 3 + size_t(c)] = out[i * 4 + size_t(c)];
    out.resize(px * 3);
  } else {
    throw InputError(path + ": not a JPEG or PNG image");
  }
  if (h <= 0 || w <= 0) throw InputError(path + ": empty image");
  return out;
}

std::vector<uint8_t> resize_center_crop(const std::vector<uint8_t>& img, int h, int w, int size) {
  FT_REQUIRE(size >= 1 && h >= 1 && w >= 1, "resize_center_crop: bad sizes");
  int oh, ow;
  if (h <= w) {
    oh = size;
    ow = std::max(size, int(std::lround(double(w) * size / h)));
  } else {
    ow = size;
    oh = std::max(size, int(std::lround(double(h) * size / w)));
  }
  std::vector<float> in(img.begin(), img.end());
  std::vector<float> r = (oh == h && ow == w) ? in : resample(in, h, w, oh, ow);
  const int top = int(std::lround((oh - size) / 2.0)), left = int(std::lround((ow - size) / 2.0));
  std::vector<uint8_t> out(size_t(size) * size * 3);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size * 3; ++x) {
      const float v = r[(size_t(y + top) * ow) * 3 + size_t(left) * 3 + x];
      out[(size_t(y) * size) * 3 + x] = uint8_t(std::clamp(std::lround(v), 0L, 255L));
    }
  return out;
}

void convert_folder(const std::string& src_dir, const std::string& out_path, int size) {
  if (size < 1 || size > 4096) throw InputError("convert folder: --size must be in 1..4096");
  if (!fs::is_directory(src_dir)) throw InputError(src_dir + ": no such directory");
  std::vector<std::string> classes;
  for (auto& e : fs::directory_iterator(src_dir))
    if (e.is_directory() && e.path().filename().string()[0] != '.')
      classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  if (classes.empty())
    throw InputError(src_dir + ": no class sub-folders (expected one folder per class)");
  std::vector<std::string> files;
  std::vector<int32_t> labels;
  for (size_t k = 0; k < classes.size(); ++k) {
    std::vector<std::string> in_class;
    for (auto& e : fs::recursive_directory_iterator(fs::path(src_dir) / classes[k])) {
      if (!e.is_regular_file()) continue;
      const std::string ext = lower(e.path().extension().string());
      if (ext == ".jpg" || ext == ".jpeg" || ext == ".png") in_class.push_back(e.path().string());
    }
    std::sort(in_class.begin(), in_class.end());
    for (auto& f : in_class) {
      files.push_back(f);
      labels.push_back(int32_t(k));
    }
  }
  if (files.empty()) throw InputError(src_dir + ": no .jpg/.jpeg/.png images in the class folders");
  const int64_t n = int64_t(files.size()), per = int64_t(size) * size * 3;
  const int64_t chunk = std::min<int64_t>(n, dataset_chunk_images(per));
  ChannelStats st(3);
  // Decode and write `chunk` images at a time, so memory stays small for big trees.
  std::vector<uint8_t> block(size_t(chunk * per));
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::AtomicFile f(out_path);
  h5::CreateOptions opt;
  opt.chunk = {chunk, size, size, 3};
  opt.gzip = 1;
  h5::Handle images = h5::create_dataset(f, "images", H5T_STD_U8LE, {n, size, size, 3}, opt);
  for (int64_t b = 0; b < n; b += chunk) {
    const int64_t m = std::min(chunk, n - b);
    for (int64_t i = 0; i < m; ++i) {
      int h = 0, w = 0;
      std::vector<uint8_t> img = read_image_rgb(files[size_t(b + i)], h, w);
      std::vector<uint8_t> out = resize_center_crop(img, h, w, size);
      std::copy(out.begin(), out.end(), block.begin() + std::ptrdiff_t(i * per));
    }
    st.add(block.data(), m * size * size);
    h5::write_rows(images, H5T_NATIVE_UINT8, b, m, block.data());
  }
  images.close();
  std::vector<float> mean, std;
  st.get(mean, std);
  h5::write_dataset<int32_t>(f, "labels", labels.data(), {n});
  h5::write_attr(f, "num_classes", int64_t(classes.size()));
  h5::write_attr(f, "class_names", classes);
  h5::write_attr(f, "mean", mean);
  h5::write_attr(f, "std", std);
  f.commit();
}

}  // namespace ft
