/// @brief Option registry: flags, config files, help text, JSON dump.
#include "firetrain/train/options.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "firetrain/core/error.hpp"

namespace ft {

Options::Options(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

Options& Options::flag(const std::string& n, bool* t, const std::string& h) {
  opts_.push_back({n, h, "bool", t});
  return *this;
}
Options& Options::negflag(const std::string& n, bool* t, const std::string& h) {
  opts_.push_back({n, h, "negbool", t});
  return *this;
}
Options& Options::opt(const std::string& n, int64_t* t, const std::string& h) {
  opts_.push_back({n, h, "int64", t});
  return *this;
}
Options& Options::opt(const std::string& n, int* t, const std::string& h) {
  opts_.push_back({n, h, "int", t});
  return *this;
}
Options& Options::opt(const std::string& n, double* t, const std::string& h) {
  opts_.push_back({n, h, "double", t});
  return *this;
}
Options& Options::opt(const std::string& n, std::string* t, const std::string& h) {
  opts_.push_back({n, h, "string", t});
  return *this;
}
std::string* Options::own(const std::string& initial) {
  owned_.push_back(std::make_shared<std::string>(initial));
  return owned_.back().get();
}
Options& Options::positional(const std::string& n, std::string* t, const std::string& h,
                             bool required) {
  pos_.push_back({n, h, t, required});
  return *this;
}

Options::Opt* Options::find(const std::string& name) {
  for (auto& o : opts_) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

bool Options::was_set(const std::string& name) const {
  for (auto& o : opts_)
    if (o.name == name) return o.set;
  return false;
}

static bool parse_bool(const std::string& v, bool* out) {
  if (v == "1" || v == "true" || v == "yes" || v == "on") return *out = true, true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return *out = false, true;
  return false;
}

bool Options::assign_default(const std::string& name, const std::string& value,
                             const std::string& where) {
  Opt* o = find(name);
  if (!o || o->set) return false;
  if (o->kind == "negbool") {
    bool b;
    if (!parse_bool(value, &b)) throw InputError(where + ": " + name + " expects true or false");
    *static_cast<bool*>(o->target) = b;
  } else {
    assign(*o, value, where);
    o->set = false;  // still not given by the user
  }
  return true;
}

void Options::assign(Opt& o, const std::string& v, const std::string& where) {
  auto bad = [&](const char* what) {
    throw InputError(where + ": --" + o.name + " expects " + what + ", got '" + v + "'");
  };
  o.set = true;
  if (o.kind == "bool" || o.kind == "negbool") {
    bool b;
    if (!parse_bool(v, &b)) bad("true or false");
    *static_cast<bool*>(o.target) = b;
  } else if (o.kind == "int64" || o.kind == "int") {
    char* end = nullptr;
    errno = 0;
    long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || errno) bad("an integer");
    if (o.kind == "int") {
      if (x < INT32_MIN || x > INT32_MAX) bad("an integer in range");
      *static_cast<int*>(o.target) = int(x);
    } else {
      *static_cast<int64_t*>(o.target) = x;
    }
  } else if (o.kind == "double") {
    char* end = nullptr;
    errno = 0;
    double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end || errno) bad("a number");
    *static_cast<double*>(o.target) = x;
  } else {
    *static_cast<std::string*>(o.target) = v;
  }
}

static std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

void Options::load_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw InputError(path + ": cannot open config file");
  std::string line;
  int ln = 0;
  while (std::getline(f, line)) {
    ++ln;
    auto hash = line.find('#');
    if (hash != std::string::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    auto eq = line.find('=');
    const std::string where = path + ":" + std::to_string(ln);
    if (eq == std::string::npos) throw InputError(where + ": expected 'key = value'");
    std::string key = trim(line.substr(0, eq)), val = trim(line.substr(eq + 1));
    for (auto& ch : key)
      if (ch == '_') ch = '-';
    if (val.size() >= 2 && val.front() == '"' && val.back() == '"') val = val.substr(1, val.size() - 2);
    Opt* o = find(key);
    if (!o || key == "config") throw InputError(where + ": unknown key '" + key + "'");
    if (o->kind == "negbool") {  // "shuffle = false" in a file means --no-shuffle
      bool b;
      if (!parse_bool(val, &b)) throw InputError(where + ": " + key + " expects true or false");
      o->set = true;
      *static_cast<bool*>(o->target) = b;
    } else {
      assign(*o, val, where);
    }
  }
}

bool Options::parse(int argc, char** argv) {
  // The config file first, so that flags override it.
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config") {
      if (i + 1 >= argc) throw InputError("--config needs a file");
      load_file(argv[i + 1]);
    } else if (a.rfind("--config=", 0) == 0) {
      load_file(a.substr(9));
    }
  }
  size_t npos = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf("%s", help().c_str());
      return false;
    }
    if (a.rfind("--", 0) != 0 || a.size() == 2) {
      if (npos >= pos_.size()) throw InputError(command_ + ": unexpected argument '" + a + "'");
      *pos_[npos++].target = a;
      continue;
    }
    std::string name = a.substr(2), val;
    bool has_val = false;
    auto eq = name.find('=');
    if (eq != std::string::npos) {
      val = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_val = true;
    }
    if (name == "config") {
      if (!has_val) ++i;
      continue;
    }
    if (name.rfind("no-", 0) == 0) {
      Opt* o = find(name.substr(3));
      if (o && o->kind == "negbool") {
        *static_cast<bool*>(o->target) = false;
        o->set = true;
        continue;
      }
    }
    Opt* o = find(name);
    if (!o || o->kind == "negbool")
      throw InputError(command_ + ": unknown option --" + name + " (see firetrain " + command_ +
                       " --help)");
    if (o->kind == "bool" && !has_val) {
      *static_cast<bool*>(o->target) = true;
      o->set = true;
      continue;
    }
    if (!has_val) {
      if (i + 1 >= argc) throw InputError(command_ + ": --" + name + " needs a value");
      val = argv[++i];
    }
    assign(*o, val, command_);
  }
  for (size_t k = npos; k < pos_.size(); ++k)
    if (pos_[k].required)
      throw InputError(command_ + ": missing argument " + pos_[k].name + " (see --help)");
  return true;
}

