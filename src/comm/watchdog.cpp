/// @brief The collective-timeout watchdog (see include/firetrain/comm/watchdog.hpp).
///
/// One detached thread per process, started at the first collective or poller while a timeout
/// is set. The state it watches is one record (the oldest collective in flight on the main
/// thread) and a list of pollers, under one mutex; the main thread only takes that mutex for a
/// few stores per collective. The thread and its state are never destroyed: MPI_Abort, called
/// from this thread, runs the process's exit handlers, and a thread joining itself there would
/// deadlock.
#include "firetrain/comm/watchdog.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "firetrain/core/error.hpp"

namespace ft {

namespace {

struct Watchdog {
  std::mutex mu;
  std::condition_variable cv;
  bool started = false;
  double timeout = -1;  // < 0: not set yet (default_collective_timeout() applies)
  // The collective in flight (main thread).
  bool active = false;
  MPI_Comm comm = MPI_COMM_WORLD;
  const char* op = "";
  size_t bytes = 0;
  long bucket = -1;
  double since = 0;
  int rank = -1;  // MPI_COMM_WORLD rank, read on the main thread at the first collective
  struct Poller {
    std::function<std::string(double)> poll;
    std::function<void()> abort;
  };
  std::map<int, Poller> pollers;
  int next_id = 0;

  double timeout_locked() {
    if (timeout < 0) timeout = default_collective_timeout();
    return timeout;
  }
  void start_locked() {
    if (started || timeout_locked() <= 0) return;
    started = true;
    std::thread([this] { run(); }).detach();
  }
  [[noreturn]] void fire(const std::string& what, MPI_Comm c) {
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    std::fprintf(stderr, "firetrain: error: rank %d on host %s: %s; aborting the job\n", rank,
                 host, what.c_str());
    std::fflush(stderr);
    // The pollers' aborts (ncclCommAbort) run on a thread of their own, waited for at most
    // 2 s: freeing the communicator's device memory waits for the GPU, and a kernel that does
    // not honour the abort (or an ncclCommAbort that hangs) must not keep the job alive. This
    // thread holds mu from here on, so the pollers cannot change under that thread.
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread([this, done] {
      for (auto& [id, p] : pollers)
        if (p.abort) p.abort();
      done->store(true);
    }).detach();
    for (int i = 0; i < 200 && !done->load(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    // The job-level abort (the equivalent of ncclCommAbort for the whole job): mpirun ends
    // every rank, including a stalled one.
    MPI_Abort(c, 1);
    std::_Exit(1);  // MPI_Abort does not return; should it, do not hang either
  }
  void run() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      const double t = timeout_locked();
      const double tick = t > 0 ? std::clamp(t / 20.0, 0.05, 1.0) : 1.0;
      cv.wait_for(lock, std::chrono::duration<double>(tick));
      if (t <= 0) continue;
      if (active && collective_clock() - since > t) {
        char b[160];
        if (bucket >= 0)
          std::snprintf(b, sizeof b, " (bucket %ld, %zu bytes)", bucket, bytes);
        else
          std::snprintf(b, sizeof b, " (%zu bytes)", bytes);
        char tb[64];
        std::snprintf(tb, sizeof tb, "%g", t);
        fire(std::string("collective ") + op + b + " did not complete within " + tb +
                 " s (--collective-timeout; a rank died, stalled or is far slower)",
             comm);
      }
      for (auto& [id, p] : pollers) {
        std::string why;
        try {
          why = p.poll(t);
        } catch (const std::exception& e) {
          why = e.what();
        }
        if (!why.empty()) fire(why, comm);
      }
    }
  }
};

Watchdog& dog() {
  static Watchdog* w = new Watchdog;  // never destroyed: see the file comment
  return *w;
}

int world_rank() {
  int init = 0, fin = 0, r = -1;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

}  // namespace

double default_collective_timeout() {
  const char* e = std::getenv("FT_COLLECTIVE_TIMEOUT");
  if (!e || !*e) return 300.0;
  char* end = nullptr;
  const double t = std::strtod(e, &end);
  if (*end || !std::isfinite(t) || t < 0)
    throw InputError(std::string("FT_COLLECTIVE_TIMEOUT='") + e +
                     "': expected seconds >= 0 (0 disables the collective timeout)");
  return t;
}

void set_collective_timeout(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0)
    throw InputError("--collective-timeout must be >= 0 seconds (0: none)");
  Watchdog& w = dog();
  std::lock_guard<std::mutex> lock(w.mu);
  w.timeout = seconds;
  if (!w.pollers.empty()) w.start_locked();
  w.cv.notify_all();
}

double collective_timeout() {
  Watchdog& w = dog();
  std::lock_guard<std::mutex> lock(w.mu);
  return w.timeout_locked();
}

double collective_clock() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void collective_begin(MPI_Comm comm, const char* op, size_t bytes, long bucket, double since) {
  Watchdog& w = dog();
  std::lock_guard<std::mutex> lock(w.mu);
  if (w.rank < 0) w.rank = world_rank();
  w.active = true;
  w.comm = comm;
  w.op = op;
  w.bytes = bytes;
  w.bucket = bucket;
  w.since = since;
  w.start_locked();
}

void collective_end() {
  Watchdog& w = dog();
  std::lock_guard<std::mutex> lock(w.mu);
  w.active = false;
}

CollectiveScope::CollectiveScope(MPI_Comm comm, const char* op, size_t bytes, long bucket) {
  Watchdog& w = dog();
  std::lock_guard<std::mutex> lock(w.mu);
  if (w.active) return;  // nested: the outer one is older
  owner_ = true;
  if (w.rank < 0) w.rank = world_rank();
  w.active = true;
  w.comm = comm;
  w.op = op;
  w.bytes = bytes;
  w.bucket = bucket;
  w.since = collective_clock();
  w.start_locked();
}

CollectiveScope::~CollectiveScope() {
  if (owner_) collective_end();
}

int add_watchdog_poller(std::function<std::string(double)> poll, std::function<void()> abort) {
  Watchdog& w = dog();
  std::lock_guard<std::mutex> lock(w.mu);
  if (w.rank < 0) w.rank = world_rank();
  const int id = w.next_id++;
  w.pollers[id] = {std::move(poll), std::move(abort)};
  w.start_locked();
  return id;
}

void remove_watchdog_poller(int id) {
  Watchdog& w = dog();
  std::lock_guard<std::mutex> lock(w.mu);  // a poll in progress holds it: wait for its end
  w.pollers.erase(id);
}

}  // namespace ft
