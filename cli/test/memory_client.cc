#include "memory_client.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "print.h"
#include "skiff/manifest/manifest.h"

namespace skiff::cli::testing {

using api::v1::Object;
using manifest::KindInfo;

namespace {

const KindInfo* ByResource(const std::string& resource) { return manifest::FindResource(resource); }

std::string Qualified(const KindInfo& k) { return k.group.empty() ? k.resource : absl::StrCat(k.resource, ".", k.group); }

std::string Key(const std::string& ns, const std::string& name) { return absl::StrCat(ns, "/", name); }

bool FieldsMatch(const std::string& selector, const Object& obj) {
  if (selector.empty()) return true;
  for (auto term : absl::StrSplit(selector, ',')) {
    std::string t(term);
    size_t eq = t.find('=');
    if (eq == std::string::npos) continue;
    bool neg = eq > 0 && t[eq - 1] == '!';
    std::string key = t.substr(0, neg ? eq - 1 : eq), want = t.substr(t[eq + 1] == '=' ? eq + 2 : eq + 1);
    std::string have;
    const auto& m = manifest::Meta(obj);
    if (key == "metadata.name") have = m.name();
    else if (key == "metadata.namespace") have = m.namespace_();
    else if (key == "spec.nodeName" && obj.has_pod()) have = obj.pod().spec().node_name();
    else if (key == "status.phase" && obj.has_pod()) have = obj.pod().status().phase();
    if ((have == want) == neg) return false;
  }
  return true;
}

class MemoryWatch : public client::WatchStream {
 public:
  MemoryWatch(MemoryApi* api, std::shared_ptr<MemoryApi::Watcher> w, std::mutex* mu, std::condition_variable* cv,
              client::ListOptions opts)
      : api_(api), w_(std::move(w)), mu_(mu), cv_(cv), opts_(std::move(opts)) {}
  absl::StatusOr<api::v1::WatchEvent> Next() override {
    std::unique_lock<std::mutex> lock(*mu_);
    while (true) {
      cv_->wait(lock, [&] { return w_->cancelled || !w_->events.empty(); });
      if (w_->cancelled) return absl::CancelledError("watch cancelled");
      api::v1::WatchEvent ev = w_->events.front();
      w_->events.pop_front();
      auto sel = ParseSelector(opts_.label_selector);
      if (sel.ok() && !SelectorMatches(*sel, manifest::Meta(ev.object()).labels())) continue;
      if (!FieldsMatch(opts_.field_selector, ev.object())) continue;
      return ev;
    }
  }
  void Cancel() override {
    std::lock_guard<std::mutex> lock(*mu_);
    w_->cancelled = true;
    cv_->notify_all();
  }

 private:
  MemoryApi* api_;
  std::shared_ptr<MemoryApi::Watcher> w_;
  std::mutex* mu_;
  std::condition_variable* cv_;
  client::ListOptions opts_;
};

}  // namespace

class MemoryClient : public client::Client {
 public:
  explicit MemoryClient(MemoryApi* api) : api_(api) {}
  absl::StatusOr<Object> Create(const std::string& r, const std::string& ns, const Object& obj) override {
    return api_->Create(r, ns, obj);
  }
  absl::StatusOr<Object> Get(const std::string& r, const std::string& ns, const std::string& name) override {
    return api_->Get(r, ns, name);
  }
  absl::StatusOr<api::v1::ObjectList> List(const std::string& r, const std::string& ns,
                                           const client::ListOptions& opts) override {
    return api_->List(r, ns, opts);
  }
  absl::StatusOr<std::unique_ptr<client::WatchStream>> Watch(const std::string& r, const std::string& ns,
                                                             const client::ListOptions& opts) override {
    return api_->Watch(r, ns, opts);
  }
  absl::StatusOr<Object> Update(const std::string& r, const std::string& ns, const Object& obj) override {
    return api_->Update(r, ns, obj, false);
  }
  absl::StatusOr<Object> UpdateStatus(const std::string& r, const std::string& ns, const Object& obj) override {
    return api_->Update(r, ns, obj, true);
  }
  absl::StatusOr<Object> Patch(const std::string& r, const std::string& ns, const std::string& name,
                               const std::string& patch, const std::string&) override {
    return api_->Patch(r, ns, name, patch);
  }
  absl::StatusOr<Object> Delete(const std::string& r, const std::string& ns, const std::string& name,
                                const client::DeleteOptions&) override {
    return api_->Delete(r, ns, name);
  }

