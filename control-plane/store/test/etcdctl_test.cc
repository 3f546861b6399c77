// The real etcdctl (Debian's etcd-client, API v3) against skiff-store, and
// the same commands against a real etcd started here, outputs compared where
// they must match. Loopback only; ports picked by the kernel.
#include <regex>
#include <tuple>

#include "gtest/gtest.h"
#include "test_process.h"

namespace skiff::store::testing {
namespace {

// Masks what legitimately differs between two servers: cluster/member IDs,
// lease IDs, and a lease's remaining seconds.
std::string Normalize(std::string s) {
  s = std::regex_replace(s, std::regex(R"("cluster_id":\d+,"member_id":\d+)"), R"("cluster_id":C,"member_id":M)");
  s = std::regex_replace(s, std::regex(R"("raft_term":\d+)"), R"("raft_term":T)");
  s = std::regex_replace(s, std::regex(R"(\b[0-9a-f]{12,16}\b)"), "<lease>");
  s = std::regex_replace(s, std::regex(R"(remaining\(\d+s\))"), "remaining(Ns)");
  // etcd lists a lease's keys in Go map order: compare them as a set.
  std::smatch m;
  if (std::regex_search(s, m, std::regex(R"(attached keys\(\[([^\]]*)\]\))"))) {
    std::vector<std::string> keys;
    std::istringstream in(m[1].str());
    for (std::string k; in >> k;) keys.push_back(k);
    std::sort(keys.begin(), keys.end());
    std::string joined;
    for (const auto& k : keys) joined += (joined.empty() ? "" : " ") + k;
    s = m.prefix().str() + "attached keys([" + joined + "])" + m.suffix().str();
  }
  s = std::regex_replace(s, std::regex(R"re("(ID|id)":\d+)re"), R"("ID":L)");
  return s;
}

// A TCP socket connected to 127.0.0.1:port, or -1.
int ConnectLoopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    fd = -1;
  }
  return fd;
}

// One HTTP/1.0 GET on 127.0.0.1:port: the whole response ("" when the
// connection failed).
std::string HttpGet(int port, const std::string& path, const std::string& method = "GET") {
  int fd = ConnectLoopback(port);
  std::string out;
  if (fd >= 0) {
    std::string req = method + " " + path + " HTTP/1.0\r\n\r\n";
    (void)!::write(fd, req.data(), req.size());
    char buf[8192];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  }
  if (fd >= 0) ::close(fd);
  return out;
}

struct HttpAnswer {
  int status = 0;
  std::string body;  // de-chunked
};

// One POST of the JSON gateway on 127.0.0.1:port (Connection: close). With
// lines > 0, reads until the body holds that many lines (a stream that does
// not end), else until the server closes; 10 s at most.
HttpAnswer HttpPost(int port, const std::string& path, const std::string& body, int lines = 0,
                    const std::string& headers = "") {
  HttpAnswer out;
  int fd = ConnectLoopback(port);
  std::string raw;
  auto body_of = [&] {
    const size_t end = raw.find("\r\n\r\n");
    if (end == std::string::npos) return std::string();
    std::string b = raw.substr(end + 4);
    if (raw.substr(0, end).find("Transfer-Encoding: chunked") == std::string::npos) return b;
    std::string plain;
    for (size_t pos = 0;;) {
      const size_t nl = b.find("\r\n", pos);
      if (nl == std::string::npos) break;
      const size_t n = std::strtoul(b.substr(pos, nl - pos).c_str(), nullptr, 16);
      if (n == 0 || nl + 2 + n > b.size()) break;
      plain += b.substr(nl + 2, n);
      pos = nl + 2 + n + 2;
    }
    return plain;
  };
  if (fd >= 0) {
    const std::string req = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + headers +
                            "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                            "\r\n\r\n" + body;
    (void)!::write(fd, req.data(), req.size());
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (lines > 0 && std::count(out.body.begin(), out.body.end(), '\n') >= lines) break;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[8192];
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      raw.append(buf, static_cast<size_t>(n));
      out.body = body_of();
    }
  }
  if (fd >= 0) ::close(fd);
  if (raw.rfind("HTTP/1.1 ", 0) == 0) out.status = std::atoi(raw.c_str() + 9);
  out.body = body_of();
  return out;
}

// Masks what two servers' JSON legitimately differs in: IDs, the term, a
// lease's remaining seconds.
std::string NormalizeJson(std::string s) {
  s = std::regex_replace(s, std::regex(R"re("(cluster_id|member_id)":"\d+")re"), R"("$1":"ID")");
  s = std::regex_replace(s, std::regex(R"re("raft_term":"\d+")re"), R"("raft_term":"T")");
  return std::regex_replace(s, std::regex(R"re("TTL":"(59|60)")re"), R"("TTL":"~60")");
}

// Runs the etcdctl command every 100 ms until it fails (a compactor got to
// the revision it reads), for at most 10 s; returns the last result.
CmdResult GetUntilFails(const Server& s, const std::vector<std::string>& args) {
  CmdResult r;
  for (int i = 0; i < 100; ++i) {
    r = Etcdctl(s.endpoint(), args);
    if (r.code != 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return r;
}

// skiff-store started with these flags must exit non-zero, say `want` and
// create nothing.
void ExpectRefused(const ScratchDir& dir, const std::vector<std::string>& flags, const std::string& want) {
  const std::string data = dir.sub("bad-data"), log = dir.sub("bad.log");
  std::filesystem::remove(log);
  std::vector<std::string> argv = {BinDir() + "/skiff-store", "--data-dir", data};
  argv.insert(argv.end(), flags.begin(), flags.end());
  Child c(argv, log);
  std::string what;
  for (const auto& f : flags) what += f + " ";
  EXPECT_NE(c.Wait(), 0) << what;
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find(want), std::string::npos) << what << "\n" << text;
  EXPECT_FALSE(std::filesystem::exists(data)) << what << ": nothing may be created on a bad flag";
}

class EtcdctlCompat : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<ScratchDir>(std::string("etcdctl-") +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ours_ = StartSkiffStore(dir_->sub("skiff"), dir_->sub("skiff.log"), 0,
                            {"--listen-metrics-urls", "http://127.0.0.1:" + std::to_string(metrics_port_ = FreePort())});
    ASSERT_GT(ours_.child.pid(), 0) << "skiff-store did not start";
    etcd_ = StartEtcd(dir_->sub("etcd"), dir_->sub("etcd.log"));
    ASSERT_GT(etcd_.child.pid(), 0) << "etcd did not start";
  }

  // Runs the command on both and expects the same exit code, stdout and
  // "Error:" line. Returns skiff-store's result.
  CmdResult Both(const std::vector<std::string>& args, const std::string& in = "") {
    CmdResult a = Etcdctl(ours_.endpoint(), args, in);
    CmdResult b = Etcdctl(etcd_.endpoint(), args, in);
    std::string what;
    for (const auto& x : args) what += x.size() > 64 ? "<big> " : x + " ";
    EXPECT_EQ(a.code, b.code) << what << "\nours: " << a.err << "\netcd: " << b.err;
    EXPECT_EQ(Normalize(a.out), Normalize(b.out)) << what;
    EXPECT_EQ(ErrorLine(a.err), ErrorLine(b.err)) << what;
    return a;
  }

  std::unique_ptr<ScratchDir> dir_;
  Server ours_, etcd_;
  int metrics_port_ = 0;
};

