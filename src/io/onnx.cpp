/// @brief ONNX export: the Net's inference graph as a ModelProto, serialized by a minimal
/// protobuf encoder (varints, length-delimited fields, fixed32) with onnx.proto's field numbers.
#include "firetrain/io/onnx.hpp"

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "firetrain/core/error.hpp"
#include "firetrain/io/file.hpp"
#include "firetrain/model/net.hpp"

namespace ft {

namespace {

// ---------------------------------------------------------------------------------------------
// Protobuf wire format (https://protobuf.dev/programming-guides/encoding/).

enum Wire : uint32_t { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };

/// Appends protobuf fields to a byte string. Repeated scalars are written unpacked (one field
/// per element), which every proto2 and proto3 parser accepts.
class Pb {
 public:
  static void varint(std::string& b, uint64_t v) {
    while (v >= 0x80) {
      b.push_back(char(uint8_t(v) | 0x80));
      v >>= 7;
    }
    b.push_back(char(uint8_t(v)));
  }
  static size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) v >>= 7, ++n;
    return n;
  }
  void tag(int field, Wire w) { varint(buf, (uint64_t(field) << 3) | w); }
  /// int32/int64/enum: negative values as 10-byte two's complement, as protobuf does.
  Pb& i64(int field, int64_t v) {
    tag(field, kVarint);
    varint(buf, uint64_t(v));
    return *this;
  }
  Pb& f32(int field, float v) {
    tag(field, kFixed32);
    uint32_t u;
    std::memcpy(&u, &v, 4);
    for (int i = 0; i < 4; ++i) buf.push_back(char(uint8_t(u >> (8 * i))));
    return *this;
  }
  Pb& bytes(int field, const std::string& s) {
    tag(field, kLen);
    varint(buf, s.size());
    buf += s;
    return *this;
  }
  Pb& msg(int field, const Pb& m) { return bytes(field, m.buf); }
  /// Tag and length of a length-delimited field whose `n` payload bytes follow separately.
  Pb& len_header(int field, size_t n) {
    tag(field, kLen);
    varint(buf, n);
    return *this;
  }
  std::string buf;
};

// onnx.proto field numbers (onnx/onnx.proto, IR version 7).
namespace f {
// ModelProto
constexpr int kModelIrVersion = 1, kModelProducerName = 2, kModelProducerVersion = 3,
              kModelDocString = 6, kModelGraph = 7, kModelOpsetImport = 8;
// OperatorSetIdProto
constexpr int kOpsetDomain = 1, kOpsetVersion = 2;
// GraphProto
constexpr int kGraphNode = 1, kGraphName = 2, kGraphInitializer = 5, kGraphInput = 11,
              kGraphOutput = 12;
// NodeProto
constexpr int kNodeInput = 1, kNodeOutput = 2, kNodeName = 3, kNodeOpType = 4,
              kNodeAttribute = 5;
// AttributeProto (type: INT = 2, INTS = 7)
constexpr int kAttrName = 1, kAttrI = 3, kAttrInts = 8, kAttrType = 20;
constexpr int kAttrTypeInt = 2, kAttrTypeInts = 7;
// TensorProto (data_type FLOAT = 1)
constexpr int kTensorDims = 1, kTensorDataType = 2, kTensorName = 8, kTensorRawData = 9;
constexpr int kFloat = 1;
// ValueInfoProto, TypeProto, TypeProto.Tensor, TensorShapeProto(.Dimension)
constexpr int kValueName = 1, kValueType = 2;
constexpr int kTypeTensor = 1;
constexpr int kTensorTypeElem = 1, kTensorTypeShape = 2;
constexpr int kShapeDim = 1;
constexpr int kDimValue = 1, kDimParam = 2;
}  // namespace f

// ---------------------------------------------------------------------------------------------
// The graph, before serialization.

struct Attr {
  std::string name;
  bool list = false;
  std::vector<int64_t> v;  // one value unless list
};

struct Node {
  std::string op, name;
  std::vector<std::string> in, out;
  std::vector<Attr> attrs;
};

