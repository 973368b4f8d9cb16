/// @brief The MPI communicator used by the trainer: rank/size, broadcast, small reductions,
/// a start-up consistency check, and the bucketed gradient reducer that overlaps the
/// all-reduce of the gradient arena with the rest of backward.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ft {

/// Thin wrapper over an MPI communicator (MPI_COMM_WORLD by default). Does not own MPI's
/// lifetime: main() calls MPI_Init/Finalize.
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
  void barrier();

  /// Every rank passes a description of what it is about to do (model, config, dataset,
  /// build). If they differ, every rank throws the same ft::InputError naming the ranks and
  /// the first differing line, so nobody hangs in a later collective.
  void check_consistent(const std::string& what, const std::string& description);

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

/// All-reduces (sums) the gradient arena in buckets of about `bucket_bytes`, in reverse
/// layer order: Net::backward reports, after each layer, the lowest arena offset whose
/// gradients are final; every bucket that is then complete is started with
/// MPI_Iallreduce at once and progressed with MPI_Testall while backward goes on.
class GradReducer {
 public:
  GradReducer(Communicator& comm, float* grads, size_t n, size_t bucket_bytes = 1 << 20);
  ~GradReducer();
  size_t num_buckets() const { return buckets_.size(); }

  /// Starts a new step: nothing is ready.
  void begin();
  /// Everything in [lo, n) is final.
  void ready(size_t lo);
  /// Starts what is left and waits for all buckets. Returns seconds spent waiting here
  /// (the exposed communication time).
  double finish();
  /// Seconds from the first bucket's start to the last one's completion (last step).
  double comm_span() const { return span_; }

 private:
  struct Bucket {
    size_t lo, hi;
    bool started = false;
  };
  void start(Bucket& b);
  Communicator& comm_;
  float* grads_;
  size_t n_;
  std::vector<Bucket> buckets_;  // buckets_[0] is the LAST region of the arena
  size_t next_ = 0;              // next bucket to start
  std::vector<MPI_Request> reqs_;  // one per started bucket; MPI nulls completed ones
  double t_first_ = 0, span_ = 0;
};

}  // namespace ft
