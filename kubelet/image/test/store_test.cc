#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "digest.h"
#include "fs.h"
#include "image_fixture.h"
#include "skiff/image/store.h"
#include "test_util.h"

namespace skiff::image {
namespace {

using namespace skiff::image::testing;

class StoreTest : public ::testing::Test {
 protected:
  ScratchDir scratch_{"skiff-image-unit"};
  std::string root_ = scratch_.path() + "/store";
  std::unique_ptr<Store> store_;

  void SetUp() override {
    auto s = Store::Open(root_, Options{});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }

  // busybox + one more layer, as an OCI layout tar.
  BuiltImage MakeArchive(const std::string& tar, const std::string& ref_name, const std::string& extra = "x") {
    auto base = BuildLayer(BusyboxRootfs(), Compression::kGzip);
    auto top = BuildLayer({Dir("app"), File("app/data", extra)}, Compression::kZstd);
    EXPECT_TRUE(base.ok() && top.ok());
    ImageConfig cfg;
    cfg.cmd = {"/bin/sh"};
    cfg.env = {"PATH=/bin"};
    cfg.working_dir = "/app";
    auto img = BuildImage({*base, *top}, cfg);
    EXPECT_TRUE(img.ok());
    std::string dir = tar + ".d";
    EXPECT_TRUE(WriteOciLayout(dir, {*img}, {ref_name}).ok());
    EXPECT_TRUE(TarDirectory(dir, tar).ok());
    return *img;
  }
};

TEST_F(StoreTest, ImportsAnOciLayoutArchive) {
  std::string tar = scratch_.path() + "/img.tar";
  BuiltImage built = MakeArchive(tar, "1");
  auto imgs = store_->Import(tar, "example.com/test/busybox");
  ASSERT_TRUE(imgs.ok()) << imgs.status();
  ASSERT_EQ(imgs->size(), 1u);
  const Image& img = (*imgs)[0];
  EXPECT_EQ(img.ref, "example.com/test/busybox:1");
  EXPECT_EQ(img.digest, built.manifest_digest);
  EXPECT_EQ(img.config.cmd, std::vector<std::string>{"/bin/sh"});
  EXPECT_EQ(img.config.working_dir, "/app");
  ASSERT_EQ(img.layer_dirs.size(), 2u);
  EXPECT_TRUE(Exists(img.layer_dirs[0] + "/bin/busybox"));
  EXPECT_TRUE(Exists(img.layer_dirs[1] + "/app/data"));
  auto got = store_->Get("example.com/test/busybox:1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->digest, img.digest);
  EXPECT_TRUE(store_->Get(img.digest).ok());
  auto list = store_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 1u);
  // A second import reuses blobs and layers.
  ASSERT_TRUE(store_->Import(tar, "example.com/test/busybox").ok());
  EXPECT_EQ(store_->Stats().layers_unpacked, 2);
}

TEST_F(StoreTest, ImportsADockerSaveArchive) {
  auto layer = BuildLayer(BusyboxRootfs(), Compression::kNone);
  ASSERT_TRUE(layer.ok());
  auto img = BuildImage({*layer}, ImageConfig{{"/bin/sh"}, {}, {}, "", "0"});
  ASSERT_TRUE(img.ok());
  std::string cfg_name = Sha256Hex(img->config) + ".json";
  nlohmann::json manifest = nlohmann::json::array(
      {{{"Config", cfg_name}, {"RepoTags", {"busybox:saved"}}, {"Layers", {"abc/layer.tar"}}}});
  std::string tar = scratch_.path() + "/save.tar";
  ASSERT_TRUE(WriteTar(tar, {File("manifest.json", manifest.dump()), File(cfg_name, img->config), Dir("abc"),
                             File("abc/layer.tar", layer->blob)})
                  .ok());
  auto imgs = store_->Import(tar);
  ASSERT_TRUE(imgs.ok()) << imgs.status();
  ASSERT_EQ(imgs->size(), 1u);
  EXPECT_EQ((*imgs)[0].ref, "docker.io/library/busybox:saved");
  EXPECT_EQ((*imgs)[0].config.entrypoint, std::vector<std::string>{"/bin/sh"});
  EXPECT_TRUE(Exists((*imgs)[0].layer_dirs[0] + "/bin/sh"));
}

TEST_F(StoreTest, RefusesArchiveWithPathTraversal) {
  std::string tar = scratch_.path() + "/evil.tar";
  ASSERT_TRUE(WriteTar(tar, {File("index.json", "{}"), File("../../escaped-" + std::to_string(::getpid()), "x")}).ok());
  auto r = store_->Import(tar);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("traversal"), std::string::npos) << r.status();
  EXPECT_FALSE(Exists(root_ + "/../escaped-" + std::to_string(::getpid())));
  EXPECT_FALSE(Exists(scratch_.path() + "/../escaped-" + std::to_string(::getpid())));
  // A layer inside a well-formed archive that escapes is refused as well.
  auto bad = BuildLayer({File("../../../layer-escape", "x")}, Compression::kGzip);
  ASSERT_TRUE(bad.ok());
  auto img = BuildImage({*bad}, ImageConfig{});
  ASSERT_TRUE(img.ok());
  ASSERT_TRUE(WriteOciLayout(scratch_.path() + "/evil2.d", {*img}, {"example.com/evil:1"}).ok());
  ASSERT_TRUE(TarDirectory(scratch_.path() + "/evil2.d", scratch_.path() + "/evil2.tar").ok());
  r = store_->Import(scratch_.path() + "/evil2.tar");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_FALSE(Exists(scratch_.path() + "/layer-escape"));
  EXPECT_FALSE(store_->Get("example.com/evil:1").ok());
}

TEST_F(StoreTest, RefusesArchiveBlobThatDoesNotMatchItsDigest) {
  std::string tar = scratch_.path() + "/img.tar";
  BuiltImage built = MakeArchive(tar, "example.com/t:1");
  // Swap the top layer's bytes for others under the same name.
  std::string blob = tar + ".d/blobs/sha256/" + built.layers[1].digest.substr(7);
  std::ofstream(blob, std::ios::binary | std::ios::trunc) << "tampered";
  ASSERT_TRUE(TarDirectory(tar + ".d", tar).ok());
  auto r = store_->Import(tar);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_FALSE(Exists(root_ + "/blobs/sha256/" + built.layers[1].digest.substr(7)));
}

TEST_F(StoreTest, IgnoresBlobsAndLayersWithoutTheirFinalRename) {
  std::string tar = scratch_.path() + "/img.tar";
  BuiltImage built = MakeArchive(tar, "example.com/t:1");
  // A crash after writing the manifest to tmp/ but before its rename: the
  // ref exists, the blob does not.
  std::ofstream(root_ + "/tmp/write.999999.0", std::ios::binary) << built.manifest;
  std::ofstream(root_ + "/tmp/" + built.manifest_digest.substr(7) + ".partial", std::ios::binary) << built.manifest;
  std::ofstream(root_ + "/refs/example.com%2Ft:1") << built.manifest_digest << "\n";
  auto r = store_->Get("example.com/t:1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Store::Open(root_, Options{}).ok(), true);
  EXPECT_FALSE(Exists(root_ + "/tmp/write.999999.0"));  // cleaned on open
  // A half-unpacked layer is never used: its final directory is missing.
  ASSERT_TRUE(MkdirAll(root_ + "/tmp/unpack-" + built.layers[0].diff_id.substr(7, 12) + ".1.1/bin").ok());
  auto imgs = store_->Import(tar);
  ASSERT_TRUE(imgs.ok()) << imgs.status();
  ASSERT_TRUE(RemoveAll((*imgs)[0].layer_dirs[1]).ok());
  r = store_->Get("example.com/t:1");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("missing"), std::string::npos) << r.status();
}

TEST_F(StoreTest, RemoveAndGarbageCollectKeepImagesInUse) {
  std::string a = scratch_.path() + "/a.tar", b = scratch_.path() + "/b.tar";
  BuiltImage ia = MakeArchive(a, "example.com/a:1", "aaa");
  BuiltImage ib = MakeArchive(b, "example.com/b:1", "bbb");
  ASSERT_TRUE(store_->Import(a).ok());
  ASSERT_TRUE(store_->Import(b).ok());
  // Shared busybox layer + one each.
  ASSERT_EQ(store_->List()->size(), 2u);
  // Below the threshold nothing happens.
  ASSERT_TRUE(store_->GarbageCollect({}, 101, 100).ok());
  ASSERT_EQ(store_->List()->size(), 2u);
  ASSERT_TRUE(store_->GarbageCollect({ia.manifest_digest}, 0, 0).ok());
  auto list = store_->List();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].ref, "example.com/a:1");
  EXPECT_FALSE(Exists(root_ + "/blobs/sha256/" + ib.layers[1].digest.substr(7)));
  EXPECT_FALSE(Exists(root_ + "/layers/" + ib.layers[1].diff_id.substr(7)));
  EXPECT_TRUE(Exists(root_ + "/layers/" + ia.layers[0].diff_id.substr(7)));  // shared base stays
  ASSERT_TRUE(store_->Remove("example.com/a:1").ok());
  EXPECT_TRUE(store_->List()->empty());
  EXPECT_FALSE(Exists(root_ + "/layers/" + ia.layers[0].diff_id.substr(7)));
  EXPECT_EQ(store_->Remove("example.com/a:1").code(), absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, ImportsADirectorySkippingBadArchives) {
  std::string dir = scratch_.path() + "/airgap";
  ASSERT_TRUE(MkdirAll(dir).ok());
  MakeArchive(dir + "/good.tar", "example.com/airgap:1");
  std::ofstream(dir + "/bad.tar") << "not a tar";
  std::ofstream(dir + "/notes.txt") << "ignored";
  auto imgs = store_->ImportDirectory(dir);
  ASSERT_TRUE(imgs.ok()) << imgs.status();
  ASSERT_EQ(imgs->size(), 1u);
  EXPECT_EQ((*imgs)[0].ref, "example.com/airgap:1");
  EXPECT_EQ(store_->ImportDirectory(dir + "/absent").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, NeverPolicyReportsErrImageNeverPull) {
  auto r = store_->Ensure("example.com/absent:1", PullPolicy::kNever, PullOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(KubeletReason(r.status()), "ErrImageNeverPull");
  r = store_->Ensure("Bad Name", PullPolicy::kIfNotPresent, PullOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(KubeletReason(r.status()), "InvalidImageName");
}

}  // namespace
}  // namespace skiff::image
