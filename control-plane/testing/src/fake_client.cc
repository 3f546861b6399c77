#include "skiff/fakeclient/fake_client.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "skiff/common/status.h"
#include "skiff/controllers/objects.h"

namespace skiff::fakeclient {

using client::Object;
using client::ObjectList;
using objects::Meta;
using objects::MutableMeta;

struct FakeClient::Watcher {
  std::string resource;
  std::string ns;
  objects::Selector labels;
  std::vector<objects::FieldRequirement> fields;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<api::v1::WatchEvent> events;
  bool cancelled = false;
  bool broken = false;

  bool Matches(const Object& obj) const {
    const auto& m = Meta(obj);
    if (!ns.empty() && m.namespace_() != ns) return false;
    return labels.Matches(m.labels()) && objects::MatchFields(obj, fields);
  }
  void Push(api::v1::WatchEvent ev) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(std::move(ev));
    cv.notify_all();
  }
};

namespace {

class FakeStream : public client::WatchStream {
 public:
  explicit FakeStream(std::shared_ptr<FakeClient::Watcher> w) : w_(std::move(w)) {}
  absl::StatusOr<api::v1::WatchEvent> Next() override {
    std::unique_lock<std::mutex> lock(w_->mu);
    w_->cv.wait(lock, [&] { return w_->cancelled || w_->broken || !w_->events.empty(); });
    if (w_->cancelled) return absl::CancelledError("watch cancelled");
    if (!w_->events.empty()) {
      auto ev = std::move(w_->events.front());
      w_->events.pop_front();
      return ev;
    }
    return absl::UnavailableError("watch broken");
  }
  void Cancel() override {
    std::lock_guard<std::mutex> lock(w_->mu);
    w_->cancelled = true;
    w_->cv.notify_all();
  }

 private:
  std::shared_ptr<FakeClient::Watcher> w_;
};

std::string NewUid() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  uint64_t a = rng(), b = rng();
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", a >> 32, (a >> 16) & 0xffff, a & 0xffff, b >> 48,
                         b & 0xffffffffffffULL);
}

bool HasStatus(const Object& obj) {
  const auto* inner = objects::Inner(obj);
  return inner != nullptr && inner->GetDescriptor()->FindFieldByName("status") != nullptr;
}

// The object with metadata and status cleared: what "spec changed" compares.
std::string SpecBytes(const Object& obj) {
  Object copy = obj;
  auto* inner = objects::MutableInner(&copy);
  if (inner == nullptr) return "";
  const auto* d = inner->GetDescriptor();
  inner->GetReflection()->ClearField(inner, d->FindFieldByName("metadata"));
  if (const auto* s = d->FindFieldByName("status")) inner->GetReflection()->ClearField(inner, s);
  std::string out;
  {
    google::protobuf::io::StringOutputStream sos(&out);
    google::protobuf::io::CodedOutputStream cos(&sos);
    cos.SetSerializationDeterministic(true);
    copy.SerializeToCodedStream(&cos);
  }
  return out;
}

void CopyField(const Object& from, Object* to, const char* field) {
  const auto* src = objects::Inner(from);
  auto* dst = objects::MutableInner(to);
  const auto* f = dst->GetDescriptor()->FindFieldByName(field);
  if (f == nullptr) return;
  dst->GetReflection()->MutableMessage(dst, f)->CopyFrom(src->GetReflection()->GetMessage(*src, f));
}

void MergePatch(google::protobuf::Value* target, const google::protobuf::Value& patch) {
  if (patch.kind_case() != google::protobuf::Value::kStructValue) {
    *target = patch;
    return;
  }
  if (target->kind_case() != google::protobuf::Value::kStructValue) target->mutable_struct_value()->Clear();
  auto* fields = target->mutable_struct_value()->mutable_fields();
  for (const auto& [k, v] : patch.struct_value().fields()) {
    if (v.kind_case() == google::protobuf::Value::kNullValue) {
      fields->erase(k);
    } else {
      MergePatch(&(*fields)[k], v);
    }
  }
}

}  // namespace

