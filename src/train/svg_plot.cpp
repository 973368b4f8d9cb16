/// @brief The shared SVG line plot (see include/firetrain/train/svg_plot.hpp).
#include "firetrain/train/svg_plot.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "firetrain/core/error.hpp"

namespace ft {

namespace {

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

/// A 1, 2 or 5 · 10^k step giving about `n` intervals over `span`.
double nice_step(double span, int n) {
  const double raw = span / n, p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw * (1 - 1e-12)) return m * p;
  return 10 * p;
}

/// Decimals enough to tell ticks `step` apart.
const char* tick_format(double step) {
  return step >= 1 ? "%.0f" : step >= 0.1 ? "%.1f" : step >= 0.01 ? "%.2f" : "%.3f";
}

}  // namespace

std::string xml_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    switch (c) {
      case '&': r += "&amp;"; break;
      case '<': r += "&lt;"; break;
      case '>': r += "&gt;"; break;
      case '"': r += "&quot;"; break;
      default: r += c;
    }
  }
  return r;
}

std::string render_line_plot(const LinePlot& p) {
  bool any = false;
  double xmin = 0, xmax = 0, ymin = 0, ymax = 0;
  for (const auto& s : p.series)
    for (const auto& q : s.points) {
      if (p.xlog2 && !(q.x > 0)) throw InputError("render_line_plot: log2 axis needs x > 0");
      if (!any) xmin = xmax = q.x, ymin = ymax = q.y, any = true;
      xmin = std::min(xmin, q.x), xmax = std::max(xmax, q.x);
      ymin = std::min(ymin, q.y), ymax = std::max(ymax, q.y);
    }
  if (!any) throw InputError("render_line_plot: no points to plot");

  // x axis.
  double xlo, xhi, xs;
  if (p.xlog2) {
    xlo = std::floor(std::log2(xmin)), xhi = std::ceil(std::log2(xmax));
    if (xhi <= xlo) xhi = xlo + 1;
    xs = 1;
  } else {
    const double from = p.x_from_zero ? std::min(0.0, xmin) : xmin;
    xs = nice_step(std::max(xmax - from, 1e-9), 5);
    xlo = p.x_from_zero ? std::min(0.0, std::floor(xmin / xs) * xs) : std::floor(xmin / xs) * xs;
    xhi = (std::floor(xmax / xs) + 1) * xs;
  }
  // y axis.
  double ylo = p.ymin, yhi = p.ymax, ys = p.ystep;
  if (ys <= 0) {
    ylo = std::max(p.ylo_limit, std::floor(ymin * 10 - 1e-9) / 10);
    yhi = std::min(p.yhi_limit, std::ceil(ymax * 10 + 1e-9) / 10);
    if (yhi - ylo < 0.1) yhi = std::min(p.yhi_limit, ylo + 0.1), ylo = yhi - 0.1;
    ys = nice_step(yhi - ylo, 5);
    ylo = std::max(p.ylo_limit, std::floor(ylo / ys + 1e-9) * ys);  // ticks at multiples of ys
    yhi = std::min(p.yhi_limit, std::ceil(yhi / ys - 1e-9) * ys);
  }

  // The legend sits right of the plot, sized from the longest name (~7 px a character at 12 px
  // sans-serif); the picture grows when the requested size cannot hold it.
  size_t longest = 0;
  for (const auto& s : p.series) longest = std::max(longest, s.name.size());
  const double left = 70, right = 55 + 7.0 * double(longest), top = 50, bottom = 60;
  const double pw = std::max(300.0, p.width - left - right);
  const double ph =
      std::max({200.0, p.height - top - bottom, 20.0 + 18.0 * double(p.series.size())});
  const double W = left + pw + right, H = top + ph + bottom;
  auto X = [&](double x) {
    return left + ((p.xlog2 ? std::log2(x) : x) - xlo) / (xhi - xlo) * pw;
  };
  auto Y = [&](double y) { return top + (1.0 - (std::clamp(y, ylo, yhi) - ylo) / (yhi - ylo)) * ph; };
  static const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  static const char* dashes[] = {"", "6,3", "2,2", "8,3,2,3"};
  auto f1 = [](double v) { return fmt("%.1f", v); };

  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << f1(W) << "\" height=\"" << f1(H)
    << "\" viewBox=\"0 0 " << f1(W) << ' ' << f1(H)
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << f1(left + pw / 2) << "\" y=\"25\" text-anchor=\"middle\" font-size=\"15\">"
    << xml_escape(p.title) << "</text>\n";
  // Grid, ticks and tick labels.
  const int ny = int(std::llround((yhi - ylo) / ys));
  for (int i = 0; i <= ny; ++i) {
    const double v = ylo + i * ys, y = Y(v);
    s << "<line x1=\"" << f1(left) << "\" y1=\"" << f1(y) << "\" x2=\"" << f1(left + pw)
      << "\" y2=\"" << f1(y) << "\" stroke=\"#ddd\"/>\n";
    s << "<text x=\"" << f1(left - 6) << "\" y=\"" << f1(y + 4) << "\" text-anchor=\"end\">"
      << fmt(tick_format(ys), v) << "</text>\n";
  }
  const int nx = int(std::llround((xhi - xlo) / xs));
  for (int i = 0; i <= nx; ++i) {
    const double v = xlo + i * xs;
    const double x = p.xlog2 ? X(std::ldexp(1.0, int(v))) : X(v);
    s << "<line x1=\"" << f1(x) << "\" y1=\"" << f1(top) << "\" x2=\"" << f1(x) << "\" y2=\""
      << f1(top + ph) << "\" stroke=\"#ddd\"/>\n";
    s << "<text x=\"" << f1(x) << "\" y=\"" << f1(top + ph + 16) << "\" text-anchor=\"middle\">";
    if (p.xlog2)
      s << (1LL << int(v));
    else
      s << fmt(tick_format(xs), v);
    s << "</text>\n";
  }
  s << "<rect x=\"" << f1(left) << "\" y=\"" << f1(top) << "\" width=\"" << f1(pw)
    << "\" height=\"" << f1(ph) << "\" fill=\"none\" stroke=\"black\"/>\n";
  s << "<text x=\"" << f1(left + pw / 2) << "\" y=\"" << f1(H - 15)
    << "\" text-anchor=\"middle\">" << xml_escape(p.xlabel) << "</text>\n";
  s << "<text x=\"18\" y=\"" << f1(top + ph / 2) << "\" text-anchor=\"middle\" transform=\"rotate("
    << "-90 18 " << f1(top + ph / 2) << ")\">" << xml_escape(p.ylabel) << "</text>\n";
  // Series, then the legend.
  for (size_t c = 0; c < p.series.size(); ++c) {
    const PlotSeries& ser = p.series[c];
    const char* col = colors[c % 10];
    const char* dash = dashes[(c / 10) % 4];
    s << "<polyline fill=\"none\" stroke=\"" << col << "\" stroke-width=\"2\"";
    if (*dash) s << " stroke-dasharray=\"" << dash << "\"";
    s << " points=\"";
    for (size_t i = 0; i < ser.points.size(); ++i)
      s << (i ? " " : "") << f1(X(ser.points[i].x)) << ',' << f1(Y(ser.points[i].y));
    s << "\"/>\n";
    for (const auto& q : ser.points) {
      if (ser.markers)
        s << "<circle cx=\"" << f1(X(q.x)) << "\" cy=\"" << f1(Y(q.y)) << "\" r=\"4\" fill=\""
          << col << "\"/>\n";
      if (!q.label.empty())
        s << "<text x=\"" << f1(X(q.x) + 6) << "\" y=\"" << f1(Y(q.y) - 6)
          << "\" font-size=\"10\">" << xml_escape(q.label) << "</text>\n";
    }
  }
  const double lx = left + pw + 15;
  for (size_t c = 0; c < p.series.size(); ++c) {
    const double ly = top + 10 + 18.0 * double(c);
    const char* dash = dashes[(c / 10) % 4];
    s << "<line x1=\"" << f1(lx) << "\" y1=\"" << f1(ly) << "\" x2=\"" << f1(lx + 24) << "\" y2=\""
      << f1(ly) << "\" stroke=\"" << colors[c % 10] << "\" stroke-width=\"2\"";
    if (*dash) s << " stroke-dasharray=\"" << dash << "\"";
    s << "/>\n<text x=\"" << f1(lx + 30) << "\" y=\"" << f1(ly + 4) << "\">"
      << xml_escape(p.series[c].name) << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace ft
