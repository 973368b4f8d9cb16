/// @brief Devices (CPU, CUDA), the CUDA runtime services the rest of the library needs, and a
/// device-aware float buffer.
///
/// Everything that touches the CUDA runtime goes through ft::cuda:: functions declared here
/// (implemented in src/core/cuda_device.cu when the CUDA backend is built; without it they
/// throw ft::Error saying so). All CUDA work of a process runs on ONE compute stream of the
/// device chosen by cuda::set_device; NCCL uses its own stream, ordered with events.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ft {

enum class Device { CPU, CUDA };

/// "cpu" | "cuda" -> Device; InputError (exit 2) otherwise.
Device parse_device(const std::string& name);
const char* device_name(Device d);

/// True when this binary was built with the CUDA/cuDNN/NCCL backend.
bool cuda_built();
/// Number of usable GPUs: 0 when the backend is not built, there is no driver or no GPU.
/// Never throws.
int cuda_device_count();
/// Throws InputError (exit 2) with a clear reason when `d` cannot be used here (CUDA asked
/// for with a CPU-only build, or no GPU visible).
void require_device(Device d);
/// One line per backend, with versions: "CPU: oneDNN 2.6.3", "CUDA: 13.0 (cuDNN 9.x, NCCL
/// 2.x), 1 GPU: NVIDIA H200" or "CUDA: not built", "MPI: Open MPI 4.1.4".
std::string backends_summary();
/// Makes `d` usable by this process: for CUDA, selects GPU local_rank % GPUs (after
/// require_device). No-op for the CPU.
void bind_device(Device d, int local_rank);
/// Waits until all work queued on `d` is done (no-op on the CPU, whose ops are synchronous).
void synchronize(Device d);

namespace cuda {
/// cudaGetDeviceCount, 0 on any error. Never throws.
int device_count() noexcept;
/// Why cudaGetDeviceCount fails ("cudaErrorInsufficientDriver: CUDA driver version is
/// insufficient for CUDA runtime version", ...), or "" when it succeeds.
std::string device_count_error();
/// Selects the GPU for this process and creates its compute stream and cuDNN handle.
void set_device(int ordinal);
/// The selected GPU's ordinal (-1 before set_device).
int current_device();
/// Device memory (cudaMalloc/cudaFree). alloc(0) returns nullptr.
void* alloc(size_t bytes);
void release(void* p) noexcept;
/// Pinned host memory (cudaMallocHost), for fast uploads.
void* alloc_host(size_t bytes);
void release_host(void* p) noexcept;
/// Copies ordered on the compute stream. to_device/to_host block until the copy is done
/// (to_host also waits for all work queued before it); copy_async and zero do not block.
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void copy_async(void* dst, const void* src, size_t bytes);  // device -> device
void zero(void* p, size_t bytes);
/// Waits for everything queued on the compute stream.
void synchronize();
/// The compute stream as an opaque handle (a cudaStream_t).
void* compute_stream();
/// "CUDA runtime 13.0, driver 13.0, cuDNN 9.x, NCCL 2.x".
std::string versions();
/// "NVIDIA H200 (sm_90, 139 GiB)" of the selected (or given) GPU.
std::string device_description(int ordinal);
/// NVTX push/pop (nvtxRangePushA / nvtxRangePop): ranges that Nsight Systems shows on its
/// timeline and Nsight Compute can filter by (--nvtx). Without a profiler attached they cost
/// a few nanoseconds.
void nvtx_push(const char* name) noexcept;
void nvtx_pop() noexcept;
/// cudaProfilerStart / cudaProfilerStop: the region a profiler started with
/// --profile-from-start off (Nsight Compute) or --capture-range=cudaProfilerApi (Nsight
/// Systems) records. No-ops without a profiler.
void profiler_start();
void profiler_stop();
}  // namespace cuda

/// An NVTX range for its lifetime in CUDA builds (nothing in CPU-only builds): the trainer's
/// and `bench step`'s steps ("step"; bench's warm-up steps "warmup step"), forward and
/// backward, and each layer by its name inside them.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) noexcept {
#ifdef FT_HAVE_CUDA
    cuda::nvtx_push(name);
#else
    (void)name;
#endif
  }
  ~NvtxRange() {
#ifdef FT_HAVE_CUDA
    cuda::nvtx_pop();
#endif
  }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

namespace detail {
void* array_alloc(Device d, size_t bytes);
void array_free(Device d, void* p) noexcept;
void array_zero(Device d, void* p, size_t bytes);
void array_upload(Device d, void* dst, const void* host, size_t bytes);
void array_download(Device d, void* host, const void* src, size_t bytes);
}  // namespace detail

/// An array of T on a device; owns its memory. CPU memory is 64-byte aligned and zeroed.
template <class T>
class Array {
 public:
  explicit Array(Device d = Device::CPU) : dev_(d) {}
  Array(Device d, size_t n) : dev_(d) { resize(n); }
  ~Array() { free_(); }
  Array(Array&& o) noexcept : dev_(o.dev_), p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  Array& operator=(Array&& o) noexcept {
    if (this != &o) {
      free_();
      dev_ = o.dev_, p_ = o.p_, n_ = o.n_;
      o.p_ = nullptr, o.n_ = 0;
    }
    return *this;
  }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;

  Device device() const { return dev_; }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  /// Reallocates when n differs; the contents are zero afterwards.
  void resize(size_t n) {
    if (n != n_) {
      free_();
      if (n) p_ = static_cast<T*>(detail::array_alloc(dev_, n * sizeof(T)));
      n_ = n;
    }
    zero();
  }
  void zero() { detail::array_zero(dev_, p_, n_ * sizeof(T)); }
  /// Host -> the first n elements (n <= size()).
  void upload(const T* host, size_t n) { detail::array_upload(dev_, p_, host, n * sizeof(T)); }
  /// The first n elements -> host.
  void download(T* host, size_t n) const {
    detail::array_download(dev_, host, p_, n * sizeof(T));
  }

 private:
  void free_() noexcept {
    detail::array_free(dev_, p_);
    p_ = nullptr, n_ = 0;
  }
  Device dev_;
  T* p_ = nullptr;
  size_t n_ = 0;
};
using Buffer = Array<float>;

}  // namespace ft
