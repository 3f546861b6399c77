// skiff-kubelet: the node agent. Flags follow DESIGN.md / the kubelet's.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <thread>
#include <atomic>

#include "skiff/common/config_args.h"
#include "skiff/common/log.h"
#include "skiff/kubelet/config.h"
#include "skiff/kubelet/join.h"
#include "skiff/kubelet/kubelet.h"
#include "skiff/kubelet/server.h"
#ifdef SKIFF_KUBELET_HAVE_CLIENT
#include "skiff/client/config.h"
#include "skiff/client/dial.h"
#endif

namespace {

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

void Usage() {
  std::cerr << "usage: skiff-kubelet --server HOST:PORT | --kubeconfig FILE [--insecure] --node-name NAME\n"
               "  skiff-kubelet --join TOKEN --server HOST:PORT --discovery-token-ca-cert-hash sha256:HEX\n"
               "    [--node-name NAME] [--kubeconfig FILE] [--write-config]   (node join, then exit)\n"
               "  [--config FILE]\n"
               "  [--root-dir DIR] [--run-dir DIR] [--log-dir DIR] [--cgroup-root PATH]\n"
               "  [--cgroup-driver cgroupfs|systemd] [--pod-cidr CIDR] [--node-ip IP]\n"
               "  [--service-cluster-ip-range CIDR] [--listen ADDR] [--healthz-listen ADDR]\n"
               "  [--pod-manifest-path DIR] [--manifest-poll-seconds N] [--eviction-hard memory.available<100Mi,nodefs.available<10%]\n"
               "  [--eviction-interval-seconds N] [--rootfs-dir DIR] [--image-root DIR] [--max-pods N]\n"
               "  [--monitor PATH] [--no-pod-network] [--v debug|info|warning|error]\n"
               "  [--node-lease-duration-seconds N]   (KubeletConfiguration nodeLeaseDurationSeconds, default 40;\n"
               "                                       the Lease is renewed every N/4 seconds)\n";
}

}  // namespace

int main(int raw_argc, char** raw_argv) {
  auto expanded = skiff::ExpandConfigArgs(raw_argc, raw_argv);
  if (!expanded.ok()) {
    std::cerr << "skiff-kubelet: " << expanded.status().message() << "\n";
    return 2;
  }
  int argc = expanded->argc();
  char** argv = expanded->argv();
  skiff::kubelet::Config c;
  std::string server, kubeconfig, level = "info";
  bool insecure = false;
  std::string join_token, ca_hash;
  bool write_config = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string v;
    auto eq = a.find('=');
    bool has_inline = eq != std::string::npos;
    if (has_inline) v = a.substr(eq + 1), a = a.substr(0, eq);
    auto next = [&]() -> std::string {
      if (has_inline) return v;
      if (i + 1 >= argc) {
        std::cerr << "skiff-kubelet: " << a << " needs a value\n";
        exit(2);
      }
      return argv[++i];
    };
    if (a == "--server") server = next();
    else if (a == "--kubeconfig") kubeconfig = next();
    else if (a == "--join") join_token = next();
    else if (a == "--bootstrap-token") join_token = next();
    else if (a == "--discovery-token-ca-cert-hash") ca_hash = next();
    else if (a == "--write-config") write_config = true;
    else if (a == "--insecure") insecure = true;
    else if (a == "--node-name") c.node_name = next();
    else if (a == "--root-dir") c.root_dir = next();
    else if (a == "--run-dir") c.run_dir = next();
    else if (a == "--log-dir") c.log_dir = next();
    else if (a == "--cgroup-root") c.cgroup_root = next();
    else if (a == "--cgroup-driver") c.cgroup_driver = next();
    else if (a == "--pod-cidr") c.pod_cidr = next();
    else if (a == "--node-ip") c.node_ip = next();
    else if (a == "--service-cluster-ip-range") c.service_cidr = next();
    else if (a == "--cluster-cidr") c.cluster_cidr = next();
    else if (a == "--listen") c.listen = next();
    else if (a == "--healthz-listen") c.healthz_listen = next();
    else if (a == "--manifest-dir" || a == "--pod-manifest-path") c.manifest_dir = next();
    else if (a == "--manifest-poll-seconds") c.manifest_poll_seconds = atoi(next().c_str());
    else if (a == "--eviction-hard") {
      if (auto st = skiff::kubelet::ParseEvictionHard(next(), &c); !st.ok()) {
        std::cerr << "skiff-kubelet: " << st.message() << "\n";
        return 2;
      }
    } else if (a == "--eviction-interval-seconds") c.eviction_interval_seconds = atoi(next().c_str());
    else if (a == "--rootfs-dir") c.rootfs_dir = next();
    else if (a == "--image-root") c.image_root = next();
    else if (a == "--max-pods") c.max_pods = atoi(next().c_str());
    else if (a == "--node-lease-duration-seconds") {
      int n = atoi(next().c_str());
      if (n < 4) {
        std::cerr << "skiff-kubelet: --node-lease-duration-seconds must be at least 4\n";
        return 2;
      }
      c.lease_duration_seconds = n;
      c.lease_seconds = n / 4;
    }
    else if (a == "--monitor") c.monitor_path = next();
    else if (a == "--no-pod-network") c.enable_pod_network = false;
    else if (a == "--v") level = next();
    else if (a == "-h" || a == "--help") {
      Usage();
      return 0;
    } else {
      std::cerr << "skiff-kubelet: unknown flag " << a << "\n";
      Usage();
      return 2;
    }
  }
  skiff::log::Init("skiff-kubelet", skiff::log::ParseLevel(level));
