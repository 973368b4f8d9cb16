/// @brief ft::Net against hand-computed facts (torchvision state_dict names and shapes, parameter
/// counts, layer sizes, MACs, init statistics), a whole-net finite-difference check, and the
/// PyTorch reference file tests/data/squeezenet1_0_ref.h5 (logits, loss, every gradient, three
/// SGD steps, ceil-mode max pooling). ModelTest.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "common/naive.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/ops/loss.hpp"
#include "firetrain/ops/pool.hpp"
#include "firetrain/ops/sgd.hpp"

namespace {

using namespace ft::test;
using fvec = std::vector<float>;
using dvec = std::vector<double>;

// =============================================================================================
// What torchvision builds, written out from its source (torchvision/models/squeezenet.py).

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

struct FireDef {
  int idx, s1, e1, e3;
};

/// torchvision state_dict of squeezenet1_0 / squeezenet1_1 (in state_dict order).
std::vector<Tensor> torchvision_tensors(const std::string& arch, int in_c, int classes) {
  std::vector<Tensor> t;
  static const FireDef fires10[] = {{3, 16, 64, 64},    {4, 16, 64, 64},   {5, 32, 128, 128},
                                    {7, 32, 128, 128},  {8, 48, 192, 192}, {9, 48, 192, 192},
                                    {10, 64, 256, 256}, {12, 64, 256, 256}};
  // squeezenet1_1 and the small variant share the layout.
  static const FireDef fires11[] = {{3, 16, 64, 64},    {4, 16, 64, 64},   {6, 32, 128, 128},
                                    {7, 32, 128, 128},  {9, 48, 192, 192}, {10, 48, 192, 192},
                                    {11, 64, 256, 256}, {12, 64, 256, 256}};
  const bool v10 = arch == "squeezenet1_0";
  int c = v10 ? 96 : 64;
  if (v10)
    t.push_back({"features.0.weight", {96, in_c, 7, 7}});
  else
    t.push_back({"features.0.weight", {64, in_c, 3, 3}});
  t.push_back({"features.0.bias", {c}});
  const FireDef* fires = v10 ? fires10 : fires11;
  for (int i = 0; i < 8; ++i) {
    const FireDef f = fires[i];
    const std::string k = "features." + std::to_string(f.idx);
    t.push_back({k + ".squeeze.weight", {f.s1, c, 1, 1}});
    t.push_back({k + ".squeeze.bias", {f.s1}});
    t.push_back({k + ".expand1x1.weight", {f.e1, f.s1, 1, 1}});
    t.push_back({k + ".expand1x1.bias", {f.e1}});
    t.push_back({k + ".expand3x3.weight", {f.e3, f.s1, 3, 3}});
    t.push_back({k + ".expand3x3.bias", {f.e3}});
    c = f.e1 + f.e3;
  }
  t.push_back({"classifier.1.weight", {classes, c, 1, 1}});
  t.push_back({"classifier.1.bias", {classes}});
  return t;
}

// =============================================================================================
// The PyTorch reference file reader and the fixture.

class H5 {
 public:
  explicit H5(const std::string& path) { id_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT); }
  ~H5() {
    if (id_ >= 0) H5Fclose(id_);
  }
  bool ok() const { return id_ >= 0; }
  bool has(const std::string& path) const {
    // Check each component: H5Lexists fails on a missing intermediate group.
    size_t pos = 0;
    while ((pos = path.find('/', pos + 1)) != std::string::npos)
      if (H5Lexists(id_, path.substr(0, pos).c_str(), H5P_DEFAULT) <= 0) return false;
    return H5Lexists(id_, path.c_str(), H5P_DEFAULT) > 0;
  }
  std::vector<int64_t> dims(const std::string& path) const {
    hid_t d = H5Dopen2(id_, path.c_str(), H5P_DEFAULT);
    hid_t s = H5Dget_space(d);
    int r = H5Sget_simple_extent_ndims(s);
    std::vector<hsize_t> h(size_t(std::max(r, 0)));
    if (r > 0) H5Sget_simple_extent_dims(s, h.data(), nullptr);
    H5Sclose(s);
    H5Dclose(d);
    return std::vector<int64_t>(h.begin(), h.end());
  }
  template <class T>
  std::vector<T> read(const std::string& path, hid_t mem_type) const {
    hid_t d = H5Dopen2(id_, path.c_str(), H5P_DEFAULT);
    if (d < 0) throw std::runtime_error("no dataset " + path);
    hid_t s = H5Dget_space(d);
    const hssize_t n = H5Sget_simple_extent_npoints(s);
    std::vector<T> v(size_t(std::max<hssize_t>(n, 0)));
    herr_t rc = H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
    H5Sclose(s);
    H5Dclose(d);
    if (rc < 0) throw std::runtime_error("cannot read " + path);
    return v;
  }
  fvec f32(const std::string& p) const { return read<float>(p, H5T_NATIVE_FLOAT); }
  double attr(const char* name) const {
    hid_t a = H5Aopen_by_name(id_, "/", name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) throw std::runtime_error(std::string("no attribute ") + name);
    double v = 0;
    H5Aread(a, H5T_NATIVE_DOUBLE, &v);
    H5Aclose(a);
    return v;
  }

 private:
  hid_t id_ = -1;
};

