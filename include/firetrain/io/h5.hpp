/// @brief Small RAII wrappers over the HDF5 C API, typed read/write helpers and an atomic writer.
///
/// Locking: HDF5 is used from the main thread and from the loader's prefetch thread, so every
/// HDF5 call in firetrain runs with `ft::h5_mutex()` held. The helpers in this header do NOT
/// lock: the caller takes the lock once, declared before any handle so that handles close (in
/// their destructors) while it is still held:
///
///     std::lock_guard<std::mutex> lock(ft::h5_mutex());
///     ft::h5::Handle f = ft::h5::open_file(path);
///     ...
///
/// Every helper silences HDF5's own error printing (per thread), so users see our messages only.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "firetrain/core/error.hpp"

namespace ft {

/// The one mutex that guards every HDF5 call of the process.
std::mutex& h5_mutex();

namespace h5 {

/// Turns off HDF5's automatic error printing for the calling thread (cheap after the first call).
void silence_errors();

/// An owning hid_t; closes it with the right H5*close on destruction. Move-only.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, -1)), closer_(o.closer_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, -1);
      closer_ = o.closer_;
    }
    return *this;
  }
  ~Handle() { reset(); }
  /// Closes now; throws ft::Error if the close fails (a failed file close may mean lost data).
  void close();
  /// Closes now, ignoring errors.
  void reset() noexcept;
  hid_t id() const { return id_; }
  operator hid_t() const { return id_; }  // NOLINT: used where the C API wants an hid_t
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

inline Handle file_handle(hid_t id) { return Handle(id, H5Fclose); }
inline Handle group_handle(hid_t id) { return Handle(id, H5Gclose); }
inline Handle dataset_handle(hid_t id) { return Handle(id, H5Dclose); }
inline Handle space_handle(hid_t id) { return Handle(id, H5Sclose); }
inline Handle attr_handle(hid_t id) { return Handle(id, H5Aclose); }
inline Handle type_handle(hid_t id) { return Handle(id, H5Tclose); }
inline Handle plist_handle(hid_t id) { return Handle(id, H5Pclose); }

// ---------------------------------------------------------------------------------------------
// Files.

/// Opens an existing file read-only. ft::InputError "PATH: no such file", "PATH: not an HDF5
/// file", "PATH: cannot open (truncated or corrupt HDF5 file?)". The file is first validated in
/// a child process (ft::sandbox::check_locked, once per file and process): a file that crashes
/// or hangs libhdf5 there is an ft::InputError "PATH: not a valid HDF5 file: ...".
Handle open_file(const std::string& path);
/// Whether `path` exists and is an HDF5 file (never throws).
bool is_hdf5(const std::string& path);

/// Writes a new HDF5 file at `path` atomically: everything goes to `path.tmp.<pid>`, and
/// commit() flushes, fsyncs, closes and rename()s it over `path`. If commit() is never reached
/// (an exception), the destructor removes the temporary file; `path` is never torn.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  hid_t id() const { return file_.id(); }
  operator hid_t() const { return file_.id(); }  // NOLINT
  const std::string& tmp_path() const { return tmp_; }
  void commit();

 private:
  std::string path_, tmp_;
  Handle file_;
  bool committed_ = false;
};

// ---------------------------------------------------------------------------------------------
// Links and listings.

/// Whether `name` (may contain '/') exists below `loc`; every intermediate link is checked.
bool exists(hid_t loc, const std::string& name);
/// Whether `name` exists below `loc` and is a group / a dataset.
bool is_group(hid_t loc, const std::string& name);
bool is_dataset(hid_t loc, const std::string& name);
/// Names of the datasets directly under `group` (relative to `loc`), in name order.
std::vector<std::string> list_datasets(hid_t loc, const std::string& group = ".");
/// Creates (or opens) a group; intermediate groups are created.
Handle create_group(hid_t loc, const std::string& name);

// ---------------------------------------------------------------------------------------------
// Datasets.

/// What a dataset holds: shape, element class and size.
struct DatasetInfo {
  std::vector<int64_t> shape;
  H5T_class_t cls = H5T_NO_CLASS;
  size_t type_size = 0;
  bool is_signed = false;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  /// "uint8", "int16", "float32", "float64", "string", ...
  std::string dtype() const;
};
DatasetInfo dataset_info(hid_t dset);
/// The shape of a dataspace.
std::vector<int64_t> space_shape(hid_t space);

/// Options of created datasets: chunk shape (empty: contiguous) and gzip level (-1: none).
struct CreateOptions {
  std::vector<int64_t> chunk;
  int gzip = -1;
};

/// The HDF5 file and memory types of the supported element types.
template <class T>
struct Types;
template <>
struct Types<float> {
  static hid_t file() { return H5T_IEEE_F32LE; }
  static hid_t mem() { return H5T_NATIVE_FLOAT; }
};
template <>
struct Types<double> {
  static hid_t file() { return H5T_IEEE_F64LE; }
  static hid_t mem() { return H5T_NATIVE_DOUBLE; }
};
template <>
struct Types<uint8_t> {
  static hid_t file() { return H5T_STD_U8LE; }
  static hid_t mem() { return H5T_NATIVE_UINT8; }
};
template <>
struct Types<int32_t> {
  static hid_t file() { return H5T_STD_I32LE; }
  static hid_t mem() { return H5T_NATIVE_INT32; }
};
template <>
struct Types<int64_t> {
  static hid_t file() { return H5T_STD_I64LE; }
  static hid_t mem() { return H5T_NATIVE_INT64; }
};
template <>
struct Types<uint64_t> {
  static hid_t file() { return H5T_STD_U64LE; }
  static hid_t mem() { return H5T_NATIVE_UINT64; }
};

