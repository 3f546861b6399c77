// Watch fan-out. The writer publishes each committed batch to the synced
// watchers' queues under the hub lock, which costs a pointer push per
// interested watcher. A watcher whose consumer falls behind (queue too long)
// is dropped from the synced set and later replays the missed revisions from
// LMDB on its own stream's thread, so it never holds up writers or others.
#include <algorithm>

#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/store/errors.h"
#include "store_impl.h"

namespace skiff::store {
namespace {
constexpr size_t kMaxQueuedRevisions = 1024;
constexpr size_t kMaxResponseBytes = 1024 * 1024;
constexpr size_t kCatchUpRevisions = 512;
}  // namespace

bool Watcher::Matches(const std::string& k) const {
  if (end.empty()) return k == key;
  if (end.size() == 1 && end[0] == '\0') return k >= key;
  return k >= key && k < end;
}

void WatchHub::Publish(const std::vector<RevEventsPtr>& batch) {
  if (batch.empty() || synced.empty()) return;
  std::vector<Watcher*> demoted;
  std::set<StreamImpl*> wake;
  for (Watcher* w : synced) {
    std::lock_guard<std::mutex> lk(w->stream->mu_);
    for (const auto& rev : batch) {
      if (rev->rev < w->min_rev) continue;
      bool any = false;
      for (const auto& ev : rev->events) {
        if (w->Matches(ev.kv().key())) {
          any = true;
          break;
        }
      }
      if (!any) continue;
      if (w->queue.size() >= kMaxQueuedRevisions) {
        // Too slow: stop buffering and replay from history later.
        w->synced = false;
        w->next_rev = rev->rev;
        demoted.push_back(w);
        slow_watchers++;
        break;
      }
      w->queue.push_back(rev);
    }
    wake.insert(w->stream);
  }
  for (Watcher* w : demoted) synced.erase(w);
  for (StreamImpl* s : wake) s->cv_.notify_all();
}

void WatchHub::ProgressTick() {
  std::lock_guard<std::mutex> lk(mu);
  for (StreamImpl* s : streams) {
    std::lock_guard<std::mutex> slk(s->mu_);
    bool any = false;
    for (auto& [id, w] : s->watchers_) {
      if (!w->progress_notify) continue;
      if (w->synced && w->queue.empty() && !w->sent_since_tick) {
        etcdserverpb::WatchResponse r;
        *r.mutable_header() = store_->Header();
        r.mutable_header()->set_revision(rev);
        r.set_watch_id(w->id);
        s->control_.push_back(std::move(r));
        any = true;
      }
      w->sent_since_tick = false;
    }
    if (any) s->cv_.notify_all();
  }
}

StreamImpl::StreamImpl(StoreImpl* store) : link_(store->link_), store_(store) {
  store_->watchers_seen_.store(true, std::memory_order_release);
  std::lock_guard<std::mutex> lk(store_->hub_.mu);
  store_->hub_.streams.insert(this);
}

StreamImpl::~StreamImpl() {
  std::shared_lock<std::shared_mutex> alive(link_->mu);
  if (link_->store == nullptr) return;  // the store went first and detached us
  std::lock_guard<std::mutex> lk(store_->hub_.mu);
  store_->hub_.streams.erase(this);
  std::lock_guard<std::mutex> slk(mu_);
  for (auto& [id, w] : watchers_) store_->hub_.synced.erase(w.get());
  watchers_.clear();
}

std::unique_ptr<WatchStream> StoreImpl::NewWatchStream() { return std::make_unique<StreamImpl>(this); }

void StreamImpl::Detach() {
  std::lock_guard<std::mutex> lk(mu_);
  closed_ = true;
  cv_.notify_all();
}

void StreamImpl::Create(const etcdserverpb::WatchCreateRequest& req) {
  std::shared_lock<std::shared_mutex> alive(link_->mu);
  if (link_->store == nullptr) return;
  std::lock_guard<std::mutex> hlk(store_->hub_.mu);
  std::lock_guard<std::mutex> lk(mu_);
  etcdserverpb::WatchResponse resp;
  *resp.mutable_header() = store_->Header();
  resp.mutable_header()->set_revision(store_->hub_.rev);
  int64_t id = req.watch_id();
  if (id != 0 && watchers_.contains(id)) {
    resp.set_watch_id(id);
    resp.set_created(true);
    resp.set_canceled(true);
    resp.set_cancel_reason("mvcc: duplicate watch ID");
    control_.push_back(std::move(resp));
    cv_.notify_all();
    return;
  }
  if (id == 0) {
    while (watchers_.contains(next_id_)) ++next_id_;
    id = next_id_++;
  }
  auto w = std::make_shared<Watcher>();
  w->id = id;
  w->key = req.key();
  w->end = req.range_end();
  w->prev_kv = req.prev_kv();
  w->progress_notify = req.progress_notify();
  w->fragment = req.fragment();
  for (int f : req.filters()) {
    if (f == etcdserverpb::WatchCreateRequest::NOPUT) w->no_put = true;
    if (f == etcdserverpb::WatchCreateRequest::NODELETE) w->no_delete = true;
  }
  w->stream = this;
  const int64_t cur = store_->hub_.rev;
  if (req.start_revision() <= 0 || req.start_revision() > cur) {
    w->synced = true;
    w->min_rev = req.start_revision();
    store_->hub_.synced.insert(w.get());
  } else {
    w->synced = false;
    w->next_rev = req.start_revision();
    w->min_rev = req.start_revision();
  }
  resp.set_watch_id(id);
  resp.set_created(true);
  control_.push_back(std::move(resp));
  watchers_[id] = std::move(w);
  cv_.notify_all();
}

void StreamImpl::Cancel(int64_t watch_id) {
  std::shared_lock<std::shared_mutex> alive(link_->mu);
  if (link_->store == nullptr) return;
  std::lock_guard<std::mutex> hlk(store_->hub_.mu);
  std::lock_guard<std::mutex> lk(mu_);
  auto it = watchers_.find(watch_id);
  if (it == watchers_.end()) return;
  store_->hub_.synced.erase(it->second.get());
  watchers_.erase(it);
  etcdserverpb::WatchResponse resp;
  *resp.mutable_header() = store_->Header();
  resp.set_watch_id(watch_id);
  resp.set_canceled(true);
  control_.push_back(std::move(resp));
  cv_.notify_all();
}

void StreamImpl::RequestProgress() {
  std::lock_guard<std::mutex> lk(mu_);
  progress_requested_ = true;
  cv_.notify_all();
}

void StreamImpl::Close() {
  std::lock_guard<std::mutex> lk(mu_);
  closed_ = true;
  cv_.notify_all();
}

// Both hold link_->mu shared while they read (NextLocked may replay history
// from the store) and let go of it while they wait, so the store's destructor
// never waits for an idle stream.
bool StreamImpl::Next(etcdserverpb::WatchResponse* out) {
  for (;;) {
    std::shared_lock<std::shared_mutex> alive(link_->mu);
    std::unique_lock<std::mutex> lk(mu_);
    if (link_->store == nullptr) return false;
    if (NextLocked(lk, out)) return true;
    if (closed_) return false;
    alive.unlock();
    cv_.wait_for(lk, std::chrono::milliseconds(500));
  }
}

bool StreamImpl::NextFor(etcdserverpb::WatchResponse* out, int64_t timeout_ms, bool* closed) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    std::shared_lock<std::shared_mutex> alive(link_->mu);
    std::unique_lock<std::mutex> lk(mu_);
    if (link_->store == nullptr) {
      *closed = true;
      return false;
    }
    if (NextLocked(lk, out)) {
      *closed = false;
      return true;
    }
    if (closed_) {
      *closed = true;
      return false;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      *closed = false;
      return false;
    }
    alive.unlock();
    cv_.wait_until(lk, deadline);
  }
}

