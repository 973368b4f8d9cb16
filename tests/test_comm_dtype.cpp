/// @brief The 16-bit conversions behind --grad-comm-dtype (comm/communicator.hpp, cvt::),
/// checked against references computed independently: a double-precision rounding written
/// from the definition (nearbyint at the format's quantum), numpy's float16 and torch's bfloat16
/// (when /usr/bin/python3 has them), and an exhaustive decode of all 65,536 fp16 patterns.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "firetrain/comm/communicator.hpp"
#include "firetrain/core/error.hpp"

namespace ft {
namespace {

uint32_t fbits(float f) { return cvt::bits(f); }
float ffrom(uint32_t u) { return cvt::from_bits(u); }

/// Round x to a format with `mant` stored significand bits, minimum normal exponent `emin`,
/// largest finite value `max`: the nearest multiple of the quantum 2^(max(e, emin) - mant),
/// ties to even (nearbyint in the default rounding mode), in double (exact here).
float ref_round(float x, int mant, int emin, double max) {
  if (std::isnan(x) || std::isinf(x) || x == 0) return x;
  const double d = x;
  const int e = std::max(std::ilogb(d), emin);
  const double q = std::ldexp(1.0, e - mant);
  double v = std::nearbyint(d / q) * q;
  // Overflow: RNE rounds to Inf from half an ulp above max on.
  const double halfulp = std::ldexp(1.0, std::ilogb(max) - mant - 1);
  if (std::fabs(d) >= max + halfulp) v = std::copysign(INFINITY, d);
  return v == 0 ? std::copysign(0.f, x) : float(v);
}
const double kBf16Max = 0x1.fep+127;  // 0x7f7f
const double kFp16Max = 65504.0;
float ref_bf16(float x) { return ref_round(x, 7, -126, kBf16Max); }
float ref_fp16(float x) { return ref_round(x, 10, -14, kFp16Max); }

/// fp16 bits -> value, from the IEEE 754 definition.
double decode_fp16(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? std::ldexp(double(m), -24)
                    : e == 31 ? (m ? NAN : INFINITY) : std::ldexp(1.0 + m / 1024.0, e - 15);
  return s ? -v : v;
}

bool same(float a, float b) {  // NaN == NaN; +0 != -0
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return fbits(a) == fbits(b);
}

/// The inputs: every 16-bit value of the format, the midpoints between neighbours, one fp32
/// ulp either side of each midpoint, specials, and random fp32 bit patterns.
std::vector<float> probe_inputs(bool bf16) {
  std::vector<float> xs;
  std::vector<float> vals;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float v = bf16 ? cvt::bf16_to_fp32(uint16_t(h)) : float(decode_fp16(uint16_t(h)));
    if (std::isfinite(v)) vals.push_back(v);
    xs.push_back(v);
  }
  std::sort(vals.begin(), vals.end());
  for (size_t i = 0; i + 1 < vals.size(); ++i) {
    const float mid = float((double(vals[i]) + double(vals[i + 1])) / 2);  // exact in fp32
    xs.push_back(mid);
    xs.push_back(std::nextafter(mid, INFINITY));
    xs.push_back(std::nextafter(mid, -INFINITY));
  }
  for (float s : {0.f, -0.f, INFINITY, -INFINITY, NAN, 65504.f, 65519.996f, 65520.f, 1e5f,
                  -1e5f, 5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f, 1e-30f, 3.4028235e38f,
                  -3.4028235e38f, 1.4e-45f})
    xs.push_back(s);
  // NaNs whose payload sits only in the low bits: truncation would make them Inf.
  xs.push_back(ffrom(0x7f800001u));
  xs.push_back(ffrom(0xff800001u));
  xs.push_back(ffrom(0x7fc00000u));
  std::mt19937 rng(12345);
  for (int i = 0; i < 1000000; ++i) xs.push_back(ffrom(uint32_t(rng())));
  return xs;
}

TEST(CommDtype, Bf16RoundsToNearestEvenAgainstAReference) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  size_t bad = 0;
  for (float x : probe_inputs(true)) {
    const uint16_t h = cvt::fp32_to_bf16(x);
    const float got = cvt::bf16_to_fp32(h), want = ref_bf16(x);
    if (!same(got, want) && bad++ < 5)
      ADD_FAILURE() << "bf16(" << x << " = 0x" << std::hex << fbits(x) << ") = " << got
                    << ", want " << want;
    if (std::isnan(x)) {
      EXPECT_EQ(h & 0x0040u, 0x0040u) << "quiet NaN expected";
    }
  }
  EXPECT_EQ(bad, 0u);
  // Ties: 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even (1); 1 + 3*2^-8 -> 1 + 2^-6.
  EXPECT_EQ(cvt::bf16_to_fp32(cvt::fp32_to_bf16(1.f + 0x1p-8f)), 1.f);
  EXPECT_EQ(cvt::bf16_to_fp32(cvt::fp32_to_bf16(1.f + 3 * 0x1p-8f)), 1.f + 0x1p-6f);
  EXPECT_TRUE(std::isinf(cvt::bf16_to_fp32(cvt::fp32_to_bf16(3.4028235e38f))));
}

