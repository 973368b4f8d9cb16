/// @brief CPU convolution on oneDNN: forward (ReLU fused as a post-op), backward data and
/// backward weights+bias. Primitives are built once per batch size (forward: per batch size and
/// output data type); weights are reordered from torch OIHW to the kernel's preferred layout
/// once per step and shared by forward and backward-data.
///
/// Two-part input (ConvShape::C2 > 0, the planar concat of a Fire module's output): one oneDNN
/// convolution per part, each reading its dense NHWC part (oneDNN 2.6 runs a channel-strided
/// NHWC tensor on its reference kernel only) with the weights' input-channel slice (a strided
/// view of the OIHW arena tensor, reordered into the primitive's layout). The first part has
/// the bias and no post-op; the second accumulates into y with a `sum` post-op, then the ReLU.
/// With a bf16 y the sum reads part 1's stored (rounded) bf16 values, so the output is rounded
/// twice (oneDNN 2.6's bf16 kernels take a bf16 dst with sum + eltwise post-ops).
/// Backward masks dy once, runs backward-data per part (into dx and dx + N*H*W*C) and
/// backward-weights per part (reordered into the strided slices of dw; bias gradient once).
///
/// bf16 (ConvShape::bf16): the kernels read bf16 x, weights and dy. A bf16 x (a stored
/// activation, --precision bf16) is passed to oneDNN as it is, in forward and in
/// backward-weights; an fp32 x (the network input) is rounded into scratch, again in backward
/// rather than kept. y is written by oneDNN in the caller's type (bf16: RNE of the fp32 result
/// after bias and ReLU). The masked fp32 dy is rounded to bf16 in place (the caller's dy is
/// consumed); dx and dw are fp32.
///
/// Memory: only what backward needs from forward is kept per convolution (the weights in the
/// forward layout); every other reordered or converted copy (bf16 input when x is fp32,
/// backward weights, weight gradients in the kernel's layout, bf16 dy in backward-data's
/// layout for an odd O) lives in thread-local scratch shared by all convolutions, grown to the
/// largest use. With bf16 activations the largest is conv1's bf16 input (squeezenet1_0, batch
/// 32: 9.6 MB); a separate bf16 dy would have been the largest (conv1's, 73 MB), hence in place.
#include "firetrain/ops/conv2d.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <vector>

#ifdef __AVX512BF16__
#include <immintrin.h>
#endif

#include "dnnl_common.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/ops/elementwise.hpp"

