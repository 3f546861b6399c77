// Pod and container cgroup names for the cgroupfs and systemd drivers, and
// the cgroupfs pod cgroup against a scratch tree shaped like cgroupfs.
#include "skiff/kubelet/cgroup_layout.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace skiff::kubelet {
namespace {

namespace fs = std::filesystem;

const std::string kUid = "6f1c2a9e-0b7d-4c51-9a43-2d8e5f7a1b3c";
const std::string kUidEscaped = "6f1c2a9e_0b7d_4c51_9a43_2d8e5f7a1b3c";

TEST(CgroupLayout, KubepodsNameFollowsTheCgroupRoot) {
  using V = std::vector<std::string>;
  EXPECT_EQ(KubepodsCgroupName("/kubepods"), (V{"kubepods"}));
  EXPECT_EQ(KubepodsCgroupName("/"), (V{"kubepods"}));
  EXPECT_EQ(KubepodsCgroupName(""), (V{"kubepods"}));
  EXPECT_EQ(KubepodsCgroupName("skiff-node2"), (V{"skiff-node2", "kubepods"}));
  EXPECT_EQ(KubepodsCgroupName("skiff-lab/x/h1/kubepods/"), (V{"skiff-lab", "x", "h1", "kubepods"}));
  // Slice names, alone or at the end of their expanded path, read back as the kubelet does.
  EXPECT_EQ(KubepodsCgroupName("skiff_node2.slice"), (V{"skiff-node2", "kubepods"}));
  EXPECT_EQ(KubepodsCgroupName("/a.slice/a-b_c.slice"), (V{"a", "b-c", "kubepods"}));
  EXPECT_EQ(KubepodsCgroupName("/-.slice"), (V{"kubepods"}));
  EXPECT_EQ(KubepodsCgroupName("kubepods.slice"), (V{"kubepods"}));
}

TEST(CgroupLayout, SystemdSliceNamesEscapeDashes) {
  EXPECT_EQ(SystemdSliceName({"kubepods", "burstable", "pod" + kUid}),
            "kubepods-burstable-pod" + kUidEscaped + ".slice");
  EXPECT_EQ(SystemdSliceName({"skiff-node2", "kubepods"}), "skiff_node2-kubepods.slice");
  EXPECT_EQ(SystemdSliceName({}), "-.slice");
}

TEST(CgroupLayout, SystemdDriverUsesKubeletSlicesAndRuncScopes) {
  CgroupLayout l("systemd", "/kubepods", "/sys/fs/cgroup");
  EXPECT_TRUE(l.systemd());
  const std::string burstable = "kubepods-burstable-pod" + kUidEscaped + ".slice";
  EXPECT_EQ(l.PodCgroup(QosClass::kBurstable, kUid), burstable);
  EXPECT_EQ(l.PodCgroup(QosClass::kBestEffort, kUid), "kubepods-besteffort-pod" + kUidEscaped + ".slice");
  // Guaranteed pods directly in kubepods.slice, as with cgroupfs.
  EXPECT_EQ(l.PodCgroup(QosClass::kGuaranteed, kUid), "kubepods-pod" + kUidEscaped + ".slice");
  EXPECT_EQ(l.PodDir(QosClass::kBurstable, kUid),
            "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/" + burstable);
  EXPECT_EQ(l.PodDir(QosClass::kGuaranteed, kUid),
            "/sys/fs/cgroup/kubepods.slice/kubepods-pod" + kUidEscaped + ".slice");
  // runc's slice:prefix:name, which the runtime turns into skiff-<id>.scope in the pod slice.
  const std::string id = kUid + "-web-0";
  EXPECT_EQ(l.ContainerCgroupsPath(QosClass::kBurstable, kUid, id), burstable + ":skiff:" + id);
  EXPECT_EQ(l.ContainerDir(QosClass::kBurstable, kUid, id),
            "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/" + burstable + "/skiff-" + id + ".scope");
}

TEST(CgroupLayout, CgroupRootGivesEachNodeItsOwnParentSlice) {
  CgroupLayout n2("systemd", "skiff-node2", "/sys/fs/cgroup");
  EXPECT_EQ(n2.PodCgroup(QosClass::kBestEffort, "u1"), "skiff_node2-kubepods-besteffort-podu1.slice");
  EXPECT_EQ(n2.PodDir(QosClass::kBestEffort, "u1"),
            "/sys/fs/cgroup/skiff_node2.slice/skiff_node2-kubepods.slice/skiff_node2-kubepods-besteffort.slice/"
            "skiff_node2-kubepods-besteffort-podu1.slice");
  // The same node named by its slice.
  CgroupLayout by_slice("systemd", "/skiff_node2.slice", "/sys/fs/cgroup");
  EXPECT_EQ(by_slice.PodCgroup(QosClass::kBestEffort, "u1"), n2.PodCgroup(QosClass::kBestEffort, "u1"));
  // A second node on the machine never shares a slice with the first.
  CgroupLayout n1("systemd", "/kubepods", "/sys/fs/cgroup");
  EXPECT_NE(n1.PodDir(QosClass::kBestEffort, "u1"), n2.PodDir(QosClass::kBestEffort, "u1"));
}

TEST(CgroupLayout, CgroupfsDriverKeepsTheDirectoryLayout) {
  CgroupLayout l("cgroupfs", "skiff-lab/x/h1/kubepods", "/sys/fs/cgroup/unified");
  EXPECT_FALSE(l.systemd());
  EXPECT_EQ(l.PodCgroup(QosClass::kBurstable, "u1"), "skiff-lab/x/h1/kubepods/burstable/podu1");
  EXPECT_EQ(l.PodDir(QosClass::kGuaranteed, "u1"), "/sys/fs/cgroup/unified/skiff-lab/x/h1/kubepods/podu1");
  EXPECT_EQ(l.ContainerCgroupsPath(QosClass::kBestEffort, "u1", "c"), "skiff-lab/x/h1/kubepods/besteffort/podu1/c");
  EXPECT_EQ(l.ContainerDir(QosClass::kBestEffort, "u1", "c"),
            "/sys/fs/cgroup/unified/skiff-lab/x/h1/kubepods/besteffort/podu1/c");
  // Without a cgroup2 mount there are no directories and nothing to create.
  CgroupLayout none("cgroupfs", "/kubepods", "");
  EXPECT_EQ(none.PodDir(QosClass::kBurstable, "u1"), "");
  EXPECT_EQ(none.ContainerDir(QosClass::kBurstable, "u1", "c"), "");
  std::vector<std::string> not_applied;
  EXPECT_TRUE(none.CreatePod(QosClass::kBurstable, "u1", PodLimits{}, &not_applied).ok());
  EXPECT_TRUE(none.RemovePod(QosClass::kBurstable, "u1").ok());
}

std::string Read(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A scratch tree: the pod cgroup gets the pod's limits where its cgroup
// offers the controller, and reports the others as not applied.
class CgroupfsPod : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("skiff-kubelet-cgtest-" + std::to_string(getpid()));
    fs::remove_all(root_);  // a crashed run's leftovers
    fs::path pod = root_ / "kubepods" / "burstable" / ("pod" + kUid);
    fs::create_directories(pod);
    std::ofstream(pod / "cgroup.controllers") << "cpu memory\n";
    for (const char* f : {"cpu.weight", "cpu.max", "memory.max"}) std::ofstream(pod / f) << "";
  }
  void TearDown() override { fs::remove_all(root_); }
  fs::path root_;
};

