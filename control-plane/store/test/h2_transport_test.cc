// The lean HTTP/2 transport (h2_transport.cc) under what etcdctl does not
// exercise: many streams on one connection, flow control of a large
// response, oversized requests, a client that vanishes mid-stream, GOAWAY on
// shutdown, a watcher that stops reading while writers go on, unknown
// methods. Clients: gRPC C++ (an independent HTTP/2 implementation) and a raw
// nghttp2 client session where the test needs to misbehave on purpose.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "skiff/common/unique_fd.h"
#include "skiff/store/errors.h"
#include "skiff/store/server.h"
#include "store_helpers.h"

namespace skiff::store {
namespace {

using namespace std::chrono_literals;

// A raw HTTP/2 client over a blocking socket: sends what the test builds,
// records what comes back.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    nghttp2_session_callbacks* cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        cb, [](nghttp2_session*, const nghttp2_frame* f, void* u) {
          auto* self = static_cast<RawClient*>(u);
          if (f->hd.type == NGHTTP2_GOAWAY) self->goaway_ = true;
          if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
              (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            self->ended_.insert(f->hd.stream_id);
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_header_callback(
        cb, [](nghttp2_session*, const nghttp2_frame* f, const uint8_t* n, size_t nl, const uint8_t* v,
               size_t vl, uint8_t, void* u) {
          static_cast<RawClient*>(u)
              ->headers_[f->hd.stream_id][std::string(reinterpret_cast<const char*>(n), nl)] =
              std::string(reinterpret_cast<const char*>(v), vl);
          return 0;
        });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cb, [](nghttp2_session*, uint8_t, int32_t id, const uint8_t* d, size_t l, void* u) {
          static_cast<RawClient*>(u)->data_[id].append(reinterpret_cast<const char*>(d), l);
          return 0;
        });
    nghttp2_session_client_new(&session_, cb, this);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
  }
  ~RawClient() { nghttp2_session_del(session_); }
  bool connected() const { return connected_; }

  // Opens a gRPC call on path; body (already framed) goes out with END_STREAM
  // when end is set.
  int32_t Start(const std::string& path, std::string body, bool end,
                const std::vector<std::pair<std::string, std::string>>& extra = {}) {
    std::vector<std::pair<std::string, std::string>> h = {{":method", "POST"},
                                                          {":scheme", "http"},
                                                          {":path", path},
                                                          {":authority", "localhost"},
                                                          {"content-type", "application/grpc"},
                                                          {"te", "trailers"}};
    h.insert(h.end(), extra.begin(), extra.end());
    std::vector<nghttp2_nv> nv;
    for (auto& [k, v] : h) {
      nv.push_back({reinterpret_cast<uint8_t*>(k.data()), reinterpret_cast<uint8_t*>(v.data()), k.size(),
                    v.size(), NGHTTP2_NV_FLAG_NONE});
    }
    bodies_.push_back(std::make_unique<Body>(Body{std::move(body), 0, end}));
    nghttp2_data_provider prd{};
    prd.source.ptr = bodies_.back().get();
    prd.read_callback = [](nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                           nghttp2_data_source* src, void*) -> ssize_t {
      auto* b = static_cast<Body*>(src->ptr);
      size_t n = std::min(len, b->bytes.size() - b->off);
      std::memcpy(buf, b->bytes.data() + b->off, n);
      b->off += n;
      if (b->off == b->bytes.size()) {
        if (b->end) {
          *flags |= NGHTTP2_DATA_FLAG_EOF;
        } else if (n == 0) {
          return NGHTTP2_ERR_DEFERRED;
        }
      }
      return static_cast<ssize_t>(n);
    };
    int32_t id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), &prd, nullptr);
    Flush();
    return id;
  }

  // A plain (not gRPC) GET or HEAD request.
  int32_t StartPlain(const std::string& method, const std::string& path) {
    std::vector<std::pair<std::string, std::string>> h = {
        {":method", method}, {":scheme", "http"}, {":path", path}, {":authority", "localhost"}};
    std::vector<nghttp2_nv> nv;
    for (auto& [k, v] : h) {
      nv.push_back({reinterpret_cast<uint8_t*>(k.data()), reinterpret_cast<uint8_t*>(v.data()), k.size(),
                    v.size(), NGHTTP2_NV_FLAG_NONE});
    }
    int32_t id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), nullptr, nullptr);
    Flush();
    return id;
  }

  void Flush() {
    const uint8_t* d;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(session_, &d)) > 0) WriteAll(d, static_cast<size_t>(n));
  }
  void WriteAll(const void* d, size_t n) {
    const char* p = static_cast<const char*>(d);
    while (n > 0) {
      ssize_t w = ::send(fd_.get(), p, n, MSG_NOSIGNAL);
      if (w <= 0) return;
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  // Reads and processes input until pred() or EOF or the deadline.
  bool ReadUntil(const std::function<bool()>& pred, std::chrono::milliseconds limit = 10s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    char buf[65536];
    while (!pred()) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
      if (n <= 0) {
        eof_ = true;
        return pred();
      }
      nghttp2_session_mem_recv(session_, reinterpret_cast<uint8_t*>(buf), static_cast<size_t>(n));
      Flush();
    }
    return true;
  }
  void CloseSocket() { fd_.reset(); }

  bool goaway_ = false, eof_ = false;
  std::set<int32_t> ended_;
  std::map<int32_t, std::map<std::string, std::string>> headers_;
  std::map<int32_t, std::string> data_;

 private:
  struct Body {
    std::string bytes;
    size_t off;
    bool end;
  };
  UniqueFd fd_;
  bool connected_ = false;
  nghttp2_session* session_ = nullptr;
  std::vector<std::unique_ptr<Body>> bodies_;
};

