// Defaulting and validation with Kubernetes' rules and messages.
// Messages name the field path: `spec.containers[0].image: Required value`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "skiff/api/v1/objects.pb.h"
#include "skiff/apiserver/resources.h"

namespace skiff::apiserver {

struct FieldError {
  std::string path;
  std::string detail;  // "Required value", "Invalid value: \"x\": ...", ...
  std::string ToString() const { return path + ": " + detail; }
};
using FieldErrors = std::vector<FieldError>;

// Fills Kubernetes' defaults in place (create and update).
void ApplyDefaults(Object* obj);

// Validates a new object (old == nullptr) or an update of `old`.
FieldErrors Validate(const Object& obj, const Object* old);

// The Invalid status: `<Kind> "<name>" is invalid: <err>` or `... is invalid: [e1, e2]`.
absl::Status InvalidError(const std::string& kind, const std::string& name, const FieldErrors& errs);

// Helpers (exposed for tests and other components).
std::vector<std::string> IsDns1123Subdomain(const std::string& v);
std::vector<std::string> IsDns1123Label(const std::string& v);
std::vector<std::string> IsQualifiedName(const std::string& v);
std::vector<std::string> IsValidLabelValue(const std::string& v);
std::string Quote(const std::string& s);

}  // namespace skiff::apiserver
