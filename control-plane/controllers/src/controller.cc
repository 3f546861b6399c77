#include "skiff/controllers/controller.h"

#include <thread>
#include <vector>

#include "skiff/common/log.h"
#include "skiff/controllers/objects.h"

namespace skiff::controllers {

void Controller::Enqueue(const ObjectPtr& obj) { queue_.Add(objects::Key(*obj)); }

bool Controller::ProcessOne(bool block) {
  std::string key;
  if (!block && queue_.Len() == 0) return false;
  if (!queue_.Get(&key)) return false;
  absl::Status st = Reconcile(key);
  if (st.ok()) {
    queue_.Forget(key);
  } else {
    log::Debug("reconcile failed ", log::Field("controller", Name()), " ", log::Field("key", key), " ", st);
    queue_.AddRateLimited(key);
  }
  queue_.Done(key);
  return true;
}

void Controller::Run(int workers, const std::atomic<bool>& stop) {
  std::vector<std::thread> threads;
  for (int i = 0; i < workers; i++)
    threads.emplace_back([this] {
      while (ProcessOne(true)) {
      }
    });
  while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  queue_.ShutDown();
  for (auto& t : threads) t.join();
}

int Controller::Drain(int max_items) {
  int n = 0;
  while (n < max_items && ProcessOne(false)) n++;
  return n;
}

}  // namespace skiff::controllers
