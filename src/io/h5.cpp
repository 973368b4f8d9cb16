/// @brief RAII HDF5 handles, typed dataset/attribute helpers and the atomic (tmp + rename) writer.
#include "firetrain/io/h5.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <tuple>
#include <set>
#include <map>
#include <mutex>
#include <vector>

#include "firetrain/core/error.hpp"
#include "firetrain/io/sandbox.hpp"

namespace ft {

std::mutex& h5_mutex() {
  static std::mutex m;
  return m;
}

namespace h5 {

void silence_errors() {
  // With a thread-safe HDF5 the automatic-printing setting is per thread.
  thread_local bool done = false;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
}

void Handle::close() {
  if (id_ < 0) return;
  hid_t id = std::exchange(id_, -1);
  FT_H5(closer_(id));
}

void Handle::reset() noexcept {
  if (id_ >= 0 && closer_) closer_(id_);
  id_ = -1;
}

// ---------------------------------------------------------------------------------------------
// Files.

Handle open_file(const std::string& path) {
  silence_errors();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw InputError(path + ": no such file");
  if (std::filesystem::is_directory(path, ec))
    throw InputError(path + ": is a directory, not an HDF5 file");
  // H5Fis_hdf5 is a deliberate probe: a negative or zero answer becomes an InputError.
  if (H5Fis_hdf5(path.c_str()) <= 0) throw InputError(path + ": not an HDF5 file");
  // libhdf5 parses the file first in a child process (sandbox.hpp): its crashes and hangs on
  // corrupt files become an InputError here. Cached per file: once per process.
  sandbox::check_locked(path);
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) throw InputError(path + ": cannot open (truncated or corrupt HDF5 file?)");
  return file_handle(f);
}

bool is_hdf5(const std::string& path) {
  silence_errors();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  return H5Fis_hdf5(path.c_str()) > 0;
}

AtomicFile::AtomicFile(const std::string& path)
    : path_(path), tmp_(path + ".tmp." + std::to_string(getpid())) {
  silence_errors();
  hid_t f = H5Fcreate(tmp_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0)
    throw InputError(path + ": cannot create (does the directory exist and is it writable?)");
  file_ = file_handle(f);
}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  file_.reset();
  std::remove(tmp_.c_str());
}

namespace {
void fsync_path(const std::string& p, bool directory) {
  int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;  // best effort for directories (some file systems refuse)
  ::fsync(fd);
  ::close(fd);
}
}  // namespace

void AtomicFile::commit() {
  FT_H5(H5Fflush(file_, H5F_SCOPE_GLOBAL));
  file_.close();
  int fd = ::open(tmp_.c_str(), O_RDONLY);
  if (fd < 0) throw Error(tmp_ + ": cannot reopen to fsync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw Error(tmp_ + ": fsync failed: " + std::strerror(errno));
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw Error(path_ + ": cannot rename " + tmp_ + " into place: " + std::strerror(errno));
  committed_ = true;
  std::string dir = std::filesystem::path(path_).parent_path().string();
  fsync_path(dir.empty() ? "." : dir, true);
}

// ---------------------------------------------------------------------------------------------
// Links and listings.

bool exists(hid_t loc, const std::string& name) {
  silence_errors();
  if (name.empty() || name == "." || name == "/") return true;
  // H5Lexists needs every intermediate link to exist: walk the path.
  std::string prefix = name[0] == '/' ? "/" : "";
  size_t pos = name[0] == '/' ? 1 : 0;
  while (pos <= name.size()) {
    size_t slash = name.find('/', pos);
    if (slash == std::string::npos) slash = name.size();
    if (slash > pos) {
      prefix += name.substr(pos, slash - pos);
      if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
      prefix += "/";
    }
    pos = slash + 1;
  }
  return true;
}

namespace {
H5I_type_t object_type(hid_t loc, const std::string& name) {
  if (!exists(loc, name)) return H5I_BADID;
  hid_t o = H5Oopen(loc, name.c_str(), H5P_DEFAULT);
  if (o < 0) return H5I_BADID;
  H5I_type_t t = H5Iget_type(o);
  H5Oclose(o);
  return t;
}
}  // namespace

bool is_group(hid_t loc, const std::string& name) { return object_type(loc, name) == H5I_GROUP; }
bool is_dataset(hid_t loc, const std::string& name) {
  return object_type(loc, name) == H5I_DATASET;
}

namespace {
herr_t collect_names(hid_t, const char* name, const H5L_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}
}  // namespace

std::vector<std::string> list_datasets(hid_t loc, const std::string& group) {
  silence_errors();
  Handle g = group_handle(FT_H5_ID(H5Gopen2(loc, group.c_str(), H5P_DEFAULT)));
  std::vector<std::string> names, out;
  hsize_t idx = 0;
  FT_H5(H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_names, &names));
  for (auto& n : names)
    if (object_type(g, n) == H5I_DATASET) out.push_back(n);
  return out;
}