/// All ModelTest tests share this fixture; the PyTorch reference tests open the reference file
/// and skip (with the reason) when it is missing.
class ModelTest : public ::testing::Test {
 protected:
  /// Opens tests/data/squeezenet1_0_ref.h5; false when it is missing.
  bool open_reference() {
    path_ = test_data("squeezenet1_0_ref.h5");
    if (!std::ifstream(path_).good()) return false;  // no HDF5 error stack for a missing file
    h5_ = std::make_unique<H5>(path_);
    return h5_->ok();
  }
  /// Net({"squeezenet1_0", 3, 64, 64, 10, 0.5}) with /weights copied in by name.
  std::unique_ptr<ft::Net> load_net() {
    auto net = std::make_unique<ft::Net>(ft::NetSpec{"squeezenet1_0", 3, 64, 64, 10, 0.5f});
    size_t copied = 0;
    for (auto& v : net->param_views()) {
      const std::string key = "/weights/" + v.name;
      if (!h5_->has(key)) {
        ADD_FAILURE() << "reference has no " << key;
        continue;
      }
      EXPECT_EQ(h5_->dims(key), v.shape) << key;
      fvec w = h5_->f32(key);
      if (w.size() != v.numel()) continue;
      std::copy(w.begin(), w.end(), v.data);
      copied += w.size();
    }
    EXPECT_EQ(copied, net->num_params());
    return net;
  }
  std::string path_;
  std::unique_ptr<H5> h5_;
};

#define FT_NEED_REFERENCE()                                                                       \
  do {                                                                                            \
    if (!open_reference())                                                                        \
      GTEST_SKIP() << path_ << " is missing: generate it with tests/reference/make_reference.py"; \
  } while (0)

// =============================================================================================
// Names, shapes, counts.

void expect_torchvision_layout(const ft::Net& net, const std::vector<Tensor>& want) {
  const auto& v = net.param_views();
  ASSERT_EQ(v.size(), want.size());
  size_t off = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(v[i].name, want[i].name) << "tensor " << i;
    EXPECT_EQ(v[i].shape, want[i].shape) << want[i].name;
    // Contiguous, in forward (state_dict) order, views into the arenas.
    EXPECT_EQ(v[i].offset, off) << want[i].name;
    off += v[i].numel();
  }
  EXPECT_EQ(off, net.num_params());
}

TEST_F(ModelTest, ParamCountsAndTorchvisionNames) {
  struct C {
    std::string arch;
    int64_t count;
  };
  for (auto c : {C{"squeezenet1_0", 1248424}, C{"squeezenet1_1", 1235496}}) {
    SCOPED_TRACE(c.arch);
    ft::NetSpec spec{c.arch, 3, 224, 224, 1000, 0.5f};
    ft::Net net(spec);
    auto want = torchvision_tensors(c.arch, 3, 1000);
    int64_t total = 0;
    for (auto& t : want) total += t.numel();
    EXPECT_EQ(total, c.count) << "the hand-written torchvision list itself";
    EXPECT_EQ(int64_t(net.num_params()), c.count);
    EXPECT_EQ(ft::count_params(spec), c.count);
    EXPECT_EQ(net.param_views().size(), 52u);
    expect_torchvision_layout(net, want);
    ft::Net& n2 = net;
    for (auto& v : n2.param_views()) {
      EXPECT_EQ(v.data, n2.params() + v.offset) << v.name;
      EXPECT_EQ(v.grad, n2.grads() + v.offset) << v.name;
    }
  }
  // Spot checks as the brief names them.
  ft::Net net({"squeezenet1_0", 3, 224, 224, 1000, 0.5f});
  std::map<std::string, std::vector<int64_t>> by_name;
  for (auto& v : net.param_views()) by_name[v.name] = v.shape;
  EXPECT_EQ(by_name["features.0.weight"], (std::vector<int64_t>{96, 3, 7, 7}));
  EXPECT_EQ(by_name["features.3.squeeze.weight"], (std::vector<int64_t>{16, 96, 1, 1}));
  EXPECT_EQ(by_name["features.3.expand3x3.weight"], (std::vector<int64_t>{64, 16, 3, 3}));
  EXPECT_EQ(by_name["classifier.1.weight"], (std::vector<int64_t>{1000, 512, 1, 1}));
  EXPECT_EQ(by_name["classifier.1.bias"], (std::vector<int64_t>{1000}));
}

TEST_F(ModelTest, OtherSpecsFollowTheSameLayout) {
  // Input channels and classes change only the first and last tensors.
  ft::Net a({"squeezenet1_0", 1, 64, 64, 10, 0.5f});
  expect_torchvision_layout(a, torchvision_tensors("squeezenet1_0", 1, 10));
  ft::Net b({"squeezenet_small", 3, 32, 32, 10, 0.5f});
  auto want = torchvision_tensors("squeezenet1_1", 3, 10);
  expect_torchvision_layout(b, want);
  // Parameter count does not depend on the image size.
  EXPECT_EQ(ft::count_params({"squeezenet1_1", 3, 64, 64, 1000, 0.5f}), 1235496);
}

