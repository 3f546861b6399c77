// skiff-kubelet's settings; every field is a command-line flag (see cmd/main.cc).
#pragma once

#include <cstdint>
#include <string>

namespace skiff::kubelet {

struct Config {
  std::string node_name;
  std::string root_dir = "/var/lib/skiff/kubelet";  // persistent: IPAM, pod volumes, bundles
  std::string run_dir = "/run/skiff";               // volatile: netns pins, container records, runtime state
  std::string log_dir = "/var/log/pods";
  std::string cgroup_root = "/kubepods";             // relative to the cgroup2 mount
  std::string cgroup_driver = "cgroupfs";            // or systemd
  std::string pod_cidr;                              // else Node.spec.podCIDR
  std::string node_ip;                               // else the first non-loopback IPv4 address
  std::string service_cidr = "10.96.0.0/12";
  // The whole cluster's pod range (the controller manager's --cluster-cidr): traffic from pods
  // to anything outside it is masqueraded to the node's address. "" = no masquerade.
  std::string cluster_cidr = "10.244.0.0/16";
  std::string listen = ":10250";                     // Kubelet gRPC service; "" = off
  std::string healthz_listen = "127.0.0.1:10248";    // /healthz and /metrics; "" = off
  std::string manifest_dir = "/etc/skiff/manifests";  // static pods (--pod-manifest-path); "" = off
  int manifest_poll_seconds = 20;                    // how often the manifest directory is read
  std::string rootfs_dir;                            // plain-directory images: <rootfs_dir>/<name>
  std::string image_root;                            // skiff::image store; "" = <root_dir>/../images
  std::string monitor_path;                          // skiff-monitor; "" = next to /proc/self/exe
  int max_pods = 110;
  int lease_seconds = 10;                            // renew period: a quarter of the duration
  int lease_duration_seconds = 40;                   // the Lease's leaseDurationSeconds
  int node_status_seconds = 300;
  int sync_seconds = 1;                              // per-pod resync period
  bool enable_pod_network = true;
  // Hard eviction thresholds (--eviction-hard memory.available<100Mi,nodefs.available<10%).
  int64_t eviction_memory_available_bytes = 100 * 1024 * 1024;
  double eviction_nodefs_available_fraction = 0.10;  // of the filesystem holding root_dir
  int eviction_interval_seconds = 10;                // 0 = eviction off
};

}  // namespace skiff::kubelet
