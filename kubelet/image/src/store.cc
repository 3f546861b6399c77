// Placeholder so the API header compiles and links; the implementation follows.
#include "skiff/image/store.h"

namespace skiff::image {

class Store::Impl {};
Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string&, const Options&) {
  return absl::UnimplementedError("skiff::image::Store not implemented yet");
}
std::string KubeletReason(const absl::Status& st) { return "ErrImagePull"; }

}  // namespace skiff::image
