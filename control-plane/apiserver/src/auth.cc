#include "skiff/apiserver/auth.h"

#include <openssl/crypto.h>

#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "skiff/apiserver/pki.h"
#include "skiff/common/log.h"

namespace skiff::apiserver {

namespace v1 = ::skiff::api::v1;

bool UserInfo::InGroup(const std::string& g) const {
  return std::find(groups.begin(), groups.end(), g) != groups.end();
}

std::string NodeNameOf(const UserInfo& user) {
  static const std::string kPrefix = "system:node:";
  if (user.name.rfind(kPrefix, 0) != 0 || !user.InGroup("system:nodes")) return "";
  return user.name.substr(kPrefix.size());
}

absl::StatusOr<std::vector<StaticToken>> LoadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("token file ", path, ": cannot open"));
  std::vector<StaticToken> out;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    // CSV with an optional quoted last column.
    std::vector<std::string> cols;
    std::string cur;
    bool quoted = false;
    for (char c : line) {
      if (c == '"') quoted = !quoted;
      else if (c == ',' && !quoted) {
        cols.push_back(cur);
        cur.clear();
      } else cur += c;
    }
    cols.push_back(cur);
    if (cols.size() < 3) return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": need token,user,uid"));
    StaticToken t{cols[0], cols[1], cols[2], {}};
    if (cols.size() > 3)
      for (auto g : absl::StrSplit(cols[3], ',', absl::SkipEmpty())) t.groups.push_back(std::string(g));
    out.push_back(std::move(t));
  }
  return out;
}

Authenticator::Authenticator(Registry* registry, std::vector<StaticToken> tokens, bool insecure)
    : registry_(registry), tokens_(std::move(tokens)), insecure_(insecure) {}

void Authenticator::AddToken(StaticToken t) {
  std::lock_guard<std::mutex> l(mu_);
  tokens_.push_back(std::move(t));
}

static absl::Status Unauthorized() { return absl::UnauthenticatedError("Unauthorized"); }

absl::StatusOr<UserInfo> Authenticator::AuthenticateBootstrapToken(const std::string& token) const {
  auto dot = token.find('.');
  if (dot != 6 || token.size() != 23) return Unauthorized();
  std::string id = token.substr(0, 6), secret = token.substr(7);
  auto obj = registry_->Get("secrets", "kube-system", "bootstrap-token-" + id);
  if (!obj.ok() || !obj->has_secret()) return Unauthorized();
  const auto& s = obj->secret();
  if (s.type() != "bootstrap.kubernetes.io/token") return Unauthorized();
  auto get = [&](const std::string& k) {
    auto it = s.data().find(k);
    return it == s.data().end() ? std::string() : it->second;
  };
  if (get("token-id") != id || get("token-secret") != secret) return Unauthorized();
  if (get("usage-bootstrap-authentication") != "true") return Unauthorized();
  std::string exp = get("expiration");
  if (!exp.empty()) {
    absl::Time t;
    std::string err;
    if (!absl::ParseTime(absl::RFC3339_full, exp, &t, &err) || t < absl::Now()) return Unauthorized();
  }
  if (!Meta(*obj).deletion_timestamp().empty()) return Unauthorized();
  UserInfo u{"system:bootstrap:" + id, {"system:bootstrappers", "system:authenticated"}};
  for (auto g : absl::StrSplit(get("auth-extra-groups"), ',', absl::SkipEmpty())) u.groups.push_back(std::string(g));
  return u;
}

absl::StatusOr<UserInfo> Authenticator::AuthenticateServiceAccountToken(const std::string& token) const {
  if (!signer_) return Unauthorized();
  ASSIGN_OR_RETURN(ServiceAccountClaims c, signer_->Verify(token, absl::Now()));
  if (std::find(c.audiences.begin(), c.audiences.end(), kServiceAccountIssuer) == c.audiences.end())
    return Unauthorized();
  auto sa = registry_->Get("serviceaccounts", c.ns, c.name);
  if (!sa.ok() || !Meta(*sa).deletion_timestamp().empty() || (!c.sa_uid.empty() && Meta(*sa).uid() != c.sa_uid))
    return Unauthorized();
  if (!c.pod_name.empty()) {
    auto pod = registry_->Get("pods", c.ns, c.pod_name);
    if (!pod.ok() || Meta(*pod).uid() != c.pod_uid) return Unauthorized();
  }
  return UserInfo{c.Username(),
                  {"system:serviceaccounts", "system:serviceaccounts:" + c.ns, "system:authenticated"}};
}

