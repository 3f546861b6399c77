// A reflector + in-memory cache over one resource: lists, then watches from
// the list's resourceVersion; relists when the watch reports OutOfRange (too
// old); re-watches from the last seen resourceVersion on other errors.
// Callbacks run on the informer's thread, in event order, with no lock held.
//
//   skiff::client::Informer pods(client, "pods", "", {.field_selector = "spec.nodeName=n1"},
//       {.on_add = [](const Object& o) {...}, .on_update = [](const Object& old, const Object& cur) {...},
//        .on_delete = [](const Object& o) {...}});
//   pods.Start();
//   pods.WaitForSync(std::chrono::seconds(10));
//   auto p = pods.Get("default", "web");
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "skiff/client/client.h"

namespace skiff::client {

struct InformerHandlers {
  std::function<void(const Object&)> on_add;
  std::function<void(const Object& old_obj, const Object& new_obj)> on_update;
  std::function<void(const Object&)> on_delete;
};

class Informer {
 public:
  Informer(Client* client, std::string resource, std::string ns, ListOptions opts, InformerHandlers handlers);
  ~Informer();
  void Start();
  void Stop();
  bool WaitForSync(std::chrono::milliseconds timeout);
  bool HasSynced();

  std::optional<Object> Get(const std::string& ns, const std::string& name);
  std::vector<Object> List();
  std::string LastResourceVersion();
  int64_t relists() const { return relists_; }

 private:
  void Run();
  absl::Status Relist();
  void Apply(const std::string& type, const Object& obj);

  Client* client_;
  std::string resource_, ns_;
  ListOptions opts_;
  InformerHandlers handlers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Object> items_;  // "<ns>/<name>"
  std::string rv_;
  bool synced_ = false;
  bool stop_ = false;
  std::unique_ptr<WatchStream> watch_;
  std::thread thread_;
  std::atomic<int64_t> relists_{0};
};

}  // namespace skiff::client
