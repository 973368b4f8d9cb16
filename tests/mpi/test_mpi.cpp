/// @brief MPI tests, run by ctest under `mpirun -np 2` and `-np 3`: the reducer's exact sums,
/// the start-up consistency check, and the data-parallel property (N ranks with global batch
/// B give the same weights as 1 rank with batch B, dropout on).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "firetrain/comm/communicator.hpp"
#include "firetrain/core/device.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/ops/loss.hpp"
#include "firetrain/ops/sgd.hpp"
#include "firetrain/train/bench_comm.hpp"

namespace ft {
namespace {

TEST(MpiReducer, SumsAreExactForEveryBucketSize) {
  Communicator comm;
  const int N = comm.size();
  for (size_t n : {size_t(1), size_t(1000), size_t(262147)}) {
    for (size_t bucket_bytes : {size_t(64), size_t(4096), size_t(1) << 20}) {
      std::vector<float> g(n);
      for (size_t i = 0; i < n; ++i) g[i] = float(comm.rank() + 1) + float(i % 7);
      GradReducer red(comm, g.data(), n, bucket_bytes);
      red.begin();
      // Backward reports readiness in uneven, decreasing steps.
      for (size_t lo = n; lo > 0;) {
        lo = lo > 977 ? lo - 977 : 0;
        red.ready(lo);
      }
      red.finish();
      size_t wrong = 0;
      for (size_t i = 0; i < n; ++i) {
        const float want = float(N * (N + 1) / 2) + float(N) * float(i % 7);
        wrong += g[i] != want;
      }
      EXPECT_EQ(wrong, 0u) << "n=" << n << " bucket_bytes=" << bucket_bytes;
    }
  }
}

TEST(MpiReducer, ReusedAcrossStepsAndManyBucketsInFlight) {
  Communicator comm;
  const int N = comm.size();
  std::vector<float> g(300000);
  GradReducer red(comm, g.data(), g.size(), 4096);  // 293 buckets, at most 4 in flight
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < g.size(); ++i) g[i] = float(comm.rank() + step) + float(i % 5);
    red.begin();
    red.ready(g.size() / 2);  // half ready at once: many buckets queue behind the cap
    red.ready(0);
    red.finish();
    size_t wrong = 0;
    for (size_t i = 0; i < g.size(); ++i)
      wrong += g[i] != float(N * (N - 1) / 2 + N * step) + float(N) * float(i % 5);
    EXPECT_EQ(wrong, 0u) << "step " << step;
  }
}

TEST(MpiBenchComm, ExactBytesAndNoWrongValues) {
  Communicator comm;
  CommBenchOptions o;
  o.models = {"squeezenet1_0", "alexnet"};
  o.repeats = 2;
  o.warmup = 0;
  auto rows = bench_comm(comm, o);
  ASSERT_EQ(rows.size(), 6u);  // 2 models x (reducer, 1-bucket, allreduce)
  for (auto& r : rows) {
    EXPECT_EQ(r.wrong, 0) << r.model << " " << r.variant;
    EXPECT_EQ(r.ranks, comm.size());
    EXPECT_GT(r.median_s, 0.0);
    EXPECT_EQ(r.bytes, r.model == "alexnet" ? 244403360 : 4993696) << r.model;
  }
  EXPECT_EQ(rows[0].buckets, 5);  // 4,993,696 bytes in 1 MiB buckets
  const std::string t = format_comm_table(rows);
  EXPECT_NE(t.find("Out of bounds values : 0 OK"), std::string::npos) << t;
  o.models = {"nosuchnet"};
  EXPECT_THROW(bench_comm(comm, o), InputError);
}

TEST(MpiNccl, SumsAreExactOverSteps) {
  Communicator comm;
  int skip = cuda_device_count() < comm.local_size() ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &skip, 1, MPI_INT, MPI_MAX, comm.comm());  // all ranks agree
  if (!cuda_built()) GTEST_SKIP() << "CUDA backend not built";
  if (skip) GTEST_SKIP() << "needs one GPU per rank on every node (NCCL)";
  bind_device(Device::CUDA, comm.local_rank());
  const int N = comm.size();
  const size_t n = 1000003;
  std::vector<float> h(n);
  Buffer g(Device::CUDA, n);
  auto red = make_reducer(Device::CUDA, comm, g.data(), n, 64 << 10);
  EXPECT_STREQ(red->backend(), "nccl");
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < n; ++i) h[i] = float(comm.rank() + step) + float(i % 9);
    g.upload(h.data(), n);
    red->begin();
    for (size_t lo = n; lo > 0;) {
      lo = lo > 99991 ? lo - 99991 : 0;
      red->ready(lo);
    }
    red->finish();
    g.download(h.data(), n);  // ordered after the all-reduce on the compute stream
    size_t wrong = 0;
    for (size_t i = 0; i < n; ++i)
      wrong += h[i] != float(N * (N - 1) / 2 + N * step) + float(N) * float(i % 9);
    EXPECT_EQ(wrong, 0u) << "step " << step;
  }
}