absl::StatusOr<UserInfo> Authenticator::Authenticate(const grpc::ServerContext* ctx) const {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it != md.end()) {
    std::string v(it->second.data(), it->second.size());
    if (v.rfind("Bearer ", 0) != 0) return Unauthorized();
    std::string token = v.substr(7);
    {
      std::lock_guard<std::mutex> l(mu_);
      for (const auto& t : tokens_) {
        if (t.token.size() == token.size() && CRYPTO_memcmp(t.token.data(), token.data(), token.size()) == 0) {
          UserInfo u{t.user, t.groups};
          u.groups.push_back("system:authenticated");
          return u;
        }
      }
    }
    if (LooksLikeJwt(token)) return AuthenticateServiceAccountToken(token);
    return AuthenticateBootstrapToken(token);
  }
  auto auth = ctx->auth_context();
  if (auth) {
    auto certs = auth->FindPropertyValues("x509_pem_cert");
    if (!certs.empty()) {
      std::string pem(certs[0].data(), certs[0].size());
      auto subj = ParseCertSubject(pem);
      if (!subj.ok() || subj->common_name.empty()) return Unauthorized();
      UserInfo u{subj->common_name, subj->organizations};
      u.groups.push_back("system:authenticated");
      return u;
    }
  }
  if (insecure_) return UserInfo{"system:admin", {"system:masters", "system:authenticated"}};
  return Unauthorized();
}

// ---------------------------------------------------------------- RBAC

static bool Has(const google::protobuf::RepeatedPtrField<std::string>& list, const std::string& v) {
  for (const auto& x : list)
    if (x == "*" || x == v) return true;
  return false;
}

bool Authorizer::RulesAllow(const google::protobuf::RepeatedPtrField<v1::PolicyRule>& rules,
                            const RequestAttributes& a) const {
  std::string full = a.subresource.empty() ? a.resource : a.resource + "/" + a.subresource;
  for (const auto& r : rules) {
    if (!Has(r.verbs(), a.verb)) continue;
    if (!Has(r.api_groups(), a.api_group)) continue;
    bool res = false;
    for (const auto& x : r.resources())
      if (x == "*" || x == full || (a.subresource.empty() && x == a.resource) ||
          (!a.subresource.empty() && x == a.resource + "/*") || (x == "*/" + a.subresource))
        res = true;
    if (!res) continue;
    if (!r.resource_names().empty() && (a.name.empty() || !Has(r.resource_names(), a.name))) continue;
    return true;
  }
  return false;
}

static bool SubjectMatches(const google::protobuf::RepeatedPtrField<v1::Subject>& subjects, const UserInfo& u) {
  for (const auto& s : subjects) {
    if (s.kind() == "User" && s.name() == u.name) return true;
    if (s.kind() == "Group" && u.InGroup(s.name())) return true;
    if (s.kind() == "ServiceAccount" && u.name == absl::StrCat("system:serviceaccount:", s.namespace_(), ":", s.name()))
      return true;
  }
  return false;
}

