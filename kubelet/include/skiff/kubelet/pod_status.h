// Pod status from what the node knows about its containers: Kubernetes'
// phase rules (kubelet getPhase), container states with their reasons, and
// the PodScheduled / Initialized / ContainersReady / Ready conditions.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "skiff/api/v1/objects.pb.h"
#include "skiff/kubelet/container_record.h"

namespace skiff::kubelet {

struct ContainerView {
  std::string name;
  std::string image;
  std::optional<ContainerRecord> current;  // the newest attempt (running or exited)
  std::optional<ContainerRecord> previous;  // the attempt before it, when current is running
  int restart_count = 0;
  // Set when the container is not running and will not start right now:
  // CrashLoopBackOff, CreateContainerConfigError, ContainerCreating, PodInitializing...
  std::string waiting_reason, waiting_message;
  bool ready = false;    // readiness probe (or no probe) says so
  bool started = false;  // startup probe passed (or none)
};

struct PodFacts {
  std::string restart_policy = "Always";
  std::string pod_ip, host_ip, start_time, qos_class;
  std::vector<ContainerView> init_containers, containers;
  bool terminating = false;
};

// Reason of a terminated container: Completed, OOMKilled, Error, or
// StartError when it never ran.
std::string TerminatedReason(const ContainerRecord& r);
api::v1::ContainerStatus BuildContainerStatus(const ContainerView& v);
std::string ComputePhase(const PodFacts& f);
// `previous` carries over condition transition times.
api::v1::Pod::Status ComputePodStatus(const PodFacts& f, const api::v1::Pod::Status& previous);

}  // namespace skiff::kubelet