// --grad-comm-dtype bf16 / fp16: the inputs are small integers (exact in 16 bits, and so is
// every partial sum: |sum| <= 3 n(n+1)/2), so the result is exactly predictable whatever order
// Open MPI adds the ranks in; the non-blocking buckets, the last blocking one and a one-bucket
// reducer all take part.
TEST(MpiReducer16, SumsOfSmallIntegersAreExactInBf16AndFp16) {
  Communicator comm;
  const int N = comm.size();
  for (CommDtype d : {CommDtype::BF16, CommDtype::FP16}) {
    for (size_t bucket_bytes : {size_t(64), size_t(4096), size_t(1) << 22}) {
      const size_t n = 100003;
      std::vector<float> g(n);
      GradReducer red(comm, g.data(), n, bucket_bytes, d);
      EXPECT_EQ(red.dtype(), d);
      for (int step = 0; step < 2; ++step) {
        for (size_t i = 0; i < n; ++i) g[i] = float(comm.rank() + 1) * float(int(i % 7) - 3);
        red.begin();
        for (size_t lo = n; lo > 0;) {
          lo = lo > 9973 ? lo - 9973 : 0;
          red.ready(lo);
        }
        red.finish();
        size_t wrong = 0;
        for (size_t i = 0; i < n; ++i)
          wrong += g[i] != float(N * (N + 1) / 2) * float(int(i % 7) - 3);
        EXPECT_EQ(wrong, 0u) << comm_dtype_name(d) << " bucket_bytes=" << bucket_bytes;
        EXPECT_TRUE(red.grads_finite());
        if (N > 1) {
          EXPECT_GT(red.convert_s(), 0.0);
        }
      }
    }
  }
}

// Values that are not exact in 16 bits: each rank's value is rounded once (to nearest even),
// and with 2 ranks the single addition is rounded once more: predictable bit for bit.
TEST(MpiReducer16, TwoRanksRoundEachValueThenTheSum) {
  Communicator comm;
  if (comm.size() != 2) GTEST_SKIP() << "the expected rounding is written for 2 ranks";
  const size_t n = 4099;
  auto value = [](int r, size_t i) { return (float(r) + 1.1f) * std::sin(0.1f * float(i)); };
  for (CommDtype d : {CommDtype::BF16, CommDtype::FP16}) {
    std::vector<float> g(n);
    for (size_t i = 0; i < n; ++i) g[i] = value(comm.rank(), i);
    GradReducer red(comm, g.data(), n, 1024, d);
    red.begin();
    red.finish();
    auto to16 = [&](float x) {
      return d == CommDtype::BF16 ? cvt::fp32_to_bf16(x) : cvt::fp32_to_fp16(x);
    };
    auto from16 = [&](uint16_t h) {
      return d == CommDtype::BF16 ? cvt::bf16_to_fp32(h) : cvt::fp16_to_fp32(h);
    };
    const float pre = d == CommDtype::FP16 ? 0.5f : 1.f;  // fp16: 2 ranks, 2^-1
    size_t wrong = 0;
    double worst_rel = 0;
    for (size_t i = 0; i < n; ++i) {
      const float a = from16(to16(value(0, i) * pre)), b = from16(to16(value(1, i) * pre));
      const float want = from16(to16(a + b)) / pre;
      wrong += g[i] != want;
      const double exact = double(value(0, i)) + double(value(1, i));
      if (std::fabs(exact) > 1e-2) worst_rel = std::max(worst_rel, std::fabs(g[i] - exact) / std::fabs(exact));
    }
    EXPECT_EQ(wrong, 0u) << comm_dtype_name(d);
    // Three roundings (each value, then the sum) of at most half an ulp each (bf16: 2^-8
    // relative, fp16: 2^-11); no cancellation: both values have the same sign.
    EXPECT_LT(worst_rel, d == CommDtype::BF16 ? 3 * 0x1p-8 : 3 * 0x1p-11) << comm_dtype_name(d);
  }
}

