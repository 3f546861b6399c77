// Records Events (core/v1) asynchronously, as client-go's event broadcaster:
// callers never wait for the API, a bounded queue drops events under
// overload, and repeats of the same (object, reason, message) bump the count
// of the existing Event instead of creating a new one.
#pragma once

#include <condition_variable>
#include <deque>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "skiff/client/client.h"

namespace skiff::controllers {

class EventRecorder {
 public:
  // Normal events beyond `normal_per_second` (burst 2x) are dropped, as
  // client-go's event spam filter would, so routine events (Scheduled,
  // SuccessfulCreate) never halve a controller's write throughput.
  EventRecorder(std::shared_ptr<client::Client> api, std::string component, size_t max_queue = 2000,
                double normal_per_second = 50);
  ~EventRecorder();
  void Event(const api::v1::ObjectReference& involved, const std::string& type, const std::string& reason,
             const std::string& message);
  // Waits until the queue is empty (tests).
  void Flush();
  // Names this replica in reportingInstance and source.host (the
  // leader-election identity, so one can tell which replica acted). Call
  // before the first Event().
  void SetInstance(std::string instance) { instance_ = std::move(instance); }

 private:
  struct Pending {
    api::v1::ObjectReference ref;
    std::string type, reason, message;
  };
  void Loop();
  void Write(const Pending& p);

  std::shared_ptr<client::Client> api_;
  std::string component_;
  std::string instance_;
  size_t max_queue_;
  double rate_;
  double tokens_;
  std::chrono::steady_clock::time_point refilled_ = std::chrono::steady_clock::now();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool busy_ = false;
  bool stop_ = false;
  // (uid/reason/message) -> event name, for count aggregation.
  std::map<std::string, std::pair<std::string, std::string>> seen_;
  std::thread thread_;
};

api::v1::ObjectReference RefTo(const api::v1::Object& obj);

}  // namespace skiff::controllers
