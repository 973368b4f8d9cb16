/// @brief Subcommands: thin wrappers that parse options and call the library.
#include "commands.hpp"

#include <dnnl.hpp>
#include <hdf5.h>
#include <mpi.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "firetrain/comm/communicator.hpp"
#include "firetrain/compress/compress.hpp"
#include "firetrain/core/build_info.hpp"
#include "firetrain/core/device.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/data/convert.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/inspect.hpp"
#include "firetrain/io/onnx.hpp"
#include "firetrain/io/weights.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/train/bench.hpp"
#include "firetrain/train/bench_comm.hpp"
#include "firetrain/train/bench_scaling.hpp"
#include "firetrain/train/options.hpp"
#include "firetrain/train/sweep.hpp"
#include "firetrain/train/trainer.hpp"

namespace ft::cli {

namespace {
bool is_root() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r == 0;
}

/// Builds the net for a dataset on `device` in `precision` and loads weights; --arch (and the
/// bypass variant) may be implied by the file.
Net net_for(const std::string& weights, std::string arch, const Dataset& ds, Device device,
            const std::string& precision) {
  // A Deep Compression file (`firetrain compress`) carries its own arch/bypass/Fire header.
  if (is_compressed_model(weights))
    return load_compressed_net(weights, arch, ds.channels(), ds.height(), ds.width(),
                               ds.num_classes(), device, precision);
  // Arch, bypass and Fire modules as stored (spec_from_file); images and classes from the
  // data (a file for other classes then fails to load, naming the key and both shapes).
  NetSpec spec = spec_from_file(weights, arch);
  spec.in_channels = ds.channels();
  spec.num_classes = ds.num_classes();
  spec.height = ds.height();
  spec.width = ds.width();
  spec.precision = precision;
  Net net(spec, device);
  load_weights_h5(weights, net.param_views());
  net.params_from_host();
  return net;
}
}  // namespace

void print_version() {
  unsigned maj, min, rel;
  H5get_libversion(&maj, &min, &rel);
  std::string b = ft::backends_summary(), indented;
  for (size_t p = 0; p < b.size();) {
    size_t e = b.find('\n', p);
    indented += "  " + b.substr(p, e - p) + "\n";
    p = e == std::string::npos ? b.size() : e + 1;
  }
  const BuildInfo& bi = build_info();
  std::printf("firetrain %s\n  build: git %s, %s, %s, %s\n%s  HDF5: %u.%u.%u\n",
              FIRETRAIN_VERSION, bi.git, bi.compiler, bi.build_type, bi.backends,
              indented.c_str(), maj, min, rel);
}

int cmd_train(int argc, char** argv) {
  TrainConfig c;
  Options o("train", "Data-parallel SGD training of SqueezeNet (mpirun -np N firetrain train ...).");
  add_train_options(o, c);
  if (!o.parse(argc, argv)) return 0;
  Communicator comm;
  adopt_checkpoint_config(o, c, comm);  // --resume: unset settings from the checkpoint
  train(c, o.to_json(), comm);
  return 0;
}

int cmd_eval(int argc, char** argv) {
  std::string weights, data, arch, device = "cpu", precision = "fp32";
  int64_t batch = 500;
  int threads = 0;
  Options o("eval", "Top-1/top-5 accuracy and mean loss of a weights file or checkpoint.");
  o.opt("weights", &weights, "torch-h5 weights, checkpoint or compressed model (firetrain compress)")
      .opt("data", &data, "dataset HDF5")
      .opt("arch", &arch, "architecture (default: stored in the file, else squeezenet_small)")
      .opt("batch", &batch, "batch size")
      .opt("threads", &threads, "threads per rank (0: cores / ranks)")
      .opt("device", &device, "cpu | cuda (each rank binds GPU local_rank % GPUs)")
      .opt("precision", &precision, "fp32 | bf16 | fp16 (fp16: CUDA only)");
  if (!o.parse(argc, argv)) return 0;
  if (weights.empty() || data.empty()) throw InputError("eval: --weights and --data are required");
  if (batch <= 0) throw InputError("eval: --batch must be > 0");
  const Device dev = parse_device(device);
  require_device(dev);
  Communicator comm;
  bind_device(dev, comm.local_rank());
  set_threads(threads, comm);
  Dataset ds = Dataset::open(data);
  Net net = net_for(weights, arch, ds, dev, precision);
  EvalResult r = evaluate(net, ds, comm, batch);
  if (comm.rank() == 0)
    std::printf("eval %s on %s: top-1 %.4f  top-5 %.4f  loss %.4f  (%lld images)\n",
                weights.c_str(), data.c_str(), r.top1, r.top5, r.loss, (long long)r.n);
  return 0;
}