TEST(CommDtype, Fp16RoundsToNearestEvenOverflowsAndKeepsSubnormals) {
  size_t bad = 0;
  for (float x : probe_inputs(false)) {
    const float got = cvt::fp16_to_fp32(cvt::fp32_to_fp16(x)), want = ref_fp16(x);
    if (!same(got, want) && bad++ < 5)
      ADD_FAILURE() << "fp16(" << x << " = 0x" << std::hex << fbits(x) << ") = " << got
                    << ", want " << want;
  }
  EXPECT_EQ(bad, 0u);
  auto rt = [](float x) { return cvt::fp16_to_fp32(cvt::fp32_to_fp16(x)); };
  EXPECT_EQ(rt(65504.f), 65504.f);
  EXPECT_EQ(rt(65519.f), 65504.f);
  EXPECT_TRUE(std::isinf(rt(65520.f)));  // the tie above the largest value rounds to Inf
  EXPECT_TRUE(std::isinf(rt(-1e5f)) && rt(-1e5f) < 0);
  EXPECT_EQ(rt(0x1p-24f), 0x1p-24f);    // smallest subnormal
  EXPECT_EQ(rt(0x1p-25f), 0.f);         // its half: tie to even (0)
  EXPECT_EQ(rt(0x1.8p-24f), 0x1p-23f);  // 1.5 quanta: tie to even (2 quanta)
  EXPECT_EQ(rt(3e-5f), float(decode_fp16(cvt::fp32_to_fp16(3e-5f))));
  EXPECT_TRUE(std::isnan(rt(NAN)));
  EXPECT_TRUE(std::isnan(rt(ffrom(0x7f800001u))));
}

TEST(CommDtype, Fp16DecodeIsExactForAll65536Patterns) {
  size_t bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float got = cvt::fp16_to_fp32(uint16_t(h));
    const float want = float(decode_fp16(uint16_t(h)));
    if (!same(got, want)) ++bad;
    // And back: every non-NaN pattern survives the round trip bit for bit.
    if (!std::isnan(want)) {
      EXPECT_EQ(cvt::fp32_to_fp16(got), h) << std::hex << h;
    }
  }
  EXPECT_EQ(bad, 0u);
  for (uint32_t h = 0; h < 65536; ++h) {
    if (!std::isnan(cvt::bf16_to_fp32(uint16_t(h)))) {
      ASSERT_EQ(cvt::fp32_to_bf16(cvt::bf16_to_fp32(uint16_t(h))), h) << std::hex << h;
    }
  }
}

TEST(CommDtype, ArrayConversionsMatchTheScalarOnesWithScale) {
  // Large enough for the OpenMP branch; the scale is a power of two (fp16 pre-scaling).
  const size_t n = (size_t(1) << 18) + 17;
  std::vector<float> x(n), back(n);
  std::vector<uint16_t> h(n);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 100.f);
  for (auto& v : x) v = nd(rng);
  x[5] = NAN;
  x[6] = 1e9f;
  for (CommDtype d : {CommDtype::BF16, CommDtype::FP16}) {
    to_comm_dtype(d, x.data(), h.data(), n, 0.25f);
    from_comm_dtype(d, h.data(), back.data(), n, 4.f);
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint16_t hs = d == CommDtype::BF16 ? cvt::fp32_to_bf16(x[i] * 0.25f)
                                               : cvt::fp32_to_fp16(x[i] * 0.25f);
      const float bs = (d == CommDtype::BF16 ? cvt::bf16_to_fp32(hs) : cvt::fp16_to_fp32(hs)) * 4;
      bad += h[i] != hs || !same(back[i], bs);
    }
    EXPECT_EQ(bad, 0u) << comm_dtype_name(d);
    EXPECT_TRUE(std::isnan(back[5]));
    EXPECT_EQ(std::isinf(back[6]), d == CommDtype::FP16) << comm_dtype_name(d);
  }
}

