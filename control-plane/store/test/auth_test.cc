// AuthStore (auth.h) in-process: key-range checks over several roles'
// permissions, token expiry, the state file across reopen, damaged state,
// and a change that cannot be written changing nothing. etcdctl against
// skiff-store and a real etcd is in etcdctl_test.cc.
#include "auth.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gtest/gtest.h"

namespace skiff::store {
namespace {

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("skiff-auth-test-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<AuthStore> Open(int64_t ttl_s = 300) {
    AuthOptions o;
    o.path = (dir_ / "auth").string();
    o.bcrypt_cost = 4;
    o.token_ttl_s = ttl_s;
    auto a = AuthStore::Open(o);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? std::move(*a) : nullptr;
  }

  // root (root role) and u with roles ra and rb; auth on.
  void Setup(AuthStore* a) {
    auto user = [&](const std::string& n) {
      etcdserverpb::AuthUserAddRequest r;
      r.set_name(n);
      r.set_password(n + "pw");
      ASSERT_TRUE(a->UserAdd("", r).ok());
    };
    user("root");
    user("u");
    auto grant_role = [&](const std::string& u, const std::string& role) {
      etcdserverpb::AuthUserGrantRoleRequest r;
      r.set_user(u);
      r.set_role(role);
      ASSERT_TRUE(a->UserGrantRole("", r).ok());
    };
    grant_role("root", "root");
    for (const char* role : {"ra", "rb"}) {
      etcdserverpb::AuthRoleAddRequest r;
      r.set_name(role);
      ASSERT_TRUE(a->RoleAdd("", r).ok());
    }
    auto perm = [&](const std::string& role, authpb::Permission::Type t, const std::string& k, const std::string& e) {
      etcdserverpb::AuthRoleGrantPermissionRequest r;
      r.set_name(role);
      r.mutable_perm()->set_permtype(t);
      r.mutable_perm()->set_key(k);
      r.mutable_perm()->set_range_end(e);
      ASSERT_TRUE(a->RoleGrantPermission("", r).ok());
    };
    perm("ra", authpb::Permission::READ, "a", "c");       // [a, c)
    perm("rb", authpb::Permission::READ, "b", "e");       // [b, e): with ra, [a, e)
    perm("rb", authpb::Permission::READWRITE, "x", "");   // the key x
    perm("rb", authpb::Permission::WRITE, "w", std::string(1, '\0'));  // every key from w on
    grant_role("u", "ra");
    grant_role("u", "rb");
    ASSERT_TRUE(a->Enable("").ok());
  }

  std::filesystem::path dir_;
};

TEST_F(AuthTest, KeyRangesAreCheckedAgainstTheUnionOfTheUsersRoles) {
  auto a = Open();
  Setup(a.get());
  auto read = [&](const std::string& k, const std::string& e) { return a->CheckKeys("u", k, e, false).ok(); };
  auto write = [&](const std::string& k, const std::string& e) { return a->CheckKeys("u", k, e, true).ok(); };
  EXPECT_TRUE(read("a", ""));
  EXPECT_TRUE(read("a", "e"));   // across two roles' ranges
  EXPECT_FALSE(read("a", "f"));  // past the end
  EXPECT_TRUE(read("dz", ""));
  EXPECT_FALSE(read("e", ""));
  EXPECT_TRUE(read("x", ""));
  EXPECT_FALSE(read("x", "y"));  // more than the one key
  EXPECT_FALSE(read("w", ""));   // write-only
  EXPECT_TRUE(write("w", ""));
  EXPECT_TRUE(write("wz", std::string(1, '\0')));  // from wz on: inside [w, ∞)
  EXPECT_FALSE(write("v", std::string(1, '\0')));
  EXPECT_FALSE(write("a", ""));
  EXPECT_TRUE(write("x", ""));
  EXPECT_EQ(a->CheckKeys("", "a", "", false).message(), "etcdserver: user name is empty");
  EXPECT_EQ(a->CheckKeys("nobody", "a", "", false).message(), "etcdserver: permission denied");
  EXPECT_TRUE(a->CheckKeys("root", "", std::string(1, '\0'), true).ok());
  EXPECT_TRUE(a->CheckAdmin("root").ok());
  EXPECT_EQ(a->CheckAdmin("u").message(), "etcdserver: permission denied");
}

TEST_F(AuthTest, TokensNameTheirUserAndExpireWhenUnused) {
  auto a = Open(/*ttl_s=*/1);
  Setup(a.get());
  EXPECT_EQ(a->Authenticate("u", "wrong").status().message(),
            "etcdserver: authentication failed, invalid user ID or password");
  auto t = a->Authenticate("u", "upw");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*a->UserOf(*t), "u");
  EXPECT_EQ(*a->UserOf(""), "");
  EXPECT_EQ(a->UserOf("nope.1").status().code(), absl::StatusCode::kUnauthenticated);
  std::this_thread::sleep_for(std::chrono::milliseconds(1300));
  EXPECT_EQ(a->UserOf(*t).status().message(), "etcdserver: invalid auth token");
  // A password change ends the user's tokens.
  auto t2 = a->Authenticate("u", "upw");
  ASSERT_TRUE(t2.ok());
  etcdserverpb::AuthUserChangePasswordRequest cp;
  cp.set_name("u");
  cp.set_password("new");
  ASSERT_TRUE(a->UserChangePassword("root", cp).ok());
  EXPECT_FALSE(a->UserOf(*t2).ok());
  EXPECT_TRUE(a->Authenticate("u", "new").ok());
}

