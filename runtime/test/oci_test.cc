#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "skiff/runtime/spec.h"

namespace skiff::runtime {
namespace {

const char* kMinimal = R"({
  "ociVersion": "1.0.2",
  "process": {"user": {"uid": 1, "gid": 2, "additionalGids": [3]}, "args": ["sh"], "cwd": "/",
              "env": ["A=b"], "capabilities": {"bounding": ["CAP_KILL"]},
              "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 5}], "noNewPrivileges": true},
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "h",
  "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
  "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network", "path": "/proc/self/ns/net"}],
            "resources": {"memory": {"limit": 1048576}, "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
                          "pids": {"limit": 10}, "unified": {"memory.high": "900000"}},
            "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
            "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}}
})";

TEST(OciSpec, ParsesTheFieldsTheRuntimeUses) {
  auto s = ParseSpec(kMinimal);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->process->user.uid, 1u);
  EXPECT_EQ(s->process->user.additional_gids, std::vector<uint32_t>{3});
  EXPECT_EQ(s->process->rlimits[0].soft, 5u);
  EXPECT_TRUE(s->root.readonly);
  EXPECT_EQ(s->linux->namespaces[2].path, "/proc/self/ns/net");
  EXPECT_EQ(*s->linux->resources->memory->limit, 1048576);
  EXPECT_EQ(s->linux->resources->unified.at("memory.high"), "900000");
  EXPECT_EQ(s->linux->seccomp->syscalls[0].names[0], "read");
}

TEST(OciSpec, RoundTripsThroughJson) {
  auto s = ParseSpec(kMinimal);
  ASSERT_TRUE(s.ok());
  auto again = ParseSpec(SpecToJson(*s));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(SpecToJson(*s), SpecToJson(*again));
}

struct BadCase {
  const char* name;
  std::string json;
  std::string field;
};

class OciSpecBad : public ::testing::TestWithParam<BadCase> {};

TEST_P(OciSpecBad, ErrorNamesTheField) {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("skiff-oci-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir / "rootfs");
  auto s = ParseSpec(GetParam().json);
  absl::Status st = s.ok() ? ValidateSpec(*s, dir.string()) : s.status();
  std::filesystem::remove_all(dir);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find(GetParam().field), std::string::npos) << st.message();
}

std::string With(const std::string& linux_part, const std::string& root = "rootfs") {
  return R"({"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/"},"root":{"path":")" + root + R"("},"linux":)" +
         linux_part + "}";
}

INSTANTIATE_TEST_SUITE_P(
    Cases, OciSpecBad,
    ::testing::Values(
        BadCase{"malformed", "{not json", "malformed"},
        BadCase{"unknown_ns", With(R"({"namespaces":[{"type":"mount"},{"type":"bogus"}]})"), "linux.namespaces[1].type"},
        BadCase{"missing_rootfs", With(R"({"namespaces":[{"type":"mount"}]})", "nope"), "root.path"},
        BadCase{"uidmap_without_userns", With(R"({"namespaces":[{"type":"mount"}],"uidMappings":[{"containerID":0,"hostID":1000,"size":1}]})"), "linux.uidMappings"},
        BadCase{"uidmap_zero_size", With(R"({"namespaces":[{"type":"user"}],"uidMappings":[{"containerID":0,"hostID":1000,"size":0}]})"), "linux.uidMappings[0].size"},
        BadCase{"uidmap_overlap", With(R"({"namespaces":[{"type":"user"}],"uidMappings":[{"containerID":0,"hostID":1000,"size":10},{"containerID":5,"hostID":2000,"size":10}],"gidMappings":[{"containerID":0,"hostID":1000,"size":1}]})"), "linux.uidMappings[1]"},
        BadCase{"wrong_type", R"({"ociVersion":"1.0.2","process":{"args":"sh","cwd":"/"},"root":{"path":"rootfs"}})", "process.args"},
        BadCase{"bad_cap", R"({"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/","capabilities":{"effective":["CAP_BOGUS"]}},"root":{"path":"rootfs"}})", "process.capabilities.effective[0]"},
        BadCase{"bad_rlimit", R"({"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/","rlimits":[{"type":"RLIMIT_FOO","hard":1,"soft":1}]},"root":{"path":"rootfs"}})", "process.rlimits[0].type"},
        BadCase{"relative_cwd", R"({"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"tmp"},"root":{"path":"rootfs"}})", "process.cwd"},
        BadCase{"no_root", R"({"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/"}})", "root"},
        BadCase{"ns_path_missing", With(R"({"namespaces":[{"type":"network","path":"/nonexistent/ns"}]})"), "linux.namespaces[0].path"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace skiff::runtime
