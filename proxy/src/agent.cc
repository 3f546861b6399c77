#include "skiff/proxy/agent.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <malloc.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "skiff/common/log.h"
#include "skiff/common/systemd.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"
#include "skiff/proxy/datapath.h"
#include "skiff/proxy/desired.h"
#include "skiff/proxy/health.h"
#include "skiff/proxy/service_map.h"

namespace skiff::proxy {

namespace {

struct AgentStatus {
  std::mutex mu;
  bool synced = false;
  bool last_apply_ok = false;
  uint64_t syncs = 0;
  uint64_t sync_errors = 0;
  uint64_t map_writes = 0;
  uint64_t map_deletes = 0;
  double last_sync_seconds = 0;
  size_t services = 0;
  size_t frontends = 0;
  size_t backends = 0;
  ServiceMap* map = nullptr;  // read under mu
};

// CPU time of the calling thread: the programming cost without the time
// spent waiting for a CPU on a loaded machine.
long long ThreadCpuMicros() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::string RenderMetrics(AgentStatus& st) {
  std::lock_guard lock(st.mu);
  std::string out;
  auto gauge = [&](const char* name, const char* help, double v, const char* type = "gauge") {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
           std::to_string(v) + "\n";
  };
  gauge("skiff_proxy_services", "Services in the current state.", st.services);
  gauge("skiff_proxy_frontends", "Frontends (address, port, protocol, scope) programmed.", st.frontends);
  gauge("skiff_proxy_backends", "Backend entries programmed.", st.backends);
  gauge("skiff_proxy_syncs_total", "Programming passes.", st.syncs, "counter");
  gauge("skiff_proxy_sync_errors_total", "Failed programming passes.", st.sync_errors, "counter");
  gauge("skiff_proxy_map_writes_total", "BPF map updates.", st.map_writes, "counter");
  gauge("skiff_proxy_map_deletes_total", "BPF map deletions.", st.map_deletes, "counter");
  gauge("skiff_proxy_last_sync_duration_seconds", "Duration of the last programming pass.", st.last_sync_seconds);
  if (st.map) {
    auto counters = st.map->ReadCounters();
    const std::pair<const char*, uint64_t ServiceCounters::*> series[] = {
        {"skiff_service_connections_total", &ServiceCounters::connections},
        {"skiff_service_packets_total", &ServiceCounters::packets},
        {"skiff_service_bytes_total", &ServiceCounters::bytes},
        {"skiff_service_refused_total", &ServiceCounters::refused},
    };
    for (const auto& [name, field] : series) {
      out += std::string("# TYPE ") + name + " counter\n";
      for (const auto& [sp, c] : counters)
        out += std::string(name) + "{service_port=\"" + Escape(sp) + "\"} " + std::to_string(c.*field) + "\n";
    }
  }
  return out;
}

struct HttpAnswer {
  int code = 200;
  std::string content_type = "text/plain; version=0.0.4";
  std::string body;
};

// A minimal HTTP/1.1 server: one request per connection, GET by path.
void ServeHttp(int listen_fd, const std::function<HttpAnswer(const std::string& path)>& handle,
               const std::atomic<bool>& stop) {
  while (!stop.load()) {
    pollfd p{listen_fd, POLLIN, 0};
    if (poll(&p, 1, 500) <= 0) continue;
    UniqueFd c(accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) continue;
    timeval tv{2, 0};
    setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[2048];
    ssize_t n = read(c.get(), buf, sizeof(buf) - 1);
    if (n <= 0) continue;
    std::string req(buf, n);
    std::string path = "/";
    if (auto sp = req.find(' '); sp != std::string::npos) path = req.substr(sp + 1, req.find(' ', sp + 1) - sp - 1);
    if (auto q = path.find('?'); q != std::string::npos) path.resize(q);
    HttpAnswer a = handle(path);
    const char* reason = a.code == 200 ? " OK" : a.code == 503 ? " Service Unavailable" : a.code == 404 ? " Not Found" : " Error";
    std::string resp = "HTTP/1.1 " + std::to_string(a.code) + reason + "\r\nContent-Type: " + a.content_type +
                       "\r\nX-Content-Type-Options: nosniff\r\nContent-Length: " + std::to_string(a.body.size()) +
                       "\r\nConnection: close\r\n\r\n" + a.body;
    if (send(c.get(), resp.data(), resp.size(), MSG_NOSIGNAL) < 0) {
    }
  }
}

HttpAnswer MetricsAnswer(const std::string& path, AgentStatus& st) {
  HttpAnswer a;
  if (path == "/metrics") {
    a.body = RenderMetrics(st);
  } else if (path == "/healthz") {
    std::lock_guard lock(st.mu);
    bool healthy = st.synced && st.last_apply_ok;
    a.code = healthy ? 200 : 503;
    a.body = healthy ? "ok\n" : "not synced\n";
  } else {
    a.code = 404;
    a.body = "not found\n";
  }
  return a;
}

HttpAnswer HealthzAnswer(const std::string& path, const ProxierHealth& health) {
  HttpAnswer a;
  if (path != "/healthz" && path != "/livez") {
    a.code = 404;
    a.body = "404 page not found\n";
    return a;
  }
  ProxierHealth::Answer h = path == "/healthz" ? health.Healthz() : health.Livez();
  a.code = h.code;
  a.content_type = "application/json";
  a.body = std::move(h.body);
  return a;
}

// "host:port" or "[ipv6]:port" (":port" alone: every IPv4 address).
absl::StatusOr<UniqueFd> Listen(const std::string& address) {
  auto colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535)
    return absl::InvalidArgumentError("listen address needs host:port: " + address);
  std::string host = address.substr(0, colon);
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a6->sin6_addr) != 1)
      return absl::InvalidArgumentError("listen address: " + address);
    len = sizeof(*a6);
  } else {
    auto* a4 = reinterpret_cast<sockaddr_in*>(&ss);
    a4->sin_family = AF_INET;
    a4->sin_port = htons(static_cast<uint16_t>(port));
    if (!host.empty() && inet_pton(AF_INET, host.c_str(), &a4->sin_addr) != 1)
      return absl::InvalidArgumentError("listen address: " + address);
    len = sizeof(*a4);
  }
  UniqueFd fd(socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return LastErrnoError("socket");
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return LastErrnoError("bind " + address);
  if (listen(fd.get(), 64) != 0) return LastErrnoError("listen " + address);
  return fd;
}

