/// @brief Small helpers for ParamView.
#include "firetrain/core/params.hpp"

namespace ft {
std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}
}  // namespace ft
