/// @brief The data-parallel training loop and evaluation, as a library (the CLI is thin).
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "firetrain/comm/communicator.hpp"
#include "firetrain/comm/watchdog.hpp"
#include "firetrain/model/net.hpp"

namespace ft {

class Dataset;
class Options;

struct TrainConfig {
  std::string arch = "squeezenet_small";
  std::string bypass = "none";  // none | simple | complex (the paper's bypass variants)
  FireMeta fire;                // Fire modules (--base-e ... --fire, see train/sweep.hpp)
  std::string data, val;
  int64_t epochs = 0, steps = 0;
  int64_t batch = 128;  // global
  double lr = 0.04;
  std::string lr_schedule = "poly";  // poly | constant | step | cosine
  double lr_power = 1.0;             // poly exponent (the paper: 1, linear to 0)
  int lr_step_epochs = 30;           // step schedule: multiply by lr_gamma every N epochs
  double lr_gamma = 0.1;
  int64_t warmup_steps = 0;          // linear warm-up from lr/warmup to lr
  double momentum = 0.9, weight_decay = 2e-4, dropout = 0.5;
  int64_t seed = 42;
  int threads = 0;  // per rank; 0: cores / ranks on this node
  bool shuffle = true, augment = true;
  int pad = 2;      // random-crop padding (pixels)
  bool flip = true;
  std::string init = "torchvision";  // torchvision | xavier | kaiming
  std::string checkpoint_dir;
  int64_t checkpoint_every = 0;      // steps; 0: only at the end
  int keep_checkpoints = 3;          // newest K kept in checkpoint_dir (0: all)
  std::string resume;                // "" | auto (newest valid in checkpoint_dir) | PATH
  int64_t stop_at = 0;               // end this run after global step N (checkpointed); 0: no
  std::string weights;               // initial weights (torch-h5 or checkpoint)
  std::string metrics;               // .csv or .jsonl
  /// Chrome trace of steps [first, first + timeline_steps) of the run (first: the run's second
  /// step; its first allocates and touches memory), all ranks in one file (core/timeline.hpp).
  std::string timeline;
  int64_t timeline_steps = 20;
  int64_t log_every = 50;
  std::string progress = "auto";     // auto | live | plain
  std::string device = "cpu";
  std::string precision = "fp32";  // fp32 | bf16 (convolutions in bf16, fp32 master weights)
  /// Loss scaling (train/loss_scaler.hpp): auto (dynamic with --precision fp16, else none) |
  /// none | dynamic | a static scale (a power of two).
  std::string loss_scale = "auto";
  double loss_scale_init = 65536;             // dynamic: the initial scale (2^16)
  int64_t loss_scale_growth_interval = 2000;  // dynamic: finite steps before the scale doubles
  int bucket_kb = 1024;              // all-reduce bucket size
  int64_t eval_batch = 500;
  bool eval_each_epoch = true;
  /// Seconds a collective may take before the job is aborted naming the rank and the
  /// operation (0: no limit). Default: FT_COLLECTIVE_TIMEOUT or 300.
  double collective_timeout = default_collective_timeout();
  /// Not an option: when set, called on every rank once the initial weights are in place
  /// (step = the start step) and after every step (step = global steps done; a step skipped by
  /// dynamic loss scaling included, the weights then unchanged), with the net (arena on its
  /// device). `firetrain compress` keeps pruned weights at zero with it.
  std::function<void(Net& net, int64_t step)> step_hook;
};

/// Registers every TrainConfig field as an option of `firetrain train`.
void add_train_options(Options& o, TrainConfig& c);
/// Validates a config before any work (exit code 2 on impossible values).
void validate(const TrainConfig& c, int world);
/// Learning rate at `step` (0-based) of `total` steps.
double lr_at(const TrainConfig& c, int64_t step, int64_t total, int64_t steps_per_epoch);

struct EvalResult {
  double top1 = 0, top5 = 0, loss = 0;
  int64_t n = 0;
};
/// Every rank evaluates a contiguous shard of the dataset; the result is summed over ranks.
EvalResult evaluate(Net& net, const Dataset& ds, Communicator& comm, int64_t batch);

struct TrainSummary {
  int64_t steps = 0;       // global step reached
  int64_t start_step = 0;  // > 0 when resumed from a checkpoint
  int stop_signal = 0;     // the signal that stopped training early (0: none)
  bool stopped = false;    // ended early (signal or --stop-at), after a checkpoint
  std::string last_checkpoint;
  double seconds = 0, images_per_s = 0, allreduce_s = 0;
  double last_loss = 0;
  int64_t skipped_steps = 0;  // steps skipped for a non-finite gradient (dynamic loss scale)
  double loss_scale = 1;      // the loss scale at the end (1: none)
  EvalResult val;  // n == 0 when no validation set
};
/// With --resume: every setting of the run that the user did not give (flag or config file)
/// is taken from the config stored in the checkpoint (arch, Fire, lr schedule, batch, epochs,
/// data, ...; not the per-machine ones: device, threads, progress, metrics, stop-at,
/// collective-timeout). Rank 0 reads the checkpoint (the newest one with --resume auto) and
/// broadcasts. Returns the keys taken, as "key=value" (empty: nothing to do). Call before
/// train(c, o.to_json(), comm).
std::vector<std::string> adopt_checkpoint_config(Options& o, TrainConfig& c,
                                                 Communicator& comm);

/// Runs the whole training as configured. `config_json` is stored in checkpoints.
TrainSummary train(const TrainConfig& c, const std::string& config_json, Communicator& comm);

/// Asks train() to stop: every rank finishes the current step, the ranks agree (an
/// MPI_Allreduce(MAX) of the flag each step), rank 0 writes a checkpoint and train() returns
/// with stopped = true. Async-signal-safe: the CLI's SIGTERM/SIGINT/SIGUSR1 handler calls it.
void request_stop(int signal) noexcept;
/// The signal passed to request_stop (0: none); clear_stop() resets it (tests).
int stop_requested() noexcept;
void clear_stop() noexcept;

/// Sets the OpenMP/oneDNN thread count for this rank (0: cores on this node / local ranks).
int set_threads(int threads, Communicator& comm);

}  // namespace ft
