// The cluster's certificates: a CA, the API server's serving certificate,
// client certificates, and CSR signing for the node join flow (OpenSSL).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace skiff::apiserver {

struct CertKey {
  std::string cert_pem;
  std::string key_pem;
};

struct CertSpec {
  std::string common_name;
  std::vector<std::string> organizations;
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  bool server = false;
  bool client = false;
  int days = 365;
};

absl::StatusOr<CertKey> CreateCa(const std::string& common_name, int days = 3650);
absl::StatusOr<CertKey> IssueCertificate(const CertKey& ca, const CertSpec& spec);
// Signs a PKCS#10 CSR as a client certificate. The CSR's subject must be
// exactly CN=<expected_cn> and O=<expected_org> (InvalidArgument otherwise).
absl::StatusOr<std::string> SignClientCsr(const CertKey& ca, const std::string& csr_pem, const std::string& expected_cn,
                                          const std::string& expected_org, int days = 365);
// Creates a key and a CSR (for nodes and tests).
absl::StatusOr<CertKey> CreateCsr(const std::string& common_name, const std::vector<std::string>& orgs);

struct CertSubject {
  std::string common_name;
  std::vector<std::string> organizations;
};
absl::StatusOr<CertSubject> ParseCertSubject(const std::string& cert_pem);
// "sha256:<hex>" of the certificate's SubjectPublicKeyInfo (kubeadm's CA hash).
absl::StatusOr<std::string> PublicKeyHash(const std::string& cert_pem);

}  // namespace skiff::apiserver
