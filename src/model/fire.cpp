/// @brief The paper's Fire metaparameters (section 3.2): FireMeta -> the 8 modules' s1x1, e1x1,
/// e3x3. Pure functions, kept apart from the net so that readers (weights, checkpoints) and the
/// fuzz target can use them without the compute backends.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "firetrain/core/error.hpp"
#include "firetrain/model/net.hpp"

namespace ft {

namespace {
int round_half_up(double v) { return int(std::floor(v + 0.5 + 1e-9)); }


}  // namespace

bool FireMeta::is_default() const {
  const FireMeta d;
  return list.empty() && base_e == d.base_e && incr_e == d.incr_e && freq == d.freq &&
         pct3x3 == d.pct3x3 && sr == d.sr;
}

std::string FireMeta::label() const {
  if (!list.empty()) return "fire=" + list;
  const FireMeta d;
  std::ostringstream s;
  auto put = [&](const char* k, double v, double dv) {
    if (v != dv) s << (s.tellp() > 0 ? " " : "") << k << "=" << v;
  };
  put("SR", sr, d.sr);
  put("pct3x3", pct3x3, d.pct3x3);
  put("base_e", base_e, d.base_e);
  put("incr_e", incr_e, d.incr_e);
  put("freq", freq, d.freq);
  return s.tellp() > 0 ? s.str() : "default";
}

std::vector<FireConfig> fire_configs(const FireMeta& m) {
  std::vector<FireConfig> f;
  if (!m.list.empty()) {
    std::istringstream is(m.list);
    std::string item;
    while (std::getline(is, item, ',')) {
      FireConfig c;
      char k1 = 0, k2 = 0, extra = 0;
      if (std::sscanf(item.c_str(), " %d %c %d %c %d %c", &c.s1, &k1, &c.e1, &k2, &c.e3, &extra) !=
              5 ||
          k1 != ':' || k2 != ':' || c.s1 < 1 || c.e1 < 1 || c.e3 < 1)
        throw InputError("--fire: bad entry '" + item +
                         "' (want s1x1:e1x1:e3x3 with every count >= 1, e.g. 16:64:64)");
      f.push_back(c);
    }
    if (f.size() != 8)
      throw InputError("--fire: " + std::to_string(f.size()) +
                       " entries given; SqueezeNet has 8 Fire modules (fire2..fire9)");
    return f;
  }
  if (m.freq < 1) throw InputError("--freq must be >= 1, got " + std::to_string(m.freq));
  if (m.base_e < 2) throw InputError("--base-e must be >= 2, got " + std::to_string(m.base_e));
  if (m.incr_e < 0) throw InputError("--incr-e must be >= 0, got " + std::to_string(m.incr_e));
  if (!(m.pct3x3 > 0 && m.pct3x3 < 1))
    throw InputError("--pct3x3 must be in (0, 1), got " + std::to_string(m.pct3x3));
  if (!(m.sr > 0 && m.sr <= 64))
    throw InputError("--sr must be in (0, 64], got " + std::to_string(m.sr));
  for (int i = 0; i < 8; ++i) {
    const int e = m.base_e + m.incr_e * (i / m.freq);
    FireConfig c;
    c.e3 = std::clamp(round_half_up(m.pct3x3 * e), 1, e - 1);
    c.e1 = e - c.e3;
    c.s1 = std::max(1, round_half_up(m.sr * e));
    f.push_back(c);
  }
  return f;
}

std::string fire_list_string(const std::vector<FireConfig>& f) {
  std::string s;
  for (auto& c : f)
    s += (s.empty() ? "" : ",") + std::to_string(c.s1) + ":" + std::to_string(c.e1) + ":" +
         std::to_string(c.e3);
  return s;
}

}  // namespace ft
