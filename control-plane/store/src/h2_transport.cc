// gRPC over HTTP/2 on nghttp2: see h2_transport.h for the threading model.
#include "h2_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <charconv>
#include <condition_variable>
#include <array>
#include <cstring>
#include <strings.h>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "skiff/common/json.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::store::h2 {

std::string PercentEncode(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string o;
  o.reserve(s.size());
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e || c == '%') {
      o += '%';
      o += kHex[c >> 4];
      o += kHex[c & 15];
    } else {
      o += static_cast<char>(c);
    }
  }
  return o;
}

namespace {

constexpr size_t kReadChunk = 256 * 1024;
// Stop pulling frames out of nghttp2 while this much is waiting for the socket.
constexpr size_t kMaxPendingWrite = 4 << 20;
constexpr int32_t kStreamWindow = 4 << 20;
constexpr int32_t kConnWindow = 32 << 20;

nghttp2_nv Nv(const char* name, const std::string& value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name)),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), std::strlen(name),
                    value.size(), NGHTTP2_NV_FLAG_NO_COPY_NAME};
}

struct Pollable {
  enum Kind { kListener, kConn, kWake } kind;
};

struct Listener : Pollable {
  UniqueFd fd;
  SSL_CTX* tls = nullptr;
};

class LoopImpl;
struct Conn;

struct StreamImpl final : Call {
  Conn* conn = nullptr;
  int32_t id = 0;
  std::string path;
  std::string encoding;  // grpc-encoding of the request messages
  std::string method, content_type, token;
  // A plain HTTP/2 answer's :status, content-type and content-length, kept
  // alive until nghttp2 copied them.
  std::array<std::string, 3> plain_headers;
  std::unique_ptr<Handler> handler;
  std::string in;   // bytes of a partial request message
  std::string out;  // framed response messages not yet taken by nghttp2
  size_t out_off = 0;
  bool headers_sent = false, finished = false, deferred = false, discard = false;
  absl::Status status;
  std::string grpc_status, grpc_message;  // kept alive until nghttp2 copied them
  // A JSON gateway call on an HTTP/1.x connection (TransportOptions::json_route):
  // `in` holds request JSON not yet parsed, `out` a unary call's response JSON.
  const google::protobuf::MethodDescriptor* json = nullptr;
  bool json_got = false;  // a request message was handed over
  bool h1 = false;        // the gateway call is an HTTP/1.x connection's (else an HTTP/2 stream)

  CallRef Ref() const override;
  void Send(const google::protobuf::MessageLite& msg) override;
  void Finish(const absl::Status& st) override;
  size_t QueuedBytes() const override;
  std::string_view Token() const override { return token; }
  std::string_view PeerCommonName() const override;
  bool Finished() const override { return finished; }
  void OnDrained(std::function<void()> fn) override {
    if (QueuedBytes() == 0) return fn();
    drained.push_back(std::move(fn));
  }
  void Resume();
  void RunDrained() {
    auto fns = std::move(drained);
    drained.clear();
    for (auto& fn : fns) fn();
  }
  void SendJson(const google::protobuf::MessageLite& msg);
  void FinishJson(const absl::Status& st);
  void SubmitJsonHead(int status, bool ok);
  std::vector<std::function<void()>> drained;
};

struct Conn : Pollable {
  LoopImpl* loop = nullptr;
  uint64_t id = 0;
  UniqueFd fd;
  SSL* ssl = nullptr;
  bool handshake_done = true;
  std::string peer_cn;  // a verified client certificate's common name
  nghttp2_session* session = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<StreamImpl>> streams;
  std::string wbuf;
  size_t woff = 0;
  bool dirty = false, dead = false, want_out = false;
  int32_t last_stream = 0;
  // Decided by the first bytes: the HTTP/2 client preface, or else (with
  // TransportOptions::plain_http) one HTTP/1.x request, answered and closed.
  enum class Proto { kUnknown, kH2, kHttp1 } proto = Proto::kUnknown;
  std::string http1_in;       // the request head so far
  bool http1_answered = false;  // the whole response is queued: close once written
  bool http10 = false;          // the request said HTTP/1.0: no chunked response
  // The body of a JSON gateway request (stream kGatewayStream): by
  // Content-Length, or chunked.
  struct Body {
    bool active = false, chunked = false;
    uint64_t left = 0;  // Content-Length bytes, or the current chunk's, still to come
    enum class Chunk { kSize, kData, kDataEnd, kTrailer } chunk = Chunk::kSize;
    std::string line;   // a chunk-size or trailer line so far
  } body;

  ~Conn() {
    if (session) nghttp2_session_del(session);
    streams.clear();
    if (ssl) SSL_free(ssl);
  }
};

struct Posted {
  uint64_t conn_id;
  int32_t stream_id;
  std::function<void(Call*)> fn;
};

// The subject common name of the client certificate the handshake verified
// ("" for none).
std::string VerifiedPeerCommonName(SSL* ssl) {
  if (SSL_get_verify_result(ssl) != X509_V_OK) return "";
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return "";
  char cn[256] = {0};
  const int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
  X509_free(cert);
  return n > 0 ? std::string(cn, static_cast<size_t>(n)) : std::string();
}

// The JSON gateway on an HTTP/1.x connection (TransportOptions::json_route),
// defined below: its one call is stream kGatewayStream of the connection.
constexpr int32_t kGatewayStream = 1;
// Takes the request if its path is a gateway method's (false: not one).
bool StartGateway(Conn* c, std::string_view head);
// More bytes of the request body.
void GatewayBody(Conn* c, std::string_view data);
// Hands the JSON objects received so far to the call (at the end, the half-close).
void PumpJson(StreamImpl* st, bool ended);
// An HTTP/2 request for a gateway path (false: the path is not one).
bool StartGatewayStream(StreamImpl* st);

}  // namespace

class Loop {
 public:
  virtual ~Loop() = default;
};

namespace {

class LoopImpl final : public Loop, public std::enable_shared_from_this<LoopImpl> {
 public:
  LoopImpl(const TransportOptions* o, std::vector<Listener*> listeners)
      : o_(o), listeners_(std::move(listeners)) {}
  ~LoopImpl() override { Join(); }

  void Join() {
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
  }

  absl::Status Init() {
    epfd_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (epfd_.get() < 0) return LastErrnoError("epoll_create1");
    wake_ = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (wake_.get() < 0) return LastErrnoError("eventfd");
    wake_p_.kind = Pollable::kWake;
    RETURN_IF_ERROR(Add(wake_.get(), &wake_p_, EPOLLIN));
    for (Listener* l : listeners_) RETURN_IF_ERROR(Add(l->fd.get(), l, EPOLLIN | EPOLLEXCLUSIVE));
    thread_ = std::thread([this] { Run(); });
    return absl::OkStatus();
  }

