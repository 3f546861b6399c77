// Small builders for test objects (nodes, pods, namespaces), shared by the
// unit tests, the hollow-node integration tests and the benchmark.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "skiff/api/v1/objects.pb.h"
#include "skiff/client/client.h"

namespace skiff::fakeclient {

api::v1::Node MakeNode(const std::string& name, const std::string& cpu = "4", const std::string& memory = "8Gi",
                       const std::string& pods = "110", bool ready = true);
api::v1::Pod MakePod(const std::string& ns, const std::string& name, const std::string& cpu = "",
                     const std::string& memory = "");
api::v1::Namespace MakeNamespace(const std::string& name);
api::v1::Deployment MakeDeployment(const std::string& ns, const std::string& name, int replicas,
                                   const std::string& image = "nginx:1");

inline client::ListOptions WithLabels(const std::string& s) {
  client::ListOptions o;
  o.label_selector = s;
  return o;
}
inline client::ListOptions WithFields(const std::string& s) {
  client::ListOptions o;
  o.field_selector = s;
  return o;
}
inline client::ListOptions FromVersion(const std::string& rv) {
  client::ListOptions o;
  o.resource_version = rv;
  return o;
}

// Polls `cond` every 10 ms until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace skiff::fakeclient
