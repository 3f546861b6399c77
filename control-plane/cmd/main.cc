// skiff-control-plane: the API server, scheduler and controller manager in
// one process, on the embedded store or an external etcd cluster.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "skiff/apiserver/server.h"
#include "skiff/client/config.h"
#include "skiff/client/dial.h"
#include "skiff/common/log.h"
#include "skiff/common/config_args.h"
#include "skiff/common/systemd.h"
#include "skiff/controllers/manager.h"
#include "skiff/scheduler/scheduler.h"
#include "skiff/store/server.h"
#include "skiff/store/store.h"

namespace {

std::atomic<bool> g_stop{false};
int g_signal_pipe[2] = {-1, -1};

void OnSignal(int) {
  g_stop = true;
  char c = 1;
  if (g_signal_pipe[1] >= 0) (void)!write(g_signal_pipe[1], &c, 1);
}

void Usage() {
  fprintf(stderr,
          "usage: skiff-control-plane --data-dir DIR [--listen ADDR:PORT] [--etcd-servers URL,...]\n"
          "         [--service-cluster-ip-range CIDR] [--service-node-port-range MIN-MAX]\n"
          "         [--components apiserver,scheduler,controllers] [--health-listen ADDR:PORT]\n"
          "         [--tls-san NAME]... [--token-auth-file FILE] [--advertise-address IP]\n"
          "         [--cluster-cidr CIDR] [--kubelet-tls] [--insecure] [--v debug|info|warning|error]\n"
          "         [--node-monitor-grace-period DURATION] [--default-unreachable-toleration-seconds N]\n"
          "         [--default-not-ready-toleration-seconds N]\n"
          "\n"
          "node lifecycle (kube-controller-manager's and kube-apiserver's flags):\n"
          "  --node-monitor-grace-period DURATION\n"
          "        how long a node's Lease may go unrenewed before the node is marked Ready=Unknown\n"
          "        and tainted node.kubernetes.io/unreachable:NoExecute; whole seconds, e.g. 40s, 1m\n"
          "        (default 40s)\n"
          "  --default-unreachable-toleration-seconds N\n"
          "        how long a pod without its own toleration stays on an unreachable node before it\n"
          "        is evicted (default 300)\n"
          "  --default-not-ready-toleration-seconds N\n"
          "        the same for a node that reports Ready=False (taint node.kubernetes.io/not-ready)\n"
          "        (default 300)\n");
}

// A duration like kube-controller-manager's (40s, 1m30s, 500ms), as whole
// seconds greater than zero: the node lifecycle controller counts in seconds.
bool ParseGracePeriod(const std::string& flag, const std::string& v, int* seconds) {
  absl::Duration d;
  if (!absl::ParseDuration(v, &d)) {
    fprintf(stderr, "%s: invalid duration \"%s\" (want e.g. 40s, 1m, 1m30s)\n", flag.c_str(), v.c_str());
    return false;
  }
  if (d <= absl::ZeroDuration() || d > absl::Hours(24)) {
    fprintf(stderr, "%s: %s out of range (want more than 0s and at most 24h)\n", flag.c_str(), v.c_str());
    return false;
  }
  if (d % absl::Seconds(1) != absl::ZeroDuration()) {
    fprintf(stderr, "%s: %s is not a whole number of seconds\n", flag.c_str(), v.c_str());
    return false;
  }
  *seconds = static_cast<int>(absl::ToInt64Seconds(d));
  return true;
}

// A toleration in seconds like kube-apiserver's: an integer, 0 or more.
bool ParseTolerationSeconds(const std::string& flag, const std::string& v, int* seconds) {
  int64_t n = 0;
  if (!absl::SimpleAtoi(v, &n) || n < 0 || n > 365LL * 24 * 3600) {
    fprintf(stderr, "%s: invalid value \"%s\" (want whole seconds, 0 or more)\n", flag.c_str(), v.c_str());
    return false;
  }
  *seconds = static_cast<int>(n);
  return true;
}

}  // namespace

