// cgroup logic against a scratch directory tree shaped like cgroupfs.
#include "skiff/runtime/cgroup.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace skiff::runtime {
namespace {

namespace fs = std::filesystem;

std::string Read(const fs::path& p) {
  std::ifstream in(p);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return s;
}
void Write(const fs::path& p, const std::string& s) { std::ofstream(p) << s; }

class ScratchCgroup : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("skiff-cgtest-" + std::to_string(getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "kubepods");
    Write(root_ / "cgroup.controllers", "cpu memory pids hugetlb\n");
    Write(root_ / "kubepods" / "cgroup.controllers", "cpu memory pids\n");
    Write(root_ / "kubepods" / "cgroup.subtree_control", "");
  }
  void TearDown() override { fs::remove_all(root_); }
  fs::path root_;
};

TEST_F(ScratchCgroup, FindsCgroup2MountFromMountinfo) {
  fs::path mi = root_ / "mountinfo";
  Write(mi,
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime shared:9 - cgroup2 cgroup2 rw\n");
  auto m = FindCgroup2Mount(mi.string());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, "/sys/fs/cgroup/uni fied");
  Write(mi, "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n");
  EXPECT_TRUE(absl::IsNotFound(FindCgroup2Mount(mi.string()).status()));
}

TEST_F(ScratchCgroup, TranslatesOciResourcesToCgroupV2Files) {
  Resources r;
  r.memory = MemoryResources{1 << 20, std::nullopt, 3 << 20};
  r.cpu = CpuResources{1024, 50000, 100000, "0-1", ""};
  r.pids_limit = 0;
  r.hugepage_limits.push_back({"2MB", 4096});
  r.unified["memory.high"] = "900";
  auto w = ResourcesToWrites(r);
  ASSERT_TRUE(w.ok()) << w.status();
  std::map<std::string, std::string> m;
  for (auto& x : *w) m[x.file] = x.value;
  EXPECT_EQ(m["memory.max"], "1048576");
  EXPECT_EQ(m["memory.swap.max"], std::to_string(2 << 20));
  EXPECT_EQ(m["cpu.weight"], "39");  // OCI conversion of shares=1024
  EXPECT_EQ(m["cpu.max"], "50000 100000");
  EXPECT_EQ(m["cpuset.cpus"], "0-1");
  EXPECT_EQ(m["pids.max"], "max");
  EXPECT_EQ(m["hugetlb.2MB.max"], "4096");
  EXPECT_EQ(m["memory.high"], "900");
}

TEST_F(ScratchCgroup, SwapBelowMemoryLimitIsRejected) {
  Resources r;
  r.memory = MemoryResources{2 << 20, std::nullopt, 1 << 20};
  EXPECT_FALSE(ResourcesToWrites(r).ok());
}

TEST_F(ScratchCgroup, CreatesPathEnablingControllersBelowTheRootOnly) {
  auto mgr = MakeCgroupfsManager(root_.string());
  auto dir = mgr->Prepare("kubepods/pod1/c1");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, (root_ / "kubepods/pod1/c1").string());
  EXPECT_TRUE(fs::is_directory(*dir));
  // kubepods is ours: its controllers get enabled for children.
  EXPECT_EQ(Read(root_ / "kubepods" / "cgroup.subtree_control"), "+cpu +memory +pids");
  // The mount root is the machine's: never written.
  EXPECT_FALSE(fs::exists(root_ / "cgroup.subtree_control"));
  EXPECT_FALSE(mgr->Prepare("../escape").ok());
}

