#include "api_wire.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"

namespace skiff::proxy::wire {
namespace {

enum WireType : int { kVarint = 0, kFixed64 = 1, kLen = 2, kStartGroup = 3, kEndGroup = 4, kFixed32 = 5 };

// One field as read from the wire: the value of a varint, or the bytes of a
// length-delimited field (fixed32/64 values are read but never used here).
struct Field {
  uint32_t number = 0;
  int type = 0;
  uint64_t varint = 0;
  std::string_view bytes;
};

class Reader {
 public:
  Reader(std::string_view buf, const char* what)
      : p_(buf.data()), end_(buf.data() + buf.size()), what_(what) {}
  bool done() const { return p_ == end_; }

  absl::Status Next(Field* f) {
    uint64_t tag = 0;
    RETURN_IF_ERROR(Varint(&tag));
    f->number = static_cast<uint32_t>(tag >> 3);
    f->type = static_cast<int>(tag & 7);
    if (f->number == 0 || (tag >> 3) > 0x1fffffff) return Error("field number 0 or out of range");
    switch (f->type) {
      case kVarint:
        return Varint(&f->varint);
      case kFixed64:
        return Take(8, &f->bytes);
      case kFixed32:
        return Take(4, &f->bytes);
      case kLen: {
        uint64_t n = 0;
        RETURN_IF_ERROR(Varint(&n));
        return Take(n, &f->bytes);
      }
      case kStartGroup:
        return SkipGroup(f->number, 0);
      default:
        return Error(absl::StrCat("invalid wire type ", f->type, " for field ", f->number));
    }
  }

 private:
  absl::Status Error(const std::string& why) const {
    return absl::InvalidArgumentError(absl::StrCat("malformed ", what_, ": ", why));
  }
  absl::Status Varint(uint64_t* v) {
    uint64_t out = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (p_ == end_) return Error("truncated varint");
      uint8_t b = static_cast<uint8_t>(*p_++);
      out |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        *v = out;
        return absl::OkStatus();
      }
    }
    return Error("varint longer than 10 bytes");
  }
  absl::Status Take(uint64_t n, std::string_view* out) {
    if (n > static_cast<uint64_t>(end_ - p_)) return Error(absl::StrCat("length ", n, " runs past the end"));
    *out = std::string_view(p_, n);
    p_ += n;
    return absl::OkStatus();
  }
  // Unknown (deprecated) groups are skipped up to their end tag.
  absl::Status SkipGroup(uint32_t number, int depth) {
    if (depth > 64) return Error("groups nested too deep");
    while (true) {
      uint64_t tag = 0;
      RETURN_IF_ERROR(Varint(&tag));
      int type = static_cast<int>(tag & 7);
      uint32_t n = static_cast<uint32_t>(tag >> 3);
      if (type == kEndGroup) {
        if (n != number) return Error("mismatched end of group");
        return absl::OkStatus();
      }
      std::string_view skipped;
      uint64_t v = 0;
      switch (type) {
        case kVarint:
          RETURN_IF_ERROR(Varint(&v));
          break;
        case kFixed64:
          RETURN_IF_ERROR(Take(8, &skipped));
          break;
        case kFixed32:
          RETURN_IF_ERROR(Take(4, &skipped));
          break;
        case kLen:
          RETURN_IF_ERROR(Varint(&v));
          RETURN_IF_ERROR(Take(v, &skipped));
          break;
        case kStartGroup:
          RETURN_IF_ERROR(SkipGroup(n, depth + 1));
          break;
        default:
          return Error(absl::StrCat("invalid wire type ", type, " in a group"));
      }
    }
  }

  const char* p_;
  const char* end_;
  const char* what_;
};

// Calls fn(field) for every field of `msg`; a field whose wire type is not
// the one its number has in the schema is ignored by fn (libprotobuf keeps
// it as an unknown field).
template <typename Fn>
absl::Status Walk(std::string_view msg, const char* what, Fn&& fn) {
  Reader r(msg, what);
  while (!r.done()) {
    Field f;
    RETURN_IF_ERROR(r.Next(&f));
    RETURN_IF_ERROR(fn(f));
  }
  return absl::OkStatus();
}

