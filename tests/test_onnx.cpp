/// @brief ONNX export (ft::onnx_model_bytes, `firetrain export --format onnx`): the bytes are
/// decoded by a protobuf reader written here from the wire-format definition (shares no code
/// with the encoder), the model's header, graph structure and initializers are checked, and the
/// decoded graph is executed by a naive NCHW interpreter in double that reads every attribute
/// (kernel_shape, strides, pads, ceil_mode, axis, transB) from the file; its logits must match
/// ft::Net::forward. OnnxTest.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/check.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/io/onnx.hpp"
#include "firetrain/model/net.hpp"

namespace {

using namespace ft::test;
namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// A minimal protobuf reader: a message is a list of (field, wire type, varint | bytes).

struct Field {
  int num = 0, wire = 0;
  uint64_t v = 0;       // varint / fixed32
  std::string_view s;   // length-delimited payload (a view into the parsed bytes)
};

std::vector<Field> parse(std::string_view b) {
  std::vector<Field> out;
  size_t i = 0;
  auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      if (i >= b.size() || shift > 63) throw std::runtime_error("truncated varint");
      const uint8_t c = uint8_t(b[i++]);
      v |= uint64_t(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
    }
  };
  while (i < b.size()) {
    Field f;
    const uint64_t key = varint();
    f.num = int(key >> 3);
    f.wire = int(key & 7);
    if (f.wire == 0) {
      f.v = varint();
    } else if (f.wire == 2) {
      const uint64_t n = varint();
      if (n > b.size() - i) throw std::runtime_error("length past the end");
      f.s = b.substr(i, size_t(n));
      i += size_t(n);
    } else if (f.wire == 5) {
      if (i + 4 > b.size()) throw std::runtime_error("truncated fixed32");
      for (int k = 0; k < 4; ++k) f.v |= uint64_t(uint8_t(b[i + size_t(k)])) << (8 * k);
      i += 4;
    } else {
      throw std::runtime_error("unexpected wire type " + std::to_string(f.wire));
    }
    out.push_back(std::move(f));
  }
  return out;
}

struct Attr {
  int type = 0;
  int64_t i = 0;
  std::vector<int64_t> ints;
};
struct Node {
  std::string op, name;
  std::vector<std::string> in, out;
  std::map<std::string, Attr> attrs;
  const Attr& at(const std::string& k) const {
    auto it = attrs.find(k);
    if (it == attrs.end()) throw std::runtime_error(name + ": no attribute " + k);
    return it->second;
  }
};
struct Tensor {
  std::vector<int64_t> dims;
  int dtype = 0;
  std::string_view raw;  // into Model::bytes
};
struct ValueInfo {
  std::string name;
  int elem = 0;
  std::vector<std::string> dims;  // "N" or the number
};
struct Model {
  std::shared_ptr<const std::string> bytes;  // what the views point into
  int64_t ir = 0;
  std::map<std::string, int64_t> opsets;
  std::string producer;
  std::vector<Node> nodes;
  std::map<std::string, Tensor> inits;
  std::vector<std::string> init_order;
  std::vector<ValueInfo> inputs, outputs;
};

ValueInfo decode_value_info(std::string_view b) {
  ValueInfo v;
  for (auto& f : parse(b)) {
    if (f.num == 1) v.name = std::string(f.s);
    if (f.num == 2)
      for (auto& t : parse(f.s))
        if (t.num == 1)  // tensor_type
          for (auto& tt : parse(t.s)) {
            if (tt.num == 1) v.elem = int(tt.v);
            if (tt.num == 2)
              for (auto& d : parse(tt.s))
                if (d.num == 1)
                  for (auto& dv : parse(d.s))
                    v.dims.push_back(dv.num == 1 ? std::to_string(int64_t(dv.v))
                                                 : std::string(dv.s));
          }
  }
  return v;
}