/// Opens dataset `name` below `loc` (an hid_t the caller wraps, e.g. in dataset_handle()).
hid_t open_dataset(hid_t loc, const std::string& name);

/// Creates dataset `name` of element type `file_type` and `shape` (any rank; rank 0: scalar);
/// intermediate groups in `name` are created.
Handle create_dataset(hid_t loc, const std::string& name, hid_t file_type,
                      const std::vector<int64_t>& shape, const CreateOptions& opt = {});
/// Writes a whole dataset from memory of type `mem_type`.
void write_all(hid_t dset, hid_t mem_type, const void* data);
/// Reads a whole dataset, converting to `mem_type`.
void read_all(hid_t dset, hid_t mem_type, void* data);
/// Reads/writes rows [first, first + count) along dimension 0 (the rest of the dims in full).
void read_rows(hid_t dset, hid_t mem_type, int64_t first, int64_t count, void* data);
void write_rows(hid_t dset, hid_t mem_type, int64_t first, int64_t count, const void* data);

/// Creates and writes dataset `name` = data (shape `shape`) in one call.
template <class T>
void write_dataset(hid_t loc, const std::string& name, const T* data,
                   const std::vector<int64_t>& shape, const CreateOptions& opt = {}) {
  Handle d = create_dataset(loc, name, Types<T>::file(), shape, opt);
  write_all(d, Types<T>::mem(), data);
}
/// Reads dataset `name` whole, converting to T; `shape` (if given) receives its shape.
template <class T>
std::vector<T> read_dataset(hid_t loc, const std::string& name,
                            std::vector<int64_t>* shape = nullptr) {
  Handle d = dataset_handle(open_dataset(loc, name));
  DatasetInfo info = dataset_info(d);
  std::vector<T> out(static_cast<size_t>(info.numel()));
  if (!out.empty()) read_all(d, Types<T>::mem(), out.data());
  if (shape) *shape = info.shape;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Attributes (on a file, group or dataset).

bool has_attr(hid_t obj, const std::string& name);
/// Writes (replacing) an attribute.
void write_attr(hid_t obj, const std::string& name, int64_t v);
void write_attr_u64(hid_t obj, const std::string& name, uint64_t v);
void write_attr(hid_t obj, const std::string& name, double v);
void write_attr(hid_t obj, const std::string& name, const std::string& v);
void write_attr(hid_t obj, const std::string& name, const char* v);
void write_attr(hid_t obj, const std::string& name, const std::vector<float>& v);
/// A 1-D array of variable-length UTF-8 strings (h5py reads it as an array of str).
void write_attr(hid_t obj, const std::string& name, const std::vector<std::string>& v);

/// Class and shape of an attribute.
DatasetInfo attr_info(hid_t obj, const std::string& name);
/// Reads scalar (or 1-element) numeric attributes, converting; throws ft::Error on other types.
int64_t read_attr_int64(hid_t obj, const std::string& name);
uint64_t read_attr_u64(hid_t obj, const std::string& name);
double read_attr_double(hid_t obj, const std::string& name);
/// Numeric attribute of any length, as floats.
std::vector<float> read_attr_floats(hid_t obj, const std::string& name);
/// A string attribute (fixed or variable length); numbers are formatted.
std::string read_attr_string(hid_t obj, const std::string& name);
/// An array of strings (fixed or variable length) from an attribute or a dataset.
std::vector<std::string> read_attr_strings(hid_t obj, const std::string& name);
std::vector<std::string> read_dataset_strings(hid_t loc, const std::string& name);

/// The check the string readers above run before libhdf5 reads variable-length strings: a scan
/// of the file's bytes (no libhdf5) for global heap collections and references that libhdf5
/// 1.10.8 mishandles (an endless loop, wild reads). ft::InputError "PATH: corrupt HDF5 ...".
/// Remembered per file (device, inode, size, modification time): scanned once per process.
void check_global_heaps(const std::string& path);

}  // namespace h5

/// Runs `body`; HDF5 failures while reading (a corrupt or truncated file) become an
/// ft::InputError "<path>: <what> (corrupt or truncated file?): <first line of the error>", so
/// bad files exit with code 2, never a crash.
template <class F>
auto as_input_error(const std::string& path, F body, const char* what = "cannot read")
    -> decltype(body()) {
  try {
    return body();
  } catch (const InputError&) {
    throw;
  } catch (const Error& e) {
    std::string why = e.what();
    if (auto nl = why.find('\n'); nl != std::string::npos) why.resize(nl);
    throw InputError(path + ": " + what + " (corrupt or truncated file?): " + why);
  }
}

}  // namespace ft
