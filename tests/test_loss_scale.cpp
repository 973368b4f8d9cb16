/// @brief Loss scaling (--loss-scale, train/loss_scaler.hpp): the LossScaler's GradScaler rule,
/// option validation, and short CPU trainings through the firetrain binary (1 rank): scaled
/// runs bit-identical to unscaled ones, overflowing steps skipped with the scale halved, growth,
/// the scaler state in checkpoints and an exact resume.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <regex>

#include "common/cli.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/h5.hpp"
#include "firetrain/io/weights.hpp"
#include "firetrain/train/loss_scaler.hpp"
#include "firetrain/train/trainer.hpp"

namespace ft {
namespace {

namespace fs = std::filesystem;
using Mode = LossScaler::Mode;

LossScaler dynamic_scaler(double init, int64_t interval) {
  return LossScaler(LossScaler::parse("dynamic", "fp32", init, interval));
}

// ---------------------------------------------------------------------------------------------
// LossScaler alone.

TEST(LossScaleUnit, ParseModes) {
  EXPECT_EQ(LossScaler::parse("auto", "fp32", 65536, 2000).mode, Mode::None);
  EXPECT_EQ(LossScaler::parse("auto", "bf16", 65536, 2000).mode, Mode::None);
  EXPECT_EQ(LossScaler::parse("auto", "fp16", 65536, 2000).mode, Mode::Dynamic);
  EXPECT_EQ(LossScaler::parse("auto", "fp16", 1024, 2000).scale, 1024);
  EXPECT_EQ(LossScaler::parse("none", "fp16", 65536, 2000).mode, Mode::None);
  EXPECT_EQ(LossScaler::parse("none", "fp32", 65536, 2000).scale, 1);
  auto d = LossScaler::parse("dynamic", "fp32", 0x1p127, 7);
  EXPECT_EQ(d.mode, Mode::Dynamic);
  EXPECT_EQ(d.scale, 0x1p127);
  EXPECT_EQ(d.growth_interval, 7);
  auto s = LossScaler::parse("1024", "fp32", 65536, 2000);
  EXPECT_EQ(s.mode, Mode::Static);
  EXPECT_EQ(s.scale, 1024);
  EXPECT_EQ(LossScaler::parse("0.25", "fp32", 65536, 2000).scale, 0.25);
  EXPECT_EQ(LossScaler::parse("1", "fp32", 65536, 2000).scale, 1);
  EXPECT_EQ(LossScaler(LossScaler::parse("none", "fp32", 65536, 1)).scale(), 1.f);
}

TEST(LossScaleUnit, BadValuesAreInputErrors) {
  for (const char* bad : {"3", "-1", "nan", "inf", "0", "foo", "", "1024x", "0x1p128", "1e-30"}) {
    EXPECT_THROW(LossScaler::parse(bad, "fp32", 65536, 2000), InputError) << bad;
  }
  for (double init : {3.0, -1.0, 0.0, double(NAN), double(INFINITY), 0x1p128, 0x1p-25})
    EXPECT_THROW(LossScaler::parse("dynamic", "fp32", init, 2000), InputError) << init;
  EXPECT_THROW(LossScaler::parse("dynamic", "fp32", 65536, 0), InputError);
  EXPECT_THROW(LossScaler::parse("none", "fp32", 65536, -5), InputError);
  // The message says why powers of two.
  try {
    LossScaler::parse("3", "fp32", 65536, 2000);
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("power of two"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("exact"), std::string::npos) << e.what();
  }
  // Through validate(), as `firetrain train` runs it before any work.
  TrainConfig c;
  c.data = "x.h5";
  c.steps = 1;
  EXPECT_NO_THROW(validate(c, 1));
  for (const char* bad : {"3", "-1", "nan", "foo"}) {
    c.loss_scale = bad;
    EXPECT_THROW(validate(c, 1), InputError) << bad;
  }
  c.loss_scale = "dynamic";
  c.loss_scale_growth_interval = 0;
  EXPECT_THROW(validate(c, 1), InputError);
  c.loss_scale_growth_interval = 1;
  c.loss_scale_init = 1000;
  EXPECT_THROW(validate(c, 1), InputError);
  c.loss_scale_init = 1024;
  EXPECT_NO_THROW(validate(c, 1));
}

TEST(LossScaleUnit, HalvesOnOverflowAndSkips) {
  LossScaler s = dynamic_scaler(65536, 2000);
  EXPECT_EQ(s.scale(), 65536.f);
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.state().good_steps, 1);
  EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale(), 32768.f);
  EXPECT_EQ(s.state().good_steps, 0);  // the run of finite steps restarts
  EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale(), 16384.f);
  EXPECT_EQ(s.skipped(), 2);
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 16384.f);
}