  // False (and p untouched) once the loop has stopped.
  bool Enqueue(Posted& p) {
    bool wake;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (closed_) return false;
      wake = posted_.empty();
      posted_.push_back(std::move(p));
    }
    if (wake) {
      uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof(one));
    }
    return true;
  }

  // Post from this loop's own thread at the end of its turn: run it now.
  bool RunHere(Posted& p) {
    if (tl_loop_ != this || !in_turn_end_) return false;
    RunOne(p);
    return true;
  }

  void Stop() {
    stopping_ = true;
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof(one));
  }

  void MarkDirty(Conn* c) {
    if (!c->dirty) {
      c->dirty = true;
      dirty_.push_back(c);
    }
  }

  const TransportOptions& options() const { return *o_; }

 private:
  absl::Status Add(int fd, Pollable* p, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = p;
    if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return LastErrnoError("epoll_ctl add");
    return absl::OkStatus();
  }

  void Run() {
    tl_loop_ = this;
    if (o_->on_loop_start) o_->on_loop_start();
    epoll_event evs[128];
    while (true) {
      int n = ::epoll_wait(epfd_.get(), evs, 128, -1);
      if (n < 0 && errno != EINTR) {
        log::Error("skiff-store h2: epoll_wait: ", LastErrnoError("epoll_wait"));
        return;
      }
      for (int i = 0; i < n; ++i) {
        auto* p = static_cast<Pollable*>(evs[i].data.ptr);
        if (p->kind == Pollable::kListener) {
          Accept(static_cast<Listener*>(p));
        } else if (p->kind == Pollable::kWake) {
          uint64_t v;
          [[maybe_unused]] ssize_t r = ::read(wake_.get(), &v, sizeof(v));
          RunPosted();
        } else {
          auto* c = static_cast<Conn*>(p);
          if (c->dead) continue;
          if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) OnReadable(c);
          if (!c->dead && (evs[i].events & EPOLLOUT)) MarkDirty(c);
        }
      }
      if (o_->on_turn_end) {
        in_turn_end_ = true;
        o_->on_turn_end();
        in_turn_end_ = false;
      }
      FlushDirty();
      if (stopping_) {
        GoAwayAll();
        return;
      }
    }
  }

  void Accept(Listener* l) {
    int fd = ::accept4(l->fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN: another loop took it
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // fails harmlessly on unix sockets
    auto c = std::make_unique<Conn>();
    c->kind = Pollable::kConn;
    c->loop = this;
    c->id = next_conn_id_.fetch_add(1);
    c->fd = UniqueFd(fd);
    if (l->tls) {
      c->ssl = SSL_new(l->tls);
      if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) return;
      SSL_set_accept_state(c->ssl);
      c->handshake_done = false;
    }
    if (!NewSession(c.get()).ok()) return;
    if (!Add(fd, c.get(), EPOLLIN | EPOLLRDHUP).ok()) return;
    Conn* raw = c.get();
    conns_.emplace(raw->id, std::move(c));
    MarkDirty(raw);
  }

  absl::Status NewSession(Conn* c);

  void OnReadable(Conn* c) {
    static thread_local std::unique_ptr<uint8_t[]> buf(new uint8_t[kReadChunk]);
    if (c->ssl && !c->handshake_done) {
      int r = SSL_do_handshake(c->ssl);
      if (r != 1) {
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ) return;
        if (e == SSL_ERROR_WANT_WRITE) {
          WantOut(c, true);
          return;
        }
        log::Debug("skiff-store h2: TLS handshake failed: ", ERR_reason_error_string(ERR_peek_last_error()));
        Kill(c);
        return;
      }
      c->handshake_done = true;
      c->peer_cn = VerifiedPeerCommonName(c->ssl);
      MarkDirty(c);
    }
    while (!c->dead) {
      ssize_t n;
      if (c->ssl) {
        int r = SSL_read(c->ssl, buf.get(), static_cast<int>(kReadChunk));
        if (r <= 0) {
          int e = SSL_get_error(c->ssl, r);
          if (e == SSL_ERROR_WANT_READ) break;
          if (e == SSL_ERROR_WANT_WRITE) {
            WantOut(c, true);
            break;
          }
          Kill(c);
          return;
        }
        n = r;
      } else {
        n = ::recv(c->fd.get(), buf.get(), kReadChunk, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
        if (n <= 0) {
          Kill(c);
          return;
        }
      }
      if (c->proto == Conn::Proto::kUnknown) c->proto = Sniff(buf.get(), static_cast<size_t>(n));
      if (c->proto == Conn::Proto::kHttp1) {
        OnHttp1(c, buf.get(), static_cast<size_t>(n));
        if (static_cast<size_t>(n) < kReadChunk && !c->ssl) break;
        continue;
      }
      ssize_t used = nghttp2_session_mem_recv(c->session, buf.get(), static_cast<size_t>(n));
      if (used < 0) {
        log::Debug("skiff-store h2: bad HTTP/2 input: ", nghttp2_strerror(static_cast<int>(used)));
        MarkDirty(c);  // nghttp2 queued a GOAWAY; flush it, then the session stops wanting I/O
        break;
      }
      MarkDirty(c);
      if (static_cast<size_t>(n) < kReadChunk && !c->ssl) break;
    }
  }

  Conn::Proto Sniff(const uint8_t* p, size_t n) const {
    static constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (!o_->plain_http) return Conn::Proto::kH2;
    const size_t k = std::min(n, kPreface.size());
    return std::memcmp(p, kPreface.data(), k) == 0 ? Conn::Proto::kH2 : Conn::Proto::kHttp1;
  }

  void OnHttp1(Conn* c, const uint8_t* p, size_t n) {
    static constexpr size_t kMaxHead = 16 << 10;
    if (c->http1_answered) return;  // anything after the request is ignored
    const std::string_view data(reinterpret_cast<const char*>(p), n);
    if (c->body.active) return GatewayBody(c, data);
    c->http1_in.append(data);
    size_t end = c->http1_in.find("\r\n\r\n");
    if (end == std::string::npos && c->http1_in.size() <= kMaxHead) return;
    if (end != std::string::npos && o_->json_route) {
      std::string in = std::move(c->http1_in);
      c->http1_in.clear();
      if (StartGateway(c, std::string_view(in).substr(0, end))) {
        if (c->body.active) GatewayBody(c, std::string_view(in).substr(end + 4));
        return;
      }
      c->http1_in = std::move(in);
    }
    c->http1_answered = true;
    c->wbuf = end == std::string::npos
                  ? std::string("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
                                "Connection: close\r\n\r\n")
                  : Http1Response(std::string_view(c->http1_in).substr(0, end), o_->plain_http);
    c->woff = 0;
    c->http1_in.clear();
    MarkDirty(c);
  }

  void WantOut(Conn* c, bool on) {
    if (c->want_out == on) return;
    c->want_out = on;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | (on ? uint32_t{EPOLLOUT} : 0u);
    ev.data.ptr = c;
    ::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, c->fd.get(), &ev);
  }

  void Kill(Conn* c) {
    if (c->dead) return;
    c->dead = true;
    ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, c->fd.get(), nullptr);
    dead_.push_back(c->id);
  }

  // Writes what the session has queued: nghttp2 serialises into memory,
  // everything of this loop turn goes out in one send.
  void Flush(Conn* c) {
    if (c->ssl && !c->handshake_done) {
      OnReadable(c);  // drives the handshake in both directions
      return;
    }
    // With HTTP/1 on the port, the server's SETTINGS wait for the client's
    // first bytes (an HTTP/1 client must not get HTTP/2 frames). gRPC
    // clients send their preface without waiting for the server's.
    if (c->proto == Conn::Proto::kUnknown && o_->plain_http) return;
    while (!c->dead) {
      if (c->woff == c->wbuf.size()) {
        c->wbuf.clear();
        c->woff = 0;
        if (c->proto == Conn::Proto::kHttp1) break;
        const uint8_t* data;
        ssize_t n;
        while (c->wbuf.size() < kMaxPendingWrite && (n = nghttp2_session_mem_send(c->session, &data)) > 0) {
          c->wbuf.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
        }
        if (c->wbuf.empty()) break;
      }
      ssize_t w;
      if (c->ssl) {
        int r = SSL_write(c->ssl, c->wbuf.data() + c->woff, static_cast<int>(c->wbuf.size() - c->woff));
        if (r <= 0) {
          int e = SSL_get_error(c->ssl, r);
          if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            WantOut(c, true);
            return;
          }
          Kill(c);
          return;
        }
        w = r;
      } else {
        w = ::send(c->fd.get(), c->wbuf.data() + c->woff, c->wbuf.size() - c->woff, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
          WantOut(c, true);
          return;
        }
        if (w < 0) {
          Kill(c);
          return;
        }
      }
      c->woff += static_cast<size_t>(w);
    }
    if (!c->dead) WantOut(c, false);
    if (!c->dead && c->proto == Conn::Proto::kHttp1) {
      if (!c->wbuf.empty()) return;
      if (c->http1_answered) return Kill(c);  // HTTP/1: one response, then close
      auto gw = c->streams.find(kGatewayStream);
      if (gw != c->streams.end() && !gw->second->drained.empty()) gw->second->RunDrained();
      return;
    }
    if (!c->dead && !nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session) &&
        c->woff == c->wbuf.size()) {
      Kill(c);
    }
  }

  void FlushDirty() {
    // A flush can make more connections dirty (never others' streams), so
    // loop until the list stays empty.
    while (!dirty_.empty()) {
      std::vector<Conn*> d;
      d.swap(dirty_);
      for (Conn* c : d) {
        c->dirty = false;
        if (!c->dead) Flush(c);
      }
    }
    for (uint64_t id : dead_) conns_.erase(id);
    dead_.clear();
  }

  void RunPosted() {
    std::deque<Posted> q;
    {
      std::lock_guard<std::mutex> l(mu_);
      q.swap(posted_);
    }
    for (Posted& p : q) RunOne(p);
  }

  void RunOne(Posted& p) {
    Call* call = nullptr;
    auto it = conns_.find(p.conn_id);
    if (it != conns_.end() && !it->second->dead) {
      auto s = it->second->streams.find(p.stream_id);
      if (s != it->second->streams.end()) call = s->second.get();
    }
    p.fn(call);
    if (call) MarkDirty(it->second.get());
  }

  void GoAwayAll() {
    for (auto& [id, c] : conns_) {
      if (c->dead) continue;
      nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE, c->last_stream, NGHTTP2_NO_ERROR, nullptr, 0);
      Flush(c.get());
      if (c->ssl && !c->dead) SSL_shutdown(c->ssl);
    }
    conns_.clear();
    // Calls still in flight post to a loop that no longer runs: drop them
    // (their functions see no call).
    std::deque<Posted> q;
    {
      std::lock_guard<std::mutex> l(mu_);
      q.swap(posted_);
      closed_ = true;
    }
    for (Posted& p : q) p.fn(nullptr);
  }

 private:
  const TransportOptions* o_;
  std::vector<Listener*> listeners_;
  UniqueFd epfd_, wake_;
  Pollable wake_p_{};
  std::thread thread_;
  std::mutex mu_;
  std::deque<Posted> posted_;
  bool closed_ = false;
  std::atomic<bool> stopping_{false};
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::vector<Conn*> dirty_;
  std::vector<uint64_t> dead_;
  bool in_turn_end_ = false;
  static thread_local LoopImpl* tl_loop_;
  static std::atomic<uint64_t> next_conn_id_;
};

