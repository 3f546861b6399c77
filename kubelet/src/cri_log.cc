#include "skiff/kubelet/cri_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>

#include "cri_sink.h"
#include "skiff/common/status.h"

namespace skiff::kubelet {

std::string Rfc3339Nano(int64_t unix_nanos) {
  char buf[40];
  return std::string(buf, FormatRfc3339Nano(unix_nanos, buf));
}

int64_t NowUnixNanos() { return CriNowUnixNanos(); }

static_assert(kCriMaxLine == kMaxLogLine);

CriLogWriter::CriLogWriter(std::string path, uint64_t max_size, int max_files)
    : path_(std::move(path)), sink_(std::make_unique<CriSink>()) {
  int rc = CriSinkInit(sink_.get(), path_.c_str(), max_size, max_files);
  if (rc != 0) init_ = ErrnoError(-rc, "log path " + path_);
}

CriLogWriter::~CriLogWriter() { CriSinkClose(sink_.get()); }

absl::Status CriLogWriter::Open() {
  RETURN_IF_ERROR(init_);
  int rc = CriSinkOpen(sink_.get());
  return rc == 0 ? absl::OkStatus() : ErrnoError(-rc, "open log " + path_);
}

absl::Status CriLogWriter::Feed(int stream, const char* data, size_t len, int64_t now) {
  RETURN_IF_ERROR(init_);
  if (stream != 1 && stream != 2) return absl::InvalidArgumentError("stream must be 1 or 2");
  int rc = CriSinkFeed(sink_.get(), stream, data, len, now);
  return rc == 0 ? absl::OkStatus() : ErrnoError(-rc, "write log " + path_);
}

absl::Status CriLogWriter::Flush(int stream, int64_t now) {
  RETURN_IF_ERROR(init_);
  int rc = CriSinkFlush(sink_.get(), stream, now);
  return rc == 0 ? absl::OkStatus() : ErrnoError(-rc, "write log " + path_);
}

absl::StatusOr<CriLogLine> ParseCriLine(const std::string& line) {
  CriLogLine out;
  size_t a = line.find(' ');
  if (a == std::string::npos) return absl::InvalidArgumentError("no timestamp");
  size_t b = line.find(' ', a + 1);
  if (b == std::string::npos) return absl::InvalidArgumentError("no stream");
  size_t c = line.find(' ', b + 1);
  if (c == std::string::npos) c = line.size();
  out.timestamp = line.substr(0, a);
  out.stream = line.substr(a + 1, b - a - 1);
  std::string tag = line.substr(b + 1, c - b - 1);
  if (out.stream != "stdout" && out.stream != "stderr") return absl::InvalidArgumentError("bad stream");
  if (tag != "P" && tag != "F") return absl::InvalidArgumentError("bad tag");
  out.partial = tag == "P";
  out.message = c < line.size() ? line.substr(c + 1) : "";
  return out;
}

std::vector<std::string> LogFilesOldestFirst(const std::string& current, int max_files) {
  std::vector<std::string> out;
  for (int i = max_files - 1; i >= 1; --i) {
    std::string p = current + "." + std::to_string(i);
    if (access(p.c_str(), F_OK) == 0) out.push_back(p);
  }
  if (access(current.c_str(), F_OK) == 0) out.push_back(current);
  return out;
}

}  // namespace skiff::kubelet
