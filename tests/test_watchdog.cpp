/// @brief Issue 5: the collective-timeout settings (FT_COLLECTIVE_TIMEOUT, --collective-timeout)
/// and the option plumbing of `--resume` adopting stored settings. The watchdog's abort itself
/// runs end to end in tests/faults/stall_rank.sh (a stalled rank under mpirun).
#include <gtest/gtest.h>

#include <cstdlib>

#include "firetrain/comm/watchdog.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/train/options.hpp"
#include "firetrain/train/trainer.hpp"

namespace ft {
namespace {

struct EnvGuard {
  explicit EnvGuard(const char* value) {
    if (const char* e = std::getenv("FT_COLLECTIVE_TIMEOUT")) old = e, had = true;
    if (value)
      setenv("FT_COLLECTIVE_TIMEOUT", value, 1);
    else
      unsetenv("FT_COLLECTIVE_TIMEOUT");
  }
  ~EnvGuard() {
    if (had)
      setenv("FT_COLLECTIVE_TIMEOUT", old.c_str(), 1);
    else
      unsetenv("FT_COLLECTIVE_TIMEOUT");
  }
  std::string old;
  bool had = false;
};

TEST(CollectiveTimeout, DefaultIs300SecondsOrTheEnvironment) {
  {
    EnvGuard g(nullptr);
    EXPECT_EQ(default_collective_timeout(), 300.0);
    EXPECT_EQ(TrainConfig().collective_timeout, 300.0);
  }
  {
    EnvGuard g("2.5");
    EXPECT_EQ(default_collective_timeout(), 2.5);
    EXPECT_EQ(TrainConfig().collective_timeout, 2.5);
  }
  {
    EnvGuard g("0");
    EXPECT_EQ(default_collective_timeout(), 0.0);  // disabled
  }
  for (const char* bad : {"abc", "-1", "5s", "nan"}) {
    EnvGuard g(bad);
    EXPECT_THROW(default_collective_timeout(), InputError) << bad;
  }
}

TEST(CollectiveTimeout, FlagIsValidatedAndSet) {
  TrainConfig c;
  Options o("train", "");
  add_train_options(o, c);
  const char* argv[] = {"train", "--data", "x.h5", "--steps", "1", "--collective-timeout", "7"};
  ASSERT_TRUE(o.parse(7, const_cast<char**>(argv)));
  EXPECT_EQ(c.collective_timeout, 7.0);
  EXPECT_NO_THROW(validate(c, 1));
  c.collective_timeout = -1;
  EXPECT_THROW(validate(c, 1), InputError);
  EXPECT_THROW(set_collective_timeout(-3), InputError);
  const double before = collective_timeout();
  set_collective_timeout(42);
  EXPECT_EQ(collective_timeout(), 42.0);
  set_collective_timeout(before);
}

TEST(CollectiveTimeout, ScopesOutsideACollectiveAreHarmless) {
  // With the watchdog enabled, a short scope (and a nested one) neither aborts nor blocks.
  const double before = collective_timeout();
  set_collective_timeout(5);
  {
    CollectiveScope outer(MPI_COMM_WORLD, "test outer", 8);
    CollectiveScope inner(MPI_COMM_WORLD, "test inner", 8);
  }
  collective_begin(MPI_COMM_WORLD, "test bucket", 16, 3, collective_clock());
  collective_end();
  set_collective_timeout(before);
  SUCCEED();
}

TEST(ResumeConfig, AssignDefaultKeepsWhatTheUserGave) {
  TrainConfig c;
  Options o("train", "");
  add_train_options(o, c);
  const char* argv[] = {"train", "--lr", "0.5"};
  ASSERT_TRUE(o.parse(3, const_cast<char**>(argv)));
  EXPECT_FALSE(o.assign_default("lr", "0.25", "ckpt"));  // given: stays
  EXPECT_EQ(c.lr, 0.5);
  EXPECT_TRUE(o.assign_default("batch", "24", "ckpt"));  // not given: taken
  EXPECT_EQ(c.batch, 24);
  EXPECT_FALSE(o.was_set("batch"));
  EXPECT_TRUE(o.assign_default("shuffle", "false", "ckpt"));  // --no-shuffle stored as false
  EXPECT_FALSE(c.shuffle);
  EXPECT_FALSE(o.assign_default("no-such-key", "1", "ckpt"));
  EXPECT_THROW(o.assign_default("epochs", "many", "ckpt"), InputError);
}

}  // namespace
}  // namespace ft
