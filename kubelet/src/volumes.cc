#include "volumes.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "pod_worker.h"
#include "skiff/common/status.h"
#ifdef SKIFF_KUBELET_HAVE_IMAGE
#include "skiff/image/store.h"
#endif

namespace skiff::kubelet {
namespace fs = std::filesystem;

absl::StatusOr<bool> ProjectFiles(const std::string& dir, const std::map<std::string, std::string>& files, int mode) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError("create " + dir + ": " + ec.message());
  bool changed = false;
  for (const auto& [name, content] : files) {
    if (name.empty() || name.find("..") != std::string::npos || name[0] == '/') {
      return absl::InvalidArgumentError("bad projected file name \"" + name + "\"");
    }
    std::string path = dir + "/" + name;
    {
      std::ifstream in(path, std::ios::binary);
      if (in) {
        std::string old((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (old == content) continue;
      }
    }
    fs::create_directories(fs::path(path).parent_path(), ec);
    std::string tmp = dir + "/.." + std::to_string(getpid()) + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << content;
      if (!out) return absl::InternalError("write " + tmp);
    }
    chmod(tmp.c_str(), mode);
    if (rename(tmp.c_str(), path.c_str()) != 0) return LastErrnoError("rename to " + path);
    changed = true;
  }
  for (auto& e : fs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename();
    if (!files.count(n) && e.is_regular_file()) {
      fs::remove(e.path(), ec);
      changed = true;
    }
  }
  return changed;
}

void CleanupVolumes(const std::string& pod_root) {
  std::string dir = pod_root + "/volumes";
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    struct statfs st{};
    if (statfs(e.path().c_str(), &st) == 0 && st.f_type == 0x01021994 /* TMPFS_MAGIC */) {
      umount2(e.path().c_str(), MNT_DETACH);
    }
  }
}

absl::Status PodWorker::PrepareVolumes(std::map<std::string, MountSpec>* mounts, std::string* reason) {
  const std::string& ns = pod_.metadata().namespace_();
  for (const auto& v : pod_.spec().volumes()) {
    std::string dir = PodRootDir() + "/volumes/" + v.name();
    MountSpec m;
    m.source = dir;
    std::error_code ec;
    if (v.has_empty_dir()) {
      fs::create_directories(dir, ec);
      if (v.empty_dir().medium() == "Memory") {
        struct statfs st{};
        if (statfs(dir.c_str(), &st) == 0 && st.f_type != 0x01021994 &&
            mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0) {
          return LastErrnoError("mount tmpfs for emptyDir " + v.name());
        }
      }
    } else if (v.has_host_path()) {
      const auto& hp = v.host_path();
      m.source = hp.path();
      if (hp.type() == "DirectoryOrCreate") {
        fs::create_directories(hp.path(), ec);
      } else if (hp.type() == "FileOrCreate") {
        if (access(hp.path().c_str(), F_OK) != 0) std::ofstream(hp.path()).flush();
      } else if (hp.type() == "Directory" && !fs::is_directory(hp.path(), ec)) {
        return absl::NotFoundError(absl::StrCat("MountVolume.SetUp failed for volume \"", v.name(),
                                                "\" : hostPath type check failed: ", hp.path(), " is not a directory"));
      } else if (hp.type() == "File" && !fs::is_regular_file(hp.path(), ec)) {
        return absl::NotFoundError(absl::StrCat("MountVolume.SetUp failed for volume \"", v.name(),
                                                "\" : hostPath type check failed: ", hp.path(), " is not a file"));
      }
    } else if (v.has_config_map() || v.has_secret()) {
      bool secret = v.has_secret();
      std::string name = secret ? v.secret().secret_name() : v.config_map().name();
      bool optional = secret ? v.secret().optional() : v.config_map().optional();
      int mode = secret ? (v.secret().has_default_mode() ? v.secret().default_mode() : 0644)
                        : (v.config_map().has_default_mode() ? v.config_map().default_mode() : 0644);
      auto obj = k_->api().Get(secret ? "secrets" : "configmaps", ns, name);
      std::map<std::string, std::string> data;
      if (!obj.ok()) {
        if (!optional) {
          *reason = "FailedMount";
          return absl::NotFoundError(absl::StrCat("MountVolume.SetUp failed for volume \"", v.name(), "\" : ",
                                                  secret ? "secret" : "configmap", " \"", name, "\" not found"));
        }
      } else if (secret) {
        for (const auto& [k, val] : obj->secret().data()) data[k] = val;
      } else {
        for (const auto& [k, val] : obj->config_map().data()) data[k] = val;
      }
      const auto& items = secret ? v.secret().items() : v.config_map().items();
      if (!items.empty()) {
        std::map<std::string, std::string> picked;
        for (const auto& it : items) {
          auto f = data.find(it.key());
          if (f == data.end()) {
            if (optional) continue;
            return absl::NotFoundError(absl::StrCat("MountVolume.SetUp failed for volume \"", v.name(),
                                                    "\" : configmap references non-existent config key: ", it.key()));
          }
          picked[it.path()] = f->second;
        }
        data = std::move(picked);
      }
      ASSIGN_OR_RETURN(bool changed, ProjectFiles(dir, data, mode));
      (void)changed;
      m.read_only = true;
    } else {
      continue;  // unsupported volume types are ignored
    }
    (*mounts)[v.name()] = m;
  }
  return ProjectServiceAccountToken(mounts);
}

