#include "unpack.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fstream>

#include "fs.h"
#include "image_fixture.h"
#include "test_util.h"

namespace skiff::image {
namespace {

using namespace skiff::image::testing;

class Unpack : public ::testing::Test {
 protected:
  ScratchDir scratch_{"skiff-image-unit"};
  std::string dest_ = scratch_.path() + "/layer";
  std::string blob_ = scratch_.path() + "/blob";

  void SetUp() override { ASSERT_TRUE(MkdirAll(dest_).ok()); }

  absl::StatusOr<UnpackResult> Run(const std::vector<Entry>& entries, Compression c = Compression::kGzip) {
    auto layer = BuildLayer(entries, c);
    if (!layer.ok()) return layer.status();
    std::ofstream(blob_, std::ios::binary) << layer->blob;
    auto r = UnpackLayer(blob_, dest_);
    if (r.ok()) {
      EXPECT_EQ(r->diff_id, layer->diff_id);
    }
    return r;
  }
  bool Outside(const std::string& name) { return Exists(scratch_.path() + "/" + name); }
};

TEST_F(Unpack, RefusesDotDotEntries) {
  auto r = Run({File("ok", "1"), File("../evil", "x")});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("traversal"), std::string::npos) << r.status();
  EXPECT_FALSE(Outside("evil"));
  r = Run({File("a/../../evil2", "x")});
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(Outside("evil2"));
}

TEST_F(Unpack, RefusesAbsolutePaths) {
  std::string target = scratch_.path() + "/abs-evil";
  auto r = Run({File(target, "x")});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("absolute"), std::string::npos) << r.status();
  EXPECT_FALSE(Exists(target));
}

TEST_F(Unpack, RefusesWritingThroughSymlinks) {
  ASSERT_TRUE(MkdirAll(scratch_.path() + "/outside").ok());
  auto r = Run({Symlink("link", "../outside"), File("link/pwned", "x")});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("symlink"), std::string::npos) << r.status();
  EXPECT_FALSE(Outside("outside/pwned"));
  r = Run({Symlink("abs", scratch_.path() + "/outside"), File("abs/pwned2", "x")});
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(Outside("outside/pwned2"));
}

TEST_F(Unpack, RefusesHardLinksLeavingTheLayer) {
  std::ofstream(scratch_.path() + "/secret") << "s";
  auto r = Run({Hardlink("h", "../secret")});
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(Exists(dest_ + "/h"));
}

TEST_F(Unpack, SameDiffIdForGzipZstdAndPlainLayers) {
  std::vector<Entry> e = {Dir("d"), File("d/f", RandomBytes(100000, 1)), Symlink("l", "d/f")};
  for (auto c : {Compression::kNone, Compression::kGzip, Compression::kZstd}) {
    ASSERT_TRUE(RemoveAll(dest_).ok());
    ASSERT_TRUE(MkdirAll(dest_).ok());
    auto r = Run(e, c);
    ASSERT_TRUE(r.ok()) << r.status();
    struct stat st;
    ASSERT_EQ(::stat((dest_ + "/d/f").c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 100000);
  }
}

TEST_F(Unpack, RefusesCorruptCompressedStream) {
  auto layer = BuildLayer({File("f", RandomBytes(200000, 2))}, Compression::kGzip);
  ASSERT_TRUE(layer.ok());
  std::string blob = layer->blob.substr(0, layer->blob.size() / 2);
  std::ofstream(blob_, std::ios::binary) << blob;
  auto r = UnpackLayer(blob_, dest_);
  EXPECT_FALSE(r.ok());
}

TEST_F(Unpack, TranslatesWhiteoutsAndOpaqueDirsToOverlayForm) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for mknod and trusted.* xattrs";
  auto r = Run({Dir("etc"), Whiteout("etc", "gone"), Dir("opaque"), Opaque("opaque"), File("opaque/kept", "k"),
                Whiteout("", "topgone")});
  ASSERT_TRUE(r.ok()) << r.status();
  struct stat st;
  ASSERT_EQ(::lstat((dest_ + "/etc/gone").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  ASSERT_EQ(::lstat((dest_ + "/topgone").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_FALSE(Exists(dest_ + "/etc/.wh.gone"));
  EXPECT_FALSE(Exists(dest_ + "/opaque/.wh..wh..opq"));
  char v[8] = {};
  ASSERT_EQ(::lgetxattr((dest_ + "/opaque").c_str(), "trusted.overlay.opaque", v, sizeof v), 1);
  EXPECT_EQ(v[0], 'y');
}

TEST_F(Unpack, PreservesOwnershipModesXattrsAndLinks) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for chown and trusted.* xattrs";
  Entry suid = File("bin/su", "#!", 04755, 1000, 1001);
  suid.xattrs["user.skiff"] = "hello";
  suid.xattrs["trusted.skiff"] = "t";
  Entry sticky = Dir("tmp", 01777);
  auto r = Run({Dir("bin"), suid, Hardlink("bin/su2", "bin/su"), Symlink("bin/sym", "su"), sticky,
                File("bin/sgid", "", 02711, 5, 6)});
  ASSERT_TRUE(r.ok()) << r.status();
  struct stat a, b;
  ASSERT_EQ(::lstat((dest_ + "/bin/su").c_str(), &a), 0);
  EXPECT_EQ(a.st_mode & 07777, 04755u);
  EXPECT_EQ(a.st_uid, 1000u);
  EXPECT_EQ(a.st_gid, 1001u);
  ASSERT_EQ(::lstat((dest_ + "/bin/su2").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 2u);
  char buf[64] = {};
  ASSERT_EQ(::readlink((dest_ + "/bin/sym").c_str(), buf, sizeof buf), 2);
  EXPECT_STREQ(buf, "su");
  ASSERT_EQ(::lgetxattr((dest_ + "/bin/su").c_str(), "user.skiff", buf, sizeof buf), 5);
  EXPECT_EQ(std::string(buf, 5), "hello");
  ASSERT_EQ(::lgetxattr((dest_ + "/bin/su").c_str(), "trusted.skiff", buf, sizeof buf), 1);
  ASSERT_EQ(::lstat((dest_ + "/tmp").c_str(), &a), 0);
  EXPECT_EQ(a.st_mode & 07777, 01777u);
  ASSERT_EQ(::lstat((dest_ + "/bin/sgid").c_str(), &a), 0);
  EXPECT_EQ(a.st_mode & 07777, 02711u);
  EXPECT_EQ(a.st_uid, 5u);
}

TEST_F(Unpack, IgnoresOverlayXattrsSmuggledInTheLayer) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for trusted.* xattrs";
  Entry d = Dir("sneaky");
  d.xattrs["trusted.overlay.opaque"] = "y";
  d.xattrs["trusted.overlay.redirect"] = "/etc";
  Entry link = Symlink("l", "sneaky");
  link.xattrs["user.note"] = "not allowed on symlinks";
  auto r = Run({d, link});
  ASSERT_TRUE(r.ok()) << r.status();
  char v[16];
  EXPECT_LT(::lgetxattr((dest_ + "/sneaky").c_str(), "trusted.overlay.opaque", v, sizeof v), 0);
  EXPECT_LT(::lgetxattr((dest_ + "/sneaky").c_str(), "trusted.overlay.redirect", v, sizeof v), 0);
}

}  // namespace
}  // namespace skiff::image