TEST_F(ScratchCgroup, ReportsLimitsWhoseControllerIsMissing) {
  fs::path dir = root_ / "kubepods" / "c";
  fs::create_directories(dir);
  Write(dir / "cgroup.controllers", "hugetlb\n");  // the hybrid host's cgroup2
  for (const char* f : {"memory.max", "pids.max", "hugetlb.2MB.max"}) Write(dir / f, "");
  Resources r;
  r.memory = MemoryResources{1 << 20, std::nullopt, std::nullopt};
  r.pids_limit = 5;
  r.hugepage_limits.push_back({"2MB", 0});
  auto mgr = MakeCgroupfsManager(root_.string());
  std::vector<std::string> not_applied;
  ASSERT_TRUE(mgr->Apply(dir.string(), r, /*strict=*/false, &not_applied).ok());
  ASSERT_EQ(not_applied.size(), 2u);
  EXPECT_NE(not_applied[0].find("memory.max"), std::string::npos);
  EXPECT_NE(not_applied[1].find("pids.max"), std::string::npos);
  EXPECT_EQ(Read(dir / "hugetlb.2MB.max"), "0");
  EXPECT_EQ(Read(dir / "memory.max"), "");
  not_applied.clear();
  absl::Status st = mgr->Apply(dir.string(), r, /*strict=*/true, &not_applied);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(st.message()).find("memory.max"), std::string::npos);
}

TEST_F(ScratchCgroup, AppliesEveryLimitWhenControllersExist) {
  fs::path dir = root_ / "kubepods" / "c";
  fs::create_directories(dir);
  Write(dir / "cgroup.controllers", "cpu memory pids io cpuset hugetlb\n");
  Resources r;
  r.memory = MemoryResources{1 << 20, 1 << 19, std::nullopt};
  r.cpu = CpuResources{2, -1, 100000, "", "0"};
  r.pids_limit = 7;
  r.block_io = BlockIoResources{};
  r.block_io->weight = 500;
  r.block_io->throttle_read_bps.push_back({8, 0, 1000});
  for (const char* f : {"memory.max", "memory.low", "cpu.weight", "cpu.max", "cpuset.mems", "pids.max", "io.weight", "io.max"})
    Write(dir / f, "");
  std::vector<std::string> not_applied;
  auto mgr = MakeCgroupfsManager(root_.string());
  ASSERT_TRUE(mgr->Apply(dir.string(), r, true, &not_applied).ok());
  EXPECT_TRUE(not_applied.empty());
  EXPECT_EQ(Read(dir / "memory.low"), "524288");
  EXPECT_EQ(Read(dir / "cpu.weight"), "1");
  EXPECT_EQ(Read(dir / "cpu.max"), "max 100000");
  EXPECT_EQ(Read(dir / "pids.max"), "7");
  EXPECT_EQ(Read(dir / "io.weight"), "default 4950");
  EXPECT_EQ(Read(dir / "io.max"), "8:0 rbps=1000");
}

TEST_F(ScratchCgroup, ReadsOomKillsFromMemoryEvents) {
  fs::path dir = root_ / "kubepods";
  EXPECT_EQ(CgroupOomKills(dir.string()), 0u);
  Write(dir / "memory.events", "low 0\nhigh 3\nmax 5\noom 2\noom_kill 2\noom_group_kill 0\n");
  EXPECT_EQ(CgroupOomKills(dir.string()), 2u);
}

TEST_F(ScratchCgroup, OomKillsOfAVanishedScopeAreReadFromItsParent) {
  fs::path pod = root_ / "kubepods", scope = pod / "skiff-c1.scope";
  fs::create_directories(scope);
  Write(pod / "memory.events", "oom_kill 1\n");
  Write(scope / "memory.events", "oom_kill 0\n");
  OomBaseline base = OomKillsBaseline(scope.string());
  EXPECT_EQ(base.own, 0u);
  EXPECT_EQ(base.parent, 1u);
  EXPECT_FALSE(OomKilledSince(scope.string(), base));
  Write(pod / "memory.events", "oom_kill 2\n");
  // While the scope exists its own count decides (the kill was a sibling's).
  EXPECT_FALSE(OomKilledSince(scope.string(), base));
  Write(scope / "memory.events", "oom_kill 1\n");
  EXPECT_TRUE(OomKilledSince(scope.string(), base));
  // systemd removed the empty scope: the parent's count grew since the start.
  fs::remove_all(scope);
  EXPECT_TRUE(OomKilledSince(scope.string(), base));
  Write(pod / "memory.events", "oom_kill 1\n");
  EXPECT_FALSE(OomKilledSince(scope.string(), base));
}

