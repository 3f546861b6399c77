// Node lifecycle in the lab: skiff-control-plane on host 1 with short
// node-lifecycle flags, skiff-kubelets on hosts 1 and 2.
//  - A node cut off from the lab goes Ready=Unknown with the
//    node.kubernetes.io/unreachable:NoExecute taint, its pods are evicted and
//    recreated on the other node; reconnected, its kubelet kills and cleans up
//    the stale pods (no monitor, netns, pod cgroup or mount left).
//  - Pods with bad input (more than allocatable, a bad probe port, a missing
//    configMap key) and a normal pod, all deleted, leave nothing behind.
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <map>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "node_cluster.h"

namespace {

using nlohmann::json;
using skiff::labtest::FindNodeLeaks;
using skiff::labtest::NodeCluster;
using skiff::labtest::WaitFor;
using namespace std::chrono_literals;

// Renewed every second by the kubelets (nodeLeaseDurationSeconds / 4), missed
// for 6 s => unreachable; pods without their own toleration go 2 s later.
const std::vector<std::string> kControlPlaneFlags = {"--node-monitor-grace-period", "6s",
                                                     "--default-unreachable-toleration-seconds", "2",
                                                     "--default-not-ready-toleration-seconds", "2"};
const std::vector<std::string> kKubeletFlags = {"--node-lease-duration-seconds", "4"};

bool HasTaint(const json& node, const std::string& key, const std::string& effect) {
  if (!node.contains("spec") || !node["spec"].contains("taints")) return false;
  for (auto& t : node["spec"]["taints"])
    if (t.value("key", "") == key && t.value("effect", "") == effect) return true;
  return false;
}

// `skiffctl get WHAT -o json`; null when it fails.
json GetJson(const NodeCluster& cluster, const std::vector<std::string>& what) {
  std::vector<std::string> args = {"get"};
  args.insert(args.end(), what.begin(), what.end());
  args.insert(args.end(), {"-o", "json"});
  auto r = cluster.Ctl(args);
  if (r.exit_code != 0) return json();
  auto j = json::parse(r.output, nullptr, false);
  return j.is_discarded() ? json() : j;
}

class NodeLifecycleCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    auto c = NodeCluster::Start(2, kControlPlaneFlags);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    for (int h = 1; h <= 2; ++h) {
      absl::Status st = cluster_->StartKubelet(h, kKubeletFlags);
      ASSERT_TRUE(st.ok()) << st;
    }
  }

  json Get(const std::vector<std::string>& what) { return GetJson(*cluster_, what); }
  // The pods whose name starts with `prefix`.
  json Pods(const std::string& prefix) {
    json out = json::array();
    json list = Get({"pods"});
    if (!list.contains("items")) return out;
    for (auto& p : list["items"])
      if (p["metadata"].value("name", "").rfind(prefix, 0) == 0) out.push_back(p);
    return out;
  }
  static bool IsReady(const json& pod) {
    if (!pod.contains("status") || !pod["status"].contains("conditions")) return false;
    for (auto& c : pod["status"]["conditions"])
      if (c.value("type", "") == "Ready") return c.value("status", "") == "True";
    return false;
  }
  static std::string ReadyCondition(const json& node) {
    if (!node.contains("status") || !node["status"].contains("conditions")) return "";
    for (auto& c : node["status"]["conditions"])
      if (c.value("type", "") == "Ready") return c.value("status", "");
    return "";
  }
  // The events about the object `name`: reason -> messages.
  std::multimap<std::string, std::string> Events(const std::string& name) {
    std::multimap<std::string, std::string> out;
    json list = Get({"events"});
    if (!list.contains("items")) return out;
    for (auto& e : list["items"])
      if (e["involvedObject"].value("name", "") == name) out.emplace(e.value("reason", ""), e.value("message", ""));
    return out;
  }
  // Whether an event about `name` has `reason` and a message containing `text`.
  bool HasEvent(const std::string& name, const std::string& reason, const std::string& text = "") {
    auto events = Events(name);
    for (auto [it, end] = events.equal_range(reason); it != end; ++it)
      if (it->second.find(text) != std::string::npos) return true;
    return false;
  }
  std::string Leaks(int host) { return absl::StrJoin(FindNodeLeaks(cluster_->Scope(host)), "\n"); }
  void CutOffAndReconnect(bool drop_connections);

  std::unique_ptr<NodeCluster> cluster_;
};