int cmd_predict(int argc, char** argv) {
  std::string weights, data, out, arch, device = "cpu", precision = "fp32";
  int64_t batch = 500;
  int threads = 0;
  Options o("predict", "Writes /logits float32 (N, classes), in the order of the dataset.");
  o.opt("weights", &weights, "torch-h5 weights, checkpoint or compressed model (firetrain compress)")
      .opt("data", &data, "dataset HDF5")
      .opt("out", &out, "output HDF5 file")
      .opt("arch", &arch, "architecture (default: stored in the file, else squeezenet_small)")
      .opt("batch", &batch, "batch size")
      .opt("threads", &threads, "threads (0: all cores)")
      .opt("device", &device, "cpu | cuda")
      .opt("precision", &precision, "fp32 | bf16 | fp16 (fp16: CUDA only)");
  if (!o.parse(argc, argv)) return 0;
  if (weights.empty() || data.empty() || out.empty())
    throw InputError("predict: --weights, --data and --out are required");
  if (batch <= 0) throw InputError("predict: --batch must be > 0");
  const Device dev = parse_device(device);
  require_device(dev);
  Communicator comm;
  if (!is_root()) return 0;  // one writer
  bind_device(dev, 0);
  set_threads(threads, comm);
  Dataset ds = Dataset::open(data);
  Net net = net_for(weights, arch, ds, dev, precision);
  const int K = ds.num_classes();
  const int64_t N = ds.size(), per = int64_t(ds.height()) * ds.width() * ds.channels();
  std::vector<float> logits(size_t(N * K)), x(size_t(batch * per));
  std::vector<int64_t> idx(static_cast<size_t>(batch));
  Buffer xd(dev);  // the batch on the device (CUDA); the CPU reads x itself
  if (dev != Device::CPU) xd.resize(x.size());
  for (int64_t s = 0; s < N; s += batch) {
    const int n = int(std::min(batch, N - s));
    for (int i = 0; i < n; ++i) idx[i] = s + i;
    ds.read_images(idx.data(), n, x.data());
    PassContext ctx;
    ctx.N = n;
    const float* xin = x.data();
    if (dev != Device::CPU) {
      xd.upload(x.data(), size_t(n * per));
      xin = xd.data();
    }
    const float* y = net.forward(ctx, xin);
    detail::array_download(dev, logits.data() + s * K, y, size_t(n) * K * sizeof(float));
  }
  write_logits_h5(out, logits.data(), N, K);
  std::printf("predict: wrote /logits (%lld, %d) to %s\n", (long long)N, K, out.c_str());
  return 0;
}

int cmd_export(int argc, char** argv) {
  std::string checkpoint, out, arch = "squeezenet1_0", init = "torchvision", bypass = "none";
  std::string format = "torch-h5";
  int classes = 1000, channels = 3, size = 224;
  int64_t seed = 42, onnx_batch = 0;
  Options o("export",
            "Writes a model in the torch-h5 layout (torchvision state_dict names and shapes) or "
            "as ONNX (opset 13, input \"input\" (N, C, H, W), output \"logits\"): from "
            "--checkpoint, or freshly initialized from --arch/--num-classes/--seed.");
  o.opt("checkpoint", &checkpoint, "checkpoint or weights to export")
      .opt("out", &out, "output file (.h5, or .onnx with --format onnx)")
      .opt("format", &format, "torch-h5 | onnx")
      .opt("onnx-batch", &onnx_batch, "ONNX batch dimension: 0 symbolic (\"N\"), else fixed")
      .opt("arch", &arch, "architecture (fresh init, or to read a torch-h5 file)")
      .opt("num-classes", &classes, "classes (fresh init)")
      .opt("in-channels", &channels, "input channels (fresh init)")
      .opt("size", &size, "input size (torch-h5: only checks that the net fits it; onnx: "
                          "the input's H and W)")
      .opt("seed", &seed, "initialization seed")
      .opt("bypass", &bypass, "none | simple | complex (fresh init; read from the file otherwise)")
      .opt("init", &init, "torchvision | xavier | kaiming");
  FireMeta fire;
  add_fire_options(o, fire);  // fresh init; read from the file otherwise
  if (!o.parse(argc, argv)) return 0;
  if (out.empty()) throw InputError("export: --out is required");
  if (format != "torch-h5" && format != "onnx")
    throw InputError("export: unknown --format '" + format + "' (torch-h5, onnx)");
  if (onnx_batch < 0) throw InputError("export: --onnx-batch must be >= 0");
  if (!is_root()) return 0;
  NetSpec spec;
  spec.arch = arch;
  spec.num_classes = classes;
  spec.in_channels = channels;
  spec.height = spec.width = size;
  spec.bypass = bypass;
  spec.fire = fire;
  if (!checkpoint.empty()) {
    // Arch, bypass, Fire modules, classes and channels as stored (spec_from_file).
    spec = spec_from_file(checkpoint, o.was_set("arch") ? arch : "");
    if (o.was_set("size") || spec.height <= 0 || spec.width <= 0) spec.height = spec.width = size;
  }
  Net net(spec);
  if (checkpoint.empty())
    net.init_weights(uint64_t(seed), parse_init(init));
  else
    load_weights_h5(checkpoint, net.param_views());
  if (format == "onnx") {
    OnnxOptions oo;
    oo.batch = onnx_batch;
    save_onnx(out, net, oo);
    std::printf("export: %s, %zu parameters in %zu tensors -> %s (ONNX opset %lld, input "
                "(%s, %d, %d, %d))\n",
                spec.arch.c_str(), net.num_params(), net.param_views().size(), out.c_str(),
                (long long)kOnnxOpset,
                onnx_batch > 0 ? std::to_string(onnx_batch).c_str() : "N", spec.in_channels,
                spec.height, spec.width);
    return 0;
  }
  save_weights_h5(out, net.param_views(), spec_attrs(spec));
  std::printf("export: %s, %zu parameters in %zu tensors -> %s\n", spec.arch.c_str(),
              net.num_params(), net.param_views().size(), out.c_str());
  return 0;
}

