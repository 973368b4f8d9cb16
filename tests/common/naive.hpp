/// @brief Naive double-precision loop references for every op (written from the definitions and
/// torch semantics, not from the fast code), and a naive SqueezeNet built from them.
#pragma once

#include <cstddef>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "firetrain/ops/conv2d.hpp"

namespace ft::test {

using dvec = std::vector<double>;

/// Output size of a convolution, written out: the number of window positions.
int conv_out(int in, int k, int s, int p);

/// x (N, H, W, C), w (O, C, k, k), b (O) -> y (N, OH, OW, O) = relu?(conv + b).
void conv_ref_forward(const ConvShape& s, int N, const dvec& x, const dvec& w, const dvec& b,
                      dvec& y);
/// dy (N, OH, OW, O) -> dx, dw, db (all overwritten); the ReLU mask (y > 0) is applied first.
void conv_ref_backward(const ConvShape& s, int N, const dvec& x, const dvec& w, const dvec& y,
                       const dvec& dy, dvec& dx, dvec& dw, dvec& db);

/// torch's pooling_output_shape (aten/src/ATen/native/Pool.h), transcribed.
int torch_pool_out(int in, int k, int s, int p, bool ceil_mode);

struct PoolRef {
  int C, H, W, k, s, p, OH, OW;
};
/// x (N, H, W, C) -> y (N, OH, OW, C); argmax[i] = offset in x of the FIRST maximum of window i
/// in row-major order (torch); padded positions never win.
void maxpool_ref_forward(const PoolRef& P, int N, const dvec& x, dvec& y,
                         std::vector<size_t>& argmax);
void maxpool_ref_backward(const std::vector<size_t>& argmax, size_t nx, const dvec& dy, dvec& dx);

void avgpool_ref_forward(int N, int H, int W, int C, const dvec& x, dvec& y);
void avgpool_ref_backward(int N, int H, int W, int C, const dvec& dy, dvec& dx);

/// Dropout mask in NHWC order from the keying contract: element (n, h, w, c) of a sample uses
/// the NCHW-logical index (c * H + h) * W + w.
std::vector<char> dropout_ref_mask(int N, int H, int W, int C, float p, uint64_t seed,
                                   uint64_t step, const std::vector<int64_t>& samples);
void dropout_ref(const std::vector<char>& mask, double p, const dvec& x, dvec& y);

struct XentRef {
  double loss_sum = 0;
  int64_t top1 = 0, top5 = 0;
  dvec dlogits;
};
/// -log softmax(z)[y] summed over rows; dlogits = (softmax - onehot) / denom. Top-k: the label
/// is within the k largest logits (inputs have no ties).
XentRef xent_ref(int n, int K, const dvec& z, const std::vector<int32_t>& labels, double denom);

/// A naive SqueezeNet (squeezenet1_0, squeezenet1_1, squeezenet_small) in double, in eval mode
/// (dropout off), its parameters in torchvision state_dict order in one flat vector. Built from
/// the loop references above; shares no code with ft::Net.
class NaiveNet {
 public:
  /// As ft::NetSpec documents it: ReLU after the last conv in squeezenet1_0/1_1 (torchvision),
  /// none in squeezenet_small.
  /// bypass "simple": identity added around fire3, 5, 7, 9 (the paper's simple bypass);
  /// "complex": around every Fire module, the identity where channels match, else a 1×1 conv
  /// with bias and no ReLU (parameters after the module's expand3x3).
  /// fires: the 8 modules' (s1x1, e1x1, e3x3) when not empty (else SqueezeNet's).
  NaiveNet(const std::string& arch, int C, int H, int W, int classes,
           const std::string& bypass = "none",
           const std::vector<std::array<int, 3>>& fires = {});
  size_t num_params() const { return nparams_; }
  dvec params, grads;  // (num_params)
  /// x (N, H, W, C) -> logits (N, classes).
  const dvec& forward(int N, const dvec& x);
  /// dlogits -> grads (overwritten); needs the preceding forward.
  void backward(const dvec& dlogits);

 private:
  struct Op {
    enum Kind { Conv, Pool, Fire, Avg } kind;
    ConvShape c[4];  // Conv: c[0]; Fire: squeeze, expand1x1, expand3x3 (, bypass conv)
    PoolRef pool{};
    int H = 0, W = 0, C = 0;  // input
    size_t off = 0;           // parameter offset
    bool bypass = false;      // Fire: out = concat + in
    bool bypass_conv = false; // Fire: out = concat + conv1x1(in) (c[3])
  };
  std::vector<Op> ops_;
  size_t nparams_ = 0;
  int N_ = 0, classes_;
  std::vector<dvec> acts_;               // input of op i is acts_[i], output acts_[i + 1]
  std::vector<dvec> sq_;                 // fire squeeze outputs
  std::vector<dvec> cat_;                // fire concat before the bypass addition
  std::vector<std::vector<size_t>> am_;  // pool argmax
};

}  // namespace ft::test
