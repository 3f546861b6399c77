// Persistent host-local IPAM over a node's podCIDR.
//
// One file per allocated address under `dir` (named after the address,
// holding the owner, a pod uid). A file is published with link(2) from a
// fully written temporary, so a crash never leaves a half-claimed address and
// two allocators (even in two processes) can never hand out the same one.
// The network address, the gateway (first host address, owned by the node's
// veths) and the broadcast address are never handed out.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "skiff/podnet/cidr.h"

namespace skiff::podnet {

class Ipam {
 public:
  // Loads existing allocations from `dir` (created if missing).
  static absl::StatusOr<std::unique_ptr<Ipam>> Open(const std::string& dir, const std::string& cidr);

  // Returns the owner's address, allocating one if it has none.
  absl::StatusOr<uint32_t> Allocate(const std::string& owner);
  // Releases the owner's address (no error if it had none).
  absl::Status Release(const std::string& owner);
  // Releases every allocation whose owner is not in `keep` (pods that went
  // away while the kubelet was down). Returns how many were released.
  absl::StatusOr<int> ReleaseAllExcept(const std::set<std::string>& keep);

  std::map<std::string, uint32_t> Allocations() const;
  uint32_t Gateway() const { return cidr_.network + 1; }
  const Ipv4Cidr& cidr() const { return cidr_; }
  // Addresses that can be handed out.
  uint32_t Capacity() const;

 private:
  Ipam(std::string dir, Ipv4Cidr cidr) : dir_(std::move(dir)), cidr_(cidr) {}
  absl::Status Load();
  absl::Status ReleaseLocked(const std::string& owner);

  std::string dir_;
  Ipv4Cidr cidr_;
  mutable std::mutex mu_;
  std::map<std::string, uint32_t> by_owner_;
  std::set<uint32_t> used_;
  uint32_t last_ = 0;  // round-robin cursor, so a released address is not reused at once
};

}  // namespace skiff::podnet
