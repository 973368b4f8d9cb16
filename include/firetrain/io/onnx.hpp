/// @brief ONNX export of a Net's inference graph (opset 13, IR version 7), written with a small
/// hand-written protobuf encoder (no protobuf or onnx runtime dependency).
///
/// The graph: input "input" float32 (N, C, H, W) (NCHW, already normalized, as torchvision
/// models take it), output "logits" float32 (N, num_classes). Weights are float32 initializers
/// (raw_data, little endian) named as the torch-h5 keys ("features.3.squeeze.weight"), in
/// torchvision layout (conv OIHW, linear (O, I)): the same tensors `export --format torch-h5`
/// writes. Dropout is left out (inference). Per architecture:
///   squeezenet*: Conv+Relu, MaxPool(3, 2, ceil_mode=1), Fire = Conv+Relu -> [Conv+Relu ‖
///     Conv(pad 1)+Relu] -> Concat(axis 1) (+ Add of the input, or of a 1×1 Conv of it, for the
///     bypass variants), final Conv (+Relu except squeezenet_small), GlobalAveragePool, Flatten;
///   alexnet: Conv+Relu and MaxPool(3, 2, ceil_mode=0) as torchvision, then Flatten and
///     Gemm(transB=1)(+Relu) ×3. Its AdaptiveAvgPool2d((6, 6)) is the identity for every input
///     the Net accepts (it requires 6×6 features), so it is not emitted.
/// The builder cross-checks itself against the Net: every node's output shape must equal the
/// Net's layer table and every parameter must be used exactly once with its torch shape, so a
/// change of the layer graph in net.cpp that the exporter does not know fails loudly (ft::Error)
/// instead of writing a wrong model.
#pragma once

#include <cstdint>
#include <string>

namespace ft {

class Net;

struct OnnxOptions {
  /// Batch dimension of "input" and "logits": 0 = symbolic ("N"), else fixed.
  int64_t batch = 0;
  /// ModelProto.producer_version (default: FIRETRAIN_VERSION where defined).
  std::string producer_version;
};

inline constexpr int64_t kOnnxIrVersion = 7;
inline constexpr int64_t kOnnxOpset = 13;

/// The serialized ModelProto of `net` (its parameters as they are in the host views: call
/// net.params_to_host() first for a device net). ft::Error if the net has a layer the exporter
/// does not know or the graph does not match the net's layer table.
std::string onnx_model_bytes(const Net& net, const OnnxOptions& opt = {});

/// Writes onnx_model_bytes(net) to `path` atomically (temporary file, fsync, rename).
void save_onnx(const std::string& path, const Net& net, const OnnxOptions& opt = {});

}  // namespace ft