namespace ft {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {
struct FwdPrim {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
};
struct BwdPrims {
  dnnl::convolution_backward_data::primitive_desc data_pd;
  dnnl::convolution_backward_weights::primitive_desc w_pd;
  dnnl::convolution_backward_data data;
  dnnl::convolution_backward_weights weights;
};

/// One input part: channels [c0, c0 + C) of the convolution's input and weights.
struct Part {
  int C = 0, c0 = 0;
  memory::desc w_user;  // (O, C, k, k) view of the OIHW weights at w + c0*k*k (strided if 2 parts)
  std::map<std::pair<int, dt>, FwdPrim> fwd;  // by (batch, dst data type)
  std::map<int, BwdPrims> bwd;                // by batch
  // The weights in the forward primitive's layout, kept for backward-data (fp32 or bf16).
  std::vector<float> w_fwd_buf;
  std::vector<uint16_t> wb_fwd;
  memory::desc w_fwd_desc;           // their layout (that of the last forward)
  const float* w_fwd_src = nullptr;  // the weights these were made from (this step)
};

/// Transient buffers shared by every convolution of this thread (used within one call only).
struct Scratch {
  std::vector<float> w, dw;     // fp32 weights for backward-data, weight grads (kernel layout)
  std::vector<uint16_t> x, wb;  // bf16 of an fp32 input, backward weights
  std::vector<uint16_t> dy2;    // bf16 output gradient in backward-data's layout (odd O)
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
  void forward(int N, ConstAct x, const float* w, const float* b, Act y) override;
  void backward(int N, ConstAct x, const float* w, ConstAct y, float* dy, float* dx, float* dw,
                float* db) override;
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

namespace {
dt in_type(const ConvShape& s) { return s.bf16 ? dt::bf16 : dt::f32; }  // x, dy, w as read
memory::desc src_desc(const ConvShape& s, int N, int C) {
  return memory::desc({N, C, s.H, s.W}, in_type(s), tag::nhwc);
}
memory::desc weights_any(const ConvShape& s, int C) {
  return memory::desc({s.O, C, s.k, s.k}, in_type(s), tag::any);
}
}  // namespace

// Forward of one part for batch N writing a dst of type `ydt`. Part 0: bias (+ ReLU when
// alone). Part 1: y += conv (sum post-op, on y's stored values: bf16 y is read back rounded),
// then the ReLU.
static FwdPrim& fwd_for(Part& part, size_t index, size_t nparts, const ConvShape& s, int N,
                        dt ydt) {
  auto it = part.fwd.find({N, ydt});
  if (it != part.fwd.end()) return it->second;
  auto& eng = cpu::engine();
  memory::dims strides = {s.stride, s.stride}, pad = {s.pad, s.pad};
  const memory::desc src = src_desc(s, N, part.C), wany = weights_any(s, part.C);
  const memory::desc dst({N, s.O, s.OH(), s.OW()}, ydt, tag::nhwc);
  const memory::desc bias({s.O}, dt::f32, tag::x);
  dnnl::primitive_attr attr;
  dnnl::post_ops po;
  if (index > 0) po.append_sum(1.f);
  if (s.relu && index + 1 == nparts) po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  if (po.len() > 0) attr.set_post_ops(po);
  const auto kind = dnnl::prop_kind::forward_training;
  const auto alg = dnnl::algorithm::convolution_direct;
  auto fd = index == 0 ? dnnl::convolution_forward::desc(kind, alg, src, wany, bias, dst, strides,
                                                         pad, pad)
                       : dnnl::convolution_forward::desc(kind, alg, src, wany, dst, strides, pad,
                                                         pad);
  auto fpd = dnnl::convolution_forward::primitive_desc(fd, attr, eng);
  FT_REQUIRE(fpd.src_desc() == src && fpd.dst_desc() == dst, "oneDNN changed the NHWC layout");
  FwdPrim f{fpd, dnnl::convolution_forward(fpd)};
  return part.fwd.emplace(std::make_pair(N, ydt), std::move(f)).first->second;
}

// Backward data and weights of one part for batch N (hinted by the forward whose dst type is
// the shape's own: bf16 for bf16 shapes).
static BwdPrims& bwd_for(Part& part, size_t index, size_t nparts, const ConvShape& s, int N) {
  auto it = part.bwd.find(N);
  if (it != part.bwd.end()) return it->second;
  auto& eng = cpu::engine();
  const auto& hint = fwd_for(part, index, nparts, s, N, in_type(s)).pd;
  memory::dims strides = {s.stride, s.stride}, pad = {s.pad, s.pad};
  const dt in = in_type(s);
  const memory::desc src = src_desc(s, N, part.C), wany = weights_any(s, part.C);
  const memory::desc diff_src({N, part.C, s.H, s.W}, dt::f32, tag::nhwc);
  const memory::desc diff_dst({N, s.O, s.OH(), s.OW()}, in, tag::nhwc);
  const memory::desc diff_w({s.O, part.C, s.k, s.k}, dt::f32, tag::any);
  const memory::desc bias({s.O}, dt::f32, tag::x);
  const auto alg = dnnl::algorithm::convolution_direct;
  // bf16 with an odd O: oneDNN 2.6's jit_bf16_1x1 backward-data computes a wrong dx from an
  // NHWC diff_dst (measured: every odd O tried, 5 to 33; even O and 3x3 are right), so that
  // case lets oneDNN choose the diff_dst layout (backward converts dy into it separately; it
  // runs oneDNN's reference kernel, slow but right: only conv10 with an odd class count).
  const bool odd_bf16 = s.bf16 && s.k == 1 && s.O % 2 == 1;
  const memory::desc diff_dst_data =
      odd_bf16 ? memory::desc({N, s.O, s.OH(), s.OW()}, in, tag::any) : diff_dst;
  auto bd = dnnl::convolution_backward_data::desc(alg, diff_src, wany, diff_dst_data, strides,
                                                  pad, pad);
  auto bpd = dnnl::convolution_backward_data::primitive_desc(bd, eng, hint);
  auto wd = index == 0 ? dnnl::convolution_backward_weights::desc(alg, src, diff_w, bias, diff_dst,
                                                                  strides, pad, pad)
                       : dnnl::convolution_backward_weights::desc(alg, src, diff_w, diff_dst,
                                                                  strides, pad, pad);
  auto wpd = dnnl::convolution_backward_weights::primitive_desc(wd, eng, hint);
  FT_REQUIRE(bpd.diff_src_desc() == diff_src && wpd.src_desc() == src &&
                 wpd.diff_dst_desc() == diff_dst && (odd_bf16 || bpd.diff_dst_desc() == diff_dst),
             "oneDNN changed the NHWC layout");
  BwdPrims b{bpd, wpd, dnnl::convolution_backward_data(bpd),
             dnnl::convolution_backward_weights(wpd)};
  return part.bwd.emplace(N, std::move(b)).first->second;
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
static const void* reorder_to_bf16(const memory::desc& from_desc, const memory::desc& want,
                                   const float* p, std::vector<uint16_t>& buf) {
  uint16_t* out = grown(buf, want.get_size() / sizeof(uint16_t));
  memory from(from_desc, cpu::engine(), const_cast<float*>(p));
  memory to(want, cpu::engine(), out);
  cpu::reorder(from, to);
  return out;
}

// fp32 -> bf16 (RNE) of elements [s, e) of the buffer b, element i's bf16 written to its i-th
// 16-bit slot; callers make the read bytes [4s, 4e) and written bytes [2s, 2e) disjoint.
// AVX512-BF16's vcvtneps2bf16 where the compiler targets it (as oneDNN's reorder did before),
// the portable rounding elsewhere and for the tail.
static void to_bf16_slots(char* b, int64_t s, int64_t e) {
  int64_t i = s;
#ifdef __AVX512BF16__
  for (; i + 16 <= e; i += 16) {
    const __m512 v = _mm512_loadu_ps(reinterpret_cast<const float*>(b + 4 * i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(b + 2 * i), (__m256i)_mm512_cvtneps_pbh(v));
  }
#endif
  for (; i < e; ++i) {
    float f;
    std::memcpy(&f, b + 4 * i, 4);
    const uint16_t h = to_bf16(f).bits;
    std::memcpy(b + 2 * i, &h, 2);
  }
}

// fp32 -> bf16 in place: element i's bf16 goes to the i-th 16-bit slot of the same buffer,
// i.e. into float i/2. Elements are taken in rounds [s, 2s): a round writes floats [s/2, s),
// all read by earlier rounds, and reads floats [s, 2s), so each round is a plain vector loop,
// split over the threads only when large (each parallel region ends in a barrier, which costs
// a time slice when the cores are oversubscribed).
static const void* bf16_in_place(float* p, int64_t n) {
  char* b = reinterpret_cast<char*>(p);
  if (n > 0) to_bf16_slots(b, 0, 1);
  for (int64_t s = 1; s < n; s *= 2) {
    const int64_t e = std::min(n, 2 * s);
    constexpr int64_t kBlock = int64_t(1) << 16;
    if (e - s < 4 * kBlock) {
      to_bf16_slots(b, s, e);
      continue;
    }
    const int64_t blocks = (e - s + kBlock - 1) / kBlock;
#pragma omp parallel for
    for (int64_t k = 0; k < blocks; ++k)
      to_bf16_slots(b, s + k * kBlock, std::min(e, s + (k + 1) * kBlock));
  }
  return p;
}

// The input part as the kernels read it (`want`, bf16 NHWC for bf16 shapes): x itself when it
// already has that type (a stored bf16 activation, or fp32 for fp32 shapes), else rounded to
// bf16 into the thread's scratch (an fp32 input to a bf16 convolution: the network input).
static const void* input_as(const ConvShape& s, int N, int C, const memory::desc& want,
                            ConstAct xi) {
  if (!s.bf16) return xi.f32();
  if (xi.is_bf16()) return xi.bf16();
  return reorder_to_bf16(memory::desc({N, C, s.H, s.W}, dt::f32, tag::nhwc), want, xi.f32(),
                         t_scratch.x);
}

void CpuConv::forward(int N, ConstAct x, const float* w, const float* b, Act y) {
  FT_REQUIRE(s_.bf16 || !y.is_bf16(), "a bf16 output needs a bf16 convolution (ConvShape::bf16)");
  auto& eng = cpu::engine();
  const int64_t pix = int64_t(N) * s_.H * s_.W;
  const int kk = s_.k * s_.k;
  const dt ydt = y.is_bf16() ? dt::bf16 : dt::f32;
  for (size_t i = 0; i < parts.size(); ++i) {
    Part& part = parts[i];
    FwdPrim& p = fwd_for(part, i, parts.size(), s_, N, ydt);
    const float* wi = w + int64_t(part.c0) * kk;
    const void* xk = input_as(s_, N, part.C, p.pd.src_desc(), x + pix * part.c0);
    const void* wk =
        s_.bf16 ? reorder_to_bf16(part.w_user, p.pd.weights_desc(), wi, part.wb_fwd)
                : weights_as(part.w_user, p.pd.weights_desc(), wi, part.w_fwd_buf);
    part.w_fwd_src = w;
    part.w_fwd_desc = p.pd.weights_desc();
    memory ms(p.pd.src_desc(), eng, const_cast<void*>(xk));
    memory mw(p.pd.weights_desc(), eng, const_cast<void*>(wk));
    memory md(p.pd.dst_desc(), eng, y.raw());
    if (i == 0) {
      memory mb(p.pd.bias_desc(), eng, const_cast<float*>(b));
      p.prim.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw},
                                     {DNNL_ARG_BIAS, mb}, {DNNL_ARG_DST, md}});
    } else {
      p.prim.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}});
    }
    cpu::stream().wait();
  }
}

