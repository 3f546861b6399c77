// Image references, normalized the way docker and the kubelet do:
// "busybox" -> "docker.io/library/busybox:latest".
#include "digest.h"
#include "skiff/image/store.h"

namespace skiff::image {

std::string Reference::String() const {
  std::string s = registry + "/" + repository;
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

static bool ValidRepository(const std::string& repo) {
  if (repo.empty() || repo.front() == '/' || repo.back() == '/') return false;
  for (char c : repo) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' || c == '/';
    if (!ok) return false;
  }
  return repo.find("//") == std::string::npos && repo.find("..") == std::string::npos;
}

static bool ValidTag(const std::string& tag) {
  if (tag.empty() || tag.size() > 128 || tag[0] == '.' || tag[0] == '-') return false;
  for (char c : tag) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<Reference> ParseReference(const std::string& input) {
  auto invalid = [&](const std::string& why) {
    return absl::InvalidArgumentError("invalid image reference \"" + input + "\": " + why);
  };
  if (input.empty()) return invalid("empty");
  Reference ref;
  std::string rest = input;
  if (auto at = rest.find('@'); at != std::string::npos) {
    ref.digest = rest.substr(at + 1);
    rest = rest.substr(0, at);
    if (!DigestHex(ref.digest).ok()) return invalid("bad digest");
  }
  auto slash = rest.find('/');
  std::string first = rest.substr(0, slash);
  if (slash != std::string::npos &&
      (first.find('.') != std::string::npos || first.find(':') != std::string::npos || first == "localhost")) {
    ref.registry = first;
    rest = rest.substr(slash + 1);
  } else {
    ref.registry = "docker.io";
  }
  if (ref.registry == "index.docker.io" || ref.registry == "registry-1.docker.io") ref.registry = "docker.io";
  auto last_slash = rest.rfind('/');
  auto colon = rest.rfind(':');
  if (colon != std::string::npos && (last_slash == std::string::npos || colon > last_slash)) {
    ref.tag = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
    if (!ValidTag(ref.tag)) return invalid("bad tag");
  }
  if (ref.registry == "docker.io" && rest.find('/') == std::string::npos) rest = "library/" + rest;
  if (!ValidRepository(rest)) return invalid("bad repository name");
  ref.repository = rest;
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

}  // namespace skiff::image
