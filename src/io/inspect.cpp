/// @brief `info`, `eval`, `export` and `predict` helpers: what an HDF5 file holds, and the
/// /logits writer.
#include "firetrain/io/inspect.hpp"

#include <mutex>
#include <sstream>

#include "firetrain/core/error.hpp"
#include "firetrain/core/params.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/io/h5.hpp"
#include "firetrain/io/weights.hpp"
#include "firetrain/model/net.hpp"

namespace ft {

namespace {
std::string attr_or_empty(hid_t obj, const char* name) {
  return h5::has_attr(obj, name) ? h5::read_attr_string(obj, name) : std::string();
}
/// The group holding the weights: /model in a checkpoint, the root in a torch-h5 file.
const char* weights_group(hid_t f) { return h5::is_group(f, "model") ? "model" : "."; }

std::map<std::string, std::vector<int64_t>> shapes_in(hid_t f, const char* group) {
  std::map<std::string, std::vector<int64_t>> out;
  h5::Handle g = h5::group_handle(FT_H5_ID(H5Gopen2(f, group, H5P_DEFAULT)));
  for (auto& name : h5::list_datasets(g)) {
    h5::Handle d = h5::dataset_handle(h5::open_dataset(g, name));
    out[name] = h5::dataset_info(d).shape;
  }
  return out;
}
}  // namespace

std::string read_root_attr(const std::string& path, const std::string& name) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::Handle f = h5::open_file(path);
  return attr_or_empty(f, name.c_str());
}

std::map<std::string, std::vector<int64_t>> read_weight_shapes(const std::string& path) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::Handle f = h5::open_file(path);
  return shapes_in(f, weights_group(f));
}

namespace {
std::string describe_h5_impl(const std::string& path);
}  // namespace

/// HDF5 failures while reading (a corrupt or truncated file) are bad input: exit code 2.
std::string describe_h5(const std::string& path) {
  return as_input_error(path, [&] { return describe_h5_impl(path); });
}

namespace {
std::string describe_h5_impl(const std::string& path) {
  bool is_dataset = false;
  {
    std::lock_guard<std::mutex> lock(h5_mutex());
    h5::Handle f = h5::open_file(path);
    is_dataset = h5::exists(f, "images") || h5::exists(f, "labels");
  }
  std::ostringstream os;
  if (is_dataset) {
    Dataset ds = Dataset::open(path);
    os << path << ": dataset\n  images: " << ds.size() << " x " << ds.height() << "x"
       << ds.width() << "x" << ds.channels() << " (N, H, W, C)\n  classes: " << ds.num_classes()
       << "\n";
    std::vector<int64_t> counts(size_t(ds.num_classes()), 0);
    for (int64_t i = 0; i < ds.size(); ++i) counts[size_t(ds.label(i))]++;
    const auto& names = ds.class_names();
    for (int k = 0; k < ds.num_classes(); ++k)
      os << "    " << k << " " << (size_t(k) < names.size() ? names[size_t(k)] : std::string("?"))
         << ": " << counts[size_t(k)] << "\n";
    return os.str();
  }
  // The Fire modules and bypasses the weights are for (spec_from_file: the stored attributes,
  // else the tensor shapes), as the net built from them has them. Read before taking the lock
  // (spec_from_file takes it).
  std::string fire_table;
  try {
    const NetSpec spec = spec_from_file(path);
    if (spec.arch != "alexnet") {
      Net net(spec);
      std::ostringstream t;
      t << "  Fire modules (" << spec.fire.label() << "; bypass " << spec.bypass << "):\n";
      char b[200];
      for (const LayerInfo& l : net.layer_table()) {
        if (l.s1 <= 0) continue;
        std::snprintf(b, sizeof b, "    %-20s s1x1 %4d  e1x1 %4d  e3x3 %4d  bypass %s\n",
                      l.name.c_str(), l.s1, l.e1, l.e3, l.bypass.empty() ? "-" : l.bypass.c_str());
        t << b;
      }
      fire_table = t.str();
    }
  } catch (const std::exception& e) {
    fire_table = std::string("  Fire modules: not rebuilt (") + e.what() + ")\n";
  }
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::Handle f = h5::open_file(path);
  const bool ckpt = h5::is_group(f, "model");
  os << path << ": " << (ckpt ? "checkpoint" : "weights (torch-h5 layout)") << "\n";
  for (const char* a : {"arch", "bypass", "fire", "fire_meta", "build", "num_classes", "in_channels",
                        "height", "width", "step", "epoch",
                        "step_in_epoch", "steps_per_epoch", "global_batch", "total_steps",
                        "world_size", "seed", "shuffle", "format"}) {
    std::string v = attr_or_empty(f, a);
    if (!v.empty()) os << "  " << a << ": " << v << "\n";
  }
  int64_t total = 0;
  auto shapes = shapes_in(f, weights_group(f));
  for (auto& [k, s] : shapes) {
    int64_t n = 1;
    for (auto d : s) n *= d;
    total += n;
    os << "    " << k << " " << shape_str(s) << "\n";
  }
  os << "  " << shapes.size() << " tensors, " << total << " parameters\n" << fire_table;
  if (ckpt) {
    std::string cfg = attr_or_empty(f, "config");
    if (!cfg.empty()) os << "  config: " << cfg << "\n";
  }
  return os.str();
}
}  // namespace

void write_logits_h5(const std::string& path, const float* logits, int64_t n, int k) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::AtomicFile f(path);
  h5::write_dataset<float>(f, "logits", logits, {n, int64_t(k)});
  f.commit();
}

}  // namespace ft
