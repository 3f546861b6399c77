#include "skiff/apiserver/watch_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"
#include "skiff/common/log.h"

namespace skiff::apiserver {

bool WatchFilter::Matches(const Object& obj) const {
  const ObjectMeta& m = Meta(obj);
  if (!ns.empty() && m.namespace_() != ns) return false;
  if (!labels.empty() && !labels.Matches(m.labels())) return false;
  if (!fields.empty() && !fields.Matches(obj)) return false;
  return true;
}

absl::StatusOr<std::optional<CachedEvent>> CacheWatcher::Next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, timeout, [&] { return !queue_.empty() || !terminated_.ok(); });
  if (!queue_.empty()) {
    CachedEvent ev = std::move(queue_.front());
    queue_.pop_front();
    return std::optional<CachedEvent>(std::move(ev));
  }
  if (!terminated_.ok()) return terminated_;
  return std::optional<CachedEvent>();
}

int64_t CacheWatcher::progress_revision() {
  std::lock_guard<std::mutex> l(mu_);
  // With an event queued (it may have arrived after the caller's Next timed
  // out) a bookmark at progress_rev_ would overtake it.
  if (!queue_.empty()) return 0;
  return progress_rev_;
}

WatchCache::WatchCache(EtcdClient* etcd, const ResourceInfo& info, Options opts)
    : etcd_(etcd), info_(info), opts_(opts), prefix_(StoragePrefix(info, "")) {}

WatchCache::~WatchCache() { Stop(); }

absl::Status WatchCache::Start() {
  RETURN_IF_ERROR(Init());
  ticker_ = std::thread([this] { Ticker(); });
  return absl::OkStatus();
}

void WatchCache::Stop() {
  std::unique_ptr<EtcdWatch> w;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return;
    stopping_ = true;
    w = std::move(watch_);
    for (auto& cw : watchers_) {
      std::lock_guard<std::mutex> wl(cw->mu_);
      cw->terminated_ = absl::UnavailableError("watch cache stopped");
      cw->cv_.notify_all();
    }
    watchers_.clear();
  }
  ticker_cv_.notify_all();
  if (w) w->Stop();
  if (ticker_.joinable()) ticker_.join();
}

static std::shared_ptr<const Object> Decode(const mvccpb::KeyValue& kv) {
  auto obj = std::make_shared<Object>();
  if (!obj->ParseFromString(kv.value())) return nullptr;
  if (ObjectMeta* m = MutableMeta(obj.get())) m->set_resource_version(std::to_string(kv.mod_revision()));
  return obj;
}

absl::Status WatchCache::Init() {
  auto now = etcd_->Range(prefix_, PrefixEnd(prefix_), 0, 1, true);
  if (!now.ok()) return now.status();
  int64_t target = now->revision;
  std::vector<int64_t> candidates;
  for (int64_t back : {opts_.history_revisions, opts_.history_revisions / 10, int64_t{0}}) {
    int64_t c = std::max<int64_t>(1, target - back);
    if (candidates.empty() || candidates.back() != c) candidates.push_back(c);
  }
  absl::StatusOr<EtcdRange> snap = absl::UnknownError("no snapshot");
  int64_t start = target;
  for (int64_t c : candidates) {
    snap = etcd_->Range(prefix_, PrefixEnd(prefix_), c, 0);
    if (snap.ok()) {
      start = c;
      break;
    }
    if (snap.status().code() != absl::StatusCode::kOutOfRange &&
        snap.status().message().find("compacted") == absl::string_view::npos)
      return snap.status();
  }
  if (!snap.ok()) return snap.status();
  {
    std::lock_guard<std::mutex> l(mu_);
    objects_.clear();
    for (const auto& kv : snap->kvs) {
      auto obj = Decode(kv);
      if (obj) objects_[kv.key()] = obj;
    }
    window_.clear();
    window_start_ = start;
    rev_ = start;
    last_event_rev_ = start;
    progress_pending_ = 0;
    needs_reinit_ = false;
  }
  watch_ = std::make_unique<EtcdWatch>(
      etcd_, prefix_, start + 1, [this](const std::vector<mvccpb::Event>& evs, int64_t hr) { OnEvents(evs, hr); },
      [this](int64_t cr) { OnCompacted(cr); });
  // Catch up with the present before serving.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    watch_->RequestProgress();
    if (WaitForRevision(target, std::chrono::milliseconds(100))) return absl::OkStatus();
  }
  return absl::UnavailableError(absl::StrCat("watch cache for ", info_.resource, " did not catch up with revision ", target));
}

