/// @brief Loss scaling (see loss_scaler.hpp): parsing and validation of --loss-scale, and the
/// GradScaler update rule.
#include "firetrain/train/loss_scaler.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "firetrain/core/error.hpp"

namespace ft {

namespace {

/// Whether x is a finite power of two within the accepted scales.
bool good_scale(double x) {
  if (!std::isfinite(x) || !(x > 0)) return false;
  int e = 0;
  return std::frexp(x, &e) == 0.5 && x >= LossScaler::kMinScale && x <= LossScaler::kMaxScale;
}

std::string shown(double x) {
  char b[40];
  std::snprintf(b, sizeof b, "%.9g", x);
  return b;
}

std::string why_not(const std::string& flag, double x) {
  std::string why;
  if (!std::isfinite(x))
    why = "is not finite";
  else if (!(x > 0))
    why = "must be > 0";
  else if (x < LossScaler::kMinScale || x > LossScaler::kMaxScale)
    why = "is out of the range 2^-24 .. 2^127";
  else
    why = "is not a power of two";
  return "train: " + flag + " " + shown(x) + " " + why + ": a loss scale must be a power of two " +
         "(2^-24 .. 2^127, e.g. 1024 or 65536) so that scaling and unscaling the gradient are "
         "exact in binary floating point";
}

}  // namespace

LossScaler::Config LossScaler::parse(const std::string& loss_scale, const std::string& precision,
                                     double init, int64_t interval) {
  if (interval < 1)
    throw InputError(
        "train: --loss-scale-growth-interval must be >= 1 (finite steps in a row "
        "before the dynamic loss scale doubles), got " +
        std::to_string(interval));
  if (!good_scale(init)) throw InputError(why_not("--loss-scale-init", init));
  Config c;
  c.growth_interval = interval;
  if (loss_scale == "auto")
    c.mode = precision == "fp16" ? Mode::Dynamic : Mode::None;
  else if (loss_scale == "none")
    c.mode = Mode::None;
  else if (loss_scale == "dynamic")
    c.mode = Mode::Dynamic;
  else {
    char* end = nullptr;
    const double x = std::strtod(loss_scale.c_str(), &end);
    if (loss_scale.empty() || end == loss_scale.c_str() || *end != 0)
      throw InputError(
          "train: --loss-scale must be auto, none, dynamic or a number (a static "
          "scale, a power of two such as 1024), got '" +
          loss_scale + "'");
    if (!good_scale(x)) throw InputError(why_not("--loss-scale", x));
    c.mode = Mode::Static;
    c.scale = x;
    return c;
  }
  c.scale = c.mode == Mode::Dynamic ? init : 1.0;
  return c;
}

LossScaler::LossScaler(const Config& c) : cfg_(c) {
  FT_REQUIRE(c.mode == Mode::None ? c.scale == 1.0 : good_scale(c.scale), "bad loss scale");
  FT_REQUIRE(c.growth_interval >= 1, "bad loss-scale growth interval");
  st_.scale = c.scale;
}

bool LossScaler::can_skip() const { return dynamic() && st_.scale * 0.5 >= kMinScale; }

bool LossScaler::update(bool finite) {
  if (finite) {
    if (dynamic() && ++st_.good_steps >= cfg_.growth_interval) {
      // GradScaler: grow after growth_interval finite steps in a row; the count restarts
      // either way. The largest float power of two is the ceiling (2^128 would be inf).
      if (st_.scale * 2 <= kMaxScale) st_.scale *= 2;
      st_.good_steps = 0;
    }
    return true;
  }
  if (!can_skip())
    throw Error(dynamic() ? "non-finite gradient with the dynamic loss scale at its floor " +
                                format(st_.scale) + " (halving it would go below 2^-24)"
                          : std::string("non-finite gradient (loss scale ") + mode_name(mode()) +
                                ": nothing to skip)");
  st_.scale *= 0.5;
  st_.good_steps = 0;
  ++st_.skipped;
  return false;
}

void LossScaler::restore(const State& s) {
  if (!good_scale(s.scale) || s.good_steps < 0 || s.skipped < 0)
    throw InputError("impossible loss-scaler state (scale " + shown(s.scale) + ", good steps " +
                     std::to_string(s.good_steps) + ", skipped " + std::to_string(s.skipped) + ")");
  st_ = s;
}

std::string LossScaler::format(double scale) {
  int e = 0;
  if (scale > 0 && std::isfinite(scale) && std::frexp(scale, &e) == 0.5 &&
      (e - 1 > 24 || e - 1 < -10))
    return "2^" + std::to_string(e - 1);
  return shown(scale);
}

const char* LossScaler::mode_name(Mode m) {
  switch (m) {
    case Mode::None:
      return "none";
    case Mode::Static:
      return "static";
    case Mode::Dynamic:
      return "dynamic";
  }
  return "?";
}

}  // namespace ft
