/// @brief Net: the layers of SqueezeNet (conv, max pool, Fire with the paper's bypass variants,
/// dropout, conv10 + global average pool), the Fire metaparameters of the paper's section 3.2,
/// and the builders for squeezenet1_0, squeezenet1_1, the small-image variant and AlexNet.
#include "firetrain/model/net.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "firetrain/core/error.hpp"
#include "firetrain/core/timeline.hpp"
#include "firetrain/ops/ops.hpp"

namespace ft {

/// A layer's input or output, NHWC. split > 0: a planar concat (a Fire module's output):
/// channels [0, split) are stored first as a dense (N, H, W, split) tensor, then channels
/// [split, C) as a dense (N, H, W, C - split) one. split == 0: one dense (N, H, W, C) tensor.
/// dt: how it is stored. With --precision bf16 the convolutions write bf16 and pooling, Fire's
/// additions and dropout keep it; the net input, the logits and AlexNet's classifier are fp32.
struct Dims {
  int H = 0, W = 0, C = 0;
  int split = 0;
  DType dt = DType::F32;
  int64_t size() const { return int64_t(H) * W * C; }
  int c1() const { return split ? split : C; }  // channels of the first (or only) part
  int c2() const { return C - c1(); }           // channels of the second part (0: dense)
};

/// A parameter tensor registered by a layer while the net is built.
struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool is_final_conv = false;  // torchvision: N(0, 0.01)
  bool is_bias = false;
  bool torch_default = false;  // AlexNet (torch's default init): U(±1/sqrt(fan_in))
  bool no_relu = false;        // complex bypass conv: variance-preserving U(±sqrt(3/fan_in))
  /// Multiplies the Kaiming/torchvision init (not Xavier's): the expands of a Fire module with
  /// an identity bypass get kBypassInitScale, so that x + F(x) starts near x.
  double init_scale = 1.0;
  bool zero_init = false;  // the complex bypass conv starts at 0 (see Net::init_weights)
};

class Layer {
 public:
  virtual ~Layer() = default;
  std::string name;  // "fire2 (features.3)"
  Dims in, out;
  size_t param_lo = SIZE_MAX;  // lowest arena offset of this layer's parameters
  virtual std::vector<ParamSpec> param_specs() const { return {}; }
  /// Called once the arena exists; `offsets` are those of param_specs(), in order.
  virtual void bind(const std::vector<size_t>& offsets) {}
  virtual int64_t macs() const { return 0; }
  /// x (in.dt), y (out.dt).
  virtual void forward(const PassContext& c, const float* P, ConstAct x, Act y) = 0;
  /// x, y: the forward's. dy, dx: fp32; dy may be modified. dx may be null for the first layer.
  virtual void backward(const PassContext& c, const float* P, float* G, ConstAct x, ConstAct y,
                        float* dy, float* dx) = 0;
  /// Scratch floats per image this layer needs in backward.
  virtual int64_t scratch_per_image() const { return 0; }
  /// Bytes of activations the layer keeps itself for backward (beyond its output).
  virtual size_t kept_bytes() const { return 0; }
  /// Adds layer-specific facts (Fire: s1x1, e1x1, e3x3, bypass) to its table row.
  virtual void describe(LayerInfo&) const {}
  Buffer* scratch = nullptr;
  const Ops* ops = nullptr;  // the device's op table (set by Net before any pass)
};

namespace {

/// y += x for two (P, C) tensors stored with planar splits sy and sx (0 = dense): one flat add
/// when the layouts are the same, else a strided add per channel range that lies in one part
/// of each.
void add_resplit(const Ops& o, int64_t P, int C, int sx, ConstAct x, int sy, Act y) {
  const int ax = sx ? sx : C, ay = sy ? sy : C;
  if (ax == ay) return o.add_inplace(P * C, x, y);
  const int cut[4] = {0, std::min(ax, ay), std::max(ax, ay), C};
  for (int i = 0; i < 3; ++i) {
    const int c0 = cut[i], n = cut[i + 1] - cut[i];
    if (n <= 0) continue;
    const bool xs = c0 >= ax, ys = c0 >= ay;  // in the second part of x / of y
    const ConstAct xp = xs ? x + (P * ax + (c0 - ax)) : x + c0;
    const Act yp = ys ? y + (P * ay + (c0 - ay)) : y + c0;
    o.strided_add(P, n, xp, xs ? C - ax : ax, yp, ys ? C - ay : ay);
  }
}

/// The device of a layer and the precision of its convolutions (bf16 / fp16: outputs of that
/// type too).
struct LayerDev {
  Device device;
  DType dt = DType::F32;
  operator Device() const { return device; }
  DType act_dt() const { return dt; }
  /// A ConvShape of this precision.
  ConvShape conv(int C, int O, int H, int W, int k, int stride, int pad, bool relu,
                 int C2 = 0) const {
    ConvShape s{C, O, H, W, k, stride, pad, relu, dt == DType::BF16, C2};
    s.fp16 = dt == DType::F16;
    return s;
  }
};

class ConvLayer : public Layer {
 public:
  ConvLayer(LayerDev d, std::string key, Dims i, int O, int k, int stride, int pad, bool relu,
            bool final_conv)
      : key_(std::move(key)),
        op_(d.conv(i.c1(), O, i.H, i.W, k, stride, pad, relu, i.c2()), d),
        final_(final_conv) {
    in = i;
    out = Dims{op_.shape().OH(), op_.shape().OW(), O, 0, d.act_dt()};
  }
  std::vector<ParamSpec> param_specs() const override {
    const auto& s = op_.shape();
    return {{key_ + ".weight", {s.O, s.Ct(), s.k, s.k}, final_, false, torch_default},
            {key_ + ".bias", {s.O}, final_, true, torch_default}};
  }
  void bind(const std::vector<size_t>& o) override {
    w_ = o[0];
    b_ = o[1];
    param_lo = std::min(w_, b_);
  }
  int64_t macs() const override { return int64_t(out.H) * out.W * op_.shape().weight_numel(); }
  void forward(const PassContext& c, const float* P, ConstAct x, Act y) override {
    op_.forward(c.N, x, P + w_, P + b_, y);
  }
  void backward(const PassContext& c, const float* P, float* G, ConstAct x, ConstAct y,
                float* dy, float* dx) override {
    op_.backward(c.N, x, P + w_, y, dy, dx, G + w_, G + b_);
  }

