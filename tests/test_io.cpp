/// @brief HDF5 helpers, torch-h5 weights and checkpoints (IoTest): byte-exact round trips,
/// validation errors naming the file and the problem, atomic writes.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "firetrain/core/error.hpp"
#include "firetrain/core/params.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/h5.hpp"
#include "firetrain/io/weights.hpp"

namespace {

namespace fs = std::filesystem;
using ft::ParamView;

class IoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("firetrain_io_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  /// A small "model": three tensors in one arena, with deterministic values.
  void make_model(std::vector<float>& arena, std::vector<ParamView>& views, float base = 0.f) {
    const std::vector<std::pair<std::string, std::vector<int64_t>>> spec = {
        {"features.0.weight", {4, 3, 3, 3}},
        {"features.0.bias", {4}},
        {"classifier.1.weight", {10, 4, 1, 1}}};
    size_t total = 0;
    for (auto& s : spec) {
      size_t n = 1;
      for (auto d : s.second) n *= size_t(d);
      total += n;
    }
    arena.assign(total, 0.f);
    for (size_t i = 0; i < total; ++i) arena[i] = base + 0.001f * float(i) - 0.37f / float(i + 1);
    views.clear();
    size_t off = 0;
    for (auto& s : spec) {
      ParamView v;
      v.name = s.first;
      v.shape = s.second;
      v.offset = off;
      v.data = arena.data() + off;
      views.push_back(v);
      off += v.numel();
    }
  }

  /// Writes a torch-h5-like file with arbitrary datasets: name -> (shape, values as double),
  /// stored with `type`.
  void write_raw(const std::string& path,
                 const std::map<std::string, std::vector<int64_t>>& shapes, hid_t type) {
    std::lock_guard<std::mutex> lock(ft::h5_mutex());
    ft::h5::AtomicFile f(path);
    for (auto& [name, shape] : shapes) {
      size_t n = 1;
      for (auto d : shape) n *= size_t(d);
      std::vector<double> v(n, 0.5);
      ft::h5::Handle d = ft::h5::create_dataset(f, name, type, shape);
      ft::h5::write_all(d, H5T_NATIVE_DOUBLE, v.data());
    }
    f.commit();
  }

  std::map<std::string, std::vector<int64_t>> shapes_of(const std::vector<ParamView>& v) {
    std::map<std::string, std::vector<int64_t>> m;
    for (auto& p : v) m[p.name] = p.shape;
    return m;
  }

  /// Expects `fn` to throw ft::InputError whose message contains every word of `words`.
  template <class Fn>
  void expect_input_error(Fn fn, const std::vector<std::string>& words) {
    try {
      fn();
      ADD_FAILURE() << "no ft::InputError thrown (expected one mentioning " << words[0] << ")";
    } catch (const ft::InputError& e) {
      for (auto& w : words)
        EXPECT_NE(std::string(e.what()).find(w), std::string::npos)
            << "message lacks '" << w << "': " << e.what();
      EXPECT_EQ(e.exit_code(), ft::kExitBadInput);
    }
  }

  fs::path dir_;
};

TEST_F(IoTest, WeightsRoundTripIsByteExact) {
  std::vector<float> a, b;
  std::vector<ParamView> va, vb;
  make_model(a, va);
  make_model(b, vb, 100.f);
  const std::string p = file("w.h5");
  ft::save_weights_h5(p, va, {{"arch", "squeezenet_small"}, {"num_classes", "10"}});
  ft::load_weights_h5(p, vb);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));

  // The layout: one float32 dataset per parameter at the root, torch shapes, string attributes.
  std::lock_guard<std::mutex> lock(ft::h5_mutex());
  ft::h5::Handle f = ft::h5::open_file(p);
  auto names = ft::h5::list_datasets(f, "/");
  EXPECT_EQ(names, (std::vector<std::string>{"classifier.1.weight", "features.0.bias",
                                             "features.0.weight"}));
  ft::h5::Handle d = ft::h5::dataset_handle(ft::h5::open_dataset(f, "features.0.weight"));
  auto info = ft::h5::dataset_info(d);
  EXPECT_EQ(info.shape, (std::vector<int64_t>{4, 3, 3, 3}));
  EXPECT_EQ(info.dtype(), "float32");
  EXPECT_EQ(ft::h5::read_attr_string(f, "arch"), "squeezenet_small");
  EXPECT_EQ(ft::h5::read_attr_string(f, "num_classes"), "10");
}

