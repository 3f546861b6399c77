#include <chrono>

#include "absl/strings/str_cat.h"
#include "skiff/client/dial.h"

namespace skiff::client {

namespace v1 = ::skiff::api::v1;

absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

namespace {

std::shared_ptr<grpc::ChannelCredentials> ChannelCreds(const Credentials& c) {
  if (c.insecure) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = c.ca_cert_pem;
  o.pem_cert_chain = c.client_cert_pem;
  o.pem_private_key = c.client_key_pem;
  return grpc::SslCredentials(o);
}

class GrpcWatchStream : public WatchStream {
 public:
  GrpcWatchStream(std::unique_ptr<grpc::ClientContext> ctx, std::unique_ptr<grpc::ClientReader<v1::WatchEvent>> r)
      : ctx_(std::move(ctx)), reader_(std::move(r)) {}
  ~GrpcWatchStream() override {
    Cancel();
    if (!finished_) {
      v1::WatchEvent ev;
      while (reader_->Read(&ev)) {
      }
      reader_->Finish();
    }
  }
  absl::StatusOr<WatchEvent> Next() override {
    if (finished_) return final_;
    v1::WatchEvent ev;
    if (reader_->Read(&ev)) {
      if (ev.type() == "ERROR") {
        absl::Status st(static_cast<absl::StatusCode>(ev.error_code() ? ev.error_code() : 2), ev.error_message());
        Cancel();
        Drain();
        final_ = st;
        return st;
      }
      return ev;
    }
    grpc::Status s = reader_->Finish();
    finished_ = true;
    if (cancelled_) final_ = absl::CancelledError("watch cancelled");
    else if (s.ok()) final_ = absl::UnavailableError("watch closed by the server");
    else final_ = FromGrpcStatus(s);
    return final_;
  }
  void Cancel() override {
    cancelled_ = true;
    ctx_->TryCancel();
  }

 private:
  void Drain() {
    v1::WatchEvent ev;
    while (reader_->Read(&ev)) {
    }
    reader_->Finish();
    finished_ = true;
  }
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReader<v1::WatchEvent>> reader_;
  bool finished_ = false;
  std::atomic<bool> cancelled_{false};
  absl::Status final_ = absl::OkStatus();
};

}  // namespace

GrpcClient::GrpcClient(std::shared_ptr<grpc::Channel> channel, Credentials creds)
    : channel_(std::move(channel)), stub_(v1::Api::NewStub(channel_)), creds_(std::move(creds)) {}

void GrpcClient::PrepareContext(grpc::ClientContext* ctx) const {
  if (!creds_.token.empty()) ctx->AddMetadata("authorization", "Bearer " + creds_.token);
}

namespace {
// One unary call of the Api stub: credentials, a deadline, the error mapping.
template <typename Resp, typename Req, typename Method>
absl::StatusOr<Resp> CallUnary(const GrpcClient* c, v1::Api::Stub* stub, Method method, const Req& req) {
  Resp out;
  grpc::ClientContext ctx;
  c->PrepareContext(&ctx);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  grpc::Status s = (stub->*method)(&ctx, req, &out);
  if (!s.ok()) return FromGrpcStatus(s);
  return out;
}
}  // namespace

absl::StatusOr<Object> GrpcClient::Create(const std::string& resource, const std::string& ns, const Object& obj) {
  v1::CreateRequest req;
  req.set_resource(resource);
  req.set_namespace_(ns);
  *req.mutable_object() = obj;
  return CallUnary<Object>(this, stub_.get(), &v1::Api::Stub::Create, req);
}

absl::StatusOr<Object> GrpcClient::Get(const std::string& resource, const std::string& ns, const std::string& name) {
  v1::GetRequest req;
  req.set_resource(resource);
  req.set_namespace_(ns);
  req.set_name(name);
  return CallUnary<Object>(this, stub_.get(), &v1::Api::Stub::Get, req);
}

absl::StatusOr<ObjectList> GrpcClient::List(const std::string& resource, const std::string& ns,
                                            const ListOptions& opts) {
  v1::ListRequest req;
  req.set_resource(resource);
  req.set_namespace_(ns);
  req.set_label_selector(opts.label_selector);
  req.set_field_selector(opts.field_selector);
  req.set_limit(opts.limit);
  req.set_continue_(opts.continue_token);
  req.set_resource_version(opts.resource_version);
  return CallUnary<ObjectList>(this, stub_.get(), &v1::Api::Stub::List, req);
}

absl::StatusOr<std::unique_ptr<WatchStream>> GrpcClient::WatchRequest(const v1::WatchRequest& req) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  PrepareContext(ctx.get());
  auto reader = stub_->Watch(ctx.get(), req);
  // Surface an immediate refusal (too old, forbidden) from Watch itself.
  // The server marks an established watch in its initial metadata; a refused
  // one ends at once with only a status.
  reader->WaitForInitialMetadata();
  if (ctx->GetServerInitialMetadata().count("x-skiff-watch") == 0) {
    v1::WatchEvent ev;
    while (reader->Read(&ev)) {
    }
    grpc::Status s = reader->Finish();
    if (!s.ok()) return FromGrpcStatus(s);
    return absl::UnavailableError("watch closed by the server");
  }
  return std::unique_ptr<WatchStream>(new GrpcWatchStream(std::move(ctx), std::move(reader)));
}

absl::StatusOr<std::unique_ptr<WatchStream>> GrpcClient::Watch(const std::string& resource, const std::string& ns,
                                                               const ListOptions& opts) {
  v1::WatchRequest req;
  req.set_resource(resource);
  req.set_namespace_(ns);
  req.set_label_selector(opts.label_selector);
  req.set_field_selector(opts.field_selector);
  req.set_resource_version(opts.resource_version);
  req.set_allow_watch_bookmarks(true);
  return WatchRequest(req);
}

