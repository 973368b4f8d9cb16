/// @brief Fire metaparameter options and `firetrain sweep`: variants, training loop over them,
/// table, CSV and a dependency-free SVG of accuracy against model size.
#include "firetrain/train/sweep.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "firetrain/comm/communicator.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/train/options.hpp"

namespace ft {

void add_fire_options(Options& o, FireMeta& m) {
  o.opt("base-e", &m.base_e, "Fire metaparameter base_e: expand filters of fire2 (paper sec. 3.2)")
      .opt("incr-e", &m.incr_e, "Fire metaparameter incr_e: expand filters added every --freq modules")
      .opt("freq", &m.freq, "Fire metaparameter freq: modules between increments of incr_e")
      .opt("pct3x3", &m.pct3x3, "fraction of expand filters that are 3x3, in (0, 1)")
      .opt("sr", &m.sr, "squeeze ratio SR: s1x1 = SR * (e1x1 + e3x3)")
      .opt("fire", &m.list, "explicit modules 's1x1:e1x1:e3x3,...' (8 entries, fire2..fire9); "
                            "overrides the metaparameters");
}

void add_sweep_options(Options& o, SweepConfig& c) {
  TrainConfig& t = c.train;
  o.opt("arch", &t.arch, "squeezenet1_0 | squeezenet1_1 | squeezenet_small")
      .opt("data", &t.data, "training dataset (HDF5)")
      .opt("val", &t.val, "validation dataset (required: the accuracy of each variant)")
      .opt("epochs", &t.epochs, "training budget of every variant, in epochs (or --steps)")
      .opt("steps", &t.steps, "training budget of every variant, in global steps")
      .opt("sr", &c.sr, "squeeze ratios to sweep, e.g. 0.125,0.25,0.5,0.75,1.0")
      .opt("pct3x3", &c.pct3x3, "fractions of 3x3 expand filters to sweep, e.g. 0.01,0.25,0.5,0.75,0.99")
      .opt("base-e", &c.base_e, "base_e values to sweep")
      .opt("incr-e", &c.incr_e, "incr_e values to sweep")
      .opt("freq", &c.freq, "freq values to sweep")
      .opt("fire", &c.fire, "explicit module lists to sweep, separated by ';' (each 8 x s:e1:e3)")
      .opt("bypass", &c.bypass, "bypass variants to sweep: none,simple,complex")
      .opt("out", &c.out, "CSV file of the table")
      .opt("plot", &c.plot, "SVG plot of top-1 against model size")
      .opt("batch", &t.batch, "global batch size")
      .opt("lr", &t.lr, "peak learning rate")
      .opt("lr-schedule", &t.lr_schedule, "poly | constant | step | cosine")
      .opt("lr-power", &t.lr_power, "poly exponent")
      .opt("warmup-steps", &t.warmup_steps, "linear learning-rate warm-up steps")
      .opt("momentum", &t.momentum, "SGD momentum")
      .opt("weight-decay", &t.weight_decay, "L2 weight decay")
      .opt("dropout", &t.dropout, "dropout before conv10")
      .opt("init", &t.init, "torchvision | xavier | kaiming")
      .opt("seed", &t.seed, "seed (the same for every variant)")
      .opt("threads", &t.threads, "threads per rank (0: cores / ranks on this node)")
      .negflag("shuffle", &t.shuffle, "keep file order")
      .negflag("augment", &t.augment, "no random crop / flip")
      .opt("pad", &t.pad, "random-crop padding in pixels")
      .negflag("flip", &t.flip, "no horizontal flips")
      .opt("eval-batch", &t.eval_batch, "evaluation batch per rank")
      .opt("log-every", &t.log_every, "log a line every N steps")
      .opt("progress", &t.progress, "auto | live | plain")
      .opt("device", &t.device, "cpu | cuda");
}

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> v;
  std::string item;
  std::istringstream is(s);
  while (std::getline(is, item, sep)) {
    const auto a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    if (a != std::string::npos) v.push_back(item.substr(a, b - a + 1));
  }
  return v;
}

double to_double(const std::string& key, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || errno || !std::isfinite(d))
    throw InputError("sweep: --" + key + ": '" + v + "' is not a number");
  return d;
}

