// Static pods: Pod manifests in --pod-manifest-path, run on this node and
// shown in the API as mirror pods "<name>-<node>" carrying the annotation
// kubernetes.io/config.mirror (the manifest's hash). A changed manifest
// replaces its mirror pod; a removed one deletes it; a mirror pod deleted by
// someone else is created again.
#include <dirent.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "skiff/common/log.h"
#include "skiff/controllers/objects.h"
#include "skiff/kubelet/kubelet.h"
#include "skiff/manifest/manifest.h"

namespace skiff::kubelet {
using api::v1::Pod;

namespace {

constexpr char kMirrorAnnotation[] = "kubernetes.io/config.mirror";
constexpr char kHashAnnotation[] = "kubernetes.io/config.hash";
constexpr char kSourceAnnotation[] = "kubernetes.io/config.source";

std::string Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

bool IsManifestFile(const std::string& n) {
  auto ends = [&](const char* suf) {
    std::string x = suf;
    return n.size() > x.size() && n.compare(n.size() - x.size(), x.size(), x) == 0;
  };
  return n[0] != '.' && (ends(".yaml") || ends(".yml") || ends(".json"));
}

}  // namespace

void Kubelet::StaticPodLoop() {
  while (!stopping_) {
    SyncStaticPods();
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::seconds(std::max(1, config_.manifest_poll_seconds)), [&] { return stopping_.load(); });
  }
}

void Kubelet::SyncStaticPods() {
  // Wanted mirror pods, by namespace/name.
  std::map<std::string, Pod> want;
  std::vector<std::string> files;
  bool readable = true;
  if (DIR* d = opendir(config_.manifest_dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (IsManifestFile(e->d_name)) files.push_back(config_.manifest_dir + "/" + e->d_name);
    }
    closedir(d);
  } else if (errno != ENOENT) {
    readable = false;
  }
  std::sort(files.begin(), files.end());
  std::string errors;
  for (const auto& f : files) {
    std::ifstream in(f);
    std::stringstream ss;
    ss << in.rdbuf();
    auto docs = manifest::DecodeManifests(ss.str(), f);
    if (!docs.ok()) {
      errors += std::string(docs.status().message()) + "; ";
      readable = false;  // keep what runs from a file we cannot read right now
      continue;
    }
    for (size_t i = 0; i < docs->size(); ++i) {
      const auto& obj = (*docs)[i].object;
      if (!obj.has_pod() || obj.pod().metadata().name().empty()) {
        errors += absl::StrCat(f, ": document ", i + 1, " is not a named Pod; ");
        continue;
      }
      Pod p = obj.pod();
      p.set_api_version("v1");
      p.set_kind("Pod");
      auto* md = p.mutable_metadata();
      if (md->namespace_().empty()) md->set_namespace_("default");
      md->set_name(md->name() + "-" + config_.node_name);
      md->clear_uid();
      md->clear_resource_version();
      p.mutable_spec()->set_node_name(config_.node_name);
      p.clear_status();
      std::string hash = Fnv1a(p.SerializeAsString() + f);
      (*md->mutable_annotations())[kMirrorAnnotation] = hash;
      (*md->mutable_annotations())[kHashAnnotation] = hash;
      (*md->mutable_annotations())[kSourceAnnotation] = "file";
      want[md->namespace_() + "/" + md->name()] = p;
    }
  }
  if (errors != last_static_error_) {
    if (!errors.empty()) log::Warn("static pods in ", config_.manifest_dir, ": ", errors);
    last_static_error_ = errors;
  }
  client::ListOptions lo;
  lo.field_selector = "spec.nodeName=" + config_.node_name;
  auto list = client_->List("pods", "", lo);
  if (!list.ok()) return;
  std::map<std::string, Pod> have;
  for (const auto& o : list->items()) {
    const auto& a = o.pod().metadata().annotations();
    if (a.count(kMirrorAnnotation)) have[o.pod().metadata().namespace_() + "/" + o.pod().metadata().name()] = o.pod();
  }
  for (const auto& [key, p] : have) {
    auto it = want.find(key);
    bool stale = it == want.end() ? readable
                                  : it->second.metadata().annotations().at(kMirrorAnnotation) !=
                                        p.metadata().annotations().at(kMirrorAnnotation);
    if (!stale || !p.metadata().deletion_timestamp().empty()) continue;
    log::Info("static pod ", key, ": manifest ", it == want.end() ? "removed" : "changed", ", deleting its mirror pod");
    client::DeleteOptions d;
    d.precondition_uid = p.metadata().uid();
    client_->Delete("pods", p.metadata().namespace_(), p.metadata().name(), d).IgnoreError();
  }
  for (const auto& [key, p] : want) {
    if (have.count(key)) continue;  // also while an old version terminates: created on a later round
    auto r = client_->Create("pods", p.metadata().namespace_(), objects::Wrap(p));
    if (r.ok()) {
      log::Info("static pod ", key, ": mirror pod created");
    } else if (!absl::IsAlreadyExists(r.status())) {
      log::Warn("static pod ", key, ": create mirror pod: ", r.status());
    }
  }
}

}  // namespace skiff::kubelet
