/// @brief Loss scaling (torch.cuda.amp.GradScaler semantics), device-agnostic: the trainer
/// multiplies the loss gradient by scale() (through softmax_xent's denominator), unscales the
/// reduced gradient by 1 / scale() before SGD, and asks update() whether to apply the step.
///
/// Modes (--loss-scale): none (scale 1, a non-finite gradient is an error), static (a fixed
/// scale; the same), dynamic: a non-finite gradient skips the step and halves the scale;
/// `growth_interval` consecutive finite steps double it. Every scale is a power of two, so
/// scaling and unscaling are exact in binary floating point (away from overflow and
/// subnormals): with a finite gradient the update is bit-identical to an unscaled run.
#pragma once

#include <cstdint>
#include <string>

namespace ft {

class LossScaler {
 public:
  enum class Mode { None, Static, Dynamic };

  struct Config {
    Mode mode = Mode::None;
    double scale = 1;                // none: 1; static: the scale; dynamic: the initial scale
    int64_t growth_interval = 2000;  // dynamic: finite steps in a row before the scale doubles
  };

  /// What is stored in checkpoints (dynamic mode) so that a resumed run continues exactly.
  struct State {
    double scale = 1;
    int64_t good_steps = 0;  // finite steps since the scale last changed
    int64_t skipped = 0;     // steps skipped for a non-finite gradient, in the whole run
  };

  /// The smallest scale dynamic mode goes down to (2^-24); the largest accepted (2^127, the
  /// largest power of two a float holds).
  static constexpr double kMinScale = 0x1p-24;
  static constexpr double kMaxScale = 0x1p127;

  /// The mode and scale from the --loss-scale options: `loss_scale` is auto (dynamic with
  /// --precision fp16, else none), none, dynamic or a number (static). Throws ft::InputError
  /// (exit 2) on anything else, or on a scale or init that is not a finite power of two in
  /// [2^-24, 2^127], or an interval < 1; `init` and `interval` are checked in every mode.
  static Config parse(const std::string& loss_scale, const std::string& precision, double init,
                      int64_t interval);

  explicit LossScaler(const Config& c);

  Mode mode() const { return cfg_.mode; }
  bool dynamic() const { return cfg_.mode == Mode::Dynamic; }
  /// The factor applied to the loss gradient now (1 in mode none).
  float scale() const { return float(st_.scale); }
  /// Whether a non-finite gradient can be answered by skipping the step (dynamic mode, the
  /// halved scale not below kMinScale); otherwise it is an error.
  bool can_skip() const;
  /// After the gradient of a step is known: returns whether to apply it. finite: true (and in
  /// dynamic mode, the scale doubles after growth_interval finite steps in a row). Not finite:
  /// dynamic mode skips (false) and halves the scale; where !can_skip() it throws ft::Error.
  bool update(bool finite);

  const State& state() const { return st_; }
  /// Restores a state saved with state() (dynamic mode; ft::InputError when impossible).
  void restore(const State& s);
  int64_t skipped() const { return st_.skipped; }

  /// "65536", "0.5", or "2^127" for powers of two beyond 2^24 / below 2^-10 (exact, short).
  static std::string format(double scale);
  static const char* mode_name(Mode m);

 private:
  Config cfg_;
  State st_;
};

}  // namespace ft
