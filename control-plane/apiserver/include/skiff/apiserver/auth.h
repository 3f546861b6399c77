// Authentication (client certificates, static and bootstrap bearer tokens)
// and authorization (RBAC-shaped roles and bindings + NodeRestriction).
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/apiserver/registry.h"
#include "skiff/apiserver/sa_token.h"

namespace skiff::apiserver {

struct UserInfo {
  std::string name;
  std::vector<std::string> groups;
  bool InGroup(const std::string& g) const;
};

struct StaticToken {
  std::string token, user, uid;
  std::vector<std::string> groups;
};

// kube-apiserver's --token-auth-file: `token,user,uid[,"group1,group2"]` per line.
absl::StatusOr<std::vector<StaticToken>> LoadTokenFile(const std::string& path);

class Authenticator {
 public:
  // insecure: no TLS; every request is system:admin in system:masters (tests only).
  Authenticator(Registry* registry, std::vector<StaticToken> tokens, bool insecure);
  // Unauthenticated ("Unauthorized") when no valid credential is presented.
  absl::StatusOr<UserInfo> Authenticate(const grpc::ServerContext* ctx) const;
  // Checks a bootstrap token "<id>.<secret>" against kube-system secrets.
  absl::StatusOr<UserInfo> AuthenticateBootstrapToken(const std::string& token) const;
  // Checks a ServiceAccount token: signature, expiry, audience (must include
  // kServiceAccountIssuer), the ServiceAccount still existing with the same
  // uid, and the bound pod (if any) still existing with the same uid.
  // User system:serviceaccount:<ns>:<name>, groups system:serviceaccounts,
  // system:serviceaccounts:<ns>, system:authenticated.
  absl::StatusOr<UserInfo> AuthenticateServiceAccountToken(const std::string& token) const;
  // Registers an extra token (the process's internal credential).
  void AddToken(StaticToken t);
  // Enables ServiceAccount tokens (the signer must outlive the authenticator).
  void SetServiceAccountSigner(const TokenSigner* signer) { signer_ = signer; }

 private:
  Registry* registry_;
  mutable std::mutex mu_;
  std::vector<StaticToken> tokens_;
  bool insecure_;
  const TokenSigner* signer_ = nullptr;
};

struct RequestAttributes {
  std::string verb;  // get list watch create update patch delete
  std::string resource;
  std::string subresource;
  std::string ns;
  std::string name;
  std::string api_group;
};

class Authorizer {
 public:
  explicit Authorizer(Registry* registry) : registry_(registry) {}
  // PermissionDenied with Kubernetes' "forbidden" message.
  absl::Status Authorize(const UserInfo& user, const RequestAttributes& attrs) const;
  // NodeRestriction: a node may change only its own Node and Lease, the
  // status of (and delete) pods bound to it, and create events. `obj` is
  // the submitted object (create/update), `existing` the stored one.
  absl::Status AdmitNode(const UserInfo& user, const RequestAttributes& attrs, const Object* obj,
                         const Object* existing) const;
  // NodeRestriction for reads: a node may get a Secret or ConfigMap only when
  // a pod bound to it references it (volumes, env, envFrom, imagePullSecrets;
  // plus the public kube-root-ca.crt ConfigMap), and may not list/watch them.
  absl::Status AdmitNodeRead(const std::string& node, const UserInfo& user, const RequestAttributes& a) const;
  // Creates the built-in ClusterRoles and bindings when missing.
  absl::Status EnsureDefaultPolicy() const;

 private:
  bool RulesAllow(const google::protobuf::RepeatedPtrField<api::v1::PolicyRule>& rules,
                  const RequestAttributes& a) const;
  Registry* registry_;
};

// "system:node:<name>" -> "<name>", "" when not a node identity.
std::string NodeNameOf(const UserInfo& user);

}  // namespace skiff::apiserver
