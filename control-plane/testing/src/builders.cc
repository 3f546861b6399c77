#include "skiff/fakeclient/builders.h"

#include "skiff/controllers/objects.h"

namespace skiff::fakeclient {

api::v1::Node MakeNode(const std::string& name, const std::string& cpu, const std::string& memory,
                       const std::string& pods, bool ready) {
  api::v1::Node n;
  n.set_api_version("v1");
  n.set_kind("Node");
  n.mutable_metadata()->set_name(name);
  (*n.mutable_metadata()->mutable_labels())["kubernetes.io/hostname"] = name;
  auto* st = n.mutable_status();
  for (auto* list : {st->mutable_capacity(), st->mutable_allocatable()}) {
    (*list)["cpu"] = cpu;
    (*list)["memory"] = memory;
    (*list)["pods"] = pods;
  }
  auto* c = st->add_conditions();
  c->set_type("Ready");
  c->set_status(ready ? "True" : "False");
  c->set_reason(ready ? "KubeletReady" : "KubeletNotReady");
  c->set_last_heartbeat_time(objects::Now());
  c->set_last_transition_time(objects::Now());
  return n;
}

api::v1::Pod MakePod(const std::string& ns, const std::string& name, const std::string& cpu,
                     const std::string& memory) {
  api::v1::Pod p;
  p.set_api_version("v1");
  p.set_kind("Pod");
  p.mutable_metadata()->set_namespace_(ns);
  p.mutable_metadata()->set_name(name);
  auto* c = p.mutable_spec()->add_containers();
  c->set_name("main");
  c->set_image("busybox");
  if (!cpu.empty()) (*c->mutable_resources()->mutable_requests())["cpu"] = cpu;
  if (!memory.empty()) (*c->mutable_resources()->mutable_requests())["memory"] = memory;
  return p;
}

api::v1::Namespace MakeNamespace(const std::string& name) {
  api::v1::Namespace n;
  n.set_api_version("v1");
  n.set_kind("Namespace");
  n.mutable_metadata()->set_name(name);
  return n;
}

api::v1::Deployment MakeDeployment(const std::string& ns, const std::string& name, int replicas,
                                   const std::string& image) {
  api::v1::Deployment d;
  d.set_api_version("apps/v1");
  d.set_kind("Deployment");
  d.mutable_metadata()->set_namespace_(ns);
  d.mutable_metadata()->set_name(name);
  d.mutable_spec()->set_replicas(replicas);
  (*d.mutable_spec()->mutable_selector()->mutable_match_labels())["app"] = name;
  auto* t = d.mutable_spec()->mutable_template_();
  (*t->mutable_metadata()->mutable_labels())["app"] = name;
  auto* c = t->mutable_spec()->add_containers();
  c->set_name("main");
  c->set_image(image);
  return d;
}

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

}  // namespace skiff::fakeclient