TEST_F(ModelTest, BadSpecsThrowInputError) {
  EXPECT_THROW(ft::Net({"resnet50", 3, 224, 224, 1000, 0.5f}), ft::InputError);
  EXPECT_THROW(ft::Net({"squeezenet1_0", 3, 16, 16, 10, 0.5f}), ft::InputError);  // too small
  EXPECT_THROW(ft::Net({"squeezenet1_0", 0, 224, 224, 10, 0.5f}), ft::InputError);
  EXPECT_THROW(ft::Net({"squeezenet1_0", 3, 224, 224, 0, 0.5f}), ft::InputError);
  EXPECT_THROW(ft::Net({"squeezenet1_0", 3, 224, 224, 10, 1.0f}), ft::InputError);
  EXPECT_THROW(ft::Net({"squeezenet1_0", 3, 224, 224, 10, -0.1f}), ft::InputError);
}

// =============================================================================================
// Layer table: sizes and MACs from the layer formulas.

/// MACs per image: conv k×k from C to O on an OH×OW output = OH·OW·O·C·k²; a Fire module on
/// H×W with input C = H·W·(C·s1 + s1·e1 + 9·s1·e3).
int64_t conv_macs(int64_t OH, int64_t OW, int64_t O, int64_t C, int64_t k) {
  return OH * OW * O * C * k * k;
}
int64_t fire_macs(int64_t H, int64_t C, int64_t s1, int64_t e1, int64_t e3) {
  return H * H * (C * s1 + s1 * e1 + 9 * s1 * e3);
}

struct Row {
  std::string prefix;  // start of the layer name
  int H, C;            // output (square)
  int64_t macs;        // -1: not a conv/fire layer (not checked)
};

void expect_table(const ft::Net& net, const std::vector<Row>& want, double gmac_lo,
                  double gmac_hi) {
  auto t = net.layer_table();
  ASSERT_EQ(t.size(), want.size());
  int64_t macs = 0, want_macs = 0, params = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    SCOPED_TRACE(t[i].name);
    EXPECT_EQ(t[i].name.rfind(want[i].prefix, 0), 0u) << "expected " << want[i].prefix;
    EXPECT_EQ(t[i].H, want[i].H);
    EXPECT_EQ(t[i].W, want[i].H);
    EXPECT_EQ(t[i].C, want[i].C);
    if (want[i].macs >= 0) {
      EXPECT_EQ(t[i].macs, want[i].macs);
      want_macs += want[i].macs;
    }
    macs += t[i].macs;
    params += t[i].params;
  }
  EXPECT_EQ(params, int64_t(net.num_params()));
  EXPECT_GE(macs, want_macs);
  EXPECT_GE(double(macs) * 1e-9, gmac_lo);
  EXPECT_LE(double(macs) * 1e-9, gmac_hi);
}

TEST_F(ModelTest, LayerTableSqueezeNet10) {
  ft::Net net({"squeezenet1_0", 3, 224, 224, 1000, 0.5f});
  // 224 -7/2-> 109 -pool-> 54 -> fire2..4 -pool-> 27 -> fire5..8 -pool-> 13 -> fire9, conv10.
  std::vector<Row> want = {
      {"conv1", 109, 96, conv_macs(109, 109, 96, 3, 7)},
      {"maxpool", 54, 96, -1},
      {"fire2", 54, 128, fire_macs(54, 96, 16, 64, 64)},
      {"fire3", 54, 128, fire_macs(54, 128, 16, 64, 64)},
      {"fire4", 54, 256, fire_macs(54, 128, 32, 128, 128)},
      {"maxpool", 27, 256, -1},
      {"fire5", 27, 256, fire_macs(27, 256, 32, 128, 128)},
      {"fire6", 27, 384, fire_macs(27, 256, 48, 192, 192)},
      {"fire7", 27, 384, fire_macs(27, 384, 48, 192, 192)},
      {"fire8", 27, 512, fire_macs(27, 384, 64, 256, 256)},
      {"maxpool", 13, 512, -1},
      {"fire9", 13, 512, fire_macs(13, 512, 64, 256, 256)},
      {"dropout", 13, 512, -1},
      {"conv10", 13, 1000, conv_macs(13, 13, 1000, 512, 1)},
      {"avgpool", 1, 1000, -1},
  };
  // Hand sum: 167,664,672 + 34,338,816 + 35,831,808 + 131,383,296 + 35,831,808 + 76,142,592
  //         + 80,621,568 + 137,355,264 + 33,226,752 + 86,528,000 = 818,924,576 (0.82 GMAC).
  int64_t sum = 0;
  for (auto& r : want) sum += std::max<int64_t>(r.macs, 0);
  EXPECT_EQ(sum, 818924576);
  expect_table(net, want, 0.80, 0.85);
}

TEST_F(ModelTest, LayerTableSqueezeNet11) {
  ft::Net net({"squeezenet1_1", 3, 224, 224, 1000, 0.5f});
  // 224 -3/2-> 111 -pool-> 55 -> fire2,3 -pool-> 27 -> fire4,5 -pool-> 13 -> fire6..9, conv10.
  std::vector<Row> want = {
      {"conv1", 111, 64, conv_macs(111, 111, 64, 3, 3)},
      {"maxpool", 55, 64, -1},
      {"fire2", 55, 128, fire_macs(55, 64, 16, 64, 64)},
      {"fire3", 55, 128, fire_macs(55, 128, 16, 64, 64)},
      {"maxpool", 27, 128, -1},
      {"fire4", 27, 256, fire_macs(27, 128, 32, 128, 128)},
      {"fire5", 27, 256, fire_macs(27, 256, 32, 128, 128)},
      {"maxpool", 13, 256, -1},
      {"fire6", 13, 384, fire_macs(13, 256, 48, 192, 192)},
      {"fire7", 13, 384, fire_macs(13, 384, 48, 192, 192)},
      {"fire8", 13, 512, fire_macs(13, 384, 64, 256, 256)},
      {"fire9", 13, 512, fire_macs(13, 512, 64, 256, 256)},
      {"dropout", 13, 512, -1},
      {"conv10", 13, 1000, conv_macs(13, 13, 1000, 512, 1)},
      {"avgpool", 1, 1000, -1},
  };
  // Hand sum: 21,290,688 + 34,073,600 + 37,171,200 + 32,845,824 + 35,831,808 + 17,651,712
  //         + 18,690,048 + 31,842,304 + 33,226,752 + 86,528,000 = 349,151,936 (0.35 GMAC).
  int64_t sum = 0;
  for (auto& r : want) sum += std::max<int64_t>(r.macs, 0);
  EXPECT_EQ(sum, 349151936);
  expect_table(net, want, 0.33, 0.37);
}

