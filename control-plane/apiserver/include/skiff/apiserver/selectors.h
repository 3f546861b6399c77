// Label selectors (Kubernetes string syntax) and field selectors.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/api/v1/objects.pb.h"

namespace skiff::apiserver {

struct LabelRequirement {
  enum class Op { kEquals, kNotEquals, kIn, kNotIn, kExists, kDoesNotExist };
  std::string key;
  Op op;
  std::vector<std::string> values;
};

class LabelSelector {
 public:
  // "app=web,tier in (a,b),!legacy,env!=prod,track". Empty matches everything.
  static absl::StatusOr<LabelSelector> Parse(const std::string& text);
  static absl::StatusOr<LabelSelector> FromProto(const skiff::api::v1::LabelSelector& sel);
  bool Matches(const google::protobuf::Map<std::string, std::string>& labels) const;
  bool Matches(const std::map<std::string, std::string>& labels) const;
  bool empty() const { return reqs_.empty(); }
  const std::vector<LabelRequirement>& requirements() const { return reqs_; }

 private:
  std::vector<LabelRequirement> reqs_;
};

// Supported fields: metadata.name, metadata.namespace, spec.nodeName,
// status.phase (pods), and for events involvedObject.* is not supported.
class FieldSelector {
 public:
  static absl::StatusOr<FieldSelector> Parse(const std::string& text);
  bool Matches(const skiff::api::v1::Object& obj) const;
  bool empty() const { return reqs_.empty(); }
  // The value required for `field` with "=" if any (lets callers narrow reads).
  std::string ExactValue(const std::string& field) const;

 private:
  struct Req {
    std::string field;
    bool equals;
    std::string value;
  };
  std::vector<Req> reqs_;
};

// The value of a field selector path on an object ("" when it does not apply).
std::string FieldValue(const skiff::api::v1::Object& obj, const std::string& field);

}  // namespace skiff::apiserver
