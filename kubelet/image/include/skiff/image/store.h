// skiff::image — a content-addressed OCI image store for the kubelet.
//
// Layout under the root (default /var/lib/skiff/images):
//   blobs/sha256/<hex>   every blob (manifests, configs, compressed layers), verified by digest
//   layers/<hex>/        one unpacked layer per diff id, whiteouts in overlayfs form
//   refs/<escaped ref>   image name -> manifest digest ("sha256:...")
//   tmp/                 in-progress downloads and unpacks; never read as content
// Everything becomes visible by rename(2) after fsync, so a half-pulled blob or
// a half-unpacked layer is never used.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace skiff::image {

// The parts of the OCI image config the kubelet needs. A pod spec's
// command/args/env/workingDir override these the Kubernetes way.
struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "KEY=value"
  std::string working_dir;
  std::string user;
};

struct Image {
  std::string ref;            // normalized, e.g. "docker.io/library/busybox:1.36"
  std::string digest;         // manifest digest "sha256:..."
  std::string config_digest;  // config blob digest "sha256:..."
  std::vector<std::string> layer_dirs;  // unpacked layers, lowest first
  ImageConfig config;
  int64_t size_bytes = 0;  // sum of compressed layer sizes
};

enum class PullPolicy { kAlways, kIfNotPresent, kNever };

// Kubernetes' default when a container sets no imagePullPolicy: Always for
// ":latest" or no tag (and no digest), IfNotPresent otherwise.
PullPolicy DefaultPullPolicy(const std::string& ref);
// "Always" | "IfNotPresent" | "Never"; empty or unknown -> DefaultPullPolicy(ref).
PullPolicy ParsePullPolicy(const std::string& policy, const std::string& ref);

// A parsed image reference: [registry/]repository[:tag][@digest].
struct Reference {
  std::string registry;    // "docker.io" when none given
  std::string repository;  // "library/busybox" for a bare docker.io name
  std::string tag;         // "latest" when neither tag nor digest given
  std::string digest;      // "sha256:..." or empty
  // "registry/repository[:tag][@digest]"
  std::string String() const;
};
absl::StatusOr<Reference> ParseReference(const std::string& ref);

// Credentials for one registry.
struct RegistryAuth {
  std::string username;
  std::string password;
  std::string identity_token;  // OAuth2 refresh token (docker config "identitytoken")
};

// Parses a docker config.json / kubernetes.io/dockerconfigjson secret payload
// ({"auths": {"host": {"auth": base64(user:pass)} | {"username","password"}}})
// into registry host -> credentials.
absl::StatusOr<std::map<std::string, RegistryAuth>> ParseDockerConfig(const std::string& json);

struct PullProgress {
  std::string ref;
  std::string digest;  // the layer blob
  int64_t done_bytes = 0;
  int64_t total_bytes = 0;
  bool complete = false;
};

struct PullOptions {
  // Credentials by registry host ("127.0.0.1:5000", "docker.io"), e.g. from a
  // pod's imagePullSecrets. Tried before Options::credentials_file.
  std::map<std::string, RegistryAuth> auths;
  // Called from download threads; must be thread-safe. Progress is also logged.
  std::function<void(const PullProgress&)> progress;
  std::string os = "linux";
  std::string architecture = "amd64";
};

struct Options {
  // Registries (host[:port]) contacted over plain HTTP instead of HTTPS.
  std::vector<std::string> insecure_registries;
  // A docker config.json with registry credentials; empty = none.
  std::string credentials_file;
  // Layers fetched at once per pull.
  int max_concurrent_downloads = 3;
  // Attempts per blob; a retry resumes with an HTTP Range request.
  int blob_attempts = 4;
  // CA bundle for HTTPS registries; empty = the system's.
  std::string ca_file;
  // Connect / stall timeouts for registry requests.
  int connect_timeout_seconds = 15;
  int low_speed_timeout_seconds = 30;
};

// How the kubelet should name a failure from Ensure/Pull in a container's
// waiting reason: "ErrImageNeverPull" (image missing under PullPolicy::kNever),
// "InvalidImageName" (unparseable reference), otherwise "ErrImagePull".
std::string KubeletReason(const absl::Status& st);