  bool torch_default = false;  // AlexNet: torch's default init

 private:
  std::string key_;
  Conv2d op_;
  bool final_;
  size_t w_ = 0, b_ = 0;
};

/// On a planar input (a Fire module's output) each part is pooled on its own: the output has
/// the same split.
class MaxPoolLayer : public Layer {
 public:
  MaxPoolLayer(Device d, Dims i, bool ceil_mode = true)
      : op_(PoolShape{i.c1(), i.H, i.W, 3, 2, 0, ceil_mode}, d) {
    in = i;
    out = Dims{op_.shape().OH(), op_.shape().OW(), i.C, i.split, i.dt};
    if (i.split) op2_ = std::make_unique<MaxPool2d>(PoolShape{i.c2(), i.H, i.W, 3, 2, 0, ceil_mode}, d);
  }
  void forward(const PassContext& c, const float*, ConstAct x, Act y) override {
    op_.forward(c.N, x, y);
    if (op2_) op2_->forward(c.N, x + c.N * in_part1(), y + c.N * out_part1());
  }
  void backward(const PassContext& c, const float*, float*, ConstAct x, ConstAct y, float* dy,
                float* dx) override {
    if (!dx) return;
    op_.backward(c.N, x, y, dy, dx);
    if (op2_)
      op2_->backward(c.N, x + c.N * in_part1(), y + c.N * out_part1(), dy + c.N * out_part1(),
                     dx + c.N * in_part1());
  }
  size_t kept_bytes() const override { return op_.kept_bytes() + (op2_ ? op2_->kept_bytes() : 0); }