void WatchCache::Ticker() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stopping_) {
    ticker_cv_.wait_for(l, std::chrono::milliseconds(500));
    if (stopping_) break;
    if (needs_reinit_) {
      auto old = std::move(watch_);
      l.unlock();
      if (old) old->Stop();
      old.reset();
      absl::Status st = Init();
      if (!st.ok()) log::Warn("watch cache reinit ", info_.resource, ": ", st);
      l.lock();
      continue;
    }
    if (watch_) {
      EtcdWatch* w = watch_.get();
      l.unlock();
      w->RequestProgress();
      l.lock();
    }
  }
}

void WatchCache::OnCompacted(int64_t compact_rev) {
  std::lock_guard<std::mutex> l(mu_);
  log::Warn("watch cache ", info_.resource, ": etcd history compacted at ", compact_rev, ", relisting");
  for (auto& cw : watchers_) {
    std::lock_guard<std::mutex> wl(cw->mu_);
    cw->terminated_ = absl::OutOfRangeError(
        absl::StrCat("too old resource version: ", cw->from_rev_, " (", compact_rev, ")"));
    cw->cv_.notify_all();
  }
  watchers_.clear();
  needs_reinit_ = true;
  ticker_cv_.notify_all();
}

void WatchCache::Push(CacheWatcher* w, CachedEvent ev, size_t max_queue) {
  std::lock_guard<std::mutex> l(w->mu_);
  if (!w->terminated_.ok()) return;
  if (w->queue_.size() >= max_queue) {
    w->terminated_ = absl::ResourceExhaustedError("watcher fell too far behind");
    w->queue_.clear();
  } else {
    w->queue_.push_back(std::move(ev));
  }
  w->cv_.notify_all();
}

void WatchCache::Dispatch(const Entry& e) {
  for (auto& w : watchers_) {
    if (e.rev <= w->from_rev_) continue;
    bool prev_match = e.prev && w->filter_.Matches(*e.prev);
    if (e.deleted) {
      if (prev_match) Push(w.get(), {"DELETED", e.obj}, opts_.max_queue);
    } else {
      bool cur_match = w->filter_.Matches(*e.obj);
      if (cur_match && prev_match) Push(w.get(), {"MODIFIED", e.obj}, opts_.max_queue);
      else if (cur_match) Push(w.get(), {"ADDED", e.obj}, opts_.max_queue);
      else if (prev_match) Push(w.get(), {"DELETED", e.obj}, opts_.max_queue);
    }
  }
}

void WatchCache::OnEvents(const std::vector<mvccpb::Event>& events, int64_t header_rev) {
  std::lock_guard<std::mutex> l(mu_);
  if (stopping_ || needs_reinit_) return;
  if (events.empty()) {
    // Progress: the revision reported by the previous response is now safe
    // to take as "everything up to it delivered" (see progress_pending_).
    if (progress_pending_ > rev_) rev_ = progress_pending_;
    progress_pending_ = header_rev;
  }
  for (const auto& ev : events) {
    int64_t rev = ev.kv().mod_revision();
    if (rev <= last_event_rev_) continue;  // replayed after a reconnect
    last_event_rev_ = rev;
    Entry e;
    e.rev = rev;
    auto it = objects_.find(ev.kv().key());
    if (ev.has_prev_kv() && !ev.prev_kv().value().empty()) e.prev = Decode(ev.prev_kv());
    else if (it != objects_.end()) e.prev = it->second;
    if (ev.type() == mvccpb::Event::DELETE) {
      if (!e.prev) {
        rev_ = std::max(rev_, rev);
        continue;
      }
      auto last = std::make_shared<Object>(*e.prev);
      MutableMeta(last.get())->set_resource_version(std::to_string(rev));
      e.obj = last;
      e.deleted = true;
      if (it != objects_.end()) objects_.erase(it);
    } else {
      e.obj = Decode(ev.kv());
      if (!e.obj) continue;
      e.deleted = false;
      if (ev.kv().create_revision() == rev) e.prev = nullptr;
      objects_[ev.kv().key()] = e.obj;
    }
    Dispatch(e);
    window_.push_back(std::move(e));
    rev_ = std::max(rev_, rev);
    while (window_.size() > opts_.capacity) {
      window_start_ = window_.front().rev;
      window_.pop_front();
    }
  }
  for (auto& w : watchers_) {
    std::lock_guard<std::mutex> wl(w->mu_);
    w->progress_rev_ = std::max(w->from_rev_, rev_);
    w->cv_.notify_all();
  }
  rev_cv_.notify_all();
}