std::atomic<uint64_t> LoopImpl::next_conn_id_{1};
thread_local LoopImpl* LoopImpl::tl_loop_ = nullptr;

// --- nghttp2 callbacks ---------------------------------------------------------

StreamImpl* GetStream(nghttp2_session* s, int32_t id) {
  return static_cast<StreamImpl*>(nghttp2_session_get_stream_user_data(s, id));
}

int OnBeginHeaders(nghttp2_session* s, const nghttp2_frame* f, void* user) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto* c = static_cast<Conn*>(user);
  auto st = std::make_unique<StreamImpl>();
  st->conn = c;
  st->id = f->hd.stream_id;
  nghttp2_session_set_stream_user_data(s, st->id, st.get());
  c->last_stream = std::max(c->last_stream, st->id);
  c->streams[st->id] = std::move(st);
  return 0;
}

int OnHeader(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
             const uint8_t* value, size_t valuelen, uint8_t, void*) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  StreamImpl* st = GetStream(s, f->hd.stream_id);
  if (st && namelen == 5 && std::memcmp(name, ":path", 5) == 0) {
    st->path.assign(reinterpret_cast<const char*>(value), valuelen);
  } else if (st && namelen == 13 && std::memcmp(name, "grpc-encoding", 13) == 0) {
    st->encoding.assign(reinterpret_cast<const char*>(value), valuelen);
  } else if (st && namelen == 7 && std::memcmp(name, ":method", 7) == 0) {
    st->method.assign(reinterpret_cast<const char*>(value), valuelen);
  } else if (st && namelen == 12 && std::memcmp(name, "content-type", 12) == 0) {
    st->content_type.assign(reinterpret_cast<const char*>(value), valuelen);
  } else if (st && ((namelen == 5 && std::memcmp(name, "token", 5) == 0) ||
                    (namelen == 13 && std::memcmp(name, "authorization", 13) == 0))) {
    st->token.assign(reinterpret_cast<const char*>(value), valuelen);
  }
  return 0;
}

