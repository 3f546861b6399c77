// skiff.api.v1.Kubelet: thin adapters over the kubelet engine.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <deque>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "skiff/api/v1/kubelet.grpc.pb.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"
#include "skiff/kubelet/cri_log.h"
#include "skiff/kubelet/kubelet.h"
#include "skiff/kubelet/server.h"
#include "skiff/kubelet/stats.h"

namespace skiff::kubelet {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

int64_t ParseNanos(const std::string& ts) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, ts, &t, &err)) return 0;
  return absl::ToUnixNanos(t);
}

std::string Render(const CriLogLine& l, bool timestamps) {
  std::string s = timestamps ? l.timestamp + " " : "";
  s += l.message;
  if (!l.partial) s += "\n";
  return s;
}

// ContainerStats.unavailable (repeated string) names values this node cannot
// measure. Set through reflection so the kubelet builds against a stats.proto
// with or without that field.
void MarkUnavailable(google::protobuf::Message* m, const std::string& what) {
  const auto* f = m->GetDescriptor()->FindFieldByName("unavailable");
  if (f && f->is_repeated() && f->type() == google::protobuf::FieldDescriptor::TYPE_STRING) {
    m->GetReflection()->AddString(m, f, what);
  }
}

}  // namespace

void FillStats(Kubelet* k, CpuRate* rate, api::v1::StatsResponse* resp) {
  auto now = [] { return absl::ToUnixNanos(absl::Now()); };
  auto sample_all = [&](std::vector<RunningContainer>& cs, std::vector<CgroupUsage>* usage, CgroupUsage* node) {
    usage->clear();
    for (const auto& c : cs) usage->push_back(c.cgroup_dir.empty() ? CgroupUsage{} : ReadCgroupUsage(c.cgroup_dir));
    *node = ReadNodeUsage();
  };
  std::vector<RunningContainer> cs = k->RunningContainers();
  std::vector<CgroupUsage> usage;
  CgroupUsage node;
  sample_all(cs, &usage, &node);
  int64_t t = now();
  uint64_t nc = 0;
  bool need_second = !rate->Sample("", node.cpu_usage_usec, t, &nc);
  for (size_t i = 0; i < cs.size(); ++i) {
    if (usage[i].cpu_known) need_second |= !rate->Sample(cs[i].id, usage[i].cpu_usage_usec, t, &nc);
  }
  // First sight of a container (or of the node): a rate needs two samples.
  if (need_second) {
    absl::SleepFor(absl::Milliseconds(100));
    sample_all(cs, &usage, &node);
  }
  t = now();
  resp->set_node_name(k->config().node_name);
  if (rate->Sample("", node.cpu_usage_usec, t, &nc)) resp->set_cpu_usage_nano_cores(nc);
  if (node.memory_known) resp->set_memory_working_set_bytes(node.memory_working_set_bytes);
  std::map<std::string, api::v1::PodStats*> pods;
  for (size_t i = 0; i < cs.size(); ++i) {
    api::v1::PodStats*& ps = pods[cs[i].ns + "/" + cs[i].pod];
    if (!ps) {
      ps = resp->add_pods();
      ps->set_namespace_(cs[i].ns);
      ps->set_name(cs[i].pod);
    }
    auto* c = ps->add_containers();
    c->set_name(cs[i].container);
    if (usage[i].cpu_known && rate->Sample(cs[i].id, usage[i].cpu_usage_usec, t, &nc)) {
      c->set_cpu_usage_nano_cores(nc);
    } else {
      MarkUnavailable(c, "cpu");
    }
    if (usage[i].memory_known) {
      c->set_memory_working_set_bytes(usage[i].memory_working_set_bytes);
    } else {
      MarkUnavailable(c, "memory");
    }
  }
  rate->Forget(t - int64_t{600} * 1'000'000'000);
}

absl::Status StreamLog(const std::string& path, const LogOptions& o, const std::function<bool(const std::string&)>& emit,
                       const std::function<bool()>& still_running, const std::function<bool()>& cancelled) {
  int64_t budget = o.limit_bytes;
  auto send = [&](std::string s) {
    if (budget >= 0) {
      if (budget == 0) return false;
      if (static_cast<int64_t>(s.size()) > budget) s.resize(budget);
      budget -= s.size();
    }
    return emit(s);
  };
  std::deque<std::string> tail;
  for (const auto& f : LogFilesOldestFirst(path)) {
    std::ifstream in(f);
    std::string line;
    while (std::getline(in, line)) {
      auto l = ParseCriLine(line);
      if (!l.ok()) continue;
      if (o.since_unix_nanos > 0 && ParseNanos(l->timestamp) < o.since_unix_nanos) continue;
      tail.push_back(Render(*l, o.timestamps));
      if (o.tail_lines >= 0 && static_cast<int64_t>(tail.size()) > o.tail_lines) tail.pop_front();
    }
  }
  std::string chunk;
  for (auto& s : tail) {
    chunk += s;
    if (chunk.size() > 32768) {
      if (!send(chunk)) return absl::OkStatus();
      chunk.clear();
    }
  }
  if (!chunk.empty() && !send(chunk)) return absl::OkStatus();
  if (!o.follow) return absl::OkStatus();
  // Follow: continue from the current end of the newest file; reopen when it is rotated.
  struct stat st{};
  ino_t ino = 0;
  off_t off = 0;
  if (stat(path.c_str(), &st) == 0) ino = st.st_ino, off = st.st_size;
  std::string partial;
  int idle_after_exit = 0;
  while (!cancelled()) {
    bool got = false;
    if (stat(path.c_str(), &st) == 0) {
      if (st.st_ino != ino) ino = st.st_ino, off = 0;
      if (st.st_size > off) {
        UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (fd.valid() && lseek(fd.get(), off, SEEK_SET) == off) {
          char buf[16384];
          ssize_t n;
          while ((n = read(fd.get(), buf, sizeof(buf))) > 0) {
            partial.append(buf, n);
            off += n;
          }
        }
        size_t pos;
        std::string out;
        while ((pos = partial.find('\n')) != std::string::npos) {
          auto l = ParseCriLine(partial.substr(0, pos));
          partial.erase(0, pos + 1);
          if (l.ok()) out += Render(*l, o.timestamps);
        }
        if (!out.empty()) {
          got = true;
          if (!send(out)) return absl::OkStatus();
        }
      }
    }
    if (!got) {
      if (!still_running()) {
        if (++idle_after_exit > 2) return absl::OkStatus();
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
  }
  return absl::OkStatus();
}

namespace {

class KubeletService final : public api::v1::Kubelet::Service {
 public:
  explicit KubeletService(Kubelet* k) : k_(k) {}

  grpc::Status Logs(grpc::ServerContext* ctx, const api::v1::LogsRequest* req,
                    grpc::ServerWriter<api::v1::LogsChunk>* w) override {
    auto loc = k_->Locate(req->namespace_(), req->pod(), req->container());
    if (!loc.ok()) return ToGrpc(loc.status());
    std::string path = req->previous() ? loc->previous_log_path : loc->log_path;
    if (path.empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("previous terminated container \"", req->container(), "\" in pod \"", req->pod(),
                                       "\" not found"));
    }
    LogOptions o;
    o.follow = req->follow() && !req->previous();
    if (req->has_tail_lines()) o.tail_lines = req->tail_lines();
    if (req->has_since_seconds()) o.since_unix_nanos = absl::ToUnixNanos(absl::Now() - absl::Seconds(req->since_seconds()));
    if (!req->since_time().empty()) o.since_unix_nanos = ParseNanos(req->since_time());
    o.timestamps = req->timestamps();
    if (req->has_limit_bytes()) o.limit_bytes = req->limit_bytes();
    std::string ns = req->namespace_(), pod = req->pod(), c = req->container(), id = loc->container_id;
    absl::Status st = StreamLog(
        path, o,
        [&](const std::string& s) {
          api::v1::LogsChunk chunk;
          chunk.set_data(s);
          return w->Write(chunk);
        },
        [&] {
          auto l = k_->Locate(ns, pod, c);
          return l.ok() && l->running && l->container_id == id;
        },
        [&] { return ctx->IsCancelled(); });
    return ToGrpc(st);
  }

  grpc::Status Exec(grpc::ServerContext* ctx,
                    grpc::ServerReaderWriter<api::v1::ExecOutput, api::v1::ExecInput>* stream) override {
    api::v1::ExecInput first;
    if (!stream->Read(&first)) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no exec request");
    auto loc = k_->Locate(first.namespace_(), first.pod(), first.container());
    if (!loc.ok()) return ToGrpc(loc.status());
    if (!loc->running) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("container ", first.container(), " is not running"));
    }
    std::vector<std::string> argv(first.command().begin(), first.command().end());
    if (argv.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "command is required");
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    absl::StatusOr<pid_t> pid;
    UniqueFd term;  // the pty master with a TTY: stdin and output both
    if (first.tty()) {
      int master = -1;
      pid = k_->engine().ExecStartTty(loc->container_id, argv, {}, &master);
      if (pid.ok()) term = UniqueFd(master);
    } else {
      if (first.stdin() && pipe2(in, O_CLOEXEC) != 0) return grpc::Status(grpc::StatusCode::INTERNAL, "pipe");
      if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return grpc::Status(grpc::StatusCode::INTERNAL, "pipe");
    }
    UniqueFd in_r(in[0]), in_w(in[1]), out_r(out[0]), out_w(out[1]), err_r(err[0]), err_w(err[1]);
    if (!first.tty()) pid = k_->engine().ExecStart(loc->container_id, argv, {}, in_r.get(), out_w.get(), err_w.get());
    in_r.reset();
    out_w.reset();
    err_w.reset();
    if (!pid.ok()) {
      api::v1::ExecOutput o;
      o.set_error(std::string(pid.status().message()));
      o.set_exited(true);
      o.set_exit_code(126);
      stream->Write(o);
      return grpc::Status::OK;
    }
    // The pty master's fd number stays the same when out_r takes it over
    // below, so later resize messages still reach the terminal.
    const int tty_fd = term ? term.get() : -1;
    auto resize = [&](const api::v1::ExecInput& m) {
      if (tty_fd < 0 || m.resize_width() == 0 || m.resize_height() == 0) return;
      winsize ws{};
      ws.ws_col = static_cast<unsigned short>(m.resize_width());
      ws.ws_row = static_cast<unsigned short>(m.resize_height());
      ioctl(tty_fd, TIOCSWINSZ, &ws);
    };
    resize(first);
    if (term) {
      // Writes to the terminal go to the same fd the output is read from.
      in_w = UniqueFd(dup(term.get()));
      out_r = std::move(term);
    }
    std::mutex wmu;
    int stdin_fd = in_w.get();
    std::atomic<bool> done{false};
    std::thread reader([&] {
      api::v1::ExecInput msg;
      if (!first.stdin_data().empty() && stdin_fd >= 0) {
        if (write(stdin_fd, first.stdin_data().data(), first.stdin_data().size()) < 0) {
        }
      }
      // On a terminal, end of input is the EOF character, not a closed fd.
      auto close_stdin = [&] {
        if (first.tty() && in_w.valid()) {
          if (write(in_w.get(), "\x04", 1) < 0) {
          }
        }
        in_w.reset();
      };
      if (first.stdin_close()) close_stdin();
      while (!done && stream->Read(&msg)) {
        if (in_w.valid() && !msg.stdin_data().empty()) {
          if (write(in_w.get(), msg.stdin_data().data(), msg.stdin_data().size()) < 0) {
          }
        }
        resize(msg);
        if (msg.stdin_close()) close_stdin();
      }
    });
    pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
    int open_count = (fds[0].fd >= 0) + (fds[1].fd >= 0);
    char buf[16384];
    while (open_count > 0 && !ctx->IsCancelled()) {
      int n = poll(fds, 2, 200);
      if (n <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t r = read(fds[i].fd, buf, sizeof(buf));
        if (r <= 0) {
          fds[i].fd = -1;
          --open_count;
          continue;
        }
        api::v1::ExecOutput o;
        if (i == 0) o.set_stdout(std::string(buf, r));
        else o.set_stderr(std::string(buf, r));
        std::lock_guard<std::mutex> l(wmu);
        stream->Write(o);
      }
    }
    if (ctx->IsCancelled()) kill(*pid, SIGKILL);
    auto code = ContainerEngine::WaitExec(*pid);
    done = true;
    api::v1::ExecOutput o;
    o.set_exited(true);
    o.set_exit_code(code.ok() ? *code : 255);
    {
      std::lock_guard<std::mutex> l(wmu);
      stream->Write(o);
    }
    // The reader ends when the client half-closes or the call finishes.
    ctx->TryCancel();
    reader.join();
    return grpc::Status::OK;
  }

  grpc::Status PortForward(grpc::ServerContext* ctx,
                           grpc::ServerReaderWriter<api::v1::PortForwardFrame, api::v1::PortForwardFrame>* stream) override {
    api::v1::PortForwardFrame first;
    if (!stream->Read(&first)) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no port-forward request");
    auto loc = k_->Locate(first.namespace_(), first.pod(), "");
    if (!loc.ok()) return ToGrpc(loc.status());
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    UniqueFd sock(fd);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(first.port());
    inet_pton(AF_INET, loc->pod_ip.c_str(), &a.sin_addr);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      api::v1::PortForwardFrame e;
      e.set_error(absl::StrCat("failed to connect to ", loc->pod_ip, ":", first.port(), ": ", strerror(errno)));
      e.set_close(true);
      stream->Write(e);
      return grpc::Status::OK;
    }
    if (!first.data().empty() && write(fd, first.data().data(), first.data().size()) < 0) {
    }
    std::atomic<bool> closed{false};
    std::thread up([&] {
      api::v1::PortForwardFrame f;
      while (stream->Read(&f)) {
        if (!f.data().empty() && write(fd, f.data().data(), f.data().size()) < 0) break;
        if (f.close()) break;
      }
      shutdown(fd, SHUT_WR);
      closed = true;
    });
    char buf[32768];
    while (!ctx->IsCancelled()) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      ssize_t r = read(fd, buf, sizeof(buf));
      if (r <= 0) break;
      api::v1::PortForwardFrame f;
      f.set_data(std::string(buf, r));
      if (!stream->Write(f)) break;
    }
    api::v1::PortForwardFrame end;
    end.set_close(true);
    stream->Write(end);
    ctx->TryCancel();
    up.join();
    return grpc::Status::OK;
  }

  grpc::Status Stats(grpc::ServerContext*, const api::v1::StatsRequest*, api::v1::StatsResponse* resp) override {
    FillStats(k_, &rate_, resp);
    return grpc::Status::OK;
  }

 private:
  Kubelet* k_;
  CpuRate rate_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<grpc::Server>> StartKubeletServer(Kubelet* k, const std::string& listen) {
  static std::unique_ptr<KubeletService> service;  // lives as long as the process
  service = std::make_unique<KubeletService>(k);
  std::string addr = listen;
  if (!addr.empty() && addr[0] == ':') addr = "0.0.0.0" + addr;
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort(addr, grpc::InsecureServerCredentials(), &port);
  b.RegisterService(service.get());
  std::unique_ptr<grpc::Server> s = b.BuildAndStart();
  if (!s || port == 0) return absl::UnavailableError("cannot serve the Kubelet service on " + listen);
  return s;
}

}  // namespace skiff::kubelet