TEST_F(IoTest, LoadRejectsMissingKey) {
  std::vector<float> a;
  std::vector<ParamView> v;
  make_model(a, v);
  auto shapes = shapes_of(v);
  shapes.erase("features.0.bias");
  const std::string p = file("missing.h5");
  write_raw(p, shapes, H5T_IEEE_F32LE);
  const std::vector<float> before = a;
  expect_input_error([&] { ft::load_weights_h5(p, v); }, {p, "missing", "features.0.bias"});
  EXPECT_EQ(a, before) << "a failed load must not modify the parameters";
}

TEST_F(IoTest, LoadRejectsExtraKeys) {
  std::vector<float> a;
  std::vector<ParamView> v;
  make_model(a, v);
  auto shapes = shapes_of(v);
  shapes["features.99.weight"] = {2, 2};
  const std::string p = file("extra.h5");
  write_raw(p, shapes, H5T_IEEE_F32LE);
  expect_input_error([&] { ft::load_weights_h5(p, v); }, {p, "extra", "features.99.weight"});
}

TEST_F(IoTest, LoadRejectsWrongShapeWithExpectedAndFound) {
  std::vector<float> a;
  std::vector<ParamView> v;
  make_model(a, v);
  auto shapes = shapes_of(v);
  shapes["features.0.weight"] = {64, 3, 3, 3};
  const std::string p = file("shape.h5");
  write_raw(p, shapes, H5T_IEEE_F32LE);
  expect_input_error([&] { ft::load_weights_h5(p, v); },
                     {p, "features.0.weight", "expected shape (4, 3, 3, 3), found (64, 3, 3, 3)"});
}

TEST_F(IoTest, LoadRejectsWrongDtype) {
  std::vector<float> a;
  std::vector<ParamView> v;
  make_model(a, v);
  const std::string p = file("dtype.h5");
  write_raw(p, shapes_of(v), H5T_STD_I32LE);
  expect_input_error([&] { ft::load_weights_h5(p, v); }, {p, "dtype", "int32"});
}

TEST_F(IoTest, LoadAcceptsFloat64) {
  std::vector<float> a;
  std::vector<ParamView> v;
  make_model(a, v);
  const std::string p = file("f64.h5");
  write_raw(p, shapes_of(v), H5T_IEEE_F64LE);
  ft::load_weights_h5(p, v);
  for (float x : a) ASSERT_EQ(x, 0.5f);
}

TEST_F(IoTest, MissingAndNonHdf5FilesAreInputErrors) {
  std::vector<float> a;
  std::vector<ParamView> v;
  make_model(a, v);
  const std::string missing = file("nope.h5");
  expect_input_error([&] { ft::load_weights_h5(missing, v); }, {missing, "no such file"});
  const std::string text = file("text.h5");
  std::ofstream(text) << "this is not HDF5\n";
  expect_input_error([&] { ft::load_weights_h5(text, v); }, {text, "not an HDF5 file"});
  expect_input_error([&] { ft::load_checkpoint(text, v, nullptr); }, {text, "not an HDF5 file"});
  EXPECT_FALSE(ft::is_checkpoint(text));
  EXPECT_FALSE(ft::is_checkpoint(missing));
}

TEST_F(IoTest, AtomicWriteLeavesNoTempFile) {
  std::vector<float> a;
  std::vector<ParamView> v;
  make_model(a, v);
  ft::save_weights_h5(file("w.h5"), v);
  ft::save_weights_h5(file("w.h5"), v);  // overwrite
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"w.h5"});
}