int cmd_compress(int argc, char** argv) {
  CompressConfig c;
  TrainConfig& t = c.train;
  t.lr = 0.005;  // fine-tuning: a fraction of the training rate
  t.log_every = 50;
  t.eval_each_epoch = false;
  std::string layer_sparsity, layer_bits;
  Options o("compress",
            "Deep Compression (Han et al., ICLR 2016): magnitude pruning to --sparsity, fine-tuning\n"
            "under the mask on --data (data-parallel under mpirun, as train), k-means weight\n"
            "sharing per layer (2^--bits centroids, linear initialization), Huffman coding of the\n"
            "codebook indices and of the relative sparse indices (--gap-bits, filler zeros), biases\n"
            "in fp32 or fp16. Writes --out (read directly by eval and predict) and prints the size\n"
            "table; with --val, the accuracy before and after.");
  o.opt("weights", &c.weights, "torch-h5 weights or checkpoint (none: freshly initialized --arch)")
      .opt("out", &c.out, "compressed model file to write")
      .opt("arch", &c.arch, "architecture (default: stored in --weights; fresh: squeezenet1_0)")
      .opt("num-classes", &c.num_classes, "classes (fresh init without --data)")
      .opt("in-channels", &c.in_channels, "input channels (fresh init without --data)")
      .opt("size", &c.size, "input size (fresh init without --data)")
      .opt("bypass", &c.bypass, "none | simple | complex (fresh init)")
      .opt("init", &c.init, "torchvision | xavier | kaiming (fresh init)")
      .opt("sparsity", &c.prune.sparsity, "fraction of each weight tensor pruned (smallest |w|)")
      .opt("sparsity-mode", &c.prune.mode, "layer (each tensor) | global (one threshold)")
      .opt("layer-sparsity", &layer_sparsity, "per-layer overrides: features.0=0.3,classifier.1=0.5")
      .opt("bits", &c.quant.bits, "codebook index bits per weight tensor (2^bits centroids)")
      .opt("layer-bits", &layer_bits, "per-layer overrides: features.0=8,...")
      .opt("gap-bits", &c.quant.gap_bits, "relative sparse-index gap width (filler zeros beyond)")
      .opt("bias-bits", &c.quant.bias_bits, "32 | 16")
      .opt("kmeans-iters", &c.quant.kmeans_iters, "k-means iterations at most")
      .opt("data", &t.data, "dataset for fine-tuning under the mask")
      .opt("val", &t.val, "dataset to measure accuracy before and after")
      .opt("finetune-epochs", &t.epochs, "fine-tuning epochs under the mask")
      .opt("finetune-steps", &t.steps, "fine-tuning steps (overrides --finetune-epochs)")
      .opt("prune-stages", &c.prune_stages,
           "iterative pruning: reach --sparsity in N equal steps, fine-tuning after each")
      .opt("codebook-steps", &c.codebook_steps,
           "steps fine-tuning the shared centroids (the paper's update: a centroid's gradient is "
           "the sum of its weights' gradients; SGD with --momentum, constant lr; 0: none)")
      .opt("codebook-lr", &c.codebook_lr, "learning rate of the centroids (0: --lr)")
      .opt("batch", &t.batch, "global batch of fine-tuning")
      .opt("lr", &t.lr, "fine-tuning learning rate")
      .opt("lr-schedule", &t.lr_schedule, "poly | constant | step | cosine")
      .opt("momentum", &t.momentum, "SGD momentum")
      .opt("weight-decay", &t.weight_decay, "L2 weight decay")
      .opt("dropout", &t.dropout, "dropout before conv10 while fine-tuning")
      .opt("seed", &t.seed, "seed (fresh init, data order, dropout)")
      .opt("threads", &t.threads, "threads per rank (0: cores / ranks)")
      .opt("device", &t.device, "fine-tuning device: cpu | cuda")
      .opt("log-every", &t.log_every, "steps between logged lines")
      .opt("progress", &t.progress, "auto | live | plain")
      .opt("eval-batch", &t.eval_batch, "evaluation batch")
      .opt("decompressed", &c.decompressed, "also write the decoded weights as torch-h5");
  if (!o.parse(argc, argv)) return 0;
  c.prune.per_layer = parse_layer_values(layer_sparsity, "--layer-sparsity");
  for (auto& [k, v] : parse_layer_values(layer_bits, "--layer-bits")) c.quant.per_layer[k] = int(v);
  Communicator comm;
  run_compress(c, comm);
  return 0;
}

int cmd_convert(int argc, char** argv) {
  std::string kind, src, dst;
  int size = 224;
  Options o("convert",
            "Converts to the dataset HDF5 layout:\n"
            "  firetrain convert fashion-mnist SRC_DIR OUT_DIR   (IDX .gz files)\n"
            "  firetrain convert cifar10 SRC_DIR OUT_DIR         (binary version batches)\n"
            "  firetrain convert folder SRC_DIR OUT.h5 --size N  (one sub-folder per class)");
  o.positional("KIND", &kind, "fashion-mnist | cifar10 | folder")
      .positional("SRC", &src, "source directory")
      .positional("OUT", &dst, "output directory (or file for folder)")
      .opt("size", &size, "folder: output image size");
  if (!o.parse(argc, argv)) return 0;
  if (!is_root()) return 0;
  if (kind == "fashion-mnist")
    convert_fashion_mnist(src, dst);
  else if (kind == "cifar10")
    convert_cifar10(src, dst);
  else if (kind == "folder")
    convert_folder(src, dst, size);
  else
    throw InputError("convert: unknown kind '" + kind + "' (fashion-mnist, cifar10, folder)");
  std::printf("convert: %s %s -> %s done\n", kind.c_str(), src.c_str(), dst.c_str());
  return 0;
}

