/// @brief The MPI communicator used by the trainer: rank/size, broadcast, small reductions,
/// a start-up consistency check, and the bucketed gradient reducer that overlaps the
/// all-reduce of the gradient arena with the rest of backward.
#pragma once

#include <mpi.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "firetrain/core/device.hpp"
#include "firetrain/core/half.hpp"


namespace ft {

class Timeline;

/// What the gradient travels as in the all-reduce (`--grad-comm-dtype`). bf16 and fp16 halve
/// the bytes: each rank rounds its fp32 gradient to 16 bits (round to nearest even), the
/// reduction adds in fp32 and rounds each partial sum back to 16 bits, and the result is
/// widened to fp32 again before the optimizer. fp16 (max 65504) is pre-scaled by
/// 2^-ceil(log2 N) before the rounding and scaled back after (both exact in binary floating
/// point: powers of two), so a sum of N in-range values cannot overflow (DDP's and Horovod's
/// fp16 compression divide by N for the same reason); a value that still overflows becomes
/// Inf, and Reducer::grads_finite() reports it. bf16 has fp32's range and is not scaled.
enum class CommDtype { FP32, BF16, FP16 };
/// "fp32" | "bf16" | "fp16"; anything else: ft::InputError naming the allowed values.
CommDtype parse_comm_dtype(const std::string& s);
const char* comm_dtype_name(CommDtype d);
inline size_t comm_dtype_bytes(CommDtype d) { return d == CommDtype::FP32 ? 4 : 2; }
/// fp16's pre-scale exponent for `ranks` ranks: k = ceil(log2 ranks) (values are multiplied by
/// 2^-k before rounding to fp16 and by 2^k after the reduction); 0 for bf16 and fp32.
int comm_prescale_log2(CommDtype d, int ranks);

/// out[i] = 16-bit(scale * in[i]) and back (fp32[i] = scale * value(in16[i])), for d = BF16 or
/// FP16; vectorized loops (OpenMP threads for large n). scale is a power of two (exact).
void to_comm_dtype(CommDtype d, const float* in, uint16_t* out, size_t n, float scale);
void from_comm_dtype(CommDtype d, const uint16_t* in, float* out, size_t n, float scale);

/// The 2-byte MPI datatype and the commutative user MPI_Op for a 16-bit CommDtype: inout[i] =
/// 16-bit(fp32(in[i]) + fp32(inout[i])). Owns both (freed at destruction; MPI must still be
/// initialized then).
class Mpi16Sum {
 public:
  explicit Mpi16Sum(CommDtype d);
  ~Mpi16Sum();
  Mpi16Sum(const Mpi16Sum&) = delete;
  Mpi16Sum& operator=(const Mpi16Sum&) = delete;
  MPI_Datatype type() const { return type_; }
  MPI_Op op() const { return op_; }

 private:
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
  MPI_Op op_ = MPI_OP_NULL;
};

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
  /// Every rank's string, on `root` (in rank order; empty elsewhere).
  std::vector<std::string> gather(const std::string& s, int root = 0);

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
  /// What the gradient is all-reduced as (--grad-comm-dtype).
  virtual CommDtype dtype() const { return CommDtype::FP32; }
  /// Host seconds spent converting to and from the 16-bit comm dtype in the last step (MPI
  /// reducer; 0 for fp32). Negative: not measured (NCCL, whose conversions are kernels on its
  /// stream, inside the timed all-reduce).
  virtual double convert_s() const { return -1; }
  /// The floor `bench comm` compares the NCCL reducer with (its "allreduce" row): `iters`
  /// back-to-back in-place ncclAllReduce (sum) calls over the whole fp32 arena and nothing else,
  /// timed as nccl-tests' all_reduce_perf times them (CUDA events around the loop on the NCCL
  /// stream); returns seconds per all-reduce. The arena then holds sums of sums. NCCL fp32
  /// only (the MPI rows time MPI_Allreduce directly); others throw ft::Error.
  virtual double floor_allreduce_s(int iters);
  /// Records each bucket's all-reduce on t while t records (category "allreduce", from its
  /// start to the moment this rank saw it complete); nullptr: nothing. MPI reducer only.
  void set_timeline(Timeline* t) { tl_ = t; }