absl::Status FakeClient::Injected(const std::string& verb) {
  auto it = failures_.find(verb);
  if (it == failures_.end() || it->second.empty()) return absl::OkStatus();
  auto st = it->second.front();
  it->second.pop_front();
  return st;
}

void FakeClient::InjectFailure(const std::string& verb, absl::Status status, int n) {
  std::lock_guard<std::mutex> lock(mu_);
  for (int i = 0; i < n; i++) failures_[verb].push_back(status);
}

int64_t FakeClient::revision() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rev_;
}

int64_t FakeClient::WriteCount(const std::string& verb) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = writes_.find(verb);
  return it == writes_.end() ? 0 : it->second;
}

void FakeClient::BreakWatches() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& w : watchers_) {
    if (auto s = w.lock()) {
      std::lock_guard<std::mutex> wl(s->mu);
      s->broken = true;
      s->cv.notify_all();
    }
  }
  watchers_.clear();
}

void FakeClient::EmitLocked(const std::string& resource, const std::string& type, const Object& obj) {
  api::v1::WatchEvent ev;
  ev.set_type(type);
  *ev.mutable_object() = obj;
  log_.push_back({rev_, resource, ev});
  for (auto it = watchers_.begin(); it != watchers_.end();) {
    auto w = it->lock();
    if (!w) {
      it = watchers_.erase(it);
      continue;
    }
    ++it;
    if (w->resource == resource && w->Matches(obj)) w->Push(ev);
  }
}

absl::StatusOr<Object> FakeClient::Create(const std::string& resource, const std::string& ns, const Object& in) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(Injected("create"));
  if (objects::KindCaseForResource(resource) == 0 || objects::KindCaseForResource(resource) != in.kind_case())
    return absl::InvalidArgumentError(absl::StrCat("object kind does not match resource ", resource));
  Object obj = in;
  auto* meta = MutableMeta(&obj);
  bool namespaced = objects::IsNamespaced(resource);
  if (namespaced) {
    if (meta->namespace_().empty()) meta->set_namespace_(ns);
    if (meta->namespace_() != ns && !ns.empty())
      return absl::InvalidArgumentError("the namespace of the provided object does not match the namespace sent on the request");
    if (meta->namespace_().empty()) return absl::InvalidArgumentError("namespace is required");
    auto& nss = store_["namespaces"];
    auto it = nss.find(meta->namespace_());
    if (it == nss.end()) return absl::NotFoundError(absl::StrCat("namespaces \"", meta->namespace_(), "\" not found"));
    if (!it->second.obj.namespace_().metadata().deletion_timestamp().empty())
      return absl::PermissionDeniedError(absl::StrCat("unable to create new content in namespace ",
                                                      meta->namespace_(), " because it is being terminated"));
  } else {
    meta->clear_namespace_();
  }
  if (meta->name().empty()) {
    if (meta->generate_name().empty()) return absl::InvalidArgumentError("metadata.name: Required value");
    meta->set_name(meta->generate_name() + objects::RandomSuffix());
  }
  std::string key = objects::Key(*meta);
  auto& bucket = store_[resource];
  if (bucket.count(key)) return absl::AlreadyExistsError(absl::StrCat(resource, " \"", meta->name(), "\" already exists"));
  rev_++;
  meta->set_uid(NewUid());
  meta->set_resource_version(std::to_string(rev_));
  meta->set_creation_timestamp(objects::Now());
  meta->set_generation(1);
  meta->clear_deletion_timestamp();
  if (obj.has_namespace_()) {
    if (obj.namespace_().spec().finalizers().empty()) obj.mutable_namespace_()->mutable_spec()->add_finalizers("kubernetes");
    obj.mutable_namespace_()->mutable_status()->set_phase("Active");
  }
  if (obj.has_pod() && obj.pod().status().phase().empty()) obj.mutable_pod()->mutable_status()->set_phase("Pending");
  std::string kind = objects::KindForResource(resource);
  const auto* inner = objects::MutableInner(&obj);
  const auto* d = inner->GetDescriptor();
  auto* refl = inner->GetReflection();
  auto* minner = objects::MutableInner(&obj);
  if (refl->GetString(*inner, d->FindFieldByName("kind")).empty())
    refl->SetString(minner, d->FindFieldByName("kind"), kind);
  if (refl->GetString(*inner, d->FindFieldByName("api_version")).empty())
    refl->SetString(minner, d->FindFieldByName("api_version"), objects::ApiVersionForKind(kind));
  bucket[key].obj = obj;
  writes_["create"]++;
  EmitLocked(resource, "ADDED", obj);
  return obj;
}

