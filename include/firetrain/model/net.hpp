/// @brief Net: a static chain of layers (SqueezeNet's Fire modules, pools, dropout, classifier)
/// with all parameters in one flat arena and all gradients in another, so that the all-reduce,
/// the SGD update and checkpoints each see one contiguous buffer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "firetrain/core/device.hpp"
#include "firetrain/core/params.hpp"
#include "firetrain/ops/act.hpp"

namespace ft {

class Timeline;

/// Torchvision: Kaiming-uniform convs, conv10 N(0, 0.01), zero biases. Xavier: Caffe's
/// (uniform ±sqrt(3/fan_in)), conv10 N(0, 0.01). Kaiming: Kaiming-uniform for conv10 too, so
/// the backward signal into the Fire modules is not scaled down 5-6x by conv10 at the start.
enum class InitScheme { Torchvision, Xavier, Kaiming };
/// "torchvision" | "xavier" | "kaiming" -> scheme (InputError otherwise).
InitScheme parse_init(const std::string& name);

/// One Fire module: squeeze 1×1 filters, expand 1×1 and expand 3×3 filters.
struct FireConfig {
  int s1 = 0, e1 = 0, e3 = 0;
  bool operator==(const FireConfig& o) const { return s1 == o.s1 && e1 == o.e1 && e3 == o.e3; }
};

/// The paper's Fire metaparameters (arXiv:1602.07360, section 3.2). For Fire module
/// i = 0..7 (fire2..fire9):
///   e_i    = base_e + incr_e · floor(i / freq)             (expand filters, e1x1 + e3x3)
///   e3x3_i = round(pct3x3 · e_i), clamped to [1, e_i − 1]   (both halves keep >= 1 filter)
///   e1x1_i = e_i − e3x3_i
///   s1x1_i = max(1, round(SR · e_i))
/// where round is round-half-up on the exact product (computed with a 1e-9 guard so that
/// 0.3 · 5 rounds to 2). The defaults give SqueezeNet's modules exactly: (16, 64, 64) ×2,
/// (32, 128, 128) ×2, (48, 192, 192) ×2, (64, 256, 256) ×2, for v1.0, v1.1 and the small
/// variant alike (they differ in the stem and pool positions only). `list`, when not empty,
/// gives the 8 modules explicitly ("s1:e1:e3,..." with 8 entries) and overrides the rest.
struct FireMeta {
  int base_e = 128, incr_e = 128, freq = 2;
  double pct3x3 = 0.5, sr = 0.125;
  std::string list;
  /// True when these are the defaults (SqueezeNet's own modules) and no list is given.
  bool is_default() const;
  /// "SR=0.25 pct3x3=0.5 ..." listing the values that differ from the defaults ("default"
  /// when none), or "fire=<list>".
  std::string label() const;
};

/// The 8 Fire modules of `m`; ft::InputError on impossible values (freq < 1, base_e < 2,
/// incr_e < 0, pct3x3 outside (0, 1), SR <= 0, a malformed or short list).
std::vector<FireConfig> fire_configs(const FireMeta& m);
/// "16:64:64,16:64:64,..." (the format of FireMeta::list).
std::string fire_list_string(const std::vector<FireConfig>& f);

/// What to build. arch: squeezenet1_0 | squeezenet1_1 | squeezenet_small: v1.1 with a 3×3
/// stride-1 padded stem (for 28×28 / 32×32 inputs) and no ReLU after conv10 (so conv10 cannot
/// die: logits may be negative). Parameter names and shapes are those of squeezenet1_1.
struct NetSpec {
  std::string arch = "squeezenet_small";
  int in_channels = 3;
  int height = 224, width = 224;
  int num_classes = 1000;
  float dropout = 0.5f;
  /// The paper's bypass variants (section 6):
  ///  "none";
  ///  "simple": identity added around fire3, 5, 7, 9 (needs equal in/out channels there);
  ///  "complex": a bypass around every Fire module: the identity where the module's input and
  ///    output channels are equal, else a 1×1 convolution with bias and no ReLU (parameters
  ///    "features.N.bypass.weight" (O, C, 1, 1) and ".bias" (O), after the module's expand3x3
  ///    ones). With the default modules: 1×1 convs around fire2, 4, 6, 8, identities around
  ///    fire3, 5, 7, 9, as in the paper's Figure 2 (right).
  std::string bypass = "none";
  /// The Fire modules (squeezenet archs only; alexnet takes only the defaults).
  FireMeta fire{};
  /// "fp32", "bf16" or "fp16": convolutions compute in 16 bits with fp32 accumulation (see
  /// ConvShape::bf16 / fp16) and the layer outputs they feed are stored in 16 bits (half the
  /// activation memory); weights, gradients, the net input, the logits and AlexNet's classifier
  /// stay fp32. bf16 on the CPU and CUDA; fp16 on CUDA only (InputError on the CPU).
  std::string precision = "fp32";
};

/// Per-layer facts for `firetrain info` (the paper's Table 1).
struct LayerInfo {
  std::string name;   // "fire2 (features.3)"
  int H = 0, W = 0, C = 0;  // output
  int64_t params = 0;
  int64_t macs = 0;   // per image, forward
  int s1 = 0, e1 = 0, e3 = 0;  // Fire modules: s1x1, e1x1, e3x3 (0 otherwise)
  std::string bypass;          // Fire modules: "", "identity" or "conv1x1"
};

/// Arguments of one forward/backward pass.
struct PassContext {
  int N = 0;                         // local batch
  bool train = false;                // dropout on
  uint64_t seed = 0, step = 0;       // dropout key
  const int64_t* samples = nullptr;  // dataset index of each row (dropout key), on the device
};

class Layer;
struct Ops;

class Net {
 public:
  /// Builds the net with its arenas and activations on `device` (its ops from
  /// ops_for(device)).
  explicit Net(const NetSpec& spec, Device device = Device::CPU);
  ~Net();
  Net(Net&&) noexcept;
  Net& operator=(Net&&) noexcept;