/// A tensor shape known while building: 4-D (C, H, W) per image, or 2-D (C) once flattened.
struct Shape {
  int C = 0, H = 0, W = 0;
  bool flat = false;
};

std::string fmt_dims(int H, int W, int C) {
  return std::to_string(H) + "x" + std::to_string(W) + "x" + std::to_string(C);
}

class GraphBuilder {
 public:
  explicit GraphBuilder(const Net& net) : net_(net), views_(net.param_views()) {}

  void build() {
    const NetSpec& s = net_.spec();
    cur_ = "input";
    shape_ = Shape{s.in_channels, s.height, s.width, false};
    const std::vector<LayerInfo> rows = net_.layer_table();
    // Index of the last layer with parameters: the classifier's output layer (no ReLU on Gemm).
    size_t last_param_layer = 0;
    for (size_t i = 0; i < rows.size(); ++i)
      if (rows[i].params > 0) last_param_layer = i;
    for (size_t i = 0; i < rows.size(); ++i) {
      const LayerInfo& r = rows[i];
      const std::string& n = r.name;
      auto starts = [&](const char* p) { return n.rfind(p, 0) == 0; };
      if (starts("conv")) {
        // conv1 / conv / conv10: torchvision's Conv2d (+ ReLU, except squeezenet_small's conv10)
        const bool final_conv = starts("conv10");
        conv_layer(!(final_conv && s.arch == "squeezenet_small"));
      } else if (starts("maxpool")) {
        maxpool(s.arch != "alexnet");  // torchvision: SqueezeNet ceil_mode=True, AlexNet False
      } else if (starts("fire")) {
        fire(r);
      } else if (starts("dropout")) {
        // inference: the identity
      } else if (starts("avgpool")) {
        global_avgpool();
      } else if (starts("flatten")) {
        flatten("flatten");
      } else if (starts("fc")) {
        gemm(i != last_param_layer);
      } else {
        throw Error("onnx export: layer '" + n + "' of " + s.arch +
                    " has no ONNX translation (src/io/onnx.cpp must learn it)");
      }
      check_row(r);
    }
    if (next_param_ != views_.size())
      throw Error("onnx export: parameter '" + views_[next_param_].name +
                  "' of the net is not used by the exported graph");
    if (!shape_.flat || shape_.C != s.num_classes)
      throw Error("onnx export: the graph of " + s.arch + " does not end in (N, " +
                  std::to_string(s.num_classes) + ") logits");
    FT_REQUIRE(!nodes_.empty(), "onnx export: empty graph");
    nodes_.back().out[0] = "logits";
  }

  std::vector<Node> nodes_;
  std::vector<const ParamView*> inits_;  // in graph order

 private:
  /// The next parameter, checked to be `key` + suffix with `rank` dimensions.
  const ParamView& take(const std::string& suffix, size_t rank) {
    if (next_param_ >= views_.size())
      throw Error("onnx export: the graph wants more parameters than the net has");
    const ParamView& p = views_[next_param_++];
    const std::string want = suffix;
    if (p.name.size() < want.size() ||
        p.name.compare(p.name.size() - want.size(), want.size(), want) != 0 ||
        p.shape.size() != rank)
      throw Error("onnx export: unexpected parameter '" + p.name + "' " + shape_str(p.shape) +
                  " (wanted a *" + suffix + " of rank " + std::to_string(rank) + ")");
    inits_.push_back(&p);
    return p;
  }

  std::string add(const std::string& op, const std::string& name, std::vector<std::string> in,
                  std::vector<Attr> attrs = {}) {
    Node nd;
    nd.op = op;
    nd.name = name;
    nd.in = std::move(in);
    nd.out = {name};
    nd.attrs = std::move(attrs);
    nodes_.push_back(std::move(nd));
    return name;
  }

