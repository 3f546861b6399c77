// Helpers over the Object envelope shared by the scheduler, the controllers
// and the in-memory fake client: metadata access for any kind, resource
// names, label selectors, quantities and timestamps.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "skiff/api/v1/objects.pb.h"

namespace skiff::objects {

using ::skiff::api::v1::Object;
using ::skiff::api::v1::ObjectMeta;

// Metadata of whatever kind the envelope holds (nullptr / empty meta if none).
const ObjectMeta& Meta(const Object& obj);
ObjectMeta* MutableMeta(Object* obj);
// The kind's message inside the envelope, nullptr when empty.
const google::protobuf::Message* Inner(const Object& obj);
google::protobuf::Message* MutableInner(Object* obj);

// "Pod", "ReplicaSet", ... ("" when empty).
std::string KindOf(const Object& obj);
// "pods", "replicasets", ... for a kind name; "" when unknown.
std::string ResourceForKind(const std::string& kind);
std::string KindForResource(const std::string& resource);
std::string ApiVersionForKind(const std::string& kind);
bool IsNamespaced(const std::string& resource);
// The envelope field (as Object::KindCase) that holds objects of `resource`.
int KindCaseForResource(const std::string& resource);
// All resource names the API serves.
const std::vector<std::string>& AllResources();

// "ns/name" or "name" for cluster-scoped objects.
std::string Key(const ObjectMeta& meta);
inline std::string Key(const Object& obj) { return Key(Meta(obj)); }
std::string Key(const std::string& ns, const std::string& name);
// Splits a key produced by Key().
void SplitKey(const std::string& key, std::string* ns, std::string* name);

// Wraps typed messages into the envelope.
Object Wrap(const api::v1::Pod& m);
Object Wrap(const api::v1::Node& m);
Object Wrap(const api::v1::Namespace& m);
Object Wrap(const api::v1::Service& m);
Object Wrap(const api::v1::EndpointSlice& m);
Object Wrap(const api::v1::Deployment& m);
Object Wrap(const api::v1::ReplicaSet& m);
Object Wrap(const api::v1::Lease& m);
Object Wrap(const api::v1::Event& m);
Object Wrap(const api::v1::ServiceAccount& m);
Object Wrap(const api::v1::ConfigMap& m);
Object Wrap(const api::v1::Secret& m);

// ---------------------------------------------------------------- selectors

struct Requirement {
  std::string key;
  enum class Op { kEquals, kNotEquals, kIn, kNotIn, kExists, kDoesNotExist, kGt, kLt } op;
  std::vector<std::string> values;
};

class Selector {
 public:
  Selector() = default;  // matches everything
  // Kubernetes' string syntax: "a=b,c!=d,e in (x,y),f notin (z),g,!h".
  static absl::StatusOr<Selector> Parse(const std::string& text);
  // metav1.LabelSelector. A nil/empty selector matches everything here;
  // callers that need "empty selects nothing" check Empty() first.
  static absl::StatusOr<Selector> FromProto(const api::v1::LabelSelector& sel);
  static Selector FromMap(const google::protobuf::Map<std::string, std::string>& labels);

  bool Matches(const google::protobuf::Map<std::string, std::string>& labels) const;
  bool Matches(const std::map<std::string, std::string>& labels) const;
  bool Empty() const { return reqs_.empty(); }
  const std::vector<Requirement>& requirements() const { return reqs_; }
  void Add(Requirement r) { reqs_.push_back(std::move(r)); }

 private:
  std::vector<Requirement> reqs_;
};

bool MatchRequirement(const Requirement& r, const std::string* value);

// Field selectors: "spec.nodeName=x,metadata.name!=y". Supported fields:
// metadata.name, metadata.namespace, spec.nodeName, status.phase,
// involvedObject.name/uid (events), spec.unschedulable (nodes).
struct FieldRequirement {
  std::string field;
  bool equals = true;
  std::string value;
};
absl::StatusOr<std::vector<FieldRequirement>> ParseFieldSelector(const std::string& text);
bool MatchFields(const Object& obj, const std::vector<FieldRequirement>& reqs);

// ---------------------------------------------------------------- quantities

// Parses a Kubernetes quantity ("100m", "1.5", "64Mi", "1G", "2e3") into its
// value times 1000 (milli-units), rounded up as Kubernetes does for CPU.
absl::StatusOr<int64_t> ParseMilli(const std::string& quantity);
// Value in whole units, rounded up ("64Mi" -> 67108864, "100m" -> 1).
absl::StatusOr<int64_t> ParseValue(const std::string& quantity);
std::string FormatMilliCpu(int64_t milli);

// ---------------------------------------------------------------- time

std::string FormatTime(absl::Time t);       // RFC 3339, seconds
std::string FormatMicroTime(absl::Time t);  // RFC 3339 with microseconds
std::string Now();
std::string NowMicro();
// absl::InfinitePast() when empty/unparseable.
absl::Time ParseTime(const std::string& s);

// ---------------------------------------------------------------- owners and conditions

const api::v1::OwnerReference* ControllerOf(const ObjectMeta& meta);
api::v1::OwnerReference MakeControllerRef(const std::string& api_version, const std::string& kind,
                                          const ObjectMeta& owner);
const api::v1::Condition* FindCondition(const google::protobuf::RepeatedPtrField<api::v1::Condition>& conds,
                                        const std::string& type);
// Sets (or adds) a condition; the transition time moves only when status changes.
// Returns true when anything changed.
bool SetCondition(google::protobuf::RepeatedPtrField<api::v1::Condition>* conds, const std::string& type,
                  const std::string& status, const std::string& reason, const std::string& message);

bool IsPodReady(const api::v1::Pod& pod);
bool IsPodActive(const api::v1::Pod& pod);  // not terminating, not Succeeded/Failed
bool IsPodTerminating(const api::v1::Pod& pod);
// Ready for at least min_ready_seconds as of now.
bool IsPodAvailable(const api::v1::Pod& pod, int32_t min_ready_seconds, absl::Time now);

// A random lowercase alphanumeric suffix, as generateName produces.
std::string RandomSuffix(int n = 5);
// Stable FNV-1a 32-bit hash rendered like Kubernetes' SafeEncodeString.
std::string SafeHash(const std::string& data);

}  // namespace skiff::objects
