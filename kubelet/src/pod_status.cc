#include "skiff/kubelet/pod_status.h"

#include "skiff/controllers/objects.h"

namespace skiff::kubelet {

std::string TerminatedReason(const ContainerRecord& r) {
  if (!r.error.empty() && r.pid == 0) return "StartError";
  if (r.oom_killed) return "OOMKilled";
  if (r.exit_code == 0) return "Completed";
  return "Error";
}

namespace {
void FillTerminated(const ContainerRecord& r, api::v1::ContainerStateTerminated* t) {
  t->set_exit_code(r.exit_code);
  t->set_signal(r.signal);
  t->set_reason(TerminatedReason(r));
  if (!r.error.empty()) t->set_message(r.error);
  t->set_started_at(r.started_at);
  t->set_finished_at(r.finished_at);
  t->set_container_id("skiff://" + r.id);
}
}  // namespace

api::v1::ContainerStatus BuildContainerStatus(const ContainerView& v) {
  api::v1::ContainerStatus s;
  s.set_name(v.name);
  s.set_image(v.image);
  s.set_image_id(v.image);
  s.set_restart_count(v.restart_count);
  const ContainerRecord* last = nullptr;
  if (v.current && !v.current->exited && v.waiting_reason.empty()) {
    s.mutable_state()->mutable_running()->set_started_at(v.current->started_at);
    s.set_container_id("skiff://" + v.current->id);
    s.set_ready(v.ready);
    s.set_started(v.started);
    if (v.previous) last = &*v.previous;
  } else if (!v.waiting_reason.empty()) {
    auto* w = s.mutable_state()->mutable_waiting();
    w->set_reason(v.waiting_reason);
    w->set_message(v.waiting_message);
    s.set_started(false);
    if (v.current && v.current->exited) last = &*v.current;
  } else if (v.current && v.current->exited) {
    FillTerminated(*v.current, s.mutable_state()->mutable_terminated());
    s.set_container_id("skiff://" + v.current->id);
    s.set_started(false);
    if (v.previous) last = &*v.previous;
  } else {
    s.mutable_state()->mutable_waiting()->set_reason("ContainerCreating");
    s.set_started(false);
  }
  if (last) FillTerminated(*last, s.mutable_last_state()->mutable_terminated());
  return s;
}

std::string ComputePhase(const PodFacts& f) {
  // Init containers first: any not yet successful keeps the pod Pending,
  // unless one failed for good.
  for (const auto& v : f.init_containers) {
    bool done = v.current && v.current->exited && v.current->exit_code == 0 && v.current->error.empty();
    if (done) continue;
    bool failed = v.current && v.current->exited && !(v.current->exit_code == 0 && v.current->error.empty());
    if (failed && f.restart_policy == "Never") return "Failed";
    return "Pending";
  }
  int waiting = 0, running = 0, stopped = 0, succeeded = 0;
  for (const auto& v : f.containers) {
    if (v.current && !v.current->exited && v.waiting_reason.empty()) {
      ++running;
    } else if (v.current && v.current->exited) {
      ++stopped;
      if (v.current->exit_code == 0 && v.current->error.empty()) ++succeeded;
    } else {
      ++waiting;
    }
  }
  if (waiting > 0) return "Pending";
  if (running > 0) return "Running";
  if (stopped == 0) return "Pending";
  if (f.restart_policy == "Always") return "Running";
  if (stopped == succeeded) return "Succeeded";
  if (f.restart_policy == "Never") return "Failed";
  return "Running";
}

api::v1::Pod::Status ComputePodStatus(const PodFacts& f, const api::v1::Pod::Status& previous) {
  api::v1::Pod::Status s;
  s.set_phase(ComputePhase(f));
  s.set_host_ip(f.host_ip);
  if (!f.pod_ip.empty()) {
    s.set_pod_ip(f.pod_ip);
    s.add_pod_ips()->set_ip(f.pod_ip);
  }
  s.set_start_time(f.start_time);
  s.set_qos_class(f.qos_class);
  bool initialized = true;
  for (const auto& v : f.init_containers) {
    *s.add_init_container_statuses() = BuildContainerStatus(v);
    if (!(v.current && v.current->exited && v.current->exit_code == 0 && v.current->error.empty())) initialized = false;
  }
  bool all_ready = !f.containers.empty();
  for (const auto& v : f.containers) {
    auto cs = BuildContainerStatus(v);
    if (!cs.ready()) all_ready = false;
    *s.add_container_statuses() = std::move(cs);
  }
  if (f.terminating || s.phase() == "Succeeded" || s.phase() == "Failed") all_ready = false;
  *s.mutable_conditions() = previous.conditions();
  objects::SetCondition(s.mutable_conditions(), "PodScheduled", "True", "", "");
  objects::SetCondition(s.mutable_conditions(), "Initialized", initialized ? "True" : "False",
                        initialized ? "" : "ContainersNotInitialized",
                        initialized ? "" : "containers with incomplete status: init");
  const char* ready = all_ready ? "True" : "False";
  const char* reason = all_ready ? "" : (s.phase() == "Succeeded" ? "PodCompleted" : "ContainersNotReady");
  objects::SetCondition(s.mutable_conditions(), "ContainersReady", ready, reason, "");
  objects::SetCondition(s.mutable_conditions(), "Ready", ready, reason, "");
  return s;
}

}  // namespace skiff::kubelet
