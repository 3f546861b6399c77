#include "api_conn.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::proxy {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kSystemRoots[] = "/etc/ssl/certs/ca-certificates.crt";

std::string TlsError(int ret) {
  char buf[160];
  mbedtls_strerror(ret, buf, sizeof(buf));
  return absl::StrCat(buf, " (-0x", absl::Hex(-ret), ")");
}

// "host:port", "[v6]:port"; a missing port is 443.
absl::Status SplitHostPort(const std::string& server, std::string* host, std::string* port) {
  if (!server.empty() && server[0] == '[') {
    auto close = server.find(']');
    if (close == std::string::npos)
      return absl::InvalidArgumentError(absl::StrCat("bad server address ", server));
    *host = server.substr(1, close - 1);
    *port = close + 1 < server.size() && server[close + 1] == ':' ? server.substr(close + 2) : "443";
    return absl::OkStatus();
  }
  auto colon = server.rfind(':');
  if (colon == std::string::npos) {
    *host = server;
    *port = "443";
  } else {
    *host = server.substr(0, colon);
    *port = server.substr(colon + 1);
  }
  if (host->empty()) return absl::InvalidArgumentError(absl::StrCat("bad server address ", server));
  return absl::OkStatus();
}

int RemainingMs(Clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return ms < 0 ? 0 : static_cast<int>(ms);
}

// Waits for `events` on fd in slices of at most 100 ms, so a stop request is
// seen quickly.
absl::Status WaitFd(int fd, short events, Clock::time_point deadline, const std::atomic<bool>& stop,
                    const char* what) {
  while (true) {
    if (stop.load()) return absl::CancelledError("stopping");
    int left = RemainingMs(deadline);
    if (left == 0) return absl::DeadlineExceededError(absl::StrCat("timed out during ", what));
    pollfd p{fd, events, 0};
    int rc = poll(&p, 1, std::min(left, 100));
    if (rc < 0 && errno != EINTR) return ErrnoError(errno, "poll");
    if (rc > 0) return absl::OkStatus();
  }
}

// The certificate chain was verified by mbedTLS; for an address (which TLS
// SNI cannot carry and mbedTLS 2.28 does not match) the server certificate
// must list it as an iPAddress subjectAltName, as the gRPC client requires.
absl::Status CheckIpSan(const mbedtls_x509_crt* crt, const std::string& host) {
  unsigned char want[16];
  size_t want_len = 0;
  if (inet_pton(AF_INET, host.c_str(), want) == 1)
    want_len = 4;
  else if (inet_pton(AF_INET6, host.c_str(), want) == 1)
    want_len = 16;
  if (want_len == 0) return absl::OkStatus();  // a DNS name: mbedTLS checked it
  if (!crt) return absl::UnavailableError("TLS: the server presented no certificate");
  for (const mbedtls_x509_sequence* s = &crt->subject_alt_names; s && s->buf.p; s = s->next) {
    // GeneralName iPAddress is [7] IMPLICIT OCTET STRING.
    if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && s->buf.len == want_len &&
        memcmp(s->buf.p, want, want_len) == 0)
      return absl::OkStatus();
  }
  return absl::UnavailableError(absl::StrCat("TLS: the server certificate is not valid for ", host));
}

class Connection final : public GrpcConnection {
 public:
  ~Connection() override {
    if (session_) nghttp2_session_del(session_);
    if (tls_) {
      mbedtls_ssl_free(&ssl_);
      mbedtls_ssl_config_free(&conf_);
      mbedtls_x509_crt_free(&ca_);
      mbedtls_x509_crt_free(&cert_);
      mbedtls_pk_free(&key_);
      mbedtls_ctr_drbg_free(&drbg_);
      mbedtls_entropy_free(&entropy_);
    }
  }