 private:
  MemoryApi* api_;
};

namespace {

class MemoryNodeApi : public NodeApi {
 public:
  explicit MemoryNodeApi(MemoryApi* api) : api_(api) {}
  absl::Status Logs(const api::v1::LogsRequest& req, const std::function<void(const std::string&)>& sink) override {
    auto pod = api_->Get("pods", req.namespace_(), req.pod());
    if (!pod.ok()) return pod.status();
    std::string text = api_->logs;
    if (req.has_tail_lines()) {
      std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
      size_t n = static_cast<size_t>(req.tail_lines());
      text.clear();
      for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) text += lines[i] + "\n";
    }
    sink(absl::StrCat("[", req.container(), "] "));
    sink(text);
    return absl::OkStatus();
  }
  absl::StatusOr<int> Exec(const api::v1::ExecInput& first, int, std::ostream& out, std::ostream&) override {
    // "echo" prints its arguments; "exit N" returns N.
    if (first.command_size() >= 1 && first.command(0) == "exit") return std::stoi(first.command(1));
    for (int i = 1; i < first.command_size(); ++i) out << (i > 1 ? " " : "") << first.command(i);
    out << "\n";
    return 0;
  }
  absl::Status PortForward(const std::string&, const std::string&, int, int) override {
    return absl::UnimplementedError("no port-forward in memory");
  }
  absl::StatusOr<api::v1::StatsResponse> NodeStats(const std::string& node_name) override {
    if (api_->stats_unimplemented) return absl::UnimplementedError("unknown method NodeStats");
    auto it = api_->stats.find(node_name);
    if (it == api_->stats.end()) return absl::UnavailableError("kubelet of node " + node_name + " unreachable");
    return it->second;
  }
  absl::StatusOr<api::v1::VersionInfo> Version() override {
    api::v1::VersionInfo v;
    v.set_git_version("v0.1.0-memory");
    return v;
  }
  absl::StatusOr<api::v1::CreateBootstrapTokenResponse> CreateBootstrapToken(
      const api::v1::CreateBootstrapTokenRequest&) override {
    api::v1::CreateBootstrapTokenResponse r;
    r.set_token("abcdef.0123456789abcdef");
    r.set_ca_cert_hash("sha256:00ff");
    return r;
  }

 private:
  MemoryApi* api_;
};

}  // namespace

std::unique_ptr<client::Client> MemoryApi::NewClient() { return std::make_unique<MemoryClient>(this); }
std::unique_ptr<NodeApi> MemoryApi::NewNodeApi() { return std::make_unique<MemoryNodeApi>(this); }

void MemoryApi::Put(const Object& obj) {
  const KindInfo* k = manifest::KindOf(obj);
  std::lock_guard<std::mutex> lock(mu_);
  Object o = obj;
  auto* m = manifest::MutableMeta(&o);
  if (m->resource_version().empty()) m->set_resource_version(std::to_string(++rev_));
  store_[k->resource][Key(m->namespace_(), m->name())] = o;
}

std::optional<Object> MemoryApi::Find(const std::string& resource, const std::string& ns, const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& objs = store_[resource];
  auto it = objs.find(Key(ns, name));
  if (it == objs.end()) return std::nullopt;
  return it->second;
}

int64_t MemoryApi::writes() const { return writes_; }

void MemoryApi::CancelAllWatches() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& weak : watchers_)
    if (auto w = weak.lock()) w->cancelled = true;
  cv_.notify_all();
}

void MemoryApi::Emit(const std::string& resource, const std::string& type, const Object& obj) {
  for (auto& weak : watchers_) {
    auto w = weak.lock();
    if (!w || w->resource != resource) continue;
    if (!w->ns.empty() && w->ns != manifest::Meta(obj).namespace_()) continue;
    api::v1::WatchEvent ev;
    ev.set_type(type);
    *ev.mutable_object() = obj;
    w->events.push_back(ev);
  }
  cv_.notify_all();
}

absl::StatusOr<Object> MemoryApi::Create(const std::string& resource, const std::string& ns, Object obj) {
  const KindInfo* k = ByResource(resource);
  std::lock_guard<std::mutex> lock(mu_);
  auto* m = manifest::MutableMeta(&obj);
  if (k->namespaced) m->set_namespace_(ns);
  if (m->name().empty() && !m->generate_name().empty()) m->set_name(absl::StrCat(m->generate_name(), rev_ + 1));
  if (m->name().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(k->kind, " \"\" is invalid: metadata.name: Required value: name or "
                                                            "generateName is required"));
  }
  if (obj.has_pod() && obj.pod().spec().containers_size() > 0 && obj.pod().spec().containers(0).image().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("Pod \"", m->name(),
                                                   "\" is invalid: spec.containers[0].image: Required value"));
  }
  auto& objs = store_[resource];
  if (objs.count(Key(ns, m->name()))) {
    return absl::AlreadyExistsError(absl::StrCat(Qualified(*k), " \"", m->name(), "\" already exists"));
  }
  m->set_resource_version(std::to_string(++rev_));
  m->set_uid(absl::StrCat("uid-", rev_));
  m->set_creation_timestamp(fixed_time);
  m->set_generation(1);
  objs[Key(ns, m->name())] = obj;
  ++writes_;
  Emit(resource, "ADDED", obj);
  return obj;
}

