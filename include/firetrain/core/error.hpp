/// @brief Errors and the one family of check macros every external call goes through.
///
/// Every CUDA/cuDNN/NCCL/MPI/HDF5 call is wrapped in FT_MPI / FT_H5 / FT_CUDA / FT_NCCL /
/// FT_CUDNN. On failure they throw ft::Error carrying the statement text, file:line, the MPI
/// rank and the host, so that a failure on rank 7 of 64 says so. Bad user input throws
/// ft::InputError (exit code 2) with a message naming the file and the problem.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

namespace ft {

/// Exit codes of the firetrain binary: 0 ok, 1 other failure, 2 bad usage or bad input.
enum ExitCode : int { kExitOk = 0, kExitFailure = 1, kExitBadInput = 2 };

/// Base of everything firetrain throws. exit_code() says how main should exit.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, int exit_code = kExitFailure, int sys_errno = 0)
      : std::runtime_error(what), exit_code_(exit_code), sys_errno_(sys_errno) {}
  int exit_code() const { return exit_code_; }
  /// The system's errno left by a failed library call (FT_H5: ENOSPC from a write on a full
  /// disk...), or 0.
  int sys_errno() const { return sys_errno_; }

 private:
  int exit_code_;
  int sys_errno_;
};

/// Bad usage, bad flags, or bad input files: exit code 2.
class InputError : public Error {
 public:
  explicit InputError(const std::string& what) : Error(what, kExitBadInput) {}
};

/// "rank 3 on host node07" (or "rank ? on host ..." before MPI is initialized).
std::string where_am_i();

namespace detail {
[[noreturn]] void throw_call_failed(const char* api, const char* stmt, const std::string& why,
                                    const char* file, int line);
void check_mpi(int rc, const char* stmt, const char* file, int line);
/// err: errno right after the call (errno is cleared before it), named in the message.
void check_h5(long long rc, const char* stmt, const char* file, int line, int err = 0);
}  // namespace detail

}  // namespace ft

/// Throws ft::Error if an MPI call does not return MPI_SUCCESS.
#define FT_MPI(stmt)                                            \
  do {                                                          \
    ::ft::detail::check_mpi((stmt), #stmt, __FILE__, __LINE__); \
  } while (0)

/// Throws ft::Error if an HDF5 call returns a negative value (herr_t or hid_t), with the errno
/// the call left (a failed write on a full disk: ENOSPC) in the message and in sys_errno().
#define FT_H5(stmt)                                                                 \
  do {                                                                              \
    errno = 0;                                                                      \
    const long long ft_h5_rc_ = static_cast<long long>(stmt);                       \
    ::ft::detail::check_h5(ft_h5_rc_, #stmt, __FILE__, __LINE__, errno);            \
  } while (0)

/// Like FT_H5 but yields the (checked) value, for calls that return handles.
#define FT_H5_ID(stmt) (errno = 0, ::ft::detail::h5_id((stmt), #stmt, __FILE__, __LINE__))

/// Validation that must survive NDEBUG: throws ft::Error with the condition and a message.
#define FT_REQUIRE(cond, msg)                                                          \
  do {                                                                                 \
    if (!(cond)) ::ft::detail::throw_call_failed("check", #cond, (msg), __FILE__, __LINE__); \
  } while (0)

namespace ft::detail {
template <class Id>
inline Id h5_id(Id id, const char* stmt, const char* file, int line) {
  check_h5(static_cast<long long>(id), stmt, file, line, errno);
  return id;
}
}  // namespace ft::detail
