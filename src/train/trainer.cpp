/// @brief The training loop: sharded loader -> forward -> loss -> backward with overlapped
/// bucketed all-reduce -> SGD; progress, metrics, checkpoints and evaluation.
#include "firetrain/train/trainer.hpp"

#include <omp.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <map>
#include <set>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "firetrain/core/build_info.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/core/timeline.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/data/loader.hpp"
#include "firetrain/io/h5.hpp"
#include "firetrain/io/weights.hpp"
#include "firetrain/ops/ops.hpp"
#include "firetrain/train/loss_scaler.hpp"
#include "firetrain/train/options.hpp"
#include "firetrain/train/sweep.hpp"
#include "firetrain/train/timeline_file.hpp"

namespace ft {

namespace {
volatile std::sig_atomic_t g_stop_signal = 0;
}  // namespace

void request_stop(int signal) noexcept { g_stop_signal = signal > 0 ? signal : 1; }
int stop_requested() noexcept { return int(g_stop_signal); }
void clear_stop() noexcept { g_stop_signal = 0; }

void add_train_options(Options& o, TrainConfig& c) {
  o.opt("arch", &c.arch, "squeezenet1_0 | squeezenet1_1 | squeezenet_small")
      .opt("bypass", &c.bypass, "none | simple (identity around fire3, 5, 7, 9) | complex (1x1 conv where channels differ; the paper's sec. 6)")
      .opt("data", &c.data, "training dataset (HDF5, see datasets/README.md)")
      .opt("val", &c.val, "validation dataset, evaluated after each epoch and at the end")
      .opt("epochs", &c.epochs, "epochs to train (or --steps)")
      .opt("steps", &c.steps, "global steps to train (overrides --epochs)")
      .opt("batch", &c.batch, "global batch size (split evenly over ranks)")
      .opt("lr", &c.lr, "peak learning rate")
      .opt("lr-schedule", &c.lr_schedule, "poly | constant | step | cosine")
      .opt("lr-power", &c.lr_power, "poly exponent (1: linear decay to 0, as the paper)")
      .opt("lr-step-epochs", &c.lr_step_epochs, "step schedule: decay every N epochs")
      .opt("lr-gamma", &c.lr_gamma, "step schedule: decay factor")
      .opt("warmup-steps", &c.warmup_steps, "linear learning-rate warm-up steps")
      .opt("momentum", &c.momentum, "SGD momentum")
      .opt("weight-decay", &c.weight_decay, "L2 weight decay (torch.optim.SGD semantics)")
      .opt("dropout", &c.dropout, "dropout before conv10")
      .opt("seed", &c.seed, "seed of initialization, shuffling, augmentation and dropout")
      .opt("threads", &c.threads, "threads per rank (0: cores / ranks on this node)")
      .negflag("shuffle", &c.shuffle, "keep file order (no per-epoch shuffle)")
      .negflag("augment", &c.augment, "no random crop / flip")
      .opt("pad", &c.pad, "random-crop padding in pixels")
      .negflag("flip", &c.flip, "no horizontal flips in augmentation")
      .opt("init", &c.init, "torchvision | xavier (Caffe) | kaiming (conv10 too)")
      .opt("checkpoint-dir", &c.checkpoint_dir, "directory for checkpoints (ckpt_<step>.h5)")
      .opt("checkpoint-every", &c.checkpoint_every, "steps between checkpoints (0: end only)")
      .opt("keep-checkpoints", &c.keep_checkpoints, "newest checkpoints kept in --checkpoint-dir (0: all)")
      .opt("resume", &c.resume,
           "auto (newest valid checkpoint in --checkpoint-dir; none: start fresh) or a checkpoint "
           "PATH: continue exactly where it stopped (same global --batch; any number of ranks)")
      .opt("stop-at", &c.stop_at,
           "end this run after global step N with a checkpoint, as on SIGTERM (0: no)")
      .opt("weights", &c.weights, "initial weights: torch-h5 file or checkpoint")
      .opt("metrics", &c.metrics, "metrics file, one row per logged step (.csv or .jsonl)")
      .opt("log-every", &c.log_every, "steps between logged lines / metrics rows")
      .opt("timeline", &c.timeline,
           "write a Chrome trace (open it in https://ui.perfetto.dev or chrome://tracing) of "
           "--timeline-steps steps from the run's second one: every rank's phases, layers "
           "(forward and backward) and gradient buckets in flight; CPU only")
      .opt("timeline-steps", &c.timeline_steps, "steps recorded by --timeline (1 to 1000)")
      .opt("progress", &c.progress,
           "auto | live | plain: live line on a terminal (auto: if stdout is a tty; mpirun "
           "gives ranks a pty even when its own output is a file, so batch jobs want plain)")
      .opt("device", &c.device, "cpu | cuda")
      .opt("precision", &c.precision, "fp32 | bf16 | fp16: activations stored and convolutions computed in 16 bits with fp32 accumulation and fp32 master weights (CPU: bf16 on oneDNN's AVX512-BF16 kernels; CUDA: bf16 or fp16 on cuDNN tensor cores; fp16 is CUDA-only and uses dynamic loss scaling by default)")
      .opt("loss-scale", &c.loss_scale,
           "auto | none | dynamic | a static scale (a power of two, e.g. 1024): the loss "
           "gradient is multiplied by the scale and the gradient divided by it before SGD; "
           "dynamic skips a step whose gradient overflows and halves the scale (as PyTorch's "
           "GradScaler); auto: dynamic with --precision fp16, else none")
      .opt("loss-scale-init", &c.loss_scale_init,
           "dynamic loss scaling: the initial scale (a power of two; 65536 = 2^16)")
      .opt("loss-scale-growth-interval", &c.loss_scale_growth_interval,
           "dynamic loss scaling: finite steps in a row before the scale doubles")
      .opt("bucket-kb", &c.bucket_kb, "gradient all-reduce bucket size in KiB")
      // Not a TrainConfig field: held by the registry, read back from the config JSON in
      // train() (grad_comm_dtype_of), so it is stored in checkpoints and compared across ranks.
      .opt("grad-comm-dtype", o.own("fp32"),
           "fp32 | bf16 | fp16: what the gradient all-reduce sends (16 bits: half the bytes; "
           "partial sums rounded to 16 bits; fp16 pre-scaled by 2^-ceil(log2 ranks))")
      .opt("collective-timeout", &c.collective_timeout,
           "seconds a collective (all-reduce, broadcast...) may take before the job is aborted "
           "with a message naming the rank and the operation (0: no limit; default "
           "FT_COLLECTIVE_TIMEOUT or 300)")
      .opt("eval-batch", &c.eval_batch, "batch size for evaluation")
      .negflag("eval-each-epoch", &c.eval_each_epoch, "evaluate --val only at the end");
  add_fire_options(o, c.fire);
}

void validate(const TrainConfig& c, int world) {
  auto bad = [](const std::string& m) { throw InputError(m); };
  if (c.data.empty()) bad("train: --data is required");
  if (c.epochs <= 0 && c.steps <= 0) bad("train: give --epochs N or --steps N (N > 0)");
  if (c.epochs < 0 || c.steps < 0) bad("train: --epochs and --steps must be positive");
  if (c.batch <= 0) bad("train: --batch must be > 0");
  if (c.batch % world != 0)
    bad("train: global --batch " + std::to_string(c.batch) + " is not divisible by the " +
        std::to_string(world) + " ranks");
  if (!(c.lr > 0) || !std::isfinite(c.lr)) bad("train: --lr must be > 0");
  if (c.lr_schedule != "poly" && c.lr_schedule != "constant" && c.lr_schedule != "step" &&
      c.lr_schedule != "cosine")
    bad("train: --lr-schedule must be poly, constant, step or cosine, got '" + c.lr_schedule + "'");
  if (c.momentum < 0 || c.momentum >= 1) bad("train: --momentum must be in [0, 1)");
  if (c.weight_decay < 0) bad("train: --weight-decay must be >= 0");
  if (c.dropout < 0 || c.dropout >= 1) bad("train: --dropout must be in [0, 1)");
  if (c.threads < 0) bad("train: --threads must be >= 0");
  if (c.warmup_steps < 0) bad("train: --warmup-steps must be >= 0");
  if (c.lr_step_epochs <= 0) bad("train: --lr-step-epochs must be > 0");
  if (c.pad < 0) bad("train: --pad must be >= 0");
  if (c.log_every <= 0) bad("train: --log-every must be > 0");
  if (c.timeline_steps < 1 || c.timeline_steps > 1000)
    bad("train: --timeline-steps must be in 1..1000");
  if (!c.timeline.empty() && c.device == "cuda")
    bad("train: --timeline records host wall-clock spans, which with --device cuda would time "
        "kernel launches rather than the kernels (they run asynchronously), so it is CPU-only; "
        "on a GPU use Nsight Systems (nsys profile)");
  if (c.progress != "auto" && c.progress != "live" && c.progress != "plain")
    bad("train: --progress must be auto, live or plain");
  if (c.checkpoint_every < 0) bad("train: --checkpoint-every must be >= 0");
  if (c.keep_checkpoints < 0) bad("train: --keep-checkpoints must be >= 0");
  if (c.stop_at < 0) bad("train: --stop-at must be >= 0");
  if (c.checkpoint_every > 0 && c.checkpoint_dir.empty())
    bad("train: --checkpoint-every needs --checkpoint-dir");
  if (c.resume == "auto" && c.checkpoint_dir.empty())
    bad("train: --resume auto needs --checkpoint-dir (where to look for checkpoints)");
  if (c.bucket_kb <= 0) bad("train: --bucket-kb must be > 0");
  LossScaler::parse(c.loss_scale, c.precision, c.loss_scale_init, c.loss_scale_growth_interval);
  if (c.eval_batch <= 0) bad("train: --eval-batch must be > 0");
  if (!(c.collective_timeout >= 0) || !std::isfinite(c.collective_timeout))
    bad("train: --collective-timeout must be >= 0 seconds (0: no limit)");
  parse_init(c.init);
  if (c.device != "cpu" && c.device != "cuda")
    bad("train: --device must be cpu or cuda, got '" + c.device + "'");
  require_device(parse_device(c.device));  // before any work: clear error, exit 2
  if (!c.metrics.empty()) {
    auto ext = std::filesystem::path(c.metrics).extension().string();
    if (ext != ".csv" && ext != ".jsonl" && ext != ".json")
      bad("train: --metrics " + c.metrics + ": use a .csv or .jsonl file name");
  }
}

double lr_at(const TrainConfig& c, int64_t step, int64_t total, int64_t spe) {
  double lr = c.lr;
  const double frac = total > 0 ? double(step) / double(total) : 0.0;
  if (c.lr_schedule == "poly")
    lr *= std::pow(std::max(0.0, 1.0 - frac), c.lr_power);
  else if (c.lr_schedule == "cosine")
    lr *= 0.5 * (1.0 + std::cos(M_PI * frac));
  else if (c.lr_schedule == "step")
    lr *= std::pow(c.lr_gamma, double((step / std::max<int64_t>(1, spe)) / c.lr_step_epochs));
  if (c.warmup_steps > 0 && step < c.warmup_steps)
    lr *= double(step + 1) / double(c.warmup_steps);
  return lr;
}

int set_threads(int threads, Communicator& comm) {
  if (threads <= 0) {
    // Ranks sharing this node split its cores.
    MPI_Comm local;
    FT_MPI(MPI_Comm_split_type(comm.comm(), MPI_COMM_TYPE_SHARED, comm.rank(), MPI_INFO_NULL,
                               &local));
    int local_size = 1;
    FT_MPI(MPI_Comm_size(local, &local_size));
    FT_MPI(MPI_Comm_free(&local));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    threads = int(std::max<long>(1, cores / std::max(1, local_size)));
  }
  omp_set_num_threads(threads);
  return threads;
}

/// A batch's tensors on the net's device: for the CPU, views of the host arrays (no copy); for
/// CUDA, device copies made by put().
struct DeviceBatch {
  explicit DeviceBatch(Device d) : dev(d), x(d), labels(d), samples(d) {}
  void put(int n, const float* hx, size_t nx, const int32_t* hl, const int64_t* hs) {
    if (dev == Device::CPU) {
      px = hx, pl = hl, ps = hs;
      return;
    }
    if (x.size() < nx) x.resize(nx);
    if (labels.size() < size_t(n)) labels.resize(size_t(n)), samples.resize(size_t(n));
    x.upload(hx, nx);
    labels.upload(hl, size_t(n));
    if (hs) samples.upload(hs, size_t(n));
    px = x.data(), pl = labels.data(), ps = samples.data();
  }
  Device dev;
  Buffer x;
  Array<int32_t> labels;
  Array<int64_t> samples;
  const float* px = nullptr;
  const int32_t* pl = nullptr;
  const int64_t* ps = nullptr;
};

namespace {
/// Rank of label y among the logits z[0, K) as torch.topk orders them (higher first, ties to
/// the lower class index); K, i.e. in no top-k, when any logit of the row is NaN: NaN has no
/// order (every comparison with it is false, which would otherwise put the label first).
int label_rank(const float* z, int K, int y) {
  if (y < 0 || y >= K) return K;
  int above = 0;
  for (int k = 0; k < K; ++k) {
    if (std::isnan(z[k])) return K;
    above += z[k] > z[y] || (z[k] == z[y] && k < y);
  }
  return above;
}
}  // namespace

EvalResult evaluate(Net& net, const Dataset& ds, Communicator& comm, int64_t batch) {
  const Ops& ops = net.ops();
  DeviceBatch db(net.device());
  const int64_t N = ds.size();
  const int64_t lo = N * comm.rank() / comm.size(), hi = N * (comm.rank() + 1) / comm.size();
  const int K = net.spec().num_classes;
  const int64_t per = int64_t(ds.height()) * ds.width() * ds.channels();
  std::vector<float> x(size_t(batch * per));
  std::vector<int64_t> idx(static_cast<size_t>(batch));
  std::vector<int32_t> labels(static_cast<size_t>(batch));
  double sums[4] = {0, 0, 0, 0};  // loss, top1, top5, n
  std::vector<float> host_logits;  // (n, K)
  for (int64_t s = lo; s < hi; s += batch) {
    const int n = int(std::min(batch, hi - s));
    for (int i = 0; i < n; ++i) {
      idx[i] = s + i;
      labels[i] = ds.label(s + i);
    }
    ds.read_images(idx.data(), n, x.data());
    db.put(n, x.data(), size_t(n * per), labels.data(), nullptr);
    PassContext ctx;
    ctx.N = n;
    const float* logits = net.forward(ctx, db.px);
    LossStats st = ops.softmax_xent(n, K, logits, db.pl, 1.0, nullptr);
    // Top-k on the host, where a row with a NaN logit counts as wrong (the loss op's counts
    // would count it as correct).
    host_logits.resize(size_t(n) * K);
    detail::array_download(net.device(), host_logits.data(), logits,
                           host_logits.size() * sizeof(float));
    for (int i = 0; i < n; ++i) {
      const int r = label_rank(host_logits.data() + int64_t(i) * K, K, labels[i]);
      sums[1] += r == 0;
      sums[2] += r < 5;
    }
    sums[0] += st.loss_sum;
    sums[3] += n;
  }
  comm.allreduce_sum(sums, 4);
  EvalResult r;
  r.n = int64_t(sums[3]);
  if (r.n > 0) {
    r.loss = sums[0] / sums[3];
    r.top1 = sums[1] / sums[3];
    r.top5 = sums[2] / sums[3];
  }
  return r;
}

namespace {

std::string fmt_duration(double s) {
  char b[32];
  int t = int(s + 0.5);
  if (t >= 3600)
    std::snprintf(b, sizeof b, "%dh%02dm", t / 3600, (t / 60) % 60);
  else
    std::snprintf(b, sizeof b, "%dm%02ds", t / 60, t % 60);
  return b;
}

/// Rank 0's progress: a live line on a terminal, plain periodic lines otherwise (Slurm logs).
class Progress {
 public:
  Progress(bool on, const std::string& mode)
      : on_(on), tty_(on && (mode == "live" || (mode == "auto" && isatty(fileno(stdout))))) {}
  void live(const std::string& line) {
    if (!tty_) return;
    std::printf("\r\033[K%s", line.c_str());
    std::fflush(stdout);
  }
  void line(const std::string& line) {
    if (!on_) return;
    if (tty_) std::printf("\r\033[K");
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }

