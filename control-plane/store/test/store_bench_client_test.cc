// skiff-store-bench's load clients against a real skiff-store and a real
// Debian etcd on loopback: every request counted, every put really stored
// (the revision moves by exactly the request count), failures reported.
#include <regex>

#include "gtest/gtest.h"
#include "load.h"
#include "test_process.h"

namespace skiff::store::testing {
namespace {

struct BenchRun {
  int code = -1;
  std::map<std::string, std::string> fields;  // name=value pairs of the output line
  std::string line, err;
};

class StoreBenchClient : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<ScratchDir>("bench-client-" + GetParam());
    if (GetParam() == "skiff") {
      server_ = StartSkiffStore(dir_->sub("data"), dir_->sub("server.log"));
    } else {
      server_ = StartEtcd(dir_->sub("data"), dir_->sub("server.log"));
    }
    ASSERT_GT(server_.child.pid(), 0) << GetParam() << " did not start";
  }

  BenchRun Bench(const std::vector<std::string>& args) {
    std::string log = dir_->sub("bench.err");
    std::filesystem::remove(log);
    std::vector<std::string> argv = {BinDir() + "/skiff-store-bench", args[0], "--endpoint", server_.endpoint()};
    argv.insert(argv.end(), args.begin() + 1, args.end());
    Child c(argv, log, "", true);
    BenchRun r;
    r.code = c.Wait(&r.line);
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    r.err = ss.str();
    std::istringstream words(r.line);
    for (std::string w; words >> w;) {
      size_t eq = w.find('=');
      if (eq != std::string::npos) r.fields[w.substr(0, eq)] = w.substr(eq + 1);
    }
    return r;
  }

  int64_t Revision() {
    CmdResult r = Etcdctl(server_.endpoint(), {"get", "no-such-key", "-w", "json"});
    std::smatch m;
    EXPECT_TRUE(std::regex_search(r.out, m, std::regex(R"("revision":(\d+))"))) << r.out << r.err;
    return m.empty() ? -1 : std::stoll(m[1].str());
  }

  std::unique_ptr<ScratchDir> dir_;
  Server server_;
};

void ExpectClean(const BenchRun& r, const std::string& op, const std::string& requests) {
  EXPECT_EQ(r.code, 0) << r.line << r.err;
  EXPECT_EQ(r.fields.count("op") ? r.fields.at("op") : "", op) << r.line;
  EXPECT_EQ(r.fields.count("requests") ? r.fields.at("requests") : "", requests) << r.line;
  EXPECT_EQ(r.fields.count("errors") ? r.fields.at("errors") : "", "0") << r.line << r.err;
  EXPECT_EQ(r.fields.count("clients") ? r.fields.at("clients") : "", "20") << r.line;
  for (const char* f : {"seconds", "rps", "p50_ms", "p99_ms", "max_ms", "client_cpu_us_per_req"}) {
    EXPECT_TRUE(r.fields.count(f)) << f << " missing in " << r.line;
  }
}

// The first key of each of the first n clients must hold the 256-byte value.
// (The h2 client starts all its clients before any reply, so all 20 sent at
// least one put; the gRPC client's thread 0 surely did.)
void ExpectFirstKeysStored(const std::string& endpoint, int n) {
  for (int c = 0; c < n; ++c) {
    std::string key = bench::KeySequence(c, 100000).Next();
    CmdResult r = Etcdctl(endpoint, {"get", key, "--print-value-only"});
    EXPECT_EQ(r.out, std::string(256, 'v') + "\n") << key << ": " << r.err;
  }
}

TEST_P(StoreBenchClient, H2ClientPutsAndRangesEveryRequest) {
  int64_t rev0 = Revision();
  BenchRun put = Bench({"put", "--clients", "20", "--conns", "4", "--total", "2000"});
  ExpectClean(put, "put", "2000");
  EXPECT_EQ(Revision(), rev0 + 2000) << "each put is one revision";
  ExpectFirstKeysStored(server_.endpoint(), 20);

  BenchRun range = Bench({"range", "--clients", "20", "--conns", "4", "--total", "2000"});
  ExpectClean(range, "range", "2000");
  BenchRun lin = Bench({"range", "--clients", "20", "--conns", "4", "--threads", "2", "--total", "2000",
                        "--linearizable"});
  ExpectClean(lin, "range", "2000");
  EXPECT_EQ(Revision(), rev0 + 2000) << "ranges do not write";
}