std::string Options::help() const {
  std::ostringstream os;
  os << "usage: firetrain " << command_ << " [options]";
  for (auto& p : pos_) os << (p.required ? " " : " [") << p.name << (p.required ? "" : "]");
  os << "\n\n" << summary_ << "\n\noptions:\n";
  for (auto& p : pos_) os << "  " << std::left << std::setw(26) << p.name << p.help << "\n";
  for (auto& o : opts_) {
    std::string lhs = o.kind == "negbool" ? "--no-" + o.name
                      : o.kind == "bool"  ? "--" + o.name
                                          : "--" + o.name + " " +
                                               (o.kind == "string" ? "S" : o.kind == "double" ? "X" : "N");
    std::string def;
    if (o.kind == "string") {
      auto& s = *static_cast<std::string*>(o.target);
      if (!s.empty()) def = " [" + s + "]";
    } else if (o.kind == "int64") {
      def = " [" + std::to_string(*static_cast<int64_t*>(o.target)) + "]";
    } else if (o.kind == "int") {
      def = " [" + std::to_string(*static_cast<int*>(o.target)) + "]";
    } else if (o.kind == "double") {
      std::ostringstream d;
      d << *static_cast<double*>(o.target);
      def = " [" + d.str() + "]";
    }
    os << "  " << std::left << std::setw(26) << lhs << o.help << def << "\n";
  }
  os << "  " << std::left << std::setw(26) << "--config FILE"
     << "read 'key = value' lines (keys as the flags, without --); flags override them\n";
  os << "  " << std::left << std::setw(26) << "--help" << "show this help\n";
  return os.str();
}

static std::string json_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == '"' || c == '\\') r += '\\';
    if (c == '\n') {
      r += "\\n";
      continue;
    }
    r += c;
  }
  return r;
}

std::string Options::to_json() const {
  std::ostringstream os;
  os << "{";
  bool first = true;
  for (auto& o : opts_) {
    if (!first) os << ", ";
    first = false;
    os << "\"" << o.name << "\": ";
    if (o.kind == "bool" || o.kind == "negbool")
      os << (*static_cast<bool*>(o.target) ? "true" : "false");
    else if (o.kind == "int64")
      os << *static_cast<int64_t*>(o.target);
    else if (o.kind == "int")
      os << *static_cast<int*>(o.target);
    else if (o.kind == "double")
      os << std::setprecision(17) << *static_cast<double*>(o.target);
    else
      os << "\"" << json_escape(*static_cast<std::string*>(o.target)) << "\"";
  }
  os << "}";
  return os.str();
}

std::map<std::string, std::string> parse_flat_json(const std::string& j) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  auto bad = [&](const char* what) {
    throw InputError("config JSON: " + std::string(what) + " at offset " + std::to_string(i));
  };
  auto ws = [&] {
    while (i < j.size() && (j[i] == ' ' || j[i] == '\n' || j[i] == '\t' || j[i] == '\r')) ++i;
  };
  auto str = [&] {
    if (i >= j.size() || j[i] != '"') bad("expected a string");
    ++i;
    std::string s;
    while (i < j.size() && j[i] != '"') {
      if (j[i] == '\\') {
        if (++i >= j.size()) bad("unterminated escape");
        s += j[i] == 'n' ? '\n' : j[i];
      } else {
        s += j[i];
      }
      ++i;
    }
    if (i >= j.size()) bad("unterminated string");
    ++i;
    return s;
  };
  ws();
  if (i >= j.size() || j[i] != '{') bad("expected '{'");
  ++i;
  ws();
  if (i < j.size() && j[i] == '}') return out;
  while (true) {
    ws();
    std::string key = str();
    ws();
    if (i >= j.size() || j[i] != ':') bad("expected ':'");
    ++i;
    ws();
    std::string val;
    if (i < j.size() && j[i] == '"') {
      val = str();
    } else {
      const size_t a = i;
      while (i < j.size() && j[i] != ',' && j[i] != '}') ++i;
      val = trim(j.substr(a, i - a));
      if (val.empty()) bad("expected a value");
    }
    out[key] = val;
    ws();
    if (i < j.size() && j[i] == ',') {
      ++i;
      continue;
    }
    if (i < j.size() && j[i] == '}') break;
    bad("expected ',' or '}'");
  }
  return out;
}

}  // namespace ft
