// pod-startup, our side: the kubelet engine (skiff::kubelet, real monitors,
// runtime, pod network and cgroups) against the in-memory API. 30 pods are
// created one after another; each one's latency is create -> phase Running
// seen through a watch. Then the RSS of this process (kubelet engine + the
// in-memory API + this harness: an upper bound for skiff-kubelet) and of every
// skiff-monitor. Private network and mount namespaces; a cgroup subtree it removes.
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "skiff/controllers/objects.h"
#include "skiff/fakeclient/fake_client.h"
#include "skiff/kubelet/container_record.h"
#include "skiff/kubelet/kubelet.h"
#include "skiff/runtime/cgroup.h"

namespace fs = std::filesystem;
using namespace skiff;

static long RssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string k;
  long v = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return atol(line.c_str() + 6);
  }
  return v;
}

// Proportional set size: shared library pages divided among the processes mapping them.
static long PssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Pss:", 0) == 0) return atol(line.c_str() + 4);
  }
  return 0;
}

int main(int argc, char** argv) {
  int pods = argc > 1 ? atoi(argv[1]) : 30;
  std::string build = argc > 2 ? argv[2] : "build";
  if (unshare(CLONE_NEWNET | CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
    perror("unshare");
    return 1;
  }
  std::string base = "/tmp/skiff-bench-podstart-" + std::to_string(getpid());
  fs::create_directories(base + "/images/busybox/bin");
  for (const char* d : {"proc", "dev", "sys", "tmp", "etc"}) fs::create_directories(base + "/images/busybox/" + d);
  fs::copy_file("/bin/busybox", base + "/images/busybox/bin/busybox");
  fs::create_symlink("busybox", base + "/images/busybox/bin/sh");
  fs::create_symlink("busybox", base + "/images/busybox/bin/sleep");
  auto cg = runtime::FindCgroup2Mount();
  std::string cg_rel = "skiff-bench-podstart-" + std::to_string(getpid());
  kubelet::Config c;
  c.node_name = "bench-node";
  c.root_dir = base + "/root";
  c.run_dir = base + "/run";
  c.log_dir = base + "/log";
  c.cgroup_root = cg_rel + "/kubepods";
  c.pod_cidr = "10.244.0.0/24";
  c.node_ip = "127.0.0.1";
  c.rootfs_dir = base + "/images";
  c.monitor_path = build + "/bin/skiff-monitor";
  c.listen = c.healthz_listen = "";
  auto api = std::make_shared<fakeclient::FakeClient>();
  for (const char* ns : {"default", "kube-node-lease"}) {
    api::v1::Namespace n;
    n.mutable_metadata()->set_name(ns);
    api->Create("namespaces", "", objects::Wrap(n)).IgnoreError();
  }
  auto k = std::make_unique<kubelet::Kubelet>(c, api);
  if (auto st = k->Start(); !st.ok()) {
    fprintf(stderr, "start: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  auto w = api->Watch("pods", "default", {});
  if (!w.ok()) return 1;
  std::vector<double> lat;
  for (int i = 0; i < pods; ++i) {
    api::v1::Pod p;
    p.mutable_metadata()->set_name("p" + std::to_string(i));
    p.mutable_metadata()->set_namespace_("default");
    p.mutable_spec()->set_node_name("bench-node");
    p.mutable_spec()->set_termination_grace_period_seconds(1);
    auto* ct = p.mutable_spec()->add_containers();
    ct->set_name("main");
    ct->set_image("local/busybox");
    ct->add_command("sleep");
    ct->add_command("100000");
    auto t0 = std::chrono::steady_clock::now();
    if (!api->Create("pods", "default", objects::Wrap(p)).ok()) return 1;
    while (true) {
      auto ev = (*w)->Next();
      if (!ev.ok()) return 1;
      const auto& got = ev->object().pod();
      if (got.metadata().name() == p.metadata().name() && got.status().phase() == "Running") break;
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(60)) {
        fprintf(stderr, "pod %d did not start\n", i);
        return 1;
      }
    }
    lat.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  long self_rss = RssKb(getpid());
  long mon_max = 0, mon_sum = 0, pss_max = 0;
  int mons = 0;
  for (auto& e : fs::recursive_directory_iterator(c.run_dir + "/pods")) {
    if (e.path().extension() != ".state") continue;
    auto r = kubelet::ReadRecordFile(e.path());
    if (!r.ok() || r->exited) continue;
    long rss = RssKb(r->monitor_pid);
    mon_max = std::max(mon_max, rss);
    pss_max = std::max(pss_max, PssKb(r->monitor_pid));
    mon_sum += rss;
    ++mons;
  }
  std::vector<double> s = lat;
  std::sort(s.begin(), s.end());
  printf("pods=%d p50_ms=%.1f p99_ms=%.1f max_ms=%.1f engine_rss_kb=%ld monitors=%d monitor_rss_kb_avg=%ld monitor_rss_kb_max=%ld monitor_pss_kb_max=%ld\n",
         pods, s[s.size() / 2], s[std::min(s.size() - 1, s.size() * 99 / 100)], s.back(), self_rss, mons,
         mons ? mon_sum / mons : 0, mon_max, pss_max);
  fflush(stdout);
  // Clean up: delete every pod and wait for the kubelet to remove everything.
  for (int i = 0; i < pods; ++i) {
    client::DeleteOptions d;
    d.grace_period_seconds = 0;
    api->Delete("pods", "default", "p" + std::to_string(i), d).IgnoreError();
  }
  for (int i = 0; i < 300; ++i) {
    std::error_code ec;
    if (fs::is_empty(c.run_dir + "/pods", ec)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  k->Stop();
  k.reset();
  if (cg.ok()) {
    std::vector<fs::path> dirs;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(*cg + "/" + cg_rel, ec); it != fs::recursive_directory_iterator(); it.increment(ec))
      if (it->is_directory()) dirs.push_back(it->path());
    std::sort(dirs.begin(), dirs.end(), [](auto& a, auto& b) { return a.string().size() > b.string().size(); });
    for (auto& d : dirs) rmdir(d.c_str());
    rmdir((*cg + "/" + cg_rel).c_str());
  }
  std::error_code ec;
  fs::remove_all(base, ec);
  return 0;
}