TEST(SystemdDriver, BuildsTransientScopeWithDelegate) {
  Resources r;
  r.memory = MemoryResources{1 << 20, std::nullopt, std::nullopt};
  r.pids_limit = 9;
  r.cpu = CpuResources{std::nullopt, 50000, 100000, "", ""};
  auto u = TransientUnitFor("kubepods-burstable.slice:skiff:abc", 42, &r);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->name, "skiff-abc.scope");
  EXPECT_EQ(u->slice, "kubepods-burstable.slice");
  EXPECT_TRUE(u->delegate);
  EXPECT_EQ(u->pids, std::vector<uint32_t>{42});
  EXPECT_EQ(u->u64_properties.at("MemoryMax"), 1u << 20);
  EXPECT_EQ(u->u64_properties.at("TasksMax"), 9u);
  EXPECT_EQ(u->u64_properties.at("CPUQuotaPerSecUSec"), 500000u);
  EXPECT_FALSE(TransientUnitFor("not-systemd-form", 1, nullptr).ok());
  EXPECT_FALSE(TransientUnitFor("a--b.slice:p:n", 1, nullptr).ok());
  auto mgr = MakeSystemdManager("/sys/fs/cgroup");
  auto dir = mgr->Prepare("kubepods-burstable-pod1.slice:skiff:c1");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/skiff-c1.scope");
}

TEST(SystemdDriver, ScopeCarriesItsLimitsAndAccountingAsProperties) {
  Resources r;
  r.cpu = CpuResources{1024, std::nullopt, std::nullopt, "", ""};
  auto u = TransientUnitFor("kubepods-besteffort-pod1.slice:skiff:c1", 7, &r);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->u64_properties.at("CPUWeight"), 39u);  // the kubelet's 1 CPU request
  EXPECT_FALSE(u->u64_properties.count("MemoryMax"));
  EXPECT_TRUE(u->bool_properties.at("MemoryAccounting"));
  EXPECT_TRUE(u->bool_properties.at("CPUAccounting"));
  EXPECT_TRUE(u->bool_properties.at("TasksAccounting"));
  // runc: a name ending in .slice is the unit's own name, the prefix is ignored.
  auto s = TransientUnitFor("kubepods.slice:skiff:kubepods-pod2.slice", 0, nullptr);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name, "kubepods-pod2.slice");
  // An empty slice means system.slice.
  EXPECT_EQ(TransientUnitFor(":skiff:c", 0, nullptr)->slice, "system.slice");
}

TEST(SystemdDriver, SlicesNestByDashAndCarryPodLimits) {
  EXPECT_EQ(*SliceCgroupPath("kubepods.slice"), "/kubepods.slice");
  EXPECT_EQ(*SliceCgroupPath("skiff_n2-kubepods-burstable-podab_cd.slice"),
            "/skiff_n2.slice/skiff_n2-kubepods.slice/skiff_n2-kubepods-burstable.slice/"
            "skiff_n2-kubepods-burstable-podab_cd.slice");
  EXPECT_EQ(*SliceCgroupPath("-.slice"), "");
  for (const char* bad : {"kubepods", ".slice", "a--b.slice", "-a.slice", "a-.slice", "a/b.slice"})
    EXPECT_FALSE(SliceCgroupPath(bad).ok()) << bad;
  Resources r;
  r.memory = MemoryResources{64 << 20, std::nullopt, std::nullopt};
  r.cpu = CpuResources{256, 25000, 100000, "", ""};
  r.pids_limit = 4096;
  auto u = TransientSliceFor("kubepods-burstable-pod1.slice", &r);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->name, "kubepods-burstable-pod1.slice");
  EXPECT_EQ(u->slice, "");
  EXPECT_FALSE(u->delegate);
  EXPECT_TRUE(u->pids.empty());
  EXPECT_EQ(u->u64_properties.at("MemoryMax"), 64u << 20);
  EXPECT_EQ(u->u64_properties.at("CPUQuotaPerSecUSec"), 250000u);  // cpu.max "25000 100000"
  EXPECT_EQ(u->u64_properties.at("CPUWeight"), 10u);
  EXPECT_EQ(u->u64_properties.at("TasksMax"), 4096u);
  EXPECT_FALSE(TransientSliceFor("-.slice", nullptr).ok());
  EXPECT_FALSE(TransientSliceFor("pod.scope", nullptr).ok());
}

}  // namespace
}  // namespace skiff::runtime