void CpuConv::backward(int N, ConstAct x, const float* w, ConstAct y, float* dy, float* dx,
                       float* dw, float* db) {
  auto& eng = cpu::engine();
  const int64_t ny = int64_t(N) * s_.OH() * s_.OW() * s_.O;
  const int64_t pix = int64_t(N) * s_.H * s_.W;
  const int kk = s_.k * s_.k;
  if (s_.relu && y) cpu::relu_backward(ny, y, dy, dy);
  Scratch& t = t_scratch;
  // The output gradient as the kernels read it (bf16: converted once for both parts, in place:
  // a separate copy would be the largest scratch, 73 MB for squeezenet1_0's conv1 at batch 32).
  const void* dyk = dy;
  if (s_.bf16) dyk = bf16_in_place(dy, ny);
  const memory::desc dy_bf16({N, s_.O, s_.OH(), s_.OW()}, dt::bf16, tag::nhwc);
  for (size_t i = 0; i < parts.size(); ++i) {
    Part& part = parts[i];
    BwdPrims& p = bwd_for(part, i, parts.size(), s_, N);
    const float* wi = w + int64_t(part.c0) * kk;
    memory mdy(p.w_pd.diff_dst_desc(), eng, const_cast<void*>(dyk));
    if (dx) {
      memory mdy_data = mdy;
      if (p.data_pd.diff_dst_desc() != p.w_pd.diff_dst_desc()) {  // (bf16, odd O)
        memory from(dy_bf16, eng, const_cast<void*>(dyk));
        mdy_data = memory(p.data_pd.diff_dst_desc(), eng,
                          grown(t.dy2, p.data_pd.diff_dst_desc().get_size() / sizeof(uint16_t)));
        cpu::reorder(from, mdy_data);
      }
      // Backward-data may want the same layout as forward (usual): reuse forward's weights.
      const bool reuse = p.data_pd.weights_desc() == part.w_fwd_desc && part.w_fwd_src == w;
      const void* wk;
      if (s_.bf16)
        wk = reuse ? static_cast<const void*>(part.wb_fwd.data())
                   : reorder_to_bf16(part.w_user, p.data_pd.weights_desc(), wi, t.wb);
      else
        wk = reuse && part.w_fwd_desc != part.w_user
                 ? part.w_fwd_buf.data()
                 : weights_as(part.w_user, p.data_pd.weights_desc(), wi, t.w);
      memory mw(p.data_pd.weights_desc(), eng, const_cast<void*>(wk));
      memory mdx(p.data_pd.diff_src_desc(), eng, dx + pix * part.c0);
      p.data.execute(cpu::stream(), {{DNNL_ARG_DIFF_DST, mdy_data}, {DNNL_ARG_WEIGHTS, mw},
                                     {DNNL_ARG_DIFF_SRC, mdx}});
    }
    // A bf16 x (a stored activation) is read as it is; only an fp32 input to a bf16
    // convolution (the network input) is rounded again rather than kept from forward.
    const void* xk = input_as(s_, N, part.C, p.w_pd.src_desc(), x + pix * part.c0);
    memory ms(p.w_pd.src_desc(), eng, const_cast<void*>(xk));
    const auto& dwd = p.w_pd.diff_weights_desc();
    float* dwi = dw + int64_t(part.c0) * kk;
    const bool direct = dwd == part.w_user;
    memory mdw(dwd, eng, direct ? dwi : grown(t.dw, dwd.get_size() / sizeof(float)));
    if (i == 0) {
      memory mdb(p.w_pd.diff_bias_desc(), eng, db);
      p.weights.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DIFF_DST, mdy},
                                        {DNNL_ARG_DIFF_WEIGHTS, mdw}, {DNNL_ARG_DIFF_BIAS, mdb}});
    } else {
      p.weights.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DIFF_DST, mdy},
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
