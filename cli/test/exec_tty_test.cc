// skiffctl's gRPC exec client on a real pseudo-terminal: against an
// in-process Api server that records every ExecInput, `exec -it` sends the
// terminal's size with the request, sends it again when the terminal is
// resized, copies typed bytes raw, and restores the terminal afterwards.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "gtest/gtest.h"
#include "skiff/api/v1/api.grpc.pb.h"
#include "skiff/cli/cli.h"
#include "skiff/common/unique_fd.h"

namespace {

namespace v1 = skiff::api::v1;

// Records the client's messages; ends the command once "end" is typed.
class RecordingApi : public v1::Api::Service {
 public:
  grpc::Status Exec(grpc::ServerContext*, grpc::ServerReaderWriter<v1::ExecOutput, v1::ExecInput>* s) override {
    v1::ExecInput m;
    while (s->Read(&m)) {
      bool end = m.stdin_data().find("end") != std::string::npos;
      {
        std::lock_guard<std::mutex> l(mu_);
        got_.push_back(m);
      }
      cv_.notify_all();
      if (end) break;
    }
    v1::ExecOutput o;
    o.set_stdout("bye\r\n");
    o.set_exited(true);
    o.set_exit_code(5);
    s->Write(o);
    return grpc::Status::OK;
  }
  // Waits until some recorded message satisfies `f`.
  template <typename F>
  bool WaitFor(F f) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, std::chrono::seconds(10), [&] {
      for (const auto& m : got_)
        if (f(m)) return true;
      return false;
    });
  }
  std::vector<v1::ExecInput> Got() {
    std::lock_guard<std::mutex> l(mu_);
    return got_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<v1::ExecInput> got_;
};

void SetSize(int fd, unsigned short rows, unsigned short cols) {
  winsize ws{};
  ws.ws_row = rows;
  ws.ws_col = cols;
  ASSERT_EQ(ioctl(fd, TIOCSWINSZ, &ws), 0);
}

TEST(ExecTty, SendsTheSizeFollowsResizesAndRestoresTheTerminal) {
  RecordingApi api;
  int port = 0;
  grpc::ServerBuilder b;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&api);
  auto server = b.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  skiff::UniqueFd master(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  ASSERT_TRUE(master.valid());
  ASSERT_EQ(grantpt(master.get()), 0);
  ASSERT_EQ(unlockpt(master.get()), 0);
  skiff::UniqueFd slave(open(ptsname(master.get()), O_RDWR | O_NOCTTY | O_CLOEXEC));
  ASSERT_TRUE(slave.valid());
  SetSize(slave.get(), 33, 101);
  termios before{};
  ASSERT_EQ(tcgetattr(slave.get(), &before), 0);
  ASSERT_TRUE(before.c_lflag & ICANON);

  skiff::client::Credentials creds;
  creds.server = "127.0.0.1:" + std::to_string(port);
  creds.insecure = true;
  auto conn = skiff::cli::DialGrpc(creds);
  ASSERT_TRUE(conn.ok()) << conn.status();
  v1::ExecInput first;
  first.set_namespace_("default");
  first.set_pod("web");
  first.add_command("sh");
  first.set_stdin(true);
  first.set_tty(true);
  std::ostringstream out, err;
  absl::StatusOr<int> code;
  std::thread exec([&] { code = conn->node->Exec(first, slave.get(), out, err); });

  // The request carries the terminal's size.
  EXPECT_TRUE(api.WaitFor([](const v1::ExecInput& m) {
    return m.pod() == "web" && m.tty() && m.resize_width() == 101 && m.resize_height() == 33;
  }));
  // A resize of the local terminal is sent on.
  SetSize(slave.get(), 20, 90);
  EXPECT_TRUE(api.WaitFor([](const v1::ExecInput& m) { return m.resize_width() == 90 && m.resize_height() == 20; }));
  // Raw mode: bytes go as typed, a ^C included, without waiting for a line.
  ASSERT_EQ(write(master.get(), "ab\x03" "end", 6), 6);
  exec.join();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 5);
  EXPECT_EQ(out.str(), "bye\r\n");
  std::string typed;
  for (const auto& m : api.Got()) typed += m.stdin_data();
  EXPECT_EQ(typed.substr(0, 6), std::string("ab\x03" "end", 6));
  // The terminal is back in its own mode.
  termios after{};
  ASSERT_EQ(tcgetattr(slave.get(), &after), 0);
  EXPECT_EQ(after.c_lflag, before.c_lflag);
  EXPECT_EQ(after.c_iflag, before.c_iflag);
  server->Shutdown();
}

}  // namespace