// Cuts h2 off while a Deployment runs on both nodes; with `drop_connections`
// h2's TCP connections to the API server are also destroyed while it is cut
// off, as the client keepalive (30 s + 10 s) would in any partition long
// enough for the default 40 s grace + 300 s toleration.
void NodeLifecycleCluster::CutOffAndReconnect(bool drop_connections) {
  auto r = cluster_->Apply(R"(apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 4
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: local/busybox
        command: ["sh", "-c", "mkdir -p /tmp/w; hostname > /tmp/w/index.html; exec httpd -f -p 8080 -h /tmp/w"]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
)");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json pods;
  ASSERT_TRUE(WaitFor([&] {
    pods = Pods("web-");
    std::set<std::string> nodes;
    int ready = 0;
    for (auto& p : pods) {
      if (!IsReady(p)) continue;
      ++ready;
      nodes.insert(p["spec"].value("nodeName", ""));
    }
    return ready == 4 && nodes.size() == 2;
  }, 60s)) << pods.dump(1) << cluster_->Logs(2);
  std::set<std::string> on_h2;  // uids
  for (auto& p : pods)
    if (p["spec"]["nodeName"] == "h2") on_h2.insert(p["metadata"]["uid"]);
  std::string evicted_name;
  for (auto& p : pods)
    if (p["spec"]["nodeName"] == "h2") evicted_name = p["metadata"]["name"];
  ASSERT_FALSE(on_h2.empty());
  // While the node is healthy it is never marked (the lease is renewed faster than the grace period).
  json h2 = Get({"node", "h2"});
  EXPECT_EQ(ReadyCondition(h2), "True") << h2.dump(1);
  EXPECT_FALSE(HasTaint(h2, "node.kubernetes.io/unreachable", "NoExecute")) << h2.dump(1);
  // Its containers run: one monitor each, naming its run dir.
  EXPECT_FALSE(FindNodeLeaks(cluster_->Scope(2)).empty());

  const auto cut_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(cluster_->lab().Cut(2).ok());
  if (drop_connections) {
    // ss -K in h2's own netns: only the test's namespaces are touched.
    const std::string api = cluster_->lab().host(1).address;
    auto k = cluster_->lab().Run(2, {"ss", "-K", "-tn", "dst", api, "dport", "=", ":6443"});
    ASSERT_EQ(k.exit_code, 0) << k.output;
    EXPECT_NE(k.output.find(":6443"), std::string::npos) << "no connection destroyed:\n" << k.output;
  }

  // Unreachable: Ready=Unknown and the NoExecute taint.
  EXPECT_TRUE(WaitFor([&] {
    h2 = Get({"node", "h2"});
    return ReadyCondition(h2) == "Unknown" && HasTaint(h2, "node.kubernetes.io/unreachable", "NoExecute");
  }, 30s)) << h2.dump(1) << cluster_->Logs(0);
  auto marked = std::chrono::steady_clock::now() - cut_at;
  // The last renewal came at most one renew interval (1 s) before the cut.
  EXPECT_GE(marked, 4s) << "marked before the lease could go stale";

  // Its pods are evicted and replaced on h1, where they become Ready.
  ASSERT_TRUE(WaitFor([&] {
    pods = Pods("web-");
    int ready_on_h1 = 0;
    for (auto& p : pods) {
      if (on_h2.count(p["metadata"]["uid"])) return false;
      if (IsReady(p) && p["spec"]["nodeName"] == "h1") ++ready_on_h1;
    }
    return ready_on_h1 == 4;
  }, 40s)) << pods.dump(1) << cluster_->Logs(0);
  auto replaced = std::chrono::steady_clock::now() - cut_at;
  EXPECT_TRUE(WaitFor([&] { return HasEvent(evicted_name, "TaintManagerEviction"); }, 10s))
      << Get({"events"}).dump(1);
  // The cut-off node's containers still run: nobody could tell its kubelet.
  EXPECT_FALSE(FindNodeLeaks(cluster_->Scope(2)).empty());

  // Back on the switch: its kubelet learns the pods are gone and cleans up everything.
  ASSERT_TRUE(cluster_->lab().Restore(2).ok());
  const auto restored_at = std::chrono::steady_clock::now();
  EXPECT_TRUE(WaitFor([&] { return FindNodeLeaks(cluster_->Scope(2)).empty(); }, 45s))
      << Leaks(2) << "\n" << cluster_->Logs(2);
  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  std::cout << "cut-off timeline: unreachable+tainted after " << ms(marked) << " ms, pods Ready on h1 after "
            << ms(replaced) << " ms; stale pods cleaned up " << ms(std::chrono::steady_clock::now() - restored_at)
            << " ms after reconnecting\n";
  EXPECT_TRUE(WaitFor([&] {
    h2 = Get({"node", "h2"});
    return !h2.is_null() && !HasTaint(h2, "node.kubernetes.io/unreachable", "NoExecute");
  }, 30s)) << h2.dump(1);
  // And Ready again: the kubelet posts its status when the API's copy says Unknown.
  EXPECT_TRUE(WaitFor([&] {
    h2 = Get({"node", "h2"});
    return ReadyCondition(h2) == "True";
  }, 20s)) << h2.dump(1) << cluster_->Logs(2);
  // h1's pods were not touched meanwhile.
  json after = Pods("web-");
  EXPECT_EQ(after.size(), 4u) << after.dump(1);
  for (auto& p : after) EXPECT_TRUE(IsReady(p)) << p.dump(1);
}

