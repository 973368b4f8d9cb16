/// @brief Implementation of the check macros: message with statement, file:line, rank, host.
#include "firetrain/core/error.hpp"

#include <mpi.h>
#include <unistd.h>

#include <hdf5.h>

#include <cstring>
#include <sstream>

namespace ft {

std::string where_am_i() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  int init = 0, fin = 0, rank = -1;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::ostringstream os;
  os << "rank " << (rank >= 0 ? std::to_string(rank) : std::string("?")) << " on host " << host;
  return os.str();
}

namespace detail {

namespace {
std::string call_failed_text(const char* api, const char* stmt, const std::string& why,
                             const char* file, int line) {
  std::ostringstream os;
  os << api << " failed: " << stmt;
  if (!why.empty()) os << ": " << why;
  os << " (" << file << ":" << line << ", " << where_am_i() << ")";
  return os.str();
}
}  // namespace

void throw_call_failed(const char* api, const char* stmt, const std::string& why,
                       const char* file, int line) {
  throw Error(call_failed_text(api, stmt, why, file, line));
}

void check_mpi(int rc, const char* stmt, const char* file, int line) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw_call_failed("MPI", stmt, std::string(msg, len), file, line);
}

void check_h5(long long rc, const char* stmt, const char* file, int line, int err) {
  if (rc >= 0) return;
  std::string why = "returned " + std::to_string(rc);
  if (err != 0) why += " (errno: " + std::string(std::strerror(err)) + ")";
  throw Error(call_failed_text("HDF5", stmt, why, file, line), kExitFailure, err);
}

}  // namespace detail
}  // namespace ft
