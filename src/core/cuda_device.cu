/// @brief The CUDA runtime services of firetrain (ft::cuda:: in device.hpp and common.cuh):
/// device selection, the process's compute stream and cuDNN / cuBLAS handles, memory, copies,
/// the shared
/// cuDNN workspace, and the version/description strings.
///
/// Design:
///  * One GPU per process. set_device(k) selects it and creates ONE non-blocking compute
///    stream and ONE cuDNN handle bound to it; everything the library queues goes to that
///    stream (and ONE cuBLAS handle, too), so ordering between ops is plain stream order. Calling set_device again with the
///    same ordinal is a no-op; with another ordinal it throws (Arrays, cuDNN plans and NCCL
///    communicators of the first GPU would silently become invalid otherwise).
///  * The state lives in a function-local static (no static-initialization-order issues) and
///    is never destroyed: destroying streams/handles/memory from static destructors would run
///    after the CUDA runtime has begun unloading and fail. The OS reclaims it at exit.
///  * stream()/cudnn() before set_device select the calling thread's current device (0 unless
///    changed), so that single-GPU tests that forget bind_device still work. Multi-rank runs
///    go through ft::bind_device, which always calls set_device first.
///  * The CUDA current device is per host thread: every entry point that queues work makes sure
///    the calling thread has the selected device current (a thread_local cache makes that a
///    compare in the common case), so a loader thread may upload safely.
///  * release/release_host/device_count never throw and clear the runtime's "last error" on
///    failure, so a failed cudaFree at exit (or a missing driver) is not reported later by an
///    unrelated FT_CUDA_LAUNCH() (cudaGetLastError).
///  * The cuDNN workspace grows (rounded up to 1 MiB) and never shrinks; growth synchronizes
///    the compute stream before freeing the old block, because queued cuDNN calls may still
///    use it.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <string>

#include <cuda_profiler_api.h>
#include <nvtx3/nvToolsExt.h>

#include "../ops/cuda/common.cuh"

namespace ft::cuda {

namespace {

struct State {
  std::mutex mu;                       // guards initialization and workspace growth
  std::atomic<int> device{-1};         // published last, after stream and handle exist
  cudaStream_t stream = nullptr;
  cudnnHandle_t cudnn = nullptr;
  cublasHandle_t blas = nullptr;
  void* ws = nullptr;
  size_t ws_bytes = 0;
};

State& state() {
  static State* s = new State;  // never destroyed, see the file comment
  return *s;
}

thread_local int t_current = -1;  // the device this host thread has made current

// Makes the selected device current on the calling thread (cheap after the first call).
void bind_thread(int dev) {
  if (t_current != dev) {
    FT_CUDA(cudaSetDevice(dev));
    t_current = dev;
  }
}

// The selected device, selecting the thread's current one when set_device has not run yet.
int ensure_device() {
  int dev = state().device.load(std::memory_order_acquire);
  if (dev < 0) {
    int cur = 0;
    FT_CUDA(cudaGetDevice(&cur));
    set_device(cur);
    dev = state().device.load(std::memory_order_acquire);
  }
  bind_thread(dev);
  return dev;
}

// "13.0" from 13000 (CUDA encodes major*1000 + minor*10).
std::string cuda_version_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

// "9.19.0" from 91900 (cuDNN >= 9: major*10000 + minor*100 + patch; cuDNN 8: major*1000 + ...).
std::string cudnn_version_string(size_t v) {
  const size_t major_div = v >= 90000 ? 10000 : 1000;
  return std::to_string(v / major_div) + "." + std::to_string((v % major_div) / 100) + "." +
         std::to_string(v % 100);
}

// "2.28.9" from 22809 (NCCL >= 2.9: major*10000 + minor*100 + patch; older: major*1000 + ...).
std::string nccl_version_string(int v) {
  const int major_div = v >= 10000 ? 10000 : 1000;
  return std::to_string(v / major_div) + "." + std::to_string((v % major_div) / 100) + "." +
         std::to_string(v % 100);
}

}  // namespace

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no device: not an error for the caller
    return 0;
  }
  return n;
}

std::string device_count_error() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess) return "";
  (void)cudaGetLastError();
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

void set_device(int ordinal) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  const int cur = s.device.load(std::memory_order_acquire);
  if (cur == ordinal) {
    bind_thread(ordinal);
    return;
  }
  if (cur >= 0)
    throw Error("cuda::set_device(" + std::to_string(ordinal) +
                "): this process already uses GPU " + std::to_string(cur) +
                " (one GPU per process) on " + where_am_i());
  const int n = device_count();
  if (ordinal < 0 || ordinal >= n)
    throw Error("cuda::set_device(" + std::to_string(ordinal) + "): only " + std::to_string(n) +
                " GPU(s) visible on " + where_am_i());
  FT_CUDA(cudaSetDevice(ordinal));
  t_current = ordinal;
  FT_CUDA(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  FT_CUDNN(cudnnCreate(&s.cudnn));
  FT_CUDNN(cudnnSetStream(s.cudnn, s.stream));
  FT_CUBLAS(cublasCreate(&s.blas));
  FT_CUBLAS(cublasSetMathMode(s.blas, CUBLAS_DEFAULT_MATH));
  FT_CUBLAS(cublasSetStream(s.blas, s.stream));
  s.device.store(ordinal, std::memory_order_release);
}

