#include "unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "digest.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::image {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<struct archive, ArchiveDeleter>;

// Feeds the decompressed bytes of `outer` (format "raw") to the tar reader
// while hashing them, so the diff id is computed in the same pass.
struct HashingSource {
  struct archive* outer;
  Sha256 hash;
  char buf[1 << 16];
  int64_t total = 0;
};

la_ssize_t ReadFromOuter(struct archive* inner, void* data, const void** out) {
  auto* src = static_cast<HashingSource*>(data);
  la_ssize_t n = archive_read_data(src->outer, src->buf, sizeof src->buf);
  if (n < 0) {
    archive_set_error(inner, archive_errno(src->outer) ? archive_errno(src->outer) : EIO, "%s",
                      archive_error_string(src->outer) ? archive_error_string(src->outer) : "read error");
    return -1;
  }
  src->hash.Update(src->buf, static_cast<size_t>(n));
  src->total += n;
  *out = src->buf;
  return n;
}

std::string ArchiveError(struct archive* a, const std::string& what) {
  const char* msg = archive_error_string(a);
  return what + ": " + (msg ? msg : "unknown libarchive error");
}

// Opens a directory beneath `root` without following any symlink and without
// leaving `root` (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS).
absl::StatusOr<UniqueFd> OpenBeneath(int root, const std::string& rel, int flags) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC | O_NOFOLLOW);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  int fd = static_cast<int>(::syscall(SYS_openat2, root, rel.empty() ? "." : rel.c_str(), &how, sizeof how));
  if (fd < 0) {
    if (errno == ELOOP || errno == EXDEV) {
      return absl::InvalidArgumentError("layer entry \"" + rel + "\" resolves through a symlink (path traversal refused)");
    }
    return LastErrnoError("open " + rel + " in layer");
  }
  return UniqueFd(fd);
}

std::string Join(const std::vector<std::string>& parts, size_t n) {
  std::string out;
  for (size_t i = 0; i < n && i < parts.size(); ++i) {
    if (i) out += "/";
    out += parts[i];
  }
  return out;
}

// Makes every directory of `parts[0..n)` exist beneath root (mode 0755 for
// ones the archive did not list; a later entry fixes their metadata).
absl::StatusOr<UniqueFd> EnsureParent(int root, const std::vector<std::string>& parts, size_t n) {
  UniqueFd cur(::fcntl(root, F_DUPFD_CLOEXEC, 0));
  if (!cur) return LastErrnoError("dup layer root");
  for (size_t i = 0; i < n; ++i) {
    if (::mkdirat(cur.get(), parts[i].c_str(), 0755) != 0 && errno != EEXIST) {
      return LastErrnoError("mkdir " + Join(parts, i + 1));
    }
    struct stat st;
    if (::fstatat(cur.get(), parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
      return absl::InvalidArgumentError("layer entry below \"" + Join(parts, i + 1) +
                                        "\" goes through a symlink (path traversal refused)");
    }
    ASSIGN_OR_RETURN(UniqueFd next, OpenBeneath(cur.get(), parts[i], O_PATH | O_DIRECTORY));
    cur = std::move(next);
  }
  return cur;
}

std::string FdPath(int dirfd, const std::string& name) {
  return "/proc/self/fd/" + std::to_string(dirfd) + (name.empty() ? "" : "/" + name);
}

absl::Status RemoveExisting(int dirfd, const std::string& name, bool keep_dir) {
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return LastErrnoError("stat " + name);
  }
  if (S_ISDIR(st.st_mode)) {
    if (keep_dir) return absl::OkStatus();
    if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0) {
      return LastErrnoError("replace directory " + name + " (not empty)");
    }
    return absl::OkStatus();
  }
  if (::unlinkat(dirfd, name.c_str(), 0) != 0) return LastErrnoError("unlink " + name);
  return absl::OkStatus();
}

