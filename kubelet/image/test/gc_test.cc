// Image garbage collection at Kubernetes' thresholds on a real, small
// filesystem: a 16 MB tmpfs holding the store, filled past 85% with images
// of ~2 MB each (1 MB incompressible layer blob + the same unpacked).
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <set>

#include "fs.h"
#include "image_fixture.h"
#include "skiff/image/store.h"
#include "test_util.h"

namespace skiff::image {
namespace {

using namespace skiff::image::testing;

double UsedPercent(const std::string& path) {
  struct statvfs v{};
  if (statvfs(path.c_str(), &v) != 0) return -1;
  // df's arithmetic: used / (used + available).
  double used = static_cast<double>(v.f_blocks - v.f_bfree);
  return 100.0 * used / (used + static_cast<double>(v.f_bavail));
}

TEST(GarbageCollect, PastEightyFivePercentRemovesLeastRecentlyUsedUnusedImagesToBelowEighty) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  ScratchDir scratch("skiff-image-gc");
  const std::string root = scratch.path() + "/store";
  ASSERT_TRUE(MkdirAll(root).ok());
  ASSERT_EQ(mount("tmpfs", root.c_str(), "tmpfs", 0, "size=16m,mode=0700"), 0) << strerror(errno);
  // ScratchDir unmounts it on the way out, also when an assertion fails.
  auto store = Store::Open(root, Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<std::string> digests;
  for (int i = 0; i < 7; ++i) {
    auto layer = BuildLayer({Dir("d"), File("d/blob", RandomBytes(1 << 20, 100 + i))}, Compression::kGzip);
    ASSERT_TRUE(layer.ok()) << layer.status();
    auto img = BuildImage({*layer}, ImageConfig{});
    ASSERT_TRUE(img.ok()) << img.status();
    const std::string dir = scratch.path() + "/oci" + std::to_string(i);
    ASSERT_TRUE(WriteOciLayout(dir, {*img}, {"example.com/gc:" + std::to_string(i)}).ok());
    ASSERT_TRUE(TarDirectory(dir, dir + ".tar").ok());
    auto imported = (*store)->Import(dir + ".tar");
    ASSERT_TRUE(imported.ok()) << imported.status();
    digests.push_back(img->manifest_digest);
  }
  ASSERT_GT(UsedPercent(root), 85.0) << "the test images should fill the tmpfs past the high threshold";
  // Image 0 is the least recently used but in use by a container; 1 is next.
  ASSERT_TRUE((*store)->GarbageCollect({digests[0]}, 85, 80).ok());
  EXPECT_LT(UsedPercent(root), 80.0);
  auto listed = (*store)->List();
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::set<std::string> left;
  for (const auto& img : *listed) left.insert(img.digest);
  EXPECT_TRUE(left.count(digests[0])) << "an image in use was removed";
  EXPECT_FALSE(left.count(digests[1])) << "the least recently used unused image stayed";
  EXPECT_TRUE(left.count(digests[6])) << "more was removed than needed to get below 80%";
  // Below the high threshold now: another run removes nothing.
  const size_t n = left.size();
  ASSERT_TRUE((*store)->GarbageCollect({}, 85, 80).ok());
  auto again = (*store)->List();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->size(), n);
}

}  // namespace
}  // namespace skiff::image
