/// @brief Deep Compression (Han, Mao, Dally, ICLR 2016) for SqueezeNet: magnitude pruning,
/// k-means weight sharing with linear initialization, Huffman coding of the codebook indices
/// and of the sparse-index gaps, and the compressed model file that eval/predict read directly.
///
/// Compressed file ("firetrain-deep-compression", version 1), all integers little-endian:
///   magic    8 bytes  "\x89FTDC\r\n\x1a"
///   u32      version (1)
///   u32 n, n bytes    header: "key=value\n" lines (arch, bypass, fire, num_classes, in_channels,
///                     height, width, and how the file was made)
///   u32      number of tensors, then one section per tensor, in the net's parameter order:
///     u16 n, n bytes  name (torchvision state_dict key)
///     u8 rank, i64 × rank  shape
///     u8 kind         0: fp32 values, 1: fp16 values (biases), 2: pruned + quantized
///     kind 0/1: numel values
///     kind 2: u8 bits, u8 gap_bits, u32 K, f32 × K codebook (ascending), u64 entries, u64 nonzero,
///             then two Huffman streams: gaps (alphabet 2^gap_bits), indices (alphabet K + 1,
///             symbol K = filler zero). Stream: u16 alphabet, ceil(alphabet/2) bytes of 4-bit
///             canonical code lengths (0: unused), u64 bits, ceil(bits/8) bytes (MSB first).
///             Entry j sits gap_j + 1 elements after entry j − 1 (the first at gap_0); a gap
///             larger than 2^gap_bits − 1 is bridged by filler entries (index K, value 0), as the
///             paper's relative indexing does. Elements without an entry are pruned (0).
///   u32      CRC-32 (zlib's) of every byte before it.
/// A torn, truncated or corrupt file fails the checksum and is rejected with ft::InputError naming
/// the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "firetrain/core/params.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/train/trainer.hpp"

namespace ft {

class Communicator;

// ---------------------------------------------------------------------------------------------
// Building blocks.

/// CRC-32 (polynomial 0xEDB88320, zlib's crc32), continuing from `crc` (start: 0).
uint32_t crc32(const void* data, size_t bytes, uint32_t crc = 0);

/// IEEE half <-> float (round to nearest even; biases stored in 16 bits).
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);

/// 1-D k-means (Lloyd) of x[0..n) into k clusters, centroids initialized linearly between
/// min(x) and max(x) (the paper's best initialization: it keeps the rare large weights).
/// Returns the centroids in ascending order and each point's nearest centroid; empty clusters
/// keep their position. Exact Lloyd steps, done on the sorted data with prefix sums.
struct KMeansResult {
  std::vector<float> centroids;  // (k,) ascending
  std::vector<uint32_t> assign;  // (n,) index into centroids
  int iterations = 0;
};
KMeansResult kmeans_1d(const float* x, size_t n, int k, int max_iters = 100);

/// Canonical Huffman code lengths for symbol frequencies (0: unused symbol), at most `max_len`
/// bits (frequencies are flattened until they fit). One used symbol gets length 1.
std::vector<uint8_t> huffman_lengths(const std::vector<uint64_t>& freq, int max_len = 15);

/// Encodes `symbols` (each < alphabet) with the canonical code of their frequencies; returns the
/// code lengths (alphabet entries), the bits (MSB first) and their number.
struct HuffmanStream {
  std::vector<uint8_t> lengths;  // (alphabet,)
  std::vector<uint8_t> bytes;
  uint64_t nbits = 0;
};
HuffmanStream huffman_encode(const std::vector<uint32_t>& symbols, size_t alphabet);
/// Decodes `count` symbols; ft::InputError (prefixed by `what`) if the bits or lengths are bad.
std::vector<uint32_t> huffman_decode(const HuffmanStream& s, size_t count,
                                     const std::string& what = "huffman");

// ---------------------------------------------------------------------------------------------
// Pruning and quantization.

