/// @brief The paper's design-space tools (arXiv:1602.07360, sections 3-5): the Fire
/// metaparameter options shared by `train`, `info --arch` and `sweep`, and the sweep itself:
/// train a list of SqueezeNet variants for a fixed budget, data-parallel, and tabulate and plot
/// validation accuracy against model size (the shape of the paper's Figure 2).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "firetrain/model/net.hpp"
#include "firetrain/train/trainer.hpp"

namespace ft {

class Options;
class Communicator;

/// Registers --base-e, --incr-e, --freq, --pct3x3, --sr and --fire (explicit "s:e1:e3,..."
/// list of the 8 modules), writing into `m`.
void add_fire_options(Options& o, FireMeta& m);

/// One point of a sweep.
struct SweepVariant {
  std::string name;  // "SR=0.25", "pct3x3=0.75 bypass=complex", "fire#2", "default"
  FireMeta fire;
  std::string bypass = "none";
  /// The plot series it belongs to: the swept metaparameters and the bypass kind when it is
  /// not "none" or several are swept ("SR sweep", "SR sweep, bypass complex", "default").
  std::string series;
};

struct SweepConfig {
  /// Everything but the variant: arch, data, val, budget (epochs or steps), optimizer, seed.
  TrainConfig train;
  /// Comma-separated values; the variants are the Cartesian product of all lists, in the order
  /// bypass, base_e, incr_e, freq, SR, pct3x3 (the last varies fastest).
  std::string base_e = "128", incr_e = "128", freq = "2", pct3x3 = "0.5", sr = "0.125";
  /// Explicit module lists separated by ';' (each one as --fire of `train`); excludes the
  /// metaparameter lists.
  std::string fire;
  std::string bypass = "none";  // none,simple,complex
  std::string out;              // CSV of the table
  std::string markdown;         // the table as Markdown (for the README)
  std::string plot;             // SVG: top-1 against model size
  /// Instead of training: CSV files written by earlier sweeps (comma-separated), drawn into
  /// one --plot (one series per series label, e.g. the SR and the pct3x3 sweeps together).
  std::string plot_from;
  std::string title;  // of the plot ("": "SqueezeNet design space: <arch> on <data file>")
};

/// Registers the options of `firetrain sweep` (a subset of `train`'s plus the lists above).
void add_sweep_options(Options& o, SweepConfig& c);
/// The variants of `c`, in order; ft::InputError on malformed lists.
std::vector<SweepVariant> sweep_variants(const SweepConfig& c);

struct SweepRow {
  std::string name;
  std::string fire;    // the modules actually built, "s1:e1:e3,..." (8 entries)
  std::string bypass;
  int64_t params = 0;
  int64_t macs = 0;    // per image, forward, at the dataset's image size
  double size_mb = 0;  // params · 4 bytes / 1e6 (fp32, uncompressed)
  double top1 = 0, top5 = 0, loss = 0;  // on --val after training
  double seconds = 0;  // training time
  /// "ok", or "failed: <reason>" when training stopped with an error (a non-finite loss or
  /// gradient: the variant diverged); its accuracy columns are then 0 and it is not plotted.
  std::string status = "ok";
  std::string series;  // plot series (SweepVariant::series); "" -> "bypass <bypass>"
  bool ok() const { return status == "ok"; }
};

/// Trains every variant with ft::train on `comm` (the same ranks, one variant after another),
/// evaluates it on c.train.val and, on rank 0, prints the table and writes c.out and c.plot.
/// Stops after the current variant when a stop was requested (request_stop). A variant whose
/// training fails with an ft::Error (not an InputError: bad input fails every variant alike)
/// becomes a row with status "failed: <reason>" and the sweep goes on; when every variant
/// failed, run_sweep throws ft::Error (exit code 1) after writing the table. Returns the rows
/// of the variants trained (on every rank).
std::vector<SweepRow> run_sweep(const SweepConfig& c, Communicator& comm);

/// Fixed-width table with a units row, as printed by run_sweep.
std::string sweep_table(const std::vector<SweepRow>& rows);
/// CSV: variant,bypass,fire,params,macs,size_mb,top1,top5,loss,seconds,status,series.
std::string sweep_csv(const std::vector<SweepRow>& rows);
/// Rows back from a CSV written by sweep_csv (InputError naming the file when malformed).
std::vector<SweepRow> read_sweep_csv(const std::string& path);
/// A Markdown table (variant, bypass, Fire modules, parameters, MACs, size, top-1, top-5,
/// loss, time, status).
std::string sweep_markdown(const std::vector<SweepRow>& rows);
/// Self-contained SVG (render_line_plot): top-1 (y) against model size in MB (x), one curve
/// per series (SweepRow::series, else the bypass kind), every point labelled with its variant
/// name; failed rows are left out (InputError when no row is left).
std::string render_sweep_svg(const std::vector<SweepRow>& rows, const std::string& title);

}  // namespace ft
