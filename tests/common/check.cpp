/// @brief Shared test helpers (see check.hpp).
#include "common/check.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <sstream>

namespace ft::test {

std::string test_data(const char* name) { return std::string(FT_TEST_DATA_DIR) + "/" + name; }

std::string CloseReport::str(const std::string& what) const {
  std::ostringstream o;
  o.precision(9);
  o << what << ": " << (ok ? "close" : "NOT close") << " over " << n << " elements; worst at ["
    << worst << "]: " << a << " vs reference " << b << " (|diff| " << std::abs(a - b)
    << "); max relative error " << max_rel << ", max |diff| " << max_abs
    << " (relative to max(|a|, |b|, " << floor << "))";
  return o.str();
}

namespace {

template <class T>
double abs_max_t(const T* x, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::abs(double(x[i])));
  return m;
}

template <class A, class B>
CloseReport compare_t(const A* a, const B* b, size_t n, double rtol, double atol) {
  CloseReport r;
  r.n = n;
  r.floor = 1e-3 * abs_max_t(b, n);
  double worst_ratio = -1;
  for (size_t i = 0; i < n; ++i) {
    const double x = double(a[i]), y = double(b[i]);
    const double e = std::abs(x - y);
    const double scale = std::max({std::abs(x), std::abs(y), r.floor});
    const double allowed = atol + rtol * scale;
    if (!(e <= allowed)) r.ok = false;  // NaN fails
    const double rel = e == 0 ? 0.0 : (scale > 0 ? e / scale : HUGE_VAL);
    if (rel > r.max_rel || std::isnan(e)) r.max_rel = std::isnan(e) ? NAN : rel;
    r.max_abs = std::max(r.max_abs, e);
    const double ratio =
        std::isnan(e) ? HUGE_VAL : (allowed > 0 ? e / allowed : (e > 0 ? HUGE_VAL : 0));
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      r.worst = i;
      r.a = x;
      r.b = y;
    }
  }
  return r;
}

template <class A, class B>
bool expect_close_t(const A* a, const B* b, size_t n, double rtol, double atol,
                    const std::string& what) {
  CloseReport r = compare_t(a, b, n, rtol, atol);
  if (!r.ok) ADD_FAILURE() << r.str(what) << " [rtol " << rtol << ", atol " << atol << "]";
  return r.ok;
}

}  // namespace

CloseReport compare(const float* a, const float* b, size_t n, double rtol, double atol) {
  return compare_t(a, b, n, rtol, atol);
}
CloseReport compare(const float* a, const double* b, size_t n, double rtol, double atol) {
  return compare_t(a, b, n, rtol, atol);
}
CloseReport compare(const double* a, const double* b, size_t n, double rtol, double atol) {
  return compare_t(a, b, n, rtol, atol);
}

bool expect_close(const float* a, const float* b, size_t n, double rtol, double atol,
                  const std::string& what) {
  return expect_close_t(a, b, n, rtol, atol, what);
}
bool expect_close(const float* a, const double* b, size_t n, double rtol, double atol,
                  const std::string& what) {
  return expect_close_t(a, b, n, rtol, atol, what);
}
bool expect_close(const double* a, const double* b, size_t n, double rtol, double atol,
                  const std::string& what) {
  return expect_close_t(a, b, n, rtol, atol, what);
}

bool fail_size_mismatch(size_t na, size_t nb, const std::string& what) {
  ADD_FAILURE() << what << ": sizes differ (" << na << " vs reference " << nb << ")";
  return false;
}

double max_rel_error(const float* a, const float* b, size_t n) {
  return compare_t(a, b, n, 0, 0).max_rel;
}
double max_rel_error(const float* a, const double* b, size_t n) {
  return compare_t(a, b, n, 0, 0).max_rel;
}

double abs_max(const float* x, size_t n) { return abs_max_t(x, n); }
double abs_max(const double* x, size_t n) { return abs_max_t(x, n); }

GradCheckReport check_gradient(const std::function<double()>& f, double* x, size_t n,
                               const double* analytic, const std::string& what,
                               const GradCheckOptions& opt,
                               const std::function<bool(size_t)>& skip) {
  GradCheckReport rep;
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), size_t(0));
  if (opt.max_points && opt.max_points < n) {
    std::mt19937 g(opt.seed);
    std::shuffle(idx.begin(), idx.end(), g);
    idx.resize(opt.max_points);
    std::sort(idx.begin(), idx.end());
  }
  const double f0 = opt.kink_tol >= 0 ? f() : 0.0;
  int reported = 0;
  std::ostringstream mismatches;
  mismatches.precision(12);
  rep.worst_err = -1;
  for (size_t i : idx) {
    if (skip && skip(i)) {
      ++rep.skipped;
      continue;
    }
    const double x0 = x[i];
    x[i] = x0 + opt.h;
    const double fp = f();
    x[i] = x0 - opt.h;
    const double fm = f();
    x[i] = x0;
    if (opt.kink_tol >= 0) {
      const double sp = (fp - f0) / opt.h, sm = (f0 - fm) / opt.h;
      if (std::abs(sp - sm) > opt.kink_tol * std::max({std::abs(sp), std::abs(sm), 1.0})) {
        ++rep.skipped;
        continue;
      }
    }
    const double num = (fp - fm) / (2 * opt.h), ana = analytic[i];
    const double scale = std::max({std::abs(num), std::abs(ana), 1.0});
    const double err = std::abs(num - ana) / scale;
    ++rep.checked;
    if (err > rep.worst_err) {
      rep.worst_err = err;
      rep.worst_index = i;
      rep.worst_numeric = num;
      rep.worst_analytic = ana;
    }
    if (!(err <= opt.threshold)) {
      ++rep.failed;
      if (reported++ < 5)
        mismatches << "\n  gradient mismatch at [" << i << "]: numeric " << num << " vs analytic "
                   << ana << " (scaled error " << err << " > " << opt.threshold << ")";
    }
  }
  if (rep.worst_err < 0) rep.worst_err = 0;
  const size_t total = rep.checked + rep.skipped;
  if (total > 0 && rep.skipped * 100 > opt.max_skipped_percent * total)
    ADD_FAILURE() << what << ": " << rep.skipped << " of " << total
                  << " points skipped as kinks: the check proves little";
  if (rep.failed > 0)
    ADD_FAILURE() << what << ": " << rep.failed << " of " << rep.checked
                  << " gradient points failed (h " << opt.h << "); worst [" << rep.worst_index
                  << "] numeric " << rep.worst_numeric << " analytic " << rep.worst_analytic
                  << mismatches.str();
  return rep;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<double> random_doubles(size_t n, uint32_t seed, double lo, double hi) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<float> random_distinct(size_t n, uint32_t seed, float spacing, float lo) {
  std::vector<size_t> p(n);
  std::iota(p.begin(), p.end(), size_t(0));
  std::mt19937 g(seed);
  std::shuffle(p.begin(), p.end(), g);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = lo + spacing * float(p[i]);
  return v;
}

std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}
std::vector<float> to_float(const std::vector<double>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = float(v[i]);
  return r;
}

}  // namespace ft::test