TEST(LossScaleUnit, GrowsAfterExactlyTheInterval) {
  LossScaler s = dynamic_scaler(1024, 3);
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(s.update(true));
    EXPECT_EQ(s.scale(), 1024.f) << i;
  }
  EXPECT_TRUE(s.update(true));  // the third finite step in a row
  EXPECT_EQ(s.scale(), 2048.f);
  EXPECT_EQ(s.state().good_steps, 0);
  // An overflow in between restarts the count.
  EXPECT_TRUE(s.update(true));
  EXPECT_TRUE(s.update(true));
  EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale(), 1024.f);
  EXPECT_TRUE(s.update(true));
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 1024.f);
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 2048.f);
  // Interval 1: every finite step doubles, up to 2^127 (2^128 is not a float).
  LossScaler t = dynamic_scaler(0x1p125, 1);
  EXPECT_TRUE(t.update(true));
  EXPECT_TRUE(t.update(true));
  EXPECT_TRUE(t.update(true));
  EXPECT_EQ(t.scale(), 0x1p127f);
  EXPECT_TRUE(std::isfinite(t.scale()));
}

TEST(LossScaleUnit, FloorThrows) {
  LossScaler s = dynamic_scaler(0x1p-22, 2000);
  EXPECT_TRUE(s.can_skip());
  EXPECT_FALSE(s.update(false));
  EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale(), 0x1p-24f);
  EXPECT_FALSE(s.can_skip());
  EXPECT_THROW(s.update(false), Error);
  // none and static never skip.
  LossScaler n(LossScaler::parse("none", "fp32", 65536, 2000));
  EXPECT_FALSE(n.can_skip());
  EXPECT_THROW(n.update(false), Error);
  LossScaler st(LossScaler::parse("1024", "fp32", 65536, 2000));
  EXPECT_FALSE(st.can_skip());
  EXPECT_THROW(st.update(false), Error);
  EXPECT_TRUE(st.update(true));
  EXPECT_EQ(st.scale(), 1024.f);  // static: no growth
}

TEST(LossScaleUnit, StateRoundTrip) {
  LossScaler a = dynamic_scaler(65536, 4);
  for (bool f : {true, false, true, true, false, false, true, true}) (void)a.update(f);
  LossScaler b = dynamic_scaler(65536, 4);
  b.restore(a.state());
  for (bool f : {true, true, false, true, true, true, true, true}) {
    EXPECT_EQ(a.update(f), b.update(f));
    EXPECT_EQ(a.scale(), b.scale());
    EXPECT_EQ(a.state().good_steps, b.state().good_steps);
    EXPECT_EQ(a.skipped(), b.skipped());
  }
  EXPECT_THROW(b.restore({3.0, 0, 0}), InputError);
  EXPECT_THROW(b.restore({1024, -1, 0}), InputError);
  EXPECT_EQ(LossScaler::format(65536), "65536");
  EXPECT_EQ(LossScaler::format(0.5), "0.5");
  EXPECT_EQ(LossScaler::format(0x1p127), "2^127");
  EXPECT_EQ(LossScaler::format(0x1p-24), "2^-24");
}

// The state in a checkpoint file, and a checkpoint without it (older files) still loadable.
TEST(LossScaleUnit, CheckpointStateRoundTrip) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("ft_ls_ckpt_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::vector<float> arena(30, 0.25f), mom(30, 0.f);
  std::vector<ParamView> v(1);
  v[0].name = "a.weight", v[0].shape = {30}, v[0].offset = 0, v[0].data = arena.data();
  CheckpointState st;
  st.step = 9;
  st.has_loss_scale = true;
  st.loss_scale = 0x1p100;
  st.loss_scale_good_steps = 3;
  st.loss_scale_skipped = 27;
  save_checkpoint((dir / "a.h5").string(), v, mom.data(), mom.size(), st);
  CheckpointState got = load_checkpoint((dir / "a.h5").string(), v, mom.data());
  EXPECT_TRUE(got.has_loss_scale);
  EXPECT_EQ(got.loss_scale, 0x1p100);
  EXPECT_EQ(got.loss_scale_good_steps, 3);
  EXPECT_EQ(got.loss_scale_skipped, 27);
  save_checkpoint((dir / "b.h5").string(), v, mom.data(), mom.size(), CheckpointState{});
  CheckpointState old = load_checkpoint((dir / "b.h5").string(), v, mom.data());
  EXPECT_FALSE(old.has_loss_scale);
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Trainings through the binary (helpers: tests/common/cli.hpp).

using CliRun = test::CmdResult;
CliRun run(const std::string& args) { return test::run_firetrain(args); }
bool identical(const std::string& a, const std::string& b, const std::string& group) {
  return bool(test::same_tensors(a, b, group));
}

/// Whether every element of `group` is zero (an untouched momentum buffer).
bool all_zero(const std::string& path, const std::string& group) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::Handle f = h5::open_file(path);
  for (auto& n : h5::list_datasets(f, group))
    for (float x : h5::read_dataset<float>(f, group + "/" + n))
      if (x != 0.f) return false;
  return true;
}

