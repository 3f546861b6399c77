// The gRPC implementation of skiff::client::Client.
//
//   ASSIGN_OR_RETURN(auto cfg, skiff::client::LoadClientConfig(skiff::client::DefaultConfigPath()));
//   ASSIGN_OR_RETURN(auto c, skiff::client::Dial(cfg.credentials));
//   ASSIGN_OR_RETURN(auto pod, c->Get("pods", "default", "web"));
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "skiff/api/v1/api.grpc.pb.h"
#include "skiff/client/client.h"

namespace skiff::client {

class GrpcClient : public Client {
 public:
  GrpcClient(std::shared_ptr<grpc::Channel> channel, Credentials creds);

  absl::StatusOr<Object> Create(const std::string& resource, const std::string& ns, const Object& obj) override;
  absl::StatusOr<Object> Get(const std::string& resource, const std::string& ns, const std::string& name) override;
  absl::StatusOr<ObjectList> List(const std::string& resource, const std::string& ns,
                                  const ListOptions& opts = {}) override;
  absl::StatusOr<std::unique_ptr<WatchStream>> Watch(const std::string& resource, const std::string& ns,
                                                     const ListOptions& opts = {}) override;
  absl::StatusOr<Object> Update(const std::string& resource, const std::string& ns, const Object& obj) override;
  absl::StatusOr<Object> UpdateStatus(const std::string& resource, const std::string& ns, const Object& obj) override;
  absl::StatusOr<Object> Patch(const std::string& resource, const std::string& ns, const std::string& name,
                               const std::string& merge_patch_json, const std::string& subresource = "") override;
  absl::StatusOr<Object> Delete(const std::string& resource, const std::string& ns, const std::string& name,
                                const DeleteOptions& opts = {}) override;

  // Beyond the generic verbs.
  absl::StatusOr<api::v1::WhoAmIResponse> WhoAmI();
  absl::StatusOr<api::v1::VersionInfo> Version();
  absl::StatusOr<api::v1::CreateBootstrapTokenResponse> CreateBootstrapToken(int64_t ttl_seconds,
                                                                            const std::string& description = "");
  // Resource usage of a node and its pods (the kubelet's Stats, through the
  // API server; needs `get nodes/stats`).
  absl::StatusOr<api::v1::StatsResponse> NodeStats(const std::string& node_name);
  // A ServiceAccount token (TokenRequest). Empty audiences = the API server's;
  // expiration_seconds 0 = 3600. With bound_pod_name the token dies with the pod.
  absl::StatusOr<api::v1::ServiceAccountTokenResponse> CreateServiceAccountToken(
      const std::string& ns, const std::string& service_account, const std::vector<std::string>& audiences = {},
      int64_t expiration_seconds = 0, const std::string& bound_pod_name = "", const std::string& bound_pod_uid = "");
  // For the streaming RPCs (Logs, Exec, PortForward): call PrepareContext on
  // your ClientContext (adds the bearer token), then use stub().
  void PrepareContext(grpc::ClientContext* ctx) const;
  api::v1::Api::Stub* stub() { return stub_.get(); }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }

  // Watch with the API's options (bookmarks, timeout).
  absl::StatusOr<std::unique_ptr<WatchStream>> WatchRequest(const api::v1::WatchRequest& req);

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<api::v1::Api::Stub> stub_;
  Credentials creds_;
};

// Connects (lazily; the first call reports an unreachable server as Unavailable).
absl::StatusOr<std::unique_ptr<GrpcClient>> Dial(const Credentials& creds);

// grpc::Status <-> absl::Status, codes kept.
absl::Status FromGrpcStatus(const grpc::Status& s);

// The node-join flow without credentials: exchange a bootstrap token and a
// CSR for a signed client certificate.
absl::StatusOr<api::v1::NodeCertificateResponse> RequestNodeCertificate(const Credentials& creds_without_identity,
                                                                        const std::string& bootstrap_token,
                                                                        const std::string& node_name,
                                                                        const std::string& csr_pem);

}  // namespace skiff::client
