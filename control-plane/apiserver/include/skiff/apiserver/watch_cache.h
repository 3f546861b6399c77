// One etcd watch per resource type feeding an in-memory cache: the current
// objects (serves resourceVersion=0 lists and the synthetic ADDED events of a
// fresh watch) and a window of recent events that client watches replay from
// and are fanned out to. A resourceVersion older than the window is "too old"
// (OutOfRange) and the client relists.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/apiserver/etcd.h"
#include "skiff/apiserver/resources.h"
#include "skiff/apiserver/selectors.h"

namespace skiff::apiserver {

struct WatchFilter {
  std::string ns;  // "" = all
  LabelSelector labels;
  FieldSelector fields;
  bool Matches(const Object& obj) const;
};

struct CachedEvent {
  std::string type;  // ADDED, MODIFIED, DELETED
  std::shared_ptr<const Object> object;
};

// One client's subscription.
class CacheWatcher {
 public:
  // Waits up to `timeout` for an event. nullopt on timeout; an error status
  // when the watch was terminated (OutOfRange: relist; other: rewatch).
  absl::StatusOr<std::optional<CachedEvent>> Next(std::chrono::milliseconds timeout);
  // The revision up to which this watcher has seen everything (for bookmarks);
  // 0 while an event is queued.
  int64_t progress_revision();
  // A watch from "": how many ADDED events for existing objects lead the
  // queue, and the revision they were read at.
  size_t initial_events() const { return initial_events_; }
  int64_t start_revision() const { return from_rev_; }

 private:
  friend class WatchCache;
  WatchFilter filter_;
  int64_t from_rev_ = 0;
  size_t initial_events_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<CachedEvent> queue_;
  int64_t progress_rev_ = 0;
  absl::Status terminated_ = absl::OkStatus();
};

class WatchCache {
 public:
  struct Options {
    size_t capacity = 4096;          // events kept for replay
    int64_t history_revisions = 5000;  // how far back to replay at start (resume across restarts)
    size_t max_queue = 20000;        // a watcher further behind is terminated
  };
  WatchCache(EtcdClient* etcd, const ResourceInfo& info, Options opts);
  ~WatchCache();
  absl::Status Start();
  void Stop();

  // from_rev < 0: synthetic ADDED for every current object, then changes.
  absl::StatusOr<std::shared_ptr<CacheWatcher>> Watch(WatchFilter filter, int64_t from_rev);
  void Unwatch(const std::shared_ptr<CacheWatcher>& w);
  // Current objects matching, sorted by key; *rev = the cache revision.
  std::vector<std::shared_ptr<const Object>> List(const WatchFilter& filter, int64_t* rev);
  int64_t revision();
  // The cached object stored at `key` (its resourceVersion set), or null.
  std::shared_ptr<const Object> Lookup(const std::string& key);
  // Blocks until the cache has applied everything up to `rev` (or timeout).
  bool WaitForRevision(int64_t rev, std::chrono::milliseconds timeout);
  size_t watcher_count();
  size_t object_count();

 private:
  friend class WatchCacheTestPeer;
  struct Entry {
    int64_t rev;
    bool deleted;
    std::shared_ptr<const Object> obj;   // new state (or last state for deletes)
    std::shared_ptr<const Object> prev;  // previous state, may be null
  };
  void OnEvents(const std::vector<mvccpb::Event>& events, int64_t header_rev);
  void OnCompacted(int64_t compact_rev);
  void Dispatch(const Entry& e);
  static void Push(CacheWatcher* w, CachedEvent ev, size_t max_queue);
  absl::Status Init();
  void Ticker();

  EtcdClient* etcd_;
  ResourceInfo info_;
  Options opts_;
  std::string prefix_;

  std::mutex mu_;
  std::condition_variable rev_cv_;
  std::map<std::string, std::shared_ptr<const Object>> objects_;  // key -> object
  std::deque<Entry> window_;
  int64_t window_start_ = 0;  // events with rev > window_start_ are all in window_
  int64_t rev_ = 0;
  // Progress responses: etcd before 3.4.24 / 3.5.8 may answer a progress
  // request ahead of events still queued on the stream (etcd issue 15220),
  // so a reported revision is only trusted one progress response later; by
  // then events older than it have arrived. An event is a replay only if it
  // is not newer than the last event applied.
  int64_t progress_pending_ = 0;
  int64_t last_event_rev_ = 0;
  std::vector<std::shared_ptr<CacheWatcher>> watchers_;
  std::unique_ptr<EtcdWatch> watch_;
  bool stopping_ = false;
  bool needs_reinit_ = false;
  std::thread ticker_;
  std::condition_variable ticker_cv_;
};

}  // namespace skiff::apiserver
