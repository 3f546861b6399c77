// OCI / Docker schema 2 manifests, indexes and image configs.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/image/store.h"

namespace skiff::image {

inline constexpr char kOciIndex[] = "application/vnd.oci.image.index.v1+json";
inline constexpr char kOciManifest[] = "application/vnd.oci.image.manifest.v1+json";
inline constexpr char kOciConfig[] = "application/vnd.oci.image.config.v1+json";
inline constexpr char kDockerList[] = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr char kDockerManifest[] = "application/vnd.docker.distribution.manifest.v2+json";

struct Descriptor {
  std::string media_type;
  std::string digest;
  int64_t size = -1;
  std::string os, architecture, variant;  // index entries only
  std::map<std::string, std::string> annotations;
};

struct ParsedManifest {
  bool is_index = false;
  std::string media_type;
  std::vector<Descriptor> manifests;  // index
  Descriptor config;                  // manifest
  std::vector<Descriptor> layers;     // manifest, lowest first
};

struct ParsedConfig {
  ImageConfig config;
  std::vector<std::string> diff_ids;
  std::string os, architecture;
};

// `header_media_type` is the registry's Content-Type, if any; the document's
// own mediaType (or its shape) decides when it is missing.
absl::StatusOr<ParsedManifest> ParseManifest(const std::string& body, const std::string& header_media_type = "");
absl::StatusOr<ParsedConfig> ParseConfig(const std::string& body);
// The index entry for os/architecture (variant ignored except arm).
absl::StatusOr<Descriptor> SelectPlatform(const ParsedManifest& index, const std::string& os,
                                          const std::string& architecture);

}  // namespace skiff::image
