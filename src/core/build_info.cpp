/// @brief build_info() over the strings of the generated file (build/generated/build_info_gen.cpp).
#include "firetrain/core/build_info.hpp"

#include <cstdlib>

namespace ft {

// Defined in the generated file (see the top-level CMakeLists.txt, firetrain_build_info).
namespace build_gen {
extern const char* const kGit;
extern const char* const kCompiler;
extern const char* const kBuildType;
extern const char* const kBackends;
}  // namespace build_gen

const BuildInfo& build_info() {
  static const BuildInfo b{FIRETRAIN_VERSION, build_gen::kGit, build_gen::kCompiler,
                           build_gen::kBuildType, build_gen::kBackends};
  return b;
}

std::string build_id() {
  const BuildInfo& b = build_info();
  return std::string("firetrain ") + b.version + ", git " + b.git + ", " + b.compiler + ", " +
         b.build_type + ", " + b.backends;
}

std::string build_id_for_ranks() {
  if (const char* e = std::getenv("FT_TEST_BUILD_ID"); e && *e) return e;
  return build_id();
}

}  // namespace ft
