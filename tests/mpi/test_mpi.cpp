/// @brief MPI tests, run by ctest under `mpirun -np 2` and `-np 3`: the reducer's exact sums,
/// the start-up consistency check, and the data-parallel property (N ranks with global batch
/// B give the same weights as 1 rank with batch B, dropout on).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
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
std::vector<float> train_steps(Communicator& comm, int B, int steps) {
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
  GradReducer red(comm, net.grads(), net.num_params(), 8192);
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
  std::vector<float> dist = train_steps(world, B, 4);
  Communicator self(MPI_COMM_SELF);
  std::vector<float> single = train_steps(self, B, 4);
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