// =============================================================================================
// Initialisation.

TEST_F(ModelTest, InitStatisticsMatchTorchvision) {
  for (auto scheme : {ft::InitScheme::Torchvision, ft::InitScheme::Xavier}) {
    const bool tv = scheme == ft::InitScheme::Torchvision;
    SCOPED_TRACE(tv ? "torchvision" : "xavier");
    ft::Net net({"squeezenet1_0", 3, 224, 224, 1000, 0.5f});
    std::fill(net.params(), net.params() + net.num_params(), 7.f);  // init must overwrite all
    net.init_weights(1, scheme);
    for (auto& v : net.param_views()) {
      SCOPED_TRACE(v.name);
      const size_t n = v.numel();
      double s = 0, s2 = 0, amax = 0;
      for (size_t j = 0; j < n; ++j) {
        s += v.data[j];
        s2 += double(v.data[j]) * v.data[j];
        amax = std::max(amax, std::abs(double(v.data[j])));
      }
      const double mean = s / double(n), var = s2 / double(n) - mean * mean;
      if (v.shape.size() == 1) {  // biases: zero
        EXPECT_EQ(amax, 0.0);
      } else if (v.name == "classifier.1.weight") {  // N(0, 0.01)
        EXPECT_NEAR(std::sqrt(var), 0.01, 0.01 * 5 * std::sqrt(0.5 / double(n)));
        EXPECT_NEAR(mean, 0.0, 5 * 0.01 / std::sqrt(double(n)));
        EXPECT_GT(amax, 0.03);  // a Gaussian tail over 512k draws, not a uniform
      } else {
        // kaiming_uniform_(a=0) as torchvision: U(-b, b), b = sqrt(6 / fan_in); Caffe's xavier:
        // b = sqrt(3 / fan_in). fan_in = C·k·k. Var of U(-b, b) = b²/3; the relative standard
        // error of a sample variance of a uniform is sqrt(0.8 / n).
        const double fan_in = double(v.shape[1] * v.shape[2] * v.shape[3]);
        const double b = std::sqrt((tv ? 6.0 : 3.0) / fan_in);
        EXPECT_LE(amax, b * (1 + 1e-6));
        EXPECT_GT(amax, b * (1 - 20.0 / double(n)));
        EXPECT_NEAR(var, b * b / 3, b * b / 3 * 5 * std::sqrt(0.8 / double(n)));
        EXPECT_NEAR(mean, 0.0, 5 * b / std::sqrt(3.0 * double(n)));
      }
    }
  }
}

TEST_F(ModelTest, InitIsDeterministicPerSeed) {
  ft::NetSpec spec{"squeezenet1_1", 3, 224, 224, 1000, 0.5f};
  ft::Net a(spec), b(spec), c(spec);
  a.init_weights(42);
  b.init_weights(42);
  c.init_weights(43);
  const size_t n = a.num_params();
  EXPECT_TRUE(std::equal(a.params(), a.params() + n, b.params())) << "same seed, same weights";
  size_t same = 0, nonzero = 0;
  for (size_t i = 0; i < n; ++i) {
    nonzero += a.params()[i] != 0.f;
    same += a.params()[i] != 0.f && a.params()[i] == c.params()[i];
  }
  EXPECT_LT(double(same), 1e-3 * double(nonzero)) << "different seeds, different weights";
  // The weights do not depend on the input size or on the number of classes except in the
  // classifier: counter-based per (seed, tensor, element).
  ft::Net d({"squeezenet1_1", 3, 64, 64, 1000, 0.5f});
  d.init_weights(42);
  EXPECT_TRUE(std::equal(a.params(), a.params() + n, d.params()));
}

// =============================================================================================
// Whole-net checks on the small variant.

ft::NetSpec tiny_spec() { return {"squeezenet_small", 1, 12, 12, 5, 0.5f}; }

/// Logits of one forward pass, copied.
fvec run(ft::Net& net, const ft::PassContext& c, const float* x) {
  const float* z = net.forward(c, x);
  return fvec(z, z + size_t(c.N) * size_t(net.spec().num_classes));
}

/// Mean softmax cross-entropy of the current logits.
double mean_loss(ft::Net& net, const ft::PassContext& ctx, const fvec& x,
                 const std::vector<int32_t>& labels, fvec* dlogits) {
  const float* z = net.forward(ctx, x.data());
  const int K = net.spec().num_classes;
  auto st =
      ft::cpu::softmax_xent(ctx.N, K, z, labels.data(), ctx.N, dlogits ? dlogits->data() : nullptr);
  return st.loss_sum / ctx.N;
}