absl::Status Authorizer::Authorize(const UserInfo& user, const RequestAttributes& a) const {
  if (user.InGroup("system:masters")) return absl::OkStatus();
  // The gRPC port serves while the registry's caches start (so the
  // `kubernetes` Service can name the bound port): until the RBAC caches are
  // published, requests that need RBAC are told to retry, never crash us.
  WatchCache* cluster_roles = registry_->cache("clusterroles");
  WatchCache* roles = registry_->cache("roles");
  WatchCache* cluster_bindings = registry_->cache("clusterrolebindings");
  WatchCache* bindings = registry_->cache("rolebindings");
  if (!cluster_roles || !roles || !cluster_bindings || !bindings)
    return absl::UnavailableError("the server is starting: authorization is not ready");
  WatchFilter all;
  int64_t rev;
  auto resolve = [&](const v1::RoleRef& ref, const std::string& ns) -> bool {
    if (ref.kind() == "ClusterRole") {
      WatchFilter f;
      auto items = cluster_roles->List(f, &rev);
      for (const auto& o : items)
        if (o->cluster_role().metadata().name() == ref.name()) return RulesAllow(o->cluster_role().rules(), a);
    } else if (ref.kind() == "Role") {
      WatchFilter f;
      f.ns = ns;
      auto items = roles->List(f, &rev);
      for (const auto& o : items)
        if (o->role().metadata().name() == ref.name()) return RulesAllow(o->role().rules(), a);
    }
    return false;
  };
  for (const auto& o : cluster_bindings->List(all, &rev)) {
    const auto& b = o->cluster_role_binding();
    if (SubjectMatches(b.subjects(), user) && resolve(b.role_ref(), "")) return absl::OkStatus();
  }
  if (!a.ns.empty()) {
    WatchFilter f;
    f.ns = a.ns;
    for (const auto& o : bindings->List(f, &rev)) {
      const auto& b = o->role_binding();
      if (SubjectMatches(b.subjects(), user) && resolve(b.role_ref(), a.ns)) return absl::OkStatus();
    }
  }
  std::string res = a.subresource.empty() ? a.resource : a.resource + "/" + a.subresource;
  std::string msg = absl::StrCat(res, " ");
  if (!a.name.empty()) absl::StrAppend(&msg, "\"", a.name, "\" ");
  absl::StrAppend(&msg, "is forbidden: User \"", user.name, "\" cannot ", a.verb, " resource \"", res,
                  "\" in API group \"", a.api_group, "\"");
  if (!a.ns.empty()) absl::StrAppend(&msg, " in the namespace \"", a.ns, "\"");
  else absl::StrAppend(&msg, " at the cluster scope");
  return absl::PermissionDeniedError(msg);
}

// Whether `spec` names the Secret (secret=true) or ConfigMap `name`: volumes,
// env valueFrom, envFrom, imagePullSecrets.
static bool PodReferences(const v1::PodSpec& spec, bool secret, const std::string& name) {
  for (const auto& v : spec.volumes()) {
    if (secret && v.has_secret() && v.secret().secret_name() == name) return true;
    if (!secret && v.has_config_map() && v.config_map().name() == name) return true;
  }
  auto containers_ref = [&](const auto& list) {
    for (const auto& c : list) {
      for (const auto& e : c.env()) {
        if (!e.has_value_from()) continue;
        const auto& ref = secret ? e.value_from().secret_key_ref() : e.value_from().config_map_key_ref();
        if (ref.name() == name) return true;
      }
      for (const auto& f : c.env_from()) {
        const auto& ref = secret ? f.secret_ref() : f.config_map_ref();
        if (ref.name() == name) return true;
      }
    }
    return false;
  };
  if (containers_ref(spec.containers()) || containers_ref(spec.init_containers())) return true;
  if (secret)
    for (const auto& r : spec.image_pull_secrets())
      if (r.name() == name) return true;
  return false;
}

absl::Status Authorizer::AdmitNodeRead(const std::string& node, const UserInfo& user, const RequestAttributes& a) const {
  if (a.resource != "secrets" && a.resource != "configmaps") return absl::OkStatus();
  // Kubernetes' node authorizer: only objects referenced by pods bound to
  // the node, fetched one by one (no list/watch).
  std::string msg = absl::StrCat(a.resource, a.name.empty() ? "" : " \"" + a.name + "\"", " is forbidden: User \"",
                                 user.name, "\" cannot ", a.verb, " resource \"", a.resource,
                                 "\" in API group \"\" in the namespace \"", a.ns,
                                 "\": no relationship found between node '", node, "' and this object");
  if (a.verb != "get" || a.name.empty() || a.ns.empty()) return absl::PermissionDeniedError(msg);
  if (a.resource == "configmaps" && a.name == "kube-root-ca.crt") return absl::OkStatus();  // the public CA bundle
  auto* pods = registry_->cache("pods");
  if (!pods) return absl::UnavailableError("pods cache not ready");
  WatchFilter f;
  f.ns = a.ns;
  auto sel = FieldSelector::Parse("spec.nodeName=" + node);
  if (!sel.ok()) return absl::PermissionDeniedError(msg);
  f.fields = std::move(*sel);
  int64_t rev;
  for (const auto& p : pods->List(f, &rev))
    if (PodReferences(p->pod().spec(), a.resource == "secrets", a.name)) return absl::OkStatus();
  return absl::PermissionDeniedError(msg);
}

