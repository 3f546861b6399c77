#include "skiff/apiserver/validation.h"

#include <gtest/gtest.h>

namespace skiff::apiserver {
namespace {

Object ValidPod() {
  Object o;
  auto* p = o.mutable_pod();
  p->mutable_metadata()->set_name("web");
  p->mutable_metadata()->set_namespace_("default");
  auto* c = p->mutable_spec()->add_containers();
  c->set_name("app");
  c->set_image("nginx:1.25");
  ApplyDefaults(&o);
  return o;
}

std::string Message(const Object& o, const Object* old = nullptr) {
  const ResourceInfo* info = ResourceForObject(o);
  FieldErrors errs = Validate(o, old);
  if (errs.empty()) return "";
  return std::string(InvalidError(info->kind, Meta(o).name(), errs).message());
}

TEST(Validation, AcceptsAValidPod) { EXPECT_EQ(Message(ValidPod()), ""); }

TEST(Validation, RequiresTheImage) {
  Object o = ValidPod();
  o.mutable_pod()->mutable_spec()->mutable_containers(0)->clear_image();
  EXPECT_EQ(Message(o), "Pod \"web\" is invalid: spec.containers[0].image: Required value");
}

TEST(Validation, RequiresContainers) {
  Object o = ValidPod();
  o.mutable_pod()->mutable_spec()->clear_containers();
  EXPECT_EQ(Message(o), "Pod \"web\" is invalid: spec.containers: Required value");
}

TEST(Validation, RequiresANameOrGenerateName) {
  Object o = ValidPod();
  o.mutable_pod()->mutable_metadata()->clear_name();
  EXPECT_EQ(Message(o), "Pod \"\" is invalid: metadata.name: Required value: name or generateName is required");
}

TEST(Validation, RejectsANameThatIsNotADns1123Subdomain) {
  Object o = ValidPod();
  o.mutable_pod()->mutable_metadata()->set_name("Web_1");
  EXPECT_EQ(Message(o),
            "Pod \"Web_1\" is invalid: metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain must "
            "consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
            "character (e.g. 'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')");
}

TEST(Validation, RejectsAContainerNameThatIsNotADns1123Label) {
  Object o = ValidPod();
  o.mutable_pod()->mutable_spec()->mutable_containers(0)->set_name("a.b");
  EXPECT_EQ(Message(o),
            "Pod \"web\" is invalid: spec.containers[0].name: Invalid value: \"a.b\": a lowercase RFC 1123 label must "
            "consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric "
            "character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')");
}

TEST(Validation, RejectsALongName) {
  Object o = ValidPod();
  o.mutable_pod()->mutable_metadata()->set_name(std::string(254, 'a'));
  EXPECT_NE(Message(o).find("metadata.name: Invalid value: \"" + std::string(254, 'a') +
                            "\": must be no more than 253 characters"),
            std::string::npos);
}

TEST(Validation, RejectsDuplicateContainerNames) {
  Object o = ValidPod();
  *o.mutable_pod()->mutable_spec()->add_containers() = o.pod().spec().containers(0);
  EXPECT_EQ(Message(o), "Pod \"web\" is invalid: spec.containers[1].name: Duplicate value: \"app\"");
}

TEST(Validation, RejectsAContainerPortOutOfRange) {
  Object o = ValidPod();
  auto* port = o.mutable_pod()->mutable_spec()->mutable_containers(0)->add_ports();
  port->set_container_port(70000);
  port->set_protocol("TCP");
  EXPECT_EQ(Message(o),
            "Pod \"web\" is invalid: spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between "
            "1 and 65535, inclusive");
}

TEST(Validation, RequiresAContainerPort) {
  Object o = ValidPod();
  o.mutable_pod()->mutable_spec()->mutable_containers(0)->add_ports()->set_protocol("TCP");
  EXPECT_EQ(Message(o), "Pod \"web\" is invalid: spec.containers[0].ports[0].containerPort: Required value");
}

TEST(Validation, RejectsAnUnknownProtocol) {
  Object o = ValidPod();
  auto* port = o.mutable_pod()->mutable_spec()->mutable_containers(0)->add_ports();
  port->set_container_port(80);
  port->set_protocol("ICMP");
  EXPECT_EQ(Message(o),
            "Pod \"web\" is invalid: spec.containers[0].ports[0].protocol: Unsupported value: \"ICMP\": supported "
            "values: \"SCTP\", \"TCP\", \"UDP\"");
}

TEST(Validation, RejectsAnUnknownRestartPolicy) {
  Object o = ValidPod();
  o.mutable_pod()->mutable_spec()->set_restart_policy("Sometimes");
  EXPECT_EQ(Message(o),
            "Pod \"web\" is invalid: spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: "
            "\"Always\", \"OnFailure\", \"Never\"");
}

TEST(Validation, RejectsAMountOfAnUnknownVolume) {
  Object o = ValidPod();
  auto* m = o.mutable_pod()->mutable_spec()->mutable_containers(0)->add_volume_mounts();
  m->set_name("data");
  m->set_mount_path("/data");
  EXPECT_EQ(Message(o), "Pod \"web\" is invalid: spec.containers[0].volumeMounts[0].name: Not found: \"data\"");
}

TEST(Validation, RejectsNegativeGracePeriod) {
  Object o = ValidPod();
  o.mutable_pod()->mutable_spec()->set_termination_grace_period_seconds(-1);
  EXPECT_EQ(Message(o),
            "Pod \"web\" is invalid: spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or "
            "equal to 0");
}

TEST(Validation, RejectsABadLabelValue) {
  Object o = ValidPod();
  (*o.mutable_pod()->mutable_metadata()->mutable_labels())["app"] = "-bad";
  EXPECT_EQ(Message(o),
            "Pod \"web\" is invalid: metadata.labels: Invalid value: \"-bad\": a valid label must be an empty string "
            "or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
            "character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is "
            "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')");
}

TEST(Validation, RejectsABadLabelKey) {
  Object o = ValidPod();
  (*o.mutable_pod()->mutable_metadata()->mutable_labels())["bad key"] = "x";
  EXPECT_EQ(Message(o),
            "Pod \"web\" is invalid: metadata.labels: Invalid value: \"bad key\": name part must consist of "
            "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
            "'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')");
}

TEST(Validation, AcceptsAPrefixedLabelKey) {
  Object o = ValidPod();
  (*o.mutable_pod()->mutable_metadata()->mutable_labels())["app.kubernetes.io/name"] = "web";
  EXPECT_EQ(Message(o), "");
}

TEST(Validation, ListsSeveralErrorsInBrackets) {
  Object o = ValidPod();
  o.mutable_pod()->mutable_spec()->mutable_containers(0)->clear_image();
  o.mutable_pod()->mutable_spec()->set_restart_policy("x");
  EXPECT_EQ(Message(o),
            "Pod \"web\" is invalid: [spec.containers[0].image: Required value, spec.restartPolicy: Unsupported "
            "value: \"x\": supported values: \"Always\", \"OnFailure\", \"Never\"]");
}

TEST(Validation, ForbidsChangingPodSpecBeyondImages) {
  Object old = ValidPod();
  Object o = old;
  o.mutable_pod()->mutable_spec()->mutable_containers(0)->set_image("nginx:1.26");
  EXPECT_EQ(Message(o, &old), "");
  o.mutable_pod()->mutable_spec()->mutable_containers(0)->add_args("x");
  EXPECT_NE(Message(o, &old).find("spec: Forbidden: pod updates may not change fields other than"), std::string::npos);
}

TEST(Validation, AllowsBindingOnceButNotMovingAPod) {
  Object old = ValidPod();
  Object o = old;
  o.mutable_pod()->mutable_spec()->set_node_name("n1");
  EXPECT_EQ(Message(o, &old), "");
  Object moved = o;
  moved.mutable_pod()->mutable_spec()->set_node_name("n2");
  EXPECT_EQ(Message(moved, &o), "Pod \"web\" is invalid: spec.nodeName: Invalid value: \"n2\": field is immutable once set");
}

Object ValidService() {
  Object o;
  auto* s = o.mutable_service();
  s->mutable_metadata()->set_name("web");
  s->mutable_metadata()->set_namespace_("default");
  auto* p = s->mutable_spec()->add_ports();
  p->set_port(80);
  ApplyDefaults(&o);
  return o;
}

TEST(Validation, ServiceNamesAreDns1035Labels) {
  Object o = ValidService();
  o.mutable_service()->mutable_metadata()->set_name("1web");
  EXPECT_EQ(Message(o),
            "Service \"1web\" is invalid: metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of "
            "lower case alphanumeric characters or '-', start with an alphabetic character, and end with an "
            "alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
            "'[a-z]([-a-z0-9]*[a-z0-9])?')");
}

TEST(Validation, ServiceNeedsPorts) {
  Object o = ValidService();
  o.mutable_service()->mutable_spec()->clear_ports();
  EXPECT_EQ(Message(o), "Service \"web\" is invalid: spec.ports: Required value");
}

TEST(Validation, ServicePortOutOfRange) {
  Object o = ValidService();
  o.mutable_service()->mutable_spec()->mutable_ports(0)->set_port(0);
  EXPECT_EQ(Message(o), "Service \"web\" is invalid: spec.ports[0].port: Required value");
  o.mutable_service()->mutable_spec()->mutable_ports(0)->set_port(65536);
  EXPECT_EQ(Message(o),
            "Service \"web\" is invalid: spec.ports[0].port: Invalid value: 65536: must be between 1 and 65535, "
            "inclusive");
}

TEST(Validation, ServiceWithSeveralPortsNeedsNames) {
  Object o = ValidService();
  auto* p = o.mutable_service()->mutable_spec()->add_ports();
  p->set_port(443);
  p->set_protocol("TCP");
  p->set_target_port("443");
  EXPECT_EQ(Message(o),
            "Service \"web\" is invalid: [spec.ports[0].name: Required value, spec.ports[1].name: Required value]");
}

TEST(Validation, ServiceTypeMustBeKnown) {
  Object o = ValidService();
  o.mutable_service()->mutable_spec()->set_type("Magic");
  EXPECT_EQ(Message(o),
            "Service \"web\" is invalid: spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", "
            "\"ExternalName\", \"LoadBalancer\", \"NodePort\"");
}

TEST(Validation, SessionAffinityMustBeKnown) {
  Object o = ValidService();
  o.mutable_service()->mutable_spec()->set_session_affinity("Sticky");
  EXPECT_EQ(Message(o),
            "Service \"web\" is invalid: spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: "
            "\"ClientIP\", \"None\"");
}

TEST(Validation, ClusterIPIsImmutable) {
  Object old = ValidService();
  old.mutable_service()->mutable_spec()->set_cluster_ip("10.96.0.10");
  Object o = old;
  o.mutable_service()->mutable_spec()->set_cluster_ip("10.96.0.11");
  EXPECT_EQ(Message(o, &old), "Service \"web\" is invalid: spec.clusterIP: Invalid value: \"10.96.0.11\": field is immutable");
}

TEST(Validation, NodePortNotAllowedOnClusterIPServices) {
  Object o = ValidService();
  o.mutable_service()->mutable_spec()->mutable_ports(0)->set_node_port(30080);
  EXPECT_EQ(Message(o),
            "Service \"web\" is invalid: spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'");
}

Object ValidDeployment() {
  Object o;
  auto* d = o.mutable_deployment();
  d->mutable_metadata()->set_name("web");
  d->mutable_metadata()->set_namespace_("default");
  (*d->mutable_spec()->mutable_selector()->mutable_match_labels())["app"] = "web";
  (*d->mutable_spec()->mutable_template_()->mutable_metadata()->mutable_labels())["app"] = "web";
  auto* c = d->mutable_spec()->mutable_template_()->mutable_spec()->add_containers();
  c->set_name("app");
  c->set_image("nginx");
  ApplyDefaults(&o);
  return o;
}

TEST(Validation, DeploymentSelectorIsRequired) {
  Object o = ValidDeployment();
  o.mutable_deployment()->mutable_spec()->clear_selector();
  EXPECT_EQ(Message(o), "Deployment.apps \"web\" is invalid: spec.selector: Required value");
}

TEST(Validation, DeploymentSelectorMustMatchTemplate) {
  Object o = ValidDeployment();
  (*o.mutable_deployment()->mutable_spec()->mutable_template_()->mutable_metadata()->mutable_labels())["app"] = "db";
  EXPECT_EQ(Message(o),
            "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: "
            "map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`");
}

TEST(Validation, DeploymentSelectorIsImmutable) {
  Object old = ValidDeployment();
  Object o = old;
  (*o.mutable_deployment()->mutable_spec()->mutable_selector()->mutable_match_labels())["app"] = "other";
  (*o.mutable_deployment()->mutable_spec()->mutable_template_()->mutable_metadata()->mutable_labels())["app"] = "other";
  EXPECT_EQ(Message(o, &old),
            "Deployment.apps \"web\" is invalid: spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"other\"}}: field is immutable");
}

TEST(Validation, DeploymentReplicasNotNegative) {
  Object o = ValidDeployment();
  o.mutable_deployment()->mutable_spec()->set_replicas(-1);
  EXPECT_EQ(Message(o), "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0");
}

TEST(Validation, ConfigMapKeysAreChecked) {
  Object o;
  o.mutable_config_map()->mutable_metadata()->set_name("cfg");
  o.mutable_config_map()->mutable_metadata()->set_namespace_("default");
  (*o.mutable_config_map()->mutable_data())["bad key"] = "v";
  EXPECT_EQ(Message(o),
            "ConfigMap \"cfg\" is invalid: data[bad key]: Invalid value: \"bad key\": a valid config key must consist "
            "of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used "
            "for validation is '[-._a-zA-Z0-9]+')");
}

TEST(Validation, NamespaceNamesAreLabels) {
  Object o;
  o.mutable_namespace_()->mutable_metadata()->set_name("a.b");
  EXPECT_NE(Message(o).find("Namespace \"a.b\" is invalid: metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label"),
            std::string::npos);
}

TEST(Validation, ProbeNeedsAHandler) {
  Object o = ValidPod();
  o.mutable_pod()->mutable_spec()->mutable_containers(0)->mutable_liveness_probe();
  ApplyDefaults(&o);
  EXPECT_EQ(Message(o), "Pod \"web\" is invalid: spec.containers[0].livenessProbe: Required value: must specify a handler type");
}

TEST(Validation, NamespaceIsImmutable) {
  Object old = ValidPod();
  Object o = old;
  o.mutable_pod()->mutable_metadata()->set_namespace_("other");
  EXPECT_EQ(Message(o, &old), "Pod \"web\" is invalid: metadata.namespace: Invalid value: \"other\": field is immutable");
}

TEST(Validation, RoleRefIsImmutable) {
  Object old;
  auto* b = old.mutable_role_binding();
  b->mutable_metadata()->set_name("rb");
  b->mutable_metadata()->set_namespace_("default");
  b->mutable_role_ref()->set_kind("ClusterRole");
  b->mutable_role_ref()->set_name("view");
  Object o = old;
  o.mutable_role_binding()->mutable_role_ref()->set_name("edit");
  EXPECT_EQ(Message(o, &old), "RoleBinding.rbac.authorization.k8s.io \"rb\" is invalid: roleRef: Invalid value: {\"kind\":\"ClusterRole\",\"name\":\"edit\"}: field is immutable");
}

}  // namespace
}  // namespace skiff::apiserver

namespace skiff::apiserver {
namespace {
TEST(Validation, RbacNamesArePathSegments) {
  Object o;
  o.mutable_cluster_role()->mutable_metadata()->set_name("system:node");
  EXPECT_EQ(Message(o), "");
  o.mutable_cluster_role()->mutable_metadata()->set_name("a/b");
  EXPECT_EQ(Message(o), "ClusterRole.rbac.authorization.k8s.io \"a/b\" is invalid: metadata.name: Invalid value: \"a/b\": may not contain '/'");
}
}  // namespace
}  // namespace skiff::apiserver
