/// @brief `firetrain info` on weights files and checkpoints of non-default SqueezeNet variants:
/// the Fire modules (s1x1, e1x1, e3x3) and the bypass of each module are printed, from the stored
/// attributes or, without them, from the tensor shapes.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <regex>

#include "firetrain/data/dataset.hpp"
#include "firetrain/io/inspect.hpp"
#include "firetrain/io/weights.hpp"
#include "firetrain/model/net.hpp"

namespace ft {
namespace {

namespace fs = std::filesystem;

/// The line of `text` that contains `key`, "" if none.
std::string line_with(const std::string& text, const std::string& key) {
  const size_t at = text.find(key);
  if (at == std::string::npos) return "";
  const size_t b = text.rfind('\n', at), e = text.find('\n', at);
  return text.substr(b == std::string::npos ? 0 : b + 1,
                     (e == std::string::npos ? text.size() : e) - (b == std::string::npos ? 0 : b + 1));
}

/// Whether the module line of `text` for `fire` (e.g. "fire2 (features.3)") shows these values.
void expect_module(const std::string& text, const std::string& fire, int s, int e1, int e3,
                   const std::string& bypass) {
  const std::string l = line_with(text, fire);
  ASSERT_FALSE(l.empty()) << fire << " not listed:\n" << text;
  const std::regex re("s1x1 +" + std::to_string(s) + " +e1x1 +" + std::to_string(e1) +
                      " +e3x3 +" + std::to_string(e3) + " +bypass " + bypass + "$");
  EXPECT_TRUE(std::regex_search(l, re)) << "'" << l << "', expected s1x1 " << s << " e1x1 " << e1
                                        << " e3x3 " << e3 << " bypass " << bypass;
}

NetSpec variant() {
  NetSpec s;
  s.arch = "squeezenet_small";
  s.in_channels = 1;
  s.height = s.width = 12;
  s.num_classes = 4;
  s.bypass = "complex";
  s.fire.list = "8:24:8,8:24:8,16:40:24,16:40:24,24:56:40,24:56:40,32:80:48,32:80:48";
  return s;
}

TEST(Info, WeightsFileShowsFireModulesAndBypass) {
  const NetSpec spec = variant();
  Net net(spec);
  net.init_weights(3);
  const std::string with = (fs::path(::testing::TempDir()) / "ft_info_attrs.h5").string();
  const std::string bare = (fs::path(::testing::TempDir()) / "ft_info_bare.h5").string();
  save_weights_h5(with, net.param_views(), spec_attrs(spec));
  save_weights_h5(bare, net.param_views(), {});  // no attributes: the shapes tell
  for (const std::string& path : {with, bare}) {
    const std::string d = describe_h5(path);
    SCOPED_TRACE(path);
    EXPECT_NE(d.find("Fire modules (fire=" + spec.fire.list + "; bypass complex)"),
              std::string::npos) << d;
    // fire2: 64 input channels (conv1), 32 output: a 1x1 conv bypass; fire3: 32 -> 32, identity.
    expect_module(d, "fire2 (features.3)", 8, 24, 8, "conv1x1");
    expect_module(d, "fire3 (features.4)", 8, 24, 8, "identity");
    expect_module(d, "fire4 (features.6)", 16, 40, 24, "conv1x1");
    expect_module(d, "fire9 (features.12)", 32, 80, 48, "identity");
  }
  const std::string d = describe_h5(with);
  EXPECT_NE(d.find("  fire: " + spec.fire.list + "\n"), std::string::npos) << d;
  EXPECT_NE(d.find("  bypass: complex\n"), std::string::npos) << d;
  fs::remove(with);
  fs::remove(bare);
}

std::string run(const std::string& args, int* code) {
  const std::string cmd = std::string(FT_BINARY) + " " + args + " 2>&1";
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int st = pclose(p);
  *code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

TEST(Info, CliCheckpointOfAFireVariant) {
  const fs::path dir = fs::path(::testing::TempDir()) / "ft_info_cli";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const int n = 32, K = 4, S = 12;
  std::vector<uint8_t> img(static_cast<size_t>(n * S * S));
  std::vector<int32_t> lab(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    lab[size_t(i)] = i % K;
    for (int j = 0; j < S * S; ++j) img[size_t(i) * S * S + size_t(j)] = uint8_t((j * 7 + i * 13) % 251);
  }
  const std::string data = (dir / "d.h5").string();
  write_dataset(data, img.data(), lab.data(), n, S, S, 1, K, {"a", "b", "c", "d"});
  int code = -1;
  // SR 0.25, pct3x3 0.25: e = 128 -> e3x3 32, e1x1 96, s1x1 32 (fire2, fire3); simple bypass.
  std::string out = run("train --data " + data + " --steps 2 --batch 16 --threads 1 --sr 0.25 "
                        "--pct3x3 0.25 --bypass simple --lr 0.001 --log-every 1 "
                        "--checkpoint-dir " + (dir / "ck").string(), &code);
  ASSERT_EQ(code, 0) << out;
  out = run("info " + (dir / "ck" / "ckpt_2.h5").string(), &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find(": checkpoint"), std::string::npos) << out;
  EXPECT_NE(out.find("  bypass: simple\n"), std::string::npos) << out;
  EXPECT_NE(out.find("  fire_meta: "), std::string::npos) << out;
  EXPECT_NE(out.find("bypass simple):"), std::string::npos) << out;
  expect_module(out, "fire2 (features.3)", 32, 96, 32, "-");
  expect_module(out, "fire3 (features.4)", 32, 96, 32, "identity");
  expect_module(out, "fire5 (features.7)", 64, 192, 64, "identity");
  expect_module(out, "fire9 (features.12)", 128, 384, 128, "identity");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ft
