#include "skiff/scheduler/scheduler.h"
namespace skiff::scheduler {
absl::Status Run(std::shared_ptr<skiff::client::Client>, const Options&, const std::atomic<bool>&) {
  return absl::UnimplementedError("scheduler: not built yet");
}
}  // namespace skiff::scheduler