  /// Conv (+ Relu) reading `x` of shape `in`; returns the output name and sets *out.
  std::string conv(const std::string& x, const Shape& in, int stride, int pad, bool relu,
                   Shape* out) {
    const ParamView& w = take(".weight", 4);
    const ParamView& b = take(".bias", 1);
    const std::string key = w.name.substr(0, w.name.size() - 7);
    const int O = int(w.shape[0]), k = int(w.shape[2]);
    if (b.name != key + ".bias" || b.shape[0] != O || w.shape[1] != in.C || w.shape[3] != k)
      throw Error("onnx export: " + w.name + " " + shape_str(w.shape) + " and " + b.name +
                  " do not fit a convolution of " + std::to_string(in.C) + " channels");
    std::string y = add("Conv", key, {x, w.name, b.name},
                        {{"kernel_shape", true, {k, k}},
                         {"strides", true, {stride, stride}},
                         {"pads", true, {pad, pad, pad, pad}}});
    if (relu) y = add("Relu", key + ".relu", {y});
    *out = Shape{O, (in.H + 2 * pad - k) / stride + 1, (in.W + 2 * pad - k) / stride + 1, false};
    return y;
  }

  /// Stride and padding of the plain convolutions (torchvision's definitions; kernel sizes come
  /// from the weights).
  void conv_geometry(const std::string& key, int* stride, int* pad) const {
    const std::string& a = net_.spec().arch;
    struct G {
      const char* arch;
      const char* key;
      int stride, pad;
    };
    static const G table[] = {
        {"squeezenet1_0", "features.0", 2, 0},    {"squeezenet1_1", "features.0", 2, 0},
        {"squeezenet_small", "features.0", 1, 1}, {"alexnet", "features.0", 4, 2},
        {"alexnet", "features.3", 1, 2},          {"alexnet", "features.6", 1, 1},
        {"alexnet", "features.8", 1, 1},          {"alexnet", "features.10", 1, 1},
    };
    if (key == "classifier.1" && a != "alexnet") {  // SqueezeNet's conv10, 1×1
      *stride = 1;
      *pad = 0;
      return;
    }
    for (const G& g : table)
      if (a == g.arch && key == g.key) {
        *stride = g.stride;
        *pad = g.pad;
        return;
      }
    throw Error("onnx export: no stride/padding known for " + a + " " + key);
  }

  void conv_layer(bool relu) {
    FT_REQUIRE(next_param_ < views_.size(), "onnx export: convolution without parameters");
    const std::string& wn = views_[next_param_].name;
    int stride = 1, pad = 0;
    conv_geometry(wn.substr(0, wn.rfind('.')), &stride, &pad);
    Shape out;
    cur_ = conv(cur_, shape_, stride, pad, relu, &out);
    shape_ = out;
  }

  void maxpool(bool ceil_mode) {
    const int k = 3, s = 2;
    auto od = [&](int n) { return (ceil_mode ? (n - k + s - 1) / s : (n - k) / s) + 1; };
    const std::string name = "maxpool" + std::to_string(++pools_);
    cur_ = add("MaxPool", name, {cur_},
               {{"kernel_shape", true, {k, k}},
                {"strides", true, {s, s}},
                {"pads", true, {0, 0, 0, 0}},
                {"ceil_mode", false, {ceil_mode ? 1 : 0}}});
    shape_.H = od(shape_.H);
    shape_.W = od(shape_.W);
  }

  void fire(const LayerInfo& r) {
    const std::string x = cur_;
    const Shape in = shape_;
    Shape sq, a, b;
    const std::string s = conv(x, in, 1, 0, true, &sq);
    const std::string ya = conv(s, sq, 1, 0, true, &a);
    const std::string yb = conv(s, sq, 1, 1, true, &b);
    if (a.H != in.H || a.W != in.W || b.H != in.H || b.W != in.W)
      throw Error("onnx export: " + r.name + ": the expand convolutions change the image size");
    if (sq.C != r.s1 || a.C != r.e1 || b.C != r.e3)
      throw Error("onnx export: " + r.name + ": parameters give s1x1 " + std::to_string(sq.C) +
                  ", e1x1 " + std::to_string(a.C) + ", e3x3 " + std::to_string(b.C) +
                  "; the net has " + std::to_string(r.s1) + ", " + std::to_string(r.e1) + ", " +
                  std::to_string(r.e3));
    const std::string key = s.substr(0, s.rfind(".squeeze"));
    std::string y = add("Concat", key + ".concat", {ya, yb}, {{"axis", false, {1}}});
    shape_ = Shape{a.C + b.C, in.H, in.W, false};
    if (r.bypass == "identity") {
      y = add("Add", key + ".bypass_add", {y, x});
    } else if (r.bypass == "conv1x1") {
      Shape bp;
      const std::string yp = conv(x, in, 1, 0, false, &bp);
      y = add("Add", key + ".bypass_add", {y, yp});
    } else if (!r.bypass.empty()) {
      throw Error("onnx export: " + r.name + ": unknown bypass '" + r.bypass + "'");
    }
    cur_ = y;
  }

