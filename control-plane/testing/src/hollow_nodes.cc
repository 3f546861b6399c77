#include "skiff/fakeclient/hollow_nodes.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "skiff/common/log.h"
#include "skiff/controllers/objects.h"
#include "skiff/fakeclient/builders.h"

namespace skiff::fakeclient {

using controllers::ObjectPtr;

HollowNodes::HollowNodes(std::shared_ptr<client::Client> api, HollowOptions opts)
    : api_(std::move(api)), opts_(std::move(opts)) {}

HollowNodes::~HollowNodes() { Stop(); }

absl::Status HollowNodes::Start() {
  auto ns = api_->Create("namespaces", "", objects::Wrap(MakeNamespace("kube-node-lease")));
  if (!ns.ok() && ns.status().code() != absl::StatusCode::kAlreadyExists) return ns.status();
  pods_ = std::make_unique<controllers::Informer>(api_, "pods");
  nodes_ = std::make_unique<controllers::Informer>(api_, "nodes");
  auto enqueue = [this](const ObjectPtr& o) {
    if (!o->pod().spec().node_name().empty()) queue_.Add(objects::Key(o->pod().metadata()));
  };
  pods_->AddHandler({enqueue, [enqueue](const ObjectPtr&, const ObjectPtr& o) { enqueue(o); }, nullptr});
  nodes_->AddHandler({nullptr, [this](const ObjectPtr&, const ObjectPtr& o) {
                        const auto* c = objects::FindCondition(o->node().status().conditions(), "Ready");
                        if (c == nullptr || c->status() != "True") queue_.Add("node:" + o->node().metadata().name());
                      },
                      nullptr});
  if (opts_.run_pods) pods_->Start();
  nodes_->Start();
  // Bounded: a dead API server must fail the caller, not hang it.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((!nodes_->HasSynced() || (opts_.run_pods && !pods_->HasSynced())) &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (!nodes_->HasSynced() || (opts_.run_pods && !pods_->HasSynced()))
    return absl::UnavailableError("hollow nodes: API server did not answer list/watch within 30 s");
  for (int i = 0; i < opts_.workers; i++) threads_.emplace_back([this] { Work(); });
  threads_.emplace_back([this] { RenewLoop(); });
  return absl::OkStatus();
}

void HollowNodes::Stop() {
  if (stop_.exchange(true)) return;
  queue_.ShutDown();
  for (auto& t : threads_) t.join();
  threads_.clear();
  if (pods_) pods_->Stop();
  if (nodes_) nodes_->Stop();
}

absl::Status HollowNodes::AddNode(const std::string& name, const std::map<std::string, std::string>& labels) {
  auto node = MakeNode(name, opts_.cpu, opts_.memory, opts_.pods);
  for (const auto& [k, v] : labels) (*node.mutable_metadata()->mutable_labels())[k] = v;
  auto* addr = node.mutable_status()->add_addresses();
  addr->set_type("InternalIP");
  {
    std::lock_guard<std::mutex> lock(mu_);
    alive_[name] = node_count_++;
    addr->set_address(absl::StrCat("127.1.", alive_[name] / 250, ".", alive_[name] % 250 + 1));
  }
  auto r = api_->Create("nodes", "", objects::Wrap(node));
  if (!r.ok() && r.status().code() != absl::StatusCode::kAlreadyExists) return r.status();
  // Kubernetes takes status from the kubelet's status update, not from create.
  if (r.ok()) {
    auto upd = *r;
    // A controller (node IPAM) may change the node between the create and
    // this update: on a conflict, re-read it and try again, as a kubelet does.
    for (int attempt = 0;; ++attempt) {
      *upd.mutable_node()->mutable_status() = node.status();
      auto s = api_->UpdateStatus("nodes", "", upd);
      if (s.ok()) break;
      if (s.status().code() != absl::StatusCode::kAborted || attempt >= 20) return s.status();
      auto cur = api_->Get("nodes", "", name);
      if (!cur.ok()) return cur.status();
      upd = *cur;
    }
  }
  return RenewLease(name);
}

void HollowNodes::KillNode(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  dead_.insert(name);
}

void HollowNodes::ReviveNode(const std::string& name) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    dead_.erase(name);
  }
  queue_.Add("node:" + name);
}