 private:
  bool on_, tty_;
};

class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path) {
    if (path.empty()) return;
    auto ext = std::filesystem::path(path).extension().string();
    csv_ = ext == ".csv";
    f_.open(path, std::ios::out | std::ios::trunc);
    if (!f_) throw InputError(path + ": cannot open the metrics file for writing");
    if (csv_)
      f_ << "step,epoch,loss,accuracy,lr,images_per_s,allreduce_s,comm_span_s,elapsed_s,"
            "grad_comm_dtype\n";
  }
  void set_comm_dtype(const char* d) { dtype_ = d; }
  void row(int64_t step, double epoch, double loss, double acc, double lr, double ips,
           double ar, double span, double elapsed) {
    if (!f_.is_open()) return;
    char b[512];
    if (csv_)
      std::snprintf(b, sizeof b, "%lld,%.4f,%.6f,%.5f,%.6g,%.1f,%.6f,%.6f,%.3f,%s\n",
                    (long long)step, epoch, loss, acc, lr, ips, ar, span, elapsed, dtype_.c_str());
    else
      std::snprintf(b, sizeof b,
                    "{\"step\": %lld, \"epoch\": %.4f, \"loss\": %.6f, \"accuracy\": %.5f, "
                    "\"lr\": %.6g, \"images_per_s\": %.1f, \"allreduce_s\": %.6f, "
                    "\"comm_span_s\": %.6f, \"elapsed_s\": %.3f, \"grad_comm_dtype\": \"%s\"}\n",
                    (long long)step, epoch, loss, acc, lr, ips, ar, span, elapsed, dtype_.c_str());
    f_ << b;
    f_.flush();
  }