struct ScalerAttrs {
  bool has = false;
  double scale = 0;
  int64_t good = -1, skipped = -1;
};
ScalerAttrs scaler_attrs(const std::string& path) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::Handle f = h5::open_file(path);
  ScalerAttrs a;
  a.has = h5::has_attr(f, "loss_scale");
  if (!a.has) return a;
  a.scale = h5::read_attr_double(f, "loss_scale");
  a.good = h5::read_attr_int64(f, "loss_scale_good_steps");
  a.skipped = h5::read_attr_int64(f, "loss_scale_skipped");
  return a;
}

class LossScaleTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("ft_loss_scale_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write_data("d.h5", {});
  }
  /// test_resume.cpp's data: 64 images of 28x28x1, 10 classes, a bright square per class;
  /// `std`: the dataset's normalization (empty: none, pixels in [0, 1]).
  void write_data(const std::string& name, const std::vector<float>& std) {
    test::write_square_dataset(p(name), 64, std);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string p(const std::string& name) const { return (dir_ / name).string(); }
  /// Shuffle, augmentation and dropout on; 4 steps per epoch; momentum and weight decay on.
  std::string train(const std::string& ckdir, int steps, const std::string& data = "d.h5") const {
    return "train --data " + p(data) + " --steps " + std::to_string(steps) +
           " --batch 16 --lr 0.01 --warmup-steps 3 --threads 1 --dropout 0.5 --log-every 4 "
           "--progress plain --checkpoint-dir " +
           p(ckdir);
  }
  fs::path dir_;
};

// Scaling by a power of two and unscaling is exact: dynamic (2^16, growing to 2^19 on the way)
// and static 1024 give the weights and momentum of the unscaled run bit for bit, in fp32 and
// in bf16 (the bf16 rounding of gradients inside the convolutions is scale-invariant too).
TEST_F(LossScaleTrain, ScaledRunsAreBitIdenticalToUnscaled) {
  for (const std::string prec : {"fp32", "bf16"}) {
    SCOPED_TRACE(prec);
    const std::string base = " --precision " + prec;
    CliRun none = run(train(prec + "_none", 6) + base + " --loss-scale none");
    ASSERT_EQ(none.code, 0) << none.out;
    EXPECT_EQ(none.out.find("loss scale"), std::string::npos) << none.out;
    CliRun dyn = run(train(prec + "_dyn", 6) + base +
                     " --loss-scale dynamic --loss-scale-growth-interval 2");
    ASSERT_EQ(dyn.code, 0) << dyn.out;
    EXPECT_NE(dyn.out.find("loss scale: dynamic, 65536"), std::string::npos) << dyn.out;
    EXPECT_NE(dyn.out.find("loss scale: dynamic, final 524288, 0 step(s) skipped"),
              std::string::npos)
        << dyn.out;
    CliRun st = run(train(prec + "_static", 6) + base + " --loss-scale 1024");
    ASSERT_EQ(st.code, 0) << st.out;
    EXPECT_NE(st.out.find("loss scale: static, 1024"), std::string::npos) << st.out;
    const std::string ref = p(prec + "_none/ckpt_6.h5");
    for (const std::string other : {prec + "_dyn", prec + "_static"}) {
      EXPECT_TRUE(identical(ref, p(other + "/ckpt_6.h5"), "model")) << other;
      EXPECT_TRUE(identical(ref, p(other + "/ckpt_6.h5"), "optimizer/momentum")) << other;
    }
    // The state is stored for the dynamic run only.
    EXPECT_FALSE(scaler_attrs(ref).has);
    EXPECT_FALSE(scaler_attrs(p(prec + "_static/ckpt_6.h5")).has);
    ScalerAttrs a = scaler_attrs(p(prec + "_dyn/ckpt_6.h5"));
    EXPECT_TRUE(a.has);
    EXPECT_EQ(a.scale, 524288.0);
    EXPECT_EQ(a.good, 0);
    EXPECT_EQ(a.skipped, 0);
  }
}

