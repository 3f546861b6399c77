#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/cord.h"
#include "digest.h"
#include "fs.h"
#include "manifest.h"
#include "registry.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "store_impl.h"
#include "unpack.h"

#include <curl/curl.h>

namespace skiff::image {
namespace {

constexpr char kReasonPayload[] = "type.skiff.dev/image.reason";

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  return out;
}

std::string EscapeName(const std::string& name) {
  std::string out;
  for (char c : name) {
    if (c == '/') out += "%2F";
    else if (c == '%') out += "%25";
    else out.push_back(c);
  }
  return out;
}

std::string UnescapeName(const std::string& name) {
  std::string out;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '%' && i + 2 < name.size()) {
      std::string code = name.substr(i + 1, 2);
      out.push_back(code == "2F" ? '/' : '%');
      i += 2;
    } else {
      out.push_back(name[i]);
    }
  }
  return out;
}

// Directories used as overlay lower layers by any mount of this machine.
std::set<std::string> MountedLowerDirs() {
  std::set<std::string> out;
  auto info = ReadFile("/proc/self/mountinfo", 64 << 20);
  if (!info.ok()) return out;
  size_t pos = 0;
  while (pos < info->size()) {
    size_t end = info->find('\n', pos);
    if (end == std::string::npos) end = info->size();
    std::string line = info->substr(pos, end - pos);
    pos = end + 1;
    auto lo = line.find("lowerdir=");
    if (line.find(" - overlay ") == std::string::npos || lo == std::string::npos) continue;
    std::string dirs = line.substr(lo + 9);
    dirs = dirs.substr(0, dirs.find_first_of(", "));
    size_t s = 0;
    while (s <= dirs.size()) {
      size_t c = dirs.find(':', s);
      if (c == std::string::npos) c = dirs.size();
      out.insert(dirs.substr(s, c - s));
      s = c + 1;
    }
  }
  return out;
}

absl::StatusOr<bool> IsMountPoint(const std::string& path) {
  struct stat a, b;
  if (::stat(path.c_str(), &a) != 0) {
    if (errno == ENOENT) return false;
    return LastErrnoError("stat " + path);
  }
  std::string parent = path + "/..";
  if (::stat(parent.c_str(), &b) != 0) return LastErrnoError("stat " + parent);
  return a.st_dev != b.st_dev || a.st_ino == b.st_ino;
}

absl::StatusOr<int> DiskUsedPercent(const std::string& path) {
  struct statvfs s;
  if (::statvfs(path.c_str(), &s) != 0) return LastErrnoError("statvfs " + path);
  uint64_t used = s.f_blocks - s.f_bfree;
  uint64_t denom = used + s.f_bavail;
  if (denom == 0) return 0;
  return static_cast<int>((used * 100 + denom - 1) / denom);
}

std::once_flag curl_once;

absl::Status MountOverlayLayerByLayer(const std::vector<std::string>& lowers, const std::string& upper,
                                      const std::string& work, const std::string& target) {
  UniqueFd fs(::fsopen("overlay", FSOPEN_CLOEXEC));
  if (!fs) return LastErrnoError("fsopen overlay");
  for (const auto& l : lowers) {
    if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, "lowerdir+", l.c_str(), 0) != 0) {
      if (errno == EINVAL) {
        return absl::ResourceExhaustedError("image has " + std::to_string(lowers.size()) +
                                            " layers, more than one overlay mount option string holds, and this "
                                            "kernel has no overlay lowerdir+ (Linux >= 6.8)");
      }
      return LastErrnoError("overlay lowerdir+ " + l);
    }
  }
  if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, "upperdir", upper.c_str(), 0) != 0) {
    return LastErrnoError("overlay upperdir " + upper);
  }
  if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, "workdir", work.c_str(), 0) != 0) {
    return LastErrnoError("overlay workdir " + work);
  }
  if (::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) return LastErrnoError("create overlay");
  UniqueFd mnt(::fsmount(fs.get(), FSMOUNT_CLOEXEC, 0));
  if (!mnt) return LastErrnoError("fsmount overlay");
  if (::move_mount(mnt.get(), "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    return LastErrnoError("move_mount overlay to " + target);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WithReason(absl::Status st, const char* reason) {
  st.SetPayload(kReasonPayload, absl::Cord(reason));
  return st;
}

std::string KubeletReason(const absl::Status& st) {
  auto p = st.GetPayload(kReasonPayload);
  if (p) return std::string(*p);
  return "ErrImagePull";
}

absl::StatusOr<FileLock> FileLock::Acquire(const std::string& path, bool exclusive, bool nonblocking) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return LastErrnoError("open lock " + path);
  int op = (exclusive ? LOCK_EX : LOCK_SH) | (nonblocking ? LOCK_NB : 0);
  while (::flock(fd.get(), op) != 0) {
    if (errno == EINTR) continue;
    return LastErrnoError("lock " + path);
  }
  return FileLock(std::move(fd));
}

