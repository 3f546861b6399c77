#include "cri_sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

namespace skiff::kubelet {
namespace {

// Days since 1970-01-01 -> civil date (Howard Hinnant's algorithm).
void CivilFromDays(int64_t z, int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2);
}

char* PutDigits(char* p, uint64_t v, int width) {
  for (int i = width - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
  return p + width;
}

// Appends "<path>.<n>" into buf.
void NumberedPath(const char* path, int n, char* buf) {
  size_t l = strlen(path);
  memcpy(buf, path, l);
  buf[l++] = '.';
  char digits[12];
  int k = 0;
  do {
    digits[k++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n > 0);
  while (k > 0) buf[l++] = digits[--k];
  buf[l] = '\0';
}

int Rotate(CriSink* s) {
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  if (s->max_files <= 1) {
    if (truncate(s->path, 0) != 0 && errno != ENOENT) return -errno;
  } else {
    char from[kCriPathMax + 16], to[kCriPathMax + 16];
    NumberedPath(s->path, s->max_files - 1, to);
    unlink(to);
    for (int i = s->max_files - 2; i >= 1; --i) {
      NumberedPath(s->path, i, from);
      NumberedPath(s->path, i + 1, to);
      rename(from, to);
    }
    NumberedPath(s->path, 1, to);
    if (rename(s->path, to) != 0 && errno != ENOENT) return -errno;
  }
  s->size = 0;
  return CriSinkOpen(s);
}

int WriteAll(int fd, iovec* iov, int n) {
  while (n > 0) {
    ssize_t w = writev(fd, iov, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    while (n > 0 && static_cast<size_t>(w) >= iov->iov_len) {
      w -= static_cast<ssize_t>(iov->iov_len);
      ++iov;
      --n;
    }
    if (n > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + w;
      iov->iov_len -= static_cast<size_t>(w);
    }
  }
  return 0;
}

int WriteRecord(CriSink* s, int stream, bool partial, const char* msg, size_t len, int64_t now) {
  char head[64];
  size_t h = FormatRfc3339Nano(now, head);
  const char* tag = stream == 2 ? (partial ? " stderr P " : " stderr F ") : (partial ? " stdout P " : " stdout F ");
  memcpy(head + h, tag, 10);
  h += 10;
  char nl = '\n';
  uint64_t total = h + len + 1;
  if (s->fd < 0) {
    if (int rc = CriSinkOpen(s); rc != 0) return rc;
  }
  if (s->size > 0 && s->size + total > s->max_size) {
    if (int rc = Rotate(s); rc != 0) return rc;
  }
  iovec iov[3] = {{head, h}, {const_cast<char*>(msg), len}, {&nl, 1}};
  if (int rc = WriteAll(s->fd, iov, 3); rc != 0) return rc;
  s->size += total;
  return 0;
}

}  // namespace

size_t FormatRfc3339Nano(int64_t unix_nanos, char* out) {
  int64_t secs = unix_nanos / 1000000000, nanos = unix_nanos % 1000000000;
  if (nanos < 0) nanos += 1000000000, --secs;
  int64_t days = secs / 86400, rem = secs % 86400;
  if (rem < 0) rem += 86400, --days;
  int64_t y;
  unsigned m, d;
  CivilFromDays(days, &y, &m, &d);
  char* p = PutDigits(out, static_cast<uint64_t>(y), 4);
  *p++ = '-';
  p = PutDigits(p, m, 2);
  *p++ = '-';
  p = PutDigits(p, d, 2);
  *p++ = 'T';
  p = PutDigits(p, static_cast<uint64_t>(rem / 3600), 2);
  *p++ = ':';
  p = PutDigits(p, static_cast<uint64_t>(rem / 60 % 60), 2);
  *p++ = ':';
  p = PutDigits(p, static_cast<uint64_t>(rem % 60), 2);
  *p++ = '.';
  p = PutDigits(p, static_cast<uint64_t>(nanos), 9);
  *p++ = 'Z';
  *p = '\0';
  return static_cast<size_t>(p - out);
}

int64_t CriNowUnixNanos() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int CriSinkInit(CriSink* s, const char* path, uint64_t max_size, int max_files) {
  size_t l = strlen(path);
  if (l + 8 > kCriPathMax) return -ENAMETOOLONG;
  memcpy(s->path, path, l + 1);
  s->max_size = max_size;
  s->max_files = max_files < 1 ? 1 : max_files;
  s->fd = -1;
  s->size = 0;
  for (size_t& n : s->pending_len) n = 0;
  return 0;
}

int CriSinkOpen(CriSink* s) {
  if (s->fd >= 0) close(s->fd);
  s->fd = open(s->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (s->fd < 0) return -errno;
  struct stat st{};
  s->size = fstat(s->fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return 0;
}

int CriSinkFeed(CriSink* s, int stream, const char* data, size_t len, int64_t now) {
  if (stream != 1 && stream != 2) return -EINVAL;
  char* buf = s->pending[stream];
  size_t& have = s->pending_len[stream];
  size_t i = 0;
  while (i < len) {
    const char* nl = static_cast<const char*>(memchr(data + i, '\n', len - i));
    size_t end = nl ? static_cast<size_t>(nl - data) : len;
    // Bytes [i, end) belong to the current line. A line that has more than
    // kCriMaxLine bytes and is still growing is cut into P records.
    while (i < end) {
      if (have == kCriMaxLine) {
        if (int rc = WriteRecord(s, stream, true, buf, have, now); rc != 0) return rc;
        have = 0;
      }
      if (have == 0 && end - i > kCriMaxLine) {
        if (int rc = WriteRecord(s, stream, true, data + i, kCriMaxLine, now); rc != 0) return rc;
        i += kCriMaxLine;
        continue;
      }
      size_t n = end - i < kCriMaxLine - have ? end - i : kCriMaxLine - have;
      if (nl && have == 0 && n == end - i) break;  // whole rest of the line: write it straight from data
      memcpy(buf + have, data + i, n);
      have += n;
      i += n;
    }
    if (!nl) break;
    int rc = have > 0 ? WriteRecord(s, stream, false, buf, have, now)
                      : WriteRecord(s, stream, false, data + i, end - i, now);
    if (rc != 0) return rc;
    have = 0;
    i = end + 1;
  }
  return 0;
}

int CriSinkFlush(CriSink* s, int stream, int64_t now) {
  if (stream != 1 && stream != 2) return -EINVAL;
  size_t& have = s->pending_len[stream];
  if (have == 0) return 0;
  int rc = WriteRecord(s, stream, false, s->pending[stream], have, now);
  have = 0;
  return rc;
}

void CriSinkClose(CriSink* s) {
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
}

}  // namespace skiff::kubelet
