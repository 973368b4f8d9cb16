/// @brief Every bad input of issue 5, table-driven, through the firetrain binary: each case
/// writes a broken dataset, weights file, checkpoint or config, runs the CLI and expects exit
/// code 2 and ONE error message naming the file and the problem (never a crash or a hang).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>

#include "firetrain/data/dataset.hpp"
#include "firetrain/io/h5.hpp"
#include "firetrain/io/weights.hpp"
#include "firetrain/model/net.hpp"

namespace ft {
namespace {

namespace fs = std::filesystem;

struct Out {
  int code = -1;
  std::string text;
};

Out run_cli(const std::string& cmdline) {
  Out r;
  FILE* p = popen((cmdline + " 2>&1").c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.text.append(buf.data(), n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

/// One bad input: `make` writes it under `dir` and returns the command (after "firetrain");
/// the message must name `file` and contain every word of `words`.
struct Case {
  std::string name;
  std::function<std::string(const fs::path& dir)> make;
  std::string file;
  std::vector<std::string> words;
  std::vector<std::string> any_of = {};  // if not empty, the message has one of these
};

/// Test names in ctest show the case name, not the bytes of the struct.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

constexpr int N = 16, S = 28, K = 10;

template <class F>
void with_file(const fs::path& path, F body) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::AtomicFile f(path.string());
  body(f);
  f.commit();
}

std::vector<uint8_t> pixels(int n = N) {
  std::vector<uint8_t> x(size_t(n) * S * S);
  uint32_t r = 12345;
  for (auto& v : x) v = uint8_t((r = r * 1664525u + 1013904223u) >> 24);  // incompressible
  return x;
}
std::vector<int32_t> labels(int n = N) {
  std::vector<int32_t> l(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) l[size_t(i)] = i % K;
  return l;
}

/// A dataset with /images (N, S, S, 1) uint8, /labels int32 and num_classes, then `tweak`.
std::string dataset(const fs::path& path, std::function<void(hid_t)> tweak = nullptr,
                    bool images = true, bool labs = true, bool classes = true) {
  with_file(path, [&](hid_t f) {
    if (images) h5::write_dataset<uint8_t>(f, "images", pixels().data(), {N, S, S, 1});
    if (labs) h5::write_dataset<int32_t>(f, "labels", labels().data(), {N});
    if (classes) h5::write_attr(f, "num_classes", int64_t(K));
    if (tweak) tweak(f);
  });
  return path.string();
}

std::string train_on(const std::string& data) {
  return "train --steps 1 --batch 4 --threads 1 --progress plain --data " + data;
}

/// Valid squeezenet_small weights for 28x28x1 images and K classes, edited by `tweak`.
std::string weights(const fs::path& path,
                    std::function<void(std::vector<ParamView>&, std::vector<float>&)> tweak) {
  NetSpec spec;
  spec.in_channels = 1;
  spec.height = spec.width = S;
  spec.num_classes = K;
  Net net(spec);
  net.init_weights(1, parse_init("torchvision"));
  std::vector<ParamView> v = net.param_views();
  std::vector<float> extra;
  tweak(v, extra);
  save_weights_h5(path.string(), v, {{"arch", "squeezenet_small"}});
  return path.string();
}

std::vector<Case> cases() {
  std::vector<Case> c;
  auto ds = [](std::string name, std::vector<std::string> words,
               std::function<std::string(const fs::path&)> make) {
    return Case{name,
                [make, name](const fs::path& d) { return train_on(make(d / (name + ".h5"))); },
                name + ".h5", words};
  };
  // --- datasets ---
  c.push_back(ds("missing", {"no such file"}, [](const fs::path& p) { return p.string(); }));
  c.push_back(ds("text", {"not an HDF5 file"}, [](const fs::path& p) {
    std::ofstream(p) << "images,labels\n1,2\n";
    return p.string();
  }));
  c.push_back(ds("empty_file", {"not an HDF5 file"}, [](const fs::path& p) {
    std::ofstream(p).flush();
    return p.string();
  }));
  c.push_back(ds("truncated", {"corrupt"}, [](const fs::path& p) {
    dataset(p);
    fs::resize_file(p, fs::file_size(p) / 2);
    return p.string();
  }));
  c.push_back(ds("corrupt_chunk", {"corrupt"}, [](const fs::path& p) {
    // gzip-compressed random pixels fill most of the file: the middle is compressed data.
    std::vector<int32_t> l = labels();
    write_dataset(p.string(), pixels().data(), l.data(), N, S, S, 1, K, {});
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(fs::file_size(p) / 2));
    f.write("\xde\xad\xbe\xef\xde\xad\xbe\xef", 8);
    return p.string();
  }));
  c.push_back(ds("no_images", {"missing dataset /images"},
                 [](const fs::path& p) { return dataset(p, nullptr, false); }));
  c.push_back(ds("no_labels", {"missing dataset /labels"},
                 [](const fs::path& p) { return dataset(p, nullptr, true, false); }));
  c.push_back(ds("images_group", {"/images"}, [](const fs::path& p) {
    return dataset(
        p, [](hid_t f) { h5::create_group(f, "images"); }, false);
  }));
  c.push_back(ds("images_int16", {"/images", "wrong dtype int16"}, [](const fs::path& p) {
    return dataset(
        p,
        [](hid_t f) {
          h5::create_dataset(f, "images", H5T_STD_I16LE, {N, S, S, 1});
        },
        false);
  }));
  c.push_back(ds("images_float64", {"/images", "wrong dtype float64"}, [](const fs::path& p) {
    return dataset(
        p,
        [](hid_t f) {
          h5::create_dataset(f, "images", H5T_IEEE_F64LE, {N, S, S, 1});
        },
        false);
  }));
  c.push_back(ds("images_rank3", {"/images", "wrong rank 3"}, [](const fs::path& p) {
    return dataset(
        p,
        [](hid_t f) {
          h5::write_dataset<uint8_t>(f, "images", pixels().data(), {N, S, S});
        },
        false);
  }));
  c.push_back(ds("images_zero_n", {"N = 0"}, [](const fs::path& p) {
    return dataset(
        p,
        [](hid_t f) {
          h5::create_dataset(f, "images", H5T_STD_U8LE, {0, S, S, 1});
          h5::create_dataset(f, "labels", H5T_STD_I32LE, {0});
        },
        false, false);
  }));
  c.push_back(ds("images_zero_h", {"bad dimension H = 0"}, [](const fs::path& p) {
    return dataset(
        p,
        [](hid_t f) {
          h5::create_dataset(f, "images", H5T_STD_U8LE, {N, 0, S, 1});
        },
        false);
  }));
  c.push_back(ds("images_huge_w", {"bad dimension W = 100000"}, [](const fs::path& p) {
    return dataset(
        p,
        [](hid_t f) {
          h5::CreateOptions o;
          o.chunk = {1, 1, 1000, 1};
          h5::create_dataset(f, "images", H5T_STD_U8LE, {N, S, 100000, 1}, o);
        },
        false);
  }));
  c.push_back(ds("images_huge_n", {"absurd N = 30000000000"}, [](const fs::path& p) {
    return dataset(
        p,
        [](hid_t f) {
          h5::CreateOptions o;
          o.chunk = {1, S, S, 1};
          h5::create_dataset(f, "images", H5T_STD_U8LE, {30000000000LL, S, S, 1}, o);
          o.chunk = {4096};
          h5::create_dataset(f, "labels", H5T_STD_I32LE, {30000000000LL}, o);
        },
        false, false);
  }));
  c.push_back(ds("images_c2", {"bad channel count C = 2"}, [](const fs::path& p) {
    return dataset(
        p,
        [](hid_t f) {
          h5::create_dataset(f, "images", H5T_STD_U8LE, {N, S, S, 2});
        },
        false);
  }));
  c.push_back(ds("labels_short", {"/labels", "15 labels for 16 images"}, [](const fs::path& p) {
    return dataset(
        p, [](hid_t f) { h5::write_dataset<int32_t>(f, "labels", labels().data(), {N - 1}); }, true,
        false);
  }));
  c.push_back(ds("labels_float", {"/labels", "wrong dtype float32"}, [](const fs::path& p) {
    return dataset(
        p, [](hid_t f) { h5::create_dataset(f, "labels", H5T_IEEE_F32LE, {N}); }, true, false);
  }));
  c.push_back(ds("labels_2d", {"/labels", "wrong rank"}, [](const fs::path& p) {
    return dataset(
        p,
        [](hid_t f) {
          h5::write_dataset<int32_t>(f, "labels", labels().data(), {N / 2, 2});
        },
        true, false);
  }));
  c.push_back(ds("labels_range", {"/labels", "label 10 at index 3 out of range [0, 10)"},
                 [](const fs::path& p) {
                   return dataset(
                       p,
                       [](hid_t f) {
                         auto l = labels();
                         l[3] = K;
                         h5::write_dataset<int32_t>(f, "labels", l.data(), {N});
                       },
                       true, false);
                 }));
  c.push_back(
      ds("labels_negative", {"/labels", "label -1 at index 5", "negative"}, [](const fs::path& p) {
        return dataset(
            p,
            [](hid_t f) {
              auto l = labels();
              l[5] = -1;
              h5::write_dataset<int32_t>(f, "labels", l.data(), {N});
            },
            true, false);
      }));
  c.push_back(ds("classes_missing", {"num_classes attribute missing"},
                 [](const fs::path& p) { return dataset(p, nullptr, true, true, false); }));
  c.push_back(ds("classes_string", {"num_classes attribute", "string"}, [](const fs::path& p) {
    return dataset(
        p, [](hid_t f) { h5::write_attr(f, "num_classes", std::string("ten")); }, true, true,
        false);
  }));
  c.push_back(ds("classes_zero", {"num_classes attribute = 0"}, [](const fs::path& p) {
    return dataset(
        p, [](hid_t f) { h5::write_attr(f, "num_classes", int64_t(0)); }, true, true, false);
  }));
  c.push_back(ds("images_nan", {"/images", "NaN or Inf", "sample 7"}, [](const fs::path& p) {
    return dataset(
        p,
        [](hid_t f) {
          std::vector<float> x(size_t(N) * S * S, 0.5f);
          x[size_t(7) * S * S + 100] = NAN;
          h5::write_dataset<float>(f, "images", x.data(), {N, S, S, 1});
        },
        false);
  }));
  c.push_back({"val_classes_differ",
               [](const fs::path& d) {
                 dataset(d / "good.h5");
                 std::vector<int32_t> l = labels();
                 write_dataset((d / "val_classes_differ.h5").string(), pixels().data(), l.data(), N,
                               S, S, 1, K + 1, {});
                 return train_on((d / "good.h5").string()) + " --val " +
                        (d / "val_classes_differ.h5").string();
               },
               "val_classes_differ.h5",
               {"differ from the training set"}});
  // --- weights and checkpoints (eval, and train --weights / --resume) ---
  auto wt = [](std::string name, std::vector<std::string> words,
               std::function<void(std::vector<ParamView>&, std::vector<float>&)> tweak) {
    return Case{name,
                [tweak, name](const fs::path& d) {
                  dataset(d / "good.h5");
                  return "eval --weights " + weights(d / (name + ".h5"), tweak) + " --data " +
                         (d / "good.h5").string();
                },
                name + ".h5", words};
  };
  c.push_back(wt("w_missing_key", {"missing key 'classifier.1.bias'", "expected shape (10,)"},
                 [](std::vector<ParamView>& v, std::vector<float>&) { v.pop_back(); }));
  c.push_back(wt("w_extra_key", {"unexpected extra keys", "fc.weight"},
                 [](std::vector<ParamView>& v, std::vector<float>& x) {
                   x.assign(4, 0.f);
                   ParamView e;
                   e.name = "fc.weight";
                   e.shape = {2, 2};
                   e.data = x.data();
                   v.push_back(e);
                 }));
  c.push_back(
      wt("w_shape",
         {"key 'classifier.1.weight'", "expected shape (10, 512, 1, 1)", "found (5, 512, 1, 1)"},
         [](std::vector<ParamView>& v, std::vector<float>&) {
           for (auto& p : v)
             if (p.name == "classifier.1.weight") p.shape = {5, 512, 1, 1};
         }));
  c.push_back(wt("w_nan", {"key 'features.0.bias'", "non-finite"},
                 [](std::vector<ParamView>& v, std::vector<float>&) {
                   for (auto& p : v)
                     if (p.name == "features.0.bias") p.data[3] = NAN;
                 }));
  c.push_back({"w_dtype",
               [](const fs::path& d) {
                 dataset(d / "good.h5");
                 std::string w = weights(d / "w_dtype.h5", [](auto&, auto&) {});
                 with_file(d / "w_dtype.h5", [](hid_t f) {  // rewrite with one int32 tensor
                   NetSpec spec;
                   spec.in_channels = 1;
                   spec.height = spec.width = S;
                   spec.num_classes = K;
                   Net net(spec);
                   for (auto& p : net.param_views()) {
                     if (p.name == "features.0.weight")
                       h5::create_dataset(f, p.name, H5T_STD_I32LE, p.shape);
                     else
                       h5::write_dataset<float>(f, p.name, p.data, p.shape);
                   }
                 });
                 return "eval --weights " + w + " --data " + (d / "good.h5").string();
               },
               "w_dtype.h5",
               {"key 'features.0.weight'", "dtype int32"}});
  c.push_back({"w_wrong_arch",
               [](const fs::path& d) {
                 dataset(d / "good.h5");
                 NetSpec spec;  // squeezenet1_0 weights (for 224x224) given to squeezenet_small
                 spec.arch = "squeezenet1_0";
                 spec.in_channels = 1;
                 spec.num_classes = K;
                 Net net(spec);
                 const std::string w = (d / "w_wrong_arch.h5").string();
                 save_weights_h5(w, net.param_views());
                 return "eval --arch squeezenet_small --weights " + w + " --data " +
                        (d / "good.h5").string();
               },
               "w_wrong_arch.h5",
               {"missing key"}});
  c.push_back({"w_truncated",
               [](const fs::path& d) {
                 dataset(d / "good.h5");
                 std::string w = weights(d / "w_truncated.h5", [](auto&, auto&) {});
                 fs::resize_file(w, fs::file_size(w) / 3);
                 return train_on((d / "good.h5").string()) + " --weights " + w;
               },
               "w_truncated.h5",
               {"corrupt"}});
  c.push_back({"ckpt_not_a_checkpoint",
               [](const fs::path& d) {
                 std::string g = dataset(d / "good.h5");
                 std::string w = weights(d / "ckpt_not_a_checkpoint.h5", [](auto&, auto&) {});
                 return train_on(g) + " --resume " + w;
               },
               "ckpt_not_a_checkpoint.h5",
               {"not a checkpoint"}});
  // --- files that crash libhdf5 1.10.8 itself (fuzzer findings): the validation child dies,
  // the trainer reports it (src/io/sandbox.cpp) ---
  // The file overflows a heap buffer inside H5Aexists: whether that faults depends on the
  // heap's layout in the validating child (it varies with the libraries linked in: the CUDA
  // build's test binary read past the buffer without a fault in 2 of 7 runs). Without a
  // fault libhdf5 returns what it read, and the checkpoint's key check rejects the file: also
  // exit 2 with one message naming it. `info` has faulted in every run so far.
  auto libhdf5_crash = [](std::string name, std::string role,
                          std::vector<std::string> any_of) {
    Case k{name,
           [name, role](const fs::path& d) {
             const fs::path f = d / (name + ".h5");
             fs::copy_file(fs::path(FT_TEST_DATA_DIR) / ".." / "fuzz" / "regressions" /
                               "h5aexists_heap_overflow_segv.h5",
                           f);
             if (role == "info") return "info " + f.string();
             return train_on(dataset(d / "good.h5")) + " " + role + " " + f.string();
           },
           name + ".h5",
           {}};
    k.any_of = std::move(any_of);
    return k;
  };
  const std::string crashed = "not a valid HDF5 file: libhdf5 crashed while reading it (SIGSEGV)";
  c.push_back(libhdf5_crash("libhdf5_crash_info", "info", {crashed}));
  c.push_back(
      libhdf5_crash("libhdf5_crash_resume", "--resume", {crashed, "/model: 50 missing keys"}));
  // --- config and flags: rejected before any work ---
  auto flags = [](std::string name, std::string args, std::vector<std::string> words,
                  std::string file = "") {
    return Case{name,
                [args](const fs::path& d) { return train_on(dataset(d / "good.h5")) + " " + args; },
                file, words};
  };
  c.push_back(flags("unknown_flag", "--learning-rate 0.1", {"unknown option --learning-rate"}));
  c.push_back(flags("lr_zero", "--lr 0", {"--lr must be > 0"}));
  c.push_back(flags("lr_nan", "--lr nan", {"--lr must be > 0"}));
  c.push_back(flags("batch_zero", "--batch 0", {"--batch must be > 0"}));
  c.push_back(flags("batch_too_big", "--batch 64", {"good.h5", "fewer than one global batch"}));
  c.push_back(flags("keep_negative", "--keep-checkpoints -1", {"--keep-checkpoints"}));
  c.push_back(flags("resume_no_dir", "--resume auto", {"--resume auto needs --checkpoint-dir"}));
  c.push_back(
      {"zero_epochs",
       [](const fs::path& d) { return "train --epochs 0 --data " + dataset(d / "good.h5"); },
       "",
       {"--epochs N or --steps N"}});
  c.push_back({"config_unknown_key",
               [](const fs::path& d) {
                 std::ofstream(d / "config_unknown_key.cfg") << "lr = 0.01\nbatchsize = 8\n";
                 return train_on(dataset(d / "good.h5")) + " --config " +
                        (d / "config_unknown_key.cfg").string();
               },
               "config_unknown_key.cfg",
               {":2: unknown key 'batchsize'"}});
  return c;
}

class BadInput : public ::testing::TestWithParam<Case> {};

TEST_P(BadInput, ExitCode2AndOneMessageNamingTheFileAndTheProblem) {
  const Case& c = GetParam();
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("ft_bad_" + std::to_string(getpid()) + "_" + c.name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string args = c.make(dir);
  Out r = run_cli(std::string(FT_BINARY) + " " + args);
  EXPECT_EQ(r.code, 2) << args << "\n" << r.text;
  if (!c.file.empty()) {
    EXPECT_NE(r.text.find(c.file), std::string::npos) << "does not name " << c.file << ":\n"
                                                      << r.text;
  }
  for (auto& w : c.words)
    EXPECT_NE(r.text.find(w), std::string::npos) << "lacks '" << w << "':\n" << r.text;
  if (!c.any_of.empty()) {
    bool found = false;
    for (auto& w : c.any_of) found = found || r.text.find(w) != std::string::npos;
    EXPECT_TRUE(found) << "has none of '" << c.any_of.front() << "'"
                       << (c.any_of.size() > 1 ? " or its alternatives" : "") << ":\n"
                       << r.text;
  }
  size_t errors = 0;
  for (size_t p = r.text.find("error"); p != std::string::npos; p = r.text.find("error", p + 1))
    ++errors;
  EXPECT_EQ(errors, 1u) << "expected one message:\n" << r.text;
  for (const char* crash : {"Segmentation", "Aborted", "terminate called", "HDF5-DIAG", "step 1/"})
    EXPECT_EQ(r.text.find(crash), std::string::npos) << r.text;
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Issue5, BadInput, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

}  // namespace
}  // namespace ft