Store::Impl::Impl(std::string root, Options options)
    : root_(std::move(root)),
      options_(std::move(options)),
      blobs_(root_ + "/blobs/sha256"),
      layers_(root_ + "/layers"),
      refs_(root_ + "/refs"),
      tmp_(root_ + "/tmp") {}

std::string Store::Impl::BlobPath(const std::string& digest) const {
  auto hex = DigestHex(digest);
  return blobs_ + "/" + (hex.ok() ? *hex : "invalid");
}

bool Store::Impl::HasBlob(const std::string& digest) const { return DigestHex(digest).ok() && Exists(BlobPath(digest)); }

absl::StatusOr<std::string> Store::Impl::ReadBlob(const std::string& digest) const {
  RETURN_IF_ERROR(DigestHex(digest).status());
  return ReadFile(BlobPath(digest));
}

absl::Status Store::Impl::PutBlob(const std::string& digest, const std::string& bytes) {
  RETURN_IF_ERROR(DigestHex(digest).status());
  std::string got = DigestOfBytes(bytes);
  if (got != digest) return absl::DataLossError("blob digest mismatch: expected " + digest + ", got " + got);
  if (HasBlob(digest)) return absl::OkStatus();
  return WriteFileAtomic(BlobPath(digest), bytes, tmp_);
}

absl::Status Store::Impl::InstallBlobFile(const std::string& path, const std::string& digest, bool verified) {
  RETURN_IF_ERROR(DigestHex(digest).status());
  if (!verified) {
    ASSIGN_OR_RETURN(std::string got, DigestOfFile(path));
    if (got != digest) return absl::DataLossError("blob digest mismatch: expected " + digest + ", got " + got);
    RETURN_IF_ERROR(FsyncPath(path));
  }
  if (::rename(path.c_str(), BlobPath(digest).c_str()) != 0) return LastErrnoError("rename " + path);
  return FsyncPath(blobs_);
}

std::string Store::Impl::LayerDir(const std::string& diff_id) const {
  auto hex = DigestHex(diff_id);
  return layers_ + "/" + (hex.ok() ? *hex : "invalid");
}

absl::Status Store::Impl::EnsureLayer(const std::string& diff_id, const std::string& blob_digest) {
  ASSIGN_OR_RETURN(std::string hex, DigestHex(diff_id));
  std::string dir = LayerDir(diff_id);
  if (Exists(dir)) return absl::OkStatus();
  ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(tmp_ + "/layer-" + hex + ".lock", true));
  if (Exists(dir)) return absl::OkStatus();
  std::string work = tmp_ + "/" + UniqueName("unpack-" + hex.substr(0, 12));
  if (::mkdir(work.c_str(), 0755) != 0) return LastErrnoError("mkdir " + work);
  auto cleanup = [&] { (void)RemoveAll(work); };
  auto result = UnpackLayer(BlobPath(blob_digest), work);
  if (!result.ok()) {
    cleanup();
    return Annotate(result.status(), "unpack layer " + blob_digest);
  }
  if (result->diff_id != diff_id) {
    cleanup();
    return absl::DataLossError("layer " + blob_digest + " unpacks to diff id " + result->diff_id +
                               " but the image config says " + diff_id);
  }
  // Everything under `work` reaches the disk before the rename publishes it.
  {
    UniqueFd fd(::open(work.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd || ::syncfs(fd.get()) != 0) {
      cleanup();
      return LastErrnoError("syncfs " + work);
    }
  }
  if (::rename(work.c_str(), dir.c_str()) != 0) {
    cleanup();
    return LastErrnoError("rename " + work + " to " + dir);
  }
  layers_unpacked_.fetch_add(1);
  log::Info("image: layer unpacked ", log::Field("diff_id", diff_id), " ", log::Field("entries", result->entries),
            " ", log::Field("bytes", result->bytes));
  return FsyncPath(layers_);
}

