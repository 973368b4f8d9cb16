/// @brief Naive double-precision references (see naive.hpp).
#include "common/naive.hpp"

#include <algorithm>
#include <cmath>

#include "common/check.hpp"
#include "firetrain/ops/elementwise.hpp"

namespace ft::test {

/// Output size of a convolution, written out: the number of window positions.
int conv_out(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

/// x (N, H, W, C), w (O, C, k, k), b (O) -> y (N, OH, OW, O) = relu?(conv + b).
void conv_ref_forward(const ConvShape& s, int N, const dvec& x, const dvec& w, const dvec& b,
                      dvec& y) {
  const int OH = conv_out(s.H, s.k, s.stride, s.pad), OW = conv_out(s.W, s.k, s.stride, s.pad);
  y.assign(size_t(N) * OH * OW * s.O, 0.0);
  for (int n = 0; n < N; ++n)
    for (int oh = 0; oh < OH; ++oh)
      for (int ow = 0; ow < OW; ++ow)
        for (int o = 0; o < s.O; ++o) {
          double acc = b[o];
          for (int ky = 0; ky < s.k; ++ky) {
            const int ih = oh * s.stride - s.pad + ky;
            if (ih < 0 || ih >= s.H) continue;
            for (int kx = 0; kx < s.k; ++kx) {
              const int iw = ow * s.stride - s.pad + kx;
              if (iw < 0 || iw >= s.W) continue;
              for (int c = 0; c < s.C; ++c)
                acc += x[nhwc(n, ih, iw, c, s.H, s.W, s.C)] * w[oihw(o, c, ky, kx, s.C, s.k)];
            }
          }
          y[nhwc(n, oh, ow, o, OH, OW, s.O)] = s.relu ? std::max(acc, 0.0) : acc;
        }
}

/// dy (N, OH, OW, O) -> dx, dw, db (all overwritten); the ReLU mask (y > 0) is applied first.
void conv_ref_backward(const ConvShape& s, int N, const dvec& x, const dvec& w, const dvec& y,
                       const dvec& dy, dvec& dx, dvec& dw, dvec& db) {
  const int OH = conv_out(s.H, s.k, s.stride, s.pad), OW = conv_out(s.W, s.k, s.stride, s.pad);
  dx.assign(x.size(), 0.0);
  dw.assign(w.size(), 0.0);
  db.assign(size_t(s.O), 0.0);
  for (int n = 0; n < N; ++n)
    for (int oh = 0; oh < OH; ++oh)
      for (int ow = 0; ow < OW; ++ow)
        for (int o = 0; o < s.O; ++o) {
          const size_t iy = nhwc(n, oh, ow, o, OH, OW, s.O);
          const double g = (!s.relu || y[iy] > 0) ? dy[iy] : 0.0;
          if (g == 0) continue;
          db[o] += g;
          for (int ky = 0; ky < s.k; ++ky) {
            const int ih = oh * s.stride - s.pad + ky;
            if (ih < 0 || ih >= s.H) continue;
            for (int kx = 0; kx < s.k; ++kx) {
              const int iw = ow * s.stride - s.pad + kx;
              if (iw < 0 || iw >= s.W) continue;
              for (int c = 0; c < s.C; ++c) {
                const size_t ix = nhwc(n, ih, iw, c, s.H, s.W, s.C);
                const size_t iwt = oihw(o, c, ky, kx, s.C, s.k);
                dw[iwt] += g * x[ix];
                dx[ix] += g * w[iwt];
              }
            }
          }
        }
}

/// torch's pooling_output_shape (aten/src/ATen/native/Pool.h), transcribed: floor division of
/// (in + 2p - (k-1) - 1 + (ceil ? s-1 : 0)) by s, plus one; in ceil mode, drop the last window
/// if it would start in the right padding.
int torch_pool_out(int in, int k, int s, int p, bool ceil_mode) {
  auto div_rtn = [](int a, int b) {  // round toward negative infinity
    int q = a / b, r = a % b;
    if (r != 0 && ((r < 0) != (b < 0))) --q;
    return q;
  };
  int out = div_rtn(in + 2 * p - (k - 1) - 1 + (ceil_mode ? s - 1 : 0), s) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

/// x (N, H, W, C) -> y (N, OH, OW, C); argmax[i] = offset in x of the FIRST maximum of window i
/// in row-major order (torch); padded positions never win.
void maxpool_ref_forward(const PoolRef& P, int N, const dvec& x, dvec& y,
                         std::vector<size_t>& argmax) {
  y.assign(size_t(N) * P.OH * P.OW * P.C, 0.0);
  argmax.assign(y.size(), 0);
  for (int n = 0; n < N; ++n)
    for (int oh = 0; oh < P.OH; ++oh)
      for (int ow = 0; ow < P.OW; ++ow)
        for (int c = 0; c < P.C; ++c) {
          double best = -INFINITY;
          size_t at = SIZE_MAX;
          for (int ky = 0; ky < P.k; ++ky)
            for (int kx = 0; kx < P.k; ++kx) {
              const int ih = oh * P.s - P.p + ky, iw = ow * P.s - P.p + kx;
              if (ih < 0 || ih >= P.H || iw < 0 || iw >= P.W) continue;
              const size_t i = nhwc(n, ih, iw, c, P.H, P.W, P.C);
              if (x[i] > best) {
                best = x[i];
                at = i;
              }
            }
          const size_t o = nhwc(n, oh, ow, c, P.OH, P.OW, P.C);
          y[o] = best;
          argmax[o] = at;
        }
}

void maxpool_ref_backward(const std::vector<size_t>& argmax, size_t nx, const dvec& dy, dvec& dx) {
  dx.assign(nx, 0.0);
  for (size_t o = 0; o < dy.size(); ++o) dx[argmax[o]] += dy[o];
}

void avgpool_ref_forward(int N, int H, int W, int C, const dvec& x, dvec& y) {
  y.assign(size_t(N) * C, 0.0);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) {
      double s = 0;
      for (int h = 0; h < H; ++h)
        for (int w = 0; w < W; ++w) s += x[nhwc(n, h, w, c, H, W, C)];
      y[size_t(n) * C + c] = s / (H * W);
    }
}

void avgpool_ref_backward(int N, int H, int W, int C, const dvec& dy, dvec& dx) {
  dx.assign(size_t(N) * H * W * C, 0.0);
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h)
      for (int w = 0; w < W; ++w)
        for (int c = 0; c < C; ++c) dx[nhwc(n, h, w, c, H, W, C)] = dy[size_t(n) * C + c] / (H * W);
}

/// Dropout mask in NHWC order from the keying contract: element (n, h, w, c) of a sample uses
/// the NCHW-logical index (c * H + h) * W + w.
std::vector<char> dropout_ref_mask(int N, int H, int W, int C, float p, uint64_t seed,
                                   uint64_t step, const std::vector<int64_t>& samples) {
  std::vector<char> m(size_t(N) * H * W * C);
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h)
      for (int w = 0; w < W; ++w)
        for (int c = 0; c < C; ++c)
          m[nhwc(n, h, w, c, H, W, C)] =
              ft::dropout_keep(seed, step, uint64_t(samples[n]), (uint64_t(c) * H + h) * W + w, p);
  return m;
}

