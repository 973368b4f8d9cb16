/// @brief The α–β model of all-reduce time and what it says about data-parallel scaling:
/// fit α (per-step latency) and β (seconds per byte) to measured all-reduce timings, project
/// communication time and weak-scaling efficiency for a model's gradient on typical links from
/// 8 to 1024 workers, and render the projection as an aligned table or a dependency-free SVG.
///
/// Why: SqueezeNet's gradient is ~50x smaller than AlexNet's, so on a given link it stays
/// compute-bound to many more workers. `bench comm` measures the all-reduce here; this model
/// extrapolates those measurements to links and worker counts this machine does not have.
///
/// All-reduce of S bytes over n ranks, t = L(n)·α + B(n)·S·β, with:
///   Ring           L = 2(n−1),         B = 2(n−1)/n   reduce-scatter + all-gather (Patarasuk &
///                  Yuan 2009); nccl-tests' busbw = algbw·2(n−1)/n is exactly 1/β of this model.
///   Tree           L = 2·⌈log2 n⌉,     B = 2          NCCL's pipelined double binary tree: each
///                  rank is inner node in one tree, leaf in the other; the reduce and broadcast
///                  each move ~S per rank, so ~2S; NCCL's tuning model uses algbw = busbw/2
///                  for trees (src/graph/tuning.cc) and 2·log2(nodes) latency steps.
///   ReductionTree  L = 2·⌈log2 n⌉,     B = 2·⌈log2 n⌉ unpipelined binomial reduce + broadcast,
///                  the whole buffer crossing each of the 2·⌈log2 n⌉ levels: FireCaffe's model
///                  (Iandola et al., CVPR 2016), kept to reproduce its numbers.
/// Weak scaling (fixed per-worker batch): efficiency = compute / (compute + exposed comm),
/// exposed = comm·(1 − overlap); speedup over one worker = n·efficiency.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace ft {

enum class Algo { Ring, Tree, ReductionTree };

/// "ring", "tree", "reduction-tree".
const char* algo_name(Algo algo);
/// Latency coefficient L(n) and bandwidth coefficient B(n) of the table above (n >= 1; both 0
/// for n = 1). Throws InputError for n < 1.
double latency_steps(int n, Algo algo);
double bandwidth_factor(int n, Algo algo);

struct AlphaBeta {
  double alpha_s;          // per-step latency, seconds
  double beta_s_per_byte;  // 1 / (bus bandwidth in bytes/s)
  double r2;               // coefficient of determination of the (relative) fit, <= 1
};

/// Least-squares fit of α and β to (bytes, seconds) pairs measured on `ranks` ranks with `algo`.
/// Timings span orders of magnitude and their noise is roughly proportional to their size, so
/// the fit minimizes relative residuals, Σ((t_i − t̂_i)/t_i)² (weights 1/t_i²); r2 is computed
/// with the same weights. Throws InputError for fewer than 2 points, fewer than 2 distinct
/// sizes, ranks < 2, or a size < 0 / time <= 0 / non-finite value. α or β can come out slightly
/// negative for noisy data where that term is negligible; they are returned as fitted.
AlphaBeta fit_alpha_beta(const std::vector<std::pair<double, double>>& bytes_and_seconds, int ranks,
                         Algo algo);

/// Modelled all-reduce time of `bytes` over n ranks (0 for n = 1). Throws InputError for
/// n < 1, bytes < 0, alpha < 0 or beta < 0.
double allreduce_time(double bytes, int n, double alpha, double beta, Algo algo);

/// A link as the all-reduce sees it: busbw (nccl-tests' definition, 1/β) and per-step latency α.
struct Link {
  std::string name;
  double busbw_bytes_per_s;
  double alpha_s;
};

/// Typical links, fastest first: NVLink, InfiniBand NDR, 100/25/10/1 GbE (values and sources in
/// scaling_model.cpp).
const std::vector<Link>& named_links();
/// The named link whose name is `name` (exact match); throws InputError listing the names.
const Link& find_link(const std::string& name);

/// compute / (compute + comm·(1 − overlap)). Throws InputError unless compute_s > 0,
/// comm_s >= 0 and overlap_fraction in [0, 1].
double weak_scaling_efficiency(double compute_s, double comm_s, double overlap_fraction);

struct ScalingRow {
  std::string model, link;
  Algo algo = Algo::Ring;
  int workers = 0;
  double t_comm_s = 0;    // all-reduce of the gradient per step
  double efficiency = 0;  // weak-scaling efficiency
  double speedup = 0;     // workers · efficiency
};

/// The default worker counts of a projection: 8, 16, ..., 1024.
std::vector<int> default_worker_counts();

/// One row per worker count: the gradient (`grad_bytes`) all-reduced over `link` with `algo`
/// after `compute_s` of per-worker compute, `overlap_fraction` of it hidden behind backward.
std::vector<ScalingRow> project_scaling(const std::string& model, double grad_bytes,
                                        double compute_s, const Link& link,
                                        const std::vector<int>& workers, Algo algo,
                                        double overlap_fraction = 0.0);

/// nccl-tests-style aligned table (a '#' header with units, one line per row).
std::string format_scaling_table(const std::vector<ScalingRow>& rows);

struct SvgPlotOptions {
  std::string title = "Weak-scaling efficiency of data-parallel SGD (alpha-beta model)";
  int width = 800, height = 500;  // requested; grows when the legend needs more room
};

/// A standalone SVG line plot: x = workers on a log2 axis (the rows' range, ticks at powers of
/// two), y = efficiency 0..1; one <polyline> per (model, link, algo) curve in first-seen order,
/// a legend, axis labels and the title. Throws InputError for no rows or workers < 1.
std::string render_svg_plot(const std::vector<ScalingRow>& rows, const SvgPlotOptions& o = {});

}  // namespace ft
