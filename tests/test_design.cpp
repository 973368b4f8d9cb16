/// @brief The paper's design space (issue 6): Fire metaparameters, parameter counts and MACs of
/// variants against hand-computed values, the complex bypass against the naive double
/// reference and central differences, and `firetrain sweep` end to end on a tiny dataset.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "common/check.hpp"
#include "common/naive.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/ops/loss.hpp"
#include "firetrain/train/sweep.hpp"

namespace ft {
namespace {

using test::dvec;
using test::NaiveNet;
using fvec = std::vector<float>;
namespace fs = std::filesystem;

std::vector<FireConfig> squeezenet_modules() {
  return {{16, 64, 64},   {16, 64, 64},   {32, 128, 128}, {32, 128, 128},
          {48, 192, 192}, {48, 192, 192}, {64, 256, 256}, {64, 256, 256}};
}

int64_t total_macs(const Net& net) {
  int64_t m = 0;
  for (auto& l : net.layer_table()) m += l.macs;
  return m;
}

NetSpec spec_of(const std::string& arch, FireMeta fire = {}, const std::string& bypass = "none") {
  NetSpec s{arch, 3, 224, 224, 1000, 0.5f};
  s.fire = fire;
  s.bypass = bypass;
  return s;
}

// =============================================================================================
// Fire metaparameters (paper section 3.2).

TEST(Design, DefaultMetaparametersAreSqueezeNet) {
  EXPECT_EQ(fire_configs(FireMeta{}), squeezenet_modules());
  EXPECT_TRUE(FireMeta{}.is_default());
  EXPECT_EQ(FireMeta{}.label(), "default");
  EXPECT_EQ(fire_list_string(squeezenet_modules()),
            "16:64:64,16:64:64,32:128:128,32:128:128,48:192:192,48:192:192,64:256:256,64:256:256");
  // The explicit list of the same modules builds the same net.
  FireMeta m;
  m.list = fire_list_string(squeezenet_modules());
  EXPECT_FALSE(m.is_default());
  EXPECT_EQ(fire_configs(m), squeezenet_modules());
}

TEST(Design, MetaparametersAndRounding) {
  FireMeta m;
  m.sr = 0.25;  // s1x1 = 0.25 e
  EXPECT_EQ(fire_configs(m)[0], (FireConfig{32, 64, 64}));
  EXPECT_EQ(fire_configs(m)[7], (FireConfig{128, 256, 256}));
  EXPECT_EQ(m.label(), "SR=0.25");
  m = {};
  m.pct3x3 = 0.75;
  EXPECT_EQ(fire_configs(m)[0], (FireConfig{16, 32, 96}));
  EXPECT_EQ(fire_configs(m)[4], (FireConfig{48, 96, 288}));
  // pct3x3 0.01 of 128 = 1.28 -> 1; of 384 = 3.84 -> 4; 0.99 of 128 = 126.72 -> 127.
  m.pct3x3 = 0.01;
  EXPECT_EQ(fire_configs(m)[0], (FireConfig{16, 127, 1}));
  EXPECT_EQ(fire_configs(m)[4], (FireConfig{48, 380, 4}));
  m.pct3x3 = 0.99;
  EXPECT_EQ(fire_configs(m)[0], (FireConfig{16, 1, 127}));
  // Round half up, on the exact product: 0.3 * 5 = 1.5 -> 2 (not 1.4999999999999998 -> 1).
  m = {};
  m.base_e = 5;
  m.incr_e = 0;
  m.pct3x3 = 0.3;
  EXPECT_EQ(fire_configs(m)[0], (FireConfig{1, 3, 2}));  // s1x1 = 0.625 -> 1
  // At least one filter everywhere: SR 0.01 of 128 = 1.28 -> 1; of 8 = 0.08 -> 1.
  m = {};
  m.base_e = 8;
  m.incr_e = 8;
  m.freq = 1;
  m.sr = 0.01;
  auto f = fire_configs(m);
  EXPECT_EQ(f[0], (FireConfig{1, 4, 4}));
  EXPECT_EQ(f[7], (FireConfig{1, 32, 32}));  // freq 1: e = 8 + 8 i
  EXPECT_EQ(m.label(), "SR=0.01 base_e=8 incr_e=8 freq=1");
}

TEST(Design, BadFireOptionsThrowInputError) {
  auto bad = [](auto edit) {
    FireMeta m;
    edit(m);
    EXPECT_THROW(fire_configs(m), InputError) << m.label();
    EXPECT_THROW(Net(spec_of("squeezenet1_0", m)), InputError);
  };
  bad([](FireMeta& m) { m.freq = 0; });
  bad([](FireMeta& m) { m.base_e = 1; });
  bad([](FireMeta& m) { m.incr_e = -1; });
  bad([](FireMeta& m) { m.pct3x3 = 0; });
  bad([](FireMeta& m) { m.pct3x3 = 1; });
  bad([](FireMeta& m) { m.sr = 0; });
  bad([](FireMeta& m) { m.list = "16:64:64"; });                           // 1 of 8
  bad([](FireMeta& m) { m.list = "16:64:64,16:64,1:1:1,1:1:1,1:1:1,1:1:1,1:1:1,1:1:1"; });
  bad([](FireMeta& m) { m.list = "16:64:0,1:1:1,1:1:1,1:1:1,1:1:1,1:1:1,1:1:1,1:1:1"; });
  bad([](FireMeta& m) { m.list = "a:b:c,1:1:1,1:1:1,1:1:1,1:1:1,1:1:1,1:1:1,1:1:1"; });
  FireMeta sr;
  sr.sr = 0.25;
  EXPECT_THROW(Net(spec_of("alexnet", sr)), InputError);
  EXPECT_THROW(Net(spec_of("squeezenet1_0", {}, "dense")), InputError);
  // The simple bypass needs equal channels around fire3, 5, 7, 9; with freq 1 they differ.
  FireMeta f1;
  f1.freq = 1;
  try {
    Net(spec_of("squeezenet1_0", f1, "simple"));
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("fire3"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(Net(spec_of("squeezenet1_0", f1, "complex")));
}

// =============================================================================================
// Parameter counts and MACs (224x224x3, 1000 classes) against values computed by hand from
// params(Fire) = C·s + s + s·e1 + e1 + 9·s·e3 + e3 and MACs(Fire) = H·W·(C·s + s·e1 + 9·s·e3),
// conv1 14,208 params / 109·109·96·3·49 MACs, conv10 (512 + 1)·1000 / 13·13·1000·512.

TEST(Design, ParamsAndMacsOfVariants) {
  struct Case {
    const char* what;
    FireMeta fire;
    const char* bypass;
    int64_t params, macs;
  };
  FireMeta sr25, pct75;
  sr25.sr = 0.25;
  pct75.pct3x3 = 0.75;
  const Case cases[] = {
      {"defaults", {}, "none", 1248424, 818924576},
      // SR 0.25: s1x1 doubles: 32, 32, 64, 64, 96, 96, 128, 128.
      {"SR 0.25", sr25, "none", 1967080, 1383656480},
      // pct3x3 0.75: (e1, e3) = (32, 96), (64, 192), (96, 288), (128, 384).
      {"pct3x3 0.75", pct75, "none", 1494184, 1015131168},
      // Simple bypass: identities only.
      {"simple bypass", {}, "simple", 1248424, 818924576},
      // Complex bypass: 1x1 convs with bias around fire2 (96->128), fire4 (128->256),
      // fire6 (256->384), fire8 (384->512): 12,416 + 33,024 + 98,688 + 197,120 = 341,248
      // parameters; MACs 54²·(96·128 + 128·256) + 27²·(256·384 + 384·512) = 346,374,144.
      {"complex bypass", {}, "complex", 1589672, 1165298720},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    Net net(spec_of("squeezenet1_0", c.fire, c.bypass));
    EXPECT_EQ(int64_t(net.num_params()), c.params);
    EXPECT_EQ(total_macs(net), c.macs);
  }
  // The paper's Figure 2(a) sizes: SR 0.75 is the "19MB" model; SR 1.0 ~25 MB (fp32).
  const int64_t by_sr[] = {1248424, 1967080, 3404392, 4841704, 6279016};
  const double srs[] = {0.125, 0.25, 0.5, 0.75, 1.0};
  for (int i = 0; i < 5; ++i) {
    FireMeta m;
    m.sr = srs[i];
    EXPECT_EQ(count_params(spec_of("squeezenet1_0", m)), by_sr[i]) << "SR " << srs[i];
  }
  // Figure 2(b): pct3x3 0.01 ... 0.99.
  const int64_t by_pct[] = {766888, 1002664, 1248424, 1494184, 1729960};
  const double pcts[] = {0.01, 0.25, 0.5, 0.75, 0.99};
  for (int i = 0; i < 5; ++i) {
    FireMeta m;
    m.pct3x3 = pcts[i];
    EXPECT_EQ(count_params(spec_of("squeezenet1_0", m)), by_pct[i]) << "pct3x3 " << pcts[i];
  }
  // squeezenet1_1 with complex bypass: fire2's input has 64 channels (64·128 + 128 = 8,320).
  EXPECT_EQ(count_params(spec_of("squeezenet1_1", {}, "complex")),
            1235496 + 8320 + 33024 + 98688 + 197120);
}

TEST(Design, ComplexBypassNamesLayoutAndTable) {
  Net net(spec_of("squeezenet1_0", {}, "complex"));
  const auto& v = net.param_views();
  // Contiguous, in forward order; the bypass conv after its module's expand3x3.
  size_t off = 0;
  std::vector<std::string> names;
  for (auto& p : v) {
    EXPECT_EQ(p.offset, off) << p.name;
    off += p.numel();
    names.push_back(p.name);
  }
  EXPECT_EQ(off, net.num_params());
  auto at = [&](const std::string& n) {
    return size_t(std::find(names.begin(), names.end(), n) - names.begin());
  };
  for (int idx : {3, 5, 8, 10}) {  // fire2, 4, 6, 8
    const std::string k = "features." + std::to_string(idx);
    ASSERT_LT(at(k + ".bypass.weight"), names.size()) << k;
    EXPECT_EQ(at(k + ".bypass.weight"), at(k + ".expand3x3.bias") + 1);
    EXPECT_EQ(at(k + ".bypass.bias"), at(k + ".bypass.weight") + 1);
  }
  for (int idx : {4, 7, 9, 12})  // fire3, 5, 7, 9: identities
    EXPECT_EQ(at("features." + std::to_string(idx) + ".bypass.weight"), names.size());
  EXPECT_EQ(v[at("features.3.bypass.weight")].shape, (std::vector<int64_t>{128, 96, 1, 1}));
  EXPECT_EQ(v[at("features.10.bypass.bias")].shape, (std::vector<int64_t>{512}));
  // Every other name is torchvision's: the same list as without bypass.
  Net plain(spec_of("squeezenet1_0"));
  std::vector<std::string> rest;
  for (auto& n : names)
    if (n.find(".bypass.") == std::string::npos) rest.push_back(n);
  ASSERT_EQ(rest.size(), plain.param_views().size());
  for (size_t i = 0; i < rest.size(); ++i) EXPECT_EQ(rest[i], plain.param_views()[i].name);
  // The layer table names the modules' sizes and bypasses.
  int fires = 0;
  for (auto& l : net.layer_table()) {
    if (l.name.rfind("fire", 0) != 0) continue;
    const int num = std::stoi(l.name.substr(4));
    EXPECT_EQ(l.bypass, num % 2 == 0 ? "conv1x1" : "identity") << l.name;
    EXPECT_EQ((FireConfig{l.s1, l.e1, l.e3}), squeezenet_modules()[size_t(num - 2)]) << l.name;
    ++fires;
  }
  EXPECT_EQ(fires, 8);
}

// =============================================================================================
// Complex bypass gradients: ft::Net against the naive double reference (tests/common/naive.*),
// and the reference against central differences.

std::vector<std::array<int, 3>> as_arrays(const std::vector<FireConfig>& f) {
  std::vector<std::array<int, 3>> a;
  for (auto& c : f) a.push_back({c.s1, c.e1, c.e3});
  return a;
}

// Tiny modules; channels differ at fire2, 3, 4, 6, 8 and match at 5, 7, 9, so the 1x1 bypass
// conv also sits on an odd module.
const char* kTinyFire = "3:4:4,4:5:5,4:6:6,4:6:6,5:8:8,5:8:8,6:10:10,6:10:10";

void compare_with_naive(const NetSpec& spec, int N, uint32_t seed) {
  SCOPED_TRACE(spec.arch + " " + spec.bypass + " " + spec.fire.label());
  Net net(spec);
  net.init_weights(seed);
  for (auto& v : net.param_views())
    if (v.name == "classifier.1.weight")
      for (size_t j = 0; j < v.numel(); ++j) v.data[j] *= 30.f;
  NaiveNet ref(spec.arch, spec.in_channels, spec.height, spec.width, spec.num_classes,
               spec.bypass, as_arrays(fire_configs(spec.fire)));
  ASSERT_EQ(ref.num_params(), net.num_params());
  for (size_t i = 0; i < net.num_params(); ++i) ref.params[i] = net.params()[i];
  const int K = spec.num_classes;
  fvec x = test::random_floats(size_t(N) * spec.height * spec.width * spec.in_channels, seed + 1);
  std::vector<int32_t> labels;
  for (int n = 0; n < N; ++n) labels.push_back(int32_t((n * 7 + 3) % K));
  PassContext ctx;
  ctx.N = N;
  const dvec& zr = ref.forward(N, test::to_double(x));
  const float* zp = net.forward(ctx, x.data());
  fvec z(zp, zp + size_t(N) * K);
  test::expect_close(z, zr, 1e-4, 1e-5 * test::abs_max(zr.data(), zr.size()), "logits");
  test::XentRef xr = test::xent_ref(N, K, zr, labels, N);
  ref.backward(xr.dlogits);
  fvec dl(z.size());
  cpu::softmax_xent(N, K, z.data(), labels.data(), N, dl.data());
  net.backward(ctx, dl.data());
  int bypass_tensors = 0;
  for (auto& v : net.param_views()) {
    const double* g = ref.grads.data() + v.offset;
    const double scale = test::abs_max(g, v.numel());
    test::CloseReport r = test::compare(v.grad, g, v.numel(), 0, 1e-4 * scale);
    if (!r.ok) ADD_FAILURE() << r.str(v.name);
    if (v.name.find(".bypass.") != std::string::npos) {
      ++bypass_tensors;
      EXPECT_GT(scale, 0.0) << v.name << ": no gradient reaches the bypass conv";
    }
  }
  EXPECT_GT(bypass_tensors, 0);
}

TEST(Design, ComplexBypassMatchesNaiveNet) {
  NetSpec small{"squeezenet_small", 1, 12, 12, 5, 0.5f};
  small.bypass = "complex";
  compare_with_naive(small, 2, 5);  // SqueezeNet's modules (4 bypass convs)
  small.fire.list = kTinyFire;
  compare_with_naive(small, 3, 6);
  NetSpec v10{"squeezenet1_0", 3, 48, 48, 7, 0.5f};
  v10.bypass = "complex";
  v10.fire.list = kTinyFire;
  compare_with_naive(v10, 2, 7);
  NetSpec v11{"squeezenet1_1", 2, 40, 40, 4, 0.5f};
  v11.bypass = "complex";
  v11.fire.sr = 0.5;
  v11.fire.pct3x3 = 0.25;
  v11.fire.base_e = 8;
  v11.fire.incr_e = 4;
  compare_with_naive(v11, 2, 8);
}

// The naive net's complex bypass against central differences in double (as
// ModelTest.NaiveNetFiniteDifferences does for the plain net): every bypass tensor fully, a few
// points of every other tensor.
TEST(Design, ComplexBypassFiniteDifferences) {
  NetSpec spec{"squeezenet_small", 1, 12, 12, 5, 0.5f};
  spec.bypass = "complex";
  spec.fire.list = kTinyFire;
  Net net(spec);
  net.init_weights(5);
  NaiveNet ref(spec.arch, 1, 12, 12, 5, "complex", as_arrays(fire_configs(spec.fire)));
  ASSERT_EQ(ref.num_params(), net.num_params());
  for (size_t i = 0; i < net.num_params(); ++i) ref.params[i] = net.params()[i];
  for (auto& v : net.param_views())
    if (v.name == "classifier.1.weight")
      for (size_t j = 0; j < v.numel(); ++j) ref.params[v.offset + j] *= 30.0;
  const int N = 2, K = 5;
  dvec x = test::to_double(test::random_floats(size_t(N) * 12 * 12, 9, 0.f, 1.f));
  std::vector<int32_t> labels = {1, 3};
  auto loss = [&] { return test::xent_ref(N, K, ref.forward(N, x), labels, N).loss_sum / N; };
  test::XentRef xr = test::xent_ref(N, K, ref.forward(N, x), labels, N);
  ref.backward(xr.dlogits);
  dvec grad = ref.grads;
  size_t checked = 0;
  for (auto& v : net.param_views()) {
    const bool bypass = v.name.find(".bypass.") != std::string::npos;
    test::GradCheckOptions o;
    o.h = 1e-7;  // the loss is densely kinked (see ModelTest.WholeNetFiniteDifferences)
    o.threshold = 1e-6;
    o.kink_tol = 1e-4;
    o.max_points = bypass ? 0 : 2;
    o.seed = uint32_t(v.offset);
    o.max_skipped_percent = bypass ? 20 : 100;
    auto r = test::check_gradient(loss, ref.params.data() + v.offset, v.numel(),
                                  grad.data() + v.offset, "naive " + v.name, o);
    if (bypass) checked += r.checked;
  }
  EXPECT_GT(checked, 100u);
}

// =============================================================================================
// The sweep.

TEST(Design, SweepVariants) {
  SweepConfig c;
  c.sr = "0.125,0.25";
  c.bypass = "none,complex";
  auto v = sweep_variants(c);
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v[0].name, "SR=0.125 bypass=none");
  EXPECT_EQ(v[3].name, "SR=0.25 bypass=complex");
  EXPECT_EQ(v[3].fire.sr, 0.25);
  EXPECT_EQ(v[3].bypass, "complex");
  c = {};
  c.pct3x3 = "0.01, 0.25,0.5,0.75,0.99";
  v = sweep_variants(c);
  ASSERT_EQ(v.size(), 5u);
  EXPECT_EQ(v[1].name, "pct3x3=0.25");
  EXPECT_EQ(v[4].fire.pct3x3, 0.99);
  c = {};
  c.fire = std::string(kTinyFire) + ";" + fire_list_string(squeezenet_modules());
  v = sweep_variants(c);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].name, "fire#1");
  EXPECT_EQ(v[1].fire.list, fire_list_string(squeezenet_modules()));
  c = {};
  EXPECT_EQ(sweep_variants(c).size(), 1u);
  c.sr = "0.1,x";
  EXPECT_THROW(sweep_variants(c), InputError);
  c = {};
  c.freq = "1.5";
  EXPECT_THROW(sweep_variants(c), InputError);
  c = {};
  c.pct3x3 = "0.5,1.0";  // validated before any training
  EXPECT_THROW(sweep_variants(c), InputError);
  c = {};
  c.bypass = "none,dense";
  EXPECT_THROW(sweep_variants(c), InputError);
  c = {};
  c.fire = kTinyFire;
  c.sr = "0.25";
  EXPECT_THROW(sweep_variants(c), InputError);
}

TEST(Design, SweepTableCsvAndSvg) {
  std::vector<SweepRow> rows(3);
  rows[0] = {"SR=0.125", "16:64:64", "none", 1248424, 818924576, 4.993696, 0.5, 0.9, 1.2, 3};
  rows[1] = {"SR=0.25", "32:64:64", "none", 1967080, 1383656480, 7.86832, 0.625, 0.95, 1.1, 4};
  rows[2] = {"SR=0.125 <c>", "16:64:64", "complex", 1589672, 1165298720, 6.358688, 0.55, 0.9, 1, 5};
  const std::string t = sweep_table(rows);
  EXPECT_NE(t.find("(MB fp32)"), std::string::npos) << t;
  EXPECT_NE(t.find("1967080"), std::string::npos) << t;
  EXPECT_NE(t.find("0.6250"), std::string::npos) << t;
  const std::string csv = sweep_csv(rows);
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "variant,bypass,fire,params,macs,size_mb,top1,top5,loss,seconds");
  EXPECT_NE(csv.find("\"SR=0.25\",none,\"32:64:64\",1967080,1383656480,7.868320,0.625000"),
            std::string::npos) << csv;
  const std::string svg = render_sweep_svg(rows, "a & b");
  EXPECT_EQ(svg.rfind("<svg ", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("a &amp; b"), std::string::npos);
  EXPECT_NE(svg.find("SR=0.125 &lt;c&gt;"), std::string::npos);
  EXPECT_NE(svg.find("bypass complex"), std::string::npos);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '<') - std::count(svg.begin(), svg.end(), '>'), 0);
  size_t circles = 0;
  for (size_t p = 0; (p = svg.find("<circle", p)) != std::string::npos; ++p) ++circles;
  EXPECT_EQ(circles, 3u);
  EXPECT_THROW(render_sweep_svg({}, "x"), InputError);
}