// Health-check node ports of externalTrafficPolicy: Local services: a load
// balancer asks each node and sends traffic only where the answer is 200
// (the service has a ready endpoint on this node), as with kube-proxy.
class HealthCheckPorts {
 public:
  struct Target {
    std::string ns, name;
    int local_endpoints = 0;
  };
  // Opens listeners for new ports, closes those that went away.
  void Sync(std::map<uint16_t, Target> want) {
    std::lock_guard lock(mu_);
    for (auto it = listeners_.begin(); it != listeners_.end();) {
      if (want.count(it->first)) {
        ++it;
      } else {
        it = listeners_.erase(it);
      }
    }
    for (const auto& [port, t] : want) {
      if (listeners_.count(port)) continue;
      auto fd = Listen("0.0.0.0:" + std::to_string(port));
      if (!fd.ok()) {
        log::Warn("health check node port: ", fd.status());
        continue;
      }
      listeners_[port] = *std::move(fd);
    }
    targets_ = std::move(want);
  }
  void Serve(const std::atomic<bool>& stop) {
    while (!stop.load()) {
      std::vector<pollfd> fds;
      std::vector<uint16_t> ports;
      {
        std::lock_guard lock(mu_);
        for (const auto& [port, fd] : listeners_) {
          fds.push_back({fd.get(), POLLIN, 0});
          ports.push_back(port);
        }
      }
      if (fds.empty()) {
        usleep(200000);
        continue;
      }
      if (poll(fds.data(), fds.size(), 200) <= 0) continue;
      for (size_t i = 0; i < fds.size(); ++i) {
        if (!(fds[i].revents & POLLIN)) continue;
        UniqueFd c(accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC));
        if (!c) continue;
        timeval tv{1, 0};
        setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        char buf[1024];
        if (read(c.get(), buf, sizeof(buf)) < 0) continue;
        Target t;
        {
          std::lock_guard lock(mu_);
          auto it = targets_.find(ports[i]);
          if (it == targets_.end()) continue;
          t = it->second;
        }
        std::string body = "{\"service\":{\"namespace\":\"" + t.ns + "\",\"name\":\"" + t.name +
                           "\"},\"localEndpoints\":" + std::to_string(t.local_endpoints) + "}\n";
        std::string resp = std::string("HTTP/1.1 ") + (t.local_endpoints > 0 ? "200 OK" : "503 Service Unavailable") +
                           "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                           "\r\nConnection: close\r\n\r\n" + body;
        if (send(c.get(), resp.data(), resp.size(), MSG_NOSIGNAL) < 0) {
        }
      }
    }
  }

 private:
  std::mutex mu_;
  std::map<uint16_t, UniqueFd> listeners_;
  std::map<uint16_t, Target> targets_;
};