 private:
  int64_t in_part1() const { return int64_t(in.H) * in.W * in.c1(); }     // per image
  int64_t out_part1() const { return int64_t(out.H) * out.W * out.c1(); }  // per image
  MaxPool2d op_;                    // the first (or only) part
  std::unique_ptr<MaxPool2d> op2_;  // the second part of a planar input
};

/// The bypass around one Fire module (the paper's section 6).
enum class Bypass { None, Identity, Conv1x1 };
/// Init scale of the expands of a Fire module with an identity bypass (Kaiming/torchvision):
/// the branch F starts at 1/4 of its usual scale, so x + F(x) starts near x, as Fixup
/// (Zhang et al. 2019) starts residual branches: its L^(-1/(2m-2)) per layer for L = 4
/// bypassed modules of m = 2 layers is 1/2 per layer, 1/4 on the branch's output (ReLU is
/// positively homogeneous). Post-ReLU x and F(x) are both >= 0 and add coherently: at full
/// scale the first loss of the simple bypass was 6.9 (ln 10 = 2.3 expected) and one SGD step
/// at lr 0.002 took it to 46; at 1/4: 2.8 and 2.8 (tests/test_design.cpp, random data).
constexpr double kBypassInitScale = 0.25;

/// Fire (s1x1, e1x1, e3x3): squeeze 1×1 + ReLU -> [expand 1×1 + ReLU ‖ expand 3×3 + ReLU].
/// With a bypass the module's input is added to its output, after the expand ReLUs and with no
/// ReLU after the sum (the paper's Figure 2): y = concat + x (Identity: the simple bypass, needs
/// in channels == out channels), or y = concat + conv1x1(x) + b (Conv1x1: the complex bypass,
/// no ReLU on the bypass path).
///
/// Layout ("planar concat", zero-copy): the output (N, H, W, e1 + e3) is stored as the expand
/// 1×1 output (N, H, W, e1) followed by the expand 3×3 output (N, H, W, e3), each dense, so both
/// expands write straight into it (oneDNN 2.6 runs a convolution whose NHWC destination is
/// channel-strided only on its reference kernel, so the interleaved concat needed a copy). out
/// records split = e1. Every consumer handles the two parts: the next module's squeeze, the
/// bypass conv and conv10 are two-part convolutions (ConvShape::C2), max pooling and dropout work
/// per part, the identity bypass adds part by part (add_resplit when the splits differ). The
/// bypass conv is run as two convolutions over its output channels [0, e1) and [e1, e1 + e3)
/// (contiguous rows of its OIHW weights) so that its output has the same split.
class FireLayer : public Layer {
 public:
  FireLayer(LayerDev d, std::string key, Dims i, FireConfig f, Bypass bypass)
      : key_(std::move(key)),
        squeeze_(d.conv(i.c1(), f.s1, i.H, i.W, 1, 1, 0, true, i.c2()), d),
        e1_(d.conv(f.s1, f.e1, i.H, i.W, 1, 1, 0, true), d),
        e3_(d.conv(f.s1, f.e3, i.H, i.W, 3, 1, 1, true), d),
        bypass_(bypass),
        s_(d, d.act_dt()),
        cat_(d, d.act_dt()) {
    in = i;
    out = Dims{i.H, i.W, f.e1 + f.e3, f.e1, d.act_dt()};
    FT_REQUIRE(bypass != Bypass::Identity || in.C == out.C,
               "an identity bypass needs equal in/out channels");
    if (bypass == Bypass::Conv1x1) {  // its output rows [0, e1) and [e1, e1 + e3)
      bpa_ = std::make_unique<Conv2d>(
          d.conv(i.c1(), f.e1, i.H, i.W, 1, 1, 0, false, i.c2()), d);
      bpb_ = std::make_unique<Conv2d>(
          d.conv(i.c1(), f.e3, i.H, i.W, 1, 1, 0, false, i.c2()), d);
    }
  }
  std::vector<ParamSpec> param_specs() const override {
    std::vector<ParamSpec> v;
    for (auto [part, op] : {std::pair{"squeeze", &squeeze_}, {"expand1x1", &e1_},
                            {"expand3x3", &e3_}}) {
      const auto& s = op->shape();
      v.push_back({key_ + "." + part + ".weight", {s.O, s.Ct(), s.k, s.k}});
      if (bypass_ == Bypass::Identity && op != &squeeze_) v.back().init_scale = kBypassInitScale;
      v.push_back({key_ + "." + part + ".bias", {s.O}, false, true});
    }
    if (bpa_) {  // one (out.C, in.C, 1, 1) tensor, as in torch
      v.push_back({key_ + ".bypass.weight", {out.C, in.C, 1, 1}});
      v.back().no_relu = true;
      v.back().zero_init = true;
      v.push_back({key_ + ".bypass.bias", {out.C}, false, true});
    }
    return v;
  }
  void bind(const std::vector<size_t>& o) override {
    off_.assign(o.begin(), o.end());
    param_lo = *std::min_element(o.begin(), o.end());
  }
  int64_t macs() const override {
    return pix() * (squeeze_.shape().weight_numel() + e1_.shape().weight_numel() +
                    e3_.shape().weight_numel() + (bpa_ ? int64_t(in.C) * out.C : 0));
  }
  // Transient scratch per image: two squeeze gradients; with a bypass the masked concat
  // gradient (dy stays intact for the bypass path); with the bypass conv its two input gradients.
  int64_t scratch_per_image() const override {
    return pix() * (2 * s1() + (bypass_ != Bypass::None ? out.C : 0) + (bpa_ ? 2 * in.C : 0));
  }
  void describe(LayerInfo& i) const override {
    i.s1 = s1();
    i.e1 = e1();
    i.e3 = e3();
    i.bypass = bypass_ == Bypass::Identity ? "identity" : bpa_ ? "conv1x1" : "";
  }
  size_t kept_bytes() const override { return s_.bytes() + cat_.bytes(); }