// fp16 is pre-scaled by 2^-ceil(log2 N): N values of 40000 (sum beyond fp16's 65504) come back
// exact; a value that overflows even after the scaling becomes Inf and grads_finite() says so
// on every rank; so does a NaN, and bf16's overflow beyond fp32's range.
TEST(MpiReducer16, Fp16PrescaleAvoidsOverflowAndNonFiniteIsDetected) {
  Communicator comm;
  const int N = comm.size();
  if (N < 2) GTEST_SKIP() << "one rank sends nothing (and rounds nothing)";
  std::vector<float> g(1000, 40000.f);
  {
    GradReducer red(comm, g.data(), g.size(), 1024, CommDtype::FP16);
    red.begin();
    red.finish();
    for (float v : g) ASSERT_EQ(v, 40000.f * float(N));
    EXPECT_TRUE(red.grads_finite());
    std::fill(g.begin(), g.end(), 1.f);
    if (comm.rank() == N - 1) g[17] = 1e6f;  // 1e6 / 2^ceil(log2 N) > 65504 for N <= 8
    red.begin();
    red.finish();
    EXPECT_TRUE(std::isinf(g[17]));
    EXPECT_FALSE(red.grads_finite());
  }
  for (CommDtype d : {CommDtype::BF16, CommDtype::FP16}) {
    std::fill(g.begin(), g.end(), 1.f);
    if (comm.rank() == 0) g[3] = NAN;
    GradReducer red(comm, g.data(), g.size(), 1024, d);
    red.begin();
    red.finish();
    EXPECT_TRUE(std::isnan(g[3])) << comm_dtype_name(d);
    EXPECT_FALSE(red.grads_finite()) << comm_dtype_name(d);
  }
  std::fill(g.begin(), g.end(), 3e38f);
  GradReducer red(comm, g.data(), g.size(), 1024, CommDtype::BF16);
  red.begin();
  red.finish();
  EXPECT_FALSE(red.grads_finite());
}

TEST(MpiBenchComm, SixteenBitRowsHalveTheBytesAndStayExact) {
  Communicator comm;
  CommBenchOptions o;
  o.models = {"squeezenet1_0"};
  o.repeats = 2;
  o.warmup = 0;
  o.dtypes = {CommDtype::FP32, CommDtype::BF16, CommDtype::FP16};
  auto rows = bench_comm(comm, o);
  ASSERT_EQ(rows.size(), 9u);  // 3 variants x 3 dtypes
  for (auto& r : rows) {
    EXPECT_EQ(r.wrong, 0) << r.variant << " " << r.dtype;
    EXPECT_EQ(r.bytes, r.dtype == "fp32" ? 4993696 : 2496848) << r.dtype;
    if (r.dtype != "fp32" && comm.size() > 1) {
      EXPECT_GT(r.convert_s, 0.0) << r.variant;
    }
  }
  const std::string t = format_comm_table(rows);
  EXPECT_NE(t.find("squeezenet1_0 reducer: bf16 / fp32: 0.50x the bytes"), std::string::npos) << t;
  EXPECT_NE(t.find("Out of bounds values : 0 OK"), std::string::npos) << t;
}

// The NCCL reducer with --grad-comm-dtype bf16 / fp16: small integers (exact in 16 bits) come
// back exact through the narrowing kernel, ncclBfloat16 / ncclFloat16 sums and the widening
// kernel; a value that overflows fp16 is caught by grads_finite(). Needs a GPU per rank.
TEST(MpiNccl, SixteenBitSumsAreExactAndOverflowIsCaught) {
  Communicator comm;
  int skip = cuda_device_count() < comm.local_size() ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &skip, 1, MPI_INT, MPI_MAX, comm.comm());
  if (!cuda_built()) GTEST_SKIP() << "CUDA backend not built";
  if (skip) GTEST_SKIP() << "needs one GPU per rank on every node (NCCL)";
  bind_device(Device::CUDA, comm.local_rank());
  const int N = comm.size();
  const size_t n = 500009;
  std::vector<float> h(n);
  Buffer g(Device::CUDA, n);
  for (CommDtype d : {CommDtype::BF16, CommDtype::FP16}) {
    auto red = make_reducer(Device::CUDA, comm, g.data(), n, 64 << 10, d);
    EXPECT_EQ(red->dtype(), d);
    for (int step = 0; step < 2; ++step) {
      for (size_t i = 0; i < n; ++i) h[i] = float(comm.rank() + 1) * float(int(i % 7) - 3);
      g.upload(h.data(), n);
      red->begin();
      for (size_t lo = n; lo > 0;) {
        lo = lo > 99991 ? lo - 99991 : 0;
        red->ready(lo);
      }
      red->finish();
      EXPECT_TRUE(red->grads_finite());
      g.download(h.data(), n);
      size_t wrong = 0;
      for (size_t i = 0; i < n; ++i) wrong += h[i] != float(N * (N + 1) / 2) * float(int(i % 7) - 3);
      EXPECT_EQ(wrong, 0u) << comm_dtype_name(d) << " step " << step;
    }
    std::fill(h.begin(), h.end(), 1.f);
    h[12345] = 1e6f;  // fp16: beyond 65504 even after the 2^-ceil(log2 N) pre-scale (N <= 8)
    g.upload(h.data(), n);
    red->begin();
    red->finish();
    EXPECT_EQ(red->grads_finite(), d == CommDtype::BF16) << comm_dtype_name(d);
  }
}