// A request message sent with the compressed flag, in the stream's
// grpc-encoding: gzip or deflate (zlib), the two grpc-go and gRPC C++ clients
// offer. Errors as grpc-go's server words them.
absl::StatusOr<std::string> Decompress(const std::string& encoding, std::string_view in, size_t max) {
  int window_bits;
  if (encoding == "gzip") {
    window_bits = 16 + MAX_WBITS;
  } else if (encoding == "deflate") {
    window_bits = MAX_WBITS;
  } else if (encoding.empty() || encoding == "identity") {
    return absl::InternalError("grpc: compressed flag set with identity or empty encoding");
  } else {
    return absl::UnimplementedError(
        absl::StrCat("grpc: Decompressor is not installed for grpc-encoding \"", encoding, "\""));
  }
  z_stream z{};
  if (inflateInit2(&z, window_bits) != Z_OK) {
    return absl::InternalError("grpc: failed to decompress the message: inflateInit2");
  }
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  std::string out;
  int rc = Z_OK;
  while (rc == Z_OK) {
    if (out.size() > max) break;
    const size_t have = out.size();
    out.resize(have + std::max<size_t>(4096, in.size() * 2));
    z.next_out = reinterpret_cast<Bytef*>(out.data() + have);
    z.avail_out = static_cast<uInt>(out.size() - have);
    rc = inflate(&z, Z_NO_FLUSH);
    out.resize(out.size() - z.avail_out);
    if (rc == Z_BUF_ERROR && z.avail_out != 0) break;  // input ended early
    if (rc == Z_BUF_ERROR) rc = Z_OK;                  // out of room: grow and go on
  }
  std::string zmsg = z.msg != nullptr ? z.msg : "truncated input";
  inflateEnd(&z);
  if (out.size() > max) {
    return absl::ResourceExhaustedError(
        absl::StrCat("grpc: received message after decompression larger than max (", max, ")"));
  }
  if (rc != Z_STREAM_END) return absl::InternalError(absl::StrCat("grpc: failed to decompress the message: ", zmsg));
  return out;
}

void Deliver(StreamImpl* st, const uint8_t* data, size_t len) {
  const size_t max = st->conn->loop->options().max_recv_message_bytes;
  auto header_len = [](const uint8_t* p) {
    return (size_t{p[1]} << 24) | (size_t{p[2]} << 16) | (size_t{p[3]} << 8) | size_t{p[4]};
  };
  auto fail = [&](const absl::Status& error) {
    st->discard = true;
    st->in.clear();
    st->Finish(error);
  };
  auto too_large = [&](size_t n) {
    fail(absl::ResourceExhaustedError(absl::StrCat("grpc: received message larger than max (", n, " vs. ", max, ")")));
  };
  // One whole message: its flag byte says whether it is compressed.
  auto hand_over = [&](uint8_t flag, std::string_view msg) {
    if (flag == 0) {
      st->handler->OnMessage(st, msg);
      return;
    }
    absl::StatusOr<std::string> plain = Decompress(st->encoding, msg, max);
    if (!plain.ok()) return fail(plain.status());
    st->handler->OnMessage(st, *plain);
  };
  // Fast path: whole messages straight from the frame, no copy.
  while (st->in.empty() && len >= 5 && !st->discard) {
    size_t n = header_len(data);
    if (n > max) return too_large(n);
    if (len < 5 + n) break;
    hand_over(data[0], std::string_view(reinterpret_cast<const char*>(data) + 5, n));
    data += 5 + n;
    len -= 5 + n;
  }
  if (st->discard || len == 0) return;
  st->in.append(reinterpret_cast<const char*>(data), len);
  size_t pos = 0;
  while (!st->discard && st->in.size() - pos >= 5) {
    const auto* p = reinterpret_cast<const uint8_t*>(st->in.data() + pos);
    size_t n = header_len(p);
    if (n > max) return too_large(n);
    if (st->in.size() - pos < 5 + n) break;
    hand_over(p[0], std::string_view(st->in.data() + pos + 5, n));
    pos += 5 + n;
  }
  if (!st->discard) st->in.erase(0, pos);
}

int OnDataChunk(nghttp2_session* s, uint8_t, int32_t stream_id, const uint8_t* data, size_t len, void*) {
  StreamImpl* st = GetStream(s, stream_id);
  if (!st || !st->handler || st->discard) return 0;
  if (st->json != nullptr) {
    st->in.append(reinterpret_cast<const char*>(data), len);
    PumpJson(st, false);
    return 0;
  }
  Deliver(st, data, len);
  return 0;
}

// Copies up to length queued response bytes of st into buf.
size_t TakeOut(StreamImpl* st, uint8_t* buf, size_t length) {
  size_t n = std::min(length, st->out.size() - st->out_off);
  std::memcpy(buf, st->out.data() + st->out_off, n);
  st->out_off += n;
  return n;
}

ssize_t ReadPlainBody(nghttp2_session* s, int32_t stream_id, uint8_t* buf, size_t length, uint32_t* flags,
                      nghttp2_data_source*, void*) {
  StreamImpl* st = GetStream(s, stream_id);
  if (!st) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  size_t n = TakeOut(st, buf, length);
  if (st->out_off == st->out.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

// A plain HTTP/2 response (TransportOptions::plain_http); the stream takes
// nothing more.
void SubmitPlain(nghttp2_session* s, StreamImpl* st, PlainResponse r, bool head) {
  st->discard = true;
  st->finished = true;
  st->headers_sent = true;
  st->plain_headers = {std::to_string(r.status), std::move(r.content_type), std::to_string(r.body.size())};
  st->out = head ? std::string() : std::move(r.body);
  st->out_off = 0;
  nghttp2_nv h[] = {Nv(":status", st->plain_headers[0]), Nv("content-type", st->plain_headers[1]),
                    Nv("content-length", st->plain_headers[2])};
  nghttp2_data_provider body{};
  body.read_callback = ReadPlainBody;
  nghttp2_submit_response(s, st->id, h, 3, st->out.empty() ? nullptr : &body);
  st->conn->loop->MarkDirty(st->conn);
}

int OnFrameRecv(nghttp2_session*, const nghttp2_frame* f, void* user) {
  auto* c = static_cast<Conn*>(user);
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
  auto it = c->streams.find(f->hd.stream_id);
  if (it == c->streams.end()) return 0;
  StreamImpl* st = it->second.get();
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
    const TransportOptions& o = c->loop->options();
    if (o.plain_http && o.json_route && st->content_type.rfind("application/grpc", 0) != 0 &&
        StartGatewayStream(st)) {
      if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->handler && !st->discard) PumpJson(st, true);
      return 0;
    }
    if (o.plain_http && st->content_type.rfind("application/grpc", 0) != 0 &&
        (st->method == "GET" || st->method == "HEAD")) {
      SubmitPlain(c->session, st, o.plain_http(st->path), st->method == "HEAD");
      return 0;
    }
    HandlerFactory factory = o.route(st->path);
    if (factory) st->handler = factory();
    if (!st->handler) {
      st->discard = true;
      auto slash = st->path.rfind('/');
      std::string service =
          st->path.substr(1, slash == std::string::npos || slash == 0 ? std::string::npos : slash - 1);
      st->Finish(absl::UnimplementedError(absl::StrCat("unknown service ", service)));
      return 0;
    }
  }
  if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->handler && !st->discard && st->json != nullptr) {
    PumpJson(st, true);
    return 0;
  }
  if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->handler && !st->discard) {
    if (!st->in.empty()) {
      st->discard = true;
      st->Finish(absl::InternalError("grpc: request ended inside a message"));
      return 0;
    }
    st->handler->OnHalfClose(st);
  }
  return 0;
}

