/// @brief The paper's design space (issue 6): Fire metaparameters, parameter counts and MACs of
/// variants against hand-computed values, the complex bypass against the naive double
/// reference and central differences, and `firetrain sweep` end to end on a tiny dataset.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "common/check.hpp"
#include "common/cli.hpp"
#include "common/naive.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/h5.hpp"
#include "firetrain/io/weights.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/ops/loss.hpp"
#include "firetrain/ops/sgd.hpp"
#include "firetrain/train/svg_plot.hpp"
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
  for (auto& v : net.param_views()) {
    if (v.name == "classifier.1.weight")
      for (size_t j = 0; j < v.numel(); ++j) v.data[j] *= 30.f;
    if (v.name.find(".bypass.") != std::string::npos) {  // they start at zero: test them non-zero
      const fvec r = test::random_floats(v.numel(), uint32_t(seed + v.offset), -0.2f, 0.2f);
      std::copy(r.begin(), r.end(), v.data);
    }
  }
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
  for (auto& v : net.param_views())
    if (v.name.find(".bypass.") != std::string::npos) {  // they start at zero: test them non-zero
      const fvec r = test::random_floats(v.numel(), uint32_t(v.offset), -0.2f, 0.2f);
      std::copy(r.begin(), r.end(), v.data);
    }
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

