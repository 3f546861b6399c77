#include "skiff/controllers/events.h"

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "skiff/controllers/objects.h"

namespace skiff::controllers {

api::v1::ObjectReference RefTo(const api::v1::Object& obj) {
  api::v1::ObjectReference ref;
  const auto& m = objects::Meta(obj);
  ref.set_kind(objects::KindOf(obj));
  ref.set_api_version(objects::ApiVersionForKind(ref.kind()));
  ref.set_namespace_(m.namespace_());
  ref.set_name(m.name());
  ref.set_uid(m.uid());
  ref.set_resource_version(m.resource_version());
  return ref;
}

EventRecorder::EventRecorder(std::shared_ptr<client::Client> api, std::string component, size_t max_queue,
                             double normal_per_second)
    : api_(std::move(api)),
      component_(std::move(component)),
      max_queue_(max_queue),
      rate_(normal_per_second),
      tokens_(normal_per_second * 2) {
  thread_ = std::thread([this] { Loop(); });
}

EventRecorder::~EventRecorder() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void EventRecorder::Event(const api::v1::ObjectReference& involved, const std::string& type,
                          const std::string& reason, const std::string& message) {
  std::lock_guard<std::mutex> lock(mu_);
  if (queue_.size() >= max_queue_) return;
  if (type == "Normal") {
    auto now = std::chrono::steady_clock::now();
    tokens_ = std::min(rate_ * 2, tokens_ + rate_ * std::chrono::duration<double>(now - refilled_).count());
    refilled_ = now;
    if (tokens_ < 1) return;
    tokens_ -= 1;
  }
  queue_.push_back({involved, type, reason, message});
  cv_.notify_all();
}

void EventRecorder::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return (queue_.empty() && !busy_) || stop_; });
}

void EventRecorder::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    Pending p = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    Write(p);
    lock.lock();
    busy_ = false;
    cv_.notify_all();
  }
}

void EventRecorder::Write(const Pending& p) {
  std::string ns = p.ref.namespace_().empty() ? "default" : p.ref.namespace_();
  std::string agg = p.ref.uid() + "/" + p.reason + "/" + p.message;
  std::string now = objects::Now();
  auto it = seen_.find(agg);
  if (it != seen_.end()) {
    auto got = api_->Get("events", it->second.first, it->second.second);
    if (got.ok()) {
      api::v1::Object o = *got;
      auto* ev = o.mutable_event();
      ev->set_count(ev->count() + 1);
      ev->set_last_timestamp(now);
      if (api_->Update("events", it->second.first, o).ok()) return;
    }
  }
  api::v1::Event ev;
  ev.set_api_version("v1");
  ev.set_kind("Event");
  ev.mutable_metadata()->set_namespace_(ns);
  ev.mutable_metadata()->set_name(
      absl::StrFormat("%s.%x", p.ref.name(), absl::ToUnixNanos(absl::Now())));
  *ev.mutable_involved_object() = p.ref;
  ev.set_reason(p.reason);
  ev.set_message(p.message);
  ev.mutable_source()->set_component(component_);
  ev.set_first_timestamp(now);
  ev.set_last_timestamp(now);
  ev.set_count(1);
  ev.set_type(p.type);
  ev.set_reporting_component(component_);
  if (!instance_.empty()) {
    ev.set_reporting_instance(instance_);
    ev.mutable_source()->set_host(instance_);
  }
  auto r = api_->Create("events", ns, objects::Wrap(ev));
  if (r.ok()) {
    if (seen_.size() > 4096) seen_.clear();
    seen_[agg] = {ns, ev.metadata().name()};
  }
}

}  // namespace skiff::controllers
