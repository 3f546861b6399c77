// The shape every controller shares: informer handlers enqueue object keys,
// workers take keys off a WorkQueue and call Reconcile(key), which reads the
// informer caches and writes through the API. Reconcile is level-based: it
// looks at the whole current state, so a missed or repeated key is harmless.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "skiff/client/client.h"
#include "skiff/common/status.h"
#include "skiff/controllers/events.h"
#include "skiff/controllers/informer.h"
#include "skiff/controllers/manager.h"
#include "skiff/controllers/workqueue.h"

namespace skiff::controllers {

struct Context {
  std::shared_ptr<client::Client> api;
  InformerFactory* informers = nullptr;
  EventRecorder* events = nullptr;
  Options opts;
};

class Controller {
 public:
  explicit Controller(Context ctx) : ctx_(std::move(ctx)) {}
  virtual ~Controller() = default;
  virtual std::string Name() const = 0;
  virtual absl::Status Reconcile(const std::string& key) = 0;
  // Called once after the informers synced (enqueue everything, start timers).
  virtual void Started() {}

  WorkQueue& queue() { return queue_; }
  // Runs `workers` threads until stop; shuts the queue down on return.
  void Run(int workers, const std::atomic<bool>& stop);
  // Processes queued keys on the calling thread until the queue is empty
  // (unit tests drive controllers this way, deterministically).
  int Drain(int max_items = 10000);

 protected:
  void Enqueue(const ObjectPtr& obj);
  void EnqueueKey(const std::string& key) { queue_.Add(key); }
  bool ProcessOne(bool block);

  Context ctx_;
  WorkQueue queue_;
};

// Factories (manager.cc wires all of them).
std::unique_ptr<Controller> NewReplicaSetController(Context ctx);
std::unique_ptr<Controller> NewDeploymentController(Context ctx);
std::unique_ptr<Controller> NewEndpointSliceController(Context ctx);
std::unique_ptr<Controller> NewNamespaceController(Context ctx);
std::unique_ptr<Controller> NewGarbageCollector(Context ctx);
std::unique_ptr<Controller> NewNodeLifecycleController(Context ctx);
std::unique_ptr<Controller> NewNodeIpamController(Context ctx);
std::unique_ptr<Controller> NewServiceAccountController(Context ctx);

// Annotations and labels the controllers use.
inline constexpr char kRevisionAnnotation[] = "deployment.kubernetes.io/revision";
inline constexpr char kRollbackAnnotation[] = "deployment.kubernetes.io/rollback-to";
inline constexpr char kDesiredReplicasAnnotation[] = "deployment.kubernetes.io/desired-replicas";
inline constexpr char kMaxReplicasAnnotation[] = "deployment.kubernetes.io/max-replicas";
inline constexpr char kPodTemplateHashLabel[] = "pod-template-hash";
inline constexpr char kServiceNameLabel[] = "kubernetes.io/service-name";
inline constexpr char kManagedByLabel[] = "endpointslice.kubernetes.io/managed-by";
inline constexpr char kManagedByValue[] = "endpointslice-controller.skiff.io";
inline constexpr char kTaintUnreachable[] = "node.kubernetes.io/unreachable";
inline constexpr char kTaintNotReady[] = "node.kubernetes.io/not-ready";

}  // namespace skiff::controllers