  const NetSpec& spec() const { return spec_; }
  Device device() const { return dev_; }
  const Ops& ops() const { return *ops_; }
  size_t num_params() const { return params_.size(); }
  /// The parameter and gradient arenas, on the device.
  float* params() { return params_.data(); }
  float* grads() { return grads_.data(); }
  /// Named views; their data/grad point into HOST memory: the arenas themselves on the CPU,
  /// host mirrors for CUDA, synchronized explicitly by the three calls below (no-ops on CPU).
  const std::vector<ParamView>& param_views() const { return views_; }
  void params_to_host();    // device arena -> views (before saving weights)
  void params_from_host();  // views -> device arena (after loading weights)
  void grads_to_host();     // device gradients -> views (tests)
  std::vector<LayerInfo> layer_table() const;

  void init_weights(uint64_t seed, InitScheme scheme = InitScheme::Torchvision);

  /// x (N, H, W, C) NHWC on the device -> logits (on the device) (N, num_classes); the pointer stays valid until the next
  /// forward. Keeps the activations needed by backward.
  const float* forward(const PassContext& ctx, const float* x);
  /// dlogits (N, num_classes) -> gradients in grads() (overwritten). After each layer's
  /// gradients are complete, `ready(lo)` is called with the lowest arena offset that is now
  /// final: everything in [lo, num_params) is ready (parameters are laid out in forward order,
  /// so the ready region grows from the end of the arena towards its start).
  void backward(const PassContext& ctx, const float* dlogits,
                const std::function<void(size_t lo)>& ready = {});

  /// Per-layer wall-clock profile (`bench layers`): when set, forward and backward wait for the
  /// device after each layer and add its seconds to (*p)[layer].fwd_s / .bwd_s (p is resized
  /// to the number of layers). nullptr (the default) turns it off; training never sets it.
  struct LayerTime {
    double fwd_s = 0, bwd_s = 0;
  };
  void set_profile(std::vector<LayerTime>* p) { profile_ = p; }
  /// Records each layer's forward and backward on t while it records (categories "forward"
  /// and "backward", named as in layer_table()); nullptr (the default): nothing.
  void set_timeline(Timeline* t) { tl_ = t; }

  /// Bytes of the activations kept for backward after a forward: every layer's output plus
  /// what layers keep themselves (Fire's squeeze output and, with a bypass, its concat).
  size_t activation_bytes() const;
  /// Floats in the ping-pong gradient buffer of parity p (0, 1): 0 until the first backward
  /// (evaluation never allocates them), then the largest gradient that parity holds: layer i's
  /// dx lives in parity (L - i) % 2, the dlogits in parity 0.
  size_t grad_buffer_floats(int p) const { return dbuf_[p].size(); }

 private:
  void ensure_buffers(int N);
  void ensure_grad_buffers(int N);
  NetSpec spec_;
  std::vector<std::unique_ptr<Layer>> layers_;
  Device dev_;
  const Ops* ops_;
  Buffer params_, grads_;
  std::vector<float> host_params_, host_grads_;  // CUDA: mirrors the views point into
  std::vector<ParamView> views_;
  std::vector<ActBuffer> acts_;  // output of each layer, (N, H, W, C), in its dtype
  Buffer dbuf_[2];               // ping-pong gradient buffers (backward only)
  Buffer scratch_;               // transient per-layer backward scratch, shared
  const float* input_ = nullptr;
  int buf_batch_ = 0, grad_batch_ = 0;
  std::vector<LayerTime>* profile_ = nullptr;
  Timeline* tl_ = nullptr;
};

/// Known architectures, for --help and validation.
const std::vector<std::string>& known_archs();
/// Parameter count of an architecture without building it (cheap enough: builds it).
int64_t count_params(const NetSpec& spec);

}  // namespace ft