TEST_F(IoTest, InterruptedAtomicWriteKeepsTheOldFile) {
  std::vector<float> a;
  std::vector<ParamView> v;
  make_model(a, v);
  const std::string p = file("w.h5");
  ft::save_weights_h5(p, v);
  const auto size_before = fs::file_size(p);
  try {
    std::lock_guard<std::mutex> lock(ft::h5_mutex());
    ft::h5::AtomicFile f(p);
    std::vector<float> junk(1000, 1.f);
    ft::h5::write_dataset<float>(f, "junk", junk.data(), {1000});
    throw std::runtime_error("crash before commit");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(fs::file_size(p), size_before);
  size_t files = 0;
  for (auto& e : fs::directory_iterator(dir_)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u) << "the temporary file was left behind";
  std::vector<float> b;
  std::vector<ParamView> vb;
  make_model(b, vb, 7.f);
  ft::load_weights_h5(p, vb);
  EXPECT_EQ(a, b);
}

TEST_F(IoTest, UnwritableDestinationIsInputError) {
  std::vector<float> a;
  std::vector<ParamView> v;
  make_model(a, v);
  const std::string p = file("no/such/dir/w.h5");
  expect_input_error([&] { ft::save_weights_h5(p, v); }, {p, "cannot create"});
}

TEST_F(IoTest, CheckpointRoundTripIsByteExact) {
  std::vector<float> a, b;
  std::vector<ParamView> va, vb;
  make_model(a, va);
  make_model(b, vb, 3.f);
  std::vector<float> mom(a.size()), mom2(a.size(), -1.f);
  for (size_t i = 0; i < mom.size(); ++i) mom[i] = 1e-3f * float(i) + 1.f / 3.f;
  ft::CheckpointState st;
  st.step = 1234;
  st.epoch = 5;
  st.world_size = 4;
  st.seed = 0xFEDCBA9876543210ULL;
  st.arch = "squeezenet1_1";
  st.config_json = R"({"lr": 0.04, "batch": 512})";
  const std::string p = file("ckpt_1234.h5");
  ft::save_checkpoint(p, va, mom.data(), mom.size(), st);
  EXPECT_TRUE(ft::is_checkpoint(p));

  ft::CheckpointState got = ft::load_checkpoint(p, vb, mom2.data());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(mom.data(), mom2.data(), mom.size() * sizeof(float)));
  EXPECT_EQ(got.step, st.step);
  EXPECT_EQ(got.epoch, st.epoch);
  EXPECT_EQ(got.world_size, st.world_size);
  EXPECT_EQ(got.seed, st.seed);
  EXPECT_EQ(got.arch, st.arch);
  EXPECT_EQ(got.config_json, st.config_json);

  // load_weights_h5 reads a checkpoint's /model; momentum may be skipped.
  std::vector<float> c;
  std::vector<ParamView> vc;
  make_model(c, vc, 9.f);
  ft::load_weights_h5(p, vc);
  EXPECT_EQ(a, c);
  make_model(c, vc, 9.f);
  ft::load_checkpoint(p, vc, nullptr);
  EXPECT_EQ(a, c);

  std::lock_guard<std::mutex> lock(ft::h5_mutex());
  ft::h5::Handle f = ft::h5::open_file(p);
  EXPECT_EQ(ft::h5::read_attr_string(f, "format"), "firetrain-checkpoint-1");
  EXPECT_EQ(ft::h5::read_attr_int64(f, "complete"), 1);
  EXPECT_TRUE(ft::h5::is_group(f, "optimizer/momentum"));
  EXPECT_EQ(ft::h5::list_datasets(f, "optimizer/momentum").size(), 3u);
}

TEST_F(IoTest, IncompleteCheckpointIsRejected) {
  std::vector<float> a;
  std::vector<ParamView> v;
  make_model(a, v);
  const std::string p = file("ckpt_7.h5");
  {
    std::lock_guard<std::mutex> lock(ft::h5_mutex());
    ft::h5::AtomicFile f(p);
    ft::h5::Handle g = ft::h5::create_group(f, "model");
    for (auto& pv : v) ft::h5::write_dataset<float>(g, pv.name, pv.data, pv.shape);
    ft::h5::write_attr(f, "step", int64_t(7));
    f.commit();
  }
  expect_input_error([&] { ft::load_checkpoint(p, v, nullptr); }, {p, "incomplete"});
  expect_input_error([&] { ft::load_weights_h5(p, v); }, {p, "incomplete"});
}

TEST_F(IoTest, PlainWeightsAreNotACheckpoint) {
  std::vector<float> a;
  std::vector<ParamView> v;
  make_model(a, v);
  const std::string p = file("w.h5");
  ft::save_weights_h5(p, v);
  EXPECT_FALSE(ft::is_checkpoint(p));
  expect_input_error([&] { ft::load_checkpoint(p, v, nullptr); }, {p, "not a checkpoint"});
}

