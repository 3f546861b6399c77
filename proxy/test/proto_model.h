// The proxy's model built from API protobuf objects through libprotobuf's
// generated classes: what skiff-proxy's API source did before it decoded the
// wire format itself (src/api_wire.h). Tests only: it is the reference the
// hand-written decoder must agree with, and lets tests compare the API path
// with the YAML one.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "skiff/api/v1/objects.pb.h"
#include "skiff/proxy/model.h"

namespace skiff::proxy {

// Reduces API objects to the proxy's model (through the same parser as
// --from-file, so both sources skip malformed objects the same way).
absl::StatusOr<ClusterState> ModelFromObjects(const std::vector<api::v1::Object>& objects);

}  // namespace skiff::proxy
