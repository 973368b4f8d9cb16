/// @brief Step benchmark on synthetic data (measured figures only).
#include "firetrain/train/bench.hpp"

#include "firetrain/ops/ops.hpp"

#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "firetrain/data/dataset.hpp"
#include "firetrain/data/loader.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/ops/loss.hpp"
#include "firetrain/ops/sgd.hpp"

namespace ft {

double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // KiB on Linux
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

namespace {
/// The net of a synthetic benchmark.
NetSpec synthetic_spec(const std::string& arch, int size, int channels, int classes,
                       const std::string& precision) {
  NetSpec spec;
  spec.arch = arch;
  spec.in_channels = channels;
  spec.height = spec.width = size;
  spec.num_classes = classes;
  spec.precision = precision;
  return spec;
}

/// Random NHWC inputs, labels and sample indices for a synthetic step.
struct SyntheticBatch {
  Buffer x, dlogits;
  Array<int32_t> labels;
  Array<int64_t> samples;
};
SyntheticBatch synthetic_batch(Device dev, int batch, int size, int channels, int classes) {
  std::mt19937 rng(0);
  std::normal_distribution<float> nd;
  std::vector<float> x(size_t(batch) * size * size * channels);
  for (auto& v : x) v = nd(rng);
  std::vector<int32_t> labels(static_cast<size_t>(batch));
  std::vector<int64_t> samples(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) {
    labels[size_t(i)] = int32_t(rng() % uint32_t(classes));
    samples[size_t(i)] = i;
  }
  SyntheticBatch b{Buffer(dev, x.size()), Buffer(dev, size_t(batch) * classes),
                   Array<int32_t>(dev, labels.size()), Array<int64_t>(dev, samples.size())};
  b.x.upload(x.data(), x.size());
  b.labels.upload(labels.data(), labels.size());
  b.samples.upload(samples.data(), samples.size());
  return b;
}
}  // namespace

StepBenchResult bench_step(const std::string& arch, int batch, int size, int channels,
                           int classes, int threads, int steps, int warmup, Device dev,
                           const std::string& precision) {
  require_device(dev);
  omp_set_num_threads(threads);
  Net net(synthetic_spec(arch, size, channels, classes, precision), dev);
  net.init_weights(0);
  const Ops& ops = net.ops();
  SyntheticBatch b = synthetic_batch(dev, batch, size, channels, classes);
  Buffer mom(dev, net.num_params());
  using clock = std::chrono::steady_clock;
  std::vector<double> tot, fwd, bwd, upd;
  for (int s = 0; s < warmup + steps; ++s) {
    PassContext ctx;
    ctx.N = batch;
    ctx.train = true;
    ctx.seed = 1;
    ctx.step = uint64_t(s);
    ctx.samples = b.samples.data();
#ifdef FT_HAVE_CUDA
    // The timed steps are the profiler's capture range (ncu --profile-from-start off, nsys
    // --capture-range=cudaProfilerApi): not the warm-up, where cuDNN's searches run.
    if (dev == Device::CUDA && s == warmup) cuda::profiler_start();
#endif
    NvtxRange range(s < warmup ? "warmup step" : "step");
    auto t0 = clock::now();
    const float* logits = net.forward(ctx, b.x.data());
    ops.softmax_xent(batch, classes, logits, b.labels.data(), batch, b.dlogits.data());  // syncs
    auto t1 = clock::now();
    net.backward(ctx, b.dlogits.data());
    synchronize(dev);
    auto t2 = clock::now();
    ops.sgd_update(net.num_params(), 0.01f, 0.9f, 2e-4f, s == 0, net.params(), net.grads(),
                   mom.data());
    synchronize(dev);
    auto t3 = clock::now();
#ifdef FT_HAVE_CUDA
    if (dev == Device::CUDA && s == warmup + steps - 1) cuda::profiler_stop();
#endif
    if (s < warmup) continue;
    auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    tot.push_back(ms(t0, t3));
    fwd.push_back(ms(t0, t1));
    bwd.push_back(ms(t1, t2));
    upd.push_back(ms(t2, t3));
  }
  StepBenchResult r;
  r.arch = arch;
  r.device = device_name(dev);
  r.precision = precision;
  r.batch = batch;
  r.size = size;
  r.threads = threads;
  r.steps = steps;
  r.median_ms = median(tot);
  std::vector<double> s = tot;
  std::sort(s.begin(), s.end());
  r.p90_ms = s.empty() ? 0 : s[std::min(s.size() - 1, size_t(0.9 * double(s.size())))];
  r.images_per_s = batch / (r.median_ms / 1e3);
  r.fwd_ms = median(fwd);
  r.bwd_ms = median(bwd);
  r.sgd_ms = median(upd);
  r.peak_rss_mb = peak_rss_mb();
  return r;
}


LayerBenchResult bench_layers(const std::string& arch, int batch, int size, int channels,
                              int classes, int threads, int steps, int warmup,
                              const std::string& precision, Device dev) {
  require_device(dev);
  omp_set_num_threads(threads);
  Net net(synthetic_spec(arch, size, channels, classes, precision), dev);
  net.init_weights(0);
  const Ops& ops = net.ops();
  SyntheticBatch b = synthetic_batch(dev, batch, size, channels, classes);
  Buffer mom(dev, net.num_params());
  const auto table = net.layer_table();
  std::vector<std::vector<double>> fwd(table.size()), bwd(table.size());
  std::vector<double> whole;
  std::vector<Net::LayerTime> prof;
  // Even steps unprofiled (the whole step's time), odd steps profiled (per layer).
  for (int s = 0; s < 2 * (warmup + steps); ++s) {
    const bool profiled = s % 2 == 1;
    prof.assign(table.size(), {});
    net.set_profile(profiled ? &prof : nullptr);
    PassContext ctx;
    ctx.N = batch;
    ctx.train = true;
    ctx.seed = 1;
    ctx.step = uint64_t(s);
    ctx.samples = b.samples.data();
    const auto t0 = std::chrono::steady_clock::now();
    const float* logits = net.forward(ctx, b.x.data());
    ops.softmax_xent(batch, classes, logits, b.labels.data(), batch, b.dlogits.data());
    net.backward(ctx, b.dlogits.data());
    ops.sgd_update(net.num_params(), 0.01f, 0.9f, 2e-4f, s == 0, net.params(), net.grads(),
                   mom.data());
    synchronize(dev);  // (CUDA: the step's kernels are asynchronous)
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s / 2 < warmup) continue;
    if (!profiled) {
      whole.push_back(ms);
      continue;
    }
    for (size_t i = 0; i < table.size(); ++i) {
      fwd[i].push_back(prof[i].fwd_s * 1e3);
      bwd[i].push_back(prof[i].bwd_s * 1e3);
    }
  }
  net.set_profile(nullptr);
  LayerBenchResult r;
  r.arch = arch;
  r.device = device_name(dev);
  r.batch = batch;
  r.size = size;
  r.threads = threads;
  r.steps = steps;
  r.step_ms = median(whole);
  for (size_t i = 0; i < table.size(); ++i) {
    const LayerInfo& li = table[i];
    LayerBenchRow row;
    row.name = li.name;
    row.H = li.H, row.W = li.W, row.C = li.C;
    row.params = li.params;
    row.fwd_gflop = 2.0 * double(li.macs) * batch / 1e9;
    // Backward of a layer with weights: weight gradient (= forward MACs) plus input gradient
    // (= forward MACs) except for the first layer, whose input needs no gradient.
    row.bwd_gflop = li.params > 0 ? row.fwd_gflop * (i == 0 ? 1.0 : 2.0) : 0.0;
    row.fwd_ms = median(fwd[i]);
    row.bwd_ms = median(bwd[i]);
    r.rows.push_back(row);
  }
  return r;
}

