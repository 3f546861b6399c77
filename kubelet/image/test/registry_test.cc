// Privileged (network on loopback only): pulls from Debian's docker-registry
// started by the test with htpasswd basic auth, loaded with a busybox image
// pushed by skopeo; misbehaving registries are played by FakeHttpServer.
#include <crypt.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "digest.h"
#include "fake_image.h"
#include "fake_registry.h"
#include "fs.h"
#include "image_fixture.h"
#include "skiff/common/status.h"
#include "skiff/image/store.h"
#include "test_util.h"

namespace skiff::image {
namespace {

using namespace skiff::image::testing;

constexpr char kUser[] = "skiff";
constexpr char kPassword[] = "s3cret-pw";
constexpr char kScratchPrefix[] = "skiff-image-priv";

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// docker-registry processes left by a crashed run of this test (their
// config lives in a scratch dir whose owning pid is gone).
void KillStaleRegistries() {
  DIR* d = ::opendir("/proc");
  if (!d) return;
  while (struct dirent* e = ::readdir(d)) {
    int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    auto cmd = ReadFile(std::string("/proc/") + e->d_name + "/cmdline", 1 << 16);
    if (!cmd.ok() || cmd->find("docker-registry") == std::string::npos) continue;
    auto at = cmd->find(std::string("/tmp/") + kScratchPrefix + "-");
    if (at == std::string::npos) continue;
    int owner = std::atoi(cmd->c_str() + at + 6 + std::string(kScratchPrefix).size());
    if (owner > 0 && ::kill(owner, 0) != 0 && errno == ESRCH) ::kill(pid, SIGKILL);
  }
  ::closedir(d);
}

int RunCommand(const std::vector<std::string>& argv, std::string* output = nullptr) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(p[1], 1);
    ::dup2(p[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(p[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class DockerRegistry {
 public:
  // `tls_dir` holds cert.pem/key.pem for an HTTPS registry without auth,
  // serving the same storage as the plain one.
  absl::Status Start(const std::string& dir, const std::string& tls_dir = "") {
    port_ = FreePort();
    tls_ = !tls_dir.empty();
    char salt_buf[CRYPT_GENSALT_OUTPUT_SIZE];
    if (!crypt_gensalt_rn("$2b$", 4, nullptr, 0, salt_buf, sizeof salt_buf)) return absl::InternalError("gensalt");
    struct crypt_data cd = {};
    const char* hash = crypt_r(kPassword, salt_buf, &cd);
    if (!hash || hash[0] == '*') return absl::InternalError("bcrypt unavailable");
    std::ofstream(dir + "/htpasswd") << kUser << ":" << hash << "\n";
    std::string name = tls_ ? "registry-tls" : "registry";
    {
      std::ofstream y(dir + "/" + name + ".yml");
      y << "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
        << "storage:\n  filesystem:\n    rootdirectory: " << dir << "/data\n"
        << "  delete:\n    enabled: true\n"
        << "http:\n  addr: 127.0.0.1:" << port_ << "\n";
      if (tls_) {
        y << "  tls:\n    certificate: " << tls_dir << "/cert.pem\n    key: " << tls_dir << "/key.pem\n";
      } else {
        y << "auth:\n  htpasswd:\n    realm: skiff\n    path: " << dir << "/htpasswd\n";
      }
    }
    log_ = dir + "/" + name + ".log";
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::string cfg = dir + "/" + name + ".yml";
      ::execl("/usr/bin/docker-registry", "docker-registry", "serve", cfg.c_str(), nullptr);
      ::_exit(127);
    }
    for (int i = 0; i < 100; ++i) {
      std::string out;
      RunCommand({"curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", (tls_ ? "https://" : "http://") + host() + "/v2/"},
                 &out);
      if (out == (tls_ ? "200" : "401")) return absl::OkStatus();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return absl::UnavailableError("docker-registry did not come up; log: " + ReadFile(log_).value_or(""));
  }
  ~DockerRegistry() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status;
      ::waitpid(pid_, &status, 0);
    }
  }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  bool tls_ = false;
  std::string log_;
};

class RegistryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    KillStaleRegistries();
    scratch_ = new ScratchDir(kScratchPrefix);
    const std::string dir = scratch_->path();
    registry_ = new DockerRegistry();
    setup_error_ = new absl::Status(Prepare(dir));
  }
  // Images only; the registry starts on first use (fake-server tests do not
  // need it, and under ctest every test is its own process).
  static absl::Status Prepare(const std::string& dir) {
    auto base = BuildLayer(BusyboxRootfs(), Compression::kGzip);
    auto big = BuildLayer({Dir("data"), File("data/blob", RandomBytes(6 << 20, 7))}, Compression::kZstd);
    if (!base.ok() || !big.ok()) return absl::InternalError("build layers");
    ImageConfig cfg;
    cfg.cmd = {"/bin/sh"};
    ASSIGN_OR_RETURN(BuiltImage amd, BuildImage({*base, *big}, cfg, "amd64"));
    ASSIGN_OR_RETURN(BuiltImage arm, BuildImage({*base}, cfg, "arm64"));
    image_ = new BuiltImage(amd);
    arm_ = new BuiltImage(arm);
    return absl::OkStatus();
  }
  static absl::Status StartRegistry(const std::string& dir) {
    RETURN_IF_ERROR(registry_->Start(dir));
    const BuiltImage& amd = *image_;
    const BuiltImage& arm = *arm_;
    RETURN_IF_ERROR(WriteOciLayout(dir + "/layout", {amd, arm}, {"1", "arm"}));
    std::string creds = std::string(kUser) + ":" + kPassword;
    for (const auto& [src, dst] : std::vector<std::pair<std::string, std::string>>{
             {"1", "test/busybox:1"}, {"1", "test/multi:amd"}, {"arm", "test/multi:arm"}}) {
      std::string out;
      int rc = RunCommand({"skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", creds,
                    "oci:" + dir + "/layout:" + src, "docker://" + registry_->host() + "/" + dst},
                   &out);
      if (rc != 0) return absl::InternalError("skopeo copy failed: " + out);
    }
    // The multi-arch index, written with the registry API.
    nlohmann::json index = {
        {"schemaVersion", 2},
        {"mediaType", "application/vnd.oci.image.index.v1+json"},
        {"manifests",
         {{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
           {"digest", arm.manifest_digest},
           {"size", arm.manifest.size()},
           {"platform", {{"os", "linux"}, {"architecture", "arm64"}}}},
          {{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
           {"digest", amd.manifest_digest},
           {"size", amd.manifest.size()},
           {"platform", {{"os", "linux"}, {"architecture", "amd64"}}}}}}};
    std::ofstream(dir + "/index.json") << index.dump();
    std::string code;
    RunCommand({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", creds, "-X", "PUT", "-H",
         "Content-Type: application/vnd.oci.image.index.v1+json", "--data-binary", "@" + dir + "/index.json",
         "http://" + registry_->host() + "/v2/test/multi/manifests/1"},
        &code);
    if (code != "201") return absl::InternalError("PUT index: HTTP " + code);
    std::ofstream(dir + "/config.json") << R"({"auths":{")" << registry_->host() << R"(":{"auth":")"
                                        << Base64(creds) << R"("}}})";
    return absl::OkStatus();
  }
  static std::string Base64(const std::string& s) {
    std::string out;
    RunCommand({"sh", "-c", "printf %s '" + s + "' | base64 -w0"}, &out);
    return out;
  }
  static void TearDownTestSuite() {
    delete tls_registry_;
    tls_registry_ = nullptr;
    delete registry_;
    delete scratch_;
    delete image_;
    delete arm_;
    delete setup_error_;
    delete registry_error_;
    registry_error_ = nullptr;
    registry_ = nullptr;
    scratch_ = nullptr;
    image_ = arm_ = nullptr;
    setup_error_ = nullptr;
  }
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    ASSERT_TRUE(setup_error_ && setup_error_->ok()) << (setup_error_ ? *setup_error_ : absl::UnknownError("no setup"));
  }
  std::string dir() const { return scratch_->path(); }
  // The real registry, started (and loaded) by the first test that asks.
  std::string host() {
    if (!registry_error_) registry_error_ = new absl::Status(StartRegistry(scratch_->path()));
    EXPECT_TRUE(registry_error_->ok()) << *registry_error_;
    return registry_->host();
  }
  Options Opts(bool with_creds = true) {
    Options o;
    o.insecure_registries = {host()};
    if (with_creds) o.credentials_file = dir() + "/config.json";
    return o;
  }
  std::unique_ptr<Store> NewStore(const Options& o, const std::string& name = "") {
    std::string root = dir() + "/store-" + (name.empty() ? std::to_string(counter_++) : name);
    auto s = Store::Open(root, o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  int64_t TotalBlobBytes() const {
    int64_t n = static_cast<int64_t>(image_->config.size());
    for (const auto& l : image_->layers) n += static_cast<int64_t>(l.blob.size());
    return n;
  }

  static ScratchDir* scratch_;
  static DockerRegistry* registry_;
  static DockerRegistry* tls_registry_;
  static BuiltImage* image_;
  static BuiltImage* arm_;
  static absl::Status* setup_error_;
  static absl::Status* registry_error_;
  static int counter_;
};
ScratchDir* RegistryTest::scratch_ = nullptr;
DockerRegistry* RegistryTest::registry_ = nullptr;
DockerRegistry* RegistryTest::tls_registry_ = nullptr;
BuiltImage* RegistryTest::image_ = nullptr;
BuiltImage* RegistryTest::arm_ = nullptr;
absl::Status* RegistryTest::setup_error_ = nullptr;
absl::Status* RegistryTest::registry_error_ = nullptr;
int RegistryTest::counter_ = 0;

TEST_F(RegistryTest, PullsByTagAndByDigestWithBasicAuthFromCredentialsFile) {
  auto store = NewStore(Opts());
  std::atomic<int> progress_calls{0};
  PullOptions po;
  po.progress = [&](const PullProgress&) { progress_calls++; };
  auto img = store->Pull(host() + "/test/busybox:1", po);
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_EQ(img->digest, image_->manifest_digest);
  EXPECT_EQ(img->ref, host() + "/test/busybox:1");
  ASSERT_EQ(img->layer_dirs.size(), 2u);
  EXPECT_TRUE(Exists(img->layer_dirs[0] + "/bin/busybox"));
  EXPECT_TRUE(Exists(img->layer_dirs[1] + "/data/blob"));
  EXPECT_EQ(img->config.cmd, std::vector<std::string>{"/bin/sh"});
  EXPECT_GT(progress_calls.load(), 0);
  EXPECT_EQ(store->Stats().blobs_fetched, 3);
  EXPECT_EQ(store->Stats().bytes_fetched, TotalBlobBytes());

  auto by_digest = store->Pull(host() + "/test/busybox@" + image_->manifest_digest, PullOptions{});
  ASSERT_TRUE(by_digest.ok()) << by_digest.status();
  EXPECT_EQ(by_digest->digest, image_->manifest_digest);
  EXPECT_EQ(store->Stats().blobs_fetched, 3);  // nothing fetched twice
  // IfNotPresent does not touch the registry for a present image.
  auto ensured = store->Ensure(host() + "/test/busybox:1", PullPolicy::kIfNotPresent, PullOptions{});
  ASSERT_TRUE(ensured.ok());
  // A fresh store pulling by digest only.
  auto fresh = NewStore(Opts());
  by_digest = fresh->Pull(host() + "/test/busybox@" + image_->manifest_digest, PullOptions{});
  ASSERT_TRUE(by_digest.ok()) << by_digest.status();
  EXPECT_TRUE(fresh->Get(host() + "/test/busybox@" + image_->manifest_digest).ok());
}

TEST_F(RegistryTest, PullsOverHttpsVerifyingTheRegistryCertificate) {
  host();  // the plain registry loads the storage both serve
  std::string tls = dir() + "/tls";
  ASSERT_TRUE(MkdirAll(tls).ok());
  std::string out;
  ASSERT_EQ(RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", tls + "/key.pem", "-out", tls + "/cert.pem"},
                       &out),
            0)
      << out;
  if (!tls_registry_) {
    tls_registry_ = new DockerRegistry();
    ASSERT_TRUE(tls_registry_->Start(dir(), tls).ok());
  }
  std::string ref = tls_registry_->host() + "/test/busybox:1";
  // Not in the insecure list: HTTPS, and an unknown CA is refused.
  auto store = NewStore(Options{});
  auto r = store->Pull(ref, PullOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("https://"), std::string::npos) << r.status();
  Options with_ca;
  with_ca.ca_file = tls + "/cert.pem";
  store = NewStore(with_ca);
  r = store->Pull(ref, PullOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->digest, image_->manifest_digest);
}