int OnStreamClose(nghttp2_session* s, int32_t stream_id, uint32_t, void* user) {
  auto* c = static_cast<Conn*>(user);
  nghttp2_session_set_stream_user_data(s, stream_id, nullptr);
  c->streams.erase(stream_id);
  return 0;
}

ssize_t ReadBody(nghttp2_session* s, int32_t stream_id, uint8_t* buf, size_t length, uint32_t* flags,
                 nghttp2_data_source*, void*) {
  StreamImpl* st = GetStream(s, stream_id);
  if (!st) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  size_t n = TakeOut(st, buf, length);
  if (st->out_off == st->out.size()) {
    st->out.clear();
    st->out_off = 0;
    if (!st->drained.empty()) st->RunDrained();
    if (st->finished && st->json != nullptr) {  // a gateway stream: no trailers
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      return static_cast<ssize_t>(n);
    }
    if (st->finished) {
      *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_nv tr[] = {Nv("grpc-status", st->grpc_status), Nv("grpc-message", st->grpc_message)};
      nghttp2_submit_trailer(s, stream_id, tr, st->grpc_message.empty() ? 1 : 2);
      return static_cast<ssize_t>(n);
    }
    if (n == 0) {
      st->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

absl::Status LoopImpl::NewSession(Conn* c) {
  static nghttp2_session_callbacks* cbs = [] {
    nghttp2_session_callbacks* cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, OnBeginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(cb, OnHeader);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, OnDataChunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, OnFrameRecv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, OnStreamClose);
    return cb;
  }();
  static nghttp2_option* opt = [] {
    nghttp2_option* o;
    nghttp2_option_new(&o);
    // grpc-go's keepalive pings are answered by nghttp2 itself.
    nghttp2_option_set_no_closed_streams(o, 1);
    // grpc-go sends the dial target as :authority, and etcdctl --cluster
    // dials "passthrough:///http://host:port": not a valid HTTP authority,
    // which nghttp2's HTTP checks would reset (gRPC servers accept it).
    nghttp2_option_set_no_http_messaging(o, 1);
    return o;
  }();
  if (nghttp2_session_server_new2(&c->session, cbs, c, opt) != 0)
    return absl::InternalError("nghttp2 session");
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1u << 20},
                                 {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(kStreamWindow)},
                                 {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 1u << 16}};
  nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 3);
  nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, kConnWindow);
  return absl::OkStatus();
}

// --- Call ------------------------------------------------------------------------

CallRef StreamImpl::Ref() const { return CallRef{conn->loop->shared_from_this(), conn->id, id}; }

void StreamImpl::Resume() {
  if (deferred) {
    deferred = false;
    nghttp2_session_resume_data(conn->session, id);
  }
  conn->loop->MarkDirty(conn);
}

std::string_view StreamImpl::PeerCommonName() const { return conn->peer_cn; }

size_t StreamImpl::QueuedBytes() const {
  return json != nullptr && h1 ? conn->wbuf.size() - conn->woff : out.size() - out_off;
}

void StreamImpl::Send(const google::protobuf::MessageLite& msg) {
  if (finished) return;
  if (json != nullptr) return SendJson(msg);
  size_t n = msg.ByteSizeLong();
  size_t at = out.size();
  out.resize(at + 5 + n);
  auto* p = reinterpret_cast<uint8_t*>(out.data() + at);
  p[0] = 0;
  p[1] = static_cast<uint8_t>(n >> 24);
  p[2] = static_cast<uint8_t>(n >> 16);
  p[3] = static_cast<uint8_t>(n >> 8);
  p[4] = static_cast<uint8_t>(n);
  msg.SerializeWithCachedSizesToArray(p + 5);
  if (!headers_sent) {
    headers_sent = true;
    static const std::string k200 = "200", kGrpc = "application/grpc";
    nghttp2_nv h[] = {Nv(":status", k200), Nv("content-type", kGrpc)};
    nghttp2_data_provider prd{};
    prd.read_callback = ReadBody;
    nghttp2_submit_response(conn->session, id, h, 2, &prd);
    conn->loop->MarkDirty(conn);
    return;
  }
  Resume();
}

void StreamImpl::Finish(const absl::Status& st) {
  if (finished) return;
  finished = true;
  status = st;
  if (json != nullptr) return FinishJson(st);
  grpc_status = std::to_string(static_cast<int>(st.code()));
  grpc_message = PercentEncode(std::string(st.message()));
  if (!headers_sent) {
    // Trailers-only response.
    headers_sent = true;
    static const std::string k200 = "200", kGrpc = "application/grpc";
    nghttp2_nv h[] = {Nv(":status", k200), Nv("content-type", kGrpc), Nv("grpc-status", grpc_status),
                      Nv("grpc-message", grpc_message)};
    nghttp2_submit_headers(conn->session, NGHTTP2_FLAG_END_STREAM, id, nullptr, h,
                           grpc_message.empty() ? 3 : 4, nullptr);
    conn->loop->MarkDirty(conn);
    return;
  }
  Resume();
}

// --- The JSON gateway (HTTP/1.x and HTTP/2) --------------------------------------------

const char* StatusText(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "";
  }
}

// grpc-gateway's HTTP status for a gRPC code (the table etcd 3.4's gateway uses).
int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kCancelled: return 408;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kFailedPrecondition: return 412;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}


constexpr char kCors[] =
    "Access-Control-Allow-Headers: accept, content-type, authorization\r\n"
    "Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n"
    "Access-Control-Allow-Origin: *\r\n";

// A gateway response's status line and headers: with a Content-Length, or
// (length < 0) a chunked body (a raw one until close for HTTP/1.0).
std::string GatewayHead(const Conn* c, int status, bool ok, int64_t length) {
  std::string h = absl::StrCat(c->http10 ? "HTTP/1.0 " : "HTTP/1.1 ", status, " ", StatusText(status), "\r\n",
                               kCors, "Content-Type: application/json\r\n");
  if (ok) h += "Grpc-Metadata-Content-Type: application/grpc\r\n";
  if (length >= 0) {
    absl::StrAppend(&h, "Content-Length: ", length, "\r\n");
  } else if (!c->http10) {
    h += "Transfer-Encoding: chunked\r\n";
  }
  return h + "Connection: close\r\n\r\n";
}

void AppendChunk(Conn* c, std::string_view data) {
  if (c->http10) {
    c->wbuf.append(data);
    return;
  }
  char size[24];
  std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  c->wbuf += size;
  c->wbuf.append(data);
  c->wbuf += "\r\n";
}

