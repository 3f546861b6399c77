// pod-network-setup, our side: PodNetwork::Setup (pinned netns + veth pair +
// IPAM address + pod/host routes) for N pods, then Teardown of all of them.
// Runs in a private network and mount namespace it creates for itself.
// Prints "setup_ms_per_pod=<x> teardown_ms_per_pod=<y>".
#include <sched.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "skiff/podnet/podnet.h"

int main(int argc, char** argv) {
  int pods = argc > 1 ? atoi(argv[1]) : 100;
  if (unshare(CLONE_NEWNET | CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
    perror("unshare");
    return 1;
  }
  std::string base = "/tmp/skiff-bench-podnet-" + std::to_string(getpid());
  skiff::podnet::PodNetworkOptions o;
  o.run_dir = base + "/run";
  o.state_dir = base + "/state";
  o.pod_cidr = "10.244.0.0/16";
  auto net = skiff::podnet::PodNetwork::Open(o);
  if (!net.ok()) {
    fprintf(stderr, "%s\n", std::string(net.status().message()).c_str());
    return 1;
  }
  std::vector<double> setup;
  // CPU time of this thread too: on a loaded 2-core machine the wall time
  // mostly measures how long the scheduler keeps us waiting.
  auto cpu_ms = [] {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
  };
  double cpu0 = cpu_ms();
  for (int i = 0; i < pods; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = (*net)->Setup("pod-" + std::to_string(i));
    setup.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (!r.ok()) {
      fprintf(stderr, "setup: %s\n", std::string(r.status().message()).c_str());
      return 1;
    }
  }
  double cpu = (cpu_ms() - cpu0) / pods;
  auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < pods; ++i) (*net)->Teardown("pod-" + std::to_string(i)).IgnoreError();
  double teardown = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count() / pods;
  std::sort(setup.begin(), setup.end());
  double sum = 0;
  for (double v : setup) sum += v;
  printf("setup_ms_per_pod=%.3f setup_p50_ms=%.3f setup_p99_ms=%.3f setup_cpu_ms_per_pod=%.3f teardown_ms_per_pod=%.3f\n",
         sum / pods, setup[setup.size() / 2], setup[std::min(setup.size() - 1, setup.size() * 99 / 100)], cpu, teardown);
  net->reset();
  std::filesystem::remove_all(base);
  return 0;
}