void dropout_ref(const std::vector<char>& mask, double p, const dvec& x, dvec& y) {
  y.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = mask[i] ? x[i] / (1.0 - p) : 0.0;
}

/// -log softmax(z)[y] summed over rows; dlogits = (softmax - onehot) / denom. Top-k: the label
/// is within the k largest logits (inputs have no ties).
XentRef xent_ref(int n, int K, const dvec& z, const std::vector<int32_t>& labels, double denom) {
  XentRef r;
  r.dlogits.assign(size_t(n) * K, 0.0);
  for (int i = 0; i < n; ++i) {
    const double* zi = &z[size_t(i) * K];
    double m = *std::max_element(zi, zi + K), s = 0;
    for (int k = 0; k < K; ++k) s += std::exp(zi[k] - m);
    const double lse = m + std::log(s);
    r.loss_sum += lse - zi[labels[i]];
    int rank = 0;
    for (int k = 0; k < K; ++k) rank += zi[k] > zi[labels[i]];
    r.top1 += rank < 1;
    r.top5 += rank < 5;
    for (int k = 0; k < K; ++k)
      r.dlogits[size_t(i) * K + k] = (std::exp(zi[k] - lse) - (k == labels[i])) / denom;
  }
  return r;
}
namespace {
dvec slice(const dvec& v, size_t off, size_t n) {
  return dvec(v.begin() + long(off), v.begin() + long(off + n));
}
void put(dvec& v, size_t off, const dvec& s) {
  std::copy(s.begin(), s.end(), v.begin() + long(off));
}
size_t conv_params(const ConvShape& s) { return size_t(s.weight_numel()) + size_t(s.O); }
}  // namespace

