// A work queue of object keys, as client-go's: a key is never processed by
// two workers at once, adding a key already queued is a no-op, and a key
// added while being processed is requeued when Done() is called.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>

namespace skiff::controllers {

class WorkQueue {
 public:
  using Clock = std::chrono::steady_clock;

  void Add(const std::string& key);
  void AddAfter(const std::string& key, std::chrono::milliseconds delay);
  // Adds after a per-key exponential backoff (10ms doubling to 5s).
  void AddRateLimited(const std::string& key);
  void Forget(const std::string& key);
  // Blocks until a key is ready or the queue is shut down (returns false).
  bool Get(std::string* key);
  void Done(const std::string& key);
  void ShutDown();
  size_t Len() const;

 private:
  void AddLocked(const std::string& key);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  std::set<std::string> dirty_;
  std::set<std::string> processing_;
  std::multimap<Clock::time_point, std::string> delayed_;
  std::map<std::string, int> failures_;
  bool shutdown_ = false;
};

}  // namespace skiff::controllers
