#include "skiff/common/config_args.h"

#include <unistd.h>

#include <fstream>

#include "gtest/gtest.h"

namespace skiff {
namespace {

std::string WriteTemp(const std::string& text) {
  char path[] = "/tmp/skiff-config-XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << text;
  return path;
}

TEST(ConfigArgs, FileEntriesBecomeFlagsAndTheCommandLineWins) {
  std::string f = WriteTemp("root-dir: /var/lib/x\ncgroup-driver: systemd\nextra: [a, b]\n");
  const char* argv[] = {"skiff-kubelet", "--config", f.c_str(), "--cgroup-driver=cgroupfs", "--v", nullptr};
  auto out = ExpandConfigArgs(5, const_cast<char**>(argv));
  ASSERT_TRUE(out.ok()) << out.status();
  std::vector<std::string> want = {"skiff-kubelet", "--root-dir=/var/lib/x", "--extra=a,b", "--cgroup-driver=cgroupfs",
                                   "--v"};
  EXPECT_EQ(out->args(), want);
  EXPECT_EQ(out->argc(), 5);
  EXPECT_STREQ(out->argv()[1], "--root-dir=/var/lib/x");
  EXPECT_EQ(out->argv()[5], nullptr);
  unlink(f.c_str());
}

TEST(ConfigArgs, BadFilesAreClearErrors) {
  const char* missing[] = {"x", "--config=/nonexistent/skiff.yaml", nullptr};
  auto r = ExpandConfigArgs(2, const_cast<char**>(missing));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(r.status().message()).find("/nonexistent/skiff.yaml"), std::string::npos);
}

}  // namespace
}  // namespace skiff

namespace skiff {
namespace {
TEST(ConfigArgs, MalformedYamlNamesTheLine) {
  std::string f = WriteTemp("a: 1\nb: [unclosed\n");
  const char* argv[] = {"x", "--config", f.c_str(), nullptr};
  auto r = ExpandConfigArgs(3, const_cast<char**>(argv));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("line "), std::string::npos) << r.status();
  unlink(f.c_str());
}

TEST(ConfigArgs, NoConfigLeavesArgvAlone) {
  const char* argv[] = {"x", "--a=1", "b", nullptr};
  auto r = ExpandConfigArgs(3, const_cast<char**>(argv));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->args(), (std::vector<std::string>{"x", "--a=1", "b"}));
}
}  // namespace
}  // namespace skiff
