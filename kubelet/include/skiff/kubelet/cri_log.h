// Container logs in the CRI format the kubelet and kubectl expect:
//   <RFC3339Nano timestamp> <stdout|stderr> <P|F> <message>\n
// P marks a partial line (split because it was too long), F the full end of a line.
// One file per container attempt (<dir>/<restartCount>.log), rotated by size:
// N.log -> N.log.1 -> ... -> N.log.<max_files-1>, the oldest dropped.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace skiff::kubelet {

struct CriSink;

inline constexpr uint64_t kDefaultLogMaxSize = 10 * 1024 * 1024;
inline constexpr int kDefaultLogMaxFiles = 5;
inline constexpr size_t kMaxLogLine = 16 * 1024;  // longer lines are cut into P records

// "2026-11-22T06:44:28.123456789Z"
std::string Rfc3339Nano(int64_t unix_nanos);
int64_t NowUnixNanos();

class CriLogWriter {
 public:
  CriLogWriter(std::string path, uint64_t max_size = kDefaultLogMaxSize, int max_files = kDefaultLogMaxFiles);
  ~CriLogWriter();
  absl::Status Open();
  // Feeds raw bytes read from the container's stdout (stream "stdout") or stderr.
  absl::Status Feed(int stream, const char* data, size_t len, int64_t now_nanos);
  // Emits whatever partial line is buffered (at EOF).
  absl::Status Flush(int stream, int64_t now_nanos);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::unique_ptr<CriSink> sink_;  // the libc-only core (src/cri_sink.h)
  absl::Status init_;
};

struct CriLogLine {
  std::string timestamp;
  std::string stream;
  bool partial = false;
  std::string message;
};
absl::StatusOr<CriLogLine> ParseCriLine(const std::string& line);

// Files of one attempt, oldest first (N.log.4 ... N.log.1, N.log).
std::vector<std::string> LogFilesOldestFirst(const std::string& current_path, int max_files = kDefaultLogMaxFiles);

}  // namespace skiff::kubelet