TEST_F(IoTest, CheckpointShapesAreValidated) {
  std::vector<float> a, b;
  std::vector<ParamView> va, vb;
  make_model(a, va);
  std::vector<float> mom(a.size(), 0.25f);
  const std::string p = file("ckpt_1.h5");
  ft::save_checkpoint(p, va, mom.data(), mom.size(), {});
  make_model(b, vb);
  vb[1].shape = {5};  // a different model
  expect_input_error([&] { ft::load_checkpoint(p, vb, mom.data()); },
                     {p, "features.0.bias", "expected shape (5,), found (4,)"});
}

TEST_F(IoTest, LatestCheckpointPicksTheHighestStep) {
  EXPECT_EQ(ft::latest_checkpoint(file("absent")), "");
  EXPECT_EQ(ft::latest_checkpoint(dir_.string()), "");
  std::vector<float> a;
  std::vector<ParamView> v;
  make_model(a, v);
  std::vector<float> mom(a.size(), 0.f);
  for (int64_t s : {100, 2000, 300}) {
    ft::CheckpointState st;
    st.step = s;
    ft::save_checkpoint(file("ckpt_" + std::to_string(s) + ".h5"), v, mom.data(), mom.size(), st);
  }
  std::ofstream(file("ckpt_99999.h5.tmp.123")) << "partial";
  std::ofstream(file("ckpt_abc.h5")) << "x";
  EXPECT_EQ(ft::latest_checkpoint(dir_.string()), file("ckpt_2000.h5"));
}

TEST_F(IoTest, H5HelpersRoundTripTypesAndAttributes) {
  const std::string p = file("misc.h5");
  std::vector<uint8_t> u8 = {0, 1, 2, 255, 7, 9};
  std::vector<int64_t> i64 = {-5, 1LL << 40, 3};
  std::vector<int32_t> i32 = {-1, 2, 3, 4};
  std::vector<float> f32 = {1.5f, -2.25f};
  {
    std::lock_guard<std::mutex> lock(ft::h5_mutex());
    ft::h5::AtomicFile f(p);
    ft::h5::write_dataset<uint8_t>(f, "u8", u8.data(), {2, 3});
    ft::h5::write_dataset<int64_t>(f, "g/i64", i64.data(), {3}) ;
    ft::h5::write_dataset<int32_t>(f, "i32", i32.data(), {2, 1, 2});
    ft::h5::write_attr(f, "d", 2.5);
    ft::h5::write_attr(f, "i", int64_t(-42));
    ft::h5::write_attr(f, "s", std::string("hello"));
    ft::h5::write_attr(f, "fv", f32);
    ft::h5::write_attr(f, "sv", std::vector<std::string>{"a", "bc", ""});
    f.commit();
  }
  std::lock_guard<std::mutex> lock(ft::h5_mutex());
  ft::h5::Handle f = ft::h5::open_file(p);
  std::vector<int64_t> shape;
  EXPECT_EQ(ft::h5::read_dataset<uint8_t>(f, "u8", &shape), u8);
  EXPECT_EQ(shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ft::h5::read_dataset<int64_t>(f, "g/i64"), i64);
  EXPECT_EQ(ft::h5::read_dataset<int32_t>(f, "i32", &shape), i32);
  EXPECT_EQ(shape, (std::vector<int64_t>{2, 1, 2}));
  EXPECT_EQ(ft::h5::read_dataset<float>(f, "u8")[3], 255.f);  // converting read
  EXPECT_EQ(ft::h5::read_attr_double(f, "d"), 2.5);
  EXPECT_EQ(ft::h5::read_attr_int64(f, "i"), -42);
  EXPECT_EQ(ft::h5::read_attr_string(f, "s"), "hello");
  EXPECT_EQ(ft::h5::read_attr_floats(f, "fv"), f32);
  EXPECT_EQ(ft::h5::read_attr_strings(f, "sv"), (std::vector<std::string>{"a", "bc", ""}));
  EXPECT_TRUE(ft::h5::exists(f, "g/i64"));
  EXPECT_FALSE(ft::h5::exists(f, "x/y/z"));
  EXPECT_TRUE(ft::h5::is_group(f, "g"));
  EXPECT_FALSE(ft::h5::is_dataset(f, "g"));
  EXPECT_EQ(ft::h5::list_datasets(f), (std::vector<std::string>{"i32", "u8"}));
}

}  // namespace

