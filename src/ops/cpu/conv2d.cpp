/// @brief CPU convolution on oneDNN: forward (ReLU fused as a post-op), backward data and
/// backward weights+bias. Primitives are built once per batch size; weights are reordered from
/// torch OIHW to the kernel's preferred layout once per step and shared by forward and
/// backward-data.
///
/// Two-part input (ConvShape::C2 > 0, the planar concat of a Fire module's output): one oneDNN
/// convolution per part, each reading its dense NHWC part (oneDNN 2.6 runs a channel-strided
/// NHWC tensor on its reference kernel only) with the weights' input-channel slice (a strided
/// view of the OIHW arena tensor, reordered into the primitive's layout). The first part has
/// the bias and no post-op; the second accumulates into y with a `sum` post-op, then the ReLU.
/// Backward masks dy once, runs backward-data per part (into dx and dx + N*H*W*C) and
/// backward-weights per part (reordered into the strided slices of dw; bias gradient once).
///
/// Memory: only what backward needs from forward is kept per convolution (the weights in the
/// forward layout); every other reordered or converted copy (bf16 input and output gradient,
/// backward weights, weight gradients in the kernel's layout) lives in thread-local scratch
/// shared by all convolutions, grown to the largest use. bf16: backward-weights converts x to
/// bf16 again instead of keeping forward's copy per convolution: squeezenet1_0 at batch 32
/// peaks at 1118 MB instead of 1280 MB (1541 MB with every copy per convolution); the extra
/// conversion's time was within the noise of the (shared) machine.
#include "firetrain/ops/conv2d.hpp"

#include <cstdint>
#include <map>
#include <vector>

#include "dnnl_common.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/ops/elementwise.hpp"