TEST_F(RegistryTest, UsesImagePullSecretsAndRejectsMissingOrWrongCredentials) {
  auto store = NewStore(Opts(false));
  auto r = store->Pull(host() + "/test/busybox:1", PullOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("requires credentials"), std::string::npos) << r.status();
  EXPECT_EQ(KubeletReason(r.status()), "ErrImagePull");

  PullOptions wrong;
  wrong.auths[host()] = RegistryAuth{kUser, "wrong", ""};
  r = store->Pull(host() + "/test/busybox:1", wrong);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("refused"), std::string::npos) << r.status();

  // A kubernetes.io/dockerconfigjson secret's payload.
  auto secret = ParseDockerConfig(R"({"auths":{")" + host() + R"(":{"username":")" + kUser +
                                  R"(","password":")" + kPassword + R"("}}})");
  ASSERT_TRUE(secret.ok());
  PullOptions po;
  po.auths = *secret;
  r = store->Pull(host() + "/test/busybox:1", po);
  ASSERT_TRUE(r.ok()) << r.status();
}

TEST_F(RegistryTest, NonexistentImageIsAClearNotFound) {
  auto store = NewStore(Opts());
  auto r = store->Pull(host() + "/test/nothere:1", PullOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("not found"), std::string::npos) << r.status();
  r = store->Pull(host() + "/test/busybox:nosuchtag", PullOptions{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
}

TEST_F(RegistryTest, MultiArchIndexResolvesToLinuxAmd64) {
  auto store = NewStore(Opts());
  auto r = store->Pull(host() + "/test/multi:1", PullOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->digest, image_->manifest_digest);
  EXPECT_NE(r->digest, arm_->manifest_digest);
  PullOptions s390;
  s390.architecture = "s390x";
  r = store->Pull(host() + "/test/multi:1", s390);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("s390x"), std::string::npos) << r.status();
}

TEST_F(RegistryTest, ConcurrentPullsFetchEachBlobOnce) {
  std::string root = dir() + "/store-concurrent";
  auto a = Store::Open(root, Opts());
  auto b = Store::Open(root, Opts());  // a second store on the same root, like a second process
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<std::thread> threads;
  std::vector<absl::StatusOr<Image>> results(4, absl::UnknownError("not run"));
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { results[i] = (i % 2 ? *b : *a)->Pull(host() + "/test/busybox:1", PullOptions{}); });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->digest, image_->manifest_digest);
  }
  EXPECT_EQ((*a)->Stats().blobs_fetched + (*b)->Stats().blobs_fetched, 3);
  EXPECT_EQ((*a)->Stats().bytes_fetched + (*b)->Stats().bytes_fetched, TotalBlobBytes());
  EXPECT_EQ((*a)->Stats().layers_unpacked + (*b)->Stats().layers_unpacked, 2);
}