 private:
  std::ofstream f_;
  bool csv_ = true;
  std::string dtype_ = "fp32";
};

/// The first non-finite element of x[0, n), or -1.
int64_t first_non_finite(const float* x, size_t n) {
  int64_t bad = -1;
#pragma omp parallel for reduction(max : bad) schedule(static)
  for (int64_t i = 0; i < int64_t(n); ++i)
    if (!std::isfinite(x[i])) bad = std::max(bad, i);
  return bad;
}

std::string fmt_g(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", x);
  return b;
}

std::string ckpt_path(const TrainConfig& c, int64_t step) {
  return c.checkpoint_dir + "/ckpt_" + std::to_string(step) + ".h5";
}

/// Why `dir` cannot take a file of about `need` bytes now, in the system's words ("" when it
/// can, as far as one can tell without writing): vanished, not writable, read-only, or less
/// free than need + 1% + 1 MiB (HDF5's overhead and a margin, so that a nearly full disk is
/// reported as such rather than as a failed H5Dwrite). *full: set for the last reason.
std::string storage_problem(const std::string& dir, uint64_t need, bool* full = nullptr) {
  if (full) *full = false;
  struct stat sb;
  if (::stat(dir.c_str(), &sb) != 0) return dir + ": " + std::strerror(errno);
  if (!S_ISDIR(sb.st_mode)) return dir + ": not a directory";
  if (::access(dir.c_str(), W_OK) != 0) return dir + ": " + std::strerror(errno);
  struct statvfs vs;
  // Test hook (tests/faults/ckpt_write_fail.sh): the free-space check passes, as when the disk
  // fills between the check and the write.
  static const bool ignore_free = std::getenv("FT_TEST_IGNORE_FREE_SPACE") != nullptr;
  if (::statvfs(dir.c_str(), &vs) == 0) {
    if (vs.f_flag & ST_RDONLY) return dir + ": " + std::strerror(EROFS);
    const uint64_t avail = uint64_t(vs.f_bavail) * vs.f_frsize;
    if (!ignore_free && avail < need + need / 100 + (uint64_t(1) << 20)) {
      if (full) *full = true;
      char b[200];
      std::snprintf(b, sizeof b, "%s (the checkpoint needs %.1f MB, the file system of %s has %.1f "
                    "MB free)", std::strerror(ENOSPC), double(need) / 1e6, dir.c_str(),
                    double(avail) / 1e6);
      return b;
    }
  }
  return "";
}