  // bf16: s_, cat_ and y are bf16 (each conv rounds its output once); the identity bypass
  // y = cat + x and the complex one y = conv(x) + cat add in fp32 and round the sum.
  void forward(const PassContext& c, const float* P, ConstAct x, Act y) override {
    const int64_t px = c.N * pix();
    if (s_.size() < size_t(px * s1())) s_.resize(size_t(px * s1()));  // squeeze output, kept for backward: (N, H, W, s1)
    squeeze_.forward(c.N, x, P + off_[0], P + off_[1], s_.view());
    Act cat = y;  // planar: (N, H, W, e1) then (N, H, W, e3)
    if (bypass_ != Bypass::None) {  // keep the concat (for the ReLU masks); y = concat + bypass
      if (cat_.size() < size_t(px * out.C)) cat_.resize(size_t(px * out.C));
      cat = cat_.view();
    }
    e1_.forward(c.N, s_.view(), P + off_[2], P + off_[3], cat);
    e3_.forward(c.N, s_.view(), P + off_[4], P + off_[5], cat + px * e1());
    if (bypass_ == Bypass::Identity) {
      ops->copy(px * out.C, cat, y);
      add_resplit(*ops, px, out.C, in.split, x, out.split, y);
    } else if (bpa_) {
      bpa_->forward(c.N, x, P + off_[6], P + off_[7], y);
      bpb_->forward(c.N, x, P + off_[6] + bp_rows_b(), P + off_[7] + e1(), y + px * e1());
      ops->add_inplace(px * out.C, cat, y);
    }
  }
  void backward(const PassContext& c, const float* P, float* G, ConstAct x, ConstAct y,
                float* dy, float* dx) override {
    const int64_t px = c.N * pix();
    float* dsa = scratch->data();  // (N, H, W, s1)
    float* dsb = dsa + px * s1();  // (N, H, W, s1)
    // The expand ReLU masks. Without a bypass each expand convolution applies its own, fused
    // into its bias-gradient pass (y is the planar concat, so its parts are the expands'
    // outputs): one pass over the concat gradient less than masking it first. With a bypass,
    // both masks at once into scratch, leaving dy intact for the bypass path.
    float* dcat = dy;
    ConstAct y1, y3;  // the masks the expands apply (none: dcat is already masked)
    if (bypass_ == Bypass::None) {
      y1 = y;
      y3 = y + px * e1();
    } else {
      dcat = dsb + px * s1();  // (N, H, W, C) planar
      ops->relu_backward(px * out.C, cat_.view(), dy, dcat);
    }
    e1_.backward(c.N, s_.view(), P + off_[2], y1, dcat, dsa, G + off_[2], G + off_[3]);
    e3_.backward(c.N, s_.view(), P + off_[4], y3, dcat + px * e1(), dsb, G + off_[4],
                 G + off_[5]);
    ops->add_inplace(px * s1(), dsb, dsa);
    squeeze_.backward(c.N, x, P + off_[0], s_.view(), dsa, dx, G + off_[0], G + off_[1]);
    if (bypass_ == Bypass::Identity && dx) add_resplit(*ops, px, out.C, out.split, dy, in.split, dx);
    if (bpa_) {  // no ReLU on the bypass path: dy goes to the convs unmasked
      float* dxa = dcat + px * out.C;  // (N, H, W, in.C), in's layout
      float* dxb = dxa + px * in.C;
      bpa_->backward(c.N, x, P + off_[6], nullptr, dy, dx ? dxa : nullptr, G + off_[6],
                     G + off_[7]);
      bpb_->backward(c.N, x, P + off_[6] + bp_rows_b(), nullptr, dy + px * e1(),
                     dx ? dxb : nullptr, G + off_[6] + bp_rows_b(), G + off_[7] + e1());
      if (dx) {
        ops->add_inplace(px * in.C, dxa, dx);
        ops->add_inplace(px * in.C, dxb, dx);
      }
    }
  }

 private:
  int64_t pix() const { return int64_t(in.H) * in.W; }
  int s1() const { return squeeze_.shape().O; }
  int e1() const { return e1_.shape().O; }
  int e3() const { return e3_.shape().O; }
  int64_t bp_rows_b() const { return int64_t(e1()) * in.C; }  // offset of bypass rows [e1, ...)
  std::string key_;
  Conv2d squeeze_, e1_, e3_;
  Bypass bypass_;
  std::unique_ptr<Conv2d> bpa_, bpb_;  // complex bypass where channels differ (two row blocks)
  std::vector<size_t> off_;
  ActBuffer s_;    // squeeze output (N, H, W, s1), out.dt
  ActBuffer cat_;  // with bypass: the planar concat before the addition, out.dt
};

class DropoutLayer : public Layer {
 public:
  DropoutLayer(Dims i, float p) : p_(p) { in = out = i; }
  // A planar input keeps its split; each part's mask is keyed by the global channel index, so
  // the mask is the same as on the dense layout.
  void forward(const PassContext& c, const float*, ConstAct x, Act y) override {
    const int64_t n = int64_t(c.N) * in.size();
    if (!(c.train && p_ > 0.f)) return ops->copy(n, x, y);
    const int64_t n1 = int64_t(c.N) * in.H * in.W * in.c1();
    ops->dropout_forward(c.N, in.H, in.W, in.c1(), 0, p_, c.seed, c.step, c.samples, x, y);
    if (in.c2())
      ops->dropout_forward(c.N, in.H, in.W, in.c2(), in.c1(), p_, c.seed, c.step, c.samples,
                           x + n1, y + n1);
  }
  void backward(const PassContext& c, const float*, float*, ConstAct, ConstAct, float* dy,
                float* dx) override {
    const int64_t n = int64_t(c.N) * in.size();
    if (!(c.train && p_ > 0.f)) return ops->copy(n, dy, dx);
    const int64_t n1 = int64_t(c.N) * in.H * in.W * in.c1();
    ops->dropout_backward(c.N, in.H, in.W, in.c1(), 0, p_, c.seed, c.step, c.samples, dy, dx);
    if (in.c2())
      ops->dropout_backward(c.N, in.H, in.W, in.c2(), in.c1(), p_, c.seed, c.step, c.samples,
                            dy + n1, dx + n1);
  }