// The complex bypass trains with the default (torchvision) init: the bypass convs start at
// zero and the identity-bypassed branches at 1/4 scale, so the first loss is near ln K (with
// random bypass convs it was ~18 on Fashion-MNIST, and lr 0.01 diverged within 3 steps), and a
// few SGD steps at lr 0.005 (momentum 0.9) lower the loss.
TEST(Design, ComplexBypassTrainsWithTheDefaultInit) {
  const int N = 16, S = 28, K = 10;
  NetSpec spec{"squeezenet_small", 1, S, S, K, 0.f};
  spec.bypass = "complex";
  Net net(spec);
  net.init_weights(11);  // InitScheme::Torchvision, the trainer's default
  for (auto& v : net.param_views())
    if (v.name.find(".bypass.weight") != std::string::npos) {
      EXPECT_EQ(test::abs_max(v.data, v.numel()), 0.0) << v.name << " starts at zero";
    }
  // Normalized-image-like inputs (mean 0, unit variance) and fixed labels.
  fvec x(size_t(N) * S * S);
  std::mt19937 rng(4);
  std::normal_distribution<float> nd;
  for (auto& e : x) e = nd(rng);
  std::vector<int32_t> labels;
  for (int n = 0; n < N; ++n) labels.push_back(int32_t(n % K));
  fvec dl(size_t(N) * K), mom(net.num_params(), 0.f);
  std::vector<double> losses;
  for (int step = 0; step < 8; ++step) {
    PassContext ctx;
    ctx.N = N;
    ctx.train = false;  // dropout is 0 anyway
    const float* z = net.forward(ctx, x.data());
    LossStats st = cpu::softmax_xent(N, K, z, labels.data(), N, dl.data());
    losses.push_back(st.loss_sum / N);
    ASSERT_TRUE(std::isfinite(losses.back())) << ::testing::PrintToString(losses);
    net.backward(ctx, dl.data());
    cpu::sgd_update(net.num_params(), 0.005f, 0.9f, 5e-4f, step == 0, net.params(), net.grads(),
                    mom.data());
  }
  // ln K = 2.30; the plain net starts at 2.37 here; with full-scale branches (even with zero
  // bypass convs) 4.5, and with random bypass convs ~18 on Fashion-MNIST.
  EXPECT_LT(losses.front(), 1.25 * std::log(double(K))) << ::testing::PrintToString(losses);
  EXPECT_LT(losses.back(), losses.front() - 0.1) << "loss " << losses.front() << " -> "
                                                 << losses.back();
  for (auto& v : net.param_views())
    if (v.name.find(".bypass.weight") != std::string::npos) {
      EXPECT_GT(test::abs_max(v.data, v.numel()), 0.0) << v.name << " learns";
    }
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
  rows[0] = {"SR=0.125", "16:64:64", "none", 1248424, 818924576, 4.993696, 0.5, 0.9, 1.2, 3, "ok", ""};
  rows[1] = {"SR=0.25", "32:64:64", "none", 1967080, 1383656480, 7.86832, 0.625, 0.95, 1.1, 4, "ok", ""};
  rows[2] = {"SR=0.125 <c>", "16:64:64", "complex", 1589672, 1165298720, 6.358688, 0.55, 0.9, 1, 5, "ok", ""};
  const std::string t = sweep_table(rows);
  EXPECT_NE(t.find("(MB fp32)"), std::string::npos) << t;
  EXPECT_NE(t.find("1967080"), std::string::npos) << t;
  EXPECT_NE(t.find("0.6250"), std::string::npos) << t;
  const std::string csv = sweep_csv(rows);
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "variant,bypass,fire,params,macs,size_mb,top1,top5,loss,seconds,status,series");
  EXPECT_NE(csv.find("\"SR=0.25\",none,\"32:64:64\",1967080,1383656480,7.868320,0.625000"),
            std::string::npos) << csv;
  EXPECT_NE(csv.find(",\"ok\",\"bypass complex\"\n"), std::string::npos) << csv;
  // The CSV reads back (for --plot-from), quotes and all.
  const fs::path tmp = fs::path(::testing::TempDir()) / "ft_design_rows.csv";
  std::ofstream(tmp) << csv;
  const auto back = read_sweep_csv(tmp.string());
  ASSERT_EQ(back.size(), rows.size());
  EXPECT_EQ(back[2].name, "SR=0.125 <c>");
  EXPECT_EQ(back[1].params, 1967080);
  EXPECT_DOUBLE_EQ(back[1].top1, 0.625);
  EXPECT_EQ(back[2].series, "bypass complex");
  EXPECT_TRUE(back[0].ok());
  std::ofstream(tmp) << "variant,bypass,fire,params,macs,size_mb,top1,top5,loss,seconds\n\"a\",none,\"x\",1,2,three,0,0,0,0\n";
  EXPECT_THROW(read_sweep_csv(tmp.string()), InputError);
  fs::remove(tmp);
  EXPECT_THROW(read_sweep_csv(tmp.string()), InputError);
  const std::string md = sweep_markdown(rows);
  EXPECT_EQ(std::count(md.begin(), md.end(), '\n'), 5) << md;
  EXPECT_NE(md.find("| SR=0.25 | none | `32:64:64` | 1967080 |"), std::string::npos) << md;
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
  // A failed variant is a row of the table but no point of the plot.
  rows[1].status = "failed: train: the loss became non-finite (NaN or Inf) at step 2";
  rows[1].series = "SR sweep";
  EXPECT_NE(sweep_table(rows).find("failed: train: the loss"), std::string::npos);
  const std::string svg2 = render_sweep_svg(rows, "t");
  size_t circles2 = 0;
  for (size_t p = 0; (p = svg2.find("<circle", p)) != std::string::npos; ++p) ++circles2;
  EXPECT_EQ(circles2, 2u);
  EXPECT_EQ(svg2.find(">SR=0.25<"), std::string::npos);
  for (auto& r : rows) r.status = "failed: x";
  EXPECT_THROW(render_sweep_svg(rows, "x"), InputError);
}

TEST(Design, SharedLinePlotAxesAndSeries) {
  LinePlot p;
  p.title = "t";
  p.xlabel = "x & y";
  p.series = {{"a", {{1, 0.5, "p1"}, {2, 0.7, ""}}, true}, {"b", {{3, 0.2, ""}}, false}};
  std::string svg = render_line_plot(p);
  EXPECT_EQ(svg.rfind("<svg ", 0), 0u);
  EXPECT_NE(svg.find("x &amp; y"), std::string::npos);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '<') - std::count(svg.begin(), svg.end(), '>'), 0);
  size_t lines = 0, circles = 0;
  for (size_t q = 0; (q = svg.find("<polyline", q)) != std::string::npos; ++q) ++lines;
  for (size_t q = 0; (q = svg.find("<circle", q)) != std::string::npos; ++q) ++circles;
  EXPECT_EQ(lines, 2u);
  EXPECT_EQ(circles, 2u);  // markers on series a only
  EXPECT_NE(svg.find(">p1<"), std::string::npos);
  EXPECT_NE(svg.find(">0.2<"), std::string::npos);  // y ticks at multiples of 0.2 around 0.2..0.7
  EXPECT_NE(svg.find(">0.8<"), std::string::npos);
  EXPECT_NE(svg.find(">4<"), std::string::npos);    // x from 0 to a tick above 3
  p.xlog2 = true;
  p.series[1].points[0].x = 8;
  svg = render_line_plot(p);
  EXPECT_NE(svg.find(">8<"), std::string::npos);
  p.series[1].points[0].x = 0;
  EXPECT_THROW(render_line_plot(p), InputError);
  EXPECT_THROW(render_line_plot(LinePlot{}), InputError);
}

