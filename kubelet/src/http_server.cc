#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"
#include "skiff/kubelet/kubelet.h"
#include "skiff/kubelet/server.h"

namespace skiff::kubelet {

absl::StatusOr<sockaddr_in> ParseListen(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError("listen address needs a port: " + listen);
  std::string host = listen.substr(0, colon);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(atoi(listen.c_str() + colon + 1));
  if (host.empty() || host == "0.0.0.0") a.sin_addr.s_addr = INADDR_ANY;
  else if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) return absl::InvalidArgumentError("bad host " + host);
  return a;
}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Start(const std::string& listen, Handler handler) {
  handler_ = std::move(handler);
  ASSIGN_OR_RETURN(sockaddr_in a, ParseListen(listen));
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return LastErrnoError("socket");
  int one = 1;
  setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return LastErrnoError("bind " + listen);
  if (::listen(fd_, 16) != 0) return LastErrnoError("listen " + listen);
  socklen_t len = sizeof(a);
  getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this] {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 200) != 1) continue;
      int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      timeval tv{2, 0};
      setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      char buf[2048];
      ssize_t n = read(c, buf, sizeof(buf) - 1);
      std::string path = "/";
      if (n > 0) {
        buf[n] = 0;
        const char* sp = strchr(buf, ' ');
        if (sp) {
          const char* sp2 = strchr(sp + 1, ' ');
          if (sp2) path.assign(sp + 1, sp2 - sp - 1);
        }
      }
      int code = 200;
      std::string ctype = "text/plain; charset=utf-8";
      std::string body = handler_(path, &code, &ctype);
      std::string resp = absl::StrCat("HTTP/1.1 ", code, code == 200 ? " OK" : " Error", "\r\nContent-Type: ", ctype,
                                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
      if (write(c, resp.data(), resp.size()) < 0) {
      }
      close(c);
    }
  });
  return absl::OkStatus();
}

void HttpServer::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

std::string RenderMetrics(Kubelet* k) {
  KubeletMetrics m = k->Metrics();
  static const double kBuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  std::ostringstream o;
  o << "# HELP kubelet_pod_start_duration_seconds Duration from the kubelet seeing a pod to all its containers running.\n"
    << "# TYPE kubelet_pod_start_duration_seconds histogram\n";
  double sum = 0;
  for (double b : kBuckets) {
    int n = 0;
    for (double v : m.start_latency_seconds) n += v <= b;
    o << "kubelet_pod_start_duration_seconds_bucket{le=\"" << b << "\"} " << n << "\n";
  }
  for (double v : m.start_latency_seconds) sum += v;
  o << "kubelet_pod_start_duration_seconds_bucket{le=\"+Inf\"} " << m.start_latency_seconds.size() << "\n"
    << "kubelet_pod_start_duration_seconds_sum " << sum << "\n"
    << "kubelet_pod_start_duration_seconds_count " << m.start_latency_seconds.size() << "\n"
    << "# HELP kubelet_running_pods Number of pods that have a running container.\n# TYPE kubelet_running_pods gauge\n"
    << "kubelet_running_pods " << m.running_pods << "\n"
    << "# HELP kubelet_running_containers Number of running containers.\n# TYPE kubelet_running_containers gauge\n"
    << "kubelet_running_containers " << m.running_containers << "\n";
  return o.str();
}

}  // namespace skiff::kubelet