TEST_F(NodeLifecycleCluster, CutOffNodeIsTaintedItsPodsMoveAndItCleansUpWhenBack) { CutOffAndReconnect(false); }

// The kubelet's API connection dies while it is cut off: its pod watch
// restarts, and it must List (and reconcile) before watching again, or the
// deletions made meanwhile are never seen (failed before that fix).
TEST_F(NodeLifecycleCluster, CutOffLongEnoughToLoseItsConnectionStillCleansUpWhenBack) {
  CutOffAndReconnect(true);
}

TEST_F(NodeLifecycleCluster, BadInputPodsLeaveNothingBehindOnceDeleted) {
  // Pods pinned to h2 (the kubelet admits them, not the scheduler): `container` is
  // YAML added to their one busybox container, `volumes` to the pod spec.
  auto pod = [](const std::string& name, const std::string& container, const std::string& volumes = "") {
    return "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " + name +
           ", namespace: default}\nspec:\n  nodeName: h2\n  terminationGracePeriodSeconds: 1\n"
           "  containers:\n  - name: main\n    image: local/busybox\n" + container + volumes;
  };
  auto r = cluster_->Apply(R"(apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default}
data: {greeting: hello}
)" + pod("bad-too-big", R"(    command: ["sleep", "3600"]
    resources:
      requests: {cpu: "1000", memory: 64Mi}
)") + pod("bad-probe-port", R"(    command: ["sleep", "3600"]
    livenessProbe:
      tcpSocket: {port: 1}
      periodSeconds: 1
      failureThreshold: 1
)") + pod("bad-missing-key", R"(    command: ["sleep", "3600"]
    env:
    - name: GREETING
      valueFrom:
        configMapKeyRef: {name: settings, key: missing}
)") + pod("good", R"(    command: ["sh", "-c", "cat /cfg/greeting; exec sleep 3600"]
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
    - {name: scratch, mountPath: /scratch}
    - {name: shm, mountPath: /shm}
)", R"(  volumes:
  - {name: cfg, configMap: {name: settings}}
  - {name: scratch, emptyDir: {}}
  - {name: shm, emptyDir: {medium: Memory}}
)"));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // Each reaches its state on h2, with Kubernetes' reason.
  json p;
  EXPECT_TRUE(WaitFor([&] {
    p = Get({"pod", "bad-too-big"});
    return !p.is_null() && p["status"].value("phase", "") == "Failed" && p["status"].value("reason", "") == "OutOfcpu";
  }, 30s)) << p.dump(1);
  EXPECT_TRUE(WaitFor([&] {
    p = Get({"pod", "bad-missing-key"});
    if (p.is_null() || !p["status"].contains("containerStatuses")) return false;
    auto& st = p["status"]["containerStatuses"][0]["state"];
    return st.contains("waiting") && st["waiting"].value("reason", "") == "CreateContainerConfigError";
  }, 30s)) << p.dump(1);
  // And a clear event.
  EXPECT_TRUE(WaitFor([&] { return HasEvent("bad-too-big", "OutOfcpu", "cpu"); }, 10s)) << Get({"events"}).dump(1);
  EXPECT_TRUE(WaitFor([&] { return HasEvent("bad-missing-key", "Failed", "missing"); }, 10s))
      << Get({"events"}).dump(1);
  EXPECT_TRUE(WaitFor([&] { return HasEvent("bad-probe-port", "Unhealthy", "Liveness probe failed"); }, 30s))
      << Get({"events"}).dump(1);
  EXPECT_TRUE(WaitFor([&] {
    p = Get({"pod", "good"});
    return !p.is_null() && IsReady(p);
  }, 30s)) << p.dump(1);
  // Something to clean up: the running pods have netns, cgroups, mounts and monitors, and the
  // check sees each kind (so it can fail).
  std::string held = Leaks(2);
  for (const char* kind : {"netns ", "pod cgroup ", "mount ", "process "})
    EXPECT_NE(held.find(kind), std::string::npos) << kind << "not seen in:\n" << held;

  for (const char* name : {"bad-too-big", "bad-probe-port", "bad-missing-key", "good"}) {
    r = cluster_->Ctl({"delete", "pod", name, "--wait=false"});
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.output;
  }
  EXPECT_TRUE(WaitFor([&] {
    json list = Get({"pods"});
    return list.contains("items") && list["items"].empty();
  }, 30s)) << Get({"pods"}).dump(1);
  EXPECT_TRUE(WaitFor([&] { return FindNodeLeaks(cluster_->Scope(2)).empty(); }, 30s))
      << Leaks(2) << "\n" << cluster_->Logs(2);
}

}  // namespace

