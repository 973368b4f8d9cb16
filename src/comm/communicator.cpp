/// @brief MPI communicator and the overlapped, bucketed gradient reducer.
#include "firetrain/comm/communicator.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <functional>
#include <sstream>

#include "firetrain/comm/watchdog.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/core/timeline.hpp"

namespace ft {

Communicator::Communicator(MPI_Comm comm) : comm_(comm) {
  FT_MPI(MPI_Comm_rank(comm_, &rank_));
  FT_MPI(MPI_Comm_size(comm_, &size_));
  MPI_Comm local;
  FT_MPI(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
  FT_MPI(MPI_Comm_rank(local, &local_rank_));
  FT_MPI(MPI_Comm_size(local, &local_size_));
  FT_MPI(MPI_Comm_free(&local));
}

CommDtype parse_comm_dtype(const std::string& s) {
  if (s == "fp32") return CommDtype::FP32;
  if (s == "bf16") return CommDtype::BF16;
  if (s == "fp16") return CommDtype::FP16;
  throw InputError("--grad-comm-dtype must be fp32, bf16 or fp16, got '" + s + "'");
}

const char* comm_dtype_name(CommDtype d) {
  return d == CommDtype::BF16 ? "bf16" : d == CommDtype::FP16 ? "fp16" : "fp32";
}

int comm_prescale_log2(CommDtype d, int ranks) {
  if (d != CommDtype::FP16) return 0;
  int k = 0;
  while ((1 << k) < ranks) ++k;
  return k;
}

// The conversion loops: plain loops over the branch-free functions of cvt::, which GCC
// vectorizes at -O3 (AVX-512 here: 16 values per instruction); OpenMP threads only when the
// range is large enough to pay for waking the team.
static constexpr int64_t kParallelMin = int64_t(1) << 18;

void to_comm_dtype(CommDtype d, const float* in, uint16_t* out, size_t n, float scale) {
  const int64_t m = int64_t(n);
  if (d == CommDtype::BF16) {
#pragma omp parallel for schedule(static) if (m >= kParallelMin)
    for (int64_t i = 0; i < m; ++i) out[i] = cvt::fp32_to_bf16(in[i] * scale);
  } else {
    FT_REQUIRE(d == CommDtype::FP16, "to_comm_dtype: not a 16-bit dtype");
#pragma omp parallel for schedule(static) if (m >= kParallelMin)
    for (int64_t i = 0; i < m; ++i) out[i] = cvt::fp32_to_fp16(in[i] * scale);
  }
}

void from_comm_dtype(CommDtype d, const uint16_t* in, float* out, size_t n, float scale) {
  const int64_t m = int64_t(n);
  if (d == CommDtype::BF16) {
#pragma omp parallel for schedule(static) if (m >= kParallelMin)
    for (int64_t i = 0; i < m; ++i) out[i] = cvt::bf16_to_fp32(in[i]) * scale;
  } else {
    FT_REQUIRE(d == CommDtype::FP16, "from_comm_dtype: not a 16-bit dtype");
#pragma omp parallel for schedule(static) if (m >= kParallelMin)
    for (int64_t i = 0; i < m; ++i) out[i] = cvt::fp16_to_fp32(in[i]) * scale;
  }
}

// The user ops (MPI calls them with inout = in (op) inout; len in elements of the 2-byte
// type). Each partial sum is formed in fp32 and rounded back to 16 bits (NCCL likewise rounds
// every partial sum to its 16-bit type); with the op commutative, Open MPI may combine ranks in any order (libnbc's
// in-place MPI_Iallreduce: a binomial reduce to rank 0 and a broadcast; coll/tuned's
// MPI_Allreduce: recursive doubling or ring by size), so with 3+ ranks the rounding of partial
// sums depends on that order, while every rank receives the same bits.
extern "C" {
static void ft_bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const uint16_t* a = static_cast<const uint16_t*>(in);
  uint16_t* b = static_cast<uint16_t*>(inout);
  const int n = *len;
  for (int i = 0; i < n; ++i)
    b[i] = cvt::fp32_to_bf16(cvt::bf16_to_fp32(a[i]) + cvt::bf16_to_fp32(b[i]));
}
static void ft_fp16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const uint16_t* a = static_cast<const uint16_t*>(in);
  uint16_t* b = static_cast<uint16_t*>(inout);
  const int n = *len;
  for (int i = 0; i < n; ++i)
    b[i] = cvt::fp32_to_fp16(cvt::fp16_to_fp32(a[i]) + cvt::fp16_to_fp32(b[i]));
}
}

