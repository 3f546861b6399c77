#include "skiff/controllers/manager.h"
namespace skiff::controllers {
absl::Status Run(std::shared_ptr<skiff::client::Client>, const Options&, const std::atomic<bool>&) {
  return absl::UnimplementedError("controller manager: not built yet");
}
}  // namespace skiff::controllers
