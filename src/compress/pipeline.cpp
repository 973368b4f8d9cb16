/// @brief `firetrain compress`: load -> prune -> fine-tune under the mask (data-parallel, the
/// trainer's step hook re-applies the mask after every SGD step) -> k-means per layer ->
/// optional codebook fine-tuning (centroid gradient = sum of its weights' gradients, SGD on the
/// centroids) -> Huffman-coded file -> read back and evaluate.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <numeric>

#include "firetrain/comm/communicator.hpp"
#include "firetrain/compress/compress.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/inspect.hpp"
#include "firetrain/io/weights.hpp"

namespace ft {

namespace {

/// The host arena behind a net's views (CPU: the arena itself; CUDA: the host mirror).
float* host_arena(Net& net) {
  const ParamView& v = net.param_views().front();
  return v.data - v.offset;
}

void print_eval(bool root, const char* what, const EvalResult& r) {
  if (root && r.n > 0)
    std::printf("compress: %-34s top-1 %.4f  top-5 %.4f  loss %.4f  (%lld images)\n", what, r.top1,
                r.top5, r.loss, (long long)r.n);
}

/// Fine-tunes `net`'s weights (host copy `w`) with the trainer; after every step `each(net)`
/// runs on the host views (the arena was copied to the host before and back after).
TrainSummary finetune(const TrainConfig& base, const NetSpec& spec, int64_t epochs, int64_t steps,
                      std::vector<float>& w, const std::function<void(Net&)>& each,
                      Communicator& comm) {
  TrainConfig t = base;
  t.arch = spec.arch;
  t.bypass = spec.bypass;
  t.fire = spec.fire;
  t.epochs = epochs;
  t.steps = steps;
  t.weights.clear();
  t.resume.clear();
  t.checkpoint_dir.clear();
  t.stop_at = 0;
  t.step_hook = [&](Net& net, int64_t step) {
    float* a = host_arena(net);
    if (step == 0) {  // the starting point: our weights, not the trainer's initialization
      std::copy(w.begin(), w.end(), a);
      net.params_from_host();
      return;
    }
    net.params_to_host();
    each(net);
    net.params_from_host();
    std::copy(a, a + w.size(), w.begin());
  };
  const std::string json = "{\"command\": \"compress\", \"arch\": \"" + spec.arch + "\"}";
  return train(t, json, comm);
}

}  // namespace

CompressSummary run_compress(const CompressConfig& c, Communicator& comm) {
  const bool root = comm.rank() == 0;
  if (c.out.empty()) throw InputError("compress: --out is required");
  set_threads(c.train.threads, comm);
  const TrainConfig& tc = c.train;
  const bool tune = !tc.data.empty() && (tc.epochs > 0 || tc.steps > 0);
  if ((tc.epochs > 0 || tc.steps > 0 || c.codebook_steps > 0) && tc.data.empty())
    throw InputError("compress: fine-tuning (--finetune-epochs/--finetune-steps/--codebook-steps) "
                     "needs --data");
  // Validate every option before any work (the checks run on an empty model).
  prune_mask({}, 0, c.prune);
  quantize_model({}, {}, c.quant);
  if (c.quant.kmeans_iters < 1 || c.prune_stages < 1 || c.codebook_steps < 0 ||
      tc.epochs < 0 || tc.steps < 0)
    throw InputError("compress: --kmeans-iters and --prune-stages must be >= 1, the step and "
                     "epoch counts >= 0");
  if (!(c.codebook_lr >= 0))
    throw InputError("compress: the codebook learning rate must be >= 0 (0: --lr)");
  if (c.prune.mode == "global" && !c.prune.per_layer.empty())
    throw InputError("compress: --layer-sparsity applies to --sparsity-mode layer only");

  // The net: from the weights file (arch/bypass/Fire modules stored in it) or fresh.
  NetSpec spec;
  spec.arch = c.arch;
  spec.bypass = c.bypass;
  spec.num_classes = c.num_classes;
  spec.in_channels = c.in_channels;
  spec.height = spec.width = c.size;
  if (!c.weights.empty()) {
    if (is_compressed_model(c.weights))
      throw InputError("compress: " + c.weights + " is already a compressed model; give the "
                       "torch-h5 weights or checkpoint it came from");
    // Arch, bypass and Fire modules as stored (or inferred from the shapes).
    spec = spec_from_file(c.weights, c.arch);
  } else if (spec.arch.empty()) {
    spec.arch = "squeezenet1_0";
  }
  std::unique_ptr<Dataset> val;
  const std::string shape_from = !tc.data.empty() ? tc.data : tc.val;
  if (!shape_from.empty()) {
    Dataset ds = Dataset::open(shape_from);
    if (!c.weights.empty() && (ds.num_classes() != spec.num_classes || ds.channels() != spec.in_channels))
      throw InputError("compress: " + c.weights + " has " + std::to_string(spec.num_classes) +
                       " classes and " + std::to_string(spec.in_channels) + " input channels, " +
                       shape_from + " " + std::to_string(ds.num_classes()) + " and " +
                       std::to_string(ds.channels()));
    spec.num_classes = ds.num_classes();
    spec.in_channels = ds.channels();
    spec.height = ds.height();
    spec.width = ds.width();
  }
  if (!tc.val.empty()) val = std::make_unique<Dataset>(Dataset::open(tc.val));
  Net net(spec);
  if (c.weights.empty())
    net.init_weights(uint64_t(tc.seed), parse_init(c.init));
  else
    load_weights_h5(c.weights, net.param_views());
  net.params_from_host();
  const auto& views = net.param_views();
  const size_t P = net.num_params();
  CompressSummary sum;
  sum.fp32_bytes = int64_t(P) * 4;
  if (root)
    std::printf("compress: %s (%s), %zu parameters = %.3f MB fp32; sparsity %s %.3g%s, %d-bit "
                "codebooks, %d-bit gaps, %d-bit biases\n",
                c.weights.empty() ? "freshly initialized (no trained weights given)" : c.weights.c_str(),
                spec.arch.c_str(), P, P * 4 / 1e6, c.prune.mode.c_str(), c.prune.sparsity,
                c.prune.per_layer.empty() ? "" : " (+ per-layer values)", c.quant.bits,
                c.quant.gap_bits, c.quant.bias_bits);
  if (val) {
    sum.original = evaluate(net, *val, comm, tc.eval_batch);
    print_eval(root, "original (fp32):", sum.original);
  }

  // 1. Pruning (measured at the full sparsity first), then fine-tuning under the mask; with
  // prune_stages > 1, as the paper's iterative pruning: the sparsity rises to the target in equal
  // steps, each followed by its share of the fine-tuning.
  const std::vector<float> orig(host_arena(net), host_arena(net) + P);
  std::vector<uint8_t> mask = prune_mask(views, P, c.prune);
  apply_mask(views, mask);
  net.params_from_host();
  if (val) {
    sum.pruned = evaluate(net, *val, comm, tc.eval_batch);
    print_eval(root, "pruned, before fine-tuning:", sum.pruned);
  }
  std::vector<float> w(host_arena(net), host_arena(net) + P);
  if (tune) {
    const int stages = std::max(1, c.prune_stages);
    int64_t steps = tc.steps;
    if (steps <= 0) {  // epochs -> steps (the loader drops the last partial batch)
      Dataset ds = Dataset::open(tc.data);
      steps = tc.epochs * (ds.size() / std::max<int64_t>(tc.batch, 1));
    }
    if (stages > 1) w = orig;
    for (int st = 1; st <= stages; ++st) {
      const int64_t n = steps * st / stages - steps * (st - 1) / stages;
      if (stages > 1) {
        PruneOptions ps = c.prune;
        ps.sparsity *= double(st) / stages;
        for (auto& [k, v] : ps.per_layer) v *= double(st) / stages;
        std::copy(w.begin(), w.end(), host_arena(net));
        mask = prune_mask(views, P, ps);  // pruned weights are 0: they stay the smallest
        apply_mask(views, mask);
        std::copy(host_arena(net), host_arena(net) + P, w.begin());
      }
      if (root)
        std::printf("compress: fine-tuning under the pruning mask%s, %lld steps\n",
                    stages > 1 ? (" (stage " + std::to_string(st) + "/" + std::to_string(stages) +
                                  ", sparsity x " + std::to_string(st) + "/" +
                                  std::to_string(stages) + ")").c_str() : "",
                    (long long)n);
      if (n <= 0) continue;
      TrainConfig ts_cfg = tc;
      ts_cfg.seed = tc.seed + st - 1;  // each stage sees other batches
      TrainSummary ts = finetune(ts_cfg, spec, 0, n, w,
                                 [&](Net& m) { apply_mask(m.param_views(), mask); }, comm);
      if (ts.stopped) throw Error("compress: fine-tuning was stopped; nothing written");
      sum.finetuned = ts.val;
    }
    std::copy(w.begin(), w.end(), host_arena(net));
    net.params_from_host();
    print_eval(root, "pruned + fine-tuned (fp32):", sum.finetuned);
  }

  // 2. Weight sharing.
  QModel q = quantize_model(views, mask, c.quant);
  if (c.codebook_steps > 0) {
    // The paper's codebook fine-tuning (section 3.1): the weights are tied to their centroids;
    // after each step of the trainer (gradients all-reduced: the same on every rank) each
    // centroid takes an SGD step with the SUM of its weights' gradients, and every weight is
    // set back to its centroid (pruned weights to 0). The trainer's own update of the
    // quantized tensors is overwritten; the biases keep it (they are trained as usual).
    const float clr = float(c.codebook_lr > 0 ? c.codebook_lr : tc.lr);
    if (root)
      std::printf("compress: fine-tuning the codebooks for %lld steps (centroid gradient = sum "
                  "of its weights' gradients; SGD lr %g, momentum %g, constant)\n",
                  (long long)c.codebook_steps, double(clr), tc.momentum);
    decode_into(q, views, "compress");
    std::copy(host_arena(net), host_arena(net) + P, w.begin());
    std::vector<std::vector<float>> velocity(q.tensors.size());
    int64_t done = 0;
    auto snap = [&](Net& n) {
      n.grads_to_host();
      const auto& nv = n.param_views();
      for (size_t ti = 0; ti < q.tensors.size(); ++ti) {
        QTensor& t = q.tensors[ti];
        if (t.kind != 2) continue;
        const ParamView& v = nv[ti];
        centroid_sgd_step(t, v.grad, clr, float(tc.momentum), velocity[ti], done == 0);
        for (size_t i = 0, e = v.numel(); i < e; ++i) v.data[i] = t.value(i);
      }
      ++done;
    };
    TrainConfig t2 = tc;
    t2.lr_schedule = "constant";
    t2.warmup_steps = 0;
    TrainSummary ts = finetune(t2, spec, 0, c.codebook_steps, w, snap, comm);
    if (ts.stopped) throw Error("compress: codebook fine-tuning was stopped; nothing written");
    // Biases trained too; the codebooks are re-sorted (the format keeps them ascending).
    for (size_t ti = 0; ti < q.tensors.size(); ++ti) {
      QTensor& t = q.tensors[ti];
      const ParamView& v = views[ti];
      if (t.kind != 2) {
        t.values.assign(w.begin() + ptrdiff_t(v.offset), w.begin() + ptrdiff_t(v.offset + v.numel()));
        if (t.kind == 1)
          for (auto& x : t.values) x = half_to_float(float_to_half(x));
        continue;
      }
      std::vector<int32_t> order(t.codebook.size()), rank(t.codebook.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return t.codebook[size_t(a)] < t.codebook[size_t(b)]; });
      std::vector<float> cb(t.codebook.size());
      for (size_t j = 0; j < order.size(); ++j) cb[j] = t.codebook[size_t(order[j])], rank[size_t(order[j])] = int32_t(j);
      t.codebook = cb;
      for (auto& x : t.code)
        if (x >= 0) x = rank[size_t(x)];
    }
  }

