/// @brief The HDF5 validation child (src/io/sandbox.cpp): a normal file passes and is validated
/// once, a child that crashes or hangs becomes one InputError naming the file, reader errors come
/// back unchanged, FIRETRAIN_H5_SANDBOX=0 turns it off, the fuzzer's regression inputs (crashes
/// inside libhdf5 among them) are rejected cleanly, and forking next to OpenMP threads and a
/// thread reading HDF5 is safe. Crashes and hangs are simulated with the test-only child hook.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "firetrain/core/error.hpp"
#include "firetrain/core/params.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/inspect.hpp"
#include "firetrain/io/sandbox.hpp"
#include "firetrain/io/weights.hpp"

namespace ft {
namespace {

namespace fs = std::filesystem;

/// Sets (or unsets, value nullptr) an environment variable for the scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_.c_str(), old_.c_str(), 1);
    else
      unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

/// Installs a child hook for the scope.
struct ScopedHook {
  explicit ScopedHook(void (*h)(const std::string&)) { sandbox::testing::set_child_hook(h); }
  ~ScopedHook() { sandbox::testing::set_child_hook(nullptr); }
};

void crash_hook(const std::string&) { raise(SIGSEGV); }
void hang_hook(const std::string&) {
  for (;;) pause();
}

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("ft_sandbox_" + std::to_string(getpid()));
    fs::create_directories(dir_);
    sandbox::forget_all();
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string p(const std::string& name) const { return (dir_ / name).string(); }

  /// A 10-sample 6x6x1 dataset; labels shifted by `label_offset` (10: out of range).
  std::string dataset(const std::string& name, int label_offset = 0) {
    std::vector<uint8_t> img(10 * 6 * 6);
    for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(i * 13);
    std::vector<int32_t> lab(10);
    for (int i = 0; i < 10; ++i) lab[size_t(i)] = (i % 3) + label_offset;
    write_dataset(p(name), img.data(), lab.data(), 10, 6, 6, 1, 3, {"a", "b", "c"});
    return p(name);
  }

