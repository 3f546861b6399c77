// Runs a chosen set of controllers (and optionally the scheduler and hollow
// nodes) against the in-memory fake client.
#pragma once

#include <gtest/gtest.h>

#include <thread>

#include "skiff/controllers/controller.h"
#include "skiff/controllers/objects.h"
#include "skiff/fakeclient/builders.h"
#include "skiff/fakeclient/fake_client.h"
#include "skiff/fakeclient/hollow_nodes.h"
#include "skiff/scheduler/core.h"

namespace skiff::controllers::testing {

using fakeclient::WaitFor;
using objects::Wrap;

class Harness {
 public:
  Harness() : api(std::make_shared<fakeclient::FakeClient>()) {
    informers = std::make_unique<InformerFactory>(api);
    events = std::make_unique<EventRecorder>(api, "test");
    opts.node_monitor_grace_period_seconds = 2;
    opts.default_not_ready_toleration_seconds = 1;
    opts.default_unreachable_toleration_seconds = 1;
  }
  ~Harness() { Stop(); }

  Context ctx() { return Context{api, informers.get(), events.get(), opts}; }
  void Add(std::unique_ptr<Controller> c) { controllers.push_back(std::move(c)); }
  void WithScheduler() { scheduler = std::make_unique<scheduler::Scheduler>(api); }
  void WithHollowNodes(int n, fakeclient::HollowOptions ho = {}) {
    ho.lease_renew_ms = 200;
    hollow = std::make_unique<fakeclient::HollowNodes>(api, ho);
    hollow_count = n;
  }

  void Start() {
    informers->StartAll();
    ASSERT_TRUE(informers->WaitForSync(stop));
    for (auto& c : controllers) {
      c->Started();
      threads.emplace_back([this, c = c.get()] { c->Run(2, stop); });
    }
    if (scheduler) threads.emplace_back([this] { scheduler->Run(stop); });
    if (hollow) {
      ASSERT_TRUE(hollow->Start().ok());
      for (int i = 0; i < hollow_count; i++) {
        auto st = hollow->AddNode("node-" + std::to_string(i));
        ASSERT_TRUE(st.ok()) << st;
      }
    }
  }
  void Stop() {
    stop = true;
    for (auto& t : threads) t.join();
    threads.clear();
    if (hollow) hollow->Stop();
    informers->StopAll();
  }
  void Namespace(const std::string& ns) {
    ASSERT_TRUE(api->Create("namespaces", "", Wrap(fakeclient::MakeNamespace(ns))).ok());
  }
  std::vector<api::v1::Object> ListItems(const std::string& res, const std::string& ns, const std::string& sel = "") {
    auto l = api->List(res, ns, fakeclient::WithLabels(sel));
    if (!l.ok()) return {};
    return {l->items().begin(), l->items().end()};
  }

  std::shared_ptr<fakeclient::FakeClient> api;
  std::unique_ptr<InformerFactory> informers;
  std::unique_ptr<EventRecorder> events;
  Options opts;
  std::vector<std::unique_ptr<Controller>> controllers;
  std::unique_ptr<scheduler::Scheduler> scheduler;
  std::unique_ptr<fakeclient::HollowNodes> hollow;
  int hollow_count = 0;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
};

}  // namespace skiff::controllers::testing
