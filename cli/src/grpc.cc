// The production connection: skiff::client's GrpcClient for the generic
// verbs, and the node streams over the same channel.
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <thread>

#include "skiff/cli/cli.h"
#include "skiff/client/dial.h"

namespace skiff::cli {

namespace {

// Raw mode for `exec -it`, restored on destruction.
class RawTerminal {
 public:
  explicit RawTerminal(int fd) : fd_(fd) {
    if (fd_ < 0 || !::isatty(fd_) || ::tcgetattr(fd_, &saved_) != 0) return;
    termios raw = saved_;
    ::cfmakeraw(&raw);
    active_ = ::tcsetattr(fd_, TCSANOW, &raw) == 0;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
  }

 private:
  int fd_;
  termios saved_{};
  bool active_ = false;
};

// The size of the terminal on fd; nullopt if it is none or has no size yet.
std::optional<winsize> TerminalSize(int fd) {
  winsize ws{};
  if (fd < 0 || ::ioctl(fd, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0 || ws.ws_row == 0) return std::nullopt;
  return ws;
}

class GrpcNodeApi : public NodeApi {
 public:
  explicit GrpcNodeApi(client::GrpcClient* c) : c_(c) {}

  absl::Status Logs(const api::v1::LogsRequest& req, const std::function<void(const std::string&)>& sink) override {
    grpc::ClientContext ctx;
    c_->PrepareContext(&ctx);
    auto reader = c_->stub()->Logs(&ctx, req);
    api::v1::LogsChunk chunk;
    while (reader->Read(&chunk)) sink(chunk.data());
    return client::FromGrpcStatus(reader->Finish());
  }

  absl::StatusOr<int> Exec(const api::v1::ExecInput& first, int in_fd, std::ostream& out, std::ostream& err) override {
    grpc::ClientContext ctx;
    c_->PrepareContext(&ctx);
    auto stream = c_->stub()->Exec(&ctx);
    // With a TTY the remote terminal starts at the local one's size and
    // follows it (checked on every input poll, as SIGWINCH would tell).
    std::optional<winsize> size;
    if (first.tty()) size = TerminalSize(in_fd);
    api::v1::ExecInput start = first;
    if (size) {
      start.set_resize_width(size->ws_col);
      start.set_resize_height(size->ws_row);
    }
    if (!stream->Write(start)) return client::FromGrpcStatus(stream->Finish());
    std::optional<RawTerminal> raw;
    if (first.tty()) raw.emplace(in_fd);
    std::atomic<bool> done{false};
    std::thread input;
    if (in_fd >= 0 && first.stdin()) {
      input = std::thread([&] {
        char buf[16384];
        while (!done) {
          pollfd p{in_fd, POLLIN, 0};
          int rc = ::poll(&p, 1, 200);
          if (size) {
            std::optional<winsize> now = TerminalSize(in_fd);
            if (now && (now->ws_col != size->ws_col || now->ws_row != size->ws_row)) {
              size = now;
              api::v1::ExecInput resize;
              resize.set_resize_width(size->ws_col);
              resize.set_resize_height(size->ws_row);
              if (!stream->Write(resize)) return;
            }
          }
          if (rc == 0) continue;
          if (rc < 0 && errno == EINTR) continue;
          ssize_t n = rc < 0 ? -1 : ::read(in_fd, buf, sizeof buf);
          api::v1::ExecInput msg;
          if (n <= 0) {
            msg.set_stdin_close(true);
            stream->Write(msg);
            stream->WritesDone();
            return;
          }
          msg.set_stdin_data(std::string(buf, static_cast<size_t>(n)));
          if (!stream->Write(msg)) return;
        }
      });
    } else {
      stream->WritesDone();
    }
    api::v1::ExecOutput msg;
    int code = 0;
    std::string error;
    while (stream->Read(&msg)) {
      if (!msg.stdout().empty()) {
        out << msg.stdout();
        out.flush();
      }
      if (!msg.stderr().empty()) {
        err << msg.stderr();
        err.flush();
      }
      if (!msg.error().empty()) error = msg.error();
      if (msg.exited()) code = msg.exit_code();
    }
    done = true;
    if (input.joinable()) {
      ctx.TryCancel();
      input.join();
    }
    absl::Status st = client::FromGrpcStatus(stream->Finish());
    if (!error.empty()) return absl::InternalError(error);
    if (!st.ok() && st.code() != absl::StatusCode::kCancelled) return st;
    return code;
  }

  absl::Status PortForward(const std::string& ns, const std::string& pod, int port, int fd) override {
    grpc::ClientContext ctx;
    c_->PrepareContext(&ctx);
    auto stream = c_->stub()->PortForward(&ctx);
    api::v1::PortForwardFrame first;
    first.set_namespace_(ns);
    first.set_pod(pod);
    first.set_port(port);
    if (!stream->Write(first)) return client::FromGrpcStatus(stream->Finish());
    std::thread upstream([&] {
      char buf[32768];
      while (true) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        api::v1::PortForwardFrame f;
        if (n <= 0) {
          f.set_close(true);
          stream->Write(f);
          stream->WritesDone();
          return;
        }
        f.set_data(std::string(buf, static_cast<size_t>(n)));
        if (!stream->Write(f)) return;
      }
    });
    api::v1::PortForwardFrame f;
    std::string error;
    while (stream->Read(&f)) {
      if (!f.error().empty()) error = f.error();
      const std::string& d = f.data();
      size_t off = 0;
      while (off < d.size()) {
        ssize_t n = ::write(fd, d.data() + off, d.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      if (f.close()) break;
    }
    ::shutdown(fd, SHUT_RDWR);  // unblocks the upstream reader
    upstream.join();
    ctx.TryCancel();
    absl::Status st = client::FromGrpcStatus(stream->Finish());
    if (!error.empty()) return absl::InternalError(error);
    if (!st.ok() && st.code() != absl::StatusCode::kCancelled) return st;
    return absl::OkStatus();
  }

  absl::StatusOr<api::v1::VersionInfo> Version() override { return c_->Version(); }

  absl::StatusOr<api::v1::StatsResponse> NodeStats(const std::string& node_name) override {
    return c_->NodeStats(node_name);
  }

  absl::StatusOr<api::v1::CreateBootstrapTokenResponse> CreateBootstrapToken(
      const api::v1::CreateBootstrapTokenRequest& req) override {
    return c_->CreateBootstrapToken(req.ttl_seconds(), req.description());
  }

 private:
  client::GrpcClient* c_;
};

}  // namespace

absl::StatusOr<Connection> DialGrpc(const client::Credentials& creds) {
  auto c = client::Dial(creds);
  if (!c.ok()) return c.status();
  Connection conn;
  conn.node = std::make_unique<GrpcNodeApi>(c->get());
  conn.client = std::move(*c);
  return conn;
}

}  // namespace skiff::cli