absl::Status ApplyMetadata(int dirfd, const std::string& name, struct archive_entry* e, bool is_symlink,
                           const std::string& rel) {
  std::string path = FdPath(dirfd, name);
  bool root = ::geteuid() == 0;
  if (::fchownat(dirfd, name.empty() ? "" : name.c_str(), static_cast<uid_t>(archive_entry_uid(e)),
                 static_cast<gid_t>(archive_entry_gid(e)),
                 AT_SYMLINK_NOFOLLOW | (name.empty() ? AT_EMPTY_PATH : 0)) != 0) {
    if (root || errno != EPERM) return LastErrnoError("chown " + rel);
  }
  // xattrs before the mode: some (security.capability) are cleared by chown,
  // and setuid bits are cleared by chown too, so chmod comes last.
  const char* xname;
  const void* xval;
  size_t xsize;
  archive_entry_xattr_reset(e);
  while (archive_entry_xattr_next(e, &xname, &xval, &xsize) == ARCHIVE_OK) {
    // overlayfs' own xattrs (redirect, metacopy, opaque) steer how the kernel
    // reads the layer; only our whiteout translation may set them.
    if (std::string_view(xname).rfind("trusted.overlay.", 0) == 0) {
      log::Warn("image: ignoring overlay xattr from layer ", log::Field("path", rel), " ", log::Field("xattr", xname));
      continue;
    }
    if (::lsetxattr(path.c_str(), xname, xval, xsize, 0) != 0) {
      // user.* xattrs are not allowed on symlinks, and some filesystems lack
      // a namespace: the file is still usable, so say so and go on.
      if (errno == EPERM || errno == ENOTSUP) {
        log::Warn("image: cannot set xattr ", log::Field("path", rel), " ", log::Field("xattr", xname), " ",
                  log::Field("error", strerror(errno)));
        continue;
      }
      return LastErrnoError("set xattr " + std::string(xname) + " on " + rel);
    }
  }
  if (!is_symlink) {
    if (::fchmodat(dirfd, name.empty() ? "." : name.c_str(), archive_entry_mode(e) & 07777, 0) != 0) {
      return LastErrnoError("chmod " + rel);
    }
  }
  struct timespec ts[2];
  ts[0].tv_sec = archive_entry_atime_is_set(e) ? archive_entry_atime(e) : archive_entry_mtime(e);
  ts[0].tv_nsec = archive_entry_atime_is_set(e) ? archive_entry_atime_nsec(e) : archive_entry_mtime_nsec(e);
  ts[1].tv_sec = archive_entry_mtime(e);
  ts[1].tv_nsec = archive_entry_mtime_nsec(e);
  if (::utimensat(dirfd, name.empty() ? "." : name.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
    return LastErrnoError("set times on " + rel);
  }
  return absl::OkStatus();
}

absl::Status WriteRegular(struct archive* a, struct archive_entry* e, int dirfd, const std::string& name,
                          const std::string& rel, int64_t* bytes) {
  UniqueFd fd(::openat(dirfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return LastErrnoError("create " + rel);
  const void* buf;
  size_t size;
  la_int64_t offset;
  for (;;) {
    int r = archive_read_data_block(a, &buf, &size, &offset);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK) return absl::DataLossError(ArchiveError(a, "read " + rel));
    const char* p = static_cast<const char*>(buf);
    size_t done = 0;
    while (done < size) {
      ssize_t n = ::pwrite(fd.get(), p + done, size - done, offset + static_cast<off_t>(done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return LastErrnoError("write " + rel);
      }
      done += static_cast<size_t>(n);
    }
    *bytes += static_cast<int64_t>(size);
  }
  // A sparse file may end in a hole.
  if (archive_entry_size_is_set(e) && ::ftruncate(fd.get(), archive_entry_size(e)) != 0) {
    return LastErrnoError("truncate " + rel);
  }
  return absl::OkStatus();
}

struct DirTimes {
  std::string rel;
  struct timespec ts[2];
};

}  // namespace

absl::StatusOr<std::vector<std::string>> CleanArchivePath(const std::string& path) {
  if (!path.empty() && path[0] == '/') {
    return absl::InvalidArgumentError("layer entry \"" + path + "\" has an absolute path (refused)");
  }
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string comp = path.substr(start, end - start);
    if (comp == "..") {
      return absl::InvalidArgumentError("layer entry \"" + path + "\" contains \"..\" (path traversal refused)");
    }
    if (!comp.empty() && comp != ".") parts.push_back(comp);
    start = end + 1;
  }
  return parts;
}

absl::StatusOr<UnpackResult> UnpackLayer(const std::string& blob_path, const std::string& dest) {
  ArchivePtr outer(archive_read_new());
  archive_read_support_filter_all(outer.get());
  archive_read_support_format_raw(outer.get());
  if (archive_read_open_filename(outer.get(), blob_path.c_str(), 1 << 16) != ARCHIVE_OK) {
    return absl::DataLossError(ArchiveError(outer.get(), "open layer " + blob_path));
  }
  struct archive_entry* raw;
  if (archive_read_next_header(outer.get(), &raw) != ARCHIVE_OK) {
    return absl::DataLossError(ArchiveError(outer.get(), "read layer " + blob_path));
  }
  auto src = std::make_unique<HashingSource>();
  src->outer = outer.get();
  ArchivePtr in(archive_read_new());
  archive_read_support_format_tar(in.get());
  if (archive_read_open(in.get(), src.get(), nullptr, ReadFromOuter, nullptr) != ARCHIVE_OK) {
    return absl::DataLossError(ArchiveError(in.get(), "layer " + blob_path + " is not a tar archive"));
  }

  UniqueFd root(::open(dest.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return LastErrnoError("open " + dest);

  UnpackResult result;
  std::vector<DirTimes> dir_times;
  struct archive_entry* e;
  for (;;) {
    int r = archive_read_next_header(in.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      return absl::DataLossError(ArchiveError(in.get(), "layer " + blob_path));
    }
    ++result.entries;
    std::string raw_path = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
    ASSIGN_OR_RETURN(std::vector<std::string> parts, CleanArchivePath(raw_path));
    if (parts.empty()) {
      // The layer's own root ("./"): only its metadata.
      if (archive_entry_filetype(e) == AE_IFDIR) {
        UniqueFd d(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!d) return LastErrnoError("open " + dest);
        RETURN_IF_ERROR(ApplyMetadata(d.get(), "", e, false, "/"));
      }
      continue;
    }
    std::string name = parts.back();
    std::string rel = Join(parts, parts.size());
    ASSIGN_OR_RETURN(UniqueFd parent_path, EnsureParent(root.get(), parts, parts.size() - 1));
    // O_PATH fds are fine for *at() calls, but xattrs through /proc need a
    // real directory fd.
    UniqueFd parent(::openat(parent_path.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!parent) return LastErrnoError("open parent of " + rel);

    if (name == kOpaqueMarker) {
      const char y = 'y';
      if (::fsetxattr(parent.get(), "trusted.overlay.opaque", &y, 1, 0) != 0) {
        return LastErrnoError("mark " + Join(parts, parts.size() - 1) + " opaque");
      }
      continue;
    }
    if (name.rfind(kWhiteoutPrefix, 0) == 0) {
      std::string target = name.substr(kWhiteoutPrefix.size());
      // ".wh..wh.*" other than the opaque marker is AUFS bookkeeping.
      if (target.rfind(kWhiteoutPrefix, 0) == 0) continue;
      if (target.empty() || target == "." || target == "..") {
        return absl::InvalidArgumentError("layer entry \"" + raw_path + "\" is a malformed whiteout");
      }
      RETURN_IF_ERROR(RemoveExisting(parent.get(), target, false));
      if (::mknodat(parent.get(), target.c_str(), S_IFCHR | 0, makedev(0, 0)) != 0) {
        return LastErrnoError("create whiteout for " + Join(parts, parts.size() - 1) + "/" + target);
      }
      continue;
    }

    const char* hardlink = archive_entry_hardlink(e);
    auto type = archive_entry_filetype(e);
    if (hardlink) {
      ASSIGN_OR_RETURN(std::vector<std::string> tparts, CleanArchivePath(hardlink));
      if (tparts.empty()) return absl::InvalidArgumentError("hard link \"" + rel + "\" to the layer root");
      ASSIGN_OR_RETURN(UniqueFd tparent, EnsureParent(root.get(), tparts, tparts.size() - 1));
      struct stat st;
      if (::fstatat(tparent.get(), tparts.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return absl::InvalidArgumentError("hard link \"" + rel + "\" names \"" + hardlink +
                                          "\", which is not in the layer (refused)");
      }
      if (S_ISDIR(st.st_mode)) return absl::InvalidArgumentError("hard link \"" + rel + "\" to a directory");
      RETURN_IF_ERROR(RemoveExisting(parent.get(), name, false));
      if (::linkat(tparent.get(), tparts.back().c_str(), parent.get(), name.c_str(), 0) != 0) {
        return LastErrnoError("hard link " + rel + " -> " + hardlink);
      }
      continue;
    }

    switch (type) {
      case AE_IFDIR: {
        RETURN_IF_ERROR(RemoveExisting(parent.get(), name, true));
        if (::mkdirat(parent.get(), name.c_str(), 0700) != 0 && errno != EEXIST) {
          return LastErrnoError("mkdir " + rel);
        }
        RETURN_IF_ERROR(ApplyMetadata(parent.get(), name, e, false, rel));
        DirTimes dt{rel, {}};
        dt.ts[0].tv_sec = archive_entry_mtime(e);
        dt.ts[0].tv_nsec = archive_entry_mtime_nsec(e);
        dt.ts[1] = dt.ts[0];
        dir_times.push_back(dt);
        break;
      }
      case AE_IFREG:
        RETURN_IF_ERROR(RemoveExisting(parent.get(), name, false));
        RETURN_IF_ERROR(WriteRegular(in.get(), e, parent.get(), name, rel, &result.bytes));
        RETURN_IF_ERROR(ApplyMetadata(parent.get(), name, e, false, rel));
        break;
      case AE_IFLNK: {
        // A symlink's target is data; it may point anywhere because every
        // later write resolves paths with RESOLVE_NO_SYMLINKS beneath dest.
        const char* target = archive_entry_symlink(e);
        if (!target) return absl::InvalidArgumentError("symlink \"" + rel + "\" without a target");
        RETURN_IF_ERROR(RemoveExisting(parent.get(), name, false));
        if (::symlinkat(target, parent.get(), name.c_str()) != 0) return LastErrnoError("symlink " + rel);
        RETURN_IF_ERROR(ApplyMetadata(parent.get(), name, e, true, rel));
        break;
      }
      case AE_IFCHR:
      case AE_IFBLK:
      case AE_IFIFO: {
        RETURN_IF_ERROR(RemoveExisting(parent.get(), name, false));
        mode_t kind = type == AE_IFCHR ? S_IFCHR : type == AE_IFBLK ? S_IFBLK : S_IFIFO;
        if (::mknodat(parent.get(), name.c_str(), kind | 0600, archive_entry_rdev(e)) != 0) {
          if (::geteuid() != 0 && errno == EPERM) break;
          return LastErrnoError("mknod " + rel);
        }
        RETURN_IF_ERROR(ApplyMetadata(parent.get(), name, e, false, rel));
        break;
      }
      default:
        // Sockets and unknown types carry nothing a container can use.
        break;
    }
  }
  // Drain whatever follows the tar's end marker so the diff id covers the
  // whole uncompressed stream.
  char sink[1 << 16];
  for (;;) {
    la_ssize_t n = archive_read_data(outer.get(), sink, sizeof sink);
    if (n < 0) return absl::DataLossError(ArchiveError(outer.get(), "read layer " + blob_path));
    if (n == 0) break;
    src->hash.Update(sink, static_cast<size_t>(n));
  }
  // Directory times last: creating their children changed them.
  for (auto it = dir_times.rbegin(); it != dir_times.rend(); ++it) {
    auto dir = OpenBeneath(root.get(), it->rel, O_RDONLY | O_DIRECTORY);
    if (dir.ok()) ::futimens(dir->get(), it->ts);
  }
  result.diff_id = src->hash.Finish();
  return result;
}

}  // namespace skiff::image
