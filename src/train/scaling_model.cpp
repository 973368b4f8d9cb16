/// @brief The α–β all-reduce model: coefficients, fit, named links, weak-scaling projection,
/// table and SVG rendering. Formulas and their sources: include/firetrain/train/scaling_model.hpp.
#include "firetrain/train/scaling_model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include "firetrain/core/error.hpp"
#include "firetrain/train/svg_plot.hpp"

namespace ft {

namespace {

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

double ceil_log2(int n) { return n <= 1 ? 0.0 : std::ceil(std::log2(double(n)) - 1e-12); }

}  // namespace

const char* algo_name(Algo algo) {
  switch (algo) {
    case Algo::Ring:
      return "ring";
    case Algo::Tree:
      return "tree";
    case Algo::ReductionTree:
      return "reduction-tree";
  }
  return "?";
}

double latency_steps(int n, Algo algo) {
  if (n < 1) throw InputError("all-reduce model: ranks must be >= 1, got " + std::to_string(n));
  if (n == 1) return 0;
  return algo == Algo::Ring ? 2.0 * (n - 1) : 2.0 * ceil_log2(n);
}

double bandwidth_factor(int n, Algo algo) {
  if (n < 1) throw InputError("all-reduce model: ranks must be >= 1, got " + std::to_string(n));
  if (n == 1) return 0;
  switch (algo) {
    case Algo::Ring:
      return 2.0 * (n - 1) / n;
    case Algo::Tree:
      return 2.0;
    case Algo::ReductionTree:
      return 2.0 * ceil_log2(n);
  }
  return 0;
}

AlphaBeta fit_alpha_beta(const std::vector<std::pair<double, double>>& bytes_and_seconds, int ranks,
                         Algo algo) {
  if (ranks < 2)
    throw InputError("fit_alpha_beta: needs >= 2 ranks (nothing is communicated on " +
                     std::to_string(ranks) + ")");
  if (bytes_and_seconds.size() < 2)
    throw InputError("fit_alpha_beta: needs >= 2 (bytes, seconds) points, got " +
                     std::to_string(bytes_and_seconds.size()));
  std::set<double> sizes;
  for (const auto& [s, t] : bytes_and_seconds) {
    if (!std::isfinite(s) || !std::isfinite(t) || s < 0 || t <= 0)
      throw InputError("fit_alpha_beta: bad point (" + fmt("%g", s) + " bytes, " + fmt("%g", t) +
                       " s): sizes must be >= 0 and times > 0, both finite");
    sizes.insert(s);
  }
  if (sizes.size() < 2)
    throw InputError(
        "fit_alpha_beta: all points have the same size; α and β cannot be "
        "separated (measure at least two sizes)");

  // Weighted least squares of t = c0 + c1·S with weights 1/t² (relative residuals).
  double sw = 0, swx = 0, swy = 0;
  for (const auto& [s, t] : bytes_and_seconds) {
    const double w = 1.0 / (t * t);
    sw += w, swx += w * s, swy += w * t;
  }
  const double mx = swx / sw, my = swy / sw;
  double sxx = 0, sxy = 0, syy = 0;
  for (const auto& [s, t] : bytes_and_seconds) {
    const double w = 1.0 / (t * t);
    sxx += w * (s - mx) * (s - mx), sxy += w * (s - mx) * (t - my), syy += w * (t - my) * (t - my);
  }
  const double c1 = sxy / sxx, c0 = my - c1 * mx;
  double ss_res = 0;
  for (const auto& [s, t] : bytes_and_seconds) {
    const double r = t - (c0 + c1 * s);
    ss_res += r * r / (t * t);
  }
  AlphaBeta ab;
  ab.alpha_s = c0 / latency_steps(ranks, algo);
  ab.beta_s_per_byte = c1 / bandwidth_factor(ranks, algo);
  ab.r2 = syy > 0 ? 1.0 - ss_res / syy : (ss_res == 0 ? 1.0 : 0.0);
  return ab;
}

double allreduce_time(double bytes, int n, double alpha, double beta, Algo algo) {
  if (!(bytes >= 0) || !(alpha >= 0) || !(beta >= 0))
    throw InputError("allreduce_time: bytes, alpha and beta must be >= 0 (got " + fmt("%g", bytes) +
                     ", " + fmt("%g", alpha) + ", " + fmt("%g", beta) + ")");
  return latency_steps(n, algo) * alpha + bandwidth_factor(n, algo) * bytes * beta;
}

// busbw: what nccl-tests reports for large all-reduces; α: per-step latency of NCCL's Simple
// protocol (the one used for MB-sized gradients) from its tuning model, hwLat in
// src/graph/tuning.cc: ring/Simple 3.4 µs over NVLink, 9.6 µs over the network (IB/RoCE).
// Kernel TCP sockets (plain Ethernet, MPI over TCP) cost more per step: 25–50 µs is typical.
// Ethernet busbw is the line rate × 0.9 (headers, TCP); tbf-limited 1 Gbit/s between two
// namespaces here moved 100 MB in 0.85 s, i.e. 0.94 of line rate (launch/CLUSTER.md).
const std::vector<Link>& named_links() {
  static const std::vector<Link> links = {
      // H100 SXM, NVLink 4 through NVSwitch: 8-GPU nccl-tests all_reduce reaches ~450–480 GB/s
      // busbw. Beyond one node this is an upper bound (NVL72-style all-NVLink domains).
      {"NVLink", 475e9, 3.4e-6},
      // InfiniBand NDR, 400 Gbit/s = 50 GB/s per GPU (one NIC per GPU), ~96% reached.
      {"InfiniBand NDR", 48e9, 9.6e-6},
      // RoCE / Ethernet: line rate × 0.9.
      {"100GbE", 12.5e9 * 0.9, 9.6e-6},
      {"25GbE", 3.125e9 * 0.9, 25e-6},
      {"10GbE", 1.25e9 * 0.9, 30e-6},
      {"1GbE", 0.125e9 * 0.9, 50e-6},
  };
  return links;
}

const Link& find_link(const std::string& name) {
  std::string names;
  for (const Link& l : named_links()) {
    if (l.name == name) return l;
    names += (names.empty() ? "" : ", ") + l.name;
  }
  throw InputError("unknown link '" + name + "' (known: " + names + ")");
}

double weak_scaling_efficiency(double compute_s, double comm_s, double overlap_fraction) {
  if (!(compute_s > 0) || !(comm_s >= 0) || !(overlap_fraction >= 0 && overlap_fraction <= 1))
    throw InputError(
        "weak_scaling_efficiency: needs compute > 0, comm >= 0, overlap in [0, 1] "
        "(got " +
        fmt("%g", compute_s) + ", " + fmt("%g", comm_s) + ", " + fmt("%g", overlap_fraction) + ")");
  return compute_s / (compute_s + comm_s * (1.0 - overlap_fraction));
}

std::vector<int> default_worker_counts() {
  std::vector<int> w;
  for (int n = 8; n <= 1024; n *= 2) w.push_back(n);
  return w;
}

std::vector<ScalingRow> project_scaling(const std::string& model, double grad_bytes,
                                        double compute_s, const Link& link,
                                        const std::vector<int>& workers, Algo algo,
                                        double overlap_fraction) {
  if (!(link.busbw_bytes_per_s > 0))
    throw InputError("project_scaling: link '" + link.name + "' has no bandwidth");
  std::vector<ScalingRow> rows;
  for (int n : workers) {
    ScalingRow r;
    r.model = model, r.link = link.name, r.algo = algo, r.workers = n;
    r.t_comm_s = allreduce_time(grad_bytes, n, link.alpha_s, 1.0 / link.busbw_bytes_per_s, algo);
    r.efficiency = weak_scaling_efficiency(compute_s, r.t_comm_s, overlap_fraction);
    r.speedup = n * r.efficiency;
    rows.push_back(r);
  }
  return rows;
}

std::string format_scaling_table(const std::vector<ScalingRow>& rows) {
  size_t wm = 5, wl = 4, wa = 4;
  for (const auto& r : rows) {
    wm = std::max(wm, r.model.size());
    wl = std::max(wl, r.link.size());
    wa = std::max(wa, std::string(algo_name(r.algo)).size());
  }
  std::ostringstream os;
  char b[512];
  std::snprintf(b, sizeof b, "# %7s  %-*s  %-*s  %-*s  %12s  %10s  %9s\n", "workers", int(wm),
                "model", int(wl), "link", int(wa), "algo", "t_comm_ms", "efficiency", "speedup");
  os << b;
  for (const auto& r : rows) {
    std::snprintf(b, sizeof b, "  %7d  %-*s  %-*s  %-*s  %12.3f  %10.3f  %9.1f\n", r.workers,
                  int(wm), r.model.c_str(), int(wl), r.link.c_str(), int(wa), algo_name(r.algo),
                  r.t_comm_s * 1e3, r.efficiency, r.speedup);
    os << b;
  }
  return os.str();
}

std::string render_svg_plot(const std::vector<ScalingRow>& rows, const SvgPlotOptions& o) {
  if (rows.empty()) throw InputError("render_svg_plot: no rows to plot");
  // The shared line plot (train/svg_plot.hpp): workers on a log2 axis, efficiency 0..1, one
  // curve per (model, link, algo) in first-seen order.
  LinePlot p;
  p.title = o.title;
  p.xlabel = "workers (log2 scale)";
  p.ylabel = "weak-scaling efficiency";
  p.xlog2 = true;
  p.ymin = 0, p.ymax = 1, p.ystep = 0.2;
  p.width = o.width, p.height = o.height;
  for (const auto& r : rows) {
    if (r.workers < 1) throw InputError("render_svg_plot: workers must be >= 1");
    const std::string label = r.model + " / " + r.link + " / " + algo_name(r.algo);
    auto it = std::find_if(p.series.begin(), p.series.end(),
                           [&](const PlotSeries& s) { return s.name == label; });
    if (it == p.series.end()) {
      p.series.push_back({label, {}, false});
      it = p.series.end() - 1;
    }
    it->points.push_back({double(r.workers), r.efficiency, ""});
  }
  for (auto& s : p.series)
    std::stable_sort(s.points.begin(), s.points.end(),
                     [](const PlotPoint& a, const PlotPoint& b) { return a.x < b.x; });
  return render_line_plot(p);
}

}  // namespace ft