Mpi16Sum::Mpi16Sum(CommDtype d) {
  FT_REQUIRE(d != CommDtype::FP32, "Mpi16Sum: fp32 uses MPI_FLOAT and MPI_SUM");
  // A datatype of its own (not MPI_UINT16_T): a predefined op such as MPI_SUM applied to it by
  // mistake is an MPI error instead of a silent integer sum.
  FT_MPI(MPI_Type_contiguous(2, MPI_BYTE, &type_));
  FT_MPI(MPI_Type_commit(&type_));
  FT_MPI(MPI_Op_create(d == CommDtype::BF16 ? &ft_bf16_sum : &ft_fp16_sum, /*commute=*/1, &op_));
}

Mpi16Sum::~Mpi16Sum() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (op_ != MPI_OP_NULL) MPI_Op_free(&op_);
  if (type_ != MPI_DATATYPE_NULL) MPI_Type_free(&type_);
}

std::unique_ptr<Reducer> make_reducer(Device d, Communicator& comm, float* grads, size_t n,
                                      size_t bucket_bytes, CommDtype dtype) {
  if (d == Device::CUDA) {
#ifdef FT_HAVE_CUDA
    return cuda::make_nccl_reducer(comm, grads, n, bucket_bytes, dtype);
#else
    require_device(d);  // throws: CUDA not built
#endif
  }
  return std::make_unique<GradReducer>(comm, grads, n, bucket_bytes, dtype);
}

// MPI counts are int: send big buffers in chunks below INT_MAX elements.
static constexpr size_t kMaxCount = size_t(1) << 30;

void Communicator::broadcast(float* data, size_t n, int root) {
  if (size_ == 1) return;
  CollectiveScope scope(comm_, "MPI_Bcast", n * sizeof(float));
  for (size_t o = 0; o < n; o += kMaxCount)
    FT_MPI(MPI_Bcast(data + o, int(std::min(kMaxCount, n - o)), MPI_FLOAT, root, comm_));
}

void Communicator::broadcast(std::string& s, int root) {
  if (size_ == 1) return;
  CollectiveScope scope(comm_, "MPI_Bcast", s.size());
  unsigned long long len = s.size();
  FT_MPI(MPI_Bcast(&len, 1, MPI_UNSIGNED_LONG_LONG, root, comm_));
  s.resize(len);
  FT_MPI(MPI_Bcast(s.data(), int(len), MPI_CHAR, root, comm_));
}

void Communicator::allreduce_sum(double* data, size_t n) {
  if (size_ == 1) return;
  CollectiveScope scope(comm_, "MPI_Allreduce", n * sizeof(double));
  FT_MPI(MPI_Allreduce(MPI_IN_PLACE, data, int(n), MPI_DOUBLE, MPI_SUM, comm_));
}

void Communicator::allreduce_sum(float* data, size_t n) {
  if (size_ == 1) return;
  CollectiveScope scope(comm_, "MPI_Allreduce", n * sizeof(float));
  for (size_t o = 0; o < n; o += kMaxCount)
    FT_MPI(MPI_Allreduce(MPI_IN_PLACE, data + o, int(std::min(kMaxCount, n - o)), MPI_FLOAT,
                         MPI_SUM, comm_));
}

void Communicator::allreduce_max(int* data, size_t n) {
  if (size_ == 1) return;
  CollectiveScope scope(comm_, "MPI_Allreduce(max)", n * sizeof(int));
  FT_MPI(MPI_Allreduce(MPI_IN_PLACE, data, int(n), MPI_INT, MPI_MAX, comm_));
}