std::string Store::Impl::RefPath(const std::string& name) const { return refs_ + "/" + EscapeName(name); }

absl::Status Store::Impl::WriteRef(const std::string& name, const std::string& manifest_digest) {
  return WriteFileAtomic(RefPath(name), manifest_digest + "\n", tmp_);
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Store::Impl::Refs() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& f : ListDir(refs_)) {
    auto body = ReadFile(refs_ + "/" + f, 4096);
    if (!body.ok()) continue;
    std::string d = body->substr(0, body->find('\n'));
    if (!DigestHex(d).ok()) continue;
    out.emplace_back(UnescapeName(f), d);
  }
  return out;
}

absl::StatusOr<Image> Store::Impl::LoadImage(const std::string& manifest_digest, const std::string& name) const {
  auto body = ReadBlob(manifest_digest);
  if (!body.ok()) return absl::NotFoundError("image " + (name.empty() ? manifest_digest : name) + " is not in the store");
  ASSIGN_OR_RETURN(ParsedManifest m, ParseManifest(*body));
  if (m.is_index) return absl::DataLossError("stored manifest " + manifest_digest + " is an index");
  ASSIGN_OR_RETURN(std::string cfg_body, ReadBlob(m.config.digest));
  ASSIGN_OR_RETURN(ParsedConfig cfg, ParseConfig(cfg_body));
  if (cfg.diff_ids.size() != m.layers.size()) {
    return absl::DataLossError("image " + manifest_digest + ": config lists " + std::to_string(cfg.diff_ids.size()) +
                               " diff ids for " + std::to_string(m.layers.size()) + " layers");
  }
  Image img;
  img.ref = name;
  img.digest = manifest_digest;
  img.config_digest = m.config.digest;
  img.config = std::move(cfg.config);
  for (size_t i = 0; i < m.layers.size(); ++i) {
    std::string dir = LayerDir(cfg.diff_ids[i]);
    if (!Exists(dir)) return absl::NotFoundError("image " + manifest_digest + ": layer " + cfg.diff_ids[i] + " is missing");
    img.layer_dirs.push_back(dir);
    img.size_bytes += m.layers[i].size;
  }
  return img;
}

absl::StatusOr<FileLock> Store::Impl::LockStore(bool exclusive) const {
  return FileLock::Acquire(root_ + "/.lock", exclusive);
}

