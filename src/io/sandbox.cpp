/// @brief HDF5 files validated in a fork()ed child (see sandbox.hpp): the generic metadata walk,
/// the caller's probe, the parent's wait with a timeout, and the per-file cache of passes.
#include "firetrain/io/sandbox.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <vector>

#include "firetrain/core/error.hpp"
#include "firetrain/io/h5.hpp"

// Sanitizer builds (the fuzzer): libFuzzer registers a death callback that writes the current
// input as a crash file; a sanitizer report in the child must not run it (the child's crash is
// the parent's clean error). Absent (null) in normal builds.
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace ft::sandbox {

namespace {

bool g_in_child = false;
void (*g_child_hook)(const std::string&) = nullptr;

std::mutex& cache_mutex() {
  static std::mutex m;
  return m;
}
// (path, device, inode, size, mtime s, mtime ns) -> kind -> outcome (an empty message: passed;
// else the exit code and message of the exception to throw again).
using FileKey = std::tuple<std::string, dev_t, ino_t, off_t, int64_t, int64_t>;
struct Verdict {
  int code = 0;
  std::string msg;
};
std::map<FileKey, std::map<std::string, Verdict>>& cache() {
  static std::map<FileKey, std::map<std::string, Verdict>> c;
  return c;
}

[[noreturn]] void throw_verdict(const Verdict& v) {
  if (v.code == kExitBadInput) throw InputError(v.msg);
  throw Error(v.msg, v.code);
}
Stats g_stats;

constexpr const char* kGeneric = "hdf5";

/// Whether the file carries the HDF5 signature where libhdf5 looks for it (offset 0, 512,
/// 1024, ...). Files without one are rejected by H5Fis_hdf5 without parsing anything.
bool has_hdf5_signature(const std::string& path, off_t size) {
  static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool found = false;
  for (off_t at = 0; at + 8 <= size && !found; at = at ? at * 2 : 512) {
    unsigned char b[8];
    found = ::pread(fd, b, 8, at) == 8 && std::memcmp(b, sig, 8) == 0;
  }
  ::close(fd);
  return found;
}

// ---------------------------------------------------------------------------------------------
// The generic walk (child only). Every libhdf5 error is ignored: the walk is there to make
// libhdf5 parse everything a reader may touch, so that its crashes happen here and not in the
// parent. Bounded, so that a file of millions of objects cannot keep it busy.

constexpr size_t kMaxObjects = 4096, kMaxAttrs = 256;
constexpr hssize_t kReadAllElements = 1 << 18;  // datasets this small are read whole

/// Attribute and link names firetrain's readers ask for by name (H5Aexists / H5Lexists take
/// other paths through libhdf5's name indexes than iteration does).
const char* const kAttrNames[] = {
    "num_classes", "class_names", "mean",         "std",           "complete",
    "format",      "step",        "epoch",        "step_in_epoch", "steps_per_epoch",
    "global_batch", "dataset_size", "total_steps", "world_size",   "seed",
    "shuffle",     "rng",         "checksum_model", "checksum_momentum", "arch",
    "bypass",      "config",      "fire",         "fire_meta",     "in_channels",
    "height",      "width"};
const char* const kLinkNames[] = {"images", "labels", "class_names", "model", "optimizer",
                                  "optimizer/momentum"};

herr_t collect_link(hid_t, const char* name, const H5L_info_t*, void* data) {
  auto* names = static_cast<std::vector<std::string>*>(data);
  names->emplace_back(name);
  return names->size() >= kMaxObjects ? 1 : 0;
}

herr_t collect_attr(hid_t, const char* name, const H5A_info_t*, void* data) {
  auto* names = static_cast<std::vector<std::string>*>(data);
  names->emplace_back(name);
  return names->size() >= kMaxAttrs ? 1 : 0;
}

template <class F>
void quietly(F body) {
  try {
    body();
  } catch (const std::exception&) {
  }
}

void walk_attributes(hid_t obj) {
  std::vector<std::string> names;
  hsize_t idx = 0;
  H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr, &names);
  idx = 0;
  std::vector<std::string> by_order;
  H5Aiterate2(obj, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, collect_attr, &by_order);
  for (const std::string& n : names) {
    if (H5Aexists(obj, n.c_str()) <= 0) continue;
    quietly([&] {
      h5::DatasetInfo info = h5::attr_info(obj, n);
      if (info.cls == H5T_STRING) {
        if (info.numel() <= (1 << 16)) h5::read_attr_strings(obj, n);
      } else if ((info.cls == H5T_INTEGER || info.cls == H5T_FLOAT) && info.numel() <= (1 << 20)) {
        h5::read_attr_floats(obj, n);
        h5::Handle a = h5::attr_handle(H5Aopen(obj, n.c_str(), H5P_DEFAULT));
        if (!a.valid()) return;
        std::vector<int64_t> v(size_t(std::max<int64_t>(info.numel(), 1)));
        H5Aread(a, H5T_NATIVE_INT64, v.data());
        std::vector<uint64_t> u(v.size());
        H5Aread(a, H5T_NATIVE_UINT64, u.data());
        std::vector<double> d(v.size());
        H5Aread(a, H5T_NATIVE_DOUBLE, d.data());
      }
    });
  }
  for (const char* n : kAttrNames) H5Aexists(obj, n);
}

/// Reads the elements at `coords` (rank `rank`, n points) converting to `mem`.
void read_points(hid_t dset, hid_t space, hid_t mem, int rank,
                 const std::vector<hsize_t>& coords, size_t elem_bytes) {
  const size_t n = coords.size() / size_t(rank);
  if (H5Sselect_elements(space, H5S_SELECT_SET, n, coords.data()) < 0) return;
  hsize_t mdims[1] = {hsize_t(n)};
  h5::Handle ms = h5::space_handle(H5Screate_simple(1, mdims, nullptr));
  if (!ms.valid()) return;
  std::vector<unsigned char> buf(n * elem_bytes);
  H5Dread(dset, mem, ms, space, H5P_DEFAULT, buf.data());
}

void walk_dataset(hid_t file, const std::string& name, hid_t dset, bool read_data) {
  h5::Handle type = h5::type_handle(H5Dget_type(dset));
  h5::Handle space = h5::space_handle(H5Dget_space(dset));
  if (!type.valid() || !space.valid()) return;
  const H5T_class_t cls = H5Tget_class(type);
  const int rank = H5Sget_simple_extent_ndims(space);
  if (rank < 0) return;
  std::vector<hsize_t> dims(size_t(std::max(rank, 1)), 1);
  if (rank > 0 && H5Sget_simple_extent_dims(space, dims.data(), nullptr) < 0) return;
  const hssize_t numel = H5Sget_simple_extent_npoints(space);
  H5Dget_storage_size(dset);
  H5Dget_offset(dset);
  h5::Handle dcpl = h5::plist_handle(H5Dget_create_plist(dset));
  if (dcpl.valid()) {
    const int nf = H5Pget_nfilters(dcpl);
    for (int i = 0; i < nf && i < 32; ++i) {
      unsigned flags = 0, cfg = 0;
      size_t nelem = 8;
      unsigned values[8];
      char name[64];
      H5Pget_filter2(dcpl, unsigned(i), &flags, &nelem, values, sizeof name, name, &cfg);
    }
    if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
      hsize_t chunk[32];
      const int crank = H5Pget_chunk(dcpl, 32, chunk);
      // libhdf5 allocates a whole chunk to read one element of it; firetrain's readers refuse
      // chunks above 256 MiB (check_chunk_size), so the walk does not read their data either.
      long double bytes = (long double)H5Tget_size(type);
      for (int i = 0; i < crank; ++i) bytes *= (long double)chunk[i];
      if (crank < 0 || bytes > (long double)(256LL << 20)) read_data = false;
      // Walks the whole chunk index (B-tree, fixed or extensible array): every record.
      hsize_t nchunks = 0;
      if (H5Dget_num_chunks(dset, space, &nchunks) >= 0 && nchunks > 0) {
        std::vector<hsize_t> off(size_t(std::max(rank, 1)));
        unsigned mask = 0;
        haddr_t addr = 0;
        hsize_t size = 0;
        H5Dget_chunk_info(dset, space, 0, off.data(), &mask, &addr, &size);
        H5Dget_chunk_info(dset, space, nchunks - 1, off.data(), &mask, &addr, &size);
      }
    }
  }
  // With a probe, the probe reads the data the caller will read (no need to read it twice).
  if (!read_data) return;
  if (numel <= 0 || rank == 0) {
    if (rank == 0 && (cls == H5T_INTEGER || cls == H5T_FLOAT)) {
      double v = 0;
      H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v);
    }
    return;
  }
  if (cls == H5T_STRING) {
    if (numel <= (1 << 16)) {
      // Through firetrain's reader: variable-length strings get its global-heap checks first.
      quietly([&] { h5::read_dataset_strings(file, name); });
    }
    return;
  }
  if (cls != H5T_INTEGER && cls != H5T_FLOAT) return;
  const bool u8 = cls == H5T_INTEGER && H5Tget_size(type) == 1 && H5Tget_sign(type) == H5T_SGN_NONE;
  const hid_t mem = cls == H5T_FLOAT ? H5T_NATIVE_FLOAT : u8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_INT64;
  const size_t esize = H5Tget_size(mem);
  if (numel <= kReadAllElements) {
    std::vector<unsigned char> buf(size_t(numel) * esize);
    H5Dread(dset, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data());
    return;
  }
  // First, middle and last element (each read loads and decodes its whole chunk).
  std::vector<hsize_t> coords;
  for (int which = 0; which < 3; ++which)
    for (int d = 0; d < rank; ++d)
      coords.push_back(which == 0 ? 0 : which == 1 ? dims[size_t(d)] / 2 : dims[size_t(d)] - 1);
  read_points(dset, space, mem, rank, coords, esize);
}