void Communicator::barrier() {
  if (size_ == 1) return;
  CollectiveScope scope(comm_, "MPI_Barrier", 0);
  FT_MPI(MPI_Barrier(comm_));
}

std::vector<std::string> Communicator::gather(const std::string& s, int root) {
  if (size_ == 1) return {s};
  CollectiveScope scope(comm_, "MPI_Gatherv", s.size());
  // Every rank learns the total first, so that all of them refuse alike (MPI counts are int).
  long long total_all = static_cast<long long>(s.size());
  FT_MPI(MPI_Allreduce(MPI_IN_PLACE, &total_all, 1, MPI_LONG_LONG, MPI_SUM, comm_));
  if (total_all > INT_MAX)
    throw Error("gather: " + std::to_string(total_all) + " bytes from all ranks, over MPI's "
                "2 GiB limit");
  const int len = int(s.size());
  std::vector<int> lens(rank_ == root ? size_ : 0), displs(lens.size());
  FT_MPI(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, root, comm_));
  std::string all;
  if (rank_ == root) {
    size_t total = 0;
    for (int r = 0; r < size_; ++r) {
      displs[size_t(r)] = int(total);
      total += size_t(lens[size_t(r)]);
    }
    all.resize(total);
  }
  FT_MPI(MPI_Gatherv(s.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR,
                     root, comm_));
  std::vector<std::string> out;
  for (int r = 0; rank_ == root && r < size_; ++r)
    out.push_back(all.substr(size_t(displs[size_t(r)]), size_t(lens[size_t(r)])));
  return out;
}

void Communicator::check_consistent(const std::string& what, const std::string& desc) {
  if (size_ == 1) return;
  // Compare hashes first (cheap); on a mismatch, the first rank that differs from rank 0
  // broadcasts its description and every rank builds the same message from the first line
  // that differs (so whichever rank's message the user sees names both values).
  unsigned long long h = std::hash<std::string>{}(desc);
  std::vector<unsigned long long> all(size_);
  CollectiveScope scope(comm_, "MPI_Allgather of the start-up consistency check",
                        all.size() * sizeof h);
  FT_MPI(MPI_Allgather(&h, 1, MPI_UNSIGNED_LONG_LONG, all.data(), 1, MPI_UNSIGNED_LONG_LONG,
                       comm_));
  int first = -1;
  std::string others;
  for (int r = 1; r < size_; ++r)
    if (all[r] != all[0]) {
      if (first < 0) first = r;
      others += (others.empty() ? "" : ", ") + std::to_string(r);
    }
  if (first < 0) return;
  std::string ref = desc, odd = desc;
  broadcast(ref, 0);
  broadcast(odd, first);
  std::ostringstream os;
  const bool several = others.find(',') != std::string::npos;
  os << "ranks disagree on " << what << ": rank" << (several ? "s " : " ") << others << " differ"
     << (several ? "" : "s") << " from rank 0";
  std::istringstream a(ref), b(odd);
  std::string la, lb;
  bool more_a = false, more_b = false;
  for (;;) {
    more_a = bool(std::getline(a, la));
    more_b = bool(std::getline(b, lb));
    if (!more_a || !more_b || la != lb) break;
  }
  if (more_a || more_b)
    os << ": rank 0 has '" << (more_a ? la : "(nothing)") << "', rank " << first << " has '"
       << (more_b ? lb : "(nothing)") << "'";
  throw InputError(os.str());
}