TEST(MpiReducer, FinishWithoutReadyStillReducesEverything) {
  Communicator comm;
  std::vector<float> g(5000, 1.0f);
  GradReducer red(comm, g.data(), g.size(), 1024);
  red.begin();
  red.finish();
  for (float v : g) ASSERT_EQ(v, float(comm.size()));
}

TEST(MpiConsistency, MismatchIsAnErrorOnEveryRank) {
  Communicator comm;
  if (comm.size() < 2) GTEST_SKIP() << "a mismatch needs at least 2 ranks";
  EXPECT_NO_THROW(comm.check_consistent("config", "lr 0.1\nbatch 8"));
  const std::string mine = comm.rank() == 1 ? "lr 0.1\nbatch 16" : "lr 0.1\nbatch 8";
  try {
    comm.check_consistent("config", mine);
    FAIL() << "no error on rank " << comm.rank();
  } catch (const InputError& e) {
    // Every rank names the rank and both values (whichever message the user sees).
    EXPECT_NE(std::string(e.what()).find("rank 1 differs from rank 0: rank 0 has 'batch 8', "
                                         "rank 1 has 'batch 16'"),
              std::string::npos)
        << e.what();
  }
}

// Synthetic sample i: a deterministic image and label.
void make_sample(int64_t i, int H, int W, int C, int K, float* x, int32_t* y) {
  for (int p = 0; p < H * W * C; ++p) x[p] = std::sin(0.37f * float(p) + 1.3f * float(i));
  *y = int32_t(i % K);
}

// Runs `steps` SGD steps of global batch B on `comm`, each rank on its contiguous slice.
std::vector<float> train_steps(Communicator& comm, int B, int steps,
                               CommDtype dtype = CommDtype::FP32) {
  NetSpec spec;
  spec.arch = "squeezenet_small";
  spec.in_channels = 1;
  spec.height = spec.width = 12;
  spec.num_classes = 5;
  spec.dropout = 0.5f;
  Net net(spec);
  net.init_weights(7);
  const int per = B / comm.size(), off = comm.rank() * per;
  const int H = 12, W = 12, C = 1, K = 5;
  std::vector<float> x(size_t(per) * H * W * C), mom(net.num_params()), dl(size_t(per) * K);
  std::vector<int32_t> y(static_cast<size_t>(per));
  std::vector<int64_t> idx(static_cast<size_t>(per));
  GradReducer red(comm, net.grads(), net.num_params(), 8192, dtype);
  for (int s = 0; s < steps; ++s) {
    for (int i = 0; i < per; ++i) {
      idx[i] = int64_t(s) * B + off + i;
      make_sample(idx[i], H, W, C, K, x.data() + size_t(i) * H * W * C, &y[i]);
    }
    PassContext ctx;
    ctx.N = per;
    ctx.train = true;
    ctx.seed = 11;
    ctx.step = uint64_t(s);
    ctx.samples = idx.data();
    const float* logits = net.forward(ctx, x.data());
    cpu::softmax_xent(per, K, logits, y.data(), B, dl.data());
    red.begin();
    net.backward(ctx, dl.data(), [&](size_t lo) { red.ready(lo); });
    red.finish();
    cpu::sgd_update(net.num_params(), 0.05f, 0.9f, 1e-3f, s == 0, net.params(), net.grads(), mom.data());
  }
  return std::vector<float>(net.params(), net.params() + net.num_params());
}