// The largest scale a float holds, 2^127, does not overflow the gradient of the usual test data
// (pixels in [0, 1]: every gradient element is below 2 there). With the data normalized by
// std 1/64 (pixels up to 55) the net at init is positively homogeneous (ReLU convolutions,
// zero biases), so the activations, and the weight gradients with them, grow ~64-fold: the first
// steps at 2^127 overflow (dlogits themselves stay finite, |p - y| * 2^127 / 16 < 2^124; the
// weight gradients, sums over pixels and samples, reach Inf). Those steps are skipped (weights
// and momentum untouched, the step counter advancing), the scale halves each time (5 times,
// measured), and training then goes on with a finite loss from the scale that fits (lr 0.001:
// the large inputs would make 0.01 diverge).
TEST_F(LossScaleTrain, OverflowSkipsStepsAndHalvesTheScale) {
  write_data("big.h5", {1.f / 64});
  CliRun r = run(train("ck", 40, "big.h5") +
                 " --lr 0.001 --loss-scale dynamic --loss-scale-init 1.7014118346046923e38 "
                 "--loss-scale-growth-interval 1000 --checkpoint-every 1 --keep-checkpoints 0");
  ASSERT_EQ(r.code, 0) << r.out;
  // One line per skipped step, consecutive from step 0, each halving the scale.
  std::regex re(
      "step ([0-9]+): non-finite gradient, step skipped, loss scale 2\\^([0-9]+) -> "
      "2\\^([0-9]+)");
  int k = 0;
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), re); it != std::sregex_iterator();
       ++it, ++k) {
    EXPECT_EQ(std::stoi((*it)[1]), k) << r.out;
    EXPECT_EQ(std::stoi((*it)[2]), 127 - k) << r.out;
    EXPECT_EQ(std::stoi((*it)[3]), 126 - k) << r.out;
  }
  ASSERT_GE(k, 1) << "2^127 did not overflow the gradient:\n" << r.out;
  ASSERT_LT(k, 40) << r.out;
  // Skipped steps: the weights of ckpt_1 .. ckpt_k are the same and the momentum is still zero
  // (sgd_update would have written g + wd * w into it); step k + 1 is applied.
  for (int s = 1; s <= k; ++s) {
    const std::string f = p("ck/ckpt_" + std::to_string(s) + ".h5");
    EXPECT_TRUE(all_zero(f, "optimizer/momentum")) << f;
    if (s > 1) EXPECT_TRUE(identical(p("ck/ckpt_1.h5"), f, "model")) << f;
    EXPECT_EQ(scaler_attrs(f).skipped, s) << f;
    EXPECT_EQ(scaler_attrs(f).scale, std::ldexp(1.0, 127 - s)) << f;
  }
  const std::string next = p("ck/ckpt_" + std::to_string(k + 1) + ".h5");
  EXPECT_FALSE(all_zero(next, "optimizer/momentum"));
  EXPECT_FALSE(identical(p("ck/ckpt_1.h5"), next, "model"));
  EXPECT_EQ(scaler_attrs(next).good, 1);
  // The end of training: finite loss, the skips counted, the final scale.
  EXPECT_EQ(r.out.find("non-finite (NaN"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("loss scale: dynamic, final 2^" + std::to_string(127 - k) + ", " +
                       std::to_string(k) + " step(s) skipped (non-finite gradient) in 40 steps"),
            std::string::npos)
      << r.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("step +40/40 .* loss ([0-9.]+) "))) << r.out;
  EXPECT_TRUE(std::isfinite(std::stod(m[1]))) << r.out;
  // A static scale 2^127: the same overflow is the usual error naming the step.
  CliRun st = run(train("st", 4, "big.h5") + " --lr 0.001 --loss-scale 1.7014118346046923e38");
  EXPECT_EQ(st.code, 1) << st.out;
  EXPECT_NE(st.out.find("non-finite gradient (NaN or Inf) at step 0"), std::string::npos) << st.out;
}

