#include "skiff/kubelet/cri_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>

#include "skiff/common/status.h"

namespace skiff::kubelet {

std::string Rfc3339Nano(int64_t unix_nanos) {
  time_t secs = unix_nanos / 1000000000;
  long nanos = unix_nanos % 1000000000;
  struct tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof(buf) - n, ".%09ldZ", nanos);
  return buf;
}

int64_t NowUnixNanos() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

CriLogWriter::CriLogWriter(std::string path, uint64_t max_size, int max_files)
    : path_(std::move(path)), max_size_(max_size), max_files_(max_files < 1 ? 1 : max_files) {}

CriLogWriter::~CriLogWriter() {
  if (fd_ >= 0) close(fd_);
}

absl::Status CriLogWriter::Open() {
  fd_ = open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd_ < 0) return LastErrnoError("open log " + path_);
  struct stat st{};
  if (fstat(fd_, &st) == 0) size_ = st.st_size;
  return absl::OkStatus();
}

absl::Status CriLogWriter::Rotate() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  if (max_files_ <= 1) {
    if (truncate(path_.c_str(), 0) != 0 && errno != ENOENT) return LastErrnoError("truncate " + path_);
  } else {
    std::string oldest = path_ + "." + std::to_string(max_files_ - 1);
    unlink(oldest.c_str());
    for (int i = max_files_ - 2; i >= 1; --i) {
      std::string from = path_ + "." + std::to_string(i), to = path_ + "." + std::to_string(i + 1);
      rename(from.c_str(), to.c_str());
    }
    if (rename(path_.c_str(), (path_ + ".1").c_str()) != 0 && errno != ENOENT) {
      return LastErrnoError("rotate " + path_);
    }
  }
  size_ = 0;
  return Open();
}

absl::Status CriLogWriter::WriteRecord(int stream, bool partial, const char* msg, size_t len, int64_t now) {
  std::string rec = Rfc3339Nano(now);
  rec += stream == 2 ? " stderr " : " stdout ";
  rec += partial ? "P " : "F ";
  rec.append(msg, len);
  rec += '\n';
  if (fd_ < 0) RETURN_IF_ERROR(Open());
  if (size_ > 0 && size_ + rec.size() > max_size_) RETURN_IF_ERROR(Rotate());
  const char* p = rec.data();
  size_t left = rec.size();
  while (left > 0) {
    ssize_t n = write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return LastErrnoError("write log " + path_);
    }
    p += n;
    left -= n;
  }
  size_ += rec.size();
  return absl::OkStatus();
}

absl::Status CriLogWriter::Feed(int stream, const char* data, size_t len, int64_t now) {
  if (stream != 1 && stream != 2) return absl::InvalidArgumentError("stream must be 1 or 2");
  std::string& buf = pending_[stream];
  size_t start = 0;
  for (size_t i = 0; i < len; ++i) {
    if (data[i] != '\n') continue;
    const char* line = data + start;
    size_t n = i - start;
    if (!buf.empty()) {
      buf.append(data + start, i - start);
      line = buf.data();
      n = buf.size();
    }
    // Overlong lines become P records of kMaxLogLine bytes and a final F record.
    while (n > kMaxLogLine) {
      RETURN_IF_ERROR(WriteRecord(stream, true, line, kMaxLogLine, now));
      line += kMaxLogLine;
      n -= kMaxLogLine;
    }
    RETURN_IF_ERROR(WriteRecord(stream, false, line, n, now));
    buf.clear();
    start = i + 1;
  }
  buf.append(data + start, len - start);
  while (buf.size() >= kMaxLogLine) {
    RETURN_IF_ERROR(WriteRecord(stream, true, buf.data(), kMaxLogLine, now));
    buf.erase(0, kMaxLogLine);
  }
  return absl::OkStatus();
}

absl::Status CriLogWriter::Flush(int stream, int64_t now) {
  std::string& buf = pending_[stream];
  if (buf.empty()) return absl::OkStatus();
  absl::Status st = WriteRecord(stream, false, buf.data(), buf.size(), now);
  buf.clear();
  return st;
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
