// gRPC adapters: each handler checks the request size, calls the engine and
// maps its error with ToGrpcStatus. No logic of their own.
#include "skiff/store/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/server_credentials.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"
#include "skiff/store/errors.h"

namespace skiff::store {

grpc::Status ToGrpcStatus(const absl::Status& st) {
  if (st.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

namespace {

using grpc::ServerContext;

template <typename Req>
bool TooLarge(const Req& r) {
  return r.ByteSizeLong() > kMaxRequestBytes;
}

template <typename Resp>
grpc::Status Reply(absl::StatusOr<Resp> r, Resp* out) {
  if (!r.ok()) return ToGrpcStatus(r.status());
  *out = std::move(*r);
  return grpc::Status::OK;
}

// KV on gRPC's callback API: a write parks no thread while it waits for its
// group commit; the committing thread finishes the RPC.
class KVService final : public etcdserverpb::KV::CallbackService {
 public:
  explicit KVService(Store* s) : s_(s) {}
  grpc::ServerUnaryReactor* Range(grpc::CallbackServerContext* ctx, const etcdserverpb::RangeRequest* req,
                                  etcdserverpb::RangeResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    r->Finish(TooLarge(*req) ? ToGrpcStatus(ErrRequestTooLarge()) : Reply(s_->Range(*req), resp));
    return r;
  }
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const etcdserverpb::PutRequest* req,
                                etcdserverpb::PutResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    if (TooLarge(*req)) {
      r->Finish(ToGrpcStatus(ErrRequestTooLarge()));
    } else {
      s_->PutAsync(*req, resp, [r](absl::Status st) { r->Finish(ToGrpcStatus(st)); });
    }
    return r;
  }
  grpc::ServerUnaryReactor* DeleteRange(grpc::CallbackServerContext* ctx, const etcdserverpb::DeleteRangeRequest* req,
                                        etcdserverpb::DeleteRangeResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    if (TooLarge(*req)) {
      r->Finish(ToGrpcStatus(ErrRequestTooLarge()));
    } else {
      s_->DeleteRangeAsync(*req, resp, [r](absl::Status st) { r->Finish(ToGrpcStatus(st)); });
    }
    return r;
  }
  grpc::ServerUnaryReactor* Txn(grpc::CallbackServerContext* ctx, const etcdserverpb::TxnRequest* req,
                                etcdserverpb::TxnResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    if (TooLarge(*req)) {
      r->Finish(ToGrpcStatus(ErrRequestTooLarge()));
    } else {
      s_->TxnAsync(*req, resp, [r](absl::Status st) { r->Finish(ToGrpcStatus(st)); });
    }
    return r;
  }
  grpc::ServerUnaryReactor* Compact(grpc::CallbackServerContext* ctx, const etcdserverpb::CompactionRequest* req,
                                    etcdserverpb::CompactionResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_->CompactAsync(*req, resp, [r](absl::Status st) { r->Finish(ToGrpcStatus(st)); });
    return r;
  }

 private:
  Store* s_;
};

class WatchService final : public etcdserverpb::Watch::Service {
 public:
  explicit WatchService(Store* s) : s_(s) {}
  grpc::Status Watch(ServerContext* ctx,
                     grpc::ServerReaderWriter<etcdserverpb::WatchResponse, etcdserverpb::WatchRequest>* stream) override {
    auto ws = s_->NewWatchStream();
    std::atomic<bool> write_failed{false};
    std::thread sender([&] {
      etcdserverpb::WatchResponse r;
      while (ws->Next(&r)) {
        if (!stream->Write(r)) {
          write_failed = true;
          ctx->TryCancel();
          break;
        }
      }
    });
    etcdserverpb::WatchRequest req;
    while (stream->Read(&req)) {
      if (req.has_create_request()) {
        ws->Create(req.create_request());
      } else if (req.has_cancel_request()) {
        ws->Cancel(req.cancel_request().watch_id());
      } else if (req.has_progress_request()) {
        ws->RequestProgress();
      }
    }
    ws->Close();
    sender.join();
    return grpc::Status::OK;
  }

 private:
  Store* s_;
};

class LeaseService final : public etcdserverpb::Lease::Service {
 public:
  explicit LeaseService(Store* s) : s_(s) {}
  grpc::Status LeaseGrant(ServerContext*, const etcdserverpb::LeaseGrantRequest* req,
                          etcdserverpb::LeaseGrantResponse* resp) override {
    return Reply(s_->LeaseGrant(*req), resp);
  }
  grpc::Status LeaseRevoke(ServerContext*, const etcdserverpb::LeaseRevokeRequest* req,
                           etcdserverpb::LeaseRevokeResponse* resp) override {
    return Reply(s_->LeaseRevoke(*req), resp);
  }
  grpc::Status LeaseKeepAlive(
      ServerContext*,
      grpc::ServerReaderWriter<etcdserverpb::LeaseKeepAliveResponse, etcdserverpb::LeaseKeepAliveRequest>* stream)
      override {
    etcdserverpb::LeaseKeepAliveRequest req;
    while (stream->Read(&req)) {
      auto r = s_->LeaseKeepAlive(req);
      if (!r.ok()) return ToGrpcStatus(r.status());
      if (!stream->Write(*r)) break;
    }
    return grpc::Status::OK;
  }
  grpc::Status LeaseTimeToLive(ServerContext*, const etcdserverpb::LeaseTimeToLiveRequest* req,
                               etcdserverpb::LeaseTimeToLiveResponse* resp) override {
    return Reply(s_->LeaseTimeToLive(*req), resp);
  }
  grpc::Status LeaseLeases(ServerContext*, const etcdserverpb::LeaseLeasesRequest* req,
                           etcdserverpb::LeaseLeasesResponse* resp) override {
    return Reply(s_->LeaseLeases(*req), resp);
  }

 private:
  Store* s_;
};

class MaintenanceService final : public etcdserverpb::Maintenance::Service {
 public:
  explicit MaintenanceService(Store* s) : s_(s) {}
  grpc::Status Alarm(ServerContext*, const etcdserverpb::AlarmRequest* req, etcdserverpb::AlarmResponse* resp) override {
    return Reply(s_->Alarm(*req), resp);
  }
  grpc::Status Status(ServerContext*, const etcdserverpb::StatusRequest*, etcdserverpb::StatusResponse* resp) override {
    return Reply(s_->Status(), resp);
  }
  grpc::Status Defragment(ServerContext*, const etcdserverpb::DefragmentRequest*,
                          etcdserverpb::DefragmentResponse* resp) override {
    return Reply(s_->Defragment(), resp);
  }
  grpc::Status Hash(ServerContext*, const etcdserverpb::HashRequest*, etcdserverpb::HashResponse* resp) override {
    return Reply(s_->Hash(), resp);
  }
  grpc::Status HashKV(ServerContext*, const etcdserverpb::HashKVRequest* req,
                      etcdserverpb::HashKVResponse* resp) override {
    return Reply(s_->HashKV(*req), resp);
  }
  grpc::Status Snapshot(ServerContext*, const etcdserverpb::SnapshotRequest*,
                        grpc::ServerWriter<etcdserverpb::SnapshotResponse>* writer) override {
    bool first = true;
    absl::Status st = s_->Snapshot([&](const std::string& chunk, uint64_t remaining) {
      etcdserverpb::SnapshotResponse r;
      if (first) {
        *r.mutable_header() = s_->Header();
        r.set_version(kEtcdVersion);
        first = false;
      }
      r.set_remaining_bytes(remaining);
      r.set_blob(chunk);
      return writer->Write(r);
    });
    return ToGrpcStatus(st);
  }

 private:
  Store* s_;
};

class ClusterService final : public etcdserverpb::Cluster::Service {
 public:
  explicit ClusterService(Store* s) : s_(s) {}
  grpc::Status MemberList(ServerContext*, const etcdserverpb::MemberListRequest*,
                          etcdserverpb::MemberListResponse* resp) override {
    return Reply(s_->MemberList(), resp);
  }

 private:
  Store* s_;
};

class HealthService final : public grpc::health::v1::Health::Service {
 public:
  grpc::Status Check(ServerContext*, const grpc::health::v1::HealthCheckRequest*,
                     grpc::health::v1::HealthCheckResponse* resp) override {
    resp->set_status(grpc::health::v1::HealthCheckResponse::SERVING);
    return grpc::Status::OK;
  }
  grpc::Status Watch(ServerContext* ctx, const grpc::health::v1::HealthCheckRequest*,
                     grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>* writer) override {
    grpc::health::v1::HealthCheckResponse r;
    r.set_status(grpc::health::v1::HealthCheckResponse::SERVING);
    if (!writer->Write(r)) return grpc::Status::OK;
    while (!ctx->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return grpc::Status::OK;
  }
};

struct Url {
  std::string scheme, host;
  int port = 0;
  std::string path;  // unix
};

absl::StatusOr<Url> ParseUrl(const std::string& s) {
  Url u;
  auto p = s.find("://");
  if (p == std::string::npos) return absl::InvalidArgumentError("bad URL " + s);
  u.scheme = s.substr(0, p);
  std::string rest = s.substr(p + 3);
  if (u.scheme == "unix" || u.scheme == "unixs") {
    u.path = rest;
    return u;
  }
  if (u.scheme != "http" && u.scheme != "https") return absl::InvalidArgumentError("bad URL scheme in " + s);
  auto slash = rest.find('/');
  if (slash != std::string::npos) rest = rest.substr(0, slash);
  auto colon = rest.rfind(':');
  if (colon == std::string::npos || (rest[0] == '[' && rest.back() == ']')) {
    return absl::InvalidArgumentError("URL without port: " + s);
  }
  u.host = rest.substr(0, colon);
  if (u.host.size() > 1 && u.host.front() == '[') u.host = u.host.substr(1, u.host.size() - 2);
  u.port = std::atoi(rest.substr(colon + 1).c_str());
  return u;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A minimal HTTP/1.0 responder for /metrics, /health and /version.
class MetricsListener {
 public:
  MetricsListener(Store* s, UniqueFd fd, int port) : s_(s), fd_(std::move(fd)), port_(port) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~MetricsListener() {
    stop_ = true;
    ::shutdown(fd_.get(), SHUT_RDWR);
    thread_.join();
  }
  int port() const { return port_; }

 private:
  void Loop() {
    while (!stop_) {
      int c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (stop_) return;
        if (errno == EINTR || errno == ECONNABORTED) continue;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      UniqueFd conn(c);
      timeval tv{2, 0};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      char buf[2048];
      ssize_t n = ::recv(c, buf, sizeof(buf) - 1, 0);
      if (n <= 0) continue;
      buf[n] = 0;
      std::string req(buf);
      std::string path;
      auto sp = req.find(' ');
      if (sp != std::string::npos) path = req.substr(sp + 1, req.find(' ', sp + 1) - sp - 1);
      std::string body, type = "application/json", code = "200 OK";
      if (path == "/metrics") {
        body = FormatMetrics(s_->GetMetrics());
        type = "text/plain; version=0.0.4";
      } else if (path == "/health" || path == "/healthz" || path == "/livez" || path == "/readyz") {
        Metrics m = s_->GetMetrics();
        body = m.nospace_alarm ? R"({"health":"false","reason":"ALARM NOSPACE"})" : R"({"health":"true","reason":""})";
        if (m.nospace_alarm) code = "503 Service Unavailable";
      } else if (path == "/version") {
        body = absl::StrCat(R"({"etcdserver":")", kEtcdVersion, R"(","etcdcluster":"3.5.0"})");
      } else {
        code = "404 Not Found";
        body = "404 page not found\n";
        type = "text/plain";
      }
      std::string resp = absl::StrCat("HTTP/1.1 ", code, "\r\nContent-Type: ", type,
                                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
      size_t off = 0;
      while (off < resp.size()) {
        ssize_t w = ::send(c, resp.data() + off, resp.size() - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += static_cast<size_t>(w);
      }
    }
  }

  Store* s_;
  UniqueFd fd_;
  int port_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<MetricsListener>> ListenHttp(Store* s, const Url& u) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family = AF_INET;
  if (u.host.find(':') != std::string::npos) {
    family = AF_INET6;
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(u.port));
    if (inet_pton(AF_INET6, u.host.c_str(), &a->sin6_addr) != 1) return absl::InvalidArgumentError("bad host " + u.host);
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(u.port));
    std::string host = u.host == "localhost" ? "127.0.0.1" : u.host;
    if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1) return absl::InvalidArgumentError("bad host " + u.host);
    len = sizeof(*a);
  }
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return LastErrnoError("socket");
  UniqueFd owned(fd);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) return LastErrnoError("bind metrics " + u.host);
  if (::listen(fd, 64) != 0) return LastErrnoError("listen metrics");
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return LastErrnoError("getsockname");
  int port = family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return std::make_unique<MetricsListener>(s, std::move(owned), port);
}

class ServerImpl final : public Server {
 public:
  explicit ServerImpl(Store* s)
      : kv_(s), watch_(s), lease_(s), maint_(s), cluster_(s) {}
  ~ServerImpl() override { Shutdown(); }

  absl::Status Init(Store* s, const ServerOptions& o) {
    grpc::ServerBuilder b;
    std::shared_ptr<grpc::ServerCredentials> tls;
    if (!o.cert_file.empty()) {
      grpc::SslServerCredentialsOptions so(o.client_cert_auth
                                               ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
      so.pem_key_cert_pairs.push_back({ReadFile(o.key_file), ReadFile(o.cert_file)});
      if (!o.trusted_ca_file.empty()) so.pem_root_certs = ReadFile(o.trusted_ca_file);
      tls = grpc::SslServerCredentials(so);
    }
    ports_.resize(o.listen_client_urls.size());
    for (size_t i = 0; i < o.listen_client_urls.size(); ++i) {
      ASSIGN_OR_RETURN(Url u, ParseUrl(o.listen_client_urls[i]));
      std::string addr;
      bool secure = u.scheme == "https" || u.scheme == "unixs";
      if (secure && !tls) return absl::InvalidArgumentError("https listen URL needs --cert-file and --key-file");
      if (!u.path.empty()) {
        addr = "unix:" + u.path;
      } else if (u.host.find(':') != std::string::npos) {
        addr = absl::StrCat("[", u.host, "]:", u.port);
      } else {
        addr = absl::StrCat(u.host, ":", u.port);
      }
      b.AddListeningPort(addr, secure ? tls : grpc::InsecureServerCredentials(), &ports_[i]);
    }
    b.SetMaxReceiveMessageSize(static_cast<int>(kMaxRequestBytes + 512 * 1024));
    b.SetMaxSendMessageSize(INT32_MAX);
    b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
    b.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 1 << 20);
    // CPU per request under many connections (etcdctl check perf opens 500):
    // no BDP ping round per burst of data, no channelz bookkeeping.
    b.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    b.AddChannelArgument(GRPC_ARG_ENABLE_CHANNELZ, 0);
    b.RegisterService(&kv_);
    b.RegisterService(&watch_);
    b.RegisterService(&lease_);
    b.RegisterService(&maint_);
    b.RegisterService(&cluster_);
    b.RegisterService(&health_);
    server_ = b.BuildAndStart();
    if (!server_) return absl::UnavailableError("gRPC server failed to start (address in use?)");
    for (size_t i = 0; i < ports_.size(); ++i) {
      if (ports_[i] == 0 && o.listen_client_urls[i].rfind("unix", 0) != 0) {
        return absl::UnavailableError("cannot listen on " + o.listen_client_urls[i]);
      }
    }
    for (const auto& m : o.listen_metrics_urls) {
      ASSIGN_OR_RETURN(Url u, ParseUrl(m));
      ASSIGN_OR_RETURN(auto l, ListenHttp(s, u));
      metrics_.push_back(std::move(l));
    }
    return absl::OkStatus();
  }

  std::vector<int> ClientPorts() const override { return ports_; }
  std::vector<int> MetricsPorts() const override {
    std::vector<int> v;
    for (const auto& m : metrics_) v.push_back(m->port());
    return v;
  }
  void Shutdown() override {
    if (server_ && !shut_.exchange(true)) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
      metrics_.clear();
    }
  }
  void Wait() override {
    if (server_) server_->Wait();
  }

 private:
  KVService kv_;
  WatchService watch_;
  LeaseService lease_;
  MaintenanceService maint_;
  ClusterService cluster_;
  HealthService health_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<int> ports_;
  std::vector<std::unique_ptr<MetricsListener>> metrics_;
  std::atomic<bool> shut_{false};
};

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(Store* store, const ServerOptions& options) {
  auto s = std::make_unique<ServerImpl>(store);
  RETURN_IF_ERROR(s->Init(store, options));
  return std::unique_ptr<Server>(std::move(s));
}

std::string FormatMetrics(const Metrics& m) {
  std::string o;
  auto g = [&](const char* name, const char* type, const char* help, double v) {
    absl::StrAppend(&o, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ", v, "\n");
  };
  g("etcd_server_has_leader", "gauge", "Whether or not a leader exists. 1 is existence, 0 is not.", 1);
  g("etcd_server_is_leader", "gauge", "Whether or not this member is a leader.", 1);
  g("etcd_mvcc_db_total_size_in_bytes", "gauge", "Total size of the underlying database physically allocated in bytes.",
    static_cast<double>(m.db_size));
  g("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge", "Total size of the underlying database logically in use.",
    static_cast<double>(m.db_size_in_use));
  g("etcd_server_quota_backend_bytes", "gauge", "Current backend storage quota size in bytes.",
    static_cast<double>(m.quota));
  g("etcd_debugging_mvcc_current_revision", "gauge", "The current revision of store.", static_cast<double>(m.revision));
  g("etcd_debugging_mvcc_compact_revision", "gauge", "The revision of the last compaction in store.",
    static_cast<double>(m.compact_revision));
  g("etcd_debugging_mvcc_keys_total", "gauge", "Total number of keys.", static_cast<double>(m.keys));
  g("etcd_mvcc_put_total", "counter", "Total number of puts seen by this member.", static_cast<double>(m.puts));
  g("etcd_mvcc_range_total", "counter", "Total number of ranges seen by this member.", static_cast<double>(m.ranges));
  g("etcd_mvcc_delete_total", "counter", "Total number of deletes seen by this member.", static_cast<double>(m.deletes));
  g("etcd_mvcc_txn_total", "counter", "Total number of txns seen by this member.", static_cast<double>(m.txns));
  g("etcd_debugging_mvcc_db_compaction_total", "counter", "Total number of compactions.",
    static_cast<double>(m.compactions));
  g("skiff_store_commits_total", "counter", "LMDB write transactions committed (each one fsync).",
    static_cast<double>(m.commits));
  g("skiff_store_committed_requests_total", "counter", "Write requests made durable by those commits.",
    static_cast<double>(m.committed_requests));
  g("skiff_store_commit_seconds_total", "counter", "Time spent applying and committing write batches.",
    static_cast<double>(m.commit_ns_total) / 1e9);
  g("etcd_debugging_mvcc_watch_stream_total", "gauge", "Total number of watch streams.",
    static_cast<double>(m.watch_streams));
  g("etcd_debugging_mvcc_watcher_total", "gauge", "Total number of synced watchers.", static_cast<double>(m.watchers));
  g("etcd_debugging_mvcc_slow_watcher_total", "counter", "Watchers that fell behind and replayed history.",
    static_cast<double>(m.slow_watchers));
  g("etcd_debugging_lease_total", "gauge", "The number of current leases.", static_cast<double>(m.leases));
  g("etcd_server_alarm_nospace", "gauge", "1 when the NOSPACE alarm is raised.", m.nospace_alarm ? 1 : 0);
  return o;
}

}  // namespace skiff::store
