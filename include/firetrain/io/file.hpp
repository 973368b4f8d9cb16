/// @brief Whole files written atomically: a temporary file beside the target, flushed,
/// fsynced, then renamed over it; on any failure the temporary file is removed and the target
/// is untouched.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace ft {

/// Receives the bytes of the file, in order.
using ByteSink = std::function<void(const char* data, size_t n)>;

/// Writes path from what produce() passes to its sink. Errors: ft::InputError when the
/// temporary file cannot be created (a path problem: exit code 2), ft::Error on a failed
/// write, flush, close or rename; both name the file and the system's reason.
void write_file_atomic(const std::string& path, const std::function<void(const ByteSink&)>& produce);
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace ft