/// Weight tensors (rank >= 2) are pruned and quantized; biases (rank 1) are kept.
bool is_weight(const ParamView& p);

/// How much to prune. `layer`: every weight tensor loses the fraction `sparsity` of its smallest
/// |w| (exactly round(sparsity · numel) elements), or its entry of `per_layer` ("features.0" or
/// the full name "features.0.weight"). `global`: one magnitude threshold over all weight tensors.
struct PruneOptions {
  double sparsity = 0.6;
  std::string mode = "layer";  // layer | global
  std::map<std::string, double> per_layer;
};
/// Mask over the parameter arena (params[i].offset indexes it, `arena` elements): 1 keep, 0 pruned.
std::vector<uint8_t> prune_mask(const std::vector<ParamView>& params, size_t arena,
                                const PruneOptions& o);
/// The sparsity of `p` (tensor name or prefix) under PruneOptions (for reports).
double target_sparsity(const PruneOptions& o, const std::string& name);
/// params[i] *= mask[i] over every view (host memory).
void apply_mask(const std::vector<ParamView>& params, const std::vector<uint8_t>& mask);

/// One tensor of a compressed model, decoded (in memory, before or after the file).
struct QTensor {
  std::string name;
  std::vector<int64_t> shape;
  int kind = 2;                  // 0 fp32, 1 fp16, 2 quantized
  int bits = 0, gap_bits = 8;    // kind 2
  std::vector<float> codebook;   // kind 2: ascending
  std::vector<int32_t> code;     // kind 2: per element, -1 pruned, else codebook index
  std::vector<float> values;     // kind 0/1: the values (fp16-rounded for kind 1)
  size_t numel() const;
  size_t nonzero() const;        // kept weights (kind 2) or numel
  float value(size_t i) const;   // decoded element
};
struct QModel {
  std::map<std::string, std::string> header;
  std::vector<QTensor> tensors;
};

struct QuantizeOptions {
  int bits = 8;                          // codebook of 2^bits centroids per weight tensor
  std::map<std::string, int> per_layer;  // name or prefix -> bits
  int gap_bits = 8;                      // relative-index gap width (filler zeros beyond)
  int bias_bits = 32;                    // 32 | 16
  int kmeans_iters = 100;
};
/// k-means on the kept weights of each weight tensor (mask from prune_mask); biases as they are.
QModel quantize_model(const std::vector<ParamView>& params, const std::vector<uint8_t>& mask,
                      const QuantizeOptions& o);
/// Fills every view from the model; checks names and shapes first (ft::InputError prefixed by
/// `what`, usually the file).
void decode_into(const QModel& m, const std::vector<ParamView>& params, const std::string& what);

// ---------------------------------------------------------------------------------------------
// Codebook fine-tuning (the paper's section 3.1, Figure 3): the weights stay tied to their
// centroids; the gradient of a centroid is the sum of the gradients of the weights that share it.

/// dL/dc_k = sum over i with code_i == k of dL/dw_i, for every centroid k of `t` (kind 2);
/// `grad` holds t.numel() weight gradients. Pruned weights (code -1) contribute nothing.
std::vector<double> centroid_gradients(const QTensor& t, const float* grad);
/// One SGD step of t's centroids with G = centroid_gradients(t, grad), PyTorch's convention
/// (as the trainer's): momentum 0: c -= lr * G; else v = G on the first step, v = momentum * v
/// + G after, and c -= lr * v (`velocity`: one entry per centroid, sized on the first step).
/// No weight decay on the centroids. The codes do not change (the codebook may leave ascending
/// order; write_compressed's caller re-sorts).
void centroid_sgd_step(QTensor& t, const float* grad, float lr, float momentum,
                       std::vector<float>& velocity, bool first);

// ---------------------------------------------------------------------------------------------
// The file.

inline constexpr uint32_t kCompressedVersion = 1;