int cmd_info(int argc, char** argv) {
  std::string file, arch;
  int classes = 1000, channels = 3, size = 224;
  NetSpec spec;
  Options o("info", "What a dataset, weights file or checkpoint holds; or, with --arch, the "
                    "layer table (output shape, parameters, MACs) of an architecture.");
  o.positional("FILE", &file, "dataset / weights / checkpoint .h5", false)
      .opt("arch", &arch, "print this architecture's layer table")
      .opt("num-classes", &classes, "classes for --arch")
      .opt("in-channels", &channels, "input channels for --arch")
      .opt("size", &size, "input size for --arch")
      .opt("bypass", &spec.bypass, "bypass variant for --arch: none | simple | complex");
  add_fire_options(o, spec.fire);
  if (!o.parse(argc, argv)) return 0;
  if (!is_root()) return 0;
  if (!arch.empty()) {
    spec.arch = arch;
    spec.num_classes = classes;
    spec.in_channels = channels;
    spec.height = spec.width = size;
    Net net(spec);
    std::printf("%s at %dx%dx%d, %d classes, bypass %s, Fire modules: %s\n", arch.c_str(), size,
                size, channels, classes, spec.bypass.c_str(), spec.fire.label().c_str());
    std::printf("%-28s %16s %6s %6s %6s %9s %12s %14s\n", "layer", "output (HxWxC)", "s1x1",
                "e1x1", "e3x3", "bypass", "params", "MACs");
    int64_t p = 0, m = 0;
    for (auto& l : net.layer_table()) {
      char shape[64], f[3][16] = {"", "", ""};
      std::snprintf(shape, sizeof shape, "%dx%dx%d", l.H, l.W, l.C);
      if (l.s1 > 0)
        for (int k = 0; k < 3; ++k)
          std::snprintf(f[k], sizeof f[k], "%d", k == 0 ? l.s1 : k == 1 ? l.e1 : l.e3);
      std::printf("%-28s %16s %6s %6s %6s %9s %12lld %14lld\n", l.name.c_str(), shape, f[0], f[1],
                  f[2], l.bypass.c_str(), (long long)l.params, (long long)l.macs);
      p += l.params;
      m += l.macs;
    }
    std::printf("%-28s %16s %6s %6s %6s %9s %12lld %14lld  (%.3f GMAC, %.2f MB fp32)\n", "total",
                "", "", "", "", "", (long long)p, (long long)m, m / 1e9, p * 4 / 1e6);
    return 0;
  }
  if (file.empty()) throw InputError("info: give a FILE or --arch");
  if (is_compressed_model(file)) {
    std::printf("%s", describe_compressed(file).c_str());
    return 0;
  }
  std::printf("%s", describe_h5(file).c_str());
  return 0;
}

int cmd_sweep(int argc, char** argv) {
  SweepConfig c;
  Options o("sweep",
            "Trains each SqueezeNet variant (the product of the comma-separated lists, e.g.\n"
            "--sr 0.125,0.25,0.5,0.75,1.0 or --pct3x3 0.01,0.25,0.5,0.75,0.99, the other\n"
            "metaparameters at their defaults) for the same budget (data-parallel under mpirun),\n"
            "evaluates it on --val and prints variant, parameters, model size and top-1; --out\n"
            "writes the table as CSV and --plot an SVG of top-1 against model size (the shape\n"
            "of the paper's Figure 2).");
  add_sweep_options(o, c);
  if (!o.parse(argc, argv)) return 0;
  Communicator comm;
  run_sweep(c, comm);
  return 0;
}