absl::Status HollowNodes::RenewLease(const std::string& node) {
  std::string now = objects::NowMicro();
  auto got = api_->Get("leases", "kube-node-lease", node);
  if (got.ok()) {
    auto upd = *got;
    upd.mutable_lease()->mutable_spec()->set_renew_time(now);
    upd.mutable_lease()->mutable_spec()->set_holder_identity(node);
    auto r = api_->Update("leases", "kube-node-lease", upd);
    // A concurrent renewal (the renew loop) won: the lease is fresh either way.
    if (!r.ok() && r.status().code() == absl::StatusCode::kAborted) return absl::OkStatus();
    return r.status();
  }
  if (got.status().code() != absl::StatusCode::kNotFound) return got.status();
  api::v1::Lease lease;
  lease.set_api_version("coordination.k8s.io/v1");
  lease.set_kind("Lease");
  lease.mutable_metadata()->set_namespace_("kube-node-lease");
  lease.mutable_metadata()->set_name(node);
  lease.mutable_spec()->set_holder_identity(node);
  lease.mutable_spec()->set_lease_duration_seconds(40);
  lease.mutable_spec()->set_renew_time(now);
  auto created = api_->Create("leases", "kube-node-lease", objects::Wrap(lease));
  // The renew loop may have created it a moment ago: then the lease is fresh.
  if (!created.ok() && created.status().code() == absl::StatusCode::kAlreadyExists) return absl::OkStatus();
  return created.status();
}

absl::Status HollowNodes::ReportReady(const std::string& name) {
  auto got = api_->Get("nodes", "", name);
  if (!got.ok()) return got.status();
  auto upd = *got;
  auto* conds = upd.mutable_node()->mutable_status()->mutable_conditions();
  if (!objects::SetCondition(conds, "Ready", "True", "KubeletReady", "kubelet is posting ready status"))
    return absl::OkStatus();
  for (auto& c : *conds)
    if (c.type() == "Ready") c.set_last_heartbeat_time(objects::Now());
  return api_->UpdateStatus("nodes", "", upd).status();
}

void HollowNodes::RenewLoop() {
  while (!stop_) {
    std::vector<std::string> live;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [n, i] : alive_)
        if (!dead_.count(n)) live.push_back(n);
    }
    for (const auto& n : live) {
      if (stop_) return;
      auto st = RenewLease(n);
      if (!st.ok()) log::Debug("hollow node lease renewal failed ", log::Field("node", n), " ", st);
    }
    for (int waited = 0; waited < opts_.lease_renew_ms && !stop_; waited += 20)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void HollowNodes::Work() {
  std::string key;
  while (queue_.Get(&key)) {
    absl::Status st;
    if (key.rfind("node:", 0) == 0) {
      std::string n = key.substr(5);
      bool live;
      {
        std::lock_guard<std::mutex> lock(mu_);
        live = alive_.count(n) && !dead_.count(n);
      }
      if (live) st = ReportReady(n);
    } else {
      st = SyncPod(key);
    }
    if (!st.ok() && st.code() != absl::StatusCode::kNotFound) {
      queue_.AddRateLimited(key);
    } else {
      queue_.Forget(key);
    }
    queue_.Done(key);
  }
}

absl::Status HollowNodes::SyncPod(const std::string& key) {
  auto obj = pods_->Get(key);
  if (obj == nullptr) return absl::OkStatus();
  const auto& pod = obj->pod();
  const std::string& node = pod.spec().node_name();
  int idx;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = alive_.find(node);
    if (it == alive_.end() || dead_.count(node)) return absl::OkStatus();
    idx = it->second;
  }
  if (objects::IsPodTerminating(pod)) {
    client::DeleteOptions opts;
    opts.grace_period_seconds = 0;
    opts.precondition_uid = pod.metadata().uid();
    return api_->Delete("pods", pod.metadata().namespace_(), pod.metadata().name(), opts).status();
  }
  if (pod.status().phase() == "Running" || pod.status().phase() == "Succeeded" || pod.status().phase() == "Failed")
    return absl::OkStatus();
  int n;
  {
    std::lock_guard<std::mutex> lock(mu_);
    n = next_ip_[node]++;
  }
  auto upd = *obj;
  auto* st = upd.mutable_pod()->mutable_status();
  st->set_phase("Running");
  std::string ip = absl::StrCat("10.", 100 + idx / 250, ".", idx % 250, ".", n % 250 + 2);
  st->set_pod_ip(ip);
  st->clear_pod_ips();
  st->add_pod_ips()->set_ip(ip);
  st->set_host_ip(absl::StrCat("127.1.", idx / 250, ".", idx % 250 + 1));
  st->set_start_time(objects::Now());
  std::string ready = opts_.pods_become_ready ? "True" : "False";
  objects::SetCondition(st->mutable_conditions(), "PodScheduled", "True", "", "");
  objects::SetCondition(st->mutable_conditions(), "Initialized", "True", "", "");
  objects::SetCondition(st->mutable_conditions(), "ContainersReady", ready, "", "");
  objects::SetCondition(st->mutable_conditions(), "Ready", ready, "", "");
  st->clear_container_statuses();
  for (const auto& c : pod.spec().containers()) {
    auto* cs = st->add_container_statuses();
    cs->set_name(c.name());
    cs->set_image(c.image());
    cs->set_ready(opts_.pods_become_ready);
    cs->set_started(true);
    cs->mutable_state()->mutable_running()->set_started_at(objects::Now());
  }
  auto r = api_->UpdateStatus("pods", pod.metadata().namespace_(), upd);
  if (r.ok()) pods_started_++;
  return r.status();
}

}  // namespace skiff::fakeclient
