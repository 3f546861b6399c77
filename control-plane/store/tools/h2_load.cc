// skiff-store-bench's lean client (--client h2, the default): gRPC unary calls
// over plain-TCP HTTP/2 with prior knowledge, on nghttp2, driven by one epoll
// loop per thread. Each logical client keeps exactly one call outstanding and
// starts its next once the previous call's stream has closed (trailers in),
// so N clients mean what they mean in etcd's benchmark tool, while the client
// itself costs a few microseconds of CPU per call instead of tens.
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>

#include "etcdserverpb/rpc.pb.h"
#include "load.h"
#include "skiff/common/unique_fd.h"

namespace skiff::store::bench {
namespace {

// Big windows so flow control never holds a call back: 1 GiB for the
// connection, 16 MiB per stream.
constexpr int32_t kConnWindow = 1 << 30;
constexpr uint32_t kStreamWindow = 16 << 20;
// A worker with calls outstanding that hears nothing for this long gives up.
constexpr auto kStallLimit = std::chrono::seconds(30);

class Connection;

struct Client {
  Connection* conn = nullptr;
  KeySequence keys;
  etcdserverpb::PutRequest put;
  etcdserverpb::RangeRequest range;
  std::string body;  // 5-byte gRPC prefix + message
  size_t body_off = 0;
  bool outstanding = false;
  Clock::time_point start;
  int http_status = 0;
  int grpc_status = -1;
  std::string grpc_message;
  Client(int index, int64_t key_space) : keys(index, key_space) {}
};

std::string PercentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

class Worker;

class Connection {
 public:
  Connection(Worker* w, const LoadOptions& o, UniqueFd fd);
  ~Connection() {
    if (session_ != nullptr) nghttp2_session_del(session_);
  }
  bool dead() const { return dead_; }
  // False once the server sent GOAWAY or the connection is gone: calls in
  // flight may still finish, new ones would only be refused.
  bool accepting() const { return !dead_ && !goaway_; }
  void AddClient(Client* c) {
    c->conn = this;
    clients_.push_back(c);
  }
  // Submits client c's next call (its budget slot is already taken).
  void StartCall(Client* c);
  void OnReadable();
  // Moves nghttp2's pending frames to the socket, one write per batch.
  void Flush();
  void Fail(const std::string& why);

 private:
  static int OnHeader(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t, void* self);
  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* self);
  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                          nghttp2_data_source* src, void*);
  void SetWantWrite(bool on);

  Worker* worker_;
  const LoadOptions& o_;
  UniqueFd fd_;
  nghttp2_session* session_ = nullptr;
  std::vector<Client*> clients_;
  std::string out_;
  size_t out_off_ = 0;
  bool want_write_ = false;
  bool dead_ = false;
  bool goaway_ = false;
  std::string path_, authority_, token_;
};

class Worker {
 public:
  Worker(RequestBudget& budget, ErrorLog& errors) : budget_(budget), errors_(errors) {}
  ErrorLog& errors() { return errors_; }
  int epoll_fd() const { return ep_.get(); }
  std::vector<double>& latencies() { return lat_; }
  bool Init() {
    ep_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    return ep_.valid();
  }
  void Adopt(std::unique_ptr<Connection> c) { conns_.push_back(std::move(c)); }
  void AdoptClient(std::unique_ptr<Client> c) { clients_.push_back(std::move(c)); }

  // Starts the next call of c or retires c when the budget is spent.
  void Next(Client* c, Clock::time_point now) {
    if (c->conn->accepting() && budget_.Take(now)) {
      c->conn->StartCall(c);
    } else {
      --active_;
    }
  }
  // A call ended (ok or not): its latency counts as one request.
  void Finished(Client* c, Clock::time_point now, const std::string& error) {
    c->outstanding = false;
    lat_.push_back(std::chrono::duration<double, std::milli>(now - c->start).count());
    if (!error.empty()) errors_.Add(error);
  }

  void Run() {
    auto now = Clock::now();
    active_ = static_cast<int64_t>(clients_.size());
    for (auto& c : clients_) Next(c.get(), now);
    for (auto& c : conns_) c->Flush();
    epoll_event evs[64];
    auto last_heard = Clock::now();
    while (active_ > 0) {
      int n = ::epoll_wait(ep_.get(), evs, 64, 1000);
      if (n < 0) {
        if (errno == EINTR) continue;
        for (auto& c : conns_) c->Fail(std::string("epoll_wait: ") + std::strerror(errno));
        break;
      }
      if (n == 0 && Clock::now() - last_heard > kStallLimit) {
        for (auto& c : conns_) c->Fail("no response for 30 s");
        continue;
      }
      if (n > 0) last_heard = Clock::now();
      for (int i = 0; i < n; ++i) {
        auto* c = static_cast<Connection*>(evs[i].data.ptr);
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) c->OnReadable();
        if (!c->dead() && (evs[i].events & EPOLLOUT)) c->Flush();
      }
    }
  }

 private:
  RequestBudget& budget_;
  ErrorLog& errors_;
  UniqueFd ep_;
  std::vector<std::unique_ptr<Connection>> conns_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::vector<double> lat_;
  int64_t active_ = 0;  // clients not yet retired
};

