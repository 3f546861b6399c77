// Import of image archives for air-gapped nodes: an OCI image layout in a tar
// (oci-layout, index.json, blobs/sha256/...) or a `docker save` tar
// (manifest.json, <config>.json, <id>/layer.tar).
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "digest.h"
#include "fs.h"
#include "manifest.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "store_impl.h"
#include "unpack.h"

namespace skiff::image {
namespace {

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// An entry's clean path inside the archive, "a/b/c".
absl::StatusOr<std::string> CleanKey(const std::string& raw) {
  auto parts = CleanArchivePath(raw);
  if (!parts.ok()) {
    return absl::InvalidArgumentError("archive entry \"" + raw + "\" escapes the archive (path traversal refused)");
  }
  std::string key;
  for (const auto& p : *parts) key += (key.empty() ? "" : "/") + p;
  return key;
}

// Resolves a symlink target relative to the link's directory, refusing one
// that leaves the archive.
absl::StatusOr<std::string> ResolveLink(const std::string& link_key, const std::string& target) {
  if (!target.empty() && target[0] == '/') {
    return absl::InvalidArgumentError("archive symlink \"" + link_key + "\" is absolute (refused)");
  }
  std::vector<std::string> parts;
  std::string dir = link_key.find('/') == std::string::npos ? "" : Dirname(link_key);
  std::string joined = dir.empty() ? target : dir + "/" + target;
  size_t s = 0;
  while (s <= joined.size()) {
    size_t e = joined.find('/', s);
    if (e == std::string::npos) e = joined.size();
    std::string c = joined.substr(s, e - s);
    s = e + 1;
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      if (parts.empty()) {
        return absl::InvalidArgumentError("archive symlink \"" + link_key + "\" points outside the archive (refused)");
      }
      parts.pop_back();
      continue;
    }
    parts.push_back(c);
  }
  std::string key;
  for (const auto& p : parts) key += (key.empty() ? "" : "/") + p;
  return key;
}

struct Extracted {
  std::map<std::string, std::string> small;  // json documents by key
  std::map<std::string, std::string> files;  // key -> file under the work dir
  std::map<std::string, std::string> links;  // key -> target key
};

absl::Status CopyEntry(struct archive* a, const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) return LastErrnoError("create " + path);
  char buf[1 << 16];
  for (;;) {
    la_ssize_t n = archive_read_data(a, buf, sizeof buf);
    if (n < 0) return absl::DataLossError(std::string("read archive: ") + archive_error_string(a));
    if (n == 0) break;
    ssize_t off = 0;
    while (off < n) {
      ssize_t w = ::write(fd.get(), buf + off, static_cast<size_t>(n - off));
      if (w < 0) {
        if (errno == EINTR) continue;
        return LastErrnoError("write " + path);
      }
      off += w;
    }
  }
  return absl::OkStatus();
}

std::string LayerMediaType(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  unsigned char m[4] = {0, 0, 0, 0};
  if (fd && ::read(fd.get(), m, 4) == 4) {
    if (m[0] == 0x1f && m[1] == 0x8b) return "application/vnd.oci.image.layer.v1.tar+gzip";
    if (m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd) return "application/vnd.oci.image.layer.v1.tar+zstd";
  }
  return "application/vnd.oci.image.layer.v1.tar";
}

// A full reference from an archive's name for an image, or "" when it gives
// only a tag and no fallback name was supplied.
std::string NameFor(const std::string& annotated, const std::string& fallback) {
  auto looks_full = [](const std::string& s) { return s.find('/') != std::string::npos || s.find(':') != std::string::npos; };
  if (!annotated.empty() && looks_full(annotated)) {
    auto r = ParseReference(annotated);
    if (r.ok()) return r->String();
  }
  if (fallback.empty()) return "";
  if (!annotated.empty()) {
    // A bare tag (skopeo's oci:DIR:TAG) applies to the fallback repository.
    auto fb = ParseReference(fallback);
    if (fb.ok() && fallback.find(':', fallback.rfind('/') == std::string::npos ? 0 : fallback.rfind('/')) == std::string::npos) {
      auto r = ParseReference(fallback + ":" + annotated);
      if (r.ok()) return r->String();
    }
  }
  auto r = ParseReference(fallback);
  return r.ok() ? r->String() : "";
}

}  // namespace