absl::Status Store::Impl::Prune() {
  std::set<std::string> keep_blobs, keep_layers;
  ASSIGN_OR_RETURN(auto refs, Refs());
  for (const auto& [name, digest] : refs) {
    keep_blobs.insert(*DigestHex(digest));
    auto body = ReadBlob(digest);
    if (!body.ok()) continue;
    auto m = ParseManifest(*body);
    if (!m.ok() || m->is_index) continue;
    keep_blobs.insert(*DigestHex(m->config.digest));
    for (const auto& l : m->layers) keep_blobs.insert(*DigestHex(l.digest));
    auto cfg_body = ReadBlob(m->config.digest);
    if (!cfg_body.ok()) continue;
    auto cfg = ParseConfig(*cfg_body);
    if (!cfg.ok()) continue;
    for (const auto& d : cfg->diff_ids) keep_layers.insert(*DigestHex(d));
  }
  for (const auto& dir : MountedLowerDirs()) {
    if (Dirname(dir) == layers_) keep_layers.insert(dir.substr(layers_.size() + 1));
  }
  for (const auto& f : ListDir(blobs_)) {
    if (keep_blobs.count(f)) continue;
    if (::unlink((blobs_ + "/" + f).c_str()) != 0) return LastErrnoError("remove blob " + f);
  }
  for (const auto& f : ListDir(layers_)) {
    if (keep_layers.count(f)) continue;
    log::Info("image: removing unused layer ", log::Field("layer", f));
    // Rename first, so a crash half-way through never leaves a partial
    // layer under its real name.
    std::string doomed = tmp_ + "/" + UniqueName("rm-" + f.substr(0, 12));
    if (::rename((layers_ + "/" + f).c_str(), doomed.c_str()) != 0) return LastErrnoError("remove layer " + f);
    RETURN_IF_ERROR(RemoveAll(doomed));
  }
  // Leftovers of crashed unpacks, imports and writes (partial downloads stay
  // for Range resume; locks are tiny).
  for (const auto& f : ListDir(tmp_)) {
    if (f.size() > 8 && (f.rfind(".partial") == f.size() - 8 || f.rfind(".lock") == f.size() - 5)) continue;
    RETURN_IF_ERROR(RemoveAll(tmp_ + "/" + f));
  }
  return absl::OkStatus();
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& root_in, const Options& options) {
  std::call_once(curl_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  std::string root = root_in.empty() ? kDefaultRoot : root_in;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  auto impl = std::make_unique<Impl>(root, options);
  for (const auto& d : {root, impl->blobs_, impl->layers_, impl->refs_, impl->tmp_}) {
    RETURN_IF_ERROR(MkdirAll(d, 0700));
  }
  // A crashed run may have left unpack/import directories; clean them when no
  // other process is using the store.
  auto lock = FileLock::Acquire(root + "/.lock", true, /*nonblocking=*/true);
  if (lock.ok()) {
    for (const auto& f : ListDir(impl->tmp_)) {
      if (f.rfind("unpack-", 0) == 0 || f.rfind("import.", 0) == 0 || f.rfind("write.", 0) == 0 ||
          f.rfind("rm-", 0) == 0) {
        RETURN_IF_ERROR(RemoveAll(impl->tmp_ + "/" + f));
      }
    }
  }
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

const std::string& Store::root() const { return impl_->root_; }

StoreStats Store::Stats() const {
  return StoreStats{impl_->blobs_fetched_.load(), impl_->bytes_fetched_.load(), impl_->layers_unpacked_.load()};
}

absl::StatusOr<std::map<std::string, RegistryAuth>> ParseDockerConfig(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("registry credentials are not a JSON object");
  std::map<std::string, RegistryAuth> out;
  // config.json has {"auths": {...}}; the old .dockercfg is the map itself.
  const nlohmann::json* auths = &j;
  if (j.contains("auths") && j["auths"].is_object()) auths = &j["auths"];
  for (auto it = auths->begin(); it != auths->end(); ++it) {
    if (!it.value().is_object()) continue;
    const auto& v = it.value();
    RegistryAuth a;
    if (v.contains("username") && v["username"].is_string()) a.username = v["username"];
    if (v.contains("password") && v["password"].is_string()) a.password = v["password"];
    if (v.contains("identitytoken") && v["identitytoken"].is_string()) a.identity_token = v["identitytoken"];
    if (v.contains("auth") && v["auth"].is_string()) {
      ASSIGN_OR_RETURN(std::string decoded, Base64Decode(v["auth"].get<std::string>()));
      auto colon = decoded.find(':');
      if (colon == std::string::npos) return absl::InvalidArgumentError("credentials for " + it.key() + ": auth is not user:password");
      a.username = decoded.substr(0, colon);
      a.password = decoded.substr(colon + 1);
    }
    // Keys may be URLs ("https://index.docker.io/v1/"); keep the host.
    std::string host = it.key();
    if (auto p = host.find("://"); p != std::string::npos) host = host.substr(p + 3);
    host = host.substr(0, host.find('/'));
    if (host == "index.docker.io" || host == "registry-1.docker.io") host = "docker.io";
    out[host] = a;
  }
  return out;
}

namespace {

std::optional<RegistryAuth> FindAuth(const std::string& registry, const PullOptions& po, const Options& o) {
  if (auto it = po.auths.find(registry); it != po.auths.end()) return it->second;
  if (o.credentials_file.empty()) return std::nullopt;
  auto text = ReadFile(o.credentials_file, 1 << 20);
  if (!text.ok()) {
    log::Warn("image: cannot read credentials ", log::Field("file", o.credentials_file), " ",
              log::Field("error", std::string(text.status().message())));
    return std::nullopt;
  }
  auto auths = ParseDockerConfig(*text);
  if (!auths.ok()) return std::nullopt;
  if (auto it = auths->find(registry); it != auths->end()) return it->second;
  return std::nullopt;
}

}  // namespace

absl::StatusOr<Image> Store::Pull(const std::string& input, const PullOptions& po) {
  auto parsed = ParseReference(input);
  if (!parsed.ok()) return WithReason(parsed.status(), "InvalidImageName");
  const Reference ref = *parsed;
  const std::string name = ref.String();
  Impl& s = *impl_;
  RegistryClient client(ref, s.options_, FindAuth(ref.registry, po, s.options_));
  ASSIGN_OR_RETURN(FileLock store_lock, s.LockStore(false));
  log::Info("image: pulling ", log::Field("image", name));

  ASSIGN_OR_RETURN(FetchedManifest fm, client.GetManifest(ref.digest.empty() ? ref.tag : ref.digest));
  ASSIGN_OR_RETURN(ParsedManifest m, ParseManifest(fm.body, fm.media_type));
  if (m.is_index) {
    ASSIGN_OR_RETURN(Descriptor d, SelectPlatform(m, po.os, po.architecture));
    RETURN_IF_ERROR(s.PutBlob(fm.digest, fm.body));
    ASSIGN_OR_RETURN(fm, client.GetManifest(d.digest));
    ASSIGN_OR_RETURN(m, ParseManifest(fm.body, fm.media_type));
    if (m.is_index) return absl::DataLossError("image index " + d.digest + " points at another index");
  }
  RETURN_IF_ERROR(s.PutBlob(fm.digest, fm.body));

  auto fetch = [&](const Descriptor& d, bool report) -> absl::Status {
    if (s.HasBlob(d.digest)) return absl::OkStatus();
    ASSIGN_OR_RETURN(std::string hex, DigestHex(d.digest));
    // One fetch per blob, also across processes sharing the store.
    ASSIGN_OR_RETURN(FileLock blob_lock, FileLock::Acquire(s.tmp_ + "/" + hex + ".lock", true));
    if (s.HasBlob(d.digest)) return absl::OkStatus();
    std::string partial = s.tmp_ + "/" + hex + ".partial";
    int last_quarter = -1;
    auto progress = [&](int64_t done, int64_t total) {
      if (report && po.progress) po.progress(PullProgress{name, d.digest, done, total, false});
      int quarter = total > 0 ? static_cast<int>(done * 4 / total) : 4;
      if (report && quarter != last_quarter) {
        last_quarter = quarter;
        log::Info("image: layer progress ", log::Field("image", name), " ", log::Field("layer", d.digest.substr(7, 12)),
                  " ", log::Field("done", done), " ", log::Field("total", total));
      }
    };
    RETURN_IF_ERROR(client.FetchBlob(d.digest, d.size, partial, progress,
                                     BlobCounters{&s.blobs_fetched_, &s.bytes_fetched_}));
    // FetchBlob hashed every byte as it arrived and fsynced the file.
    RETURN_IF_ERROR(s.InstallBlobFile(partial, d.digest, /*verified=*/true));
    if (report && po.progress) po.progress(PullProgress{name, d.digest, d.size, d.size, true});
    return absl::OkStatus();
  };

  RETURN_IF_ERROR(Annotate(fetch(m.config, false), "image config"));
  ASSIGN_OR_RETURN(std::string cfg_body, s.ReadBlob(m.config.digest));
  ASSIGN_OR_RETURN(ParsedConfig cfg, ParseConfig(cfg_body));
  if (cfg.diff_ids.size() != m.layers.size()) {
    return absl::DataLossError("image config lists " + std::to_string(cfg.diff_ids.size()) + " diff ids for " +
                               std::to_string(m.layers.size()) + " layers");
  }

  // Layers in parallel, each unpacked as soon as it is verified.
  std::atomic<size_t> next{0};
  std::mutex err_mu;
  absl::Status first_error;
  auto worker = [&] {
    for (;;) {
      size_t i = next.fetch_add(1);
      if (i >= m.layers.size()) return;
      {
        std::lock_guard<std::mutex> l(err_mu);
        if (!first_error.ok()) return;
      }
      absl::Status st = fetch(m.layers[i], true);
      if (st.ok()) st = s.EnsureLayer(cfg.diff_ids[i], m.layers[i].digest);
      if (!st.ok()) {
        std::lock_guard<std::mutex> l(err_mu);
        if (first_error.ok()) first_error = Annotate(st, "layer " + m.layers[i].digest);
      }
    }
  };
  size_t nthreads = std::min<size_t>(m.layers.size(), std::max(1, s.options_.max_concurrent_downloads));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < nthreads; ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  if (!first_error.ok()) return Annotate(first_error, "pull " + name);

  RETURN_IF_ERROR(s.WriteRef(name, fm.digest));
  log::Info("image: pulled ", log::Field("image", name), " ", log::Field("digest", fm.digest));
  return s.LoadImage(fm.digest, name);
}

absl::StatusOr<Image> Store::Get(const std::string& input) {
  if (input.rfind("sha256:", 0) == 0) {
    RETURN_IF_ERROR(DigestHex(input).status());
    return impl_->LoadImage(input, "");
  }
  auto parsed = ParseReference(input);
  if (!parsed.ok()) return WithReason(parsed.status(), "InvalidImageName");
  std::string name = parsed->String();
  auto body = ReadFile(impl_->RefPath(name), 4096);
  if (!body.ok() && !parsed->digest.empty()) {
    // Pulled under another name (by tag): the content is here all the same.
    auto by_digest = impl_->LoadImage(parsed->digest, name);
    if (by_digest.ok()) return by_digest;
  }
  if (!body.ok()) return absl::NotFoundError("image " + name + " is not in the store");
  return impl_->LoadImage(body->substr(0, body->find('\n')), name);
}

absl::StatusOr<Image> Store::Ensure(const std::string& input, PullPolicy policy, const PullOptions& po) {
  auto parsed = ParseReference(input);
  if (!parsed.ok()) return WithReason(parsed.status(), "InvalidImageName");
  if (policy != PullPolicy::kAlways) {
    auto local = Get(input);
    if (local.ok()) {
      ::utimensat(AT_FDCWD, impl_->RefPath(local->ref).c_str(), nullptr, 0);  // LRU for GC
      return local;
    }
    if (!absl::IsNotFound(local.status())) return local.status();
    if (policy == PullPolicy::kNever) {
      return WithReason(absl::NotFoundError("image " + parsed->String() +
                                            " is not present and imagePullPolicy is Never"),
                        "ErrImageNeverPull");
    }
  }
  return Pull(input, po);
}

absl::StatusOr<std::vector<Image>> Store::List() {
  ASSIGN_OR_RETURN(auto refs, impl_->Refs());
  std::vector<Image> out;
  for (const auto& [name, digest] : refs) {
    auto img = impl_->LoadImage(digest, name.rfind("sha256:", 0) == 0 ? "" : name);
    if (!img.ok()) {
      log::Warn("image: skipping broken image ", log::Field("image", name), " ",
                log::Field("error", std::string(img.status().message())));
      continue;
    }
    out.push_back(std::move(*img));
  }
  std::sort(out.begin(), out.end(), [](const Image& a, const Image& b) { return a.ref < b.ref; });
  return out;
}

absl::Status Store::Remove(const std::string& input) {
  ASSIGN_OR_RETURN(FileLock lock, impl_->LockStore(true));
  ASSIGN_OR_RETURN(auto refs, impl_->Refs());
  std::vector<std::string> names;
  if (input.rfind("sha256:", 0) == 0) {
    for (const auto& [n, d] : refs) {
      if (d == input) names.push_back(n);
    }
  } else {
    auto parsed = ParseReference(input);
    if (!parsed.ok()) return WithReason(parsed.status(), "InvalidImageName");
    for (const auto& [n, d] : refs) {
      if (n == parsed->String()) names.push_back(n);
    }
  }
  if (names.empty()) return absl::NotFoundError("image " + input + " is not in the store");
  for (const auto& n : names) {
    if (::unlink(impl_->RefPath(n).c_str()) != 0) return LastErrnoError("remove " + n);
  }
  RETURN_IF_ERROR(FsyncPath(impl_->refs_));
  return impl_->Prune();
}

absl::Status Store::GarbageCollect(const std::set<std::string>& in_use, int high_pct, int low_pct) {
  ASSIGN_OR_RETURN(int used, DiskUsedPercent(impl_->root_));
  if (used < high_pct) return absl::OkStatus();
  ASSIGN_OR_RETURN(FileLock lock, impl_->LockStore(true));
  ASSIGN_OR_RETURN(auto refs, impl_->Refs());
  // manifest digest -> (last use, names)
  std::map<std::string, std::pair<int64_t, std::vector<std::string>>> images;
  for (const auto& [name, digest] : refs) {
    struct stat st;
    // Nanoseconds: images pulled or used within one second must keep their order.
    int64_t t = ::stat(impl_->RefPath(name).c_str(), &st) == 0
                    ? static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec
                    : 0;
    auto& e = images[digest];
    e.first = std::max(e.first, t);
    e.second.push_back(name);
  }
  std::vector<std::pair<int64_t, std::string>> order;
  for (const auto& [digest, e] : images) {
    bool busy = in_use.count(digest) > 0;
    for (const auto& n : e.second) busy = busy || in_use.count(n) > 0;
    if (!busy) order.emplace_back(e.first, digest);
  }
  std::sort(order.begin(), order.end());
  log::Info("image: garbage collection ", log::Field("disk_used_pct", used), " ", log::Field("high_pct", high_pct), " ",
            log::Field("low_pct", low_pct), " ", log::Field("candidates", static_cast<long long>(order.size())));
  for (const auto& [t, digest] : order) {
    for (const auto& n : images[digest].second) {
      log::Info("image: gc removing ", log::Field("image", n), " ", log::Field("digest", digest));
      if (::unlink(impl_->RefPath(n).c_str()) != 0 && errno != ENOENT) return LastErrnoError("remove " + n);
    }
    RETURN_IF_ERROR(impl_->Prune());
    ASSIGN_OR_RETURN(used, DiskUsedPercent(impl_->root_));
    if (used < low_pct) break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Store::MountRootfs(const Image& image, const std::string& container_dir) {
  if (container_dir.find_first_of(",:") != std::string::npos) {
    return absl::InvalidArgumentError("container dir \"" + container_dir + "\" may not contain ',' or ':'");
  }
  std::string upper = container_dir + "/upper", work = container_dir + "/work", merged = container_dir + "/rootfs";
  for (const auto& d : {upper, work, merged}) RETURN_IF_ERROR(MkdirAll(d, 0755));
  ASSIGN_OR_RETURN(bool mounted, IsMountPoint(merged));
  if (mounted) return merged;  // re-adopted after a kubelet restart
  std::vector<std::string> lowers(image.layer_dirs.rbegin(), image.layer_dirs.rend());  // top first
  if (lowers.empty()) {
    std::string empty = container_dir + "/empty";
    RETURN_IF_ERROR(MkdirAll(empty, 0755));
    lowers.push_back(empty);
  }
  for (const auto& l : lowers) {
    if (!Exists(l)) return absl::NotFoundError("layer " + l + " of image " + image.ref + " is missing");
  }
  std::string lower;
  for (const auto& l : lowers) lower += (lower.empty() ? "" : ":") + l;
  std::string opts = "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work;
  // mount(2) options are limited to one page; deep images go through the
  // new mount API, one lower layer per fsconfig call (Linux >= 6.8).
  if (opts.size() >= 4000) {
    RETURN_IF_ERROR(MountOverlayLayerByLayer(lowers, upper, work, merged));
    return merged;
  }
  if (::mount("overlay", merged.c_str(), "overlay", 0, opts.c_str()) != 0) {
    return LastErrnoError("mount overlay on " + merged);
  }
  return merged;
}

absl::Status Store::UnmountRootfs(const std::string& container_dir) {
  std::string merged = container_dir + "/rootfs";
  for (int i = 0; i < 3; ++i) {
    if (::umount2(merged.c_str(), 0) == 0) continue;  // maybe stacked; try again
    if (errno == EINVAL || errno == ENOENT) return absl::OkStatus();
    if (errno == EBUSY) {
      // A process still holds it; detach now, the kernel frees it later.
      if (::umount2(merged.c_str(), MNT_DETACH) == 0) return absl::OkStatus();
    }
    return LastErrnoError("unmount " + merged);
  }
  return absl::OkStatus();
}

}  // namespace skiff::image
