/// @brief Loss scaling through ft::train() in-process on N ranks (mpirun -np 1, 2, 3), watched
/// with TrainConfig::step_hook: a dynamically scaled run equals the unscaled one bit for bit,
/// and overflowing steps are skipped alike on every rank, leaving the weights as they were.
/// (tests/test_loss_scale.cpp covers the same through the binary on one rank.)
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "firetrain/comm/communicator.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/train/trainer.hpp"

namespace ft {
namespace {

/// tests/test_resume.cpp's images (a bright square placed by the class), written by rank 0.
/// std: the dataset's normalization (empty: none, pixels in [0, 1]).
std::string write_data(Communicator& world, const std::string& name,
                       const std::vector<float>& std) {
  const std::string path =
      ::testing::TempDir() + "ft_mpi_ls_" + name + "_np" + std::to_string(world.size()) + ".h5";
  if (world.rank() == 0) test::write_square_dataset(path, 48, std);
  MPI_Barrier(MPI_COMM_WORLD);
  return path;
}

struct Trained {
  TrainSummary sum;
  std::vector<std::vector<float>> weights;  // [k]: after k steps (k = 0: the initial weights)
};

Trained run(Communicator& world, TrainConfig c) {
  Trained r;
  c.step_hook = [&r](Net& net, int64_t step) {
    net.params_to_host();
    const float* w = net.param_views().front().data;
    EXPECT_EQ(size_t(step), r.weights.size());
    r.weights.emplace_back(w, w + net.num_params());
  };
  r.sum = train(c, "{}", world);
  return r;
}

TrainConfig config(const std::string& data, int64_t steps) {
  TrainConfig c;
  c.data = data;
  c.steps = steps;
  c.batch = 12;  // divisible by 1, 2 and 3 ranks
  c.lr = 0.001;
  c.warmup_steps = 2;
  c.threads = 1;
  c.progress = "plain";
  c.log_every = 100;
  c.dropout = 0.5;
  return c;
}

bool same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(MpiLossScale, DynamicScalingIsBitIdenticalToNone) {
  Communicator world;
  const std::string data = write_data(world, "plain", {});
  TrainConfig c = config(data, 6);
  c.loss_scale = "none";
  Trained none = run(world, c);
  c.loss_scale = "dynamic";
  c.loss_scale_growth_interval = 2;  // 2^16 -> 2^19 on the way
  Trained dyn = run(world, c);
  ASSERT_EQ(none.weights.size(), 7u);
  ASSERT_EQ(dyn.weights.size(), 7u);
  for (size_t k = 0; k < 7; ++k) EXPECT_TRUE(same(none.weights[k], dyn.weights[k])) << k;
  EXPECT_FALSE(same(none.weights[0], none.weights[6]));
  EXPECT_EQ(dyn.sum.skipped_steps, 0);
  EXPECT_EQ(dyn.sum.loss_scale, 0x1p19);
  EXPECT_EQ(none.sum.loss_scale, 1.0);
  MPI_Barrier(MPI_COMM_WORLD);
  if (world.rank() == 0) std::remove(data.c_str());
}

// std 1/64 makes the gradient at 2^127 overflow (see tests/test_loss_scale.cpp): the first
// steps are skipped on every rank, the weights stay the initial ones through them, then move.
TEST(MpiLossScale, OverflowingStepsAreSkippedOnEveryRank) {
  Communicator world;
  const std::string data = write_data(world, "big", {1.f / 64});
  TrainConfig c = config(data, 12);
  c.loss_scale = "dynamic";
  c.loss_scale_init = 0x1p127;
  c.loss_scale_growth_interval = 1000;
  Trained r = run(world, c);
  ASSERT_EQ(r.weights.size(), 13u);
  const int64_t k = r.sum.skipped_steps;
  ASSERT_GE(k, 1) << "2^127 did not overflow";
  ASSERT_LT(k, 12);
  EXPECT_EQ(r.sum.loss_scale, std::ldexp(1.0, int(127 - k)));
  for (int64_t s = 1; s <= k; ++s) EXPECT_TRUE(same(r.weights[0], r.weights[size_t(s)])) << s;
  EXPECT_FALSE(same(r.weights[0], r.weights[size_t(k + 1)]));
  EXPECT_TRUE(std::isfinite(r.sum.last_loss));
  // Every rank counted the same skips.
  int64_t mine[1] = {k}, most[1] = {k};
  MPI_Allreduce(mine, most, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  EXPECT_EQ(most[0], k);
  // A static 2^127 stops at the first step, on every rank.
  c.loss_scale = "1.7014118346046923e38";
  c.steps = 2;
  EXPECT_THROW(run(world, c), Error);
  MPI_Barrier(MPI_COMM_WORLD);
  if (world.rank() == 0) std::remove(data.c_str());
}

}  // namespace
}  // namespace ft