 protected:
  Timeline* tl_ = nullptr;
};

/// The reducer for gradients living on `d`: MPI (GradReducer) for CPU, NCCL for CUDA.
/// `dtype`: what travels (see CommDtype).
std::unique_ptr<Reducer> make_reducer(Device d, Communicator& comm, float* grads, size_t n,
                                      size_t bucket_bytes, CommDtype dtype = CommDtype::FP32);

namespace cuda {
/// NCCL reducer over the ranks of `comm` (ncclUniqueId from rank 0 broadcast over MPI);
/// grads is device memory of the current GPU. All-reduces run on a dedicated stream, each
/// bucket after an event recorded on the compute stream when its gradients are final. With a
/// 16-bit dtype, kernels on that stream convert into a 16-bit comm buffer, ncclAllReduce runs
/// on ncclBfloat16 / ncclFloat16, and a kernel widens (and for fp16 un-scales) the result.
std::unique_ptr<Reducer> make_nccl_reducer(Communicator& comm, float* grads, size_t n,
                                           size_t bucket_bytes,
                                           CommDtype dtype = CommDtype::FP32);
}  // namespace cuda

/// All-reduces (sums) the gradient arena in buckets of about `bucket_bytes`, in reverse
/// layer order: Net::backward reports, after each layer, the lowest arena offset whose
/// gradients are final; every bucket that is then complete is started with
/// MPI_Iallreduce at once and progressed with MPI_Testall while backward goes on.
/// With a 16-bit dtype, a started bucket is first rounded into a 16-bit comm buffer (the
/// arena is untouched until its bucket completes), all-reduced with Mpi16Sum's datatype and
/// op, and widened back into the arena when it completes. One rank: nothing travels, nothing
/// is rounded (the gradient stays fp32).
class GradReducer : public Reducer {
 public:
  GradReducer(Communicator& comm, float* grads, size_t n, size_t bucket_bytes = 1 << 20,
              CommDtype dtype = CommDtype::FP32);
  ~GradReducer() override;
  size_t num_buckets() const override { return buckets_.size(); }
  void begin() override;
  void ready(size_t lo) override;
  double finish() override;
  double comm_span() const override { return span_; }
  const char* backend() const override { return "mpi"; }
  bool grads_finite() override;
  CommDtype dtype() const override { return dtype_; }
  double convert_s() const override { return conv_s_; }

 private:
  struct Bucket {
    size_t lo, hi;
    bool started = false;
    double since = 0;  // collective_clock() at its start
  };
  void start(Bucket& b);
  /// Bytes bucket b puts on the wire (in the comm dtype when it is 16-bit and ranks > 1).
  size_t wire_bytes(const Bucket& b) const {
    return (b.hi - b.lo) * comm_dtype_bytes(mpi16_ ? dtype_ : CommDtype::FP32);
  }
  /// Timeline events of bucket b's all-reduce (while tl_ records).
  void trace_begin(const Bucket& b);
  void trace_end(size_t i);
  /// Tells the watchdog that bucket i is the oldest in flight.
  void watch(size_t i);
  /// Starts ready buckets while fewer than max_inflight_ are in flight, and progresses (or,
  /// with block, waits for) the active ones.
  void pump(bool block);
  /// 16-bit dtype: arena -> comm buffer (before the all-reduce) and back (after) for bucket b.
  void narrow(const Bucket& b);
  void widen(const Bucket& b);
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
  CommDtype dtype_ = CommDtype::FP32;
  std::unique_ptr<Mpi16Sum> mpi16_;  // 16-bit dtype with more than one rank
  std::vector<uint16_t> buf16_;      // the comm buffer, indexed as the arena
  float pre_ = 1, post_ = 1;         // fp16 pre-scale 2^-k and its inverse
  double conv_s_ = 0;                // conversion seconds this step
};

}  // namespace ft