absl::Status Authorizer::AdmitNode(const UserInfo& user, const RequestAttributes& a, const Object* obj,
                                   const Object* existing) const {
  std::string node = NodeNameOf(user);
  if (node.empty()) return absl::OkStatus();
  if (a.verb == "get" || a.verb == "list" || a.verb == "watch") return AdmitNodeRead(node, user, a);
  auto deny = [&](const std::string& why) {
    return absl::PermissionDeniedError(absl::StrCat("node \"", node, "\" is not allowed to ", a.verb, " ",
                                                    a.resource, a.subresource.empty() ? "" : "/" + a.subresource,
                                                    a.name.empty() ? "" : " \"" + a.name + "\"", ": ", why));
  };
  if (a.resource == "nodes") {
    if (a.name != node) return deny("a node may only modify its own Node object");
    return absl::OkStatus();
  }
  if (a.resource == "leases") {
    if (a.ns != "kube-node-lease" || a.name != node) return deny("a node may only modify its own Lease in kube-node-lease");
    return absl::OkStatus();
  }
  if (a.resource == "events") {
    if (a.verb == "create" || a.verb == "patch" || a.verb == "update") return absl::OkStatus();
    return deny("a node may only create events");
  }
  if (a.resource == "pods") {
    if (a.verb == "create") {
      // Mirror pods of static pods, bound to this node.
      if (!obj || obj->pod().spec().node_name() != node) return deny("can only create pods bound to itself");
      return absl::OkStatus();
    }
    if (!existing) return deny("pod not found");
    if (existing->pod().spec().node_name() != node) return deny("pod is not bound to this node");
    if (a.verb == "delete") return absl::OkStatus();
    if (a.subresource == "status") return absl::OkStatus();
    return deny("a node may only update the status of pods bound to it");
  }
  if (a.resource == "serviceaccounts" && a.subresource == "token" && a.verb == "create") {
    // `existing` is the pod the token is to be bound to.
    if (!existing || !existing->has_pod()) return deny("a node may only request tokens bound to a pod");
    if (existing->pod().spec().node_name() != node) return deny("pod is not bound to this node");
    std::string sa = existing->pod().spec().service_account_name();
    if (sa.empty()) sa = "default";
    if (sa != a.name) return deny("the pod does not use this service account");
    return absl::OkStatus();
  }
  return deny("not permitted by NodeRestriction");
}

