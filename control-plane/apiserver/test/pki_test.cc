#include "skiff/apiserver/pki.h"

#include <gtest/gtest.h>

namespace skiff::apiserver {
namespace {

TEST(Pki, IssuesClientCertificatesWithUserAndGroups) {
  auto ca = CreateCa("test-ca");
  ASSERT_TRUE(ca.ok()) << ca.status();
  CertSpec spec;
  spec.common_name = "jane";
  spec.organizations = {"dev", "ops"};
  spec.client = true;
  auto c = IssueCertificate(*ca, spec);
  ASSERT_TRUE(c.ok()) << c.status();
  auto subj = ParseCertSubject(c->cert_pem);
  ASSERT_TRUE(subj.ok());
  EXPECT_EQ(subj->common_name, "jane");
  EXPECT_EQ(subj->organizations, (std::vector<std::string>{"dev", "ops"}));
}

TEST(Pki, SignsANodeCsrOnlyWithTheExpectedSubject) {
  auto ca = CreateCa("test-ca");
  ASSERT_TRUE(ca.ok());
  auto csr = CreateCsr("system:node:n1", {"system:nodes"});
  ASSERT_TRUE(csr.ok()) << csr.status();
  auto cert = SignClientCsr(*ca, csr->cert_pem, "system:node:n1", "system:nodes");
  ASSERT_TRUE(cert.ok()) << cert.status();
  auto subj = ParseCertSubject(*cert);
  ASSERT_TRUE(subj.ok());
  EXPECT_EQ(subj->common_name, "system:node:n1");
  auto wrong = SignClientCsr(*ca, csr->cert_pem, "system:node:n2", "system:nodes");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().message(), "csr: subject CN must be \"system:node:n2\", got \"system:node:n1\"");
  auto masters = CreateCsr("system:node:n1", {"system:masters"});
  ASSERT_TRUE(masters.ok());
  EXPECT_FALSE(SignClientCsr(*ca, masters->cert_pem, "system:node:n1", "system:nodes").ok());
  EXPECT_FALSE(SignClientCsr(*ca, "garbage", "system:node:n1", "system:nodes").ok());
}

TEST(Pki, PublicKeyHashIsStable) {
  auto ca = CreateCa("test-ca");
  ASSERT_TRUE(ca.ok());
  auto h1 = PublicKeyHash(ca->cert_pem);
  auto h2 = PublicKeyHash(ca->cert_pem);
  ASSERT_TRUE(h1.ok());
  EXPECT_EQ(*h1, *h2);
  EXPECT_EQ(h1->rfind("sha256:", 0), 0u);
  EXPECT_EQ(h1->size(), 7u + 64u);
}

}  // namespace
}  // namespace skiff::apiserver
