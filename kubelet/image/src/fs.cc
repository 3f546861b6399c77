#include "fs.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::image {

absl::Status MkdirAll(const std::string& path, unsigned mode) {
  if (path.empty()) return absl::OkStatus();
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return absl::OkStatus();
    return absl::FailedPreconditionError(path + " exists and is not a directory");
  }
  std::string parent = Dirname(path);
  if (parent != path) RETURN_IF_ERROR(MkdirAll(parent, mode));
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return LastErrnoError("mkdir " + path);
  return absl::OkStatus();
}

static int RemoveEntry(const char* path, const struct stat*, int flag, struct FTW*) {
  int rc = (flag == FTW_DP) ? ::rmdir(path) : ::unlink(path);
  if (rc != 0 && errno != ENOENT) return errno;
  return 0;
}

absl::Status RemoveAll(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return LastErrnoError("lstat " + path);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return LastErrnoError("unlink " + path);
    return absl::OkStatus();
  }
  // Directories from a layer can be mode 0000 or read-only; as root that is
  // no obstacle, which is the only way the store is run for real.
  int rc = ::nftw(path.c_str(), RemoveEntry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  if (rc > 0) return ErrnoError(rc, "remove " + path);
  if (rc < 0) return LastErrnoError("walk " + path);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path, size_t limit) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return LastErrnoError("open " + path);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return LastErrnoError("read " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > limit) return absl::ResourceExhaustedError(path + " is larger than expected");
  }
  return out;
}

absl::Status FsyncPath(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return LastErrnoError("open " + path);
  if (::fsync(fd.get()) != 0) return LastErrnoError("fsync " + path);
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, const std::string& data, const std::string& tmp_dir) {
  std::string tmp = tmp_dir + "/" + UniqueName("write");
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd) return LastErrnoError("create " + tmp);
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::unlink(tmp.c_str());
        return ErrnoError(err, "write " + tmp);
      }
      off += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return ErrnoError(err, "fsync " + tmp);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError(err, "rename " + tmp + " to " + path);
  }
  return FsyncPath(Dirname(path));
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::string Dirname(const std::string& path) {
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

std::string UniqueName(const std::string& prefix) {
  static std::atomic<uint64_t> counter{0};
  return prefix + "." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
}

}  // namespace skiff::image
