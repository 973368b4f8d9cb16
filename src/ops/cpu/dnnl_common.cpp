/// @brief oneDNN engine/stream singletons.
#include "dnnl_common.hpp"

namespace ft::cpu {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}
dnnl::stream& stream() {
  static dnnl::stream s(engine());
  return s;
}
void reorder(dnnl::memory& from, dnnl::memory& to) {
  dnnl::reorder(from, to).execute(stream(), from, to);
  stream().wait();
}

}  // namespace ft::cpu