absl::Status PodWorker::ProjectServiceAccountToken(std::map<std::string, MountSpec>* mounts) {
  const auto& spec = pod_.spec();
  if (!k_->token_source() || (spec.has_automount_service_account_token() && !spec.automount_service_account_token())) {
    return absl::OkStatus();
  }
  std::string dir = PodRootDir() + "/volumes/" + kServiceAccountVolume;
  int64_t now = absl::ToUnixSeconds(absl::Now());
  if (now >= sa_token_refresh_unix_) {
    std::string sa = spec.service_account_name().empty() ? "default" : spec.service_account_name();
    auto tok = k_->token_source()(pod_.metadata().namespace_(), sa, pod_.metadata().name(), uid_);
    if (!tok.ok()) {
      return absl::Status(tok.status().code(),
                          absl::StrCat("MountVolume.SetUp failed for volume \"", kServiceAccountVolume,
                                       "\" : failed to fetch token: ", tok.status().message()));
    }
    std::error_code ec;
    fs::create_directories(dir, ec);
    RETURN_IF_ERROR(ProjectFiles(dir, {{"token", tok->token}, {"ca.crt", tok->ca_crt}, {"namespace", pod_.metadata().namespace_()}},
                                 0644)
                        .status());
    // Renewed at 80% of its lifetime, like the kubelet's token manager.
    sa_token_refresh_unix_ = now + std::max<int64_t>(60, (tok->expiration_unix - now) * 4 / 5);
  }
  MountSpec m;
  m.source = dir;
  m.read_only = true;
  (*mounts)[kServiceAccountVolume] = m;
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolveImageRootfs(Kubelet* k, const api::v1::Container& c, const std::string& container_dir,
                                               bool* read_only, std::vector<std::string>* entrypoint,
                                               std::vector<std::string>* cmd, bool* mounted) {
#ifdef SKIFF_KUBELET_HAVE_IMAGE
  auto* store = static_cast<image::Store*>(k->image_store());
  if (store == nullptr) return absl::UnavailableError("no image store on this node");
  image::PullPolicy policy = image::PullPolicy::kIfNotPresent;
  if (c.image_pull_policy() == "Always") policy = image::PullPolicy::kAlways;
  if (c.image_pull_policy() == "Never") policy = image::PullPolicy::kNever;
  ASSIGN_OR_RETURN(image::Image img, store->Ensure(c.image(), policy, {}));
  std::error_code ec;
  fs::create_directories(container_dir, ec);
  ASSIGN_OR_RETURN(std::string rootfs, store->MountRootfs(img, container_dir));
  *mounted = true;
  *read_only = false;
  *entrypoint = img.config.entrypoint;
  *cmd = img.config.cmd;
  return rootfs;
#else
  (void)k, (void)container_dir, (void)read_only, (void)entrypoint, (void)cmd, (void)mounted;
  return absl::NotFoundError(absl::StrCat("image ", c.image(), " not found: no such directory under --rootfs-dir"));
#endif
}

void UnmountImageRootfs(Kubelet* k, const std::string& container_dir) {
#ifdef SKIFF_KUBELET_HAVE_IMAGE
  if (auto* store = static_cast<image::Store*>(k->image_store())) store->UnmountRootfs(container_dir).IgnoreError();
#else
  (void)k, (void)container_dir;
#endif
}

}  // namespace skiff::kubelet