 private:
  float p_;
};

class GlobalAvgPoolLayer : public Layer {
 public:
  explicit GlobalAvgPoolLayer(Dims i) {
    FT_REQUIRE(i.split == 0, "global average pooling takes a dense input");
    in = i;
    out = Dims{1, 1, i.C};  // fp32 logits (the loss reads fp32)
  }
  void forward(const PassContext& c, const float*, ConstAct x, Act y) override {
    ops->global_avgpool_forward(c.N, in.H, in.W, in.C, x, y.f32());
  }
  void backward(const PassContext& c, const float*, float*, ConstAct, ConstAct, float* dy,
                float* dx) override {
    ops->global_avgpool_backward(c.N, in.H, in.W, in.C, dy, dx);
  }
};

/// torch.nn.Linear (+ ReLU): in = (1, 1, I) (after FlattenLayer), out = (1, 1, O).
class LinearLayer : public Layer {
 public:
  LinearLayer(std::string key, Dims i, int O, bool relu) : key_(std::move(key)), relu_(relu) {
    FT_REQUIRE(i.split == 0 && i.dt == DType::F32, "a linear layer takes a dense fp32 input");
    in = i;
    out = Dims{1, 1, O};
  }
  std::vector<ParamSpec> param_specs() const override {
    return {{key_ + ".weight", {out.C, in.C}, false, false, true},
            {key_ + ".bias", {out.C}, false, true, true}};
  }
  void bind(const std::vector<size_t>& o) override {
    w_ = o[0];
    b_ = o[1];
    param_lo = std::min(w_, b_);
  }
  int64_t macs() const override { return int64_t(in.C) * out.C; }
  void forward(const PassContext& c, const float* P, ConstAct x, Act y) override {
    ops->linear_forward(c.N, in.C, out.C, relu_, x.f32(), P + w_, P + b_, y.f32());
  }
  void backward(const PassContext& c, const float* P, float* G, ConstAct x, ConstAct y,
                float* dy, float* dx) override {
    ops->linear_backward(c.N, in.C, out.C, relu_, x.f32(), P + w_, y.f32(), dy, dx, G + w_,
                         G + b_);
  }

 private:
  std::string key_;
  bool relu_;
  size_t w_ = 0, b_ = 0;
};

/// torch.flatten of an NCHW tensor: (H, W, C) NHWC -> (1, 1, C·H·W) in torch's (c, h, w) order,
/// so that AlexNet's classifier.1 weights are torch's as they are. Its output is fp32 (bf16
/// features are widened here: the classifier is fp32).
class FlattenLayer : public Layer {
 public:
  explicit FlattenLayer(Dims i) {
    FT_REQUIRE(i.split == 0, "flatten takes a dense input");
    in = i;
    out = Dims{1, 1, i.H * i.W * i.C};
  }
  void forward(const PassContext& c, const float*, ConstAct x, Act y) override {
    ops->nhwc_to_nchw(c.N, in.H, in.W, in.C, x, y.f32());
  }
  void backward(const PassContext& c, const float*, float*, ConstAct, ConstAct, float* dy,
                float* dx) override {
    if (dx) ops->nchw_to_nhwc(c.N, in.H, in.W, in.C, dy, dx);
  }
};

/// Round half up of a non-negative product, with a guard against 0.3 · 5 = 1.4999999999999998.
}  // namespace

const std::vector<std::string>& known_archs() {
  static const std::vector<std::string> a = {"squeezenet1_0", "squeezenet1_1", "squeezenet_small",
                                             "alexnet"};
  return a;
}