absl::StatusOr<Object> MemoryApi::Get(const std::string& resource, const std::string& ns, const std::string& name) {
  const KindInfo* k = ByResource(resource);
  std::lock_guard<std::mutex> lock(mu_);
  auto& objs = store_[resource];
  auto it = objs.find(Key(ns, name));
  if (it == objs.end()) return absl::NotFoundError(absl::StrCat(Qualified(*k), " \"", name, "\" not found"));
  return it->second;
}

absl::StatusOr<api::v1::ObjectList> MemoryApi::List(const std::string& resource, const std::string& ns,
                                                    const client::ListOptions& opts) {
  auto sel = ParseSelector(opts.label_selector);
  if (!sel.ok()) return absl::FailedPreconditionError(sel.status().message());
  std::lock_guard<std::mutex> lock(mu_);
  api::v1::ObjectList out;
  for (const auto& [key, obj] : store_[resource]) {
    if (!ns.empty() && manifest::Meta(obj).namespace_() != ns) continue;
    if (!SelectorMatches(*sel, manifest::Meta(obj).labels())) continue;
    if (!FieldsMatch(opts.field_selector, obj)) continue;
    *out.add_items() = obj;
  }
  out.set_resource_version(std::to_string(rev_));
  return out;
}

absl::StatusOr<std::unique_ptr<client::WatchStream>> MemoryApi::Watch(const std::string& resource,
                                                                      const std::string& ns,
                                                                      const client::ListOptions& opts) {
  std::lock_guard<std::mutex> lock(mu_);
  auto w = std::make_shared<Watcher>();
  w->resource = resource;
  w->ns = ns;
  if (opts.resource_version.empty() || opts.resource_version == "0") {
    for (const auto& [key, obj] : store_[resource]) {
      if (!ns.empty() && manifest::Meta(obj).namespace_() != ns) continue;
      api::v1::WatchEvent ev;
      ev.set_type("ADDED");
      *ev.mutable_object() = obj;
      w->events.push_back(ev);
    }
  }
  watchers_.push_back(w);
  return std::unique_ptr<client::WatchStream>(std::make_unique<MemoryWatch>(this, w, &mu_, &cv_, opts));
}

absl::StatusOr<Object> MemoryApi::Update(const std::string& resource, const std::string& ns, Object obj, bool status) {
  const KindInfo* k = ByResource(resource);
  std::lock_guard<std::mutex> lock(mu_);
  auto* m = manifest::MutableMeta(&obj);
  auto& objs = store_[resource];
  auto it = objs.find(Key(ns, m->name()));
  if (it == objs.end()) return absl::NotFoundError(absl::StrCat(Qualified(*k), " \"", m->name(), "\" not found"));
  const auto& old = manifest::Meta(it->second);
  if (!m->resource_version().empty() && m->resource_version() != old.resource_version()) {
    return absl::AbortedError(absl::StrCat("Operation cannot be fulfilled on ", Qualified(*k), " \"", m->name(),
                                           "\": the object has been modified; please apply your changes to the "
                                           "latest version and try again"));
  }
  m->set_uid(old.uid());
  m->set_creation_timestamp(old.creation_timestamp());
  m->set_generation(old.generation() + (status ? 0 : 1));
  m->set_resource_version(std::to_string(++rev_));
  it->second = obj;
  ++writes_;
  Emit(resource, "MODIFIED", obj);
  return obj;
}

absl::StatusOr<Object> MemoryApi::Patch(const std::string& resource, const std::string& ns, const std::string& name,
                                        const std::string& patch) {
  auto cur = Get(resource, ns, name);
  if (!cur.ok()) return cur.status();
  auto p = manifest::ParseValue(patch, "patch");
  if (!p.ok()) return absl::FailedPreconditionError(p.status().message());
  auto merged = manifest::ApplyMergePatch(manifest::EncodeObject(*cur), *p);
  auto obj = manifest::DecodeObject(merged, "patch");
  if (!obj.ok()) return absl::FailedPreconditionError(obj.status().message());
  return Update(resource, ns, *obj, false);
}

absl::StatusOr<Object> MemoryApi::Delete(const std::string& resource, const std::string& ns, const std::string& name) {
  const KindInfo* k = ByResource(resource);
  std::lock_guard<std::mutex> lock(mu_);
  auto& objs = store_[resource];
  auto it = objs.find(Key(ns, name));
  if (it == objs.end()) return absl::NotFoundError(absl::StrCat(Qualified(*k), " \"", name, "\" not found"));
  Object obj = it->second;
  objs.erase(it);
  ++rev_;
  ++writes_;
  Emit(resource, "DELETED", obj);
  return obj;
}

}  // namespace skiff::cli::testing
