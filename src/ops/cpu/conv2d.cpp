/// @brief CPU convolution on oneDNN: forward (ReLU fused as a post-op), backward data and
/// backward weights+bias. Primitives are built once per batch size; weights are reordered from
/// torch OIHW to the kernel's preferred layout once per step and shared by forward and
/// backward-data.
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
}  // namespace

struct CpuConv final : Conv2d::Impl {
  explicit CpuConv(const ConvShape& s);
  void forward(int N, const float* x, const float* w, const float* b, float* y) override;
  void backward(int N, const float* x, const float* w, const float* y, float* dy, float* dx,
                float* dw, float* db) override;
  ConvShape s_;
  std::map<int, Prims> by_batch;
  memory::desc w_user;        // OIHW
  memory::desc w_fwd;         // preferred by forward
  std::vector<float> w_fwd_buf, w_bwd_buf, dw_buf;
  const float* w_fwd_src = nullptr;  // the weights w_fwd_buf was made from (this step)
  // bf16: the forward's bf16 copy of x (reused by backward-weights when backward sees the
  // same x), the bf16 output gradient, and bf16 weights (uint16 storage).
  std::vector<uint16_t> xb, dyb, wb_fwd, wb_bwd;
  const float* xb_src = nullptr;
};

CpuConv::CpuConv(const ConvShape& s) : s_(s) {
  w_user = memory::desc({s.O, s.C, s.k, s.k}, dt::f32, tag::oihw);
}

namespace cpu {
std::unique_ptr<Conv2d::Impl> make_conv2d(const ConvShape& s) {
  return std::make_unique<CpuConv>(s);
}
}  // namespace cpu

static Prims& prims_for(CpuConv& im, const ConvShape& s, int N) {
  auto it = im.by_batch.find(N);
  if (it != im.by_batch.end()) return it->second;
  auto& eng = cpu::engine();
  memory::dims strides = {s.stride, s.stride}, pad = {s.pad, s.pad};
  const dt in = s.bf16 ? dt::bf16 : dt::f32;  // x, dy and weights as the kernels read them
  memory::desc src({N, s.C, s.H, s.W}, in, tag::nhwc);
  memory::desc dst({N, s.O, s.OH(), s.OW()}, dt::f32, tag::nhwc);
  memory::desc wany({s.O, s.C, s.k, s.k}, in, tag::any);
  memory::desc diff_src({N, s.C, s.H, s.W}, dt::f32, tag::nhwc);
  memory::desc diff_dst({N, s.O, s.OH(), s.OW()}, in, tag::nhwc);
  memory::desc diff_w({s.O, s.C, s.k, s.k}, dt::f32, tag::any);
  memory::desc bias({s.O}, dt::f32, tag::x);
  dnnl::primitive_attr attr;
  if (s.relu) {
    dnnl::post_ops po;
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
  }
  auto fd = dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                            dnnl::algorithm::convolution_direct, src, wany, bias,
                                            dst, strides, pad, pad);
  auto fpd = dnnl::convolution_forward::primitive_desc(fd, attr, eng);
  auto bd = dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, diff_src,
                                                  wany, diff_dst, strides, pad, pad);
  auto bpd = dnnl::convolution_backward_data::primitive_desc(bd, eng, fpd);
  auto wd = dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, src,
                                                     diff_w, bias, diff_dst, strides, pad, pad);
  auto wpd = dnnl::convolution_backward_weights::primitive_desc(wd, eng, fpd);
  FT_REQUIRE(fpd.src_desc() == src && fpd.dst_desc() == dst, "oneDNN changed the NHWC layout");
  Prims p{fpd, bpd, wpd, dnnl::convolution_forward(fpd), dnnl::convolution_backward_data(bpd),
          dnnl::convolution_backward_weights(wpd)};
  return im.by_batch.emplace(N, std::move(p)).first->second;
}

