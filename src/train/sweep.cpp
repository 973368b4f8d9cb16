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
#include "firetrain/train/svg_plot.hpp"

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
      .opt("markdown", &c.markdown, "Markdown file of the table")
      .opt("plot", &c.plot, "SVG plot of top-1 against model size")
      .opt("plot-from", &c.plot_from,
           "no training: draw --plot from these sweep CSVs (comma-separated), one series each "
           "sweep")
      .opt("title", &c.title, "title of the plot")
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
  std::string swept;  // "SR", "SR x pct3x3", "fire lists", "" (nothing but the bypass)
  if (!split(c.fire, ';').empty()) {
    swept = "fire lists";
  } else {
    for (size_t k = 0; k < dims.size(); ++k)
      if (dims[k].size() > 1) swept += (swept.empty() ? "" : " x ") + std::string(labels[k]);
  }
  auto add = [&](SweepVariant v, std::string name) {
    if (bypasses.size() > 1) name += (name.empty() ? "" : " ") + std::string("bypass=") + v.bypass;
    v.name = name.empty() ? "default" : name;
    v.series = swept.empty() ? "" : swept + " sweep";
    if (bypasses.size() > 1 || v.bypass != "none")
      v.series += (v.series.empty() ? "" : ", ") + std::string("bypass ") + v.bypass;
    if (v.series.empty()) v.series = "default";
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
  std::snprintf(b, sizeof b, "# %-*s %-8s %10s %12s %9s %7s %7s %8s %8s  %s\n", int(w), "variant",
                "bypass", "params", "MACs", "size", "top-1", "top-5", "loss", "time", "status");
  s << b;
  std::snprintf(b, sizeof b, "# %-*s %-8s %10s %12s %9s %7s %7s %8s %8s\n", int(w), "", "", "",
                "(per image)", "(MB fp32)", "", "", "", "(s)");
  s << b;
  for (auto& r : rows) {
    std::snprintf(b, sizeof b, "  %-*s %-8s %10lld %12lld %9.3f %7.4f %7.4f %8.4f %8.1f  ", int(w),
                  r.name.c_str(), r.bypass.c_str(), (long long)r.params, (long long)r.macs,
                  r.size_mb, r.top1, r.top5, r.loss, r.seconds);
    s << b << r.status << '\n';
  }
  return s.str();
}

namespace {
std::string csv_quote(const std::string& v) {
  std::string r = "\"";
  for (char ch : v) r += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return r + '"';
}
std::string series_of(const SweepRow& r) {
  return r.series.empty() ? "bypass " + r.bypass : r.series;
}
}  // namespace

std::string sweep_csv(const std::vector<SweepRow>& rows) {
  std::ostringstream s;
  s << "variant,bypass,fire,params,macs,size_mb,top1,top5,loss,seconds,status,series\n";
  for (auto& r : rows)
    s << csv_quote(r.name) << ',' << r.bypass << ',' << csv_quote(r.fire) << ',' << r.params
      << ',' << r.macs << ',' << fmt("%.6f", r.size_mb) << ',' << fmt("%.6f", r.top1) << ','
      << fmt("%.6f", r.top5) << ',' << fmt("%.6f", r.loss) << ',' << fmt("%.3f", r.seconds)
      << ',' << csv_quote(r.status) << ',' << csv_quote(series_of(r)) << '\n';
  return s.str();
}

std::vector<SweepRow> read_sweep_csv(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw InputError(path + ": cannot open the sweep CSV");
  // Fields of one line; quoted fields may hold commas and doubled quotes.
  auto fields = [](const std::string& line) {
    std::vector<std::string> v(1);
    bool q = false;
    for (size_t i = 0; i < line.size(); ++i) {
      const char ch = line[i];
      if (q && ch == '"' && i + 1 < line.size() && line[i + 1] == '"') v.back() += '"', ++i;
      else if (ch == '"') q = !q;
      else if (ch == ',' && !q) v.emplace_back();
      else v.back() += ch;
    }
    return v;
  };
  std::string line;
  if (!std::getline(f, line) || line.rfind("variant,bypass,fire,params,macs,size_mb,top1", 0) != 0)
    throw InputError(path + ": not a sweep CSV (its header should start with "
                            "variant,bypass,fire,params,macs,size_mb,top1)");
  const size_t ncol = fields(line).size();
  std::vector<SweepRow> rows;
  for (int ln = 2; std::getline(f, line); ++ln) {
    if (line.empty()) continue;
    const auto v = fields(line);
    if (v.size() != ncol || ncol < 10)
      throw InputError(path + ": line " + std::to_string(ln) + ": " + std::to_string(v.size()) +
                       " fields, the header has " + std::to_string(ncol));
    SweepRow r;
    r.name = v[0], r.bypass = v[1], r.fire = v[2];
    auto num = [&](const char* col, const std::string& x) {
      if (x == "nan" || x == "-nan") return double(NAN);  // a diverged variant's loss
      char* end = nullptr;
      const double d = std::strtod(x.c_str(), &end);
      if (x.empty() || *end)
        throw InputError(path + ": line " + std::to_string(ln) + ": " + col + " '" + x +
                         "' is not a number");
      return d;
    };
    r.params = int64_t(num("params", v[3]));
    r.macs = int64_t(num("macs", v[4]));
    r.size_mb = num("size_mb", v[5]);
    r.top1 = num("top1", v[6]);
    r.top5 = num("top5", v[7]);
    r.loss = num("loss", v[8]);
    r.seconds = num("seconds", v[9]);
    if (ncol > 10) r.status = v[10];
    if (ncol > 11) r.series = v[11];
    rows.push_back(r);
  }
  return rows;
}