void StreamImpl::SendJson(const google::protobuf::MessageLite& msg) {
  google::protobuf::util::JsonPrintOptions po;
  po.preserve_proto_field_names = true;  // etcd's gateway: the .proto's names (create_revision, dbSize)
  std::string j;
  const auto* full = dynamic_cast<const google::protobuf::Message*>(&msg);
  if (full == nullptr || !google::protobuf::util::MessageToJsonString(*full, &j, po).ok()) {
    return Finish(absl::InternalError("the response has no JSON form"));
  }
  if (!json->server_streaming()) {
    out = std::move(j);  // written with the status at Finish
    return;
  }
  if (!h1) {
    absl::StrAppend(&out, R"({"result":)", j, "}\n");
    if (headers_sent) return Resume();
    headers_sent = true;
    SubmitJsonHead(200, true);
    return;
  }
  if (!headers_sent) {
    headers_sent = true;
    conn->wbuf += GatewayHead(conn, 200, true, -1);
  }
  AppendChunk(conn, absl::StrCat(R"({"result":)", j, "}\n"));
  conn->loop->MarkDirty(conn);
}

// An HTTP/2 gateway response's headers; the body is `out`, taken by ReadBody.
void StreamImpl::SubmitJsonHead(int status, bool ok) {
  plain_headers = {std::to_string(status), "application/json", ok ? "application/grpc" : ""};
  nghttp2_nv h[] = {Nv(":status", plain_headers[0]), Nv("content-type", plain_headers[1]),
                    Nv("grpc-metadata-content-type", plain_headers[2])};
  nghttp2_data_provider body{};
  body.read_callback = ReadBody;
  nghttp2_submit_response(conn->session, id, h, ok ? 3 : 2, &body);
  conn->loop->MarkDirty(conn);
}

void StreamImpl::FinishJson(const absl::Status& st) {
  const int code = static_cast<int>(st.code());
  const int http = HttpStatusOf(st.code());
  const std::string msg = JsonQuote(std::string(st.message()));
  const std::string stream_error = absl::StrCat(R"({"error":{"grpc_code":)", code, R"(,"http_code":)", http,
                                                R"(,"message":)", msg, R"(,"http_status":)",
                                                JsonQuote(StatusText(http)), "}}\n");
  if (!h1) {
    if (!st.ok() && (headers_sent || json->server_streaming())) absl::StrAppend(&out, stream_error);
    if (headers_sent) return Resume();  // ReadBody ends the stream once out is taken
    headers_sent = true;
    if (st.ok() || json->server_streaming()) {
      if (out.empty()) out = "{}";
    } else {
      out = absl::StrCat(R"({"error":)", msg, R"(,"message":)", msg, R"(,"code":)", code, "}");
    }
    SubmitJsonHead(http, st.ok());
    return;
  }
  // grpc-gateway answers a server stream's error in its stream form even
  // before the first message, with the error's HTTP status.
  if (!headers_sent && !st.ok() && json->server_streaming()) {
    headers_sent = true;
    conn->wbuf += GatewayHead(conn, http, false, -1);
  }
  if (!headers_sent) {
    headers_sent = true;
    std::string body = !st.ok() ? absl::StrCat(R"({"error":)", msg, R"(,"message":)", msg, R"(,"code":)", code, "}")
                       : out.empty() ? std::string("{}")
                                     : std::move(out);
    out.clear();
    absl::StrAppend(&conn->wbuf, GatewayHead(conn, http, st.ok(), static_cast<int64_t>(body.size())), body);
  } else {
    if (!st.ok()) AppendChunk(conn, stream_error);
    if (!conn->http10) conn->wbuf += "0\r\n\r\n";
  }
  conn->http1_answered = true;
  conn->loop->MarkDirty(conn);
}

std::string_view TrimSpace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool SameIgnoringCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// A whole unsigned number in this base.
bool ParseUnsigned(std::string_view s, uint64_t* v, int base) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v, base);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

// "Name: value" of a request head, the name matched case-insensitively.
std::string_view HeaderValue(std::string_view head, std::string_view name) {
  for (size_t pos = head.find("\r\n"); pos != std::string_view::npos;) {
    const size_t start = pos + 2;
    pos = head.find("\r\n", start);
    std::string_view line = head.substr(start, pos == std::string_view::npos ? pos : pos - start);
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos && SameIgnoringCase(TrimSpace(line.substr(0, colon)), name)) {
      return TrimSpace(line.substr(colon + 1));
    }
  }
  return {};
}