GradReducer::GradReducer(Communicator& comm, float* grads, size_t n, size_t bucket_bytes,
                         CommDtype dtype)
    : comm_(comm), grads_(grads), n_(n), dtype_(dtype) {
  const size_t per = std::max<size_t>(1, std::min(bucket_bytes / sizeof(float), kMaxCount));
  for (size_t hi = n; hi > 0;) {
    size_t lo = hi > per ? hi - per : 0;
    buckets_.push_back({lo, hi});
    hi = lo;
  }
  active_.reserve(buckets_.size());
  if (const char* e = std::getenv("FT_MAX_INFLIGHT")) max_inflight_ = size_t(std::max(1, std::atoi(e)));
  if (dtype_ != CommDtype::FP32 && comm_.size() > 1) {
    mpi16_ = std::make_unique<Mpi16Sum>(dtype_);
    buf16_.resize(n_);
    const int k = comm_prescale_log2(dtype_, comm_.size());
    pre_ = std::ldexp(1.f, -k);
    post_ = std::ldexp(1.f, k);
  }
}

void GradReducer::narrow(const Bucket& b) {
  const double t = MPI_Wtime();
  to_comm_dtype(dtype_, grads_ + b.lo, buf16_.data() + b.lo, b.hi - b.lo, pre_);
  conv_s_ += MPI_Wtime() - t;
}

void GradReducer::widen(const Bucket& b) {
  const double t = MPI_Wtime();
  from_comm_dtype(dtype_, buf16_.data() + b.lo, grads_ + b.lo, b.hi - b.lo, post_);
  conv_s_ += MPI_Wtime() - t;
}

GradReducer::~GradReducer() {
  // A step abandoned by an exception: do not leave requests pointing at freed memory (the
  // watchdog still guards these waits).
  for (auto& r : active_)
    if (r != MPI_REQUEST_NULL) MPI_Wait(&r, MPI_STATUS_IGNORE);
  if (!active_.empty()) collective_end();
}

void GradReducer::begin() {
  FT_REQUIRE(active_.empty(), "GradReducer::begin before the previous step finished");
  next_ = ready_ = 0;
  for (auto& b : buckets_) b.started = false;
  t_first_ = 0;
  conv_s_ = 0;
}

void GradReducer::start(Bucket& b) {
  if (t_first_ == 0) t_first_ = MPI_Wtime();
  b.started = true;
  if (comm_.size() == 1) return;
  trace_begin(b);
  MPI_Request req = MPI_REQUEST_NULL;
  if (mpi16_) {
    narrow(b);
    FT_MPI(MPI_Iallreduce(MPI_IN_PLACE, buf16_.data() + b.lo, int(b.hi - b.lo), mpi16_->type(),
                          mpi16_->op(), comm_.comm(), &req));
  } else {
    FT_MPI(MPI_Iallreduce(MPI_IN_PLACE, grads_ + b.lo, int(b.hi - b.lo), MPI_FLOAT, MPI_SUM,
                          comm_.comm(), &req));
  }
  b.since = collective_clock();
  if (active_.empty()) watch(size_t(&b - buckets_.data()));
  active_.push_back(req);
  active_bucket_.push_back(size_t(&b - buckets_.data()));
}

void GradReducer::trace_begin(const Bucket& b) {
  if (!tl_ || !tl_->recording()) return;
  const size_t i = size_t(&b - buckets_.data());
  char a[96];
  std::snprintf(a, sizeof a, "\"bytes\":%zu,\"blocking\":%s", wire_bytes(b),
                i + 1 == buckets_.size() ? "true" : "false");
  tl_->async_begin("allreduce", "bucket " + std::to_string(i), i, tl_->now_us(), a);
}

void GradReducer::trace_end(size_t i) {
  if (tl_ && tl_->recording())
    tl_->async_end("allreduce", "bucket " + std::to_string(i), i, tl_->now_us());
}

void GradReducer::watch(size_t i) {
  const Bucket& b = buckets_[i];
  collective_begin(comm_.comm(), "MPI_Iallreduce of the gradients", wire_bytes(b), long(i),
                   b.since);
}