struct LayerReport {
  std::string name;
  int64_t params = 0, nonzero = 0;
  int bits = 32;  // bits of a stored value (codebook index width, or 32/16 for raw tensors)
  int64_t bytes_before = 0, bytes_after = 0;  // fp32; this tensor's section in the file
  double index_bits = 0, weight_bits = 0;     // Huffman-coded bits of gaps and of indices
};

/// Writes `m` atomically (temporary file, fsync, rename); returns one report per tensor.
/// ft::InputError when the path cannot be written.
std::vector<LayerReport> write_compressed(const std::string& path, const QModel& m);
/// Reads and verifies (magic, version, CRC-32, every length) a compressed file; ft::InputError
/// naming the file on any problem.
QModel read_compressed(const std::string& path);
/// Whether `path` starts with the compressed-model magic (never throws).
bool is_compressed_model(const std::string& path);

/// For `firetrain info`: the header, then one line per tensor (shape, kind, bits, codebook size,
/// nonzero) and the totals; verifies the file like read_compressed.
std::string describe_compressed(const std::string& path);

/// The NetSpec stored in a compressed file's header (arch, bypass, Fire modules, classes,
/// input shape).
NetSpec compressed_spec(const QModel& m, const std::string& what);
/// Builds the net of a compressed file for inputs of (channels, height, width) and `classes`
/// (0: as stored) and fills its weights. `arch` overrides the stored one when not empty. The
/// net lives on `device` and computes in `precision` (fp32 | bf16 | fp16).
Net load_compressed_net(const std::string& path, const std::string& arch, int channels,
                        int height, int width, int classes, Device device = Device::CPU,
                        const std::string& precision = "fp32");

/// The table: layer, params, nonzero, sparsity, bits, bytes fp32, bytes compressed, ratio; then
/// totals with the file size (MB = 1e6 bytes, and MiB) and the compression ratio.
std::string format_report(const std::vector<LayerReport>& rows, int64_t file_bytes);

// ---------------------------------------------------------------------------------------------
// The pipeline (`firetrain compress`).

struct CompressConfig {
  std::string weights;  // torch-h5 or checkpoint; "" = freshly initialized (--arch, --seed)
  std::string out;      // compressed file
  std::string decompressed;  // optional: also write the decoded weights as torch-h5
  std::string arch;          // override / fresh init
  std::string bypass = "none";  // fresh init only
  int num_classes = 1000, in_channels = 3, size = 224;  // fresh init without --data
  std::string init = "torchvision";
  PruneOptions prune;
  QuantizeOptions quant;
  /// Fine-tuning under the mask: train.data / train.val, train.epochs / train.steps and the SGD
  /// settings; no fine-tuning when both epochs and steps are 0 or there is no data.
  TrainConfig train;
  /// Optional fine-tuning of the shared centroids after k-means, the paper's update: each step
  /// the trainer computes the (all-reduced) weight gradients at the tied weights, each centroid
  /// takes one centroid_sgd_step (momentum: train.momentum) and every weight is set back to its
  /// centroid (pruned weights stay 0). Biases train as usual (trainer SGD). Constant lr.
  int64_t codebook_steps = 0;
  double codebook_lr = 0;      // centroid learning rate; 0: train.lr
  int prune_stages = 1;        // iterative pruning: sparsity reached in this many steps
};

struct CompressSummary {
  std::vector<LayerReport> rows;
  int64_t file_bytes = 0, fp32_bytes = 0;
  EvalResult original, pruned, finetuned, compressed;  // n == 0 where not measured
};

/// Loads (or initializes), prunes, fine-tunes under the mask (data-parallel over `comm`),
/// quantizes, optionally fine-tunes the codebooks, writes the file (rank 0), reads it back and
/// evaluates it on train.val. Prints progress and the table on rank 0.
CompressSummary run_compress(const CompressConfig& c, Communicator& comm);

/// "name=value,name=value" -> map (ft::InputError on a malformed entry; `what` names the flag).
std::map<std::string, double> parse_layer_values(const std::string& s, const std::string& what);

}  // namespace ft