struct CmdResult {
  int code = -1;
  std::string out;
};
CmdResult run_cmd(const std::string& cmd) {
  CmdResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST(Design, InfoArchTakesTheFireOptions) {
  CmdResult r = run_cmd(std::string(FT_BINARY) + " info --arch squeezenet1_0 --sr 0.25");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("1967080"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("SR=0.25"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("s1x1"), std::string::npos) << r.out;
  r = run_cmd(std::string(FT_BINARY) + " info --arch squeezenet1_0 --bypass complex");
  EXPECT_NE(r.out.find("1589672"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("conv1x1"), std::string::npos) << r.out;
  r = run_cmd(std::string(FT_BINARY) + " info --arch squeezenet1_0 --pct3x3 1.5");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--pct3x3"), std::string::npos) << r.out;
}

// `firetrain sweep` as users run it, data-parallel on 2 ranks: 128 random 28x28x1 images, two
// squeeze ratios x two bypass kinds, 3 steps each. Checks the table, CSV and SVG, not accuracy.
// (--init xavier: with the default torchvision init the complex bypass diverges, see README.)
TEST(Design, SweepRunsOnATinyDatasetWithTwoRanks) {
  const fs::path dir = fs::path(::testing::TempDir()) / "ft_design_sweep";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const int n = 128, S = 28, K = 4;
  std::mt19937 rng(3);
  std::vector<uint8_t> img(size_t(n) * S * S);
  std::vector<int32_t> lab(n);
  for (auto& b : img) b = uint8_t(rng() & 255);
  for (int i = 0; i < n; ++i) lab[size_t(i)] = i % K;
  const std::string train = (dir / "train.h5").string(), val = (dir / "val.h5").string();
  write_dataset(train, img.data(), lab.data(), n, S, S, 1, K, {});
  write_dataset(val, img.data(), lab.data(), 32, S, S, 1, K, {});
  const std::string csv = (dir / "sweep.csv").string(), svg = (dir / "sweep.svg").string();
  const std::string cmd = std::string(FT_MPIEXEC) +
                          " --allow-run-as-root --oversubscribe --bind-to none -np 2 " +
                          FT_BINARY + " sweep --arch squeezenet_small --data " + train +
                          " --val " + val + " --steps 3 --batch 16 --lr 0.01 --threads 1 --init xavier " +
                          "--sr 0.125,0.5 --bypass none,complex --progress plain --out " + csv +
                          " --plot " + svg;
  CmdResult r = run_cmd(cmd);
  ASSERT_EQ(r.code, 0) << r.out;
  // Parameter counts of the small net at 1 channel, 4 classes, computed like the table above:
  // SR 0.5 adds (C + 1 + e1 + 9·e3)·Δs over the 8 modules.
  FireMeta half;
  half.sr = 0.5;
  NetSpec s{"squeezenet_small", 1, S, S, K, 0.5f};
  const int64_t p0 = count_params(s);
  s.fire = half;
  const int64_t p1 = count_params(s);
  s.bypass = "complex";
  const int64_t p1c = count_params(s);
  EXPECT_EQ(p0, 9 * 64 + 64 + 720704 + 4 * 512 + 4);
  EXPECT_NE(r.out.find("SR=0.5 bypass=complex"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(std::to_string(p1c)), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("error"), std::string::npos) << r.out;
  std::ifstream f(csv);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string c = ss.str();
  EXPECT_EQ(std::count(c.begin(), c.end(), '\n'), 5) << c;
  EXPECT_NE(c.find("\"SR=0.5 bypass=none\",none,\"64:64:64,"), std::string::npos) << c;
  EXPECT_NE(c.find("," + std::to_string(p1) + ","), std::string::npos) << c;
  EXPECT_NE(c.find("," + std::to_string(p0) + ","), std::string::npos) << c;
  EXPECT_EQ(c.find("nan"), std::string::npos) << c;
  std::ifstream g(svg);
  std::stringstream gs;
  gs << g.rdbuf();
  EXPECT_NE(gs.str().find("</svg>"), std::string::npos);
  EXPECT_NE(gs.str().find("bypass complex"), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ft
