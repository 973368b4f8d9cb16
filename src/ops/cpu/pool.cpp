/// @brief CPU pooling: max pooling on oneDNN (ceil mode through asymmetric right padding;
/// oneDNN's max pooling ignores padded elements, as torch does) and a plain global average.
#include "firetrain/ops/pool.hpp"

#include <map>
#include <vector>

#include "dnnl_common.hpp"
#include "firetrain/core/error.hpp"

namespace ft {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

int PoolShape::out_size(int in, int k, int s, int p, bool ceil_mode) {
  int num = in + 2 * p - k;
  int out = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;  // last window must start inside the input
  return out;
}

namespace {
struct PoolPrims {
  dnnl::pooling_forward::primitive_desc fwd_pd;
  dnnl::pooling_backward::primitive_desc bwd_pd;
  dnnl::pooling_forward fwd;
  dnnl::pooling_backward bwd;
  memory workspace;
};
}  // namespace

struct MaxPool2d::Impl {
  std::map<int, PoolPrims> by_batch;
};

MaxPool2d::MaxPool2d(PoolShape s) : s_(s), impl_(std::make_unique<Impl>()) {
  FT_REQUIRE(s.C > 0 && s.H >= s.k - 2 * s.pad && s.W >= s.k - 2 * s.pad,
             "max pool input smaller than its window");
}
MaxPool2d::~MaxPool2d() = default;
MaxPool2d::MaxPool2d(MaxPool2d&&) noexcept = default;

static PoolPrims& pool_prims(MaxPool2d::Impl& im, const PoolShape& s, int N) {
  auto it = im.by_batch.find(N);
  if (it != im.by_batch.end()) return it->second;
  auto& eng = cpu::engine();
  int OH = s.OH(), OW = s.OW();
  memory::dims pad_l = {s.pad, s.pad};
  memory::dims pad_r = {(OH - 1) * s.stride + s.k - s.H - s.pad,
                        (OW - 1) * s.stride + s.k - s.W - s.pad};
  memory::desc src({N, s.C, s.H, s.W}, dt::f32, tag::nhwc);
  memory::desc dst({N, s.C, OH, OW}, dt::f32, tag::nhwc);
  auto fd = dnnl::pooling_forward::desc(dnnl::prop_kind::forward_training,
                                        dnnl::algorithm::pooling_max, src, dst,
                                        {s.stride, s.stride}, {s.k, s.k}, pad_l, pad_r);
  auto fpd = dnnl::pooling_forward::primitive_desc(fd, eng);
  auto bd = dnnl::pooling_backward::desc(dnnl::algorithm::pooling_max, src, dst,
                                         {s.stride, s.stride}, {s.k, s.k}, pad_l, pad_r);
  auto bpd = dnnl::pooling_backward::primitive_desc(bd, eng, fpd);
  PoolPrims p{fpd, bpd, dnnl::pooling_forward(fpd), dnnl::pooling_backward(bpd),
              memory(fpd.workspace_desc(), eng)};
  return im.by_batch.emplace(N, std::move(p)).first->second;
}

void MaxPool2d::forward(int N, const float* x, float* y) {
  auto& p = pool_prims(*impl_, s_, N);
  auto& eng = cpu::engine();
  memory ms(p.fwd_pd.src_desc(), eng, const_cast<float*>(x));
  memory md(p.fwd_pd.dst_desc(), eng, y);
  p.fwd.execute(cpu::stream(),
                {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DST, md}, {DNNL_ARG_WORKSPACE, p.workspace}});
  cpu::stream().wait();
}

void MaxPool2d::backward(int N, const float* dy, float* dx) {
  auto& p = pool_prims(*impl_, s_, N);
  auto& eng = cpu::engine();
  memory mdy(p.bwd_pd.diff_dst_desc(), eng, const_cast<float*>(dy));
  memory mdx(p.bwd_pd.diff_src_desc(), eng, dx);
  p.bwd.execute(cpu::stream(), {{DNNL_ARG_DIFF_DST, mdy},
                                {DNNL_ARG_DIFF_SRC, mdx},
                                {DNNL_ARG_WORKSPACE, p.workspace}});
  cpu::stream().wait();
}

void global_avgpool_forward(int N, int H, int W, int C, const float* x, float* y) {
  const int P = H * W;
  const float inv = 1.0f / float(P);
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    float* yn = y + int64_t(n) * C;
    for (int c = 0; c < C; ++c) yn[c] = 0.f;
    const float* xn = x + int64_t(n) * P * C;
    for (int p = 0; p < P; ++p)
      for (int c = 0; c < C; ++c) yn[c] += xn[int64_t(p) * C + c];
    for (int c = 0; c < C; ++c) yn[c] *= inv;
  }
}

void global_avgpool_backward(int N, int H, int W, int C, const float* dy, float* dx) {
  const int P = H * W;
  const float inv = 1.0f / float(P);
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    const float* dyn = dy + int64_t(n) * C;
    float* dxn = dx + int64_t(n) * P * C;
    for (int p = 0; p < P; ++p)
      for (int c = 0; c < C; ++c) dxn[int64_t(p) * C + c] = dyn[c] * inv;
  }
}

}  // namespace ft