bool StartGateway(Conn* c, std::string_view head) {
  const TransportOptions& o = c->loop->options();
  const std::string_view line = head.substr(0, head.find("\r\n"));
  const size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp1 >= sp2) return false;  // Http1Response answers 400
  const std::string_view method = line.substr(0, sp1), version = line.substr(sp2 + 1);
  std::string_view path = line.substr(sp1 + 1, sp2 - sp1 - 1);
  path = path.substr(0, path.find('?'));
  if (version.rfind("HTTP/1.", 0) != 0) return false;
  const google::protobuf::MethodDescriptor* md = o.json_route(path);
  if (md == nullptr) return false;
  c->http10 = version == "HTTP/1.0";
  const char* proto = c->http10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  auto answer = [c](std::string r) {
    c->wbuf += r;
    c->http1_answered = true;
    c->loop->MarkDirty(c);
    return true;
  };
  if (method == "OPTIONS") {  // a CORS preflight, as etcd answers it
    return answer(absl::StrCat(proto, "200 OK\r\n", kCors, "Content-Length: 0\r\nConnection: close\r\n\r\n"));
  }
  if (method != "POST") {
    return answer(absl::StrCat(proto, "405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                      "Content-Length: 19\r\nConnection: close\r\n\r\nMethod Not Allowed\n"));
  }
  Conn::Body& b = c->body;
  b = Conn::Body{};
  const std::string_view te = HeaderValue(head, "Transfer-Encoding"), cl = HeaderValue(head, "Content-Length");
  if (SameIgnoringCase(te, "chunked")) {
    b.chunked = true;
  } else if (!te.empty()) {
    return answer(absl::StrCat(proto, "501 Not Implemented\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                      "Connection: close\r\n\r\nUnsupported transfer encoding"));
  } else if (!cl.empty() && !ParseUnsigned(cl, &b.left, 10)) {
    return answer(absl::StrCat(proto, "400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                      "Connection: close\r\n\r\n400 Bad Request: bad Content-Length"));
  }
  auto st = std::make_unique<StreamImpl>();
  st->conn = c;
  st->id = kGatewayStream;
  st->json = md;
  st->h1 = true;
  st->path = "/" + md->service()->full_name() + "/" + md->name();
  st->token = std::string(HeaderValue(head, "Authorization"));
  StreamImpl* raw = st.get();
  c->streams[kGatewayStream] = std::move(st);
  if (HandlerFactory f = o.route(raw->path)) raw->handler = f();
  if (!raw->handler) {
    raw->discard = true;
    raw->Finish(absl::UnimplementedError("unknown service " + md->service()->full_name()));
    return true;
  }
  b.active = true;
  if (!b.chunked && b.left == 0) GatewayBody(c, {});
  return true;
}

bool StartGatewayStream(StreamImpl* st) {
  const TransportOptions& o = st->conn->loop->options();
  const std::string path = st->path.substr(0, st->path.find('?'));
  const google::protobuf::MethodDescriptor* md = o.json_route(path);
  if (md == nullptr) return false;
  st->json = md;
  st->discard = false;
  if (st->method != "POST") {
    st->discard = true;
    SubmitPlain(st->conn->session, st, PlainResponse{405, "text/plain; charset=utf-8", "Method Not Allowed\n"},
                false);
    return true;
  }
  st->path = "/" + md->service()->full_name() + "/" + md->name();
  if (HandlerFactory f = o.route(st->path)) st->handler = f();
  if (!st->handler) {
    st->discard = true;
    st->Finish(absl::UnimplementedError("unknown service " + md->service()->full_name()));
  }
  return true;
}

// The end of the JSON value that starts at s[pos] ('{' or '['), npos while
// it is incomplete (or not an object or array: the parser then says why).
size_t JsonValueEnd(const std::string& s, size_t pos) {
  if (s[pos] != '{' && s[pos] != '[') return std::string::npos;
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = pos; i < s.size(); ++i) {
    const char ch = s[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (ch == '\\') {
        escaped = true;
      } else if (ch == '"') {
        in_string = false;
      }
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '{' || ch == '[') {
      ++depth;
    } else if ((ch == '}' || ch == ']') && --depth == 0) {
      return i + 1;
    }
  }
  return std::string::npos;
}

// One JSON request message: parsed as the method's request type (unknown
// fields ignored, as etcd's gateway does) and handed over in wire form.
void DeliverJson(StreamImpl* st, std::string_view text) {
  st->json_got = true;
  const size_t max = st->conn->loop->options().max_recv_message_bytes;
  std::unique_ptr<google::protobuf::Message> m(
      google::protobuf::MessageFactory::generated_factory()->GetPrototype(st->json->input_type())->New());
  google::protobuf::util::JsonParseOptions po;
  po.ignore_unknown_fields = true;
  auto parsed =
      google::protobuf::util::JsonStringToMessage(google::protobuf::StringPiece(text.data(), text.size()), m.get(), po);
  if (!parsed.ok()) {
    // grpc-gateway: InvalidArgument for a unary call's body, Unknown for a stream's.
    const std::string why(parsed.message());
    st->discard = true;
    st->Finish(st->json->client_streaming() ? absl::UnknownError(why) : absl::InvalidArgumentError(why));
    return;
  }
  const std::string wire = m->SerializeAsString();
  if (wire.size() > max) {
    st->discard = true;
    st->Finish(absl::ResourceExhaustedError(
        absl::StrCat("grpc: received message larger than max (", wire.size(), " vs. ", max, ")")));
    return;
  }
  st->handler->OnMessage(st, wire);
}

// Hands over every complete JSON object received; at the body's end a unary
// call's one message ({} when the body had none) and the half-close.
void PumpJson(StreamImpl* st, bool ended) {
  const size_t max = st->conn->loop->options().max_recv_message_bytes;
  const bool streaming = st->json->client_streaming();
  size_t pos = 0;
  while (!st->discard && !st->finished) {
    while (pos < st->in.size() && absl::ascii_isspace(static_cast<unsigned char>(st->in[pos]))) ++pos;
    if (pos == st->in.size()) break;
    size_t end = JsonValueEnd(st->in, pos);
    if (end == std::string::npos) {
      if (!ended && st->in.size() - pos <= 4 * max) break;  // wait for the rest
      end = st->in.size();
    }
    if (streaming || !st->json_got) DeliverJson(st, std::string_view(st->in).substr(pos, end - pos));
    pos = end;
  }
  if (st->discard || st->finished) {
    st->in.clear();
    return;
  }
  st->in.erase(0, pos);
  if (!ended) return;
  if (!streaming && !st->json_got) DeliverJson(st, "{}");
  if (!st->discard && !st->finished) st->handler->OnHalfClose(st);
}

void GatewayBody(Conn* c, std::string_view data) {
  auto it = c->streams.find(kGatewayStream);
  if (it == c->streams.end()) return;
  StreamImpl* st = it->second.get();
  Conn::Body& b = c->body;
  bool ended = false, bad = false;
  if (!b.chunked) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(b.left, data.size()));
    st->in.append(data.substr(0, k));
    b.left -= k;
    ended = b.left == 0;
  }
  for (size_t i = 0; b.chunked && i < data.size() && !ended && !bad;) {
    if (b.chunk == Conn::Body::Chunk::kData) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(b.left, data.size() - i));
      st->in.append(data.substr(i, k));
      i += k;
      b.left -= k;
      if (b.left == 0) b.chunk = Conn::Body::Chunk::kDataEnd;
      continue;
    }
    // A line: a chunk's size, the CRLF after its data, or a trailer.
    const size_t nl = data.find('\n', i);
    b.line.append(data.substr(i, nl == std::string_view::npos ? std::string_view::npos : nl - i));
    if (nl == std::string_view::npos) {
      bad = b.line.size() > 4096;
      break;
    }
    i = nl + 1;
    std::string_view l = TrimSpace(b.line);
    if (b.chunk == Conn::Body::Chunk::kSize) {
      bad = !ParseUnsigned(TrimSpace(l.substr(0, l.find(';'))), &b.left, 16);
      b.chunk = b.left == 0 ? Conn::Body::Chunk::kTrailer : Conn::Body::Chunk::kData;
    } else if (b.chunk == Conn::Body::Chunk::kDataEnd) {
      bad = !l.empty();
      b.chunk = Conn::Body::Chunk::kSize;
    } else {
      ended = l.empty();
    }
    b.line.clear();
  }
  if (bad) {
    b.active = false;
    st->discard = true;
    st->Finish(absl::InvalidArgumentError("malformed chunked encoding in the request body"));
    return;
  }
  if (ended) b.active = false;
  PumpJson(st, ended);
}

// --- Transport ---------------------------------------------------------------------