absl::StatusOr<Object> FakeClient::Get(const std::string& resource, const std::string& ns, const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(Injected("get"));
  auto& bucket = store_[resource];
  auto it = bucket.find(objects::Key(objects::IsNamespaced(resource) ? ns : "", name));
  if (it == bucket.end()) return absl::NotFoundError(absl::StrCat(resource, " \"", name, "\" not found"));
  return it->second.obj;
}

absl::StatusOr<ObjectList> FakeClient::List(const std::string& resource, const std::string& ns,
                                            const client::ListOptions& opts) {
  ASSIGN_OR_RETURN(auto labels, objects::Selector::Parse(opts.label_selector));
  ASSIGN_OR_RETURN(auto fields, objects::ParseFieldSelector(opts.field_selector));
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(Injected("list"));
  ObjectList out;
  auto& bucket = store_[resource];
  auto it = opts.continue_token.empty() ? bucket.begin() : bucket.upper_bound(opts.continue_token);
  for (; it != bucket.end(); ++it) {
    const auto& m = Meta(it->second.obj);
    if (!ns.empty() && m.namespace_() != ns) continue;
    if (!labels.Matches(m.labels()) || !objects::MatchFields(it->second.obj, fields)) continue;
    if (opts.limit > 0 && out.items_size() >= opts.limit) {
      out.set_continue_(std::prev(it)->first);
      break;
    }
    *out.add_items() = it->second.obj;
  }
  out.set_resource_version(std::to_string(rev_));
  return out;
}

absl::StatusOr<std::unique_ptr<client::WatchStream>> FakeClient::Watch(const std::string& resource,
                                                                       const std::string& ns,
                                                                       const client::ListOptions& opts) {
  auto w = std::make_shared<Watcher>();
  w->resource = resource;
  w->ns = ns;
  ASSIGN_OR_RETURN(w->labels, objects::Selector::Parse(opts.label_selector));
  ASSIGN_OR_RETURN(w->fields, objects::ParseFieldSelector(opts.field_selector));
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(Injected("watch"));
  if (opts.resource_version.empty() || opts.resource_version == "0") {
    for (const auto& [k, s] : store_[resource]) {
      if (!w->Matches(s.obj)) continue;
      api::v1::WatchEvent ev;
      ev.set_type("ADDED");
      *ev.mutable_object() = s.obj;
      w->events.push_back(std::move(ev));
    }
  } else {
    int64_t from = 0;
    if (!absl::SimpleAtoi(opts.resource_version, &from))
      return absl::InvalidArgumentError("invalid resourceVersion " + opts.resource_version);
    for (const auto& e : log_)
      if (e.rev > from && e.resource == resource && w->Matches(e.ev.object())) w->events.push_back(e.ev);
  }
  watchers_.push_back(w);
  return std::unique_ptr<client::WatchStream>(new FakeStream(w));
}

void FakeClient::RemoveLocked(const std::string& resource, const std::string& key) {
  auto& bucket = store_[resource];
  auto it = bucket.find(key);
  if (it == bucket.end()) return;
  Object obj = it->second.obj;
  bucket.erase(it);
  rev_++;
  MutableMeta(&obj)->set_resource_version(std::to_string(rev_));
  writes_["delete"]++;
  EmitLocked(resource, "DELETED", obj);
}