TEST_F(CgroupfsPod, GetsThePodLimitsAndReportsMissingControllers) {
  CgroupLayout l("cgroupfs", "/kubepods", root_.string());
  PodLimits lim;
  lim.cpu_shares = 512;
  lim.cpu_quota_us = 150000;
  lim.memory_bytes = 96 << 20;
  lim.pids = 4096;
  std::vector<std::string> not_applied;
  ASSERT_TRUE(l.CreatePod(QosClass::kBurstable, kUid, lim, &not_applied).ok());
  fs::path dir = l.PodDir(QosClass::kBurstable, kUid);
  EXPECT_EQ(Read(dir / "cpu.weight"), "20");
  EXPECT_EQ(Read(dir / "cpu.max"), "150000 100000");
  EXPECT_EQ(Read(dir / "memory.max"), std::to_string(96 << 20));
  ASSERT_EQ(not_applied.size(), 1u);
  EXPECT_NE(not_applied[0].find("pids.max=4096"), std::string::npos) << not_applied[0];
  // Called again after a kubelet restart: same result, no error.
  not_applied.clear();
  EXPECT_TRUE(l.CreatePod(QosClass::kBurstable, kUid, lim, &not_applied).ok());
  // A leaked container cgroup goes with the pod (the files here are no kernel's: clear them first).
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) fs::remove(e.path());
  fs::create_directory(dir / "leaked");
  EXPECT_TRUE(l.RemovePod(QosClass::kBurstable, kUid).ok());
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_TRUE(l.RemovePod(QosClass::kBurstable, kUid).ok());  // already gone
}

}  // namespace
}  // namespace skiff::kubelet
