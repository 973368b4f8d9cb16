/// @brief Validation of HDF5 files in a child process before the process reads them.
///
/// libhdf5 (1.10.8 on Debian 12) is not memory-safe on corrupt files: the fuzzer found an
/// infinite loop, a use-after-free, heap over-reads and 2 GiB allocations inside it. firetrain
/// rejects the known classes up front (src/io/h5.cpp, src/data/dataset.cpp), but any other bug
/// of libhdf5 would still crash or hang the trainer. So every HDF5 file is first read in a
/// fork()ed child: the child opens it with libhdf5, walks its metadata (every object, every
/// attribute, the chunk indexes; without a probe also a few data elements of each dataset:
/// first, middle and last, or all of small ones) and then runs `probe`:
/// what the reader of the caller will do with the file (ft::Dataset::open, load_checkpoint,
/// load_weights_h5 run themselves there). Only when the child exits cleanly does the process
/// open the file for real. The parent turns
///   - an ft::Error thrown by the probe into the same exception (class and message);
///   - a child killed by a signal into ft::InputError "PATH: not a valid HDF5 file: libhdf5
///     crashed while reading it (SIGSEGV); the file is corrupt or hostile";
///   - a child still running after the timeout (killed) into ft::InputError "PATH: not a valid
///     HDF5 file: libhdf5 did not finish reading its metadata in 20 s (the file is corrupt...)".
/// A file that passed is not checked again in this process while its (device, inode, size,
/// modification time) stay the same; cost on Fashion-MNIST (47 MB): see README "Reliability".
///
/// Environment:
///   FIRETRAIN_H5_SANDBOX=0              no child: files are read in-process directly
///   FIRETRAIN_H5_SANDBOX_TIMEOUT=SEC    the child's time limit (default 20 s)
///
/// The child uses libhdf5 and the heap only (no MPI, no OpenMP, no oneDNN), resets the crash
/// signal handlers to their defaults, sends its stderr to /dev/null and leaves with _exit(), so
/// atexit handlers (MPI, libhdf5's own) never run in it. It is forked with ft::h5_mutex() held,
/// so no other thread of the process is inside libhdf5 at that moment.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>

namespace ft::sandbox {

/// Whether files are validated in a child (FIRETRAIN_H5_SANDBOX is not "0"). Read at each call.
bool enabled();
/// The child's time limit in seconds (FIRETRAIN_H5_SANDBOX_TIMEOUT, default 20). Read at each
/// call; a value that is not a positive number is an ft::InputError.
double timeout_seconds();

/// Validates `path` in a child: the generic metadata walk, then `probe` (may be empty). `kind`
/// names what the probe does (e.g. "dataset"); the cache remembers passes per kind. Files that
/// do not exist or carry no HDF5 signature are not checked (the reader reports those). Throws
/// as described above. The caller must NOT hold ft::h5_mutex() (it is taken for the fork).
void check(const std::string& path, const std::string& kind, const std::function<void()>& probe);
/// The same for a caller that holds ft::h5_mutex() (h5::open_file): generic walk only.
void check_locked(const std::string& path);

/// True in the validation child (where check() does nothing: the child reads directly).
bool in_child();

/// Forgets every cached pass (the fuzzer rewrites one path with new bytes many times a second,
/// faster than the file system's modification time changes).
void forget_all();

/// Counters since the start of the process, for tests and measurements.
struct Stats {
  int64_t children = 0;     // children forked
  int64_t cache_hits = 0;   // checks answered from the cache
  pid_t last_child = -1;    // pid of the latest child (reaped when check() returns)
  double last_seconds = 0;  // wall time of the latest child (fork to reaped)
};
Stats stats();

namespace testing {
/// TEST-ONLY: a function the child calls (with the path) before it validates anything, so that
/// tests can simulate a libhdf5 crash (raise(SIGSEGV)) or hang (sleep) in the child. nullptr
/// (the default, always in the firetrain binary) turns it off.
void set_child_hook(void (*hook)(const std::string& path));
}  // namespace testing

}  // namespace ft::sandbox