absl::StatusOr<Object> FakeClient::UpdateLocked(const std::string& resource, const std::string& ns, Object obj,
                                                bool status_only) {
  if (objects::KindCaseForResource(resource) != obj.kind_case())
    return absl::InvalidArgumentError(absl::StrCat("object kind does not match resource ", resource));
  auto* meta = MutableMeta(&obj);
  if (objects::IsNamespaced(resource)) {
    if (meta->namespace_().empty()) meta->set_namespace_(ns);
  } else {
    meta->clear_namespace_();
  }
  std::string key = objects::Key(*meta);
  auto& bucket = store_[resource];
  auto it = bucket.find(key);
  if (it == bucket.end()) return absl::NotFoundError(absl::StrCat(resource, " \"", meta->name(), "\" not found"));
  const Object& cur = it->second.obj;
  const auto& cm = Meta(cur);
  if (!meta->resource_version().empty() && meta->resource_version() != cm.resource_version())
    return absl::AbortedError(absl::StrCat("Operation cannot be fulfilled on ", resource, " \"", meta->name(),
                                           "\": the object has been modified; please apply your changes to the "
                                           "latest version and try again"));
  Object next;
  if (status_only) {
    next = cur;
    if (HasStatus(obj)) CopyField(obj, &next, "status");
  } else {
    next = obj;
    if (HasStatus(cur)) CopyField(cur, &next, "status");
    auto* nm = MutableMeta(&next);
    nm->set_uid(cm.uid());
    nm->set_creation_timestamp(cm.creation_timestamp());
    nm->set_deletion_timestamp(cm.deletion_timestamp());
    if (cm.has_deletion_grace_period_seconds()) nm->set_deletion_grace_period_seconds(cm.deletion_grace_period_seconds());
    nm->set_generation(cm.generation());
    nm->set_namespace_(cm.namespace_());
    if (SpecBytes(next) != SpecBytes(cur)) nm->set_generation(cm.generation() + 1);
  }
  MutableMeta(&next)->set_resource_version(cm.resource_version());
  if (google::protobuf::util::MessageDifferencer::Equals(next, cur)) return cur;  // no-op: no new revision
  const auto& nm = Meta(next);
  bool finalized = !nm.deletion_timestamp().empty() && nm.finalizers().empty() &&
                   (!next.has_namespace_() || next.namespace_().spec().finalizers().empty());
  if (finalized) {
    RemoveLocked(resource, key);
    return next;
  }
  rev_++;
  MutableMeta(&next)->set_resource_version(std::to_string(rev_));
  it->second.obj = next;
  writes_[status_only ? "update_status" : "update"]++;
  EmitLocked(resource, "MODIFIED", next);
  return next;
}

absl::StatusOr<Object> FakeClient::Update(const std::string& resource, const std::string& ns, const Object& obj) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(Injected("update"));
  return UpdateLocked(resource, ns, obj, false);
}

absl::StatusOr<Object> FakeClient::UpdateStatus(const std::string& resource, const std::string& ns,
                                                const Object& obj) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(Injected("update_status"));
  return UpdateLocked(resource, ns, obj, true);
}

absl::StatusOr<Object> FakeClient::Patch(const std::string& resource, const std::string& ns, const std::string& name,
                                         const std::string& merge_patch_json, const std::string& subresource) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(Injected("patch"));
  auto& bucket = store_[resource];
  auto it = bucket.find(objects::Key(objects::IsNamespaced(resource) ? ns : "", name));
  if (it == bucket.end()) return absl::NotFoundError(absl::StrCat(resource, " \"", name, "\" not found"));
  Object cur = it->second.obj;
  const auto* inner = objects::Inner(cur);
  std::string cur_json;
  if (!google::protobuf::util::MessageToJsonString(*inner, &cur_json).ok())
    return absl::InternalError("cannot render object as JSON");
  google::protobuf::Value target, patch;
  if (!google::protobuf::util::JsonStringToMessage(cur_json, &target).ok())
    return absl::InternalError("cannot parse object JSON");
  if (!google::protobuf::util::JsonStringToMessage(merge_patch_json, &patch).ok())
    return absl::FailedPreconditionError("invalid JSON merge patch");
  // resourceVersion in the patch is a precondition; absent means unconditional.
  std::string patch_rv;
  if (patch.has_struct_value()) {
    auto mit = patch.struct_value().fields().find("metadata");
    if (mit != patch.struct_value().fields().end() && mit->second.has_struct_value()) {
      auto rit = mit->second.struct_value().fields().find("resourceVersion");
      if (rit != mit->second.struct_value().fields().end()) patch_rv = rit->second.string_value();
    }
  }
  MergePatch(&target, patch);
  std::string merged;
  if (!google::protobuf::util::MessageToJsonString(target, &merged).ok())
    return absl::InternalError("cannot render merged JSON");
  Object next = cur;
  auto* minner = objects::MutableInner(&next);
  minner->Clear();
  google::protobuf::util::JsonParseOptions po;
  po.ignore_unknown_fields = true;
  auto st = google::protobuf::util::JsonStringToMessage(merged, minner, po);
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("patch does not fit the object: ", st.ToString()));
  MutableMeta(&next)->set_resource_version(patch_rv.empty() ? Meta(cur).resource_version() : patch_rv);
  if (subresource == "status") return UpdateLocked(resource, ns, next, true);
  return UpdateLocked(resource, ns, next, false);
}