TEST_F(EtcdctlCompat, KvCommandsMatchRealEtcd) {
  Both({"put", "a", "1"});
  Both({"put", "b", "2"});
  Both({"put", "c", "3"});
  Both({"put", "a", "11"});
  Both({"put", "ab", "12", "--prev-kv"});
  Both({"put", "ab", "13", "--prev-kv"});
  Both({"get", "a"});
  Both({"get", "a", "-w", "json"});
  Both({"get", "a", "--prefix"});
  Both({"get", "", "--from-key"});
  Both({"get", "b", "--from-key", "--keys-only"});
  Both({"get", "a", "c"});
  Both({"get", "", "--prefix", "--keys-only"});
  Both({"get", "", "--prefix", "--limit", "2", "-w", "json"});
  Both({"get", "a", "--rev", "2"});
  Both({"get", "", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"});
  Both({"get", "", "--prefix", "--order=DESCEND"});
  Both({"get", "", "--prefix", "--sort-by=VALUE", "--order=ASCEND", "-w", "json"});
  Both({"get", "", "--prefix", "--sort-by=CREATE", "--order=DESCEND", "--limit", "2"});
  Both({"get", "", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "-w", "json"});
  Both({"get", "a", "--print-value-only"});
  Both({"get", "zzz"});
  Both({"get", "c", "a"});  // range end before key: empty
  Both({"del", "c", "--prev-kv"});
  Both({"del", "nothing"});
  Both({"del", "a", "--prefix", "--prev-kv", "-w", "json"});
  Both({"get", "", "--prefix", "-w", "json"});
  Both({"put", "ign", "x"});
  Both({"put", "ign", "--ignore-value"});
  Both({"get", "ign", "-w", "json"});
}

TEST_F(EtcdctlCompat, TxnInteractiveMatchesRealEtcd) {
  Both({"put", "k1", "v1"});
  Both({"txn", "-i"}, "value(\"k1\") = \"v1\"\n\nput k2 v2\nget k1\n\nput k3 v3\n\n");
  Both({"txn"}, "mod(\"k1\") > \"100\"\n\nput k4 v4\n\nget k2\ndel k1\n\n");
  Both({"txn", "-w", "json"}, "version(\"k2\") = \"1\"\ncreate(\"k9\") = \"0\"\n\nput k5 v5\n\n\n");
  Both({"txn"}, "value(\"nope\") != \"x\"\n\nput k6 v6\n\nput k7 v7\n\n");
  Both({"get", "k", "--prefix"});
}

TEST_F(EtcdctlCompat, WatchOutputMatchesRealEtcd) {
  Both({"put", "w/a", "1"});
  Both({"put", "w/a", "2"});
  auto start_watch = [&](const Server& s, const std::string& out) {
    return Child({"etcdctl", "--endpoints", s.endpoint(), "watch", "w/", "--prefix", "--rev", "2", "--prev-kv"}, out,
                 "", false);
  };
  std::string out_ours = dir_->sub("watch-ours.out"), out_etcd = dir_->sub("watch-etcd.out");
  Child wo = start_watch(ours_, out_ours);
  Child we = start_watch(etcd_, out_etcd);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  Both({"put", "w/b", "3"});
  Both({"put", "x", "not watched"});
  Both({"del", "w/a"});
  Both({"txn"}, "\nput w/c 1\nput w/d 2\n\n\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  wo.Kill();
  we.Kill();
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  std::string a = slurp(out_ours), b = slurp(out_etcd);
  EXPECT_NE(a.find("DELETE"), std::string::npos) << a;
  EXPECT_EQ(a, b);
}

TEST_F(EtcdctlCompat, LeaseCommandsMatchRealEtcd) {
  auto grant = [&](const Server& s) {
    CmdResult r = Etcdctl(s.endpoint(), {"lease", "grant", "60"});
    std::smatch m;
    EXPECT_TRUE(std::regex_search(r.out, m, std::regex("lease ([0-9a-f]+) granted with TTL\\(60s\\)"))) << r.out;
    return m.size() > 1 ? m[1].str() : std::string("0");
  };
  std::string lo = grant(ours_), le = grant(etcd_);
  auto both = [&](std::vector<std::string> a, std::vector<std::string> b) {
    CmdResult x = Etcdctl(ours_.endpoint(), a), y = Etcdctl(etcd_.endpoint(), b);
    EXPECT_EQ(x.code, y.code) << a[0] << " " << a[1] << "\n" << x.err;
    EXPECT_EQ(Normalize(x.out), Normalize(y.out)) << a[0] << " " << a[1];
    EXPECT_EQ(ErrorLine(x.err), ErrorLine(y.err));
    return x;
  };
  both({"put", "l1", "v", "--lease", lo}, {"put", "l1", "v", "--lease", le});
  both({"put", "l2", "v", "--lease", lo}, {"put", "l2", "v", "--lease", le});
  both({"lease", "timetolive", lo, "--keys"}, {"lease", "timetolive", le, "--keys"});
  both({"lease", "timetolive", lo, "-w", "json"}, {"lease", "timetolive", le, "-w", "json"});
  both({"lease", "list"}, {"lease", "list"});
  CmdResult ka = both({"lease", "keep-alive", "--once", lo}, {"lease", "keep-alive", "--once", le});
  EXPECT_NE(ka.out.find("keepalived with TTL(60)"), std::string::npos) << ka.out;
  both({"lease", "revoke", lo}, {"lease", "revoke", le});
  both({"get", "l", "--prefix"}, {"get", "l", "--prefix"});
  both({"lease", "timetolive", lo}, {"lease", "timetolive", le});
  both({"lease", "revoke", lo}, {"lease", "revoke", le});  // unknown now
  Both({"put", "k", "v", "--lease", "1234abcd"});            // unknown lease
}

TEST_F(EtcdctlCompat, CompactionAndBadInputFailLikeEtcdAndStoreKeepsServing) {
  for (int i = 0; i < 5; ++i) Both({"put", "c", std::to_string(i)});
  Both({"compact", "4"});
  Both({"get", "c", "--rev", "3"});  // compacted
  Both({"get", "c", "--rev", "4"});
  Both({"get", "c", "--rev", "100"});  // future
  Both({"compact", "2"});             // already compacted
  Both({"put", "big"}, std::string(1600 * 1024, 'x'));  // > 1.5 MiB: request too large
  std::string ops;
  for (int i = 0; i < 129; ++i) ops += "put t" + std::to_string(i) + " v\n";
  Both({"txn"}, "\n" + ops + "\n\n");  // > 128 ops
  Both({"put", "", "v"});             // empty key
  Both({"get", "c", "b"});            // inverted range
  Both({"del", "c", "b"});
  CmdResult r = Both({"get", "c"});
  EXPECT_EQ(r.out, "c\n4\n");
}

// etcdctl defrag after deletes and a compaction: the db size endpoint status
// reports shrinks on both servers, and the remaining keys stay.
TEST_F(EtcdctlCompat, DefragShrinksTheDbSizeEndpointStatusReports) {
  auto status = [](const std::string& ep, const std::string& field) -> int64_t {
    CmdResult st = Etcdctl(ep, {"endpoint", "status", "-w", "json"});
    EXPECT_EQ(st.code, 0) << st.err;
    std::smatch m;
    if (!std::regex_search(st.out, m, std::regex("\"" + field + "\":(\\d+)"))) {
      ADD_FAILURE() << "no " << field << " in " << st.out;
      return 0;
    }
    return std::stoll(m[1].str());
  };
  const std::string big(1 << 20, 'x');
  for (const Server* srv : {&ours_, &etcd_}) {
    const std::string ep = srv->endpoint();
    ASSERT_EQ(Etcdctl(ep, {"put", "stay", "here"}).code, 0);
    for (int i = 0; i < 12; ++i) ASSERT_EQ(Etcdctl(ep, {"put", "big/" + std::to_string(i)}, big).code, 0);
    ASSERT_EQ(Etcdctl(ep, {"del", "--prefix", "big/"}).code, 0);
    const int64_t rev = status(ep, "revision");
    CmdResult c = Etcdctl(ep, {"compaction", "--physical", std::to_string(rev)});
    ASSERT_EQ(c.code, 0) << c.err;
    const int64_t before = status(ep, "dbSize");
    EXPECT_GT(before, 12 << 20) << ep;
    CmdResult d = Etcdctl(ep, {"defrag"});
    ASSERT_EQ(d.code, 0) << d.err;
    EXPECT_NE(d.out.find("Finished defragmenting etcd member"), std::string::npos) << d.out;
    const int64_t after = status(ep, "dbSize");
    EXPECT_LT(after, before / 4) << ep << ": " << before << " -> " << after;
    CmdResult g = Etcdctl(ep, {"get", "stay"});
    EXPECT_EQ(g.out, "stay\nhere\n") << ep;
    EXPECT_EQ(status(ep, "revision"), rev) << ep;
  }
}

TEST_F(EtcdctlCompat, EndpointStatusHealthAndMemberListWork) {
  CmdResult st = Etcdctl(ours_.endpoint(), {"endpoint", "status", "-w", "table"});
  EXPECT_EQ(st.code, 0) << st.err;
  EXPECT_NE(st.out.find("3.5.13"), std::string::npos) << st.out;
  CmdResult stc = Etcdctl(ours_.endpoint(), {"endpoint", "status", "--cluster"});
  EXPECT_EQ(stc.code, 0) << stc.err;
  EXPECT_NE(stc.out.find(ours_.endpoint()), std::string::npos) << stc.out;
  CmdResult h = Etcdctl(ours_.endpoint(), {"endpoint", "health", "--cluster"});
  EXPECT_EQ(h.code, 0) << h.err;
  EXPECT_NE((h.out + h.err).find("is healthy"), std::string::npos) << h.out << h.err;
  CmdResult ml = Etcdctl(ours_.endpoint(), {"member", "list"});
  EXPECT_EQ(ml.code, 0) << ml.err;
  EXPECT_NE(ml.out.find(", started, default, "), std::string::npos) << ml.out;
  CmdResult mle = Etcdctl(etcd_.endpoint(), {"member", "list", "-w", "json"});
  CmdResult mlo = Etcdctl(ours_.endpoint(), {"member", "list", "-w", "json"});
  EXPECT_EQ(std::regex_replace(mlo.out, std::regex(R"(\d+|"http[^"]*")"), "N"),
            std::regex_replace(mle.out, std::regex(R"(\d+|"http[^"]*")"), "N"));
  CmdResult hash = Etcdctl(ours_.endpoint(), {"endpoint", "hashkv"});
  EXPECT_EQ(hash.code, 0) << hash.err;
  CmdResult alarm = Etcdctl(ours_.endpoint(), {"alarm", "list"});
  EXPECT_EQ(alarm.code, 0) << alarm.err;
  CmdResult defrag = Etcdctl(ours_.endpoint(), {"defrag"});
  EXPECT_EQ(defrag.code, 0) << defrag.err;

  // /health and /metrics over plain HTTP.
  auto http_get = [&](const std::string& path) { return HttpGet(metrics_port_, path); };
  EXPECT_NE(http_get("/health").find(R"({"health":"true")"), std::string::npos);
  EXPECT_NE(http_get("/metrics").find("etcd_debugging_mvcc_current_revision 1"), std::string::npos);
}

// etcd answers plain HTTP on its client port too (curl http://host:2379/health):
// the same paths, status codes and JSON keys on skiff-store's client port,
// and gRPC on that port keeps working.
TEST_F(EtcdctlCompat, HealthVersionAndMetricsOnTheClientPortLikeEtcd) {
  auto status_line = [](const std::string& r) { return r.substr(0, r.find("\r\n")); };
  for (const Server* s : {&ours_, &etcd_}) {
    const char* who = s == &ours_ ? "skiff-store" : "etcd";
    std::string h = HttpGet(s->port, "/health");
    EXPECT_EQ(status_line(h), "HTTP/1.0 200 OK") << who << "\n" << h;
    EXPECT_NE(h.find(R"("health":"true")"), std::string::npos) << who << "\n" << h;
    std::string v = HttpGet(s->port, "/version");
    EXPECT_EQ(status_line(v), "HTTP/1.0 200 OK") << who << "\n" << v;
    EXPECT_NE(v.find(R"({"etcdserver":")"), std::string::npos) << who << "\n" << v;
    std::string m = HttpGet(s->port, "/metrics");
    EXPECT_EQ(status_line(m), "HTTP/1.0 200 OK") << who;
    EXPECT_NE(m.find("\netcd_debugging_mvcc_current_revision "), std::string::npos) << who;
    for (const char* metric : {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                               "process_max_fds", "process_start_time_seconds", "process_virtual_memory_bytes"}) {
      EXPECT_NE(m.find(std::string("\n") + metric + " "), std::string::npos) << who << " " << metric;
    }
    EXPECT_EQ(status_line(HttpGet(s->port, "/no-such-path")), "HTTP/1.0 404 Not Found") << who;
  }
  std::string head = HttpGet(ours_.port, "/health", "HEAD");
  EXPECT_EQ(status_line(head), "HTTP/1.0 200 OK") << head;
  EXPECT_EQ(head.find("health\":"), std::string::npos) << "HEAD has no body:\n" << head;
  Both({"put", "after-http", "1"});
  EXPECT_EQ(Both({"get", "after-http", "--print-value-only"}).out, "1\n");
}

// etcd's JSON gateway (grpc-gateway, POST /v3/...): the same requests to
// both servers get the same HTTP status and the same JSON, errors included;
// a watch over it streams the same lines.
TEST_F(EtcdctlCompat, JsonGatewayAnswersLikeEtcd) {
  const std::vector<std::pair<std::string, std::string>> calls = {
      {"/v3/kv/put", R"({"key":"Zm9v","value":"YmFy"})"},
      {"/v3/kv/put", R"({"key":"Zm9v","value":"YmF6","prev_kv":true})"},
      {"/v3/kv/put", R"({"key":"Zm9vMg==","value":"eA=="})"},
      {"/v3/kv/range", R"({"key":"Zm9v"})"},
      {"/v3beta/kv/range", R"({"key":"Zm9v","range_end":"Zm9w","sort_order":"DESCEND","sort_target":"MOD"})"},
      {"/v3/kv/range", R"({"key":"AA==","range_end":"AA==","limit":1,"keys_only":true})"},
      {"/v3/kv/range", R"({"key":"AA==","range_end":"AA==","count_only":true,"unknown_field":1})"},
      {"/v3/kv/range", R"({"key":"Zm9v","revision":"2"})"},
      {"/v3/kv/range", R"({"key":"Zm9v","revision":"100"})"},
      {"/v3/kv/range", "{}"},
      {"/v3/kv/range", R"({"key":"","range_end":"AA=="})"},
      {"/v3/kv/range", R"({"key":"Zm9v","min_mod_revision":"2","max_create_revision":"3"})"},
      {"/v3/kv/put", "{}"},
      {"/v3/kv/put", R"({"key":"Zm9v","lease":"77"})"},
      {"/v3/kv/put", R"({"key":"Zm9v","ignore_value":true,"value":"eA=="})"},
      {"/v3/kv/txn", R"({"compare":[{"key":"Zm9v","target":"VALUE","result":"EQUAL","value":"YmF6"}],)"
                     R"("success":[{"request_put":{"key":"Yg==","value":"Mg=="}}],"failure":[{"request_range":{"key":"Zm9v"}}]})"},
      {"/v3/kv/txn", R"({"compare":[{"key":"Zm9v","target":"VERSION","result":"GREATER","version":"5"}],)"
                     R"("failure":[{"request_range":{"key":"Zm9v"}},{"request_delete_range":{"key":"Yg==","prev_kv":true}}]})"},
      {"/v3/kv/txn", R"({"compare":[{"key":"","target":"VERSION","version":"1"}]})"},
      {"/v3/kv/txn", R"({"success":[{"request_range":{"key":""}}]})"},
      {"/v3/kv/txn", R"({"success":[{"request_delete_range":{"key":""}}]})"},
      {"/v3/kv/txn", R"({"success":[{}]})"},
      {"/v3/kv/txn", R"({"failure":[{"request_put":{"key":""}}]})"},
      {"/v3/kv/txn", R"({"failure":[{"request_put":{"key":"Zm9v","ignore_lease":true,"lease":"3"}}]})"},
      {"/v3/kv/txn", R"({"success":[{"request_put":{"key":"eA=="}},{"request_put":{"key":"eA=="}}]})"},
      {"/v3/kv/txn", R"({"success":[{"request_txn":{"success":[{"request_put":{"key":"eQ=="}}]}}]})"},
      {"/v3/kv/deleterange", R"({"key":"Zm9vMg==","prev_kv":true})"},
      {"/v3/kv/deleterange", "{}"},
      {"/v3/kv/compaction", R"({"revision":"3","physical":true})"},
      {"/v3/kv/range", R"({"key":"Zm9v","revision":"2"})"},
      {"/v3/kv/compaction", R"({"revision":"2"})"},
      {"/v3/kv/compaction", R"({"revision":"99"})"},
      {"/v3/lease/grant", R"({"TTL":"60","ID":"1000"})"},
      {"/v3/lease/grant", R"({"TTL":"60","ID":"1000"})"},
      {"/v3/kv/put", R"({"key":"bA==","lease":"1000"})"},
      {"/v3/lease/timetolive", R"({"ID":"1000","keys":true})"},
      {"/v3/kv/lease/timetolive", R"({"ID":"5"})"},
      {"/v3/lease/leases", "{}"},
      {"/v3/lease/revoke", R"({"ID":"1000"})"},
      {"/v3/kv/lease/revoke", R"({"ID":"1000"})"},
      {"/v3/maintenance/transfer-leadership", R"({"targetID":"5"})"},
      {"/v3/kv/range", "{bad"},
  };
  for (const auto& [path, body] : calls) {
    HttpAnswer a = HttpPost(ours_.port, path, body), b = HttpPost(etcd_.port, path, body);
    EXPECT_EQ(a.status, b.status) << path << " " << body << "\nours: " << a.body << "\netcd: " << b.body;
    // Go's JSON decoder and protobuf's word a syntax error differently.
    if (body != "{bad") {
      EXPECT_EQ(NormalizeJson(a.body), NormalizeJson(b.body)) << path << " " << body;
    }
  }
  // History from revision 4 (compacted at 3) of everything, then a watch from
  // the compacted revision 1: canceled with the compaction revision.
  for (const std::string w : {R"({"create_request":{"key":"AA==","range_end":"AA==","start_revision":"4","prev_kv":true}})",
                              R"({"create_request":{"key":"Zm9v","start_revision":"1"}})"}) {
    HttpAnswer a = HttpPost(ours_.port, "/v3/watch", w, 2), b = HttpPost(etcd_.port, "/v3/watch", w, 2);
    EXPECT_EQ(a.status, 200) << a.body;
    EXPECT_EQ(NormalizeJson(a.body), NormalizeJson(b.body)) << w;
  }
}

// etcd's auth through etcdctl on both servers, outputs and errors compared:
// users, roles, permissions (prefix, from-key, single key, read, write,
// readwrite), the root user and role rules, enabling and disabling, what a
// user may and may not read, write, delete, watch, compact or run as
// maintenance, password changes; skiff-store restarted in the middle keeps
// its auth state. Then the JSON gateway with tokens in the Authorization header.
TEST_F(EtcdctlCompat, AuthCommandsMatchRealEtcd) {
  struct Step {
    std::vector<std::string> args;
    std::string in = "";
  };
  const std::vector<Step> before = {
      {{"auth", "enable"}},
      {{"user", "add", "root:rootpw"}},
      {{"user", "add", "root:other"}},
      {{"user", "add", "alice:alicepw"}},
      {{"user", "add", "bob:b"}},
      {{"user", "list"}},
      {{"role", "add", "r1"}},
      {{"role", "add", "r1"}},
      {{"role", "list"}},
      {{"role", "grant-permission", "r1", "read", "/a", "/b"}},
      {{"role", "grant-permission", "r1", "readwrite", "/w", "--prefix"}},
      {{"role", "grant-permission", "r1", "read", "/r", "--from-key"}},
      {{"role", "grant-permission", "r1", "write", "/o"}},
      {{"role", "grant-permission", "nosuch", "read", "/a"}},
      {{"role", "get", "r1"}},
      {{"role", "get", "nosuch"}},
      {{"user", "grant-role", "alice", "r1"}},
      {{"user", "grant-role", "alice", "nosuch"}},
      {{"user", "grant-role", "nosuch", "r1"}},
      {{"user", "get", "alice"}},
      {{"user", "get", "alice", "--detail"}},
      {{"auth", "enable"}},  // root lacks the root role: etcdctl adds it and retries
      {{"user", "get", "root"}},
      {{"auth", "enable"}},
      {{"put", "/a1", "x"}},
      {{"--user", "root:wrong", "get", "/a1"}},
      {{"--user", "root:rootpw", "put", "/a1", "x"}},
      {{"--user", "root:rootpw", "put", "/w1", "y"}},
  };
  const std::vector<Step> after = {
      {{"get", "/a1"}},
      {{"--user", "alice:alicepw", "get", "/a1"}},
      {{"--user", "alice:alicepw", "get", "/a1", "/a9"}},
      {{"--user", "alice:alicepw", "get", "/c"}},
      {{"--user", "alice:alicepw", "get", "/r", "--from-key"}},
      {{"--user", "alice:alicepw", "get", "/q", "--from-key"}},
      {{"--user", "alice:alicepw", "put", "/a1", "z"}},
      {{"--user", "alice:alicepw", "put", "/o", "1"}},
      {{"--user", "alice:alicepw", "put", "/o", "2", "--prev-kv"}},
      {{"--user", "alice:alicepw", "put", "/w2", "z"}},
      {{"--user", "alice:alicepw", "get", "/w", "--prefix"}},
      {{"--user", "alice:alicepw", "del", "/w2"}},
      {{"--user", "alice:alicepw", "del", "/w", "--prefix", "--prev-kv"}},
      {{"--user", "alice:alicepw", "txn"}, "value(\"/a1\") = \"x\"\n\nput /w3 q\n\n"},
      {{"--user", "alice:alicepw", "txn"}, "value(\"/c\") = \"x\"\n\nput /w3 q\n\n"},
      {{"--user", "alice:alicepw", "user", "list"}},
      {{"--user", "alice:alicepw", "user", "get", "alice"}},
      {{"--user", "alice:alicepw", "user", "get", "root"}},
      {{"--user", "alice:alicepw", "role", "get", "r1"}},
      {{"--user", "alice:alicepw", "role", "get", "root"}},
      {{"--user", "alice:alicepw", "endpoint", "hashkv"}},
      {{"--user", "alice:alicepw", "defrag"}},
      {{"--user", "alice:alicepw", "alarm", "list"}},
      {{"--user", "alice:alicepw", "compaction", "2"}},
      {{"--user", "root:rootpw", "user", "list"}},
      {{"--user", "root:rootpw", "user", "delete", "root"}},
      {{"--user", "root:rootpw", "user", "revoke-role", "root", "root"}},
      {{"--user", "root:rootpw", "role", "delete", "root"}},
      {{"--user", "root:rootpw", "role", "revoke-permission", "r1", "/nope"}},
      {{"--user", "root:rootpw", "user", "revoke-role", "alice", "nosuch"}},
      {{"--user", "root:rootpw", "role", "revoke-permission", "r1", "/a", "/b"}},
      {{"--user", "alice:alicepw", "get", "/a1"}},
      {{"--user", "root:rootpw", "user", "passwd", "alice", "--interactive=false"}, "newpw\n"},
      {{"--user", "alice:alicepw", "get", "/w1"}},
      {{"--user", "alice:newpw", "get", "/w1"}},
      {{"--user", "root:rootpw", "user", "revoke-role", "alice", "r1"}},
      {{"--user", "alice:newpw", "get", "/w1"}},
      {{"--user", "root:rootpw", "role", "delete", "r1"}},
      {{"--user", "root:rootpw", "user", "delete", "alice"}},
      {{"--user", "bob:b", "auth", "disable"}},
  };
  for (const auto& st : before) Both(st.args, st.in);
  // skiff-store restarted: auth stays on with the same users and roles.
  ours_.child.Kill();
  ours_ = StartSkiffStore(dir_->sub("skiff"), dir_->sub("skiff-restarted.log"), ours_.port);
  ASSERT_GT(ours_.child.pid(), 0) << "skiff-store did not restart";
  for (const auto& st : after) Both(st.args, st.in);

  // The gateway: a token from /v3/auth/authenticate in the Authorization
  // header; none, a bogus one, a key outside the user's roles, a denied watch.
  auto token = [](int port, const std::string& who, const std::string& pw) {
    HttpAnswer a = HttpPost(port, "/v3/auth/authenticate", R"({"name":")" + who + R"(","password":")" + pw + R"("})");
    std::smatch m;
    return std::regex_search(a.body, m, std::regex(R"re("token":"([^"]+)")re")) ? m[1].str() : std::string();
  };
  const std::string tours = token(ours_.port, "bob", "b"), tetcd = token(etcd_.port, "bob", "b");
  ASSERT_FALSE(tours.empty());
  ASSERT_FALSE(tetcd.empty());
  const std::vector<std::pair<std::string, std::string>> calls = {
      {"/v3/kv/range", R"({"key":"L2Ex"})"},
      {"/v3/auth/user/get", R"({"name":"bob"})"},
      {"/v3/auth/user/list", "{}"},
      {"/v3/auth/role/list", "{}"},
      {"/v3/maintenance/status", "{}"},
      {"/v3/auth/authenticate", R"({"name":"bob","password":"wrong"})"},
  };
  for (const auto& [path, body] : calls) {
    for (const std::string& how : {std::string("none"), std::string("bogus"), std::string("good")}) {
      auto hdr = [&](const std::string& t) {
        return how == "none" ? std::string() : "Authorization: " + (how == "bogus" ? std::string("bogus.1") : t) + "\r\n";
      };
      HttpAnswer a = HttpPost(ours_.port, path, body, 0, hdr(tours)), b = HttpPost(etcd_.port, path, body, 0, hdr(tetcd));
      EXPECT_EQ(a.status, b.status) << path << " token " << how << "\nours: " << a.body << "\netcd: " << b.body;
      if (path != "/v3/maintenance/status") {  // versions and sizes differ; the status code is the point
        EXPECT_EQ(NormalizeJson(a.body), NormalizeJson(b.body)) << path << " token " << how;
      }
    }
  }
  const std::string watch = R"({"create_request":{"key":"L2Ex"}})";
  HttpAnswer wa = HttpPost(ours_.port, "/v3/watch", watch, 1, "Authorization: " + tours + "\r\n");
  HttpAnswer wb = HttpPost(etcd_.port, "/v3/watch", watch, 1, "Authorization: " + tetcd + "\r\n");
  EXPECT_EQ(NormalizeJson(wa.body), NormalizeJson(wb.body));
  EXPECT_NE(wa.body.find(R"("canceled":true)"), std::string::npos) << wa.body;

  Both({"--user", "root:rootpw", "auth", "disable"});
  Both({"get", "/a1"});
  Both({"user", "delete", "root"});
  Both({"role", "delete", "root"});
  Both({"user", "list"});
}

// `etcdctl move-leader`: to the one member itself it succeeds (etcd's
// transfer to the current leader), to a stranger it fails with etcd's error;
// and a method neither server has gets grpc-go's "unknown method" wording.
TEST_F(EtcdctlCompat, MoveLeaderLikeASingleMemberEtcd) {
  for (const Server* s : {&ours_, &etcd_}) {
    const char* who = s == &ours_ ? "skiff-store" : "etcd";
    CmdResult st = Etcdctl(s->endpoint(), {"endpoint", "status", "-w", "json"});
    std::smatch m;
    ASSERT_TRUE(std::regex_search(st.out, m, std::regex(R"("member_id":(\d+))"))) << who << st.out;
    char hex[32];
    std::snprintf(hex, sizeof hex, "%llx", std::stoull(m[1].str()));
    CmdResult self = Etcdctl(s->endpoint(), {"move-leader", hex});
    EXPECT_EQ(self.code, 0) << who << self.err;
    EXPECT_EQ(self.out, std::string("Leadership transferred from ") + hex + " to " + hex + "\n") << who;
    CmdResult other = Etcdctl(s->endpoint(), {"move-leader", "1234"});
    EXPECT_EQ(ErrorLine(other.err), "Error: etcdserver: bad leader transferee") << who << other.err;
  }
}

// `etcdctl check datascale` puts 10,000 keys and reads the server's memory
// from process_resident_memory_bytes on the client URL's /metrics.
TEST_F(EtcdctlCompat, CheckDatascalePassesLikeEtcd) {
  for (const Server* s : {&ours_, &etcd_}) {
    CmdResult r = Etcdctl(s->endpoint(), {"check", "datascale", "--load", "s"});
    EXPECT_EQ(r.code, 0) << (s == &ours_ ? "skiff-store" : "etcd") << "\n" << r.out << r.err;
    EXPECT_NE(r.out.find("PASS: Approximate system memory used"), std::string::npos) << r.out << r.err;
  }
}

TEST_F(EtcdctlCompat, SnapshotSaveRestoresIntoWorkingStore) {
  for (int i = 0; i < 50; ++i) Etcdctl(ours_.endpoint(), {"put", "s/" + std::to_string(i), "v" + std::to_string(i)});
  std::string snap = dir_->sub("snap.db");
  CmdResult save = Etcdctl(ours_.endpoint(), {"snapshot", "save", snap});
  ASSERT_EQ(save.code, 0) << save.err;
  EXPECT_NE(save.out.find("Snapshot saved at"), std::string::npos) << save.out;
  Child restore({BinDir() + "/skiff-store", "snapshot", "restore", snap, "--data-dir", dir_->sub("restored")},
                dir_->sub("restore.log"));
  ASSERT_EQ(restore.Wait(), 0);
  Server r = StartSkiffStore(dir_->sub("restored"), dir_->sub("restored.log"));
  ASSERT_GT(r.child.pid(), 0);
  CmdResult got = Etcdctl(r.endpoint(), {"get", "s/", "--prefix", "--limit", "1", "-w", "json"});
  EXPECT_NE(got.out.find("\"count\":50"), std::string::npos) << got.out;
  EXPECT_NE(got.out.find("\"revision\":51"), std::string::npos) << got.out;
  EXPECT_EQ(Etcdctl(r.endpoint(), {"get", "s/7", "--print-value-only"}).out, "v7\n");
  EXPECT_EQ(Etcdctl(r.endpoint(), {"put", "after", "restore"}).code, 0);
  // A corrupted snapshot is refused.
  {
    std::fstream f(snap, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  Child bad({BinDir() + "/skiff-store", "snapshot", "restore", snap, "--data-dir", dir_->sub("bad")},
            dir_->sub("bad.log"));
  EXPECT_NE(bad.Wait(), 0);
}

}  // namespace
}  // namespace skiff::store::testing

namespace skiff::store::testing {
namespace {

// etcd's flags on the binary: --name and --advertise-client-urls show in
// `member list`, --quota-backend-bytes raises NOSPACE with etcd's error and
// alarm, --auto-compaction-retention compacts old revisions on its own.
TEST(EtcdctlFlags, NameAdvertiseQuotaAndAutoCompactionRetention) {
  ScratchDir dir("flags");
  Server s = StartSkiffStore(dir.sub("data"), dir.sub("store.log"), 0,
                             {"--name", "flagged", "--advertise-client-urls", "http://127.0.0.1:1",
                              "--quota-backend-bytes", "1048576", "--auto-compaction-retention", "1s"});
  ASSERT_GT(s.child.pid(), 0);
  CmdResult ml = Etcdctl(s.endpoint(), {"member", "list"});
  EXPECT_NE(ml.out.find(", started, flagged, "), std::string::npos) << ml.out;
  EXPECT_NE(ml.out.find("http://127.0.0.1:1"), std::string::npos) << ml.out;

  for (int i = 0; i < 5; ++i) ASSERT_EQ(Etcdctl(s.endpoint(), {"put", "c", std::to_string(i)}).code, 0);
  // Auto-compaction: revision 2 becomes unreadable without anyone compacting.
  CmdResult old = GetUntilFails(s, {"get", "c", "--rev", "2"});
  EXPECT_EQ(ErrorLine(old.err), "Error: etcdserver: mvcc: required revision has been compacted") << old.err;

  // Quota: 1 MiB fills up; etcd's error, the alarm, reads still work.
  CmdResult put;
  for (int i = 0; i < 10; ++i) {
    put = Etcdctl(s.endpoint(), {"put", "big" + std::to_string(i)}, std::string(300 * 1024, 'q'));
    if (put.code != 0) break;
  }
  EXPECT_EQ(ErrorLine(put.err), "Error: etcdserver: mvcc: database space exceeded") << put.err;
  CmdResult alarm = Etcdctl(s.endpoint(), {"alarm", "list"});
  EXPECT_NE(alarm.out.find("alarm:NOSPACE"), std::string::npos) << alarm.out;
  EXPECT_EQ(Etcdctl(s.endpoint(), {"get", "c", "--print-value-only"}).out, "4\n");
  s.child.Kill();

  // A negative quota disables it, as in etcd; a malformed one is refused.
  Server unlimited = StartSkiffStore(dir.sub("unlimited"), dir.sub("unlimited.log"), 0, {"--quota-backend-bytes=-1"});
  ASSERT_GT(unlimited.child.pid(), 0);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Etcdctl(unlimited.endpoint(), {"put", "big" + std::to_string(i)}, std::string(300 * 1024, 'q')).code, 0);
  }
  ExpectRefused(dir, {"--quota-backend-bytes=-1x"}, "bad --quota-backend-bytes");
}

// The commit-path flags: a store on the committer thread with a 2 ms window
// serves etcdctl; bad values are refused before anything is created.
TEST(EtcdctlFlags, CommitWindowAndCommitOnLoopFlags) {
  ScratchDir dir("commitflags");
  {
    Server s = StartSkiffStore(dir.sub("data"), dir.sub("store.log"), 0,
                               {"--experimental-commit-window", "2ms", "--experimental-commit-on-loop", "false",
                                "--experimental-lmdb-apply-interval", "0"});
    ASSERT_GT(s.child.pid(), 0);
    for (int i = 0; i < 3; ++i) ASSERT_EQ(Etcdctl(s.endpoint(), {"put", "w", std::to_string(i)}).code, 0);
    EXPECT_EQ(Etcdctl(s.endpoint(), {"get", "w", "--print-value-only"}).out, "2\n");
  }
  for (const auto& [flag, value, want] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"--experimental-commit-window", "soon", "bad --experimental-commit-window: want a duration such as 500us, 1ms or 0"},
           {"--experimental-commit-window", "-1ms", "bad --experimental-commit-window"},
           {"--experimental-commit-on-loop", "maybe", "bad --experimental-commit-on-loop: want true or false"},
           {"--experimental-lmdb-apply-interval", "often",
            "bad --experimental-lmdb-apply-interval: want a duration such as 100ms, 1s or 0"},
           {"--experimental-lmdb-apply-interval", "-100ms", "bad --experimental-lmdb-apply-interval"}}) {
    ExpectRefused(dir, {flag, value}, want);
  }
}

// --auto-compaction-mode=revision keeps the last N revisions, checked every
// interval (etcd checks every 5 minutes; the experimental flag shortens it).
TEST(EtcdctlFlags, RevisionAutoCompactionKeepsTheLastRevisions) {
  ScratchDir dir("revcompact");
  Server s = StartSkiffStore(dir.sub("data"), dir.sub("store.log"), 0,
                             {"--auto-compaction-mode", "revision", "--auto-compaction-retention", "3",
                              "--experimental-auto-compaction-check-interval", "200ms"});
  ASSERT_GT(s.child.pid(), 0);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(Etcdctl(s.endpoint(), {"put", "c", std::to_string(i)}).code, 0);
  // Revisions 2..11; the compactor's target is 11 - 3 = 8.
  CmdResult old = GetUntilFails(s, {"get", "c", "--rev", "7"});
  EXPECT_EQ(ErrorLine(old.err), "Error: etcdserver: mvcc: required revision has been compacted") << old.err;
  EXPECT_EQ(Etcdctl(s.endpoint(), {"get", "c", "--rev", "8", "--print-value-only"}).out, "6\n");
  EXPECT_EQ(Etcdctl(s.endpoint(), {"get", "c", "--print-value-only"}).out, "9\n");
  for (const auto& [flags, want] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--auto-compaction-mode", "sometimes"}, "bad --auto-compaction-mode \"sometimes\": want periodic or revision"},
           {{"--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"},
            "bad --auto-compaction-retention: want a number of revisions"},
           {{"--auto-compaction-retention", "soon"}, "bad --auto-compaction-retention: want hours"}}) {
    ExpectRefused(dir, flags, want);
  }
}

// --max-request-bytes and --max-txn-ops change the limits as they do for
// etcd (same commands against both, same results); bad values of the
// numeric flags are refused before anything is created.
TEST(EtcdctlFlags, MaxRequestBytesAndMaxTxnOpsMatchEtcd) {
  ScratchDir dir("limits");
  auto txn_of = [](int puts) {
    std::string in = "\n";  // no compares
    for (int i = 0; i < puts; ++i) in += "put t" + std::to_string(i) + " v\n";
    return in + "\n\n";  // no failure ops
  };
  // etcdctl itself sends at most 2 MiB.
  const std::string big_value(1800 * 1000, 'v'), two_kib(2 << 10, 'v');
  struct Case {
    std::vector<std::string> flags;
    std::string big_put, small_put, txn3, txn200;  // the Error: line, "" = success
  };
  const std::string too_large = "Error: etcdserver: request is too large";
  const std::string too_many = "Error: etcdserver: too many operations in txn request";
  const std::string over_grpc_max =
      "Error: rpc error: code = ResourceExhausted desc = grpc: received message larger than max (1800009 vs. 525312)";
  for (const Case& c : std::vector<Case>{
           {{}, too_large, "", "", too_many},
           {{"--max-request-bytes", "4194304", "--max-txn-ops", "300"}, "", "", "", ""},
           // Validation comes first: a txn with too many ops is refused as such,
           // whatever its size.
           {{"--max-request-bytes=1024", "--max-txn-ops=2"}, over_grpc_max, too_large, too_many, too_many}}) {
    std::string what;
    for (const auto& f : c.flags) what += f + " ";
    const std::string tag = std::to_string(c.flags.size()) + (c.flags.empty() ? "" : c.flags[0].substr(2, 10));
    Server ours = StartSkiffStore(dir.sub("skiff" + tag), dir.sub("skiff" + tag + ".log"), 0, c.flags);
    ASSERT_GT(ours.child.pid(), 0) << what;
    Server etcd = StartEtcd(dir.sub("etcd" + tag), dir.sub("etcd" + tag + ".log"), 0, c.flags);
    ASSERT_GT(etcd.child.pid(), 0) << what;
    for (const Server* s : {&ours, &etcd}) {
      const std::string who = (s == &ours ? "skiff-store " : "etcd ") + what;
      auto error_of = [](const CmdResult& r) { return r.code == 0 ? std::string() : ErrorLine(r.err); };
      EXPECT_EQ(error_of(Etcdctl(s->endpoint(), {"put", "big"}, big_value)), c.big_put) << who;
      EXPECT_EQ(error_of(Etcdctl(s->endpoint(), {"put", "small"}, two_kib)), c.small_put) << who;
      EXPECT_EQ(error_of(Etcdctl(s->endpoint(), {"txn"}, txn_of(3))), c.txn3) << who;
      EXPECT_EQ(error_of(Etcdctl(s->endpoint(), {"txn"}, txn_of(200))), c.txn200) << who;
      // Still serving.
      EXPECT_EQ(Etcdctl(s->endpoint(), {"put", "after", "1"}).code, 0) << who;
    }
  }
  for (const auto& [flag, value, want] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"--max-request-bytes", "lots", "bad --max-request-bytes: want a positive number of bytes"},
           {"--max-request-bytes", "0", "bad --max-request-bytes"},
           {"--max-txn-ops", "-5", "bad --max-txn-ops: want a positive number of operations"},
           {"--max-txn-ops", "12x", "bad --max-txn-ops"},
           {"--quota-backend-bytes", "2GiB", "bad --quota-backend-bytes: want a number of bytes"},
           {"--experimental-transport-threads", "0", "bad --experimental-transport-threads: want a number of threads"}}) {
    ExpectRefused(dir, {flag, value}, want);
  }
}

// A CA, a server certificate for 127.0.0.1 and one client certificate per
// common name (<cn>.crt, <cn>.key) in dir; false when openssl failed.
bool MakeCerts(const ScratchDir& dir, const std::vector<std::string>& client_cns) {
  auto sh = [&](const std::string& cmd) {
    Child c({"/bin/sh", "-c", "cd " + dir.path() + " && " + cmd}, dir.sub("openssl.log"));
    return c.Wait() == 0;
  };
  if (!sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=skiff-ca")) {
    return false;
  }
  if (!sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 && "
          "printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf && "
          "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt "
          "-days 1 -extfile ext.cnf")) {
    return false;
  }
  for (const auto& cn : client_cns) {
    if (!sh("openssl req -newkey rsa:2048 -nodes -keyout " + cn + ".key -out " + cn + ".csr -subj /CN=" + cn +
            " && openssl x509 -req -in " + cn + ".csr -CA ca.crt -CAkey ca.key -CAcreateserial -out " + cn +
            ".crt -days 1")) {
      return false;
    }
  }
  return true;
}

TEST(EtcdctlTls, ClientCertAuthAcceptsSignedClientsOnly) {
  ScratchDir dir("tls");
  auto sh = [&](const std::string& cmd) {
    Child c({"/bin/sh", "-c", "cd " + dir.path() + " && " + cmd}, dir.sub("openssl.log"));
    return c.Wait();
  };
  ASSERT_TRUE(MakeCerts(dir, {"client"}));
  int port = FreePort();
  std::string url = "https://127.0.0.1:" + std::to_string(port);
  Child store({BinDir() + "/skiff-store", "--data-dir", dir.sub("data"), "--listen-client-urls", url,
               "--cert-file", dir.sub("server.crt"), "--key-file", dir.sub("server.key"), "--trusted-ca-file",
               dir.sub("ca.crt"), "--client-cert-auth"},
              dir.sub("store.log"));
  ASSERT_TRUE(WaitForPort(port));
  CmdResult ok = Etcdctl(url, {"--cacert", dir.sub("ca.crt"), "--cert", dir.sub("client.crt"), "--key",
                               dir.sub("client.key"), "put", "secure", "yes"});
  EXPECT_EQ(ok.code, 0) << ok.err;
  CmdResult get = Etcdctl(url, {"--cacert", dir.sub("ca.crt"), "--cert", dir.sub("client.crt"), "--key",
                                dir.sub("client.key"), "get", "secure", "--print-value-only"});
  EXPECT_EQ(get.out, "yes\n");
  CmdResult anon = Etcdctl(url, {"--cacert", dir.sub("ca.crt"), "--dial-timeout", "2s", "--command-timeout", "3s",
                                 "get", "secure"});
  EXPECT_NE(anon.code, 0) << "a client without a certificate was served";
  // Plain HTTPS GETs on the client port, as etcd answers them: curl over
  // HTTP/2 (ALPN h2) and over HTTP/1.1.
  for (const char* version : {"--http2", "--http1.1"}) {
    // curl with the client certificate: what it printed.
    auto curl = [&](const std::string& args) {
      const std::string out = dir.sub("curl.out");
      std::filesystem::remove(out);
      EXPECT_EQ(sh(std::string("curl -sS ") + version + " --cacert ca.crt --cert client.crt --key client.key " + args +
                   " > " + out),
                0)
          << version << " " << args;
      std::ifstream in(out);
      return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    };
    std::string text = curl("-i " + url + "/health");
    EXPECT_EQ(text.rfind(std::string(version) == "--http2" ? "HTTP/2 200" : "HTTP/1.1 200 OK", 0), 0u)
        << version << "\n" << text;
    EXPECT_NE(text.find(R"({"health":"true")"), std::string::npos) << version << "\n" << text;
    // The JSON gateway over HTTPS, as curl reaches etcd's.
    std::string range = curl("-X POST " + url + "/v3/kv/range -d '{\"key\":\"c2VjdXJl\"}'");
    EXPECT_NE(range.find(R"("value":"eWVz")"), std::string::npos) << version << "\n" << range;
  }
}

// With --client-cert-auth and auth on, a request without a token acts as the
// user its certificate names, on skiff-store as on etcd: the same commands
// with a certificate for "root", for "reader" (a role that reads /r) and for
// a name that is no user give the same outputs and errors.
TEST(EtcdctlTls, ACertificatesCommonNameIsTheUserWhenAuthIsOn) {
  ScratchDir dir("tls-cn");
  ASSERT_TRUE(MakeCerts(dir, {"root", "reader", "stranger"}));
  const std::vector<std::string> tls = {"--cert-file", dir.sub("server.crt"), "--key-file", dir.sub("server.key"),
                                        "--trusted-ca-file", dir.sub("ca.crt"), "--client-cert-auth"};
  auto start = [&](bool etcd, int port) {
    const std::string url = "https://127.0.0.1:" + std::to_string(port);
    std::vector<std::string> argv;
    if (etcd) {
      const std::string peer = "http://127.0.0.1:" + std::to_string(FreePort());
      argv = {"/usr/bin/etcd", "--data-dir", dir.sub("etcd"), "--listen-peer-urls", peer,
              "--initial-advertise-peer-urls", peer, "--initial-cluster", "default=" + peer};
    } else {
      argv = {BinDir() + "/skiff-store", "--data-dir", dir.sub("skiff")};
    }
    for (const std::string& a : {std::string("--listen-client-urls"), url, std::string("--advertise-client-urls"), url}) {
      argv.push_back(a);
    }
    argv.insert(argv.end(), tls.begin(), tls.end());
    return Child(argv, dir.sub(etcd ? "etcd.log" : "skiff.log"));
  };
  const int ours_port = FreePort(), etcd_port = FreePort();
  Child ours = start(false, ours_port), etcd = start(true, etcd_port);
  ASSERT_TRUE(WaitForPort(ours_port));
  ASSERT_TRUE(WaitForPort(etcd_port));
  auto as = [&](int port, const std::string& cn, std::vector<std::string> args) {
    std::vector<std::string> all = {"--cacert", dir.sub("ca.crt"), "--cert", dir.sub(cn + ".crt"), "--key",
                                    dir.sub(cn + ".key"), "--command-timeout", "5s"};
    all.insert(all.end(), args.begin(), args.end());
    return Etcdctl("https://127.0.0.1:" + std::to_string(port), all);
  };
  const std::vector<std::pair<std::string, std::vector<std::string>>> steps = {
      {"root", {"user", "add", "root:pw"}},
      {"root", {"user", "grant-role", "root", "root"}},
      {"root", {"user", "add", "reader:pw"}},
      {"root", {"role", "add", "r"}},
      {"root", {"role", "grant-permission", "r", "read", "/r", "--prefix"}},
      {"root", {"user", "grant-role", "reader", "r"}},
      {"root", {"put", "/r/1", "one"}},
      {"root", {"auth", "enable"}},
      {"root", {"put", "/r/2", "two"}},
      {"root", {"user", "list"}},
      {"reader", {"get", "/r", "--prefix"}},
      {"reader", {"put", "/r/3", "three"}},
      {"reader", {"user", "list"}},
      {"stranger", {"get", "/r/1"}},
      {"stranger", {"--user", "reader:pw", "get", "/r/1", "--print-value-only"}},
      {"root", {"auth", "disable"}},
      {"stranger", {"get", "/r/2", "--print-value-only"}},
  };
  for (int attempt = 0; attempt < 50; ++attempt) {  // etcd elects itself
    if (as(etcd_port, "root", {"endpoint", "health"}).code == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (const auto& [cn, args] : steps) {
    CmdResult a = as(ours_port, cn, args), b = as(etcd_port, cn, args);
    std::string what = cn + ":";
    for (const auto& x : args) what += " " + x;
    EXPECT_EQ(a.code, b.code) << what << "\nours: " << a.err << "\netcd: " << b.err;
    EXPECT_EQ(a.out, b.out) << what;
    EXPECT_EQ(ErrorLine(a.err), ErrorLine(b.err)) << what;
  }
}

}  // namespace
}  // namespace skiff::store::testing
