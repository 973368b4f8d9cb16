/// @brief torch-h5 weights and checkpoints: validated loading (all checks before any write) and
/// atomic saving.
#include "firetrain/io/weights.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <set>

#include "firetrain/core/error.hpp"
#include "firetrain/io/h5.hpp"
#include "firetrain/io/inspect.hpp"
#include "firetrain/io/sandbox.hpp"

namespace ft {

namespace {

void check_unique_names(const std::vector<ParamView>& params) {
  std::set<std::string> seen;
  for (auto& p : params)
    FT_REQUIRE(seen.insert(p.name).second, "duplicate parameter name " + p.name);
}

/// Writes one float32 dataset per parameter under `loc`, read from `base + offset` when base is
/// given (the momentum arena), else from p.data.
void write_params(hid_t loc, const std::vector<ParamView>& params, const float* base,
                  size_t arena_size) {
  for (auto& p : params) {
    const float* src = p.data;
    if (base) {
      FT_REQUIRE(p.offset + p.numel() <= arena_size,
                 "parameter " + p.name + " lies outside the momentum arena");
      src = base + p.offset;
    }
    h5::write_dataset<float>(loc, p.name, src, p.shape);
  }
}

std::string join(const std::vector<std::string>& v, size_t max_items = 8) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < max_items; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > max_items) s += ", ... (" + std::to_string(v.size()) + " in all)";
  return s;
}

/// Validates that group `group` of `f` holds exactly the params (names, shapes, float dtype),
/// then reads them into dst(p) (caller holds the h5 lock). `where` prefixes messages.
template <class Dst>
void read_params(hid_t f, const std::string& group, const std::string& where,
                 const std::vector<ParamView>& params, Dst dst) {
  std::vector<std::string> names = h5::list_datasets(f, group);
  std::set<std::string> in_file(names.begin(), names.end()), wanted;
  std::vector<std::string> missing, extra;
  for (auto& p : params) {
    wanted.insert(p.name);
    if (!in_file.count(p.name)) missing.push_back(p.name);
  }
  for (auto& n : names)
    if (!wanted.count(n)) extra.push_back(n);
  if (missing.size() == 1)
    throw InputError(where + ": missing key '" + missing[0] + "' (expected shape " +
                     shape_str(std::find_if(params.begin(), params.end(),
                                            [&](const ParamView& p) {
                                              return p.name == missing[0];
                                            })->shape) +
                     ")");
  if (!missing.empty())
    throw InputError(where + ": " + std::to_string(missing.size()) + " missing keys: " +
                     join(missing));
  if (!extra.empty())
    throw InputError(where + ": unexpected extra keys (not parameters of this model): " +
                     join(extra));
  h5::Handle g = h5::group_handle(FT_H5_ID(H5Gopen2(f, group.c_str(), H5P_DEFAULT)));
  for (auto& p : params) {
    h5::Handle d = h5::dataset_handle(h5::open_dataset(g, p.name));
    h5::DatasetInfo info = h5::dataset_info(d);
    if (info.cls != H5T_FLOAT || (info.type_size != 4 && info.type_size != 8))
      throw InputError(where + ": key '" + p.name + "': dtype " + info.dtype() +
                       ", expected float32 (or float64)");
    if (info.shape != p.shape)
      throw InputError(where + ": key '" + p.name + "': expected shape " + shape_str(p.shape) +
                       ", found " + shape_str(info.shape));
  }
  for (auto& p : params) {
    h5::Handle d = h5::dataset_handle(h5::open_dataset(g, p.name));
    float* out = dst(p);
    h5::read_all(d, H5T_NATIVE_FLOAT, out);
    const size_t n = p.numel();
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite(out[i]))
        throw InputError(where + ": key '" + p.name + "': non-finite value (NaN or Inf) at element " +
                         std::to_string(i));
  }
}

