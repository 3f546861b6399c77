// The kubelet-facing helpers that are not about storage: merging the image
// config with a pod spec, and the image pull back-off.
#include <algorithm>

#include "skiff/image/store.h"

namespace skiff::image {

ContainerProcess ResolveProcess(const ImageConfig& image, const std::vector<std::string>& command,
                                const std::vector<std::string>& args,
                                const std::vector<std::pair<std::string, std::string>>& env,
                                const std::string& working_dir) {
  ContainerProcess p;
  if (!command.empty()) {
    p.argv = command;
    p.argv.insert(p.argv.end(), args.begin(), args.end());
  } else {
    p.argv = image.entrypoint;
    const auto& tail = args.empty() ? image.cmd : args;
    p.argv.insert(p.argv.end(), tail.begin(), tail.end());
  }
  p.env = image.env;
  for (const auto& [k, v] : env) {
    std::string prefix = k + "=";
    auto it = std::find_if(p.env.begin(), p.env.end(), [&](const std::string& e) { return e.rfind(prefix, 0) == 0; });
    if (it != p.env.end()) *it = prefix + v;
    else p.env.push_back(prefix + v);
  }
  p.working_dir = !working_dir.empty() ? working_dir : !image.working_dir.empty() ? image.working_dir : "/";
  p.user = image.user;
  return p;
}

PullPolicy DefaultPullPolicy(const std::string& ref) {
  // Kubernetes looks at the reference as written: an explicit digest pins
  // the content, an explicit non-latest tag is assumed stable.
  std::string r = ref;
  if (r.find('@') != std::string::npos) return PullPolicy::kIfNotPresent;
  auto slash = r.rfind('/');
  auto colon = r.rfind(':');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) return PullPolicy::kAlways;
  return r.substr(colon + 1) == "latest" ? PullPolicy::kAlways : PullPolicy::kIfNotPresent;
}

PullPolicy ParsePullPolicy(const std::string& policy, const std::string& ref) {
  if (policy == "Always") return PullPolicy::kAlways;
  if (policy == "IfNotPresent") return PullPolicy::kIfNotPresent;
  if (policy == "Never") return PullPolicy::kNever;
  return DefaultPullPolicy(ref);
}

bool PullBackOff::InBackOff(const std::string& key, Clock::time_point now) const {
  auto it = entries_.find(key);
  return it != entries_.end() && now < it->second.until;
}

void PullBackOff::Failed(const std::string& key, Clock::time_point now) {
  auto it = entries_.find(key);
  std::chrono::seconds d = it == entries_.end() ? initial_ : std::min(max_, it->second.delay * 2);
  entries_[key] = Entry{d, now + d};
}

std::chrono::seconds PullBackOff::Delay(const std::string& key) const {
  auto it = entries_.find(key);
  return it == entries_.end() ? std::chrono::seconds(0) : it->second.delay;
}

}  // namespace skiff::image
