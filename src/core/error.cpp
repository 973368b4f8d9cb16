/// @brief Implementation of the check macros: message with statement, file:line, rank, host.
#include "firetrain/core/error.hpp"

#include <mpi.h>
#include <unistd.h>

#include <hdf5.h>

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

void throw_call_failed(const char* api, const char* stmt, const std::string& why,
                       const char* file, int line) {
  std::ostringstream os;
  os << api << " failed: " << stmt;
  if (!why.empty()) os << ": " << why;
  os << " (" << file << ":" << line << ", " << where_am_i() << ")";
  throw Error(os.str());
}

void check_mpi(int rc, const char* stmt, const char* file, int line) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw_call_failed("MPI", stmt, std::string(msg, len), file, line);
}

void check_h5(long long rc, const char* stmt, const char* file, int line) {
  if (rc >= 0) return;
  throw_call_failed("HDF5", stmt, "returned " + std::to_string(rc), file, line);
}

}  // namespace detail
}  // namespace ft