std::string sweep_markdown(const std::vector<SweepRow>& rows) {
  std::ostringstream s;
  s << "| variant | bypass | Fire modules (s1x1:e1x1:e3x3, fire2..fire9) | parameters | MACs / "
       "image | size (MB fp32) | top-1 | top-5 | loss | time (s) | status |\n"
    << "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|\n";
  for (auto& r : rows)
    s << "| " << r.name << " | " << r.bypass << " | `" << r.fire << "` | " << r.params << " | "
      << r.macs << " | " << fmt("%.3f", r.size_mb) << " | " << fmt("%.4f", r.top1) << " | "
      << fmt("%.4f", r.top5) << " | " << fmt("%.4f", r.loss) << " | " << fmt("%.0f", r.seconds)
      << " | " << r.status << " |\n";
  return s.str();
}

std::string render_sweep_svg(const std::vector<SweepRow>& rows, const std::string& title) {
  LinePlot p;
  p.title = title;
  p.xlabel = "model size (MB, fp32 parameters)";
  p.ylabel = "validation top-1";
  p.width = 740, p.height = 470;
  for (const auto& r : rows) {
    if (!r.ok()) continue;
    const std::string name = series_of(r);
    auto it = std::find_if(p.series.begin(), p.series.end(),
                           [&](const PlotSeries& ps) { return ps.name == name; });
    if (it == p.series.end()) {
      p.series.push_back({name, {}, true});
      it = p.series.end() - 1;
    }
    it->points.push_back({r.size_mb, r.top1, r.name});
  }
  if (p.series.empty()) throw InputError("render_sweep_svg: no (successful) rows to plot");
  for (auto& ps : p.series)
    std::stable_sort(ps.points.begin(), ps.points.end(),
                     [](const PlotPoint& a, const PlotPoint& b) { return a.x < b.x; });
  return render_line_plot(p);
}

namespace {
/// Rank 0 writes the table files and the plot of `rows`.
void write_outputs(const SweepConfig& c, const std::vector<SweepRow>& rows,
                   const std::string& title) {
  auto write = [](const std::string& path, const std::string& text, const char* what) {
    std::ofstream f(path);
    f << text;
    if (!f.good()) throw Error("sweep: cannot write " + path);
    std::printf("# %s: %s\n", what, path.c_str());
  };
  if (!c.out.empty()) write(c.out, sweep_csv(rows), "table");
  if (!c.markdown.empty()) write(c.markdown, sweep_markdown(rows), "markdown");
  if (!c.plot.empty() && std::any_of(rows.begin(), rows.end(), [](auto& r) { return r.ok(); }))
    write(c.plot, render_sweep_svg(rows, title), "plot");
  std::fflush(stdout);
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
}  // namespace

std::vector<SweepRow> run_sweep(const SweepConfig& c, Communicator& comm) {
  const bool root = comm.rank() == 0;
  if (!c.plot_from.empty()) {  // redraw only
    if (c.plot.empty() && c.out.empty() && c.markdown.empty())
      throw InputError("sweep: --plot-from needs --plot (or --out / --markdown)");
    std::vector<SweepRow> rows;
    for (auto& path : split(c.plot_from, ',')) {
      auto more = read_sweep_csv(path);
      rows.insert(rows.end(), more.begin(), more.end());
    }
    if (root) {
      std::printf("%s", sweep_table(rows).c_str());
      write_outputs(c, rows,
                    c.title.empty() ? "SqueezeNet design space: accuracy vs model size" : c.title);
    }
    return rows;
  }
  if (c.train.val.empty()) throw InputError("sweep: --val is required (the accuracy of each variant)");
  if (c.train.data.empty()) throw InputError("sweep: --data is required");
  if (c.train.epochs <= 0 && c.train.steps <= 0)
    throw InputError("sweep: give a budget: --epochs or --steps");
  const auto variants = sweep_variants(c);
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
    r.series = v.series;
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
    // Test hook (tests/test_design.cpp): rank 0 alone poisons its weights after the first
    // step of variant FT_TEST_SWEEP_NAN_VARIANT, so its next loss is NaN and the others' not.
    if (const char* e = std::getenv("FT_TEST_SWEEP_NAN_VARIANT");
        e && std::atoll(e) == int64_t(i) && root)
      t.step_hook = [](Net& net, int64_t step) {
        // The last parameter is conv10's bias: its logit turns NaN (a NaN earlier in the net
        // may vanish in a ReLU or max pool).
        if (step == 1 && net.device() == Device::CPU) net.params()[net.num_params() - 1] = NAN;
      };
    Options o("train", "");
    add_train_options(o, t);
    TrainSummary sum;
    try {
      sum = train(t, o.to_json(), comm);
    } catch (const InputError&) {
      throw;  // bad input fails every variant alike
    } catch (const Error& e) {
      // A diverging variant (non-finite loss or gradient: train() throws on every rank alike).
      r.status = "failed: " + first_line(e.what());
      r.top1 = r.top5 = 0;
      r.loss = NAN;
      if (root) std::printf("sweep: variant %s %s; going on\n", v.name.c_str(), r.status.c_str());
      std::fflush(stdout);
      rows.push_back(r);
      if (stop_requested()) break;
      continue;
    }
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
    write_outputs(c, rows,
                  !c.title.empty() ? c.title
                                   : "SqueezeNet design space: " + c.train.arch + " on " +
                                         c.train.data.substr(c.train.data.find_last_of('/') + 1));
  }
  if (!rows.empty() && std::none_of(rows.begin(), rows.end(), [](auto& r) { return r.ok(); }))
    throw Error("sweep: all " + std::to_string(rows.size()) + " variants failed (first: " +
                rows.front().status + ")");
  return rows;
}

}  // namespace ft