// ft::Net against the naive double-precision SqueezeNet built from the loop references (eval
// mode), every logit and every parameter gradient.
void compare_with_naive(const ft::NetSpec& spec, int N, uint32_t seed, float final_scale) {
  SCOPED_TRACE(spec.arch + " " + std::to_string(spec.height) + "x" + std::to_string(spec.width) +
               "x" + std::to_string(spec.in_channels) + " N=" + std::to_string(N));
  ft::Net net(spec);
  net.init_weights(seed);
  for (auto& v : net.param_views())
    if (v.name == "classifier.1.weight")
      for (size_t j = 0; j < v.numel(); ++j) v.data[j] *= final_scale;
  NaiveNet ref(spec.arch, spec.in_channels, spec.height, spec.width, spec.num_classes,
               spec.bypass);
  ASSERT_EQ(ref.num_params(), net.num_params());
  for (size_t i = 0; i < net.num_params(); ++i) ref.params[i] = net.params()[i];
  const int K = spec.num_classes;
  fvec x =
      random_floats(size_t(N) * spec.height * spec.width * spec.in_channels, seed + 1, -1.f, 1.f);
  std::vector<int32_t> labels;
  for (int n = 0; n < N; ++n) labels.push_back(int32_t((n * 7 + 3) % K));
  ft::PassContext ctx;
  ctx.N = N;
  const dvec& zr = ref.forward(N, to_double(x));
  fvec z = run(net, ctx, x.data());
  expect_close(z, zr, 1e-4, 1e-5 * abs_max(zr.data(), zr.size()), "logits");
  XentRef xr = xent_ref(N, K, zr, labels, N);
  ref.backward(xr.dlogits);
  fvec dl(z.size());
  ft::cpu::softmax_xent(N, K, z.data(), labels.data(), N, dl.data());
  net.backward(ctx, dl.data());
  double worst = 0;
  std::string worst_key;
  for (auto& v : net.param_views()) {
    const double* g = ref.grads.data() + v.offset;
    const double scale = abs_max(g, v.numel());
    CloseReport r = compare(v.grad, g, v.numel(), 0, 1e-4 * scale);
    const double rel = r.max_abs / std::max(scale, 1e-30);
    if (rel > worst) worst = rel, worst_key = v.name;
    if (!r.ok) ADD_FAILURE() << r.str(v.name) << "; max |diff| / max |grad| = " << rel;
  }
  std::printf("[ naive ] %s: worst gradient %s at %.2e of its max |grad|\n", spec.arch.c_str(),
              worst_key.c_str(), worst);
}

TEST_F(ModelTest, NetMatchesNaiveNetWithSimpleBypass) {
  // The paper's simple bypass (identity around fire3, 5, 7, 9) on every architecture.
  for (const char* arch : {"squeezenet_small", "squeezenet1_1", "squeezenet1_0"}) {
    ft::NetSpec spec{arch, 3, arch[10] == 's' ? 16 : 48, arch[10] == 's' ? 16 : 48, 7, 0.5f};
    spec.bypass = "simple";
    compare_with_naive(spec, 2, 9, 30.f);
  }
  ft::NetSpec bad = tiny_spec();
  bad.bypass = "dense";  // ("complex" exists now: tests/test_design.cpp)
  EXPECT_THROW(ft::Net{bad}, ft::InputError);
}

TEST_F(ModelTest, NetMatchesNaiveNet) {
  compare_with_naive(tiny_spec(), 2, 5, 30.f);
  compare_with_naive({"squeezenet_small", 3, 16, 16, 10, 0.5f}, 3, 6, 30.f);
  // 48×48: every pool has a partial last window (21 -> 10 -> 5 -> 2; 23 -> 11 -> 5 -> 2).
  compare_with_naive({"squeezenet1_0", 3, 48, 48, 10, 0.5f}, 2, 7, 30.f);
  compare_with_naive({"squeezenet1_1", 3, 48, 48, 10, 0.5f}, 2, 8, 30.f);
}

// The naive net's own gradients against central differences in double: the small net at 12×12
// (the same weights as WholeNetFiniteDifferences), a few parameters of every tensor.
TEST_F(ModelTest, NaiveNetFiniteDifferences) {
  ft::NetSpec spec = tiny_spec();
  ft::Net net(spec);
  net.init_weights(5);
  for (auto& v : net.param_views())
    if (v.name == "classifier.1.weight")
      for (size_t j = 0; j < v.numel(); ++j) v.data[j] *= 30.f;
  NaiveNet ref(spec.arch, spec.in_channels, spec.height, spec.width, spec.num_classes);
  for (size_t i = 0; i < net.num_params(); ++i) ref.params[i] = net.params()[i];
  const int N = 2, K = spec.num_classes;
  dvec x = to_double(random_floats(size_t(N) * 12 * 12, 9, 0.f, 1.f));
  std::vector<int32_t> labels = {1, 3};
  auto loss = [&] { return xent_ref(N, K, ref.forward(N, x), labels, N).loss_sum / N; };
  XentRef xr = xent_ref(N, K, ref.forward(N, x), labels, N);
  ref.backward(xr.dlogits);
  dvec grad = ref.grads;
  // The loss is densely kinked (see WholeNetFiniteDifferences): only h ~ 1e-7 resolves the
  // derivative; in double that leaves ~1e-8 of rounding noise.
  for (auto& v : net.param_views()) {
    GradCheckOptions o;
    o.h = 1e-7;
    o.threshold = 1e-6;
    o.kink_tol = 1e-4;
    o.max_points = 2;
    o.seed = uint32_t(v.offset);
    o.max_skipped_percent = 100;
    check_gradient(loss, ref.params.data() + v.offset, v.numel(), grad.data() + v.offset,
                   "naive " + v.name, o);
  }
}