  fs::path dir_;
};

/// A small model and its checkpoint.
struct Model {
  std::vector<float> arena = std::vector<float>(40), mom = std::vector<float>(40);
  std::vector<ParamView> views = std::vector<ParamView>(2);
  Model() {
    views[0].name = "features.0.weight", views[0].shape = {4, 1, 3, 3}, views[0].offset = 0;
    views[1].name = "features.0.bias", views[1].shape = {4}, views[1].offset = 36;
    for (auto& v : views) v.data = arena.data() + v.offset;
  }
  std::string save(const std::string& path) {
    for (size_t i = 0; i < arena.size(); ++i) arena[i] = 0.5f * float(i), mom[i] = 0.25f;
    CheckpointState st;
    st.step = 7;
    save_checkpoint(path, views, mom.data(), mom.size(), st);
    return path;
  }
};

TEST_F(SandboxTest, NormalFilePassesOnceAndIsReadAsWithoutIt) {
  const std::string f = dataset("ok.h5");
  const sandbox::Stats before = sandbox::stats();
  Dataset ds = Dataset::open(f);
  const sandbox::Stats after = sandbox::stats();
  EXPECT_EQ(after.children, before.children + 1) << "one child for the dataset";
  EXPECT_EQ(ds.size(), 10);
  EXPECT_EQ(ds.label(4), 1);
  EXPECT_EQ(ds.class_names()[2], "c");
  EXPECT_GT(after.last_seconds, 0.0);
  // The child is gone (reaped): no zombie left behind.
  EXPECT_EQ(kill(after.last_child, 0), -1);
  EXPECT_EQ(errno, ESRCH);
  Dataset plain;
  {
    ScopedEnv off("FIRETRAIN_H5_SANDBOX", "0");
    plain = Dataset::open(f);
  }
  std::vector<float> a(36), b(36);
  int64_t i = 9;
  ds.read_images(&i, 1, a.data());
  plain.read_images(&i, 1, b.data());
  EXPECT_EQ(a, b);
}

TEST_F(SandboxTest, CacheValidatesAFileOncePerProcessUntilItChanges) {
  const std::string f = dataset("cached.h5");
  Model m;
  const std::string ck = m.save(p("ckpt_7.h5"));
  const sandbox::Stats s0 = sandbox::stats();
  Dataset::open(f);
  Dataset::open(f, 0);
  Dataset::open(f);
  const sandbox::Stats s1 = sandbox::stats();
  EXPECT_EQ(s1.children, s0.children + 1);
  EXPECT_GE(s1.cache_hits, s0.cache_hits + 2);
  // Another kind of read of another file: its own child; then generic opens are cached too.
  EXPECT_EQ(load_checkpoint(ck, m.views, m.mom.data()).step, 7);
  EXPECT_EQ(load_checkpoint(ck, m.views, m.mom.data()).step, 7);
  EXPECT_EQ(read_root_attr(ck, "format"), kCheckpointFormat);
  EXPECT_EQ(sandbox::stats().children, s1.children + 1);
  // A new modification time (the file rewritten in place) is validated again.
  struct timespec ts[2] = {{0, UTIME_OMIT}, {1234567890, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, f.c_str(), ts, 0), 0);
  Dataset::open(f);
  EXPECT_EQ(sandbox::stats().children, s1.children + 2);
  sandbox::forget_all();
  Dataset::open(f);
  EXPECT_EQ(sandbox::stats().children, s1.children + 3);
}

TEST_F(SandboxTest, ChildCrashIsOneInputErrorNamingTheFile) {
  const std::string f = dataset("crash.h5");
  Model m;
  const std::string ck = m.save(p("ckpt_crash.h5"));
  ScopedHook hook(crash_hook);
  auto expect_crash_error = [&](const std::string& path, auto read) {
    try {
      read();
      ADD_FAILURE() << "no error for " << path;
    } catch (const InputError& e) {
      const std::string w = e.what();
      EXPECT_EQ(w, path + ": not a valid HDF5 file: libhdf5 crashed while reading it (SIGSEGV); "
                          "the file is corrupt or hostile");
    }
  };
  expect_crash_error(f, [&] { Dataset::open(f); });
  expect_crash_error(ck, [&] { load_checkpoint(ck, m.views, m.mom.data()); });
  expect_crash_error(ck, [&] { load_weights_h5(ck, m.views); });
  expect_crash_error(ck, [&] { read_root_attr(ck, "step"); });  // h5::open_file's check
  EXPECT_FALSE(is_checkpoint(ck));
  // The crash is remembered: the same error without another child.
  const int64_t children = sandbox::stats().children;
  expect_crash_error(f, [&] { Dataset::open(f); });
  EXPECT_EQ(sandbox::stats().children, children);
}

TEST_F(SandboxTest, HangIsKilledAfterTheTimeout) {
  const std::string f = dataset("hang.h5");
  ScopedEnv timeout("FIRETRAIN_H5_SANDBOX_TIMEOUT", "1");
  ScopedHook hook(hang_hook);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    Dataset::open(f);
    ADD_FAILURE() << "a hanging child was not reported";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              f + ": not a valid HDF5 file: libhdf5 did not finish reading its metadata in 1 s "
                  "(the file is corrupt; FIRETRAIN_H5_SANDBOX_TIMEOUT sets the limit)");
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(s, 0.9);
  EXPECT_LT(s, 10.0);
  const pid_t child = sandbox::stats().last_child;
  EXPECT_EQ(kill(child, 0), -1) << "child " << child << " still exists";
  EXPECT_EQ(errno, ESRCH);
}

TEST_F(SandboxTest, ReaderErrorsComeBackUnchangedFromTheChild) {
  const std::string f = dataset("bad_labels.h5", 10);
  Model m;
  std::string plain_msg, ds_msg;
  {
    ScopedEnv off("FIRETRAIN_H5_SANDBOX", "0");
    try {
      Dataset::open(f);
    } catch (const InputError& e) {
      plain_msg = e.what();
    }
  }
  ASSERT_NE(plain_msg.find("out of range"), std::string::npos) << plain_msg;
  const int64_t children = sandbox::stats().children;
  for (int rep = 0; rep < 2; ++rep) {  // the second time from the cache
    try {
      Dataset::open(f);
    } catch (const InputError& e) {
      ds_msg = e.what();
    }
    EXPECT_EQ(ds_msg, plain_msg);
  }
  EXPECT_EQ(sandbox::stats().children, children + 1);
  // A dataset is not a checkpoint: the reader's own message, through the child.
  try {
    load_checkpoint(f, m.views, m.mom.data());
    ADD_FAILURE();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), f + ": not a checkpoint (no /model group; a plain weights "
                                         "file?)");
  }
}