namespace {
typedef float v16 __attribute__((vector_size(64)));
/// 12 independent FMA chains on 16-float vectors, `iters` rounds: 12*16*2*iters FLOPs.
__attribute__((noinline)) float fma_chains(long iters, float seed) {
  v16 a[12];
  for (int k = 0; k < 12; ++k)
    for (int j = 0; j < 16; ++j) a[k][j] = seed + float(k * 16 + j) * 1e-6f;
  v16 m, c;
  for (int j = 0; j < 16; ++j) m[j] = 0.999999f, c[j] = 1e-7f;
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int k = 0; k < 12; ++k) a[k] = a[k] * m + c;
    __asm__ volatile("" : "+x"(m));  // keep the loop from being folded
  }
  float sum = 0;
  for (int k = 0; k < 12; ++k)
    for (int j = 0; j < 16; ++j) sum += a[k][j];
  return sum;
}
}  // namespace

double measure_fp32_peak_gflops(int threads) {
  const long iters = 4000000;
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    float sink = 0;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += fma_chains(iters, float(omp_get_thread_num()));
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (sink == 12345.f) std::fputs("", stderr);  // use the result
    best = std::max(best, 12.0 * 16 * 2 * double(iters) * threads / s / 1e9);
  }
  return best;
}

LoaderBenchResult bench_loader(const std::string& data, int64_t global_batch, int rank, int world,
                               int64_t steps, bool augment, int64_t cache_bytes) {
  Dataset ds = Dataset::open(data, cache_bytes);
  LoaderOptions o;
  o.global_batch = global_batch;
  o.rank = rank;
  o.world = world;
  o.augment = augment;
  Loader loader(ds, o);
  Batch b;
  LoaderBenchResult r;
  int64_t epoch = 0;
  loader.start_epoch(epoch);
  // One untimed batch: the prefetch thread starts and the cache is filled.
  if (!loader.next(b)) throw InputError("bench loader: " + data + " holds less than one batch");
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) {
    if (!loader.next(b)) {
      loader.start_epoch(++epoch);
      if (!loader.next(b)) break;
    }
    r.images += b.n;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.images_per_s = r.seconds > 0 ? double(r.images) / r.seconds : 0;
  return r;
}

}  // namespace ft