TEST(MpiDataParallel, NRanksEqualOneRankWithDropout) {
  Communicator world;
  const int B = 6;  // divisible by 2 and 3
  ASSERT_EQ(B % world.size(), 0);
  // Two steps: a bug in the sharding, the dropout keys or the reduction shows from the first
  // step. Longer chains are not compared bit-tight: a pre-activation within rounding of 0 can
  // take the other side of a ReLU under the other summation order, and SGD then amplifies that
  // one unit's gradient (seen with 3 ranks at step 3: 6e-8 -> 3.6e-5, all of it in fire3's
  // expand3x3 and the layers below it; the 4-step 16-bit test below has the loose bound).
  std::vector<float> dist = train_steps(world, B, 2);
  Communicator self(MPI_COMM_SELF);
  std::vector<float> single = train_steps(self, B, 2);
  double max_abs = 0, max_diff = 0;
  for (size_t i = 0; i < dist.size(); ++i) {
    max_abs = std::max(max_abs, double(std::fabs(single[i])));
    max_diff = std::max(max_diff, double(std::fabs(dist[i] - single[i])));
  }
  // Only the summation order differs (the all-reduce adds partial sums).
  EXPECT_LT(max_diff, 1e-5 * std::max(1.0, max_abs)) << "max |w_N - w_1| = " << max_diff;
  // And training did move the weights.
  Communicator self2(MPI_COMM_SELF);
  std::vector<float> none = train_steps(self2, B, 0);
  double moved = 0;
  for (size_t i = 0; i < none.size(); ++i) moved = std::max(moved, double(std::fabs(none[i] - single[i])));
  EXPECT_GT(moved, 1e-4);
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}

// Training with a 16-bit gradient all-reduce stays close to fp32: SGD steps (momentum 0.9,
// lr 0.05, dropout) of the small net, N ranks with bf16 / fp16 against N ranks with fp32 and
// against 1 rank. The documented tolerance, relative to max(1, max |w|):
//   after 1 step:  max |w_16 - w_32| < 1e-3  (one rounding of the gradient times lr; measured
//                  bf16 8.7e-5 / 1.4e-4 on 2 / 3 ranks, fp16 1.8e-5);
//   after 4 steps: max |w_16 - w_32| < 2e-2  (measured bf16 5.0e-3 / 5.9e-3, fp16 4.2e-3 /
//                  2.4e-3: this tiny net amplifies any perturbation, fp32's own summation-order
//                  difference between 3 ranks and 1 grows from 1.5e-8 to ~3e-4 over 4 steps).
TEST(MpiDataParallel, SixteenBitGradientsStayWithinToleranceOfFp32) {
  Communicator world;
  const int B = 6;
  for (int steps : {1, 4}) {
    std::vector<float> f32 = train_steps(world, B, steps);
    Communicator self(MPI_COMM_SELF);
    std::vector<float> single = train_steps(self, B, steps);
    double max_abs = 0;
    for (float w : single) max_abs = std::max(max_abs, double(std::fabs(w)));
    const double tol = (steps == 1 ? 1e-3 : 2e-2) * std::max(1.0, max_abs);
    for (CommDtype d : {CommDtype::BF16, CommDtype::FP16}) {
      std::vector<float> w16 = train_steps(world, B, steps, d);
      const double vs_fp32 = max_abs_diff(w16, f32), vs_one = max_abs_diff(w16, single);
      if (world.rank() == 0)
        std::printf("[ info ] %d ranks, %s all-reduce, %d step(s): max |w - w_fp32| = %.3g, "
                    "max |w - w_1rank| = %.3g (max |w| %.3g)\n",
                    world.size(), comm_dtype_name(d), steps, vs_fp32, vs_one, max_abs);
      EXPECT_LT(vs_fp32, tol) << comm_dtype_name(d) << ", " << steps << " step(s)";
      EXPECT_LT(vs_one, tol) << comm_dtype_name(d) << ", " << steps << " step(s)";
      // The rounding did happen (several ranks): the weights are not fp32's.
      if (world.size() > 1) {
        EXPECT_GT(vs_fp32, 0.0) << comm_dtype_name(d);
      }
    }
  }
}

}  // namespace
}  // namespace ft

// MPI-aware main: every rank runs the tests, only rank 0 prints, and the exit code is
// non-zero on every rank if any rank failed.
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any && failed) std::fprintf(stderr, "rank %d: some MPI tests failed\n", rank);
  MPI_Finalize();
  return any;
}
