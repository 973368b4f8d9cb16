/// @brief Atomic whole-file writes (see the header).
#include "firetrain/io/file.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "firetrain/core/error.hpp"

namespace ft {

void write_file_atomic(const std::string& path,
                       const std::function<void(const ByteSink&)>& produce) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* fp = std::fopen(tmp.c_str(), "wb");
  if (!fp) throw InputError(path + ": cannot create: " + std::strerror(errno));
  try {
    produce([&](const char* d, size_t n) {
      if (n && std::fwrite(d, 1, n, fp) != n)
        throw Error(tmp + ": write failed: " + std::strerror(errno));
    });
    if (std::fflush(fp) != 0 || ::fsync(fileno(fp)) != 0)
      throw Error(tmp + ": flush failed: " + std::strerror(errno));
  } catch (...) {
    std::fclose(fp);
    std::remove(tmp.c_str());
    throw;
  }
  if (std::fclose(fp) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw Error(tmp + ": close failed: " + std::strerror(e));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw Error(path + ": rename failed: " + std::strerror(e));
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, [&](const ByteSink& out) { out(bytes.data(), bytes.size()); });
}

}  // namespace ft
