#include "image_fixture.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "digest.h"
#include "fs.h"
#include "skiff/common/status.h"

namespace skiff::image::testing {
namespace {

struct WriterDeleter {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};

absl::Status AddEntry(struct archive* a, const Entry& en) {
  std::unique_ptr<struct archive_entry, EntryDeleter> e(archive_entry_new());
  archive_entry_set_pathname(e.get(), en.path.c_str());
  archive_entry_set_uid(e.get(), en.uid);
  archive_entry_set_gid(e.get(), en.gid);
  archive_entry_set_mtime(e.get(), en.mtime, 0);
  switch (en.kind) {
    case Entry::kFile:
      archive_entry_set_filetype(e.get(), AE_IFREG);
      archive_entry_set_size(e.get(), static_cast<la_int64_t>(en.data.size()));
      break;
    case Entry::kDir:
      archive_entry_set_filetype(e.get(), AE_IFDIR);
      break;
    case Entry::kSymlink:
      archive_entry_set_filetype(e.get(), AE_IFLNK);
      archive_entry_set_symlink(e.get(), en.data.c_str());
      break;
    case Entry::kHardlink:
      archive_entry_set_filetype(e.get(), AE_IFREG);
      archive_entry_set_hardlink(e.get(), en.data.c_str());
      archive_entry_set_size(e.get(), 0);
      break;
    case Entry::kCharDev:
      archive_entry_set_filetype(e.get(), AE_IFCHR);
      archive_entry_set_rdevmajor(e.get(), en.rdev_major);
      archive_entry_set_rdevminor(e.get(), en.rdev_minor);
      break;
    case Entry::kFifo:
      archive_entry_set_filetype(e.get(), AE_IFIFO);
      break;
  }
  archive_entry_set_perm(e.get(), en.mode);
  for (const auto& [k, v] : en.xattrs) archive_entry_xattr_add_entry(e.get(), k.c_str(), v.data(), v.size());
  if (archive_write_header(a, e.get()) != ARCHIVE_OK) {
    return absl::InternalError(std::string("archive_write_header: ") + archive_error_string(a));
  }
  if (en.kind == Entry::kFile && !en.data.empty()) {
    if (archive_write_data(a, en.data.data(), en.data.size()) < 0) {
      return absl::InternalError(std::string("archive_write_data: ") + archive_error_string(a));
    }
  }
  return absl::OkStatus();
}

// Writes entries as a pax tar into memory, optionally compressed.
absl::StatusOr<std::string> TarBytes(const std::vector<Entry>& entries, Compression c) {
  std::unique_ptr<struct archive, WriterDeleter> a(archive_write_new());
  archive_write_set_format_pax_restricted(a.get());
  if (c == Compression::kGzip) archive_write_add_filter_gzip(a.get());
  if (c == Compression::kZstd) archive_write_add_filter_zstd(a.get());
  archive_write_set_bytes_in_last_block(a.get(), 1);
  size_t cap = 1 << 20;
  for (const auto& e : entries) cap += e.data.size() + 4096;
  std::string buf(cap, '\0');
  size_t used = 0;
  if (archive_write_open_memory(a.get(), buf.data(), buf.size(), &used) != ARCHIVE_OK) {
    return absl::InternalError("archive_write_open_memory");
  }
  for (const auto& e : entries) RETURN_IF_ERROR(AddEntry(a.get(), e));
  if (archive_write_close(a.get()) != ARCHIVE_OK) {
    return absl::InternalError(std::string("archive_write_close: ") + archive_error_string(a.get()));
  }
  buf.resize(used);
  return buf;
}

absl::Status WriteBytes(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  f.close();
  if (!f) return absl::InternalError("write " + path);
  return absl::OkStatus();
}

}  // namespace

std::string Sha256Hex(const std::string& bytes) { return DigestOfBytes(bytes).substr(7); }

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    for (size_t j = 0; j < 8 && i + j < n; ++j) out[i + j] = static_cast<char>(v >> (8 * j));
  }
  return out;
}

absl::StatusOr<Layer> BuildLayer(const std::vector<Entry>& entries, Compression c) {
  Layer l;
  ASSIGN_OR_RETURN(std::string plain, TarBytes(entries, Compression::kNone));
  l.diff_id = DigestOfBytes(plain);
  if (c == Compression::kNone) {
    l.blob = std::move(plain);
    l.media_type = "application/vnd.oci.image.layer.v1.tar";
  } else {
    ASSIGN_OR_RETURN(l.blob, TarBytes(entries, c));
    l.media_type = c == Compression::kGzip ? "application/vnd.oci.image.layer.v1.tar+gzip"
                                          : "application/vnd.oci.image.layer.v1.tar+zstd";
  }
  l.digest = DigestOfBytes(l.blob);
  return l;
}