void walk_object(hid_t file, const std::string& name, bool read_data) {
  h5::Handle o(H5Oopen(file, name.c_str(), H5P_DEFAULT), H5Oclose);
  if (!o.valid()) return;
  walk_attributes(o);
  if (H5Iget_type(o) == H5I_DATASET) walk_dataset(file, name, o, read_data);
}

/// What callers without a probe do (read_root_attr, the trainer's stored_config, `firetrain
/// info`): open the file and ask for one root attribute or link by name. libhdf5's crashes
/// depend on what it has loaded before (a corrupt attribute message that H5Aexists walks off on
/// a fresh open may pass once H5Aiterate has loaded the header: a fuzzer finding,
/// tests/fuzz/regressions/h5aexists_heap_overflow_segv.h5), so each name gets a fresh open.
void probe_names(const std::string& path) {
  auto fresh = [&] { return h5::file_handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)); };
  for (const char* n : kAttrNames) {
    h5::Handle f = fresh();
    if (!f.valid()) return;
    if (H5Aexists(f, n) <= 0) continue;
    quietly([&] {
      if (h5::attr_info(f, n).cls == H5T_STRING)
        h5::read_attr_strings(f, n);
      else
        h5::read_attr_floats(f, n);
    });
  }
  for (const char* n : kLinkNames) {
    h5::Handle f = fresh();
    if (!f.valid()) return;
    quietly([&] { h5::is_group(f, n) || h5::is_dataset(f, n); });
  }
}