  absl::Status Open(const client::Credentials& ep, int timeout_ms, const std::atomic<bool>& stop) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    std::string host, port;
    RETURN_IF_ERROR(SplitHostPort(ep.server, &host, &port));
    authority_ = ep.server;
    token_ = ep.token;
    RETURN_IF_ERROR(Dial(host, port, deadline, stop));
    if (!ep.insecure) RETURN_IF_ERROR(Handshake(ep, host, deadline, stop));
    return StartSession();
  }

  absl::StatusOr<int32_t> StartCall(const std::string& path, std::string request, OnMessage on_message,
                                    OnClose on_close) override {
    auto call = std::make_unique<Call>();
    call->on_message = std::move(on_message);
    call->on_close = std::move(on_close);
    // The gRPC message prefix: not compressed, big-endian length.
    uint32_t n = static_cast<uint32_t>(request.size());
    call->request = std::string(1, '\0');
    for (int shift = 24; shift >= 0; shift -= 8)
      call->request.push_back(static_cast<char>((n >> shift) & 0xff));
    call->request += request;
    std::string bearer = token_.empty() ? "" : "Bearer " + token_;
    auto nv = [](const char* name, const std::string& value) {
      return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name)),
                        reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), strlen(name),
                        value.size(), NGHTTP2_NV_FLAG_NONE};
    };
    static const std::string kPost = "POST", kHttps = "https", kHttp = "http", kGrpc = "application/grpc",
                             kTrailers = "trailers", kAgent = "skiff-proxy", kIdentity = "identity";
    std::vector<nghttp2_nv> headers = {nv(":method", kPost),      nv(":scheme", tls_ ? kHttps : kHttp),
                                       nv(":path", path),         nv(":authority", authority_),
                                       nv("content-type", kGrpc), nv("te", kTrailers),
                                       nv("user-agent", kAgent),  nv("grpc-accept-encoding", kIdentity)};
    if (!bearer.empty()) headers.push_back(nv("authorization", bearer));
    nghttp2_data_provider body;
    body.source.ptr = call.get();
    body.read_callback = &Connection::ReadBody;
    int32_t id = nghttp2_submit_request(session_, nullptr, headers.data(), headers.size(), &body, call.get());
    if (id < 0) return absl::InternalError(absl::StrCat("HTTP/2 request: ", nghttp2_strerror(id)));
    calls_[id] = std::move(call);
    return id;
  }

  void CancelCall(int32_t id) override {
    auto it = calls_.find(id);
    if (it == calls_.end()) return;
    it->second->cancelled = true;
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  }

  size_t open_calls() const override { return calls_.size(); }
  std::string security() const override {
    if (!tls_) return "plaintext";
    return absl::StrCat(mbedtls_ssl_get_version(&ssl_), " ", mbedtls_ssl_get_ciphersuite(&ssl_));
  }

  absl::Status Poll(int timeout_ms) override {
    absl::Status st = PollOnce(timeout_ms);
    if (!st.ok()) FailAll(st);
    return st;
  }

 private:
  struct Call {
    OnMessage on_message;
    OnClose on_close;
    std::string request;
    size_t sent = 0;
    std::string in;  // received bytes not yet a whole message
    int http_status = 0;
    bool has_grpc_status = false;
    int grpc_status = 0;
    std::string grpc_message;
    bool cancelled = false;
  };

  absl::Status Dial(const std::string& host, const std::string& port, Clock::time_point deadline,
                    const std::atomic<bool>& stop) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) return absl::UnavailableError(absl::StrCat("resolve ", host, ": ", gai_strerror(rc)));
    absl::Status last = absl::UnavailableError(absl::StrCat("no address for ", host));
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      UniqueFd fd(socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      if (!fd.valid()) {
        last = ErrnoError(errno, "socket");
        continue;
      }
      if (connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        last = absl::UnavailableError(absl::StrCat("connect ", host, ":", port, ": ", strerror(errno)));
        continue;
      }
      absl::Status w = WaitFd(fd.get(), POLLOUT, deadline, stop, "connect");
      if (!w.ok()) {
        last = w;
        if (absl::IsCancelled(w)) break;
        continue;
      }
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        last = absl::UnavailableError(absl::StrCat("connect ", host, ":", port, ": ", strerror(err)));
        continue;
      }
      int one = 1;
      setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      fd_ = std::move(fd);
      freeaddrinfo(res);
      return absl::OkStatus();
    }
    freeaddrinfo(res);
    return last;
  }

  static int TlsSend(void* ctx, const unsigned char* buf, size_t len) {
    ssize_t n = send(static_cast<Connection*>(ctx)->fd_.get(), buf, len, MSG_NOSIGNAL);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EAGAIN || errno == EINTR) return MBEDTLS_ERR_SSL_WANT_WRITE;
    return MBEDTLS_ERR_NET_SEND_FAILED;
  }
  static int TlsRecv(void* ctx, unsigned char* buf, size_t len) {
    ssize_t n = recv(static_cast<Connection*>(ctx)->fd_.get(), buf, len, 0);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EAGAIN || errno == EINTR) return MBEDTLS_ERR_SSL_WANT_READ;
    return MBEDTLS_ERR_NET_RECV_FAILED;
  }

  absl::Status Handshake(const client::Credentials& ep, const std::string& host, Clock::time_point deadline,
                         const std::atomic<bool>& stop) {
    tls_ = true;
    mbedtls_ssl_init(&ssl_);
    mbedtls_ssl_config_init(&conf_);
    mbedtls_x509_crt_init(&ca_);
    mbedtls_x509_crt_init(&cert_);
    mbedtls_pk_init(&key_);
    mbedtls_entropy_init(&entropy_);
    mbedtls_ctr_drbg_init(&drbg_);
    int ret = mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_,
                                    reinterpret_cast<const unsigned char*>("skiff-proxy"), 11);
    if (ret != 0) return absl::InternalError(absl::StrCat("TLS: seed the random generator: ", TlsError(ret)));
    ret = mbedtls_ssl_config_defaults(&conf_, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                      MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) return absl::InternalError(absl::StrCat("TLS: config: ", TlsError(ret)));
    mbedtls_ssl_conf_min_version(&conf_, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);  // TLS 1.2
    mbedtls_ssl_conf_rng(&conf_, mbedtls_ctr_drbg_random, &drbg_);
    if (ep.ca_cert_pem.empty()) {
      // No certificate-authority in the kubeconfig: the system's roots, as
      // the gRPC client does.
      ret = mbedtls_x509_crt_parse_file(&ca_, kSystemRoots);
      if (ret < 0 || ca_.version == 0)
        return absl::InvalidArgumentError(
            absl::StrCat("TLS: no certificate-authority in the kubeconfig and none usable in ", kSystemRoots,
                         ": ", TlsError(ret)));
    } else {
      ret = mbedtls_x509_crt_parse(&ca_, reinterpret_cast<const unsigned char*>(ep.ca_cert_pem.c_str()),
                                   ep.ca_cert_pem.size() + 1);
      if (ret != 0)
        return absl::InvalidArgumentError(absl::StrCat("TLS: certificate-authority: ", TlsError(ret)));
    }
    mbedtls_ssl_conf_ca_chain(&conf_, &ca_, nullptr);
    mbedtls_ssl_conf_authmode(&conf_, MBEDTLS_SSL_VERIFY_REQUIRED);
    if (!ep.client_cert_pem.empty()) {
      if (ep.client_key_pem.empty())
        return absl::InvalidArgumentError("client config: a client certificate needs its key");
      ret = mbedtls_x509_crt_parse(&cert_, reinterpret_cast<const unsigned char*>(ep.client_cert_pem.c_str()),
                                   ep.client_cert_pem.size() + 1);
      if (ret != 0)
        return absl::InvalidArgumentError(absl::StrCat("TLS: client-certificate: ", TlsError(ret)));
      ret = mbedtls_pk_parse_key(&key_, reinterpret_cast<const unsigned char*>(ep.client_key_pem.c_str()),
                                 ep.client_key_pem.size() + 1, nullptr, 0);
      if (ret != 0) return absl::InvalidArgumentError(absl::StrCat("TLS: client-key: ", TlsError(ret)));
      ret = mbedtls_ssl_conf_own_cert(&conf_, &cert_, &key_);
      if (ret != 0)
        return absl::InvalidArgumentError(absl::StrCat("TLS: client certificate and key: ", TlsError(ret)));
    }
    static const char* kAlpn[] = {"h2", nullptr};
    mbedtls_ssl_conf_alpn_protocols(&conf_, kAlpn);
    ret = mbedtls_ssl_setup(&ssl_, &conf_);
    if (ret != 0) return absl::InternalError(absl::StrCat("TLS: setup: ", TlsError(ret)));
    in6_addr probe;
    bool is_ip =
        inet_pton(AF_INET, host.c_str(), &probe) == 1 || inet_pton(AF_INET6, host.c_str(), &probe) == 1;
    // A DNS name goes out as SNI and mbedTLS matches it against the
    // certificate; an address is matched below.
    if (!is_ip && (ret = mbedtls_ssl_set_hostname(&ssl_, host.c_str())) != 0)
      return absl::InternalError(absl::StrCat("TLS: server name: ", TlsError(ret)));
    mbedtls_ssl_set_bio(&ssl_, this, &Connection::TlsSend, &Connection::TlsRecv, nullptr);
    while ((ret = mbedtls_ssl_handshake(&ssl_)) != 0) {
      if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
        RETURN_IF_ERROR(WaitFd(fd_.get(), ret == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT, deadline, stop,
                               "the TLS handshake"));
        continue;
      }
      std::string why = TlsError(ret);
      if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        char info[512];
        mbedtls_x509_crt_verify_info(info, sizeof(info), "", mbedtls_ssl_get_verify_result(&ssl_));
        why =
            absl::StrCat("the server certificate is not trusted: ", absl::StripTrailingAsciiWhitespace(info));
      }
      return absl::UnavailableError(absl::StrCat("TLS handshake with ", authority_, ": ", why));
    }
    if (is_ip) RETURN_IF_ERROR(CheckIpSan(mbedtls_ssl_get_peer_cert(&ssl_), host));
    const char* alpn = mbedtls_ssl_get_alpn_protocol(&ssl_);
    if (!alpn || strcmp(alpn, "h2") != 0)
      return absl::UnavailableError(
          absl::StrCat("TLS: the server at ", authority_, " did not agree to HTTP/2 (ALPN)"));
    return absl::OkStatus();
  }

  // ---------------------------------------------------------------- I/O

  // > 0 bytes, 0 = would block, < 0 = the connection is gone.
  ssize_t Write(const char* p, size_t n) {
    if (tls_) {
      int r = mbedtls_ssl_write(&ssl_, reinterpret_cast<const unsigned char*>(p), n);
      if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) return 0;
      if (r < 0) io_error_ = absl::StrCat("TLS write: ", TlsError(r));
      return r;
    }
    ssize_t r = send(fd_.get(), p, n, MSG_NOSIGNAL);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (r < 0) io_error_ = absl::StrCat("send: ", strerror(errno));
    return r;
  }
  ssize_t Read(char* p, size_t n) {
    if (tls_) {
      int r = mbedtls_ssl_read(&ssl_, reinterpret_cast<unsigned char*>(p), n);
      if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) return 0;
      if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
        io_error_ = "the server closed the connection";
        return -1;
      }
      if (r < 0) io_error_ = absl::StrCat("TLS read: ", TlsError(r));
      return r;
    }
    ssize_t r = recv(fd_.get(), p, n, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (r == 0) {
      io_error_ = "the server closed the connection";
      return -1;
    }
    if (r < 0) io_error_ = absl::StrCat("recv: ", strerror(errno));
    return r;
  }

  absl::Status Flush() {
    while (true) {
      if (out_off_ == out_.size()) {
        out_.clear();
        out_off_ = 0;
        const uint8_t* data;
        ssize_t n = nghttp2_session_mem_send(session_, &data);
        if (n < 0)
          return absl::UnavailableError(absl::StrCat("HTTP/2: ", nghttp2_strerror(static_cast<int>(n))));
        if (n == 0) return absl::OkStatus();
        out_.assign(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
      }
      ssize_t w = Write(out_.data() + out_off_, out_.size() - out_off_);
      if (w < 0) return absl::UnavailableError(io_error_);
      if (w == 0) return absl::OkStatus();  // the rest when the socket is writable
      out_off_ += static_cast<size_t>(w);
      last_activity_ = Clock::now();
    }
  }

  absl::Status ReadAvailable() {
    char buf[16384];
    while (true) {
      ssize_t n = Read(buf, sizeof(buf));
      if (n < 0) return absl::UnavailableError(io_error_);
      if (n == 0) return absl::OkStatus();
      last_activity_ = Clock::now();
      ssize_t used =
          nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(buf), static_cast<size_t>(n));
      if (used < 0)
        return absl::UnavailableError(absl::StrCat("HTTP/2: ", nghttp2_strerror(static_cast<int>(used))));
    }
  }

  absl::Status PollOnce(int timeout_ms) {
    if (!session_) return absl::UnavailableError("connection closed");
    RETURN_IF_ERROR(Keepalive());
    RETURN_IF_ERROR(Flush());
    if (tls_ && mbedtls_ssl_get_bytes_avail(&ssl_) > 0) timeout_ms = 0;
    if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_) &&
        out_off_ == out_.size())
      return absl::UnavailableError("the server ended the HTTP/2 session");
    pollfd p{fd_.get(), static_cast<short>(POLLIN | (out_off_ < out_.size() ? POLLOUT : 0)), 0};
    int rc = poll(&p, 1, timeout_ms);
    if (rc < 0 && errno != EINTR) return ErrnoError(errno, "poll");
    if (rc > 0 || timeout_ms == 0) {
      RETURN_IF_ERROR(ReadAvailable());
      RETURN_IF_ERROR(Flush());
    }
    return absl::OkStatus();
  }

  // A PING after 30 s of silence; no answer within 10 s means the server or
  // the path to it is gone (what the gRPC client's keepalive did).
  absl::Status Keepalive() {
    auto now = Clock::now();
    if (ping_sent_ != Clock::time_point{}) {
      if (now - ping_sent_ > std::chrono::seconds(10))
        return absl::UnavailableError("the API server did not answer a keepalive ping");
      return absl::OkStatus();
    }
    if (now - last_activity_ > std::chrono::seconds(30)) {
      nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr);
      ping_sent_ = now;
    }
    return absl::OkStatus();
  }

  void FailAll(const absl::Status& st) {
    auto calls = std::move(calls_);
    calls_.clear();
    for (auto& [id, call] : calls)
      if (call->on_close) call->on_close(call->cancelled ? absl::CancelledError("call cancelled") : st);
    if (session_) {
      nghttp2_session_del(session_);
      session_ = nullptr;
    }
  }

  // ---------------------------------------------------------------- HTTP/2

  absl::Status StartSession() {
    nghttp2_session_callbacks* cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) return absl::ResourceExhaustedError("nghttp2 callbacks");
    nghttp2_session_callbacks_set_on_header_callback(cb, &Connection::OnHeader);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, &Connection::OnData);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, &Connection::OnStreamClose);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, &Connection::OnFrame);
    int rc = nghttp2_session_client_new(&session_, cb, this);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0) return absl::ResourceExhaustedError(absl::StrCat("nghttp2 session: ", nghttp2_strerror(rc)));
    // A 1 MiB window per stream and 4 MiB for the connection, so the
    // initial burst of 10k objects is not paced by WINDOW_UPDATE round trips.
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                         {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 2);
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, 4 << 20);
    last_activity_ = Clock::now();
    return Flush();
  }

  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                          nghttp2_data_source* source, void*) {
    auto* call = static_cast<Call*>(source->ptr);
    size_t n = std::min(length, call->request.size() - call->sent);
    memcpy(buf, call->request.data() + call->sent, n);
    call->sent += n;
    if (call->sent == call->request.size()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      std::string().swap(call->request);
      call->sent = 0;
    }
    return static_cast<ssize_t>(n);
  }

  Call* Find(int32_t id) {
    auto it = calls_.find(id);
    return it == calls_.end() ? nullptr : it->second.get();
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t, void* user) {
    auto* self = static_cast<Connection*>(user);
    Call* call = self->Find(frame->hd.stream_id);
    if (!call) return 0;
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string v(reinterpret_cast<const char*>(value), valuelen);
    if (n == ":status") {
      (void)absl::SimpleAtoi(v, &call->http_status);
    } else if (n == "grpc-status") {
      call->has_grpc_status = absl::SimpleAtoi(v, &call->grpc_status);
    } else if (n == "grpc-message") {
      call->grpc_message = PercentDecode(v);
    }
    return 0;
  }

  static int OnData(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data, size_t len,
                    void* user) {
    auto* self = static_cast<Connection*>(user);
    Call* call = self->Find(stream_id);
    if (!call || call->cancelled) return 0;
    call->in.append(reinterpret_cast<const char*>(data), len);
    size_t off = 0;
    while (call->in.size() - off >= 5) {
      const auto* h = reinterpret_cast<const uint8_t*>(call->in.data() + off);
      uint32_t n = (uint32_t{h[1]} << 24) | (uint32_t{h[2]} << 16) | (uint32_t{h[3]} << 8) | h[4];
      if (call->in.size() - off - 5 < n) break;
      if (h[0] != 0) {
        // We never offer compression, so a compressed message is a protocol error.
        call->has_grpc_status = true;
        call->grpc_status = static_cast<int>(absl::StatusCode::kInternal);
        call->grpc_message = "the server sent a compressed message";
        self->CancelCall(stream_id);
        call->cancelled = false;  // report the error, not a cancel
        return 0;
      }
      if (call->on_message) call->on_message(std::string_view(call->in.data() + off + 5, n));
      // on_message may have cancelled or ended this call.
      call = self->Find(stream_id);
      if (!call || call->cancelled) return 0;
      off += 5 + n;
    }
    call->in.erase(0, off);
    if (call->in.capacity() > (64u << 10) && call->in.size() < 1024) std::string(call->in).swap(call->in);
    return 0;
  }

  static int OnFrame(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto* self = static_cast<Connection*>(user);
    if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK)) self->ping_sent_ = {};
    return 0;
  }

  static int OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user) {
    auto* self = static_cast<Connection*>(user);
    auto it = self->calls_.find(stream_id);
    if (it == self->calls_.end()) return 0;
    std::unique_ptr<Call> call = std::move(it->second);
    self->calls_.erase(it);
    absl::Status st;
    if (call->cancelled)
      st = absl::CancelledError("call cancelled");
    else if (call->has_grpc_status)
      st = absl::Status(static_cast<absl::StatusCode>(call->grpc_status), call->grpc_message);
    else if (error_code != NGHTTP2_NO_ERROR)
      st = absl::UnavailableError(absl::StrCat("HTTP/2 stream reset: ", nghttp2_http2_strerror(error_code)));
    else if (call->http_status != 200)
      st = absl::UnavailableError(absl::StrCat("HTTP status ", call->http_status, " from the API server"));
    else
      st = absl::UnknownError("the API server ended the call without a grpc-status");
    if (call->on_close) call->on_close(st);
    return 0;
  }

  static std::string PercentDecode(const std::string& v) {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
      int hi, lo;
      if (v[i] == '%' && i + 2 < v.size() && (hi = Hex(v[i + 1])) >= 0 && (lo = Hex(v[i + 2])) >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
      } else {
        out.push_back(v[i]);
      }
    }
    return out;
  }
  static int Hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  UniqueFd fd_;
  bool tls_ = false;
  mbedtls_ssl_context ssl_;
  mbedtls_ssl_config conf_;
  mbedtls_x509_crt ca_, cert_;
  mbedtls_pk_context key_;
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context drbg_;
  nghttp2_session* session_ = nullptr;
  std::string authority_, token_;
  std::map<int32_t, std::unique_ptr<Call>> calls_;
  std::string out_;
  size_t out_off_ = 0;
  std::string io_error_;
  Clock::time_point last_activity_{}, ping_sent_{};
};

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcConnection>> GrpcConnection::Connect(const client::Credentials& ep,
                                                                        int timeout_ms,
                                                                        const std::atomic<bool>& stop) {
  auto c = std::make_unique<Connection>();
  RETURN_IF_ERROR(c->Open(ep, timeout_ms, stop));
  return std::unique_ptr<GrpcConnection>(std::move(c));
}

}  // namespace skiff::proxy