absl::StatusOr<Object> FakeClient::Delete(const std::string& resource, const std::string& ns, const std::string& name,
                                          const client::DeleteOptions& opts) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(Injected("delete"));
  return DeleteLocked(resource, ns, name, opts);
}

absl::StatusOr<Object> FakeClient::DeleteLocked(const std::string& resource, const std::string& ns,
                                                const std::string& name, const client::DeleteOptions& opts) {
  auto& bucket = store_[resource];
  std::string key = objects::Key(objects::IsNamespaced(resource) ? ns : "", name);
  auto it = bucket.find(key);
  if (it == bucket.end()) return absl::NotFoundError(absl::StrCat(resource, " \"", name, "\" not found"));
  Object obj = it->second.obj;
  auto* meta = MutableMeta(&obj);
  if (!opts.precondition_uid.empty() && opts.precondition_uid != meta->uid())
    return absl::AbortedError(absl::StrCat("Precondition failed: UID in precondition: ", opts.precondition_uid,
                                           ", UID in object meta: ", meta->uid()));
  if (!opts.precondition_resource_version.empty() && opts.precondition_resource_version != meta->resource_version())
    return absl::AbortedError("Precondition failed: resourceVersion mismatch");
  bool changed = false;
  auto add_finalizer = [&](const std::string& f) {
    for (const auto& x : meta->finalizers())
      if (x == f) return;
    meta->add_finalizers(f);
    changed = true;
  };
  if (opts.propagation_policy == "Foreground") add_finalizer("foregroundDeletion");
  if (opts.propagation_policy == "Orphan") add_finalizer("orphan");
  bool graceful = false;
  if (obj.has_pod() && !obj.pod().spec().node_name().empty() &&
      !(opts.grace_period_seconds.has_value() && *opts.grace_period_seconds == 0)) {
    graceful = true;
    int64_t grace = opts.grace_period_seconds.value_or(
        obj.pod().spec().has_termination_grace_period_seconds() ? obj.pod().spec().termination_grace_period_seconds()
                                                                 : 30);
    if (!meta->has_deletion_grace_period_seconds() || meta->deletion_grace_period_seconds() > grace) {
      meta->set_deletion_grace_period_seconds(grace);
      changed = true;
    }
  }
  if (obj.has_namespace_()) {
    graceful = !obj.namespace_().spec().finalizers().empty();
    if (obj.namespace_().status().phase() != "Terminating") {
      obj.mutable_namespace_()->mutable_status()->set_phase("Terminating");
      changed = true;
    }
  }
  if (!graceful && meta->finalizers().empty()) {
    RemoveLocked(resource, key);
    return obj;
  }
  if (meta->deletion_timestamp().empty()) {
    meta->set_deletion_timestamp(objects::Now());
    changed = true;
  }
  if (!changed) return obj;
  rev_++;
  meta->set_resource_version(std::to_string(rev_));
  it->second.obj = obj;
  writes_["delete"]++;
  EmitLocked(resource, "MODIFIED", obj);
  return obj;
}

}  // namespace skiff::fakeclient
