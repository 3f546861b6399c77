// Privileged: layers unpacked by the store, combined with overlayfs, show
// whiteouts, opaque dirs, hard links, symlinks, setuid bits and xattrs the
// way the image defines them, and busybox runs in the merged rootfs.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fstream>

#include "fs.h"
#include "image_fixture.h"
#include "skiff/image/store.h"
#include "test_util.h"

namespace skiff::image {
namespace {

using namespace skiff::image::testing;

std::string RunCapture(const std::vector<std::string>& argv) {
  int p[2];
  if (::pipe(p) != 0) return "<pipe failed>";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(p[1], 1);
    ::dup2(p[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(p[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int status;
  ::waitpid(pid, &status, 0);
  return out;
}

TEST(Overlay, MergedRootfsHonoursWhiteoutsOpaqueDirsLinksSetuidAndXattrs) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (mknod, trusted xattrs, overlay mounts)";
  ScratchDir scratch("skiff-image-priv");
  auto base_entries = BusyboxRootfs();
  for (const auto& e : std::vector<Entry>{File("etc/gone", "old"), Dir("data"), File("data/old1", "1"),
                                          File("data/old2", "2"), File("etc/hosts", "lower"), Dir("keep"),
                                          File("keep/a", "a")}) {
    base_entries.push_back(e);
  }
  auto base = BuildLayer(base_entries, Compression::kGzip);
  Entry suid = File("bin/suid", "#!/bin/sh\n", 04755, 1000, 1000);
  Entry cap = File("bin/capped", "x", 0755);
  cap.xattrs["user.skiff.note"] = "kept";
  cap.xattrs["trusted.skiff"] = "t";
  auto top = BuildLayer({Whiteout("etc", "gone"), Dir("data"), Opaque("data"), File("data/new", "n"), suid, cap,
                         File("shared/one", "linked"), Hardlink("shared/two", "shared/one"),
                         Symlink("etc/link", "hosts"), File("etc/hosts", "upper")},
                        Compression::kZstd);
  ASSERT_TRUE(base.ok() && top.ok());
  ImageConfig cfg;
  cfg.cmd = {"/bin/sh"};
  auto img = BuildImage({*base, *top}, cfg);
  ASSERT_TRUE(img.ok());
  ASSERT_TRUE(WriteOciLayout(scratch.path() + "/layout", {*img}, {"example.com/overlay:1"}).ok());
  ASSERT_TRUE(TarDirectory(scratch.path() + "/layout", scratch.path() + "/layout.tar").ok());

  auto store = Store::Open(scratch.path() + "/store", Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  auto imported = (*store)->Import(scratch.path() + "/layout.tar");
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::string cdir = scratch.path() + "/containers/c1";
  auto merged = (*store)->MountRootfs((*imported)[0], cdir);
  ASSERT_TRUE(merged.ok()) << merged.status();
  const std::string m = *merged;

  EXPECT_FALSE(Exists(m + "/etc/gone"));
  EXPECT_TRUE(Exists(m + "/keep/a"));
  EXPECT_TRUE(Exists(m + "/data/new"));
  EXPECT_FALSE(Exists(m + "/data/old1"));
  EXPECT_FALSE(Exists(m + "/data/old2"));
  struct stat a, b;
  ASSERT_EQ(::lstat((m + "/bin/suid").c_str(), &a), 0);
  EXPECT_EQ(a.st_mode & 07777, 04755u);
  EXPECT_EQ(a.st_uid, 1000u);
  ASSERT_EQ(::lstat((m + "/shared/one").c_str(), &a), 0);
  ASSERT_EQ(::lstat((m + "/shared/two").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 2u);
  char buf[64] = {};
  ASSERT_EQ(::readlink((m + "/etc/link").c_str(), buf, sizeof buf), 5);
  EXPECT_STREQ(buf, "hosts");
  ASSERT_EQ(::lgetxattr((m + "/bin/capped").c_str(), "user.skiff.note", buf, sizeof buf), 4);
  EXPECT_EQ(std::string(buf, 4), "kept");
  auto hosts = ReadFile(m + "/etc/hosts");
  ASSERT_TRUE(hosts.ok());
  EXPECT_EQ(*hosts, "upper");

  // busybox runs in the merged view and sees the same thing.
  EXPECT_EQ(RunCapture({"chroot", m, "/bin/sh", "-c", "cat /etc/link; ls /data; test -e /etc/gone || echo gone"}),
            "uppernew\ngone\n");
  EXPECT_EQ(RunCapture({"chroot", m, "/bin/stat", "-c", "%a %u", "/bin/suid"}), "4755 1000\n");

  // Writes land in the container's upper dir, never in a shared layer.
  std::ofstream(m + "/data/written") << "w";
  EXPECT_TRUE(Exists(cdir + "/upper/data/written"));
  for (const auto& l : (*imported)[0].layer_dirs) EXPECT_FALSE(Exists(l + "/data/written"));
  ASSERT_EQ(::unlink((m + "/keep/a").c_str()), 0);
  for (const auto& l : (*imported)[0].layer_dirs) {
    if (Exists(l + "/keep")) {
      EXPECT_TRUE(Exists(l + "/keep/a"));
    }
  }
  // Mounting again (kubelet restart) is idempotent; a mounted layer survives
  // a removal of its image.
  auto again = (*store)->MountRootfs((*imported)[0], cdir);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE((*store)->Remove("example.com/overlay:1").ok());
  EXPECT_TRUE(Exists((*imported)[0].layer_dirs[0] + "/bin/busybox"));

  ASSERT_TRUE((*store)->UnmountRootfs(cdir).ok());
  EXPECT_FALSE(Exists(m + "/bin/busybox"));
  EXPECT_TRUE((*store)->UnmountRootfs(cdir).ok());
}

TEST(Overlay, MountsImagesDeeperThanOneMountOptionPage) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (overlay mounts)";
  ScratchDir scratch("skiff-image-priv");
  std::vector<Layer> layers;
  for (int i = 0; i < 48; ++i) {
    auto l = BuildLayer({Dir("d"), File("d/f" + std::to_string(i), std::to_string(i)), File("top", std::to_string(i))},
                        Compression::kGzip);
    ASSERT_TRUE(l.ok());
    layers.push_back(*l);
  }
  auto img = BuildImage(layers, ImageConfig{});
  ASSERT_TRUE(img.ok());
  ASSERT_TRUE(WriteOciLayout(scratch.path() + "/layout", {*img}, {"example.com/deep:1"}).ok());
  ASSERT_TRUE(TarDirectory(scratch.path() + "/layout", scratch.path() + "/layout.tar").ok());
  auto store = Store::Open(scratch.path() + "/store", Options{});
  ASSERT_TRUE(store.ok());
  auto imported = (*store)->Import(scratch.path() + "/layout.tar");
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::string cdir = scratch.path() + "/c";
  auto merged = (*store)->MountRootfs((*imported)[0], cdir);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_TRUE(Exists(*merged + "/d/f0"));
  EXPECT_TRUE(Exists(*merged + "/d/f47"));
  EXPECT_EQ(ReadFile(*merged + "/top").value_or(""), "47");  // the top layer wins
  ASSERT_TRUE((*store)->UnmountRootfs(cdir).ok());
}

}  // namespace
}  // namespace skiff::image