// Reorders OIHW weights into the layout `want` (no copy when it already is OIHW).
static const float* weights_as(const memory::desc& user, const memory::desc& want, const float* w,
                               std::vector<float>& buf) {
  if (want == user) return w;
  buf.resize(want.get_size() / sizeof(float));
  memory from(user, cpu::engine(), const_cast<float*>(w));
  memory to(want, cpu::engine(), buf.data());
  cpu::reorder(from, to);
  return buf.data();
}

// f32 data (described by `from_desc`) -> bf16 in `want` (a reorder converts and re-lays-out).
static const void* to_bf16(const memory::desc& from_desc, const memory::desc& want, const float* p,
                           std::vector<uint16_t>& buf) {
  buf.resize(want.get_size() / sizeof(uint16_t));
  memory from(from_desc, cpu::engine(), const_cast<float*>(p));
  memory to(want, cpu::engine(), buf.data());
  cpu::reorder(from, to);
  return buf.data();
}

static void forward_bf16(CpuConv& im, Prims& p, int N, const float* x, const float* w,
                         const float* b, float* y) {
  auto& eng = cpu::engine();
  const ConvShape& s = im.s_;
  const void* wk = to_bf16(im.w_user, p.fwd_pd.weights_desc(), w, im.wb_fwd);
  im.w_fwd_src = w;
  const void* xk = to_bf16(memory::desc({N, s.C, s.H, s.W}, dt::f32, tag::nhwc),
                           p.fwd_pd.src_desc(), x, im.xb);
  im.xb_src = x;
  memory ms(p.fwd_pd.src_desc(), eng, const_cast<void*>(xk));
  memory mw(p.fwd_pd.weights_desc(), eng, const_cast<void*>(wk));
  memory mb(p.fwd_pd.bias_desc(), eng, const_cast<float*>(b));
  memory md(p.fwd_pd.dst_desc(), eng, y);
  p.fwd.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_BIAS, mb},
                                {DNNL_ARG_DST, md}});
  cpu::stream().wait();
}

static void backward_bf16(CpuConv& im, Prims& p, int N, const float* x, const float* w,
                          float* dy, float* dx, float* dw, float* db) {
  auto& eng = cpu::engine();
  const ConvShape& s = im.s_;
  const void* dyk = to_bf16(memory::desc({N, s.O, s.OH(), s.OW()}, dt::f32, tag::nhwc),
                            p.bwd_w_pd.diff_dst_desc(), dy, im.dyb);
  memory mdy(p.bwd_w_pd.diff_dst_desc(), eng, const_cast<void*>(dyk));
  if (dx) {
    const void* wk;
    if (p.bwd_data_pd.weights_desc() == p.fwd_pd.weights_desc() && im.w_fwd_src == w)
      wk = im.wb_fwd.data();
    else
      wk = to_bf16(im.w_user, p.bwd_data_pd.weights_desc(), w, im.wb_bwd);
    memory mw(p.bwd_data_pd.weights_desc(), eng, const_cast<void*>(wk));
    memory mdx(p.bwd_data_pd.diff_src_desc(), eng, dx);
    p.bwd_data.execute(cpu::stream(),
                       {{DNNL_ARG_DIFF_DST, mdy}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DIFF_SRC, mdx}});
  }
  const void* xk = im.xb_src == x && !im.xb.empty()
                       ? static_cast<const void*>(im.xb.data())
                       : to_bf16(memory::desc({N, s.C, s.H, s.W}, dt::f32, tag::nhwc),
                                 p.bwd_w_pd.src_desc(), x, im.xb);
  memory ms(p.bwd_w_pd.src_desc(), eng, const_cast<void*>(xk));
  memory mdb(p.bwd_w_pd.diff_bias_desc(), eng, db);
  const auto& dwd = p.bwd_w_pd.diff_weights_desc();
  const bool direct = dwd == im.w_user;
  if (!direct) im.dw_buf.resize(dwd.get_size() / sizeof(float));
  memory mdw(dwd, eng, direct ? dw : im.dw_buf.data());
  p.bwd_w.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DIFF_DST, mdy},
                                  {DNNL_ARG_DIFF_WEIGHTS, mdw}, {DNNL_ARG_DIFF_BIAS, mdb}});
  if (!direct) {
    memory out(im.w_user, eng, dw);
    cpu::reorder(mdw, out);
  }
  cpu::stream().wait();
}