bool IsLen(const Field& f) { return f.type == kLen; }
bool IsVarint(const Field& f) { return f.type == kVarint; }
void SetString(const Field& f, std::string* out) {
  if (IsLen(f)) out->assign(f.bytes.data(), f.bytes.size());
}
void AddString(const Field& f, std::vector<std::string>* out) {
  if (IsLen(f)) out->emplace_back(f.bytes);
}
// int32 on the wire is a varint of the sign-extended value; libprotobuf keeps
// the low 32 bits.
int32_t Int32(const Field& f) { return static_cast<int32_t>(static_cast<uint32_t>(f.varint)); }

RawNumber Number(int64_t v) {
  RawNumber n;
  n.present = true;
  n.value = v;
  n.text = std::to_string(v);
  return n;
}

struct MetaOut {
  std::string* ns;
  std::string* name;
  std::string* uid;
  std::string* resource_version;
  std::string* service_name;  // label kubernetes.io/service-name, or null
  bool* initial_events_end;
};

// A map<string,string> entry: key 1, value 2.
absl::Status MapEntry(std::string_view entry, std::string* key, std::string* value) {
  return Walk(entry, "map entry", [&](const Field& f) {
    if (f.number == 1)
      SetString(f, key);
    else if (f.number == 2)
      SetString(f, value);
    return absl::OkStatus();
  });
}

absl::Status DecodeMeta(std::string_view msg, const MetaOut& out) {
  return Walk(msg, "ObjectMeta", [&](const Field& f) -> absl::Status {
    switch (f.number) {
      case 1:
        SetString(f, out.name);
        break;
      case 3:
        SetString(f, out.ns);
        break;
      case 4:
        SetString(f, out.uid);
        break;
      case 5:
        SetString(f, out.resource_version);
        break;
      case 10:
      case 11:
        if (IsLen(f)) {
          std::string key, value;
          RETURN_IF_ERROR(MapEntry(f.bytes, &key, &value));
          if (f.number == 10 && out.service_name && key == "kubernetes.io/service-name")
            *out.service_name = value;
          if (f.number == 11 && key == "k8s.io/initial-events-end") *out.initial_events_end = value == "true";
        }
        break;
      default:
        break;
    }
    return absl::OkStatus();
  });
}

absl::Status DecodeServicePort(std::string_view msg, RawServicePort* p) {
  int32_t port = 0, node_port = 0;
  RETURN_IF_ERROR(Walk(msg, "ServicePort", [&](const Field& f) {
    if (f.number == 1)
      SetString(f, &p->name);
    else if (f.number == 2)
      SetString(f, &p->protocol);
    else if (f.number == 4 && IsVarint(f))
      port = Int32(f);
    else if (f.number == 6 && IsVarint(f))
      node_port = Int32(f);
    return absl::OkStatus();
  }));
  p->port = Number(port);  // proto3: an absent port is 0, which the parser rejects
  if (node_port != 0) p->node_port = Number(node_port);
  return absl::OkStatus();
}

// SessionAffinityConfig { ClientIPConfig client_ip = 1 { optional int32 timeout_seconds = 1 } }
absl::Status DecodeAffinityConfig(std::string_view msg, RawNumber* timeout) {
  return Walk(msg, "SessionAffinityConfig", [&](const Field& f) -> absl::Status {
    if (f.number != 1 || !IsLen(f)) return absl::OkStatus();
    return Walk(f.bytes, "ClientIPConfig", [&](const Field& g) {
      if (g.number == 1 && IsVarint(g)) *timeout = Number(Int32(g));
      return absl::OkStatus();
    });
  });
}

absl::Status DecodeServiceSpec(std::string_view msg, RawService* r, std::vector<std::string>* cluster_ips,
                               int32_t* health_check_node_port) {
  return Walk(msg, "Service.Spec", [&](const Field& f) -> absl::Status {
    switch (f.number) {
      case 1:
        if (IsLen(f)) {
          RawServicePort p;
          RETURN_IF_ERROR(DecodeServicePort(f.bytes, &p));
          r->ports.push_back(std::move(p));
        }
        break;
      case 3:
        SetString(f, &r->cluster_ip);
        break;
      case 4:
        AddString(f, cluster_ips);
        break;
      case 5:
        SetString(f, &r->type);
        break;
      case 6:
        AddString(f, &r->external_ips);
        break;
      case 7:
        SetString(f, &r->session_affinity);
        break;
      case 10:
        SetString(f, &r->external_traffic_policy);
        break;
      case 11:
        if (IsVarint(f)) *health_check_node_port = Int32(f);
        break;
      case 13:
        if (IsLen(f)) RETURN_IF_ERROR(DecodeAffinityConfig(f.bytes, &r->affinity_timeout));
        break;
      case 14:
        AddString(f, &r->ip_families);
        break;
      case 15:
        SetString(f, &r->ip_family_policy);
        break;
      case 16:
        SetString(f, &r->internal_traffic_policy);
        break;
      default:
        break;
    }
    return absl::OkStatus();
  });
}

