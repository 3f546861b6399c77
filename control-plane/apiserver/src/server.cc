#include "skiff/apiserver/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "skiff/api/v1/api.grpc.pb.h"
#include "skiff/api/v1/kubelet.grpc.pb.h"
#include "skiff/apiserver/auth.h"
#include "skiff/apiserver/pki.h"
#include "skiff/apiserver/sa_token.h"
#include "skiff/apiserver/validation.h"
#include "skiff/client/config.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"

namespace skiff::apiserver {

namespace v1 = ::skiff::api::v1;

namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status WriteFile(const std::string& path, const std::string& data, mode_t mode) {
  std::string tmp = absl::StrCat(path, ".tmp");
  {
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return LastErrnoError(absl::StrCat("create ", tmp));
    ssize_t n = ::write(fd, data.data(), data.size());
    int err = errno;
    if (::fsync(fd) != 0 && n >= 0) err = errno, n = -1;
    ::close(fd);
    if (n != static_cast<ssize_t>(data.size())) return ErrnoError(err ? err : EIO, absl::StrCat("write ", tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return LastErrnoError(absl::StrCat("rename ", tmp));
  return absl::OkStatus();
}

absl::Status MkdirP(const std::string& path, mode_t mode) {
  std::string cur;
  for (const auto& part : absl::StrSplit(path, '/')) {
    cur += std::string(part) + "/";
    if (part.empty()) continue;
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) return LastErrnoError(absl::StrCat("mkdir ", cur));
  }
  return absl::OkStatus();
}

std::pair<std::string, int> SplitHostPort(const std::string& hp) {
  auto colon = hp.rfind(':');
  if (colon == std::string::npos) return {hp, 0};
  std::string host = hp.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  int port = 0;
  (void)absl::SimpleAtoi(hp.substr(colon + 1), &port);
  return {host, port};
}

bool IsIp(const std::string& s) {
  in6_addr a6;
  in_addr a4;
  return inet_pton(AF_INET, s.c_str(), &a4) == 1 || inet_pton(AF_INET6, s.c_str(), &a6) == 1;
}

std::string Hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string RandomString(int n, const char* alphabet) {
  std::random_device rd;
  std::string s;
  size_t len = strlen(alphabet);
  for (int i = 0; i < n; ++i) s += alphabet[rd() % len];
  return s;
}

}  // namespace

absl::StatusOr<Pki> EnsurePki(const std::string& data_dir, const std::vector<std::string>& sans) {
  std::string dir = data_dir + "/pki";
  RETURN_IF_ERROR(MkdirP(dir, 0700));
  Pki pki;
  auto ca_cert = ReadFile(dir + "/ca.crt");
  auto ca_key = ReadFile(dir + "/ca.key");
  if (ca_cert.ok() && ca_key.ok()) {
    pki.ca_cert = *ca_cert;
    pki.ca_key = *ca_key;
  } else {
    ASSIGN_OR_RETURN(CertKey ca, CreateCa("skiff-ca"));
    RETURN_IF_ERROR(WriteFile(dir + "/ca.key", ca.key_pem, 0600));
    RETURN_IF_ERROR(WriteFile(dir + "/ca.crt", ca.cert_pem, 0644));
    pki.ca_cert = ca.cert_pem;
    pki.ca_key = ca.key_pem;
  }
  CertKey ca{pki.ca_cert, pki.ca_key};
  // The serving certificate is reissued when the wanted SANs change.
  std::vector<std::string> dns = {"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"};
  std::vector<std::string> ips = {"127.0.0.1"};
  for (const auto& s : sans) {
    if (s.empty()) continue;
    auto& list = IsIp(s) ? ips : dns;
    if (std::find(list.begin(), list.end(), s) == list.end()) list.push_back(s);
  }
  std::string san_key;
  for (const auto& d : dns) san_key += "DNS:" + d + "\n";
  for (const auto& i : ips) san_key += "IP:" + i + "\n";
  auto old_sans = ReadFile(dir + "/apiserver.sans");
  auto s_cert = ReadFile(dir + "/apiserver.crt");
  auto s_key = ReadFile(dir + "/apiserver.key");
  if (s_cert.ok() && s_key.ok() && old_sans.ok() && *old_sans == san_key) {
    pki.serving_cert = *s_cert;
    pki.serving_key = *s_key;
  } else {
    CertSpec spec;
    spec.common_name = "kube-apiserver";
    spec.dns_names = dns;
    spec.ip_addresses = ips;
    spec.server = true;
    ASSIGN_OR_RETURN(CertKey sc, IssueCertificate(ca, spec));
    RETURN_IF_ERROR(WriteFile(dir + "/apiserver.key", sc.key_pem, 0600));
    RETURN_IF_ERROR(WriteFile(dir + "/apiserver.crt", sc.cert_pem, 0644));
    RETURN_IF_ERROR(WriteFile(dir + "/apiserver.sans", san_key, 0644));
    pki.serving_cert = sc.cert_pem;
    pki.serving_key = sc.key_pem;
  }
  auto a_cert = ReadFile(dir + "/admin.crt");
  auto a_key = ReadFile(dir + "/admin.key");
  if (a_cert.ok() && a_key.ok()) {
    pki.admin_cert = *a_cert;
    pki.admin_key = *a_key;
  } else {
    CertSpec spec;
    spec.common_name = "kubernetes-admin";
    spec.organizations = {"system:masters"};
    spec.client = true;
    ASSIGN_OR_RETURN(CertKey ac, IssueCertificate(ca, spec));
    RETURN_IF_ERROR(WriteFile(dir + "/admin.key", ac.key_pem, 0600));
    RETURN_IF_ERROR(WriteFile(dir + "/admin.crt", ac.cert_pem, 0644));
    pki.admin_cert = ac.cert_pem;
    pki.admin_key = ac.key_pem;
  }
  return pki;
}

// ---------------------------------------------------------------- metrics

struct Metrics {
  std::atomic<int64_t> requests[16] = {};
  std::atomic<int64_t> errors{0};
  std::atomic<int64_t> watch_streams{0};
  std::atomic<int64_t> latency_us_sum{0};
  std::atomic<int64_t> latency_count{0};
  // Histogram buckets in ms: 1, 5, 10, 25, 50, 100, 250, 1000, +Inf
  std::atomic<int64_t> buckets[9] = {};
  void Observe(int verb, absl::Duration d, bool ok) {
    requests[verb]++;
    if (!ok) errors++;
    int64_t us = absl::ToInt64Microseconds(d);
    latency_us_sum += us;
    latency_count++;
    static const int64_t kEdges[] = {1000, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};
    int b = 8;
    for (int i = 0; i < 8; ++i)
      if (us <= kEdges[i]) {
        b = i;
        break;
      }
    buckets[b]++;
  }
};

static const char* kVerbNames[] = {"create", "get", "list", "watch", "update", "patch", "delete", "logs",
                                   "exec", "portforward", "bootstrap", "nodecert", "version", "whoami", "nodestats",
                                   "serviceaccounttoken"};
enum Verb {
  kCreate, kGet, kList, kWatch, kUpdate, kPatch, kDelete, kLogs, kExec, kPortForward, kBoot, kNodeCert, kVersion,
  kWhoAmI, kNodeStats, kSaToken
};

// ---------------------------------------------------------------- service

class ApiService final : public v1::Api::Service {
 public:
  ApiService(Registry* reg, Authenticator* authn, Authorizer* authz, Metrics* metrics, const Pki* pki,
             const ServerOptions* opts, const TokenSigner* signer)
      : reg_(reg), authn_(authn), authz_(authz), metrics_(metrics), pki_(pki), opts_(opts), signer_(signer) {}

  grpc::Status Create(grpc::ServerContext* ctx, const v1::CreateRequest* req, v1::Object* out) override {
    Timer t(metrics_, kCreate);
    const ObjectMeta& m = Meta(req->object());
    std::string ns = req->namespace_().empty() ? m.namespace_() : req->namespace_();
    auto user = Check(ctx, "create", req->resource(), "", ns, m.name(), &req->object(), nullptr);
    if (!user.ok()) return t.Done(user.status());
    auto r = reg_->Create(req->resource(), ns, req->object(), req->dry_run());
    if (r.ok()) *out = std::move(*r);
    return t.Done(r.status());
  }

  grpc::Status Get(grpc::ServerContext* ctx, const v1::GetRequest* req, v1::Object* out) override {
    Timer t(metrics_, kGet);
    auto user = Check(ctx, "get", req->resource(), "", req->namespace_(), req->name(), nullptr, nullptr);
    if (!user.ok()) return t.Done(user.status());
    auto r = reg_->Get(req->resource(), req->namespace_(), req->name());
    if (r.ok()) *out = std::move(*r);
    return t.Done(r.status());
  }

  grpc::Status List(grpc::ServerContext* ctx, const v1::ListRequest* req, v1::ObjectList* out) override {
    Timer t(metrics_, kList);
    auto user = Check(ctx, "list", req->resource(), "", req->namespace_(), "", nullptr, nullptr);
    if (!user.ok()) return t.Done(user.status());
    ListParams p{req->label_selector(), req->field_selector(), req->limit(), req->continue_(), req->resource_version()};
    auto r = reg_->List(req->resource(), req->namespace_(), p);
    if (r.ok()) *out = std::move(*r);
    return t.Done(r.status());
  }

  grpc::Status Watch(grpc::ServerContext* ctx, const v1::WatchRequest* req,
                     grpc::ServerWriter<v1::WatchEvent>* writer) override {
    Timer t(metrics_, kWatch);
    auto user = Check(ctx, "watch", req->resource(), "", req->namespace_(), "", nullptr, nullptr);
    if (!user.ok()) return t.Done(user.status());
    auto w = reg_->Watch(req->resource(), req->namespace_(), req->label_selector(), req->field_selector(),
                         req->resource_version());
    if (!w.ok()) return t.Done(w.status());
    t.Done(absl::OkStatus());
    metrics_->watch_streams++;
    ctx->AddInitialMetadata("x-skiff-watch", "1");
    writer->SendInitialMetadata();
    const ResourceInfo* info = LookupResource(req->resource()).value();
    auto deadline = req->timeout_seconds() > 0 ? absl::Now() + absl::Seconds(req->timeout_seconds())
                                               : absl::InfiniteFuture();
    auto last_bookmark = absl::Now();
    int64_t last_rev = 0;
    grpc::Status result = grpc::Status::OK;
    // sendInitialEvents: a BOOKMARK annotated k8s.io/initial-events-end once
    // the ADDED events of the existing objects are out.
    bool mark_end = req->send_initial_events() && req->allow_watch_bookmarks() &&
                    (req->resource_version().empty() || req->resource_version() == "0");
    size_t initial_left = (*w)->initial_events();
    auto send_end = [&]() {
      v1::WatchEvent bm;
      bm.set_type("BOOKMARK");
      Object* o = bm.mutable_object();
      (void)MutableInner(o, *info);
      ObjectMeta* m = MutableMeta(o);
      m->set_resource_version(std::to_string((*w)->start_revision()));
      (*m->mutable_annotations())["k8s.io/initial-events-end"] = "true";
      last_rev = std::max(last_rev, (*w)->start_revision());
      mark_end = false;
      return writer->Write(bm);
    };
    if (mark_end && initial_left == 0 && !send_end()) ctx->TryCancel();
    while (!ctx->IsCancelled() && absl::Now() < deadline) {
      auto ev = (*w)->Next(std::chrono::milliseconds(250));
      if (!ev.ok()) {
        if (ev.status().code() == absl::StatusCode::kOutOfRange) {
          v1::WatchEvent err;
          err.set_type("ERROR");
          err.set_error_code(static_cast<int>(grpc::StatusCode::OUT_OF_RANGE));
          err.set_error_message(std::string(ev.status().message()));
          writer->Write(err);
        }
        result = ToGrpc(ev.status());
        break;
      }
      if (ev->has_value()) {
        v1::WatchEvent out;
        out.set_type((*ev)->type);
        *out.mutable_object() = *(*ev)->object;
        if (!writer->Write(out)) break;
        int64_t rv = 0;
        (void)absl::SimpleAtoi(Meta(out.object()).resource_version(), &rv);
        last_rev = std::max(last_rev, rv);
        if (mark_end && --initial_left == 0 && !send_end()) break;
        continue;
      }
      if (req->allow_watch_bookmarks() && absl::Now() - last_bookmark >= absl::Milliseconds(opts_->bookmark_interval_ms)) {
        last_bookmark = absl::Now();
        int64_t rev = (*w)->progress_revision();
        if (rev > 0 && rev >= last_rev) {
          v1::WatchEvent bm;
          bm.set_type("BOOKMARK");
          Object* o = bm.mutable_object();
          google::protobuf::Message* inner = MutableInner(o, *info);
          (void)inner;
          MutableMeta(o)->set_resource_version(std::to_string(rev));
          if (!writer->Write(bm)) break;
          last_rev = rev;
        }
      }
    }
    reg_->Unwatch(req->resource(), *w);
    metrics_->watch_streams--;
    return result;
  }

  grpc::Status Update(grpc::ServerContext* ctx, const v1::UpdateRequest* req, v1::Object* out) override {
    Timer t(metrics_, kUpdate);
    const ObjectMeta& m = Meta(req->object());
    std::string ns = req->namespace_().empty() ? m.namespace_() : req->namespace_();
    auto user = Check(ctx, "update", req->resource(), req->subresource(), ns, m.name(), &req->object(), nullptr);
    if (!user.ok()) return t.Done(user.status());
    auto r = reg_->Update(req->resource(), ns, req->object(), req->subresource(), req->dry_run());
    if (r.ok()) *out = std::move(*r);
    return t.Done(r.status());
  }

  grpc::Status Patch(grpc::ServerContext* ctx, const v1::PatchRequest* req, v1::Object* out) override {
    Timer t(metrics_, kPatch);
    if (!req->patch_type().empty() && req->patch_type() != "merge" && req->patch_type() != "strategic")
      return t.Done(absl::FailedPreconditionError(absl::StrCat("unsupported patch type: ", req->patch_type())));
    auto user = Check(ctx, "patch", req->resource(), req->subresource(), req->namespace_(), req->name(), nullptr, nullptr);
    if (!user.ok()) return t.Done(user.status());
    auto r = reg_->Patch(req->resource(), req->namespace_(), req->name(), req->patch(), req->subresource(), req->dry_run());
    if (r.ok()) *out = std::move(*r);
    return t.Done(r.status());
  }

  grpc::Status Delete(grpc::ServerContext* ctx, const v1::DeleteRequest* req, v1::Object* out) override {
    Timer t(metrics_, kDelete);
    auto user = Check(ctx, "delete", req->resource(), "", req->namespace_(), req->name(), nullptr, nullptr);
    if (!user.ok()) return t.Done(user.status());
    DeleteParams p;
    if (req->has_grace_period_seconds()) p.grace_period_seconds = req->grace_period_seconds();
    p.precondition_uid = req->preconditions().uid();
    p.precondition_resource_version = req->preconditions().resource_version();
    p.propagation_policy = req->propagation_policy();
    p.dry_run = req->dry_run();
    auto r = reg_->Delete(req->resource(), req->namespace_(), req->name(), p);
    if (r.ok()) *out = std::move(*r);
    return t.Done(r.status());
  }

  // ---- node streams

  grpc::Status Logs(grpc::ServerContext* ctx, const v1::LogsRequest* req,
                    grpc::ServerWriter<v1::LogsChunk>* writer) override {
    Timer t(metrics_, kLogs);
    auto user = Check(ctx, "get", "pods", "log", req->namespace_(), req->pod(), nullptr, nullptr);
    if (!user.ok()) return t.Done(user.status());
    auto stub = KubeletFor(req->namespace_(), req->pod());
    if (!stub.ok()) return t.Done(stub.status());
    grpc::ClientContext kctx;
    auto reader = (*stub)->Logs(&kctx, *req);
    std::atomic<bool> done{false};
    std::thread canceller([&] {
      while (!done) {
        if (ctx->IsCancelled()) {
          kctx.TryCancel();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
    v1::LogsChunk chunk;
    while (reader->Read(&chunk))
      if (!writer->Write(chunk)) {
        kctx.TryCancel();
        break;
      }
    grpc::Status s = reader->Finish();
    done = true;
    canceller.join();
    t.Done(FromGrpc(s));
    return s;
  }

  grpc::Status Exec(grpc::ServerContext* ctx, grpc::ServerReaderWriter<v1::ExecOutput, v1::ExecInput>* stream) override {
    Timer t(metrics_, kExec);
    v1::ExecInput first;
    if (!stream->Read(&first)) return t.Done(absl::FailedPreconditionError("exec: no request"));
    auto user = Check(ctx, "create", "pods", "exec", first.namespace_(), first.pod(), nullptr, nullptr);
    if (!user.ok()) return t.Done(user.status());
    auto stub = KubeletFor(first.namespace_(), first.pod());
    if (!stub.ok()) return t.Done(stub.status());
    grpc::ClientContext kctx;
    auto kstream = (*stub)->Exec(&kctx);
    return t.Done(FromGrpc(Pump<v1::ExecInput, v1::ExecOutput>(ctx, stream, &kctx, kstream.get(), first)));
  }

  grpc::Status PortForward(grpc::ServerContext* ctx,
                           grpc::ServerReaderWriter<v1::PortForwardFrame, v1::PortForwardFrame>* stream) override {
    Timer t(metrics_, kPortForward);
    v1::PortForwardFrame first;
    if (!stream->Read(&first)) return t.Done(absl::FailedPreconditionError("portforward: no request"));
    auto user = Check(ctx, "create", "pods", "portforward", first.namespace_(), first.pod(), nullptr, nullptr);
    if (!user.ok()) return t.Done(user.status());
    auto stub = KubeletFor(first.namespace_(), first.pod());
    if (!stub.ok()) return t.Done(stub.status());
    grpc::ClientContext kctx;
    auto kstream = (*stub)->PortForward(&kctx);
    return t.Done(FromGrpc(Pump<v1::PortForwardFrame, v1::PortForwardFrame>(ctx, stream, &kctx, kstream.get(), first)));
  }

  // ---- bootstrap

  grpc::Status CreateBootstrapToken(grpc::ServerContext* ctx, const v1::CreateBootstrapTokenRequest* req,
                                    v1::CreateBootstrapTokenResponse* out) override {
    Timer t(metrics_, kBoot);
    auto user = Check(ctx, "create", "secrets", "", "kube-system", "", nullptr, nullptr);
    if (!user.ok()) return t.Done(user.status());
    static const char kAlpha[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    std::string id = RandomString(6, kAlpha), secret = RandomString(16, kAlpha);
    int64_t ttl = req->ttl_seconds() > 0 ? req->ttl_seconds() : 24 * 3600;
    std::string exp = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now() + absl::Seconds(ttl), absl::UTCTimeZone());
    Object o;
    auto* s = o.mutable_secret();
    s->mutable_metadata()->set_name("bootstrap-token-" + id);
    s->mutable_metadata()->set_namespace_("kube-system");
    s->set_type("bootstrap.kubernetes.io/token");
    auto& d = *s->mutable_data();
    d["token-id"] = id;
    d["token-secret"] = secret;
    d["expiration"] = exp;
    d["usage-bootstrap-authentication"] = "true";
    d["usage-bootstrap-signing"] = "true";
    d["auth-extra-groups"] = "system:bootstrappers:kubeadm:default-node-token";
    if (!req->description().empty()) d["description"] = req->description();
    auto r = reg_->Create("secrets", "kube-system", o);
    if (!r.ok()) return t.Done(r.status());
    out->set_token(id + "." + secret);
    out->set_expiration(exp);
    out->set_ca_cert_pem(pki_->ca_cert);
    auto hash = PublicKeyHash(pki_->ca_cert);
    if (hash.ok()) out->set_ca_cert_hash(*hash);
    return t.Done(absl::OkStatus());
  }

  grpc::Status RequestNodeCertificate(grpc::ServerContext* ctx, const v1::NodeCertificateRequest* req,
                                      v1::NodeCertificateResponse* out) override {
    Timer t(metrics_, kNodeCert);
    if (req->node_name().empty()) return t.Done(absl::InvalidArgumentError("node_name: Required value"));
    absl::StatusOr<UserInfo> user = absl::UnauthenticatedError("Unauthorized");
    if (!req->token().empty()) {
      user = authn_->AuthenticateBootstrapToken(req->token());
    } else {
      user = authn_->Authenticate(ctx);
      // A node may renew its own certificate; admins may issue any.
      if (user.ok() && NodeNameOf(*user) != req->node_name() && !user->InGroup("system:masters"))
        return t.Done(absl::PermissionDeniedError(absl::StrCat("User \"", user->name, "\" cannot request a certificate for node \"", req->node_name(), "\"")));
    }
    if (!user.ok()) return t.Done(user.status());
    if (!IsDns1123Subdomain(req->node_name()).empty())
      return t.Done(absl::InvalidArgumentError(absl::StrCat("node_name: Invalid value: \"", req->node_name(), "\"")));
    auto cert = SignClientCsr(CertKey{pki_->ca_cert, pki_->ca_key}, req->csr_pem(), "system:node:" + req->node_name(),
                              "system:nodes");
    if (!cert.ok()) return t.Done(cert.status());
    log::Info("issued node certificate", " ", log::Field("node", req->node_name()), " ", log::Field("requester", user->name));
    out->set_certificate_pem(*cert);
    out->set_ca_cert_pem(pki_->ca_cert);
    return t.Done(absl::OkStatus());
  }

  // ---- stats and service-account tokens

  grpc::Status NodeStats(grpc::ServerContext* ctx, const v1::NodeStatsRequest* req, v1::StatsResponse* out) override {
    Timer t(metrics_, kNodeStats);
    if (req->node_name().empty()) return t.Done(absl::InvalidArgumentError("node_name: Required value"));
    auto user = Check(ctx, "get", "nodes", "stats", "", req->node_name(), nullptr, nullptr);
    if (!user.ok()) return t.Done(user.status());
    auto stub = KubeletForNode(req->node_name());
    if (!stub.ok()) return t.Done(stub.status());
    grpc::ClientContext kctx;
    auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(30);
    kctx.set_deadline(std::min(deadline, ctx->deadline()));
    grpc::Status s = (*stub)->Stats(&kctx, v1::StatsRequest(), out);
    if (!s.ok())
      return t.Done(absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                                 absl::StrCat("node \"", req->node_name(), "\": kubelet stats: ", s.error_message())));
    if (out->node_name().empty()) out->set_node_name(req->node_name());
    return t.Done(absl::OkStatus());
  }

  grpc::Status CreateServiceAccountToken(grpc::ServerContext* ctx, const v1::ServiceAccountTokenRequest* req,
                                         v1::ServiceAccountTokenResponse* out) override {
    Timer t(metrics_, kSaToken);
    return t.Done(IssueServiceAccountToken(ctx, *req, out));
  }

  absl::Status IssueServiceAccountToken(grpc::ServerContext* ctx, const v1::ServiceAccountTokenRequest& req,
                                        v1::ServiceAccountTokenResponse* out) {
    ASSIGN_OR_RETURN(UserInfo user, authn_->Authenticate(ctx));
    RequestAttributes a{"create", "serviceaccounts", "token", req.namespace_(), req.name(), ""};
    RETURN_IF_ERROR(authz_->Authorize(user, a));
    std::vector<std::string> errs;
    if (req.namespace_().empty()) errs.push_back("metadata.namespace: Required value");
    if (req.name().empty()) errs.push_back("metadata.name: Required value");
    int64_t exp = req.expiration_seconds() == 0 ? 3600 : req.expiration_seconds();
    if (exp < 600)
      errs.push_back(absl::StrCat("spec.expirationSeconds: Invalid value: ", exp,
                                  ": may not specify a duration less than 10 minutes"));
    if (exp > (int64_t{1} << 32))
      errs.push_back(absl::StrCat("spec.expirationSeconds: Invalid value: ", exp,
                                  ": may not specify a duration larger than 2^32 seconds"));
    if (req.bound_pod_name().empty() && !req.bound_pod_uid().empty())
      errs.push_back("spec.boundObjectRef.name: Required value");
    if (!errs.empty()) {
      std::string msg = absl::StrCat("TokenRequest.authentication.k8s.io \"", req.name(), "\" is invalid: ");
      if (errs.size() == 1) absl::StrAppend(&msg, errs[0]);
      else absl::StrAppend(&msg, "[", absl::StrJoin(errs, ", "), "]");
      return absl::InvalidArgumentError(msg);
    }
    ASSIGN_OR_RETURN(Object sa, reg_->Get("serviceaccounts", req.namespace_(), req.name()));
    std::optional<Object> pod;
    if (!req.bound_pod_name().empty()) {
      ASSIGN_OR_RETURN(pod, reg_->Get("pods", req.namespace_(), req.bound_pod_name()));
      if (!req.bound_pod_uid().empty() && req.bound_pod_uid() != Meta(*pod).uid())
        return absl::FailedPreconditionError(absl::StrCat("the UID in the bound object reference (", req.bound_pod_uid(),
                                                          ") does not match the UID in record. The object might have "
                                                          "been deleted and then recreated"));
    }
    if (!NodeNameOf(user).empty()) RETURN_IF_ERROR(authz_->AdmitNode(user, a, nullptr, pod ? &*pod : nullptr));
    ServiceAccountClaims c;
    c.ns = req.namespace_();
    c.name = req.name();
    c.sa_uid = Meta(sa).uid();
    if (pod) {
      c.pod_name = Meta(*pod).name();
      c.pod_uid = Meta(*pod).uid();
    }
    for (const auto& aud : req.audiences()) c.audiences.push_back(aud);
    if (c.audiences.empty()) c.audiences.push_back(kServiceAccountIssuer);
    absl::Time now = absl::Now();
    c.issued_at = absl::ToUnixSeconds(now);
    c.expires = c.issued_at + exp;
    out->set_token(signer_->Sign(c));
    out->set_expiration_unix(c.expires);
    out->set_expiration_timestamp(
        absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(c.expires), absl::UTCTimeZone()));
    return absl::OkStatus();
  }

  grpc::Status Version(grpc::ServerContext* ctx, const v1::VersionRequest*, v1::VersionInfo* out) override {
    Timer t(metrics_, kVersion);
    auto user = authn_->Authenticate(ctx);
    if (!user.ok()) return t.Done(user.status());
    out->set_git_version("v0.1.0-skiff");
    out->set_platform("linux/amd64");
    out->set_go_version(absl::StrCat("gcc ", __VERSION__));
    out->set_build_date(__DATE__);
    return t.Done(absl::OkStatus());
  }

  grpc::Status WhoAmI(grpc::ServerContext* ctx, const v1::WhoAmIRequest*, v1::WhoAmIResponse* out) override {
    Timer t(metrics_, kWhoAmI);
    auto user = authn_->Authenticate(ctx);
    if (!user.ok()) return t.Done(user.status());
    out->set_username(user->name);
    for (const auto& g : user->groups) out->add_groups(g);
    return t.Done(absl::OkStatus());
  }

 private:
  struct Timer {
    Timer(Metrics* m, int verb) : m_(m), verb_(verb), start_(absl::Now()) {}
    grpc::Status Done(const absl::Status& s) {
      if (!done_) m_->Observe(verb_, absl::Now() - start_, s.ok());
      done_ = true;
      return ToGrpc(s);
    }
    Metrics* m_;
    int verb_;
    absl::Time start_;
    bool done_ = false;
  };

  static absl::Status FromGrpc(const grpc::Status& s) {
    if (s.ok()) return absl::OkStatus();
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }

  absl::StatusOr<UserInfo> Check(grpc::ServerContext* ctx, const std::string& verb, const std::string& resource,
                                 const std::string& sub, const std::string& ns, const std::string& name,
                                 const Object* obj, const Object*) {
    ASSIGN_OR_RETURN(UserInfo user, authn_->Authenticate(ctx));
    auto info = LookupResource(resource);
    if (!info.ok()) return info.status();
    RequestAttributes a{verb, resource, sub, (*info)->namespaced ? ns : "", name, (*info)->group};
    RETURN_IF_ERROR(authz_->Authorize(user, a));
    if (!NodeNameOf(user).empty()) {
      std::optional<Object> existing;
      if (verb == "update" || verb == "patch" || verb == "delete") {
        auto cur = reg_->Get(resource, a.ns, name);
        if (cur.ok()) existing = std::move(*cur);
      }
      RETURN_IF_ERROR(authz_->AdmitNode(user, a, obj, existing ? &*existing : nullptr));
    }
    return user;
  }

  absl::StatusOr<std::unique_ptr<v1::Kubelet::Stub>> KubeletFor(const std::string& ns, const std::string& pod_name) {
    ASSIGN_OR_RETURN(Object pod, reg_->Get("pods", ns, pod_name));
    const std::string& node_name = pod.pod().spec().node_name();
    if (node_name.empty())
      return absl::FailedPreconditionError(absl::StrCat("pod ", pod_name, " does not have a host assigned"));
    return KubeletForNode(node_name);
  }

  absl::StatusOr<std::unique_ptr<v1::Kubelet::Stub>> KubeletForNode(const std::string& node_name) {
    ASSIGN_OR_RETURN(Object node, reg_->Get("nodes", "", node_name));
    std::string ip;
    for (const auto& a : node.node().status().addresses())
      if (a.type() == "InternalIP") ip = a.address();
    if (ip.empty())
      for (const auto& a : node.node().status().addresses())
        if (a.type() == "Hostname" || a.type() == "ExternalIP") ip = a.address();
    if (ip.empty()) return absl::UnavailableError(absl::StrCat("node \"", node_name, "\" has no address"));
    int port = node.node().status().daemon_endpoints().kubelet_endpoint().port();
    if (port == 0) port = 10250;
    std::string target = ip.find(':') != std::string::npos ? absl::StrCat("[", ip, "]:", port) : absl::StrCat(ip, ":", port);
    std::shared_ptr<grpc::ChannelCredentials> creds;
    if (opts_->kubelet_tls) {
      grpc::SslCredentialsOptions o;
      o.pem_root_certs = pki_->ca_cert;
      o.pem_cert_chain = pki_->admin_cert;
      o.pem_private_key = pki_->admin_key;
      creds = grpc::SslCredentials(o);
    } else {
      creds = grpc::InsecureChannelCredentials();
    }
    return v1::Kubelet::NewStub(grpc::CreateChannel(target, creds));
  }

  // Copies frames both ways between the client and the kubelet until either
  // side ends.
  template <typename In, typename Out>
  grpc::Status Pump(grpc::ServerContext* ctx, grpc::ServerReaderWriter<Out, In>* client, grpc::ClientContext* kctx,
                    grpc::ClientReaderWriter<In, Out>* kubelet, const In& first) {
    if (!kubelet->Write(first)) return kubelet->Finish();
    std::thread upstream([&] {
      In in;
      while (client->Read(&in))
        if (!kubelet->Write(in)) break;
      kubelet->WritesDone();
    });
    Out out;
    while (kubelet->Read(&out))
      if (!client->Write(out)) {
        kctx->TryCancel();
        break;
      }
    grpc::Status s = kubelet->Finish();
    ctx->TryCancel();  // unblocks the upstream Read
    upstream.join();
    return s;
  }

  Registry* reg_;
  Authenticator* authn_;
  Authorizer* authz_;
  Metrics* metrics_;
  const Pki* pki_;
  const ServerOptions* opts_;
  const TokenSigner* signer_;
};

// ---------------------------------------------------------------- health

class HealthServer {
 public:
  HealthServer(std::function<std::string(const std::string&, int*)> handler) : handler_(std::move(handler)) {}
  ~HealthServer() { Stop(); }
  absl::Status Start(const std::string& listen) {
    auto [host, port] = SplitHostPort(listen);
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return LastErrnoError("health socket");
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) return absl::InvalidArgumentError("health address " + listen);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return LastErrnoError("bind " + listen);
    if (::listen(fd_, 64) != 0) return LastErrnoError("listen " + listen);
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Loop(); });
    return absl::OkStatus();
  }
  void Stop() {
    if (fd_ >= 0) {
      stop_ = true;
      ::shutdown(fd_, SHUT_RDWR);
      if (thread_.joinable()) thread_.join();
      ::close(fd_);
      fd_ = -1;
    }
  }
  int port() const { return port_; }

 private:
  void Loop() {
    while (!stop_) {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (stop_) return;
        if (errno == EINTR) continue;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      timeval tv{2, 0};
      setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char buf[2048];
      ssize_t n = ::recv(c, buf, sizeof buf - 1, 0);
      std::string path = "/";
      if (n > 0) {
        buf[n] = 0;
        std::string req(buf);
        auto sp1 = req.find(' ');
        auto sp2 = req.find(' ', sp1 + 1);
        if (sp1 != std::string::npos && sp2 != std::string::npos) path = req.substr(sp1 + 1, sp2 - sp1 - 1);
      }
      int code = 200;
      std::string body = handler_(path, &code);
      std::string resp = absl::StrCat("HTTP/1.1 ", code, code == 200 ? " OK" : (code == 404 ? " Not Found" : " Service Unavailable"),
                                      "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ", body.size(),
                                      "\r\nConnection: close\r\n\r\n", body);
      size_t off = 0;
      while (off < resp.size()) {
        ssize_t w = ::send(c, resp.data() + off, resp.size() - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += static_cast<size_t>(w);
      }
      ::close(c);
    }
  }
  std::function<std::string(const std::string&, int*)> handler_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// ---------------------------------------------------------------- ApiServer

struct ApiServer::Impl {
  ServerOptions opts;
  std::unique_ptr<EtcdClient> etcd;
  std::unique_ptr<Registry> registry;
  std::unique_ptr<Authenticator> authn;
  std::unique_ptr<Authorizer> authz;
  Metrics metrics;
  Pki pki;
  std::optional<TokenSigner> sa_signer;
  CertKey internal;
  std::string internal_token;
  std::unique_ptr<ApiService> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<HealthServer> health;
  int port = 0;
  std::string host;
  std::atomic<bool> ready{false};

  std::string HealthHandler(const std::string& path, int* code) {
    if (path == "/healthz" || path == "/livez") return "ok";
    if (path == "/readyz") {
      if (!ready) {
        *code = 503;
        return "not ready";
      }
      auto rev = etcd->CurrentRevision();
      if (!rev.ok()) {
        *code = 503;
        return absl::StrCat("etcd: ", rev.status().message());
      }
      return "ok";
    }
    if (path == "/metrics") {
      std::string out;
      absl::StrAppend(&out, "# TYPE skiff_apiserver_requests_total counter\n");
      for (int i = 0; i < 16; ++i)
        absl::StrAppend(&out, "skiff_apiserver_requests_total{verb=\"", kVerbNames[i], "\"} ", metrics.requests[i].load(), "\n");
      absl::StrAppend(&out, "# TYPE skiff_apiserver_request_errors_total counter\nskiff_apiserver_request_errors_total ",
                      metrics.errors.load(), "\n");
      absl::StrAppend(&out, "# TYPE skiff_apiserver_request_duration_seconds histogram\n");
      static const char* kLe[] = {"0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "1", "+Inf"};
      int64_t cum = 0;
      for (int i = 0; i < 9; ++i) {
        cum += metrics.buckets[i].load();
        absl::StrAppend(&out, "skiff_apiserver_request_duration_seconds_bucket{le=\"", kLe[i], "\"} ", cum, "\n");
      }
      absl::StrAppend(&out, "skiff_apiserver_request_duration_seconds_sum ", metrics.latency_us_sum.load() / 1e6, "\n");
      absl::StrAppend(&out, "skiff_apiserver_request_duration_seconds_count ", metrics.latency_count.load(), "\n");
      absl::StrAppend(&out, "# TYPE skiff_apiserver_watch_streams gauge\nskiff_apiserver_watch_streams ",
                      metrics.watch_streams.load(), "\n");
      absl::StrAppend(&out, "# TYPE skiff_apiserver_watch_cache_objects gauge\n");
      for (const auto& info : AllResources()) {
        auto* c = registry->cache(info.resource);
        if (!c) continue;
        absl::StrAppend(&out, "skiff_apiserver_watch_cache_objects{resource=\"", info.resource, "\"} ", c->object_count(), "\n");
        absl::StrAppend(&out, "skiff_apiserver_watch_cache_watchers{resource=\"", info.resource, "\"} ", c->watcher_count(), "\n");
        absl::StrAppend(&out, "skiff_apiserver_watch_cache_revision{resource=\"", info.resource, "\"} ", c->revision(), "\n");
      }
      return out;
    }
    *code = 404;
    return "not found";
  }
};

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ApiServer::~ApiServer() { Shutdown(); }

absl::StatusOr<std::unique_ptr<ApiServer>> ApiServer::Start(ServerOptions opts) {
  auto impl = std::make_unique<Impl>();
  impl->opts = std::move(opts);
  ServerOptions& o = impl->opts;
  if (o.data_dir.empty()) return absl::InvalidArgumentError("--data-dir is required");
  RETURN_IF_ERROR(MkdirP(o.data_dir, 0700));
  if (o.etcd_channel) {
    impl->etcd = std::make_unique<EtcdClient>(o.etcd_channel);
  } else {
    if (o.etcd_servers.empty()) return absl::InvalidArgumentError("no storage: give --etcd-servers");
    ASSIGN_OR_RETURN(impl->etcd, EtcdClient::Connect(o.etcd_servers));
  }
  auto [host, port] = SplitHostPort(o.listen);
  impl->host = host;
  std::vector<std::string> sans = o.tls_sans;
  if (!host.empty() && host != "0.0.0.0" && host != "::") sans.push_back(host);
  sans.push_back(Hostname());
  if (!o.advertise_address.empty()) sans.push_back(o.advertise_address);
  ASSIGN_OR_RETURN(impl->pki, EnsurePki(o.data_dir, sans));
  // The process's own credential for in-process components.
  CertSpec internal_spec;
  internal_spec.common_name = "system:skiff-control-plane";
  internal_spec.organizations = {"system:masters"};
  internal_spec.client = true;
  internal_spec.days = 30;
  ASSIGN_OR_RETURN(impl->internal, IssueCertificate(CertKey{impl->pki.ca_cert, impl->pki.ca_key}, internal_spec));

  RegistryOptions ro;
  ro.service_cluster_ip_range = o.service_cluster_ip_range;
  ro.node_port_min = o.node_port_min;
  ro.node_port_max = o.node_port_max;
  ro.cache = o.cache;
  impl->registry = std::make_unique<Registry>(impl->etcd.get(), ro);
  std::vector<StaticToken> tokens;
  if (!o.token_auth_file.empty()) {
    ASSIGN_OR_RETURN(tokens, LoadTokenFile(o.token_auth_file));
  }
  impl->authn = std::make_unique<Authenticator>(impl->registry.get(), tokens, o.insecure);
  impl->authz = std::make_unique<Authorizer>(impl->registry.get());
  ASSIGN_OR_RETURN(TokenSigner signer, TokenSigner::LoadOrCreate(o.data_dir + "/pki/sa.key"));
  impl->sa_signer.emplace(std::move(signer));
  impl->authn->SetServiceAccountSigner(&*impl->sa_signer);

  if (!o.health_listen.empty()) {
    Impl* raw = impl.get();
    impl->health = std::make_unique<HealthServer>([raw](const std::string& p, int* c) { return raw->HealthHandler(p, c); });
    RETURN_IF_ERROR(impl->health->Start(o.health_listen));
  }

  std::string advertise = o.advertise_address;
  if (advertise.empty() && IsIp(host) && host != "0.0.0.0") advertise = host;
  // Port 0: bind first so the `kubernetes` Service can name the real port.
  impl->service = std::make_unique<ApiService>(impl->registry.get(), impl->authn.get(), impl->authz.get(),
                                               &impl->metrics, &impl->pki, &impl->opts, &*impl->sa_signer);
  grpc::ServerBuilder b;
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (o.insecure) {
    creds = grpc::InsecureServerCredentials();
  } else {
    grpc::SslServerCredentialsOptions so(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    so.pem_root_certs = impl->pki.ca_cert;
    // The chain includes the CA, so a joining node can find it and pin it by
    // its public-key hash (--discovery-token-ca-cert-hash).
    so.pem_key_cert_pairs.push_back({impl->pki.serving_key, impl->pki.serving_cert + impl->pki.ca_cert});
    creds = grpc::SslServerCredentials(so);
  }
  b.AddListeningPort(o.listen, creds, &impl->port);
  b.RegisterService(impl->service.get());
  b.SetMaxReceiveMessageSize(64 << 20);
  b.SetMaxSendMessageSize(256 << 20);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  impl->server = b.BuildAndStart();
  if (!impl->server || impl->port == 0) return absl::UnavailableError(absl::StrCat("cannot listen on ", o.listen));

  RETURN_IF_ERROR(impl->registry->Start(advertise, impl->port));
  RETURN_IF_ERROR(impl->authz->EnsureDefaultPolicy());

  client::Credentials admin;
  std::string dial_host = (host.empty() || host == "0.0.0.0" || host == "::") ? "127.0.0.1" : host;
  admin.server = dial_host.find(':') != std::string::npos ? absl::StrCat("[", dial_host, "]:", impl->port)
                                                          : absl::StrCat(dial_host, ":", impl->port);
  admin.ca_cert_pem = impl->pki.ca_cert;
  admin.client_cert_pem = impl->pki.admin_cert;
  admin.client_key_pem = impl->pki.admin_key;
  admin.insecure = o.insecure;
  RETURN_IF_ERROR(client::WriteClientConfig(o.data_dir + "/admin.conf", admin, "skiff", "kubernetes-admin", "default"));
  impl->ready = true;
  sd_notify(0, "READY=1");
  log::Info("serving ", log::Field("listen", admin.server), " ", log::Field("tls", o.insecure ? "off" : "on"), " ",
            log::Field("admin_conf", o.data_dir + "/admin.conf"));
  return std::unique_ptr<ApiServer>(new ApiServer(std::move(impl)));
}

void ApiServer::Shutdown() {
  if (!impl_) return;
  impl_->ready = false;
  if (impl_->server) {
    impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  if (impl_->registry) impl_->registry->Stop();
  if (impl_->health) impl_->health->Stop();
  if (impl_->server) {
    impl_->server->Wait();
    impl_->server.reset();
  }
}

void ApiServer::Wait() {
  if (impl_->server) impl_->server->Wait();
}

int ApiServer::port() const { return impl_->port; }
int ApiServer::health_port() const { return impl_->health ? impl_->health->port() : 0; }
std::string ApiServer::address() const {
  std::string h = (impl_->host.empty() || impl_->host == "0.0.0.0" || impl_->host == "::") ? "127.0.0.1" : impl_->host;
  return h.find(':') != std::string::npos ? absl::StrCat("[", h, "]:", impl_->port) : absl::StrCat(h, ":", impl_->port);
}
Registry* ApiServer::registry() { return impl_->registry.get(); }

client::Credentials ApiServer::InternalCredentials() const {
  client::Credentials c;
  c.server = address();
  c.ca_cert_pem = impl_->pki.ca_cert;
  c.client_cert_pem = impl_->internal.cert_pem;
  c.client_key_pem = impl_->internal.key_pem;
  c.insecure = impl_->opts.insecure;
  return c;
}

client::Credentials ApiServer::AdminCredentials() const {
  client::Credentials c = InternalCredentials();
  c.client_cert_pem = impl_->pki.admin_cert;
  c.client_key_pem = impl_->pki.admin_key;
  return c;
}

}  // namespace skiff::apiserver
