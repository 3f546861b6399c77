// skiffctl image import loads an OCI layout archive into a node image store.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include <filesystem>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "image_fixture.h"
#include "skiff/cli/cli.h"

namespace skiff::cli {
namespace {

namespace fs = std::filesystem;
namespace it = ::skiff::image::testing;

TEST(ImageImport, LoadsAnOciArchiveIntoTheStore) {
  if (::geteuid() != 0) GTEST_SKIP() << "unpacking layers with their owners needs root";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::temp_directory_path(), ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind("skiffctl-image-", 0) == 0 && ::kill(std::atoi(name.c_str() + 15), 0) != 0) fs::remove_all(e.path(), ec);
  }
  fs::path dir = fs::temp_directory_path() / ("skiffctl-image-" + std::to_string(::getpid()));
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } cleanup{dir};
  fs::remove_all(dir);
  fs::create_directories(dir / "layout");
  auto layer = it::BuildLayer({it::Dir("etc"), it::File("etc/hello", "hi\n")});
  ASSERT_TRUE(layer.ok()) << layer.status();
  auto img = it::BuildImage({*layer}, image::ImageConfig{});
  ASSERT_TRUE(img.ok()) << img.status();
  ASSERT_TRUE(it::WriteOciLayout((dir / "layout").string(), {*img}, {"example.com/hello:1"}).ok());
  ASSERT_TRUE(it::TarDirectory((dir / "layout").string(), (dir / "hello.tar").string()).ok());

  std::ostringstream out, err;
  std::istringstream in;
  Environment env;
  env.in = &in;
  env.out = &out;
  env.err = &err;
  int rc = cli::Run({"image", "import", (dir / "hello.tar").string(), "--root-dir", (dir / "store").string()}, env);
  std::string root_refs = (dir / "store" / "refs").string();
  bool has_refs = fs::exists(root_refs) && !fs::is_empty(root_refs);
  fs::remove_all(dir);
  ASSERT_EQ(rc, 0) << err.str();
  EXPECT_THAT(out.str(), ::testing::HasSubstr("unpacking "));
  EXPECT_THAT(out.str(), ::testing::HasSubstr("(" + img->manifest_digest + ")...done\n"));
  EXPECT_TRUE(has_refs);
}

}  // namespace
}  // namespace skiff::cli
