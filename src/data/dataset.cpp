/// @brief The validating dataset reader (cached or hyperslab reads) and the dataset writer.
#include "firetrain/data/dataset.hpp"

#include <algorithm>
#include <cmath>
#include <new>
#include <numeric>
#include <sstream>

#include "firetrain/core/error.hpp"
#include "firetrain/core/params.hpp"
#include "firetrain/io/h5.hpp"
#include "firetrain/io/sandbox.hpp"

namespace ft {

namespace {
constexpr int kMaxSide = 4096;
constexpr int64_t kMaxSamples = (1LL << 31) - 1;  // sample indices travel as int32 in places
constexpr int64_t kChunkCacheBytes = 64LL << 20;  // HDF5 chunk cache for on-demand reads
}  // namespace

struct Dataset::State {
  std::string path;
  int64_t n = 0;
  int h = 0, w = 0, c = 0, k = 0;
  bool u8 = true, cached = false;
  std::vector<std::string> names;
  std::vector<float> mean, std;
  std::vector<int32_t> labels;
  std::vector<uint8_t> cache_u8;  // (N, H, W, C) raw pixels when cached
  std::vector<float> cache_f;     // (N, H, W, C) when cached and float
  std::vector<float> lut;         // (C, 256): normalized value of each uint8 pixel value
  std::vector<float> zero;        // (C,): normalized value of a 0 pixel
  h5::Handle file, images;        // open only for on-demand reads

  ~State() {
    if (!file.valid() && !images.valid()) return;
    std::lock_guard<std::mutex> lock(h5_mutex());
    images.reset();
    file.reset();
  }

