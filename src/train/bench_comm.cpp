/// @brief `firetrain bench comm` (see bench_comm.hpp).
#include "firetrain/train/bench_comm.hpp"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "firetrain/core/error.hpp"
#include "firetrain/model/net.hpp"

namespace ft {

const std::vector<CommBenchModel>& comm_bench_models() {
  static const std::vector<CommBenchModel> m = {
      {"squeezenet1_0", 1248424, true}, {"squeezenet1_1", 1235496, true},
      {"alexnet", 61100840, true},      {"resnet50", 25557032, false},
      {"vgg16", 138357544, false}};
  return m;
}

namespace {

inline float expected_unit(size_t i) { return float(int(i % 13) - 6); }

/// Seconds as milliseconds with 3 decimals, or "n/a" where not measured (negative).
std::string conv_ms_text(double s) {
  if (s < 0) return "n/a";
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", s * 1e3);
  return b;
}

/// Seconds for the CSV / JSON files, or `none` where not measured (negative).
std::string convert_s_text(double s, const char* none) {
  if (s < 0) return none;
  char b[32];
  std::snprintf(b, sizeof b, "%.9g", s);
  return b;
}

void fill(std::vector<float>& h, int rank) {
  const float r = float(rank + 1);
  for (size_t i = 0; i < h.size(); ++i) h[i] = r * expected_unit(i);
}

int64_t count_wrong(const std::vector<float>& h, int world) {
  const float tri = float(world) * float(world + 1) / 2.f;
  int64_t wrong = 0;
  for (size_t i = 0; i < h.size(); ++i) wrong += h[i] != tri * expected_unit(i);
  return wrong;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

double p95(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[size_t(std::ceil(0.95 * double(v.size()))) - 1];
}

/// Arena offsets at which backward reports progress, highest first: each parameter tensor's
/// start for real models (the trainer reports per layer; per tensor is at least as fine), and
/// 64 even steps for size-only presets.
std::vector<size_t> ready_points(const CommBenchModel& m) {
  std::vector<size_t> pts;
  if (m.real) {
    NetSpec s;
    s.arch = m.name;
    s.num_classes = 1000;
    Net net(s);
    FT_REQUIRE(int64_t(net.num_params()) == m.params, "model size table is stale");
    for (auto& v : net.param_views()) pts.push_back(v.offset);
  } else {
    for (int k = 0; k < 64; ++k) pts.push_back(size_t(m.params) * size_t(k) / 64);
  }
  std::sort(pts.rbegin(), pts.rend());
  return pts;
}

}  // namespace

std::vector<CommBenchRow> bench_comm(Communicator& comm, const CommBenchOptions& o) {
  if (o.repeats < 1 || o.warmup < 0) throw InputError("bench comm: --repeats must be >= 1");
  std::vector<CommBenchModel> todo;
  for (auto& m : comm_bench_models())
    if (o.models.empty() || std::find(o.models.begin(), o.models.end(), m.name) != o.models.end())
      todo.push_back(m);
  for (auto& want : o.models)
    if (std::none_of(todo.begin(), todo.end(), [&](auto& m) { return m.name == want; }))
      throw InputError("bench comm: unknown model '" + want +
                       "' (squeezenet1_0, squeezenet1_1, alexnet, resnet50, vgg16)");
  std::vector<CommBenchRow> rows;
  const int n = comm.size();
  for (auto& m : todo) {
    const std::vector<size_t> pts = ready_points(m);
    std::vector<float> host(size_t(m.params));
    Buffer grads(o.device, host.size());
    // reducer: as in training (buckets, overlap machinery); 1-bucket: the same reducer with one
    // bucket spanning the arena (its overhead over the floor); allreduce: the floor, one plain
    // blocking MPI_Allreduce of all the bytes (16-bit: the conversions, one MPI_Allreduce with
    // the 16-bit op, and back); for NCCL (fp32), nccl-tests' measure: kNcclFloorIters in-place
    // ncclAllReduce calls back to back, CUDA-event timed, seconds per call.
    constexpr int kNcclFloorIters = 20;
    for (std::string variant : {"reducer", "1-bucket", "allreduce"}) {
      const bool nccl_floor = variant == "allreduce" && o.device == Device::CUDA;
      // (1 rank: NCCL's in-place sum has nothing to do; a floor of ~0 would mislead)
      if (nccl_floor && n == 1) continue;
      for (CommDtype dt : o.dtypes) {
        if (nccl_floor && dt != CommDtype::FP32) continue;
        std::unique_ptr<Reducer> red;
        std::unique_ptr<Mpi16Sum> op16;
        std::vector<uint16_t> buf16;
        const float pre = std::ldexp(1.f, -comm_prescale_log2(dt, n));
        if (variant != "allreduce" || nccl_floor) {
          red = make_reducer(o.device, comm, grads.data(), host.size(),
                             variant == "reducer" ? o.bucket_bytes : host.size() * 4 + 64, dt);
        } else if (dt != CommDtype::FP32) {
          op16 = std::make_unique<Mpi16Sum>(dt);
          buf16.resize(host.size());
        }
        std::vector<double> times, conv;
        int64_t wrong = 0;
        for (int rep = 0; rep < o.warmup + o.repeats; ++rep) {
          fill(host, comm.rank());
          grads.upload(host.data(), host.size());
          comm.barrier();
          const auto t0 = std::chrono::steady_clock::now();
          double cs = 0, per_call = -1;
          if (nccl_floor) {
            per_call = red->floor_allreduce_s(kNcclFloorIters);
            grads.upload(host.data(), host.size());  // one more call for the #wrong check
            red->floor_allreduce_s(1);
          } else if (red) {
            red->begin();
            for (size_t p : pts) red->ready(p);
            red->finish();
            synchronize(o.device);
            cs = red->convert_s();
          } else if (op16) {
            float* g = grads.data();
            const auto c0 = std::chrono::steady_clock::now();
            to_comm_dtype(dt, g, buf16.data(), host.size(), pre);
            const auto c1 = std::chrono::steady_clock::now();
            FT_MPI(MPI_Allreduce(MPI_IN_PLACE, buf16.data(), int(host.size()), op16->type(),
                                 op16->op(), comm.comm()));
            const auto c2 = std::chrono::steady_clock::now();
            from_comm_dtype(dt, buf16.data(), g, host.size(), 1.f / pre);
            cs = std::chrono::duration<double>(c1 - c0).count() +
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - c2).count();
          } else {
            float* g = grads.data();
            for (size_t off = 0; off < host.size();) {  // MPI counts are int
              const size_t cnt = std::min(host.size() - off, size_t(1) << 30);
              FT_MPI(MPI_Allreduce(MPI_IN_PLACE, g + off, int(cnt), MPI_FLOAT, MPI_SUM,
                                   comm.comm()));
              off += cnt;
            }
          }
          double dt_s = per_call >= 0 ? per_call
                                      : std::chrono::duration<double>(
                                            std::chrono::steady_clock::now() - t0)
                                            .count();
          FT_MPI(MPI_Allreduce(MPI_IN_PLACE, &dt_s, 1, MPI_DOUBLE, MPI_MAX, comm.comm()));
          grads.download(host.data(), host.size());
          const int64_t w = count_wrong(host, n);
          if (rep >= o.warmup) {
            times.push_back(dt_s);
            conv.push_back(cs);
            wrong += w;
          }
        }
        FT_MPI(MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_INT64_T, MPI_SUM, comm.comm()));
        CommBenchRow r;
        r.model = m.name;
        r.variant = variant;
        r.backend = o.device == Device::CUDA ? "nccl" : "mpi";
        r.dtype = comm_dtype_name(dt);
        r.params = m.params;
        r.bytes = m.params * int64_t(comm_dtype_bytes(dt));
        r.ranks = n;
        r.buckets = red ? int(red->num_buckets()) : 1;
        r.repeats = o.repeats;
        r.median_s = median(times);
        r.p95_s = p95(times);
        r.algbw_gbs = r.median_s > 0 ? double(r.bytes) / r.median_s / 1e9 : 0;
        r.busbw_gbs = r.algbw_gbs * 2.0 * (n - 1) / n;
        r.wrong = wrong;
        r.convert_s = median(conv);
        FT_MPI(MPI_Bcast(&r.convert_s, 1, MPI_DOUBLE, 0, comm.comm()));
        rows.push_back(r);
      }
    }
  }
  return rows;
}