using test::CmdResult;
CmdResult run_cmd(const std::string& cmd) { return test::run_shell(cmd); }

/// n random 28x28x1 images, labels i % 4, written to dir/name; returns the path.
std::string tiny_dataset(const fs::path& dir, const std::string& name, int n, unsigned seed = 3) {
  const int S = 28, K = 4;
  std::mt19937 rng(seed);
  std::vector<uint8_t> img(size_t(n) * S * S);
  std::vector<int32_t> lab(static_cast<size_t>(n));
  for (auto& b : img) b = uint8_t(rng() & 255);
  for (int i = 0; i < n; ++i) lab[size_t(i)] = i % K;
  const std::string path = (dir / name).string();
  write_dataset(path, img.data(), lab.data(), n, S, S, 1, K, {});
  return path;
}

fvec read_logits(const std::string& path) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::Handle f = h5::open_file(path);
  return h5::read_dataset<float>(f, "logits");
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A non-default Fire configuration (SR, pct3x3) with the complex bypass survives the round
// trip: train 2 steps -> checkpoint -> spec_from_file, eval, predict, export -> predict again,
// all with the same logits as the net rebuilt in this process.
TEST(Design, NonDefaultFireConfigRoundTripsThroughCheckpointAndExport) {
  const fs::path dir = fs::path(::testing::TempDir()) / "ft_design_roundtrip";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = tiny_dataset(dir, "d.h5", 32);
  const std::string ck = (dir / "ck").string(), bin = FT_BINARY;
  CmdResult r = run_cmd(bin + " train --data " + data + " --steps 2 --batch 16 --lr 0.01 " +
                        "--threads 1 --sr 0.25 --pct3x3 0.25 --bypass complex --progress plain " +
                        "--checkpoint-dir " + ck);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string ckpt = ck + "/ckpt_2.h5";
  FireMeta want;
  want.sr = 0.25;
  want.pct3x3 = 0.25;
  const std::string want_list = fire_list_string(fire_configs(want));
  NetSpec spec = spec_from_file(ckpt);
  EXPECT_EQ(spec.arch, "squeezenet_small");
  EXPECT_EQ(spec.bypass, "complex");
  EXPECT_EQ(spec.num_classes, 4);
  EXPECT_EQ(spec.in_channels, 1);
  EXPECT_EQ(spec.height, 28);
  EXPECT_EQ(fire_list_string(fire_configs(spec.fire)), want_list);

  // The same logits: in process, from predict on the checkpoint, from predict on the export.
  Net net(spec);
  load_weights_h5(ckpt, net.param_views());
  Dataset ds = Dataset::open(data);
  fvec x(size_t(ds.size()) * 28 * 28);
  std::vector<int64_t> idx(size_t(ds.size()));
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = int64_t(i);
  ds.read_images(idx.data(), int(idx.size()), x.data());
  PassContext ctx;
  ctx.N = int(ds.size());
  const float* y = net.forward(ctx, x.data());
  const fvec mine(y, y + ds.size() * 4);

  r = run_cmd(bin + " eval --weights " + ckpt + " --data " + data + " --threads 1");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("top-1"), std::string::npos) << r.out;
  const std::string p1 = (dir / "p1.h5").string(), p2 = (dir / "p2.h5").string();
  const std::string exported = (dir / "w.h5").string();
  r = run_cmd(bin + " predict --weights " + ckpt + " --data " + data + " --out " + p1);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cmd(bin + " export --checkpoint " + ckpt + " --out " + exported);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cmd(bin + " predict --weights " + exported + " --data " + data + " --out " + p2);
  ASSERT_EQ(r.code, 0) << r.out;
  const fvec l1 = read_logits(p1), l2 = read_logits(p2);
  ASSERT_EQ(l1.size(), mine.size());
  ASSERT_EQ(l2.size(), mine.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    ASSERT_NEAR(l1[i], mine[i], 1e-5 * std::max(1.0f, std::fabs(mine[i]))) << i;
    ASSERT_EQ(l2[i], l1[i]) << i;  // same weights, same program
  }
  NetSpec e = spec_from_file(exported);
  EXPECT_EQ(e.bypass, "complex");
  EXPECT_EQ(fire_list_string(fire_configs(e.fire)), want_list);

  // A torch-h5 file without any attribute (as PyTorch would write it): the Fire modules and
  // the complex bypass are inferred from the shapes.
  const std::string bare = (dir / "bare.h5").string();
  save_weights_h5(bare, net.param_views());
  NetSpec b = spec_from_file(bare);
  EXPECT_EQ(b.arch, "squeezenet_small");
  EXPECT_EQ(b.bypass, "complex");
  EXPECT_EQ(b.fire.list, want_list);
  EXPECT_EQ(b.num_classes, 4);
  // Defaults stay defaults (no explicit list), and squeezenet1_0 is told by its 7x7 conv1.
  Net d(NetSpec{"squeezenet1_0", 3, 224, 224, 10, 0.5f});
  save_weights_h5(bare, d.param_views());
  b = spec_from_file(bare);
  EXPECT_EQ(b.arch, "squeezenet1_0");
  EXPECT_TRUE(b.fire.is_default());
  EXPECT_EQ(b.bypass, "none");
  EXPECT_EQ(b.num_classes, 10);
  EXPECT_THROW(spec_from_file((dir / "missing.h5").string()), InputError);
  EXPECT_THROW(spec_from_file(data), InputError);  // a dataset holds no weights
  fs::remove_all(dir);
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
// The default (torchvision) init: the complex bypass trains with it (its convs start at zero).
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
                          " --val " + val + " --steps 3 --batch 16 --lr 0.01 --threads 1 " +
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