  // 3. The file (rank 0), then everyone reads it back: what is evaluated is what was written.
  q.header = spec_attrs(spec);  // arch, bypass, fire, num_classes, in_channels, height, width
  q.header["fire"] = fire_list_string(fire_configs(spec.fire));
  q.header.insert({{"format", "firetrain-deep-compression"},
                   {"source", c.weights.empty() ? "fresh-init" : c.weights},
                   {"sparsity", c.prune.mode + ":" + std::to_string(c.prune.sparsity)},
                   {"bits", std::to_string(c.quant.bits)},
                   {"prune_stages", std::to_string(c.prune_stages)},
                   {"finetune_steps", std::to_string(tune ? tc.steps : 0)},
                   {"finetune_epochs", std::to_string(tune ? tc.epochs : 0)},
                   {"codebook_steps", std::to_string(c.codebook_steps)}});
  if (c.codebook_steps > 0)
    q.header["codebook_update"] = "sum-of-gradients SGD, lr " +
                                  std::to_string(c.codebook_lr > 0 ? c.codebook_lr : tc.lr);
  std::string err;
  if (root) {
    try {
      sum.rows = write_compressed(c.out, q);
      sum.file_bytes = int64_t(std::filesystem::file_size(c.out));
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  comm.broadcast(err, 0);
  if (!err.empty()) throw InputError(err);
  if (root) {
    std::printf("compress: wrote %s\n", c.out.c_str());
    std::fputs(format_report(sum.rows, sum.file_bytes).c_str(), stdout);
  }
  Net back = load_compressed_net(c.out, "", spec.in_channels, spec.height, spec.width,
                                 spec.num_classes);
  if (val) {
    sum.compressed = evaluate(back, *val, comm, tc.eval_batch);
    print_eval(root, "compressed (read back from the file):", sum.compressed);
    if (root && sum.original.n > 0)
      std::printf("compress: top-1 %.4f -> %.4f (%+.2f points) at %.1fx smaller\n", sum.original.top1,
                  sum.compressed.top1, 100 * (sum.compressed.top1 - sum.original.top1),
                  double(sum.fp32_bytes) / double(std::max<int64_t>(sum.file_bytes, 1)));
  }
  if (root && !c.decompressed.empty()) {
    save_weights_h5(c.decompressed, back.param_views(), spec_attrs(spec));
    std::printf("compress: wrote the decoded weights (torch-h5) to %s\n", c.decompressed.c_str());
  }
  std::fflush(stdout);
  return sum;
}

}  // namespace ft