std::string format_comm_table(const std::vector<CommBenchRow>& rows) {
  std::ostringstream os;
  char b[320];
  std::snprintf(b, sizeof b,
                "# %-14s %11s %5s %12s %5s %7s %-9s %7s %11s %11s %9s %9s %7s %7s\n", "model",
                "params", "dtype", "bytes", "ranks", "backend", "variant", "buckets",
                "median_ms", "p95_ms", "algbw", "busbw", "conv_ms", "#wrong");
  os << b;
  std::snprintf(b, sizeof b,
                "# %-14s %11s %5s %12s %5s %7s %-9s %7s %11s %11s %9s %9s %7s %7s\n", "", "",
                "", "", "", "", "", "", "", "", "(GB/s)", "(GB/s)", "", "");
  os << b;
  double bus = 0;
  int64_t wrong = 0;
  for (auto& r : rows) {
    std::snprintf(b, sizeof b,
                  "  %-14s %11lld %5s %12lld %5d %7s %-9s %7d %11.3f %11.3f %9.3f %9.3f %7s "
                  "%7lld\n",
                  r.model.c_str(), (long long)r.params, r.dtype.c_str(), (long long)r.bytes,
                  r.ranks, r.backend.c_str(), r.variant.c_str(), r.buckets, r.median_s * 1e3,
                  r.p95_s * 1e3, r.algbw_gbs, r.busbw_gbs, conv_ms_text(r.convert_s).c_str(),
                  (long long)r.wrong);
    os << b;
    bus += r.busbw_gbs;
    wrong += r.wrong;
  }
  if (!rows.empty()) {
    std::snprintf(b, sizeof b, "# Out of bounds values : %lld %s\n", (long long)wrong,
                  wrong ? "WRONG" : "OK");
    os << b;
    std::snprintf(b, sizeof b, "# Avg bus bandwidth    : %.3f GB/s\n", bus / double(rows.size()));
    os << b;
  }
  // The fp32 rows where present (else the first dtype run), for the ratios below.
  auto find = [&](const std::string& m, const std::string& v) -> const CommBenchRow* {
    const CommBenchRow* any = nullptr;
    for (auto& r : rows)
      if (r.model == m && r.variant == v) {
        if (r.dtype == "fp32") return &r;
        if (!any) any = &r;
      }
    return any;
  };
  for (const char* v : {"reducer", "1-bucket", "allreduce"}) {
    auto* a = find("alexnet", v);
    auto* s = find("squeezenet1_0", v);
    if (a && s && s->median_s > 0) {
      std::snprintf(b, sizeof b,
                    "# alexnet / squeezenet1_0 (%s): %.1fx the bytes, %.1fx the time\n", v,
                    double(a->bytes) / double(s->bytes), a->median_s / s->median_s);
      os << b;
    }
  }
  for (auto& r : rows)
    if (r.dtype != "fp32")
      if (auto* f = find(r.model, r.variant); f && f->dtype == "fp32" && f->median_s > 0) {
        const std::string conv =
            r.convert_s < 0 ? "conversions inside it, not measured apart"
                            : "conversions " + conv_ms_text(r.convert_s) + " ms of " +
                                  conv_ms_text(r.median_s);
        std::snprintf(b, sizeof b, "# %s %s: %s / fp32: %.2fx the bytes, %.2fx the time (%s)\n",
                      r.model.c_str(), r.variant.c_str(), r.dtype.c_str(),
                      double(r.bytes) / double(f->bytes), r.median_s / f->median_s, conv.c_str());
        os << b;
      }
  for (auto& r : rows)
    if (r.variant == "reducer" && r.dtype == "fp32")
      if (auto* f = find(r.model, "allreduce"); f && f->median_s > 0) {
        auto* one = find(r.model, "1-bucket");
        std::snprintf(b, sizeof b,
                      "# %s: time / %s: bucketed reducer %.2f, 1-bucket reducer %.2f\n",
                      r.model.c_str(),
                      r.backend == "nccl" ? "nccl-tests-style ncclAllReduce (per call, 20 back "
                                            "to back)"
                                          : "plain MPI_Allreduce",
                      r.median_s / f->median_s,
                      one ? one->median_s / f->median_s : 0.0);
        os << b;
      }
  return os.str();
}