int cmd_bench_comm(int argc, char** argv) {
  std::string what, models, out, device = "cpu", dtypes = "fp32";
  int repeats = 20, warmup = 3, bucket_kb = 1024, threads = 0;
  Options o("bench comm",
            "firetrain bench comm: all-reduce of the real gradient arenas of squeezenet1_0,\n"
            "squeezenet1_1 and alexnet (and of resnet50/vgg16-sized arenas) across the ranks it\n"
            "is launched with (mpirun -np N), through the trainer's bucketed reducer and as one\n"
            "plain all-reduce; nccl-tests-style table; exit 1 if any value is wrong.");
  o.positional("WHAT", &what, "comm")
      .opt("models", &models, "comma-separated subset (default: all)")
      .opt("repeats", &repeats, "timed repeats per model and variant")
      .opt("warmup", &warmup, "untimed repeats first")
      .opt("bucket-kb", &bucket_kb, "reducer bucket size (KiB), as train --bucket-kb")
      .opt("device", &device, "cpu (MPI) | cuda (NCCL)")
      .opt("grad-comm-dtype", &dtypes,
           "what travels, as train --grad-comm-dtype: fp32 | bf16 | fp16, or a comma-separated "
           "list (e.g. fp32,bf16: each model and variant runs with each, adjacent)")
      .opt("threads", &threads,
           "threads per rank for the 16-bit conversions and checks, as train --threads (0: "
           "this node's cores / its ranks; more than that oversubscribes the cores)")
      .opt("out", &out, "also write the rows to a .csv or .jsonl file");
  if (!o.parse(argc, argv)) return 0;
  CommBenchOptions bo;
  bo.dtypes.clear();
  for (size_t p = 0; p <= dtypes.size();) {
    size_t e = dtypes.find(',', p);
    if (e == std::string::npos) e = dtypes.size();
    bo.dtypes.push_back(parse_comm_dtype(dtypes.substr(p, e - p)));  // exit 2 if unknown
    p = e + 1;
  }
  for (size_t p = 0; !models.empty() && p <= models.size();) {
    size_t e = models.find(',', p);
    if (e == std::string::npos) e = models.size();
    if (e > p) bo.models.push_back(models.substr(p, e - p));
    p = e + 1;
  }
  if (repeats < 1 || warmup < 0 || bucket_kb < 1)
    throw InputError("bench comm: --repeats and --bucket-kb must be >= 1, --warmup >= 0");
  bo.repeats = repeats;
  bo.warmup = warmup;
  bo.bucket_bytes = size_t(bucket_kb) * 1024;
  bo.device = parse_device(device);
  Communicator comm;
  set_threads(threads, comm);  // OpenMP's default (all cores per rank) oversubscribes: 2 ranks
                               // on 2 cores made the bf16 conversions 40x slower (measured)
  bind_device(bo.device, comm.local_rank());
  auto rows = bench_comm(comm, bo);
  int64_t wrong = 0;
  for (auto& r : rows) wrong += r.wrong;
  if (comm.rank() == 0) {
    std::printf("# firetrain bench comm: %d rank(s), %s, %d repeats after %d warm-up, fp32 "
                "gradients sent as %s, bucket %d KiB\n# time = max over ranks per repeat (16-bit: "
                "conversions included; conv_ms = their share on rank 0); bytes = sent per rank; "
                "algbw = bytes / time; busbw = algbw * 2(n-1)/n\n",
                comm.size(), bo.device == Device::CUDA ? "NCCL" : "MPI", repeats, warmup,
                dtypes.c_str(), bucket_kb);
    std::fputs(format_comm_table(rows).c_str(), stdout);
    if (!out.empty()) write_comm_rows(out, rows);
  }
  if (wrong) throw Error("bench comm: " + std::to_string(wrong) + " wrong values after all-reduce");
  return 0;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> v;
  for (size_t p = 0; !s.empty() && p <= s.size();) {
    size_t e = s.find(',', p);
    if (e == std::string::npos) e = s.size();
    if (e > p) v.push_back(s.substr(p, e - p));
    p = e + 1;
  }
  return v;
}

