/// @brief Step benchmark on synthetic data (measured figures only).
#include "firetrain/train/bench.hpp"

#include "firetrain/ops/ops.hpp"

#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <random>

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

StepBenchResult bench_step(const std::string& arch, int batch, int size, int channels,
                           int classes, int threads, int steps, int warmup, Device dev) {
  require_device(dev);
  omp_set_num_threads(threads);
  NetSpec spec;
  spec.arch = arch;
  spec.in_channels = channels;
  spec.height = spec.width = size;
  spec.num_classes = classes;
  Net net(spec, dev);
  net.init_weights(0);
  const Ops& ops = net.ops();
  std::mt19937 rng(0);
  std::normal_distribution<float> nd;
  std::vector<float> x(size_t(batch) * size * size * channels);
  for (auto& v : x) v = nd(rng);
  std::vector<int32_t> labels(static_cast<size_t>(batch));
  std::vector<int64_t> samples(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) {
    labels[i] = int32_t(rng() % uint32_t(classes));
    samples[i] = i;
  }
  Buffer dx(dev, x.size()), mom(dev, net.num_params()), dlogits(dev, size_t(batch) * classes);
  Array<int32_t> dlabels(dev, labels.size());
  Array<int64_t> dsamples(dev, samples.size());
  dx.upload(x.data(), x.size());
  dlabels.upload(labels.data(), labels.size());
  dsamples.upload(samples.data(), samples.size());
  using clock = std::chrono::steady_clock;
  std::vector<double> tot, fwd, bwd, upd;
  for (int s = 0; s < warmup + steps; ++s) {
    PassContext ctx;
    ctx.N = batch;
    ctx.train = true;
    ctx.seed = 1;
    ctx.step = uint64_t(s);
    ctx.samples = dsamples.data();
    auto t0 = clock::now();
    const float* logits = net.forward(ctx, dx.data());
    ops.softmax_xent(batch, classes, logits, dlabels.data(), batch, dlogits.data());  // syncs
    auto t1 = clock::now();
    net.backward(ctx, dlogits.data());
    synchronize(dev);
    auto t2 = clock::now();
    ops.sgd_update(net.num_params(), 0.01f, 0.9f, 2e-4f, s == 0, net.params(), net.grads(),
                   mom.data());
    synchronize(dev);
    auto t3 = clock::now();
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

}  // namespace ft
