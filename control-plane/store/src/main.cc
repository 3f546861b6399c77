// skiff-store: an etcd-v3-compatible server, flags like etcd's.
//   skiff-store --data-dir DIR --listen-client-urls http://127.0.0.1:2379 ...
//   skiff-store snapshot restore FILE --data-dir DIR
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "skiff/common/log.h"
#include "skiff/common/systemd.h"
#include "skiff/store/server.h"
#include "skiff/store/store.h"

namespace {

// A Go-style duration ("500us", "1ms", "30s", "90m", "2h") in microseconds.
// A bare number counts in bare_unit_us; with bare_unit_us = 0 only "0" may
// be bare. Negative durations are refused.
bool ParseDurationUs(const std::string& s, int64_t* us, double bare_unit_us = 0) {
  if (s.empty()) return false;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  std::string unit(end);
  if (end == s.c_str() || v < 0) return false;
  double scale;
  if (unit.empty()) {
    if (bare_unit_us == 0 && v != 0) return false;
    scale = bare_unit_us;
  } else if (unit == "us" || unit == "\u00b5s") {
    scale = 1;
  } else if (unit == "ms") {
    scale = 1e3;
  } else if (unit == "s") {
    scale = 1e6;
  } else if (unit == "m") {
    scale = 60e6;
  } else if (unit == "h") {
    scale = 3600e6;
  } else {
    return false;
  }
  *us = static_cast<int64_t>(v * scale);
  return true;
}

// The same in milliseconds; a bare number is hours (etcd's periodic
// auto-compaction unit) or seconds.
bool ParseDurationMs(const std::string& s, int64_t* ms, bool bare_is_hours) {
  int64_t us = 0;
  if (!ParseDurationUs(s, &us, bare_is_hours ? 3600e6 : 1e6)) return false;
  *ms = us / 1000;
  return true;
}

// A whole decimal number >= min (no sign, no unit, no trailing text).
bool ParseCount(const std::string& s, int64_t min, int64_t* out) {
  if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos) return false;
  int64_t v = std::strtoll(s.c_str(), nullptr, 10);
  if (v < min) return false;
  *out = v;
  return true;
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  for (auto p : absl::StrSplit(s, ',', absl::SkipEmpty())) out.emplace_back(p);
  return out;
}