int cmd_bench_scaling(int argc, char** argv) {
  std::string what, models = "squeezenet1_0,alexnet", device = "cpu", compute_ms, plot,
                    links = "";
  int batch = 8, size = 224, steps = 5, warmup = 1, threads = 1, fit_repeats = 3;
  double overlap = 0, fit_max_mb = 64;
  bool project_only = false;
  Options o("bench scaling",
            "firetrain bench scaling: weak scaling of SqueezeNet 1.0 vs AlexNet. Under mpirun -np\n"
            "N it trains each model on synthetic data at 1, 2, 4, ... N ranks (fixed batch per\n"
            "rank) and reports compute and exposed communication per step; fits the alpha-beta\n"
            "model to this machine's all-reduce; projects weak-scaling efficiency to 8..1024\n"
            "workers on named links (ring all-reduce) and writes the plot (--plot, SVG).");
  o.positional("WHAT", &what, "scaling")
      .opt("models", &models, "comma-separated models")
      .opt("batch", &batch, "images per rank per step")
      .opt("size", &size, "image size")
      .opt("steps", &steps, "timed steps")
      .opt("warmup", &warmup, "untimed steps first")
      .opt("threads", &threads, "threads per rank")
      .opt("device", &device, "cpu | cuda")
      .opt("compute-ms", &compute_ms,
           "per-worker compute per step for the projection: X (all models) or model=X,...; "
           "default: measured at 1 rank")
      .opt("overlap", &overlap, "fraction of the all-reduce hidden behind backward (0..1)")
      .opt("fit-max-mb", &fit_max_mb, "largest all-reduce timed for the fit (MB)")
      .opt("fit-repeats", &fit_repeats, "repeats per size for the fit")
      .opt("links", &links, "comma-separated link names (default: all named links)")
      .opt("plot", &plot, "SVG file for the projection (default bench-scaling.svg)")
      .flag("project-only", &project_only,
            "no measurement: project from --compute-ms (required) and the models' sizes");
  if (!o.parse(argc, argv)) return 0;
  if (batch < 1 || size < 1 || steps < 1 || warmup < 0 || threads < 1 || fit_repeats < 1)
    throw InputError("bench scaling: --batch, --size, --steps, --threads, --fit-repeats must be "
                     ">= 1");
  if (plot.empty()) plot = "bench-scaling.svg";
  ScalingBenchOptions so;
  so.models = split_commas(models);
  so.batch = batch, so.size = size, so.steps = steps, so.warmup = warmup, so.threads = threads;
  so.device = parse_device(device);
  // Validate the projection inputs before the long measurement.
  std::vector<Link> lk;
  if (links.empty())
    lk = named_links();
  else
    for (auto& n : split_commas(links)) lk.push_back(find_link(n));
  std::map<std::string, double> given;
  for (auto& kv : split_commas(compute_ms)) {
    const size_t eq = kv.find('=');
    const std::string name = eq == std::string::npos ? "*" : kv.substr(0, eq);
    char* end = nullptr;
    const std::string num = eq == std::string::npos ? kv : kv.substr(eq + 1);
    const double v = std::strtod(num.c_str(), &end);
    if (!(v > 0) || end == num.c_str() || *end)
      throw InputError("bench scaling: bad --compute-ms '" + kv + "' (X or model=X, X > 0)");
    given[name] = v / 1e3;
  }
  Communicator comm;
  std::vector<MeasuredScaling> rows;
  std::vector<std::pair<double, double>> pts;
  AlphaBeta ab{0, 0, 0};
  if (project_only) {
    for (auto& m : so.models) {
      if (!given.count(m) && !given.count("*"))
        throw InputError("bench scaling --project-only: give --compute-ms for " + m);
      NetSpec spec;
      spec.arch = m;
      spec.height = spec.width = size;
      MeasuredScaling r;
      r.model = m;
      r.ranks = 1;
      r.params = count_params(spec);
      r.bytes = r.params * 4;
      rows.push_back(r);
    }
  } else {
    bind_device(so.device, comm.local_rank());
    rows = measure_scaling(comm, so);
    if (comm.size() >= 2) ab = fit_this_machine(comm, fit_max_mb * 1e6, fit_repeats, &pts);
  }
  if (comm.rank() != 0) return 0;
  if (project_only)
    std::printf("# firetrain bench scaling --project-only: alpha-beta model, no measurement\n");
  else
    std::printf("# firetrain bench scaling: %s, batch %d per rank, %dx%d, %d thread(s) per rank, "
                "median of %d steps\n",
                device_name(so.device), batch, size, size, threads, steps);
  if (!project_only) {
    std::fputs(format_measured_table(rows).c_str(), stdout);
    std::printf("# efficiency = img/s / (ranks x img/s at 1 rank); exposed = waiting for the "
                "all-reduce after backward\n");
  }
  if (comm.size() >= 2) {
    std::printf("\n# all-reduce of this machine (trainer's reducer, %d ranks), ring model fit:\n",
                comm.size());
    std::printf("# %12s %12s %12s\n", "bytes", "measured_ms", "model_ms");
    for (auto& [b, t] : pts)
      std::printf("  %12.0f %12.3f %12.3f\n", b, t * 1e3,
                  allreduce_time(b, comm.size(), std::max(ab.alpha_s, 0.0),
                                 std::max(ab.beta_s_per_byte, 0.0), Algo::Ring) * 1e3);
    std::printf("# alpha = %.2f us, busbw = 1/beta = %.2f GB/s, r2 = %.4f\n", ab.alpha_s * 1e6,
                ab.beta_s_per_byte > 0 ? 1e-9 / ab.beta_s_per_byte : 0.0, ab.r2);
    if (ab.alpha_s >= 0 && ab.beta_s_per_byte > 0)
      lk.push_back(Link{"this machine (fit)", 1.0 / ab.beta_s_per_byte, ab.alpha_s});
  }
  std::vector<ScalingRow> proj;
  for (auto& m : so.models) {
    const MeasuredScaling* one = nullptr;
    for (auto& r : rows)
      if (r.model == m && r.ranks == 1) one = &r;
    double compute = one ? one->compute_s : 0;
    if (given.count(m)) compute = given[m];
    else if (given.count("*")) compute = given["*"];
    const double bytes = one ? double(one->bytes) : 0;
    std::printf("\n# projection for %s: %.0f gradient bytes, compute %.1f ms per step (%s), "
                "overlap %.2f, ring all-reduce\n",
                m.c_str(), bytes, compute * 1e3,
                given.count(m) || given.count("*") ? "given" : "measured at 1 rank", overlap);
    std::vector<ScalingRow> mine;
    for (auto& l : lk) {
      auto r = project_scaling(m, bytes, compute, l, default_worker_counts(), Algo::Ring, overlap);
      mine.insert(mine.end(), r.begin(), r.end());
    }
    std::fputs(format_scaling_table(mine).c_str(), stdout);
    proj.insert(proj.end(), mine.begin(), mine.end());
  }
  SvgPlotOptions po;
  po.title = "Projected weak-scaling efficiency (ring all-reduce, alpha-beta model)";
  std::ofstream f(plot);
  f << render_svg_plot(proj, po);
  if (!f) throw InputError("bench scaling: cannot write --plot " + plot);
  std::printf("\n# plot: %s\n", plot.c_str());
  return 0;
}