void write_comm_rows(const std::string& path, const std::vector<CommBenchRow>& rows) {
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext != ".csv" && ext != ".json" && ext != ".jsonl")
    throw InputError("bench comm: --out " + path + ": use a .csv, .json or .jsonl file name");
  std::ofstream f(path);
  if (!f) throw InputError("bench comm: cannot write " + path);
  if (ext == ".csv")
    f << "model,variant,backend,dtype,params,bytes,ranks,buckets,repeats,median_s,p95_s,"
         "algbw_gbs,busbw_gbs,convert_s,wrong\n";
  for (auto& r : rows) {
    char b[512];
    if (ext == ".csv")
      std::snprintf(b, sizeof b, "%s,%s,%s,%s,%lld,%lld,%d,%d,%d,%.9g,%.9g,%.6g,%.6g,%s,%lld\n",
                    r.model.c_str(), r.variant.c_str(), r.backend.c_str(), r.dtype.c_str(),
                    (long long)r.params, (long long)r.bytes, r.ranks, r.buckets, r.repeats,
                    r.median_s, r.p95_s, r.algbw_gbs, r.busbw_gbs,
                    convert_s_text(r.convert_s, "").c_str(), (long long)r.wrong);
    else
      std::snprintf(b, sizeof b,
                    "{\"model\": \"%s\", \"variant\": \"%s\", \"backend\": \"%s\", "
                    "\"dtype\": \"%s\", \"params\": %lld, \"bytes\": %lld, \"ranks\": %d, "
                    "\"buckets\": %d, \"repeats\": %d, \"median_s\": %.9g, \"p95_s\": %.9g, "
                    "\"algbw_gbs\": %.6g, \"busbw_gbs\": %.6g, \"convert_s\": %s, "
                    "\"wrong\": %lld}\n",
                    r.model.c_str(), r.variant.c_str(), r.backend.c_str(), r.dtype.c_str(),
                    (long long)r.params, (long long)r.bytes, r.ranks, r.buckets, r.repeats,
                    r.median_s, r.p95_s, r.algbw_gbs, r.busbw_gbs,
                    convert_s_text(r.convert_s, "null").c_str(), (long long)r.wrong);
    f << b;
  }
  if (!f) throw Error("bench comm: writing " + path + " failed");
}

}  // namespace ft
