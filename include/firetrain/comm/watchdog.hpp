/// @brief Collective timeouts: a per-process watchdog thread that ends the job with a message
/// naming the rank and the operation when a collective does not complete in time, instead of
/// letting every rank hang (a dead, stalled or much slower peer; a link that flapped).
///
/// The thread sleeps unless a collective is in flight: the code around a collective marks it
/// (CollectiveScope for blocking calls; collective_begin/collective_end for the non-blocking
/// all-reduces of GradReducer, which report their oldest bucket in flight). When one is older
/// than the timeout, the watchdog prints
///   "firetrain: error: rank R on host H: collective <op> (bucket i, N bytes) did not complete
///    within T s; aborting the job"
/// to stderr, runs the registered abort hooks (NCCL: ncclCommAbort) and calls MPI_Abort: the
/// job-level abort, the only place the library ends the process. Device-side collectives (NCCL,
/// asynchronous on a stream) register a poller that the watchdog runs on every tick.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <functional>
#include <string>

namespace ft {

/// FT_COLLECTIVE_TIMEOUT (seconds) when set in the environment, else 300. Throws
/// ft::InputError on a malformed or negative value.
double default_collective_timeout();
/// Sets this process's collective timeout in seconds (0 disables the watchdog). Until it is
/// called, default_collective_timeout() applies.
void set_collective_timeout(double seconds);
double collective_timeout();

/// Marks a blocking collective in flight on the calling thread for its lifetime. Nested
/// scopes (a broadcast inside a consistency check) keep the outermost, older one.
class CollectiveScope {
 public:
  CollectiveScope(MPI_Comm comm, const char* op, size_t bytes, long bucket = -1);
  ~CollectiveScope();
  CollectiveScope(const CollectiveScope&) = delete;
  CollectiveScope& operator=(const CollectiveScope&) = delete;

 private:
  bool owner_ = false;
};

/// Seconds on a monotonic clock: the time base of collective_begin.
double collective_clock();
/// A collective in flight since `since` (collective_clock()), replacing the one recorded;
/// bucket -1: not a bucket. For callers that track several non-blocking ones themselves.
void collective_begin(MPI_Comm comm, const char* op, size_t bytes, long bucket, double since);
/// Nothing in flight any more.
void collective_end();

/// A check run by the watchdog thread on every tick while registered (every 50 ms to 1 s):
/// returns "" when all is well, else the failure (the job is then aborted with it). `abort`
/// is run before MPI_Abort on any watchdog abort (e.g. ncclCommAbort). Both run on the
/// watchdog thread. Returns an id for remove_watchdog_poller, which waits for a poll in
/// progress to end.
int add_watchdog_poller(std::function<std::string(double timeout_s)> poll,
                        std::function<void()> abort);
void remove_watchdog_poller(int id);

}  // namespace ft
