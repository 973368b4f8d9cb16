/// @brief Devices, the backends summary, and Array memory for the CPU (and, through ft::cuda::,
/// for the GPU when the CUDA backend is built).
#include "firetrain/core/device.hpp"

#include <mpi.h>

#include <cstdlib>
#include <cstring>
#include <dnnl.hpp>

#include "firetrain/core/error.hpp"

namespace ft {

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "cuda" || name == "gpu") return Device::CUDA;
  throw InputError("unknown --device '" + name + "' (cpu, cuda)");
}

const char* device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

bool cuda_built() {
#ifdef FT_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef FT_HAVE_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

void require_device(Device d) {
  if (d == Device::CPU) return;
  if (!cuda_built())
    throw InputError("--device cuda: this firetrain was built without the CUDA backend (no CUDA "
                     "toolkit with cuDNN and NCCL at configure time); use --device cpu or rebuild "
                     "where /usr/local/cuda has them");
  if (cuda_device_count() == 0) {
#ifdef FT_HAVE_CUDA
    const std::string why = cuda::device_count_error();
#else
    const std::string why;
#endif
    throw InputError(
        "--device cuda: no GPU is visible on this machine (" +
        (why.empty() ? std::string("cudaGetDeviceCount is 0; check nvidia-smi and "
                                   "CUDA_VISIBLE_DEVICES")
                     : "cudaGetDeviceCount failed with " + why +
                           "; check nvidia-smi: no NVIDIA driver, or one older than the CUDA "
                           "runtime this firetrain was built with") +
        "); use --device cpu");
  }
}

void bind_device(Device d, int local_rank) {
  require_device(d);
#ifdef FT_HAVE_CUDA
  if (d == Device::CUDA) cuda::set_device(local_rank % cuda_device_count());
#endif
}

void synchronize(Device d) {
#ifdef FT_HAVE_CUDA
  if (d == Device::CUDA) cuda::synchronize();
#endif
}

std::string backends_summary() {
  std::string s;
  const dnnl_version_t* v = dnnl_version();
  s += "CPU:  oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
       std::to_string(v->patch) + "\n";
#ifdef FT_HAVE_CUDA
  s += "CUDA: built (" + cuda::versions() + "), " + std::to_string(cuda_device_count()) +
       " GPU(s) visible";
  if (cuda_device_count() > 0) s += ": " + cuda::device_description(0);
  s += "\n";
#else
  s += "CUDA: not built (CPU-only build)\n";
#endif
  char lib[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  MPI_Get_library_version(lib, &len);
  std::string l(lib, size_t(len));
  if (auto nl = l.find_first_of(",\n"); nl != std::string::npos) l.resize(nl);
  s += "MPI:  " + l + "\n";
  return s;
}

namespace detail {

void* array_alloc(Device d, size_t bytes) {
  if (d == Device::CUDA) {
#ifdef FT_HAVE_CUDA
    return cuda::alloc(bytes);
#else
    require_device(d);
#endif
  }
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  return p;
}

void array_free(Device d, void* p) noexcept {
  if (!p) return;
#ifdef FT_HAVE_CUDA
  if (d == Device::CUDA) return cuda::release(p);
#endif
  std::free(p);
}

void array_zero(Device d, void* p, size_t bytes) {
  if (!p || !bytes) return;
#ifdef FT_HAVE_CUDA
  if (d == Device::CUDA) return cuda::zero(p, bytes);
#endif
  std::memset(p, 0, bytes);
}

void array_upload(Device d, void* dst, const void* host, size_t bytes) {
  if (!bytes) return;
#ifdef FT_HAVE_CUDA
  if (d == Device::CUDA) return cuda::copy_to_device(dst, host, bytes);
#endif
  std::memcpy(dst, host, bytes);
}

void array_download(Device d, void* host, const void* src, size_t bytes) {
  if (!bytes) return;
#ifdef FT_HAVE_CUDA
  if (d == Device::CUDA) return cuda::copy_to_host(host, src, bytes);
#endif
  std::memcpy(host, src, bytes);
}

}  // namespace detail
}  // namespace ft