/// FNV-1a 64 of the tensors at src(p), in name order (the order of the file, whatever the
/// order of the model's parameter list).
template <class Src>
uint64_t hash_params(const std::vector<ParamView>& params, Src src) {
  std::vector<const ParamView*> sorted;
  for (auto& p : params) sorted.push_back(&p);
  std::sort(sorted.begin(), sorted.end(),
            [](const ParamView* a, const ParamView* b) { return a->name < b->name; });
  uint64_t h = kFnvOffset;
  for (const ParamView* p : sorted) h = fnv1a64(src(*p), p->numel() * sizeof(float), h);
  return h;
}

std::string hex64(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "%016llx", (unsigned long long)v);
  return b;
}

/// Compares a stored checksum attribute (if present) with the hash of what was read.
void verify_checksum(hid_t f, const char* attr, uint64_t got, const std::string& path,
                     const char* what) {
  if (!h5::has_attr(f, attr)) return;  // written before checksums existed
  const uint64_t want = h5::read_attr_u64(f, attr);
  if (want != got)
    throw InputError(path + ": checksum mismatch in " + what + " (stored " + hex64(want) +
                     ", computed " + hex64(got) + "): the checkpoint is corrupt");
}

bool has_model_group(hid_t f) { return h5::is_group(f, "model"); }

void require_complete(hid_t f, const std::string& path) {
  if (!h5::has_attr(f, "complete") || h5::read_attr_int64(f, "complete") != 1)
    throw InputError(path + ": incomplete checkpoint (no 'complete' attribute); the write was "
                            "interrupted or the file is not a firetrain checkpoint");
}

}  // namespace

void save_weights_h5(const std::string& path, const std::vector<ParamView>& params,
                     const std::map<std::string, std::string>& attrs) {
  check_unique_names(params);
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::AtomicFile f(path);
  write_params(f, params, nullptr, 0);
  for (auto& [k, v] : attrs) h5::write_attr(f, k, v);
  f.commit();
}

uint64_t fnv1a64(const void* data, size_t bytes, uint64_t h) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

namespace {
/// What the probe of a weights/checkpoint load reads depends on the model's names and shapes.
std::string params_kind(const char* what, const std::vector<ParamView>& params) {
  std::string sig;
  for (auto& p : params) sig += p.name + shape_str(p.shape) + ";";
  return std::string(what) + ":" + hex64(fnv1a64(sig.data(), sig.size(), kFnvOffset));
}

void load_weights_unchecked(const std::string& path, const std::vector<ParamView>& params) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  as_input_error(path, [&] {
    h5::Handle f = h5::open_file(path);
    auto dst = [](const ParamView& p) { return p.data; };
    if (has_model_group(f)) {
      require_complete(f, path);
      read_params(f, "model", path + ": /model", params, dst);
      verify_checksum(f, "checksum_model", hash_params(params, dst), path, "/model");
    } else {
      read_params(f, "/", path, params, dst);
    }
  });
}

CheckpointState load_checkpoint_unchecked(const std::string& path,
                                          const std::vector<ParamView>& params, float* momentum);
}  // namespace

// The loads run first in a child process (sandbox.hpp), writing into the child's copy of the
// model: whatever libhdf5 does wrong on a hostile file happens there; errors come back as the
// same InputError.
void load_weights_h5(const std::string& path, const std::vector<ParamView>& params) {
  sandbox::check(path, params_kind("weights", params), [&] { load_weights_unchecked(path, params); });
  load_weights_unchecked(path, params);
}

CheckpointState load_checkpoint(const std::string& path, const std::vector<ParamView>& params,
                                float* momentum) {
  sandbox::check(path, params_kind(momentum ? "checkpoint+momentum" : "checkpoint", params),
                 [&] { load_checkpoint_unchecked(path, params, momentum); });
  return load_checkpoint_unchecked(path, params, momentum);
}

