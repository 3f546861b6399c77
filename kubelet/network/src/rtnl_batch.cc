#include "rtnl_batch.h"

#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"

namespace skiff::podnet {

RtnlBatch::~RtnlBatch() {
  for (Request& r : requests_) nlmsg_free(r.msg);
}

nl_msg* RtnlBatch::Add(int type, int flags, const void* header, size_t header_len, std::string what,
                       std::vector<int> ignore, std::function<void(nlmsghdr*)> on_reply) {
  nl_msg* msg = nlmsg_alloc_simple(type, flags | NLM_F_REQUEST | NLM_F_ACK);
  if (msg == nullptr) return nullptr;
  if (nlmsg_append(msg, const_cast<void*>(header), header_len, NLMSG_ALIGNTO) < 0) {
    nlmsg_free(msg);
    return nullptr;
  }
  // Our own sequence numbers: taking libnl's (nl_socket_use_seq) would make
  // its next ACK check on this socket fail with a sequence mismatch.
  static std::atomic<uint32_t> next_seq{0x5a000000};
  uint32_t seq = next_seq.fetch_add(1);
  nlmsg_hdr(msg)->nlmsg_seq = seq;
  requests_.push_back({msg, seq, std::move(what), std::move(ignore), std::move(on_reply)});
  return msg;
}

absl::Status RtnlBatch::Run() {
  if (requests_.empty()) return absl::OkStatus();
  for (const Request& r : requests_) {
    if (r.msg == nullptr) return absl::ResourceExhaustedError("netlink message for " + r.what);
  }
  const int fd = nl_socket_get_fd(sock_);
  std::vector<iovec> iov;
  for (const Request& r : requests_) {
    nlmsghdr* h = nlmsg_hdr(r.msg);
    iov.push_back({h, NLMSG_ALIGN(h->nlmsg_len)});
  }
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  msghdr mh{};
  mh.msg_name = &kernel;
  mh.msg_namelen = sizeof(kernel);
  mh.msg_iov = iov.data();
  mh.msg_iovlen = iov.size();
  ssize_t sent;
  do {
    sent = sendmsg(fd, &mh, 0);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return LastErrnoError("send netlink batch (" + requests_.front().what + ", ...)");

  size_t pending = requests_.size();
  std::vector<char> buf(64 * 1024);
  while (pending > 0) {
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return LastErrnoError("receive netlink ACKs");
    }
    int len = static_cast<int>(n);
    for (nlmsghdr* h = reinterpret_cast<nlmsghdr*>(buf.data()); nlmsg_ok(h, len); h = nlmsg_next(h, &len)) {
      auto it = std::find_if(requests_.begin(), requests_.end(),
                             [&](const Request& r) { return r.seq == h->nlmsg_seq; });
      if (it == requests_.end() || it->acked) continue;  // not ours (a late answer of an earlier exchange)
      if (h->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<nlmsgerr*>(nlmsg_data(h));
        it->acked = true;
        it->error = -e->error;
        --pending;
      } else if (it->on_reply) {
        it->on_reply(h);
      }
    }
  }
  for (const Request& r : requests_) {
    if (r.error == 0 || std::count(r.ignore.begin(), r.ignore.end(), r.error) > 0) continue;
    return ErrnoError(r.error, r.what);
  }
  return absl::OkStatus();
}

}  // namespace skiff::podnet