TEST_F(AuthTest, StateSurvivesReopenAndDamageIsRefused) {
  {
    auto a = Open();
    Setup(a.get());
  }
  auto b = Open();
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->Enabled());
  EXPECT_TRUE(b->CheckKeys("u", "a", "e", false).ok());
  EXPECT_FALSE(b->CheckKeys("u", "a", "f", false).ok());
  EXPECT_TRUE(b->Authenticate("root", "rootpw").ok());
  const uint64_t rev = b->Status().authrevision();
  b.reset();
  {
    std::fstream f(dir_ / "auth", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.write("\xff\xff\xff", 3);
  }
  AuthOptions o;
  o.path = (dir_ / "auth").string();
  EXPECT_EQ(AuthStore::Open(o).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_GT(rev, 1u);
}

TEST_F(AuthTest, AChangeThatCannotBeWrittenChangesNothing) {
  auto a = Open();
  Setup(a.get());
  const uint64_t rev = a->Status().authrevision();
  // The state file's directory goes away: the next change cannot be written.
  std::filesystem::remove_all(dir_);
  etcdserverpb::AuthRoleAddRequest r;
  r.set_name("late");
  EXPECT_FALSE(a->RoleAdd("root", r).ok());
  EXPECT_EQ(a->Status().authrevision(), rev);
  auto roles = a->RoleList("root");
  ASSERT_TRUE(roles.ok());
  EXPECT_EQ(roles->roles_size(), 2);  // ra, rb: "late" was not taken
  std::filesystem::create_directories(dir_);
}

// Expired tokens nobody presents again are dropped as logins go on.
TEST_F(AuthTest, ExpiredTokensDoNotPileUp) {
  auto a = Open(/*ttl_s=*/1);
  Setup(a.get());
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(a->Authenticate("u", "upw").ok());
  EXPECT_EQ(a->TokenCount(), 300u);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(a->Authenticate("u", "upw").ok());
  EXPECT_LE(a->TokenCount(), 300u) << "expired tokens were kept (600 without the sweep)";
}

// Checks from many threads while another changes roles and permissions and
// logs in: every answer is one of the two states' (under ASan in CI).
TEST_F(AuthTest, ChecksRaceWithChangesSafely) {
  auto a = Open();
  Setup(a.get());
  std::atomic<bool> stop{false};
  std::atomic<int> checks{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        (void)a->CheckKeys("u", "a", "e", false);
        EXPECT_TRUE(a->CheckKeys("u", "x", "", true).ok());  // never revoked below
        (void)a->RoleGet("u", [] {
          etcdserverpb::AuthRoleGetRequest r;
          r.set_role("ra");
          return r;
        }());
        checks.fetch_add(1);
      }
    });
  }
  for (int i = 0; i < 20; ++i) {
    etcdserverpb::AuthRoleRevokePermissionRequest rv;
    rv.set_role("ra");
    rv.set_key("a");
    rv.set_range_end("c");
    ASSERT_TRUE(a->RoleRevokePermission("root", rv).ok());
    etcdserverpb::AuthRoleGrantPermissionRequest gr;
    gr.set_name("ra");
    gr.mutable_perm()->set_permtype(authpb::Permission::READ);
    gr.mutable_perm()->set_key("a");
    gr.mutable_perm()->set_range_end("c");
    ASSERT_TRUE(a->RoleGrantPermission("root", gr).ok());
    ASSERT_TRUE(a->Authenticate("u", "upw").ok());
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_GT(checks.load(), 0);
  EXPECT_TRUE(a->CheckKeys("u", "a", "e", false).ok());
}

}  // namespace
}  // namespace skiff::store
