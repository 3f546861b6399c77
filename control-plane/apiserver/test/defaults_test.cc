#include <gtest/gtest.h>

#include "skiff/apiserver/validation.h"

namespace skiff::apiserver {
namespace {

TEST(Defaults, PodGetsKubernetesDefaults) {
  Object o;
  auto* c = o.mutable_pod()->mutable_spec()->add_containers();
  c->set_name("a");
  c->set_image("nginx");
  auto* port = c->add_ports();
  port->set_container_port(80);
  c->mutable_liveness_probe()->mutable_http_get()->set_port("80");
  ApplyDefaults(&o);
  const auto& s = o.pod().spec();
  EXPECT_EQ(s.restart_policy(), "Always");
  EXPECT_EQ(s.dns_policy(), "ClusterFirst");
  EXPECT_EQ(s.termination_grace_period_seconds(), 30);
  EXPECT_EQ(s.scheduler_name(), "default-scheduler");
  EXPECT_EQ(s.containers(0).image_pull_policy(), "Always");
  EXPECT_EQ(s.containers(0).termination_message_path(), "/dev/termination-log");
  EXPECT_EQ(s.containers(0).ports(0).protocol(), "TCP");
  const auto& p = s.containers(0).liveness_probe();
  EXPECT_EQ(p.timeout_seconds(), 1);
  EXPECT_EQ(p.period_seconds(), 10);
  EXPECT_EQ(p.success_threshold(), 1);
  EXPECT_EQ(p.failure_threshold(), 3);
  EXPECT_EQ(p.http_get().scheme(), "HTTP");
  EXPECT_EQ(p.http_get().path(), "/");
}

TEST(Defaults, ImagePullPolicyIfNotPresentForATaggedImage) {
  Object o;
  auto* c = o.mutable_pod()->mutable_spec()->add_containers();
  c->set_image("registry:5000/nginx:1.25");
  ApplyDefaults(&o);
  EXPECT_EQ(o.pod().spec().containers(0).image_pull_policy(), "IfNotPresent");
  Object l;
  l.mutable_pod()->mutable_spec()->add_containers()->set_image("registry:5000/nginx");
  ApplyDefaults(&l);
  EXPECT_EQ(l.pod().spec().containers(0).image_pull_policy(), "Always");
}

TEST(Defaults, KeepsExplicitValues) {
  Object o;
  o.mutable_pod()->mutable_spec()->set_restart_policy("Never");
  o.mutable_pod()->mutable_spec()->set_termination_grace_period_seconds(0);
  ApplyDefaults(&o);
  EXPECT_EQ(o.pod().spec().restart_policy(), "Never");
  EXPECT_EQ(o.pod().spec().termination_grace_period_seconds(), 0);
}

TEST(Defaults, ServiceGetsTypeAffinityProtocolAndTargetPort) {
  Object o;
  o.mutable_service()->mutable_spec()->add_ports()->set_port(80);
  ApplyDefaults(&o);
  const auto& s = o.service().spec();
  EXPECT_EQ(s.type(), "ClusterIP");
  EXPECT_EQ(s.session_affinity(), "None");
  EXPECT_EQ(s.ports(0).protocol(), "TCP");
  EXPECT_EQ(s.ports(0).target_port(), "80");
  EXPECT_EQ(s.internal_traffic_policy(), "Cluster");
}

TEST(Defaults, NodePortServiceGetsExternalTrafficPolicy) {
  Object o;
  o.mutable_service()->mutable_spec()->set_type("NodePort");
  ApplyDefaults(&o);
  EXPECT_EQ(o.service().spec().external_traffic_policy(), "Cluster");
}

TEST(Defaults, DeploymentGetsStrategyReplicasAndHistory) {
  Object o;
  o.mutable_deployment()->mutable_spec();
  ApplyDefaults(&o);
  const auto& s = o.deployment().spec();
  EXPECT_EQ(s.replicas(), 1);
  EXPECT_EQ(s.strategy().type(), "RollingUpdate");
  EXPECT_EQ(s.strategy().rolling_update().max_unavailable(), "25%");
  EXPECT_EQ(s.strategy().rolling_update().max_surge(), "25%");
  EXPECT_EQ(s.revision_history_limit(), 10);
  EXPECT_EQ(s.progress_deadline_seconds(), 600);
  EXPECT_EQ(s.template_().spec().restart_policy(), "Always");
}

TEST(Defaults, ExplicitZeroReplicasStays) {
  Object o;
  o.mutable_deployment()->mutable_spec()->set_replicas(0);
  ApplyDefaults(&o);
  EXPECT_EQ(o.deployment().spec().replicas(), 0);
}

TEST(Defaults, SecretStringDataMergesIntoData) {
  Object o;
  (*o.mutable_secret()->mutable_string_data())["k"] = "v";
  ApplyDefaults(&o);
  EXPECT_EQ(o.secret().type(), "Opaque");
  EXPECT_EQ(o.secret().data().at("k"), "v");
  EXPECT_TRUE(o.secret().string_data().empty());
}

}  // namespace
}  // namespace skiff::apiserver