TEST_P(StoreBenchClient, GrpcClientStaysSelectable) {
  int64_t rev0 = Revision();
  BenchRun put = Bench({"put", "--client", "grpc", "--clients", "20", "--conns", "4", "--total", "2000"});
  ExpectClean(put, "put", "2000");
  EXPECT_EQ(Revision(), rev0 + 2000);
  ExpectFirstKeysStored(server_.endpoint(), 1);
}

TEST_P(StoreBenchClient, OversizedPutCountsAsErrorAndFailsTheRun) {
  int64_t rev0 = Revision();
  BenchRun r = Bench({"put", "--clients", "2", "--total", "4", "--val-size", "2000000"});
  EXPECT_NE(r.code, 0) << r.line;
  EXPECT_EQ(r.fields["requests"], "4") << r.line;
  EXPECT_EQ(r.fields["errors"], "4") << r.line;
  EXPECT_NE(r.err.find("etcdserver: request is too large"), std::string::npos) << r.err;
  EXPECT_EQ(Revision(), rev0);
}

TEST_P(StoreBenchClient, LostServerCountsAsErrors) {
  // Closed loop for 30 s; the server dies once puts are flowing.
  std::string log = dir_->sub("lost.err");
  Child bench({BinDir() + "/skiff-store-bench", "put", "--endpoint", server_.endpoint(), "--clients", "8",
               "--conns", "2", "--duration", "30"},
              log, "", true);
  int64_t rev0 = Revision();
  for (int i = 0; i < 500 && Revision() < rev0 + 50; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  server_.child.Kill();
  std::string line;
  int code = bench.Wait(&line);
  EXPECT_NE(code, 0) << line;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(line, m, std::regex(R"(errors=(\d+))"))) << line;
  EXPECT_GE(std::stoll(m[1].str()), 1) << line;
  EXPECT_TRUE(std::regex_search(line, std::regex(R"(seconds=([0-9]|1[0-9])\.)"))) << "ends well before 30 s: " << line;
}

// --token: with auth on, puts without a token fail with etcd's error and puts
// with root's token (from the JSON gateway's /v3/auth/authenticate) are all
// stored; the gRPC C++ client refuses the flag.
TEST_P(StoreBenchClient, H2ClientSendsTheAuthToken) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"user", "add", "root:pw"}, {"role", "add", "root"}, {"user", "grant-role", "root", "root"},
           {"auth", "enable"}}) {
    CmdResult r = Etcdctl(server_.endpoint(), args);
    ASSERT_EQ(r.code, 0) << args[0] << " " << args[1] << ": " << r.err;
  }
  Child curl({"curl", "-sS", "-X", "POST", "http://" + server_.endpoint() + "/v3/auth/authenticate", "-d",
              R"({"name":"root","password":"pw"})"},
             dir_->sub("curl.err"), "", true);
  std::string out;
  ASSERT_EQ(curl.Wait(&out), 0);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex(R"re("token":"([^"]+)")re"))) << out;
  const std::string token = m[1].str();

  BenchRun denied = Bench({"put", "--clients", "2", "--total", "10"});
  EXPECT_EQ(denied.code, 1);
  EXPECT_NE(denied.err.find("user name is empty"), std::string::npos) << denied.err;
  const int64_t rev0 = std::stoll(std::regex_replace(
      Etcdctl(server_.endpoint(), {"--user", "root:pw", "get", "x", "-w", "json"}).out,
      std::regex(R"(.*"revision":(\d+).*\s*)"), "$1"));
  BenchRun put = Bench({"put", "--clients", "20", "--conns", "4", "--total", "500", "--token", token});
  ExpectClean(put, "put", "500");
  const int64_t rev1 = std::stoll(std::regex_replace(
      Etcdctl(server_.endpoint(), {"--user", "root:pw", "get", "x", "-w", "json"}).out,
      std::regex(R"(.*"revision":(\d+).*\s*)"), "$1"));
  EXPECT_EQ(rev1, rev0 + 500);
  BenchRun grpc = Bench({"put", "--client", "grpc", "--total", "1", "--token", token});
  EXPECT_EQ(grpc.code, 2);
}

INSTANTIATE_TEST_SUITE_P(Servers, StoreBenchClient, ::testing::Values("skiff", "etcd"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace skiff::store::testing