int Usage(const char* msg) {
  std::fprintf(stderr,
               "skiff-store: %s\n"
               "usage: skiff-store [--name N] [--data-dir DIR] [--listen-client-urls URLS]\n"
               "         [--advertise-client-urls URLS] [--listen-metrics-urls URLS]\n"
               "         [--quota-backend-bytes N] [--auto-compaction-retention D]\n"
               "         [--cert-file F --key-file F [--trusted-ca-file F] [--client-cert-auth]]\n"
               "         [--bcrypt-cost N] [--auth-token simple] [--auth-token-ttl SECONDS]\n"
               "       skiff-store snapshot restore FILE --data-dir DIR [--skip-hash-check]\n",
               msg);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  skiff::log::Init("skiff-store");
  // Debian's abseil runs absl::Mutex deadlock detection (a global lock-order
  // graph) on every gRPC-internal lock: ~5 % of the CPU under write load.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;
  const std::vector<std::string> bool_flags = {"client-cert-auth", "version", "help", "strict-reconfig-check",
                                               "enable-pprof", "skip-hash-check"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 && !(a.size() > 1 && a[0] == '-' && a[1] != '-')) {
      positional.push_back(a);
      continue;
    }
    a = a.substr(a[1] == '-' ? 2 : 1);
    auto eq = a.find('=');
    if (eq != std::string::npos) {
      flags[a.substr(0, eq)] = a.substr(eq + 1);
    } else if (std::find(bool_flags.begin(), bool_flags.end(), a) != bool_flags.end()) {
      flags[a] = "true";
    } else if (i + 1 < argc) {
      flags[a] = argv[++i];
    } else {
      return Usage(("flag --" + a + " needs a value").c_str());
    }
  }
  if (flags.count("version")) {
    std::printf("skiff-store (etcd API %s)\n", skiff::store::kEtcdVersion);
    return 0;
  }
  if (flags.count("help")) return Usage("help");
  if (flags.count("log-level")) skiff::log::SetLevel(skiff::log::ParseLevel(flags["log-level"]));

  skiff::store::Options opts;
  opts.name = flags.count("name") ? flags["name"] : "default";
  opts.data_dir = flags.count("data-dir") ? flags["data-dir"] : opts.name + ".etcd";

  if (!positional.empty()) {
    if (positional.size() == 3 && positional[0] == "snapshot" && positional[1] == "restore") {
      auto st = skiff::store::RestoreSnapshot(positional[2], opts.data_dir, flags.count("skip-hash-check") > 0);
      if (!st.ok()) {
        std::fprintf(stderr, "Error: %s\n", std::string(st.message()).c_str());
        return 1;
      }
      std::printf("restored snapshot %s into %s\n", positional[2].c_str(), opts.data_dir.c_str());
      return 0;
    }
    return Usage(("unexpected argument " + positional[0]).c_str());
  }

  skiff::store::ServerOptions so;
  static const std::vector<std::string> known = {
      "name", "data-dir", "listen-client-urls", "advertise-client-urls", "listen-metrics-urls",
      "quota-backend-bytes", "auto-compaction-retention", "auto-compaction-mode", "cert-file", "key-file",
      "trusted-ca-file", "client-cert-auth", "log-level", "experimental-watch-progress-notify-interval",
      "listen-peer-urls", "initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state",
      "initial-cluster-token", "logger", "log-outputs", "max-request-bytes", "max-txn-ops", "snapshot-count",
      "heartbeat-interval", "election-timeout", "enable-v2", "strict-reconfig-check", "enable-pprof",
      "experimental-transport", "experimental-transport-threads", "experimental-commit-window",
      "experimental-commit-on-loop", "experimental-lmdb-apply-interval",
      "experimental-auto-compaction-check-interval", "bcrypt-cost", "auth-token", "auth-token-ttl"};
  for (const auto& [k, v] : flags) {
    if (std::find(known.begin(), known.end(), k) == known.end()) return Usage(("unknown flag --" + k).c_str());
  }
  if (flags.count("listen-client-urls")) so.listen_client_urls = SplitList(flags["listen-client-urls"]);
  opts.advertise_client_urls =
      flags.count("advertise-client-urls") ? SplitList(flags["advertise-client-urls"]) : so.listen_client_urls;
  if (flags.count("initial-advertise-peer-urls")) opts.peer_urls = SplitList(flags["initial-advertise-peer-urls"]);
  if (flags.count("listen-metrics-urls")) so.listen_metrics_urls = SplitList(flags["listen-metrics-urls"]);
  // 0 keeps the default quota and a negative one disables it, as in etcd.
  if (flags.count("quota-backend-bytes")) {
    std::string v = flags["quota-backend-bytes"];
    const bool negative = !v.empty() && v[0] == '-';
    int64_t q = 0;
    if (!ParseCount(negative ? v.substr(1) : v, negative ? 1 : 0, &q)) {
      return Usage("bad --quota-backend-bytes: want a number of bytes (0 = the default, 2 GiB; negative = no quota)");
    }
    if (negative) {
      opts.quota_bytes = -1;
    } else if (q > 0) {
      opts.quota_bytes = q;
    }
  }
  if (flags.count("max-txn-ops")) {
    int64_t n = 0;
    if (!ParseCount(flags["max-txn-ops"], 1, &n) || n > INT32_MAX) {
      return Usage("bad --max-txn-ops: want a positive number of operations (etcd's default is 128)");
    }
    opts.max_txn_ops = static_cast<int>(n);
  }
  if (flags.count("max-request-bytes")) {
    int64_t n = 0;
    // gRPC's own message limit (an int) must hold it plus 512 KiB.
    if (!ParseCount(flags["max-request-bytes"], 1, &n) || n > INT32_MAX - (512 << 10)) {
      return Usage("bad --max-request-bytes: want a positive number of bytes (etcd's default is 1572864)");
    }
    opts.max_request_bytes = static_cast<size_t>(n);
  }
  // etcd's two modes: periodic (a duration; a bare number is hours) and
  // revision (a number of revisions to keep).
  const std::string mode = flags.count("auto-compaction-mode") ? flags["auto-compaction-mode"] : "periodic";
  if (mode != "periodic" && mode != "revision") {
    return Usage(("bad --auto-compaction-mode \"" + mode + "\": want periodic or revision").c_str());
  }
  if (flags.count("auto-compaction-retention")) {
    const std::string& v = flags["auto-compaction-retention"];
    if (mode == "revision") {
      if (!ParseCount(v, 0, &opts.auto_compaction_retention_revs)) {
        return Usage("bad --auto-compaction-retention: want a number of revisions with --auto-compaction-mode=revision");
      }
    } else if (!ParseDurationMs(v, &opts.auto_compaction_retention_ms, true)) {
      return Usage("bad --auto-compaction-retention: want hours (a bare number) or a duration such as 30m");
    }
  }
  if (flags.count("experimental-auto-compaction-check-interval") &&
      (!ParseDurationMs(flags["experimental-auto-compaction-check-interval"], &opts.auto_compaction_check_ms, false) ||
       opts.auto_compaction_check_ms <= 0)) {
    return Usage("bad --experimental-auto-compaction-check-interval: want a duration such as 5m or 100ms");
  }
  if (flags.count("experimental-watch-progress-notify-interval") &&
      !ParseDurationMs(flags["experimental-watch-progress-notify-interval"], &opts.progress_notify_interval_ms,
                       false)) {
    return Usage("bad --experimental-watch-progress-notify-interval");
  }
  if (flags.count("experimental-commit-window") &&
      !ParseDurationUs(flags["experimental-commit-window"], &opts.commit_window_us)) {
    return Usage("bad --experimental-commit-window: want a duration such as 500us, 1ms or 0");
  }
  if (flags.count("experimental-lmdb-apply-interval") &&
      !ParseDurationMs(flags["experimental-lmdb-apply-interval"], &opts.lmdb_apply_interval_ms, false)) {
    return Usage("bad --experimental-lmdb-apply-interval: want a duration such as 100ms, 1s or 0");
  }
  if (flags.count("experimental-commit-on-loop")) {
    const std::string& v = flags["experimental-commit-on-loop"];
    if (v != "true" && v != "false") return Usage("bad --experimental-commit-on-loop: want true or false");
    so.commit_on_loop = v == "true";
  }
  so.cert_file = flags["cert-file"];
  so.key_file = flags["key-file"];
  so.trusted_ca_file = flags["trusted-ca-file"];
  so.client_cert_auth = flags["client-cert-auth"] == "true";
  // etcd's auth: its state next to the store's files.
  so.auth_file = (std::filesystem::path(opts.data_dir) / "member" / "skiff" / "auth").string();
  if (flags.count("bcrypt-cost")) {
    int64_t n = 0;
    if (!ParseCount(flags["bcrypt-cost"], 4, &n) || n > 31) {
      return Usage("bad --bcrypt-cost: want a number from 4 to 31 (etcd's default is 10)");
    }
    so.bcrypt_cost = static_cast<int>(n);
  }
  if (flags.count("auth-token-ttl")) {
    int64_t n = 0;
    if (!ParseCount(flags["auth-token-ttl"], 1, &n)) {
      return Usage("bad --auth-token-ttl: want a positive number of seconds (etcd's default is 300)");
    }
    so.auth_token_ttl_s = n;
  }
  if (flags.count("auth-token") && flags["auth-token"].rfind("simple", 0) != 0) {
    return Usage("bad --auth-token: skiff-store has simple tokens only (jwt is not supported)");
  }
  // grpc (gRPC C++) or h2 (the lean nghttp2 transport).
  if (flags.count("experimental-transport")) so.transport = flags["experimental-transport"];
  if (flags.count("experimental-transport-threads")) {
    int64_t n = 0;
    if (!ParseCount(flags["experimental-transport-threads"], 1, &n) || n > 64) {
      return Usage("bad --experimental-transport-threads: want a number of threads from 1 to 64");
    }
    so.transport_threads = static_cast<int>(n);
  }

  // Block the stop signals before any thread starts so sigwait sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto store = skiff::store::Store::Open(opts);
  if (!store.ok()) {
    skiff::log::Error("skiff-store: open: ", store.status());
    return 1;
  }
  auto server = skiff::store::Server::Start(store->get(), so);
  if (!server.ok()) {
    skiff::log::Error("skiff-store: serve: ", server.status());
    return 1;
  }
  std::string ports;
  for (int p : (*server)->ClientPorts()) ports += std::to_string(p) + " ";
  skiff::log::Info("skiff-store: ready to serve client requests ", skiff::log::Field("ports", ports));
  skiff::systemd::NotifyReady();
  skiff::systemd::StartWatchdog();
  int sig = 0;
  sigwait(&set, &sig);
  skiff::log::Info("skiff-store: stopping on signal ", sig);
  (*server)->Shutdown();
  server->reset();
  store->reset();
  return 0;
}
