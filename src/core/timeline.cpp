/// @brief Timeline: Chrome trace events of one rank (see the header).
#include "firetrain/core/timeline.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <utility>

namespace ft {

Timeline::Timeline(int rank) : rank_(rank), origin_(std::chrono::steady_clock::now()) {}

double Timeline::now_us() const {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - origin_)
      .count();
}

void Timeline::reset_origin() { origin_ = std::chrono::steady_clock::now(); }

void Timeline::span(const std::string& cat, const std::string& name, double t0_us, double t1_us,
                    const std::string& args) {
  if (!rec_) return;
  ev_.push_back({Ph::Span, cat, name, t0_us, std::max(0.0, t1_us - t0_us), 0, step_, args});
}

void Timeline::async_begin(const std::string& cat, const std::string& name, uint64_t id,
                           double t_us, const std::string& args) {
  if (!rec_) return;
  ev_.push_back({Ph::Begin, cat, name, t_us, 0, id, step_, args});
}

void Timeline::async_end(const std::string& cat, const std::string& name, uint64_t id,
                         double t_us) {
  if (!rec_) return;
  ev_.push_back({Ph::End, cat, name, t_us, 0, id, step_, ""});
}

std::string json_quote(const std::string& s) {
  std::string o = "\"";
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      o += '\\';
      o += char(ch);
    } else if (ch < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", ch);
      o += b;
    } else {
      o += char(ch);
    }
  }
  return o + "\"";
}

std::string Timeline::to_json(const std::string& label) const {
  std::string o;
  char b[160];
  // Metadata: the rank's name in the viewer, and ranks sorted by number.
  std::snprintf(b, sizeof b, "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":",
                rank_);
  o += b + json_quote(label) + "}}";
  std::snprintf(b, sizeof b,
                ",\n{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":%d,\"tid\":0,"
                "\"args\":{\"sort_index\":%d}}",
                rank_, rank_);
  o += b;
  std::snprintf(b, sizeof b,
                ",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":0,"
                "\"args\":{\"name\":\"training loop\"}}",
                rank_);
  o += b;
  for (const Event& e : ev_) {
    o += ",\n{\"ph\":\"";
    o += char(e.ph);
    o += "\",\"cat\":" + json_quote(e.cat) + ",\"name\":" + json_quote(e.name);
    // Microseconds with a nanosecond's resolution (the format's unit is the microsecond).
    std::snprintf(b, sizeof b, ",\"pid\":%d,\"tid\":0,\"ts\":%.3f", rank_, e.ts);
    o += b;
    if (e.ph == Ph::Span) {
      std::snprintf(b, sizeof b, ",\"dur\":%.3f", e.dur);
      o += b;
    } else {
      // Async ids are global across processes in the trace format: the rank in the high bits
      // keeps one rank's buckets from pairing with another's.
      std::snprintf(b, sizeof b, ",\"id\":%llu",
                    (unsigned long long)((uint64_t(rank_) << 32) | (e.id & 0xffffffffu)));
      o += b;
    }
    o += ",\"args\":{";
    bool comma = false;
    if (e.step >= 0) {
      std::snprintf(b, sizeof b, "\"step\":%lld", (long long)e.step);
      o += b;
      comma = true;
    }
    if (!e.args.empty()) o += (comma ? "," : "") + e.args;
    o += "}}";
  }
  return o;
}

namespace {
double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
}  // namespace

TimelineStats timeline_stats(const std::vector<Timeline::Event>& ev) {
  struct Step {
    double t0 = 0, t1 = -1, fwd = 0, wait = 0, ready = 0;
    double b0 = 0, b1 = -1;  // backward
    std::map<uint64_t, double> open;
    std::vector<std::pair<double, double>> comm;  // bucket spans
  };
  std::map<int64_t, Step> steps;
  using Ph = Timeline::Ph;
  for (const auto& e : ev) {
    if (e.step < 0) continue;
    Step& s = steps[e.step];
    if (e.ph == Ph::Span && e.cat == "step") {
      s.t0 = e.ts, s.t1 = e.ts + e.dur;
    } else if (e.ph == Ph::Span && e.cat == "phase") {
      if (e.name == "forward") s.fwd += e.dur;
      if (e.name == "backward") s.b0 = e.ts, s.b1 = e.ts + e.dur;
      if (e.name == "allreduce wait") s.wait += e.dur;
    } else if (e.ph == Ph::Span && e.cat == "comm") {
      s.ready += e.dur;
    } else if (e.cat == "allreduce" && e.ph == Ph::Begin) {
      s.open[e.id] = e.ts;
    } else if (e.cat == "allreduce" && e.ph == Ph::End) {
      auto it = s.open.find(e.id);
      if (it != s.open.end()) {
        s.comm.emplace_back(it->second, e.ts);
        s.open.erase(it);
      }
    }
  }
  TimelineStats r;
  std::vector<double> step_ms, fwd_ms, bwd_ms, comm_ms, ready_ms, wait_ms;
  double comm_total = 0, hidden_total = 0;
  for (auto& [k, s] : steps) {
    if (s.t1 < s.t0) continue;  // no step span: not a recorded step
    ++r.steps;
    step_ms.push_back((s.t1 - s.t0) / 1e3);
    fwd_ms.push_back(s.fwd / 1e3);
    bwd_ms.push_back(std::max(0.0, s.b1 - s.b0) / 1e3);
    wait_ms.push_back(s.wait / 1e3);
    ready_ms.push_back(s.ready / 1e3);
    // The union of the bucket spans, and its part inside backward.
    std::sort(s.comm.begin(), s.comm.end());
    double u = 0, in = 0;
    double lo = 0, hi = -1;
    auto flush = [&] {
      if (hi <= lo) return;
      u += hi - lo;
      in += std::max(0.0, std::min(hi, s.b1) - std::max(lo, s.b0));
    };
    for (auto [a, b] : s.comm) {
      if (a > hi) {
        flush();
        lo = a, hi = b;
      } else {
        hi = std::max(hi, b);
      }
    }
    flush();
    comm_ms.push_back(u / 1e3);
    comm_total += u;
    hidden_total += in;
  }
  r.step_ms = median(step_ms);
  r.forward_ms = median(fwd_ms);
  r.backward_ms = median(bwd_ms);
  r.comm_ms = median(comm_ms);
  r.wait_ms = median(wait_ms);
  r.ready_ms = median(ready_ms);
  r.in_backward = comm_total > 0 ? hidden_total / comm_total : 0.0;
  return r;
}

}  // namespace ft
