// ServiceAccount tokens (Kubernetes' TokenRequest): JWTs signed with HS256
// under a 256-bit key kept in <data-dir>/pki/sa.key (created on first start,
// mode 0600; API server replicas that share a cluster must share this file,
// like ca.key). Claims follow Kubernetes' projected tokens: iss, sub, aud,
// iat, nbf, exp and "kubernetes.io": {namespace, serviceaccount{name,uid},
// pod{name,uid}}.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace skiff::apiserver {

// The issuer and the API server's own audience: tokens must name it in `aud`
// to authenticate to the API server.
inline constexpr char kServiceAccountIssuer[] = "https://kubernetes.default.svc.cluster.local";

struct ServiceAccountClaims {
  std::string ns, name, sa_uid;
  std::string pod_name, pod_uid;  // empty when not bound to a pod
  std::vector<std::string> audiences;
  int64_t issued_at = 0, expires = 0;  // unix seconds
  std::string Username() const { return "system:serviceaccount:" + ns + ":" + name; }
};

class TokenSigner {
 public:
  // Reads the key file, or creates it (O_EXCL, 0600) with 32 random bytes
  // when missing.
  static absl::StatusOr<TokenSigner> LoadOrCreate(const std::string& key_path);
  explicit TokenSigner(std::string key) : key_(std::move(key)) {}

  std::string Sign(const ServiceAccountClaims& c) const;
  // Checks the shape, the signature and the time window (nbf/exp);
  // Unauthenticated otherwise. Audience and the bound objects are checked
  // by the caller.
  absl::StatusOr<ServiceAccountClaims> Verify(const std::string& token, absl::Time now) const;

 private:
  std::string key_;
};

// True for strings shaped like a JWT (three base64url parts).
bool LooksLikeJwt(const std::string& token);

}  // namespace skiff::apiserver
