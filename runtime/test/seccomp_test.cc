#include <gtest/gtest.h>

#include "seccomp_filter.h"
#include "skiff/runtime/spec.h"

namespace skiff::runtime {
namespace {

TEST(Seccomp, CompilesTheRuntimeDefaultProfileOnce) {
  auto a = CompileSeccomp(RuntimeDefaultSeccomp());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_GT((*a)->filter.size(), 50u);
  auto b = CompileSeccomp(RuntimeDefaultSeccomp());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->get(), b->get()) << "second compile of the same profile should hit the cache";
}

TEST(Seccomp, RejectsUnknownActionNamingTheField) {
  Seccomp s;
  s.default_action = "SCMP_ACT_ALLOW";
  s.syscalls.push_back({{"read"}, "SCMP_ACT_BOGUS", std::nullopt, {}});
  auto p = CompileSeccomp(s);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(std::string(p.status().message()).find("linux.seccomp.syscalls[0].action"), std::string::npos);
}

TEST(Seccomp, SkipsSyscallNamesTheKernelDoesNotKnow) {
  Seccomp s;
  s.default_action = "SCMP_ACT_ERRNO";
  s.syscalls.push_back({{"read", "no_such_syscall_xyz"}, "SCMP_ACT_ALLOW", std::nullopt, {}});
  EXPECT_TRUE(CompileSeccomp(s).ok());
}

}  // namespace
}  // namespace skiff::runtime