absl::StatusOr<std::shared_ptr<CacheWatcher>> WatchCache::Watch(WatchFilter filter, int64_t from_rev) {
  auto w = std::make_shared<CacheWatcher>();
  w->filter_ = std::move(filter);
  std::lock_guard<std::mutex> l(mu_);
  if (stopping_ || needs_reinit_) return absl::UnavailableError("watch cache is not ready, retry");
  if (from_rev < 0) {
    for (const auto& [k, obj] : objects_)
      if (w->filter_.Matches(*obj)) w->queue_.push_back({"ADDED", obj});
    w->initial_events_ = w->queue_.size();
    w->from_rev_ = rev_;
  } else {
    if (from_rev < window_start_)
      return absl::OutOfRangeError(absl::StrCat("too old resource version: ", from_rev, " (", window_start_ + 1, ")"));
    w->from_rev_ = from_rev;
    for (const auto& e : window_) {
      if (e.rev <= from_rev) continue;
      bool prev_match = e.prev && w->filter_.Matches(*e.prev);
      if (e.deleted) {
        if (prev_match) w->queue_.push_back({"DELETED", e.obj});
      } else {
        bool cur_match = w->filter_.Matches(*e.obj);
        if (cur_match && prev_match) w->queue_.push_back({"MODIFIED", e.obj});
        else if (cur_match) w->queue_.push_back({"ADDED", e.obj});
        else if (prev_match) w->queue_.push_back({"DELETED", e.obj});
      }
    }
  }
  w->progress_rev_ = std::max(w->from_rev_, rev_);
  watchers_.push_back(w);
  return w;
}

void WatchCache::Unwatch(const std::shared_ptr<CacheWatcher>& w) {
  std::lock_guard<std::mutex> l(mu_);
  for (size_t i = 0; i < watchers_.size(); ++i) {
    if (watchers_[i] == w) {
      watchers_[i] = watchers_.back();
      watchers_.pop_back();
      return;
    }
  }
}

std::vector<std::shared_ptr<const Object>> WatchCache::List(const WatchFilter& filter, int64_t* rev) {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::shared_ptr<const Object>> out;
  for (const auto& [k, obj] : objects_)
    if (filter.Matches(*obj)) out.push_back(obj);
  *rev = rev_;
  return out;
}

std::shared_ptr<const Object> WatchCache::Lookup(const std::string& key) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = objects_.find(key);
  return it == objects_.end() ? nullptr : it->second;
}

int64_t WatchCache::revision() {
  std::lock_guard<std::mutex> l(mu_);
  return rev_;
}

bool WatchCache::WaitForRevision(int64_t rev, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  return rev_cv_.wait_for(l, timeout, [&] { return rev_ >= rev || stopping_; }) && rev_ >= rev;
}

size_t WatchCache::watcher_count() {
  std::lock_guard<std::mutex> l(mu_);
  return watchers_.size();
}

size_t WatchCache::object_count() {
  std::lock_guard<std::mutex> l(mu_);
  return objects_.size();
}

}  // namespace skiff::apiserver