#ifdef SKIFF_KUBELET_HAVE_CLIENT
  if (!join_token.empty()) {
    skiff::kubelet::JoinOptions jo;
    jo.server = server;
    jo.token = join_token;
    jo.ca_hash = ca_hash;
    jo.node_name = c.node_name;
    if (jo.node_name.empty()) {
      char host[256] = {};
      if (gethostname(host, sizeof host - 1) == 0) jo.node_name = host;
    }
    if (!kubeconfig.empty()) jo.kubeconfig_path = kubeconfig;
    jo.write_config = write_config;
    auto st = skiff::kubelet::Join(jo);
    if (!st.ok()) {
      std::cerr << "skiff-kubelet: " << st.message() << "\n";
      return 1;
    }
    std::cout << "This node has joined the cluster as " << jo.node_name << ".\n";
    return 0;
  }
#endif
  if (c.cgroup_driver != "cgroupfs" && c.cgroup_driver != "systemd") {
    std::cerr << "skiff-kubelet: --cgroup-driver must be cgroupfs or systemd\n";
    return 2;
  }
#ifdef SKIFF_KUBELET_HAVE_CLIENT
  skiff::client::Credentials creds;
  if (!kubeconfig.empty()) {
    auto cfg = skiff::client::LoadClientConfig(kubeconfig);
    if (!cfg.ok()) {
      skiff::log::Error("load --kubeconfig: ", cfg.status());
      return 1;
    }
    creds = cfg->credentials;
  }
  if (!server.empty()) creds.server = server;
  if (insecure) creds.insecure = true;
  if (creds.server.empty()) {
    std::cerr << "skiff-kubelet: --server or --kubeconfig is required\n";
    return 2;
  }
  auto dialed = skiff::client::Dial(creds);
  if (!dialed.ok()) {
    skiff::log::Error("dial ", creds.server, ": ", dialed.status());
    return 1;
  }
  skiff::client::GrpcClient* grpc_client = dialed->get();
  std::shared_ptr<skiff::client::Client> client(std::move(*dialed));
  // Service account token volumes: tokens bound to the pod, from the API
  // server's TokenRequest; ca.crt is the CA this kubelet trusts for it.
  std::string ca_pem = creds.ca_cert_pem;
  auto token_source = [grpc_client, client, ca_pem](const std::string& ns, const std::string& sa, const std::string& pod,
                                                    const std::string& uid)
      -> absl::StatusOr<skiff::kubelet::ServiceAccountToken> {
    auto r = grpc_client->CreateServiceAccountToken(ns, sa, {}, 3600, pod, uid);
    if (!r.ok()) return r.status();
    skiff::kubelet::ServiceAccountToken t;
    t.token = r->token();
    t.expiration_unix = r->expiration_unix();
    t.ca_crt = ca_pem;
    return t;
  };
