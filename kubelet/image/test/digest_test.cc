#include <gtest/gtest.h>

#include "digest.h"
#include "manifest.h"
#include "registry.h"
#include "skiff/image/store.h"

namespace skiff::image {
namespace {

TEST(Digest, HashesKnownVector) {
  EXPECT_EQ(DigestOfBytes("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Digest, RefusesMalformedAndForeignDigests) {
  EXPECT_TRUE(DigestHex("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad").ok());
  EXPECT_FALSE(DigestHex("sha512:abcd").ok());
  EXPECT_FALSE(DigestHex("sha256:../../etc/passwd").ok());
  EXPECT_FALSE(DigestHex("sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD").ok());
  EXPECT_FALSE(DigestHex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad").ok());
}

TEST(Reference, NormalizesLikeDocker) {
  auto r = ParseReference("busybox");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->String(), "docker.io/library/busybox:latest");
  r = ParseReference("127.0.0.1:5000/test/img:1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->registry, "127.0.0.1:5000");
  EXPECT_EQ(r->repository, "test/img");
  EXPECT_EQ(r->tag, "1");
  r = ParseReference("localhost/x@sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tag, "");
  EXPECT_EQ(r->String(), "localhost/x@sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_FALSE(ParseReference("UPPER/case").ok());
  EXPECT_FALSE(ParseReference("").ok());
  EXPECT_FALSE(ParseReference("x@sha256:nothex").ok());
  EXPECT_EQ(KubeletReason(absl::UnavailableError("x")), "ErrImagePull");
}

TEST(DockerConfig, ParsesAuthAndUserPassword) {
  auto a = ParseDockerConfig(R"({"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
                                 "127.0.0.1:5000":{"username":"u","password":"p"}}})");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)["docker.io"].username, "user");
  EXPECT_EQ((*a)["docker.io"].password, "pa:ss");
  EXPECT_EQ((*a)["127.0.0.1:5000"].password, "p");
  EXPECT_FALSE(ParseDockerConfig("not json").ok());
}

TEST(Challenge, ParsesBearerParameters) {
  auto c = ParseChallenge(R"(Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull")");
  EXPECT_EQ(c["scheme"], "bearer");
  EXPECT_EQ(c["realm"], "https://auth.example/token");
  EXPECT_EQ(c["service"], "registry.example");
  EXPECT_EQ(c["scope"], "repository:a/b:pull");
  EXPECT_EQ(ParseChallenge("Basic realm=\"x\"")["scheme"], "basic");
  EXPECT_EQ(Base64Encode("user:pa:ss"), "dXNlcjpwYTpzcw==");
}

TEST(Manifest, SelectsLinuxAmd64FromAnIndex) {
  auto m = ParseManifest(R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":10,
     "digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111",
     "platform":{"os":"linux","architecture":"arm64"}},
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":10,
     "digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222",
     "platform":{"os":"linux","architecture":"amd64"}}]})");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->is_index);
  auto d = SelectPlatform(*m, "linux", "amd64");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->digest.substr(7, 4), "2222");
  EXPECT_FALSE(SelectPlatform(*m, "linux", "s390x").ok());
  EXPECT_FALSE(ParseManifest(R"({"schemaVersion":1,"fsLayers":[]})").ok());
  EXPECT_FALSE(ParseManifest("garbage").ok());
}

}  // namespace
}  // namespace skiff::image
