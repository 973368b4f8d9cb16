/// @brief Shared test helpers (see cli.hpp).
#include "common/cli.hpp"

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include "firetrain/data/dataset.hpp"
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

void write_square_dataset(const std::string& path, int n, const std::vector<float>& std) {
  const int S = 28;
  std::vector<uint8_t> img(size_t(n) * S * S);
  std::vector<int32_t> lab(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    lab[size_t(i)] = i % 10;
    uint8_t* x = img.data() + size_t(i) * S * S;
    for (int j = 0; j < S * S; ++j) x[j] = uint8_t((j * 37 + i * 11) % 40);
    const int r0 = (lab[size_t(i)] * 3) % (S - 6), c0 = (lab[size_t(i)] * 7) % (S - 6);
    for (int r = r0; r < r0 + 6; ++r)
      for (int c = c0; c < c0 + 6; ++c) x[r * S + c] = 220;
  }
  write_dataset(path, img.data(), lab.data(), n, S, S, 1, 10, {},
                std.empty() ? std::vector<float>{} : std::vector<float>{0.f}, std);
}

}  // namespace ft::test
