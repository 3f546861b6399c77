// Host-local IPAM: persistence, no double allocation, release, exhaustion.
#include <dirent.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "skiff/podnet/cidr.h"
#include "skiff/podnet/ipam.h"

namespace skiff::podnet {
namespace {

class IpamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("skiff-ipam-test-" + std::to_string(getpid()) + "-" +
                                                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST(Cidr, ParsesAndRejects) {
  auto c = ParseCidr("10.244.1.0/24");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(FormatIpv4(c->network), "10.244.1.0");
  EXPECT_EQ(FormatIpv4(c->Broadcast()), "10.244.1.255");
  EXPECT_TRUE(c->Contains(*ParseIpv4("10.244.1.77")));
  EXPECT_FALSE(c->Contains(*ParseIpv4("10.244.2.1")));
  EXPECT_FALSE(ParseCidr("10.244.1.1/24").ok());
  EXPECT_FALSE(ParseCidr("10.244.1.0").ok());
  EXPECT_FALSE(ParseCidr("10.244.1.0/33").ok());
  EXPECT_FALSE(ParseCidr("banana/8").ok());
}

TEST_F(IpamTest, NeverHandsOutNetworkGatewayOrBroadcast) {
  auto ipam = Ipam::Open(dir_, "10.1.0.0/29");
  ASSERT_TRUE(ipam.ok()) << ipam.status();
  std::set<std::string> got;
  for (int i = 0; i < 5; ++i) {
    auto ip = (*ipam)->Allocate("pod" + std::to_string(i));
    ASSERT_TRUE(ip.ok()) << ip.status();
    got.insert(FormatIpv4(*ip));
  }
  EXPECT_EQ(got, (std::set<std::string>{"10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"}));
  auto full = (*ipam)->Allocate("pod-extra");
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FormatIpv4((*ipam)->Gateway()), "10.1.0.1");
}

TEST_F(IpamTest, AllocationIsIdempotentPerOwner) {
  auto ipam = Ipam::Open(dir_, "10.1.0.0/24");
  ASSERT_TRUE(ipam.ok());
  auto a = (*ipam)->Allocate("uid-a");
  auto b = (*ipam)->Allocate("uid-a");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ((*ipam)->Allocations().size(), 1u);
}

TEST_F(IpamTest, SurvivesRestartWithoutLeakOrDoubleAllocation) {
  uint32_t a, b;
  {
    auto ipam = Ipam::Open(dir_, "10.1.0.0/24");
    ASSERT_TRUE(ipam.ok());
    a = *(*ipam)->Allocate("uid-a");
    b = *(*ipam)->Allocate("uid-b");
  }
  auto ipam = Ipam::Open(dir_, "10.1.0.0/24");
  ASSERT_TRUE(ipam.ok());
  EXPECT_EQ(*(*ipam)->Allocate("uid-a"), a);
  EXPECT_EQ(*(*ipam)->Allocate("uid-b"), b);
  uint32_t c = *(*ipam)->Allocate("uid-c");
  EXPECT_NE(c, a);
  EXPECT_NE(c, b);
}

TEST_F(IpamTest, TwoAllocatorsOnOneDirectoryNeverCollide) {
  auto x = Ipam::Open(dir_, "10.1.0.0/28");
  auto y = Ipam::Open(dir_, "10.1.0.0/28");
  ASSERT_TRUE(x.ok() && y.ok());
  std::set<uint32_t> ips;
  for (int i = 0; i < 6; ++i) {
    ips.insert(*(*x)->Allocate("x" + std::to_string(i)));
    ips.insert(*(*y)->Allocate("y" + std::to_string(i)));
  }
  EXPECT_EQ(ips.size(), 12u);
}

TEST_F(IpamTest, ReleaseReturnsAddressesAndGcKeepsLivePods) {
  auto ipam = Ipam::Open(dir_, "10.1.0.0/24");
  ASSERT_TRUE(ipam.ok());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE((*ipam)->Allocate("p" + std::to_string(i)).ok());
  for (int i = 0; i < 50; ++i) ASSERT_TRUE((*ipam)->Release("p" + std::to_string(i)).ok());
  EXPECT_EQ((*ipam)->Allocations().size(), 50u);
  auto n = (*ipam)->ReleaseAllExcept({"p50", "p51"});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 48);
  EXPECT_EQ((*ipam)->Allocations().size(), 2u);
  // Only the two live files (plus the cursor) remain on disk.
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir_)) files += e.path().filename() != "last";
  EXPECT_EQ(files, 2);
  EXPECT_TRUE((*ipam)->Release("never-allocated").ok());
}

TEST_F(IpamTest, IgnoresInterruptedAllocationLeftovers) {
  std::filesystem::create_directories(dir_);
  { FILE* f = fopen((dir_ + "/.tmp-123-uid-z").c_str(), "w"); fputs("uid-z", f); fclose(f); }
  { FILE* f = fopen((dir_ + "/10.1.0.9").c_str(), "w"); fclose(f); }  // empty: claimed by nobody
  auto ipam = Ipam::Open(dir_, "10.1.0.0/24");
  ASSERT_TRUE(ipam.ok());
  EXPECT_TRUE((*ipam)->Allocations().empty());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/.tmp-123-uid-z"));
}

}  // namespace
}  // namespace skiff::podnet
