/// @brief The α–β all-reduce model: coefficients, fit, named links, weak-scaling projection,
/// table and SVG rendering. Formulas and their sources: include/firetrain/train/scaling_model.hpp.
#include "firetrain/train/scaling_model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include "firetrain/core/error.hpp"

namespace ft {

namespace {

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

double ceil_log2(int n) { return n <= 1 ? 0.0 : std::ceil(std::log2(double(n)) - 1e-12); }

std::string xml_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    switch (c) {
      case '&':
        r += "&amp;";
        break;
      case '<':
        r += "&lt;";
        break;
      case '>':
        r += "&gt;";
        break;
      case '"':
        r += "&quot;";
        break;
      default:
        r += c;
    }
  }
  return r;
}

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
  // Curves in first-seen order of (model, link, algo).
  std::vector<std::string> labels;
  std::vector<std::vector<const ScalingRow*>> curves;
  int wmin = rows[0].workers, wmax = rows[0].workers;
  for (const auto& r : rows) {
    if (r.workers < 1) throw InputError("render_svg_plot: workers must be >= 1");
    wmin = std::min(wmin, r.workers), wmax = std::max(wmax, r.workers);
    const std::string label = r.model + " / " + r.link + " / " + algo_name(r.algo);
    auto it = std::find(labels.begin(), labels.end(), label);
    if (it == labels.end()) {
      labels.push_back(label);
      curves.emplace_back();
      it = labels.end() - 1;
    }
    curves[size_t(it - labels.begin())].push_back(&r);
  }
  for (auto& c : curves)
    std::stable_sort(c.begin(), c.end(), [](const ScalingRow* a, const ScalingRow* b) {
      return a->workers < b->workers;
    });

  // The legend sits right of the plot; it is sized from the longest label (~7 px a character
  // at 12 px sans-serif), and the picture grows when the requested size cannot hold it.
  size_t longest = 0;
  for (const auto& l : labels) longest = std::max(longest, l.size());
  const double left = 70, right = 55 + 7.0 * double(longest), top = 50, bottom = 60;
  const double pw = std::max(300.0, o.width - left - right);
  const double ph = std::max({200.0, o.height - top - bottom, 20.0 + 18.0 * double(labels.size())});
  const double W = left + pw + right, H = top + ph + bottom;
  double xlo = std::floor(std::log2(double(wmin))), xhi = std::ceil(std::log2(double(wmax)));
  if (xhi <= xlo) xhi = xlo + 1;
  auto X = [&](double w) { return left + (std::log2(w) - xlo) / (xhi - xlo) * pw; };
  auto Y = [&](double e) { return top + (1.0 - std::clamp(e, 0.0, 1.0)) * ph; };
  static const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  static const char* dashes[] = {"", "6,3", "2,2", "8,3,2,3"};

  std::ostringstream s;
  auto f1 = [](double v) { return fmt("%.1f", v); };
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << f1(W) << "\" height=\"" << f1(H)
    << "\" viewBox=\"0 0 " << f1(W) << ' ' << f1(H)
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << f1(left + pw / 2) << "\" y=\"25\" text-anchor=\"middle\" font-size=\"15\">"
    << xml_escape(o.title) << "</text>\n";
  // Grid, ticks and tick labels.
  for (int i = 0; i <= 10; i += 2) {
    const double e = i / 10.0, y = Y(e);
    s << "<line x1=\"" << f1(left) << "\" y1=\"" << f1(y) << "\" x2=\"" << f1(left + pw)
      << "\" y2=\"" << f1(y) << "\" stroke=\"#ddd\"/>\n";
    s << "<text x=\"" << f1(left - 6) << "\" y=\"" << f1(y + 4) << "\" text-anchor=\"end\">"
      << fmt("%.1f", e) << "</text>\n";
  }
  for (int k = int(xlo); k <= int(xhi); ++k) {
    const double x = X(std::ldexp(1.0, k));
    s << "<line x1=\"" << f1(x) << "\" y1=\"" << f1(top) << "\" x2=\"" << f1(x) << "\" y2=\""
      << f1(top + ph) << "\" stroke=\"#ddd\"/>\n";
    s << "<text x=\"" << f1(x) << "\" y=\"" << f1(top + ph + 16) << "\" text-anchor=\"middle\">"
      << (1LL << k) << "</text>\n";
  }
  s << "<rect x=\"" << f1(left) << "\" y=\"" << f1(top) << "\" width=\"" << f1(pw) << "\" height=\""
    << f1(ph) << "\" fill=\"none\" stroke=\"black\"/>\n";
  s << "<text x=\"" << f1(left + pw / 2) << "\" y=\"" << f1(H - 15)
    << "\" text-anchor=\"middle\">workers (log2 scale)</text>\n";
  s << "<text x=\"18\" y=\"" << f1(top + ph / 2) << "\" text-anchor=\"middle\" transform=\"rotate("
    << "-90 18 " << f1(top + ph / 2) << ")\">weak-scaling efficiency</text>\n";
  // Curves, then the legend.
  for (size_t c = 0; c < curves.size(); ++c) {
    const char* dash = dashes[(c / 10) % 4];
    s << "<polyline fill=\"none\" stroke=\"" << colors[c % 10] << "\" stroke-width=\"2\"";
    if (*dash) s << " stroke-dasharray=\"" << dash << "\"";
    s << " points=\"";
    for (size_t i = 0; i < curves[c].size(); ++i)
      s << (i ? " " : "") << f1(X(curves[c][i]->workers)) << ',' << f1(Y(curves[c][i]->efficiency));
    s << "\"/>\n";
  }
  const double lx = left + pw + 15;
  for (size_t c = 0; c < labels.size(); ++c) {
    const double ly = top + 10 + 18.0 * double(c);
    const char* dash = dashes[(c / 10) % 4];
    s << "<line x1=\"" << f1(lx) << "\" y1=\"" << f1(ly) << "\" x2=\"" << f1(lx + 24) << "\" y2=\""
      << f1(ly) << "\" stroke=\"" << colors[c % 10] << "\" stroke-width=\"2\"";
    if (*dash) s << " stroke-dasharray=\"" << dash << "\"";
    s << "/>\n<text x=\"" << f1(lx + 30) << "\" y=\"" << f1(ly + 4) << "\">"
      << xml_escape(labels[c]) << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace ft