TEST_F(SandboxTest, DisabledByEnvironmentReadsInProcess) {
  const std::string f = dataset("off.h5");
  ScopedEnv off("FIRETRAIN_H5_SANDBOX", "0");
  ScopedHook hook(crash_hook);  // would crash any child
  EXPECT_FALSE(sandbox::enabled());
  const int64_t children = sandbox::stats().children;
  EXPECT_EQ(Dataset::open(f).size(), 10);
  EXPECT_EQ(sandbox::stats().children, children);
}

TEST_F(SandboxTest, BadTimeoutSettingIsAnInputError) {
  const std::string f = dataset("t.h5");
  ScopedEnv timeout("FIRETRAIN_H5_SANDBOX_TIMEOUT", "soon");
  try {
    Dataset::open(f);
    ADD_FAILURE();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("FIRETRAIN_H5_SANDBOX_TIMEOUT='soon'"), std::string::npos)
        << e.what();
  }
}

TEST_F(SandboxTest, MissingAndNonHdf5FilesKeepTheirMessagesWithoutAChild) {
  {
    std::ofstream(p("text.h5")) << "not hdf5\n";
  }
  const int64_t children = sandbox::stats().children;
  for (const std::string& f : {p("missing.h5"), p("text.h5")}) {
    try {
      Dataset::open(f);
      ADD_FAILURE();
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(sandbox::stats().children, children);
}

/// The fuzzer's regression inputs, several of which crash, hang or over-read inside libhdf5
/// 1.10.8, through every reader: success or one InputError naming the file. Run in a child
/// process so that a regression fails this test instead of killing the suite.
TEST(SandboxRegression, FuzzRegressionInputsAreRejectedCleanly) {
  const fs::path dir = fs::path(FT_TEST_DATA_DIR) / ".." / "fuzz" / "regressions";
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string f = e.path().string();
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      setenv("FIRETRAIN_H5_SANDBOX_TIMEOUT", "5", 1);
      Model m;
      int bad = 0;
      auto run = [&](auto read) {
        try {
          read();
        } catch (const InputError& x) {
          if (std::string(x.what()).find(f) == std::string::npos) bad |= 1;
        } catch (...) {
          bad |= 2;
        }
      };
      run([&] { Dataset::open(f, 0); });
      run([&] { Dataset::open(f); });
      run([&] { load_checkpoint(f, m.views, m.mom.data()); });
      run([&] { load_weights_h5(f, m.views); });
      run([&] { spec_from_file(f, ""); });
      run([&] { is_checkpoint(f); });
      _exit(bad ? 10 + bad : 0);
    }
    int status = 0;
    for (int i = 0; i < 600 && waitpid(pid, &status, WNOHANG) == 0; ++i) usleep(100000);
    if (waitpid(pid, &status, WNOHANG) == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ADD_FAILURE() << f << ": the readers did not finish in 60 s";
      continue;
    }
    ASSERT_TRUE(WIFEXITED(status)) << f << ": killed by signal " << WTERMSIG(status);
    EXPECT_EQ(WEXITSTATUS(status), 0)
        << f << ": 11: InputError without the path, 12: another exception";
  }
}

/// The child is forked from a process whose OpenMP team is up and whose other thread reads HDF5
/// all the while (the loader's prefetch thread does that): every fork happens with h5_mutex held,
/// so the child never inherits libhdf5 in the middle of a call.
TEST_F(SandboxTest, ForkNextToOpenMPThreadsAndAnHdf5ReadingThread) {
  const std::string a = dataset("a.h5"), b = dataset("b.h5");
  Dataset on_demand = Dataset::open(a, 0);
  double sum = 0;
#pragma omp parallel for num_threads(4) reduction(+ : sum)
  for (int i = 0; i < 1000; ++i) sum += i;
  ASSERT_EQ(sum, 499500.0);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> reads{0};
  std::thread reader([&] {
    std::vector<float> out(36);
    while (!stop) {
      int64_t i = reads % 10;
      on_demand.read_images(&i, 1, out.data());
      ++reads;
    }
  });
  for (int k = 0; k < 20; ++k) {
    sandbox::forget_all();
    EXPECT_EQ(Dataset::open(b).size(), 10);
  }
  stop = true;
  reader.join();
  EXPECT_GT(reads.load(), 0);
}

}  // namespace
}  // namespace ft