  void global_avgpool() {
    cur_ = add("GlobalAveragePool", "avgpool", {cur_});
    shape_.H = shape_.W = 1;
    flatten("avgpool.flatten");
  }

  /// torch.flatten(x, 1) of NCHW: (N, C·H·W) in (c, h, w) order, as the Net's FlattenLayer.
  void flatten(const std::string& name) {
    cur_ = add("Flatten", name, {cur_}, {{"axis", false, {1}}});
    shape_ = Shape{shape_.C * shape_.H * shape_.W, 1, 1, true};
  }

  void gemm(bool relu) {
    FT_REQUIRE(shape_.flat, "onnx export: a fully connected layer needs a flattened input");
    const ParamView& w = take(".weight", 2);
    const ParamView& b = take(".bias", 1);
    const std::string key = w.name.substr(0, w.name.size() - 7);
    if (w.shape[1] != shape_.C || b.shape[0] != w.shape[0])
      throw Error("onnx export: " + w.name + " " + shape_str(w.shape) + " does not take " +
                  std::to_string(shape_.C) + " inputs");
    // y = x · Wᵀ + b with W (O, I) as torch.nn.Linear stores it.
    cur_ = add("Gemm", key, {cur_, w.name, b.name}, {{"transB", false, {1}}});
    if (relu) cur_ = add("Relu", key + ".relu", {cur_});
    shape_ = Shape{int(w.shape[0]), 1, 1, true};
  }

  /// The shape so far must be the Net's output shape of that layer.
  void check_row(const LayerInfo& r) const {
    if (shape_.H != r.H || shape_.W != r.W || shape_.C != r.C)
      throw Error("onnx export: after " + r.name + " the ONNX graph has " +
                  fmt_dims(shape_.H, shape_.W, shape_.C) + ", the net " +
                  fmt_dims(r.H, r.W, r.C) + " (src/io/onnx.cpp is out of date with net.cpp)");
  }

  const Net& net_;
  const std::vector<ParamView>& views_;
  size_t next_param_ = 0;
  int pools_ = 0;
  std::string cur_;
  Shape shape_;
};

// ---------------------------------------------------------------------------------------------
// Serialization.

Pb node_proto(const Node& n) {
  Pb p;
  for (auto& s : n.in) p.bytes(f::kNodeInput, s);
  for (auto& s : n.out) p.bytes(f::kNodeOutput, s);
  p.bytes(f::kNodeName, n.name).bytes(f::kNodeOpType, n.op);
  for (auto& a : n.attrs) {
    Pb ap;
    ap.bytes(f::kAttrName, a.name);
    if (a.list) {
      for (int64_t v : a.v) ap.i64(f::kAttrInts, v);
      ap.i64(f::kAttrType, f::kAttrTypeInts);
    } else {
      ap.i64(f::kAttrI, a.v.at(0)).i64(f::kAttrType, f::kAttrTypeInt);
    }
    p.msg(f::kNodeAttribute, ap);
  }
  return p;
}

/// ValueInfoProto of a float tensor; a dim < 0 is the symbolic batch "N".
Pb value_info(const std::string& name, const std::vector<int64_t>& dims) {
  Pb shape;
  for (int64_t d : dims) {
    Pb dim;
    if (d < 0)
      dim.bytes(f::kDimParam, "N");
    else
      dim.i64(f::kDimValue, d);
    shape.msg(f::kShapeDim, dim);
  }
  Pb tt;
  tt.i64(f::kTensorTypeElem, f::kFloat).msg(f::kTensorTypeShape, shape);
  Pb type;
  type.msg(f::kTypeTensor, tt);
  Pb v;
  v.bytes(f::kValueName, name).msg(f::kValueType, type);
  return v;
}