#else
  (void)insecure;
  std::cerr << "skiff-kubelet: built without skiff::client\n";
  return 1;
  std::shared_ptr<skiff::client::Client> client;
#endif
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  signal(SIGPIPE, SIG_IGN);

  skiff::kubelet::Kubelet kubelet(c, client);
#ifdef SKIFF_KUBELET_HAVE_CLIENT
  kubelet.SetTokenSource(token_source);
#endif
  // The Kubelet service (exec, logs, port-forward, stats) and healthz serve
  // before the first pod starts, so a pod seen Running can be exec'd into.
  std::unique_ptr<grpc::Server> grpc_server;
  if (!c.listen.empty()) {
    auto s = skiff::kubelet::StartKubeletServer(&kubelet, c.listen);
    if (!s.ok()) {
      skiff::log::Error(s.status());
      return 1;
    }
    grpc_server = std::move(*s);
  }
  skiff::kubelet::HttpServer http;
  if (!c.healthz_listen.empty()) {
    auto hs = http.Start(c.healthz_listen, [&](const std::string& path, int* code, std::string* ctype) -> std::string {
      if (path == "/healthz") {
        bool ok = kubelet.Healthy();
        *code = ok ? 200 : 500;
        return ok ? "ok" : "lease not renewed";
      }
      if (path == "/metrics") {
        *ctype = "text/plain; version=0.0.4";
        return skiff::kubelet::RenderMetrics(&kubelet);
      }
      *code = 404;
      return "not found";
    });
    if (!hs.ok()) skiff::log::Warn("healthz server: ", hs);
  }
  // Systemd hears READY=1 once the node's own state is in hand, not when the
  // API server answers: the API server may be down for long (it restarts
  // with a package upgrade), and the kubelet waits for it without being
  // killed as a failed start, leaving every running container alone. The
  // watchdog follows the kubelet's own liveness, never the API server's.
  uint64_t watchdog_usec = 0;
  bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0;
  uint64_t ping_usec = watchdog ? std::min<uint64_t>(watchdog_usec / 2, 1000000) : 500000;
  sd_notify(0, "READY=1");
  std::mutex start_mu;
  std::condition_variable start_cv;
  bool starting = true;
  std::thread pinger([&] {
    std::unique_lock<std::mutex> l(start_mu);
    while (starting && !g_stop) {
      if (watchdog) sd_notify(0, "WATCHDOG=1");
      start_cv.wait_for(l, std::chrono::microseconds(ping_usec));
    }
  });
  absl::Status st;
  while (!g_stop) {
    st = kubelet.Start();
    if (st.ok() || !absl::IsUnavailable(st)) break;
    skiff::log::Warn("start: ", st, " (retrying)");
    sleep(1);
  }
  {
    std::lock_guard<std::mutex> l(start_mu);
    starting = false;
  }
  start_cv.notify_all();
  pinger.join();
  if (g_stop && !st.ok()) return 0;
  if (!st.ok()) {
    skiff::log::Error("start: ", st);
    return 1;
  }
  skiff::log::Info("node agent running ", skiff::log::Field("node", c.node_name));
  while (!g_stop) {
    usleep(ping_usec);
    if (watchdog && kubelet.Alive()) sd_notify(0, "WATCHDOG=1");
  }
  sd_notify(0, "STOPPING=1");
  skiff::log::Info("stopping; containers keep running");
  if (grpc_server) grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  http.Stop();
  kubelet.Stop();
  return 0;
}
