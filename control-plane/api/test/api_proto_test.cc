// Round trips of the API protos: binary wire format and Kubernetes-shaped JSON.
#include <google/protobuf/util/json_util.h>

#include "gtest/gtest.h"
#include "skiff/api/v1/api.pb.h"
#include "skiff/api/v1/objects.pb.h"

namespace skiff::api::v1 {
namespace {

using ::skiff::api::v1::Object;
using ::skiff::api::v1::Pod;

TEST(ApiProto, PodRoundTripsThroughTheWireFormat) {
  Object obj;
  Pod* pod = obj.mutable_pod();
  pod->set_api_version("v1");
  pod->set_kind("Pod");
  pod->mutable_metadata()->set_name("web-0");
  (*pod->mutable_metadata()->mutable_labels())["app"] = "web";
  auto* c = pod->mutable_spec()->add_containers();
  c->set_name("web");
  c->set_image("busybox");
  c->mutable_readiness_probe()->mutable_http_get()->set_port("8080");
  pod->mutable_status()->set_pod_ip("10.244.1.5");

  std::string wire;
  ASSERT_TRUE(obj.SerializeToString(&wire));
  Object back;
  ASSERT_TRUE(back.ParseFromString(wire));
  ASSERT_TRUE(back.has_pod());
  EXPECT_EQ(back.pod().metadata().labels().at("app"), "web");
  EXPECT_EQ(back.pod().spec().containers(0).readiness_probe().http_get().port(), "8080");
  EXPECT_EQ(back.pod().status().pod_ip(), "10.244.1.5");
}

TEST(ApiProto, JsonNamesAreKubernetesNames) {
  const std::string json = R"({
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"clusterIP": "10.96.0.10", "type": "NodePort",
             "externalTrafficPolicy": "Local",
             "ports": [{"port": 80, "targetPort": "8080", "nodePort": 30080}],
             "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}})";
  skiff::api::v1::Service svc;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &svc, opts).ok());
  EXPECT_EQ(svc.spec().cluster_ip(), "10.96.0.10");
  EXPECT_EQ(svc.spec().ports(0).node_port(), 30080);
  EXPECT_EQ(svc.spec().session_affinity_config().client_ip().timeout_seconds(), 60);

  std::string out;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(svc, &out).ok());
  EXPECT_NE(out.find("\"clusterIP\":\"10.96.0.10\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"externalTrafficPolicy\":\"Local\""), std::string::npos) << out;

  // An unknown field is refused, as kubectl's strict validation does.
  EXPECT_FALSE(google::protobuf::util::JsonStringToMessage(R"({"spec": {"clusterIp": "x"}})", &svc, opts).ok());
}

}  // namespace
}  // namespace skiff::api::v1
