// Load generator for bench/service-latency: a tiny TCP request/response
// server and a client that measures connect-request-close latency.
//   skiff-bench-service-latency server IP:PORT...
//   skiff-bench-service-latency client IP:PORT COUNT
//   skiff-bench-service-latency udp-sink IP:PORT SECONDS
//   skiff-bench-service-latency udp-blast IP:PORT SECONDS
// The client prints "p50_us=.. p90_us=.. p99_us=.. rate=.. errors=..".
// udp-blast sends 64-byte datagrams (sendmmsg, 64 per call) for SECONDS;
// udp-sink counts what arrives from its first datagram on for SECONDS and
// prints "pps=..": packets/s through whatever translates in between.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

bool ParseAddr(const std::string& s, sockaddr_in* a) {
  auto c = s.rfind(':');
  if (c == std::string::npos) return false;
  memset(a, 0, sizeof(*a));
  a->sin_family = AF_INET;
  a->sin_port = htons(static_cast<uint16_t>(atoi(s.c_str() + c + 1)));
  return inet_pton(AF_INET, s.substr(0, c).c_str(), &a->sin_addr) == 1;
}

int Server(int argc, char** argv) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<int> listeners;
  for (int i = 2; i < argc; ++i) {
    sockaddr_in a;
    if (!ParseAddr(argv[i], &a)) return 2;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(s, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one));
    if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(s, 4096) != 0) {
      perror("bind/listen");
      return 1;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = s;
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    listeners.push_back(s);
  }
  printf("ready\n");
  fflush(stdout);
  epoll_event evs[64];
  char buf[256];
  const char resp[] = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
  while (true) {
    int n = epoll_wait(ep, evs, 64, -1);
    for (int i = 0; i < n; ++i) {
      int fd = evs[i].data.fd;
      if (std::find(listeners.begin(), listeners.end(), fd) != listeners.end()) {
        int c = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0) continue;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
      } else {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r > 0) {
          if (write(fd, resp, sizeof(resp) - 1) < 0) {
          }
        }
        close(fd);  // one request per connection
      }
    }
  }
}

int Client(int argc, char** argv) {
  if (argc < 4) return 2;
  sockaddr_in a;
  if (!ParseAddr(argv[2], &a)) return 2;
  int count = atoi(argv[3]);
  std::vector<double> lat;
  lat.reserve(count);
  int errors = 0;
  const char req[] = "GET / HTTP/1.0\r\n\r\n";
  char buf[256];
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < count; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
              write(s, req, sizeof(req) - 1) == static_cast<ssize_t>(sizeof(req) - 1);
    ssize_t got = 0, r;
    while (ok && (r = read(s, buf, sizeof(buf))) > 0) got += r;
    ok = ok && got > 0;
    close(s);
    auto t1 = std::chrono::steady_clock::now();
    if (!ok) {
      ++errors;
      continue;
    }
    lat.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) { return lat.empty() ? 0.0 : lat[std::min(lat.size() - 1, size_t(p * lat.size()))]; };
  printf("p50_us=%.1f p90_us=%.1f p99_us=%.1f rate=%.0f errors=%d\n", pct(0.5), pct(0.9), pct(0.99),
         lat.size() / secs, errors);
  return errors ? 1 : 0;
}

}  // namespace

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int UdpSink(int argc, char** argv) {
  sockaddr_in a;
  if (argc < 4 || !ParseAddr(argv[2], &a)) return 2;
  double seconds = atof(argv[3]);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int one = 1, big = 8 << 20;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
  if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    perror("bind");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  char buf[2048];
  if (recv(s, buf, sizeof(buf), 0) < 0) return 1;
  timeval tv{0, 200000};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  long long n = 0;
  double t0 = Now(), end = t0 + seconds;
  while (Now() < end) {
    if (recv(s, buf, sizeof(buf), 0) > 0) ++n;
  }
  printf("pps=%.0f packets=%lld\n", n / (Now() - t0), n);
  return 0;
}

int UdpBlast(int argc, char** argv) {
  sockaddr_in a;
  if (argc < 4 || !ParseAddr(argv[2], &a)) return 2;
  double seconds = atof(argv[3]);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    perror("connect");
    return 1;
  }
  char payload[64] = {};
  std::vector<iovec> iov(64, iovec{payload, sizeof(payload)});
  std::vector<mmsghdr> msgs(64);
  for (size_t i = 0; i < msgs.size(); ++i) {
    memset(&msgs[i], 0, sizeof(msgs[i]));
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  long long sent = 0;
  double end = Now() + seconds;
  while (Now() < end) {
    int r = sendmmsg(s, msgs.data(), msgs.size(), 0);
    if (r > 0) sent += r;
  }
  printf("sent=%lld\n", sent);
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "udp-sink") return UdpSink(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "udp-blast") return UdpBlast(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "server") return Server(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "client") return Client(argc, argv);
  fprintf(stderr, "usage: %s server IP:PORT... | client IP:PORT COUNT\n", argv[0]);
  return 2;
}