namespace ft {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {
struct Prims {
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd;
  dnnl::convolution_backward_weights::primitive_desc bwd_w_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_w;
};

/// One input part: channels [c0, c0 + C) of the convolution's input and weights.
struct Part {
  int C = 0, c0 = 0;
  memory::desc w_user;  // (O, C, k, k) view of the OIHW weights at w + c0*k*k (strided if 2 parts)
  std::map<int, Prims> by_batch;
  // The weights in the forward primitive's layout, kept for backward-data (fp32 or bf16).
  std::vector<float> w_fwd_buf;
  std::vector<uint16_t> wb_fwd;
  const float* w_fwd_src = nullptr;  // the weights these were made from (this step)
};

/// Transient buffers shared by every convolution of this thread (used within one call only).
struct Scratch {
  std::vector<float> w, dw;        // fp32 weights for backward-data, weight grads (kernel layout)
  std::vector<uint16_t> x, dy, wb;  // bf16 input, output gradient, backward weights
  std::vector<uint16_t> dy2;        // bf16 output gradient in backward-data's layout (odd O)
};
thread_local Scratch t_scratch;

template <class T>
T* grown(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}
}  // namespace

struct CpuConv final : Conv2d::Impl {
  explicit CpuConv(const ConvShape& s);
  void forward(int N, const float* x, const float* w, const float* b, float* y) override;
  void backward(int N, const float* x, const float* w, const float* y, float* dy, float* dx,
                float* dw, float* db) override;
  ConvShape s_;
  std::vector<Part> parts;
};

CpuConv::CpuConv(const ConvShape& s) : s_(s) {
  const int Ct = s.Ct(), kk = s.k * s.k;
  for (int i = 0; i < (s.C2 > 0 ? 2 : 1); ++i) {
    Part p;
    p.C = i == 0 ? s.C : s.C2;
    p.c0 = i == 0 ? 0 : s.C;
    if (s.C2 == 0)
      p.w_user = memory::desc({s.O, s.C, s.k, s.k}, dt::f32, tag::oihw);
    else
      p.w_user = memory::desc({s.O, p.C, s.k, s.k}, dt::f32,
                              memory::dims{int64_t(Ct) * kk, kk, s.k, 1});
    parts.push_back(std::move(p));
  }
}

namespace cpu {
std::unique_ptr<Conv2d::Impl> make_conv2d(const ConvShape& s) {
  return std::make_unique<CpuConv>(s);
}
}  // namespace cpu

static Prims& prims_for(Part& part, size_t index, size_t nparts, const ConvShape& s, int N) {
  auto it = part.by_batch.find(N);
  if (it != part.by_batch.end()) return it->second;
  auto& eng = cpu::engine();
  memory::dims strides = {s.stride, s.stride}, pad = {s.pad, s.pad};
  const dt in = s.bf16 ? dt::bf16 : dt::f32;  // x, dy and weights as the kernels read them
  const int C = part.C;
  const bool has_bias = index == 0;
  memory::desc src({N, C, s.H, s.W}, in, tag::nhwc);
  memory::desc dst({N, s.O, s.OH(), s.OW()}, dt::f32, tag::nhwc);
  memory::desc wany({s.O, C, s.k, s.k}, in, tag::any);
  memory::desc diff_src({N, C, s.H, s.W}, dt::f32, tag::nhwc);
  memory::desc diff_dst({N, s.O, s.OH(), s.OW()}, in, tag::nhwc);
  memory::desc diff_w({s.O, C, s.k, s.k}, dt::f32, tag::any);
  memory::desc bias({s.O}, dt::f32, tag::x);
  // Part 0: bias (+ ReLU when alone). Part 1: y += conv (sum post-op), then the ReLU.
  dnnl::primitive_attr attr;
  dnnl::post_ops po;
  if (index > 0) po.append_sum(1.f);
  if (s.relu && index + 1 == nparts) po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  if (po.len() > 0) attr.set_post_ops(po);
  const auto fwd_kind = dnnl::prop_kind::forward_training;
  const auto alg = dnnl::algorithm::convolution_direct;
  auto fd = has_bias ? dnnl::convolution_forward::desc(fwd_kind, alg, src, wany, bias, dst,
                                                       strides, pad, pad)
                     : dnnl::convolution_forward::desc(fwd_kind, alg, src, wany, dst, strides,
                                                       pad, pad);
  auto fpd = dnnl::convolution_forward::primitive_desc(fd, attr, eng);
  // bf16 with an odd O: oneDNN 2.6's jit_bf16_1x1 backward-data computes a wrong dx from an
  // NHWC diff_dst (measured: every odd O tried, 5 to 33; even O and 3x3 are right), so that
  // case lets oneDNN choose the diff_dst layout (backward converts dy into it separately; it
  // runs oneDNN's reference kernel, slow but right: only conv10 with an odd class count).
  const bool odd_bf16 = s.bf16 && s.k == 1 && s.O % 2 == 1;
  memory::desc diff_dst_data = odd_bf16 ? memory::desc({N, s.O, s.OH(), s.OW()}, in, tag::any)
                                        : diff_dst;
  auto bd = dnnl::convolution_backward_data::desc(alg, diff_src, wany, diff_dst_data, strides,
                                                  pad, pad);
  auto bpd = dnnl::convolution_backward_data::primitive_desc(bd, eng, fpd);
  auto wd = has_bias ? dnnl::convolution_backward_weights::desc(alg, src, diff_w, bias, diff_dst,
                                                                strides, pad, pad)
                     : dnnl::convolution_backward_weights::desc(alg, src, diff_w, diff_dst,
                                                                strides, pad, pad);
  auto wpd = dnnl::convolution_backward_weights::primitive_desc(wd, eng, fpd);
  FT_REQUIRE(fpd.src_desc() == src && fpd.dst_desc() == dst && bpd.diff_src_desc() == diff_src &&
                 wpd.diff_dst_desc() == diff_dst && (odd_bf16 || bpd.diff_dst_desc() == diff_dst),
             "oneDNN changed the NHWC layout");
  Prims p{fpd, bpd, wpd, dnnl::convolution_forward(fpd), dnnl::convolution_backward_data(bpd),
          dnnl::convolution_backward_weights(wpd)};
  return part.by_batch.emplace(N, std::move(p)).first->second;
}

// Reorders (strided) OIHW weights into the layout `want` (no copy when it already is that).
static const float* weights_as(const memory::desc& user, const memory::desc& want, const float* w,
                               std::vector<float>& buf) {
  if (want == user) return w;
  float* out = grown(buf, want.get_size() / sizeof(float));
  memory from(user, cpu::engine(), const_cast<float*>(w));
  memory to(want, cpu::engine(), out);
  cpu::reorder(from, to);
  return out;
}

// f32 data (described by `from_desc`) -> bf16 in `want` (a reorder converts and re-lays-out).
static const void* to_bf16(const memory::desc& from_desc, const memory::desc& want, const float* p,
                           std::vector<uint16_t>& buf) {
  uint16_t* out = grown(buf, want.get_size() / sizeof(uint16_t));
  memory from(from_desc, cpu::engine(), const_cast<float*>(p));
  memory to(want, cpu::engine(), out);
  cpu::reorder(from, to);
  return out;
}

void CpuConv::forward(int N, const float* x, const float* w, const float* b, float* y) {
  auto& eng = cpu::engine();
  const int64_t pix = int64_t(N) * s_.H * s_.W;
  const int kk = s_.k * s_.k;
  for (size_t i = 0; i < parts.size(); ++i) {
    Part& part = parts[i];
    Prims& p = prims_for(part, i, parts.size(), s_, N);
    const float* xi = x + pix * part.c0;
    const float* wi = w + int64_t(part.c0) * kk;
    const void* xk = xi;
    const void* wk;
    if (s_.bf16) {
      wk = to_bf16(part.w_user, p.fwd_pd.weights_desc(), wi, part.wb_fwd);
      xk = to_bf16(memory::desc({N, part.C, s_.H, s_.W}, dt::f32, tag::nhwc), p.fwd_pd.src_desc(),
                   xi, t_scratch.x);
    } else {
      wk = weights_as(part.w_user, p.fwd_pd.weights_desc(), wi, part.w_fwd_buf);
    }
    part.w_fwd_src = w;
    memory ms(p.fwd_pd.src_desc(), eng, const_cast<void*>(xk));
    memory mw(p.fwd_pd.weights_desc(), eng, const_cast<void*>(wk));
    memory md(p.fwd_pd.dst_desc(), eng, y);
    if (i == 0) {
      memory mb(p.fwd_pd.bias_desc(), eng, const_cast<float*>(b));
      p.fwd.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw},
                                    {DNNL_ARG_BIAS, mb}, {DNNL_ARG_DST, md}});
    } else {
      p.fwd.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}});
    }
    cpu::stream().wait();
  }
}