void GradReducer::pump(bool block) {
  // The last bucket is never started here: finish() reduces it with a blocking call, on every
  // rank alike (a blocking and a non-blocking all-reduce do not match each other in MPI, so
  // that choice must not depend on timing).
  const size_t startable = std::min(ready_, buckets_.size() - 1);
  for (;;) {
    while (next_ < startable && active_.size() < max_inflight_) start(buckets_[next_++]);
    if (active_.empty()) return;
    int done = 0;
    idx_.resize(active_.size());
    if (block)
      FT_MPI(MPI_Waitsome(int(active_.size()), active_.data(), &done, idx_.data(),
                          MPI_STATUSES_IGNORE));
    else
      FT_MPI(MPI_Testsome(int(active_.size()), active_.data(), &done, idx_.data(),
                          MPI_STATUSES_IGNORE));
    if (done == MPI_UNDEFINED) done = 0;
    // Completed requests are MPI_REQUEST_NULL now: drop them (and their bucket numbers), and
    // show the watchdog the oldest bucket still in flight.
    if (done > 0) {
      const size_t first = active_bucket_.front();
      size_t k = 0;
      for (size_t j = 0; j < active_.size(); ++j) {
        if (active_[j] == MPI_REQUEST_NULL) {
          if (mpi16_) widen(buckets_[active_bucket_[j]]);
          trace_end(active_bucket_[j]);
          continue;
        }
        active_[k] = active_[j];
        active_bucket_[k++] = active_bucket_[j];
      }
      active_.resize(k);
      active_bucket_.resize(k);
      if (active_.empty())
        collective_end();
      else if (active_bucket_.front() != first)
        watch(active_bucket_.front());
    }
    if (!block && (done == 0 || next_ >= startable)) return;
  }
}

void GradReducer::ready(size_t lo) {
  while (ready_ < buckets_.size() && buckets_[ready_].lo >= lo) ++ready_;
  pump(false);
}

double GradReducer::finish() {
  const double t0 = MPI_Wtime();
  ready_ = buckets_.size();
  while (next_ + 1 < buckets_.size() || !active_.empty()) pump(true);
  // The last bucket (the arena's start, completed by the first layer right before finish):
  // nothing is left to overlap it with, and Open MPI's blocking MPI_Allreduce (coll/tuned) is
  // about 2x faster than its non-blocking one (libnbc) at a few MB (bench comm, SqueezeNet's
  // 5 MB in one bucket: 0.87 vs 1.6 ms; the plain MPI_Allreduce floor 0.82 ms).
  if (next_ < buckets_.size()) {
    Bucket& b = buckets_[next_++];
    if (t_first_ == 0) t_first_ = MPI_Wtime();
    b.started = true;
    if (comm_.size() > 1) trace_begin(b);
    if (comm_.size() > 1 && mpi16_) {
      narrow(b);
      {
        CollectiveScope scope(comm_.comm(), "MPI_Allreduce of the gradients",
                              (b.hi - b.lo) * comm_dtype_bytes(dtype_), long(buckets_.size() - 1));
        FT_MPI(MPI_Allreduce(MPI_IN_PLACE, buf16_.data() + b.lo, int(b.hi - b.lo),
                             mpi16_->type(), mpi16_->op(), comm_.comm()));
      }
      widen(b);
    } else if (comm_.size() > 1) {
      CollectiveScope scope(comm_.comm(), "MPI_Allreduce of the gradients",
                            (b.hi - b.lo) * sizeof(float), long(buckets_.size() - 1));
      FT_MPI(MPI_Allreduce(MPI_IN_PLACE, grads_ + b.lo, int(b.hi - b.lo), MPI_FLOAT, MPI_SUM,
                           comm_.comm()));
    }
    if (comm_.size() > 1) trace_end(buckets_.size() - 1);
  }
  const double t1 = MPI_Wtime();
  span_ = t1 - t_first_;
  return t1 - t0;
}

double Reducer::floor_allreduce_s(int) {
  throw Error(std::string("floor_allreduce_s: not provided by the ") + backend() + " reducer (" +
              comm_dtype_name(dtype()) + ")");
}

bool GradReducer::grads_finite() {
  int bad = 0;
  const float* g = grads_;
#pragma omp parallel for reduction(| : bad) schedule(static)
  for (int64_t i = 0; i < int64_t(n_); ++i) bad |= !std::isfinite(g[i]);
  return bad == 0;
}

}  // namespace ft