/// Rank 0 writes dir/ckpt_<step>.h5 atomically (temporary file, fsync, rename), after checking
/// that the weights and momentum are finite; then keeps only the newest --keep-checkpoints.
/// Any failure is an ft::Error saying that the previous checkpoint is still valid.
std::string write_checkpoint(const TrainConfig& c, const std::string& json, Net& net,
                             const Buffer& momentum_dev, CheckpointState st,
                             const std::string& previous, Progress& prog) {
  net.params_to_host();
  std::vector<float> momentum(momentum_dev.size());
  momentum_dev.download(momentum.data(), momentum.size());
  const std::string path = ckpt_path(c, st.step);
  const std::string keep =
      previous.empty() ? "no earlier checkpoint of this run exists"
                       : "the previous checkpoint " + previous + " is intact";
  const int64_t bw = first_non_finite(net.param_views().front().data, net.num_params());
  const int64_t bm = first_non_finite(momentum.data(), momentum.size());
  if (bw >= 0 || bm >= 0)
    throw Error("train: not writing " + path + ": the " + (bw >= 0 ? "weights" : "momentum") +
                " hold NaN/Inf at step " + std::to_string(st.step) + "; " + keep);
  st.arch = c.arch;
  st.bypass = c.bypass;
  st.seed = uint64_t(c.seed);
  st.shuffle = c.shuffle;
  st.global_batch = c.batch;
  st.config_json = json;
  st.spec_attrs = spec_attrs(net.spec());  // Fire config, classes, ...: spec_from_file
  st.spec_attrs["build"] = build_id();      // root attribute "build": the binary that wrote it
  const std::string& dir = c.checkpoint_dir;
  const uint64_t need = 2 * uint64_t(net.num_params()) * sizeof(float);  // weights + momentum
  auto fail = [&](const std::string& why) {
    throw Error("train: cannot write checkpoint " + path + " at step " + std::to_string(st.step) +
                ": " + why + "; " + keep + " (stopping: a run that cannot checkpoint would lose "
                "everything after it)");
  };
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    // Deleted under a running job (a scratch purge, a user): re-create it and go on; the
    // checkpoints that were in it are gone, but this one saves the run so far.
    std::fprintf(stderr, "firetrain: warning: the checkpoint directory %s vanished during the run "
                 "(its earlier checkpoints are gone); re-creating it\n", dir.c_str());
    std::filesystem::create_directories(dir, ec);
    if (ec) fail("the checkpoint directory " + dir + " vanished and cannot be re-created: " +
                 ec.message());
  }
  bool full = false;
  std::string why = storage_problem(dir, need, &full);
  if (full && c.keep_checkpoints > 1) {
    // Too little space: delete now what pruning would delete after this write, keeping the
    // newest checkpoints (at least one), then look again.
    prune_checkpoints(dir, c.keep_checkpoints - 1);
    why = storage_problem(dir, need);
  }
  if (!why.empty()) fail(why);
  try {
    save_checkpoint(path, net.param_views(), momentum.data(), momentum.size(), st);
  } catch (const std::exception& e) {
    // HDF5 reports "H5Dwrite returned -1"; say what the system would (ENOSPC, EROFS...): as
    // the file system looks now, or else (the disk filled during the write, and the removed
    // temporary file freed it again) as the failed call's errno says.
    std::string why = storage_problem(dir, need);
    const auto* fe = dynamic_cast<const Error*>(&e);
    const int err = fe ? fe->sys_errno() : 0;
    if (why.empty() && (err == ENOSPC || err == EDQUOT || err == EFBIG || err == EIO ||
                        err == EROFS))
      why = std::string(std::strerror(err)) + " during the write";
    fail(why.empty() ? std::string(e.what()) : why + " (" + e.what() + ")");
  }
  prune_checkpoints(c.checkpoint_dir, c.keep_checkpoints);
  prog.line("checkpoint " + path);
  return path;
}

/// Fails early (exit code 2, before any work) if the checkpoint directory cannot be written.
void probe_checkpoint_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw InputError("train: --checkpoint-dir " + dir + ": cannot create the directory" +
                     (ec ? " (" + ec.message() + ")" : std::string(" (a file is in the way)")));
  const std::string probe = dir + "/.firetrain_probe." + std::to_string(getpid());
  FILE* f = std::fopen(probe.c_str(), "w");
  if (!f) throw InputError("train: --checkpoint-dir " + dir + ": not writable");
  std::fclose(f);
  std::remove(probe.c_str());
}

/// Keys of the config that do not change the training trajectory (free to differ on resume).
bool trajectory_key(const std::string& k) {
  static const char* free_keys[] = {"resume",    "checkpoint-dir", "checkpoint-every",
                                    "keep-checkpoints", "stop-at", "metrics",
                                    "log-every", "progress",       "threads",
                                    "device",    "bucket-kb",      "eval-batch",
                                    "eval-each-epoch", "val",      "weights",
                                    "collective-timeout", "timeline", "timeline-steps"};
  for (const char* f : free_keys)
    if (k == f) return false;
  return true;
}

/// Rank 0: finds the checkpoint to resume from ("" to start fresh); reports unusable ones.
std::string choose_resume(const TrainConfig& c, const std::vector<ParamView>& params,
                          Progress& prog) {
  if (c.resume.empty()) return "";
  if (c.resume != "auto") {
    if (std::string why = checkpoint_problem(c.resume, params); !why.empty())
      throw InputError("train: --resume " + c.resume + ": " + why);
    return c.resume;
  }
  auto all = list_checkpoints(c.checkpoint_dir);
  if (all.empty()) {
    prog.line("resume auto: no checkpoint in " + c.checkpoint_dir + ", starting from step 0");
    return "";
  }
  std::string tried;
  for (auto& [step, path] : all) {
    std::string why = checkpoint_problem(path, params);
    if (why.empty()) return path;
    std::fprintf(stderr, "firetrain: warning: skipping unusable checkpoint %s\n", why.c_str());
    tried += (tried.empty() ? "" : ", ") + path;
  }
  throw InputError("train: --resume auto: no valid checkpoint in " + c.checkpoint_dir +
                   " (all unusable: " + tried + ")");
}

/// The config JSON stored in checkpoint `path` ("" when unreadable or absent).
std::string stored_config(const std::string& path) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  try {
    h5::Handle f = h5::open_file(path);
    return h5::has_attr(f, "config") ? h5::read_attr_string(f, "config") : "";
  } catch (const std::exception&) {
    return "";
  }
}

}  // namespace