Model decode(std::string bytes) {
  Model m;
  m.bytes = std::make_shared<const std::string>(std::move(bytes));
  for (auto& f : parse(*m.bytes)) {
    if (f.num == 1) m.ir = int64_t(f.v);
    if (f.num == 2) m.producer = std::string(f.s);
    if (f.num == 8) {
      std::string dom;
      int64_t ver = 0;
      for (auto& o : parse(f.s)) {
        if (o.num == 1) dom = std::string(o.s);
        if (o.num == 2) ver = int64_t(o.v);
      }
      m.opsets[dom] = ver;
    }
    if (f.num != 7) continue;
    for (auto& g : parse(f.s)) {
      if (g.num == 1) {
        Node n;
        for (auto& nf : parse(g.s)) {
          if (nf.num == 1) n.in.emplace_back(nf.s);
          if (nf.num == 2) n.out.emplace_back(nf.s);
          if (nf.num == 3) n.name = std::string(nf.s);
          if (nf.num == 4) n.op = std::string(nf.s);
          if (nf.num == 5) {
            std::string an;
            Attr a;
            for (auto& af : parse(nf.s)) {
              if (af.num == 1) an = std::string(af.s);
              if (af.num == 3) a.i = int64_t(af.v);
              if (af.num == 8) a.ints.push_back(int64_t(af.v));
              if (af.num == 20) a.type = int(af.v);
            }
            n.attrs[an] = a;
          }
        }
        m.nodes.push_back(n);
      } else if (g.num == 5) {
        Tensor t;
        std::string name;
        for (auto& tf : parse(g.s)) {
          if (tf.num == 1) t.dims.push_back(int64_t(tf.v));
          if (tf.num == 2) t.dtype = int(tf.v);
          if (tf.num == 8) name = std::string(tf.s);
          if (tf.num == 9) t.raw = tf.s;
        }
        m.init_order.push_back(name);
        m.inits[name] = t;
      } else if (g.num == 11) {
        m.inputs.push_back(decode_value_info(g.s));
      } else if (g.num == 12) {
        m.outputs.push_back(decode_value_info(g.s));
      }
    }
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// A naive interpreter of the decoded graph, NCHW, double.

struct T4 {
  int N = 0, C = 0, H = 1, W = 1;
  bool flat = false;  // 2-D (N, C)
  std::vector<double> v;
  double& at(int n, int c, int h, int w) { return v[((size_t(n) * C + c) * H + h) * W + w]; }
  double at(int n, int c, int h, int w) const {
    return v[((size_t(n) * C + c) * H + h) * W + w];
  }
};

/// Element i of a float32 initializer (raw_data, little endian).
double raw_float(const Tensor& t, size_t i) {
  uint32_t u = 0;
  for (int k = 0; k < 4; ++k) u |= uint32_t(uint8_t(t.raw[i * 4 + size_t(k)])) << (8 * k);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::vector<double> init_values(const Tensor& t) {
  std::vector<double> v(t.raw.size() / 4);
  for (size_t i = 0; i < v.size(); ++i) v[i] = raw_float(t, i);
  return v;
}

T4 run_graph(const Model& m, const T4& input) {
  std::map<std::string, T4> env;
  env[m.inputs.at(0).name] = input;
  for (const Node& n : m.nodes) {
    const T4& x = env.at(n.in.at(0));
    T4 y;
    if (n.op == "Conv") {
      const Tensor& wt = m.inits.at(n.in.at(1));
      const std::vector<double> w = init_values(wt), b = init_values(m.inits.at(n.in.at(2)));
      const auto& ks = n.at("kernel_shape").ints;
      const auto& st = n.at("strides").ints;
      const auto& pd = n.at("pads").ints;  // (top, left, bottom, right)
      const int O = int(wt.dims[0]), kh = int(ks.at(0)), kw = int(ks.at(1));
      EXPECT_EQ(wt.dims[1], x.C) << n.name;
      y.N = x.N;
      y.C = O;
      y.H = int((x.H + pd.at(0) + pd.at(2) - kh) / st.at(0) + 1);
      y.W = int((x.W + pd.at(1) + pd.at(3) - kw) / st.at(1) + 1);
      y.v.assign(size_t(y.N) * y.C * y.H * y.W, 0.0);
      for (int i = 0; i < y.N; ++i)
        for (int o = 0; o < O; ++o)
          for (int oh = 0; oh < y.H; ++oh)
            for (int ow = 0; ow < y.W; ++ow) {
              double s = b[size_t(o)];
              for (int c = 0; c < x.C; ++c)
                for (int r = 0; r < kh; ++r) {
                  const int ih = int(oh * st[0] - pd[0]) + r;
                  if (ih < 0 || ih >= x.H) continue;
                  for (int q = 0; q < kw; ++q) {
                    const int iw = int(ow * st[1] - pd[1]) + q;
                    if (iw < 0 || iw >= x.W) continue;
                    s += w[((size_t(o) * x.C + c) * kh + r) * kw + q] * x.at(i, c, ih, iw);
                  }
                }
              y.at(i, o, oh, ow) = s;
            }
    } else if (n.op == "Relu") {
      y = x;
      for (auto& e : y.v) e = std::max(e, 0.0);
    } else if (n.op == "MaxPool") {
      const auto& ks = n.at("kernel_shape").ints;
      const auto& st = n.at("strides").ints;
      const bool ceil_mode = n.attrs.count("ceil_mode") && n.at("ceil_mode").i == 1;
      auto od = [&](int in, int k, int s) {  // ONNX MaxPool, pads 0
        const double q = double(in - k) / s;
        return int(ceil_mode ? std::ceil(q) : std::floor(q)) + 1;
      };
      y.N = x.N;
      y.C = x.C;
      y.H = od(x.H, int(ks[0]), int(st[0]));
      y.W = od(x.W, int(ks[1]), int(st[1]));
      y.v.assign(size_t(y.N) * y.C * y.H * y.W, 0.0);
      for (int i = 0; i < y.N; ++i)
        for (int c = 0; c < y.C; ++c)
          for (int oh = 0; oh < y.H; ++oh)
            for (int ow = 0; ow < y.W; ++ow) {
              double mx = -INFINITY;
              for (int r = 0; r < ks[0]; ++r)
                for (int q = 0; q < ks[1]; ++q) {
                  const int ih = int(oh * st[0]) + r, iw = int(ow * st[1]) + q;
                  if (ih < x.H && iw < x.W) mx = std::max(mx, x.at(i, c, ih, iw));
                }
              y.at(i, c, oh, ow) = mx;
            }
    } else if (n.op == "Concat") {
      EXPECT_EQ(n.at("axis").i, 1);
      const T4& b = env.at(n.in.at(1));
      y = x;
      y.C = x.C + b.C;
      y.v.assign(size_t(y.N) * y.C * y.H * y.W, 0.0);
      for (int i = 0; i < y.N; ++i)
        for (int c = 0; c < y.C; ++c)
          for (int h = 0; h < y.H; ++h)
            for (int w = 0; w < y.W; ++w)
              y.at(i, c, h, w) = c < x.C ? x.at(i, c, h, w) : b.at(i, c - x.C, h, w);
    } else if (n.op == "Add") {
      const T4& b = env.at(n.in.at(1));
      EXPECT_EQ(b.v.size(), x.v.size()) << n.name;
      y = x;
      for (size_t k = 0; k < y.v.size(); ++k) y.v[k] += b.v[k];
    } else if (n.op == "GlobalAveragePool") {
      y.N = x.N;
      y.C = x.C;
      y.v.assign(size_t(y.N) * y.C, 0.0);
      for (int i = 0; i < x.N; ++i)
        for (int c = 0; c < x.C; ++c) {
          double s = 0;
          for (int h = 0; h < x.H; ++h)
            for (int w = 0; w < x.W; ++w) s += x.at(i, c, h, w);
          y.at(i, c, 0, 0) = s / (x.H * x.W);
        }
    } else if (n.op == "Flatten") {
      EXPECT_EQ(n.at("axis").i, 1);
      y = x;  // NCHW row-major already is (N, C·H·W)
      y.C = x.C * x.H * x.W;
      y.H = y.W = 1;
      y.flat = true;
    } else if (n.op == "Gemm") {
      EXPECT_TRUE(x.flat) << n.name;
      EXPECT_EQ(n.at("transB").i, 1);
      const Tensor& wt = m.inits.at(n.in.at(1));  // (O, I): read in place (AlexNet's are large)
      const std::vector<double> b = init_values(m.inits.at(n.in.at(2)));
      const int O = int(wt.dims[0]), I = int(wt.dims[1]);
      EXPECT_EQ(I, x.C) << n.name;
      y.N = x.N;
      y.C = O;
      y.flat = true;
      y.v.assign(size_t(y.N) * O, 0.0);
      for (int i = 0; i < x.N; ++i)
        for (int o = 0; o < O; ++o) {
          double s = b[size_t(o)];
          for (int k = 0; k < I; ++k)
            s += raw_float(wt, size_t(o) * I + k) * x.v[size_t(i) * I + k];
          y.v[size_t(i) * O + o] = s;
        }
    } else {
      ADD_FAILURE() << "unexpected op " << n.op;
      return {};
    }
    env[n.out.at(0)] = std::move(y);
  }
  return env.at(m.outputs.at(0).name);
}

std::map<std::string, int> op_counts(const Model& m) {
  std::map<std::string, int> c;
  for (auto& n : m.nodes) c[n.op]++;
  return c;
}

ft::Net fresh(const std::string& arch, int C, int S, int K, const std::string& bypass = "none") {
  ft::NetSpec s;
  s.arch = arch;
  s.in_channels = C;
  s.height = s.width = S;
  s.num_classes = K;
  s.bypass = bypass;
  ft::Net net(s);
  net.init_weights(7);
  return net;
}

/// Header, inputs/outputs and initializers (bit-identical to the parameters, in torchvision
/// names and shapes) of the exported model of `net`.
Model check_model(const ft::Net& net, int64_t batch = 0) {
  ft::OnnxOptions o;
  o.batch = batch;
  const Model m = decode(ft::onnx_model_bytes(net, o));
  const ft::NetSpec& s = net.spec();
  EXPECT_EQ(m.ir, 7);
  EXPECT_EQ(m.opsets.size(), 1u);
  EXPECT_EQ(m.opsets.count("") ? m.opsets.at("") : -1, 13);
  EXPECT_EQ(m.producer, "firetrain");
  const std::string b = batch > 0 ? std::to_string(batch) : "N";
  EXPECT_EQ(m.inputs.size(), 1u);
  EXPECT_EQ(m.outputs.size(), 1u);
  if (m.inputs.size() != 1 || m.outputs.size() != 1) return m;
  EXPECT_EQ(m.inputs[0].name, "input");
  EXPECT_EQ(m.inputs[0].elem, 1);
  EXPECT_EQ(m.inputs[0].dims, (std::vector<std::string>{b, std::to_string(s.in_channels),
                                                         std::to_string(s.height),
                                                         std::to_string(s.width)}));
  EXPECT_EQ(m.outputs[0].name, "logits");
  EXPECT_EQ(m.outputs[0].dims, (std::vector<std::string>{b, std::to_string(s.num_classes)}));
  EXPECT_EQ(m.nodes.back().out.at(0), "logits");
  const auto& views = net.param_views();
  EXPECT_EQ(m.init_order.size(), views.size());
  for (size_t i = 0; i < views.size() && i < m.init_order.size(); ++i) {
    const ft::ParamView& p = views[i];
    EXPECT_EQ(m.init_order[i], p.name);
    auto it = m.inits.find(p.name);
    if (it == m.inits.end()) continue;
    EXPECT_EQ(it->second.dims, p.shape) << p.name;
    EXPECT_EQ(it->second.dtype, 1) << p.name;
    EXPECT_EQ(it->second.raw.size(), p.numel() * 4) << p.name;
    if (it->second.raw.size() == p.numel() * 4) {
      EXPECT_EQ(std::memcmp(it->second.raw.data(), p.data, p.numel() * 4), 0) << p.name;
    }
  }
  // Every node input is the graph input, an initializer or an earlier node's output.
  std::map<std::string, int> known{{"input", 1}};
  for (auto& kv : m.inits) known[kv.first] = 1;
  for (auto& n : m.nodes) {
    for (auto& in : n.in) EXPECT_TRUE(known.count(in)) << n.name << " reads unknown " << in;
    for (auto& o : n.out) EXPECT_TRUE(known.emplace(o, 1).second) << o << " written twice";
  }
  return m;
}

/// Runs the decoded graph on random NCHW input and compares with Net::forward (NHWC), max error
/// relative to max |logit| <= 1e-4.
void check_numerics(ft::Net& net, const Model& m, int N) {
  const ft::NetSpec& s = net.spec();
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  T4 x;
  x.N = N;
  x.C = s.in_channels;
  x.H = s.height;
  x.W = s.width;
  x.v.resize(size_t(N) * x.C * x.H * x.W);
  std::vector<float> nhwc(x.v.size());
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < x.C; ++c)
      for (int h = 0; h < x.H; ++h)
        for (int w = 0; w < x.W; ++w) {
          const float v = nd(rng);
          x.at(i, c, h, w) = v;
          nhwc[((size_t(i) * x.H + h) * x.W + w) * x.C + c] = v;
        }
  ft::PassContext ctx;
  ctx.N = N;
  const float* y = net.forward(ctx, nhwc.data());
  const T4 ref = run_graph(m, x);
  ASSERT_EQ(ref.v.size(), size_t(N) * s.num_classes);
  EXPECT_TRUE(ref.flat);
  const double scale = [&] {
    double mx = 0;
    for (double v : ref.v) mx = std::max(mx, std::abs(v));
    return mx;
  }();
  EXPECT_GT(scale, 0.0);
  expect_close(y, ref.v.data(), ref.v.size(), 1e-4, 1e-4 * scale,
               s.arch + " logits: Net vs the ONNX graph");
}

TEST(OnnxTest, SqueezeNet10StructureAndNumerics) {
  ft::Net net = fresh("squeezenet1_0", 3, 64, 10);
  const Model m = check_model(net);
  const auto c = op_counts(m);
  // conv1 + 8 Fire × 3 + conv10, each with its ReLU; 3 pools; 8 concats; GAP + Flatten.
  EXPECT_EQ(c, (std::map<std::string, int>{{"Conv", 26}, {"Relu", 26}, {"MaxPool", 3},
                                           {"Concat", 8}, {"GlobalAveragePool", 1},
                                           {"Flatten", 1}}));
  for (auto& n : m.nodes) {
    if (n.op != "MaxPool") continue;
    EXPECT_EQ(n.at("ceil_mode").i, 1) << n.name;
    EXPECT_EQ(n.at("kernel_shape").ints, (std::vector<int64_t>{3, 3}));
    EXPECT_EQ(n.at("strides").ints, (std::vector<int64_t>{2, 2}));
  }
  EXPECT_EQ(m.nodes[0].op, "Conv");
  EXPECT_EQ(m.nodes[0].at("kernel_shape").ints, (std::vector<int64_t>{7, 7}));
  EXPECT_EQ(m.nodes[0].at("strides").ints, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(m.nodes[0].at("pads").ints, (std::vector<int64_t>{0, 0, 0, 0}));
  check_numerics(net, m, 2);
}

TEST(OnnxTest, SqueezeNetSmallSimpleBypassNumerics) {
  // The small variant: no ReLU after conv10; simple bypass: Add around fire3, 5, 7, 9. 28×28
  // input: pools 28 -> 14 -> 7 -> 3.
  ft::Net net = fresh("squeezenet_small", 1, 28, 10, "simple");
  const Model m = check_model(net, 4);
  const auto c = op_counts(m);
  EXPECT_EQ(c.at("Conv"), 26);
  EXPECT_EQ(c.at("Relu"), 25);
  EXPECT_EQ(c.at("Add"), 4);
  check_numerics(net, m, 4);
}

TEST(OnnxTest, SqueezeNet11ComplexBypassNumerics) {
  ft::Net net = fresh("squeezenet1_1", 3, 113, 5, "complex");  // pools 56 -> 28 (floor: 27)
  const Model m = check_model(net);
  const auto c = op_counts(m);
  EXPECT_EQ(c.at("Conv"), 26 + 4);  // 1×1 bypass convs around fire2, 4, 6, 8
  EXPECT_EQ(c.at("Relu"), 26);
  EXPECT_EQ(c.at("Add"), 8);
  check_numerics(net, m, 1);
}

TEST(OnnxTest, FireMetaparametersNumerics) {
  // Fire modules from the paper's metaparameters (SR 0.25, 25% 3×3 filters): the exporter takes
  // the module sizes from the net, not from SqueezeNet's defaults.
  ft::NetSpec s;
  s.arch = "squeezenet_small";
  s.in_channels = 3;
  s.height = s.width = 32;
  s.num_classes = 7;
  s.fire.sr = 0.25;
  s.fire.pct3x3 = 0.25;
  s.fire.base_e = 32;
  s.fire.incr_e = 16;
  ft::Net net(s);
  net.init_weights(11);
  const Model m = check_model(net);
  EXPECT_EQ(op_counts(m).at("Concat"), 8);
  check_numerics(net, m, 2);
}

TEST(OnnxTest, AlexNetStructureAndNumerics) {
  ft::Net net = fresh("alexnet", 3, 224, 10);
  const Model m = check_model(net);
  EXPECT_EQ(op_counts(m), (std::map<std::string, int>{{"Conv", 5}, {"Relu", 7}, {"MaxPool", 3},
                                                      {"Flatten", 1}, {"Gemm", 3}}));
  for (auto& n : m.nodes) {
    if (n.op == "MaxPool") {
      EXPECT_EQ(n.at("ceil_mode").i, 0) << n.name;
    }
  }
  EXPECT_EQ(m.nodes.back().op, "Gemm");
  check_numerics(net, m, 1);
}

/// The CLI: --format onnx writes a file that decodes to the same model; bad formats exit 2.
TEST(OnnxTest, CliExport) {
  const fs::path dir = fs::path(::testing::TempDir()) / "ft_onnx_cli";
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto run = [](const std::string& args) {
    const std::string cmd = std::string(FT_BINARY) + " " + args + " >/dev/null 2>&1";
    const int st = std::system(cmd.c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  const std::string out = (dir / "m.onnx").string();
  ASSERT_EQ(run("export --format onnx --arch squeezenet_small --num-classes 10 --in-channels 1 "
                "--size 28 --seed 7 --out " + out),
            0);
  std::ifstream f(out, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  ft::Net net = fresh("squeezenet_small", 1, 28, 10);
  EXPECT_EQ(bytes, ft::onnx_model_bytes(net));
  EXPECT_EQ(run("export --format bogus --out " + (dir / "x").string()), 2);
  EXPECT_FALSE(fs::exists(dir / "x"));
  fs::remove_all(dir);
}

}  // namespace