Handle create_group(hid_t loc, const std::string& name) {
  silence_errors();
  if (exists(loc, name)) return group_handle(FT_H5_ID(H5Gopen2(loc, name.c_str(), H5P_DEFAULT)));
  Handle lcpl = plist_handle(FT_H5_ID(H5Pcreate(H5P_LINK_CREATE)));
  FT_H5(H5Pset_create_intermediate_group(lcpl, 1));
  return group_handle(
      FT_H5_ID(H5Gcreate2(loc, name.c_str(), lcpl, H5P_DEFAULT, H5P_DEFAULT)));
}

// ---------------------------------------------------------------------------------------------
// Datasets.

std::string DatasetInfo::dtype() const {
  switch (cls) {
    case H5T_INTEGER:
      return std::string(is_signed ? "int" : "uint") + std::to_string(type_size * 8);
    case H5T_FLOAT:
      return "float" + std::to_string(type_size * 8);
    case H5T_STRING:
      return "string";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ENUM:
      return "enum";
    default:
      return "class " + std::to_string(int(cls));
  }
}

std::vector<int64_t> space_shape(hid_t space) {
  const int rank = FT_H5_ID(H5Sget_simple_extent_ndims(space));
  std::vector<hsize_t> dims(size_t(rank), 0);
  if (rank > 0) FT_H5(H5Sget_simple_extent_dims(space, dims.data(), nullptr));
  return std::vector<int64_t>(dims.begin(), dims.end());
}

namespace {
DatasetInfo info_of(hid_t type, hid_t space) {
  DatasetInfo info;
  info.shape = space_shape(space);
  info.cls = H5Tget_class(type);
  info.type_size = H5Tget_size(type);
  if (info.cls == H5T_INTEGER) info.is_signed = H5Tget_sign(type) == H5T_SGN_2;
  return info;
}
}  // namespace

DatasetInfo dataset_info(hid_t dset) {
  Handle t = type_handle(FT_H5_ID(H5Dget_type(dset)));
  Handle s = space_handle(FT_H5_ID(H5Dget_space(dset)));
  return info_of(t, s);
}

hid_t open_dataset(hid_t loc, const std::string& name) {
  silence_errors();
  return FT_H5_ID(H5Dopen2(loc, name.c_str(), H5P_DEFAULT));
}

namespace {
Handle make_space(const std::vector<int64_t>& shape) {
  if (shape.empty()) return space_handle(FT_H5_ID(H5Screate(H5S_SCALAR)));
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  return space_handle(FT_H5_ID(H5Screate_simple(int(dims.size()), dims.data(), nullptr)));
}
}  // namespace

Handle create_dataset(hid_t loc, const std::string& name, hid_t file_type,
                      const std::vector<int64_t>& shape, const CreateOptions& opt) {
  silence_errors();
  Handle space = make_space(shape);
  Handle dcpl = plist_handle(FT_H5_ID(H5Pcreate(H5P_DATASET_CREATE)));
  if (!opt.chunk.empty()) {
    std::vector<hsize_t> chunk(opt.chunk.begin(), opt.chunk.end());
    FT_H5(H5Pset_chunk(dcpl, int(chunk.size()), chunk.data()));
    if (opt.gzip >= 0) FT_H5(H5Pset_deflate(dcpl, unsigned(opt.gzip)));
  }
  Handle lcpl = plist_handle(FT_H5_ID(H5Pcreate(H5P_LINK_CREATE)));
  FT_H5(H5Pset_create_intermediate_group(lcpl, 1));
  return dataset_handle(
      FT_H5_ID(H5Dcreate2(loc, name.c_str(), file_type, space, lcpl, dcpl, H5P_DEFAULT)));
}