/// A TensorProto's fields before its raw_data payload (which follows: p.numel() · 4 bytes).
std::string tensor_header(const ParamView& p) {
  Pb t;
  for (int64_t d : p.shape) t.i64(f::kTensorDims, d);
  t.i64(f::kTensorDataType, f::kFloat).bytes(f::kTensorName, p.name);
  t.len_header(f::kTensorRawData, p.numel() * 4);
  return t.buf;
}

bool little_endian() {
  const uint32_t one = 1;
  unsigned char c;
  std::memcpy(&c, &one, 1);
  return c == 1;
}

using Sink = ByteSink;

/// Streams the ModelProto to `out`, the weights straight from the parameter views (the large
/// initializers are never copied into an intermediate message).
void write_model(const Net& net, const OnnxOptions& opt, const Sink& out) {
  GraphBuilder g(net);
  g.build();
  const NetSpec& s = net.spec();
  const int64_t batch = opt.batch > 0 ? opt.batch : -1;

  Pb small;  // the graph's fields except the initializers
  for (auto& n : g.nodes_) small.msg(f::kGraphNode, node_proto(n));
  small.bytes(f::kGraphName, s.arch);
  small.msg(f::kGraphInput, value_info("input", {batch, s.in_channels, s.height, s.width}));
  small.msg(f::kGraphOutput, value_info("logits", {batch, s.num_classes}));
  std::vector<std::string> headers;
  size_t graph_len = small.buf.size();
  for (const ParamView* p : g.inits_) {
    headers.push_back(tensor_header(*p));
    const size_t len = headers.back().size() + p->numel() * 4;
    graph_len += 1 + Pb::varint_size(len) + len;  // field 5, wire type 2: a 1-byte tag
  }

  Pb head;
  Pb opset;
  opset.bytes(f::kOpsetDomain, "").i64(f::kOpsetVersion, kOnnxOpset);
  head.i64(f::kModelIrVersion, kOnnxIrVersion)
      .bytes(f::kModelProducerName, "firetrain")
#ifdef FIRETRAIN_VERSION
      .bytes(f::kModelProducerVersion,
             opt.producer_version.empty() ? FIRETRAIN_VERSION : opt.producer_version)
#else
      .bytes(f::kModelProducerVersion, opt.producer_version)
#endif
      .bytes(f::kModelDocString, s.arch + " (torchvision layout), exported by firetrain")
      .msg(f::kModelOpsetImport, opset)
      .len_header(f::kModelGraph, graph_len);
  out(head.buf.data(), head.buf.size());
  out(small.buf.data(), small.buf.size());

  const bool le = little_endian();
  std::vector<char> swapped;
  for (size_t i = 0; i < g.inits_.size(); ++i) {
    const ParamView& p = *g.inits_[i];
    Pb t;
    t.len_header(f::kGraphInitializer, headers[i].size() + p.numel() * 4);
    out(t.buf.data(), t.buf.size());
    out(headers[i].data(), headers[i].size());
    if (le) {
      out(reinterpret_cast<const char*>(p.data), p.numel() * 4);
    } else {
      swapped.resize(p.numel() * 4);
      for (size_t j = 0; j < p.numel(); ++j) {
        uint32_t u;
        std::memcpy(&u, p.data + j, 4);
        for (int b = 0; b < 4; ++b) swapped[j * 4 + size_t(b)] = char(uint8_t(u >> (8 * b)));
      }
      out(swapped.data(), swapped.size());
    }
  }
}

}  // namespace

std::string onnx_model_bytes(const Net& net, const OnnxOptions& opt) {
  std::string b;
  write_model(net, opt, [&](const char* d, size_t n) { b.append(d, n); });
  return b;
}

void save_onnx(const std::string& path, const Net& net, const OnnxOptions& opt) {
  write_file_atomic(path, [&](const ByteSink& out) { write_model(net, opt, out); });
}

}  // namespace ft