void walk_file(const std::string& path, bool read_data) {
  h5::silence_errors();
  if (H5Fis_hdf5(path.c_str()) <= 0) return;
  // Without a probe, the callers' own pattern first (with a probe, the probe is that pattern).
  if (read_data) probe_names(path);
  h5::Handle f = h5::file_handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!f.valid()) return;
  std::vector<std::string> names;
  H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, collect_link, &names);
  walk_object(f, "/", read_data);
  for (const std::string& n : names) walk_object(f, n, read_data);
  for (const char* n : kLinkNames) quietly([&] { h5::exists(f, n); });
}

// ---------------------------------------------------------------------------------------------
// The child.

/// What the child writes into the pipe: one status byte, then (for kThrew) the exit code the
/// exception carries (4 bytes) and its message.
enum : char { kPassed = 'P', kThrew = 'E', kOther = 'X' };

void write_all_fd(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    c += w;
    n -= size_t(w);
  }
}

[[noreturn]] void child_main(int fd, const std::string& path, const std::function<void()>& probe) {
  g_in_child = true;
  // The default action for every crash signal: the parent must see the signal, not whatever
  // handler the process had (a fuzzer's or a sanitizer's report-and-exit).
  for (int s : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGALRM, SIGTERM,
                SIGINT, SIGUSR1, SIGUSR2, SIGXCPU, SIGPIPE})
    ::signal(s, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(nullptr);
  // libhdf5's and glibc's own complaints ("malloc(): corrupted top size") would land in the
  // user's terminal before our one message.
  const int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (devnull >= 0) ::dup2(devnull, STDERR_FILENO);
  // If memory runs out, the kernel should kill the child, not the trainer.
  const int oom = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (oom >= 0) {
    write_all_fd(oom, "1000", 4);
    ::close(oom);
  }
  // The forking thread held h5_mutex (our copy of it is locked by "us"): the child is single
  // threaded, so release it for the probe's readers, which take it.
  h5_mutex().try_lock();
  h5_mutex().unlock();
  if (g_child_hook) g_child_hook(path);
  char status = kPassed;
  int32_t code = 0;
  std::string msg;
  try {
    walk_file(path, !probe);
    if (probe) probe();
  } catch (const Error& e) {
    status = kThrew;
    code = e.exit_code();
    msg = e.what();
  } catch (...) {
    // Another exception (std::bad_alloc, ...): the parent's reader will meet it the same way.
    status = kOther;
  }
  write_all_fd(fd, &status, 1);
  if (status == kThrew) {
    write_all_fd(fd, &code, sizeof code);
    write_all_fd(fd, msg.data(), std::min<size_t>(msg.size(), 1 << 16));
  }
  ::_exit(0);
}

