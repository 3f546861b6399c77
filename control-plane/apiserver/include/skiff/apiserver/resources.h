// The resource table (plural name, kind, API group, scope) and generic access
// to the metadata/spec/status of an Object envelope.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "skiff/api/v1/objects.pb.h"

namespace skiff::apiserver {

using ::skiff::api::v1::Object;
using ::skiff::api::v1::ObjectMeta;

struct ResourceInfo {
  std::string resource;     // "pods"
  std::string kind;         // "Pod"
  std::string group;        // "" for core, "apps", ...
  std::string api_version;  // "v1", "apps/v1"
  int oneof_field;          // field number in Object's oneof
  bool namespaced;
  bool has_status;          // a status subresource exists
};

const std::vector<ResourceInfo>& AllResources();
// NotFound with Kubernetes' message for an unknown resource.
absl::StatusOr<const ResourceInfo*> LookupResource(const std::string& resource);
const ResourceInfo* ResourceForObject(const Object& obj);

// The kind message inside the envelope (nullptr when the oneof is empty).
const google::protobuf::Message* Inner(const Object& obj);
google::protobuf::Message* MutableInner(Object* obj, const ResourceInfo& info);
const ObjectMeta& Meta(const Object& obj);
ObjectMeta* MutableMeta(Object* obj);

// Storage key: /registry/<resource>/<ns>/<name> or /registry/<resource>/<name>.
std::string StorageKey(const ResourceInfo& info, const std::string& ns, const std::string& name);
// Prefix for a list: all namespaces when ns is empty.
std::string StoragePrefix(const ResourceInfo& info, const std::string& ns);

// Compare everything but metadata and status (for generation bumps).
bool SpecEqual(const Object& a, const Object& b);
// Copy status from `from` into `to` (both of the same kind).
void CopyStatus(const Object& from, Object* to);
void CopyAllButStatus(const Object& from, Object* to);
void ClearStatus(Object* obj);

// Object <-> protobuf JSON (Kubernetes camelCase names).
absl::StatusOr<std::string> ToJson(const Object& obj);
absl::Status FromJson(const std::string& json, const ResourceInfo& info, Object* obj);

}  // namespace skiff::apiserver