Connection::Connection(Worker* w, const LoadOptions& o, UniqueFd fd) : worker_(w), o_(o), fd_(std::move(fd)) {
  path_ = o.op == "put" ? "/etcdserverpb.KV/Put" : "/etcdserverpb.KV/Range";
  authority_ = o.endpoint.rfind("http://", 0) == 0 ? o.endpoint.substr(7) : o.endpoint;
  token_ = o.token;
  nghttp2_session_callbacks* cb = nullptr;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_header_callback(cb, &Connection::OnHeader);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, &Connection::OnStreamClose);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, &Connection::OnFrameRecv);
  nghttp2_session_client_new(&session_, cb, this);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                       {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow}};
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 2);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnWindow);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = this;
  if (::epoll_ctl(w->epoll_fd(), EPOLL_CTL_ADD, fd_.get(), &ev) != 0) {
    dead_ = true;
    w->errors().Add(std::string("epoll_ctl: ") + std::strerror(errno));
  }
}

void Connection::StartCall(Client* c) {
  c->body.assign(5, '\0');
  if (o_.op == "put") {
    c->put.set_key(c->keys.Next());
    c->put.AppendToString(&c->body);
  } else {
    c->range.set_key(c->keys.Next());
    c->range.AppendToString(&c->body);
  }
  uint32_t len = static_cast<uint32_t>(c->body.size() - 5);
  c->body[1] = static_cast<char>(len >> 24);
  c->body[2] = static_cast<char>(len >> 16);
  c->body[3] = static_cast<char>(len >> 8);
  c->body[4] = static_cast<char>(len);
  c->body_off = 0;
  c->http_status = 0;
  c->grpc_status = -1;
  c->grpc_message.clear();
  auto nv = [](const char* n, const std::string& v) {
    return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(n)),
                      reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), std::strlen(n), v.size(),
                      NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
  };
  static const std::string kPost = "POST", kHttp = "http", kGrpc = "application/grpc", kTrailers = "trailers";
  const nghttp2_nv hdrs[] = {nv(":method", kPost),         nv(":scheme", kHttp),
                             nv(":path", path_),           nv(":authority", authority_),
                             nv("content-type", kGrpc),    nv("te", kTrailers),
                             nv("token", token_)};
  nghttp2_data_provider body{};
  body.source.ptr = c;
  body.read_callback = &Connection::ReadBody;
  c->start = Clock::now();
  c->outstanding = true;
  const size_t nhdrs = sizeof(hdrs) / sizeof(hdrs[0]) - (token_.empty() ? 1 : 0);
  int32_t id = nghttp2_submit_request(session_, nullptr, hdrs, nhdrs, &body, c);
  if (id < 0) {
    // The session takes no more streams (e.g. after GOAWAY): the connection is done.
    worker_->Finished(c, Clock::now(), std::string("submit request: ") + nghttp2_strerror(id));
    Fail(std::string("submit request: ") + nghttp2_strerror(id));
    worker_->Next(c, Clock::now());  // retires c
  }
}

ssize_t Connection::ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                             nghttp2_data_source* src, void*) {
  auto* c = static_cast<Client*>(src->ptr);
  size_t n = std::min(len, c->body.size() - c->body_off);
  std::memcpy(buf, c->body.data() + c->body_off, n);
  c->body_off += n;
  if (c->body_off == c->body.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

int Connection::OnHeader(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
                         const uint8_t* value, size_t valuelen, uint8_t, void*) {
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  auto* c = static_cast<Client*>(nghttp2_session_get_stream_user_data(s, f->hd.stream_id));
  if (c == nullptr) return 0;
  std::string_view n(reinterpret_cast<const char*>(name), namelen);
  std::string_view v(reinterpret_cast<const char*>(value), valuelen);
  if (n == ":status") {
    c->http_status = std::atoi(std::string(v).c_str());
  } else if (n == "grpc-status") {
    c->grpc_status = std::atoi(std::string(v).c_str());
  } else if (n == "grpc-message") {
    c->grpc_message = PercentDecode(std::string(v));
  }
  return 0;
}

int Connection::OnFrameRecv(nghttp2_session*, const nghttp2_frame* f, void* self) {
  if (f->hd.type == NGHTTP2_GOAWAY) static_cast<Connection*>(self)->goaway_ = true;
  return 0;
}

int Connection::OnStreamClose(nghttp2_session* s, int32_t stream_id, uint32_t error_code, void* self) {
  auto* conn = static_cast<Connection*>(self);
  auto* c = static_cast<Client*>(nghttp2_session_get_stream_user_data(s, stream_id));
  if (c == nullptr || !c->outstanding) return 0;
  std::string error;
  if (error_code != NGHTTP2_NO_ERROR && c->grpc_status < 0) {
    error = std::string("stream reset: ") + nghttp2_http2_strerror(error_code);
  } else if (c->grpc_status < 0) {
    error = "response without grpc-status (HTTP status " + std::to_string(c->http_status) + ")";
  } else if (c->grpc_status != 0) {
    error = "grpc-status " + std::to_string(c->grpc_status) + ": " + c->grpc_message;
  }
  auto now = Clock::now();
  conn->worker_->Finished(c, now, error);
  conn->worker_->Next(c, now);
  return 0;
}

void Connection::OnReadable() {
  if (dead_) return;
  char buf[65536];
  ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    Fail(n == 0 ? "connection closed by the server" : std::string("recv: ") + std::strerror(errno));
    return;
  }
  ssize_t r = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(buf), static_cast<size_t>(n));
  if (r < 0) {
    Fail(std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(r)));
    return;
  }
  Flush();
}

