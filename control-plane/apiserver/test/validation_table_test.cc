// One case per remaining validation rule, each with its exact message.
#include <gtest/gtest.h>

#include <functional>

#include "skiff/apiserver/validation.h"

namespace skiff::apiserver {
namespace {

Object Base(const std::string& kind) {
  Object o;
  if (kind == "Pod") {
    o.mutable_pod()->mutable_metadata()->set_name("p");
    o.mutable_pod()->mutable_metadata()->set_namespace_("default");
    auto* c = o.mutable_pod()->mutable_spec()->add_containers();
    c->set_name("app");
    c->set_image("busybox");
  } else if (kind == "Service") {
    o.mutable_service()->mutable_metadata()->set_name("s");
    o.mutable_service()->mutable_metadata()->set_namespace_("default");
    o.mutable_service()->mutable_spec()->add_ports()->set_port(80);
  } else if (kind == "Deployment") {
    auto* d = o.mutable_deployment();
    d->mutable_metadata()->set_name("d");
    d->mutable_metadata()->set_namespace_("default");
    (*d->mutable_spec()->mutable_selector()->mutable_match_labels())["app"] = "d";
    (*d->mutable_spec()->mutable_template_()->mutable_metadata()->mutable_labels())["app"] = "d";
    auto* c = d->mutable_spec()->mutable_template_()->mutable_spec()->add_containers();
    c->set_name("app");
    c->set_image("busybox");
  } else if (kind == "Node") {
    o.mutable_node()->mutable_metadata()->set_name("n");
  } else if (kind == "EndpointSlice") {
    o.mutable_endpoint_slice()->mutable_metadata()->set_name("e");
    o.mutable_endpoint_slice()->mutable_metadata()->set_namespace_("default");
    o.mutable_endpoint_slice()->set_address_type("IPv4");
  } else if (kind == "Lease") {
    o.mutable_lease()->mutable_metadata()->set_name("l");
    o.mutable_lease()->mutable_metadata()->set_namespace_("default");
  } else if (kind == "Event") {
    o.mutable_event()->mutable_metadata()->set_name("ev");
    o.mutable_event()->mutable_metadata()->set_namespace_("default");
    o.mutable_event()->mutable_involved_object()->set_kind("Pod");
  } else if (kind == "RoleBinding") {
    o.mutable_role_binding()->mutable_metadata()->set_name("rb");
    o.mutable_role_binding()->mutable_metadata()->set_namespace_("default");
    o.mutable_role_binding()->mutable_role_ref()->set_kind("Role");
    o.mutable_role_binding()->mutable_role_ref()->set_name("r");
  }
  ApplyDefaults(&o);
  return o;
}

struct Case {
  std::string kind;
  std::function<void(Object*)> mutate;
  std::string message;  // after `<Kind> "<name>" is invalid: `
};

#define POD(expr) [](Object* o) { auto* s = o->mutable_pod()->mutable_spec(); auto* c = s->mutable_containers(0); (void)c; expr; }
#define SVC(expr) [](Object* o) { auto* s = o->mutable_service()->mutable_spec(); expr; }
#define DEP(expr) [](Object* o) { auto* s = o->mutable_deployment()->mutable_spec(); expr; }

const std::vector<Case>& Cases() {
  static const std::vector<Case> kCases = {
      {"Pod", POD(s->add_volumes()->mutable_empty_dir()), "spec.volumes[0].name: Required value"},
      {"Pod", POD(s->add_volumes()->set_name("data")), "spec.volumes[0]: Required value: must specify a volume type"},
      {"Pod", POD(auto* v = s->add_volumes(); v->set_name("data"); v->mutable_empty_dir(); v->mutable_host_path()->set_path("/x")),
       "spec.volumes[0]: Forbidden: may not specify more than 1 volume type"},
      {"Pod", POD(for (int i = 0; i < 2; ++i) { auto* v = s->add_volumes(); v->set_name("data"); v->mutable_empty_dir(); }),
       "spec.volumes[1].name: Duplicate value: \"data\""},
      {"Pod", POD(auto* v = s->add_volumes(); v->set_name("h"); v->mutable_host_path()),
       "spec.volumes[0].hostPath.path: Required value"},
      {"Pod", POD(auto* v = s->add_volumes(); v->set_name("c"); v->mutable_config_map()),
       "spec.volumes[0].configMap.name: Required value"},
      {"Pod", POD(auto* v = s->add_volumes(); v->set_name("s"); v->mutable_secret()),
       "spec.volumes[0].secret.secretName: Required value"},
      {"Pod", POD(auto* v = s->add_volumes(); v->set_name("data"); v->mutable_empty_dir(); c->add_volume_mounts()->set_name("data")),
       "spec.containers[0].volumeMounts[0].mountPath: Required value"},
      {"Pod", POD(c->add_env()->set_value("x")), "spec.containers[0].env[0].name: Required value"},
      {"Pod", POD(auto* e = c->add_env(); e->set_name("A"); e->set_value("x"); e->mutable_value_from()->mutable_field_ref()->set_field_path("metadata.name")),
       "spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty"},
      {"Pod", POD(auto* e = c->add_env(); e->set_name("A"); e->mutable_value_from()),
       "spec.containers[0].env[0].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"},
      {"Pod", POD(auto* e = c->add_env(); e->set_name("A"); e->mutable_value_from()->mutable_config_map_key_ref()->set_name("cm")),
       "spec.containers[0].env[0].valueFrom.configMapKeyRef.key: Required value"},
      {"Pod", POD(c->set_image_pull_policy("Sometimes")),
       "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\""},
      {"Pod", POD(s->set_dns_policy("Custom")),
       "spec.dnsPolicy: Unsupported value: \"Custom\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""},
      {"Pod", POD(auto* t = s->add_tolerations(); t->set_key("k"); t->set_operator_("Like")),
       "spec.tolerations[0].operator: Unsupported value: \"Like\": supported values: \"Equal\", \"Exists\""},
      {"Pod", POD(auto* t = s->add_tolerations(); t->set_key("k"); t->set_effect("NoRun")),
       "spec.tolerations[0].effect: Unsupported value: \"NoRun\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""},
      {"Pod", POD(auto* t = s->add_tolerations(); t->set_key("k"); t->set_operator_("Exists"); t->set_value("v")),
       "spec.tolerations[0].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'"},
      {"Pod", POD(auto* p = c->mutable_liveness_probe(); p->mutable_exec()->add_command("true"); p->mutable_tcp_socket()->set_port("80"); p->set_success_threshold(1); p->set_timeout_seconds(1)),
       "spec.containers[0].livenessProbe: Forbidden: may not specify more than 1 handler type"},
      {"Pod", POD(auto* p = c->mutable_liveness_probe(); p->mutable_exec()->add_command("true"); p->set_success_threshold(2)),
       "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"},
      {"Pod", POD(auto* p = c->mutable_readiness_probe(); p->mutable_http_get()->set_port("http_port"); p->set_success_threshold(1)),
       "spec.containers[0].readinessProbe.httpGet.port: Invalid value: \"http_port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"},
      {"Pod", POD(auto* p = c->mutable_readiness_probe(); p->mutable_tcp_socket()->set_port("70000"); p->set_success_threshold(1)),
       "spec.containers[0].readinessProbe.tcpSocket.port: Invalid value: 70000: must be between 1 and 65535, inclusive"},
      {"Pod", POD(auto* p = c->mutable_liveness_probe(); p->mutable_exec(); p->set_success_threshold(1)),
       "spec.containers[0].livenessProbe.exec.command: Required value"},
      {"Pod", POD(auto* p = c->add_ports(); p->set_container_port(80); p->set_host_port(70000); p->set_protocol("TCP")),
       "spec.containers[0].ports[0].hostPort: Invalid value: 70000: must be between 1 and 65535, inclusive"},
      {"Pod", POD(auto* p = c->add_ports(); p->set_container_port(80); p->set_name("averyverylongportname"); p->set_protocol("TCP")),
       "spec.containers[0].ports[0].name: Invalid value: \"averyverylongportname\": must be no more than 15 characters"},
      {"Pod", POD(for (int i = 0; i < 2; ++i) { auto* p = c->add_ports(); p->set_container_port(80 + i); p->set_name("http"); p->set_protocol("TCP"); }),
       "spec.containers[0].ports[1].name: Duplicate value: \"http\""},
      {"Pod", POD(auto* ic = s->add_init_containers(); ic->set_name("init"); ic->set_image("busybox"); ic->set_image_pull_policy("Always"); ic->mutable_readiness_probe()->mutable_exec()->add_command("x")),
       "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers"},
      {"Pod", POD(auto* ic = s->add_init_containers(); ic->set_name("app"); ic->set_image("busybox"); ic->set_image_pull_policy("Always")),
       "spec.initContainers[0].name: Duplicate value: \"app\""},
      {"Pod", POD(s->set_active_deadline_seconds(0)),
       "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive"},
      {"Pod", POD(s->set_node_name("Bad_Node")),
       "spec.nodeName: Invalid value: \"Bad_Node\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"},
      {"Pod", [](Object* o) { auto* r = o->mutable_pod()->mutable_metadata()->add_owner_references(); r->set_api_version("apps/v1"); r->set_kind("ReplicaSet"); r->set_name("rs"); },
       "metadata.ownerReferences[0].uid: Invalid value: \"\": uid must not be empty"},
      {"Pod", [](Object* o) { o->mutable_pod()->mutable_metadata()->add_finalizers("bad finalizer"); },
       "metadata.finalizers[0]: Invalid value: \"bad finalizer\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"},
      {"Pod", [](Object* o) { (*o->mutable_pod()->mutable_metadata()->mutable_labels())[std::string(64, 'k')] = "v"; },
       "metadata.labels: Invalid value: \"" + std::string(64, 'k') + "\": name part must be no more than 63 characters"},
      {"Pod", [](Object* o) { (*o->mutable_pod()->mutable_metadata()->mutable_labels())["Bad_Prefix/k"] = "v"; },
       "metadata.labels: Invalid value: \"Bad_Prefix/k\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"},
      {"Pod", [](Object* o) { o->mutable_pod()->mutable_metadata()->clear_namespace_(); }, "metadata.namespace: Required value"},
      {"Service", SVC(s->set_type("ExternalName"); s->clear_ports()), "spec.externalName: Required value"},
      {"Service", SVC(s->set_type("NodePort"); s->set_cluster_ip("None")),
       "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"},
      {"Service", SVC(s->set_cluster_ip("10.96.0.300")),
       "spec.clusterIPs[0]: Invalid value: \"10.96.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"},
      {"Service", SVC(s->add_external_ips("not-an-ip")),
       "spec.externalIPs[0]: Invalid value: \"not-an-ip\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"},
      {"Service", SVC(s->set_external_traffic_policy("Nearest")),
       "spec.externalTrafficPolicy: Unsupported value: \"Nearest\": supported values: \"Cluster\", \"Local\""},
      {"Service", SVC(s->set_internal_traffic_policy("Nearest")),
       "spec.internalTrafficPolicy: Unsupported value: \"Nearest\": supported values: \"Cluster\", \"Local\""},
      {"Service", SVC(s->mutable_ports(0)->set_name("web"); auto* p = s->add_ports(); p->set_port(81); p->set_name("web"); p->set_protocol("TCP"); p->set_target_port("81")),
       "spec.ports[1].name: Duplicate value: \"web\""},
      {"Service", SVC(s->mutable_ports(0)->set_protocol("ICMP")),
       "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""},
      {"Service", SVC(s->mutable_ports(0)->set_target_port("0")),
       "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive"},
      {"Service", SVC((*s->mutable_selector())["app"] = "-x"),
       "spec.selector: Invalid value: \"-x\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"},
      {"Deployment", DEP(s->mutable_strategy()->set_type("BlueGreen")),
       "spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\""},
      {"Deployment", DEP(auto* ru = s->mutable_strategy()->mutable_rolling_update(); ru->set_max_surge("0"); ru->set_max_unavailable("0%")),
       "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"},
      {"Deployment", DEP(s->mutable_strategy()->mutable_rolling_update()->set_max_surge("110%")),
       "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"110%\": must not be greater than 100%"},
      {"Deployment", DEP(s->mutable_strategy()->mutable_rolling_update()->set_max_surge("lots")),
       "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"lots\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"},
      {"Deployment", DEP(s->mutable_strategy()->set_type("Recreate")),
       "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"},
      {"Deployment", DEP(s->mutable_template_()->mutable_spec()->set_restart_policy("Never")),
       "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""},
      {"Deployment", DEP(s->set_revision_history_limit(-1)),
       "spec.revisionHistoryLimit: Invalid value: -1: must be greater than or equal to 0"},
      {"Deployment", DEP(s->set_min_ready_seconds(-5)), "spec.minReadySeconds: Invalid value: -5: must be greater than or equal to 0"},
      {"Deployment", DEP(auto* e = s->mutable_selector()->add_match_expressions(); e->set_key("app"); e->set_operator_("Exists"); e->add_values("d")),
       "spec.selector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"},
      {"Node", [](Object* o) { auto* t = o->mutable_node()->mutable_spec()->add_taints(); t->set_key("k"); t->set_effect("Evict"); },
       "spec.taints[0].effect: Unsupported value: \"Evict\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""},
      {"Node", [](Object* o) { o->mutable_node()->mutable_spec()->add_taints()->set_effect("NoSchedule"); },
       "spec.taints[0].key: Required value"},
      {"EndpointSlice", [](Object* o) { o->mutable_endpoint_slice()->set_address_type("IPX"); },
       "addressType: Unsupported value: \"IPX\": supported values: \"IPv4\", \"IPv6\", \"FQDN\""},
      {"EndpointSlice", [](Object* o) { o->mutable_endpoint_slice()->add_endpoints()->add_addresses("10.0.0.999"); },
       "endpoints[0].addresses[0]: Invalid value: \"10.0.0.999\": must be a valid IPv4 address"},
      {"EndpointSlice", [](Object* o) { o->mutable_endpoint_slice()->add_endpoints(); },
       "endpoints[0].addresses: Required value: must contain at least 1 address"},
      {"Lease", [](Object* o) { o->mutable_lease()->mutable_spec()->set_lease_duration_seconds(0); },
       "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"},
      {"Event", [](Object* o) { o->mutable_event()->clear_involved_object(); }, "involvedObject: Required value"},
      // resources (Quantity)
      {"Pod", POD((*c->mutable_resources()->mutable_limits())["cpu"] = "abc"),
       "spec.containers[0].resources.limits[cpu]: Invalid value: \"abc\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"},
      {"Pod", POD((*c->mutable_resources()->mutable_requests())["memory"] = "64Xi"),
       "spec.containers[0].resources.requests[memory]: Invalid value: \"64Xi\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"},
      {"Pod", POD((*c->mutable_resources()->mutable_requests())["cpu"] = "-100m"),
       "spec.containers[0].resources.requests[cpu]: Invalid value: \"-100m\": must be greater than or equal to 0"},
      {"Pod", POD((*c->mutable_resources()->mutable_requests())["cpu"] = "2"; (*c->mutable_resources()->mutable_limits())["cpu"] = "1500m"),
       "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1500m"},
      {"Pod", POD((*c->mutable_resources()->mutable_requests())["memory"] = "1Gi"; (*c->mutable_resources()->mutable_limits())["memory"] = "1000M"),
       "spec.containers[0].resources.requests: Invalid value: \"1Gi\": must be less than or equal to memory limit of 1000M"},
      {"Pod", POD((*c->mutable_resources()->mutable_limits())["gpu"] = "1"),
       "spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers"},
      {"Pod", POD((*c->mutable_resources()->mutable_limits())["example.com/Bad_Name!"] = "1"),
       "spec.containers[0].resources.limits[example.com/Bad_Name!]: Invalid value: \"example.com/Bad_Name!\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"},
      // node affinity
      {"Pod", POD(s->mutable_affinity()->mutable_node_affinity()->mutable_required_during_scheduling_ignored_during_execution()),
       "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: Required value: must have at least one node selector term"},
      {"Pod", POD(auto* r = s->mutable_affinity()->mutable_node_affinity()->mutable_required_during_scheduling_ignored_during_execution()->add_node_selector_terms()->add_match_expressions(); r->set_key("zone"); r->set_operator_("In")),
       "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"},
      {"Pod", POD(auto* r = s->mutable_affinity()->mutable_node_affinity()->mutable_required_during_scheduling_ignored_during_execution()->add_node_selector_terms()->add_match_expressions(); r->set_key("zone"); r->set_operator_("Exists"); r->add_values("a")),
       "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"},
      {"Pod", POD(auto* r = s->mutable_affinity()->mutable_node_affinity()->mutable_required_during_scheduling_ignored_during_execution()->add_node_selector_terms()->add_match_expressions(); r->set_key("cores"); r->set_operator_("Gt"); r->add_values("1"); r->add_values("2")),
       "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: Required value: must be specified single value when `operator` is 'Lt' or 'Gt'"},
      {"Pod", POD(auto* r = s->mutable_affinity()->mutable_node_affinity()->mutable_required_during_scheduling_ignored_during_execution()->add_node_selector_terms()->add_match_expressions(); r->set_key("zone"); r->set_operator_("Near"); r->add_values("a")),
       "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: Invalid value: \"Near\": not a valid selector operator"},
      {"Pod", POD(auto* r = s->mutable_affinity()->mutable_node_affinity()->mutable_required_during_scheduling_ignored_during_execution()->add_node_selector_terms()->add_match_expressions(); r->set_key("zone"); r->set_operator_("In"); r->add_values("not ok")),
       "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]: Invalid value: \"not ok\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"},
      {"Pod", POD(auto* r = s->mutable_affinity()->mutable_node_affinity()->mutable_required_during_scheduling_ignored_during_execution()->add_node_selector_terms()->add_match_fields(); r->set_key("metadata.uid"); r->set_operator_("In"); r->add_values("a")),
       "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].key: Invalid value: \"metadata.uid\": not a valid field selector key"},
      {"Pod", POD(auto* r = s->mutable_affinity()->mutable_node_affinity()->mutable_required_during_scheduling_ignored_during_execution()->add_node_selector_terms()->add_match_fields(); r->set_key("metadata.name"); r->set_operator_("In"); r->add_values("a"); r->add_values("b")),
       "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].values: Required value: must be only one value when `operator` is 'In' or 'NotIn' for node field selector"},
      {"Pod", POD(auto* t = s->mutable_affinity()->mutable_node_affinity()->add_preferred_during_scheduling_ignored_during_execution(); t->set_weight(0); auto* r = t->mutable_preference()->add_match_expressions(); r->set_key("zone"); r->set_operator_("Exists")),
       "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: 0: must be in the range 1-100"},
      // securityContext
      {"Pod", POD(c->mutable_security_context()->set_run_as_user(-1)),
       "spec.containers[0].securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive"},
      {"Pod", POD(c->mutable_security_context()->set_run_as_group(4294967296)),
       "spec.containers[0].securityContext.runAsGroup: Invalid value: 4294967296: must be between 0 and 2147483647, inclusive"},
      {"Pod", POD(c->mutable_security_context()->set_privileged(true); c->mutable_security_context()->set_allow_privilege_escalation(false)),
       "spec.containers[0].securityContext: Invalid value: \"\": cannot set `allowPrivilegeEscalation` to false and `privileged` to true"},
      {"Pod", POD(c->mutable_security_context()->mutable_capabilities()->add_add("SYS_ADMIN"); c->mutable_security_context()->set_allow_privilege_escalation(false)),
       "spec.containers[0].securityContext: Invalid value: \"\": cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN"},
      {"Pod", POD(c->mutable_security_context()->mutable_seccomp_profile()->set_type("Strict")),
       "spec.containers[0].securityContext.seccompProfile.type: Unsupported value: \"Strict\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\""},
      {"Pod", POD(s->mutable_security_context()->mutable_seccomp_profile()->set_type("Localhost")),
       "spec.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost"},
      {"Pod", POD(auto* sp = s->mutable_security_context()->mutable_seccomp_profile(); sp->set_type("RuntimeDefault"); sp->set_localhost_profile("p.json")),
       "spec.securityContext.seccompProfile.localhostProfile: Invalid value: \"p.json\": can only be set when seccomp type is Localhost"},
      {"Pod", POD(s->mutable_security_context()->set_fs_group(-5)),
       "spec.securityContext.fsGroup: Invalid value: -5: must be between 0 and 2147483647, inclusive"},
      {"Pod", POD(s->mutable_security_context()->add_supplemental_groups(-1)),
       "spec.securityContext.supplementalGroups[0]: Invalid value: -1: must be between 0 and 2147483647, inclusive"},
      {"Pod", POD(s->mutable_security_context()->set_run_as_user(-2)),
       "spec.securityContext.runAsUser: Invalid value: -2: must be between 0 and 2147483647, inclusive"},
      // hostNetwork
      {"Pod", POD(s->set_host_network(true); auto* p = c->add_ports(); p->set_container_port(80); p->set_host_port(81); p->set_protocol("TCP")),
       "spec.containers[0].ports[0].hostPort: Invalid value: 81: must match `containerPort` when `hostNetwork` is true"},
      {"RoleBinding", [](Object* o) { o->mutable_role_binding()->mutable_role_ref()->set_kind("Group"); },
       "roleRef.kind: Unsupported value: \"Group\": supported values: \"Role\", \"ClusterRole\""},
      {"RoleBinding", [](Object* o) { o->mutable_role_binding()->mutable_role_ref()->clear_name(); }, "roleRef.name: Required value"},
  };
  return kCases;
}

TEST(ValidationRules, EachRuleHasItsKubernetesMessage) {
  for (const auto& c : Cases()) {
    Object o = Base(c.kind);
    EXPECT_TRUE(Validate(o, nullptr).empty()) << c.kind << " base object must be valid";
    c.mutate(&o);
    FieldErrors errs = Validate(o, nullptr);
    std::string got = errs.empty() ? "<valid>" : std::string(InvalidError(c.kind, Meta(o).name(), errs).message());
    // Kubernetes qualifies a kind of a named API group: "Deployment.apps".
    std::string kind = c.kind;
    for (const auto& r : AllResources())
      if (r.kind == c.kind && !r.group.empty()) kind = c.kind + "." + r.group;
    std::string want = kind + " \"" + Meta(o).name() + "\" is invalid: " + c.message;
    EXPECT_EQ(got, want);
  }
}

TEST(ValidationRules, ValidQuantitiesAffinityAndSecurityContextPass) {
  Object o = Base("Pod");
  auto* s = o.mutable_pod()->mutable_spec();
  auto* c = s->mutable_containers(0);
  (*c->mutable_resources()->mutable_limits())["cpu"] = "1e12";
  for (const char* q : {"100m", "0.5", "1", "64Mi", "1Gi", "1e3", "2E-2", "500k", "1.5G", "+1"}) {
    (*c->mutable_resources()->mutable_requests())["cpu"] = q;
    EXPECT_TRUE(Validate(o, nullptr).empty()) << q;
  }
  (*c->mutable_resources()->mutable_limits())["memory"] = "1Gi";
  (*c->mutable_resources()->mutable_requests())["memory"] = "1024Mi";  // equal: allowed
  (*c->mutable_resources()->mutable_limits())["example.com/gpu"] = "2";
  (*c->mutable_resources()->mutable_limits())["hugepages-2Mi"] = "4Mi";
  auto* term = s->mutable_affinity()->mutable_node_affinity()->mutable_required_during_scheduling_ignored_during_execution()
                   ->add_node_selector_terms();
  auto* r = term->add_match_expressions();
  r->set_key("topology.kubernetes.io/zone");
  r->set_operator_("NotIn");
  r->add_values("z1");
  auto* f = term->add_match_fields();
  f->set_key("metadata.name");
  f->set_operator_("In");
  f->add_values("node-1");
  auto* pref = s->mutable_affinity()->mutable_node_affinity()->add_preferred_during_scheduling_ignored_during_execution();
  pref->set_weight(100);
  auto* gt = pref->mutable_preference()->add_match_expressions();
  gt->set_key("cores");
  gt->set_operator_("Gt");
  gt->add_values("4");
  c->mutable_security_context()->set_run_as_user(1000);
  c->mutable_security_context()->set_allow_privilege_escalation(false);
  c->mutable_security_context()->mutable_capabilities()->add_add("NET_BIND_SERVICE");
  c->mutable_security_context()->mutable_seccomp_profile()->set_type("RuntimeDefault");
  s->mutable_security_context()->set_fs_group(2000);
  s->mutable_security_context()->mutable_seccomp_profile()->set_type("Localhost");
  s->mutable_security_context()->mutable_seccomp_profile()->set_localhost_profile("profiles/audit.json");
  s->set_host_network(true);
  auto* p = c->add_ports();
  p->set_container_port(8080);
  p->set_host_port(8080);
  p->set_protocol("TCP");
  auto errs = Validate(o, nullptr);
  EXPECT_TRUE(errs.empty()) << (errs.empty() ? "" : errs[0].ToString());
}

TEST(ValidationRules, ImmutableSecretAndConfigMapData) {
  Object old;
  old.mutable_secret()->mutable_metadata()->set_name("s");
  old.mutable_secret()->mutable_metadata()->set_namespace_("default");
  old.mutable_secret()->set_immutable(true);
  ApplyDefaults(&old);
  Object o = old;
  (*o.mutable_secret()->mutable_data())["k"] = "v";
  auto errs = Validate(o, &old);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].ToString(), "data: Forbidden: field is immutable when `immutable` is set");
  Object t = old;
  t.mutable_secret()->set_type("kubernetes.io/tls");
  auto terrs = Validate(t, &old);
  ASSERT_FALSE(terrs.empty());
  EXPECT_EQ(terrs[0].ToString(), "type: Invalid value: \"kubernetes.io/tls\": field is immutable");
}
}  // namespace
}  // namespace skiff::apiserver
