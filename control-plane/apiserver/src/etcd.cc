#include "skiff/apiserver/etcd.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "skiff/common/log.h"

namespace skiff::apiserver {

std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    unsigned char c = static_cast<unsigned char>(end.back());
    if (c < 0xff) {
      end.back() = static_cast<char>(c + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // whole keyspace
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

namespace {

std::string StripScheme(const std::string& url) {
  std::string s = url;
  for (const char* p : {"http://", "https://", "unix://"}) {
    if (s.rfind(p, 0) == 0) s = s.substr(std::string(p).size());
  }
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

bool IsIpLiteralHostPort(const std::string& hp) {
  if (!hp.empty() && hp[0] == '[') return true;
  auto colon = hp.rfind(':');
  std::string host = hp.substr(0, colon);
  for (char c : host)
    if (!(isdigit(static_cast<unsigned char>(c)) || c == '.')) return false;
  return !host.empty();
}

void SetDeadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
}

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Connect(const std::vector<std::string>& endpoints) {
  if (endpoints.empty()) return absl::InvalidArgumentError("no etcd endpoints");
  std::vector<std::string> hps;
  bool all_ip = true;
  for (const auto& e : endpoints) {
    hps.push_back(StripScheme(e));
    if (endpoints[0].rfind("unix:", 0) == 0 || !IsIpLiteralHostPort(hps.back())) all_ip = false;
  }
  std::string target;
  if (endpoints.size() == 1 && endpoints[0].rfind("unix:", 0) == 0) {
    target = endpoints[0];
  } else if (all_ip) {
    target = absl::StrCat(hps[0][0] == '[' ? "ipv6:" : "ipv4:", absl::StrJoin(hps, ","));
  } else {
    target = hps[0];
  }
  grpc::ChannelArguments args;
  args.SetLoadBalancingPolicyName("round_robin");
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  return std::make_unique<EtcdClient>(channel);
}

EtcdClient::EtcdClient(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)),
      kv_(etcdserverpb::KV::NewStub(channel_)),
      watch_(etcdserverpb::Watch::NewStub(channel_)) {}

// Retries while the store is unreachable (a member restarting, a leader
// election); etcd's own client does the same for its requests.
template <typename Fn>
absl::Status EtcdClient::Retry(Fn&& fn) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  int delay_ms = 20;
  while (true) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    ctx.set_wait_for_ready(true);
    grpc::Status s = fn(&ctx);
    if (s.ok()) return absl::OkStatus();
    bool transient = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                     (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) ||
                     s.error_message().find("leader changed") != std::string::npos ||
                     s.error_message().find("no leader") != std::string::npos ||
                     s.error_message().find("timed out") != std::string::npos;
    if (!transient || std::chrono::steady_clock::now() > deadline) {
      if (s.error_code() == grpc::StatusCode::OUT_OF_RANGE) return absl::OutOfRangeError(s.error_message());
      return absl::UnavailableError(absl::StrCat("etcd: ", s.error_message()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    delay_ms = std::min(delay_ms * 2, 500);
  }
}

absl::StatusOr<EtcdRange> EtcdClient::Range(const std::string& key, const std::string& end, int64_t revision,
                                            int64_t limit, bool count_only) {
  etcdserverpb::RangeRequest req;
  req.set_key(key);
  req.set_range_end(end);
  req.set_revision(revision);
  req.set_limit(limit);
  req.set_count_only(count_only);
  etcdserverpb::RangeResponse resp;
  absl::Status st = Retry([&](grpc::ClientContext* ctx) { return kv_->Range(ctx, req, &resp); });
  if (!st.ok()) return st;
  EtcdRange out;
  out.revision = resp.header().revision();
  out.more = resp.more();
  out.count = resp.count();
  out.kvs.assign(resp.kvs().begin(), resp.kvs().end());
  return out;
}

absl::StatusOr<mvccpb::KeyValue> EtcdClient::Get(const std::string& key, int64_t revision) {
  auto r = Range(key, "", revision, 0);
  if (!r.ok()) return r.status();
  if (r->kvs.empty()) return absl::NotFoundError(key);
  return r->kvs[0];
}

absl::StatusOr<etcdserverpb::TxnResponse> EtcdClient::Txn(const etcdserverpb::TxnRequest& req) {
  etcdserverpb::TxnResponse resp;
  absl::Status st = Retry([&](grpc::ClientContext* ctx) { return kv_->Txn(ctx, req, &resp); });
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<int64_t> EtcdClient::CurrentRevision() {
  auto r = Range("/registry/", PrefixEnd("/registry/"), 0, 1, true);
  if (!r.ok()) return r.status();
  return r->revision;
}

absl::Status EtcdClient::Compact(int64_t revision) {
  etcdserverpb::CompactionRequest req;
  req.set_revision(revision);
  req.set_physical(true);
  etcdserverpb::CompactionResponse resp;
  return Retry([&](grpc::ClientContext* ctx) { return kv_->Compact(ctx, req, &resp); });
}

absl::StatusOr<int64_t> EtcdClient::Create(const std::string& key, const std::string& value) {
  etcdserverpb::TxnRequest txn;
  auto* cmp = txn.add_compare();
  cmp->set_key(key);
  cmp->set_target(etcdserverpb::Compare::CREATE);
  cmp->set_result(etcdserverpb::Compare::EQUAL);
  cmp->set_create_revision(0);
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  auto resp = Txn(txn);
  if (!resp.ok()) return resp.status();
  if (!resp->succeeded()) return absl::AlreadyExistsError(key);
  return resp->header().revision();
}

absl::StatusOr<int64_t> EtcdClient::Update(const std::string& key, const std::string& value, int64_t expected) {
  etcdserverpb::TxnRequest txn;
  auto* cmp = txn.add_compare();
  cmp->set_key(key);
  cmp->set_target(etcdserverpb::Compare::MOD);
  cmp->set_result(etcdserverpb::Compare::EQUAL);
  cmp->set_mod_revision(expected);
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  auto resp = Txn(txn);
  if (!resp.ok()) return resp.status();
  if (!resp->succeeded()) return absl::AbortedError(key);
  return resp->header().revision();
}

absl::StatusOr<int64_t> EtcdClient::Delete(const std::string& key, int64_t expected) {
  etcdserverpb::TxnRequest txn;
  auto* cmp = txn.add_compare();
  cmp->set_key(key);
  cmp->set_target(etcdserverpb::Compare::MOD);
  cmp->set_result(etcdserverpb::Compare::EQUAL);
  cmp->set_mod_revision(expected);
  txn.add_success()->mutable_request_delete_range()->set_key(key);
  auto resp = Txn(txn);
  if (!resp.ok()) return resp.status();
  if (!resp->succeeded()) return absl::AbortedError(key);
  return resp->header().revision();
}

// ---------------------------------------------------------------- watch

EtcdWatch::EtcdWatch(EtcdClient* client, std::string prefix, int64_t start_revision, EventsFn on_events,
                     CompactedFn on_compacted)
    : client_(client),
      prefix_(std::move(prefix)),
      next_revision_(start_revision),
      on_events_(std::move(on_events)),
      on_compacted_(std::move(on_compacted)) {
  thread_ = std::thread([this] { Run(); });
}

EtcdWatch::~EtcdWatch() { Stop(); }

void EtcdWatch::Stop() {
  stop_ = true;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (ctx_) ctx_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

void EtcdWatch::RequestProgress() {
  std::lock_guard<std::mutex> l(mu_);
  if (!stream_) return;
  etcdserverpb::WatchRequest req;
  req.mutable_progress_request();
  std::lock_guard<std::mutex> w(write_mu_);
  stream_->Write(req);
}

void EtcdWatch::Run() {
  int backoff_ms = 50;
  while (!stop_) {
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_) return;
      ctx_ = &ctx;
    }
    auto stream = client_->watch_stub()->Watch(&ctx);
    etcdserverpb::WatchRequest req;
    auto* c = req.mutable_create_request();
    c->set_key(prefix_);
    c->set_range_end(PrefixEnd(prefix_));
    c->set_start_revision(next_revision_);
    c->set_prev_kv(true);
    c->set_progress_notify(true);
    bool compacted = false;
    bool wrote;
    {
      std::lock_guard<std::mutex> w(write_mu_);
      wrote = stream->Write(req);
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      stream_ = stream.get();
    }
    if (wrote) {
      etcdserverpb::WatchResponse resp;
      std::vector<mvccpb::Event> pending;  // fragments of one revision batch
      while (stream->Read(&resp)) {
        backoff_ms = 50;
        if (resp.compact_revision() > 0 || (resp.canceled() && resp.cancel_reason().find("compact") != std::string::npos)) {
          compacted = true;
          int64_t cr = resp.compact_revision();
          ctx.TryCancel();
          on_compacted_(cr);
          break;
        }
        if (resp.canceled()) break;
        for (const auto& ev : resp.events()) pending.push_back(ev);
        if (resp.fragment()) continue;
        if (!pending.empty()) {
          next_revision_ = pending.back().kv().mod_revision() + 1;
          on_events_(pending, resp.header().revision());
          pending.clear();
        } else if (!resp.created()) {
          on_events_(pending, resp.header().revision());
        }
      }
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      stream_ = nullptr;
    }
    {
      std::lock_guard<std::mutex> w(write_mu_);
      stream->WritesDone();
    }
    stream->Finish();
    {
      std::lock_guard<std::mutex> l(mu_);
      ctx_ = nullptr;
    }
    if (compacted) return;
    if (stop_) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
    backoff_ms = std::min(backoff_ms * 2, 1000);
  }
}

}  // namespace skiff::apiserver
