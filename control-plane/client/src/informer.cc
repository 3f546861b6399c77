#include "skiff/client/informer.h"

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/message_differencer.h"

namespace skiff::client {

namespace {

const api::v1::ObjectMeta& MetaOf(const Object& obj) {
  if (obj.kind_case() == Object::KIND_NOT_SET) return api::v1::ObjectMeta::default_instance();
  const auto* f = obj.GetDescriptor()->FindFieldByNumber(obj.kind_case());
  const auto& inner = obj.GetReflection()->GetMessage(obj, f);
  const auto* mf = inner.GetDescriptor()->FindFieldByName("metadata");
  return static_cast<const api::v1::ObjectMeta&>(inner.GetReflection()->GetMessage(inner, mf));
}

std::string KeyOf(const Object& obj) {
  const auto& m = MetaOf(obj);
  return absl::StrCat(m.namespace_(), "/", m.name());
}

}  // namespace

Informer::Informer(Client* client, std::string resource, std::string ns, ListOptions opts, InformerHandlers handlers)
    : client_(client), resource_(std::move(resource)), ns_(std::move(ns)), opts_(std::move(opts)),
      handlers_(std::move(handlers)) {}

Informer::~Informer() { Stop(); }

void Informer::Start() {
  std::lock_guard<std::mutex> l(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void Informer::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
    if (watch_) watch_->Cancel();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Informer::WaitForSync(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  return cv_.wait_for(l, timeout, [&] { return synced_; });
}

bool Informer::HasSynced() {
  std::lock_guard<std::mutex> l(mu_);
  return synced_;
}

std::optional<Object> Informer::Get(const std::string& ns, const std::string& name) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = items_.find(absl::StrCat(ns, "/", name));
  if (it == items_.end()) return std::nullopt;
  return it->second;
}

std::vector<Object> Informer::List() {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<Object> out;
  out.reserve(items_.size());
  for (const auto& [k, v] : items_) out.push_back(v);
  return out;
}

std::string Informer::LastResourceVersion() {
  std::lock_guard<std::mutex> l(mu_);
  return rv_;
}

absl::Status Informer::Relist() {
  ++relists_;
  std::map<std::string, Object> fresh;
  ListOptions lo = opts_;
  lo.limit = 500;
  lo.continue_token.clear();
  lo.resource_version.clear();
  std::string rv;
  while (true) {
    auto page = client_->List(resource_, ns_, lo);
    if (!page.ok()) return page.status();
    if (rv.empty()) rv = page->resource_version();
    for (const auto& o : page->items()) fresh[KeyOf(o)] = o;
    if (page->continue_().empty()) break;
    lo.continue_token = page->continue_();
  }
  std::vector<Object> added, deleted;
  std::vector<std::pair<Object, Object>> updated;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [k, o] : fresh) {
      auto it = items_.find(k);
      if (it == items_.end()) added.push_back(o);
      else if (MetaOf(it->second).resource_version() != MetaOf(o).resource_version()) updated.push_back({it->second, o});
    }
    for (const auto& [k, o] : items_)
      if (!fresh.count(k)) deleted.push_back(o);
    items_ = std::move(fresh);
    rv_ = rv;
  }
  for (const auto& o : added)
    if (handlers_.on_add) handlers_.on_add(o);
  for (const auto& [a, b] : updated)
    if (handlers_.on_update) handlers_.on_update(a, b);
  for (const auto& o : deleted)
    if (handlers_.on_delete) handlers_.on_delete(o);
  {
    std::lock_guard<std::mutex> l(mu_);
    synced_ = true;
  }
  cv_.notify_all();
  return absl::OkStatus();
}

void Informer::Apply(const std::string& type, const Object& obj) {
  std::string key = KeyOf(obj);
  std::optional<Object> old;
  {
    std::lock_guard<std::mutex> l(mu_);
    rv_ = MetaOf(obj).resource_version();
    if (type == "BOOKMARK") return;
    auto it = items_.find(key);
    if (it != items_.end()) old = it->second;
    if (type == "DELETED") items_.erase(key);
    else items_[key] = obj;
  }
  if (type == "DELETED") {
    if (handlers_.on_delete) handlers_.on_delete(obj);
  } else if (old) {
    if (handlers_.on_update) handlers_.on_update(*old, obj);
  } else {
    if (handlers_.on_add) handlers_.on_add(obj);
  }
}

void Informer::Run() {
  bool need_list = true;
  int backoff_ms = 100;
  auto sleep = [&](int ms) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::milliseconds(ms), [&] { return stop_; });
  };
  while (true) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_) return;
    }
    if (need_list) {
      absl::Status st = Relist();
      if (!st.ok()) {
        sleep(backoff_ms);
        backoff_ms = std::min(backoff_ms * 2, 5000);
        continue;
      }
      need_list = false;
    }
    ListOptions wo = opts_;
    wo.resource_version = LastResourceVersion();
    auto w = client_->Watch(resource_, ns_, wo);
    if (!w.ok()) {
      if (w.status().code() == absl::StatusCode::kOutOfRange) need_list = true;
      sleep(backoff_ms);
      backoff_ms = std::min(backoff_ms * 2, 5000);
      continue;
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_) return;
      watch_ = std::move(*w);
    }
    backoff_ms = 100;
    while (true) {
      auto ev = watch_->Next();
      if (!ev.ok()) {
        if (ev.status().code() == absl::StatusCode::kOutOfRange) need_list = true;
        break;
      }
      Apply(ev->type(), ev->object());
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      watch_.reset();
      if (stop_) return;
    }
    sleep(50);
  }
}

}  // namespace skiff::client