int cmd_bench_layers(int argc, char** argv) {
  std::string what, arch = "squeezenet1_0", out, precision = "fp32", device = "cpu";
  int batch = 32, size = 224, threads = 2, steps = 5, warmup = 1, classes = 1000, channels = 3;
  Options o("bench layers",
            "Per-layer forward and backward time of training steps on synthetic data (one\n"
            "process), with GFLOP/s; on the CPU also the percentage of this machine's fp32\n"
            "peak, measured by an FMA loop with the same threads: the roofline's ceiling.\n"
            "--device cuda: each layer's time includes launching its kernels (the device is\n"
            "waited for after every layer); no % of peak.");
  o.positional("WHAT", &what, "layers")
      .opt("arch", &arch, "architecture")
      .opt("batch", &batch, "batch size")
      .opt("size", &size, "image size")
      .opt("channels", &channels, "input channels")
      .opt("classes", &classes, "classes")
      .opt("threads", &threads, "threads")
      .opt("steps", &steps, "timed steps (medians)")
      .opt("warmup", &warmup, "untimed steps first")
      .opt("device", &device, "cpu | cuda")
      .opt("out", &out, "also write the rows as CSV")
      .opt("precision", &precision,
           "fp32 | bf16 | fp16 (fp16: CUDA only; convolutions; % of peak stays the fp32 peak)");
  if (!o.parse(argc, argv)) return 0;
  if (batch <= 0 || size <= 0 || threads <= 0 || steps <= 0 || warmup < 0)
    throw InputError("bench layers: --batch, --size, --threads, --steps must be > 0");
  const Device dev = parse_device(device);
  if (!is_root()) return 0;
  // The CPU's roofline ceiling; none on the GPU (0: the % columns say n/a).
  const double peak = dev == Device::CPU ? measure_fp32_peak_gflops(threads) : 0.0;
  LayerBenchResult r =
      bench_layers(arch, batch, size, channels, classes, threads, steps, warmup, precision, dev);
  std::printf("# firetrain bench layers: %s, %s %s, batch %d, %dx%d, %d thread(s), median of "
              "%d steps\n",
              arch.c_str(), r.device.c_str(), precision.c_str(), batch, size, size, threads, steps);
  if (peak > 0)
    std::printf("# fp32 peak measured (FMA loop, %d thread(s)): %.1f GFLOP/s\n", threads, peak);
  std::printf("# %-26s %14s %9s %9s %8s %8s %6s %9s %8s %8s %6s\n", "layer", "out (HxWxC)",
              "params", "fwd_GFLOP", "fwd_ms", "GFLOP/s", "%peak", "bwd_GFLOP", "bwd_ms",
              "GFLOP/s", "%peak");
  std::FILE* csv = nullptr;
  if (!out.empty()) {
    csv = std::fopen(out.c_str(), "w");
    if (!csv) throw InputError("bench layers: cannot write " + out + ": " + std::strerror(errno));
    std::fprintf(csv, "arch,device,precision,batch,size,threads,layer,H,W,C,params,fwd_gflop,"
                      "fwd_ms,bwd_gflop,bwd_ms,peak_gflops\n");
  }
  auto pct = [peak](double rate) {
    char b[16];
    if (peak > 0)
      std::snprintf(b, sizeof b, "%.1f", 100 * rate / peak);
    else
      std::snprintf(b, sizeof b, "n/a");
    return std::string(b);
  };
  double tf = 0, tb = 0, gf = 0, gb = 0;
  for (const auto& w : r.rows) {
    auto rate = [](double gflop, double ms) { return ms > 0 ? gflop / (ms / 1e3) : 0.0; };
    const double rf = rate(w.fwd_gflop, w.fwd_ms), rb = rate(w.bwd_gflop, w.bwd_ms);
    char shape[32];
    std::snprintf(shape, sizeof shape, "%dx%dx%d", w.H, w.W, w.C);
    std::printf("  %-26s %14s %9lld %9.3f %8.2f %8.1f %6s %9.3f %8.2f %8.1f %6s\n",
                w.name.c_str(), shape, (long long)w.params, w.fwd_gflop, w.fwd_ms, rf,
                pct(rf).c_str(), w.bwd_gflop, w.bwd_ms, rb, pct(rb).c_str());
    if (csv)
      std::fprintf(csv, "%s,%s,%s,%d,%d,%d,\"%s\",%d,%d,%d,%lld,%.6f,%.4f,%.6f,%.4f,%.2f\n",
                   arch.c_str(), r.device.c_str(), precision.c_str(), batch, size, threads,
                   w.name.c_str(), w.H, w.W, w.C, (long long)w.params, w.fwd_gflop, w.fwd_ms,
                   w.bwd_gflop, w.bwd_ms, peak);
    tf += w.fwd_ms, tb += w.bwd_ms, gf += w.fwd_gflop, gb += w.bwd_gflop;
  }
  if (csv) std::fclose(csv);
  std::printf("  %-26s %14s %9s %9.3f %8.2f %8.1f %6s %9.3f %8.2f %8.1f %6s\n", "total", "", "",
              gf, tf, gf / (tf / 1e3), pct(gf / (tf / 1e3)).c_str(), gb, tb, gb / (tb / 1e3),
              pct(gb / (tb / 1e3)).c_str());
  const double step_rate = (gf + gb) / (r.step_ms / 1e3);
  std::printf("# whole step without profiling (forward+loss+backward+SGD): %.1f ms = %.1f img/s, "
              "%.1f GFLOP/s%s%s%s; layers sum to %.1f ms with a sync after each\n",
              r.step_ms, batch / (r.step_ms / 1e3), step_rate, peak > 0 ? " = " : "",
              peak > 0 ? pct(step_rate).c_str() : "", peak > 0 ? "% of peak" : "", tf + tb);
  return 0;
}