absl::StatusOr<UniqueFd> ListenOn(const std::string& addr, int* port) {
  sockaddr_storage ss{};
  socklen_t len;
  int family;
  if (addr.rfind("unix:", 0) == 0) {
    std::string path = addr.substr(5);
    auto* a = reinterpret_cast<sockaddr_un*>(&ss);
    if (path.size() >= sizeof(a->sun_path))
      return absl::InvalidArgumentError("unix socket path too long: " + path);
    a->sun_family = AF_UNIX;
    std::memcpy(a->sun_path, path.c_str(), path.size() + 1);
    len = sizeof(*a);
    family = AF_UNIX;
    ::unlink(path.c_str());
  } else {
    auto colon = addr.rfind(':');
    std::string host = addr.substr(0, colon);
    int p = std::atoi(addr.substr(colon + 1).c_str());
    if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
    if (host == "localhost") host = "127.0.0.1";
    if (host.find(':') != std::string::npos) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      a->sin6_port = htons(static_cast<uint16_t>(p));
      if (inet_pton(AF_INET6, host.c_str(), &a->sin6_addr) != 1)
        return absl::InvalidArgumentError("bad host " + host);
      len = sizeof(*a);
      family = AF_INET6;
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      a->sin_port = htons(static_cast<uint16_t>(p));
      if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1)
        return absl::InvalidArgumentError("bad host " + host);
      len = sizeof(*a);
      family = AF_INET;
    }
  }
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return LastErrnoError("socket");
  int one = 1;
  if (family != AF_UNIX) ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return LastErrnoError("bind " + addr);
  if (::listen(fd.get(), 4096) != 0) return LastErrnoError("listen " + addr);
  *port = 0;
  if (family != AF_UNIX) {
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0)
      return LastErrnoError("getsockname");
    *port = family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                               : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  return fd;
}

// h2 when the client offers it; else http/1.1 when the transport serves
// plain HTTP (arg non-null): curl --http1.1 https://…/health.
int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned inlen, void* arg) {
  const unsigned char* http1 = nullptr;
  for (unsigned i = 0; i < inlen;) {
    unsigned l = in[i];
    if (i + 1 + l > inlen) break;
    if (l == 2 && in[i + 1] == 'h' && in[i + 2] == '2') {
      *out = in + i + 1;
      *outlen = 2;
      return SSL_TLSEXT_ERR_OK;
    }
    if (l == 8 && std::memcmp(in + i + 1, "http/1.1", 8) == 0) http1 = in + i + 1;
    i += 1 + l;
  }
  if (http1 != nullptr && arg != nullptr) {
    *out = http1;
    *outlen = 8;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

absl::StatusOr<SSL_CTX*> NewTlsContext(const TransportOptions& o) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return absl::InternalError("SSL_CTX_new");
  auto fail = [&](const std::string& what) {
    std::string e =
        ERR_reason_error_string(ERR_peek_last_error()) ? ERR_reason_error_string(ERR_peek_last_error()) : "";
    SSL_CTX_free(ctx);
    return absl::InvalidArgumentError(what + ": " + e);
  };
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_use_certificate_chain_file(ctx, o.cert_file.c_str()) != 1) return fail("load " + o.cert_file);
  if (SSL_CTX_use_PrivateKey_file(ctx, o.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    return fail("load " + o.key_file);
  if (!o.trusted_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, o.trusted_ca_file.c_str(), nullptr) != 1) {
      return fail("load " + o.trusted_ca_file);
    }
  }
  if (o.client_cert_auth) SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  static int serves_http1;
  SSL_CTX_set_alpn_select_cb(ctx, SelectAlpn, o.plain_http ? &serves_http1 : nullptr);
  return ctx;
}

class TransportImpl final : public Transport {
 public:
  explicit TransportImpl(TransportOptions o) : o_(std::move(o)) {}
  ~TransportImpl() override {
    Shutdown();
    loops_.clear();
    if (tls_) SSL_CTX_free(tls_);
  }

  absl::Status Init() {
    if (!o_.route) return absl::InvalidArgumentError("h2 transport without routes");
    for (size_t i = 0; i < o_.listen.size(); ++i) {
      auto l = std::make_unique<Listener>();
      l->kind = Pollable::kListener;
      int port = 0;
      ASSIGN_OR_RETURN(l->fd, ListenOn(o_.listen[i], &port));
      if (i < o_.tls.size() && o_.tls[i]) {
        if (!tls_) {
          ASSIGN_OR_RETURN(tls_, NewTlsContext(o_));
        }
        l->tls = tls_;
      }
      ports_.push_back(port);
      listeners_.push_back(std::move(l));
    }
    std::vector<Listener*> ls;
    for (auto& l : listeners_) ls.push_back(l.get());
    for (int i = 0; i < std::max(1, o_.threads); ++i) {
      loops_.push_back(std::make_shared<LoopImpl>(&o_, ls));
      RETURN_IF_ERROR(loops_.back()->Init());
    }
    return absl::OkStatus();
  }

  std::vector<int> Ports() const override { return ports_; }

  void Shutdown() override {
    if (shut_.exchange(true)) return;
    for (auto& l : loops_) l->Stop();
    for (auto& l : loops_) l->Join();
    listeners_.clear();
    std::lock_guard<std::mutex> l(mu_);
    done_ = true;
    cv_.notify_all();
  }

  void Wait() override {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return done_; });
  }

 private:
  TransportOptions o_;
  SSL_CTX* tls_ = nullptr;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::shared_ptr<LoopImpl>> loops_;
  std::vector<int> ports_;
  std::atomic<bool> shut_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

}  // namespace

std::string Http1Response(std::string_view head, const std::function<PlainResponse(std::string_view path)>& serve) {
  std::string_view line = head.substr(0, head.find("\r\n"));
  const size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  std::string_view method = line.substr(0, sp1);
  std::string_view path = sp1 < sp2 ? line.substr(sp1 + 1, sp2 - sp1 - 1) : std::string_view();
  std::string_view version = sp1 < sp2 ? line.substr(sp2 + 1) : std::string_view();
  const char* proto = version == "HTTP/1.0" ? "HTTP/1.0 " : "HTTP/1.1 ";
  if (version.rfind("HTTP/1.", 0) != 0 || path.empty()) {
    return "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
           "400 Bad Request";
  }
  if (method != "GET" && method != "HEAD") {
    return absl::StrCat(proto, "405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 19\r\nConnection: close\r\n\r\nMethod Not Allowed\n");
  }
  PlainResponse r = serve(path);
  return absl::StrCat(proto, r.status, " ", StatusText(r.status), "\r\nContent-Type: ", r.content_type,
                      "\r\nContent-Length: ", r.body.size(), "\r\nConnection: close\r\n\r\n",
                      method == "HEAD" ? "" : r.body);
}

void Post(const CallRef& ref, std::function<void(Call*)> fn) {
  auto* loop = static_cast<LoopImpl*>(ref.loop.get());
  Posted p{ref.conn_id, ref.stream_id, std::move(fn)};
  if (loop->RunHere(p)) return;
  if (!loop->Enqueue(p)) p.fn(nullptr);
}

absl::StatusOr<std::unique_ptr<Transport>> Transport::Start(TransportOptions options) {
  auto t = std::make_unique<TransportImpl>(std::move(options));
  RETURN_IF_ERROR(t->Init());
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace skiff::store::h2
