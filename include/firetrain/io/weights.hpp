/// @brief Weights in the torch-h5 layout (torchvision state_dict names and shapes, one float32
/// dataset per parameter) and checkpoints (weights + SGD momentum + training state).
///
/// torch-h5: the root holds one float32 dataset per parameter, named exactly as the torchvision
/// state_dict key ("features.3.squeeze.weight") with the torch shape, plus string attributes
/// (arch, num_classes, ...). In PyTorch:
///     model.load_state_dict({k: torch.from_numpy(f[k][()]) for k in f})
///
/// Checkpoint ("firetrain-checkpoint-1"): /model (torch-h5 datasets), /optimizer/momentum (the
/// same names and shapes), root attributes step, epoch, step_in_epoch, steps_per_epoch,
/// global_batch, dataset_size, total_steps, world_size, seed (int), shuffle (int), arch, rng,
/// config (JSON), format (strings), checksum_model and checksum_momentum (FNV-1a 64 of the float32
/// bytes of every tensor in name order; verified on load, so a corrupt file is detected) and
/// complete = 1, written last. All writes are atomic (temporary file, fsync, rename). Files
/// written before the checksums existed load without that check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <utility>
#include <string>
#include <vector>

#include "firetrain/core/params.hpp"
#include "firetrain/model/net.hpp"

namespace ft {

/// The value of the root "format" attribute of a checkpoint.
inline constexpr const char* kCheckpointFormat = "firetrain-checkpoint-1";

/// Writes every parameter as a float32 dataset at the root, plus `attrs` as string attributes.
void save_weights_h5(const std::string& path, const std::vector<ParamView>& params,
                     const std::map<std::string, std::string>& attrs = {});

/// Fills every params[i].data from a torch-h5 file, or from the /model group of a checkpoint.
/// Checks everything before writing anything: a missing key, extra keys, a wrong shape
/// ("PATH: key 'k': expected shape (96, 3, 7, 7), found (64, 3, 3, 3)") or a dtype other than
/// float32/float64 (float64 is converted) throw ft::InputError naming the file.
void load_weights_h5(const std::string& path, const std::vector<ParamView>& params);

/// Training state stored with a checkpoint. Everything needed to continue exactly: the loader's
/// position is (epoch, step_in_epoch) of the (seed, shuffle) order; dropout and augmentation
/// are counter-based (keyed by seed, step/epoch and sample), so their "RNG state" is seed + step.
struct CheckpointState {
  int64_t step = 0;           // global steps done
  int64_t epoch = 0;          // epoch of the next step (step / steps_per_epoch)
  int64_t step_in_epoch = 0;  // sampler position within that epoch (step % steps_per_epoch)
  int64_t steps_per_epoch = 0, global_batch = 0, dataset_size = 0, total_steps = 0;  // 0: unknown
  int world_size = 1;
  uint64_t seed = 0;
  bool shuffle = true;
  std::string arch;
  std::string bypass = "none";  // Fire bypass variant (none | simple | complex)
  std::string config_json;
  /// Dynamic loss scaling (train/loss_scaler.hpp): the scale, finite steps since it last
  /// changed, steps skipped so far. Absent in checkpoints of runs without it (false: the
  /// scaler starts from its initial state).
  bool has_loss_scale = false;
  double loss_scale = 1;
  int64_t loss_scale_good_steps = 0, loss_scale_skipped = 0;
  /// More string attributes describing the model (spec_attrs(net.spec()): fire, num_classes,
  /// in_channels, height, width); written as root attributes, not read back into the state
  /// (spec_from_file reads them).
  std::map<std::string, std::string> spec_attrs;
};

/// FNV-1a 64 over `n` floats' bytes, continuing from `h` (start: kFnvOffset).
inline constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
uint64_t fnv1a64(const void* data, size_t bytes, uint64_t h = kFnvOffset);

/// Writes a checkpoint. `momentum` has the layout of the parameter arena (params[i].offset
/// indexes it) and `arena_size` elements.
void save_checkpoint(const std::string& path, const std::vector<ParamView>& params,
                     const float* momentum, size_t arena_size, const CheckpointState& st);

/// Loads the weights (validated like load_weights_h5) and, if `momentum` is not null, the
/// momentum into the arena layout; returns the stored state. ft::InputError when the file is not
/// a checkpoint or its `complete` attribute is missing.
CheckpointState load_checkpoint(const std::string& path, const std::vector<ParamView>& params,
                                float* momentum);

/// Whether `path` is a readable HDF5 file with a /model group (never throws).
bool is_checkpoint(const std::string& path);

/// The path of `dir/ckpt_<step>.h5` with the highest step; "" if there is none (or no dir).
std::string latest_checkpoint(const std::string& dir);

/// Every `dir/ckpt_<step>.h5`, highest step first (temporary files are not listed).
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir);

/// Fully checks a checkpoint against `params` (shapes, dtypes, complete marker, checksums,
/// finite values) without keeping anything; "" if valid, else the reason (never throws).
std::string checkpoint_problem(const std::string& path, const std::vector<ParamView>& params);

/// The root attributes that describe `spec`, written with every checkpoint and exported
/// weights file: arch, bypass, fire (the 8 modules actually built, "s1:e1:e3,..."), fire_meta
/// (FireMeta::label(), for people), num_classes, in_channels, height, width.
std::map<std::string, std::string> spec_attrs(const NetSpec& spec);

/// Rebuilds the NetSpec a torch-h5 weights file or checkpoint was written for, so that any
/// Fire configuration and bypass variant round-trips:
///  - arch: `arch` when not empty, else the "arch" attribute, else inferred from the shapes
///    (classifier.6 -> alexnet, a 7x7 conv1 -> squeezenet1_0, else squeezenet_small);
///  - num_classes and in_channels: from the classifier and conv1 shapes (attributes if absent);
///  - fire: from the squeeze/expand shapes of the 8 Fire modules (FireMeta defaults when they
///    are SqueezeNet's own modules, else an explicit list), so files without attributes work;
///  - bypass: the "bypass" attribute, else "complex" when bypass convs are stored, else "none";
///  - height, width: the stored attributes, else the NetSpec defaults (callers with a dataset
///    set them from it).
/// ft::InputError naming the file when it cannot be read or holds no model weights.
NetSpec spec_from_file(const std::string& path, const std::string& arch = "");

/// Deletes all but the `keep` highest-step checkpoints of `dir` (keep <= 0: none deleted), and
/// stale temporary files `ckpt_*.h5.tmp.*` left by killed writers. Returns the deleted paths.
std::vector<std::string> prune_checkpoints(const std::string& dir, int keep);

}  // namespace ft