void CpuConv::forward(int N, const float* x, const float* w, const float* b, float* y) {
  auto& p = prims_for(*this, s_, N);
  if (s_.bf16) return forward_bf16(*this, p, N, x, w, b, y);
  auto& eng = cpu::engine();
  const float* wk = weights_as(w_user, p.fwd_pd.weights_desc(), w, w_fwd_buf);
  w_fwd_src = w;
  memory ms(p.fwd_pd.src_desc(), eng, const_cast<float*>(x));
  memory mw(p.fwd_pd.weights_desc(), eng, const_cast<float*>(wk));
  memory mb(p.fwd_pd.bias_desc(), eng, const_cast<float*>(b));
  memory md(p.fwd_pd.dst_desc(), eng, y);
  p.fwd.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_BIAS, mb},
                                {DNNL_ARG_DST, md}});
  cpu::stream().wait();
}

void CpuConv::backward(int N, const float* x, const float* w, const float* y, float* dy, float* dx,
                      float* dw, float* db) {
  auto& p = prims_for(*this, s_, N);
  auto& eng = cpu::engine();
  const int64_t ny = int64_t(N) * s_.OH() * s_.OW() * s_.O;
  if (s_.relu && y) cpu::relu_backward(ny, y, dy, dy);
  if (s_.bf16) return backward_bf16(*this, p, N, x, w, dy, dx, dw, db);
  memory mdy(p.bwd_w_pd.diff_dst_desc(), eng, dy);
  if (dx) {
    // Backward-data may want the same blocked weights as forward (usual): reuse them.
    const float* wk;
    if (p.bwd_data_pd.weights_desc() == p.fwd_pd.weights_desc() && w_fwd_src == w &&
        p.fwd_pd.weights_desc() != w_user)
      wk = w_fwd_buf.data();
    else
      wk = weights_as(w_user, p.bwd_data_pd.weights_desc(), w, w_bwd_buf);
    memory mw(p.bwd_data_pd.weights_desc(), eng, const_cast<float*>(wk));
    memory mdx(p.bwd_data_pd.diff_src_desc(), eng, dx);
    memory mdy2(p.bwd_data_pd.diff_dst_desc(), eng, dy);
    p.bwd_data.execute(cpu::stream(),
                       {{DNNL_ARG_DIFF_DST, mdy2}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DIFF_SRC, mdx}});
  }
  memory ms(p.bwd_w_pd.src_desc(), eng, const_cast<float*>(x));
  memory mdb(p.bwd_w_pd.diff_bias_desc(), eng, db);
  const auto& dwd = p.bwd_w_pd.diff_weights_desc();
  if (dwd == w_user) {
    memory mdw(dwd, eng, dw);
    p.bwd_w.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DIFF_DST, mdy},
                                    {DNNL_ARG_DIFF_WEIGHTS, mdw}, {DNNL_ARG_DIFF_BIAS, mdb}});
    cpu::stream().wait();
  } else {
    dw_buf.resize(dwd.get_size() / sizeof(float));
    memory mdw(dwd, eng, dw_buf.data());
    p.bwd_w.execute(cpu::stream(), {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DIFF_DST, mdy},
                                    {DNNL_ARG_DIFF_WEIGHTS, mdw}, {DNNL_ARG_DIFF_BIAS, mdb}});
    memory out(w_user, eng, dw);
    cpu::reorder(mdw, out);
  }
  cpu::stream().wait();
}

}  // namespace ft