void save_checkpoint(const std::string& path, const std::vector<ParamView>& params,
                     const float* momentum, size_t arena_size, const CheckpointState& st) {
  check_unique_names(params);
  FT_REQUIRE(momentum != nullptr, "save_checkpoint needs the momentum arena");
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::AtomicFile f(path);
  {
    h5::Handle model = h5::create_group(f, "model");
    write_params(model, params, nullptr, 0);
    h5::Handle mom = h5::create_group(f, "optimizer/momentum");
    write_params(mom, params, momentum, arena_size);
  }
  h5::write_attr(f, "step", st.step);
  h5::write_attr(f, "epoch", st.epoch);
  h5::write_attr(f, "step_in_epoch", st.step_in_epoch);
  h5::write_attr(f, "steps_per_epoch", st.steps_per_epoch);
  h5::write_attr(f, "global_batch", st.global_batch);
  h5::write_attr(f, "dataset_size", st.dataset_size);
  h5::write_attr(f, "total_steps", st.total_steps);
  h5::write_attr(f, "world_size", int64_t(st.world_size));
  h5::write_attr_u64(f, "seed", st.seed);
  h5::write_attr(f, "shuffle", int64_t(st.shuffle ? 1 : 0));
  h5::write_attr(f, "rng", "counter-based: dropout keyed by (seed, step, sample), augmentation "
                           "by (seed, epoch, sample), shuffle by (seed, epoch)");
  h5::write_attr_u64(f, "checksum_model",
                     hash_params(params, [](const ParamView& p) { return p.data; }));
  h5::write_attr_u64(f, "checksum_momentum", hash_params(params, [momentum](const ParamView& p) {
                       return momentum + p.offset;
                     }));
  h5::write_attr(f, "arch", st.arch);
  h5::write_attr(f, "bypass", st.bypass);
  h5::write_attr(f, "config", st.config_json);
  if (st.has_loss_scale) {
    h5::write_attr(f, "loss_scale", st.loss_scale);
    h5::write_attr(f, "loss_scale_good_steps", st.loss_scale_good_steps);
    h5::write_attr(f, "loss_scale_skipped", st.loss_scale_skipped);
  }
  for (auto& [k, v] : st.spec_attrs)
    if (k != "arch" && k != "bypass") h5::write_attr(f, k, v);  // those two: from st
  h5::write_attr(f, "format", std::string(kCheckpointFormat));
  h5::write_attr(f, "complete", int64_t(1));  // last: its presence means the rest is there
  f.commit();
}

