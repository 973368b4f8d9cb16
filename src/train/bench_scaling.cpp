/// @brief `firetrain bench scaling` (see bench_scaling.hpp).
#include "firetrain/train/bench_scaling.hpp"

#include <mpi.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>
#include <thread>

#include "firetrain/core/error.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/ops/ops.hpp"

namespace ft {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Ranks outside the measured sub-communicator wait here without spinning on a core (they
/// share the cores with the measured ranks when oversubscribed).
void idle_barrier(MPI_Comm c) {
  MPI_Request r;
  FT_MPI(MPI_Ibarrier(c, &r));
  for (int done = 0;;) {
    FT_MPI(MPI_Test(&r, &done, MPI_STATUS_IGNORE));
    if (done) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

struct StepTimes {
  double step, compute, exposed;
};

/// Trains `o.steps` synthetic steps of `model` on the ranks of `comm`; per-step times are the
/// maximum over ranks.
std::vector<StepTimes> time_steps(Communicator& comm, const std::string& model,
                                  const ScalingBenchOptions& o, int64_t* params) {
  NetSpec spec;
  spec.arch = model;
  spec.height = spec.width = o.size;
  spec.num_classes = 1000;
  Net net(spec, o.device);
  net.init_weights(1);
  *params = int64_t(net.num_params());
  const Ops& ops = net.ops();
  const size_t per = size_t(o.size) * o.size * 3;
  std::vector<float> hx(per * o.batch);
  std::mt19937 rng(uint32_t(comm.rank() + 1));
  std::normal_distribution<float> nd;
  for (auto& v : hx) v = nd(rng);
  std::vector<int32_t> hl(o.batch);
  std::vector<int64_t> hs(o.batch);
  for (int i = 0; i < o.batch; ++i) hl[i] = int32_t(rng() % 1000), hs[i] = comm.rank() * o.batch + i;
  Buffer x(o.device, hx.size()), dl(o.device, size_t(o.batch) * 1000), mom(o.device, net.num_params());
  Array<int32_t> labels(o.device, hl.size());
  Array<int64_t> samples(o.device, hs.size());
  x.upload(hx.data(), hx.size());
  labels.upload(hl.data(), hl.size());
  samples.upload(hs.data(), hs.size());
  auto red = make_reducer(o.device, comm, net.grads(), net.num_params(), o.bucket_bytes);
  std::vector<StepTimes> out;
  for (int s = 0; s < o.warmup + o.steps; ++s) {
    comm.barrier();
    PassContext c;
    c.N = o.batch;
    c.train = true;
    c.seed = 1;
    c.step = uint64_t(s);
    c.samples = samples.data();
    const double t0 = now_s();
    const float* logits = net.forward(c, x.data());
    ops.softmax_xent(o.batch, 1000, logits, labels.data(), double(o.batch) * comm.size(), dl.data());
    red->begin();
    net.backward(c, dl.data(), [&](size_t lo) { red->ready(lo); });
    synchronize(o.device);
    const double t1 = now_s();
    red->finish();
    synchronize(o.device);
    const double t2 = now_s();
    ops.sgd_update(net.num_params(), 0.01f, 0.9f, 2e-4f, s == 0, net.params(), net.grads(),
                   mom.data());
    synchronize(o.device);
    const double t3 = now_s();
    double v[3] = {t3 - t0, (t1 - t0) + (t3 - t2), t2 - t1};
    FT_MPI(MPI_Allreduce(MPI_IN_PLACE, v, 3, MPI_DOUBLE, MPI_MAX, comm.comm()));
    if (s >= o.warmup) out.push_back({v[0], v[1], v[2]});
  }
  return out;
}

}  // namespace

std::vector<MeasuredScaling> measure_scaling(Communicator& world, const ScalingBenchOptions& o) {
  omp_set_num_threads(o.threads);
  std::vector<MeasuredScaling> rows;
  std::vector<int> counts;
  for (int k = 1; k <= world.size(); k *= 2) counts.push_back(k);
  if (counts.back() != world.size()) counts.push_back(world.size());
  for (const auto& model : o.models) {
    double base_ips = 0;
    for (int k : counts) {
      MPI_Comm sub;
      const bool in = world.rank() < k;
      FT_MPI(MPI_Comm_split(world.comm(), in ? 0 : 1, world.rank(), &sub));
      MeasuredScaling r;
      if (in) {
        Communicator c(sub);
        int64_t params = 0;
        auto t = time_steps(c, model, o, &params);
        std::vector<double> st, ct, et;
        for (auto& s : t) st.push_back(s.step), ct.push_back(s.compute), et.push_back(s.exposed);
        r.model = model;
        r.ranks = k;
        r.batch = o.batch;
        r.params = params;
        r.bytes = params * 4;
        r.wire_bytes_per_rank = k > 1 ? 2.0 * (k - 1) / k * double(r.bytes) : 0;
        r.step_s = median(st);
        r.compute_s = median(ct);
        r.exposed_comm_s = median(et);
        r.images_per_s = double(o.batch) * k / r.step_s;
      }
      FT_MPI(MPI_Comm_free(&sub));
      idle_barrier(world.comm());
      if (world.rank() == 0) {
        if (k == 1) base_ips = r.images_per_s;
        r.efficiency = base_ips > 0 ? r.images_per_s / (k * base_ips) : 0;
        rows.push_back(r);
      }
    }
  }
  return rows;
}

AlphaBeta fit_this_machine(Communicator& comm, double max_bytes, int repeats,
                           std::vector<std::pair<double, double>>* points) {
  FT_REQUIRE(comm.size() >= 2, "fitting the all-reduce needs at least 2 ranks");
  std::vector<std::pair<double, double>> pts;
  for (double bytes = 64 << 10; bytes <= max_bytes * 1.0001; bytes *= 4) {
    const size_t n = size_t(bytes / 4);
    std::vector<float> g(n, 1.f);
    GradReducer red(comm, g.data(), n, 1 << 20);
    std::vector<double> ts;
    for (int r = 0; r < repeats + 1; ++r) {
      comm.barrier();
      const double t0 = now_s();
      red.begin();
      red.finish();
      double dt = now_s() - t0;
      FT_MPI(MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, comm.comm()));
      if (r > 0) ts.push_back(dt);
    }
    pts.push_back({bytes, median(ts)});
  }
  if (points) *points = pts;
  return fit_alpha_beta(pts, comm.size(), Algo::Ring);
}

std::string format_measured_table(const std::vector<MeasuredScaling>& rows) {
  std::ostringstream os;
  char b[256];
  std::snprintf(b, sizeof b, "# %-14s %5s %6s %12s %12s %9s %11s %11s %9s %10s\n", "model",
                "ranks", "batch", "grad_bytes", "wire/rank", "step_ms", "compute_ms",
                "exposed_ms", "img/s", "efficiency");
  os << b;
  for (auto& r : rows) {
    std::snprintf(b, sizeof b, "  %-14s %5d %6d %12lld %12.0f %9.1f %11.1f %11.2f %9.1f %10.3f\n",
                  r.model.c_str(), r.ranks, r.batch, (long long)r.bytes, r.wire_bytes_per_rank,
                  r.step_s * 1e3, r.compute_s * 1e3, r.exposed_comm_s * 1e3, r.images_per_s,
                  r.efficiency);
    os << b;
  }
  return os.str();
}

}  // namespace ft