int cmd_bench_loader(int argc, char** argv) {
  std::string what, data, arch = "squeezenet_small";
  int64_t batch = 64, steps = 300;
  int threads = 1;
  bool no_augment = false;
  Options o("bench loader",
            "The input pipeline alone (read, crop, flip, normalize, prefetch) against what the\n"
            "trainer consumes: images/s of this rank's shard under mpirun, then one training\n"
            "step of --arch at the dataset's shape timed by `bench step` (--threads), and the\n"
            "ratio. The loader must not be the bottleneck (goal: >= 5x).");
  o.positional("WHAT", &what, "loader")
      .opt("data", &data, "dataset HDF5")
      .opt("batch", &batch, "global batch")
      .opt("steps", &steps, "batches to time")
      .opt("arch", &arch, "architecture the trainer runs (for its images/s)")
      .opt("threads", &threads, "trainer threads per rank")
      .flag("no-augment", &no_augment, "no crop/flip");
  if (!o.parse(argc, argv)) return 0;
  if (data.empty()) throw InputError("bench loader: --data is required");
  if (batch <= 0 || steps <= 0 || threads <= 0)
    throw InputError("bench loader: --batch, --steps, --threads must be > 0");
  Communicator comm;
  if (batch % comm.size() != 0)
    throw InputError("bench loader: --batch must be divisible by the number of ranks");
  LoaderBenchResult l =
      bench_loader(data, batch, comm.rank(), comm.size(), steps, !no_augment, 4LL << 30);
  double worst = l.images_per_s;
  FT_MPI(MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_DOUBLE, MPI_MIN, comm.comm()));
  if (comm.rank() != 0) return 0;
  Dataset ds = Dataset::open(data, 0);
  StepBenchResult t = bench_step(arch, int(batch / comm.size()), ds.height(), ds.channels(),
                                 ds.num_classes(), threads, 10, 2);
  std::printf("# firetrain bench loader: %s, global batch %lld, %d rank(s), augment %s\n",
              data.c_str(), (long long)batch, comm.size(), no_augment ? "off" : "on");
  std::printf("# %-12s %12s %14s %16s %8s\n", "", "loader img/s", "trainer img/s",
              "(arch, threads)", "ratio");
  std::printf("  %-12s %12.0f %14.0f %16s %8.1f\n", "per rank", worst, t.images_per_s,
              (arch + ", " + std::to_string(threads)).c_str(), worst / t.images_per_s);
  std::printf("# loader: slowest rank over %lld batches; trainer: bench step at batch %lld, "
              "%dx%dx%d; ratio = loader / trainer (goal >= 5)\n",
              (long long)steps, (long long)(batch / comm.size()), ds.height(), ds.width(),
              ds.channels());
  return 0;
}

int cmd_bench(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "comm") return cmd_bench_comm(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "loader") return cmd_bench_loader(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "layers") return cmd_bench_layers(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "scaling") return cmd_bench_scaling(argc, argv);
  std::string what, arch = "squeezenet1_0", device = "cpu", precision = "fp32";
  int batch = 32, size = 224, threads = 2, steps = 10, warmup = 2, classes = 1000, channels = 3;
  Options o("bench", "firetrain bench step: training throughput (images/s) on synthetic data,\n"
                     "one process; prints a table with the median over --steps after --warmup.\n"
                     "firetrain bench comm --help, firetrain bench scaling --help: communication;\n"
                     "firetrain bench layers --help: per-layer times and % of peak.");
  o.positional("WHAT", &what, "step | comm")
      .opt("arch", &arch, "architecture")
      .opt("batch", &batch, "batch size")
      .opt("size", &size, "image size")
      .opt("channels", &channels, "input channels")
      .opt("classes", &classes, "classes")
      .opt("threads", &threads, "threads")
      .opt("steps", &steps, "timed steps")
      .opt("warmup", &warmup, "untimed steps first")
      .opt("device", &device, "cpu | cuda")
      .opt("precision", &precision, "fp32 | bf16 | fp16 (activations and convolutions; fp16: CUDA only)");
  if (!o.parse(argc, argv)) return 0;
  const Device dev = parse_device(device);
  require_device(dev);
  if (what != "step") throw InputError("bench: unknown benchmark '" + what + "' (step)");
  if (batch <= 0 || size <= 0 || threads <= 0 || steps <= 0 || warmup < 0)
    throw InputError("bench: --batch, --size, --threads, --steps must be > 0");
  if (!is_root()) return 0;
  bind_device(dev, 0);
  StepBenchResult r =
      bench_step(arch, batch, size, channels, classes, threads, steps, warmup, dev, precision);
  std::printf("# firetrain bench step (%s, %s, synthetic data, forward+loss+backward+SGD)\n",
              precision.c_str(), device_name(dev));
  std::printf("# %-16s %6s %5s %7s %10s %10s %10s %10s %9s %9s %9s\n", "arch", "batch", "size",
              "threads", "median_ms", "p90_ms", "img/s", "fwd_ms", "bwd_ms", "sgd_ms", "rss_MB");
  std::printf("  %-16s %6d %5d %7d %10.1f %10.1f %10.1f %10.1f %9.1f %9.2f %9.0f\n",
              r.arch.c_str(), r.batch, r.size, r.threads, r.median_ms, r.p90_ms, r.images_per_s,
              r.fwd_ms, r.bwd_ms, r.sgd_ms, r.peak_rss_mb);
  return 0;
}

}  // namespace ft::cli