namespace {
CheckpointState load_checkpoint_unchecked(const std::string& path,
                                          const std::vector<ParamView>& params, float* momentum) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  return as_input_error(path, [&] {
    h5::Handle f = h5::open_file(path);
    if (!has_model_group(f))
      throw InputError(path + ": not a checkpoint (no /model group; a plain weights file?)");
    require_complete(f, path);
    if (h5::has_attr(f, "format")) {
      std::string fmt = h5::read_attr_string(f, "format");
      if (fmt != kCheckpointFormat)
        throw InputError(path + ": checkpoint format '" + fmt + "', this build reads '" +
                         kCheckpointFormat + "'");
    }
    auto wdst = [](const ParamView& p) { return p.data; };
    read_params(f, "model", path + ": /model", params, wdst);
    verify_checksum(f, "checksum_model", hash_params(params, wdst), path, "/model");
    if (momentum) {
      if (!h5::is_group(f, "optimizer/momentum"))
        throw InputError(path + ": checkpoint has no /optimizer/momentum group");
      auto mdst = [momentum](const ParamView& p) { return momentum + p.offset; };
      read_params(f, "optimizer/momentum", path + ": /optimizer/momentum", params, mdst);
      verify_checksum(f, "checksum_momentum", hash_params(params, mdst), path,
                      "/optimizer/momentum");
    }
    CheckpointState st;
    auto need = [&](const char* a) {
      if (!h5::has_attr(f, a))
        throw InputError(path + ": checkpoint lacks the '" + a + "' attribute");
    };
    for (const char* a : {"step", "epoch", "world_size", "seed"}) need(a);
    st.step = h5::read_attr_int64(f, "step");
    st.epoch = h5::read_attr_int64(f, "epoch");
    st.world_size = int(h5::read_attr_int64(f, "world_size"));
    st.seed = h5::read_attr_u64(f, "seed");
    if (h5::has_attr(f, "arch")) st.arch = h5::read_attr_string(f, "arch");
    if (h5::has_attr(f, "bypass")) st.bypass = h5::read_attr_string(f, "bypass");
    if (h5::has_attr(f, "config")) st.config_json = h5::read_attr_string(f, "config");
    auto opt = [&](const char* a, int64_t* v) {
      if (h5::has_attr(f, a)) *v = h5::read_attr_int64(f, a);
    };
    opt("step_in_epoch", &st.step_in_epoch);
    opt("steps_per_epoch", &st.steps_per_epoch);
    opt("global_batch", &st.global_batch);
    opt("dataset_size", &st.dataset_size);
    opt("total_steps", &st.total_steps);
    if (h5::has_attr(f, "shuffle")) st.shuffle = h5::read_attr_int64(f, "shuffle") != 0;
    if (h5::has_attr(f, "loss_scale")) {
      st.has_loss_scale = true;
      st.loss_scale = h5::read_attr_double(f, "loss_scale");
      opt("loss_scale_good_steps", &st.loss_scale_good_steps);
      opt("loss_scale_skipped", &st.loss_scale_skipped);
    }
    if (st.step < 0 || st.epoch < 0 || st.step_in_epoch < 0 || st.world_size < 1)
      throw InputError(path + ": checkpoint has impossible state (step " + std::to_string(st.step) +
                       ", epoch " + std::to_string(st.epoch) + ", world_size " +
                       std::to_string(st.world_size) + ")");
    return st;
  });
}
}  // namespace

bool is_checkpoint(const std::string& path) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  if (!h5::is_hdf5(path)) return false;
  try {
    sandbox::check_locked(path);  // a file that crashes libhdf5 is not a checkpoint
  } catch (const InputError&) {
    return false;
  }
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);  // probe: failure -> false
  if (id < 0) return false;
  h5::Handle f = h5::file_handle(id);
  return has_model_group(f);
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  static const std::regex re("ckpt_([0-9]+)\\.h5");
  for (auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file(ec)) continue;
    const std::string name = e.path().filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, re) || m[1].length() > 18) continue;
    out.emplace_back(int64_t(std::stoll(m[1].str())), e.path().string());
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.first > b.first; });
  return out;
}

std::string latest_checkpoint(const std::string& dir) {
  auto all = list_checkpoints(dir);
  return all.empty() ? "" : all.front().second;
}

