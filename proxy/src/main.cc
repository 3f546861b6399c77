// skiff-proxy: routes Services with eBPF (see docs/proxy.md).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>

#include "absl/strings/str_split.h"
#include "skiff/common/log.h"
#include "skiff/common/config_args.h"
#include "skiff/proxy/agent.h"
#include "skiff/proxy/api_source.h"
#include "skiff/proxy/datapath.h"

namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop = true; }

void Usage() {
  std::cerr << "usage: skiff-proxy (--from-file FILE | --server HOST:PORT [--kubeconfig FILE]) [--config FILE] [--node-name NAME] [--node-ip IP,...]\n"
               "       [--cgroup-root DIR] [--bpffs-dir DIR] [--service-cluster-ip-range CIDR]\n"
               "       [--no-service-route] [--metrics-bind-address HOST:PORT|off] [--tc-interfaces IF,...]\n"
               "       [--healthz-bind-address HOST:PORT|off (default 0.0.0.0:10256)] [--healthz-timeout SECONDS (60)]\n"
               "       [--log-level debug|info|warning|error]\n"
               "       skiff-proxy --cleanup [--bpffs-dir DIR] [--tc-interfaces IF,...]   (detach programs, remove pinned maps)\n";
}

std::vector<std::string> SplitList(const std::string& v) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipEmpty())) out.emplace_back(part);
  return out;
}

}  // namespace

int main(int raw_argc, char** raw_argv) {
  skiff::log::Init("skiff-proxy");
  auto expanded = skiff::ExpandConfigArgs(raw_argc, raw_argv);
  if (!expanded.ok()) {
    std::cerr << "skiff-proxy: " << expanded.status().message() << "\n";
    return 2;
  }
  int argc = expanded->argc();
  char** argv = expanded->argv();
  skiff::proxy::AgentOptions opts;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0) opts.node_name = host;
  std::string from_file, server, kubeconfig;
  bool cleanup = false;
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
        std::cerr << "missing value for " << a << "\n";
        exit(2);
      }
      return argv[++i];
    };
    if (a == "--from-file") from_file = value();
    else if (a == "--server") server = value();
    else if (a == "--kubeconfig") kubeconfig = value();
    else if (a == "--node-name") opts.node_name = value();
    else if (a == "--node-ip") opts.node_ips = SplitList(value());
    else if (a == "--cgroup-root") opts.cgroup_root = value();
    else if (a == "--bpffs-dir") opts.bpffs_dir = value();
    else if (a == "--service-cluster-ip-range") opts.service_cidr = value();
    else if (a == "--no-service-route") opts.service_route = false;
    else if (a == "--metrics-bind-address") {
      opts.metrics_address = value();
      if (opts.metrics_address == "off") opts.metrics_address.clear();
    } else if (a == "--healthz-bind-address") {
      opts.healthz_address = value();
      if (opts.healthz_address == "off") opts.healthz_address.clear();
    } else if (a == "--healthz-timeout") {
      double secs = atof(value().c_str());
      if (secs <= 0) {
        std::cerr << "--healthz-timeout needs seconds > 0\n";
        return 2;
      }
      opts.healthz_timeout = std::chrono::milliseconds(static_cast<long long>(secs * 1000));
    } else if (a == "--tc-interfaces") opts.tc_interfaces = SplitList(value());
    else if (a == "--log-level") skiff::log::SetLevel(skiff::log::ParseLevel(value()));
    else if (a == "--cleanup") cleanup = true;
    else if (a == "-h" || a == "--help") {
      Usage();
      return 0;
    } else {
      std::cerr << "unknown flag " << a << "\n";
      Usage();
      return 2;
    }
  }
  if (cleanup) {
    for (const std::string& ifname : opts.tc_interfaces) {
      if (auto st = skiff::proxy::Datapath::DetachTc(ifname); !st.ok()) skiff::log::Warn("cleanup: ", st);
    }
    auto st = skiff::proxy::Datapath::RemovePins(opts.bpffs_dir);
    if (!st.ok()) {
      skiff::log::Error("cleanup: ", st);
      return 1;
    }
    return 0;
  }
  std::unique_ptr<skiff::proxy::Source> source;
  if (!from_file.empty()) {
    source = skiff::proxy::MakeFileSource(from_file);
  } else if (!server.empty()) {
    // Services and EndpointSlices from the API: credentials from --kubeconfig
    // (or the default client config), --server overrides its address.
    auto cfg = skiff::proxy::LoadApiSourceConfig(kubeconfig, server);
    if (!cfg.ok()) {
      skiff::log::Error("--kubeconfig: ", cfg.status());
      return 2;
    }
    source = skiff::proxy::MakeApiSource(std::move(*cfg));
  } else {
    Usage();
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  auto st = skiff::proxy::RunAgent(opts, std::move(source), g_stop);
  if (!st.ok()) {
    skiff::log::Error("skiff-proxy: ", st);
    return 1;
  }
  skiff::log::Info("stopped; datapath stays pinned");
  return 0;
}
