// The CRI log writer's core, with no heap, no exceptions and no C++ library:
// skiff-monitor-pump (linked -static, one per container) writes every log
// line through it, and CriLogWriter (cri_log.h) wraps it for everyone else.
// Functions return 0 or -errno.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace skiff::kubelet {

inline constexpr size_t kCriMaxLine = 16 * 1024;  // longer lines are cut into P records
inline constexpr size_t kCriPathMax = 4096;

struct CriSink {
  char path[kCriPathMax];
  uint64_t max_size;
  int max_files;
  int fd;
  uint64_t size;
  char pending[3][kCriMaxLine];  // per stream (1 = stdout, 2 = stderr); partial line so far
  size_t pending_len[3];
};

// Fills `out` (>= 32 bytes) with "2026-11-22T06:44:28.123456789Z"; returns its length.
size_t FormatRfc3339Nano(int64_t unix_nanos, char* out);
int64_t CriNowUnixNanos();

// path longer than kCriPathMax - 8 is refused (-ENAMETOOLONG).
int CriSinkInit(CriSink* s, const char* path, uint64_t max_size, int max_files);
int CriSinkOpen(CriSink* s);
int CriSinkFeed(CriSink* s, int stream, const char* data, size_t len, int64_t now_nanos);
int CriSinkFlush(CriSink* s, int stream, int64_t now_nanos);
void CriSinkClose(CriSink* s);

}  // namespace skiff::kubelet