void write_all(hid_t dset, hid_t mem_type, const void* data) {
  FT_H5(H5Dwrite(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}

void read_all(hid_t dset, hid_t mem_type, void* data) {
  FT_H5(H5Dread(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}

namespace {
/// File and memory dataspaces selecting rows [first, first + count) along dimension 0.
std::pair<Handle, Handle> row_spaces(hid_t dset, int64_t first, int64_t count) {
  Handle fs = space_handle(FT_H5_ID(H5Dget_space(dset)));
  std::vector<int64_t> shape = space_shape(fs);
  FT_REQUIRE(!shape.empty() && first >= 0 && count >= 0 && first + count <= shape[0],
             "row range outside the dataset");
  std::vector<hsize_t> start(shape.size(), 0), cnt(shape.begin(), shape.end());
  start[0] = hsize_t(first);
  cnt[0] = hsize_t(count);
  FT_H5(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr));
  Handle ms = space_handle(FT_H5_ID(H5Screate_simple(int(cnt.size()), cnt.data(), nullptr)));
  return {std::move(fs), std::move(ms)};
}
}  // namespace

void read_rows(hid_t dset, hid_t mem_type, int64_t first, int64_t count, void* data) {
  if (count == 0) return;
  auto [fs, ms] = row_spaces(dset, first, count);
  FT_H5(H5Dread(dset, mem_type, ms, fs, H5P_DEFAULT, data));
}

void write_rows(hid_t dset, hid_t mem_type, int64_t first, int64_t count, const void* data) {
  if (count == 0) return;
  auto [fs, ms] = row_spaces(dset, first, count);
  FT_H5(H5Dwrite(dset, mem_type, ms, fs, H5P_DEFAULT, data));
}

// ---------------------------------------------------------------------------------------------
// Attributes.

bool has_attr(hid_t obj, const std::string& name) {
  silence_errors();
  return H5Aexists(obj, name.c_str()) > 0;  // deliberate probe
}

namespace {
void write_attr_raw(hid_t obj, const std::string& name, hid_t file_type, hid_t mem_type,
                    const std::vector<int64_t>& shape, const void* data) {
  silence_errors();
  if (has_attr(obj, name)) FT_H5(H5Adelete(obj, name.c_str()));
  Handle space = make_space(shape);
  Handle a = attr_handle(
      FT_H5_ID(H5Acreate2(obj, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT)));
  FT_H5(H5Awrite(a, mem_type, data));
}

Handle vlen_utf8_type() {
  Handle t = type_handle(FT_H5_ID(H5Tcopy(H5T_C_S1)));
  FT_H5(H5Tset_size(t, H5T_VARIABLE));
  FT_H5(H5Tset_cset(t, H5T_CSET_UTF8));
  return t;
}
}  // namespace

void write_attr(hid_t obj, const std::string& name, int64_t v) {
  write_attr_raw(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, {}, &v);
}
void write_attr_u64(hid_t obj, const std::string& name, uint64_t v) {
  write_attr_raw(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, {}, &v);
}
void write_attr(hid_t obj, const std::string& name, double v) {
  write_attr_raw(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, {}, &v);
}
/// Strings are written fixed-length (null-padded UTF-8) when they fit an attribute comfortably
/// (<= 32 KiB in all): reading them then never goes through libhdf5's global heap, whose
/// reader in 1.10.8 is not memory-safe on corrupt files (three fuzzer findings in
/// tests/fuzz/regressions/). Longer lists (ImageNet's 1000 class names) stay variable-length.
static void write_strings_attr(hid_t obj, const std::string& name,
                               const std::vector<std::string>& v, bool scalar) {
  size_t len = 1;
  for (auto& x : v) len = std::max(len, x.size());
  if (len * v.size() <= (32u << 10)) {
    Handle t = type_handle(FT_H5_ID(H5Tcopy(H5T_C_S1)));
    FT_H5(H5Tset_size(t, len));
    FT_H5(H5Tset_strpad(t, H5T_STR_NULLPAD));
    FT_H5(H5Tset_cset(t, H5T_CSET_UTF8));
    std::vector<char> buf(len * v.size(), '\0');
    for (size_t i = 0; i < v.size(); ++i) std::memcpy(buf.data() + i * len, v[i].data(), v[i].size());
    write_attr_raw(obj, name, t, t, scalar ? std::vector<int64_t>{} : std::vector<int64_t>{int64_t(v.size())},
                   buf.data());
    return;
  }
  Handle t = vlen_utf8_type();
  std::vector<const char*> p;
  for (auto& x : v) p.push_back(x.c_str());
  write_attr_raw(obj, name, t, t, scalar ? std::vector<int64_t>{} : std::vector<int64_t>{int64_t(v.size())},
                 p.data());
}

void write_attr(hid_t obj, const std::string& name, const std::string& v) {
  write_strings_attr(obj, name, {v}, true);
}
void write_attr(hid_t obj, const std::string& name, const char* v) {
  write_attr(obj, name, std::string(v));
}
void write_attr(hid_t obj, const std::string& name, const std::vector<float>& v) {
  write_attr_raw(obj, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {int64_t(v.size())}, v.data());
}
void write_attr(hid_t obj, const std::string& name, const std::vector<std::string>& v) {
  write_strings_attr(obj, name, v, false);
}

DatasetInfo attr_info(hid_t obj, const std::string& name) {
  silence_errors();
  Handle a = attr_handle(FT_H5_ID(H5Aopen(obj, name.c_str(), H5P_DEFAULT)));
  Handle t = type_handle(FT_H5_ID(H5Aget_type(a)));
  Handle s = space_handle(FT_H5_ID(H5Aget_space(a)));
  return info_of(t, s);
}

namespace {
template <class T>
std::vector<T> read_attr_numeric(hid_t obj, const std::string& name, hid_t mem_type) {
  silence_errors();
  Handle a = attr_handle(FT_H5_ID(H5Aopen(obj, name.c_str(), H5P_DEFAULT)));
  Handle t = type_handle(FT_H5_ID(H5Aget_type(a)));
  Handle s = space_handle(FT_H5_ID(H5Aget_space(a)));
  DatasetInfo info = info_of(t, s);
  if (info.cls != H5T_INTEGER && info.cls != H5T_FLOAT)
    throw Error("HDF5 attribute '" + name + "' is " + info.dtype() + ", not a number");
  std::vector<T> v(size_t(info.numel()));
  if (!v.empty()) FT_H5(H5Aread(a, mem_type, v.data()));
  return v;
}

template <class T>
T scalar_attr(hid_t obj, const std::string& name, hid_t mem_type) {
  auto v = read_attr_numeric<T>(obj, name, mem_type);
  if (v.size() != 1)
    throw Error("HDF5 attribute '" + name + "' has " + std::to_string(v.size()) +
                " values, expected one");
  return v[0];
}

/// libhdf5 (1.10.8, Debian 12) loops forever when it loads a global heap collection holding an
/// object whose size makes the walk stand still (a free-space object of size 0; sizes that wrap
/// the pointer): found by the fuzzer (tests/fuzz/regressions/). Variable-length strings live in
/// global heap collections, so before reading any, walk every collection of the file the way
/// libhdf5 will ("GCOL", version 1, 8-byte sizes, 8-byte aligned objects) and reject a file
/// whose walk would not advance or would leave the collection. Read-only scan of the file's
/// bytes; only done for variable-length strings, which our datasets and checkpoints hold in a
/// few small attributes.
}  // namespace

void check_global_heaps(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;  // libhdf5 has it open; nothing better to check against
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size < 16) {
    ::close(fd);
    return;
  }
  // A file checked once (same inode, size and modification time) is not scanned again: eval
  // and predict read a few string attributes of files that may be hundreds of MB.
  static std::mutex mu;
  static std::set<std::tuple<dev_t, ino_t, off_t, int64_t, int64_t>> checked;
  const auto key = std::make_tuple(st.st_dev, st.st_ino, st.st_size, int64_t(st.st_mtim.tv_sec),
                                   int64_t(st.st_mtim.tv_nsec));
  {
    std::lock_guard<std::mutex> lock(mu);
    if (checked.count(key)) {
      ::close(fd);
      return;
    }
  }
  const size_t size = size_t(st.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return;
  const auto* d = static_cast<const unsigned char*>(map);
  struct Unmap {
    void* p;
    size_t n;
    ~Unmap() { ::munmap(p, n); }
  } unmap{map, size};
  auto le = [&](uint64_t o, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | d[o + uint64_t(i)];
    return v;
  };
  // Collection offset -> object index -> object size, for the references check below.
  std::map<uint64_t, std::map<uint64_t, uint64_t>> heaps;
  for (const void* hit = ::memmem(d, size, "GCOL", 4); hit;) {
    const uint64_t o = uint64_t(static_cast<const unsigned char*>(hit) - d);
    const void* next = o + 1 < size ? ::memmem(d + o + 1, size - o - 1, "GCOL", 4) : nullptr;
    if (o + 16 <= size && d[o + 4] == 1 && !d[o + 5] && !d[o + 6] && !d[o + 7]) {
      const uint64_t csize = le(o + 8, 8);
      if (csize >= 16 && csize <= size - o) {  // a collection libhdf5 would load
        const uint64_t end = o + csize;
        for (uint64_t p = o + 16; p < end && p + 16 <= end;) {
          const uint64_t idx = le(p, 2), osize = le(p + 8, 8);
          if (idx > 0 && osize > end)
            throw InputError(path + ": corrupt HDF5 global heap at byte " + std::to_string(o));
          const uint64_t need = idx > 0 ? 16 + ((osize + 7) & ~uint64_t(7)) : osize;
          if (idx > 0) heaps[o][idx] = osize;
          if (need == 0 || need > end - p)
            throw InputError(path + ": corrupt HDF5 global heap (variable-length string storage) "
                             "at byte " + std::to_string(o));
          p += need;
        }
      }
    }
    hit = next;
  }
  // Variable-length data is referenced by (length 4 B, collection address 8 B, object index 4 B).
  // libhdf5 1.10.8's H5HG_read neither bounds the index (only an assert) nor the copy by the
  // length: an index past the collection's objects reads wild memory (another fuzzer finding,
  // tests/fuzz/regressions/global_heap_bad_index.h5). Every place the file names a collection's
  // address must therefore carry an index of one of its objects and a length that holds it.
  for (const auto& heap : heaps) {
    const uint64_t addr = heap.first;
    const std::map<uint64_t, uint64_t>& objs = heap.second;
    unsigned char pat[8];
    for (int i = 0; i < 8; ++i) pat[i] = static_cast<unsigned char>(addr >> (8 * i));
    for (const void* hit = ::memmem(d, size, pat, 8); hit;) {
      const uint64_t q = uint64_t(static_cast<const unsigned char*>(hit) - d);
      if (q >= 4 && q + 12 <= size) {
        const uint64_t len = le(q - 4, 4), idx = le(q + 8, 4);
        // Object indices are 16-bit in the collection; other values are not references (the
        // same 8 bytes can be a size or offset elsewhere in the file).
        auto it = objs.find(idx);
        // An out-of-range index next to a valid reference 16 bytes away is an entry of an
        // array of references (a list of strings), not a coincidence.
        auto valid_at = [&](uint64_t r) {
          if (r < 4 || r + 12 > size || le(r, 8) != addr) return false;
          auto j = objs.find(le(r + 8, 4));
          return j != objs.end() && j->second <= le(r - 4, 4);
        };
        const bool in_array = valid_at(q + 16) || (q >= 16 && valid_at(q - 16));
        // Index 0 is the collection's free space: a reference to it with a string-like length
        // makes libhdf5 copy the whole free space into a buffer of that length.
        const bool zero_ref = idx == 0 && len > 0 && len < (1u << 20);
        if ((idx > 0 && idx < 65536 && (it == objs.end() || it->second > len)) ||
            (idx >= 65536 && in_array) || zero_ref)
          throw InputError(path + ": corrupt HDF5 variable-length reference (global heap at byte " +
                           std::to_string(addr) + ", object " + std::to_string(idx) + ")");
      }
      hit = q + 1 < size ? ::memmem(d + q + 1, size - q - 1, pat, 8) : nullptr;
    }
  }
  std::lock_guard<std::mutex> lock(mu);
  checked.insert(key);
}

namespace {
void check_global_heaps(hid_t obj) {
  ssize_t n = H5Fget_name(obj, nullptr, 0);
  if (n <= 0) return;
  std::string path(size_t(n) + 1, '\0');
  H5Fget_name(obj, path.data(), path.size());
  path.resize(size_t(n));
  ::ft::h5::check_global_heaps(path);
}

/// Reads n strings (fixed or variable length) from an attribute (is_attr) or dataset.
std::vector<std::string> read_strings(hid_t obj, hid_t type, size_t n, bool is_attr,
                                      hid_t space) {
  std::vector<std::string> out;
  if (H5Tget_class(type) != H5T_STRING) throw Error("HDF5 object holds no strings");
  if (H5Tis_variable_str(type) > 0) {
    check_global_heaps(obj);
    Handle mt = type_handle(FT_H5_ID(H5Tcopy(H5T_C_S1)));
    FT_H5(H5Tset_size(mt, H5T_VARIABLE));
    FT_H5(H5Tset_cset(mt, H5Tget_cset(type)));
    std::vector<char*> p(n, nullptr);
    if (n) {
      if (is_attr)
        FT_H5(H5Aread(obj, mt, p.data()));
      else
        FT_H5(H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, p.data()));
    }
    for (char* s : p) out.emplace_back(s ? s : "");
    if (n) H5Dvlen_reclaim(mt, space, H5P_DEFAULT, p.data());
  } else {
    const size_t len = H5Tget_size(type);
    std::vector<char> buf(n * len + 1, '\0');
    if (n) {
      if (is_attr)
        FT_H5(H5Aread(obj, type, buf.data()));
      else
        FT_H5(H5Dread(obj, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()));
    }
    for (size_t i = 0; i < n; ++i) {
      const char* s = buf.data() + i * len;
      out.emplace_back(s, strnlen(s, len));
    }
  }
  return out;
}
}  // namespace

int64_t read_attr_int64(hid_t obj, const std::string& name) {
  return scalar_attr<int64_t>(obj, name, H5T_NATIVE_INT64);
}
uint64_t read_attr_u64(hid_t obj, const std::string& name) {
  return scalar_attr<uint64_t>(obj, name, H5T_NATIVE_UINT64);
}
double read_attr_double(hid_t obj, const std::string& name) {
  return scalar_attr<double>(obj, name, H5T_NATIVE_DOUBLE);
}
std::vector<float> read_attr_floats(hid_t obj, const std::string& name) {
  return read_attr_numeric<float>(obj, name, H5T_NATIVE_FLOAT);
}

std::string read_attr_string(hid_t obj, const std::string& name) {
  DatasetInfo info = attr_info(obj, name);
  if (info.cls == H5T_INTEGER) return std::to_string(read_attr_int64(obj, name));
  if (info.cls == H5T_FLOAT) {
    std::ostringstream os;
    os << read_attr_double(obj, name);
    return os.str();
  }
  auto v = read_attr_strings(obj, name);
  if (v.size() != 1)
    throw Error("HDF5 attribute '" + name + "' holds " + std::to_string(v.size()) +
                " strings, expected one");
  return v[0];
}

std::vector<std::string> read_attr_strings(hid_t obj, const std::string& name) {
  silence_errors();
  Handle a = attr_handle(FT_H5_ID(H5Aopen(obj, name.c_str(), H5P_DEFAULT)));
  Handle t = type_handle(FT_H5_ID(H5Aget_type(a)));
  Handle s = space_handle(FT_H5_ID(H5Aget_space(a)));
  DatasetInfo info = info_of(t, s);
  if (info.cls != H5T_STRING)
    throw Error("HDF5 attribute '" + name + "' is " + info.dtype() + ", not strings");
  return read_strings(a, t, size_t(info.numel()), true, s);
}

std::vector<std::string> read_dataset_strings(hid_t loc, const std::string& name) {
  Handle d = dataset_handle(open_dataset(loc, name));
  Handle t = type_handle(FT_H5_ID(H5Dget_type(d)));
  Handle s = space_handle(FT_H5_ID(H5Dget_space(d)));
  DatasetInfo info = info_of(t, s);
  if (info.cls != H5T_STRING)
    throw Error("HDF5 dataset '" + name + "' is " + info.dtype() + ", not strings");
  return read_strings(d, t, size_t(info.numel()), false, s);
}

}  // namespace h5
}  // namespace ft
