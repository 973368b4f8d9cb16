/// @brief The MPI communicator used by the trainer: rank/size, broadcast, small reductions,
/// a start-up consistency check, and the bucketed gradient reducer that overlaps the
/// all-reduce of the gradient arena with the rest of backward.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "firetrain/core/device.hpp"

namespace ft {

/// Thin wrapper over an MPI communicator (MPI_COMM_WORLD by default). Does not own MPI's
/// lifetime: main() calls MPI_Init/Finalize. Every collective here runs under the watchdog
/// (comm/watchdog.hpp): one that does not complete within the collective timeout aborts the
/// job with a message naming the rank and the operation.
class Communicator {
 public:
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD);
  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm comm() const { return comm_; }

  void broadcast(float* data, size_t n, int root = 0);
  void broadcast(std::string& s, int root = 0);
  /// In-place sum over ranks.
  void allreduce_sum(double* data, size_t n);
  void allreduce_sum(float* data, size_t n);
  /// In-place max over ranks (small flags, e.g. "a rank received SIGTERM").
  void allreduce_max(int* data, size_t n);
  void barrier();

  /// Every rank passes a description of what it is about to do (model, config, dataset,
  /// build). If they differ, every rank throws the same ft::InputError naming the ranks and
  /// the first differing line, so nobody hangs in a later collective.
  void check_consistent(const std::string& what, const std::string& description);

  /// Rank among the ranks on this node (MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)) and their
  /// number: rank r binds GPU local_rank() % GPUs.
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  int local_rank_ = 0, local_size_ = 1;
};

/// Sums the gradient arena across ranks, bucket by bucket, overlapped with backward:
///   begin(); backward calls ready(lo) as layers finish; finish() before the optimizer.
/// The loss is already divided by the global batch, so the sum is the average gradient.
class Reducer {
 public:
  virtual ~Reducer() = default;
  virtual size_t num_buckets() const = 0;
  /// Starts a new step: nothing is ready.
  virtual void begin() = 0;
  /// Everything in [lo, n) is final.
  virtual void ready(size_t lo) = 0;
  /// Starts what is left and waits until the reduced gradient can be used (for CUDA: the
  /// compute stream waits for the NCCL stream). Returns seconds the caller waited here.
  virtual double finish() = 0;
  /// Seconds from the first bucket's start to the last one's completion (last step).
  virtual double comm_span() const = 0;
  /// Backend name for tables: "mpi" or "nccl".
  virtual const char* backend() const = 0;
  /// After finish(): whether the reduced gradient is free of NaN and Inf (CPU: a scan of the
  /// arena; CUDA: a flag kernel on the compute stream and a 4-byte copy, which waits for the
  /// all-reduce). The same answer on every rank (they hold the same sum).
  virtual bool grads_finite() = 0;
};

/// The reducer for gradients living on `d`: MPI (GradReducer) for CPU, NCCL for CUDA.
std::unique_ptr<Reducer> make_reducer(Device d, Communicator& comm, float* grads, size_t n,
                                      size_t bucket_bytes);

namespace cuda {
/// NCCL reducer over the ranks of `comm` (ncclUniqueId from rank 0 broadcast over MPI);
/// grads is device memory of the current GPU. All-reduces run on a dedicated stream, each
/// bucket after an event recorded on the compute stream when its gradients are final.
std::unique_ptr<Reducer> make_nccl_reducer(Communicator& comm, float* grads, size_t n,
                                           size_t bucket_bytes);
}  // namespace cuda

/// All-reduces (sums) the gradient arena in buckets of about `bucket_bytes`, in reverse
/// layer order: Net::backward reports, after each layer, the lowest arena offset whose
/// gradients are final; every bucket that is then complete is started with
/// MPI_Iallreduce at once and progressed with MPI_Testall while backward goes on.
class GradReducer : public Reducer {
 public:
  GradReducer(Communicator& comm, float* grads, size_t n, size_t bucket_bytes = 1 << 20);
  ~GradReducer() override;
  size_t num_buckets() const override { return buckets_.size(); }
  void begin() override;
  void ready(size_t lo) override;
  double finish() override;
  double comm_span() const override { return span_; }
  const char* backend() const override { return "mpi"; }
  bool grads_finite() override;

 private:
  struct Bucket {
    size_t lo, hi;
    bool started = false;
    double since = 0;  // collective_clock() at its start
  };
  void start(Bucket& b);
  /// Tells the watchdog that bucket i is the oldest in flight.
  void watch(size_t i);
  /// Starts ready buckets while fewer than max_inflight_ are in flight, and progresses (or,
  /// with block, waits for) the active ones.
  void pump(bool block);
  Communicator& comm_;
  float* grads_;
  size_t n_;
  std::vector<Bucket> buckets_;  // buckets_[0] is the LAST region of the arena
  size_t ready_ = 0;             // buckets [0, ready_) have final gradients
  size_t next_ = 0;              // next bucket to start
  /// Few buckets in flight at once: Open MPI's non-blocking all-reduces progress badly when
  /// hundreds are outstanding (AlexNet, 2 ranks: 234 x 1 MiB buckets all at once took 700 ms,
  /// 4 at a time 45-65 ms; 4, 8 and 16 measured alike). Env FT_MAX_INFLIGHT overrides.
  size_t max_inflight_ = 4;
  std::vector<MPI_Request> active_;  // in-flight requests, in start order
  std::vector<size_t> active_bucket_;  // their bucket numbers
  std::vector<int> idx_;
  double t_first_ = 0, span_ = 0;
};

}  // namespace ft