// Moves events of w's queue into out; false when the queue held nothing this
// watcher wants (the queue is then drained).
bool StreamImpl::BuildEvents(Watcher* w, etcdserverpb::WatchResponse* out) {
  size_t bytes = 0;
  int64_t last_rev = 0;
  while (!w->queue.empty()) {
    const RevEvents& rev = *w->queue.front();
    std::vector<const mvccpb::Event*> evs;
    for (const auto& ev : rev.events) {
      if (!w->Matches(ev.kv().key())) continue;
      if (ev.type() == mvccpb::Event::PUT && w->no_put) continue;
      if (ev.type() == mvccpb::Event::DELETE && w->no_delete) continue;
      evs.push_back(&ev);
    }
    if (rev.rev < w->min_rev) evs.clear();
    // A revision's events go out together (txn atomicity), unless the client
    // asked for fragments.
    size_t rev_bytes = 0;
    for (size_t i = w->frag_off; i < evs.size(); ++i) rev_bytes += evs[i]->ByteSizeLong();
    if (out->events_size() > 0 && bytes + rev_bytes > kMaxResponseBytes) break;
    size_t i = w->frag_off;
    for (; i < evs.size(); ++i) {
      if (w->fragment && out->events_size() > 0 && bytes + evs[i]->ByteSizeLong() > kMaxResponseBytes) break;
      auto* e = out->add_events();
      *e = *evs[i];
      if (!w->prev_kv) e->clear_prev_kv();
      bytes += evs[i]->ByteSizeLong();
    }
    if (i < evs.size()) {
      w->frag_off = i;
      out->set_fragment(true);
      last_rev = rev.rev;
      break;
    }
    w->frag_off = 0;
    if (!evs.empty()) last_rev = rev.rev;
    w->queue.pop_front();
  }
  if (out->events_size() == 0) return false;
  *out->mutable_header() = store_->Header();
  out->mutable_header()->set_revision(last_rev);
  out->set_watch_id(w->id);
  w->sent_since_tick = true;
  return true;
}