std::string FramedBytes(const std::string& body, uint8_t flag) {
  std::string f(5, '\0');
  f[0] = static_cast<char>(flag);
  uint32_t n = htonl(static_cast<uint32_t>(body.size()));
  std::memcpy(&f[1], &n, 4);
  return f + body;
}

std::string Framed(const google::protobuf::MessageLite& m) { return FramedBytes(m.SerializeAsString(), 0); }

// gzip (window_bits 16 + MAX_WBITS) or zlib "deflate" (MAX_WBITS) bytes of in.
std::string Compress(const std::string& in, int window_bits) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, in.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(out.size() - z.avail_out);
  deflateEnd(&z);
  return out;
}

class H2Transport : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::RemoveStale("/tmp", "skiff-h2-test-");
    dir_ = "/tmp/skiff-h2-test-" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    store_ = testing::OpenStore(dir_ + "/data");
    ASSERT_TRUE(store_);
    ServerOptions so;
    so.listen_client_urls = {"http://127.0.0.1:0"};
    so.transport = "h2";
    so.commit_on_loop = commit_on_loop_;
    auto s = Server::Start(store_.get(), so);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    port_ = server_->ClientPorts()[0];
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    args.SetMaxSendMessageSize(-1);
    channel_ = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port_),
                                         grpc::InsecureChannelCredentials(), args);
    kv_ = etcdserverpb::KV::NewStub(channel_);
  }
  void TearDown() override {
    kv_.reset();
    channel_.reset();
    if (server_) server_->Shutdown();
    server_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  grpc::Status Put(const std::string& k, const std::string& v, etcdserverpb::PutResponse* out = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    etcdserverpb::PutRequest r;
    r.set_key(k);
    r.set_value(v);
    etcdserverpb::PutResponse resp;
    return kv_->Put(&ctx, r, out ? out : &resp);
  }

  bool commit_on_loop_ = true;
  std::string dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Server> server_;
  int port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<etcdserverpb::KV::Stub> kv_;
};

// Writes through the committer thread (ServerOptions::commit_on_loop off).
class H2TransportViaCommitter : public H2Transport {
 protected:
  void SetUp() override {
    commit_on_loop_ = false;
    H2Transport::SetUp();
  }
};

// 300 puts in flight on one connection: each answered once with its own
// revision, all stored, and committed in shared batches (fewer commits than
// requests) whether the loop leads the commits or the committer thread does.
void ManyConcurrentPuts(etcdserverpb::KV::Stub* kv_, Store* store) {
  constexpr int kCalls = 300;
  const int64_t commits_before = store->GetMetrics().commits;
  struct Pending {
    grpc::ClientContext ctx;
    etcdserverpb::PutRequest req;
    etcdserverpb::PutResponse resp;
    grpc::Status st;
  };
  std::vector<std::unique_ptr<Pending>> calls;
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  for (int i = 0; i < kCalls; ++i) {
    auto p = std::make_unique<Pending>();
    p->req.set_key("many/" + std::to_string(i));
    p->req.set_value(std::string(100 + i, 'v'));
    p->req.set_prev_kv(true);
    Pending* raw = p.get();
    calls.push_back(std::move(p));
    kv_->async()->Put(&raw->ctx, &raw->req, &raw->resp, [&, raw](grpc::Status st) {
      std::lock_guard<std::mutex> l(mu);
      raw->st = std::move(st);
      ++done;
      cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, 30s, [&] { return done == kCalls; })) << done << " of " << kCalls;
  }
  std::set<int64_t> revs;
  for (auto& c : calls) {
    ASSERT_TRUE(c->st.ok()) << c->st.error_message();
    revs.insert(c->resp.header().revision());
  }
  EXPECT_EQ(revs.size(), static_cast<size_t>(kCalls));  // one revision per put, none lost or answered twice
  etcdserverpb::RangeRequest rr;
  rr.set_key("many/");
  rr.set_range_end("many0");
  grpc::ClientContext ctx;
  etcdserverpb::RangeResponse resp;
  ASSERT_TRUE(kv_->Range(&ctx, rr, &resp).ok());
  ASSERT_EQ(resp.count(), kCalls);
  for (const auto& kv : resp.kvs()) {
    int i = std::atoi(kv.key().substr(5).c_str());
    EXPECT_EQ(kv.value().size(), static_cast<size_t>(100 + i)) << kv.key();
  }
  EXPECT_LT(store->GetMetrics().commits - commits_before, kCalls);
}

