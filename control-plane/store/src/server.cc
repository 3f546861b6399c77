// gRPC adapters: each handler checks the request size, calls the engine and
// maps its error with ToGrpcStatus. No logic of their own.
#include "skiff/store/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "google/protobuf/descriptor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/server_credentials.h"
#include "auth.h"
#include "h2_transport.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"
#include "skiff/store/errors.h"
#include "store_impl.h"

namespace skiff::store {

grpc::Status ToGrpcStatus(const absl::Status& st) {
  if (st.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

namespace {

using grpc::ServerContext;

template <typename Req>
bool TooLarge(const Req& r, size_t limit) {
  return r.ByteSizeLong() > limit;
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
    r->Finish(TooLarge(*req, s_->MaxRequestBytes()) ? ToGrpcStatus(ErrRequestTooLarge())
                                                    : Reply(s_->Range(*req), resp));
    return r;
  }
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const etcdserverpb::PutRequest* req,
                                etcdserverpb::PutResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    // The store checks the size (after validation, like etcd).
    s_->PutAsync(*req, resp, [r](absl::Status st) { r->Finish(ToGrpcStatus(st)); });
    return r;
  }
  grpc::ServerUnaryReactor* DeleteRange(grpc::CallbackServerContext* ctx,
                                        const etcdserverpb::DeleteRangeRequest* req,
                                        etcdserverpb::DeleteRangeResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    // The store checks the size (after validation, like etcd).
    s_->DeleteRangeAsync(*req, resp, [r](absl::Status st) { r->Finish(ToGrpcStatus(st)); });
    return r;
  }
  grpc::ServerUnaryReactor* Txn(grpc::CallbackServerContext* ctx, const etcdserverpb::TxnRequest* req,
                                etcdserverpb::TxnResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    // The store checks the size (after validation, like etcd).
    s_->TxnAsync(*req, resp, [r](absl::Status st) { r->Finish(ToGrpcStatus(st)); });
    return r;
  }
  grpc::ServerUnaryReactor* Compact(grpc::CallbackServerContext* ctx,
                                    const etcdserverpb::CompactionRequest* req,
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
  grpc::Status Watch(
      ServerContext* ctx,
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
      grpc::ServerReaderWriter<etcdserverpb::LeaseKeepAliveResponse, etcdserverpb::LeaseKeepAliveRequest>*
          stream) override {
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

// The one member is always the leader: moving leadership to itself is done
// at once (as etcd's transfer to the current leader), to anyone else it is
// etcd's "bad leader transferee" (not a member).
absl::StatusOr<etcdserverpb::MoveLeaderResponse> MoveLeader(Store* s, const etcdserverpb::MoveLeaderRequest& r) {
  etcdserverpb::MoveLeaderResponse resp;
  *resp.mutable_header() = s->Header();
  if (r.targetid() != resp.header().member_id()) return ErrBadLeaderTransferee();
  return resp;
}

class MaintenanceService final : public etcdserverpb::Maintenance::Service {
 public:
  explicit MaintenanceService(Store* s) : s_(s) {}
  grpc::Status Alarm(ServerContext*, const etcdserverpb::AlarmRequest* req,
                     etcdserverpb::AlarmResponse* resp) override {
    return Reply(s_->Alarm(*req), resp);
  }
  grpc::Status Status(ServerContext*, const etcdserverpb::StatusRequest*,
                      etcdserverpb::StatusResponse* resp) override {
    return Reply(s_->Status(), resp);
  }
  grpc::Status Defragment(ServerContext*, const etcdserverpb::DefragmentRequest*,
                          etcdserverpb::DefragmentResponse* resp) override {
    return Reply(s_->Defragment(), resp);
  }
  grpc::Status Hash(ServerContext*, const etcdserverpb::HashRequest*,
                    etcdserverpb::HashResponse* resp) override {
    return Reply(s_->Hash(), resp);
  }
  grpc::Status MoveLeader(ServerContext*, const etcdserverpb::MoveLeaderRequest* req,
                          etcdserverpb::MoveLeaderResponse* resp) override {
    return Reply(skiff::store::MoveLeader(s_, *req), resp);
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

// ---------------------------------------------------------------- the same API on the h2 transport
//
// Method -> handler. Reads and in-memory calls run on the connection's loop
// thread; writes go to the engine's async API and finish on the loop when the
// committer hands them back; calls that may wait on a commit or scan the
// whole database run on a small worker pool.

class WorkerPool {
 public:
  explicit WorkerPool(int n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { Run(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void Submit(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> l(mu_);
      q_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }

 private:
  void Run() {
    while (true) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stop_ || !q_.empty(); });
        if (q_.empty()) return;
        fn = std::move(q_.front());
        q_.pop_front();
      }
      fn();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

struct H2Context {
  Store* store;
  WorkerPool* pool;
};

// limit: the most request bytes etcd takes for this kind (0 = no check).
template <typename Req>
absl::Status ParseRequest(std::string_view msg, Req* req, size_t limit) {
  if (!req->ParseFromArray(msg.data(), static_cast<int>(msg.size()))) {
    return absl::InternalError(
        absl::StrCat("grpc: error unmarshalling request: proto: cannot parse invalid wire-format data"));
  }
  if (limit > 0 && msg.size() > limit) return ErrRequestTooLarge();
  return absl::OkStatus();
}

void FinishWith(h2::Call* call, const absl::Status& st, const google::protobuf::MessageLite& resp) {
  if (st.ok()) call->Send(resp);
  call->Finish(st);
}

// etcd's auth checks of a call, made before the call runs while auth is
// enabled (auth.h has the state and the key-range checks).
class Gate {
 public:
  Gate(Store* s, AuthStore* auth) : s_(s), auth_(auth) {}
  bool On() const { return auth_ != nullptr && auth_->Enabled(); }
  AuthStore* auth() const { return auth_; }

  // OK, or the error the call ends with: KV calls need the key ranges they
  // read and write, a lease revoke (or a put attaching a lease) write access
  // to the lease's keys, Snapshot/Hash/HashKV/Defragment/MoveLeader the root
  // role (with etcd 3.4's raw "auth: ..." errors). Other calls need nothing.
  absl::Status Authorize(std::string_view path, std::string_view msg, const h2::Call& call) const {
    using namespace etcdserverpb;  // NOLINT
    const bool admin = path == "/etcdserverpb.Maintenance/Snapshot" || path == "/etcdserverpb.Maintenance/Hash" ||
                       path == "/etcdserverpb.Maintenance/HashKV" ||
                       path == "/etcdserverpb.Maintenance/Defragment" ||
                       path == "/etcdserverpb.Maintenance/MoveLeader";
    const bool kv = path.rfind("/etcdserverpb.KV/", 0) == 0 && path != "/etcdserverpb.KV/Compact";
    if (!admin && !kv && path != "/etcdserverpb.Lease/LeaseRevoke") return absl::OkStatus();
    absl::StatusOr<std::string> user = auth_->UserOf(call.Token(), call.PeerCommonName());
    if (admin) {
      absl::Status st = user.ok() ? auth_->CheckAdmin(*user) : user.status();
      if (st.ok()) return st;
      std::string m(st.message());
      if (m.rfind("etcdserver: ", 0) == 0) m = "auth: " + m.substr(12);
      return absl::UnknownError(m);
    }
    if (!user.ok()) return user.status();
    auto parse = [&](google::protobuf::MessageLite* m) { return m->ParseFromArray(msg.data(), static_cast<int>(msg.size())); };
    if (path == "/etcdserverpb.KV/Range") {
      RangeRequest r;
      if (!parse(&r)) return absl::OkStatus();  // the call itself answers the parse error
      return auth_->CheckKeys(*user, r.key(), r.range_end(), false);
    }
    if (path == "/etcdserverpb.KV/Put") {
      PutRequest r;
      if (!parse(&r)) return absl::OkStatus();
      return CheckPut(*user, r);
    }
    if (path == "/etcdserverpb.KV/DeleteRange") {
      DeleteRangeRequest r;
      if (!parse(&r)) return absl::OkStatus();
      return CheckDelete(*user, r);
    }
    if (path == "/etcdserverpb.KV/Txn") {
      TxnRequest r;
      if (!parse(&r)) return absl::OkStatus();
      return CheckTxn(*user, r);
    }
    LeaseRevokeRequest r;
    if (!parse(&r)) return absl::OkStatus();
    return CheckLeaseKeys(*user, r.id());
  }

  // A watch of [key, end) for the stream's token.
  absl::Status AuthorizeWatch(const h2::Call& call, const std::string& key, const std::string& end) const {
    absl::StatusOr<std::string> user = auth_->UserOf(call.Token(), call.PeerCommonName());
    return user.ok() ? auth_->CheckKeys(*user, key, end, false) : user.status();
  }

 private:
  // Every key attached to the lease must be writable by the user (etcd's
  // checkLeasePuts): else revoking it, or attaching more keys, is refused.
  absl::Status CheckLeaseKeys(const std::string& user, int64_t lease) const {
    if (lease == 0) return absl::OkStatus();
    etcdserverpb::LeaseTimeToLiveRequest q;
    q.set_id(lease);
    q.set_keys(true);
    auto ttl = s_->LeaseTimeToLive(q);
    if (!ttl.ok()) return absl::OkStatus();  // no such lease: the call answers that
    for (const auto& k : ttl->keys()) RETURN_IF_ERROR(auth_->CheckKeys(user, k, "", true));
    return absl::OkStatus();
  }
  absl::Status CheckPut(const std::string& user, const etcdserverpb::PutRequest& r) const {
    RETURN_IF_ERROR(auth_->CheckKeys(user, r.key(), "", true));
    RETURN_IF_ERROR(CheckLeaseKeys(user, r.lease()));
    if (r.prev_kv()) RETURN_IF_ERROR(auth_->CheckKeys(user, r.key(), "", false));
    return absl::OkStatus();
  }
  absl::Status CheckDelete(const std::string& user, const etcdserverpb::DeleteRangeRequest& r) const {
    if (r.prev_kv()) RETURN_IF_ERROR(auth_->CheckKeys(user, r.key(), r.range_end(), false));
    return auth_->CheckKeys(user, r.key(), r.range_end(), true);
  }
  absl::Status CheckTxn(const std::string& user, const etcdserverpb::TxnRequest& t) const {
    for (const auto& c : t.compare()) RETURN_IF_ERROR(auth_->CheckKeys(user, c.key(), c.range_end(), false));
    for (const auto* ops : {&t.success(), &t.failure()}) {
      for (const auto& op : *ops) {
        if (op.has_request_range()) {
          RETURN_IF_ERROR(auth_->CheckKeys(user, op.request_range().key(), op.request_range().range_end(), false));
        } else if (op.has_request_put()) {
          RETURN_IF_ERROR(CheckPut(user, op.request_put()));
        } else if (op.has_request_delete_range()) {
          RETURN_IF_ERROR(CheckDelete(user, op.request_delete_range()));
        } else if (op.has_request_txn()) {
          RETURN_IF_ERROR(CheckTxn(user, op.request_txn()));
        }
      }
    }
    return absl::OkStatus();
  }

  Store* s_;
  AuthStore* auth_;
};

// A unary call: the one request message, handled at END_STREAM.
class UnaryHandler final : public h2::Handler {
 public:
  using Fn = std::function<void(h2::Call*, std::string_view)>;
  UnaryHandler(const Fn* fn, const Gate* gate, std::string_view path) : fn_(fn), gate_(gate), path_(path) {}
  void OnMessage(h2::Call* call, std::string_view msg) override {
    if (got_) {
      call->Finish(absl::InternalError("grpc: two request messages on a unary call"));
      return;
    }
    got_ = true;
    msg_.assign(msg.data(), msg.size());
  }
  void OnHalfClose(h2::Call* call) override {
    if (call->Finished()) return;
    if (!got_) {
      call->Finish(absl::InternalError("grpc: no request message on a unary call"));
      return;
    }
    if (gate_->On()) {
      absl::Status st = gate_->Authorize(path_, msg_, *call);
      if (!st.ok()) return call->Finish(st);
    }
    (*fn_)(call, msg_);
  }

 private:
  const Fn* fn_;
  const Gate* gate_;
  std::string_view path_;  // the route table's key: lives as long as fn_
  bool got_ = false;
  std::string msg_;
};

// Runs on the loop thread.
template <typename Req, typename Resp>
UnaryHandler::Fn Inline(std::function<absl::StatusOr<Resp>(const Req&)> fn, size_t limit) {
  return [fn = std::move(fn), limit](h2::Call* call, std::string_view msg) {
    Req req;
    absl::Status st = ParseRequest(msg, &req, limit);
    if (!st.ok()) return call->Finish(st);
    absl::StatusOr<Resp> r = fn(req);
    if (!r.ok()) return call->Finish(r.status());
    FinishWith(call, absl::OkStatus(), *r);
  };
}

// A write through the engine's async API; the committer posts the result.
// (Loop threads hand their writes to the engine's committer thread rather
// than leading a commit inline: see HandAsyncWritesToCommitter.)
template <typename Req, typename Resp>
UnaryHandler::Fn Async(std::function<void(const Req&, Resp*, Store::Done)> fn, size_t limit) {
  return [fn = std::move(fn), limit](h2::Call* call, std::string_view msg) {
    struct Op {
      Req req;
      Resp resp;
    };
    auto op = std::make_shared<Op>();
    absl::Status st = ParseRequest(msg, &op->req, limit);
    if (!st.ok()) return call->Finish(st);
    fn(op->req, &op->resp, [op, ref = call->Ref()](absl::Status st) {
      h2::Post(ref, [op, st = std::move(st)](h2::Call* c) {
        if (c) FinishWith(c, st, op->resp);
      });
    });
  };
}

// May wait (a commit, a scan of the database): runs on the worker pool.
template <typename Req, typename Resp>
UnaryHandler::Fn Blocking(WorkerPool* pool, std::function<absl::StatusOr<Resp>(const Req&)> fn, size_t limit) {
  return [pool, fn = std::move(fn), limit](h2::Call* call, std::string_view msg) {
    auto req = std::make_shared<Req>();
    absl::Status st = ParseRequest(msg, req.get(), limit);
    if (!st.ok()) return call->Finish(st);
    pool->Submit([fn, req, ref = call->Ref()] {
      auto r = std::make_shared<absl::StatusOr<Resp>>(fn(*req));
      h2::Post(ref, [r](h2::Call* c) {
        if (c) FinishWith(c, r->status(), r->ok() ? **r : Resp());
      });
    });
  };
}

// Bytes handed to a call's loop but not yet written: a producer thread waits
// while too many are outstanding, so a slow reader stalls only its own stream.
class Backlog {
 public:
  static constexpr size_t kLimit = 1 << 20;
  void Add(size_t n) {
    std::lock_guard<std::mutex> l(mu_);
    pending_ += n;
  }
  void Taken(size_t n) {
    std::lock_guard<std::mutex> l(mu_);
    pending_ -= std::min(n, pending_);
    cv_.notify_all();
  }
  // False once closed.
  bool WaitRoom() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return closed_ || pending_ < kLimit; });
    return !closed_;
  }
  void Close() {
    std::lock_guard<std::mutex> l(mu_);
    closed_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t pending_ = 0;
  bool closed_ = false;
};

// Posts one response message of a server-streaming call from a producer
// thread and accounts for it in the backlog until the loop has sent it.
void PostMessage(const h2::CallRef& ref, const std::shared_ptr<Backlog>& backlog,
                 std::shared_ptr<google::protobuf::MessageLite> msg) {
  size_t n = msg->ByteSizeLong() + 5;
  backlog->Add(n);
  h2::Post(ref, [backlog, msg = std::move(msg), n](h2::Call* c) {
    if (!c) {
      backlog->Close();
      return;
    }
    c->Send(*msg);
    // Counted as sent once the message is queued on the call; the call's own
    // queue is bounded by HTTP/2 flow control and checked below.
    if (c->QueuedBytes() < Backlog::kLimit) {
      backlog->Taken(n);
    } else {
      c->OnDrained([backlog, n] { backlog->Taken(n); });
    }
  });
}

class WatchHandler final : public h2::Handler {
 public:
  WatchHandler(Store* s, const Gate* gate)
      : s_(s), gate_(gate), ws_(s->NewWatchStream()), backlog_(std::make_shared<Backlog>()) {}
  ~WatchHandler() override {
    backlog_->Close();
    ws_->Close();
    if (sender_.joinable()) sender_.join();
  }
  void OnMessage(h2::Call* call, std::string_view msg) override {
    if (!sender_.joinable()) {
      sender_ = std::thread([this, ref = call->Ref()] {
        while (backlog_->WaitRoom()) {
          auto r = std::make_shared<etcdserverpb::WatchResponse>();
          if (!ws_->Next(r.get())) break;
          PostMessage(ref, backlog_, std::move(r));
        }
      });
    }
    etcdserverpb::WatchRequest req;
    if (!req.ParseFromArray(msg.data(), static_cast<int>(msg.size()))) {
      return call->Finish(absl::InternalError("grpc: error unmarshalling request"));
    }
    if (req.has_create_request() && gate_->On()) {
      const auto& c = req.create_request();
      if (!gate_->AuthorizeWatch(*call, c.key(), c.range_end()).ok()) {
        // etcd's answer to a watch the user may not read: created and
        // canceled at once, no watch ID.
        etcdserverpb::WatchResponse denied;
        *denied.mutable_header() = s_->Header();
        denied.set_watch_id(-1);
        denied.set_created(true);
        denied.set_canceled(true);
        denied.set_cancel_reason("rpc error: code = PermissionDenied desc = etcdserver: permission denied");
        call->Send(denied);
        return;
      }
    }
    if (req.has_create_request()) {
      ws_->Create(req.create_request());
    } else if (req.has_cancel_request()) {
      ws_->Cancel(req.cancel_request().watch_id());
    } else if (req.has_progress_request()) {
      ws_->RequestProgress();
    }
  }
  // As etcd's: a client that stops sending keeps its watches; the stream
  // ends when the client goes (what a JSON gateway watch relies on).
  void OnHalfClose(h2::Call*) override {}

 private:
  Store* s_;
  const Gate* gate_;
  std::unique_ptr<WatchStream> ws_;
  std::shared_ptr<Backlog> backlog_;
  std::thread sender_;
};

class KeepAliveHandler final : public h2::Handler {
 public:
  explicit KeepAliveHandler(Store* s) : s_(s) {}
  void OnMessage(h2::Call* call, std::string_view msg) override {
    etcdserverpb::LeaseKeepAliveRequest req;
    if (!req.ParseFromArray(msg.data(), static_cast<int>(msg.size()))) {
      return call->Finish(absl::InternalError("grpc: error unmarshalling request"));
    }
    auto r = s_->LeaseKeepAlive(req);
    if (!r.ok()) return call->Finish(r.status());
    call->Send(*r);
  }
  void OnHalfClose(h2::Call* call) override { call->Finish(absl::OkStatus()); }

 private:
  Store* s_;
};

// Server-streaming calls produced by a thread of their own (Snapshot,
// Health.Watch): started at END_STREAM with the one request.
class ProducerHandler final : public h2::Handler {
 public:
  using Produce = std::function<absl::Status(
      const std::function<bool(std::shared_ptr<google::protobuf::MessageLite>)>& send)>;
  ProducerHandler(Produce p, const Gate* gate = nullptr, std::string_view path = {})
      : produce_(std::move(p)), backlog_(std::make_shared<Backlog>()), gate_(gate), path_(path) {}
  ~ProducerHandler() override {
    backlog_->Close();
    if (thread_.joinable()) thread_.join();
  }
  void OnMessage(h2::Call*, std::string_view) override {}
  void OnHalfClose(h2::Call* call) override {
    if (gate_ != nullptr && gate_->On()) {
      absl::Status st = gate_->Authorize(path_, {}, *call);
      if (!st.ok()) return call->Finish(st);
    }
    thread_ = std::thread([this, ref = call->Ref()] {
      auto backlog = backlog_;
      absl::Status st = produce_([&](std::shared_ptr<google::protobuf::MessageLite> m) {
        if (!backlog->WaitRoom()) return false;
        PostMessage(ref, backlog, std::move(m));
        return true;
      });
      h2::Post(ref, [st](h2::Call* c) {
        if (c) c->Finish(st);
      });
    });
  }

 private:
  Produce produce_;
  std::shared_ptr<Backlog> backlog_;
  const Gate* gate_;
  std::string_view path_;
  std::thread thread_;
};

// SERVING once; the stream then stays open until the client goes.
class HealthWatchHandler final : public h2::Handler {
 public:
  void OnMessage(h2::Call*, std::string_view) override {}
  void OnHalfClose(h2::Call* call) override {
    grpc::health::v1::HealthCheckResponse r;
    r.set_status(grpc::health::v1::HealthCheckResponse::SERVING);
    call->Send(r);
  }
};

// An Auth service call: the caller's user from its token (with_user), then
// fn on the pool; the response gets the store's header.
template <typename Req, typename Resp>
UnaryHandler::Fn AuthCall(WorkerPool* pool, Store* s, AuthStore* a, bool with_user,
                          std::function<absl::StatusOr<Resp>(const std::string& user, const Req&)> fn) {
  return [pool, s, a, with_user, fn = std::move(fn)](h2::Call* call, std::string_view msg) {
    auto req = std::make_shared<Req>();
    absl::Status st = ParseRequest(msg, req.get(), 0);
    if (!st.ok()) return call->Finish(st);
    std::string user;
    if (with_user) {
      absl::StatusOr<std::string> u = a->UserOf(call->Token(), call->PeerCommonName());
      if (!u.ok()) return call->Finish(u.status());
      user = std::move(*u);
    }
    pool->Submit([fn, s, req, user, ref = call->Ref()] {
      auto r = std::make_shared<absl::StatusOr<Resp>>(fn(user, *req));
      if (r->ok()) *(*r)->mutable_header() = s->Header();
      h2::Post(ref, [r](h2::Call* c) {
        if (c) FinishWith(c, r->status(), r->ok() ? **r : Resp());
      });
    });
  };
}

// An AuthStore method taking the caller and a request: one answering Resp
// (StatusOr<Resp>), or only a status.
template <typename R, typename P>
struct AuthFnOf {
  using Req = R;
  using Resp = P;
  absl::StatusOr<Resp> (AuthStore::*with_resp)(const std::string&, const Req&) const = nullptr;
  absl::Status (AuthStore::*status_only)(const std::string&, const Req&) = nullptr;
};
template <typename Req, typename Resp>
AuthFnOf<Req, Resp> AuthFn(absl::StatusOr<Resp> (AuthStore::*m)(const std::string&, const Req&) const) {
  return {m, nullptr};
}
template <typename Req, typename Resp>
AuthFnOf<Req, Resp> AuthFn(absl::Status (AuthStore::*m)(const std::string&, const Req&)) {
  return {nullptr, m};
}

// The etcd v3 API's method table for the h2 transport.
// Answers the call with one error, whatever the client sends.
class FailHandler final : public h2::Handler {
 public:
  explicit FailHandler(absl::Status st) : st_(std::move(st)) {}
  void OnMessage(h2::Call* call, std::string_view) override { call->Finish(st_); }
  void OnHalfClose(h2::Call* call) override { call->Finish(st_); }

 private:
  absl::Status st_;
};

class H2Routes {
 public:
  // lim: --max-request-bytes.
  // lim: --max-request-bytes; auth: null = no Auth service.
  H2Routes(Store* s, WorkerPool* pool, size_t lim, AuthStore* auth) : gate_(s, auth) {
    using namespace etcdserverpb;  // NOLINT
    auto unary = [&](const std::string& path, UnaryHandler::Fn fn) {
      unary_[path] = std::make_unique<UnaryHandler::Fn>(std::move(fn));
    };
    unary("/etcdserverpb.KV/Range",
          Inline<RangeRequest, RangeResponse>([s](const RangeRequest& r) { return s->Range(r); }, lim));
    unary("/etcdserverpb.KV/Put",
          Async<PutRequest, PutResponse>(
              [s](const PutRequest& r, PutResponse* o, Store::Done d) { s->PutAsync(r, o, std::move(d)); }, 0));
    unary("/etcdserverpb.KV/DeleteRange",
          Async<DeleteRangeRequest, DeleteRangeResponse>(
              [s](const DeleteRangeRequest& r, DeleteRangeResponse* o, Store::Done d) {
                s->DeleteRangeAsync(r, o, std::move(d));
              }, 0));
    unary("/etcdserverpb.KV/Txn",
          Async<TxnRequest, TxnResponse>(
              [s](const TxnRequest& r, TxnResponse* o, Store::Done d) { s->TxnAsync(r, o, std::move(d)); }, 0));
    unary("/etcdserverpb.KV/Compact", Async<CompactionRequest, CompactionResponse>(
                                          [s](const CompactionRequest& r, CompactionResponse* o,
                                              Store::Done d) { s->CompactAsync(r, o, std::move(d)); },
                                          0));
    unary("/etcdserverpb.Lease/LeaseGrant",
          Blocking<LeaseGrantRequest, LeaseGrantResponse>(
              pool, [s](const LeaseGrantRequest& r) { return s->LeaseGrant(r); }, lim));
    unary("/etcdserverpb.Lease/LeaseRevoke",
          Blocking<LeaseRevokeRequest, LeaseRevokeResponse>(
              pool, [s](const LeaseRevokeRequest& r) { return s->LeaseRevoke(r); }, lim));
    unary("/etcdserverpb.Lease/LeaseTimeToLive",
          Inline<LeaseTimeToLiveRequest, LeaseTimeToLiveResponse>(
              [s](const LeaseTimeToLiveRequest& r) { return s->LeaseTimeToLive(r); }, lim));
    unary("/etcdserverpb.Lease/LeaseLeases",
          Inline<LeaseLeasesRequest, LeaseLeasesResponse>(
              [s](const LeaseLeasesRequest& r) { return s->LeaseLeases(r); }, lim));
    unary("/etcdserverpb.Maintenance/Alarm",
          Blocking<AlarmRequest, AlarmResponse>(pool, [s](const AlarmRequest& r) { return s->Alarm(r); }, lim));
    unary("/etcdserverpb.Maintenance/Status",
          Inline<StatusRequest, StatusResponse>([s](const StatusRequest&) { return s->Status(); }, lim));
    unary("/etcdserverpb.Maintenance/Defragment",
          Blocking<DefragmentRequest, DefragmentResponse>(
              pool, [s](const DefragmentRequest&) { return s->Defragment(); }, lim));
    unary("/etcdserverpb.Maintenance/MoveLeader",
          Inline<MoveLeaderRequest, MoveLeaderResponse>(
              [s](const MoveLeaderRequest& r) { return MoveLeader(s, r); }, lim));
    unary("/etcdserverpb.Maintenance/Hash",
          Blocking<HashRequest, HashResponse>(pool, [s](const HashRequest&) { return s->Hash(); }, lim));
    unary(
        "/etcdserverpb.Maintenance/HashKV",
        Blocking<HashKVRequest, HashKVResponse>(pool, [s](const HashKVRequest& r) { return s->HashKV(r); }, lim));
    unary("/etcdserverpb.Cluster/MemberList", Inline<MemberListRequest, MemberListResponse>(
                                                  [s](const MemberListRequest&) { return s->MemberList(); }, lim));
    unary("/grpc.health.v1.Health/Check",
          Inline<grpc::health::v1::HealthCheckRequest, grpc::health::v1::HealthCheckResponse>(
              [](const grpc::health::v1::HealthCheckRequest&) {
                grpc::health::v1::HealthCheckResponse r;
                r.set_status(grpc::health::v1::HealthCheckResponse::SERVING);
                return absl::StatusOr<grpc::health::v1::HealthCheckResponse>(r);
              }, lim));
    if (auth != nullptr) AddAuth(s, pool, auth, unary);
    s_ = s;
  }

  h2::HandlerFactory Route(std::string_view path) const {
    auto it = unary_.find(std::string(path));
    const Gate* gate = &gate_;
    if (it != unary_.end()) {
      const UnaryHandler::Fn* fn = it->second.get();
      std::string_view key = it->first;
      return [fn, gate, key] { return std::make_unique<UnaryHandler>(fn, gate, key); };
    }
    Store* s = s_;
    if (path == "/etcdserverpb.Watch/Watch") return [s, gate] { return std::make_unique<WatchHandler>(s, gate); };
    if (path == "/etcdserverpb.Lease/LeaseKeepAlive")
      return [s] { return std::make_unique<KeepAliveHandler>(s); };
    if (path == "/etcdserverpb.Maintenance/Snapshot") {
      return [s, gate] {
        return std::make_unique<ProducerHandler>([s](const auto& send) {
          bool first = true;
          return s->Snapshot([&](const std::string& chunk, uint64_t remaining) {
            auto r = std::make_shared<etcdserverpb::SnapshotResponse>();
            if (first) {
              *r->mutable_header() = s->Header();
              r->set_version(kEtcdVersion);
              first = false;
            }
            r->set_remaining_bytes(remaining);
            r->set_blob(chunk);
            return send(std::move(r));
          });
        }, gate, "/etcdserverpb.Maintenance/Snapshot");
      };
    }
    if (path == "/grpc.health.v1.Health/Watch") return [] { return std::make_unique<HealthWatchHandler>(); };
    // A method this server does not have on a service it has: grpc-go's
    // words (the transport answers "unknown service" for the rest).
    const auto slash = path.rfind('/');
    if (slash != std::string_view::npos && slash > 1) {
      const std::string service(path.substr(1, slash - 1));
      if (service == "etcdserverpb.KV" || service == "etcdserverpb.Watch" || service == "etcdserverpb.Lease" ||
          service == "etcdserverpb.Maintenance" || service == "etcdserverpb.Cluster" ||
          service == "grpc.health.v1.Health" || (service == "etcdserverpb.Auth" && gate_.auth() != nullptr)) {
        std::string msg = absl::StrCat("unknown method ", std::string(path.substr(slash + 1)), " for service ", service);
        return [msg] { return std::make_unique<FailHandler>(absl::UnimplementedError(msg)); };
      }
    }
    return nullptr;
  }

 private:
  // The Auth service: runs on the pool (bcrypt, the state file's fsync), as
  // the user the call's token names.
  template <typename Unary>
  static void AddAuth(Store* s, WorkerPool* pool, AuthStore* a, Unary& unary) {
    using namespace etcdserverpb;  // NOLINT
    // A call that answers a response message, or only a status.
    auto answers = [&](const std::string& method, auto f) {
      using Req = typename decltype(f)::Req;
      using Resp = typename decltype(f)::Resp;
      unary("/etcdserverpb.Auth/" + method,
            AuthCall<Req, Resp>(pool, s, a, true, [a, f](const std::string& u, const Req& r) -> absl::StatusOr<Resp> {
              if (f.with_resp != nullptr) return (a->*f.with_resp)(u, r);
              RETURN_IF_ERROR((a->*f.status_only)(u, r));
              return Resp();
            }));
    };
    answers("UserAdd", AuthFn<AuthUserAddRequest, AuthUserAddResponse>(&AuthStore::UserAdd));
    answers("UserGet", AuthFn<AuthUserGetRequest, AuthUserGetResponse>(&AuthStore::UserGet));
    answers("UserDelete", AuthFn<AuthUserDeleteRequest, AuthUserDeleteResponse>(&AuthStore::UserDelete));
    answers("UserChangePassword", AuthFn<AuthUserChangePasswordRequest, AuthUserChangePasswordResponse>(
                                      &AuthStore::UserChangePassword));
    answers("UserGrantRole", AuthFn<AuthUserGrantRoleRequest, AuthUserGrantRoleResponse>(&AuthStore::UserGrantRole));
    answers("UserRevokeRole",
            AuthFn<AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse>(&AuthStore::UserRevokeRole));
    answers("RoleAdd", AuthFn<AuthRoleAddRequest, AuthRoleAddResponse>(&AuthStore::RoleAdd));
    answers("RoleGet", AuthFn<AuthRoleGetRequest, AuthRoleGetResponse>(&AuthStore::RoleGet));
    answers("RoleDelete", AuthFn<AuthRoleDeleteRequest, AuthRoleDeleteResponse>(&AuthStore::RoleDelete));
    answers("RoleGrantPermission", AuthFn<AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse>(
                                       &AuthStore::RoleGrantPermission));
    answers("RoleRevokePermission", AuthFn<AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse>(
                                        &AuthStore::RoleRevokePermission));
    // The calls whose AuthStore method takes no request, or no caller.
    using User = const std::string&;
    unary("/etcdserverpb.Auth/AuthEnable", AuthCall<AuthEnableRequest, AuthEnableResponse>(
        pool, s, a, true, [a](User u, const AuthEnableRequest&) -> absl::StatusOr<AuthEnableResponse> {
          RETURN_IF_ERROR(a->Enable(u));
          return AuthEnableResponse();
        }));
    unary("/etcdserverpb.Auth/AuthDisable", AuthCall<AuthDisableRequest, AuthDisableResponse>(
        pool, s, a, true, [a](User u, const AuthDisableRequest&) -> absl::StatusOr<AuthDisableResponse> {
          RETURN_IF_ERROR(a->Disable(u));
          return AuthDisableResponse();
        }));
    unary("/etcdserverpb.Auth/UserList", AuthCall<AuthUserListRequest, AuthUserListResponse>(
        pool, s, a, true, [a](User u, const AuthUserListRequest&) { return a->UserList(u); }));
    unary("/etcdserverpb.Auth/RoleList", AuthCall<AuthRoleListRequest, AuthRoleListResponse>(
        pool, s, a, true, [a](User u, const AuthRoleListRequest&) { return a->RoleList(u); }));
    unary("/etcdserverpb.Auth/AuthStatus", AuthCall<AuthStatusRequest, AuthStatusResponse>(
        pool, s, a, false, [a](User, const AuthStatusRequest&) { return absl::StatusOr<AuthStatusResponse>(a->Status()); }));
    unary("/etcdserverpb.Auth/Authenticate", AuthCall<AuthenticateRequest, AuthenticateResponse>(
        pool, s, a, false, [a](User, const AuthenticateRequest& r) -> absl::StatusOr<AuthenticateResponse> {
          ASSIGN_OR_RETURN(std::string token, a->Authenticate(r.name(), r.password()));
          AuthenticateResponse resp;
          resp.set_token(token);
          return resp;
        }));
  }


  Gate gate_;
  Store* s_;
  absl::flat_hash_map<std::string, std::unique_ptr<UnaryHandler::Fn>> unary_;
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
// A sample value as Prometheus' Go client writes it: the shortest text that
// reads back as the same double (absl's %g would cut revisions and sizes to
// six digits).
std::string MetricValue(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

void AppendMetric(std::string* o, const char* name, const char* type, const char* help, double v) {
  absl::StrAppend(o, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ", MetricValue(v), "\n");
}

// The standard process metrics of Prometheus clients (etcd's Go process
// collector exports them; `etcdctl check datascale` reads
// process_resident_memory_bytes from the client URL's /metrics).
std::string ProcessMetrics() {
  std::string o;
  auto g = [&](const char* name, const char* type, const char* help, double v) { AppendMetric(&o, name, type, help, v); };
  std::ifstream in("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces), from field 3 on.
  std::vector<std::string> f;
  if (auto close = stat.rfind(')'); close != std::string::npos) {
    std::istringstream rest(stat.substr(close + 1));
    for (std::string x; rest >> x;) f.push_back(x);
  }
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  auto field = [&](size_t n) { return n - 3 < f.size() ? std::strtod(f[n - 3].c_str(), nullptr) : 0.0; };
  if (f.size() > 22) {
    g("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
      (field(14) + field(15)) / tick);
  }
  size_t fds = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  rlimit nofile{};
  ::getrlimit(RLIMIT_NOFILE, &nofile);
  g("process_max_fds", "gauge", "Maximum number of open file descriptors.", static_cast<double>(nofile.rlim_cur));
  g("process_open_fds", "gauge", "Number of open file descriptors.", static_cast<double>(fds));
  if (f.size() > 22) {
    g("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
      field(24) * static_cast<double>(::sysconf(_SC_PAGESIZE)));
    std::ifstream ps("/proc/stat");
    double btime = 0;
    for (std::string line; std::getline(ps, line);) {
      if (line.rfind("btime ", 0) == 0) btime = std::strtod(line.c_str() + 6, nullptr);
    }
    g("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
      btime + field(22) / tick);
    g("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", field(23));
  }
  return o;
}

// etcd's JSON gateway paths (grpc-gateway, under /v3/ and, as etcd 3.4 still
// serves it, /v3beta/) and the gRPC method each one calls.
const google::protobuf::MethodDescriptor* GatewayMethod(std::string_view path) {
  static const auto* table = [] {
    static constexpr std::pair<const char*, const char*> kRoutes[] = {
        {"kv/range", "KV.Range"},
        {"kv/put", "KV.Put"},
        {"kv/deleterange", "KV.DeleteRange"},
        {"kv/txn", "KV.Txn"},
        {"kv/compaction", "KV.Compact"},
        {"watch", "Watch.Watch"},
        {"lease/grant", "Lease.LeaseGrant"},
        {"lease/revoke", "Lease.LeaseRevoke"},
        {"kv/lease/revoke", "Lease.LeaseRevoke"},
        {"lease/keepalive", "Lease.LeaseKeepAlive"},
        {"lease/timetolive", "Lease.LeaseTimeToLive"},
        {"kv/lease/timetolive", "Lease.LeaseTimeToLive"},
        {"lease/leases", "Lease.LeaseLeases"},
        {"kv/lease/leases", "Lease.LeaseLeases"},
        {"cluster/member/add", "Cluster.MemberAdd"},
        {"cluster/member/remove", "Cluster.MemberRemove"},
        {"cluster/member/update", "Cluster.MemberUpdate"},
        {"cluster/member/list", "Cluster.MemberList"},
        {"cluster/member/promote", "Cluster.MemberPromote"},
        {"maintenance/alarm", "Maintenance.Alarm"},
        {"maintenance/status", "Maintenance.Status"},
        {"maintenance/defragment", "Maintenance.Defragment"},
        {"maintenance/hash", "Maintenance.Hash"},  // HashKV has the same path; etcd's gateway serves Hash
        {"maintenance/snapshot", "Maintenance.Snapshot"},
        {"maintenance/transfer-leadership", "Maintenance.MoveLeader"},
        {"auth/enable", "Auth.AuthEnable"},
        {"auth/disable", "Auth.AuthDisable"},
        {"auth/authenticate", "Auth.Authenticate"},
        {"auth/user/add", "Auth.UserAdd"},
        {"auth/user/get", "Auth.UserGet"},
        {"auth/user/list", "Auth.UserList"},
        {"auth/user/delete", "Auth.UserDelete"},
        {"auth/user/changepw", "Auth.UserChangePassword"},
        {"auth/user/grant", "Auth.UserGrantRole"},
        {"auth/user/revoke", "Auth.UserRevokeRole"},
        {"auth/role/add", "Auth.RoleAdd"},
        {"auth/role/get", "Auth.RoleGet"},
        {"auth/role/list", "Auth.RoleList"},
        {"auth/role/delete", "Auth.RoleDelete"},
        {"auth/role/grant", "Auth.RoleGrantPermission"},
        {"auth/role/revoke", "Auth.RoleRevokePermission"},
    };
    auto* t = new absl::flat_hash_map<std::string, const google::protobuf::MethodDescriptor*>;
    const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
    for (const auto& [path, method] : kRoutes) {
      const google::protobuf::MethodDescriptor* md = pool->FindMethodByName(absl::StrCat("etcdserverpb.", method));
      if (md == nullptr) continue;
      for (const char* prefix : {"/v3/", "/v3beta/"}) (*t)[absl::StrCat(prefix, path)] = md;
    }
    return t;
  }();
  auto it = table->find(std::string(path));
  return it == table->end() ? nullptr : it->second;
}

// /metrics, /health (and /healthz, /livez, /readyz), /version, as etcd
// serves them on its client and metrics URLs.
h2::PlainResponse PlainHttp(Store* s, std::string_view path) {
  if (auto q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
  h2::PlainResponse r;
  r.content_type = "application/json";
  if (path == "/metrics") {
    r.body = FormatMetrics(s->GetMetrics()) + ProcessMetrics();
    r.content_type = "text/plain; version=0.0.4";
  } else if (path == "/health" || path == "/healthz" || path == "/livez" || path == "/readyz") {
    Metrics m = s->GetMetrics();
    r.body = m.nospace_alarm ? R"({"health":"false","reason":"ALARM NOSPACE"})" : R"({"health":"true","reason":""})";
    if (m.nospace_alarm) r.status = 503;
  } else if (path == "/version") {
    r.body = absl::StrCat(R"({"etcdserver":")", kEtcdVersion, R"(","etcdcluster":"3.5.0"})");
  } else {
    r.status = 404;
    r.body = "404 page not found\n";
    r.content_type = "text/plain; charset=utf-8";
  }
  return r;
}

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
      std::string_view req(buf, static_cast<size_t>(n));
      std::string resp = h2::Http1Response(req.substr(0, req.find("\r\n\r\n")),
                                           [this](std::string_view path) { return PlainHttp(s_, path); });
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
    if (inet_pton(AF_INET6, u.host.c_str(), &a->sin6_addr) != 1)
      return absl::InvalidArgumentError("bad host " + u.host);
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(u.port));
    std::string host = u.host == "localhost" ? "127.0.0.1" : u.host;
    if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1)
      return absl::InvalidArgumentError("bad host " + u.host);
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
  explicit ServerImpl(Store* s) : kv_(s), watch_(s), lease_(s), maint_(s), cluster_(s) {}
  ~ServerImpl() override { Shutdown(); }

  absl::Status Init(Store* s, const ServerOptions& o) {
    if (o.transport == "h2") {
      RETURN_IF_ERROR(InitH2(s, o));
    } else if (o.transport == "grpc") {
      RETURN_IF_ERROR(InitGrpc(s, o));
    } else {
      return absl::InvalidArgumentError("unknown transport " + o.transport + " (grpc or h2)");
    }
    for (const auto& m : o.listen_metrics_urls) {
      ASSIGN_OR_RETURN(Url u, ParseUrl(m));
      ASSIGN_OR_RETURN(auto l, ListenHttp(s, u));
      metrics_.push_back(std::move(l));
    }
    return absl::OkStatus();
  }

  absl::Status InitH2(Store* s, const ServerOptions& o) {
    pool_ = std::make_unique<WorkerPool>(4);
    if (!o.auth_file.empty()) {
      AuthOptions ao;
      ao.path = o.auth_file;
      ao.bcrypt_cost = o.bcrypt_cost;
      ao.token_ttl_s = o.auth_token_ttl_s;
      ASSIGN_OR_RETURN(auth_, AuthStore::Open(ao));
    }
    routes_ = std::make_unique<H2Routes>(s, pool_.get(), s->MaxRequestBytes(), auth_.get());
    h2::TransportOptions t;
    for (const auto& url : o.listen_client_urls) {
      ASSIGN_OR_RETURN(Url u, ParseUrl(url));
      bool secure = u.scheme == "https" || u.scheme == "unixs";
      if (secure && o.cert_file.empty()) {
        return absl::InvalidArgumentError("https listen URL needs --cert-file and --key-file");
      }
      if (!u.path.empty()) {
        t.listen.push_back("unix:" + u.path);
      } else if (u.host.find(':') != std::string::npos) {
        t.listen.push_back(absl::StrCat("[", u.host, "]:", u.port));
      } else {
        t.listen.push_back(absl::StrCat(u.host, ":", u.port));
      }
      t.tls.push_back(secure);
    }
    t.cert_file = o.cert_file;
    t.key_file = o.key_file;
    t.trusted_ca_file = o.trusted_ca_file;
    t.client_cert_auth = o.client_cert_auth;
    t.threads = o.transport_threads;
    t.max_recv_message_bytes = s->MaxRequestBytes() + 512 * 1024;
    const H2Routes* routes = routes_.get();
    t.route = [routes](std::string_view path) { return routes->Route(path); };
    t.plain_http = [s](std::string_view path) { return PlainHttp(s, path); };
    t.json_route = GatewayMethod;
    if (o.commit_on_loop) {
      t.on_loop_start = LeadAsyncWritesAtTurnEnd;
      t.on_turn_end = LeadDeferredWrites;
    } else {
      t.on_loop_start = HandAsyncWritesToCommitter;
    }
    ASSIGN_OR_RETURN(h2_, h2::Transport::Start(std::move(t)));
    ports_ = h2_->Ports();
    return absl::OkStatus();
  }

  absl::Status InitGrpc(Store* s, const ServerOptions& o) {
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
      if (secure && !tls)
        return absl::InvalidArgumentError("https listen URL needs --cert-file and --key-file");
      if (!u.path.empty()) {
        addr = "unix:" + u.path;
      } else if (u.host.find(':') != std::string::npos) {
        addr = absl::StrCat("[", u.host, "]:", u.port);
      } else {
        addr = absl::StrCat(u.host, ":", u.port);
      }
      b.AddListeningPort(addr, secure ? tls : grpc::InsecureServerCredentials(), &ports_[i]);
    }
    b.SetMaxReceiveMessageSize(static_cast<int>(std::min<size_t>(s->MaxRequestBytes() + 512 * 1024, INT32_MAX)));
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
    return absl::OkStatus();
  }

  std::vector<int> ClientPorts() const override { return ports_; }
  std::vector<int> MetricsPorts() const override {
    std::vector<int> v;
    for (const auto& m : metrics_) v.push_back(m->port());
    return v;
  }
  void Shutdown() override {
    if (shut_.exchange(true)) return;
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    if (h2_) h2_->Shutdown();
    metrics_.clear();
  }
  void Wait() override {
    if (server_) server_->Wait();
    if (h2_) h2_->Wait();
  }

 private:
  KVService kv_;
  WatchService watch_;
  LeaseService lease_;
  MaintenanceService maint_;
  ClusterService cluster_;
  HealthService health_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<AuthStore> auth_;  // outlives the pool's threads, which call it
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<H2Routes> routes_;
  std::unique_ptr<h2::Transport> h2_;
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
  auto g = [&](const char* name, const char* type, const char* help, double v) { AppendMetric(&o, name, type, help, v); };
  g("etcd_server_has_leader", "gauge", "Whether or not a leader exists. 1 is existence, 0 is not.", 1);
  g("etcd_server_is_leader", "gauge", "Whether or not this member is a leader.", 1);
  g("etcd_mvcc_db_total_size_in_bytes", "gauge",
    "Total size of the underlying database physically allocated in bytes.", static_cast<double>(m.db_size));
  g("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge",
    "Total size of the underlying database logically in use.", static_cast<double>(m.db_size_in_use));
  g("etcd_server_quota_backend_bytes", "gauge", "Current backend storage quota size in bytes.",
    static_cast<double>(m.quota));
  g("etcd_debugging_mvcc_current_revision", "gauge", "The current revision of store.",
    static_cast<double>(m.revision));
  g("etcd_debugging_mvcc_compact_revision", "gauge", "The revision of the last compaction in store.",
    static_cast<double>(m.compact_revision));
  g("etcd_debugging_mvcc_keys_total", "gauge", "Total number of keys.", static_cast<double>(m.keys));
  g("etcd_mvcc_put_total", "counter", "Total number of puts seen by this member.",
    static_cast<double>(m.puts));
  g("etcd_mvcc_range_total", "counter", "Total number of ranges seen by this member.",
    static_cast<double>(m.ranges));
  g("etcd_mvcc_delete_total", "counter", "Total number of deletes seen by this member.",
    static_cast<double>(m.deletes));
  g("etcd_mvcc_txn_total", "counter", "Total number of txns seen by this member.",
    static_cast<double>(m.txns));
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
  g("etcd_debugging_mvcc_watcher_total", "gauge", "Total number of synced watchers.",
    static_cast<double>(m.watchers));
  g("etcd_debugging_mvcc_slow_watcher_total", "counter", "Watchers that fell behind and replayed history.",
    static_cast<double>(m.slow_watchers));
  g("etcd_debugging_lease_total", "gauge", "The number of current leases.", static_cast<double>(m.leases));
  g("etcd_server_alarm_nospace", "gauge", "1 when the NOSPACE alarm is raised.", m.nospace_alarm ? 1 : 0);
  return o;
}

}  // namespace skiff::store