NaiveNet::NaiveNet(const std::string& arch, int C, int H, int W, int classes,
                   const std::string& bypass, const std::vector<std::array<int, 3>>& fires)
    : classes_(classes) {
  auto conv = [&](int O, int k, int s, int p, bool relu) {
    Op op{Op::Conv, {ConvShape{C, O, H, W, k, s, p, relu}}, {}, H, W, C, nparams_};
    nparams_ += conv_params(op.c[0]);
    H = conv_out(H, k, s, p);
    W = conv_out(W, k, s, p);
    C = O;
    ops_.push_back(op);
  };
  auto pool = [&] {
    PoolRef P{C, H, W, 3, 2, 0, torch_pool_out(H, 3, 2, 0, true), torch_pool_out(W, 3, 2, 0, true)};
    ops_.push_back(Op{Op::Pool, {}, P, H, W, C, nparams_});
    H = P.OH;
    W = P.OW;
  };
  int nfire = 0;
  auto fire = [&](int s1, int e1, int e3) {
    if (!fires.empty()) {
      s1 = fires[size_t(nfire)][0];
      e1 = fires[size_t(nfire)][1];
      e3 = fires[size_t(nfire)][2];
    }
    Op op{Op::Fire,
          {ConvShape{C, s1, H, W, 1, 1, 0, true}, ConvShape{s1, e1, H, W, 1, 1, 0, true},
           ConvShape{s1, e3, H, W, 3, 1, 1, true}},
          {},
          H,
          W,
          C,
          nparams_};
    for (int j = 0; j < 3; ++j) nparams_ += conv_params(op.c[j]);
    op.bypass = bypass == "simple" && nfire % 2 == 1;  // fire3, 5, 7, 9
    if (bypass == "complex") {
      op.bypass = true;
      op.bypass_conv = C != e1 + e3;
      if (op.bypass_conv) {
        op.c[3] = ConvShape{C, e1 + e3, H, W, 1, 1, 0, false};
        nparams_ += conv_params(op.c[3]);
      }
    }
    ++nfire;
    C = e1 + e3;
    ops_.push_back(op);
  };
  if (arch == "squeezenet1_0") {
    conv(96, 7, 2, 0, true);
    pool();
    fire(16, 64, 64), fire(16, 64, 64), fire(32, 128, 128);
    pool();
    fire(32, 128, 128), fire(48, 192, 192), fire(48, 192, 192), fire(64, 256, 256);
    pool();
    fire(64, 256, 256);
  } else {
    const bool small = arch == "squeezenet_small";
    conv(64, 3, small ? 1 : 2, small ? 1 : 0, true);
    pool();
    fire(16, 64, 64), fire(16, 64, 64);
    pool();
    fire(32, 128, 128), fire(32, 128, 128);
    pool();
    fire(48, 192, 192), fire(48, 192, 192), fire(64, 256, 256), fire(64, 256, 256);
  }
  // Dropout (eval: identity), then the final conv: ReLU except in the small variant.
  conv(classes, 1, 1, 0, arch != "squeezenet_small");
  ops_.push_back(Op{Op::Avg, {}, {}, H, W, C, nparams_});
  params.assign(nparams_, 0.0);
  grads.assign(nparams_, 0.0);
}

const dvec& NaiveNet::forward(int N, const dvec& x) {
  N_ = N;
  acts_.assign(ops_.size() + 1, {});
  sq_.assign(ops_.size(), {});
  cat_.assign(ops_.size(), {});
  am_.assign(ops_.size(), {});
  acts_[0] = x;
  for (size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = ops_[i];
    const dvec& in = acts_[i];
    dvec& out = acts_[i + 1];
    switch (op.kind) {
      case Op::Conv: {
        const auto& s = op.c[0];
        conv_ref_forward(s, N, in, slice(params, op.off, size_t(s.weight_numel())),
                         slice(params, op.off + size_t(s.weight_numel()), size_t(s.O)), out);
        break;
      }
      case Op::Pool:
        maxpool_ref_forward(op.pool, N, in, out, am_[i]);
        break;
      case Op::Avg:
        avgpool_ref_forward(N, op.H, op.W, op.C, in, out);
        break;
      case Op::Fire: {
        size_t o = op.off;
        dvec ys[3];
        for (int j = 0; j < 3; ++j) {
          const auto& s = op.c[j];
          conv_ref_forward(s, N, j == 0 ? in : ys[0], slice(params, o, size_t(s.weight_numel())),
                           slice(params, o + size_t(s.weight_numel()), size_t(s.O)), ys[j]);
          o += conv_params(s);
        }
        sq_[i] = ys[0];
        const int e1 = op.c[1].O, e3 = op.c[2].O, P = N * op.H * op.W;
        out.assign(size_t(P) * (e1 + e3), 0.0);
        for (int p = 0; p < P; ++p) {  // concat along channels
          for (int c = 0; c < e1; ++c) out[size_t(p) * (e1 + e3) + c] = ys[1][size_t(p) * e1 + c];
          for (int c = 0; c < e3; ++c)
            out[size_t(p) * (e1 + e3) + e1 + c] = ys[2][size_t(p) * e3 + c];
        }
        if (op.bypass) {
          cat_[i] = out;
          if (op.bypass_conv) {
            const auto& s = op.c[3];
            dvec yb;
            conv_ref_forward(s, N, in, slice(params, o, size_t(s.weight_numel())),
                             slice(params, o + size_t(s.weight_numel()), size_t(s.O)), yb);
            for (size_t k = 0; k < out.size(); ++k) out[k] += yb[k];
          } else {
            for (size_t k = 0; k < out.size(); ++k) out[k] += in[k];
          }
        }
        break;
      }
    }
  }
  return acts_.back();
}

