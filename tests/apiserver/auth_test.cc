// Authentication and authorization refusals: no certificate, a wrong token,
// a view-only user writing, a node touching another node's pod; and the
// bootstrap-token node certificate flow.
#include <gtest/gtest.h>

#include <fstream>

#include "fixture.h"
#include "objects.h"
#include "skiff/apiserver/pki.h"
#include "skiff/apiserver/resources.h"

namespace skiff::apitest {
namespace {

using skiff::apiserver::Meta;

class AuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    backend_ = Backend::Make(Backend::Kind::kEtcd, "auth").release();
    ASSERT_NE(backend_, nullptr);
    std::string dir = backend_->dir() + "/cp";
    std::filesystem::create_directories(dir);
    std::ofstream(backend_->dir() + "/tokens.csv") << "viewer-token,viewer,1001\nedit-token,editor,1002,\"dev,ops\"\n";
    auto opts = ServerOpts(*backend_, dir);
    opts.token_auth_file = backend_->dir() + "/tokens.csv";
    auto s = skiff::apiserver::ApiServer::Start(opts);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = s->release();
    admin_ = skiff::client::Dial(server_->AdminCredentials())->release();
    // viewer may view cluster-wide.
    Object b = MakeObject("clusterrolebindings", "", "viewer-view");
    b.mutable_cluster_role_binding()->mutable_subjects(0)->set_name("viewer");
    ASSERT_TRUE(admin_->Create("clusterrolebindings", "", b).ok());
  }
  static void TearDownTestSuite() {
    delete admin_;
    if (server_) server_->Shutdown();
    delete server_;
    delete backend_;
  }
  static skiff::client::Credentials Anonymous() {
    auto c = server_->AdminCredentials();
    c.client_cert_pem.clear();
    c.client_key_pem.clear();
    return c;
  }
  static std::unique_ptr<skiff::client::GrpcClient> WithToken(const std::string& token) {
    auto c = Anonymous();
    c.token = token;
    return std::move(*skiff::client::Dial(c));
  }
  static std::unique_ptr<skiff::client::GrpcClient> JoinNode(const std::string& node) {
    auto tok = admin_->CreateBootstrapToken(600, "test");
    EXPECT_TRUE(tok.ok()) << tok.status();
    auto csr = skiff::apiserver::CreateCsr("system:node:" + node, {"system:nodes"});
    EXPECT_TRUE(csr.ok());
    auto resp = skiff::client::RequestNodeCertificate(Anonymous(), tok->token(), node, csr->cert_pem);
    EXPECT_TRUE(resp.ok()) << resp.status();
    auto creds = Anonymous();
    creds.client_cert_pem = resp->certificate_pem();
    creds.client_key_pem = csr->key_pem;
    return std::move(*skiff::client::Dial(creds));
  }
  static Backend* backend_;
  static skiff::apiserver::ApiServer* server_;
  static skiff::client::GrpcClient* admin_;
};
Backend* AuthTest::backend_ = nullptr;
skiff::apiserver::ApiServer* AuthTest::server_ = nullptr;
skiff::client::GrpcClient* AuthTest::admin_ = nullptr;

TEST_F(AuthTest, AdminIsInSystemMasters) {
  auto who = admin_->WhoAmI();
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->username(), "kubernetes-admin");
  EXPECT_EQ(who->groups(0), "system:masters");
}

TEST_F(AuthTest, NoCertificateIsUnauthorized) {
  auto c = skiff::client::Dial(Anonymous());
  auto r = (*c)->List("pods", "default");
  ASSERT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(r.status().message(), "Unauthorized");
}