absl::Status Authorizer::EnsureDefaultPolicy() const {
  auto rule = [](std::vector<std::string> verbs, std::vector<std::string> groups, std::vector<std::string> resources) {
    v1::PolicyRule r;
    for (auto& v : verbs) r.add_verbs(v);
    for (auto& g : groups) r.add_api_groups(g);
    for (auto& x : resources) r.add_resources(x);
    return r;
  };
  const std::vector<std::string> kRead = {"get", "list", "watch"};
  const std::vector<std::string> kWrite = {"create", "update", "patch", "delete", "deletecollection"};
  std::vector<std::string> all_verbs = kRead;
  all_verbs.insert(all_verbs.end(), kWrite.begin(), kWrite.end());
  const std::vector<std::string> kGroups = {"", "apps", "discovery.k8s.io", "coordination.k8s.io"};
  const std::vector<std::string> kViewable = {"pods", "pods/log", "pods/status", "services", "services/status",
                                              "endpointslices", "deployments", "deployments/status", "deployments/scale",
                                              "replicasets", "replicasets/status", "leases", "events", "configmaps",
                                              "serviceaccounts", "namespaces", "namespaces/status"};
  const std::vector<std::string> kEditable = {"pods", "pods/exec", "pods/portforward", "pods/log", "services",
                                              "endpointslices", "deployments", "deployments/scale", "replicasets",
                                              "leases", "events", "configmaps", "secrets", "serviceaccounts",
                                              "serviceaccounts/token"};
  // `skiffctl top`: the kubelet's stats through the API server.
  const v1::PolicyRule kNodeStats = rule({"get"}, {""}, {"nodes/stats"});
  struct RoleDef {
    std::string name;
    std::vector<v1::PolicyRule> rules;
  };
  std::vector<RoleDef> roles = {
      {"cluster-admin", {rule({"*"}, {"*"}, {"*"})}},
      {"view", {rule(kRead, kGroups, kViewable), kNodeStats}},
      {"edit",
       {rule(kRead, kGroups, kViewable), rule(all_verbs, kGroups, kEditable), rule(kRead, {""}, {"secrets"}),
        kNodeStats}},
      {"admin",
       {rule(kRead, kGroups, kViewable), rule(all_verbs, kGroups, kEditable), rule(kRead, {""}, {"secrets"}),
        kNodeStats,
        rule(all_verbs, {"rbac.authorization.k8s.io"}, {"roles", "rolebindings"})}},
      {"node",
       {rule(kRead, {""}, {"pods", "services", "nodes", "configmaps", "secrets", "namespaces", "serviceaccounts"}),
        rule(kRead, {"discovery.k8s.io"}, {"endpointslices"}),
        rule({"create", "update", "patch", "delete"}, {""}, {"nodes", "nodes/status"}),
        rule({"create", "delete"}, {""}, {"pods"}),
        rule({"update", "patch"}, {""}, {"pods/status"}),
        rule({"create", "update", "patch"}, {""}, {"events"}),
        rule({"create"}, {""}, {"serviceaccounts/token"}),
        rule(all_verbs, {"coordination.k8s.io"}, {"leases"})}},
      {"proxy",
       {rule(kRead, {""}, {"services", "nodes", "pods", "namespaces"}),
        rule(kRead, {"discovery.k8s.io"}, {"endpointslices"}),
        rule({"create", "update", "patch"}, {""}, {"events"})}},
  };
  for (const auto& r : roles) {
    Object o;
    auto* cr = o.mutable_cluster_role();
    cr->mutable_metadata()->set_name(r.name);
    (*cr->mutable_metadata()->mutable_labels())["kubernetes.io/bootstrapping"] = "rbac-defaults";
    for (const auto& x : r.rules) *cr->add_rules() = x;
    auto st = registry_->Create("clusterroles", "", o);
    if (st.ok()) continue;
    if (st.status().code() != absl::StatusCode::kAlreadyExists) return st.status();
    // Built-in roles of an older version get the current rules (an
    // operator's own roles, without the bootstrapping label, are left alone).
    auto cur = registry_->Get("clusterroles", "", r.name);
    if (!cur.ok()) return cur.status();
    auto& labels = cur->cluster_role().metadata().labels();
    auto it = labels.find("kubernetes.io/bootstrapping");
    if (it == labels.end() || it->second != "rbac-defaults") continue;
    std::string have, want;
    for (const auto& x : cur->cluster_role().rules()) have += x.SerializeAsString();
    for (const auto& x : r.rules) want += x.SerializeAsString();
    if (have == want) continue;
    Object next = *cur;
    next.mutable_cluster_role()->clear_rules();
    for (const auto& x : r.rules) *next.mutable_cluster_role()->add_rules() = x;
    auto up = registry_->Update("clusterroles", "", next, "");
    if (!up.ok() && up.status().code() != absl::StatusCode::kAborted) return up.status();  // a replica raced us
  }
  struct BindingDef {
    std::string name, role, kind, subject;
  };
  std::vector<BindingDef> bindings = {
      {"cluster-admin", "cluster-admin", "Group", "system:masters"},
      {"system:node", "node", "Group", "system:nodes"},
      {"system:node-proxier", "proxy", "Group", "system:proxies"},
      {"system:kube-proxy", "proxy", "User", "system:kube-proxy"},
  };
  for (const auto& b : bindings) {
    Object o;
    auto* crb = o.mutable_cluster_role_binding();
    crb->mutable_metadata()->set_name(b.name);
    (*crb->mutable_metadata()->mutable_labels())["kubernetes.io/bootstrapping"] = "rbac-defaults";
    crb->mutable_role_ref()->set_api_group("rbac.authorization.k8s.io");
    crb->mutable_role_ref()->set_kind("ClusterRole");
    crb->mutable_role_ref()->set_name(b.role);
    auto* s = crb->add_subjects();
    s->set_kind(b.kind);
    s->set_api_group("rbac.authorization.k8s.io");
    s->set_name(b.subject);
    auto st = registry_->Create("clusterrolebindings", "", o);
    if (!st.ok() && st.status().code() != absl::StatusCode::kAlreadyExists) return st.status();
  }
  return absl::OkStatus();
}

}  // namespace skiff::apiserver
