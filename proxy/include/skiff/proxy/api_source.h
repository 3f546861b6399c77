// The API watch source of skiff-proxy: Services and EndpointSlices from the
// control plane through skiff::client informers.
#pragma once

#include <memory>

#include "skiff/client/client.h"
#include "skiff/proxy/source.h"

namespace skiff::proxy {

// Lists and watches Services and EndpointSlices. The first Replace() happens
// only once both lists are in, so a restarted agent never sees a transiently
// empty cluster (which would remove the pinned services under live traffic);
// afterwards every watch event is forwarded as an Upsert*/Delete*.
std::unique_ptr<Source> MakeApiSource(std::shared_ptr<client::Client> api);

// Reduces API objects to the proxy's model (through the same parser as
// --from-file, so both sources skip malformed objects the same way).
absl::StatusOr<ClusterState> ModelFromObjects(const std::vector<client::Object>& objects);

}  // namespace skiff::proxy