// Repeats of the Service (or its spec) on the wire merge, so clusterIPs
// accumulate in r.cluster_ips and the defaults are applied once the whole
// Object is read (FinishService).
absl::Status DecodeService(std::string_view msg, WatchEventView* out, int32_t* health_check_node_port) {
  RawService& r = out->service;
  MetaOut meta{&r.ns, &r.name, &out->uid, &out->resource_version, nullptr, &out->initial_events_end};
  return Walk(msg, "Service", [&](const Field& f) -> absl::Status {
    if (f.number == 3 && IsLen(f)) return DecodeMeta(f.bytes, meta);
    if (f.number == 4 && IsLen(f))
      return DecodeServiceSpec(f.bytes, &r, &r.cluster_ips, health_check_node_port);
    return absl::OkStatus();
  });
}

void FinishService(RawService* r, int32_t health_check_node_port) {
  // As the proto path: clusterIPs, else the single clusterIP.
  if (r->cluster_ips.empty() && !r->cluster_ip.empty()) r->cluster_ips.push_back(r->cluster_ip);
  if (health_check_node_port != 0) r->health_check_node_port = Number(health_check_node_port);
}

absl::Status DecodeEndpoint(std::string_view msg, RawEndpoint* e) {
  return Walk(msg, "Endpoint", [&](const Field& f) -> absl::Status {
    if (f.number == 1)
      AddString(f, &e->addresses);
    else if (f.number == 5)
      SetString(f, &e->node_name);
    else if (f.number == 2 && IsLen(f))
      return Walk(f.bytes, "EndpointConditions", [&](const Field& c) {
        if (IsVarint(c)) {
          if (c.number == 1)
            e->ready = c.varint != 0;
          else if (c.number == 2)
            e->serving = c.varint != 0;
          else if (c.number == 3)
            e->terminating = c.varint != 0;
        }
        return absl::OkStatus();
      });
    return absl::OkStatus();
  });
}

absl::Status DecodeEndpointPort(std::string_view msg, RawEndpointPort* p) {
  return Walk(msg, "EndpointPort", [&](const Field& f) {
    if (f.number == 1)
      SetString(f, &p->name);
    else if (f.number == 2)
      SetString(f, &p->protocol);
    else if (f.number == 3 && IsVarint(f))
      p->port = Number(Int32(f));
    return absl::OkStatus();
  });
}

absl::Status DecodeEndpointSlice(std::string_view msg, WatchEventView* out) {
  RawEndpointSlice& r = out->slice;
  MetaOut meta{&r.ns, &r.name, &out->uid, &out->resource_version, &r.service_name, &out->initial_events_end};
  return Walk(msg, "EndpointSlice", [&](const Field& f) -> absl::Status {
    if (!IsLen(f)) return absl::OkStatus();
    switch (f.number) {
      case 3:
        return DecodeMeta(f.bytes, meta);
      case 4:
        SetString(f, &r.address_type);
        break;
      case 5: {
        RawEndpoint e;
        RETURN_IF_ERROR(DecodeEndpoint(f.bytes, &e));
        r.endpoints.push_back(std::move(e));
        break;
      }
      case 6: {
        RawEndpointPort p;
        RETURN_IF_ERROR(DecodeEndpointPort(f.bytes, &p));
        r.ports.push_back(std::move(p));
        break;
      }
      default:
        break;
    }
    return absl::OkStatus();
  });
}

// ---------------------------------------------------------------- encoding