int to_int(const std::string& key, const std::string& v) {
  const double d = to_double(key, v);
  if (d != std::floor(d) || std::abs(d) > 1e9)
    throw InputError("sweep: --" + key + ": '" + v + "' is not an integer");
  return int(d);
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string xml_escape(const std::string& s) {
  std::string r;
  for (char ch : s) {
    switch (ch) {
      case '&': r += "&amp;"; break;
      case '<': r += "&lt;"; break;
      case '>': r += "&gt;"; break;
      case '"': r += "&quot;"; break;
      default: r += ch;
    }
  }
  return r;
}

/// Axis ticks: a 1, 2 or 5 · 10^k step giving about `n` intervals over [lo, hi].
double nice_step(double span, int n) {
  const double raw = span / n, p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

}  // namespace

std::vector<SweepVariant> sweep_variants(const SweepConfig& c) {
  auto list = [](const std::string& key, const std::string& s) {
    auto v = split(s, ',');
    if (v.empty()) throw InputError("sweep: --" + key + " is empty");
    return v;
  };
  const auto bypasses = list("bypass", c.bypass);
  for (auto& b : bypasses)
    if (b != "none" && b != "simple" && b != "complex")
      throw InputError("sweep: --bypass: unknown '" + b + "' (none, simple, complex)");
  std::vector<std::vector<std::string>> dims = {list("base-e", c.base_e), list("incr-e", c.incr_e),
                                                list("freq", c.freq), list("sr", c.sr),
                                                list("pct3x3", c.pct3x3)};
  const char* keys[] = {"base-e", "incr-e", "freq", "sr", "pct3x3"};
  const char* labels[] = {"base_e", "incr_e", "freq", "SR", "pct3x3"};
  std::vector<SweepVariant> out;
  auto add = [&](SweepVariant v, std::string name) {
    if (bypasses.size() > 1) name += (name.empty() ? "" : " ") + std::string("bypass=") + v.bypass;
    v.name = name.empty() ? "default" : name;
    fire_configs(v.fire);  // validate now, before any training
    out.push_back(v);
  };
  const auto fires = split(c.fire, ';');
  if (!fires.empty()) {
    const FireMeta d;
    const double defaults[] = {double(d.base_e), double(d.incr_e), double(d.freq), d.sr, d.pct3x3};
    for (size_t k = 0; k < dims.size(); ++k)
      if (dims[k].size() != 1 || to_double(keys[k], dims[k][0]) != defaults[k])
        throw InputError(std::string("sweep: give either --fire lists or the metaparameter lists "
                                     "(--") + keys[k] + " was given with --fire)");
    for (auto& b : bypasses)
      for (size_t i = 0; i < fires.size(); ++i) {
        SweepVariant v;
        v.bypass = b;
        v.fire.list = fires[i];
        add(v, fires.size() > 1 ? "fire#" + std::to_string(i + 1) : "");
      }
    return out;
  }
  std::vector<size_t> idx(dims.size(), 0);
  for (auto& b : bypasses) {
    std::fill(idx.begin(), idx.end(), 0);
    while (true) {
      SweepVariant v;
      v.bypass = b;
      std::string name;
      for (size_t k = 0; k < dims.size(); ++k) {
        const std::string& s = dims[k][idx[k]];
        switch (k) {
          case 0: v.fire.base_e = to_int(keys[k], s); break;
          case 1: v.fire.incr_e = to_int(keys[k], s); break;
          case 2: v.fire.freq = to_int(keys[k], s); break;
          case 3: v.fire.sr = to_double(keys[k], s); break;
          default: v.fire.pct3x3 = to_double(keys[k], s); break;
        }
        if (dims[k].size() > 1) name += (name.empty() ? "" : " ") + std::string(labels[k]) + "=" + s;
      }
      add(v, name);
      size_t k = dims.size();
      while (k-- > 0 && ++idx[k] == dims[k].size()) idx[k] = 0;
      if (k == SIZE_MAX) break;
    }
  }
  return out;
}

std::string sweep_table(const std::vector<SweepRow>& rows) {
  size_t w = 7;
  for (auto& r : rows) w = std::max(w, r.name.size());
  std::ostringstream s;
  char b[512];
  std::snprintf(b, sizeof b, "# %-*s %-8s %10s %12s %9s %7s %7s %8s %8s\n", int(w), "variant",
                "bypass", "params", "MACs", "size", "top-1", "top-5", "loss", "time");
  s << b;
  std::snprintf(b, sizeof b, "# %-*s %-8s %10s %12s %9s %7s %7s %8s %8s\n", int(w), "", "", "",
                "(per image)", "(MB fp32)", "", "", "", "(s)");
  s << b;
  for (auto& r : rows) {
    std::snprintf(b, sizeof b, "  %-*s %-8s %10lld %12lld %9.3f %7.4f %7.4f %8.4f %8.1f\n", int(w),
                  r.name.c_str(), r.bypass.c_str(), (long long)r.params, (long long)r.macs,
                  r.size_mb, r.top1, r.top5, r.loss, r.seconds);
    s << b;
  }
  return s.str();
}

std::string sweep_csv(const std::vector<SweepRow>& rows) {
  std::ostringstream s;
  s << "variant,bypass,fire,params,macs,size_mb,top1,top5,loss,seconds\n";
  for (auto& r : rows)
    s << '"' << r.name << "\"," << r.bypass << ",\"" << r.fire << "\"," << r.params << ','
      << r.macs << ',' << fmt("%.6f", r.size_mb) << ',' << fmt("%.6f", r.top1) << ','
      << fmt("%.6f", r.top5) << ',' << fmt("%.6f", r.loss) << ',' << fmt("%.3f", r.seconds)
      << '\n';
  return s.str();
}

std::string render_sweep_svg(const std::vector<SweepRow>& rows, const std::string& title) {
  if (rows.empty()) throw InputError("render_sweep_svg: no rows to plot");
  std::vector<std::string> series;  // one curve per bypass kind, in first-seen order
  std::vector<std::vector<const SweepRow*>> curves;
  double xmin = rows[0].size_mb, xmax = xmin, ymin = rows[0].top1, ymax = ymin;
  for (const auto& r : rows) {
    auto it = std::find(series.begin(), series.end(), r.bypass);
    if (it == series.end()) {
      series.push_back(r.bypass);
      curves.emplace_back();
      it = series.end() - 1;
    }
    curves[size_t(it - series.begin())].push_back(&r);
    xmin = std::min(xmin, r.size_mb), xmax = std::max(xmax, r.size_mb);
    ymin = std::min(ymin, r.top1), ymax = std::max(ymax, r.top1);
  }
  for (auto& c : curves)
    std::stable_sort(c.begin(), c.end(),
                     [](const SweepRow* a, const SweepRow* b) { return a->size_mb < b->size_mb; });
  // Axes: x from 0 (model size is a ratio scale) to a tick above the largest model; y from a
  // tick below the lowest accuracy to one above the highest, at least 0.1 wide, within [0, 1].
  const double xs = nice_step(std::max(xmax, 1e-6), 5);
  const double xhi = (std::floor(xmax / xs) + 1) * xs;
  double ylo = std::floor(ymin * 10 - 1e-9) / 10, yhi = std::ceil(ymax * 10 + 1e-9) / 10;
  ylo = std::max(0.0, ylo), yhi = std::min(1.0, yhi);
  if (yhi - ylo < 0.1) yhi = std::min(1.0, ylo + 0.1), ylo = yhi - 0.1;
  const double ys = nice_step(yhi - ylo, 5);

  const double left = 70, right = 150, top = 50, bottom = 60, pw = 520, ph = 360;
  const double W = left + pw + right, H = top + ph + bottom;
  auto X = [&](double v) { return left + v / xhi * pw; };
  auto Y = [&](double v) { return top + (1.0 - (v - ylo) / (yhi - ylo)) * ph; };
  static const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"};
  auto f1 = [](double v) { return fmt("%.1f", v); };
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << f1(W) << "\" height=\"" << f1(H)
    << "\" viewBox=\"0 0 " << f1(W) << ' ' << f1(H)
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << f1(left + pw / 2) << "\" y=\"25\" text-anchor=\"middle\" font-size=\"15\">"
    << xml_escape(title) << "</text>\n";
  for (double v = ylo; v <= yhi + 1e-9; v += ys) {
    s << "<line x1=\"" << f1(left) << "\" y1=\"" << f1(Y(v)) << "\" x2=\"" << f1(left + pw)
      << "\" y2=\"" << f1(Y(v)) << "\" stroke=\"#ddd\"/>\n";
    s << "<text x=\"" << f1(left - 6) << "\" y=\"" << f1(Y(v) + 4) << "\" text-anchor=\"end\">"
      << fmt(ys < 0.01 ? "%.3f" : "%.2f", v) << "</text>\n";
  }
  for (double v = 0; v <= xhi + 1e-9; v += xs) {
    s << "<line x1=\"" << f1(X(v)) << "\" y1=\"" << f1(top) << "\" x2=\"" << f1(X(v))
      << "\" y2=\"" << f1(top + ph) << "\" stroke=\"#ddd\"/>\n";
    s << "<text x=\"" << f1(X(v)) << "\" y=\"" << f1(top + ph + 16) << "\" text-anchor=\"middle\">"
      << fmt(xs < 0.1 ? "%.2f" : xs < 1 ? "%.1f" : "%.0f", v) << "</text>\n";
  }
  s << "<rect x=\"" << f1(left) << "\" y=\"" << f1(top) << "\" width=\"" << f1(pw)
    << "\" height=\"" << f1(ph) << "\" fill=\"none\" stroke=\"black\"/>\n";
  s << "<text x=\"" << f1(left + pw / 2) << "\" y=\"" << f1(H - 15)
    << "\" text-anchor=\"middle\">model size (MB, fp32 parameters)</text>\n";
  s << "<text x=\"18\" y=\"" << f1(top + ph / 2) << "\" text-anchor=\"middle\" transform=\"rotate("
    << "-90 18 " << f1(top + ph / 2) << ")\">validation top-1</text>\n";
  for (size_t c = 0; c < curves.size(); ++c) {
    const char* col = colors[c % 5];
    s << "<polyline fill=\"none\" stroke=\"" << col << "\" stroke-width=\"2\" points=\"";
    for (size_t i = 0; i < curves[c].size(); ++i)
      s << (i ? " " : "") << f1(X(curves[c][i]->size_mb)) << ',' << f1(Y(curves[c][i]->top1));
    s << "\"/>\n";
    for (auto* r : curves[c]) {
      s << "<circle cx=\"" << f1(X(r->size_mb)) << "\" cy=\"" << f1(Y(r->top1))
        << "\" r=\"4\" fill=\"" << col << "\"/>\n";
      s << "<text x=\"" << f1(X(r->size_mb) + 6) << "\" y=\"" << f1(Y(r->top1) - 6)
        << "\" font-size=\"10\">" << xml_escape(r->name) << "</text>\n";
    }
    const double ly = top + 10 + 18.0 * double(c), lx = left + pw + 15;
    s << "<line x1=\"" << f1(lx) << "\" y1=\"" << f1(ly) << "\" x2=\"" << f1(lx + 24) << "\" y2=\""
      << f1(ly) << "\" stroke=\"" << col << "\" stroke-width=\"2\"/>\n";
    s << "<text x=\"" << f1(lx + 30) << "\" y=\"" << f1(ly + 4) << "\">bypass "
      << xml_escape(series[c]) << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

std::vector<SweepRow> run_sweep(const SweepConfig& c, Communicator& comm) {
  if (c.train.val.empty()) throw InputError("sweep: --val is required (the accuracy of each variant)");
  if (c.train.data.empty()) throw InputError("sweep: --data is required");
  if (c.train.epochs <= 0 && c.train.steps <= 0)
    throw InputError("sweep: give a budget: --epochs or --steps");
  const auto variants = sweep_variants(c);
  const bool root = comm.rank() == 0;
  Dataset ds = Dataset::open(c.train.data);
  std::vector<SweepRow> rows;
  for (size_t i = 0; i < variants.size(); ++i) {
    const SweepVariant& v = variants[i];
    TrainConfig t = c.train;
    t.fire = v.fire;
    t.bypass = v.bypass;
    t.eval_each_epoch = false;  // one evaluation, at the end
    t.checkpoint_dir.clear();
    t.metrics.clear();
    NetSpec spec;
    spec.arch = t.arch;
    spec.in_channels = ds.channels();
    spec.height = ds.height();
    spec.width = ds.width();
    spec.num_classes = ds.num_classes();
    spec.bypass = v.bypass;
    spec.fire = v.fire;
    SweepRow r;
    r.name = v.name;
    r.bypass = v.bypass;
    r.fire = fire_list_string(fire_configs(v.fire));
    {
      Net net(spec);
      r.params = int64_t(net.num_params());
      for (auto& l : net.layer_table()) r.macs += l.macs;
    }
    r.size_mb = double(r.params) * 4.0 / 1e6;
    if (root)
      std::printf("sweep: variant %zu/%zu: %s (bypass %s, fire %s, %lld parameters)\n", i + 1,
                  variants.size(), v.name.c_str(), v.bypass.c_str(), r.fire.c_str(),
                  (long long)r.params);
    std::fflush(stdout);
    Options o("train", "");
    add_train_options(o, t);
    TrainSummary sum = train(t, o.to_json(), comm);
    if (sum.stopped) {
      if (root) std::printf("sweep: stopped during variant %s; not counted\n", v.name.c_str());
      break;
    }
    r.top1 = sum.val.top1;
    r.top5 = sum.val.top5;
    r.loss = sum.val.loss;
    r.seconds = sum.seconds;
    rows.push_back(r);
  }
  if (root) {
    std::printf("%s", sweep_table(rows).c_str());
    if (!c.out.empty()) {
      std::ofstream f(c.out);
      f << sweep_csv(rows);
      if (!f.good()) throw Error("sweep: cannot write " + c.out);
      std::printf("# table: %s\n", c.out.c_str());
    }
    if (!c.plot.empty() && !rows.empty()) {
      std::ofstream f(c.plot);
      f << render_sweep_svg(rows, "SqueezeNet design space: " + c.train.arch + " on " +
                                      c.train.data.substr(c.train.data.find_last_of('/') + 1));
      if (!f.good()) throw Error("sweep: cannot write " + c.plot);
      std::printf("# plot: %s\n", c.plot.c_str());
    }
    std::fflush(stdout);
  }
  return rows;
}

}  // namespace ft