std::string checkpoint_problem(const std::string& path, const std::vector<ParamView>& params) {
  try {
    size_t total = 0;
    for (auto& p : params) total = std::max(total, p.offset + p.numel());
    std::vector<float> w(total), m(total);
    std::vector<ParamView> views = params;
    for (auto& v : views) v.data = w.data() + v.offset;
    load_checkpoint(path, views, m.data());
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::map<std::string, std::string> spec_attrs(const NetSpec& spec) {
  return {{"arch", spec.arch},
          {"bypass", spec.bypass},
          {"fire", fire_list_string(fire_configs(spec.fire))},
          {"fire_meta", spec.fire.label()},
          {"num_classes", std::to_string(spec.num_classes)},
          {"in_channels", std::to_string(spec.in_channels)},
          {"height", std::to_string(spec.height)},
          {"width", std::to_string(spec.width)}};
}

NetSpec spec_from_file(const std::string& path, const std::string& arch) {
  std::map<std::string, std::vector<int64_t>> shapes;
  std::map<std::string, std::string> attrs;
  as_input_error(path, [&] {
    shapes = read_weight_shapes(path);
    for (const char* a : {"arch", "bypass", "num_classes", "in_channels", "height", "width"})
      attrs[a] = read_root_attr(path, a);
  });
  if (!shapes.count("features.0.weight"))
    throw InputError(path + ": holds no model weights (no features.0.weight; not a torch-h5 "
                            "weights file or checkpoint)");
  auto shape = [&](const std::string& k) -> const std::vector<int64_t>* {
    auto it = shapes.find(k);
    return it == shapes.end() ? nullptr : &it->second;
  };
  auto int_attr = [&](const char* a, int fallback) {
    const std::string& v = attrs[a];
    if (v.empty()) return fallback;
    try {
      size_t used = 0;
      const int x = std::stoi(v, &used);
      if (used == v.size() && x > 0) return x;
    } catch (const std::exception&) {
    }
    throw InputError(path + ": attribute '" + a + "' is '" + v + "', expected a positive integer");
  };
  NetSpec spec;
  const auto* conv1 = shape("features.0.weight");
  if (!arch.empty())
    spec.arch = arch;
  else if (!attrs["arch"].empty())
    spec.arch = attrs["arch"];
  else if (shape("classifier.6.weight"))
    spec.arch = "alexnet";
  else if (conv1 && conv1->size() == 4 && (*conv1)[2] == 7)
    spec.arch = "squeezenet1_0";
  else
    spec.arch = "squeezenet_small";
  const auto* cls = shape(spec.arch == "alexnet" ? "classifier.6.weight" : "classifier.1.weight");
  spec.num_classes = cls && !cls->empty() ? int((*cls)[0]) : int_attr("num_classes", spec.num_classes);
  spec.in_channels =
      conv1 && conv1->size() >= 2 ? int((*conv1)[1]) : int_attr("in_channels", spec.in_channels);
  spec.height = int_attr("height", spec.height);
  spec.width = int_attr("width", spec.width);

  // The Fire modules, in order of their features.N index.
  static const std::regex squeeze_re("features\\.([0-9]+)\\.squeeze\\.weight");
  std::vector<std::pair<int, std::string>> fires;
  bool bypass_convs = false;
  for (auto& [k, v] : shapes) {
    std::smatch m;
    if (std::regex_match(k, m, squeeze_re)) fires.emplace_back(std::stoi(m[1].str()), "features." + m[1].str());
    if (k.find(".bypass.weight") != std::string::npos) bypass_convs = true;
  }
  std::sort(fires.begin(), fires.end());
  if (!fires.empty()) {
    std::vector<FireConfig> f;
    for (auto& [idx, key] : fires) {
      const auto *s = shape(key + ".squeeze.weight"), *e1 = shape(key + ".expand1x1.weight"),
                 *e3 = shape(key + ".expand3x3.weight");
      if (!s || !e1 || !e3 || s->empty() || e1->empty() || e3->empty())
        throw InputError(path + ": Fire module " + key + " lacks its expand1x1/expand3x3 weights");
      f.push_back({int((*s)[0]), int((*e1)[0]), int((*e3)[0])});
    }
    if (f.size() != 8)
      throw InputError(path + ": " + std::to_string(f.size()) +
                       " Fire modules stored, SqueezeNet has 8");
    if (f != fire_configs(FireMeta{})) spec.fire.list = fire_list_string(f);
  }
  spec.bypass = !attrs["bypass"].empty() ? attrs["bypass"] : bypass_convs ? "complex" : "none";
  return spec;
}

std::vector<std::string> prune_checkpoints(const std::string& dir, int keep) {
  namespace fs = std::filesystem;
  std::vector<std::string> gone;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return gone;
  static const std::regex tmp_re("ckpt_[0-9]+\\.h5\\.tmp\\.[0-9]+");
  for (auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, tmp_re) && fs::remove(e.path(), ec)) gone.push_back(e.path().string());
  }
  if (keep <= 0) return gone;
  auto all = list_checkpoints(dir);
  for (size_t i = size_t(keep); i < all.size(); ++i)
    if (fs::remove(all[i].second, ec)) gone.push_back(all[i].second);
  return gone;
}

}  // namespace ft