bool StreamImpl::NextLocked(std::unique_lock<std::mutex>& lk, etcdserverpb::WatchResponse* out) {
  if (closed_) return false;
  if (!control_.empty()) {
    *out = std::move(control_.front());
    control_.pop_front();
    return true;
  }
  // Round-robin over watchers with queued events.
  if (!watchers_.empty()) {
    auto it = watchers_.lower_bound(rr_);
    for (size_t n = 0; n < watchers_.size(); ++n, ++it) {
      if (it == watchers_.end()) it = watchers_.begin();
      Watcher* w = it->second.get();
      if (w->queue.empty()) continue;
      out->Clear();
      if (BuildEvents(w, out)) {
        rr_ = it->first + 1;
        return true;
      }
    }
  }
  // Unsynced watchers replay history, one at a time, without holding mu_.
  for (auto& [id, w] : watchers_) {
    if (w->synced || !w->queue.empty()) continue;
    auto keep = w;
    lk.unlock();
    CatchUp(keep);
    lk.lock();
    return NextLocked(lk, out);
  }
  if (progress_requested_) {
    bool all_synced = std::all_of(watchers_.begin(), watchers_.end(),
                                  [](const auto& p) { return p.second->synced && p.second->queue.empty(); });
    if (all_synced) {
      progress_requested_ = false;
      lk.unlock();
      int64_t rev;
      {
        std::lock_guard<std::mutex> hlk(store_->hub_.mu);
        rev = store_->hub_.rev;
      }
      lk.lock();
      // Events published while mu_ was released (at or before `rev`) are
      // queued now; a progress notification at `rev` must not overtake them
      // (a client, like the API server's watch cache, takes it as "all up
      // to rev delivered" and drops anything older that arrives later).
      bool still_synced = std::all_of(watchers_.begin(), watchers_.end(),
                                      [](const auto& p) { return p.second->synced && p.second->queue.empty(); });
      if (!still_synced) {
        progress_requested_ = true;
        return NextLocked(lk, out);
      }
      // Events published after `rev` are queued, so they arrive after this.
      out->Clear();
      *out->mutable_header() = store_->Header();
      out->mutable_header()->set_revision(rev);
      out->set_watch_id(-1);
      return true;
    }
  }
  return false;
}