Net::Net(const NetSpec& spec, Device device)
    : spec_(spec), dev_(device), ops_(&ops_for(device)), params_(device), grads_(device),
      dbuf_{Buffer(device), Buffer(device)}, scratch_(device) {
  const auto& A = known_archs();
  if (std::find(A.begin(), A.end(), spec.arch) == A.end())
    throw InputError("unknown --arch '" + spec.arch +
                     "' (known: squeezenet1_0, squeezenet1_1, squeezenet_small, alexnet)");
  if (spec.in_channels < 1 || spec.num_classes < 1 || spec.height < 1 || spec.width < 1)
    throw InputError("bad network input: channels, classes and image size must be >= 1");
  if (spec.bypass != "none" && spec.bypass != "simple" && spec.bypass != "complex")
    throw InputError("unknown --bypass '" + spec.bypass + "' (none, simple, complex)");
  if (spec.arch == "alexnet" && !spec.fire.is_default())
    throw InputError("the Fire options (--fire, --sr, --pct3x3, --base-e, --incr-e, --freq) "
                     "apply to the SqueezeNet architectures, not to alexnet");
  const std::vector<FireConfig> fires = fire_configs(spec.fire);
  if (!(spec.dropout >= 0.f && spec.dropout < 1.f))
    throw InputError("--dropout must be in [0, 1), got " + std::to_string(spec.dropout));
  if (spec.precision != "fp32" && spec.precision != "bf16" && spec.precision != "fp16")
    throw InputError("unknown --precision '" + spec.precision + "' (fp32, bf16, fp16)");
  if (spec.precision == "fp16" && dev_ != Device::CUDA)
    throw InputError("--precision fp16 needs --device cuda (the CPU backend has no fp16 "
                     "kernels; use --precision bf16 on the CPU)");
  const LayerDev ldev{dev_, spec.precision == "bf16"   ? DType::BF16
                            : spec.precision == "fp16" ? DType::F16
                                                       : DType::F32};
  Dims d{spec.height, spec.width, spec.in_channels};
  auto add = [&](Layer* l, const std::string& name) {
    l->name = name;
    l->ops = ops_;
    layers_.emplace_back(l);
    d = l->out;
    if (d.H < 1 || d.W < 1)
      throw InputError("input " + std::to_string(spec.height) + "x" + std::to_string(spec.width) +
                       " is too small for " + spec.arch + " (empty output after " + name + ")");
  };
  auto pool = [&](int idx) {
    if (d.H < 3 || d.W < 3)
      throw InputError("input " + std::to_string(spec.height) + "x" + std::to_string(spec.width) +
                       " is too small for " + spec.arch);
    add(new MaxPoolLayer(dev_, d), "maxpool (features." + std::to_string(idx) + ")");
  };
  // The paper's simple bypass goes around fire3, 5, 7 and 9 (equal in/out channels); the
  // complex one around every module, a 1×1 conv where the channel counts differ.
  auto fire = [&](int idx, int num) {
    const FireConfig& f = fires[size_t(num - 2)];
    const int out_c = f.e1 + f.e3;
    const std::string name = "fire" + std::to_string(num) + " (features." + std::to_string(idx) + ")";
    Bypass b = Bypass::None;
    if (spec.bypass == "simple" && num % 2 == 1) {
      if (d.C != out_c)
        throw InputError("--bypass simple: " + name + " has " + std::to_string(d.C) +
                         " input and " + std::to_string(out_c) + " output channels; the simple "
                         "bypass needs them equal (use --bypass complex)");
      b = Bypass::Identity;
    } else if (spec.bypass == "complex") {
      b = d.C == out_c ? Bypass::Identity : Bypass::Conv1x1;
    }
    add(new FireLayer(ldev, "features." + std::to_string(idx), d, f, b), name);
  };
  auto conv = [&](int idx, int O, int k, int stride, int pad) {
    auto* l = new ConvLayer(ldev, "features." + std::to_string(idx), d, O, k, stride, pad, true,
                            false);
    l->torch_default = true;
    add(l, "conv (features." + std::to_string(idx) + ")");
  };
  auto dropout = [&](int idx) {
    add(new DropoutLayer(d, spec.dropout), "dropout (classifier." + std::to_string(idx) + ")");
  };
  auto linear = [&](int idx, int O, bool relu) {
    add(new LinearLayer("classifier." + std::to_string(idx), d, O, relu),
        "fc (classifier." + std::to_string(idx) + ")");
  };
  if (spec.arch == "alexnet") {
    // torchvision's AlexNet: max pools without ceil mode; AdaptiveAvgPool2d((6, 6)) is the
    // identity for inputs whose features are 6x6 (224 to 254 pixels), the only ones allowed.
    conv(0, 64, 11, 4, 2);
    add(new MaxPoolLayer(dev_, d, false), "maxpool (features.2)");
    conv(3, 192, 5, 1, 2);
    add(new MaxPoolLayer(dev_, d, false), "maxpool (features.5)");
    conv(6, 384, 3, 1, 1);
    conv(8, 256, 3, 1, 1);
    conv(10, 256, 3, 1, 1);
    add(new MaxPoolLayer(dev_, d, false), "maxpool (features.12)");
    if (d.H != 6 || d.W != 6)
      throw InputError("alexnet: input " + std::to_string(spec.height) + "x" +
                       std::to_string(spec.width) + " gives " + std::to_string(d.H) + "x" +
                       std::to_string(d.W) + " features; only inputs giving 6x6 (e.g. 224x224) "
                       "are supported (no adaptive average pooling)");
    add(new FlattenLayer(d), "flatten");
    dropout(0);
    linear(1, 4096, true);
    dropout(3);
    linear(4, 4096, true);
    linear(6, spec.num_classes, false);
  } else if (spec.arch == "squeezenet1_0") {
    add(new ConvLayer(ldev, "features.0", d, 96, 7, 2, 0, true, false), "conv1 (features.0)");
    pool(2);
    fire(3, 2);
    fire(4, 3);
    fire(5, 4);
    pool(6);
    fire(7, 5);
    fire(8, 6);
    fire(9, 7);
    fire(10, 8);
    pool(11);
    fire(12, 9);
  } else {
    const bool small = spec.arch == "squeezenet_small";
    add(new ConvLayer(ldev, "features.0", d, 64, 3, small ? 1 : 2, small ? 1 : 0, true, false),
        "conv1 (features.0)");
    pool(2);
    fire(3, 2);
    fire(4, 3);
    pool(5);
    fire(6, 4);
    fire(7, 5);
    pool(8);
    fire(9, 6);
    fire(10, 7);
    fire(11, 8);
    fire(12, 9);
  }
  if (spec.arch != "alexnet") {
    add(new DropoutLayer(d, spec.dropout), "dropout (classifier.0)");
    // The small-image variant drops the ReLU after conv10: with it, a few large early updates
    // can push every conv10 output below zero for every input, after which no gradient flows
    // and the loss stays at ln(classes) (seen with lr >= 0.01 on Fashion-MNIST, in PyTorch too).
    const bool final_relu = spec.arch != "squeezenet_small";
    add(new ConvLayer(ldev, "classifier.1", d, spec.num_classes, 1, 1, 0, final_relu, true),
        "conv10 (classifier.1)");
    add(new GlobalAvgPoolLayer(d), "avgpool (classifier.3)");
  }

  // Lay the parameters out in forward order in one arena.
  size_t total = 0;
  std::vector<std::vector<size_t>> offs(layers_.size());
  for (size_t i = 0; i < layers_.size(); ++i)
    for (auto& p : layers_[i]->param_specs()) {
      offs[i].push_back(total);
      ParamView v;
      v.name = p.name;
      v.shape = p.shape;
      v.offset = total;
      total += v.numel();
      views_.push_back(v);
    }
  params_.resize(total);
  grads_.resize(total);
  float* hp = params_.data();
  float* hg = grads_.data();
  if (dev_ != Device::CPU) {  // the views see host mirrors of the device arenas
    host_params_.assign(total, 0.f);
    host_grads_.assign(total, 0.f);
    hp = host_params_.data();
    hg = host_grads_.data();
  }
  for (auto& v : views_) {
    v.data = hp + v.offset;
    v.grad = hg + v.offset;
  }
  for (size_t i = 0; i < layers_.size(); ++i)
    if (!offs[i].empty()) layers_[i]->bind(offs[i]);
}

