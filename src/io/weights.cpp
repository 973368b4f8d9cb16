/// @brief torch-h5 weights and checkpoints: validated loading (all checks before any write) and
/// atomic saving.
#include "firetrain/io/weights.hpp"

#include <algorithm>
#include <filesystem>
#include <regex>
#include <set>

#include "firetrain/core/error.hpp"
#include "firetrain/io/h5.hpp"

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
    h5::read_all(d, H5T_NATIVE_FLOAT, dst(p));
  }
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

void load_weights_h5(const std::string& path, const std::vector<ParamView>& params) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::Handle f = h5::open_file(path);
  if (has_model_group(f)) {
    require_complete(f, path);
    read_params(f, "model", path + ": /model", params, [](const ParamView& p) { return p.data; });
  } else {
    read_params(f, "/", path, params, [](const ParamView& p) { return p.data; });
  }
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
  h5::write_attr(f, "world_size", int64_t(st.world_size));
  h5::write_attr_u64(f, "seed", st.seed);
  h5::write_attr(f, "arch", st.arch);
  h5::write_attr(f, "bypass", st.bypass);
  h5::write_attr(f, "config", st.config_json);
  h5::write_attr(f, "format", std::string(kCheckpointFormat));
  h5::write_attr(f, "complete", int64_t(1));  // last: its presence means the rest is there
  f.commit();
}

CheckpointState load_checkpoint(const std::string& path, const std::vector<ParamView>& params,
                                float* momentum) {
  std::lock_guard<std::mutex> lock(h5_mutex());
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
  read_params(f, "model", path + ": /model", params, [](const ParamView& p) { return p.data; });
  if (momentum) {
    if (!h5::is_group(f, "optimizer/momentum"))
      throw InputError(path + ": checkpoint has no /optimizer/momentum group");
    read_params(f, "optimizer/momentum", path + ": /optimizer/momentum", params,
                [momentum](const ParamView& p) { return momentum + p.offset; });
  }
  CheckpointState st;
  auto need = [&](const char* a) {
    if (!h5::has_attr(f, a)) throw InputError(path + ": checkpoint lacks the '" + a + "' attribute");
  };
  for (const char* a : {"step", "epoch", "world_size", "seed"}) need(a);
  st.step = h5::read_attr_int64(f, "step");
  st.epoch = h5::read_attr_int64(f, "epoch");
  st.world_size = int(h5::read_attr_int64(f, "world_size"));
  st.seed = h5::read_attr_u64(f, "seed");
  if (h5::has_attr(f, "arch")) st.arch = h5::read_attr_string(f, "arch");
  if (h5::has_attr(f, "bypass")) st.bypass = h5::read_attr_string(f, "bypass");
  if (h5::has_attr(f, "config")) st.config_json = h5::read_attr_string(f, "config");
  return st;
}

bool is_checkpoint(const std::string& path) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  if (!h5::is_hdf5(path)) return false;
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);  // probe: failure -> false
  if (id < 0) return false;
  h5::Handle f = h5::file_handle(id);
  return has_model_group(f);
}

std::string latest_checkpoint(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return "";
  static const std::regex re("ckpt_([0-9]+)\\.h5");
  std::string best;
  long long best_step = -1;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file(ec)) continue;
    const std::string name = e.path().filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, re) || m[1].length() > 18) continue;
    const long long step = std::stoll(m[1].str());
    if (step > best_step) {
      best_step = step;
      best = e.path().string();
    }
  }
  return best;
}

}  // namespace ft
