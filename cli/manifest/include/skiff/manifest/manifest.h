// Kubernetes-style manifests <-> skiff.api.v1.Object.
//
// The codec walks the protobuf descriptors and matches every YAML/JSON key to
// a field's json_name, so the Kubernetes spelling (apiVersion, podIP,
// targetPort, ...) is the only spelling accepted, unknown fields are errors
// naming the field path and source line (like `kubectl apply
// --validate=strict`), INT_OR_STRING fields take either form, and bytes
// fields (Secret data, ConfigMap binaryData) are base64.
//
// Used by skiffctl, skiff-proxy --from-file and the kubelet's static pods.
#pragma once

#include <istream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "skiff/api/v1/objects.pb.h"
#include "skiff/manifest/value.h"

namespace skiff::manifest {

using ::skiff::api::v1::Object;
using ::skiff::api::v1::ObjectMeta;

// ------------------------------------------------------------------ kinds

struct KindInfo {
  std::string api_version;   // "v1", "apps/v1", ...
  std::string group;         // "", "apps", ...
  std::string kind;          // "Deployment"
  std::string resource;      // "deployments" (API resource name)
  std::string singular;      // "deployment"
  std::vector<std::string> short_names;  // {"deploy"}
  bool namespaced = true;
  int oneof_field = 0;       // field number in Object's `kind` oneof
};

const std::vector<KindInfo>& AllKinds();
// By Kind and apiVersion; nullptr if Skiff has no such kind in that version.
const KindInfo* FindKind(std::string_view api_version, std::string_view kind);
// By anything a user may type on the command line: "pods", "pod", "po",
// "Pod", "deployments.apps", "deploy.apps/v1"? (group suffix allowed).
const KindInfo* FindResource(std::string_view name);
// The kind an Object holds; nullptr for an empty envelope.
const KindInfo* KindOf(const Object& obj);

// The inner message of the envelope (Pod, Service, ...); nullptr if empty.
const google::protobuf::Message* Inner(const Object& obj);
google::protobuf::Message* MutableInner(Object* obj);
// An envelope set to `info`'s kind, with apiVersion and kind filled in.
Object NewObject(const KindInfo& info);
// Every kind has ObjectMeta metadata = 3.
const ObjectMeta& Meta(const Object& obj);
ObjectMeta* MutableMeta(Object* obj);

// ------------------------------------------------------------------ decode

struct Document {
  std::string source;  // file name, or "STDIN"
  int line = 0;        // first line of the document
  Object object;
  Value value;         // the document as written (for last-applied)
};

// Parses YAML or JSON text (one or more documents; `kind: List` expands to
// its items) into values. Errors: "error parsing <source>: yaml: line N: ...".
absl::StatusOr<std::vector<Value>> ParseValues(std::string_view text, std::string_view source);
// One value. Throws nothing; same errors.
absl::StatusOr<Value> ParseValue(std::string_view text, std::string_view source);

// Decodes one document value into an Object. Errors:
//   error validating "<source>": error validating data: kind not set
//   resource mapping not found for name: "x" namespace: "" from "<source>":
//       no matches for kind "Foo" in version "v1"
//   error validating "<source>": error validating data: [unknown field
//       "spec.containers[0].imagee" (line 12), ...]
// Missing names are not an error here (generateName, create); see
// RequireName.
absl::StatusOr<Object> DecodeObject(const Value& v, std::string_view source);
// Walks `v` into `msg` (any message of objects.proto). `path` prefixes error
// paths. Collects all errors into one status.
absl::Status DecodeMessage(const Value& v, google::protobuf::Message* msg, std::string_view path = "");

// ParseValues + DecodeObject for every document.
absl::StatusOr<std::vector<Document>> DecodeManifests(std::string_view text, std::string_view source);

// Reads `-f` arguments: files, directories (their .yaml/.yml/.json files,
// recursing with `recursive`), "-" for `in`. Errors name the path.
absl::StatusOr<std::vector<Document>> ReadManifests(const std::vector<std::string>& paths, bool recursive,
                                                    std::istream& in);

// Error unless metadata.name is set:
//   error validating "<source>": Pod: metadata.name: Required value: name is required
absl::Status RequireName(const Document& doc);

// ------------------------------------------------------------------ encode

// Message -> Value with Kubernetes field names, zero values omitted (proto3
// optional fields kept when set), INT_OR_STRING digits as numbers, bytes as
// base64. Keys sorted, as kubectl prints.
Value EncodeMessage(const google::protobuf::Message& msg);
// The object with apiVersion and kind filled in from its kind.
Value EncodeObject(const Object& obj);
std::string ObjectToYaml(const Object& obj);
std::string ObjectToJson(const Object& obj);

// base64 (standard alphabet, padded).
std::string Base64Encode(std::string_view in);
absl::StatusOr<std::string> Base64Decode(std::string_view in);

}  // namespace skiff::manifest