void CpuConv::backward(int N, const float* x, const float* w, const float* y, float* dy, float* dx,
                      float* dw, float* db) {
  auto& eng = cpu::engine();
  const int64_t ny = int64_t(N) * s_.OH() * s_.OW() * s_.O;
  const int64_t pix = int64_t(N) * s_.H * s_.W;
  const int kk = s_.k * s_.k;
  if (s_.relu && y) cpu::relu_backward(ny, y, dy, dy);
  Scratch& t = t_scratch;
  // The output gradient as the kernels read it (bf16: converted once for both parts).
  const void* dyk = dy;
  if (s_.bf16) {
    Prims& p0 = prims_for(parts[0], 0, parts.size(), s_, N);
    dyk = to_bf16(memory::desc({N, s_.O, s_.OH(), s_.OW()}, dt::f32, tag::nhwc),
                  p0.bwd_w_pd.diff_dst_desc(), dy, t.dy);
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    Part& part = parts[i];
    Prims& p = prims_for(part, i, parts.size(), s_, N);
    const float* wi = w + int64_t(part.c0) * kk;
    memory mdy(p.bwd_w_pd.diff_dst_desc(), eng, const_cast<void*>(dyk));
    if (dx) {
      memory mdy_data = mdy;
      if (p.bwd_data_pd.diff_dst_desc() != p.bwd_w_pd.diff_dst_desc())  // (bf16, odd O)
        mdy_data = memory(p.bwd_data_pd.diff_dst_desc(), eng,
                          const_cast<void*>(to_bf16(memory::desc({N, s_.O, s_.OH(), s_.OW()},
                                                                 dt::f32, tag::nhwc),
                                                    p.bwd_data_pd.diff_dst_desc(), dy, t.dy2)));
      // Backward-data may want the same layout as forward (usual): reuse forward's weights.
      const bool reuse = p.bwd_data_pd.weights_desc() == p.fwd_pd.weights_desc() &&
                         part.w_fwd_src == w;
      const void* wk;
      if (s_.bf16)
        wk = reuse ? static_cast<const void*>(part.wb_fwd.data())
                   : to_bf16(part.w_user, p.bwd_data_pd.weights_desc(), wi, t.wb);
      else
        wk = reuse && p.fwd_pd.weights_desc() != part.w_user
                 ? part.w_fwd_buf.data()
                 : weights_as(part.w_user, p.bwd_data_pd.weights_desc(), wi, t.w);
      memory mw(p.bwd_data_pd.weights_desc(), eng, const_cast<void*>(wk));
      memory mdx(p.bwd_data_pd.diff_src_desc(), eng, dx + pix * part.c0);
      p.bwd_data.execute(cpu::stream(), {{DNNL_ARG_DIFF_DST, mdy_data}, {DNNL_ARG_WEIGHTS, mw},
                                         {DNNL_ARG_DIFF_SRC, mdx}});
    }
    const float* xi = x + pix * part.c0;
    const void* xk = xi;
    if (s_.bf16)  // converted again rather than kept from forward (see the header comment)
      xk = to_bf16(memory::desc({N, part.C, s_.H, s_.W}, dt::f32, tag::nhwc),
                   p.bwd_w_pd.src_desc(), xi, t.x);
    memory ms(p.bwd_w_pd.src_desc(), eng, const_cast<void*>(xk));
    const auto& dwd = p.bwd_w_pd.diff_weights_desc();
    float* dwi = dw + int64_t(part.c0) * kk;
    const bool direct = dwd == part.w_user;
    memory mdw(dwd, eng, direct ? dwi : grown(t.dw, dwd.get_size() / sizeof(float)));
    if (i == 0) {
      memory mdb(p.bwd_w_pd.diff_bias_desc(), eng, db);
      p.bwd_w.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DIFF_DST, mdy},
                                      {DNNL_ARG_DIFF_WEIGHTS, mdw}, {DNNL_ARG_DIFF_BIAS, mdb}});
    } else {
      p.bwd_w.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DIFF_DST, mdy},
                                      {DNNL_ARG_DIFF_WEIGHTS, mdw}});
    }
    if (!direct) {
      memory out(part.w_user, eng, dwi);
      cpu::reorder(mdw, out);
    }
    cpu::stream().wait();
  }
}

}  // namespace ft