// Growth: interval 2 doubles the scale every 2 finite steps; interval 3 over 8 steps: twice,
// with 2 finite steps counted towards the next.
TEST_F(LossScaleTrain, ScaleGrowsEveryIntervalFiniteSteps) {
  CliRun a = run(train("a", 8) +
                 " --loss-scale dynamic --loss-scale-init 1024 "
                 "--loss-scale-growth-interval 2");
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_NE(a.out.find("loss scale: dynamic, final 16384, 0 step(s) skipped"), std::string::npos)
      << a.out;
  ScalerAttrs sa = scaler_attrs(p("a/ckpt_8.h5"));
  EXPECT_EQ(sa.scale, 16384.0);
  EXPECT_EQ(sa.good, 0);
  CliRun b = run(train("b", 8) +
                 " --loss-scale dynamic --loss-scale-init 1024 "
                 "--loss-scale-growth-interval 3");
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_NE(b.out.find("loss scale: dynamic, final 4096, 0 step(s) skipped"), std::string::npos)
      << b.out;
  ScalerAttrs sb = scaler_attrs(p("b/ckpt_8.h5"));
  EXPECT_EQ(sb.scale, 4096.0);
  EXPECT_EQ(sb.good, 2);
  EXPECT_EQ(sb.skipped, 0);
}

// Exact resume with dynamic scaling: starting at 2^127 with interval 2 on the overflowing data
// (see above), the scale falls by skipped steps, then climbs back every 2 finite steps until it
// overflows again; stopping in the middle and resuming gives the uninterrupted run's weights,
// momentum and scaler state (the momentum starts at the first applied step in both).
TEST_F(LossScaleTrain, ResumeIsBitIdenticalWithDynamicScaling) {
  write_data("big.h5", {1.f / 64});
  const std::string ls =
      " --lr 0.001 --loss-scale dynamic --loss-scale-init "
      "1.7014118346046923e38 --loss-scale-growth-interval 2";
  CliRun a = run(train("straight", 24, "big.h5") + ls);
  ASSERT_EQ(a.code, 0) << a.out;
  // Find where the first run of skips ends and stop a few steps after, so the resumed run
  // starts from a non-initial scale with finite steps already counted.
  int skips = 0;
  for (size_t at = a.out.find("step skipped"); at != std::string::npos;
       at = a.out.find("step skipped", at + 1))
    ++skips;
  ASSERT_GE(skips, 1) << a.out;
  ScalerAttrs sa = scaler_attrs(p("straight/ckpt_24.h5"));
  EXPECT_EQ(sa.skipped, skips);
  // Stop two steps after the first run of skips (one finite step then counted towards growth),
  // or at 12 if that run is too long.
  int stop = 12, last = -1;
  const std::regex skip_re("step ([0-9]+): non-finite gradient");
  for (auto it = std::sregex_iterator(a.out.begin(), a.out.end(), skip_re);
       it != std::sregex_iterator(); ++it) {
    const int s = std::stoi((*it)[1]);
    if (last >= 0 && s != last + 1) break;
    last = s;
  }
  if (last + 2 < 23) stop = last + 2;
  SCOPED_TRACE("stop at " + std::to_string(stop));
  CliRun b = run(train("split", 24, "big.h5") + ls + " --stop-at " + std::to_string(stop));
  ASSERT_EQ(b.code, 0) << b.out;
  ScalerAttrs mid = scaler_attrs(p("split/ckpt_" + std::to_string(stop) + ".h5"));
  EXPECT_TRUE(mid.has);
  EXPECT_GE(mid.skipped, 1);
  CliRun c = run(train("split", 24, "big.h5") + ls + " --resume auto");
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_NE(c.out.find("resumed from"), std::string::npos) << c.out;
  EXPECT_TRUE(identical(p("straight/ckpt_24.h5"), p("split/ckpt_24.h5"), "model"));
  EXPECT_TRUE(identical(p("straight/ckpt_24.h5"), p("split/ckpt_24.h5"), "optimizer/momentum"));
  ScalerAttrs sc = scaler_attrs(p("split/ckpt_24.h5"));
  EXPECT_EQ(sc.scale, sa.scale);
  EXPECT_EQ(sc.good, sa.good);
  EXPECT_EQ(sc.skipped, sa.skipped);
}

TEST_F(LossScaleTrain, BadValuesExitWithCode2BeforeTraining) {
  for (const std::string bad :
       {"--loss-scale 3", "--loss-scale -1", "--loss-scale nan", "--loss-scale foo",
        "--loss-scale-growth-interval 0", "--loss-scale dynamic --loss-scale-init 1000"}) {
    CliRun r = run(train("x", 2) + " " + bad);
    EXPECT_EQ(r.code, 2) << bad << "\n" << r.out;
    EXPECT_NE(r.out.find("--loss-scale"), std::string::npos) << bad << "\n" << r.out;
    EXPECT_EQ(r.out.find("step "), std::string::npos) << "trained before failing:\n" << r.out;
  }
}

}  // namespace
}  // namespace ft
