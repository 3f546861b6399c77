#include "manifest.h"

#include <nlohmann/json.hpp>

#include "digest.h"
#include "skiff/common/status.h"

namespace skiff::image {
namespace {

using nlohmann::json;

absl::StatusOr<json> ParseJson(const std::string& body, const std::string& what) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError(what + " is not a JSON object");
  return j;
}

std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  return (it != j.end() && it->is_string()) ? it->get<std::string>() : std::string();
}

std::vector<std::string> StrList(const json& j, const char* key) {
  std::vector<std::string> out;
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return out;
  for (const auto& v : *it) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

absl::StatusOr<Descriptor> ParseDescriptor(const json& j, const std::string& what) {
  if (!j.is_object()) return absl::DataLossError(what + ": descriptor is not an object");
  Descriptor d;
  d.media_type = Str(j, "mediaType");
  d.digest = Str(j, "digest");
  auto st = DigestHex(d.digest);
  if (!st.ok()) return absl::DataLossError(what + ": " + std::string(st.status().message()));
  auto size = j.find("size");
  if (size != j.end() && size->is_number_integer()) d.size = size->get<int64_t>();
  if (d.size < 0) return absl::DataLossError(what + ": descriptor " + d.digest + " has no size");
  auto p = j.find("platform");
  if (p != j.end() && p->is_object()) {
    d.os = Str(*p, "os");
    d.architecture = Str(*p, "architecture");
    d.variant = Str(*p, "variant");
  }
  auto a = j.find("annotations");
  if (a != j.end() && a->is_object()) {
    for (auto it = a->begin(); it != a->end(); ++it) {
      if (it.value().is_string()) d.annotations[it.key()] = it.value().get<std::string>();
    }
  }
  return d;
}

}  // namespace

absl::StatusOr<ParsedManifest> ParseManifest(const std::string& body, const std::string& header_media_type) {
  ASSIGN_OR_RETURN(json j, ParseJson(body, "manifest"));
  ParsedManifest m;
  m.media_type = Str(j, "mediaType");
  if (m.media_type.empty()) m.media_type = header_media_type;
  auto schema = j.find("schemaVersion");
  if (schema != j.end() && schema->is_number_integer() && schema->get<int>() == 1) {
    return absl::FailedPreconditionError("Docker schema 1 manifests are not supported");
  }
  if (m.media_type.empty()) m.media_type = j.contains("manifests") ? kOciIndex : kOciManifest;
  if (m.media_type == kOciIndex || m.media_type == kDockerList) {
    m.is_index = true;
    auto ms = j.find("manifests");
    if (ms == j.end() || !ms->is_array()) return absl::DataLossError("image index has no manifests list");
    for (const auto& e : *ms) {
      ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor(e, "image index"));
      m.manifests.push_back(std::move(d));
    }
    return m;
  }
  if (m.media_type != kOciManifest && m.media_type != kDockerManifest) {
    return absl::FailedPreconditionError("unsupported manifest media type \"" + m.media_type + "\"");
  }
  auto cfg = j.find("config");
  if (cfg == j.end()) return absl::DataLossError("manifest has no config");
  ASSIGN_OR_RETURN(m.config, ParseDescriptor(*cfg, "manifest config"));
  auto ls = j.find("layers");
  if (ls == j.end() || !ls->is_array()) return absl::DataLossError("manifest has no layers list");
  for (const auto& e : *ls) {
    ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor(e, "manifest layer"));
    m.layers.push_back(std::move(d));
  }
  return m;
}

absl::StatusOr<ParsedConfig> ParseConfig(const std::string& body) {
  ASSIGN_OR_RETURN(json j, ParseJson(body, "image config"));
  ParsedConfig c;
  c.os = Str(j, "os");
  c.architecture = Str(j, "architecture");
  auto cfg = j.find("config");
  if (cfg != j.end() && cfg->is_object()) {
    c.config.entrypoint = StrList(*cfg, "Entrypoint");
    c.config.cmd = StrList(*cfg, "Cmd");
    c.config.env = StrList(*cfg, "Env");
    c.config.working_dir = Str(*cfg, "WorkingDir");
    c.config.user = Str(*cfg, "User");
  }
  auto rootfs = j.find("rootfs");
  if (rootfs == j.end() || !rootfs->is_object()) return absl::DataLossError("image config has no rootfs");
  c.diff_ids = StrList(*rootfs, "diff_ids");
  for (const auto& d : c.diff_ids) {
    auto st = DigestHex(d);
    if (!st.ok()) return absl::DataLossError("image config: bad diff id: " + std::string(st.status().message()));
  }
  return c;
}

absl::StatusOr<Descriptor> SelectPlatform(const ParsedManifest& index, const std::string& os,
                                          const std::string& architecture) {
  std::string seen;
  for (const auto& d : index.manifests) {
    // Attestation manifests (buildkit) carry platform unknown/unknown.
    if (d.os == os && d.architecture == architecture) return d;
    seen += (seen.empty() ? "" : ", ") + d.os + "/" + d.architecture;
  }
  return absl::NotFoundError("image index has no " + os + "/" + architecture + " manifest (has: " + seen + ")");
}

}  // namespace skiff::image