TEST_F(H2Transport, ManyConcurrentStreamsOnOneConnectionEachGetTheirOwnAnswer) {
  ManyConcurrentPuts(kv_.get(), store_.get());
}

TEST_F(H2TransportViaCommitter, ManyConcurrentStreamsOnOneConnectionEachGetTheirOwnAnswer) {
  ManyConcurrentPuts(kv_.get(), store_.get());
}

TEST_F(H2Transport, LargeRangeResponseFlowsThroughTheFlowControlWindow) {
  // 6 MiB in one response: far above HTTP/2's 64 KiB default window and our
  // 4 MiB stream window, so it only arrives if WINDOW_UPDATEs are honoured.
  const std::string value(64 * 1024, 'z');
  for (int i = 0; i < 96; ++i) ASSERT_TRUE(Put("big/" + std::to_string(1000 + i), value).ok());
  for (int round = 0; round < 3; ++round) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    etcdserverpb::RangeRequest rr;
    rr.set_key("big/");
    rr.set_range_end("big0");
    etcdserverpb::RangeResponse resp;
    grpc::Status st = kv_->Range(&ctx, rr, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_EQ(resp.kvs_size(), 96);
    for (const auto& kv : resp.kvs()) ASSERT_EQ(kv.value(), value);
  }
}

TEST_F(H2Transport, OversizedRequestsGetEtcdsErrorsAndTheStoreKeepsServing) {
  grpc::Status st = Put("huge", std::string(1600 * 1024, 'x'));  // over --max-request-bytes
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(), "etcdserver: request is too large");
  st = Put("huger", std::string(3 << 20, 'x'));  // over the transport's message limit
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("received message larger than max"), std::string::npos)
      << st.error_message();
  etcdserverpb::PutResponse resp;
  st = Put("after", "ok", &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.header().revision(), 2);  // neither oversized put was applied
}