int current_device() { return state().device.load(std::memory_order_acquire); }

cudaStream_t stream() {
  ensure_device();
  return state().stream;
}

cudnnHandle_t cudnn() {
  ensure_device();
  return state().cudnn;
}

cublasHandle_t blas() {
  ensure_device();
  return state().blas;
}

void* workspace(size_t bytes) {
  ensure_device();
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (bytes > s.ws_bytes) {
    const size_t mib = size_t(1) << 20;
    const size_t want = (bytes + mib - 1) / mib * mib;
    if (s.ws) {
      FT_CUDA(cudaStreamSynchronize(s.stream));  // queued cuDNN calls may still use it
      FT_CUDA(cudaFree(s.ws));
      s.ws = nullptr;
      s.ws_bytes = 0;
    }
    FT_CUDA(cudaMalloc(&s.ws, want));
    s.ws_bytes = want;
  }
  return s.ws;
}

void* alloc(size_t bytes) {
  if (bytes == 0) return nullptr;
  ensure_device();
  void* p = nullptr;
  FT_CUDA(cudaMalloc(&p, bytes));
  return p;
}

void release(void* p) noexcept {
  if (!p) return;
  // cudaFree waits for the device work using p. Errors (e.g. the runtime already unloading at
  // exit) are ignored and cleared.
  if (cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
}

void* alloc_host(size_t bytes) {
  if (bytes == 0) return nullptr;
  ensure_device();
  void* p = nullptr;
  FT_CUDA(cudaMallocHost(&p, bytes));
  return p;
}

void release_host(void* p) noexcept {
  if (!p) return;
  if (cudaFreeHost(p) != cudaSuccess) (void)cudaGetLastError();
}

void copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  cudaStream_t st = stream();
  FT_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, st));
  FT_CUDA(cudaStreamSynchronize(st));  // the caller may reuse host memory at once
}

void copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  cudaStream_t st = stream();
  FT_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, st));
  FT_CUDA(cudaStreamSynchronize(st));  // also waits for everything queued before the copy
}

void copy_async(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  FT_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
}

void zero(void* p, size_t bytes) {
  if (!p || bytes == 0) return;
  FT_CUDA(cudaMemsetAsync(p, 0, bytes, stream()));
}

void synchronize() { FT_CUDA(cudaStreamSynchronize(stream())); }

void* compute_stream() { return static_cast<void*>(stream()); }

void nvtx_push(const char* name) noexcept { nvtxRangePushA(name); }
void nvtx_pop() noexcept { nvtxRangePop(); }

void profiler_start() { FT_CUDA(cudaProfilerStart()); }
void profiler_stop() { FT_CUDA(cudaProfilerStop()); }

std::string versions() {
  int rt = 0, drv = 0, nccl = 0;
  FT_CUDA(cudaRuntimeGetVersion(&rt));
  FT_CUDA(cudaDriverGetVersion(&drv));  // 0 (and success) when no driver is installed
  FT_NCCL(ncclGetVersion(&nccl));
  const size_t dnn = cudnnGetVersion();
  int blas[3] = {0, 0, 0};
  FT_CUBLAS(cublasGetProperty(MAJOR_VERSION, &blas[0]));
  FT_CUBLAS(cublasGetProperty(MINOR_VERSION, &blas[1]));
  FT_CUBLAS(cublasGetProperty(PATCH_LEVEL, &blas[2]));
  return "CUDA runtime " + cuda_version_string(rt) + ", driver " +
         (drv > 0 ? cuda_version_string(drv) : std::string("none")) + ", cuDNN " +
         cudnn_version_string(dnn) + ", cuBLAS " + std::to_string(blas[0]) + "." +
         std::to_string(blas[1]) + "." + std::to_string(blas[2]) + ", NCCL " +
         nccl_version_string(nccl);
}

std::string device_description(int ordinal) {
  if (ordinal < 0) ordinal = current_device();
  if (ordinal < 0) FT_CUDA(cudaGetDevice(&ordinal));
  cudaDeviceProp prop{};
  FT_CUDA(cudaGetDeviceProperties(&prop, ordinal));
  char mem[32];
  std::snprintf(mem, sizeof mem, "%.0f GiB", double(prop.totalGlobalMem) / double(1ULL << 30));
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
         std::to_string(prop.minor) + ", " + mem + ")";
}

}  // namespace ft::cuda
