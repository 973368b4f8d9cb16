/// @brief Shared test helpers: `expect_close` that names the worst element, a central-difference
/// gradient checker in double precision (Caffe's GradientChecker, kinks skipped), deterministic
/// random fills, NHWC/NCHW index helpers and the path of the test data directory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ft::test {

/// FT_TEST_DATA_DIR "/" name.
std::string test_data(const char* name);

// ---------------------------------------------------------------------------------------------
// Closeness.
//
// For element i, with e_i = |a_i - b_i| and the reference array b:
//   scale_i = max(|a_i|, |b_i|, s),   s = 1e-3 * max_j |b_j|    (floor: the array's own scale)
//   rel_i   = e_i / scale_i                                       (0 when e_i == 0)
// The arrays are close when every e_i <= atol + rtol * scale_i. The floor s keeps elements
// that are near zero through cancellation from dominating the relative error: an error is
// judged against the element or, for tiny elements, against a thousandth of the array's scale.
// Pass atol = rtol' * max|b| (see `abs_max`) to compare "relative to the output scale".

struct CloseReport {
  bool ok = true;
  size_t n = 0;
  size_t worst = 0;     // index of the element with the largest e_i / (atol + rtol * scale_i)
  double a = 0, b = 0;  // values there
  double max_rel = 0;   // max_i rel_i
  double max_abs = 0;   // max_i e_i
  double floor = 0;     // s
  std::string str(const std::string& what) const;
};

CloseReport compare(const float* a, const float* b, size_t n, double rtol, double atol);
CloseReport compare(const float* a, const double* b, size_t n, double rtol, double atol);
CloseReport compare(const double* a, const double* b, size_t n, double rtol, double atol);

/// Adds a non-fatal gtest failure naming `what`, the worst index, both values there and the max
/// relative error. Returns whether the arrays were close.
bool expect_close(const float* a, const float* b, size_t n, double rtol, double atol,
                  const std::string& what);
bool expect_close(const float* a, const double* b, size_t n, double rtol, double atol,
                  const std::string& what);
bool expect_close(const double* a, const double* b, size_t n, double rtol, double atol,
                  const std::string& what);
template <class A, class B>
bool expect_close(const std::vector<A>& a, const std::vector<B>& b, double rtol, double atol,
                  const std::string& what);

/// max_i rel_i as defined above.
double max_rel_error(const float* a, const float* b, size_t n);
double max_rel_error(const float* a, const double* b, size_t n);

/// max_i |x_i|.
double abs_max(const float* x, size_t n);
double abs_max(const double* x, size_t n);

// ---------------------------------------------------------------------------------------------
// Gradient checking (double precision).

struct GradCheckOptions {
  double h = 1e-4;          // central-difference step
  double threshold = 1e-6;  // |numeric - analytic| <= threshold * max(|numeric|, |analytic|, 1)
  /// A point is a kink (ReLU at 0, a max-pool tie) when the two one-sided slopes differ by more
  /// than kink_tol * max(|slopes|, 1); it is then skipped. Negative: no detection (use that for
  /// smooth functions, where the slopes differ by about h·f'').
  double kink_tol = 1e-7;
  size_t max_points = 0;            // 0: every element; otherwise a deterministic random subset
  uint32_t seed = 1;                // for the subset
  size_t max_skipped_percent = 10;  // fail if more than this share of points was skipped
};

struct GradCheckReport {
  size_t checked = 0, skipped = 0, failed = 0;
  double worst_err = 0;  // largest |numeric - analytic| / max(|numeric|, |analytic|, 1)
  size_t worst_index = 0;
  double worst_numeric = 0, worst_analytic = 0;
};

/// Checks `analytic` (d f / d x, n elements) against central differences of the scalar function
/// `f`, which reads x (perturbed in place and restored). `skip(i)` may exclude points known to
/// sit on a kink. Adds gtest failures (naming `what`) for every mismatch (up to a few) and when
/// too many points were skipped.
GradCheckReport check_gradient(const std::function<double()>& f, double* x, size_t n,
                               const double* analytic, const std::string& what,
                               const GradCheckOptions& opt = {},
                               const std::function<bool(size_t)>& skip = {});

// ---------------------------------------------------------------------------------------------
// Deterministic data.

/// Uniform in [lo, hi) from std::mt19937(seed).
std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f);
std::vector<double> random_doubles(size_t n, uint32_t seed, double lo = -1.0, double hi = 1.0);
/// Distinct values: a random permutation of {0, ..., n-1}, times `spacing`, shifted by `lo`.
/// Max pooling on such inputs has no ties, and perturbations < spacing/2 move no argmax.
std::vector<float> random_distinct(size_t n, uint32_t seed, float spacing = 0.01f, float lo = -1.f);

std::vector<double> to_double(const std::vector<float>& v);
std::vector<float> to_float(const std::vector<double>& v);

// ---------------------------------------------------------------------------------------------
// Layout helpers.

/// Offset of (n, h, w, c) in an (N, H, W, C) array.
inline size_t nhwc(int n, int h, int w, int c, int H, int W, int C) {
  return ((size_t(n) * H + h) * W + w) * C + c;
}
/// Offset of (n, c, h, w) in an (N, C, H, W) array.
inline size_t nchw(int n, int c, int h, int w, int C, int H, int W) {
  return ((size_t(n) * C + c) * H + h) * W + w;
}
/// Offset of (o, i, y, x) in an (O, I, K, K) weight array (torch layout).
inline size_t oihw(int o, int i, int y, int x, int I, int K) {
  return ((size_t(o) * I + i) * K + y) * K + x;
}
template <class T>
std::vector<T> nhwc_to_nchw(const std::vector<T>& v, int N, int H, int W, int C) {
  std::vector<T> r(v.size());
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h)
      for (int w = 0; w < W; ++w)
        for (int c = 0; c < C; ++c) r[nchw(n, c, h, w, C, H, W)] = v[nhwc(n, h, w, c, H, W, C)];
  return r;
}
template <class T>
std::vector<T> nchw_to_nhwc(const std::vector<T>& v, int N, int C, int H, int W) {
  std::vector<T> r(v.size());
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h)
      for (int w = 0; w < W; ++w)
        for (int c = 0; c < C; ++c) r[nhwc(n, h, w, c, H, W, C)] = v[nchw(n, c, h, w, C, H, W)];
  return r;
}

/// Adds a gtest failure "what: sizes differ (na vs nb)"; returns false.
bool fail_size_mismatch(size_t na, size_t nb, const std::string& what);

template <class A, class B>
bool expect_close(const std::vector<A>& a, const std::vector<B>& b, double rtol, double atol,
                  const std::string& what) {
  if (a.size() != b.size()) return fail_size_mismatch(a.size(), b.size(), what);
  return expect_close(a.data(), b.data(), a.size(), rtol, atol, what);
}

}  // namespace ft::test
