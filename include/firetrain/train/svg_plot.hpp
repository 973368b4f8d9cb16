/// @brief A small dependency-free SVG line plot (series of points, optional point labels, a
/// legend), shared by `bench scaling` (efficiency against workers on a log2 axis) and `sweep`
/// (accuracy against model size).
#pragma once

#include <string>
#include <vector>

namespace ft {

struct PlotPoint {
  double x = 0, y = 0;
  std::string label;  // drawn beside the point when not empty
};

struct PlotSeries {
  std::string name;  // legend entry
  std::vector<PlotPoint> points;  // drawn in this order (sort them first for a line in x)
  bool markers = false;           // a dot at every point
};

struct LinePlot {
  std::string title, xlabel, ylabel;
  std::vector<PlotSeries> series;
  /// x axis: log2 (ticks at powers of two over the data's range, x must be > 0), or linear:
  /// from 0 (x_from_zero) or a tick below the smallest x, to a tick above the largest, with
  /// 1, 2 or 5 · 10^k steps.
  bool xlog2 = false;
  bool x_from_zero = true;
  /// y axis: fixed [ymin, ymax] with tick step ystep when ystep > 0 (values are clamped into
  /// it); else from the data, at tenths, at least 0.1 wide, within [ylo_limit, yhi_limit].
  double ymin = 0, ymax = 1, ystep = 0;
  double ylo_limit = 0, yhi_limit = 1;
  int width = 800, height = 500;  // requested; grows when the legend needs more room
};

/// The SVG document of `p`: title, grid, tick labels, axis labels, one <polyline> per series
/// (colours cycle over 10, dashes after 10 series), the legend right of the plot. Throws
/// InputError when there is no point at all (or a log2 axis gets x <= 0).
std::string render_line_plot(const LinePlot& p);

/// `s` with & < > " escaped for XML text and attributes.
std::string xml_escape(const std::string& s);

}  // namespace ft
