/// @brief The NCCL gradient reducer: the CUDA counterpart of GradReducer
/// (src/comm/communicator.cpp), with the same buckets, all-reduced in place on a dedicated
/// stream and ordered with events, so the host never waits.
///
/// * Buckets: exactly GradReducer's (same `per`, formed from the END of the arena downwards,
///   buckets_[0] is the last region), so num_buckets() and the boundaries agree between
///   backends.
/// * ready(lo): the buckets that became complete are started at once: one event recorded on the
///   compute stream (after the kernels that produced their gradients), the NCCL stream waits on
///   it, and their ncclAllReduce(sum, float, in place) calls are issued inside one
///   ncclGroupStart/End. Which buckets are grouped depends only on the sequence of ready() calls
///   (the same on every rank: it follows the layer order), never on timing, so every rank issues
///   the same collectives in the same groups.
/// * finish(): starts what is left, records an end event on the NCCL stream and makes the
///   compute stream wait on it (cudaStreamWaitEvent): the caller's next kernels (SGD) run after
///   the all-reduce without a host synchronization. It returns the host seconds spent in it
///   (about zero: nothing blocks).
/// * comm_span(): GPU time from the first bucket's start (an event recorded on the NCCL stream
///   right after it waits for the first bucket's gradients) to the end event. It is read
///   lazily, with cudaEventSynchronize, by comm_span() or at the next begin(), whichever comes
///   first; so calling comm_span() right after finish() blocks the host until the all-reduce is
///   done.
/// * Errors: NCCL's asynchronous errors (a peer died, a network failure) are checked with
///   ncclCommGetAsyncError at finish() and after each wait for the end event.
/// * Timeouts: the host never blocks inside NCCL, it blocks later, in a stream synchronization
///   that waits for the all-reduce. So the reducer registers a poller with the collective
///   watchdog (comm/watchdog.hpp), run on the watchdog's thread: it reads
///   ncclCommGetAsyncError and queries the end event of the last finish(); an asynchronous
///   error, or an all-reduce still running --collective-timeout seconds after finish(), makes
///   the watchdog print the rank and the operation, call ncclCommAbort (its abort hook; waited
///   for at most 2 s) and MPI_Abort the job. A thread that was waiting for the aborted
///   all-reduce never uses its result: after each wait it checks the abort flag and then waits
///   for the process to end. The start-up collectives (UUID all-gather, ncclUniqueId broadcast,
///   ncclCommInitRank) run under the watchdog too.
/// * grads_finite(): one grid-stride kernel ORs !isfinite over the arena into a device flag on
///   the compute stream (which already waits for the all-reduce); the flag comes back in a
///   4-byte copy to pinned memory and a stream synchronization.
/// * --grad-comm-dtype bf16 | fp16: the started buckets (always a contiguous range of the arena)
///   are rounded by one kernel on the NCCL stream into a 16-bit comm buffer (the same
///   cvt:: functions as the MPI reducer; fp16 pre-scaled by 2^-ceil(log2 N)), all-reduced
///   in place as ncclBfloat16 / ncclFloat16 with ncclSum (NCCL adds 16-bit values; bf16 needs
///   NCCL >= 2.10), and widened back into the arena (fp16: times 2^k) by a kernel launched after
///   ncclGroupEnd (inside a group the NCCL calls are only enqueued at ncclGroupEnd, so a kernel
///   launched within it would run before them). Unlike the MPI reducer, one rank still rounds
///   (the trivial all-reduce runs).
/// * One rank: the communicator is still made and the (trivial) all-reduces still run, so the
///   NCCL path is exercised on a single GPU. NCCL needs one GPU per rank: two ranks on the same
///   GPU (compared by UUID) are refused with a clear InputError before ncclCommInitRank.
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "firetrain/comm/communicator.hpp"
#include "firetrain/comm/watchdog.hpp"
#include "firetrain/core/error.hpp"
#include "../ops/cuda/common.cuh"

