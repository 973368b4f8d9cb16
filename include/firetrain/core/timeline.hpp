/// @brief Timeline: what one rank did and when, as Chrome trace events (the JSON that
/// chrome://tracing and https://ui.perfetto.dev open; Horovod's timeline and PyTorch's profiler
/// write the same format). `train --timeline PATH` records a window of steps: the phases of
/// each step (data, forward, loss, backward, all-reduce wait, optimizer), every layer's forward
/// and backward, and every gradient bucket from the start of its all-reduce to the moment the
/// rank saw it complete; then rank 0 gathers all ranks into one file (one process per rank).
/// Host wall-clock times: on the CPU backend they are the work itself (ops are synchronous).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace ft {

class Timeline {
 public:
  /// Kind of event: a complete span on the rank's thread ("ph":"X") or the start/end of an
  /// asynchronous span (a bucket in flight: several overlap, so each has its own track).
  enum class Ph : char { Span = 'X', Begin = 'b', End = 'e' };
  struct Event {
    Ph ph = Ph::Span;
    std::string cat, name;
    double ts = 0, dur = 0;  // microseconds since the origin
    uint64_t id = 0;         // async events: pairs a Begin with its End (< 2^32; written
                             // with the rank in the high bits, unique across ranks)
    int64_t step = -1;       // the training step it belongs to (-1: none)
    std::string args;        // extra "key": value pairs (JSON, without braces), or ""
  };

  explicit Timeline(int rank = 0);
  /// Microseconds since the origin (steady clock).
  double now_us() const;
  /// Sets the origin to now; the trainer calls it right after a barrier, so that all ranks'
  /// times share an origin (up to the barrier's exit skew).
  void reset_origin();
  /// Events are kept only while recording (the trainer's window of steps).
  bool recording() const { return rec_; }
  void set_recording(bool on) { rec_ = on; }
  /// The step later events belong to.
  void set_step(int64_t s) { step_ = s; }
  int64_t step() const { return step_; }

  void span(const std::string& cat, const std::string& name, double t0_us, double t1_us,
            const std::string& args = "");
  void async_begin(const std::string& cat, const std::string& name, uint64_t id, double t_us,
                   const std::string& args = "");
  void async_end(const std::string& cat, const std::string& name, uint64_t id, double t_us);

  const std::vector<Event>& events() const { return ev_; }
  int rank() const { return rank_; }
  /// This rank's events (and its process-name metadata, `label`) as comma-separated JSON
  /// objects, pid = rank: the body of a "traceEvents" array.
  std::string to_json(const std::string& label) const;

 private:
  int rank_;
  bool rec_ = false;
  int64_t step_ = -1;
  std::chrono::steady_clock::time_point origin_;
  std::vector<Event> ev_;
};

/// A span on `t` from construction to destruction; nothing when t is null or not recording
/// (the name is copied only when recording).
class TimelineScope {
 public:
  TimelineScope(Timeline* t, const char* cat, const std::string& name)
      : t_(t && t->recording() ? t : nullptr), cat_(cat), name_(t_ ? name : std::string()),
        t0_(t_ ? t_->now_us() : 0) {}
  ~TimelineScope() {
    if (t_) t_->span(cat_, name_, t0_, t_->now_us());
  }
  TimelineScope(const TimelineScope&) = delete;
  TimelineScope& operator=(const TimelineScope&) = delete;

 private:
  Timeline* t_;
  const char* cat_;
  std::string name_;
  double t0_;
};

/// Per-step figures from one rank's events (medians over the recorded steps, milliseconds):
///   step: the "step" span; forward, backward: the phases of that name;
///   comm: time with at least one gradient bucket in flight (category "allreduce": the union
///     of their spans, from each start to the moment its completion was seen);
///   in_backward: the fraction of all steps' comm that lies inside their backward phases (the
///     rest is after it). An upper bound of the overlap: MPI progresses a non-blocking
///     all-reduce only inside MPI calls (the reducer makes one after each layer);
///   ready: time in spans of category "comm" (the reducer's ready() calls, made only during
///     backward): starting buckets and progressing them on the training thread, not overlapped;
///   wait: the "allreduce wait" phase (finish(): blocking after backward).
/// Steps without buckets (one rank) have comm = 0 and in_backward = 0.
struct TimelineStats {
  int64_t steps = 0;
  double step_ms = 0, forward_ms = 0, backward_ms = 0, comm_ms = 0, in_backward = 0,
         ready_ms = 0, wait_ms = 0;
};
TimelineStats timeline_stats(const std::vector<Timeline::Event>& ev);

/// JSON string literal of s (quotes, backslashes and control characters escaped).
std::string json_quote(const std::string& s);

}  // namespace ft