namespace ft {
namespace {
/// A fuzzer finding (tests/fuzz/regressions/global_heap_zero_size_loop.h5): a checkpoint whose
/// global heap holds a free-space object of size 0. libhdf5 1.10.8 loops forever loading it when
/// a variable-length string attribute is read; firetrain must reject it as bad input instead.
/// Run in a child process so that a regression fails in 30 s instead of hanging the suite.
TEST(IoRegression, CorruptGlobalHeapIsRejectedNotAHang) {
  const std::string p =
      std::string(FT_TEST_DATA_DIR) + "/../fuzz/regressions/global_heap_zero_size_loop.h5";
  ASSERT_TRUE(std::filesystem::exists(p)) << p;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::vector<float> arena(40), mom(40);
    std::vector<ParamView> v(2);
    v[0].name = "features.0.weight", v[0].shape = {4, 1, 3, 3}, v[0].offset = 0;
    v[1].name = "features.0.bias", v[1].shape = {4}, v[1].offset = 36;
    for (auto& pv : v) pv.data = arena.data() + pv.offset;
    try {
      load_checkpoint(p, v, mom.data());
    } catch (const InputError& e) {
      _exit(std::string(e.what()).find(p) != std::string::npos ? 0 : 3);
    } catch (...) {
      _exit(4);
    }
    _exit(5);  // accepted a corrupt file
  }
  int status = 0;
  for (int i = 0; i < 300 && waitpid(pid, &status, WNOHANG) == 0; ++i) usleep(100000);
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "reading " << p << " did not finish within 30 s (the libhdf5 global-heap loop)";
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "3: InputError without the path, 4: another exception, 5: accepted";
}
}  // namespace
}  // namespace ft

namespace ft {
namespace {
/// A fuzzer finding (tests/fuzz/regressions/huge_chunk_oom.h5): a dataset file whose /images
/// declares 2.3 GiB chunks; libhdf5 allocates a whole chunk to read one sample. Rejected at open.
TEST(IoRegression, HugeChunksAreRejectedBeforeAnyRead) {
  const std::string p = std::string(FT_TEST_DATA_DIR) + "/../fuzz/regressions/huge_chunk_oom.h5";
  ASSERT_TRUE(std::filesystem::exists(p)) << p;
  try {
    Dataset::open(p, 0);
    FAIL() << "accepted a file with 2.3 GiB chunks";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("chunks of 2304 MiB"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// FT_H5 / FT_H5_ID clear errno before the call and report what the call left: a failed write
// on a full disk names ENOSPC; a failure that sets no errno reports none, even if errno held
// something before the call; success does not throw whatever errno says.
TEST(H5Check, FailuresCarryTheErrnoTheCallLeft) {
  auto fails_with = [](int e) {
    errno = e;
    return -1;
  };
  try {
    FT_H5(fails_with(ENOSPC));
    FAIL() << "no throw";
  } catch (const Error& ex) {
    EXPECT_EQ(ex.sys_errno(), ENOSPC);
    EXPECT_NE(std::string(ex.what()).find("errno: No space left on device"), std::string::npos)
        << ex.what();
  }
  errno = EACCES;  // stale, from before the call
  try {
    FT_H5(-1);
    FAIL() << "no throw";
  } catch (const Error& ex) {
    EXPECT_EQ(ex.sys_errno(), 0);
    EXPECT_EQ(std::string(ex.what()).find("errno"), std::string::npos) << ex.what();
  }
  try {
    (void)FT_H5_ID(fails_with(EIO));
    FAIL() << "no throw";
  } catch (const Error& ex) {
    EXPECT_EQ(ex.sys_errno(), EIO);
  }
  errno = ENOENT;
  EXPECT_NO_THROW(FT_H5(0));
  EXPECT_EQ(FT_H5_ID(7), 7);
}
}  // namespace
}  // namespace ft