// Finite differences through the whole fp32 ft::Net (eval mode: dropout off) on a few
// parameters of every tensor, perturbed in the arena. This is a loose sanity check (sign errors,
// missing factors, mis-wired layers, stale buffers); the tight checks are NetMatchesNaiveNet
// (1e-4 of each tensor's largest gradient) with NaiveNetFiniteDifferences (double, h = 1e-7) and
// the PyTorch reference. Why loose: (1) the loss is computed from fp32 activations, so it carries
// rounding noise of ~1e-7 relative, which a central difference turns into ~1e-7·|L|/h of
// gradient noise; (2) the loss is densely kinked: one early parameter moves ~10^4-10^5 ReLU
// pre-activations and max-pool candidates, so a step of h crosses about 2h·10^5 kinks, each
// bending the slope. Measured on this net in double: features.0.bias[12] has dL/dθ = -0.26966;
// the central difference gives -0.3010 (h 1e-2), -0.2760 (1e-3), -0.2706 (1e-4), -0.2709 (1e-5),
// -0.2702 (1e-6) and -0.26966 only at h 1e-7, which fp32 cannot resolve. With h = 1e-3 a point
// must match within 20% of itself plus 2e-3 of the largest analytic gradient checked, and all
// points together must agree in direction (cosine > 0.99) and in scale (least-squares slope
// within 5% of 1).
TEST_F(ModelTest, WholeNetFiniteDifferences) {
  ft::Net net(tiny_spec());
  net.init_weights(5);
  // Scale the final conv up so that the logits and their gradients are O(1) (with N(0, 0.01)
  // every gradient would be tiny and the check would test little).
  for (auto& v : net.param_views())
    if (v.name == "classifier.1.weight")
      for (size_t j = 0; j < v.numel(); ++j) v.data[j] *= 30.f;
  const int N = 2;
  fvec x = random_floats(size_t(N) * 12 * 12 * 1, 9, 0.f, 1.f);
  std::vector<int32_t> labels = {1, 3};
  ft::PassContext ctx;
  ctx.N = N;
  ctx.train = false;
  fvec dl(size_t(N) * 5);
  const double f0 = mean_loss(net, ctx, x, labels, &dl);
  net.backward(ctx, dl.data());
  fvec grad(net.grads(), net.grads() + net.num_params());

  struct Point {
    std::string what;
    double num, ana;
  };
  std::vector<Point> pts;
  std::mt19937 rng(17);
  const float h = 1e-3f;
  int skipped = 0;
  for (auto& v : net.param_views()) {
    // One element at random and the one with the largest |grad|.
    std::uniform_int_distribution<size_t> pick(0, v.numel() - 1);
    size_t big = 0;
    for (size_t j = 0; j < v.numel(); ++j)
      if (std::abs(grad[v.offset + j]) > std::abs(grad[v.offset + big])) big = j;
    for (size_t j : {pick(rng), big}) {
      float* p = net.params() + v.offset + j;
      const float p0 = *p;
      *p = p0 + h;
      const double fp = mean_loss(net, ctx, x, labels, nullptr);
      *p = p0 - h;
      const double fm = mean_loss(net, ctx, x, labels, nullptr);
      *p = p0;
      const double hp = double(p0 + h) - p0, hm = p0 - double(p0 - h);  // the steps taken
      const double sp = (fp - f0) / hp, sm = (f0 - fm) / hm;
      // A kink with a large jump (one dominant unit switching): skip.
      if (std::abs(sp - sm) > 0.5 * std::max(std::abs(sp), std::abs(sm)) + 2e-3) {
        ++skipped;
        continue;
      }
      pts.push_back({v.name + "[" + std::to_string(j) + "]", (fp - fm) / (hp + hm),
                     double(grad[v.offset + j])});
    }
  }
  double amax = 0, sxy = 0, sxx = 0, syy = 0;
  for (auto& p : pts) {
    amax = std::max(amax, std::abs(p.ana));
    sxy += p.num * p.ana;
    sxx += p.ana * p.ana;
    syy += p.num * p.num;
  }
  double worst = 0;
  std::string worst_what;
  for (auto& p : pts) {
    const double err = std::abs(p.num - p.ana), tol = 0.2 * std::abs(p.ana) + 2e-3 * amax;
    if (err / tol > worst) worst = err / tol, worst_what = p.what;
    if (err > tol) ADD_FAILURE() << p.what << ": numeric " << p.num << " analytic " << p.ana;
  }
  const double cosine = sxy / std::sqrt(sxx * syy), slope = sxy / sxx;
  EXPECT_GT(cosine, 0.99);
  EXPECT_NEAR(slope, 1.0, 0.05);
  EXPECT_LE(skipped, int(pts.size()) / 10) << "too many kinks";
  std::printf(
      "[ fd ] checked %zu, skipped %d; cosine %.5f, slope %.4f; worst %s at %.2f of the "
      "tolerance\n",
      pts.size(), skipped, cosine, slope, worst_what.c_str(), worst);
}

