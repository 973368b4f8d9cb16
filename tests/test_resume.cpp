/// @brief Checkpoint/resume and training faults through the firetrain binary (1 rank; the
/// 2-rank, SIGTERM and kill -9 cases are tests/faults/*.sh): exact resume, --resume auto
/// skipping a corrupt newest checkpoint, --keep-checkpoints, checksums, checkpoint write
/// failures, non-finite gradients.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "common/cli.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/h5.hpp"
#include "firetrain/io/weights.hpp"

namespace ft {
namespace {

namespace fs = std::filesystem;

using CliRun = test::CmdResult;
CliRun run(const std::string& args, const std::string& env = "") {
  return test::run_firetrain(args, env);
}
void expect_identical(const std::string& a, const std::string& b, const std::string& group) {
  EXPECT_TRUE(test::same_tensors(a, b, group));
}

/// Overwrites `len` bytes in the middle of a file (a bit-rotted or half-overwritten checkpoint).
void corrupt_middle(const std::string& path, size_t len = 65536) {
  const auto size = fs::file_size(path);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(std::streamoff(size / 2));
  std::string junk(len, '\x5a');
  f.write(junk.data(), std::streamsize(junk.size()));
}

class ResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("ft_resume_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // 64 images of 28x28x1, 10 classes: a bright 6x6 square whose place depends on the class.
    test::write_square_dataset(p("d.h5"), 64);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string p(const std::string& name) const { return (dir_ / name).string(); }
  /// Shuffle, augmentation and dropout on (the defaults); 4 steps per epoch.
  std::string train(const std::string& ckdir, int steps) const {
    return "train --data " + p("d.h5") + " --steps " + std::to_string(steps) +
           " --batch 16 --lr 0.01 --warmup-steps 3 --threads 1 --dropout 0.5 --log-every 4 "
           "--progress plain --checkpoint-dir " +
           p(ckdir);
  }
  fs::path dir_;
};

TEST_F(ResumeTest, StopAndResumeIsBitIdentical) {
  CliRun a = run(train("straight", 12));
  ASSERT_EQ(a.code, 0) << a.out;
  // Stop in the middle of epoch 1 (step 6 = epoch 1, position 2 of 4), then resume.
  CliRun b = run(train("split", 12) + " --stop-at 6");
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_NE(b.out.find("stopped after step 6/12"), std::string::npos) << b.out;
  EXPECT_FALSE(fs::exists(p("split/ckpt_12.h5")));
  CliRun c = run(train("split", 12) + " --resume auto");
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_NE(c.out.find("resumed from " + p("split/ckpt_6.h5") + ": step 6 of 12 (epoch 1, step 2"),
            std::string::npos)
      << c.out;
  expect_identical(p("straight/ckpt_12.h5"), p("split/ckpt_12.h5"), "model");
  expect_identical(p("straight/ckpt_12.h5"), p("split/ckpt_12.h5"), "optimizer/momentum");
  // The checkpoint records the sampler position and the run's shape.
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::Handle f = h5::open_file(p("split/ckpt_6.h5"));
  EXPECT_EQ(h5::read_attr_int64(f, "step"), 6);
  EXPECT_EQ(h5::read_attr_int64(f, "epoch"), 1);
  EXPECT_EQ(h5::read_attr_int64(f, "step_in_epoch"), 2);
  EXPECT_EQ(h5::read_attr_int64(f, "steps_per_epoch"), 4);
  EXPECT_EQ(h5::read_attr_int64(f, "global_batch"), 16);
  EXPECT_EQ(h5::read_attr_int64(f, "world_size"), 1);
  EXPECT_TRUE(h5::has_attr(f, "checksum_model"));
  EXPECT_NE(h5::read_attr_string(f, "config").find("\"dropout\": 0.5"), std::string::npos);
}

TEST_F(ResumeTest, AutoSkipsACorruptNewestCheckpointAndKeepsTheLastK) {
  CliRun a = run(train("ck", 10) + " --checkpoint-every 2 --keep-checkpoints 3");
  ASSERT_EQ(a.code, 0) << a.out;
  std::vector<std::string> left;
  for (auto& [step, path] : list_checkpoints(p("ck"))) left.push_back(fs::path(path).filename());
  EXPECT_EQ(left, (std::vector<std::string>{"ckpt_10.h5", "ckpt_8.h5", "ckpt_6.h5"}));
  corrupt_middle(p("ck/ckpt_10.h5"));
  fs::resize_file(p("ck/ckpt_8.h5"), fs::file_size(p("ck/ckpt_8.h5")) / 2);  // truncated
  CliRun b = run(train("ck", 12) + " --resume auto");
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_NE(b.out.find("skipping unusable checkpoint " + p("ck/ckpt_10.h5")), std::string::npos)
      << b.out;
  EXPECT_NE(b.out.find("skipping unusable checkpoint " + p("ck/ckpt_8.h5")), std::string::npos)
      << b.out;
  EXPECT_NE(b.out.find("resumed from " + p("ck/ckpt_6.h5")), std::string::npos) << b.out;
  // Everything unusable: exit 2 naming the files.
  for (auto& [step, path] : list_checkpoints(p("ck"))) corrupt_middle(path);
  CliRun c = run(train("ck", 12) + " --resume auto");
  EXPECT_EQ(c.code, 2) << c.out;
  EXPECT_NE(c.out.find("no valid checkpoint"), std::string::npos) << c.out;
}

TEST_F(ResumeTest, ResumeErrorsAndFreshStart) {
  CliRun fresh = run(train("empty", 2) + " --resume auto");
  ASSERT_EQ(fresh.code, 0) << fresh.out;
  EXPECT_NE(fresh.out.find("no checkpoint in"), std::string::npos) << fresh.out;
  CliRun missing = run(train("x", 2) + " --resume " + p("nope.h5"));
  EXPECT_EQ(missing.code, 2) << missing.out;
  EXPECT_NE(missing.out.find("nope.h5: no such file"), std::string::npos) << missing.out;
  // Another global batch: the sampler position would mean something else.
  CliRun batch = run(train("empty", 4) + " --batch 8 --resume " + p("empty/ckpt_2.h5"));
  EXPECT_EQ(batch.code, 2) << batch.out;
  EXPECT_NE(batch.out.find("global --batch 16, now 8"), std::string::npos) << batch.out;
  // Fewer steps than already done.
  CliRun beyond = run(train("empty", 1) + " --resume auto");
  EXPECT_EQ(beyond.code, 2) << beyond.out;
  EXPECT_NE(beyond.out.find("beyond the 1 steps"), std::string::npos) << beyond.out;
  // A changed learning rate is allowed, with a warning.
  CliRun lr = run(train("empty", 3) + " --lr 0.02 --resume auto");
  EXPECT_EQ(lr.code, 0) << lr.out;
  EXPECT_NE(lr.out.find("resuming with --lr 0.02"), std::string::npos) << lr.out;
  EXPECT_EQ(
      run(train("", 2).substr(0, train("", 2).find(" --checkpoint-dir")) + " --resume auto").code,
      2);
}

TEST_F(ResumeTest, CheckpointWriteFailureKeepsThePreviousOne) {
  // The checkpoint directory is a file: rejected before any work.
  std::ofstream(p("file")) << "x";
  CliRun a = run(train("file", 2));
  EXPECT_EQ(a.code, 2) << a.out;
  EXPECT_NE(a.out.find("--checkpoint-dir " + p("file")), std::string::npos) << a.out;
  EXPECT_EQ(a.out.find("step "), std::string::npos) << "trained before failing:\n" << a.out;
  // A directory where ckpt_4.h5 should go: the rename fails at step 4, ckpt_2 stays valid.
  fs::create_directories(p("ck/ckpt_4.h5"));
  CliRun b = run(train("ck", 8) + " --checkpoint-every 2");
  EXPECT_EQ(b.code, 1) << b.out;
  EXPECT_NE(b.out.find("cannot write checkpoint " + p("ck/ckpt_4.h5") + " at step 4"),
            std::string::npos)
      << b.out;
  EXPECT_NE(b.out.find("the previous checkpoint " + p("ck/ckpt_2.h5") + " is intact"),
            std::string::npos)
      << b.out;
  for (auto& e : fs::directory_iterator(p("ck")))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "left behind: " << e.path();
  fs::remove(p("ck/ckpt_4.h5"));
  CliRun c = run(train("ck", 6) + " --resume auto");
  EXPECT_EQ(c.code, 0) << c.out;
  EXPECT_NE(c.out.find("resumed from " + p("ck/ckpt_2.h5")), std::string::npos) << c.out;
}

TEST_F(ResumeTest, NonFiniteGradientStopsNamingTheStepAndKeepsTheLastGoodCheckpoint) {
  CliRun a = run(train("ck", 12) + " --checkpoint-every 4", "FT_TEST_NAN_GRAD_STEP=6");
  EXPECT_EQ(a.code, 1) << a.out;
  EXPECT_NE(a.out.find("non-finite gradient (NaN or Inf) at step 6"), std::string::npos) << a.out;
  EXPECT_NE(a.out.find("the last good checkpoint is " + p("ck/ckpt_4.h5")), std::string::npos)
      << a.out;
  EXPECT_EQ(latest_checkpoint(p("ck")), p("ck/ckpt_4.h5"));
  // A learning rate that overflows: a clear message, never a NaN checkpoint.
  CliRun b = run(train("ck2", 6) + " --lr 1e35 --warmup-steps 0");
  EXPECT_EQ(b.code, 1) << b.out;
  EXPECT_NE(b.out.find("non-finite"), std::string::npos) << b.out;
  EXPECT_EQ(latest_checkpoint(p("ck2")), "");
}

TEST_F(ResumeTest, ChecksumDetectsCorruptCheckpoints) {
  std::vector<float> arena(300);
  for (size_t i = 0; i < arena.size(); ++i) arena[i] = 0.01f * float(i);
  std::vector<ParamView> v(2);
  v[0].name = "a.weight", v[0].shape = {10, 10}, v[0].offset = 0;
  v[1].name = "b.weight", v[1].shape = {200}, v[1].offset = 100;
  for (auto& x : v) x.data = arena.data() + x.offset;
  std::vector<float> mom(arena.size(), 0.5f);
  save_checkpoint(p("c.h5"), v, mom.data(), mom.size(), {});
  EXPECT_EQ(checkpoint_problem(p("c.h5"), v), "");
  // Flip one weight in place, as a bit flip on disk would.
  {
    std::lock_guard<std::mutex> lock(h5_mutex());
    hid_t f = H5Fopen(p("c.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    hid_t d = H5Dopen2(f, "optimizer/momentum/b.weight", H5P_DEFAULT);
    std::vector<float> x(200, 0.5f);
    x[17] = 0.5000001f;
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x.data());
    H5Dclose(d);
    H5Fclose(f);
  }
  const std::string why = checkpoint_problem(p("c.h5"), v);
  EXPECT_NE(why.find("checksum mismatch in /optimizer/momentum"), std::string::npos) << why;
  std::vector<float> m2(arena.size());
  EXPECT_THROW(load_checkpoint(p("c.h5"), v, m2.data()), InputError);
  // Weights only (eval) do not read the momentum, and its checksum is not involved.
  EXPECT_NO_THROW(load_weights_h5(p("c.h5"), v));
}

}  // namespace
}  // namespace ft