void StreamImpl::CatchUp(std::shared_ptr<Watcher> w) {
  int64_t from;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!watchers_.contains(w->id) || w->synced) return;
    from = w->next_rev;
  }
  int64_t target = store_->Revision();
  if (from > target) {
    std::lock_guard<std::mutex> hlk(store_->hub_.mu);
    std::lock_guard<std::mutex> lk(mu_);
    if (!watchers_.contains(w->id)) return;
    if (w->next_rev > store_->hub_.rev) {
      w->synced = true;
      store_->hub_.synced.insert(w.get());
    }
    return;
  }
  std::vector<RevEventsPtr> evs;
  auto last = store_->ReadHistory(*w, from, target, kCatchUpRevisions, &evs);
  std::lock_guard<std::mutex> lk(mu_);
  if (!watchers_.contains(w->id)) return;
  if (!last.ok()) {
    etcdserverpb::WatchResponse resp;
    *resp.mutable_header() = store_->Header();
    resp.set_watch_id(w->id);
    resp.set_canceled(true);
    if (last.status().code() == absl::StatusCode::kOutOfRange) {
      // As etcd words it: the compaction revision, no reason, no revision.
      resp.set_compact_revision(store_->CompactRevision());
      resp.mutable_header()->clear_revision();
    } else {
      resp.set_cancel_reason(std::string(last.status().message()));
    }
    watchers_.erase(w->id);
    control_.push_back(std::move(resp));
    return;
  }
  for (auto& e : evs) w->queue.push_back(std::move(e));
  w->next_rev = *last + 1;
}

absl::StatusOr<int64_t> StoreImpl::ReadHistory(const Watcher& w, int64_t from, int64_t to, size_t max_revs,
                                               std::vector<RevEventsPtr>* out) {
  // History is read from LMDB: it must hold every revision up to `to`.
  if (to > pend_floor_.load(std::memory_order_acquire)) RETURN_IF_ERROR(ApplyPending());
  std::shared_lock<std::shared_mutex> il(index_mu_);
  ReadTxn rt(this);
  if (!rt.status().ok()) return rt.status();
  // Checked after the read txn began: values it needs cannot vanish now.
  if (from < CompactRevision()) return ErrCompacted();
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(rt.get(), kv_dbi_, &cur);
  if (rc != 0) return absl::InternalError(mdb_strerror(rc));
  std::string start(16, '\0');
  for (int i = 7; i >= 0; --i) start[static_cast<size_t>(7 - i)] = static_cast<char>((static_cast<uint64_t>(from) >> (i * 8)) & 0xff);
  MDB_val k{start.size(), start.data()}, v;
  int64_t last = from - 1;
  std::shared_ptr<RevEvents> curr;
  size_t revs = 0;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 16 || v.mv_size < 1) continue;
    const auto* kp = static_cast<const unsigned char*>(k.mv_data);
    int64_t main = 0;
    for (int i = 0; i < 8; ++i) main = (main << 8) | kp[i];
    if (main > to) break;
    if (main != last) {
      if (revs >= max_revs) break;
      if (curr && !curr->events.empty()) out->push_back(curr);
      curr = std::make_shared<RevEvents>();
      curr->rev = main;
      last = main;
      ++revs;
    }
    const char* vp = static_cast<const char*>(v.mv_data);
    mvccpb::KeyValue kv;
    if (!kv.ParseFromArray(vp + 1, static_cast<int>(v.mv_size - 1))) continue;
    if (!w.Matches(kv.key())) continue;
    mvccpb::Event ev;
    ev.set_type(vp[0] == 't' ? mvccpb::Event::DELETE : mvccpb::Event::PUT);
    if (w.prev_kv) {
      if (const IndexEntry* p = index_.Get(kv.key(), main - 1)) {
        LoadValue(rt.get(), p->main, p->sub, ev.mutable_prev_kv(), nullptr).IgnoreError();
      }
    }
    *ev.mutable_kv() = std::move(kv);
    curr->events.push_back(std::move(ev));
  }
  mdb_cursor_close(cur);
  if (curr && !curr->events.empty()) out->push_back(curr);
  // Nothing stored past `last` up to `to` when the loop ran out of records.
  if (rc == MDB_NOTFOUND || (revs < max_revs)) last = to;
  return last;
}

}  // namespace skiff::store
