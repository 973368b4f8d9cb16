/// @brief The process-wide oneDNN CPU engine and stream, and small helpers (internal header).
#pragma once

#include <dnnl.hpp>

namespace ft::cpu {

dnnl::engine& engine();
dnnl::stream& stream();

/// Runs a oneDNN reorder from `from` to `to` (both already bound to memory).
void reorder(dnnl::memory& from, dnnl::memory& to);

}  // namespace ft::cpu