Net::~Net() = default;
Net::Net(Net&&) noexcept = default;
Net& Net::operator=(Net&&) noexcept = default;

int64_t count_params(const NetSpec& spec) { return int64_t(Net(spec).num_params()); }

void Net::params_to_host() {
  if (dev_ != Device::CPU) params_.download(host_params_.data(), host_params_.size());
}
void Net::params_from_host() {
  if (dev_ != Device::CPU) params_.upload(host_params_.data(), host_params_.size());
}
void Net::grads_to_host() {
  if (dev_ != Device::CPU) grads_.download(host_grads_.data(), host_grads_.size());
}

std::vector<LayerInfo> Net::layer_table() const {
  std::vector<LayerInfo> t;
  for (auto& l : layers_) {
    LayerInfo i;
    i.name = l->name;
    i.H = l->out.H;
    i.W = l->out.W;
    i.C = l->out.C;
    i.macs = l->macs();
    l->describe(i);
    for (auto& p : l->param_specs()) {
      int64_t n = 1;
      for (auto s : p.shape) n *= s;
      i.params += n;
    }
    t.push_back(i);
  }
  return t;
}

InitScheme parse_init(const std::string& name) {
  if (name == "torchvision") return InitScheme::Torchvision;
  if (name == "xavier") return InitScheme::Xavier;
  if (name == "kaiming") return InitScheme::Kaiming;
  throw InputError("unknown --init '" + name + "' (torchvision, xavier, kaiming)");
}

void Net::init_weights(uint64_t seed, InitScheme scheme) {
  // Counter-based: element j of parameter k depends only on (seed, k, j).
  auto uniform01 = [](uint64_t a, uint64_t b, uint64_t c) {
    return double(mix64(a ^ mix64(b ^ mix64(c))) >> 11) * (1.0 / 9007199254740992.0);
  };
  size_t k = 0;
  for (auto& layer : layers_) {
    for (auto& p : layer->param_specs()) {
      ParamView& v = views_[k];
      const size_t n = v.numel();
      if (p.is_bias || p.zero_init) {
        // The complex bypass conv starts at zero under every scheme: each module then starts
        // as its plain Fire module (or the identity bypass where channels match), and the
        // conv learns from the first step (no ReLU follows it, so its weight gradient x·dy
        // does not depend on its weights). With a random init, x + F(x) + conv(x) roughly
        // doubled the second moment at every module: the first loss was ~18-35 (ln 10
        // expected) and lr 0.01 diverged within 5 steps (torchvision and Kaiming, measured).
        std::fill(v.data, v.data + n, 0.f);
      } else if (p.torch_default) {
        // torch's default for Linear/Conv (kaiming_uniform_, a = sqrt(5)): U(±1/sqrt(fan_in)).
        const double bound = 1.0 / std::sqrt(double(n) / double(v.shape[0]));
        for (size_t j = 0; j < n; ++j)
          v.data[j] = float((2 * uniform01(seed, k, j) - 1) * bound);
      } else if (p.is_final_conv && scheme != InitScheme::Kaiming) {
        // N(0, 0.01) (torchvision and Caffe agree)
        for (size_t j = 0; j < n; ++j) {
          double u1 = uniform01(seed, k, 2 * j) + 1e-300, u2 = uniform01(seed, k, 2 * j + 1);
          v.data[j] = float(0.01 * std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2));
        }
      } else {
        const double fan_in = double(n) / double(v.shape[0]);
        // torchvision: kaiming_uniform_ (a = 0): bound sqrt(6 / fan_in).
        // Caffe "xavier": bound sqrt(3 / fan_in).
        // The complex bypass conv is followed by no ReLU: gain 1 (Caffe's xavier) under every
        // scheme; with Kaiming's gain 2 the sums x + F(x) grow ~4x in second moment per module
        // and training diverged at once (lr 0.01, Fashion-MNIST, measured).
        const double bound =
            std::sqrt((scheme == InitScheme::Xavier || p.no_relu ? 3.0 : 6.0) / fan_in) *
            (scheme == InitScheme::Xavier ? 1.0 : p.init_scale);
        for (size_t j = 0; j < n; ++j)
          v.data[j] = float((2 * uniform01(seed, k, j) - 1) * bound);
      }
      ++k;
    }
  }
  params_from_host();
}

