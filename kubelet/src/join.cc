#include "skiff/kubelet/join.h"

#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "skiff/apiserver/pki.h"
#include "skiff/client/config.h"
#include "skiff/client/dial.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::kubelet {
namespace {

std::string SslErrors() {
  std::string out;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

absl::StatusOr<UniqueFd> ConnectTcp(const std::string& server) {
  auto colon = server.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError("--server: expected HOST:PORT, got " + server);
  std::string host = server.substr(0, colon), port = server.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) return absl::UnavailableError("resolve " + server + ": " + gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owner(res, freeaddrinfo);
  for (addrinfo* a = res; a; a = a->ai_next) {
    UniqueFd fd(socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd) continue;
    timeval tv{10, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd.get(), a->ai_addr, a->ai_addrlen) == 0) return fd;
  }
  return LastErrnoError("connect to the API server at " + server);
}

std::string CertToPem(X509* cert) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_X509(bio.get(), cert);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

}  // namespace

absl::StatusOr<std::string> DiscoverClusterCa(const std::string& server, const std::string& ca_hash) {
  if (ca_hash.rfind("sha256:", 0) != 0 || ca_hash.size() != 7 + 64) {
    return absl::InvalidArgumentError("--discovery-token-ca-cert-hash: expected sha256:<64 hex digits>, got \"" +
                                      ca_hash + "\"");
  }
  ASSIGN_OR_RETURN(UniqueFd fd, ConnectTcp(server));
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!ctx) return absl::InternalError("TLS context: " + SslErrors());
  // Nothing is trusted yet: the chain is only read here, and the CA found in
  // it is accepted by its pinned public-key hash, not by verification.
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_alpn_protos(ctx.get(), reinterpret_cast<const unsigned char*>("\x02h2"), 3);
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  SSL_set_fd(ssl.get(), fd.get());
  if (SSL_connect(ssl.get()) != 1) return absl::UnavailableError("TLS handshake with " + server + ": " + SslErrors());
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl.get());
  int n = chain ? sk_X509_num(chain) : 0;
  std::string found;
  for (int i = 0; i < n; ++i) {
    std::string pem = CertToPem(sk_X509_value(chain, i));
    auto h = apiserver::PublicKeyHash(pem);
    if (h.ok() && *h == ca_hash) {
      found = pem;
      break;
    }
  }
  SSL_shutdown(ssl.get());
  if (found.empty()) {
    return absl::PermissionDeniedError("no certificate in the TLS chain of " + server +
                                       " matches --discovery-token-ca-cert-hash " + ca_hash +
                                       " (wrong cluster, or a man in the middle)");
  }
  return found;
}

absl::Status SetConfigValue(const std::string& path, const std::string& key, const std::string& value) {
  std::vector<std::string> lines;
  {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  bool replaced = false;
  for (auto& line : lines) {
    if (line.rfind(key + ":", 0) == 0) {
      line = key + ": " + value;
      replaced = true;
    }
  }
  if (!replaced) lines.push_back(key + ": " + value);
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return LastErrnoError("write " + tmp);
    for (const auto& l : lines) out << l << "\n";
    if (!out.flush()) return LastErrnoError("write " + tmp);
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) return LastErrnoError("rename " + tmp + " to " + path);
  return absl::OkStatus();
}

absl::Status Join(const JoinOptions& o) {
  if (o.server.empty()) return absl::InvalidArgumentError("--join needs --server HOST:PORT");
  if (o.node_name.empty()) return absl::InvalidArgumentError("--join needs a node name (--node-name)");
  if (o.token.find('.') == std::string::npos) {
    return absl::InvalidArgumentError("--join: expected a bootstrap token <id>.<secret>");
  }
  ASSIGN_OR_RETURN(std::string ca, DiscoverClusterCa(o.server, o.ca_hash));
  log::Info("join: cluster CA verified by its public-key hash ", log::Field("server", o.server));

  ASSIGN_OR_RETURN(apiserver::CertKey csr, apiserver::CreateCsr("system:node:" + o.node_name, {"system:nodes"}));
  client::Credentials creds;
  creds.server = o.server;
  creds.ca_cert_pem = ca;
  auto signed_cert = client::RequestNodeCertificate(creds, o.token, o.node_name, csr.cert_pem);
  if (!signed_cert.ok()) return Annotate(signed_cert.status(), "join: request a node certificate");

  creds.client_cert_pem = signed_cert->certificate_pem();
  creds.client_key_pem = csr.key_pem;
  RETURN_IF_ERROR(client::WriteClientConfig(o.kubeconfig_path, creds, "skiff", "system:node:" + o.node_name));
  log::Info("join: node credentials written ", log::Field("kubeconfig", o.kubeconfig_path));

  if (!o.write_config) return absl::OkStatus();
  for (const std::string& cfg : {o.kubelet_config, o.proxy_config}) {
    RETURN_IF_ERROR(SetConfigValue(cfg, "server", o.server));
    RETURN_IF_ERROR(SetConfigValue(cfg, "kubeconfig", o.kubeconfig_path));
    RETURN_IF_ERROR(SetConfigValue(cfg, "node-name", o.node_name));
  }
  log::Info("join: configs updated ", log::Field("kubelet", o.kubelet_config), " ",
            log::Field("proxy", o.proxy_config));
  if (!o.start_units) return absl::OkStatus();
  pid_t pid = fork();
  if (pid < 0) return LastErrnoError("fork systemctl");
  if (pid == 0) {
    execlp("systemctl", "systemctl", "enable", "--now", "skiff-kubelet.service", "skiff-proxy.service",
           static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return LastErrnoError("wait for systemctl");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError("systemctl enable --now skiff-kubelet skiff-proxy failed");
  }
  // systemctl start returned only after both were READY (Type=notify).
  log::Info("join: skiff-kubelet and skiff-proxy enabled and started");
  return absl::OkStatus();
}

}  // namespace skiff::kubelet