namespace ft {

namespace {

/// GradReducer's cap on the elements of one bucket (MPI counts are int); the same here so
/// that both backends form the same buckets. Keep in sync with src/comm/communicator.cpp.
constexpr size_t kMaxBucketCount = size_t(1) << 30;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------------------------
// Kernels.

/// *flag |= 1 if any of g[0, n) is NaN or Inf. Grid-stride; one atomic per block at most.
__global__ void nonfinite_flag_kernel(const float* __restrict__ g, size_t n, int* flag) {
  int bad = 0;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    bad |= !isfinite(g[i]);
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}

/// Test hook (FT_TEST_NCCL_STALL_FINISH): one thread that returns after `ns` nanoseconds of
/// the GPU's global timer, queued on the NCCL stream as a stalled peer would hold it, so that
/// the watchdog's timeout and ncclCommAbort path runs on a single GPU (NCCL refuses two ranks
/// on one GPU, and a real stall needs a peer).
__global__ void stall_kernel(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    __nanosleep(1000000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

/// FT_TEST_NCCL_STALL_FINISH=K: the K-th finish() of this process (0-based; the step number
/// in a run that starts at step 0) queues stall_kernel for 3 x --collective-timeout + 5 s
/// before its end event. -1 (unset): never.
long stall_finish() {
  static const long v = [] {
    const char* e = std::getenv("FT_TEST_NCCL_STALL_FINISH");
    return e && *e ? std::atol(e) : -1L;
  }();
  return v;
}

/// out[i] = 16-bit(scale * in[i]); bf16 when `bf16`, else fp16. Grid-stride.
__global__ void narrow_kernel(const float* __restrict__ in, uint16_t* __restrict__ out, size_t n,
                              float scale, bool bf16) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    out[i] = bf16 ? cvt::fp32_to_bf16(in[i] * scale) : cvt::fp32_to_fp16(in[i] * scale);
}

/// out[i] = scale * fp32(in[i]).
__global__ void widen_kernel(const uint16_t* __restrict__ in, float* __restrict__ out, size_t n,
                             float scale, bool bf16) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    out[i] = (bf16 ? cvt::bf16_to_fp32(in[i]) : cvt::fp16_to_fp32(in[i])) * scale;
}

ncclDataType_t nccl_type(CommDtype d) {
  switch (d) {
    case CommDtype::FP32:
      return ncclFloat;
    case CommDtype::FP16:
      return ncclFloat16;
    case CommDtype::BF16:
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
      return ncclBfloat16;
#else
      throw InputError("--grad-comm-dtype bf16 needs NCCL >= 2.10 (built with " +
                       std::to_string(NCCL_MAJOR) + "." + std::to_string(NCCL_MINOR) +
                       "); use fp16 or fp32");
#endif
  }
  return ncclFloat;
}

class NcclReducer final : public Reducer {
 public:
  NcclReducer(Communicator& comm, float* grads, size_t n, size_t bucket_bytes, CommDtype dtype);
  ~NcclReducer() override;
  NcclReducer(const NcclReducer&) = delete;
  NcclReducer& operator=(const NcclReducer&) = delete;

  size_t num_buckets() const override { return buckets_.size(); }
  void begin() override;
  void ready(size_t lo) override;
  double finish() override;
  double comm_span() const override;
  const char* backend() const override { return "nccl"; }
  bool grads_finite() override;
  CommDtype dtype() const override { return dtype_; }
  /// fp32: no conversions (0); 16-bit: they are kernels on the NCCL stream, inside the timed
  /// all-reduce, not measured apart (-1).
  double convert_s() const override { return dtype_ == CommDtype::FP32 ? 0 : -1; }
  double floor_allreduce_s(int iters) override;

 private:
  struct Bucket {
    size_t lo, hi;
  };
  /// Starts buckets [next_, ready_) as one NCCL group, after the compute stream's work so far.
  void start_ready();
  /// Waits for the end event of the last finished step and reads the span (if pending).
  void settle() const;
  void check_async() const;
  void release() noexcept;
  /// The watchdog's poll (its thread): "" or why the job must be aborted.
  std::string poll(double timeout_s);

  float* grads_;
  size_t n_ = 0;
  int device_ = -1;
  CommDtype dtype_ = CommDtype::FP32;
  ncclDataType_t nccl_type_ = ncclFloat;
  uint16_t* buf16_ = nullptr;  // 16-bit comm buffer (device), indexed as the arena
  float pre_ = 1, post_ = 1;   // fp16 pre-scale 2^-k and its inverse
  std::vector<Bucket> buckets_;  // buckets_[0] is the LAST region of the arena
  size_t ready_ = 0;             // buckets [0, ready_) have final gradients
  size_t next_ = 0;              // next bucket to start