void Connection::Flush() {
  if (dead_) return;
  for (;;) {
    if (out_off_ == out_.size()) {
      out_.clear();
      out_off_ = 0;
      const uint8_t* d = nullptr;
      ssize_t n;
      while ((n = nghttp2_session_mem_send(session_, &d)) > 0) out_.append(reinterpret_cast<const char*>(d), n);
      if (n < 0) {
        Fail(std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(n)));
        return;
      }
      if (out_.empty()) break;
    }
    ssize_t w = ::send(fd_.get(), out_.data() + out_off_, out_.size() - out_off_, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      Fail(std::string("send: ") + std::strerror(errno));
      return;
    }
    out_off_ += static_cast<size_t>(w);
  }
  SetWantWrite(out_off_ < out_.size());
  if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_) && out_off_ == out_.size()) {
    Fail("connection finished by the server (GOAWAY)");
  }
}

void Connection::SetWantWrite(bool on) {
  if (on == want_write_) return;
  want_write_ = on;
  epoll_event ev{};
  ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
  ev.data.ptr = this;
  ::epoll_ctl(worker_->epoll_fd(), EPOLL_CTL_MOD, fd_.get(), &ev);
}

// The connection is gone: every call still on it fails and its client retires.
void Connection::Fail(const std::string& why) {
  if (dead_) return;
  dead_ = true;
  ::epoll_ctl(worker_->epoll_fd(), EPOLL_CTL_DEL, fd_.get(), nullptr);
  auto now = Clock::now();
  for (Client* c : clients_) {
    if (!c->outstanding) continue;
    worker_->Finished(c, now, why);
    worker_->Next(c, now);  // retires c: the connection is dead
  }
}

// Resolves host:port (numeric, or a name such as localhost; [v6] in
// brackets) and connects; the socket comes back non-blocking with NODELAY.
UniqueFd Connect(const std::string& endpoint, std::string* error) {
  std::string hp = endpoint.rfind("http://", 0) == 0 ? endpoint.substr(7) : endpoint;
  size_t colon = hp.rfind(':');
  if (colon == std::string::npos) {
    *error = "endpoint " + endpoint + " has no port";
    return UniqueFd();
  }
  std::string host = hp.substr(0, colon), port = hp.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    *error = "resolve " + hp + ": " + ::gai_strerror(rc);
    return UniqueFd();
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owner(res, &::freeaddrinfo);
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid() || ::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0) {
      *error = "connect " + hp + ": " + std::strerror(errno);
      continue;
    }
    int one = 1;
    if (::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK) != 0) {
      *error = std::string("socket options: ") + std::strerror(errno);
      return UniqueFd();
    }
    return fd;
  }
  return UniqueFd();
}

}  // namespace

LoadResult RunH2Load(const LoadOptions& o, ErrorLog& errors) {
  RequestBudget budget(o);
  const int conns = std::max(1, o.conns);
  const int threads = std::clamp(o.threads, 1, conns);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < threads; ++t) {
    workers.push_back(std::make_unique<Worker>(budget, errors));
    if (!workers.back()->Init()) {
      errors.Add(std::string("epoll_create1: ") + std::strerror(errno));
      return {};
    }
  }
  // Connection i belongs to worker i % threads; client c uses connection c % conns.
  std::vector<Connection*> by_index;
  for (int i = 0; i < conns; ++i) {
    std::string error;
    UniqueFd fd = Connect(o.endpoint, &error);
    if (!fd.valid()) {
      errors.Add(error);
      return {};
    }
    Worker* w = workers[static_cast<size_t>(i % threads)].get();
    auto conn = std::make_unique<Connection>(w, o, std::move(fd));
    by_index.push_back(conn.get());
    w->Adopt(std::move(conn));
  }
  const std::string value(o.val_size, 'v');
  for (int c = 0; c < o.clients; ++c) {
    auto client = std::make_unique<Client>(c, o.key_space);
    client->put.set_value(value);
    client->range.set_serializable(!o.linearizable);
    by_index[static_cast<size_t>(c % conns)]->AddClient(client.get());
    workers[static_cast<size_t>((c % conns) % threads)]->AdoptClient(std::move(client));
  }
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 1; t < threads; ++t) ts.emplace_back([w = workers[static_cast<size_t>(t)].get()] { w->Run(); });
  workers[0]->Run();
  for (auto& t : ts) t.join();
  LoadResult r;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  for (auto& w : workers) r.latencies_ms.insert(r.latencies_ms.end(), w->latencies().begin(), w->latencies().end());
  return r;
}

}  // namespace skiff::store::bench
