// CRI log writer: line format, partial lines, rotation; container records.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "skiff/kubelet/container_record.h"
#include "skiff/kubelet/cri_log.h"

namespace skiff::kubelet {
namespace {

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

class CriLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("skiff-crilog-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST(CriLog, TimestampsAreRfc3339NanoUtc) {
  EXPECT_EQ(Rfc3339Nano(1700000000123456789LL), "2023-11-14T22:13:20.123456789Z");
  EXPECT_EQ(Rfc3339Nano(5), "1970-01-01T00:00:00.000000005Z");
}

TEST_F(CriLogTest, WritesFullAndPartialLinesPerStream) {
  CriLogWriter w(dir_ + "/0.log");
  ASSERT_TRUE(w.Open().ok());
  const int64_t t = 1700000000000000000LL;
  ASSERT_TRUE(w.Feed(1, "hello\nwor", 9, t).ok());
  ASSERT_TRUE(w.Feed(2, "oops\n", 5, t).ok());
  ASSERT_TRUE(w.Feed(1, "ld\n", 3, t).ok());
  ASSERT_TRUE(w.Feed(1, "tail", 4, t).ok());
  ASSERT_TRUE(w.Flush(1, t).ok());
  auto lines = Lines(dir_ + "/0.log");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "2023-11-14T22:13:20.000000000Z stdout F hello");
  EXPECT_EQ(lines[1], "2023-11-14T22:13:20.000000000Z stderr F oops");
  EXPECT_EQ(lines[2], "2023-11-14T22:13:20.000000000Z stdout F world");
  EXPECT_EQ(lines[3], "2023-11-14T22:13:20.000000000Z stdout F tail");
  auto parsed = ParseCriLine(lines[1]);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->stream, "stderr");
  EXPECT_FALSE(parsed->partial);
  EXPECT_EQ(parsed->message, "oops");
}

TEST_F(CriLogTest, SplitsOverlongLinesIntoPartialRecords) {
  CriLogWriter w(dir_ + "/0.log");
  ASSERT_TRUE(w.Open().ok());
  std::string big(kMaxLogLine + 10, 'x');
  big += "\n";
  ASSERT_TRUE(w.Feed(1, big.data(), big.size(), 0).ok());
  auto lines = Lines(dir_ + "/0.log");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find(" stdout P "), std::string::npos);
  EXPECT_NE(lines[1].find(" stdout F xxxxxxxxxx"), std::string::npos);
}

TEST_F(CriLogTest, RotatesBySizeAndKeepsMaxFiles) {
  std::string path = dir_ + "/0.log";
  CriLogWriter w(path, /*max_size=*/200, /*max_files=*/3);
  ASSERT_TRUE(w.Open().ok());
  for (int i = 0; i < 40; ++i) {
    std::string line = "line-" + std::to_string(i) + "\n";
    ASSERT_TRUE(w.Feed(1, line.data(), line.size(), 0).ok());
  }
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::exists(path + ".1"));
  EXPECT_TRUE(std::filesystem::exists(path + ".2"));
  EXPECT_FALSE(std::filesystem::exists(path + ".3"));
  for (const auto& f : {path, path + ".1", path + ".2"}) EXPECT_LE(std::filesystem::file_size(f), 200u);
  auto files = LogFilesOldestFirst(path, 3);
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files.back(), path);
  auto last = Lines(path);
  ASSERT_FALSE(last.empty());
  EXPECT_NE(last.back().find("line-39"), std::string::npos);
}

TEST(CriLog, RejectsMalformedLines) {
  EXPECT_FALSE(ParseCriLine("garbage").ok());
  EXPECT_FALSE(ParseCriLine("2023-01-01T00:00:00Z stdin F x").ok());
  EXPECT_FALSE(ParseCriLine("2023-01-01T00:00:00Z stdout X x").ok());
  auto empty = ParseCriLine("2023-01-01T00:00:00Z stdout F");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->message, "");
}

TEST_F(CriLogTest, ContainerRecordRoundTripsThroughItsFile) {
  ContainerRecord r;
  r.id = "uid-web-2";
  r.attempt = 2;
  r.monitor_pid = 42;
  r.pid = 43;
  r.started_at = "2026-11-22T06:44:28Z";
  r.exited = true;
  r.exit_code = 137;
  r.signal = 9;
  r.oom_killed = true;
  r.warnings = "memory.max (controller memory not available)";
  ASSERT_TRUE(WriteRecordFile(dir_ + "/2.state", r).ok());
  auto back = ReadRecordFile(dir_ + "/2.state");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, r.id);
  EXPECT_EQ(back->attempt, 2);
  EXPECT_EQ(back->pid, 43);
  EXPECT_TRUE(back->exited);
  EXPECT_EQ(back->exit_code, 137);
  EXPECT_TRUE(back->oom_killed);
  EXPECT_EQ(back->warnings, r.warnings);
  EXPECT_FALSE(ReadRecordFile(dir_ + "/missing.state").ok());
}

}  // namespace
}  // namespace skiff::kubelet
