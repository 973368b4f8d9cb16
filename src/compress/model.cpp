/// @brief Pruning masks, per-layer quantization, and the compressed model file (see
/// compress.hpp for the layout): writer, verifying reader, NetSpec from its header, the table.

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "firetrain/compress/compress.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/io/file.hpp"

namespace ft {

namespace {
constexpr uint8_t kMagic[8] = {0x89, 'F', 'T', 'D', 'C', '\r', '\n', 0x1a};

/// The entry of `m` whose key is `name` or a prefix of it ending at a '.'; the longest wins.
template <class V>
const V* lookup_layer(const std::map<std::string, V>& m, const std::string& name) {
  const V* best = nullptr;
  size_t best_len = 0;
  for (auto& [k, v] : m) {
    const bool hit = name == k || (name.size() > k.size() && name.compare(0, k.size(), k) == 0 &&
                                   name[k.size()] == '.');
    if (hit && k.size() >= best_len) best = &v, best_len = k.size();
  }
  return best;
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// Pruning.

bool is_weight(const ParamView& p) { return p.shape.size() >= 2; }

double target_sparsity(const PruneOptions& o, const std::string& name) {
  if (o.mode == "layer")
    if (const double* v = lookup_layer(o.per_layer, name)) return *v;
  return o.sparsity;
}

std::vector<uint8_t> prune_mask(const std::vector<ParamView>& params, size_t arena,
                                const PruneOptions& o) {
  if (o.mode != "layer" && o.mode != "global")
    throw InputError("compress: --sparsity-mode must be layer or global, not '" + o.mode + "'");
  auto check = [](double s, const std::string& what) {
    if (!(s >= 0 && s <= 1))
      throw InputError("compress: sparsity " + what + " must be in [0, 1], got " + std::to_string(s));
  };
  check(o.sparsity, "--sparsity");
  for (auto& [k, v] : o.per_layer) check(v, "of " + k);
  std::vector<uint8_t> mask(arena, 1);
  // Ordering by (|w|, position) makes the pruned set exact and deterministic under ties.
  auto prune_smallest = [&](std::vector<size_t>& idx, const float* base, double s) {
    const size_t k = size_t(std::llround(s * double(idx.size())));
    if (k == 0) return;
    auto less = [&](size_t a, size_t b) {
      const float fa = std::fabs(base[a]), fb = std::fabs(base[b]);
      return fa < fb || (fa == fb && a < b);
    };
    if (k < idx.size()) std::nth_element(idx.begin(), idx.begin() + ptrdiff_t(k), idx.end(), less);
    for (size_t j = 0; j < std::min(k, idx.size()); ++j) mask[idx[j]] = 0;
  };
  if (params.empty()) return mask;
  const float* base = params.front().data - params.front().offset;  // the arena (host)
  if (o.mode == "layer") {
    for (const auto& p : params) {
      if (!is_weight(p)) continue;
      std::vector<size_t> idx(p.numel());
      std::iota(idx.begin(), idx.end(), p.offset);
      prune_smallest(idx, base, target_sparsity(o, p.name));
    }
  } else {
    std::vector<size_t> idx;
    for (const auto& p : params)
      if (is_weight(p))
        for (size_t i = 0; i < p.numel(); ++i) idx.push_back(p.offset + i);
    prune_smallest(idx, base, o.sparsity);
  }
  return mask;
}

void apply_mask(const std::vector<ParamView>& params, const std::vector<uint8_t>& mask) {
  for (const auto& p : params)
    for (size_t i = 0, n = p.numel(); i < n; ++i)
      if (!mask[p.offset + i]) p.data[i] = 0.f;
}

// ---------------------------------------------------------------------------------------------
// Quantization.

size_t QTensor::numel() const {
  size_t n = 1;
  for (auto d : shape) n *= size_t(d);
  return n;
}

size_t QTensor::nonzero() const {
  if (kind != 2) return numel();
  return size_t(std::count_if(code.begin(), code.end(), [](int32_t c) { return c >= 0; }));
}

float QTensor::value(size_t i) const {
  if (kind != 2) return values[i];
  return code[i] < 0 ? 0.f : codebook[size_t(code[i])];
}

QModel quantize_model(const std::vector<ParamView>& params, const std::vector<uint8_t>& mask,
                      const QuantizeOptions& o) {
  auto check_bits = [](int b, const std::string& what) {
    if (b < 1 || b > 16)
      throw InputError("compress: " + what + " must be in 1..16, got " + std::to_string(b));
  };
  check_bits(o.bits, "--bits");
  check_bits(o.gap_bits, "--gap-bits");
  for (auto& [k, v] : o.per_layer) check_bits(v, "bits of " + k);
  if (o.bias_bits != 32 && o.bias_bits != 16)
    throw InputError("compress: --bias-bits must be 32 or 16, got " + std::to_string(o.bias_bits));
  QModel m;
  for (const auto& p : params) {
    QTensor t;
    t.name = p.name;
    t.shape = p.shape;
    const size_t n = p.numel();
    if (!is_weight(p)) {
      t.kind = o.bias_bits == 16 ? 1 : 0;
      t.values.assign(p.data, p.data + n);
      if (t.kind == 1)
        for (auto& v : t.values) v = half_to_float(float_to_half(v));
      m.tensors.push_back(std::move(t));
      continue;
    }
    t.kind = 2;
    const int* pl = lookup_layer(o.per_layer, p.name);
    t.bits = pl ? *pl : o.bits;
    t.gap_bits = o.gap_bits;
    std::vector<float> kept;
    std::vector<size_t> where;
    for (size_t i = 0; i < n; ++i)
      if (mask[p.offset + i]) kept.push_back(p.data[i]), where.push_back(i);
    t.code.assign(n, -1);
    KMeansResult km = kmeans_1d(kept.data(), kept.size(), 1 << t.bits, o.kmeans_iters);
    // Keep only the centroids in use (still ascending), so the codebook and alphabet shrink.
    std::vector<int32_t> remap(km.centroids.size(), -1);
    for (uint32_t a : km.assign) remap[a] = 0;
    for (size_t j = 0; j < remap.size(); ++j)
      if (remap[j] == 0) {
        remap[j] = int32_t(t.codebook.size());
        t.codebook.push_back(km.centroids[j]);
      }
    for (size_t j = 0; j < kept.size(); ++j) t.code[where[j]] = remap[km.assign[j]];
    m.tensors.push_back(std::move(t));
  }
  return m;
}

void decode_into(const QModel& m, const std::vector<ParamView>& params, const std::string& what) {
  std::map<std::string, const QTensor*> by;
  for (const auto& t : m.tensors) by[t.name] = &t;
  for (const auto& p : params) {
    auto it = by.find(p.name);
    if (it == by.end())
      throw InputError(what + ": tensor '" + p.name + "' is missing (a model of another "
                       "architecture or Fire configuration?)");
    if (it->second->shape != p.shape)
      throw InputError(what + ": tensor '" + p.name + "': expected shape " + shape_str(p.shape) +
                       ", found " + shape_str(it->second->shape));
  }
  if (m.tensors.size() != params.size())
    throw InputError(what + ": holds " + std::to_string(m.tensors.size()) + " tensors, the net has " +
                     std::to_string(params.size()));
  for (const auto& p : params) {
    const QTensor& t = *by[p.name];
    for (size_t i = 0, n = p.numel(); i < n; ++i) p.data[i] = t.value(i);
  }
}

// ---------------------------------------------------------------------------------------------
// The file.

namespace {

struct Writer {
  std::vector<uint8_t> b;
  template <class T>
  void put(T v) {
    const size_t o = b.size();
    b.resize(o + sizeof(T));
    std::memcpy(b.data() + o, &v, sizeof(T));  // little-endian hosts (x86, ARM)
  }
  void bytes(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
  }
  void stream(const HuffmanStream& s) {
    put<uint16_t>(uint16_t(s.lengths.size()));
    for (size_t i = 0; i < s.lengths.size(); i += 2)
      put<uint8_t>(uint8_t(s.lengths[i] | ((i + 1 < s.lengths.size() ? s.lengths[i + 1] : 0) << 4)));
    put<uint64_t>(s.nbits);
    bytes(s.bytes.data(), s.bytes.size());
  }
};

struct Reader {
  const uint8_t* p;
  size_t n, pos = 0;
  std::string path;
  [[noreturn]] void fail(const std::string& why) const {
    throw InputError(path + ": malformed compressed model at byte " + std::to_string(pos) + ": " + why);
  }
  void need(uint64_t k, const char* what) const {
    if (k > n - pos) fail(std::string("truncated ") + what);
  }
  template <class T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  HuffmanStream stream(size_t alphabet, const char* what) {
    HuffmanStream s;
    const uint16_t a = get<uint16_t>(what);
    if (a != alphabet)
      fail(std::string(what) + ": alphabet " + std::to_string(a) + ", expected " + std::to_string(alphabet));
    need((a + 1) / 2, what);
    s.lengths.resize(a);
    for (size_t i = 0; i < a; ++i) s.lengths[i] = (p[pos + i / 2] >> ((i & 1) * 4)) & 0xF;
    pos += (a + 1) / 2;
    s.nbits = get<uint64_t>(what);
    need((s.nbits + 7) / 8, what);
    s.bytes.assign(p + pos, p + pos + (s.nbits + 7) / 8);
    pos += (s.nbits + 7) / 8;
    return s;
  }
};

std::string header_text(const std::map<std::string, std::string>& h) {
  std::string s;
  for (auto& [k, v] : h) {
    FT_REQUIRE(k.find_first_of("=\n") == std::string::npos && v.find('\n') == std::string::npos,
               "compressed header: keys and values must be single lines without '=' in keys");
    s += k + "=" + v + "\n";
  }
  return s;
}

}  // namespace

std::vector<LayerReport> write_compressed(const std::string& path, const QModel& m) {
  Writer w;
  w.bytes(kMagic, 8);
  w.put<uint32_t>(kCompressedVersion);
  const std::string h = header_text(m.header);
  w.put<uint32_t>(uint32_t(h.size()));
  w.bytes(h.data(), h.size());
  w.put<uint32_t>(uint32_t(m.tensors.size()));
  std::vector<LayerReport> rows;
  for (const auto& t : m.tensors) {
    const size_t start = w.b.size(), n = t.numel();
    LayerReport r;
    r.name = t.name;
    r.params = int64_t(n);
    r.bytes_before = int64_t(n) * 4;
    w.put<uint16_t>(uint16_t(t.name.size()));
    w.bytes(t.name.data(), t.name.size());
    w.put<uint8_t>(uint8_t(t.shape.size()));
    for (auto d : t.shape) w.put<int64_t>(d);
    w.put<uint8_t>(uint8_t(t.kind));
    if (t.kind == 0) {
      w.bytes(t.values.data(), n * 4);
      r.nonzero = r.params;
      r.bits = 32;
    } else if (t.kind == 1) {
      for (float v : t.values) w.put<uint16_t>(float_to_half(v));
      r.nonzero = r.params;
      r.bits = 16;
    } else {
      const uint32_t K = uint32_t(t.codebook.size());
      const int64_t maxgap = (int64_t(1) << t.gap_bits) - 1;
      std::vector<uint32_t> gaps, syms;
      int64_t prev = -1, nz = 0;
      for (size_t i = 0; i < n; ++i) {
        if (t.code[i] < 0) continue;
        int64_t gap = int64_t(i) - prev - 1;
        while (gap > maxgap) {  // filler zero: an entry holding index K (value 0)
          gaps.push_back(uint32_t(maxgap));
          syms.push_back(K);
          prev += maxgap + 1;
          gap = int64_t(i) - prev - 1;
        }
        gaps.push_back(uint32_t(gap));
        syms.push_back(uint32_t(t.code[i]));
        prev = int64_t(i);
        ++nz;
      }
      w.put<uint8_t>(uint8_t(t.bits));
      w.put<uint8_t>(uint8_t(t.gap_bits));
      w.put<uint32_t>(K);
      w.bytes(t.codebook.data(), size_t(K) * 4);
      w.put<uint64_t>(gaps.size());
      w.put<uint64_t>(uint64_t(nz));
      const HuffmanStream gs = huffman_encode(gaps, size_t(maxgap) + 1);
      const HuffmanStream is = huffman_encode(syms, size_t(K) + 1);
      w.stream(gs);
      w.stream(is);
      r.nonzero = nz;
      r.bits = t.bits;
      r.index_bits = double(gs.nbits);
      r.weight_bits = double(is.nbits);
    }
    r.bytes_after = int64_t(w.b.size() - start);
    rows.push_back(r);
  }
  w.put<uint32_t>(crc32(w.b.data(), w.b.size()));

  try {
    write_file_atomic(path, [&](const ByteSink& out) {
      out(reinterpret_cast<const char*>(w.b.data()), w.b.size());
    });
  } catch (const Error& e) {
    throw InputError("compress: cannot write " + path + ": " + e.what());
  }
  return rows;
}

bool is_compressed_model(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  uint8_t m[8];
  if (!f.read(reinterpret_cast<char*>(m), 8)) return false;
  return std::memcmp(m, kMagic, 8) == 0;
}

QModel read_compressed(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (b.size() < 8 || std::memcmp(b.data(), kMagic, 8) != 0)
    throw InputError(path + ": not a firetrain compressed model (bad magic)");
  if (b.size() < 8 + 4 + 4 + 4 + 4)
    throw InputError(path + ": truncated compressed model (" + std::to_string(b.size()) + " bytes)");
  uint32_t stored;
  std::memcpy(&stored, b.data() + b.size() - 4, 4);
  const uint32_t actual = crc32(b.data(), b.size() - 4);
  if (stored != actual) {
    char msg[160];
    std::snprintf(msg, sizeof msg, ": CRC-32 mismatch (stored %08x, computed %08x over %zu bytes): "
                  "the file is corrupt, truncated or was not written completely",
                  stored, actual, b.size() - 4);
    throw InputError(path + msg);
  }
  Reader r{b.data(), b.size() - 4, 8, path};
  const uint32_t version = r.get<uint32_t>("version");
  if (version != kCompressedVersion)
    throw InputError(path + ": compressed model version " + std::to_string(version) +
                     " (this build reads version " + std::to_string(kCompressedVersion) + ")");
  QModel m;
  const uint32_t hlen = r.get<uint32_t>("header length");
  r.need(hlen, "header");
  {
    std::istringstream hs(std::string(reinterpret_cast<const char*>(r.p + r.pos), hlen));
    r.pos += hlen;
    std::string line;
    while (std::getline(hs, line)) {
      const size_t eq = line.find('=');
      if (eq == std::string::npos) r.fail("header line without '=': " + line);
      m.header[line.substr(0, eq)] = line.substr(eq + 1);
    }
  }
  const uint32_t count = r.get<uint32_t>("tensor count");
  if (count > 100000) r.fail("implausible tensor count " + std::to_string(count));
  for (uint32_t ti = 0; ti < count; ++ti) {
    QTensor t;
    const uint16_t nl = r.get<uint16_t>("name length");
    r.need(nl, "name");
    t.name.assign(reinterpret_cast<const char*>(r.p + r.pos), nl);
    r.pos += nl;
    const std::string what = path + ": tensor '" + t.name + "'";
    const uint8_t rank = r.get<uint8_t>("rank");
    if (rank < 1 || rank > 8) r.fail("tensor '" + t.name + "': rank " + std::to_string(rank));
    uint64_t n = 1;
    for (int d = 0; d < rank; ++d) {
      const int64_t v = r.get<int64_t>("shape");
      if (v < 1 || v > (int64_t(1) << 31)) r.fail("tensor '" + t.name + "': bad dimension " + std::to_string(v));
      t.shape.push_back(v);
      n *= uint64_t(v);
      if (n > (uint64_t(1) << 32)) r.fail("tensor '" + t.name + "': too many elements");
    }
    t.kind = r.get<uint8_t>("kind");
    if (t.kind == 0) {
      r.need(n * 4, "fp32 values");
      t.values.resize(n);
      std::memcpy(t.values.data(), r.p + r.pos, n * 4);
      r.pos += n * 4;
    } else if (t.kind == 1) {
      r.need(n * 2, "fp16 values");
      t.values.resize(n);
      for (size_t i = 0; i < n; ++i) t.values[i] = half_to_float(r.get<uint16_t>("fp16"));
    } else if (t.kind == 2) {
      t.bits = r.get<uint8_t>("bits");
      t.gap_bits = r.get<uint8_t>("gap bits");
      if (t.bits < 1 || t.bits > 16 || t.gap_bits < 1 || t.gap_bits > 16)
        r.fail("tensor '" + t.name + "': bits " + std::to_string(t.bits) + ", gap bits " +
               std::to_string(t.gap_bits));
      const uint32_t K = r.get<uint32_t>("codebook size");
      if (K > (1u << t.bits)) r.fail("tensor '" + t.name + "': codebook larger than 2^bits");
      r.need(uint64_t(K) * 4, "codebook");
      t.codebook.resize(K);
      std::memcpy(t.codebook.data(), r.p + r.pos, size_t(K) * 4);
      r.pos += size_t(K) * 4;
      const uint64_t entries = r.get<uint64_t>("entries"), nz = r.get<uint64_t>("nonzero");
      if (entries > n || nz > entries)
        r.fail("tensor '" + t.name + "': " + std::to_string(entries) + " entries, " +
               std::to_string(nz) + " nonzero for " + std::to_string(n) + " elements");
      const HuffmanStream gs = r.stream(size_t(1) << t.gap_bits, "gap stream");
      const HuffmanStream is = r.stream(size_t(K) + 1, "index stream");
      const auto gaps = huffman_decode(gs, entries, what + " gaps");
      const auto syms = huffman_decode(is, entries, what + " indices");
      t.code.assign(n, -1);
      int64_t prev = -1;
      uint64_t kept = 0;
      for (uint64_t j = 0; j < entries; ++j) {
        const int64_t at = prev + int64_t(gaps[j]) + 1;
        if (at >= int64_t(n)) throw InputError(what + ": sparse index past the end of the tensor");
        if (syms[j] < K) t.code[size_t(at)] = int32_t(syms[j]), ++kept;
        prev = at;
      }
      if (kept != nz)
        throw InputError(what + ": " + std::to_string(kept) + " weights decoded, header says " +
                         std::to_string(nz));
    } else {
      r.fail("tensor '" + t.name + "': unknown kind " + std::to_string(t.kind));
    }
    m.tensors.push_back(std::move(t));
  }
  if (r.pos != r.n) r.fail(std::to_string(r.n - r.pos) + " bytes after the last tensor");
  return m;
}

std::vector<double> centroid_gradients(const QTensor& t, const float* grad) {
  FT_REQUIRE(t.kind == 2, "centroid_gradients: tensor is not quantized");
  std::vector<double> g(t.codebook.size(), 0.0);
  for (size_t i = 0, n = t.code.size(); i < n; ++i)
    if (t.code[i] >= 0) g[size_t(t.code[i])] += double(grad[i]);
  return g;
}

void centroid_sgd_step(QTensor& t, const float* grad, float lr, float momentum,
                       std::vector<float>& velocity, bool first) {
  const std::vector<double> g = centroid_gradients(t, grad);
  if (momentum == 0.f) {
    for (size_t k = 0; k < g.size(); ++k) t.codebook[k] -= lr * float(g[k]);
    return;
  }
  if (first) velocity.assign(g.size(), 0.f);
  FT_REQUIRE(velocity.size() == g.size(), "centroid_sgd_step: velocity has the wrong size");
  for (size_t k = 0; k < g.size(); ++k) {
    velocity[k] = first ? float(g[k]) : momentum * velocity[k] + float(g[k]);
    t.codebook[k] -= lr * velocity[k];
  }
}

std::string describe_compressed(const std::string& path) {
  const QModel m = read_compressed(path);
  std::ostringstream o;
  o << path << ": firetrain compressed model (Deep Compression, version " << kCompressedVersion
    << ", " << std::filesystem::file_size(path) << " bytes, CRC-32 ok)\n";
  for (auto& [k, v] : m.header) o << "  " << k << ": " << v << "\n";
  char b[200];
  std::snprintf(b, sizeof b, "  %-30s %-18s %-9s %5s %9s %10s %10s\n", "tensor", "shape", "kind",
                "bits", "codebook", "params", "nonzero");
  o << b;
  size_t p = 0, nz = 0;
  for (const auto& t : m.tensors) {
    const char* kind = t.kind == 0 ? "fp32" : t.kind == 1 ? "fp16" : "quantized";
    std::snprintf(b, sizeof b, "  %-30s %-18s %-9s %5d %9zu %10zu %10zu\n", t.name.c_str(),
                  shape_str(t.shape).c_str(), kind, t.kind == 2 ? t.bits : t.kind == 1 ? 16 : 32,
                  t.codebook.size(), t.numel(), t.nonzero());
    o << b;
    p += t.numel(), nz += t.nonzero();
  }
  std::snprintf(b, sizeof b, "  total: %zu parameters, %zu stored (%.1f%% pruned)\n", p, nz,
                100.0 * (1.0 - double(nz) / double(std::max<size_t>(p, 1))));
  o << b;
  return o.str();
}

NetSpec compressed_spec(const QModel& m, const std::string& what) {
  auto get = [&](const char* k) -> std::string {
    auto it = m.header.find(k);
    return it == m.header.end() ? "" : it->second;
  };
  auto get_int = [&](const char* k, int dflt) {
    const std::string v = get(k);
    if (v.empty()) return dflt;
    char* end = nullptr;
    const long x = std::strtol(v.c_str(), &end, 10);
    if (*end || x < 1 || x > (1 << 20))
      throw InputError(what + ": header " + k + "=" + v + " is not a positive integer");
    return int(x);
  };
  NetSpec s;
  s.arch = get("arch");
  if (s.arch.empty()) throw InputError(what + ": the header has no arch");
  if (std::string b = get("bypass"); !b.empty()) s.bypass = b;
  if (std::string f = get("fire"); !f.empty() && f != fire_list_string(fire_configs(FireMeta{})))
    s.fire.list = f;
  s.num_classes = get_int("num_classes", 1000);
  s.in_channels = get_int("in_channels", 3);
  s.height = get_int("height", 224);
  s.width = get_int("width", 224);
  return s;
}

Net load_compressed_net(const std::string& path, const std::string& arch, int channels,
                        int height, int width, int classes, Device device,
                        const std::string& precision) {
  QModel m = read_compressed(path);
  NetSpec s = compressed_spec(m, path);
  if (!arch.empty()) s.arch = arch;
  if (classes > 0 && classes != s.num_classes)
    throw InputError(path + ": the model has " + std::to_string(s.num_classes) +
                     " classes, the dataset " + std::to_string(classes));
  if (channels > 0 && channels != s.in_channels)
    throw InputError(path + ": the model takes " + std::to_string(s.in_channels) +
                     " input channels, the dataset has " + std::to_string(channels));
  if (height > 0) s.height = height;
  if (width > 0) s.width = width;
  s.precision = precision;
  Net net(s, device);
  decode_into(m, net.param_views(), path);
  net.params_from_host();
  return net;
}

std::string format_report(const std::vector<LayerReport>& rows, int64_t file_bytes) {
  std::ostringstream o;
  char b[320];
  std::snprintf(b, sizeof b, "%-30s %10s %10s %8s %5s %12s %12s %8s %8s\n", "layer", "params",
                "nonzero", "sparsity", "bits", "bytes_fp32", "bytes_after", "bits/nz", "ratio");
  o << b;
  int64_t p = 0, nz = 0, before = 0, after = 0;
  for (const auto& r : rows) {
    std::snprintf(b, sizeof b, "%-30s %10lld %10lld %7.1f%% %5d %12lld %12lld %8.2f %7.1fx\n",
                  r.name.c_str(), (long long)r.params, (long long)r.nonzero,
                  100.0 * (1.0 - double(r.nonzero) / double(std::max<int64_t>(r.params, 1))), r.bits,
                  (long long)r.bytes_before, (long long)r.bytes_after,
                  8.0 * double(r.bytes_after) / double(std::max<int64_t>(r.nonzero, 1)),
                  double(r.bytes_before) / double(std::max<int64_t>(r.bytes_after, 1)));
    o << b;
    p += r.params, nz += r.nonzero, before += r.bytes_before, after += r.bytes_after;
  }
  std::snprintf(b, sizeof b, "%-30s %10lld %10lld %7.1f%% %5s %12lld %12lld %8.2f %7.1fx\n", "total",
                (long long)p, (long long)nz, 100.0 * (1.0 - double(nz) / double(std::max<int64_t>(p, 1))),
                "", (long long)before, (long long)after,
                8.0 * double(after) / double(std::max<int64_t>(nz, 1)),
                double(before) / double(std::max<int64_t>(after, 1)));
  o << b;
  std::snprintf(b, sizeof b,
                "file: %lld bytes = %.3f MB (%.3f MiB) vs fp32 %.3f MB (%.3f MiB): %.1fx smaller "
                "(header + checksum %lld bytes)\n",
                (long long)file_bytes, file_bytes / 1e6, file_bytes / 1048576.0, before / 1e6,
                before / 1048576.0, double(before) / double(std::max<int64_t>(file_bytes, 1)),
                (long long)(file_bytes - after));
  o << b;
  return o.str();
}

std::map<std::string, double> parse_layer_values(const std::string& s, const std::string& what) {
  std::map<std::string, double> m;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    char* end = nullptr;
    const std::string num = eq == std::string::npos ? "" : item.substr(eq + 1);
    const double v = num.empty() ? 0 : std::strtod(num.c_str(), &end);
    if (eq == 0 || eq == std::string::npos || num.empty() || *end)
      throw InputError("compress: " + what + ": bad entry '" + item + "' (expected name=value)");
    m[item.substr(0, eq)] = v;
  }
  return m;
}

}  // namespace ft
