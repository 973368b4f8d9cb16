/// @brief `train --timeline`: gathering the ranks' events into one trace (see the header).
#include "firetrain/train/timeline_file.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "firetrain/comm/communicator.hpp"
#include "firetrain/core/build_info.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/core/timeline.hpp"
#include "firetrain/io/file.hpp"

namespace ft {

std::string write_timeline(Communicator& comm, const Timeline& tl, const std::string& path) {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const std::vector<std::string> parts =
      comm.gather(tl.to_json("rank " + std::to_string(comm.rank()) + " (" + host + ")"));
  const TimelineStats s = timeline_stats(tl.events());
  char b[400];
  std::snprintf(b, sizeof b, "%6d %6lld %9.2f %9.2f %9.2f %9.2f %8.2f %9.2f %9.2f",
                comm.rank(), (long long)s.steps, s.step_ms, s.forward_ms, s.backward_ms,
                s.comm_ms, s.in_backward, s.ready_ms, s.wait_ms);
  const std::vector<std::string> rows = comm.gather(b);
  if (comm.rank() != 0) return "";

  write_file_atomic(path, [&](const ByteSink& out) {
    const std::string head = "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"build\":" +
                             json_quote(build_id()) + ",\"ranks\":" +
                             std::to_string(comm.size()) +
                             ",\"clock\":\"each rank's steady clock in microseconds from an "
                             "origin taken right after a barrier\"},\n\"traceEvents\":[\n";
    out(head.data(), head.size());
    for (size_t r = 0; r < parts.size(); ++r) {
      if (r > 0) out(",\n", 2);
      out(parts[r].data(), parts[r].size());
    }
    out("\n]}\n", 4);
  });
  std::string t = "timeline: " + path + " (" + std::to_string(comm.size()) +
                  " rank(s); open it in https://ui.perfetto.dev or chrome://tracing)";
  if (s.steps == 0) return t + ": no step recorded (the run had none after its first)";
  t += "\n";
  t += "#  rank  steps   step_ms    fwd_ms    bwd_ms   comm_ms  in_bwd  ready_ms   wait_ms\n";
  for (const auto& r : rows) t += r + "\n";
  t += "# medians over the recorded steps (ms). comm_ms: time with a gradient bucket in flight "
       "(start to completion seen); in_bwd: its fraction inside backward (an upper bound of the "
       "overlap: MPI progresses only inside MPI calls); ready_ms: spent in the reducer's "
       "ready() after each layer (starting and progressing buckets on the training thread, "
       "inside bwd_ms); wait_ms: blocked in finish() after backward";
  return t;
}

void probe_timeline_path(const std::string& path) {
  struct stat sb;
  if (::stat(path.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode))
    throw InputError("train: --timeline " + path + ": is a directory (give a file name)");
  const std::string probe = path + ".probe." + std::to_string(getpid());
  std::FILE* f = std::fopen(probe.c_str(), "w");
  if (!f) throw InputError("train: --timeline " + path + ": cannot create a file there (" +
                           std::strerror(errno) + ")");
  std::fclose(f);
  std::remove(probe.c_str());
}

}  // namespace ft
