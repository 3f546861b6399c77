// Node IPAM: gives every node without one a podCIDR carved from the cluster
// CIDR (default 10.244.0.0/16, a /24 each), never handing out a range another
// node holds.
#include <arpa/inet.h>

#include <mutex>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "skiff/controllers/controller.h"
#include "skiff/controllers/objects.h"

namespace skiff::controllers {
namespace {

bool ParseCidr(const std::string& cidr, uint32_t* base, int* len) {
  auto slash = cidr.find('/');
  if (slash == std::string::npos) return false;
  in_addr a;
  if (inet_pton(AF_INET, cidr.substr(0, slash).c_str(), &a) != 1) return false;
  if (!absl::SimpleAtoi(cidr.substr(slash + 1), len) || *len < 0 || *len > 32) return false;
  *base = ntohl(a.s_addr);
  if (*len < 32) *base &= ~((1u << (32 - *len)) - 1);
  return true;
}

std::string FormatCidr(uint32_t addr, int len) {
  in_addr a;
  a.s_addr = htonl(addr);
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return absl::StrCat(buf, "/", len);
}

class NodeIpamController : public Controller {
 public:
  explicit NodeIpamController(Context ctx) : Controller(std::move(ctx)) {
    nodes_ = ctx_.informers->For("nodes");
    nodes_->AddHandler({[this](const ObjectPtr& o) { Enqueue(o); },
                        [this](const ObjectPtr&, const ObjectPtr& o) { Enqueue(o); }, nullptr});
  }
  std::string Name() const override { return "nodeipam"; }

  absl::Status Reconcile(const std::string& name) override {
    auto obj = nodes_->Get(name);
    if (obj == nullptr || !obj->node().spec().pod_cidr().empty()) return absl::OkStatus();
    uint32_t base;
    int len;
    const int mask = ctx_.opts.node_cidr_mask_size;
    if (!ParseCidr(ctx_.opts.cluster_cidr, &base, &len) || mask < len || mask > 32)
      return absl::InvalidArgumentError("bad cluster CIDR " + ctx_.opts.cluster_cidr);
    std::lock_guard<std::mutex> lock(mu_);
    std::set<std::string> used = handed_out_;
    for (const auto& n : nodes_->List())
      if (!n->node().spec().pod_cidr().empty()) used.insert(n->node().spec().pod_cidr());
    uint64_t count = 1ull << (mask - len);
    for (uint64_t i = 0; i < count; i++) {
      std::string cidr = FormatCidr(base + uint32_t(i << (32 - mask)), mask);
      if (used.count(cidr)) continue;
      auto cur = ctx_.api->Get("nodes", "", name);
      if (!cur.ok()) return cur.status().code() == absl::StatusCode::kNotFound ? absl::OkStatus() : cur.status();
      if (!cur->node().spec().pod_cidr().empty()) return absl::OkStatus();
      api::v1::Object upd = *cur;
      upd.mutable_node()->mutable_spec()->set_pod_cidr(cidr);
      upd.mutable_node()->mutable_spec()->clear_pod_cidrs();
      upd.mutable_node()->mutable_spec()->add_pod_cidrs(cidr);
      auto r = ctx_.api->Update("nodes", "", upd);
      if (!r.ok()) return r.status();
      handed_out_.insert(cidr);
      ctx_.events->Event(RefTo(upd), "Normal", "CIDRAssignmentSucceeded", "Assigned podCIDR " + cidr);
      return absl::OkStatus();
    }
    ctx_.events->Event(RefTo(*obj), "Warning", "CIDRNotAvailable", "No free podCIDR in " + ctx_.opts.cluster_cidr);
    return absl::ResourceExhaustedError("no free podCIDR");
  }

 private:
  Informer* nodes_;
  std::mutex mu_;
  std::set<std::string> handed_out_;  // until the cache shows them
};

}  // namespace

std::unique_ptr<Controller> NewNodeIpamController(Context ctx) {
  return std::make_unique<NodeIpamController>(std::move(ctx));
}

}  // namespace skiff::controllers