std::map<uint16_t, HealthCheckPorts::Target> HealthTargets(const CompactState& state, const std::string& node) {
  std::map<uint16_t, HealthCheckPorts::Target> out;
  uint32_t here = state.names().Find(node);
  ServiceRecord svc;
  SliceRecord es;
  state.ForEach([&](const CompactState::Entry& e) {
    if (!e.service) return;
    state.Decode(e.service.get(), &svc);
    if (!svc.health_check_node_port) return;
    // Two Services with one port: the last one seen has it, with its own
    // endpoints only.
    HealthCheckPorts::Target& t = out[svc.health_check_node_port];
    t = {state.names().Name(svc.ns), std::string(svc.name), 0};
    for (const uint8_t* rec : e.slices) {
      state.Decode(rec, &es);
      for (const SliceRecord::Endpoint& ep : es.endpoints)
        if (ep.ready && ep.node == here) t.local_endpoints += ep.count;
    }
  });
  return out;
}

}  // namespace

absl::Status RunAgent(const AgentOptions& options, std::unique_ptr<Source> source, std::atomic<bool>& stop) {
  std::string cgroup = options.cgroup_root;
  if (cgroup.empty()) {
    ASSIGN_OR_RETURN(cgroup, FindCgroup2Mount());
  }
  // The metrics listener first: a bad or busy address fails the start
  // before anything is attached or routed.
  UniqueFd listen_fd;
  if (!options.metrics_address.empty()) {
    ASSIGN_OR_RETURN(listen_fd, Listen(options.metrics_address));
  }
  DatapathOptions dopts;
  dopts.bpffs_dir = options.bpffs_dir;
  dopts.load_tc = !options.tc_interfaces.empty();
  ASSIGN_OR_RETURN(std::unique_ptr<Datapath> dp, Datapath::Open(dopts));
  // Migrating from an older layout: the hooks keep running the older
  // generation's programs on its maps until ours are programmed.
  bool attach_later = dp->migrating();
  if (!attach_later) RETURN_IF_ERROR(dp->AttachSocketLb(cgroup));
  for (const std::string& ifname : options.tc_interfaces) RETURN_IF_ERROR(dp->AttachTc(ifname));
  if (!options.tc_interfaces.empty()) {
    // The first --node-ip of each family: NodePort address and SNAT source.
    bool have4 = false, have6 = false;
    for (const std::string& ip : options.node_ips) {
      in_addr a;
      in6_addr a6;
      if (!have4 && inet_pton(AF_INET, ip.c_str(), &a) == 1) {
        RETURN_IF_ERROR(dp->SetTcConfig(a.s_addr));
        have4 = true;
      } else if (!have6 && inet_pton(AF_INET6, ip.c_str(), &a6) == 1) {
        std::array<uint32_t, 4> words;
        memcpy(words.data(), &a6, sizeof(a6));
        RETURN_IF_ERROR(dp->SetTcConfig6(words));
        have6 = true;
      }
    }
  }
  if (options.service_route) {
    // Dual-stack: "10.96.0.0/12,fd00:96::/108", as kube-apiserver takes it.
    std::vector<std::string> cidrs = absl::StrSplit(options.service_cidr, ',', absl::SkipEmpty());
    for (const std::string& cidr : cidrs) {
      RETURN_IF_ERROR(EnsureUnreachableRoute(cidr));
      log::Info("unreachable route for the service CIDR ", log::Field("cidr", cidr));
    }
  }

  ServiceMap map(dp->maps());
  RETURN_IF_ERROR(map.Recover());

  AgentStatus status;
  status.map = &map;
  std::thread http;
  if (listen_fd) {
    http = std::thread([&] { ServeHttp(listen_fd.get(), [&](const std::string& p) { return MetricsAnswer(p, status); }, stop); });
    log::Info("serving /metrics and /healthz ", log::Field("address", options.metrics_address));
  }
  ProxierHealth agent_health(options.healthz_timeout);
  std::thread healthz;
  UniqueFd healthz_fd;
  if (!options.healthz_address.empty()) {
    // As kube-proxy: a health server that cannot listen is reported, and the
    // agent goes on routing services.
    auto fd = Listen(options.healthz_address);
    if (!fd.ok()) {
      log::Error("agent healthz server not started: ", fd.status());
    } else {
      healthz_fd = *std::move(fd);
      healthz = std::thread(
          [&] { ServeHttp(healthz_fd.get(), [&](const std::string& p) { return HealthzAnswer(p, agent_health); }, stop); });
      log::Info("serving /healthz and /livez ", log::Field("address", options.healthz_address));
    }
  }

  HealthCheckPorts health_ports;
  std::thread health([&] { health_ports.Serve(stop); });

  StateStore store;
  store.SetOnChange([&agent_health] { agent_health.QueuedUpdate(); });
  absl::Status source_status;
  std::atomic<bool> source_done{false};
  std::thread src([&] {
    source_status = source->Run(store, stop);
    source_done = true;
    if (!source_status.ok()) stop = true;
  });

  DesiredBuilder builder(NodeConfig{options.node_name, options.node_ips});
  bool have_health_ports = false;
  uint64_t seen = 0;
  bool notified = false;
  bool first = true;
  bool first_log = true;
  int retry_ms = 0;
  absl::Status result;
  while (!stop.load()) {
    FrontendDelta delta;
    size_t services = 0;
    auto t0 = std::chrono::steady_clock::now();
    long long cpu0 = 0, update_cpu_us = 0;
    size_t looked_at = 0;
    uint64_t gen = store.Consume(seen, 500, [&](const CompactState& state, const ChangeSet& changes) {
      t0 = std::chrono::steady_clock::now();
      cpu0 = ThreadCpuMicros();
      delta = builder.Update(state, first ? ChangeSet::All() : changes);
      update_cpu_us = ThreadCpuMicros() - cpu0;
      looked_at = first || changes.all ? state.service_count() : changes.services.size() + changes.slices.size();
      services = state.service_count();
      // Health-check ports: a full look only when a service with one exists
      // or may have appeared, so one endpoint change at 10k services stays
      // O(change).
      bool look = first || changes.all || have_health_ports;
      ServiceRecord svc;
      for (const std::string& k : changes.services) {
        if (look) break;
        const CompactState::Entry* e = state.Find(k);
        if (!e || !e->service) continue;
        state.Decode(e->service.get(), &svc);
        look = svc.health_check_node_port != 0;
      }
      if (look) {
        auto targets = HealthTargets(state, options.node_name);
        have_health_ports = !targets.empty();
        health_ports.Sync(std::move(targets));
      }
    });
    if (gen == seen) continue;
    seen = gen;
    auto t1 = std::chrono::steady_clock::now();
    absl::StatusOr<ApplyStats> st;
    size_t changed = 0;
    {
      std::lock_guard lock(status.mu);
      // The first pass compares against everything recovered from the maps
      // (and removes what nobody wants); later passes apply only the delta.
      changed = delta.size();
      if (first) {
        // The builder started empty, so the delta is the whole desired state.
        std::map<FrontendKey, Frontend> desired;
        for (auto& [fk, f] : delta)
          if (f) desired.emplace(fk, std::move(*f));
        delta.clear();
        st = map.Apply(desired);
      } else {
        st = map.ApplyDelta(delta);
      }
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      status.syncs++;
      status.last_apply_ok = st.ok();
      status.last_sync_seconds = secs;
      status.services = services;
      if (st.ok() && attach_later) {
        if (absl::Status a = dp->AttachSocketLb(cgroup); !a.ok()) {
          result = a;
          stop = true;
        } else {
          attach_later = false;
          if (absl::Status f = dp->FinishMigration(); !f.ok()) log::Warn("removing the older layout's pins: ", f);
        }
      }
      if (st.ok()) {
        first = false;
        status.synced = true;
        // As kube-proxy: a pass that succeeds clears what was queued (a
        // change that arrives later queues again).
        agent_health.Updated();
        retry_ms = 0;
        status.map_writes += st->map_writes;
        status.map_deletes += st->map_deletes;
        status.frontends = st->frontends;
        status.backends = st->backends;
      } else {
        status.sync_errors++;
      }
    }
    auto t2 = std::chrono::steady_clock::now();
    long long cpu_us = ThreadCpuMicros() - cpu0;
    if (!st.ok()) {
      log::Error("programming failed: ", st.status());
      // Retry from scratch: re-read the maps and compare everything on the
      // next pass.
      if (auto rs = map.Recover(); !rs.ok()) log::Error("re-reading maps failed: ", rs);
      builder = DesiredBuilder(NodeConfig{options.node_name, options.node_ips});
      first = true;
      seen = 0;
      // Back off (0.1 s doubling to 5 s) instead of spinning on a map that
      // keeps refusing writes; the pending update keeps /healthz's clock
      // running meanwhile.
      retry_ms = std::min(retry_ms ? retry_ms * 2 : 100, 5000);
      for (int waited = 0; waited < retry_ms && !stop.load(); waited += 50) usleep(50000);
      continue;
    }
    auto us = [](auto d) { return static_cast<long long>(std::chrono::duration<double, std::micro>(d).count()); };
    log::Info("programmed ", log::Field("services", static_cast<long long>(services)), " ",
              log::Field("frontends", static_cast<long long>(st->frontends)), " ",
              log::Field("backends", static_cast<long long>(st->backends)), " ",
              log::Field("changed", static_cast<long long>(changed)), " ",
              log::Field("writes", static_cast<long long>(st->map_writes)), " ",
              log::Field("deletes", static_cast<long long>(st->map_deletes)), " ",
              log::Field("compute_us", us(t1 - t0)), " ", log::Field("apply_us", us(t2 - t1)), " ",
              log::Field("cpu_us", cpu_us), " ", log::Field("update_cpu_us", update_cpu_us), " ",
              log::Field("inputs_changed", static_cast<long long>(looked_at)));
    // Give the memory of a large pass (first sync, re-list, file reload)
    // back. Here, not in the source thread: malloc_trim holds the arena
    // locks and would stall this thread's allocations mid-pass.
    if (first_log || changed > 1000) {
      malloc_trim(0);
      // The pass freed tens of thousands of chunks into malloc's unsorted
      // bin; the next allocations that miss the per-thread cache sort them
      // (at most 10000 per call; ~3 ms in all at 10k services). Pay that now,
      // while idle, instead of in the next one-endpoint update.
      std::vector<void*> warm;
      for (int i = 0; i < 64; ++i) warm.push_back(malloc(1100 + 16 * i));
      for (void* p : warm) free(p);
      first_log = false;
    }
    if (!notified) {
      skiff::systemd::NotifyReady();
      skiff::systemd::StartWatchdog();
      notified = true;
    }
  }
  stop = true;
  if (src.joinable()) src.join();
  if (http.joinable()) http.join();
  if (healthz.joinable()) healthz.join();
  if (health.joinable()) health.join();
  if (!source_status.ok()) return source_status;
  return result;
}

}  // namespace skiff::proxy