std::vector<Entry> BusyboxRootfs() {
  std::ifstream f("/bin/busybox", std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  std::vector<Entry> e = {Dir("bin"), File("bin/busybox", ss.str(), 0755), Dir("etc"),
                          File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
                          File("etc/group", "root:x:0:\nnogroup:x:65534:\n"), Dir("tmp", 01777), Dir("root", 0700)};
  for (const char* applet : {"sh", "ls", "cat", "echo", "stat", "sleep", "id", "true", "false", "readlink", "test"}) {
    e.push_back(Symlink(std::string("bin/") + applet, "busybox"));
  }
  return e;
}

absl::StatusOr<BuiltImage> BuildImage(const std::vector<Layer>& layers, const ImageConfig& config,
                                      const std::string& architecture) {
  BuiltImage img;
  img.layers = layers;
  nlohmann::json diff_ids = nlohmann::json::array();
  for (const auto& l : layers) diff_ids.push_back(l.diff_id);
  nlohmann::json cfg = {{"architecture", architecture},
                        {"os", "linux"},
                        {"config",
                         {{"Entrypoint", config.entrypoint},
                          {"Cmd", config.cmd},
                          {"Env", config.env},
                          {"WorkingDir", config.working_dir},
                          {"User", config.user}}},
                        {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
  img.config = cfg.dump();
  img.config_digest = DigestOfBytes(img.config);
  nlohmann::json ls = nlohmann::json::array();
  for (const auto& l : layers) ls.push_back({{"mediaType", l.media_type}, {"digest", l.digest}, {"size", l.blob.size()}});
  nlohmann::json m = {{"schemaVersion", 2},
                      {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                      {"config",
                       {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                        {"digest", img.config_digest},
                        {"size", img.config.size()}}},
                      {"layers", ls}};
  img.manifest = m.dump();
  img.manifest_digest = DigestOfBytes(img.manifest);
  return img;
}

absl::Status WriteOciLayout(const std::string& dir, const std::vector<BuiltImage>& images,
                            const std::vector<std::string>& ref_names) {
  RETURN_IF_ERROR(MkdirAll(dir + "/blobs/sha256"));
  RETURN_IF_ERROR(WriteBytes(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})"));
  nlohmann::json manifests = nlohmann::json::array();
  for (size_t i = 0; i < images.size(); ++i) {
    const auto& img = images[i];
    auto put = [&](const std::string& bytes) { return WriteBytes(dir + "/blobs/sha256/" + Sha256Hex(bytes), bytes); };
    RETURN_IF_ERROR(put(img.manifest));
    RETURN_IF_ERROR(put(img.config));
    for (const auto& l : img.layers) RETURN_IF_ERROR(put(l.blob));
    nlohmann::json d = {{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                        {"digest", img.manifest_digest},
                        {"size", img.manifest.size()}};
    if (i < ref_names.size() && !ref_names[i].empty()) {
      d["annotations"] = {{"org.opencontainers.image.ref.name", ref_names[i]}};
    }
    manifests.push_back(d);
  }
  nlohmann::json index = {{"schemaVersion", 2}, {"manifests", manifests}};
  return WriteBytes(dir + "/index.json", index.dump());
}

absl::Status TarDirectory(const std::string& dir, const std::string& tar_path) {
  std::vector<Entry> entries;
  std::vector<std::string> stack = {""};
  while (!stack.empty()) {
    std::string rel = stack.back();
    stack.pop_back();
    std::string full = rel.empty() ? dir : dir + "/" + rel;
    DIR* d = ::opendir(full.c_str());
    if (!d) return LastErrnoError("opendir " + full);
    while (struct dirent* de = ::readdir(d)) {
      std::string n = de->d_name;
      if (n == "." || n == "..") continue;
      std::string r = rel.empty() ? n : rel + "/" + n;
      struct stat st;
      if (::lstat((dir + "/" + r).c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        entries.push_back(Dir(r));
        stack.push_back(r);
      } else {
        std::ifstream f(dir + "/" + r, std::ios::binary);
        std::stringstream ss;
        ss << f.rdbuf();
        entries.push_back(File(r, ss.str()));
      }
    }
    ::closedir(d);
  }
  return WriteTar(tar_path, entries);
}

absl::Status WriteTar(const std::string& tar_path, const std::vector<Entry>& entries) {
  ASSIGN_OR_RETURN(std::string bytes, TarBytes(entries, Compression::kNone));
  return WriteBytes(tar_path, bytes);
}

}  // namespace skiff::image::testing
