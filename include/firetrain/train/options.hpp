/// @brief Command-line and config-file options: one registry per subcommand, so `--help`, the
/// config file (`key = value` lines, same names as the flags without dashes), overrides on the
/// command line and the JSON dump saved in checkpoints all come from one list.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ft {

class Options {
 public:
  Options(std::string command, std::string summary);
  Options& flag(const std::string& name, bool* target, const std::string& help);
  Options& opt(const std::string& name, int64_t* target, const std::string& help);
  Options& opt(const std::string& name, int* target, const std::string& help);
  Options& opt(const std::string& name, double* target, const std::string& help);
  Options& opt(const std::string& name, std::string* target, const std::string& help);
  /// A `--no-NAME` flag that sets *target = false (and `NAME = false` in config files).
  Options& negflag(const std::string& name, bool* target, const std::string& help);
  /// Storage owned by the registry for a string option that has no field of its own
  /// (`o.opt("grad-comm-dtype", o.own("fp32"), ...)`): a stable pointer, initialized to
  /// `initial`; its value also appears in to_json().
  std::string* own(const std::string& initial);
  /// Positional arguments (after the options).
  Options& positional(const std::string& name, std::string* target, const std::string& help,
                      bool required = true);

  /// Parses argv (argv[0] is the subcommand). `--config FILE` is read first wherever it
  /// appears, then the command line overrides it. Returns false when --help was asked (the
  /// help text has been printed). Throws ft::InputError on unknown or malformed options.
  bool parse(int argc, char** argv);
  std::string help() const;
  /// {"arch": "squeezenet_small", ...}: every option, in registration order.
  std::string to_json() const;
  /// Whether the user set this option (flag or config file).
  bool was_set(const std::string& name) const;
  /// Gives option `name` the value `value` (text as in a config file) unless the user set it;
  /// returns whether it did. Unknown names: false. ft::InputError on a malformed value
  /// (`where` names its origin in the message).
  bool assign_default(const std::string& name, const std::string& value, const std::string& where);

 private:
  struct Opt {
    std::string name, help, kind;  // kind: bool, negbool, int64, int, double, string
    void* target;
    bool set = false;
  };
  struct Pos {
    std::string name, help;
    std::string* target;
    bool required;
  };
  Opt* find(const std::string& name);
  void assign(Opt& o, const std::string& value, const std::string& where);
  void load_file(const std::string& path);
  std::string command_, summary_;
  std::vector<Opt> opts_;
  std::vector<Pos> pos_;
  std::vector<std::shared_ptr<std::string>> owned_;  // see own()
};

/// Parses a flat JSON object as Options::to_json() writes it ({"key": value, ...}; values are
/// numbers, true/false or strings) into key -> value text (strings unescaped, others as
/// written). ft::InputError on anything else.
std::map<std::string, std::string> parse_flat_json(const std::string& json);

}  // namespace ft