TEST_F(H2Transport, ErrorMessagesArePercentEncodedAndDecodedBack) {
  etcdserverpb::RangeRequest rr;
  rr.set_key("a");
  rr.set_revision(100);  // future revision
  grpc::ClientContext ctx;
  etcdserverpb::RangeResponse resp;
  grpc::Status st = kv_->Range(&ctx, rr, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(st.error_message(), "etcdserver: mvcc: required revision is a future revision");
}

TEST_F(H2Transport, UnknownMethodIsUnimplemented) {
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  int32_t id = c.Start("/etcdserverpb.KV/NoSuchMethod", std::string(5, '\0'), true);
  ASSERT_TRUE(c.ReadUntil([&] { return c.ended_.count(id) > 0; }));
  EXPECT_EQ(c.headers_[id]["grpc-status"], "12");
  EXPECT_EQ(c.headers_[id]["grpc-message"], "unknown method NoSuchMethod for service etcdserverpb.KV");
  int32_t unknown_service = c.Start("/etcdserverpb.Auth/UserList", std::string(5, '\0'), true);
  ASSERT_TRUE(c.ReadUntil([&] { return c.ended_.count(unknown_service) > 0; }));
  EXPECT_EQ(c.headers_[unknown_service]["grpc-status"], "12");
  EXPECT_EQ(c.headers_[unknown_service]["grpc-message"], "unknown service etcdserverpb.Auth");
  // The connection still serves a real call afterwards.
  etcdserverpb::RangeRequest rr;
  rr.set_key("x");
  int32_t id2 = c.Start("/etcdserverpb.KV/Range", Framed(rr), true);
  ASSERT_TRUE(c.ReadUntil([&] { return c.ended_.count(id2) > 0; }));
  EXPECT_EQ(c.headers_[id2]["grpc-status"], "0");
  EXPECT_EQ(c.headers_[id2]["content-type"], "application/grpc");
}

// One plain HTTP/1.x exchange on the gRPC port: the request goes out in
// the given pieces; returns everything until the server closes.
std::string Http1Exchange(int port, const std::vector<std::string>& pieces) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return "connect failed";
  timeval tv{10, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  for (const auto& p : pieces) {
    if (::send(fd.get(), p.data(), p.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(p.size())) return "send failed";
    std::this_thread::sleep_for(20ms);
  }
  std::string out;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd.get(), buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

// etcd answers plain HTTP (/health, /version, /metrics) on its client port;
// so does the transport, over HTTP/1.x and HTTP/2, with Go's answers to
// other methods and malformed requests, and gRPC on the port is unaffected.
TEST_F(H2Transport, PlainHttpOnTheGrpcPortOverHttp1AndHttp2) {
  auto status_line = [](const std::string& r) { return r.substr(0, r.find("\r\n")); };
  std::string h = Http1Exchange(port_, {"GET /hea", "lth HTTP/1.1\r\nHost: x\r\n", "\r\n"});
  EXPECT_EQ(status_line(h), "HTTP/1.1 200 OK") << h;
  EXPECT_NE(h.find("\r\n\r\n{\"health\":\"true\""), std::string::npos) << h;
  std::string head = Http1Exchange(port_, {"HEAD /version HTTP/1.0\r\n\r\n"});
  EXPECT_EQ(status_line(head), "HTTP/1.0 200 OK") << head;
  EXPECT_EQ(head.substr(head.find("\r\n\r\n") + 4), "") << head;
  EXPECT_EQ(status_line(Http1Exchange(port_, {"POST /health HTTP/1.1\r\n\r\n"})), "HTTP/1.1 405 Method Not Allowed");
  EXPECT_EQ(status_line(Http1Exchange(port_, {"GET /nope HTTP/1.1\r\n\r\n"})), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(status_line(Http1Exchange(port_, {"hello\r\n\r\n"})), "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(status_line(Http1Exchange(port_, {"GET / HTTP/1.1\r\nX: " + std::string(17 << 10, 'x')})),
            "HTTP/1.1 431 Request Header Fields Too Large");

  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  int32_t m = c.StartPlain("GET", "/metrics");
  int32_t v = c.StartPlain("HEAD", "/version");
  ASSERT_TRUE(c.ReadUntil([&] { return c.ended_.count(m) > 0 && c.ended_.count(v) > 0; }));
  EXPECT_EQ(c.headers_[m][":status"], "200");
  EXPECT_EQ(c.headers_[m]["content-type"], "text/plain; version=0.0.4");
  EXPECT_NE(c.data_[m].find("\netcd_debugging_mvcc_current_revision "), std::string::npos) << c.data_[m];
  EXPECT_EQ(c.headers_[m]["content-length"], std::to_string(c.data_[m].size()));
  EXPECT_EQ(c.headers_[v][":status"], "200");
  EXPECT_EQ(c.data_[v], "");
  // The same connection then serves gRPC.
  etcdserverpb::RangeRequest rr;
  rr.set_key("x");
  int32_t id = c.Start("/etcdserverpb.KV/Range", Framed(rr), true);
  ASSERT_TRUE(c.ReadUntil([&] { return c.ended_.count(id) > 0; }));
  EXPECT_EQ(c.headers_[id]["grpc-status"], "0");
  EXPECT_TRUE(Put("after-plain-http", "1").ok());
}

// Compressed requests (gRPC's compressed flag with grpc-encoding gzip or
// deflate) are decompressed like etcd's grpc-go server does; a real gRPC C++
// client with compression on gets its writes stored.
TEST_F(H2Transport, CompressedRequestsAreDecompressed) {
  const std::string big(200 * 1024, 'z');  // compresses to a few hundred bytes
  for (auto algo : {GRPC_COMPRESS_GZIP, GRPC_COMPRESS_DEFLATE}) {
    grpc::ClientContext ctx;
    ctx.set_compression_algorithm(algo);
    etcdserverpb::PutRequest r;
    r.set_key("grpc-" + std::to_string(static_cast<int>(algo)));
    r.set_value(big);
    etcdserverpb::PutResponse resp;
    grpc::Status st = kv_->Put(&ctx, r, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  etcdserverpb::PutRequest pr;
  pr.set_key("raw-gzip");
  pr.set_value(big);
  int32_t ok = c.Start("/etcdserverpb.KV/Put", FramedBytes(Compress(pr.SerializeAsString(), 16 + MAX_WBITS), 1),
                       true, {{"grpc-encoding", "gzip"}});
  ASSERT_TRUE(c.ReadUntil([&] { return c.ended_.count(ok) > 0; }));
  EXPECT_EQ(c.headers_[ok]["grpc-status"], "0");
  for (const std::string key : {"grpc-2", "grpc-1", "raw-gzip"}) {  // GRPC_COMPRESS_GZIP is 2, DEFLATE 1
    etcdserverpb::RangeRequest rr;
    rr.set_key(key);
    grpc::ClientContext ctx;
    etcdserverpb::RangeResponse resp;
    ASSERT_TRUE(kv_->Range(&ctx, rr, &resp).ok());
    ASSERT_EQ(resp.kvs_size(), 1) << key;
    EXPECT_EQ(resp.kvs(0).value(), big) << key;
  }

  // What grpc-go answers for an encoding it has no decompressor for, for the
  // compressed flag without an encoding, and for bytes that do not inflate.
  std::string gz = Compress(pr.SerializeAsString(), 16 + MAX_WBITS);
  int32_t snappy = c.Start("/etcdserverpb.KV/Put", FramedBytes(gz, 1), true, {{"grpc-encoding", "snappy"}});
  int32_t bare = c.Start("/etcdserverpb.KV/Put", FramedBytes(gz, 1), true);
  int32_t bad = c.Start("/etcdserverpb.KV/Put", FramedBytes(gz.substr(0, gz.size() / 2), 1), true,
                        {{"grpc-encoding", "gzip"}});
  ASSERT_TRUE(c.ReadUntil([&] { return c.ended_.count(snappy) && c.ended_.count(bare) && c.ended_.count(bad); }));
  EXPECT_EQ(c.headers_[snappy]["grpc-status"], "12");
  EXPECT_EQ(c.headers_[snappy]["grpc-message"], "grpc: Decompressor is not installed for grpc-encoding \"snappy\"");
  EXPECT_EQ(c.headers_[bare]["grpc-status"], "13");
  EXPECT_EQ(c.headers_[bare]["grpc-message"], "grpc: compressed flag set with identity or empty encoding");
  EXPECT_EQ(c.headers_[bad]["grpc-status"], "13");
  EXPECT_NE(c.headers_[bad]["grpc-message"].find("failed to decompress"), std::string::npos)
      << c.headers_[bad]["grpc-message"];

  // A message that inflates past the transport's limit (4 MiB): etcd's error.
  int32_t bomb = c.Start("/etcdserverpb.KV/Put", FramedBytes(Compress(std::string(5 << 20, 'b'), 16 + MAX_WBITS), 1),
                         true, {{"grpc-encoding", "gzip"}});
  ASSERT_TRUE(c.ReadUntil([&] { return c.ended_.count(bomb) > 0; }));
  EXPECT_EQ(c.headers_[bomb]["grpc-status"], "8");
  EXPECT_NE(c.headers_[bomb]["grpc-message"].find("after decompression larger than max"), std::string::npos)
      << c.headers_[bomb]["grpc-message"];
  etcdserverpb::PutResponse resp;
  ASSERT_TRUE(Put("after", "ok", &resp).ok());
  EXPECT_EQ(resp.header().revision(), 5);  // three good puts before; nothing from the failed ones
}

// Opens a watch of key on c (half-closed when end) and waits for "created":
// the stream's ID, or 0.
int32_t OpenWatch(RawClient& c, const std::string& key, bool end) {
  etcdserverpb::WatchRequest wr;
  wr.mutable_create_request()->set_key(key);
  int32_t id = c.Start("/etcdserverpb.Watch/Watch", Framed(wr), end);
  return c.ReadUntil([&] { return c.data_[id].size() > 5; }) ? id : 0;
}

TEST_F(H2Transport, ClientVanishingMidStreamFreesItsWatchAndOthersGoOn) {
  for (int round = 0; round < 20; ++round) {
    RawClient c(port_);
    ASSERT_TRUE(c.connected());
    ASSERT_NE(OpenWatch(c, "w", false), 0);
    // Half a request message, then the socket goes away.
    etcdserverpb::WatchRequest wr;
    wr.mutable_create_request()->set_key("w");
    std::string half = Framed(wr).substr(0, 4);
    c.WriteAll(half.data(), half.size());
    c.CloseSocket();
  }
  // Every stream's watcher is released (the store counts live streams).
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (store_->GetMetrics().watch_streams != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(store_->GetMetrics().watch_streams, 0);
  ASSERT_TRUE(Put("w", "still serving").ok());
}

TEST_F(H2Transport, ShutdownSendsGoAwayToOpenConnections) {
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  ASSERT_NE(OpenWatch(c, "g", false), 0);
  std::thread stopper([&] { server_->Shutdown(); });
  EXPECT_TRUE(c.ReadUntil([&] { return c.goaway_ && c.eof_; }));
  stopper.join();
}

TEST_F(H2Transport, AWatcherThatStopsReadingDoesNotStallWriters) {
  // The raw client opens a watch on everything and then never reads again:
  // its socket buffers and HTTP/2 window fill up.
  RawClient slow(port_);
  ASSERT_TRUE(slow.connected());
  etcdserverpb::WatchRequest wr;
  wr.mutable_create_request()->set_key("s/");
  wr.mutable_create_request()->set_range_end("s0");
  int32_t id = slow.Start("/etcdserverpb.Watch/Watch", Framed(wr), false);
  ASSERT_TRUE(slow.ReadUntil([&] { return slow.data_[id].size() > 5; }));
  // 32 MiB of writes: far more than the socket buffers, the flow control
  // windows and the transport's per-stream backlog together.
  const std::string value(16 * 1024, 'w');
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> writers;
  std::atomic<int> failed{0};
  for (int w = 0; w < 8; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < 256; ++i) {
        if (!Put("s/" + std::to_string(w) + "/" + std::to_string(i), value).ok()) ++failed;
      }
    });
  }
  for (auto& t : writers) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 60s);
  // A second watcher on another connection sees the newest write at once.
  etcdserverpb::PutResponse last;
  ASSERT_TRUE(Put("s/last", "x", &last).ok());
  auto watch = etcdserverpb::Watch::NewStub(channel_);
  grpc::ClientContext ctx;
  auto stream = watch->Watch(&ctx);
  etcdserverpb::WatchRequest req;
  req.mutable_create_request()->set_key("s/last");
  req.mutable_create_request()->set_start_revision(last.header().revision());
  ASSERT_TRUE(stream->Write(req));
  etcdserverpb::WatchResponse resp;
  bool seen = false;
  while (!seen && stream->Read(&resp)) {
    for (const auto& e : resp.events()) seen |= e.kv().key() == "s/last";
  }
  EXPECT_TRUE(seen);
  ctx.TryCancel();
  stream->Finish();
}

// A watch stream the client half-closed keeps its watches, as etcd's does
// (its recv loop ends, the stream stays until the client goes).
TEST_F(H2Transport, AWatchStreamStaysOpenAfterTheClientHalfCloses) {
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  const int32_t id = OpenWatch(c, "half", true);
  ASSERT_NE(id, 0);
  ASSERT_TRUE(Put("half", "v").ok());
  ASSERT_TRUE(c.ReadUntil([&] { return c.data_[id].find("half") != std::string::npos; })) << "no event";
  EXPECT_EQ(c.ended_.count(id), 0u) << "the stream ended at the half-close";
}

// A client of the JSON gateway on a plain socket: sends pieces, reads what
// comes until a string shows up or the server closes.
class GatewayConn {
 public:
  explicit GatewayConn(int port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  bool connected() const { return connected_; }
  void Send(const std::string& s) {
    EXPECT_EQ(::send(fd_.get(), s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
  }
  // Reads until `want` is in what came (true), or the server closed or 10 s passed.
  bool ReadUntil(const std::string& want) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (in_.find(want) == std::string::npos) {
      pollfd p{fd_.get(), POLLIN, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      char buf[8192];
      ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
      if (n <= 0) return in_.find(want) != std::string::npos;
      in_.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  // Everything until the server closes.
  const std::string& ReadAll() {
    ReadUntil(std::string(1, '\xff'));  // never sent: reads until close (or 10 s)
    return in_;
  }
  const std::string& in() const { return in_; }
  void Close() { fd_.reset(); }

 private:
  UniqueFd fd_;
  bool connected_ = false;
  std::string in_;
};

// One gateway request and its whole answer: the status line, and the body.
std::pair<std::string, std::string> GatewayPost(int port, const std::string& path, const std::string& body) {
  GatewayConn g(port);
  if (!g.connected()) return {"connect failed", ""};
  g.Send("POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  const std::string& r = g.ReadAll();
  const size_t end = r.find("\r\n\r\n");
  return {r.substr(0, r.find("\r\n")), end == std::string::npos ? "" : r.substr(end + 4)};
}

// etcd's JSON gateway (POST /v3/...): unary calls with bodies by length or
// chunked and split anywhere, JSON in and out as etcd's grpc-gateway words
// it, its errors with grpc-gateway's HTTP codes, and gRPC unaffected.
TEST_F(H2Transport, JsonGatewayAnswersUnaryCallsLikeEtcds) {
  auto status_line = [](const std::string& r) { return r.substr(0, r.find("\r\n")); };
  auto body = [](const std::string& r) { return r.substr(r.find("\r\n\r\n") + 4); };
  // A put whose head and body arrive in pieces, split inside the JSON.
  const std::string put = R"({"key":"Z3cvYQ==","value":"MQ==","prev_kv":true})";
  std::string r = Http1Exchange(port_, {"POST /v3/kv/put HTTP/1.1\r\nContent-Le", "ngth: " + std::to_string(put.size()) +
                                        "\r\n\r\n" + put.substr(0, 9), put.substr(9)});
  EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK") << r;
  EXPECT_NE(r.find("\r\nContent-Type: application/json\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("\r\nAccess-Control-Allow-Origin: *\r\n"), std::string::npos) << r;
  EXPECT_NE(body(r).find(R"("revision":"2")"), std::string::npos) << r;
  // A chunked range (a chunk extension, the JSON cut across chunks) on /v3beta/.
  r = Http1Exchange(port_, {"POST /v3beta/kv/range HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                            "6;ext=1\r\n{\"key\"\r\n", "b\r\n:\"Z3cvYQ==\"\r\n1\r\n}\r\n0\r\n\r\n"});
  EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK") << r;
  EXPECT_NE(body(r).find(R"("kvs":[{"key":"Z3cvYQ==","create_revision":"2","mod_revision":"2","version":"1","value":"MQ=="}],"count":"1"})"),
            std::string::npos) << r;
  // Errors: etcd's message in grpc-gateway's body, its HTTP code.
  auto [st, b] = GatewayPost(port_, "/v3/kv/range", "");
  EXPECT_EQ(st, "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(b, R"({"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3})");
  std::tie(st, b) = GatewayPost(port_, "/v3/lease/revoke", R"({"ID":"123"})");
  EXPECT_EQ(st, "HTTP/1.1 404 Not Found");
  EXPECT_EQ(b, R"({"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5})");
  std::tie(st, b) = GatewayPost(port_, "/v3/kv/range", R"({"key":"Z3cvYQ==","revision":"99"})");
  EXPECT_EQ(st, "HTTP/1.1 400 Bad Request");
  EXPECT_NE(b.find("etcdserver: mvcc: required revision is a future revision"), std::string::npos) << b;
  std::tie(st, b) = GatewayPost(port_, "/v3/kv/range", "{bad");
  EXPECT_EQ(st, "HTTP/1.1 400 Bad Request");
  EXPECT_NE(b.find(R"("code":3})"), std::string::npos) << b;
  std::tie(st, b) = GatewayPost(port_, "/v3/kv/range", R"({"key":"!!"})");  // not base64
  EXPECT_EQ(st, "HTTP/1.1 400 Bad Request") << b;
  std::tie(st, b) = GatewayPost(port_, "/v3/auth/authenticate", "{}");
  EXPECT_EQ(st, "HTTP/1.1 501 Not Implemented");
  EXPECT_NE(b.find(R"("code":12)"), std::string::npos) << b;
  // A JSON request past the message limit (2 MiB here) is refused whole.
  std::tie(st, b) = GatewayPost(port_, "/v3/kv/put",
                                R"({"key":"Ymln","value":")" + std::string(4 << 20, 'Q') + R"("})");
  EXPECT_EQ(st, "HTTP/1.1 429 Too Many Requests");
  EXPECT_NE(b.find("grpc: received message larger than max"), std::string::npos) << b.substr(0, 200);
  // Unknown fields are ignored, as etcd's gateway does.
  std::tie(st, b) = GatewayPost(port_, "/v3/kv/range", R"({"key":"Z3cvYQ==","no_such_field":1,"count_only":true})");
  EXPECT_EQ(st, "HTTP/1.1 200 OK") << b;
  EXPECT_NE(b.find(R"("count":"1")"), std::string::npos) << b;
  // Not POST, a CORS preflight, a broken chunked body.
  EXPECT_EQ(status_line(Http1Exchange(port_, {"GET /v3/kv/range HTTP/1.1\r\n\r\n"})), "HTTP/1.1 405 Method Not Allowed");
  r = Http1Exchange(port_, {"OPTIONS /v3/kv/range HTTP/1.1\r\n\r\n"});
  EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK") << r;
  EXPECT_NE(r.find("Access-Control-Allow-Methods: POST"), std::string::npos) << r;
  r = Http1Exchange(port_, {"POST /v3/kv/range HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"});
  EXPECT_EQ(status_line(r), "HTTP/1.1 400 Bad Request") << r;
  // Nothing of the failed calls was applied; gRPC goes on.
  etcdserverpb::PutResponse resp;
  ASSERT_TRUE(Put("after-gateway", "1", &resp).ok());
  EXPECT_EQ(resp.header().revision(), 3);
}

// Streams over the gateway: a watch's messages come as chunked
// {"result":...} lines while the client goes on sending requests in a
// chunked body; lease keep-alives answer each JSON object of the body and
// end with it; an HTTP/1.0 client gets the lines unchunked; a client that
// goes away frees its watch.
TEST_F(H2Transport, JsonGatewayStreamsWatchesAndKeepAlives) {
  {
    GatewayConn w(port_);
    ASSERT_TRUE(w.connected());
    const std::string create = R"({"create_request":{"key":"Z3cv","range_end":"Z3cw","prev_kv":true}})";
    w.Send("POST /v3/watch HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    char size[16];
    std::snprintf(size, sizeof(size), "%zx\r\n", create.size());
    w.Send(size + create + "\r\n");
    ASSERT_TRUE(w.ReadUntil(R"("created":true}})")) << w.in();
    EXPECT_NE(w.in().find("Transfer-Encoding: chunked\r\n"), std::string::npos) << w.in();
    ASSERT_TRUE(Put("gw/a", "1").ok());
    ASSERT_TRUE(Put("gw/a", "2").ok());
    ASSERT_TRUE(w.ReadUntil(R"("prev_kv":{"key":"Z3cvYQ==","create_revision":"2","mod_revision":"2","version":"1","value":"MQ=="}}]}})"))
        << w.in();
    const std::string progress = R"({"progress_request":{}})";
    std::snprintf(size, sizeof(size), "%zx\r\n", progress.size());
    w.Send(size + progress + "\r\n");
    ASSERT_TRUE(w.ReadUntil(R"("revision":"3","raft_term":"2"},"watch_id":"-1"}})")) << w.in();  // a progress notification
    EXPECT_EQ(store_->GetMetrics().watch_streams, 1);
    w.Close();
  }
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (store_->GetMetrics().watch_streams != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(store_->GetMetrics().watch_streams, 0) << "the closed connection's watch was not released";

  // An HTTP/1.0 watch: the lines as they are, no chunk sizes.
  GatewayConn old(port_);
  const std::string create = R"({"create_request":{"key":"Z3cvYQ==","start_revision":"2"}})";
  old.Send("POST /v3/watch HTTP/1.0\r\nContent-Length: " + std::to_string(create.size()) + "\r\n\r\n" + create);
  ASSERT_TRUE(old.ReadUntil(R"("value":"Mg=="}}]}})")) << old.in();
  EXPECT_NE(old.in().find("HTTP/1.0 200 OK\r\n"), std::string::npos) << old.in();
  EXPECT_NE(old.in().find("\r\n\r\n{\"result\":{\"header\":"), std::string::npos) << old.in();
  old.Close();

  auto [st, granted] = GatewayPost(port_, "/v3/lease/grant", R"({"TTL":"30","ID":"4242"})");
  ASSERT_EQ(st, "HTTP/1.1 200 OK") << granted;
  GatewayConn ka(port_);
  const std::string two = R"({"ID":"4242"} {"ID":"4242"})";
  ka.Send("POST /v3/lease/keepalive HTTP/1.1\r\nContent-Length: " + std::to_string(two.size()) + "\r\n\r\n" + two);
  const std::string& all = ka.ReadAll();
  const std::string line = R"(,"ID":"4242","TTL":"30"}})";
  const size_t first = all.find(line);
  ASSERT_NE(first, std::string::npos) << all;
  EXPECT_NE(all.find(line, first + 1), std::string::npos) << all;
  EXPECT_EQ(all.substr(all.size() - 5), "0\r\n\r\n") << "the stream did not end with the body:\n" << all;
}

// The JSON gateway over HTTP/2 (what curl uses over HTTPS): a POST with a
// JSON body on a stream, answered with JSON and grpc-gateway's status; a
// watch streaming lines; a GET of a gateway path 405; gRPC on the same
// connection unaffected.
TEST_F(H2Transport, JsonGatewayOverHttp2) {
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  const std::vector<std::pair<std::string, std::string>> json = {{"content-type", "application/json"}};
  int32_t put = c.Start("/v3/kv/put", R"({"key":"aDI=","value":"dg=="})", true, json);
  ASSERT_TRUE(c.ReadUntil([&] { return c.ended_.count(put) > 0; }));
  EXPECT_EQ(c.headers_[put][":status"], "200");
  EXPECT_EQ(c.headers_[put]["content-type"], "application/json");
  EXPECT_NE(c.data_[put].find(R"("revision":"2")"), std::string::npos) << c.data_[put];
  EXPECT_EQ(c.headers_[put].count("grpc-status"), 0u) << "a gateway answer has no gRPC trailers";
  int32_t bad = c.Start("/v3/kv/range", "{}", true, json);
  int32_t watch = c.Start("/v3/watch", R"({"create_request":{"key":"aDI=","start_revision":"1"}})", false, json);
  int32_t get = c.StartPlain("GET", "/v3/kv/range");
  ASSERT_TRUE(c.ReadUntil([&] {
    return c.ended_.count(bad) > 0 && c.ended_.count(get) > 0 && c.data_[watch].find("dg==") != std::string::npos;
  })) << c.data_[watch];
  EXPECT_EQ(c.headers_[bad][":status"], "400");
  EXPECT_EQ(c.data_[bad], R"({"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3})");
  EXPECT_EQ(c.headers_[get][":status"], "405");
  EXPECT_EQ(c.data_[watch].rfind(R"({"result":{"header":)", 0), 0u) << c.data_[watch];
  EXPECT_EQ(c.ended_.count(watch), 0u) << "the watch stream ended";
  etcdserverpb::RangeRequest rr;
  rr.set_key("aDI=");
  int32_t id = c.Start("/etcdserverpb.KV/Range", Framed(rr), true);
  ASSERT_TRUE(c.ReadUntil([&] { return c.ended_.count(id) > 0; }));
  EXPECT_EQ(c.headers_[id]["grpc-status"], "0");
}

}  // namespace
}  // namespace skiff::store
