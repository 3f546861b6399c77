// The progress bar of `skiffctl image pull`: drawn when stderr is a terminal
// (a pseudo-terminal here), absent when it is not. The registry is a fake on
// loopback serving an image built by our fixture code.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "fake_image.h"
#include "fake_registry.h"
#include "gtest/gtest.h"
#include "image_fixture.h"
#include "skiff/image/progress_bar.h"
#include "test_util.h"

namespace skiff::image {
namespace {

using namespace skiff::image::testing;

TEST(ProgressBar, RendersLayersBytesAndPercent) {
  EXPECT_EQ(ProgressBar::Render("busybox", 1, 2, 5'000'000, 10'000'000, 10),
            "busybox [=====>    ] 1/2 layers  5.0 MB / 10.0 MB   50%");
  EXPECT_EQ(ProgressBar::Render("busybox", 2, 2, 10'000'000, 10'000'000, 10),
            "busybox [==========] 2/2 layers  10.0 MB / 10.0 MB  100%");
}

struct CmdResult {
  int status = -1;
  std::string out;  // stdout (a pipe)
  std::string err;  // stderr (the terminal or a pipe)
};

// Runs skiffctl with stdout on a pipe and stderr on a pseudo-terminal (tty)
// or on a second pipe.
CmdResult Skiffctl(const std::vector<std::string>& args, bool tty) {
  const char* build = std::getenv("SKIFF_BUILD_DIR");
  std::string bin = std::string(build != nullptr ? build : ".") + "/bin/skiffctl";
  int out[2], err[2] = {-1, -1}, master = -1, slave = -1;
  if (pipe2(out, O_CLOEXEC) != 0) return {};
  if (tty) {
    if (openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) return {};
  } else if (pipe2(err, O_CLOEXEC) != 0) {
    return {};
  }
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(tty ? slave : err[1], STDERR_FILENO);
    std::vector<char*> argv{bin.data()};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  close(out[1]);
  if (tty) close(slave);
  else close(err[1]);
  CmdResult r;
  int err_fd = tty ? master : err[0];
  // Drain both while the child runs (the terminal stops accepting when full).
  pollfd p[2] = {{out[0], POLLIN, 0}, {err_fd, POLLIN, 0}};
  bool open_out = true, open_err = true;
  char buf[4096];
  while (open_out || open_err) {
    if (poll(p, 2, 30000) <= 0) break;
    for (int i = 0; i < 2; ++i) {
      if (p[i].revents == 0) continue;
      ssize_t n = read(p[i].fd, buf, sizeof(buf));
      if (n > 0) {
        (i == 0 ? r.out : r.err).append(buf, n);
      } else {
        (i == 0 ? open_out : open_err) = false;
        p[i].fd = -1;
      }
    }
  }
  close(out[0]);
  close(err_fd);
  waitpid(pid, &r.status, 0);
  return r;
}

class PullProgressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "unpacking layers with their owners needs root";
    auto base = BuildLayer(BusyboxRootfs(), Compression::kGzip);
    ASSERT_TRUE(base.ok()) << base.status();
    // Big enough for several progress callbacks (one per MB).
    auto big = BuildLayer({Dir("data"), File("data/blob", RandomBytes(3 << 20, 11))}, Compression::kGzip);
    ASSERT_TRUE(big.ok()) << big.status();
    auto img = BuildImage({*base, *big}, ImageConfig{}, "amd64");
    ASSERT_TRUE(img.ok()) << img.status();
    image_ = std::make_unique<BuiltImage>(*img);
  }
  std::unique_ptr<BuiltImage> image_;
};

TEST_F(PullProgressTest, ATerminalGetsAProgressBarAPipeDoesNot) {
  FakeImage fake(*image_);
  FakeHttpServer server([&](const HttpRequest& r) { return fake.Serve(r); });
  const std::string ref = server.host() + "/test/busybox:1";

  ScratchDir with_tty("skiff-pull-progress");
  CmdResult t = Skiffctl({"image", "pull", ref, "--root-dir", with_tty.path(), "--insecure-registry", server.host()}, true);
  ASSERT_TRUE(WIFEXITED(t.status) && WEXITSTATUS(t.status) == 0) << t.out << t.err;
  EXPECT_NE(t.out.find(image_->manifest_digest), std::string::npos) << t.out;
  EXPECT_NE(t.err.find("\r" + ref + " ["), std::string::npos) << t.err;
  EXPECT_NE(t.err.find("2/2 layers"), std::string::npos) << t.err;
  EXPECT_NE(t.err.find("100%"), std::string::npos) << t.err;

  ScratchDir without_tty("skiff-pull-progress");
  CmdResult p = Skiffctl({"image", "pull", ref, "--root-dir", without_tty.path(), "--insecure-registry", server.host()}, false);
  ASSERT_TRUE(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 0) << p.out << p.err;
  EXPECT_NE(p.out.find(image_->manifest_digest), std::string::npos) << p.out;
  EXPECT_EQ(p.err.find("layers"), std::string::npos) << p.err;
  EXPECT_EQ(p.err.find('\r'), std::string::npos) << p.err;
}

}  // namespace
}  // namespace skiff::image