int main(int raw_argc, char** raw_argv) {
  // Debian's abseil runs absl::Mutex deadlock detection (a global lock-order
  // graph) on every gRPC-internal lock; it costs CPU on every request.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  auto expanded = skiff::ExpandConfigArgs(raw_argc, raw_argv);
  if (!expanded.ok()) {
    fprintf(stderr, "skiff-control-plane: %s\n", std::string(expanded.status().message()).c_str());
    return 2;
  }
  int argc = expanded->argc();
  char** argv = expanded->argv();
  skiff::log::Init("skiff-control-plane");
  skiff::apiserver::ServerOptions opts;
  opts.data_dir = "/var/lib/skiff/control-plane";
  opts.listen = "0.0.0.0:6443";
  std::string components = "apiserver,scheduler,controllers";
  std::string cluster_cidr = "10.244.0.0/16";
  std::string leader_identity;
  skiff::controllers::Options lifecycle;  // node lifecycle fields only; the rest is set below
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string v;
    auto eq = a.find('=');
    bool has_inline = a.rfind("--", 0) == 0 && eq != std::string::npos;
    if (has_inline) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    auto value = [&]() -> std::string {
      if (has_inline) return v;
      if (i + 1 >= argc) {
        fprintf(stderr, "%s needs a value\n", a.c_str());
        exit(2);
      }
      return argv[++i];
    };
    if (a == "--data-dir") opts.data_dir = value();
    else if (a == "--listen") opts.listen = value();
    else if (a == "--etcd-servers") {
      for (auto s : absl::StrSplit(value(), ',', absl::SkipEmpty())) opts.etcd_servers.push_back(std::string(s));
    } else if (a == "--service-cluster-ip-range") opts.service_cluster_ip_range = value();
    else if (a == "--service-node-port-range") {
      std::vector<std::string> parts = absl::StrSplit(value(), '-');
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &opts.node_port_min) ||
          !absl::SimpleAtoi(parts[1], &opts.node_port_max) || opts.node_port_min > opts.node_port_max) {
        fprintf(stderr, "--service-node-port-range: want MIN-MAX\n");
        return 2;
      }
    } else if (a == "--components") components = value();
    else if (a == "--health-listen") opts.health_listen = value();
    else if (a == "--tls-san") {
      for (auto s : absl::StrSplit(value(), ',', absl::SkipEmpty())) opts.tls_sans.push_back(std::string(s));
    } else if (a == "--token-auth-file") opts.token_auth_file = value();
    else if (a == "--advertise-address") opts.advertise_address = value();
    else if (a == "--cluster-cidr") cluster_cidr = value();
    else if (a == "--leader-identity") leader_identity = value();
    else if (a == "--node-monitor-grace-period") {
      if (!ParseGracePeriod(a, value(), &lifecycle.node_monitor_grace_period_seconds)) return 2;
    } else if (a == "--default-unreachable-toleration-seconds") {
      if (!ParseTolerationSeconds(a, value(), &lifecycle.default_unreachable_toleration_seconds)) return 2;
    } else if (a == "--default-not-ready-toleration-seconds") {
      if (!ParseTolerationSeconds(a, value(), &lifecycle.default_not_ready_toleration_seconds)) return 2;
    }
    else if (a == "--bookmark-interval-ms") {
      if (!absl::SimpleAtoi(value(), &opts.bookmark_interval_ms)) return 2;
    } else if (a == "--kubelet-tls") opts.kubelet_tls = true;
    else if (a == "--insecure") opts.insecure = true;
    else if (a == "--v") skiff::log::SetLevel(skiff::log::ParseLevel(value()));
    else if (a == "-h" || a == "--help") {
      Usage();
      return 0;
    } else {
      fprintf(stderr, "unknown flag %s\n", a.c_str());
      Usage();
      return 2;
    }
  }
  std::set<std::string> comps;
  for (auto c : absl::StrSplit(components, ',', absl::SkipEmpty())) comps.insert(std::string(c));
  for (const auto& c : comps)
    if (c != "apiserver" && c != "scheduler" && c != "controllers") {
      fprintf(stderr, "--components: unknown component %s\n", c.c_str());
      return 2;
    }

  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0) return 1;
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // The embedded store, served on a unix socket under --data-dir, when no
  // external etcd is named.
  std::unique_ptr<skiff::store::Store> store;
  std::unique_ptr<skiff::store::Server> store_server;
  if (comps.count("apiserver") && opts.etcd_servers.empty()) {
    if (::mkdir(opts.data_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      skiff::log::Error("mkdir ", opts.data_dir, ": ", strerror(errno));
      return 1;
    }
    skiff::store::Options so;
    so.data_dir = opts.data_dir + "/store";
    so.auto_compaction_retention_ms = 60 * 60 * 1000;
    auto s = skiff::store::Store::Open(so);
    if (!s.ok()) {
      skiff::log::Error("embedded store: ", s.status());
      return 1;
    }
    store = std::move(*s);
    std::string sock = opts.data_dir + "/store.sock";
    ::unlink(sock.c_str());
    skiff::store::ServerOptions sso;
    sso.listen_client_urls = {"unix://" + sock};
    auto srv = skiff::store::Server::Start(store.get(), sso);
    if (!srv.ok()) {
      skiff::log::Error("embedded store server: ", srv.status());
      return 1;
    }
    store_server = std::move(*srv);
    opts.etcd_servers = {"unix://" + sock};
    skiff::log::Info("embedded store ", skiff::log::Field("data_dir", so.data_dir), " ", skiff::log::Field("socket", sock));
  }

  std::unique_ptr<skiff::apiserver::ApiServer> api;
  skiff::client::Credentials internal;
  if (comps.count("apiserver")) {
    auto srv = skiff::apiserver::ApiServer::Start(opts);
    if (!srv.ok()) {
      skiff::log::Error("api server: ", srv.status());
      return 1;
    }
    api = std::move(*srv);
    internal = api->InternalCredentials();
  } else {
    // Scheduler/controllers alone (HA layouts) use <data-dir>/admin.conf or $SKIFFCONFIG.
    auto cfg = skiff::client::LoadClientConfig(getenv("SKIFFCONFIG") ? getenv("SKIFFCONFIG") : opts.data_dir + "/admin.conf");
    if (!cfg.ok()) {
      skiff::log::Error("client config: ", cfg.status());
      return 1;
    }
    internal = cfg->credentials;
  }

  std::vector<std::thread> threads;
  if (comps.count("scheduler") || comps.count("controllers")) {
    auto dialed = skiff::client::Dial(internal);
    if (!dialed.ok()) {
      skiff::log::Error("dial api server: ", dialed.status());
      return 1;
    }
    std::shared_ptr<skiff::client::Client> client(std::move(*dialed));
    if (comps.count("scheduler")) {
      threads.emplace_back([client, leader_identity] {
        skiff::scheduler::Options so;
        so.identity = leader_identity;
        auto st = skiff::scheduler::Run(client, so, g_stop);
        if (!st.ok()) skiff::log::Error("scheduler: ", st);
      });
    }
    if (comps.count("controllers")) {
      threads.emplace_back([client, leader_identity, cluster_cidr, lifecycle] {
        skiff::controllers::Options co = lifecycle;
        co.identity = leader_identity;
        co.cluster_cidr = cluster_cidr;
        auto st = skiff::controllers::Run(client, co, g_stop);
        if (!st.ok()) skiff::log::Error("controllers: ", st);
      });
    }
  }

  char c;
  // READY=1 was sent by the API server once serving; the watchdog pings
  // from here on (the embedded store and API server run in this process).
  skiff::systemd::StartWatchdog();
  while (!g_stop) {
    ssize_t n = read(g_signal_pipe[0], &c, 1);
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  skiff::log::Info("shutting down");
  g_stop = true;
  for (auto& t : threads) t.join();
  if (api) api->Shutdown();
  if (store_server) store_server->Shutdown();
  return 0;
}
