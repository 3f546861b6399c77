#include "skiff/podnet/nat.h"

#include <nftables/libnftables.h>

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "skiff/common/status.h"
#include "skiff/podnet/cidr.h"

namespace skiff::podnet {
namespace {

absl::StatusOr<std::string> NftProtocol(const std::string& protocol) {
  std::string p = protocol.empty() ? "tcp" : protocol;
  std::transform(p.begin(), p.end(), p.begin(), [](unsigned char c) { return std::tolower(c); });
  if (p != "tcp" && p != "udp" && p != "sctp") return absl::InvalidArgumentError("hostPort protocol " + protocol);
  return p;
}

std::string KubeProtocol(std::string p) {
  std::transform(p.begin(), p.end(), p.begin(), [](unsigned char c) { return std::toupper(c); });
  return p;
}

bool ValidPort(int p) { return p > 0 && p < 65536; }

}  // namespace

absl::StatusOr<std::unique_ptr<NodeNat>> NodeNat::Open(const std::string& pod_cidr, const std::string& cluster_cidr) {
  std::unique_ptr<NodeNat> nat(new NodeNat());
  nat->ctx_ = nft_ctx_new(NFT_CTX_DEFAULT);
  if (nat->ctx_ == nullptr) return absl::InternalError("nft_ctx_new");
  nft_ctx_buffer_output(nat->ctx_);
  nft_ctx_buffer_error(nat->ctx_);
  const std::string t = absl::StrCat("ip ", kTable);
  // `add` keeps what exists (the hostports elements of running pods); the
  // rule chains are flushed and written again so a changed CIDR applies.
  std::string cmds = absl::StrCat(
      "add table ", t, "\n",
      "add map ", t, " hostports { type inet_proto . inet_service : ipv4_addr . inet_service ; }\n",
      "add chain ", t, " prerouting { type nat hook prerouting priority dstnat ; policy accept ; }\n",
      "add chain ", t, " output { type nat hook output priority -100 ; policy accept ; }\n",
      "add chain ", t, " postrouting { type nat hook postrouting priority srcnat ; policy accept ; }\n",
      "flush chain ", t, " prerouting\n", "flush chain ", t, " output\n", "flush chain ", t, " postrouting\n",
      "add rule ", t, " prerouting fib daddr type local dnat ip to meta l4proto . th dport map @hostports\n",
      "add rule ", t, " output fib daddr type local dnat ip to meta l4proto . th dport map @hostports\n");
  if (!cluster_cidr.empty()) {
    ASSIGN_OR_RETURN(Ipv4Cidr pods, ParseCidr(pod_cidr));
    ASSIGN_OR_RETURN(Ipv4Cidr cluster, ParseCidr(cluster_cidr));
    absl::StrAppend(&cmds, "add rule ", t, " postrouting ip saddr ", pods.ToString(), " ip daddr != ",
                    cluster.ToString(), " masquerade\n");
  }
  RETURN_IF_ERROR(nat->Run(cmds));
  ASSIGN_OR_RETURN(auto all, nat->List());
  for (const auto& [ip, m] : all) nat->mapped_.insert(ip);
  return nat;
}

NodeNat::~NodeNat() {
  if (ctx_ != nullptr) nft_ctx_free(ctx_);
}

absl::Status NodeNat::Run(const std::string& commands, std::string* output, bool json) {
  nft_ctx_output_set_flags(ctx_, json ? NFT_CTX_OUTPUT_JSON : 0);
  int rc = nft_run_cmd_from_buffer(ctx_, commands.c_str());
  const char* err = nft_ctx_get_error_buffer(ctx_);
  const char* out = nft_ctx_get_output_buffer(ctx_);
  if (output != nullptr) *output = out != nullptr ? out : "";
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("nftables: ", err != nullptr ? err : "", " (for: ", commands, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::multimap<uint32_t, PortMapping>> NodeNat::List() {
  std::string out;
  RETURN_IF_ERROR(Run(absl::StrCat("list map ip ", kTable, " hostports"), &out, /*json=*/true));
  nlohmann::json doc = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.contains("nftables")) return absl::InternalError("nftables: unreadable map listing");
  std::multimap<uint32_t, PortMapping> ports;
  for (const auto& item : doc["nftables"]) {
    if (!item.contains("map") || !item["map"].contains("elem")) continue;
    for (const auto& e : item["map"]["elem"]) {
      // [ {"concat": [proto, port]}, {"concat": [ip, port]} ]
      if (!e.is_array() || e.size() != 2) continue;
      const auto& key = e[0].is_object() && e[0].contains("elem") ? e[0]["elem"]["val"] : e[0];
      const auto& val = e[1];
      if (!key.contains("concat") || !val.contains("concat")) continue;
      const auto& k = key["concat"];
      const auto& v = val["concat"];
      if (k.size() != 2 || v.size() != 2 || !v[0].is_string()) continue;
      auto ip = ParseIpv4(v[0].get<std::string>());
      if (!ip.ok()) continue;
      PortMapping m;
      m.protocol = KubeProtocol(k[0].is_string() ? k[0].get<std::string>() : std::to_string(k[0].get<int>()));
      m.host_port = k[1].get<int>();
      m.container_port = v[1].get<int>();
      ports.emplace(*ip, m);
    }
  }
  return ports;
}

absl::StatusOr<std::vector<PortMapping>> NodeNat::Ports(uint32_t pod_ip) {
  ASSIGN_OR_RETURN(auto all, List());
  std::vector<PortMapping> out;
  for (auto [it, end] = all.equal_range(pod_ip); it != end; ++it) out.push_back(it->second);
  return out;
}

absl::Status NodeNat::SetPorts(uint32_t pod_ip, const std::vector<PortMapping>& ports) {
  // Most pods have no hostPort: no nftables round trip for them.
  if (ports.empty() && !mapped_.count(pod_ip)) return absl::OkStatus();
  std::vector<PortMapping> have;
  if (mapped_.count(pod_ip)) {
    ASSIGN_OR_RETURN(have, Ports(pod_ip));
  }
  const std::string ip = FormatIpv4(pod_ip);
  std::string cmds;
  for (const PortMapping& m : have) {
    ASSIGN_OR_RETURN(std::string p, NftProtocol(m.protocol));
    absl::StrAppend(&cmds, "delete element ip ", kTable, " hostports { ", p, " . ", m.host_port, " }\n");
  }
  for (const PortMapping& m : ports) {
    ASSIGN_OR_RETURN(std::string p, NftProtocol(m.protocol));
    if (!ValidPort(m.host_port) || !ValidPort(m.container_port)) {
      return absl::InvalidArgumentError(absl::StrCat("hostPort ", m.host_port, " -> ", m.container_port));
    }
    // `create` fails when another pod holds the port instead of taking it over.
    absl::StrAppend(&cmds, "create element ip ", kTable, " hostports { ", p, " . ", m.host_port, " : ", ip, " . ",
                    m.container_port, " }\n");
  }
  if (!cmds.empty()) RETURN_IF_ERROR(Run(cmds));  // one buffer = one nftables transaction
  if (ports.empty()) mapped_.erase(pod_ip);
  else mapped_.insert(pod_ip);
  return absl::OkStatus();
}

absl::Status NodeNat::DeleteTable() { return Run(absl::StrCat("delete table ip ", kTable)); }

}  // namespace skiff::podnet
