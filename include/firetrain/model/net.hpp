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

namespace ft {

/// Torchvision: Kaiming-uniform convs, conv10 N(0, 0.01), zero biases. Xavier: Caffe's
/// (uniform ±sqrt(3/fan_in)), conv10 N(0, 0.01). Kaiming: Kaiming-uniform for conv10 too, so
/// the backward signal into the Fire modules is not scaled down 5-6x by conv10 at the start.
enum class InitScheme { Torchvision, Xavier, Kaiming };
/// "torchvision" | "xavier" | "kaiming" -> scheme (InputError otherwise).
InitScheme parse_init(const std::string& name);

/// What to build. arch: squeezenet1_0 | squeezenet1_1 | squeezenet_small: v1.1 with a 3×3
/// stride-1 padded stem (for 28×28 / 32×32 inputs) and no ReLU after conv10 (so conv10 cannot
/// die: logits may be negative). Parameter names and shapes are those of squeezenet1_1.
struct NetSpec {
  std::string arch = "squeezenet_small";
  int in_channels = 3;
  int height = 224, width = 224;
  int num_classes = 1000;
  float dropout = 0.5f;
  /// "none", or "simple": the paper's simple bypass (identity around fire3, 5, 7, 9).
  std::string bypass = "none";
};

/// Per-layer facts for `firetrain info` (the paper's Table 1).
struct LayerInfo {
  std::string name;   // "fire2 (features.3)"
  int H = 0, W = 0, C = 0;  // output
  int64_t params = 0;
  int64_t macs = 0;   // per image, forward
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

 private:
  void ensure_buffers(int N);
  NetSpec spec_;
  std::vector<std::unique_ptr<Layer>> layers_;
  Device dev_;
  const Ops* ops_;
  Buffer params_, grads_;
  std::vector<float> host_params_, host_grads_;  // CUDA: mirrors the views point into
  std::vector<ParamView> views_;
  std::vector<Buffer> acts_;  // output of each layer, (N, H, W, C)
  Buffer dbuf_[2];            // ping-pong gradient buffers
  Buffer scratch_;            // transient per-layer scratch, shared
  const float* input_ = nullptr;
  int buf_batch_ = 0;
};

/// Known architectures, for --help and validation.
const std::vector<std::string>& known_archs();
/// Parameter count of an architecture without building it (cheap enough: builds it).
int64_t count_params(const NetSpec& spec);

}  // namespace ft