TEST_F(AuthTest, AWrongTokenIsUnauthorized) {
  auto r = WithToken("not-a-token")->List("pods", "default");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  auto b = WithToken("abcdef.0123456789abcdef")->List("pods", "default");
  EXPECT_EQ(b.status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthTest, ACertificateFromAnotherCaIsRefused) {
  auto ca = skiff::apiserver::CreateCa("rogue");
  skiff::apiserver::CertSpec spec;
  spec.common_name = "mallory";
  spec.organizations = {"system:masters"};
  spec.client = true;
  auto cert = skiff::apiserver::IssueCertificate(*ca, spec);
  auto creds = Anonymous();
  creds.client_cert_pem = cert->cert_pem;
  creds.client_key_pem = cert->key_pem;
  auto r = (*skiff::client::Dial(creds))->List("pods", "default");
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(AuthTest, ViewRoleCanReadButNotWrite) {
  auto viewer = WithToken("viewer-token");
  auto who = viewer->WhoAmI();
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->username(), "viewer");
  EXPECT_TRUE(viewer->List("pods", "default").ok());
  auto r = viewer->Create("pods", "default", MakeObject("pods", "default", "nope"));
  ASSERT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(r.status().message(),
            "pods \"nope\" is forbidden: User \"viewer\" cannot create resource \"pods\" in API group \"\" in the "
            "namespace \"default\"");
  auto s = viewer->List("secrets", "default");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kPermissionDenied);
  // Without any binding: nothing.
  auto editor = WithToken("edit-token");
  EXPECT_EQ(editor->List("pods", "default").status().code(), absl::StatusCode::kPermissionDenied);
  // A RoleBinding to edit in one namespace.
  Object rb = MakeObject("rolebindings", "default", "dev-edit");
  rb.mutable_role_binding()->mutable_role_ref()->set_name("edit");
  rb.mutable_role_binding()->mutable_subjects(0)->set_kind("Group");
  rb.mutable_role_binding()->mutable_subjects(0)->set_name("dev");
  ASSERT_TRUE(admin_->Create("rolebindings", "default", rb).ok());
  bool allowed = false;
  for (int i = 0; i < 50 && !allowed; ++i) {  // the binding reaches the watch cache
    allowed = editor->Create("configmaps", "default", MakeObject("configmaps", "default", "by-editor")).ok();
    if (!allowed) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(allowed);
  EXPECT_EQ(editor->Create("configmaps", "kube-system", MakeObject("configmaps", "kube-system", "x")).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(AuthTest, NodesJoinWithABootstrapTokenAndAreRestricted) {
  auto node = JoinNode("n1");
  auto who = node->WhoAmI();
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->username(), "system:node:n1");
  EXPECT_EQ(who->groups(0), "system:nodes");
  // Its own Node and Lease.
  EXPECT_TRUE(node->Create("nodes", "", MakeObject("nodes", "", "n1")).ok());
  EXPECT_TRUE(node->Patch("nodes", "", "n1", R"({"status":{"phase":"Running"}})", "status").ok());
  EXPECT_EQ(node->Create("nodes", "", MakeObject("nodes", "", "n2")).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(node->Create("leases", "kube-node-lease", MakeObject("leases", "kube-node-lease", "n1")).ok());
  EXPECT_EQ(node->Create("leases", "kube-node-lease", MakeObject("leases", "kube-node-lease", "n2")).status().code(),
            absl::StatusCode::kPermissionDenied);
  // Pods: status of its own only.
  Object mine = MakeObject("pods", "default", "on-n1");
  mine.mutable_pod()->mutable_spec()->set_node_name("n1");
  Object theirs = MakeObject("pods", "default", "on-n2");
  theirs.mutable_pod()->mutable_spec()->set_node_name("n2");
  ASSERT_TRUE(admin_->Create("pods", "default", mine).ok());
  ASSERT_TRUE(admin_->Create("pods", "default", theirs).ok());
  EXPECT_TRUE(node->Patch("pods", "default", "on-n1", R"({"status":{"phase":"Running"}})", "status").ok());
  auto other = node->Patch("pods", "default", "on-n2", R"({"status":{"phase":"Running"}})", "status");
  ASSERT_EQ(other.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(other.status().message(),
            "node \"n1\" is not allowed to patch pods/status \"on-n2\": pod is not bound to this node");
  EXPECT_EQ(node->Patch("pods", "default", "on-n1", R"({"metadata":{"labels":{"a":"b"}}})").status().code(),
            absl::StatusCode::kPermissionDenied);
  skiff::client::DeleteOptions now;
  now.grace_period_seconds = 0;
  EXPECT_EQ(node->Delete("pods", "default", "on-n2", now).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(node->Delete("pods", "default", "on-n1", now).ok());
  // Events.
  EXPECT_TRUE(node->Create("events", "default", MakeObject("events", "default", "ev1")).ok());
  // Not secrets writes, not other kinds.
  EXPECT_EQ(node->Create("configmaps", "default", MakeObject("configmaps", "default", "c")).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(AuthTest, NodeCertificatesNeedAValidTokenAndMatchingSubject) {
  auto csr = skiff::apiserver::CreateCsr("system:node:n9", {"system:nodes"});
  auto bad = skiff::client::RequestNodeCertificate(Anonymous(), "abcdef.0123456789abcdef", "n9", csr->cert_pem);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kUnauthenticated);
  auto tok = admin_->CreateBootstrapToken(600);
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ(tok->ca_cert_hash().rfind("sha256:", 0), 0u);
  auto mismatch = skiff::client::RequestNodeCertificate(Anonymous(), tok->token(), "n8", csr->cert_pem);
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  // A bootstrap token is not a general credential.
  EXPECT_EQ(WithToken(tok->token())->List("pods", "default").status().code(), absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace skiff::apitest