// The process a container runs, the Kubernetes way: `command` replaces the
// image's entrypoint (and drops its cmd), `args` replaces its cmd; env from
// the pod spec overrides the image's by name; workingDir replaces the
// image's when set. `user` stays the image's (securityContext is the
// kubelet's business).
struct ContainerProcess {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "KEY=value", image order then new pod keys
  std::string working_dir;       // "/" when neither sets one
  std::string user;
};
ContainerProcess ResolveProcess(const ImageConfig& image, const std::vector<std::string>& command,
                                const std::vector<std::string>& args,
                                const std::vector<std::pair<std::string, std::string>>& env,
                                const std::string& working_dir);

// ImagePullBackOff bookkeeping: after a failed pull of `key` (the kubelet
// uses pod uid + image) the next attempt waits 10 s, doubling to 300 s; a
// success forgets the key. Thread-compatible (the kubelet's pod worker owns it).
class PullBackOff {
 public:
  using Clock = std::chrono::steady_clock;
  explicit PullBackOff(std::chrono::seconds initial = std::chrono::seconds(10),
                       std::chrono::seconds max = std::chrono::seconds(300))
      : initial_(initial), max_(max) {}
  // True while a failed key must not be pulled again (reason ImagePullBackOff).
  bool InBackOff(const std::string& key, Clock::time_point now = Clock::now()) const;
  void Failed(const std::string& key, Clock::time_point now = Clock::now());
  void Succeeded(const std::string& key) { entries_.erase(key); }
  // The delay the last failure started (0 when none).
  std::chrono::seconds Delay(const std::string& key) const;

 private:
  struct Entry {
    std::chrono::seconds delay;
    Clock::time_point until;
  };
  std::chrono::seconds initial_, max_;
  std::map<std::string, Entry> entries_;
};

// Counters of registry traffic, for tests and metrics.
struct StoreStats {
  int64_t blobs_fetched = 0;   // blob downloads completed from a registry
  int64_t bytes_fetched = 0;   // body bytes received for blobs
  int64_t layers_unpacked = 0;
};

class Store {
 public:
  static constexpr const char* kDefaultRoot = "/var/lib/skiff/images";

  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& root, const Options& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Fetches the image from its registry (always contacts the registry).
  absl::StatusOr<Image> Pull(const std::string& ref, const PullOptions& options);
  // The kubelet's entry point: applies imagePullPolicy. Under kNever a missing
  // image is an error for which KubeletReason() says "ErrImageNeverPull".
  absl::StatusOr<Image> Ensure(const std::string& ref, PullPolicy policy, const PullOptions& options);
  // A local image by reference or by manifest digest ("sha256:..."); NotFound if absent.
  absl::StatusOr<Image> Get(const std::string& ref);
  // Imports an OCI image layout tar (oci-layout, index.json, blobs/) or a
  // `docker save` tar (manifest.json + layer tars), gzip/zstd compressed or
  // not. Images are named by the archive (containerd/OCI ref.name annotations,
  // docker RepoTags); `name` names images the archive gives only a tag or no
  // name at all. Returns every image imported.
  absl::StatusOr<std::vector<Image>> Import(const std::string& archive_path, const std::string& name = "");
  // Imports every *.tar, *.tar.gz, *.tgz, *.tar.zst in `dir` (the kubelet's
  // air-gap directory, loaded at start); a bad archive is logged and
  // skipped. NotFound only when `dir` itself is missing.
  absl::StatusOr<std::vector<Image>> ImportDirectory(const std::string& dir);

  // Mounts overlayfs at <container_dir>/rootfs with lower = the image's layers,
  // upper/work = <container_dir>/upper, <container_dir>/work. Returns the merged path.
  absl::StatusOr<std::string> MountRootfs(const Image& image, const std::string& container_dir);
  // Unmounts <container_dir>/rootfs (idempotent; not mounted is fine).
  absl::Status UnmountRootfs(const std::string& container_dir);

  absl::StatusOr<std::vector<Image>> List();
  // Removes one name; blobs and layers no other image uses are pruned.
  absl::Status Remove(const std::string& ref);
  // When the filesystem holding the root is above high_pct used, removes
  // images not in in_use_digests (manifest digests), least recently used first,
  // until it is below low_pct. Never removes an image in use.
  absl::Status GarbageCollect(const std::set<std::string>& in_use_digests, int high_pct = 85,
                              int low_pct = 80);

  StoreStats Stats() const;
  const std::string& root() const;

  class Impl;

 private:
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace skiff::image
