/// @brief In-place scaling of a float array, x *= a: unscales the loss-scaled gradient arena
/// (train/loss_scaler.hpp) before the SGD update.
///
/// With `a` a power of two (the loss scale's inverse) the product is exact unless it leaves
/// the normal float range, so scaling the loss gradient by S and this by 1/S reproduce the
/// unscaled gradient bit for bit.
#pragma once

#include <cstdint>

namespace ft {

namespace cpu {
/// x[i] *= a for i < n (host memory).
void scale_inplace(int64_t n, float a, float* x);
}  // namespace cpu
namespace cuda {
/// x[i] *= a for i < n (device memory; asynchronous on the compute stream).
void scale_inplace(int64_t n, float a, float* x);
}  // namespace cuda

}  // namespace ft
