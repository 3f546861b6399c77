// A list-and-watch cache of one resource, with change handlers: what
// client-go's shared informer does. One thread per informer; handlers run on
// it and must be quick (enqueue keys, update caches).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "skiff/client/client.h"

namespace skiff::controllers {

using ObjectPtr = std::shared_ptr<const api::v1::Object>;

struct EventHandler {
  std::function<void(const ObjectPtr&)> on_add;
  std::function<void(const ObjectPtr& old_obj, const ObjectPtr& new_obj)> on_update;
  std::function<void(const ObjectPtr&)> on_delete;
};

class Informer {
 public:
  Informer(std::shared_ptr<client::Client> api, std::string resource, std::string ns = "",
           client::ListOptions opts = {});
  ~Informer();

  // Handlers added before Start() see every object; later ones only changes.
  void AddHandler(EventHandler h);
  void Start();
  void Stop();
  // Blocks until the first list has been delivered (false when stopped first).
  bool WaitForSync(const std::atomic<bool>& stop);
  bool HasSynced() const { return synced_.load(); }

  ObjectPtr Get(const std::string& key) const;
  std::vector<ObjectPtr> List() const;
  std::vector<ObjectPtr> ListNamespace(const std::string& ns) const;
  size_t Size() const;
  const std::string& resource() const { return resource_; }

 private:
  void Loop();
  void Replace(const api::v1::ObjectList& list);
  void Apply(const api::v1::WatchEvent& ev);

  std::shared_ptr<client::Client> api_;
  std::string resource_;
  std::string ns_;
  client::ListOptions opts_;
  std::vector<EventHandler> handlers_;

  mutable std::mutex mu_;
  std::map<std::string, ObjectPtr> items_;
  std::atomic<bool> synced_{false};
  std::condition_variable sync_cv_;
  std::atomic<bool> stop_{false};
  std::mutex stream_mu_;
  client::WatchStream* stream_ = nullptr;
  std::thread thread_;
};

// One informer per resource, shared by every controller in a process.
class InformerFactory {
 public:
  explicit InformerFactory(std::shared_ptr<client::Client> api) : api_(std::move(api)) {}
  Informer* For(const std::string& resource);
  void StartAll();
  void StopAll();
  bool WaitForSync(const std::atomic<bool>& stop);

 private:
  std::shared_ptr<client::Client> api_;
  std::map<std::string, std::unique_ptr<Informer>> informers_;
};

}  // namespace skiff::controllers
