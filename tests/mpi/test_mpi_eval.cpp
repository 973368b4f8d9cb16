/// @brief evaluate() across ranks: exact top-1/top-5 with tied logits, and NaN logits counted
/// as wrong (a NaN compares false with everything, which once made such rows "correct").
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "firetrain/comm/communicator.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/train/trainer.hpp"

namespace ft {
namespace {

TEST(MpiEvaluate, TiesAreExactAndNaNRowsAreWrong) {
  Communicator world;
  const int n = 30, S = 16, K = 10;
  const std::string path = ::testing::TempDir() + "ft_mpi_eval_np" +
                           std::to_string(world.size()) + ".h5";
  if (world.rank() == 0) {
    std::vector<uint8_t> img(size_t(n) * S * S);
    std::vector<int32_t> lab(n);
    for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t((i * 37) & 255);
    for (int i = 0; i < n; ++i) lab[size_t(i)] = (i * 7) % K;
    write_dataset(path, img.data(), lab.data(), n, S, S, 1, K, {});
  }
  MPI_Barrier(MPI_COMM_WORLD);
  Dataset ds = Dataset::open(path);
  int label0 = 0, below5 = 0;
  for (int i = 0; i < n; ++i) label0 += ds.label(i) == 0, below5 += ds.label(i) < 5;

  Net net(NetSpec{"squeezenet_small", 1, S, S, K, 0.5f});
  net.init_weights(1);
  // conv10 all zero: every logit is 0, ties go to the lower class index (torch.topk order):
  // top-1 = share of label 0, top-5 = share of labels 0..4.
  const ParamView *w10 = nullptr, *b10 = nullptr;
  for (auto& v : net.param_views()) {
    if (v.name == "classifier.1.weight") w10 = &v;
    if (v.name == "classifier.1.bias") b10 = &v;
  }
  ASSERT_TRUE(w10 && b10);
  std::fill(w10->data, w10->data + w10->numel(), 0.f);
  std::fill(b10->data, b10->data + b10->numel(), 0.f);
  net.params_from_host();
  EvalResult r = evaluate(net, ds, world, 7);
  EXPECT_EQ(r.n, n);
  EXPECT_DOUBLE_EQ(r.top1, double(label0) / n);
  EXPECT_DOUBLE_EQ(r.top5, double(below5) / n);
  EXPECT_NEAR(r.loss, std::log(double(K)), 1e-5);

  // One NaN logit per row (class 9's bias): no row is correct, at top-1 or top-5.
  b10->data[K - 1] = NAN;
  net.params_from_host();
  r = evaluate(net, ds, world, 7);
  EXPECT_EQ(r.n, n);
  EXPECT_EQ(r.top1, 0.0);
  EXPECT_EQ(r.top5, 0.0);
  EXPECT_TRUE(std::isnan(r.loss));
  MPI_Barrier(MPI_COMM_WORLD);
  if (world.rank() == 0) std::remove(path.c_str());
}

}  // namespace
}  // namespace ft
