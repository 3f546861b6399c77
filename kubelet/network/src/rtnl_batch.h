// Several rtnetlink requests sent in one sendmsg(2). Each request asks for
// an ACK and has its own sequence number, so every error is matched to the
// request that caused it; the kernel handles the requests in order and goes
// on after a failed one. One round trip instead of one per request.
#pragma once

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"

struct nl_sock;
struct nl_msg;

namespace skiff::podnet {

class RtnlBatch {
 public:
  explicit RtnlBatch(nl_sock* sock) : sock_(sock) {}
  ~RtnlBatch();
  RtnlBatch(const RtnlBatch&) = delete;
  RtnlBatch& operator=(const RtnlBatch&) = delete;

  // Starts a request: `header` (ifinfomsg, ifaddrmsg, rtmsg) follows the
  // netlink header; add attributes to the returned message with nla_put*.
  // Errors listed in `ignore` (positive errno values) count as success.
  // `on_reply` sees any non-ACK answer to this request (a GET's reply).
  nl_msg* Add(int type, int flags, const void* header, size_t header_len, std::string what,
              std::vector<int> ignore = {}, std::function<void(nlmsghdr*)> on_reply = nullptr);

  // Sends every request and waits for every ACK. Returns the first error.
  absl::Status Run();

 private:
  struct Request {
    nl_msg* msg;
    uint32_t seq;
    std::string what;
    std::vector<int> ignore;
    std::function<void(nlmsghdr*)> on_reply;
    bool acked = false;
    int error = 0;
  };
  nl_sock* sock_;
  std::vector<Request> requests_;
};

}  // namespace skiff::podnet