  [[noreturn]] void fail(const std::string& what) const { throw InputError(path + ": " + what); }
  int64_t sample() const { return int64_t(h) * w * c; }
};

namespace {

/// Throws InputError if float pixels [p, p + n) hold NaN or Inf; `first` numbers the samples.
void check_finite(const Dataset::State& s, const float* p, int64_t n_samples, const int64_t* idx,
                  int64_t first) {
  const int64_t per = s.sample();
  for (int64_t i = 0; i < n_samples; ++i) {
    const float* x = p + i * per;
    bool ok = true;
    for (int64_t j = 0; j < per; ++j) ok &= std::isfinite(x[j]);
    if (!ok)
      s.fail("/images: NaN or Inf pixel values in sample " +
             std::to_string(idx ? idx[i] : first + i) + " (float32 images must be finite)");
  }
}

void read_names(Dataset::State& s, hid_t f) {
  std::vector<std::string> names;
  try {
    if (h5::has_attr(f, "class_names"))
      names = h5::read_attr_strings(f, "class_names");
    else if (h5::is_dataset(f, "class_names"))
      names = h5::read_dataset_strings(f, "class_names");
  } catch (const InputError&) {
    throw;
  } catch (const Error&) {
    s.fail("class_names: not an array of strings");
  }
  if (names.empty()) {
    for (int i = 0; i < s.k; ++i) names.push_back(std::to_string(i));
  } else if (int64_t(names.size()) != s.k) {
    s.fail("class_names: " + std::to_string(names.size()) + " names for num_classes = " +
           std::to_string(s.k));
  }
  s.names = std::move(names);
}

std::vector<float> read_channel_attr(Dataset::State& s, hid_t f, const char* name) {
  if (!h5::has_attr(f, name)) return {};
  h5::DatasetInfo info = h5::attr_info(f, name);
  if (info.cls != H5T_FLOAT && info.cls != H5T_INTEGER)
    s.fail(std::string(name) + " attribute: dtype " + info.dtype() + ", expected float");
  std::vector<float> v = h5::read_attr_floats(f, name);
  if (int(v.size()) != s.c)
    s.fail(std::string(name) + " attribute: wrong length " + std::to_string(v.size()) +
           ", expected one value per channel (C = " + std::to_string(s.c) + ")");
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      s.fail(std::string(name) + " attribute: non-finite value at channel " + std::to_string(i));
  return v;
}

void build_lut(Dataset::State& s) {
  s.lut.assign(size_t(s.c) * 256, 0.f);
  s.zero.assign(size_t(s.c), 0.f);
  for (int ch = 0; ch < s.c; ++ch) {
    const double m = s.mean.empty() ? 0.0 : s.mean[ch];
    const double sd = s.std.empty() ? 1.0 : s.std[ch];
    for (int x = 0; x < 256; ++x) s.lut[size_t(ch) * 256 + x] = float((x / 255.0 - m) / sd);
    s.zero[ch] = s.u8 ? s.lut[size_t(ch) * 256] : 0.f;
  }
}

/// Normalizes n raw samples (uint8 or float) from src into dst (n, H, W, C).
void normalize(const Dataset::State& s, const void* src, int64_t n, float* dst) {
  const int64_t total = n * s.sample();
  if (!s.u8) {
    std::copy_n(static_cast<const float*>(src), total, dst);
    return;
  }
  const uint8_t* x = static_cast<const uint8_t*>(src);
  const float* lut = s.lut.data();
  if (s.c == 1) {
    for (int64_t i = 0; i < total; ++i) dst[i] = lut[x[i]];
  } else {
    const int64_t px = total / 3;
    for (int64_t i = 0; i < px; ++i) {
      dst[3 * i + 0] = lut[x[3 * i + 0]];
      dst[3 * i + 1] = lut[256 + x[3 * i + 1]];
      dst[3 * i + 2] = lut[512 + x[3 * i + 2]];
    }
  }
}

}  // namespace

/// libhdf5 allocates a whole chunk to read any part of it, so a (corrupt or hostile) file that
/// declares chunks of gigabytes makes a read allocate gigabytes (a fuzzer finding:
/// tests/fuzz/regressions/huge_chunk_oom.h5). Chunks above 256 MiB are refused as bad input;
/// firetrain writes 1-4 MiB chunks and h5py's default ones are smaller still.
void check_chunk_size(const Dataset::State& s, hid_t dset, const char* name, size_t elem_bytes) {
  h5::Handle dcpl = h5::plist_handle(FT_H5_ID(H5Dget_create_plist(dset)));
  if (H5Pget_layout(dcpl) != H5D_CHUNKED) return;
  hsize_t dims[32];
  const int rank = H5Pget_chunk(dcpl, 32, dims);
  if (rank < 0) s.fail(std::string(name) + ": unreadable chunk layout (corrupt file?)");
  long double bytes = (long double)elem_bytes;
  std::string shape;
  for (int i = 0; i < rank; ++i) {
    bytes *= (long double)dims[i];
    shape += (i ? ", " : "") + std::to_string(dims[i]);
  }
  if (bytes > (long double)(256LL << 20))
    s.fail(std::string(name) + ": chunks of " + std::to_string((unsigned long long)(bytes / (1 << 20))) +
           " MiB (chunk shape (" + shape + ")); at most 256 MiB per chunk is accepted");
}

namespace {
/// HDF5 failures while reading a dataset (corrupt or truncated file, a damaged compressed
/// chunk) and allocation failures become ft::InputError naming the file: exit code 2.
template <class F>
auto input_errors(const std::string& path, const char* what, F body) -> decltype(body()) {
  try {
    return as_input_error(path, body, what);
  } catch (const std::bad_alloc&) {
    throw InputError(path + ": " + what + ": not enough memory (absurd dimensions?)");
  }
}
}  // namespace

Dataset Dataset::open(const std::string& path, int64_t cache_bytes) {
  // First in a child process (sandbox.hpp): the same validating open (on demand, so that the
  // pixels are not read twice), then 4 samples spread over /images (first, last), so that
  // libhdf5 has decoded the chunk index (the child's generic walk visits all of it), the filter
  // pipeline and chunks at both ends before this process touches the file. Its errors come back
  // as the very InputError this open would throw.
  sandbox::check(path, "dataset", [&] {
    input_errors(path, "cannot read the dataset", [&] {
      Dataset d = open_impl(path, 0);
      const int64_t n = d.size();
      std::vector<float> out(size_t(d.sample_size()));
      for (int64_t k = 0; k < 4; ++k) {
        const int64_t i = k == 3 ? n - 1 : n * k / 3;
        d.read_images(&i, 1, out.data());
        if (n == 1) break;
      }
      return 0;
    });
  });
  return input_errors(path, "cannot read the dataset", [&] { return open_impl(path, cache_bytes); });
}

Dataset Dataset::open_impl(const std::string& path, int64_t cache_bytes) {
  auto s = std::make_shared<State>();
  s->path = path;
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::Handle f = h5::open_file(path);

  // /images: dtype, rank, dims.
  if (!h5::is_dataset(f, "images")) s->fail("missing dataset /images (N, H, W, C)");
  if (!h5::is_dataset(f, "labels")) s->fail("missing dataset /labels (N,)");
  h5::Handle dapl = h5::plist_handle(FT_H5_ID(H5Pcreate(H5P_DATASET_ACCESS)));
  FT_H5(H5Pset_chunk_cache(dapl, 12421, size_t(kChunkCacheBytes), 1.0));
  h5::Handle images = h5::dataset_handle(FT_H5_ID(H5Dopen2(f, "images", dapl)));
  h5::DatasetInfo im = h5::dataset_info(images);
  if (im.cls == H5T_INTEGER && im.type_size == 1 && !im.is_signed)
    s->u8 = true;
  else if (im.cls == H5T_FLOAT && im.type_size == 4)
    s->u8 = false;
  else
    s->fail("/images: wrong dtype " + im.dtype() + ", expected uint8 or float32");
  if (im.shape.size() != 4)
    s->fail("/images: wrong rank " + std::to_string(im.shape.size()) + " (shape " +
            shape_str(im.shape) + "), expected 4 dims (N, H, W, C)");
  s->n = im.shape[0];
  if (s->n == 0) s->fail("/images: N = 0, the dataset is empty");
  if (s->n > kMaxSamples)
    s->fail("/images: absurd N = " + std::to_string(s->n) + " in shape " + shape_str(im.shape) +
            ", at most " + std::to_string(kMaxSamples) + " samples");
  for (int d : {1, 2})
    if (im.shape[size_t(d)] < 1 || im.shape[size_t(d)] > kMaxSide)
      s->fail("/images: bad dimension " + std::string(d == 1 ? "H" : "W") + " = " +
              std::to_string(im.shape[size_t(d)]) + " in shape " + shape_str(im.shape) +
              ", expected 1.." + std::to_string(kMaxSide));
  if (im.shape[3] != 1 && im.shape[3] != 3)
    s->fail("/images: bad channel count C = " + std::to_string(im.shape[3]) + " in shape " +
            shape_str(im.shape) + ", expected 1 or 3 (N, H, W, C)");
  s->h = int(im.shape[1]);
  s->w = int(im.shape[2]);
  s->c = int(im.shape[3]);
  check_chunk_size(*s, images, "/images", im.type_size);

  // num_classes.
  if (!h5::has_attr(f, "num_classes")) s->fail("num_classes attribute missing (root attribute)");
  {
    h5::DatasetInfo a = h5::attr_info(f, "num_classes");
    if ((a.cls != H5T_INTEGER && a.cls != H5T_FLOAT) || a.numel() != 1)
      s->fail("num_classes attribute: expected one integer, found " + a.dtype() + " " +
              shape_str(a.shape));
    const double k = h5::read_attr_double(f, "num_classes");
    if (!(k >= 1) || k != std::floor(k) || k > 1e7)
      s->fail("num_classes attribute = " + h5::read_attr_string(f, "num_classes") +
              ", must be an integer >= 1");
    s->k = int(k);
  }

  // /labels: integer, (N,), in range.
  {
    h5::Handle lab = h5::dataset_handle(h5::open_dataset(f, "labels"));
    h5::DatasetInfo li = h5::dataset_info(lab);
    if (li.cls != H5T_INTEGER)
      s->fail("/labels: wrong dtype " + li.dtype() + ", expected an integer type");
    check_chunk_size(*s, lab, "/labels", li.type_size);
    if (li.shape.size() != 1)
      s->fail("/labels: wrong rank, shape " + shape_str(li.shape) + ", expected (N,)");
    if (li.shape[0] != s->n)
      s->fail("/labels: N mismatch: " + std::to_string(li.shape[0]) + " labels for " +
              std::to_string(s->n) + " images");
    // In blocks, so that checking costs no more memory than the int32 labels kept.
    s->labels.resize(size_t(s->n));
    const int64_t block = 1 << 20;
    std::vector<int64_t> l(size_t(std::min(block, s->n)));
    for (int64_t first = 0; first < s->n; first += block) {
      const int64_t cnt = std::min(block, s->n - first);
      h5::read_rows(lab, H5T_NATIVE_INT64, first, cnt, l.data());
      for (int64_t j = 0; j < cnt; ++j) {
        const int64_t v = l[size_t(j)], i = first + j;
        if (v < 0 || v >= s->k)
          s->fail("/labels: label " + std::to_string(v) + " at index " + std::to_string(i) +
                  " out of range [0, " + std::to_string(s->k) + ")" + (v < 0 ? " (negative)" : ""));
        s->labels[size_t(i)] = int32_t(v);
      }
    }
  }

  read_names(*s, f);
  s->mean = read_channel_attr(*s, f, "mean");
  s->std = read_channel_attr(*s, f, "std");
  for (size_t i = 0; i < s->std.size(); ++i)
    if (!(s->std[i] > 0))
      s->fail("std attribute: value " + std::to_string(s->std[i]) + " at channel " +
              std::to_string(i) + ", must be > 0");
  build_lut(*s);

  const int64_t bytes = s->n * s->sample() * (s->u8 ? 1 : 4);
  if (bytes <= cache_bytes) {
    s->cached = true;
    if (s->u8) {
      s->cache_u8.resize(size_t(s->n * s->sample()));
      h5::read_all(images, H5T_NATIVE_UINT8, s->cache_u8.data());
    } else {
      s->cache_f.resize(size_t(s->n * s->sample()));
      h5::read_all(images, H5T_NATIVE_FLOAT, s->cache_f.data());
      check_finite(*s, s->cache_f.data(), s->n, nullptr, 0);
    }
  } else {
    s->images = std::move(images);
    s->file = std::move(f);
  }
  Dataset ds;
  ds.s_ = std::move(s);
  return ds;
}

int64_t Dataset::size() const { return s_->n; }
int Dataset::height() const { return s_->h; }
int Dataset::width() const { return s_->w; }
int Dataset::channels() const { return s_->c; }
int Dataset::num_classes() const { return s_->k; }
const std::vector<std::string>& Dataset::class_names() const { return s_->names; }
const std::string& Dataset::path() const { return s_->path; }
int64_t Dataset::sample_size() const { return s_->sample(); }
bool Dataset::is_uint8() const { return s_->u8; }
bool Dataset::cached() const { return s_->cached; }
const std::vector<float>& Dataset::mean() const { return s_->mean; }
const std::vector<float>& Dataset::stddev() const { return s_->std; }
float Dataset::zero_value(int c) const { return s_->zero[size_t(c)]; }
const std::vector<int32_t>& Dataset::labels() const { return s_->labels; }
const float* Dataset::lut() const { return s_->lut.data(); }
const uint8_t* Dataset::cached_u8(int64_t i) const {
  if (!s_->cached || !s_->u8) return nullptr;
  FT_REQUIRE(i >= 0 && i < s_->n, s_->path + ": sample index out of range");
  return s_->cache_u8.data() + i * s_->sample();
}

int32_t Dataset::label(int64_t i) const {
  FT_REQUIRE(i >= 0 && i < s_->n, "label index out of range");
  return s_->labels[size_t(i)];
}

void Dataset::read_images(const int64_t* idx, int n, float* out) const {
  const State& s = *s_;
  const int64_t per = s.sample();
  for (int i = 0; i < n; ++i)
    FT_REQUIRE(idx[i] >= 0 && idx[i] < s.n,
               s.path + ": sample index " + std::to_string(idx[i]) + " out of range");
  if (s.cached) {
    for (int i = 0; i < n; ++i) {
      if (s.u8)
        normalize(s, s.cache_u8.data() + idx[i] * per, 1, out + int64_t(i) * per);
      else
        std::copy_n(s.cache_f.data() + idx[i] * per, per, out + int64_t(i) * per);
    }
    return;
  }
  if (n <= 0) return;
  // On demand: one H5Dread of the union of the (sorted, merged) rows, then scatter.
  std::vector<int64_t> rows(idx, idx + n);
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  const size_t esize = s.u8 ? 1 : 4;
  std::vector<unsigned char> raw(rows.size() * size_t(per) * esize);
  {
    std::lock_guard<std::mutex> lock(h5_mutex());
    h5::silence_errors();
    h5::Handle fs = h5::space_handle(FT_H5_ID(H5Dget_space(s.images)));
    hsize_t start[4] = {0, 0, 0, 0}, count[4] = {0, hsize_t(s.h), hsize_t(s.w), hsize_t(s.c)};
    bool first = true;
    for (size_t i = 0; i < rows.size();) {
      size_t j = i + 1;
      while (j < rows.size() && rows[j] == rows[j - 1] + 1) ++j;
      start[0] = hsize_t(rows[i]);
      count[0] = hsize_t(j - i);
      FT_H5(H5Sselect_hyperslab(fs, first ? H5S_SELECT_SET : H5S_SELECT_OR, start, nullptr,
                                count, nullptr));
      first = false;
      i = j;
    }
    hsize_t mdims[1] = {hsize_t(rows.size()) * hsize_t(per)};
    h5::Handle ms = h5::space_handle(FT_H5_ID(H5Screate_simple(1, mdims, nullptr)));
    if (H5Dread(s.images, s.u8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT,
                raw.data()) < 0)
      s.fail("/images: cannot read samples " + std::to_string(rows.front()) + ".." +
             std::to_string(rows.back()) + " (corrupt or truncated file?)");
  }
  if (!s.u8) check_finite(s, reinterpret_cast<const float*>(raw.data()), int64_t(rows.size()),
                          rows.data(), 0);
  for (int i = 0; i < n; ++i) {
    const size_t r = size_t(std::lower_bound(rows.begin(), rows.end(), idx[i]) - rows.begin());
    normalize(s, raw.data() + r * size_t(per) * esize, 1, out + int64_t(i) * per);
  }
}

int64_t dataset_chunk_images(int64_t sample_bytes) {
  return std::clamp<int64_t>((1LL << 20) / std::max<int64_t>(sample_bytes, 1), 1, 256);
}

void write_dataset(const std::string& path, const uint8_t* images, const int32_t* labels,
                   int64_t n, int h, int w, int c, int num_classes,
                   const std::vector<std::string>& class_names, const std::vector<float>& mean,
                   const std::vector<float>& std) {
  FT_REQUIRE(n >= 1 && h >= 1 && w >= 1 && (c == 1 || c == 3) && num_classes >= 1,
             "write_dataset: bad dimensions");
  FT_REQUIRE(class_names.empty() || int(class_names.size()) == num_classes,
             "write_dataset: class_names must have num_classes entries");
  FT_REQUIRE((mean.empty() || int(mean.size()) == c) && (std.empty() || int(std.size()) == c),
             "write_dataset: mean/std must have one value per channel");
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::AtomicFile f(path);
  h5::CreateOptions opt;
  const int64_t chunk = std::min<int64_t>(n, dataset_chunk_images(int64_t(h) * w * c));
  opt.chunk = {chunk, h, w, c};
  opt.gzip = 1;
  h5::write_dataset<uint8_t>(f, "images", images, {n, h, w, c}, opt);
  h5::write_dataset<int32_t>(f, "labels", labels, {n});
  h5::write_attr(f, "num_classes", int64_t(num_classes));
  if (!class_names.empty()) h5::write_attr(f, "class_names", class_names);
  if (!mean.empty()) h5::write_attr(f, "mean", mean);
  if (!std.empty()) h5::write_attr(f, "std", std);
  f.commit();
}

}  // namespace ft
