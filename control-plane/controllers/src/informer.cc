#include "skiff/controllers/informer.h"

#include <chrono>

#include "skiff/common/log.h"
#include "skiff/controllers/objects.h"

namespace skiff::controllers {

Informer::Informer(std::shared_ptr<client::Client> api, std::string resource, std::string ns,
                   client::ListOptions opts)
    : api_(std::move(api)), resource_(std::move(resource)), ns_(std::move(ns)), opts_(std::move(opts)) {}

Informer::~Informer() { Stop(); }

void Informer::AddHandler(EventHandler h) { handlers_.push_back(std::move(h)); }

void Informer::Start() {
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void Informer::Stop() {
  stop_ = true;
  {
    std::lock_guard<std::mutex> lock(stream_mu_);
    if (stream_ != nullptr) stream_->Cancel();
  }
  sync_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Informer::WaitForSync(const std::atomic<bool>& stop) {
  std::unique_lock<std::mutex> lock(mu_);
  while (!synced_ && !stop && !stop_) sync_cv_.wait_for(lock, std::chrono::milliseconds(50));
  return synced_;
}

ObjectPtr Informer::Get(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = items_.find(key);
  return it == items_.end() ? nullptr : it->second;
}

std::vector<ObjectPtr> Informer::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ObjectPtr> out;
  out.reserve(items_.size());
  for (const auto& [k, v] : items_) out.push_back(v);
  return out;
}

std::vector<ObjectPtr> Informer::ListNamespace(const std::string& ns) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ObjectPtr> out;
  std::string prefix = ns + "/";
  for (auto it = items_.lower_bound(prefix); it != items_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
       ++it)
    out.push_back(it->second);
  return out;
}

size_t Informer::Size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return items_.size();
}

void Informer::Replace(const api::v1::ObjectList& list) {
  std::map<std::string, ObjectPtr> fresh;
  for (const auto& o : list.items()) fresh[objects::Key(o)] = std::make_shared<const api::v1::Object>(o);
  std::vector<std::pair<ObjectPtr, ObjectPtr>> updates;  // old, new (old null = add)
  std::vector<ObjectPtr> deletes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [k, v] : items_)
      if (!fresh.count(k)) deletes.push_back(v);
    for (const auto& [k, v] : fresh) {
      auto it = items_.find(k);
      if (it == items_.end()) {
        updates.emplace_back(nullptr, v);
      } else if (objects::Meta(*it->second).resource_version() != objects::Meta(*v).resource_version()) {
        updates.emplace_back(it->second, v);
      }
    }
    items_ = std::move(fresh);
  }
  for (const auto& d : deletes)
    for (auto& h : handlers_)
      if (h.on_delete) h.on_delete(d);
  for (const auto& [o, n] : updates)
    for (auto& h : handlers_) {
      if (o == nullptr && h.on_add) h.on_add(n);
      if (o != nullptr && h.on_update) h.on_update(o, n);
    }
}

void Informer::Apply(const api::v1::WatchEvent& ev) {
  auto obj = std::make_shared<const api::v1::Object>(ev.object());
  std::string key = objects::Key(*obj);
  ObjectPtr old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = items_.find(key);
    if (it != items_.end()) old = it->second;
    if (ev.type() == "DELETED") {
      if (it != items_.end()) items_.erase(it);
    } else {
      items_[key] = obj;
    }
  }
  for (auto& h : handlers_) {
    if (ev.type() == "DELETED") {
      if (h.on_delete) h.on_delete(old ? old : obj);
    } else if (old == nullptr) {
      if (h.on_add) h.on_add(obj);
    } else if (h.on_update) {
      h.on_update(old, obj);
    }
  }
}

void Informer::Loop() {
  int failures = 0;
  while (!stop_) {
    auto list = api_->List(resource_, ns_, opts_);
    if (!list.ok()) {
      if (stop_) break;
      log::Warn("informer list failed ", log::Field("resource", resource_), " ", list.status());
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100 << std::min(failures++, 4), 1000)));
      continue;
    }
    Replace(*list);
    {
      std::lock_guard<std::mutex> lock(mu_);
      synced_ = true;
    }
    sync_cv_.notify_all();
    client::ListOptions wopts = opts_;
    // (One assignment of either string: GCC 12 at -O3 warns -Wrestrict on
    // assigning a literal over a just-assigned string.)
    wopts.resource_version = list->resource_version().empty() ? std::string("0") : list->resource_version();
    auto stream = api_->Watch(resource_, ns_, wopts);
    if (!stream.ok()) {
      if (stop_) break;
      log::Warn("informer watch failed ", log::Field("resource", resource_), " ", stream.status());
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100 << std::min(failures++, 4), 1000)));
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(stream_mu_);
      stream_ = stream->get();
      if (stop_) stream_->Cancel();
    }
    failures = 0;
    while (!stop_) {
      auto ev = (*stream)->Next();
      if (!ev.ok()) {
        if (!stop_ && ev.status().code() != absl::StatusCode::kOutOfRange)
          log::Debug("informer watch ended ", log::Field("resource", resource_), " ", ev.status());
        break;
      }
      if (ev->type() == "BOOKMARK") continue;
      if (ev->type() == "ERROR") break;
      Apply(*ev);
    }
    {
      std::lock_guard<std::mutex> lock(stream_mu_);
      stream_ = nullptr;
    }
  }
}

Informer* InformerFactory::For(const std::string& resource) {
  auto& inf = informers_[resource];
  if (!inf) inf = std::make_unique<Informer>(api_, resource);
  return inf.get();
}

void InformerFactory::StartAll() {
  for (auto& [r, inf] : informers_) inf->Start();
}

void InformerFactory::StopAll() {
  for (auto& [r, inf] : informers_) inf->Stop();
}

bool InformerFactory::WaitForSync(const std::atomic<bool>& stop) {
  for (auto& [r, inf] : informers_)
    if (!inf->WaitForSync(stop)) return false;
  return true;
}

}  // namespace skiff::controllers
