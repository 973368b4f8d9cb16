/// @brief Named views of parameters (and their gradients) inside the flat arenas of a Net.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ft {

/// One parameter tensor as torchvision names it ("features.3.squeeze.weight"), with its
/// torch shape (conv weights are (O, I, kh, kw), biases (O,)). data/grad point into the
/// Net's parameter and gradient arenas; `offset` is the element offset in those arenas.
struct ParamView {
  std::string name;
  std::vector<int64_t> shape;
  float* data = nullptr;
  float* grad = nullptr;
  size_t offset = 0;
  size_t numel() const {
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    return n;
  }
};

/// "(96, 3, 7, 7)".
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace ft
