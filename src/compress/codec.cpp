/// @brief The building blocks of Deep Compression: CRC-32, fp16, 1-D k-means with linear
/// initialization, and canonical Huffman coding (length-limited, MSB-first bit streams).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <queue>
#include <utility>

#include "firetrain/compress/compress.hpp"
#include "firetrain/core/error.hpp"

namespace ft {

// ---------------------------------------------------------------------------------------------
// CRC-32 and fp16.

uint32_t crc32(const void* data, size_t bytes, uint32_t crc) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < bytes; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7FFFFFFFu;
  if (absx >= 0x7F800000u)  // Inf or NaN
    return uint16_t(sign | 0x7C00u | (absx > 0x7F800000u ? 0x200u : 0u));
  if (absx >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // rounds to >= 65520: Inf
  if (absx < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (absx < 0x33000000u) return uint16_t(sign);  // < 2^-25: rounds to 0
    // value = m · 2^(e - 150); a subnormal half holds round(value · 2^24) = m >> (126 - e).
    const uint32_t e = absx >> 23, m = (absx & 0x7FFFFFu) | 0x800000u;
    const uint32_t drop = 126 - e;  // 14..24
    uint32_t h = m >> drop;
    const uint32_t rem = m & ((1u << drop) - 1), half = 1u << (drop - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return uint16_t(sign | h);
  }
  uint32_t h = ((absx - 0x38000000u) >> 13);  // rebias exponent 127 -> 15
  const uint32_t rem = absx & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return uint16_t(sign | h);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FFu, x;
  if (e == 0) {
    if (m == 0) {
      x = sign;
    } else {  // subnormal: normalize
      int s = 0;
      while (!(m & 0x400u)) m <<= 1, ++s;
      x = sign | (uint32_t(113 - s) << 23) | ((m & 0x3FFu) << 13);
    }
  } else if (e == 31) {
    x = sign | 0x7F800000u | (m << 13);
  } else {
    x = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

// ---------------------------------------------------------------------------------------------
// k-means.

KMeansResult kmeans_1d(const float* x, size_t n, int k, int max_iters) {
  FT_REQUIRE(k >= 1, "kmeans_1d: k must be >= 1");
  KMeansResult r;
  if (n == 0) return r;
  std::vector<float> s(x, x + n);
  std::sort(s.begin(), s.end());
  std::vector<double> prefix(n + 1, 0.0);  // prefix[i] = sum of s[0..i)
  for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + double(s[i]);
  const double lo = s.front(), hi = s.back();
  std::vector<double> c(static_cast<size_t>(k));
  for (int j = 0; j < k; ++j) c[j] = k == 1 ? (lo + hi) / 2 : lo + (hi - lo) * j / (k - 1);
  // Cluster j holds the sorted values in (b[j-1], b[j]], b[j] = (c[j] + c[j+1]) / 2: the nearest
  // centroid, ties to the lower one. The centroids stay sorted (a mean lies inside its interval).
  auto boundaries = [&](const std::vector<double>& cc) {
    std::vector<float> b(static_cast<size_t>(k - 1));
    for (int j = 0; j + 1 < k; ++j) b[j] = float((cc[j] + cc[j + 1]) / 2);
    return b;
  };
  std::vector<size_t> split(static_cast<size_t>(k), 0), prev;
  int it = 0;
  for (; it < max_iters; ++it) {
    const std::vector<float> b = boundaries(c);
    for (int j = 0; j + 1 < k; ++j)
      split[j] = size_t(std::upper_bound(s.begin(), s.end(), b[j]) - s.begin());
    split[k - 1] = n;
    if (split == prev) break;  // assignments unchanged: converged
    size_t start = 0;
    for (int j = 0; j < k; ++j) {
      const size_t end = split[j];
      if (end > start) c[j] = (prefix[end] - prefix[start]) / double(end - start);
      start = std::max(start, end);
    }
    prev = split;
  }
  r.iterations = it;
  r.centroids.resize(size_t(k));
  for (int j = 0; j < k; ++j) r.centroids[j] = float(c[j]);
  std::vector<double> cf(r.centroids.begin(), r.centroids.end());
  const std::vector<float> b = boundaries(cf);
  r.assign.resize(n);
  for (size_t i = 0; i < n; ++i)
    r.assign[i] = uint32_t(std::lower_bound(b.begin(), b.end(), x[i]) - b.begin());
  return r;
}

// ---------------------------------------------------------------------------------------------
// Huffman.

namespace {

std::vector<uint8_t> unlimited_lengths(const std::vector<uint64_t>& freq) {
  const size_t A = freq.size();
  std::vector<uint8_t> len(A, 0);
  // Nodes: leaves 0..A-1, internal nodes after; (weight, id) min-heap, ties by id.
  std::vector<int64_t> parent;
  parent.reserve(2 * A);
  using Item = std::pair<uint64_t, size_t>;
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> q;
  std::vector<size_t> used;
  for (size_t s = 0; s < A; ++s) {
    parent.push_back(-1);
    if (freq[s] > 0) {
      q.push({freq[s], s});
      used.push_back(s);
    }
  }
  if (used.empty()) return len;
  if (used.size() == 1) {
    len[used[0]] = 1;
    return len;
  }
  while (q.size() > 1) {
    const Item a = q.top();
    q.pop();
    const Item b = q.top();
    q.pop();
    const size_t id = parent.size();
    parent.push_back(-1);
    parent[a.second] = int64_t(id);
    parent[b.second] = int64_t(id);
    q.push({a.first + b.first, id});
  }
  // Depth of each node: parents have higher ids, so walk from the root downwards.
  std::vector<uint32_t> depth(parent.size(), 0);
  for (size_t id = parent.size(); id-- > 0;)
    if (parent[id] >= 0) depth[id] = depth[size_t(parent[id])] + 1;
  for (size_t s : used) len[s] = uint8_t(std::min<uint32_t>(depth[s], 255));
  return len;
}

/// Canonical codes from lengths (deflate's algorithm); code[s] holds len[s] bits.
std::vector<uint32_t> canonical_codes(const std::vector<uint8_t>& len) {
  uint32_t count[32] = {0}, next[32] = {0};
  for (uint8_t l : len) ++count[l];
  count[0] = 0;
  uint32_t code = 0;
  for (int b = 1; b < 32; ++b) {
    code = (code + count[b - 1]) << 1;
    next[b] = code;
  }
  std::vector<uint32_t> codes(len.size(), 0);
  for (size_t s = 0; s < len.size(); ++s)
    if (len[s]) codes[s] = next[len[s]]++;
  return codes;
}

}  // namespace

std::vector<uint8_t> huffman_lengths(const std::vector<uint64_t>& freq, int max_len) {
  FT_REQUIRE(max_len >= 1 && max_len <= 24, "huffman_lengths: max_len must be in 1..24");
  std::vector<uint64_t> f = freq;
  for (;;) {
    std::vector<uint8_t> len = unlimited_lengths(f);
    uint8_t worst = 0;
    for (uint8_t l : len) worst = std::max(worst, l);
    if (worst <= max_len) return len;
    // Too deep (very skewed counts): flatten the distribution and retry.
    for (auto& v : f)
      if (v) v = (v >> 1) | 1;
  }
}

HuffmanStream huffman_encode(const std::vector<uint32_t>& symbols, size_t alphabet) {
  FT_REQUIRE(alphabet >= 1 && alphabet <= 65535, "huffman_encode: alphabet must be 1..65535");
  std::vector<uint64_t> freq(alphabet, 0);
  for (uint32_t s : symbols) {
    FT_REQUIRE(s < alphabet, "huffman_encode: symbol outside the alphabet");
    ++freq[s];
  }
  HuffmanStream out;
  out.lengths = huffman_lengths(freq, 15);
  const std::vector<uint32_t> codes = canonical_codes(out.lengths);
  uint64_t total = 0;
  for (size_t s = 0; s < alphabet; ++s) total += freq[s] * out.lengths[s];
  out.nbits = total;
  out.bytes.assign(size_t((total + 7) / 8), 0);
  uint64_t pos = 0;
  for (uint32_t s : symbols) {
    const uint32_t c = codes[s];
    for (int b = out.lengths[s] - 1; b >= 0; --b, ++pos)
      if ((c >> b) & 1u) out.bytes[size_t(pos >> 3)] |= uint8_t(0x80u >> (pos & 7));
  }
  return out;
}

std::vector<uint32_t> huffman_decode(const HuffmanStream& s, size_t count, const std::string& what) {
  std::vector<uint32_t> out;
  if (count == 0) return out;
  int cnt[16] = {0};
  for (uint8_t l : s.lengths) {
    if (l > 15) throw InputError(what + ": Huffman code length " + std::to_string(l) + " > 15");
    ++cnt[l];
  }
  // Kraft: the code must not be over-subscribed.
  int64_t left = 1;
  for (int l = 1; l <= 15; ++l) {
    left = left * 2 - cnt[l];
    if (left < 0) throw InputError(what + ": over-subscribed Huffman code lengths");
  }
  std::vector<uint32_t> sorted;  // symbols by (length, symbol)
  for (int l = 1; l <= 15; ++l)
    for (size_t i = 0; i < s.lengths.size(); ++i)
      if (s.lengths[i] == l) sorted.push_back(uint32_t(i));
  if (sorted.empty()) throw InputError(what + ": " + std::to_string(count) +
                                       " symbols to decode but an empty Huffman code");
  if (s.bytes.size() * 8 < s.nbits) throw InputError(what + ": Huffman stream shorter than its bit count");
  out.resize(count);
  uint64_t pos = 0;
  for (size_t i = 0; i < count; ++i) {
    int32_t code = 0, first = 0, index = 0;
    bool found = false;
    for (int l = 1; l <= 15; ++l) {
      if (pos >= s.nbits) throw InputError(what + ": Huffman stream ends early (symbol " +
                                           std::to_string(i) + " of " + std::to_string(count) + ")");
      code |= (s.bytes[size_t(pos >> 3)] >> (7 - (pos & 7))) & 1;
      ++pos;
      if (code - first < cnt[l]) {
        out[i] = sorted[size_t(index + code - first)];
        found = true;
        break;
      }
      index += cnt[l];
      first = (first + cnt[l]) << 1;
      code <<= 1;
    }
    if (!found) throw InputError(what + ": invalid Huffman code at bit " + std::to_string(pos));
  }
  if (pos != s.nbits)
    throw InputError(what + ": Huffman stream has " + std::to_string(s.nbits - pos) +
                     " bits left over after " + std::to_string(count) + " symbols");
  return out;
}

}  // namespace ft