class Writer {
 public:
  void Varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  void Tag(uint32_t field, int type) {
    Varint((static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(type));
  }
  // proto3: empty strings and zero scalars are not written.
  void String(uint32_t field, std::string_view s) {
    if (s.empty()) return;
    Bytes(field, s);
  }
  void Bytes(uint32_t field, std::string_view s) {
    Tag(field, kLen);
    Varint(s.size());
    out_.append(s.data(), s.size());
  }
  void Bool(uint32_t field, bool b) {
    if (!b) return;
    Tag(field, kVarint);
    Varint(1);
  }
  void Int(uint32_t field, int64_t v) {
    if (v == 0) return;
    Tag(field, kVarint);
    Varint(static_cast<uint64_t>(v));
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// Object fields only; repeats of the Object merge into `out`, so the
// Service defaults wait for FinishObject.
absl::Status DecodeObjectFields(std::string_view msg, WatchEventView* out, int32_t& health_check_node_port) {
  return Walk(msg, "Object", [&](const Field& f) -> absl::Status {
    // Members of the `kind` oneof are fields 1..16; others are unknown.
    if (!IsLen(f) || f.number < 1 || f.number > 16) return absl::OkStatus();
    // A oneof: the last member on the wire wins, repeats of it merge.
    WatchEventView::Kind kind = f.number == 4   ? WatchEventView::Kind::kService
                                : f.number == 5 ? WatchEventView::Kind::kEndpointSlice
                                                : WatchEventView::Kind::kNone;
    if (kind != out->kind) {
      health_check_node_port = 0;
      out->kind = kind;
      out->service = RawService{};
      out->slice = RawEndpointSlice{};
      out->uid.clear();
      out->resource_version.clear();
      out->initial_events_end = false;
    }
    if (kind == WatchEventView::Kind::kService) return DecodeService(f.bytes, out, &health_check_node_port);
    if (kind == WatchEventView::Kind::kEndpointSlice) return DecodeEndpointSlice(f.bytes, out);
    return absl::OkStatus();
  });
}

void FinishObject(WatchEventView* out, int32_t health_check_node_port) {
  if (out->kind == WatchEventView::Kind::kService) FinishService(&out->service, health_check_node_port);
}

}  // namespace

absl::Status DecodeObject(std::string_view msg, WatchEventView* out) {
  int32_t health_check_node_port = 0;
  RETURN_IF_ERROR(DecodeObjectFields(msg, out, health_check_node_port));
  FinishObject(out, health_check_node_port);
  return absl::OkStatus();
}

absl::StatusOr<WatchEventView> DecodeWatchEvent(std::string_view msg) {
  WatchEventView ev;
  int32_t health_check_node_port = 0;
  RETURN_IF_ERROR(Walk(msg, "WatchEvent", [&](const Field& f) -> absl::Status {
    if (f.number == 1)
      SetString(f, &ev.type);
    else if (f.number == 2 && IsLen(f))
      return DecodeObjectFields(f.bytes, &ev, health_check_node_port);
    else if (f.number == 3 && IsVarint(f))
      ev.error_code = Int32(f);
    else if (f.number == 4)
      SetString(f, &ev.error_message);
    return absl::OkStatus();
  }));
  FinishObject(&ev, health_check_node_port);
  return ev;
}

std::string EncodeWatchRequest(const WatchRequestFields& req) {
  Writer w;
  w.String(1, req.resource);
  w.String(5, req.resource_version);
  w.Bool(6, req.allow_watch_bookmarks);
  w.Bool(8, req.send_initial_events);
  return w.Take();
}

std::string EncodeCreateEventRequest(const EventFields& ev) {
  Writer meta;
  meta.String(1, ev.name);
  meta.String(3, ev.ns);
  Writer ref;  // ObjectReference
  ref.String(1, "Service");
  ref.String(2, ev.involved_ns);
  ref.String(3, ev.involved_name);
  ref.String(4, ev.involved_uid);
  ref.String(5, "v1");
  ref.String(6, ev.involved_resource_version);
  Writer source;  // EventSource
  source.String(1, ev.component);
  Writer event;
  event.String(1, "v1");
  event.String(2, "Event");
  event.Bytes(3, meta.Take());
  event.Bytes(4, ref.Take());
  event.String(5, ev.reason);
  event.String(6, ev.message);
  event.Bytes(7, source.Take());
  event.String(8, ev.timestamp);
  event.String(9, ev.timestamp);
  event.Int(10, 1);
  event.String(11, ev.type);
  event.String(13, ev.component);
  Writer object;
  object.Bytes(9, event.Take());
  Writer req;
  req.String(1, "events");
  req.String(2, ev.ns);
  req.Bytes(3, object.Take());
  return req.Take();
}

}  // namespace skiff::proxy::wire