TEST_F(RegistryTest, ResumesABlobLeftHalfDownloadedWithARangeRequest) {
  std::string root = dir() + "/store-resume";
  auto store = Store::Open(root, Opts());
  ASSERT_TRUE(store.ok());
  const Layer& big = image_->layers[1];
  const size_t half = big.blob.size() / 2;
  std::ofstream(root + "/tmp/" + big.digest.substr(7) + ".partial", std::ios::binary) << big.blob.substr(0, half);
  auto r = (*store)->Pull(host() + "/test/busybox:1", PullOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*store)->Stats().bytes_fetched, TotalBlobBytes() - static_cast<int64_t>(half));
  EXPECT_FALSE(Exists(root + "/tmp/" + big.digest.substr(7) + ".partial"));
}

TEST_F(RegistryTest, ResumesATransferCutOffMidway) {
  FakeImage fake(*image_);
  const std::string big = image_->layers[1].digest;
  fake.cut = [&](const std::string& d, int) -> long {
    static std::atomic<bool> once{false};
    return (d == big && !once.exchange(true)) ? static_cast<long>(image_->layers[1].blob.size() / 3) : -1;
  };
  FakeHttpServer server([&](const HttpRequest& r) { return fake.Serve(r); });
  Options o;
  o.insecure_registries = {server.host()};
  auto store = NewStore(o);
  auto r = store->Pull(server.host() + "/test/busybox:1", PullOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  bool ranged = false;
  for (const auto& req : server.requests()) ranged = ranged || (req.path.find(big) != std::string::npos && req.headers.count("range"));
  EXPECT_TRUE(ranged);
  EXPECT_EQ(store->Stats().bytes_fetched, TotalBlobBytes());
}

TEST_F(RegistryTest, IfNotPresentAndNeverUseTheStoreWithoutAskingTheRegistry) {
  FakeImage fake(*image_);
  FakeHttpServer server([&](const HttpRequest& r) { return fake.Serve(r); });
  Options o;
  o.insecure_registries = {server.host()};
  auto store = NewStore(o);
  ASSERT_TRUE(store->Ensure(server.host() + "/test/busybox:1", PullPolicy::kIfNotPresent, PullOptions{}).ok());
  size_t requests = server.requests().size();
  auto r = store->Ensure(server.host() + "/test/busybox:1", PullPolicy::kIfNotPresent, PullOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  r = store->Ensure(server.host() + "/test/busybox@" + image_->manifest_digest, PullPolicy::kNever, PullOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->digest, image_->manifest_digest);
  EXPECT_EQ(server.requests().size(), requests);
  // Always asks for the manifest again, but fetches no blob twice.
  r = store->Ensure(server.host() + "/test/busybox:1", PullPolicy::kAlways, PullOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(server.requests().size(), requests);
  EXPECT_EQ(store->Stats().blobs_fetched, 3);
}

TEST_F(RegistryTest, RefusesATamperedBlob) {
  FakeImage fake(*image_);
  const std::string big = image_->layers[1].digest;
  fake.mangle = [&](const std::string& d, std::string blob) {
    if (d == big) blob[blob.size() / 2] ^= 0x5a;
    return blob;
  };
  FakeHttpServer server([&](const HttpRequest& r) { return fake.Serve(r); });
  Options o;
  o.insecure_registries = {server.host()};
  auto store = NewStore(o, "tampered");
  auto r = store->Pull(server.host() + "/test/busybox:1", PullOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("digest mismatch"), std::string::npos) << r.status();
  EXPECT_FALSE(Exists(dir() + "/store-tampered/blobs/sha256/" + big.substr(7)));
  EXPECT_FALSE(Exists(dir() + "/store-tampered/layers/" + image_->layers[1].diff_id.substr(7)));
  EXPECT_FALSE(store->Get(server.host() + "/test/busybox:1").ok());
}

TEST_F(RegistryTest, GarbageTruncatedAndMissingAnswersAreClearErrors) {
  FakeHttpServer garbage([](const HttpRequest& r) {
    HttpReply out;
    if (r.path != "/v2/") out.body = "<html>this is not a manifest</html>";
    return out;
  });
  Options o;
  o.insecure_registries = {garbage.host()};
  auto store = NewStore(o);
  auto r = store->Pull(garbage.host() + "/test/busybox:1", PullOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("not a JSON object"), std::string::npos) << r.status();

  FakeImage fake(*image_);
  const std::string big = image_->layers[1].digest;
  fake.cut = [&](const std::string& d, int) -> long {
    return d == big ? static_cast<long>(image_->layers[1].blob.size() / 2) : -1;
  };
  // This server never honours Range, and always cuts the big blob short.
  FakeHttpServer truncating([&](const HttpRequest& req) {
    HttpRequest copy = req;
    copy.headers.erase("range");
    return fake.Serve(copy);
  });
  o.insecure_registries = {truncating.host()};
  o.blob_attempts = 2;
  store = NewStore(o);
  r = store->Pull(truncating.host() + "/test/busybox:1", PullOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find(big), std::string::npos) << r.status();
  EXPECT_FALSE(store->Get(truncating.host() + "/test/busybox:1").ok());

  r = store->Pull(truncating.host() + "/test/other:1", PullOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();

  // Nothing listening at all.
  o.insecure_registries = {"127.0.0.1:" + std::to_string(FreePort())};
  store = NewStore(o);
  r = store->Pull(o.insecure_registries[0] + "/test/busybox:1", PullOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
}

TEST_F(RegistryTest, AnswersABearerTokenChallenge) {
  FakeImage fake(*image_);
  int port = 0;
  std::atomic<int> token_requests{0};
  FakeHttpServer server([&](const HttpRequest& r) {
    HttpReply out;
    if (r.path.rfind("/token", 0) == 0) {
      token_requests++;
      auto auth = r.headers.find("authorization");
      if (auth == r.headers.end() || auth->second != "Basic " + Base64(std::string(kUser) + ":" + kPassword) ||
          r.path.find("scope=repository%3Atest%2Fbusybox%3Apull") == std::string::npos) {
        out.status = 401;
        return out;
      }
      out.body = R"({"token":"tok-123"})";
      return out;
    }
    auto auth = r.headers.find("authorization");
    if (auth == r.headers.end() || auth->second != "Bearer tok-123") {
      out.status = 401;
      out.headers.push_back({"WWW-Authenticate", "Bearer realm=\"http://127.0.0.1:" + std::to_string(port) +
                                                     "/token\",service=\"fake\",scope=\"repository:test/busybox:pull\""});
      return out;
    }
    return fake.Serve(r);
  });
  port = server.port();
  Options o;
  o.insecure_registries = {server.host()};
  auto store = NewStore(o);
  PullOptions po;
  po.auths[server.host()] = RegistryAuth{kUser, kPassword, ""};
  auto r = store->Pull(server.host() + "/test/busybox:1", po);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->digest, image_->manifest_digest);
  EXPECT_GE(token_requests.load(), 1);
}

}  // namespace
}  // namespace skiff::image
