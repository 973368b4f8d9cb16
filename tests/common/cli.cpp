/// @brief Shared test helpers (see cli.hpp).
#include "common/cli.hpp"

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include "firetrain/io/h5.hpp"

namespace ft::test {

CmdResult run_shell(const std::string& cmdline) {
  const std::string cmd = cmdline + " 2>&1";
  CmdResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

CmdResult run_firetrain(const std::string& args, const std::string& env) {
  return run_shell((env.empty() ? "" : env + " ") + std::string(FT_BINARY) + " " + args);
}

::testing::AssertionResult same_tensors(const std::string& a, const std::string& b,
                                        const std::string& group) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::Handle fa = h5::open_file(a), fb = h5::open_file(b);
  const auto names = h5::list_datasets(fa, group);
  if (names.empty()) return ::testing::AssertionFailure() << a << " has no dataset in " << group;
  if (names != h5::list_datasets(fb, group))
    return ::testing::AssertionFailure() << a << " and " << b << " hold different datasets in "
                                         << group;
  for (const auto& n : names) {
    const auto x = h5::read_dataset<float>(fa, group + "/" + n),
               y = h5::read_dataset<float>(fb, group + "/" + n);
    if (x.size() != y.size() || std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) != 0)
      return ::testing::AssertionFailure() << group << "/" << n << " differs between " << a
                                           << " and " << b;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace ft::test