  ncclComm_t nccl_ = nullptr;
  cudaStream_t stream_ = nullptr;   // the NCCL stream
  cudaEvent_t ev_ready_ = nullptr;  // compute stream -> NCCL stream (no timing)
  cudaEvent_t ev_start_ = nullptr;  // NCCL stream, before the first bucket (timing)
  cudaEvent_t ev_end_ = nullptr;    // NCCL stream, after the last bucket (timing)
  bool started_any_ = false;        // ev_start_ recorded this step
  long finishes_ = 0;               // finish() calls so far (FT_TEST_NCCL_STALL_FINISH)
  /// Set by the watchdog's abort before ncclCommAbort: the all-reduce in flight ends early with
  /// garbage, and the thread waiting for it must not go on to use it (see wait_not_aborted).
  std::atomic<bool> aborted_{false};
  /// After a wait for the NCCL stream: if the watchdog aborted the communicator, this thread
  /// must not apply (or checkpoint) what the aborted all-reduce left; the watchdog ends the
  /// process within ~2 s (MPI_Abort), so it waits for that here.
  void wait_not_aborted() const {
    if (!aborted_.load()) return;
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  mutable bool span_pending_ = false;
  mutable double span_ = 0;

  int* flag_dev_ = nullptr;   // grads_finite(): device flag
  int* flag_host_ = nullptr;  // and its pinned host copy
  int poller_ = -1;           // watchdog poller id
  /// Records ev_end_ on the NCCL stream for the watchdog (see poll()).
  void record_end();
  // finish() -> watchdog thread: generation (odd while ev_end_ is being re-recorded) and
  // collective_clock() of the last end event.
  std::atomic<uint64_t> gen_{0};
  std::atomic<double> since_{0};
  uint64_t done_gen_ = 0;  // watchdog thread only: the last generation seen complete
};

NcclReducer::NcclReducer(Communicator& comm, float* grads, size_t n, size_t bucket_bytes,
                         CommDtype dtype)
    : grads_(grads), n_(n), dtype_(dtype), nccl_type_(nccl_type(dtype)) {
  {
    const int k = comm_prescale_log2(dtype_, comm.size());
    pre_ = std::ldexp(1.f, -k);
    post_ = std::ldexp(1.f, k);
  }
  FT_REQUIRE(cuda::current_device() >= 0, "NCCL reducer made before cuda::set_device");
  device_ = cuda::current_device();
  // The same buckets as GradReducer.
  const size_t per = std::max<size_t>(1, std::min(bucket_bytes / sizeof(float), kMaxBucketCount));
  for (size_t hi = n; hi > 0;) {
    size_t lo = hi > per ? hi - per : 0;
    buckets_.push_back({lo, hi});
    hi = lo;
  }

  // NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): compare the GPUs' UUIDs
  // across ranks (collectively, so that every rank throws the same error and nobody is left
  // waiting in ncclCommInitRank), which also works when CUDA_VISIBLE_DEVICES gives each rank a
  // different single GPU.
  if (comm.size() > 1) {
    cudaDeviceProp prop{};
    FT_CUDA(cudaGetDeviceProperties(&prop, cuda::current_device()));
    std::vector<char> all(size_t(comm.size()) * sizeof prop.uuid.bytes);
    CollectiveScope scope(comm.comm(), "MPI_Allgather of the GPU UUIDs", all.size());
    FT_MPI(MPI_Allgather(prop.uuid.bytes, int(sizeof prop.uuid.bytes), MPI_BYTE, all.data(),
                         int(sizeof prop.uuid.bytes), MPI_BYTE, comm.comm()));
    const size_t u = sizeof prop.uuid.bytes;
    for (int i = 0; i < comm.size(); ++i)
      for (int j = 0; j < i; ++j)
        if (std::equal(all.begin() + i * u, all.begin() + (i + 1) * u, all.begin() + j * u))
          throw InputError("NCCL needs one GPU per rank, but ranks " + std::to_string(j) +
                           " and " + std::to_string(i) + " use the same GPU (" +
                           std::to_string(comm.local_size()) + " ranks on this node, " +
                           std::to_string(cuda::device_count()) +
                           " GPUs visible here); start fewer ranks per node");
  }

  try {
    int lo_prio = 0, hi_prio = 0;
    FT_CUDA(cudaDeviceGetStreamPriorityRange(&lo_prio, &hi_prio));
    // High priority: the all-reduce kernels get SMs ahead of the backward kernels they overlap.
    FT_CUDA(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, hi_prio));
    FT_CUDA(cudaEventCreateWithFlags(&ev_ready_, cudaEventDisableTiming));
    FT_CUDA(cudaEventCreate(&ev_start_));
    FT_CUDA(cudaEventCreate(&ev_end_));

    ncclUniqueId id;
    std::fill(id.internal, id.internal + NCCL_UNIQUE_ID_BYTES, char(0));
    if (comm.rank() == 0) FT_NCCL(ncclGetUniqueId(&id));
    {
      CollectiveScope scope(comm.comm(), "MPI_Bcast of the ncclUniqueId", sizeof id);
      if (comm.size() > 1) FT_MPI(MPI_Bcast(&id, int(sizeof id), MPI_BYTE, 0, comm.comm()));
    }
    {
      CollectiveScope scope(comm.comm(), "ncclCommInitRank", 0);
      FT_NCCL(ncclCommInitRank(&nccl_, comm.size(), id, comm.rank()));
    }
    FT_CUDA(cudaMalloc(&flag_dev_, sizeof(int)));
    if (dtype_ != CommDtype::FP32 && n_ > 0) FT_CUDA(cudaMalloc(&buf16_, n_ * sizeof(uint16_t)));
    FT_CUDA(cudaMallocHost(&flag_host_, sizeof(int)));
    poller_ = add_watchdog_poller([this](double timeout_s) { return poll(timeout_s); },
                                  [this] {
                                    aborted_.store(true);
                                    if (nccl_) ncclCommAbort(nccl_);
                                  });
  } catch (...) {
    release();
    throw;
  }
}

NcclReducer::~NcclReducer() { release(); }

void NcclReducer::release() noexcept {
  // First: the watchdog must not poll what is being destroyed (waits for a poll in progress).
  if (poller_ >= 0) remove_watchdog_poller(poller_);
  poller_ = -1;
  // Nothing here throws. A step in flight: let it end (the buffers it uses belong to the
  // caller) unless NCCL reports an error, in which case waiting could hang: abort instead.
  if (nccl_) {
    ncclResult_t async = ncclSuccess;
    const bool broken = ncclCommGetAsyncError(nccl_, &async) != ncclSuccess ||
                        (async != ncclSuccess && async != ncclInProgress);
    // A step in flight whose peer died may never end: wait at most --collective-timeout
    // (the watchdog no longer polls it), then abort the communicator instead of hanging.
    bool drained = !broken;
    if (drained && stream_) {
      const double limit = collective_timeout(), t0 = collective_clock();
      cudaError_t q;
      while ((q = cudaStreamQuery(stream_)) == cudaErrorNotReady &&
             (limit <= 0 || collective_clock() - t0 < limit))
        usleep(1000);
      drained = q == cudaSuccess;
      (void)cudaGetLastError();
    }
    if (drained)
      ncclCommDestroy(nccl_);
    else
      ncclCommAbort(nccl_);
  }
  if (flag_host_) cudaFreeHost(flag_host_);
  if (flag_dev_) cudaFree(flag_dev_);
  if (buf16_) cudaFree(buf16_);
  flag_host_ = nullptr, flag_dev_ = nullptr, buf16_ = nullptr;
  if (ev_end_) cudaEventDestroy(ev_end_);
  if (ev_start_) cudaEventDestroy(ev_start_);
  if (ev_ready_) cudaEventDestroy(ev_ready_);
  if (stream_) cudaStreamDestroy(stream_);
  nccl_ = nullptr, ev_end_ = ev_start_ = ev_ready_ = nullptr, stream_ = nullptr;
}

void NcclReducer::check_async() const {
  ncclResult_t async = ncclSuccess;
  FT_NCCL(ncclCommGetAsyncError(nccl_, &async));
  if (async != ncclSuccess && async != ncclInProgress)
    detail::throw_call_failed("NCCL", "ncclCommGetAsyncError (all-reduce of the gradients)",
                              ncclGetErrorString(async), __FILE__, __LINE__);
}

void NcclReducer::settle() const {
  if (!span_pending_) return;
  span_pending_ = false;
  FT_CUDA(cudaEventSynchronize(ev_end_));
  wait_not_aborted();
  check_async();
  float ms = 0.f;
  FT_CUDA(cudaEventElapsedTime(&ms, ev_start_, ev_end_));
  span_ = double(ms) * 1e-3;
}

void NcclReducer::begin() {
  // Reads the previous step's span now (its all-reduce is normally long done: the caller has
  // synchronized on the loss since), before the events are recorded again.
  settle();
  next_ = ready_ = 0;
  started_any_ = false;
}

void NcclReducer::start_ready() {
  if (next_ >= ready_) return;
  FT_CUDA(cudaEventRecord(ev_ready_, cuda::stream()));
  FT_CUDA(cudaStreamWaitEvent(stream_, ev_ready_, 0));
  if (!started_any_) {
    FT_CUDA(cudaEventRecord(ev_start_, stream_));
    started_any_ = true;
  }
  // Buckets [next_, ready_) cover the arena range [lo, hi): buckets_[0] is the last region.
  const size_t lo = buckets_[ready_ - 1].lo, hi = buckets_[next_].hi;
  const bool bf16 = dtype_ == CommDtype::BF16;
  const unsigned blocks = std::min(cuda::grid_for(int64_t(hi - lo), 256), 4096u);
  if (buf16_) {
    narrow_kernel<<<blocks, 256, 0, stream_>>>(grads_ + lo, buf16_ + lo, hi - lo, pre_, bf16);
    FT_CUDA_LAUNCH();
  }
  FT_NCCL(ncclGroupStart());
  for (; next_ < ready_; ++next_) {
    const Bucket& b = buckets_[next_];
    void* p = buf16_ ? static_cast<void*>(buf16_ + b.lo) : static_cast<void*>(grads_ + b.lo);
    const ncclResult_t r = ncclAllReduce(p, p, b.hi - b.lo, nccl_type_, ncclSum, nccl_, stream_);
    if (r != ncclSuccess) {
      ncclGroupEnd();  // close the group before reporting
      detail::throw_call_failed("NCCL", "ncclAllReduce(bucket)", ncclGetErrorString(r), __FILE__,
                                __LINE__);
    }
  }
  FT_NCCL(ncclGroupEnd());
  if (buf16_) {  // after ncclGroupEnd: the all-reduces are enqueued on stream_ by now
    widen_kernel<<<blocks, 256, 0, stream_>>>(buf16_ + lo, grads_ + lo, hi - lo, post_, bf16);
    FT_CUDA_LAUNCH();
  }
}

void NcclReducer::ready(size_t lo) {
  while (ready_ < buckets_.size() && buckets_[ready_].lo >= lo) ++ready_;
  start_ready();
}

double NcclReducer::finish() {
  const double t0 = now_s();
  ready_ = buckets_.size();
  start_ready();
  if (!started_any_) {  // no gradients at all: an empty span
    FT_CUDA(cudaEventRecord(ev_start_, stream_));
    started_any_ = true;
  }
  if (finishes_++ == stall_finish()) {
    const double s = 3 * collective_timeout() + 5;
    std::fprintf(stderr, "firetrain: test hook: the NCCL stream stalls for %g s\n", s);
    stall_kernel<<<1, 1, 0, stream_>>>((unsigned long long)(s * 1e9));
    FT_CUDA_LAUNCH();
  }
  record_end();  // the watchdog now waits for ev_end_
  FT_CUDA(cudaStreamWaitEvent(cuda::stream(), ev_end_, 0));
  check_async();
  span_pending_ = true;
  started_any_ = false;
  return now_s() - t0;
}

void NcclReducer::record_end() {
  // A sequence lock with the watchdog's poll(): the generation is odd while ev_end_ is being
  // re-recorded and since_ rewritten, so poll() never measures a new record against the
  // previous step's start (it ignores odd generations and ones that change across its query).
  gen_.fetch_add(1, std::memory_order_acq_rel);
  FT_CUDA(cudaEventRecord(ev_end_, stream_));
  since_.store(collective_clock(), std::memory_order_relaxed);
  gen_.fetch_add(1, std::memory_order_release);
}

double NcclReducer::comm_span() const {
  settle();
  return span_;
}

double NcclReducer::floor_allreduce_s(int iters) {
  FT_REQUIRE(iters > 0, "floor_allreduce_s: iters must be > 0");
  if (dtype_ != CommDtype::FP32) return Reducer::floor_allreduce_s(iters);  // (fp32 only)
  settle();  // a pending comm_span() of the last step reads the timing events first
  // After the compute stream's work so far (the caller's upload), then nothing but the calls.
  FT_CUDA(cudaEventRecord(ev_ready_, cuda::stream()));
  FT_CUDA(cudaStreamWaitEvent(stream_, ev_ready_, 0));
  FT_CUDA(cudaEventRecord(ev_start_, stream_));
  for (int i = 0; i < iters; ++i)
    FT_NCCL(ncclAllReduce(grads_, grads_, n_, ncclFloat, ncclSum, nccl_, stream_));
  record_end();  // as finish(): the watchdog waits for ev_end_ (a dead peer ends the job)
  FT_CUDA(cudaEventSynchronize(ev_end_));
  wait_not_aborted();
  check_async();
  float ms = 0;
  FT_CUDA(cudaEventElapsedTime(&ms, ev_start_, ev_end_));
  return double(ms) * 1e-3 / iters;
}

bool NcclReducer::grads_finite() {
  // On the compute stream, which waits for the all-reduce (finish()).
  cudaStream_t s = cuda::stream();
  FT_CUDA(cudaMemsetAsync(flag_dev_, 0, sizeof(int), s));
  if (n_ > 0) {
    const unsigned blocks = std::min(cuda::grid_for(int64_t(n_), 256), 1024u);
    nonfinite_flag_kernel<<<blocks, 256, 0, s>>>(grads_, n_, flag_dev_);
    FT_CUDA_LAUNCH();
  }
  FT_CUDA(cudaMemcpyAsync(flag_host_, flag_dev_, sizeof(int), cudaMemcpyDeviceToHost, s));
  FT_CUDA(cudaStreamSynchronize(s));  // a hung all-reduce blocks here: the watchdog's poll
  wait_not_aborted();
  return *flag_host_ == 0;
}

std::string NcclReducer::poll(double timeout_s) {
  ncclResult_t async = ncclSuccess;
  if (ncclCommGetAsyncError(nccl_, &async) == ncclSuccess && async != ncclSuccess &&
      async != ncclInProgress)
    return std::string("the NCCL all-reduce of the gradients failed: ") +
           ncclGetErrorString(async) + " (ncclCommGetAsyncError)";
  const uint64_t g = gen_.load(std::memory_order_acquire);
  if (g & 1) return "";           // record_end() in progress: look again next time
  if (g == done_gen_) return "";  // nothing in flight since the last completion seen
  const double since = since_.load(std::memory_order_relaxed);
  cudaSetDevice(device_);  // this thread's current device (events belong to it)
  const cudaError_t q = cudaEventQuery(ev_end_);
  // A record_end() that began after the load above may be what the query saw: ignore it.
  if (gen_.load(std::memory_order_acquire) != g) return "";
  if (q == cudaSuccess) {
    done_gen_ = g;  // a later record completing implies this one did
    return "";
  }
  if (q != cudaErrorNotReady)
    return std::string("CUDA error while waiting for the NCCL all-reduce of the gradients: ") +
           cudaGetErrorString(q);
  if (collective_clock() - since <= timeout_s) return "";
  char b[256];
  std::snprintf(b, sizeof b,
                "collective ncclAllReduce of the gradients (%zu buckets, %zu bytes) did not "
                "complete within %g s (--collective-timeout; a rank died, stalled or is far "
                "slower)",
                buckets_.size(), n_ * comm_dtype_bytes(dtype_), timeout_s);
  return b;
}

}  // namespace

namespace cuda {
std::unique_ptr<Reducer> make_nccl_reducer(Communicator& comm, float* grads, size_t n,
                                           size_t bucket_bytes, CommDtype dtype) {
  return std::make_unique<NcclReducer>(comm, grads, n, bucket_bytes, dtype);
}
}  // namespace cuda

}  // namespace ft
