// ServiceAccount token signing: round trip, tampering, expiry, the key file.
#include "skiff/apiserver/sa_token.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace skiff::apiserver {
namespace {

ServiceAccountClaims Claims(int64_t now) {
  ServiceAccountClaims c;
  c.ns = "default";
  c.name = "robot";
  c.sa_uid = "u-1";
  c.pod_name = "web";
  c.pod_uid = "u-2";
  c.audiences = {kServiceAccountIssuer};
  c.issued_at = now;
  c.expires = now + 600;
  return c;
}

TEST(ServiceAccountToken, SignAndVerifyRoundTrip) {
  TokenSigner s(std::string(32, 'k'));
  int64_t now = absl::ToUnixSeconds(absl::Now());
  std::string t = s.Sign(Claims(now));
  EXPECT_TRUE(LooksLikeJwt(t));
  auto c = s.Verify(t, absl::FromUnixSeconds(now + 1));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->Username(), "system:serviceaccount:default:robot");
  EXPECT_EQ(c->sa_uid, "u-1");
  EXPECT_EQ(c->pod_name, "web");
  EXPECT_EQ(c->pod_uid, "u-2");
  EXPECT_EQ(c->audiences, std::vector<std::string>{kServiceAccountIssuer});
  EXPECT_EQ(c->expires, now + 600);
}

TEST(ServiceAccountToken, TamperedOtherKeyOrExpiredIsUnauthenticated) {
  TokenSigner s(std::string(32, 'k'));
  int64_t now = absl::ToUnixSeconds(absl::Now());
  std::string t = s.Sign(Claims(now));
  EXPECT_EQ(s.Verify(t, absl::FromUnixSeconds(now + 600)).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(TokenSigner(std::string(32, 'x')).Verify(t, absl::FromUnixSeconds(now)).status().code(),
            absl::StatusCode::kUnauthenticated);
  // Swap the payload for another token's payload: the signature no longer fits.
  ServiceAccountClaims other = Claims(now);
  other.name = "admin";
  std::string t2 = s.Sign(other);
  std::string forged = t.substr(0, t.find('.')) + t2.substr(t2.find('.'), t2.rfind('.') - t2.find('.')) +
                       t.substr(t.rfind('.'));
  EXPECT_EQ(s.Verify(forged, absl::FromUnixSeconds(now)).status().code(), absl::StatusCode::kUnauthenticated);
  // Every single-character change of the signature is refused, including
  // the last character (whose low bits are padding in base64url).
  std::string sig_end = t;
  for (char repl : {'A', 'B', 'C', 'D'}) {
    if (sig_end.back() == repl) continue;
    sig_end.back() = repl;
    EXPECT_EQ(s.Verify(sig_end, absl::FromUnixSeconds(now)).status().code(), absl::StatusCode::kUnauthenticated);
  }
  EXPECT_EQ(s.Verify("abcdef.0123456789abcdef", absl::FromUnixSeconds(now)).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_FALSE(LooksLikeJwt("abcdef.0123456789abcdef"));
  EXPECT_FALSE(LooksLikeJwt("a.b.c d"));
}

TEST(ServiceAccountToken, KeyFileIsCreatedOnceWithMode0600) {
  std::string dir = absl::StrCat("/tmp/skiff-satoken-test-", getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string path = dir + "/sa.key";
  auto a = TokenSigner::LoadOrCreate(path);
  ASSERT_TRUE(a.ok()) << a.status();
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  auto b = TokenSigner::LoadOrCreate(path);
  ASSERT_TRUE(b.ok());
  int64_t now = absl::ToUnixSeconds(absl::Now());
  EXPECT_TRUE(b->Verify(a->Sign(Claims(now)), absl::FromUnixSeconds(now)).ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace skiff::apiserver
