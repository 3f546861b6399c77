#include "skiff/apiserver/resources.h"

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"

namespace skiff::apiserver {

namespace pb = google::protobuf;

const std::vector<ResourceInfo>& AllResources() {
  static const std::vector<ResourceInfo> kAll = {
      {"namespaces", "Namespace", "", "v1", Object::kNamespace, false, true},
      {"nodes", "Node", "", "v1", Object::kNode, false, true},
      {"pods", "Pod", "", "v1", Object::kPod, true, true},
      {"services", "Service", "", "v1", Object::kService, true, true},
      {"endpointslices", "EndpointSlice", "discovery.k8s.io", "discovery.k8s.io/v1", Object::kEndpointSlice, true,
       false},
      {"deployments", "Deployment", "apps", "apps/v1", Object::kDeployment, true, true},
      {"replicasets", "ReplicaSet", "apps", "apps/v1", Object::kReplicaSet, true, true},
      {"leases", "Lease", "coordination.k8s.io", "coordination.k8s.io/v1", Object::kLease, true, false},
      {"events", "Event", "", "v1", Object::kEvent, true, false},
      {"configmaps", "ConfigMap", "", "v1", Object::kConfigMap, true, false},
      {"secrets", "Secret", "", "v1", Object::kSecret, true, false},
      {"serviceaccounts", "ServiceAccount", "", "v1", Object::kServiceAccount, true, false},
      {"roles", "Role", "rbac.authorization.k8s.io", "rbac.authorization.k8s.io/v1", Object::kRole, true, false},
      {"clusterroles", "ClusterRole", "rbac.authorization.k8s.io", "rbac.authorization.k8s.io/v1",
       Object::kClusterRole, false, false},
      {"rolebindings", "RoleBinding", "rbac.authorization.k8s.io", "rbac.authorization.k8s.io/v1",
       Object::kRoleBinding, true, false},
      {"clusterrolebindings", "ClusterRoleBinding", "rbac.authorization.k8s.io", "rbac.authorization.k8s.io/v1",
       Object::kClusterRoleBinding, false, false},
  };
  return kAll;
}

absl::StatusOr<const ResourceInfo*> LookupResource(const std::string& resource) {
  for (const auto& r : AllResources())
    if (r.resource == resource) return &r;
  return absl::NotFoundError(
      absl::StrCat("the server could not find the requested resource (resource \"", resource, "\")"));
}

const ResourceInfo* ResourceForObject(const Object& obj) {
  for (const auto& r : AllResources())
    if (r.oneof_field == static_cast<int>(obj.kind_case())) return &r;
  return nullptr;
}

const pb::Message* Inner(const Object& obj) {
  if (obj.kind_case() == Object::KIND_NOT_SET) return nullptr;
  const pb::FieldDescriptor* f = obj.GetDescriptor()->FindFieldByNumber(obj.kind_case());
  return &obj.GetReflection()->GetMessage(obj, f);
}

pb::Message* MutableInner(Object* obj, const ResourceInfo& info) {
  const pb::FieldDescriptor* f = obj->GetDescriptor()->FindFieldByNumber(info.oneof_field);
  return obj->GetReflection()->MutableMessage(obj, f);
}

const ObjectMeta& Meta(const Object& obj) {
  const pb::Message* m = Inner(obj);
  if (!m) return ObjectMeta::default_instance();
  const pb::FieldDescriptor* f = m->GetDescriptor()->FindFieldByName("metadata");
  return static_cast<const ObjectMeta&>(m->GetReflection()->GetMessage(*m, f));
}

ObjectMeta* MutableMeta(Object* obj) {
  const ResourceInfo* info = ResourceForObject(*obj);
  if (!info) return nullptr;
  pb::Message* m = MutableInner(obj, *info);
  const pb::FieldDescriptor* f = m->GetDescriptor()->FindFieldByName("metadata");
  return static_cast<ObjectMeta*>(m->GetReflection()->MutableMessage(m, f));
}

std::string StorageKey(const ResourceInfo& info, const std::string& ns, const std::string& name) {
  if (!info.namespaced) return absl::StrCat("/registry/", info.resource, "/", name);
  return absl::StrCat("/registry/", info.resource, "/", ns, "/", name);
}

std::string StoragePrefix(const ResourceInfo& info, const std::string& ns) {
  if (!info.namespaced || ns.empty()) return absl::StrCat("/registry/", info.resource, "/");
  return absl::StrCat("/registry/", info.resource, "/", ns, "/");
}

namespace {
bool IsSkippedForSpec(const pb::FieldDescriptor* f) {
  return f->name() == "metadata" || f->name() == "status" || f->name() == "api_version" || f->name() == "kind";
}
}  // namespace

bool SpecEqual(const Object& a, const Object& b) {
  const pb::Message* ma = Inner(a);
  const pb::Message* mb = Inner(b);
  if (!ma || !mb) return ma == mb;
  if (ma->GetDescriptor() != mb->GetDescriptor()) return false;
  const pb::Descriptor* d = ma->GetDescriptor();
  std::vector<const pb::FieldDescriptor*> fields;
  for (int i = 0; i < d->field_count(); ++i)
    if (!IsSkippedForSpec(d->field(i))) fields.push_back(d->field(i));
  pb::util::MessageDifferencer diff;
  return diff.CompareWithFields(*ma, *mb, fields, fields);
}

void CopyStatus(const Object& from, Object* to) {
  const ResourceInfo* info = ResourceForObject(from);
  if (!info) return;
  const pb::Message* src = Inner(from);
  pb::Message* dst = MutableInner(to, *info);
  const pb::FieldDescriptor* f = src->GetDescriptor()->FindFieldByName("status");
  if (!f) return;
  dst->GetReflection()->MutableMessage(dst, f)->CopyFrom(src->GetReflection()->GetMessage(*src, f));
}

void ClearStatus(Object* obj) {
  const ResourceInfo* info = ResourceForObject(*obj);
  if (!info) return;
  pb::Message* m = MutableInner(obj, *info);
  const pb::FieldDescriptor* f = m->GetDescriptor()->FindFieldByName("status");
  if (f) m->GetReflection()->ClearField(m, f);
}

void CopyAllButStatus(const Object& from, Object* to) {
  Object status_holder = *to;
  *to = from;
  CopyStatus(status_holder, to);
}

absl::StatusOr<std::string> ToJson(const Object& obj) {
  const pb::Message* m = Inner(obj);
  if (!m) return absl::InvalidArgumentError("empty object");
  std::string out;
  pb::util::JsonPrintOptions opts;
  auto st = pb::util::MessageToJsonString(*m, &out, opts);
  if (!st.ok()) return absl::InternalError(std::string(st.message()));
  return out;
}

absl::Status FromJson(const std::string& json, const ResourceInfo& info, Object* obj) {
  obj->Clear();
  pb::Message* m = MutableInner(obj, info);
  pb::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  auto st = pb::util::JsonStringToMessage(json, m, opts);
  if (!st.ok()) return absl::InvalidArgumentError(std::string(st.message()));
  return absl::OkStatus();
}

}  // namespace skiff::apiserver