// The dropout mask follows (seed, step, sample index), not the batch position or batch size:
// a batch split over ranks computes what one rank computes.
TEST_F(ModelTest, DropoutFollowsSampleIndex) {
  ft::NetSpec spec = tiny_spec();
  ft::Net net(spec);
  net.init_weights(3);
  const size_t per = 12 * 12;
  fvec x = random_floats(2 * per, 33, 0.f, 1.f);
  fvec xs(2 * per);  // rows swapped
  std::copy(x.begin() + per, x.end(), xs.begin());
  std::copy(x.begin(), x.begin() + per, xs.begin() + per);
  const int K = spec.num_classes;
  std::vector<int64_t> s01 = {100, 205}, s10 = {205, 100};
  ft::PassContext c{2, true, 7, 3, s01.data()};
  fvec z = run(net, c, x.data());
  c.samples = s10.data();
  fvec zs = run(net, c, xs.data());
  for (int k = 0; k < K; ++k) {
    EXPECT_EQ(z[size_t(k)], zs[size_t(K + k)]);
    EXPECT_EQ(z[size_t(K + k)], zs[size_t(k)]);
  }
  // One sample alone (another rank): the same logits, up to the batch-size-dependent kernels.
  ft::PassContext c1{1, true, 7, 3, &s01[1]};
  fvec z1 = run(net, c1, x.data() + per);
  expect_close(z1.data(), z.data() + K, size_t(K), 1e-5, 1e-7, "sample 205 alone");
  // Dropout is on in training: another step changes the logits; eval ignores dropout.
  ft::PassContext c2{2, true, 7, 4, s01.data()};
  fvec z2 = run(net, c2, x.data());
  EXPECT_NE(z, z2);
  ft::PassContext ce{2, false, 7, 3, nullptr};
  fvec ze = run(net, ce, x.data());
  ft::NetSpec nodrop = spec;
  nodrop.dropout = 0.f;
  ft::Net net0(nodrop);
  std::copy(net.params(), net.params() + net.num_params(), net0.params());
  ft::PassContext ct0{2, true, 7, 3, s01.data()};
  fvec z0 = run(net0, ct0, x.data());
  EXPECT_EQ(ze, z0) << "eval with p = 0.5 should equal train with p = 0";
  // Training needs the sample indices.
  ft::PassContext bad{2, true, 7, 3, nullptr};
  EXPECT_THROW(net.forward(bad, x.data()), ft::Error);
}

// backward's ready(lo) callback: lo never grows, ends at 0, and [lo, end) is final when called.
TEST_F(ModelTest, BackwardReadyCallback) {
  ft::Net net(tiny_spec());
  net.init_weights(4);
  const int N = 3;
  fvec x = random_floats(size_t(N) * 144, 44, 0.f, 1.f);
  std::vector<int64_t> samples = {0, 1, 2};
  ft::PassContext c{N, true, 1, 0, samples.data()};
  std::vector<int32_t> labels = {0, 2, 4};
  fvec dl(size_t(N) * 5);
  mean_loss(net, c, x, labels, &dl);
  std::fill(net.grads(), net.grads() + net.num_params(), NAN);
  std::vector<std::pair<size_t, fvec>> snaps;
  net.backward(c, dl.data(), [&](size_t lo) {
    snaps.emplace_back(lo, fvec(net.grads() + lo, net.grads() + net.num_params()));
  });
  ASSERT_FALSE(snaps.empty());
  EXPECT_EQ(snaps.back().first, 0u);
  for (size_t i = 1; i < snaps.size(); ++i) EXPECT_LE(snaps[i].first, snaps[i - 1].first);
  for (auto& [lo, s] : snaps)
    EXPECT_TRUE(std::equal(s.begin(), s.end(), net.grads() + lo)) << "region from " << lo;
  for (size_t i = 0; i < net.num_params(); ++i)
    ASSERT_TRUE(std::isfinite(net.grads()[i])) << "gradient " << i << " never written";
}

// =============================================================================================
// The PyTorch reference file.