void Net::ensure_buffers(int N) {
  if (N <= buf_batch_) return;
  acts_.clear();
  for (auto& l : layers_) {
    acts_.emplace_back(dev_, l->out.dt);
    acts_.back().resize(size_t(N * l->out.size()));
  }
  buf_batch_ = N;
}

// Backward at layer i reads dy from dbuf_[(L - 1 - i) % 2] and writes dx (the size of its
// input, layer i - 1's output) to the other one, dbuf_[(L - i) % 2]; the dlogits start in
// dbuf_[0]. Each parity is sized to the largest tensor it holds (squeezenet1_0: conv1's output
// in one, fire3's in the other, instead of conv1's in both).
void Net::ensure_grad_buffers(int N) {
  if (N <= grad_batch_) return;
  const size_t L = layers_.size();
  int64_t need[2] = {spec_.num_classes, 0}, scratch = 0;
  for (size_t i = 0; i < L; ++i) {
    if (i > 0) need[(L - i) % 2] = std::max(need[(L - i) % 2], layers_[i]->in.size());
    scratch = std::max(scratch, layers_[i]->scratch_per_image());
  }
  dbuf_[0].resize(size_t(N * need[0]));
  dbuf_[1].resize(size_t(N * need[1]));
  scratch_.resize(size_t(N * scratch));
  grad_batch_ = N;
}

size_t Net::activation_bytes() const {
  size_t b = 0;
  for (auto& a : acts_) b += a.bytes();
  for (auto& l : layers_) b += l->kept_bytes();
  return b;
}

const float* Net::forward(const PassContext& c, const float* x) {
  FT_REQUIRE(c.N > 0, "empty batch");
  FT_REQUIRE(!c.train || c.samples, "training forward needs sample indices (dropout keys)");
  ensure_buffers(c.N);
  input_ = x;
  ConstAct in = x;
  if (profile_) profile_->resize(layers_.size());
  NvtxRange range("forward");
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto t0 = profile_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    {
      NvtxRange layer_range(layers_[i]->name.c_str());
      TimelineScope span(tl_, "forward", layers_[i]->name);
      layers_[i]->forward(c, params_.data(), in, acts_[i].view());
    }
    if (profile_) {
      synchronize(dev_);
      (*profile_)[i].fwd_s +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    in = acts_[i].view();
  }
  return in.f32();  // the logits are fp32
}

void Net::backward(const PassContext& c, const float* dlogits,
                   const std::function<void(size_t)>& ready) {
  FT_REQUIRE(input_ && c.N <= buf_batch_, "backward without a matching forward");
  ensure_grad_buffers(c.N);
  for (auto& l : layers_) l->scratch = &scratch_;  // (the net may have moved)
  const size_t L = layers_.size();
  float* dy = dbuf_[0].data();
  NvtxRange range("backward");
  ops_->copy(int64_t(c.N) * spec_.num_classes, dlogits, dy);
  int cur = 0;
  for (size_t i = L; i-- > 0;) {
    Layer& l = *layers_[i];
    const ConstAct x = i == 0 ? ConstAct(input_) : acts_[i - 1].view();
    float* dx = i == 0 ? nullptr : dbuf_[1 - cur].data();
    const auto t0 = profile_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    {
      NvtxRange layer_range(l.name.c_str());
      TimelineScope span(tl_, "backward", l.name);
      l.backward(c, params_.data(), grads_.data(), x, acts_[i].view(), dy, dx);
    }
    if (profile_) {
      synchronize(dev_);
      if (profile_->size() < L) profile_->resize(L);
      (*profile_)[i].bwd_s +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (ready && l.param_lo != SIZE_MAX) ready(l.param_lo);
    cur = 1 - cur;
    dy = dx;
  }
}

}  // namespace ft