void NaiveNet::backward(const dvec& dlogits) {
  const int N = N_;
  dvec dy = dlogits, dx;
  std::fill(grads.begin(), grads.end(), 0.0);
  for (size_t i = ops_.size(); i-- > 0;) {
    const Op& op = ops_[i];
    const dvec& in = acts_[i];
    const dvec& out = acts_[i + 1];
    switch (op.kind) {
      case Op::Conv: {
        const auto& s = op.c[0];
        const size_t nw = size_t(s.weight_numel());
        dvec dw, db;
        conv_ref_backward(s, N, in, slice(params, op.off, nw), out, dy, dx, dw, db);
        put(grads, op.off, dw);
        put(grads, op.off + nw, db);
        break;
      }
      case Op::Pool:
        maxpool_ref_backward(am_[i], in.size(), dy, dx);
        break;
      case Op::Avg:
        avgpool_ref_backward(N, op.H, op.W, op.C, dy, dx);
        break;
      case Op::Fire: {
        const int e1 = op.c[1].O, e3 = op.c[2].O, P = N * op.H * op.W;
        const dvec& cat = op.bypass ? cat_[i] : out;
        dvec y1(size_t(P) * e1), y3(size_t(P) * e3), d1(y1.size()), d3(y3.size());
        for (int p = 0; p < P; ++p) {  // split
          for (int c = 0; c < e1; ++c) {
            y1[size_t(p) * e1 + c] = cat[size_t(p) * (e1 + e3) + c];
            d1[size_t(p) * e1 + c] = dy[size_t(p) * (e1 + e3) + c];
          }
          for (int c = 0; c < e3; ++c) {
            y3[size_t(p) * e3 + c] = cat[size_t(p) * (e1 + e3) + e1 + c];
            d3[size_t(p) * e3 + c] = dy[size_t(p) * (e1 + e3) + e1 + c];
          }
        }
        size_t o[3];
        o[0] = op.off;
        o[1] = o[0] + conv_params(op.c[0]);
        o[2] = o[1] + conv_params(op.c[1]);
        dvec ds1, ds3, dw, db;
        const dvec& s = sq_[i];
        for (int j = 1; j <= 2; ++j) {
          const auto& cs = op.c[j];
          const size_t nw = size_t(cs.weight_numel());
          conv_ref_backward(cs, N, s, slice(params, o[j], nw), j == 1 ? y1 : y3, j == 1 ? d1 : d3,
                            j == 1 ? ds1 : ds3, dw, db);
          put(grads, o[j], dw);
          put(grads, o[j] + nw, db);
        }
        for (size_t k = 0; k < ds1.size(); ++k) ds1[k] += ds3[k];
        const auto& cs = op.c[0];
        const size_t nw = size_t(cs.weight_numel());
        conv_ref_backward(cs, N, in, slice(params, o[0], nw), s, ds1, dx, dw, db);
        put(grads, o[0], dw);
        put(grads, o[0] + nw, db);
        if (op.bypass_conv) {
          const auto& cb = op.c[3];
          const size_t ob = o[2] + conv_params(op.c[2]), nb = size_t(cb.weight_numel());
          dvec dxb;
          conv_ref_backward(cb, N, in, slice(params, ob, nb), out, dy, dxb, dw, db);
          put(grads, ob, dw);
          put(grads, ob + nb, db);
          for (size_t k = 0; k < dx.size(); ++k) dx[k] += dxb[k];
        } else if (op.bypass) {
          for (size_t k = 0; k < dx.size(); ++k) dx[k] += dy[k];
        }
        break;
      }
    }
    dy.swap(dx);
  }
}

}  // namespace ft::test
