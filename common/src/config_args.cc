#include "skiff/common/config_args.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>

namespace skiff {

char** ExpandedArgs::argv() {
  ptrs_.clear();
  for (auto& a : args_) ptrs_.push_back(a.data());
  ptrs_.push_back(nullptr);
  return ptrs_.data();
}

namespace {
std::string FlagName(const std::string& arg) {
  if (arg.rfind("--", 0) != 0) return "";
  auto eq = arg.find('=');
  return arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
}
}  // namespace

absl::StatusOr<ExpandedArgs> ExpandConfigArgs(int argc, char** argv) {
  ExpandedArgs out;
  std::vector<std::string> rest;
  std::string config;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config") {
      if (i + 1 >= argc) return absl::InvalidArgumentError("flag --config: expected a file path");
      config = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config = a.substr(9);
    } else {
      rest.push_back(a);
    }
  }
  out.args().push_back(argc > 0 ? argv[0] : "skiff");
  if (!config.empty()) {
    std::ifstream probe(config);
    if (!probe) return absl::NotFoundError("flag --config: cannot read " + config);
    YAML::Node root;
    try {
      root = YAML::LoadFile(config);
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError("flag --config: " + config + ": line " + std::to_string(e.mark.line + 1) +
                                        ": " + e.msg);
    }
    if (root && !root.IsNull()) {
      if (!root.IsMap()) return absl::InvalidArgumentError("flag --config: " + config + ": expected a map of flag: value");
      std::set<std::string> given;
      for (const auto& a : rest) given.insert(FlagName(a));
      for (const auto& kv : root) {
        std::string key = kv.first.as<std::string>();
        if (given.count(key)) continue;
        std::string value;
        if (kv.second.IsSequence()) {
          for (const auto& item : kv.second) {
            if (!value.empty()) value += ",";
            value += item.as<std::string>();
          }
        } else if (kv.second.IsScalar()) {
          value = kv.second.as<std::string>();
        } else {
          return absl::InvalidArgumentError("flag --config: " + config + ": key \"" + key +
                                            "\": expected a value or a list of values");
        }
        out.args().push_back("--" + key + "=" + value);
      }
    }
  }
  for (auto& a : rest) out.args().push_back(a);
  return out;
}

}  // namespace skiff