// ---------------------------------------------------------------------------------------------
// The parent.

std::string signal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGABRT: return "SIGABRT";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGKILL: return "SIGKILL, out of memory?";
    case SIGTRAP: return "SIGTRAP";
    case SIGSYS: return "SIGSYS";
    default: return "signal " + std::to_string(sig);
  }
}

std::string seconds_str(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", s);
  return b;
}

struct Outcome {
  enum { kPass, kError, kOtherException } what = kPass;
  int code = 0;
  std::string msg;
};

/// Forks the child (the h5 lock must be held by the caller of this function) and returns its
/// pid and the read end of its pipe.
std::pair<pid_t, int> spawn(const std::string& path, const std::function<void()>& probe) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw Error(path + ": cannot create a pipe for the HDF5 validation child: " +
                std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    throw Error(path + ": cannot fork the HDF5 validation child: " + std::strerror(e) +
                " (FIRETRAIN_H5_SANDBOX=0 reads files without it)");
  }
  if (pid == 0) {
    ::close(fds[0]);
    child_main(fds[1], path, probe);
  }
  ::close(fds[1]);
  return {pid, fds[0]};
}

/// Waits for the child: its report through the pipe, then its exit status. Throws the
/// InputError of a crash or a timeout.
Outcome wait_child(const std::string& path, pid_t pid, int fd, double limit) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto deadline = start + std::chrono::duration<double>(limit);
  std::string data;
  bool timed_out = false;
  for (;;) {
    const double left = std::chrono::duration<double>(deadline - clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, int(std::ceil(left * 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;  // timeout: the loop re-checks the deadline
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child exited (or closed the pipe by dying)
    data.append(buf, size_t(n));
  }
  ::close(fd);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  pid_t w;
  do {
    w = ::waitpid(pid, &status, 0);
  } while (w < 0 && errno == EINTR);
  {
    std::lock_guard<std::mutex> lock(cache_mutex());
    g_stats.last_child = pid;
    g_stats.last_seconds = std::chrono::duration<double>(clock::now() - start).count();
  }
  const std::string bad = path + ": not a valid HDF5 file: ";
  if (timed_out)
    throw InputError(bad + "libhdf5 did not finish reading its metadata in " + seconds_str(limit) +
                     " s (the file is corrupt; FIRETRAIN_H5_SANDBOX_TIMEOUT sets the limit)");
  // w < 0 (ECHILD): someone else reaped the child (SIGCHLD ignored); the report decides.
  const bool exited_ok = w < 0 || (WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (w == pid && WIFSIGNALED(status))
    throw InputError(bad + "libhdf5 crashed while reading it (" + signal_name(WTERMSIG(status)) +
                     "); the file is corrupt or hostile");
  if (!exited_ok || data.empty())
    throw InputError(bad + "libhdf5 failed while reading it (the validation process exited " +
                     (w == pid && WIFEXITED(status)
                          ? "with status " + std::to_string(WEXITSTATUS(status))
                          : std::string("without a report")) +
                     "); the file is corrupt or hostile");
  Outcome out;
  if (data[0] == kPassed) return out;
  if (data[0] == kOther) {
    out.what = Outcome::kOtherException;
    return out;
  }
  out.what = Outcome::kError;
  if (data.size() >= 1 + sizeof(int32_t)) {
    int32_t code;
    std::memcpy(&code, data.data() + 1, sizeof code);
    out.code = code;
    out.msg = data.substr(1 + sizeof code);
  }
  return out;
}

void validate(const std::string& path, const std::string& kind,
              const std::function<void()>& probe, bool caller_holds_lock) {
  if (g_in_child || !enabled()) return;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;  // the reader says why
  const FileKey key{path, st.st_dev, st.st_ino, st.st_size, int64_t(st.st_mtim.tv_sec),
                    int64_t(st.st_mtim.tv_nsec)};
  {
    std::lock_guard<std::mutex> lock(cache_mutex());
    auto it = cache().find(key);
    if (it != cache().end()) {
      auto v = it->second.find(kind);
      if (v == it->second.end()) v = it->second.find(kGeneric);  // a crash or hang, any kind
      if (v != it->second.end() && (v->first == kind || !v->second.msg.empty())) {
        ++g_stats.cache_hits;
        if (v->second.msg.empty()) return;
        throw_verdict(v->second);
      }
    }
  }
  if (!has_hdf5_signature(path, st.st_size)) return;  // H5Fis_hdf5 rejects it unparsed
  const double limit = timeout_seconds();
  // The string readers' scan of the file's bytes (no libhdf5, safe here) once in this process:
  // the child inherits its result instead of scanning the file again. A file that fails it is
  // left to the child, whose reader then throws that error where it would in-process.
  try {
    h5::check_global_heaps(path);
  } catch (const InputError&) {
  }
  std::pair<pid_t, int> child;
  if (caller_holds_lock) {
    child = spawn(path, probe);
  } else {
    std::lock_guard<std::mutex> lock(h5_mutex());
    child = spawn(path, probe);
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex());
    ++g_stats.children;
  }
  Outcome out;
  try {
    out = wait_child(path, child.first, child.second, limit);
  } catch (const InputError& e) {
    // A crash or a hang: remembered for every kind (the generic walk may have caused it).
    std::lock_guard<std::mutex> lock(cache_mutex());
    cache()[key][kGeneric] = Verdict{kExitBadInput, e.what()};
    throw;
  }
  std::lock_guard<std::mutex> lock(cache_mutex());
  auto& kinds = cache()[key];
  kinds.emplace(kGeneric, Verdict{});  // the generic walk ran to its end before the probe
  if (out.what == Outcome::kOtherException) return;  // not cached: the reader will throw it
  if (out.what == Outcome::kError) {
    kinds[kind] = Verdict{out.code, out.msg};
    throw_verdict(kinds[kind]);
  }
  kinds[kind] = Verdict{};
}

}  // namespace

bool enabled() {
  const char* v = std::getenv("FIRETRAIN_H5_SANDBOX");
  return !(v && std::strcmp(v, "0") == 0);
}

double timeout_seconds() {
  const char* v = std::getenv("FIRETRAIN_H5_SANDBOX_TIMEOUT");
  if (!v || !*v) return 20.0;
  char* end = nullptr;
  const double s = std::strtod(v, &end);
  if (end == v || *end || !(s > 0) || !std::isfinite(s))
    throw InputError(std::string("FIRETRAIN_H5_SANDBOX_TIMEOUT='") + v +
                     "': expected a number of seconds > 0");
  return s;
}

void check(const std::string& path, const std::string& kind, const std::function<void()>& probe) {
  validate(path, kind, probe, false);
}

void check_locked(const std::string& path) { validate(path, kGeneric, nullptr, true); }

bool in_child() { return g_in_child; }

void forget_all() {
  std::lock_guard<std::mutex> lock(cache_mutex());
  cache().clear();
}

Stats stats() {
  std::lock_guard<std::mutex> lock(cache_mutex());
  return g_stats;
}

namespace testing {
void set_child_hook(void (*hook)(const std::string&)) { g_child_hook = hook; }
}  // namespace testing

}  // namespace ft::sandbox