std::vector<std::string> adopt_checkpoint_config(Options& o, TrainConfig& c,
                                                 Communicator& comm) {
  if (c.resume.empty()) return {};
  std::string json, from;
  if (comm.rank() == 0) {
    std::vector<std::string> paths;
    if (c.resume != "auto")
      paths.push_back(c.resume);
    else if (!c.checkpoint_dir.empty())
      for (auto& [step, p] : list_checkpoints(c.checkpoint_dir)) paths.push_back(p);
    for (auto& p : paths)
      if (json = stored_config(p); !json.empty()) {
        from = p;
        break;
      }
  }
  comm.broadcast(json, 0);
  comm.broadcast(from, 0);
  if (json.empty()) return {};
  std::map<std::string, std::string> stored, now;
  try {
    stored = parse_flat_json(json);
    now = parse_flat_json(o.to_json());
  } catch (const InputError&) {
    return {};
  }
  // Per-run or per-machine settings stay as given now; --steps and --epochs go together.
  static const std::set<std::string> keep_now = {"resume", "stop-at", "weights", "metrics",
                                                 "device", "threads", "progress",
                                                 "collective-timeout", "config", "timeline",
                                                 "timeline-steps"};
  const bool length_given = o.was_set("steps") || o.was_set("epochs");
  std::vector<std::string> taken;
  for (auto& [k, v] : stored) {
    if (keep_now.count(k) || ((k == "steps" || k == "epochs") && length_given)) continue;
    auto it = now.find(k);
    if (it == now.end() || it->second == v) continue;
    try {
      if (o.assign_default(k, v, from + ": stored config")) {
        // Numbers as short as they round-trip (0.3, not 0.29999999999999999).
        std::string shown = v;
        char* end = nullptr;
        const double x = std::strtod(v.c_str(), &end);
        char b15[40];
        std::snprintf(b15, sizeof b15, "%.15g", x);
        if (!v.empty() && *end == 0 && std::strtod(b15, nullptr) == x) shown = b15;
        taken.push_back("--" + k + " " + shown);
      }
    } catch (const InputError& e) {
      if (comm.rank() == 0)
        std::fprintf(stderr, "firetrain: warning: %s; keeping --%s %s\n", e.what(), k.c_str(),
                     it->second.c_str());
    }
  }
  if (comm.rank() == 0 && !taken.empty()) {
    std::string line = "resume: settings not given on the command line, from " + from + ":";
    for (auto& t : taken) line += " " + t;
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
  return taken;
}

/// --grad-comm-dtype from the config JSON (fp32 when absent); ft::InputError when invalid.
static CommDtype grad_comm_dtype_of(const std::string& json) {
  std::map<std::string, std::string> m;
  try {
    m = parse_flat_json(json);
  } catch (const InputError&) {
    return CommDtype::FP32;
  }
  auto it = m.find("grad-comm-dtype");
  return it == m.end() ? CommDtype::FP32 : parse_comm_dtype(it->second);
}

TrainSummary train(const TrainConfig& c, const std::string& json, Communicator& comm) {
  validate(c, comm.size());
  const CommDtype comm_dtype = grad_comm_dtype_of(json);
  set_collective_timeout(c.collective_timeout);
  const bool root = comm.rank() == 0;
  Progress prog(root, c.progress);
  if (root && !c.checkpoint_dir.empty()) probe_checkpoint_dir(c.checkpoint_dir);
  if (root && !c.timeline.empty()) probe_timeline_path(c.timeline);
  const int threads = set_threads(c.threads, comm);

  Dataset train_ds = Dataset::open(c.data);
  std::unique_ptr<Dataset> val_ds;
  if (!c.val.empty()) {
    val_ds = std::make_unique<Dataset>(Dataset::open(c.val));
    if (val_ds->height() != train_ds.height() || val_ds->width() != train_ds.width() ||
        val_ds->channels() != train_ds.channels() || val_ds->num_classes() != train_ds.num_classes())
      throw InputError(c.val + ": images or classes differ from the training set " + c.data);
  }
  const Device dev = parse_device(c.device);
  bind_device(dev, comm.local_rank());
  NetSpec spec;
  spec.arch = c.arch;
  spec.in_channels = train_ds.channels();
  spec.height = train_ds.height();
  spec.width = train_ds.width();
  spec.num_classes = train_ds.num_classes();
  spec.dropout = float(c.dropout);
  spec.bypass = c.bypass;
  spec.fire = c.fire;
  spec.precision = c.precision;
  Net net(spec, dev);

  // Everyone must agree on what is about to happen, before the first collective on data.
  // One line per item, so the error names the first one that differs (e.g. "--lr 0.02"). Not
  // compared: paths that may differ per node (a dataset staged to local disks is checked by
  // content above) or that only rank 0 uses, and per-process settings.
  std::ostringstream desc;
  desc << "build " << build_id_for_ranks() << "\narch " << c.arch << "\nparams "
       << net.num_params() << "\ntrain set "
       << train_ds.size() << " x " << train_ds.height() << "x" << train_ds.width() << "x"
       << train_ds.channels() << "\nclasses " << train_ds.num_classes() << "\nlabels fnv1a64 "
       << fnv1a64(train_ds.labels().data(), train_ds.labels().size() * sizeof(int32_t));
  try {
    for (auto& [k, v] : parse_flat_json(json))
      if (k != "threads" && k != "progress" && k != "data" && k != "val" && k != "weights" &&
          k != "resume" && k != "checkpoint-dir" && k != "metrics")
        desc << "\n--" << k << " " << v;
  } catch (const InputError&) {
    desc << "\nconfig " << json;
  }
  comm.check_consistent("the model, config or dataset", desc.str());

  net.init_weights(uint64_t(c.seed), parse_init(c.init));
  // Resume: rank 0 picks and loads the checkpoint (weights, momentum, state) and broadcasts.
  std::vector<float> momentum_host;
  std::string resume_path = root ? choose_resume(c, net.param_views(), prog) : "";
  comm.broadcast(resume_path, 0);
  CheckpointState rs;
  if (!resume_path.empty()) {
    momentum_host.assign(net.num_params(), 0.f);
    std::string state;
    if (root) {
      rs = load_checkpoint(resume_path, net.param_views(), momentum_host.data());
      char b[160];  // the loss scale in hex ("%a"): exact
      std::snprintf(b, sizeof b, "%lld %d %d %a %lld %lld", (long long)rs.step, rs.world_size,
                    int(rs.has_loss_scale), rs.loss_scale, (long long)rs.loss_scale_good_steps,
                    (long long)rs.loss_scale_skipped);
      state = b;
    }
    comm.broadcast(state, 0);
    {
      long long step = 0, good = 0, skipped = 0;
      int has = 0;
      FT_REQUIRE(std::sscanf(state.c_str(), "%lld %d %d %la %lld %lld", &step, &rs.world_size,
                             &has, &rs.loss_scale, &good, &skipped) == 6,
                 "resume state broadcast");
      rs.step = step;
      rs.has_loss_scale = has != 0;
      rs.loss_scale_good_steps = good;
      rs.loss_scale_skipped = skipped;
    }
    if (root) {
      auto fail = [&](const std::string& m) { throw InputError("train: --resume " + resume_path + ": " + m); };
      if (rs.global_batch > 0 && rs.global_batch != c.batch)
        fail("written with global --batch " + std::to_string(rs.global_batch) + ", now " +
             std::to_string(c.batch) + "; a resumed run keeps the global batch (any number of "
             "ranks that divides it)");
      if (!rs.arch.empty() && rs.arch != c.arch)
        fail("written for --arch " + rs.arch + ", now " + c.arch);
      if (rs.bypass != c.bypass) fail("written with --bypass " + rs.bypass + ", now " + c.bypass);
      if (rs.dataset_size > 0 && rs.dataset_size != train_ds.size())
        std::fprintf(stderr, "firetrain: warning: %s was written for a training set of %lld "
                     "samples, %s has %lld: the data order differs from the original run\n",
                     resume_path.c_str(), (long long)rs.dataset_size, c.data.c_str(),
                     (long long)train_ds.size());
      if (!rs.config_json.empty()) {
        std::map<std::string, std::string> was, now = parse_flat_json(json);
        try {
          was = parse_flat_json(rs.config_json);
        } catch (const InputError&) {
        }
        for (auto& [k, v] : now) {
          auto it = was.find(k);
          if (it != was.end() && it->second != v && trajectory_key(k))
            std::fprintf(stderr, "firetrain: warning: resuming with --%s %s (the checkpoint was "
                         "written with %s): the result will differ from an uninterrupted run\n",
                         k.c_str(), v.c_str(), it->second.c_str());
        }
      }
    }
  } else if (!c.weights.empty()) {
    load_weights_h5(c.weights, net.param_views());
  }
  // Rank 0's weights are the truth (broadcast from host memory: MPI need not be CUDA-aware).
  comm.broadcast(net.param_views().front().data, net.num_params(), 0);
  net.params_from_host();
  if (c.step_hook) c.step_hook(net, rs.step);

  LoaderOptions lo;
  lo.global_batch = c.batch;
  lo.rank = comm.rank();
  lo.world = comm.size();
  lo.seed = uint64_t(c.seed);
  lo.shuffle = c.shuffle;
  lo.augment = c.augment;
  lo.pad = c.pad;
  lo.flip = c.flip;
  Loader loader(train_ds, lo);
  const int64_t spe = loader.steps_per_epoch();
  if (spe <= 0)
    throw InputError(c.data + ": " + std::to_string(train_ds.size()) +
                     " samples are fewer than one global batch of " + std::to_string(c.batch));
  const int64_t total = c.steps > 0 ? c.steps : c.epochs * spe;
  const int64_t epochs = (total + spe - 1) / spe;
  if (rs.step > total)
    throw InputError("train: --resume " + resume_path + " is at step " + std::to_string(rs.step) +
                     ", beyond the " + std::to_string(total) + " steps configured");

  if (root) {
    char b[512];
    std::snprintf(b, sizeof b,
                  "firetrain train: %s on %s, %zu parameters, %d rank(s) x %d thread(s), global batch "
                  "%lld, %lld steps (%lld per epoch), %s on %s (%lld images %dx%dx%d, %d classes)",
                  c.arch.c_str(), device_name(dev), net.num_params(), comm.size(), threads, (long long)c.batch,
                  (long long)total, (long long)spe, c.lr_schedule.c_str(), c.data.c_str(),
                  (long long)train_ds.size(), train_ds.height(), train_ds.width(),
                  train_ds.channels(), train_ds.num_classes());
    prog.line(b);
  }

  MetricsWriter metrics(root ? c.metrics : "");
  auto reducer_ptr = make_reducer(dev, comm, net.grads(), net.num_params(),
                                  size_t(c.bucket_kb) * 1024, comm_dtype);
  Reducer& reducer = *reducer_ptr;
  if (root) {
    char b[300];
    const int k = comm_prescale_log2(comm_dtype, comm.size());
    const std::string note =
        comm.size() == 1 && dev == Device::CPU && comm_dtype != CommDtype::FP32
            ? " (1 rank: nothing is sent, the gradient stays fp32)"
        : k > 0 ? ", fp16 pre-scaled by 2^-" + std::to_string(k)
                : "";
    std::snprintf(b, sizeof b,
                  "gradient all-reduce: %s, %s, %zu bucket(s), %zu bytes per rank per step%s",
                  reducer.backend(), comm_dtype_name(comm_dtype), reducer.num_buckets(),
                  net.num_params() * comm_dtype_bytes(comm_dtype), note.c_str());
    prog.line(b);
  }
  metrics.set_comm_dtype(comm_dtype_name(comm_dtype));
  const Ops& ops = net.ops();
  Buffer momentum(dev, net.num_params());
  if (!resume_path.empty()) {
    comm.broadcast(momentum_host.data(), momentum_host.size(), 0);
    momentum.upload(momentum_host.data(), momentum_host.size());
    if (root) {
      char b[400];
      std::snprintf(b, sizeof b,
                    "resumed from %s: step %lld of %lld (epoch %lld, step %lld of the epoch)%s",
                    resume_path.c_str(), (long long)rs.step, (long long)total,
                    (long long)(rs.step / spe), (long long)(rs.step % spe),
                    rs.world_size != comm.size()
                        ? (", elastic restart: written by " + std::to_string(rs.world_size) +
                           " rank(s), now " + std::to_string(comm.size())).c_str()
                        : "");
      prog.line(b);
    }
  }
  Buffer dlogits(dev);
  DeviceBatch db(dev);
  const int K = spec.num_classes;
  LossScaler scaler(LossScaler::parse(c.loss_scale, c.precision, c.loss_scale_init,
                                      c.loss_scale_growth_interval));
  if (scaler.dynamic() && rs.has_loss_scale) {
    try {
      scaler.restore({rs.loss_scale, rs.loss_scale_good_steps, rs.loss_scale_skipped});
    } catch (const InputError& e) {
      throw InputError("train: --resume " + resume_path + ": " + e.what());
    }
  }
  if (root && scaler.mode() != LossScaler::Mode::None)
    prog.line("loss scale: " + std::string(LossScaler::mode_name(scaler.mode())) + ", " +
              LossScaler::format(scaler.scale()) +
              (scaler.dynamic() ? " (halved on a non-finite gradient, doubled after " +
                                      std::to_string(c.loss_scale_growth_interval) +
                                      " finite steps; " + std::to_string(scaler.skipped()) +
                                      " step(s) skipped so far)"
                                : std::string()));

  TrainSummary sum;
  using clock = std::chrono::steady_clock;
  const auto t_start = clock::now();
  auto t_log = t_start;
  double log_stats[4] = {0, 0, 0, 0};  // loss sum, correct, count, allreduce seconds
  double log_span = 0;
  int64_t log_steps = 0;
  auto t_live = t_start;
  int64_t step = rs.step;
  sum.start_step = step;
  std::string last_ckpt = resume_path;
  int64_t last_ckpt_step = resume_path.empty() ? -1 : step;
  auto checkpoint = [&](int64_t at) {
    CheckpointState st;
    st.step = at;
    st.epoch = at / spe;
    st.step_in_epoch = at % spe;
    st.steps_per_epoch = spe;
    st.dataset_size = train_ds.size();
    st.total_steps = total;
    st.world_size = comm.size();
    if (scaler.dynamic()) {
      st.has_loss_scale = true;
      st.loss_scale = scaler.state().scale;
      st.loss_scale_good_steps = scaler.state().good_steps;
      st.loss_scale_skipped = scaler.state().skipped;
    }
    if (root) write_checkpoint(c, json, net, momentum, st, last_ckpt, prog);
    last_ckpt = ckpt_path(c, at);
    last_ckpt_step = at;
  };
  auto last_good = [&] {
    return last_ckpt.empty() ? std::string("no checkpoint was written")
                             : "the last good checkpoint is " + last_ckpt;
  };
  // Test hook: poison the gradient after the all-reduce at this step (CPU and CUDA).
  const char* nan_env = std::getenv("FT_TEST_NAN_GRAD_STEP");
  const int64_t nan_step = nan_env ? std::atoll(nan_env) : -1;
  // Test hook (tests/faults/stall_rank.sh): rank FT_TEST_STALL_RANK (default 1) blocks forever
  // before the all-reduce of step FT_TEST_STALL_AT_STEP, as a hung process would.
  const char* stall_env = std::getenv("FT_TEST_STALL_AT_STEP");
  const int64_t stall_step = stall_env ? std::atoll(stall_env) : -1;
  const char* stall_rank_env = std::getenv("FT_TEST_STALL_RANK");
  const int stall_rank = stall_rank_env ? std::atoi(stall_rank_env) : 1;
  int stop_sig = 0;
  bool stop = false;
  // --timeline: steps [tl_first, tl_end) are recorded (not the run's first step when it has
  // more: that one allocates and touches memory), then gathered and written by rank 0.
  Timeline tl(comm.rank());
  const bool tl_on = !c.timeline.empty();
  // This run ends at `total` or, with --stop-at, after that step (at least one step).
  const int64_t run_end =
      c.stop_at > 0 ? std::min(total, std::max(c.stop_at, step + 1)) : total;
  const int64_t tl_first = run_end - step > 1 ? step + 1 : step;
  const int64_t tl_end = std::min(run_end, tl_first + c.timeline_steps);
  bool tl_done = !tl_on;
  double tl_mark = 0;  // end of the last phase recorded
  auto finish_timeline = [&] {
    tl.set_recording(false);
    net.set_timeline(nullptr);
    reducer.set_timeline(nullptr);
    tl_done = true;
    try {
      const std::string table = write_timeline(comm, tl, c.timeline);
      if (root) prog.line(table);
    } catch (const std::exception& e) {  // diagnostics only: training goes on
      std::fprintf(stderr, "firetrain: warning: --timeline not written: %s\n", e.what());
    }
  };
  if (tl_on) {
    net.set_timeline(&tl);
    reducer.set_timeline(&tl);
    comm.barrier();
    tl.reset_origin();
  }
  // A phase of the step on the timeline: from the end of the previous one to now.
  auto phase = [&](const char* name) {
    if (!tl.recording()) return;
    const double t = tl.now_us();
    tl.span("phase", name, tl_mark, t);
    tl_mark = t;
  };
  Batch batch;
  for (int64_t epoch = step / spe; epoch < epochs && step < total && !stop; ++epoch) {
    loader.start_epoch(epoch, epoch == step / spe ? step % spe : 0);
    if (tl_on) tl_mark = tl.now_us();
    while (step < total && !stop && loader.next(batch)) {
      const double lr = lr_at(c, step, total, spe);
      const int64_t this_step = step;
      const double tl_step0 = tl_mark;  // the step starts where the loader was called
      tl.set_recording(tl_on && step >= tl_first && step < tl_end);
      tl.set_step(step);
      NvtxRange nvtx_step("step");
      PassContext ctx;
      ctx.N = batch.n;
      ctx.train = true;
      ctx.seed = uint64_t(c.seed);
      ctx.step = uint64_t(step);
      db.put(batch.n, batch.images.data(), batch.images.size(), batch.labels.data(),
             batch.indices.data());
      ctx.samples = db.ps;
      phase("data");
      const float* logits = net.forward(ctx, db.px);
      phase("forward");
      if (dlogits.size() < size_t(batch.n) * K) dlogits.resize(size_t(batch.n) * K);
      // Loss scaling: dlogits = (p - y) / (batch / S) = S * (p - y) / batch, computed in
      // double and rounded once; S is a power of two, so this is the unscaled gradient times S
      // exactly, and so is everything backward derives from it (linear in dlogits).
      const float S = scaler.scale();
      LossStats st = ops.softmax_xent(batch.n, K, logits, db.pl, double(c.batch) / double(S),
                                      dlogits.data());
      // Every rank learns whether any rank's loss is non-finite, so all of them throw alike
      // (a caller such as `sweep` catches it and goes on with the same communicator).
      int bad_rank[1] = {std::isfinite(st.loss_sum) ? 0 : comm.rank() + 1};
      comm.allreduce_max(bad_rank, 1);
      if (bad_rank[0] > 0)
        throw Error("train: the loss became non-finite (NaN or Inf) at step " +
                    std::to_string(step) + " on rank " + std::to_string(bad_rank[0] - 1) + " (lr " +
                    fmt_g(lr) + "); " + last_good() +
                    "; lower --lr or add --warmup-steps");
      phase("loss");
      if (step == stall_step && comm.rank() == stall_rank) {
        std::fprintf(stderr, "firetrain: test hook: rank %d stalls before the all-reduce of "
                     "step %lld\n", comm.rank(), (long long)step);
        for (;;) pause();
      }
      reducer.begin();
      net.backward(ctx, dlogits.data(), [&](size_t lo_off) {
        static const std::string kReady = "reducer.ready";
        TimelineScope span(&tl, "comm", kReady);
        reducer.ready(lo_off);  // starts the buckets now complete, progresses those in flight
      });
      phase("backward");
      const double ar = reducer.finish();
      phase("allreduce wait");
      // After the all-reduce every rank holds the same sum, so all ranks stop alike (CPU: an
      // OpenMP scan; CUDA: a flag kernel after the NCCL stream, one 4-byte copy).
      if (step == nan_step) {  // (CUDA: a copy on the compute stream, after the all-reduce)
        const float nan = NAN;
        detail::array_upload(dev, net.grads() + net.num_params() / 2, &nan, sizeof nan);
      }
      const bool finite = reducer.grads_finite();
      phase("gradient check");
      if (!finite && !scaler.can_skip())
        throw Error("train: non-finite gradient (NaN or Inf) at step " + std::to_string(step) +
                    " (lr " + fmt_g(lr) + ")" +
                    (scaler.dynamic() ? ", with the dynamic loss scale at its floor " +
                                            LossScaler::format(S) + " (2^-24 is the lowest)"
                                      : std::string()) +
                    "; " + last_good() + "; lower --lr or add --warmup-steps");
      if (scaler.update(finite)) {
        if (S != 1.f) ops.scale_inplace(int64_t(net.num_params()), 1.f / S, net.grads());
        // The momentum buffer starts at the first step applied (skipped ones do not count).
        ops.sgd_update(net.num_params(), float(lr), float(c.momentum), float(c.weight_decay),
                       step == scaler.skipped(), net.params(), net.grads(), momentum.data());
        phase("optimizer");
      } else {
        prog.line("step " + std::to_string(step) + ": non-finite gradient, step skipped, loss "
                  "scale " + LossScaler::format(S) + " -> " +
                  LossScaler::format(scaler.scale()));
      }
      ++step;
      if (c.step_hook) c.step_hook(net, step);
      // Every rank stops after the same step: combine the signal flags (cheap: one int).
      int flags[1] = {stop_requested()};
      comm.allreduce_max(flags, 1);
      stop_sig = flags[0];
      phase("stop flags");
      stop = stop_sig != 0 || (c.stop_at > 0 && step >= c.stop_at && step < total);
      log_stats[0] += st.loss_sum;
      log_stats[1] += double(st.correct1);
      log_stats[2] += batch.n;
      log_stats[3] += ar;
      log_span += reducer.comm_span();
      ++log_steps;

      const auto now = clock::now();
      const double elapsed = std::chrono::duration<double>(now - t_start).count();
      const double eta = elapsed / double(step - sum.start_step) * double(total - step);
      if (root && std::chrono::duration<double>(now - t_live).count() > 0.25) {
        t_live = now;
        char b[256];
        std::snprintf(b, sizeof b,
                      "step %lld/%lld  epoch %.2f  loss %.4f  lr %.4g  %s elapsed  ETA %s",
                      (long long)step, (long long)total, double(step) / double(spe),
                      st.loss_sum / batch.n, lr, fmt_duration(elapsed).c_str(),
                      fmt_duration(eta).c_str());
        prog.live(b);
      }
      if (step % c.log_every == 0 || step == total || stop) {
        comm.allreduce_sum(log_stats, 3);  // loss, correct, count over ranks
        const double dt = std::chrono::duration<double>(now - t_log).count();
        const double ips = log_stats[2] / std::max(dt, 1e-9);
        const double loss = log_stats[0] / log_stats[2], acc = log_stats[1] / log_stats[2];
        const double ar_step = log_stats[3] / double(log_steps);
        sum.last_loss = loss;
        if (root) {
          char b[320];
          std::snprintf(b, sizeof b,
                        "step %6lld/%lld  epoch %6.2f  loss %.4f  acc %.4f  lr %.4g  %7.1f img/s  "
                        "allreduce %.2f ms/step  elapsed %s  ETA %s",
                        (long long)step, (long long)total, double(step) / double(spe), loss, acc,
                        lr, ips, ar_step * 1e3, fmt_duration(elapsed).c_str(),
                        fmt_duration(eta).c_str());
          prog.line(b);
          metrics.row(step, double(step) / double(spe), loss, acc, lr, ips, ar_step,
                      log_span / double(log_steps), elapsed);
        }
        sum.allreduce_s += log_stats[3];
        std::fill(log_stats, log_stats + 4, 0.0);
        log_span = 0;
        log_steps = 0;
        t_log = clock::now();
        phase("log");
      }
      if (!c.checkpoint_dir.empty() && c.checkpoint_every > 0 && step % c.checkpoint_every == 0 &&
          step < total && !stop) {
        checkpoint(step);
        phase("checkpoint");
      }
      if (tl_on) tl_mark = tl.now_us();
      if (tl.recording()) {
        char a[96];
        std::snprintf(a, sizeof a, "\"lr\":%.6g,\"loss\":%.6g", lr, st.loss_sum / batch.n);
        tl.span("step", "step " + std::to_string(this_step), tl_step0, tl_mark, a);
        tl.set_recording(false);  // (an evaluation between steps is not part of a step)
      }
      if (!tl_done && step >= tl_end) finish_timeline();
    }
    if (val_ds && c.eval_each_epoch && step < total && !stop && step % spe == 0) {
      EvalResult r = evaluate(net, *val_ds, comm, c.eval_batch);
      char b[200];
      std::snprintf(b, sizeof b, "epoch %lld: val top-1 %.4f  top-5 %.4f  loss %.4f (%lld images)",
                    (long long)epoch + 1, r.top1, r.top5, r.loss, (long long)r.n);
      prog.line(b);
    }
  }
  if (!tl_done) finish_timeline();  // the run ended inside the window (or before it)
  sum.steps = step;
  sum.skipped_steps = scaler.skipped();
  sum.loss_scale = scaler.scale();
  if (root && scaler.mode() != LossScaler::Mode::None)
    prog.line("loss scale: " + std::string(LossScaler::mode_name(scaler.mode())) + ", final " +
              LossScaler::format(scaler.scale()) + ", " + std::to_string(scaler.skipped()) +
              " step(s) skipped (non-finite gradient) in " + std::to_string(step) + " steps");
  sum.seconds = std::chrono::duration<double>(clock::now() - t_start).count();
  sum.images_per_s =
      double(step - sum.start_step) * double(c.batch) / std::max(sum.seconds, 1e-9);
  if (!c.checkpoint_dir.empty() && last_ckpt_step != step) checkpoint(step);
  sum.last_checkpoint = c.checkpoint_dir.empty() ? "" : last_ckpt;
  if (stop) {
    sum.stopped = true;
    sum.stop_signal = stop_sig;
    if (root) {
      const std::string why = stop_sig ? std::string("received ") + (stop_sig == SIGTERM ? "SIGTERM"
                                                                     : stop_sig == SIGINT ? "SIGINT"
                                                                     : stop_sig == SIGUSR1 ? "SIGUSR1"
                                                                     : "signal " + std::to_string(stop_sig))
                                       : std::string("--stop-at ") + std::to_string(c.stop_at);
      prog.line("firetrain train: " + why + ": stopped after step " + std::to_string(step) + "/" +
                std::to_string(total) +
                (c.checkpoint_dir.empty()
                     ? std::string("; no --checkpoint-dir, so nothing was saved")
                     : "; checkpoint " + last_ckpt + " written; continue with --resume auto"));
    }
    return sum;
  }
  if (val_ds) {
    sum.val = evaluate(net, *val_ds, comm, c.eval_batch);
    char b[256];
    std::snprintf(b, sizeof b,
                  "final: val top-1 %.4f  top-5 %.4f  loss %.4f on %lld images (%s); trained %lld "
                  "steps in %s, %.1f img/s",
                  sum.val.top1, sum.val.top5, sum.val.loss, (long long)sum.val.n,
                  c.val.c_str(), (long long)step, fmt_duration(sum.seconds).c_str(),
                  sum.images_per_s);
    prog.line(b);
  }
  return sum;
}

}  // namespace ft
