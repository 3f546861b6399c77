// The hand-written protobuf reader of skiff-proxy's API source against
// libprotobuf: real Services, EndpointSlices and WatchEvents encoded by the
// generated classes must decode to the same model as the proto path
// (ModelFromObjects), unknown and mistyped fields included, and truncated or
// corrupted input must fail cleanly exactly where libprotobuf fails.
#include <random>

#include "api_wire.h"
#include "gtest/gtest.h"
#include "proto_model.h"
#include "skiff/api/v1/api.pb.h"

namespace skiff::proxy {
namespace {

namespace v1 = ::skiff::api::v1;

v1::Object FullService() {
  v1::Object o;
  auto* s = o.mutable_service();
  s->set_api_version("v1");
  s->set_kind("Service");
  auto* m = s->mutable_metadata();
  m->set_name("web");
  m->set_namespace_("shop");
  m->set_uid("uid-1");
  m->set_resource_version("42");
  (*m->mutable_labels())["app"] = "web";
  (*m->mutable_annotations())["note"] = "x";
  m->add_finalizers("f");
  auto* spec = s->mutable_spec();
  spec->set_type("LoadBalancer");
  spec->set_cluster_ip("10.96.0.10");
  spec->add_cluster_ips("10.96.0.10");
  spec->add_cluster_ips("fd00:96::10");
  spec->add_ip_families("IPv4");
  spec->add_ip_families("IPv6");
  spec->set_ip_family_policy("PreferDualStack");
  spec->add_external_ips("203.0.113.10");
  spec->set_session_affinity("ClientIP");
  spec->mutable_session_affinity_config()->mutable_client_ip()->set_timeout_seconds(600);
  spec->set_external_traffic_policy("Local");
  spec->set_internal_traffic_policy("Local");
  spec->set_health_check_node_port(31000);
  (*spec->mutable_selector())["app"] = "web";
  spec->set_load_balancer_ip("198.51.100.1");
  auto* p = spec->add_ports();
  p->set_name("http");
  p->set_port(80);
  p->set_target_port("8080");
  p->set_node_port(30080);
  p->set_app_protocol("http");
  p = spec->add_ports();
  p->set_name("dns");
  p->set_protocol("UDP");
  p->set_port(53);
  spec->add_ports()->set_name("zero");  // port 0: skipped
  p = spec->add_ports();
  p->set_name("sctp");
  p->set_protocol("SCTP");
  p->set_port(9);
  p = spec->add_ports();
  p->set_name("negative");
  p->set_port(-1);  // a 10-byte varint
  s->mutable_status()->mutable_load_balancer()->add_ingress()->set_ip("198.51.100.1");
  return o;
}

v1::Object FullSlice() {
  v1::Object o;
  auto* es = o.mutable_endpoint_slice();
  auto* m = es->mutable_metadata();
  m->set_name("web-abc");
  m->set_namespace_("shop");
  m->set_resource_version("43");
  (*m->mutable_labels())["kubernetes.io/service-name"] = "web";
  (*m->mutable_labels())["endpointslice.kubernetes.io/managed-by"] = "x";
  es->set_address_type("IPv4");
  auto* p = es->add_ports();
  p->set_name("http");
  p->set_port(8080);
  p->set_protocol("TCP");
  es->add_ports()->set_name("noport");  // optional port absent
  p = es->add_ports();
  p->set_name("zero");
  p->set_port(0);  // present and 0
  auto* e = es->add_endpoints();
  e->add_addresses("10.244.1.5");
  e->set_node_name("node-a");
  e->set_hostname("h");
  e->mutable_target_ref()->set_name("pod");
  e = es->add_endpoints();
  e->add_addresses("10.244.2.5");
  e->mutable_conditions()->set_ready(false);
  e->mutable_conditions()->set_serving(true);
  e->mutable_conditions()->set_terminating(true);
  e->set_zone("z");
  es->add_endpoints()->add_addresses("not-an-ip");
  return o;
}

// The model our decoder gives for one encoded WatchEvent.
ClusterState Decoded(const std::string& bytes) {
  auto ev = wire::DecodeWatchEvent(bytes);
  EXPECT_TRUE(ev.ok()) << ev.status();
  ClusterState st;
  if (!ev.ok()) return st;
  if (ev->kind == wire::WatchEventView::Kind::kService) AddService(std::move(ev->service), &st);
  if (ev->kind == wire::WatchEventView::Kind::kEndpointSlice) AddEndpointSlice(std::move(ev->slice), &st);
  return st;
}

// The model libprotobuf's parse of the same bytes gives.
ClusterState Reference(const std::string& bytes) {
  v1::WatchEvent ev;
  EXPECT_TRUE(ev.ParseFromString(bytes));
  auto st = ModelFromObjects({ev.object()});
  EXPECT_TRUE(st.ok());
  return st.ok() ? *st : ClusterState{};
}

std::string Event(const char* type, const v1::Object& o) {
  v1::WatchEvent ev;
  ev.set_type(type);
  *ev.mutable_object() = o;
  return ev.SerializeAsString();
}

void ExpectSame(const std::string& bytes) {
  ClusterState ours = Decoded(bytes), ref = Reference(bytes);
  EXPECT_EQ(ours.services, ref.services);
  EXPECT_EQ(ours.endpoint_slices, ref.endpoint_slices);
}

TEST(ApiWire, ServicesAndSlicesDecodeToTheSameModelAsTheProtoPath) {
  std::string svc = Event("ADDED", FullService());
  ClusterState ours = Decoded(svc);
  ASSERT_EQ(ours.services.size(), 1u);
  EXPECT_EQ(ours.services.at("shop/web").ports.size(), 2u);  // http, dns; zero, sctp, -1 skipped
  ExpectSame(svc);
  std::string slice = Event("MODIFIED", FullSlice());
  ours = Decoded(slice);
  ASSERT_EQ(ours.endpoint_slices.size(), 1u);
  EXPECT_EQ(ours.endpoint_slices.at("shop/web-abc").service_name, "web");
  ExpectSame(slice);

  auto ev = wire::DecodeWatchEvent(svc);
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(ev->type, "ADDED");
  EXPECT_EQ(ev->uid, "uid-1");
  EXPECT_EQ(ev->resource_version, "42");
  EXPECT_FALSE(ev->initial_events_end);

  // A Service with only clusterIP (no clusterIPs), and an empty one.
  v1::Object single;
  single.mutable_service()->mutable_metadata()->set_name("one");
  single.mutable_service()->mutable_spec()->set_cluster_ip("10.96.0.11");
  single.mutable_service()->mutable_spec()->add_ports()->set_port(81);
  ExpectSame(Event("ADDED", single));
  v1::Object empty;
  empty.mutable_service()->mutable_metadata()->set_name("empty");
  ExpectSame(Event("ADDED", empty));
}

TEST(ApiWire, UnknownAndMistypedFieldsAreSkippedAsLibprotobufDoes) {
  v1::Object svc = FullService();
  auto add_unknown = [](google::protobuf::Message* m) {
    auto* u = m->GetReflection()->MutableUnknownFields(m);
    u->AddVarint(900, 7);
    u->AddFixed32(901, 1);
    u->AddFixed64(902, 2);
    u->AddLengthDelimited(903, "junk");
    u->AddGroup(904)->AddVarint(1, 1);
  };
  add_unknown(&svc);
  add_unknown(svc.mutable_service());
  add_unknown(svc.mutable_service()->mutable_metadata());
  add_unknown(svc.mutable_service()->mutable_spec());
  add_unknown(svc.mutable_service()->mutable_spec()->mutable_ports(0));
  // Known numbers with the wrong wire type: libprotobuf keeps them as
  // unknown fields, so they change nothing.
  svc.mutable_service()
      ->mutable_spec()
      ->mutable_ports(0)
      ->GetReflection()
      ->MutableUnknownFields(svc.mutable_service()->mutable_spec()->mutable_ports(0))
      ->AddLengthDelimited(4, "not a varint");
  svc.mutable_service()
      ->mutable_spec()
      ->GetReflection()
      ->MutableUnknownFields(svc.mutable_service()->mutable_spec())
      ->AddVarint(3, 12345);  // cluster_ip as a varint
  v1::WatchEvent ev;
  ev.set_type("ADDED");
  *ev.mutable_object() = svc;
  ev.GetReflection()->MutableUnknownFields(&ev)->AddLengthDelimited(77, "x");
  std::string bytes = ev.SerializeAsString();
  ExpectSame(bytes);
  EXPECT_EQ(Decoded(bytes).services, Decoded(Event("ADDED", FullService())).services);

  v1::Object slice = FullSlice();
  add_unknown(slice.mutable_endpoint_slice());
  add_unknown(slice.mutable_endpoint_slice()->mutable_endpoints(1));
  add_unknown(slice.mutable_endpoint_slice()->mutable_endpoints(1)->mutable_conditions());
  add_unknown(slice.mutable_endpoint_slice()->mutable_ports(0));
  ExpectSame(Event("ADDED", slice));
  // Another kind of object (a Pod) is not a Service or a slice.
  v1::Object pod;
  pod.mutable_pod()->mutable_metadata()->set_name("p");
  auto other = wire::DecodeWatchEvent(Event("ADDED", pod));
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->kind, wire::WatchEventView::Kind::kNone);
}

TEST(ApiWire, SplitAndRepeatedFieldsMergeAsLibprotobufDoes) {
  // Protobuf merges a repeated embedded message and concatenates repeated
  // fields however they are split on the wire; the last scalar wins.
  v1::Object a = FullService(), b;
  b.mutable_service()->mutable_spec()->add_cluster_ips("fd00:96::99");
  b.mutable_service()->mutable_spec()->set_type("NodePort");
  b.mutable_service()->mutable_spec()->add_ports()->set_port(8443);
  b.mutable_service()->mutable_metadata()->set_name("renamed");
  std::string bytes = Event("ADDED", a) + Event("", b);  // two WatchEvents concatenated = merged
  ExpectSame(bytes);
  EXPECT_EQ(Decoded(bytes).services.count("shop/renamed"), 1u);
  // A oneof: the last member wins.
  std::string switched = Event("ADDED", FullService()) + Event("", FullSlice());
  ExpectSame(switched);
  EXPECT_TRUE(Decoded(switched).services.empty());
}

TEST(ApiWire, TruncatedOrCorruptedInputFailsCleanlyWhereLibprotobufFails) {
  for (const std::string& full : {Event("ADDED", FullService()), Event("ADDED", FullSlice())}) {
    for (size_t n = 0; n < full.size(); ++n) {
      std::string cut = full.substr(0, n);
      v1::WatchEvent ref;
      bool ref_ok = ref.ParseFromString(cut);
      auto ours = wire::DecodeWatchEvent(cut);
      ASSERT_EQ(ours.ok(), ref_ok) << "prefix of " << n << " bytes: " << ours.status();
      if (!ours.ok()) {
        EXPECT_EQ(ours.status().code(), absl::StatusCode::kInvalidArgument);
        EXPECT_NE(std::string(ours.status().message()).find("malformed"), std::string::npos) << ours.status();
      }
    }
    std::mt19937 rng(7);
    for (int i = 0; i < 3000; ++i) {
      std::string bad = full;
      for (int k = 0; k < 3; ++k) bad[rng() % bad.size()] = static_cast<char>(rng());
      auto ours = wire::DecodeWatchEvent(bad);  // must not crash; either answer is fine
      if (ours.ok()) (void)ours->service.ports.size();
    }
  }
  auto st =
      wire::DecodeWatchEvent(std::string("\x0a\x05"
                                         "AD",
                                         4));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(std::string(st.status().message()).find("runs past the end"), std::string::npos) << st.status();
  st = wire::DecodeWatchEvent(std::string(11, '\xff'));
  ASSERT_FALSE(st.ok());
  st = wire::DecodeWatchEvent(std::string("\x0f", 1));  // wire type 7
  ASSERT_FALSE(st.ok());
  EXPECT_NE(std::string(st.status().message()).find("invalid wire type"), std::string::npos) << st.status();
}

TEST(ApiWire, BookmarksErrorsAndTheInitialEventsEndMarker) {
  v1::WatchEvent bm;
  bm.set_type("BOOKMARK");
  auto* meta = bm.mutable_object()->mutable_endpoint_slice()->mutable_metadata();
  meta->set_resource_version("977");
  (*meta->mutable_annotations())["k8s.io/initial-events-end"] = "true";
  auto ev = wire::DecodeWatchEvent(bm.SerializeAsString());
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(ev->type, "BOOKMARK");
  EXPECT_EQ(ev->resource_version, "977");
  EXPECT_TRUE(ev->initial_events_end);
  v1::WatchEvent err;
  err.set_type("ERROR");
  err.set_error_code(11);
  err.set_error_message("too old resource version: 5 (42)");
  ev = wire::DecodeWatchEvent(err.SerializeAsString());
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(ev->error_code, 11);
  EXPECT_EQ(ev->error_message, "too old resource version: 5 (42)");
}

TEST(ApiWire, RequestsEncodeAsTheGeneratedClassesReadThem) {
  wire::WatchRequestFields w;
  w.resource = "endpointslices";
  w.resource_version = "1234";
  w.send_initial_events = true;
  v1::WatchRequest req;
  ASSERT_TRUE(req.ParseFromString(wire::EncodeWatchRequest(w)));
  EXPECT_EQ(req.resource(), "endpointslices");
  EXPECT_EQ(req.resource_version(), "1234");
  EXPECT_TRUE(req.allow_watch_bookmarks());
  EXPECT_TRUE(req.send_initial_events());
  EXPECT_EQ(req.namespace_(), "");

  wire::EventFields e;
  e.ns = "shop";
  e.name = "web.1a2b";
  e.involved_ns = "shop";
  e.involved_name = "web";
  e.involved_uid = "uid-1";
  e.involved_resource_version = "42";
  e.type = "Warning";
  e.reason = "InvalidServiceSpec";
  e.message = "invalid port 0";
  e.component = "skiff-proxy";
  e.timestamp = "2026-11-22T06:44:28Z";
  v1::CreateRequest c;
  ASSERT_TRUE(c.ParseFromString(wire::EncodeCreateEventRequest(e)));
  EXPECT_EQ(c.resource(), "events");
  EXPECT_EQ(c.namespace_(), "shop");
  ASSERT_TRUE(c.object().has_event());
  const auto& ev = c.object().event();
  EXPECT_EQ(ev.metadata().name(), "web.1a2b");
  EXPECT_EQ(ev.metadata().namespace_(), "shop");
  EXPECT_EQ(ev.involved_object().kind(), "Service");
  EXPECT_EQ(ev.involved_object().api_version(), "v1");
  EXPECT_EQ(ev.involved_object().name(), "web");
  EXPECT_EQ(ev.involved_object().uid(), "uid-1");
  EXPECT_EQ(ev.involved_object().resource_version(), "42");
  EXPECT_EQ(ev.reason(), "InvalidServiceSpec");
  EXPECT_EQ(ev.message(), "invalid port 0");
  EXPECT_EQ(ev.type(), "Warning");
  EXPECT_EQ(ev.count(), 1);
  EXPECT_EQ(ev.source().component(), "skiff-proxy");
  EXPECT_EQ(ev.reporting_component(), "skiff-proxy");
  EXPECT_EQ(ev.first_timestamp(), "2026-11-22T06:44:28Z");
}

}  // namespace
}  // namespace skiff::proxy