absl::StatusOr<std::vector<Image>> Store::Import(const std::string& archive_path, const std::string& name) {
  Impl& s = *impl_;
  if (!name.empty()) {
    auto r = ParseReference(name);
    if (!r.ok()) return WithReason(r.status(), "InvalidImageName");
  }
  ASSIGN_OR_RETURN(FileLock store_lock, s.LockStore(false));
  std::string work = s.tmp_ + "/" + UniqueName("import");
  if (::mkdir(work.c_str(), 0700) != 0) return LastErrnoError("mkdir " + work);
  struct Cleanup {
    std::string dir;
    ~Cleanup() { (void)RemoveAll(dir); }
  } cleanup{work};

  std::unique_ptr<struct archive, ArchiveDeleter> a(archive_read_new());
  archive_read_support_filter_all(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open_filename(a.get(), archive_path.c_str(), 1 << 16) != ARCHIVE_OK) {
    return absl::InvalidArgumentError("open image archive " + archive_path + ": " + archive_error_string(a.get()));
  }
  Extracted x;
  int counter = 0;
  struct archive_entry* e;
  for (;;) {
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      return absl::InvalidArgumentError("read image archive " + archive_path + ": " + archive_error_string(a.get()));
    }
    const char* raw = archive_entry_pathname(e);
    ASSIGN_OR_RETURN(std::string key, CleanKey(raw ? raw : ""));
    if (const char* hl = archive_entry_hardlink(e)) {
      ASSIGN_OR_RETURN(std::string target, CleanKey(hl));
      x.links[key] = target;
      continue;
    }
    auto type = archive_entry_filetype(e);
    if (type == AE_IFLNK) {
      ASSIGN_OR_RETURN(std::string target, ResolveLink(key, archive_entry_symlink(e) ? archive_entry_symlink(e) : ""));
      x.links[key] = target;
      continue;
    }
    if (type != AE_IFREG) continue;
    bool is_json = key == "index.json" || key == "oci-layout" || key == "manifest.json" || key == "repositories" ||
                   (key.size() > 5 && key.substr(key.size() - 5) == ".json" && key.find('/') == std::string::npos);
    if (is_json && archive_entry_size(e) < (16 << 20)) {
      std::string body;
      char buf[1 << 16];
      for (;;) {
        la_ssize_t n = archive_read_data(a.get(), buf, sizeof buf);
        if (n < 0) return absl::DataLossError("read " + key + ": " + archive_error_string(a.get()));
        if (n == 0) break;
        body.append(buf, static_cast<size_t>(n));
      }
      x.small[key] = std::move(body);
      continue;
    }
    std::string path = work + "/f" + std::to_string(counter++);
    RETURN_IF_ERROR(CopyEntry(a.get(), path));
    x.files[key] = path;
  }

  auto resolve = [&](std::string key) {
    for (int i = 0; i < 8 && x.links.count(key); ++i) key = x.links[key];
    return key;
  };
  // Moves (or, for a file named twice, re-finds) a blob into the store.
  std::map<std::string, std::string> installed;  // key -> digest
  auto install_file = [&](const std::string& key_in, const std::string& expected) -> absl::StatusOr<std::string> {
    std::string key = resolve(key_in);
    if (auto it = installed.find(key); it != installed.end()) return it->second;
    auto f = x.files.find(key);
    std::string digest = expected;
    if (f == x.files.end()) {
      auto sm = x.small.find(key);
      if (sm == x.small.end()) {
        if (!expected.empty() && s.HasBlob(expected)) return expected;
        return absl::InvalidArgumentError("image archive lacks " + key);
      }
      if (digest.empty()) digest = DigestOfBytes(sm->second);
      RETURN_IF_ERROR(s.PutBlob(digest, sm->second));
    } else {
      if (digest.empty()) {
        ASSIGN_OR_RETURN(digest, DigestOfFile(f->second));
      }
      if (s.HasBlob(digest)) {
        ASSIGN_OR_RETURN(std::string got, DigestOfFile(f->second));
        if (got != digest) return absl::DataLossError("archive blob " + key + " does not match its digest " + digest);
      } else {
        RETURN_IF_ERROR(Annotate(s.InstallBlobFile(f->second, digest), "archive entry " + key));
      }
    }
    installed[key] = digest;
    return digest;
  };
  auto blob_key = [](const std::string& digest) { return "blobs/sha256/" + digest.substr(7); };

  // (name, manifest digest) pairs to finish.
  std::vector<std::pair<std::string, std::string>> images;
  if (x.small.count("index.json")) {
    auto idx = ParseManifest(x.small["index.json"], kOciIndex);
    if (!idx.ok()) return Annotate(idx.status(), "index.json");
    for (const auto& d : idx->manifests) {
      std::string digest = d.digest;
      ASSIGN_OR_RETURN(std::string got, install_file(blob_key(digest), digest));
      (void)got;
      ASSIGN_OR_RETURN(std::string body, s.ReadBlob(digest));
      ASSIGN_OR_RETURN(ParsedManifest m, ParseManifest(body, d.media_type));
      if (m.is_index) {
        ASSIGN_OR_RETURN(Descriptor p, SelectPlatform(m, "linux", "amd64"));
        RETURN_IF_ERROR(install_file(blob_key(p.digest), p.digest).status());
        digest = p.digest;
        ASSIGN_OR_RETURN(body, s.ReadBlob(digest));
        ASSIGN_OR_RETURN(m, ParseManifest(body, p.media_type));
        if (m.is_index) return absl::InvalidArgumentError("nested image index in archive");
      }
      RETURN_IF_ERROR(install_file(blob_key(m.config.digest), m.config.digest).status());
      for (const auto& l : m.layers) RETURN_IF_ERROR(install_file(blob_key(l.digest), l.digest).status());
      std::string annotated;
      if (auto it = d.annotations.find("io.containerd.image.name"); it != d.annotations.end()) annotated = it->second;
      else if (auto it2 = d.annotations.find("org.opencontainers.image.ref.name"); it2 != d.annotations.end()) annotated = it2->second;
      images.emplace_back(NameFor(annotated, name), digest);
    }
  } else if (x.small.count("manifest.json")) {
    auto j = nlohmann::json::parse(x.small["manifest.json"], nullptr, false);
    if (j.is_discarded() || !j.is_array()) return absl::InvalidArgumentError("docker archive: manifest.json is not a list");
    for (const auto& entry : j) {
      if (!entry.is_object() || !entry.contains("Config") || !entry["Config"].is_string() || !entry.contains("Layers") ||
          !entry["Layers"].is_array()) {
        return absl::InvalidArgumentError("docker archive: malformed manifest.json entry");
      }
      ASSIGN_OR_RETURN(std::string cfg_key, CleanKey(entry["Config"].get<std::string>()));
      ASSIGN_OR_RETURN(std::string cfg_digest, install_file(cfg_key, ""));
      ASSIGN_OR_RETURN(std::string cfg_body, s.ReadBlob(cfg_digest));
      nlohmann::json manifest = {{"schemaVersion", 2},
                                 {"mediaType", kOciManifest},
                                 {"config", {{"mediaType", kOciConfig}, {"digest", cfg_digest}, {"size", cfg_body.size()}}},
                                 {"layers", nlohmann::json::array()}};
      for (const auto& l : entry["Layers"]) {
        if (!l.is_string()) return absl::InvalidArgumentError("docker archive: malformed layer name");
        ASSIGN_OR_RETURN(std::string key, CleanKey(l.get<std::string>()));
        key = resolve(key);
        auto f = x.files.find(key);
        std::string media = f != x.files.end() ? LayerMediaType(f->second) : "application/vnd.oci.image.layer.v1.tar";
        ASSIGN_OR_RETURN(std::string digest, install_file(key, ""));
        struct stat st;
        if (::stat(s.BlobPath(digest).c_str(), &st) != 0) return LastErrnoError("stat blob " + digest);
        manifest["layers"].push_back({{"mediaType", media}, {"digest", digest}, {"size", st.st_size}});
      }
      std::string body = manifest.dump();
      std::string digest = DigestOfBytes(body);
      RETURN_IF_ERROR(s.PutBlob(digest, body));
      std::vector<std::string> tags;
      if (entry.contains("RepoTags") && entry["RepoTags"].is_array()) {
        for (const auto& t : entry["RepoTags"]) {
          if (t.is_string()) tags.push_back(t.get<std::string>());
        }
      }
      if (tags.empty()) {
        images.emplace_back(NameFor("", name), digest);
      } else {
        for (const auto& t : tags) {
          auto r = ParseReference(t);
          images.emplace_back(r.ok() ? r->String() : NameFor("", name), digest);
        }
      }
    }
  } else {
    return absl::InvalidArgumentError(archive_path + " is neither an OCI image layout (index.json) nor a docker save archive (manifest.json)");
  }
  if (images.empty()) return absl::InvalidArgumentError(archive_path + " names no image");

  std::vector<Image> out;
  for (const auto& [img_name, digest] : images) {
    ASSIGN_OR_RETURN(std::string body, s.ReadBlob(digest));
    ASSIGN_OR_RETURN(ParsedManifest m, ParseManifest(body));
    ASSIGN_OR_RETURN(std::string cfg_body, s.ReadBlob(m.config.digest));
    ASSIGN_OR_RETURN(ParsedConfig cfg, ParseConfig(cfg_body));
    if (cfg.diff_ids.size() != m.layers.size()) {
      return absl::DataLossError("archive image " + digest + ": config lists " + std::to_string(cfg.diff_ids.size()) +
                                 " diff ids for " + std::to_string(m.layers.size()) + " layers");
    }
    for (size_t i = 0; i < m.layers.size(); ++i) {
      RETURN_IF_ERROR(s.EnsureLayer(cfg.diff_ids[i], m.layers[i].digest));
    }
    // An image without any name is kept under its digest.
    std::string ref_name = img_name.empty() ? digest : img_name;
    RETURN_IF_ERROR(s.WriteRef(ref_name, digest));
    log::Info("image: imported ", log::Field("image", ref_name), " ", log::Field("digest", digest));
    ASSIGN_OR_RETURN(Image img, s.LoadImage(digest, img_name));
    out.push_back(std::move(img));
  }
  return out;
}

absl::StatusOr<std::vector<Image>> Store::ImportDirectory(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return LastErrnoError("open image directory " + dir);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    for (const char* ext : {".tar", ".tar.gz", ".tgz", ".tar.zst"}) {
      std::string x = ext;
      if (n.size() > x.size() && n.compare(n.size() - x.size(), x.size(), x) == 0) {
        names.push_back(n);
        break;
      }
    }
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  std::vector<Image> out;
  for (const auto& n : names) {
    auto imgs = Import(dir + "/" + n);
    if (!imgs.ok()) {
      log::Error("image: cannot import ", log::Field("archive", dir + "/" + n), " ",
                 log::Field("error", std::string(imgs.status().message())));
      continue;
    }
    out.insert(out.end(), imgs->begin(), imgs->end());
  }
  return out;
}

}  // namespace skiff::image