// --default-not-ready-toleration-seconds reaches the controller: a Node that
// reports Ready=False (no kubelet: its status is written once, and the grace
// period is too long for it to go Unknown) is tainted not-ready; a pod without
// a toleration of its own is evicted after the flag's 1 s, one that tolerates
// the taint for an hour stays.
TEST(NodeLifecycleFlags, NotReadyNodeEvictsAfterTheDefaultNotReadyToleration) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  auto c = NodeCluster::Start(1, {"--node-monitor-grace-period", "1h", "--default-not-ready-toleration-seconds", "1",
                                  "--default-unreachable-toleration-seconds", "3600"});
  ASSERT_TRUE(c.ok()) << c.status();
  auto& cluster = **c;
  auto get = [&](const std::vector<std::string>& what) { return GetJson(cluster, what); };
  auto r = cluster.Apply(R"(apiVersion: v1
kind: Node
metadata: {name: sick}
status:
  conditions:
  - {type: Ready, status: "False", reason: KubeletNotReady, message: "runtime down"}
  allocatable: {cpu: "4", memory: 8Gi, pods: "110"}
  capacity: {cpu: "4", memory: 8Gi, pods: "110"}
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: default}
spec:
  nodeName: sick
  containers:
  - {name: main, image: local/busybox, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: patient, namespace: default}
spec:
  nodeName: sick
  tolerations:
  - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 3600}
  containers:
  - {name: main, image: local/busybox, command: ["sleep", "3600"]}
)");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json node;
  EXPECT_TRUE(WaitFor([&] {
    node = get({"node", "sick"});
    return HasTaint(node, "node.kubernetes.io/not-ready", "NoExecute");
  }, 15s)) << node.dump(1) << cluster.Logs(0);
  // Deleted (gracefully: it stays Terminating, no kubelet finishes it) or gone.
  json plain;
  EXPECT_TRUE(WaitFor([&] {
    plain = get({"pod", "plain"});
    return plain.is_null() || plain["metadata"].contains("deletionTimestamp");
  }, 15s)) << plain.dump(1) << cluster.Logs(0);
  json patient = get({"pod", "patient"});
  ASSERT_FALSE(patient.is_null());
  EXPECT_FALSE(patient["metadata"].contains("deletionTimestamp")) << patient.dump(1);
}