// A variant that fails (here: rank 0 alone gets NaN weights after step 1 of variant 0, through
// the FT_TEST_SWEEP_NAN_VARIANT hook, so only rank 0's loss is NaN) becomes a "failed: ..."
// row and the sweep goes on with the next variant; exit 0. When every variant fails: exit 1.
TEST(Design, SweepRecordsAFailingVariantAndGoesOn) {
  const fs::path dir = fs::path(::testing::TempDir()) / "ft_design_sweep_fail";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = tiny_dataset(dir, "d.h5", 64);
  const std::string csv = (dir / "s.csv").string(), md = (dir / "s.md").string();
  const std::string cmd = std::string(FT_MPIEXEC) +
                          " --allow-run-as-root --oversubscribe --bind-to none -x "
                          "FT_TEST_SWEEP_NAN_VARIANT -np 2 " + FT_BINARY +
                          " sweep --arch squeezenet_small --data " + data + " --val " + data +
                          " --steps 3 --batch 16 --lr 0.01 --threads 1 --progress plain --out " +
                          csv + " --markdown " + md;
  CmdResult r = run_cmd("FT_TEST_SWEEP_NAN_VARIANT=0 " + cmd + " --sr 0.125,0.25");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto rows = read_sweep_csv(csv);
  ASSERT_EQ(rows.size(), 2u) << r.out;
  EXPECT_EQ(rows[0].status.rfind("failed: train: the loss became non-finite", 0), 0u)
      << rows[0].status;
  EXPECT_NE(rows[0].status.find("on rank 0"), std::string::npos) << rows[0].status;
  EXPECT_TRUE(rows[1].ok()) << rows[1].status;
  EXPECT_GT(rows[1].top5, 0.0);
  EXPECT_EQ(rows[0].series, "SR sweep");
  EXPECT_NE(slurp(md).find("| failed: train: the loss became non-finite"), std::string::npos);
  // Every variant fails: the table is still written, and the exit code says so.
  r = run_cmd("FT_TEST_SWEEP_NAN_VARIANT=0 " + cmd + " --sr 0.5");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("all 1 variants failed"), std::string::npos) << r.out;
  const auto one = read_sweep_csv(csv);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_FALSE(one[0].ok());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ft
