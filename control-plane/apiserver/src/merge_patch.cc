#include "skiff/apiserver/merge_patch.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace skiff::apiserver {

namespace {
using nlohmann::json;

json Merge(const json& target, const json& patch) {
  if (!patch.is_object()) return patch;
  json result = target.is_object() ? target : json::object();
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it.value().is_null()) {
      result.erase(it.key());
    } else {
      auto cur = result.find(it.key());
      result[it.key()] = Merge(cur != result.end() ? *cur : json(), it.value());
    }
  }
  return result;
}
}  // namespace

absl::StatusOr<std::string> ApplyMergePatch(const std::string& target, const std::string& patch) {
  json t = json::parse(target, nullptr, false);
  if (t.is_discarded()) return absl::FailedPreconditionError("invalid JSON document");
  json p = json::parse(patch, nullptr, false);
  if (p.is_discarded()) return absl::FailedPreconditionError(absl::StrCat("invalid JSON patch: ", patch.substr(0, 200)));
  return Merge(t, p).dump();
}

}  // namespace skiff::apiserver
