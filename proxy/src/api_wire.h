// The protobuf wire format of the few API messages skiff-proxy needs, read
// and written by hand so the product links no libprotobuf: a WatchEvent is
// decoded straight into the RawService / RawEndpointSlice that every source
// feeds to AddService/AddEndpointSlice (never a full API object), and the
// requests it sends (WatchRequest, CreateRequest of an Event) are encoded
// field by field. Field numbers are those of
// control-plane/api/proto/skiff/api/v1/{api,objects}.proto; unknown fields
// are skipped, as libprotobuf does.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "raw_objects.h"

namespace skiff::proxy::wire {

// What a WatchEvent carried, reduced to what the proxy uses.
struct WatchEventView {
  enum class Kind : uint8_t { kNone, kService, kEndpointSlice };
  std::string type;  // ADDED, MODIFIED, DELETED, BOOKMARK, ERROR
  Kind kind = Kind::kNone;
  RawService service;      // kind == kService
  RawEndpointSlice slice;  // kind == kEndpointSlice
  std::string uid;         // the object's metadata.uid
  std::string resource_version;
  bool initial_events_end = false;  // annotation k8s.io/initial-events-end: "true"
  int32_t error_code = 0;
  std::string error_message;
  const std::string& ns() const { return kind == Kind::kService ? service.ns : slice.ns; }
  const std::string& name() const { return kind == Kind::kService ? service.name : slice.name; }
};

// Decodes one WatchEvent message. Truncated or malformed input (a varint
// past the end, a length beyond the buffer, an invalid wire type) is an
// InvalidArgument error naming what was being read.
absl::StatusOr<WatchEventView> DecodeWatchEvent(std::string_view msg);
// Decodes an Object envelope (field 2 of WatchEvent, the result of Create).
absl::Status DecodeObject(std::string_view msg, WatchEventView* out);

struct WatchRequestFields {
  std::string resource;
  std::string resource_version;
  bool allow_watch_bookmarks = true;
  bool send_initial_events = false;
};
std::string EncodeWatchRequest(const WatchRequestFields& req);

// An Event about a Service, as controllers::EventRecorder writes one.
struct EventFields {
  std::string ns, name;  // the Event's own
  std::string involved_ns, involved_name, involved_uid, involved_resource_version;
  std::string type, reason, message, component, timestamp;
};
// A CreateRequest{resource: "events", namespace, object: {event}}.
std::string EncodeCreateEventRequest(const EventFields& ev);

}  // namespace skiff::proxy::wire