TEST(CommDtype, NamesPrescaleAndBadValues) {
  EXPECT_EQ(parse_comm_dtype("bf16"), CommDtype::BF16);
  EXPECT_EQ(parse_comm_dtype("fp16"), CommDtype::FP16);
  EXPECT_EQ(parse_comm_dtype("fp32"), CommDtype::FP32);
  EXPECT_THROW(parse_comm_dtype("int8"), InputError);
  EXPECT_THROW(parse_comm_dtype("BF16"), InputError);
  EXPECT_EQ(comm_dtype_bytes(CommDtype::BF16), 2u);
  EXPECT_EQ(comm_dtype_bytes(CommDtype::FP32), 4u);
  EXPECT_EQ(comm_prescale_log2(CommDtype::FP16, 1), 0);
  EXPECT_EQ(comm_prescale_log2(CommDtype::FP16, 2), 1);
  EXPECT_EQ(comm_prescale_log2(CommDtype::FP16, 3), 2);
  EXPECT_EQ(comm_prescale_log2(CommDtype::FP16, 8), 3);
  EXPECT_EQ(comm_prescale_log2(CommDtype::BF16, 8), 0);
}

/// The same inputs through numpy's float16 and torch's bfloat16 (both round to nearest even),
/// compared bit for bit (NaNs by NaN-ness). Skipped without /usr/bin/python3 + numpy + torch.
TEST(CommDtype, MatchesNumpyFloat16AndTorchBfloat16) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(::testing::TempDir()) / "ft_comm_dtype_py";
  fs::create_directories(dir);
  std::vector<float> xs = probe_inputs(false);
  {
    std::vector<float> more = probe_inputs(true);
    xs.insert(xs.end(), more.begin(), more.begin() + 65536 * 4);
  }
  {
    std::ofstream f(dir / "in.f32", std::ios::binary);
    f.write(reinterpret_cast<const char*>(xs.data()), std::streamsize(xs.size() * 4));
  }
  const std::string d = dir.string();
  const std::string cmd =
      "/usr/bin/python3 -c \"import numpy as np, torch, warnings; warnings.simplefilter('ignore');"
      "a = np.fromfile('" + d + "/in.f32', dtype=np.float32);"
      "a.astype(np.float16).view(np.uint16).tofile('" + d + "/fp16.u16');"
      "torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().tofile('" + d +
      "/bf16.u16')\" 2>&1";
  const int st = std::system(cmd.c_str());
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    GTEST_SKIP() << "/usr/bin/python3 with numpy and torch not usable here";
  auto load = [&](const char* name) {
    std::vector<uint16_t> v(xs.size());
    std::ifstream f(dir / name, std::ios::binary);
    f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * 2));
    EXPECT_TRUE(bool(f)) << name;
    return v;
  };
  const auto np16 = load("fp16.u16"), tbf = load("bf16.u16");
  size_t bad16 = 0, badbf = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const uint16_t a = cvt::fp32_to_fp16(xs[i]), b = cvt::fp32_to_bf16(xs[i]);
    if (std::isnan(xs[i])) {
      bad16 += !std::isnan(cvt::fp16_to_fp32(np16[i])) || !std::isnan(cvt::fp16_to_fp32(a));
      badbf += !std::isnan(cvt::bf16_to_fp32(tbf[i])) || !std::isnan(cvt::bf16_to_fp32(b));
      continue;
    }
    if (a != np16[i] && bad16++ < 3)
      ADD_FAILURE() << "fp16 of 0x" << std::hex << fbits(xs[i]) << ": 0x" << a << ", numpy 0x"
                    << np16[i];
    if (b != tbf[i] && badbf++ < 3)
      ADD_FAILURE() << "bf16 of 0x" << std::hex << fbits(xs[i]) << ": 0x" << b << ", torch 0x"
                    << tbf[i];
  }
  EXPECT_EQ(bad16, 0u);
  EXPECT_EQ(badbf, 0u);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ft