absl::StatusOr<Object> GrpcClient::Update(const std::string& resource, const std::string& ns, const Object& obj) {
  v1::UpdateRequest req;
  req.set_resource(resource);
  req.set_namespace_(ns);
  *req.mutable_object() = obj;
  return CallUnary<Object>(this, stub_.get(), &v1::Api::Stub::Update, req);
}

absl::StatusOr<Object> GrpcClient::UpdateStatus(const std::string& resource, const std::string& ns, const Object& obj) {
  v1::UpdateRequest req;
  req.set_resource(resource);
  req.set_namespace_(ns);
  req.set_subresource("status");
  *req.mutable_object() = obj;
  return CallUnary<Object>(this, stub_.get(), &v1::Api::Stub::Update, req);
}

absl::StatusOr<Object> GrpcClient::Patch(const std::string& resource, const std::string& ns, const std::string& name,
                                         const std::string& merge_patch_json, const std::string& subresource) {
  v1::PatchRequest req;
  req.set_resource(resource);
  req.set_namespace_(ns);
  req.set_name(name);
  req.set_patch_type("merge");
  req.set_patch(merge_patch_json);
  req.set_subresource(subresource);
  return CallUnary<Object>(this, stub_.get(), &v1::Api::Stub::Patch, req);
}

absl::StatusOr<Object> GrpcClient::Delete(const std::string& resource, const std::string& ns, const std::string& name,
                                          const DeleteOptions& opts) {
  v1::DeleteRequest req;
  req.set_resource(resource);
  req.set_namespace_(ns);
  req.set_name(name);
  if (opts.grace_period_seconds.has_value()) req.set_grace_period_seconds(*opts.grace_period_seconds);
  req.mutable_preconditions()->set_uid(opts.precondition_uid);
  req.mutable_preconditions()->set_resource_version(opts.precondition_resource_version);
  req.set_propagation_policy(opts.propagation_policy);
  return CallUnary<Object>(this, stub_.get(), &v1::Api::Stub::Delete, req);
}

absl::StatusOr<v1::WhoAmIResponse> GrpcClient::WhoAmI() {
  return CallUnary<v1::WhoAmIResponse>(this, stub_.get(), &v1::Api::Stub::WhoAmI, v1::WhoAmIRequest());
}

absl::StatusOr<v1::VersionInfo> GrpcClient::Version() {
  return CallUnary<v1::VersionInfo>(this, stub_.get(), &v1::Api::Stub::Version, v1::VersionRequest());
}

absl::StatusOr<v1::CreateBootstrapTokenResponse> GrpcClient::CreateBootstrapToken(int64_t ttl_seconds,
                                                                                 const std::string& description) {
  v1::CreateBootstrapTokenRequest req;
  req.set_ttl_seconds(ttl_seconds);
  req.set_description(description);
  return CallUnary<v1::CreateBootstrapTokenResponse>(this, stub_.get(), &v1::Api::Stub::CreateBootstrapToken, req);
}

absl::StatusOr<v1::StatsResponse> GrpcClient::NodeStats(const std::string& node_name) {
  v1::NodeStatsRequest req;
  req.set_node_name(node_name);
  return CallUnary<v1::StatsResponse>(this, stub_.get(), &v1::Api::Stub::NodeStats, req);
}

absl::StatusOr<v1::ServiceAccountTokenResponse> GrpcClient::CreateServiceAccountToken(
    const std::string& ns, const std::string& service_account, const std::vector<std::string>& audiences,
    int64_t expiration_seconds, const std::string& bound_pod_name, const std::string& bound_pod_uid) {
  v1::ServiceAccountTokenRequest req;
  req.set_namespace_(ns);
  req.set_name(service_account);
  for (const auto& a : audiences) req.add_audiences(a);
  req.set_expiration_seconds(expiration_seconds);
  req.set_bound_pod_name(bound_pod_name);
  req.set_bound_pod_uid(bound_pod_uid);
  return CallUnary<v1::ServiceAccountTokenResponse>(this, stub_.get(), &v1::Api::Stub::CreateServiceAccountToken, req);
}

absl::StatusOr<std::unique_ptr<GrpcClient>> Dial(const Credentials& creds) {
  if (creds.server.empty()) return absl::InvalidArgumentError("client config: no server address");
  if (!creds.insecure && !creds.client_cert_pem.empty() && creds.client_key_pem.empty())
    return absl::InvalidArgumentError("client config: a client certificate needs its key");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  auto channel = grpc::CreateCustomChannel(creds.server, ChannelCreds(creds), args);
  return std::make_unique<GrpcClient>(channel, creds);
}

absl::StatusOr<v1::NodeCertificateResponse> RequestNodeCertificate(const Credentials& creds,
                                                                   const std::string& bootstrap_token,
                                                                   const std::string& node_name,
                                                                   const std::string& csr_pem) {
  Credentials anon = creds;
  anon.client_cert_pem.clear();
  anon.client_key_pem.clear();
  anon.token.clear();
  auto c = Dial(anon);
  if (!c.ok()) return c.status();
  v1::NodeCertificateRequest req;
  req.set_token(bootstrap_token);
  req.set_node_name(node_name);
  req.set_csr_pem(csr_pem);
  v1::NodeCertificateResponse out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::Status s = (*c)->stub()->RequestNodeCertificate(&ctx, req, &out);
  if (!s.ok()) return FromGrpcStatus(s);
  return out;
}

}  // namespace skiff::client