TEST_F(ModelTest, PyTorchReferenceForwardLossAndGradients) {
  FT_NEED_REFERENCE();
  auto net = load_net();
  const auto in_dims = h5_->dims("/input");
  ASSERT_EQ(in_dims, (std::vector<int64_t>{2, 64, 64, 3}));
  const int N = int(in_dims[0]), K = 10;
  fvec x = h5_->f32("/input");
  auto labels64 = h5_->read<int64_t>("/labels", H5T_NATIVE_INT64);
  std::vector<int32_t> labels(labels64.begin(), labels64.end());
  fvec ref_logits = h5_->f32("/logits");
  const double ref_loss = h5_->f32("/loss")[0];

  ft::PassContext ctx;
  ctx.N = N;
  ctx.train = false;
  const float* z = net->forward(ctx, x.data());
  fvec logits(z, z + N * K);
  // Some logits are exactly 0 (final ReLU): compare relative to the logits' scale.
  expect_close(logits, ref_logits, 1e-4, 1e-5 * abs_max(ref_logits.data(), ref_logits.size()),
               "logits");
  fvec dl(size_t(N) * K);
  auto st = ft::cpu::softmax_xent(N, K, logits.data(), labels.data(), N, dl.data());
  EXPECT_NEAR(st.loss_sum / N, ref_loss, 1e-4 * ref_loss) << "loss";

  net->backward(ctx, dl.data());
  double worst = 0;
  std::string worst_key;
  size_t nkeys = 0;
  for (auto& v : net->param_views()) {
    const std::string key = "/grads/" + v.name;
    if (!h5_->has(key)) {
      ADD_FAILURE() << "reference has no " << key;
      continue;
    }
    fvec g = h5_->f32(key);
    ASSERT_EQ(g.size(), v.numel()) << key;
    // 1e-4 relative to the tensor's largest gradient.
    const double scale = abs_max(g.data(), g.size());
    CloseReport r = compare(v.grad, g.data(), g.size(), 0, 1e-4 * scale);
    const double rel = r.max_abs / std::max(scale, 1e-30);
    if (rel > worst) {
      worst = rel;
      worst_key = v.name;
    }
    if (!r.ok) ADD_FAILURE() << r.str(key) << "; max |diff| / max |grad| = " << rel;
    ++nkeys;
  }
  EXPECT_EQ(nkeys, 52u);
  std::printf(
      "[ ref ] logits max rel %.2e; loss %.7f vs %.7f; worst gradient %s at %.2e of "
      "its max |grad|\n",
      max_rel_error(logits.data(), ref_logits.data(), logits.size()), st.loss_sum / N, ref_loss,
      worst_key.c_str(), worst);
}

TEST_F(ModelTest, PyTorchReferenceThreeSgdSteps) {
  FT_NEED_REFERENCE();
  auto net = load_net();
  const float lr = float(h5_->attr("lr")), mom = float(h5_->attr("momentum")),
              wd = float(h5_->attr("weight_decay"));
  EXPECT_FLOAT_EQ(lr, 0.01f);
  const int N = 2, K = 10;
  fvec x = h5_->f32("/input");
  auto labels64 = h5_->read<int64_t>("/labels", H5T_NATIVE_INT64);
  std::vector<int32_t> labels(labels64.begin(), labels64.end());
  fvec ref_losses = h5_->f32("/sgd3_losses");
  ASSERT_EQ(ref_losses.size(), 3u);

  fvec w0(net->params(), net->params() + net->num_params());
  fvec buf(net->num_params(), 0.f);
  ft::PassContext ctx;
  ctx.N = N;
  ctx.train = false;  // the reference ran in eval mode (dropout off)
  fvec dl(size_t(N) * K);
  for (int step = 0; step < 3; ++step) {
    const float* z = net->forward(ctx, x.data());
    auto st = ft::cpu::softmax_xent(N, K, z, labels.data(), N, dl.data());
    EXPECT_NEAR(st.loss_sum / N, ref_losses[size_t(step)], 1e-4 * ref_losses[size_t(step)])
        << "loss before step " << step;
    net->backward(ctx, dl.data());
    ft::cpu::sgd_update(net->num_params(), lr, mom, wd, step == 0, net->params(), net->grads(),
                   buf.data());
  }
  double worst = 0;
  std::string worst_key;
  for (auto& v : net->param_views()) {
    const std::string key = "/sgd3/" + v.name;
    ASSERT_TRUE(h5_->has(key)) << key;
    fvec w = h5_->f32(key);
    ASSERT_EQ(w.size(), v.numel());
    expect_close(v.data, w.data(), w.size(), 1e-4, 1e-5 * abs_max(w.data(), w.size()), key);
    // The updates themselves (w3 - w0), a much smaller signal than the weights: 1e-3 of the
    // largest update of the tensor.
    fvec du(w.size()), dr(w.size());
    for (size_t j = 0; j < w.size(); ++j) {
      du[j] = v.data[j] - w0[v.offset + j];
      dr[j] = w[j] - w0[v.offset + j];
    }
    const double scale = abs_max(dr.data(), dr.size());
    CloseReport r = compare(du.data(), dr.data(), du.size(), 0, 1e-3 * scale);
    if (!r.ok) ADD_FAILURE() << r.str(key + " (update)");
    if (r.max_abs / std::max(scale, 1e-30) > worst) {
      worst = r.max_abs / std::max(scale, 1e-30);
      worst_key = v.name;
    }
  }
  std::printf("[ ref ] after 3 SGD steps: worst update %s at %.2e of its max |update|\n",
              worst_key.c_str(), worst);
}

TEST_F(ModelTest, PyTorchReferenceCeilModeMaxPool) {
  FT_NEED_REFERENCE();
  auto di = h5_->dims("/pool_ceil/input"), dout = h5_->dims("/pool_ceil/output");
  ASSERT_EQ(di.size(), 4u);
  ASSERT_EQ(dout.size(), 4u);
  const int N = int(di[0]), H = int(di[1]), W = int(di[2]), C = int(di[3]);
  ft::PoolShape ps{C, H, W, 3, 2, 0, true};
  EXPECT_EQ(ps.OH(), dout[1]);
  EXPECT_EQ(ps.OW(), dout[2]);
  ASSERT_EQ(dout[3], C);
  fvec x = h5_->f32("/pool_ceil/input"), ref = h5_->f32("/pool_ceil/output");
  fvec y(size_t(N) * ps.OH() * ps.OW() * C);
  ASSERT_EQ(y.size(), ref.size());
  ft::MaxPool2d op(ps);
  op.forward(N, x.data(), y.data());
  expect_close(y, ref, 0, 0, "max pool (exact)");
}

}  // namespace
