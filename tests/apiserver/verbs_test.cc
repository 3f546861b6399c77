// Every verb on every kind through gRPC with the admin client certificate,
// against Debian's etcd, a 3-member etcd cluster losing a member mid-test,
// and the embedded store.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "absl/strings/ascii.h"

#include "fixture.h"
#include "objects.h"
#include "skiff/apiserver/resources.h"
#include "skiff/client/config.h"
#include "skiff/client/informer.h"

namespace skiff::apitest {
namespace {

using skiff::apiserver::AllResources;
using skiff::apiserver::Meta;
using skiff::client::GrpcClient;

class ApiTest : public ::testing::TestWithParam<Backend::Kind> {
 protected:
  void SetUp() override {
    std::string tag = GetParam() == Backend::Kind::kEtcd ? "etcd" : GetParam() == Backend::Kind::kEtcdCluster ? "etcd3" : "embedded";
    backend_ = Backend::Make(GetParam(), tag);
    ASSERT_NE(backend_, nullptr) << "storage did not start";
    data_dir_ = backend_->dir() + "/cp";
    auto opts = ServerOpts(*backend_, data_dir_);
    opts.cache.capacity = 64;
    auto s = skiff::apiserver::ApiServer::Start(opts);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    // The admin client config the server wrote, as skiffctl would load it.
    auto cfg = skiff::client::LoadClientConfig(data_dir_ + "/admin.conf");
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    auto c = skiff::client::Dial(cfg->credentials);
    ASSERT_TRUE(c.ok());
    client_ = std::move(*c);
  }
  void TearDown() override {
    client_.reset();
    if (server_) server_->Shutdown();
    server_.reset();
    backend_.reset();
  }
  std::unique_ptr<Backend> backend_;
  std::string data_dir_;
  std::unique_ptr<skiff::apiserver::ApiServer> server_;
  std::unique_ptr<GrpcClient> client_;
};

skiff::client::ListOptions Labels(const std::string& l) {
  skiff::client::ListOptions o;
  o.label_selector = l;
  return o;
}
skiff::client::ListOptions Fields(const std::string& f) {
  skiff::client::ListOptions o;
  o.field_selector = f;
  return o;
}

std::string NsFor(const std::string& resource) {
  auto info = skiff::apiserver::LookupResource(resource);
  return (*info)->namespaced ? "default" : "";
}

// Runs create/get/list/update/patch/watch/delete on one kind.
void ExerciseKind(GrpcClient* c, const std::string& resource, const std::string& name) {
  SCOPED_TRACE(resource);
  std::string ns = NsFor(resource);
  auto start = c->List(resource, ns);
  ASSERT_TRUE(start.ok()) << start.status();
  skiff::client::ListOptions wo;
  wo.resource_version = start->resource_version();
  wo.label_selector = "suite=verbs";
  auto w = c->Watch(resource, ns, wo);
  ASSERT_TRUE(w.ok()) << w.status();

  auto created = c->Create(resource, ns, MakeObject(resource, ns, name));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_FALSE(Meta(*created).uid().empty());
  EXPECT_FALSE(Meta(*created).creation_timestamp().empty());
  EXPECT_EQ(Meta(*created).generation(), 1);

  auto dup = c->Create(resource, ns, MakeObject(resource, ns, name));
  ASSERT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);
  std::string qualified = skiff::apiserver::QualifiedResource(**skiff::apiserver::LookupResource(resource));
  EXPECT_EQ(dup.status().message(), absl::StrCat(qualified, " \"", name, "\" already exists"));

  auto got = c->Get(resource, ns, name);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(Meta(*got).resource_version(), Meta(*created).resource_version());

  auto list = c->List(resource, ns, Labels("suite=verbs"));
  ASSERT_TRUE(list.ok());
  bool found = false;
  for (const auto& o : list->items()) found |= Meta(o).name() == name;
  EXPECT_TRUE(found);

  Object upd = *got;
  (*skiff::apiserver::MutableMeta(&upd)->mutable_labels())["updated"] = "yes";
  auto updated = c->Update(resource, ns, upd);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(Meta(*updated).labels().at("updated"), "yes");

  auto patched = c->Patch(resource, ns, name, R"({"metadata":{"annotations":{"patched":"true"}}})");
  ASSERT_TRUE(patched.ok()) << patched.status();
  EXPECT_EQ(Meta(*patched).annotations().at("patched"), "true");
  EXPECT_EQ(Meta(*patched).labels().at("updated"), "yes");

  auto deleted = c->Delete(resource, ns, name);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  auto gone = c->Get(resource, ns, name);
  if (resource == "namespaces") {
    // Namespaces terminate first, then go away once empty.
    for (int i = 0; i < 100 && gone.ok(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      gone = c->Get(resource, ns, name);
    }
  }
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(gone.status().message(), absl::StrCat(qualified, " \"", name, "\" not found"));

  std::vector<std::string> types;
  while (types.size() < 4) {
    auto ev = (*w)->Next();
    ASSERT_TRUE(ev.ok()) << ev.status();
    if (ev->type() == "BOOKMARK") continue;
    if (Meta(ev->object()).name() != name) continue;
    if (types.size() >= 3 && ev->type() == "MODIFIED") continue;  // a namespace turning Terminating
    types.push_back(ev->type());
  }
  EXPECT_EQ(types, (std::vector<std::string>{"ADDED", "MODIFIED", "MODIFIED", "DELETED"}));
}

TEST_P(ApiTest, EveryVerbOnEveryKind) {
  for (const auto& info : AllResources()) ExerciseKind(client_.get(), info.resource, "verb-" + info.resource);
}

TEST_P(ApiTest, StaleResourceVersionIsAConflict) {
  auto a = client_->Create("configmaps", "default", MakeObject("configmaps", "default", "cm"));
  ASSERT_TRUE(a.ok());
  Object first = *a, second = *a;
  (*first.mutable_config_map()->mutable_data())["k"] = "1";
  ASSERT_TRUE(client_->Update("configmaps", "default", first).ok());
  (*second.mutable_config_map()->mutable_data())["k"] = "2";
  auto r = client_->Update("configmaps", "default", second);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(r.status().message(),
            "Operation cannot be fulfilled on configmaps \"cm\": the object has been modified; please apply your "
            "changes to the latest version and try again");
  // A patch pinned to the stale version conflicts too.
  auto p = client_->Patch("configmaps", "default", "cm",
                          absl::StrCat(R"({"metadata":{"resourceVersion":")", Meta(*a).resource_version(), R"("}})"));
  EXPECT_EQ(p.status().code(), absl::StatusCode::kAborted);
  // Delete preconditions.
  skiff::client::DeleteOptions d;
  d.precondition_uid = "not-the-uid";
  auto del = client_->Delete("configmaps", "default", "cm", d);
  EXPECT_EQ(del.status().code(), absl::StatusCode::kAborted);
}

TEST_P(ApiTest, JsonMergePatchThroughGrpc) {
  Object cm = MakeObject("configmaps", "default", "merge");
  auto& data = *cm.mutable_config_map()->mutable_data();
  data["keep"] = "1";
  data["drop"] = "2";
  (*cm.mutable_config_map()->mutable_metadata()->mutable_labels())["tier"] = "web";
  ASSERT_TRUE(client_->Create("configmaps", "default", cm).ok());
  // RFC 7386: objects merge recursively, null removes, scalars replace.
  auto p = client_->Patch("configmaps", "default", "merge",
                          R"({"data":{"drop":null,"new":"3"},"metadata":{"labels":{"tier":null,"app":"x"}}})");
  ASSERT_TRUE(p.ok()) << p.status();
  std::map<std::string, std::string> got(p->config_map().data().begin(), p->config_map().data().end());
  EXPECT_EQ(got, (std::map<std::string, std::string>{{"k", "v"}, {"keep", "1"}, {"new", "3"}}));
  std::map<std::string, std::string> labels(Meta(*p).labels().begin(), Meta(*p).labels().end());
  EXPECT_EQ(labels, (std::map<std::string, std::string>{{"app", "x"}, {"suite", "verbs"}}));
  // Lists are replaced as a whole.
  Object dep = MakeObject("deployments", "default", "merge-dep");
  ASSERT_TRUE(client_->Create("deployments", "default", dep).ok());
  auto d = client_->Patch("deployments", "default", "merge-dep",
                          R"({"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.25"}]}}}})");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->deployment().spec().template_().spec().containers_size(), 1);
  EXPECT_EQ(d->deployment().spec().template_().spec().containers(0).name(), "web");
  EXPECT_EQ(d->deployment().spec().template_().spec().containers(0).image_pull_policy(), "IfNotPresent");  // defaulted
  EXPECT_EQ(d->deployment().metadata().generation(), 2);
  // A patch that makes the object invalid is refused with the validation message.
  auto bad = client_->Patch("deployments", "default", "merge-dep", R"({"spec":{"replicas":-1}})");
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(bad.status().message()),
            "Deployment.apps \"merge-dep\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0");
  // Malformed JSON, and a patch of something that does not exist.
  EXPECT_EQ(client_->Patch("configmaps", "default", "merge", "{not json").status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto missing = client_->Patch("configmaps", "default", "nope", R"({"data":{"a":"b"}})");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "configmaps \"nope\" not found");
}

TEST_P(ApiTest, DeleteWithPreconditionsAndPropagation) {
  auto a = client_->Create("configmaps", "default", MakeObject("configmaps", "default", "pre"));
  ASSERT_TRUE(a.ok());
  skiff::client::DeleteOptions stale;
  stale.precondition_resource_version = "1";
  auto s = client_->Delete("configmaps", "default", "pre", stale);
  ASSERT_EQ(s.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(s.status().message(), absl::StrCat("Precondition failed: ResourceVersion in precondition: 1, "
                                               "ResourceVersion in object meta: ",
                                               Meta(*a).resource_version()));
  skiff::client::DeleteOptions wrong_uid;
  wrong_uid.precondition_uid = "other";
  auto u = client_->Delete("configmaps", "default", "pre", wrong_uid);
  EXPECT_EQ(u.status().message(), absl::StrCat("Precondition failed: UID in precondition: other, UID in object meta: ",
                                               Meta(*a).uid()));
  ASSERT_TRUE(client_->Get("configmaps", "default", "pre").ok());
  skiff::client::DeleteOptions exact;
  exact.precondition_uid = Meta(*a).uid();
  exact.precondition_resource_version = Meta(*a).resource_version();
  ASSERT_TRUE(client_->Delete("configmaps", "default", "pre", exact).ok());
  EXPECT_EQ(client_->Get("configmaps", "default", "pre").status().code(), absl::StatusCode::kNotFound);

  // Foreground / Orphan leave the object for the garbage collector with
  // deletionTimestamp and the matching finalizer; Background deletes at once.
  for (const auto& [policy, finalizer] : std::vector<std::pair<std::string, std::string>>{
           {"Foreground", "foregroundDeletion"}, {"Orphan", "orphan"}}) {
    std::string name = "prop-" + absl::AsciiStrToLower(policy);
    ASSERT_TRUE(client_->Create("deployments", "default", MakeObject("deployments", "default", name)).ok());
    skiff::client::DeleteOptions o;
    o.propagation_policy = policy;
    auto d = client_->Delete("deployments", "default", name, o);
    ASSERT_TRUE(d.ok()) << d.status();
    auto still = client_->Get("deployments", "default", name);
    ASSERT_TRUE(still.ok()) << policy;
    EXPECT_FALSE(Meta(*still).deletion_timestamp().empty());
    ASSERT_EQ(Meta(*still).finalizers_size(), 1);
    EXPECT_EQ(Meta(*still).finalizers(0), finalizer);
    // The collector's part: removing the finalizer completes the deletion.
    ASSERT_TRUE(client_->Patch("deployments", "default", name, R"({"metadata":{"finalizers":null}})").ok());
    EXPECT_EQ(client_->Get("deployments", "default", name).status().code(), absl::StatusCode::kNotFound);
  }
  ASSERT_TRUE(client_->Create("deployments", "default", MakeObject("deployments", "default", "prop-bg")).ok());
  skiff::client::DeleteOptions bg;
  bg.propagation_policy = "Background";
  ASSERT_TRUE(client_->Delete("deployments", "default", "prop-bg", bg).ok());
  EXPECT_EQ(client_->Get("deployments", "default", "prop-bg").status().code(), absl::StatusCode::kNotFound);
  skiff::client::DeleteOptions bogus;
  bogus.propagation_policy = "Sideways";
  auto b = client_->Delete("configmaps", "default", "merge-none", bogus);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(b.status().message(), "unsupported propagationPolicy: Sideways");
}

TEST_P(ApiTest, ListPagesAreConsistentAtOneRevision) {
  std::set<std::string> want;
  for (int i = 0; i < 25; ++i) {
    std::string n = absl::StrCat("page-", 100 + i);
    ASSERT_TRUE(client_->Create("configmaps", "default", MakeObject("configmaps", "default", n)).ok());
    want.insert(n);
  }
  skiff::client::ListOptions lo;
  lo.limit = 10;
  lo.label_selector = "suite=verbs";
  std::set<std::string> seen;
  std::string rv;
  int pages = 0;
  while (true) {
    auto page = client_->List("configmaps", "default", lo);
    ASSERT_TRUE(page.ok()) << page.status();
    if (rv.empty()) rv = page->resource_version();
    EXPECT_EQ(page->resource_version(), rv);
    for (const auto& o : page->items()) EXPECT_TRUE(seen.insert(Meta(o).name()).second);
    ++pages;
    // Change the world between pages: none of it may show up.
    ASSERT_TRUE(client_->Create("configmaps", "default", MakeObject("configmaps", "default", absl::StrCat("late-", pages))).ok());
    ASSERT_TRUE(client_->Delete("configmaps", "default", absl::StrCat("page-", 124 - pages)).ok());
    if (page->continue_().empty()) break;
    lo.continue_token = page->continue_();
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, want);
}

TEST_P(ApiTest, PodsAreDeletedGracefullyOnceBound) {
  Object pod = MakeObject("pods", "default", "graceful");
  pod.mutable_pod()->mutable_spec()->set_node_name("n1");
  auto p = client_->Create("pods", "default", pod);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->pod().spec().termination_grace_period_seconds(), 30);
  EXPECT_EQ(p->pod().status().phase(), "Pending");
  auto d = client_->Delete("pods", "default", "graceful");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(Meta(*d).deletion_timestamp().empty());
  EXPECT_EQ(Meta(*d).deletion_grace_period_seconds(), 30);
  ASSERT_TRUE(client_->Get("pods", "default", "graceful").ok());
  skiff::client::DeleteOptions now;
  now.grace_period_seconds = 0;
  ASSERT_TRUE(client_->Delete("pods", "default", "graceful", now).ok());
  EXPECT_EQ(client_->Get("pods", "default", "graceful").status().code(), absl::StatusCode::kNotFound);
}

TEST_P(ApiTest, FinalizersHoldDeletionUntilRemoved) {
  Object cm = MakeObject("configmaps", "default", "held");
  cm.mutable_config_map()->mutable_metadata()->add_finalizers("example.com/hold");
  ASSERT_TRUE(client_->Create("configmaps", "default", cm).ok());
  auto d = client_->Delete("configmaps", "default", "held");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(Meta(*d).deletion_timestamp().empty());
  ASSERT_TRUE(client_->Get("configmaps", "default", "held").ok());
  auto p = client_->Patch("configmaps", "default", "held", R"({"metadata":{"finalizers":null}})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(client_->Get("configmaps", "default", "held").status().code(), absl::StatusCode::kNotFound);
}

TEST_P(ApiTest, StatusSubresourceAndGeneration) {
  auto d = client_->Create("deployments", "default", MakeObject("deployments", "default", "gen"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->deployment().spec().replicas(), 1);
  EXPECT_EQ(d->deployment().spec().strategy().rolling_update().max_surge(), "25%");
  Object s = *d;
  s.mutable_deployment()->mutable_status()->set_replicas(7);
  s.mutable_deployment()->mutable_spec()->set_replicas(5);
  auto st = client_->UpdateStatus("deployments", "default", s);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->deployment().status().replicas(), 7);
  EXPECT_EQ(st->deployment().spec().replicas(), 1);  // spec ignored on status
  EXPECT_EQ(Meta(*st).generation(), 1);
  auto sc = client_->Patch("deployments", "default", "gen", R"({"spec":{"replicas":3},"status":{"replicas":0}})");
  ASSERT_TRUE(sc.ok());
  EXPECT_EQ(sc->deployment().spec().replicas(), 3);
  EXPECT_EQ(sc->deployment().status().replicas(), 7);  // status ignored on the main resource
  EXPECT_EQ(Meta(*sc).generation(), 2);
  auto label_only = client_->Patch("deployments", "default", "gen", R"({"metadata":{"labels":{"x":"y"}}})");
  ASSERT_TRUE(label_only.ok());
  EXPECT_EQ(Meta(*label_only).generation(), 2);
  auto immut = client_->Patch("deployments", "default", "gen", R"({"spec":{"selector":{"matchLabels":{"app":"other"}}}})");
  EXPECT_EQ(immut.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(ApiTest, GenerateNameMakesUniqueNames) {
  Object o = MakeObject("pods", "default", "");
  o.mutable_pod()->mutable_metadata()->set_generate_name("web-");
  auto a = client_->Create("pods", "default", o);
  auto b = client_->Create("pods", "default", o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(Meta(*a).name().rfind("web-", 0), 0u);
  EXPECT_EQ(Meta(*a).name().size(), 9u);
  EXPECT_NE(Meta(*a).name(), Meta(*b).name());
}

TEST_P(ApiTest, ServicesGetClusterIPsAndNodePorts) {
  std::set<std::string> ips;
  for (int i = 0; i < 10; ++i) {
    Object svc = MakeObject("services", "default", absl::StrCat("svc-", i));
    if (i % 2) svc.mutable_service()->mutable_spec()->set_type("NodePort");
    auto s = client_->Create("services", "default", svc);
    ASSERT_TRUE(s.ok()) << s.status();
    const auto& spec = s->service().spec();
    EXPECT_EQ(spec.cluster_ip().rfind("10.", 0), 0u);
    EXPECT_TRUE(ips.insert(spec.cluster_ip()).second);
    if (i % 2) {
      EXPECT_GE(spec.ports(0).node_port(), 30000);
      EXPECT_LE(spec.ports(0).node_port(), 32767);
    }
    EXPECT_EQ(spec.ports(0).target_port(), "80");
  }
  auto k = client_->Get("services", "default", "kubernetes");
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->service().spec().cluster_ip(), "10.96.0.1");
  Object taken = MakeObject("services", "default", "taken");
  taken.mutable_service()->mutable_spec()->set_cluster_ip("10.96.0.1");
  auto t = client_->Create("services", "default", taken);
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(),
            "Service \"taken\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.1\"}: failed to allocate "
            "IP 10.96.0.1: provided IP is already allocated");
  Object outside = MakeObject("services", "default", "outside");
  outside.mutable_service()->mutable_spec()->set_type("NodePort");
  outside.mutable_service()->mutable_spec()->mutable_ports(0)->set_node_port(80);
  auto o = client_->Create("services", "default", outside);
  EXPECT_EQ(o.status().message(),
            "Service \"outside\" is invalid: spec.ports[0].nodePort: Invalid value: 80: provided port is not in the "
            "valid range. The range of valid ports is 30000-32767");
  // A released IP can be taken again.
  auto s0 = client_->Get("services", "default", "svc-0");
  ASSERT_TRUE(client_->Delete("services", "default", "svc-0").ok());
  Object again = MakeObject("services", "default", "again");
  again.mutable_service()->mutable_spec()->set_cluster_ip(s0->service().spec().cluster_ip());
  EXPECT_TRUE(client_->Create("services", "default", again).ok());
  Object headless = MakeObject("services", "default", "headless");
  headless.mutable_service()->mutable_spec()->set_cluster_ip("None");
  auto h = client_->Create("services", "default", headless);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->service().spec().cluster_ip(), "None");
}

TEST_P(ApiTest, WatchFollowsSelectorsAndSendsBookmarks) {
  skiff::api::v1::WatchRequest req;
  req.set_resource("pods");
  req.set_namespace_("default");
  req.set_label_selector("tier=fe");
  req.set_allow_watch_bookmarks(true);
  req.set_resource_version("0");
  auto w = client_->WatchRequest(req);
  ASSERT_TRUE(w.ok()) << w.status();
  Object p = MakeObject("pods", "default", "sel");
  (*p.mutable_pod()->mutable_metadata()->mutable_labels())["tier"] = "be";
  ASSERT_TRUE(client_->Create("pods", "default", p).ok());
  ASSERT_TRUE(client_->Patch("pods", "default", "sel", R"({"metadata":{"labels":{"tier":"fe"}}})").ok());
  ASSERT_TRUE(client_->Patch("pods", "default", "sel", R"({"metadata":{"labels":{"tier":"be"}}})").ok());
  std::vector<std::string> types;
  bool bookmark = false;
  while (types.size() < 2 || !bookmark) {
    auto ev = (*w)->Next();
    ASSERT_TRUE(ev.ok()) << ev.status();
    if (ev->type() == "BOOKMARK") {
      bookmark = true;
      EXPECT_FALSE(Meta(ev->object()).resource_version().empty());
      continue;
    }
    types.push_back(ev->type());
  }
  EXPECT_EQ(types, (std::vector<std::string>{"ADDED", "DELETED"}));
  auto bad = client_->List("pods", "default", Labels("tier in (a"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  auto field = client_->List("pods", "", Fields("metadata.name=sel"));
  ASSERT_TRUE(field.ok());
  EXPECT_EQ(field->items_size(), 1);
}

TEST_P(ApiTest, TooOldResourceVersionIsOutOfRangeAndInformersRelist) {
  auto first = client_->Create("configmaps", "default", MakeObject("configmaps", "default", "old-0"));
  ASSERT_TRUE(first.ok());
  std::string old_rv = Meta(*first).resource_version();
  for (int i = 1; i < 100; ++i)  // more than the cache window (64)
    ASSERT_TRUE(client_->Patch("configmaps", "default", "old-0", absl::StrCat(R"({"data":{"i":")", i, R"("}})")).ok());
  skiff::client::ListOptions wo;
  wo.resource_version = old_rv;
  auto w = client_->Watch("configmaps", "default", wo);
  ASSERT_EQ(w.status().code(), absl::StatusCode::kOutOfRange) << w.status();
  EXPECT_EQ(w.status().message().rfind("too old resource version: " + old_rv, 0), 0u) << w.status();

  std::atomic<int> adds{0}, deletes{0};
  skiff::client::Informer inf(client_.get(), "configmaps", "default", Labels("suite=verbs"),
                              {.on_add = [&](const Object&) { adds++; },
                               .on_update = [](const Object&, const Object&) {},
                               .on_delete = [&](const Object&) { deletes++; }});
  inf.Start();
  ASSERT_TRUE(inf.WaitForSync(std::chrono::seconds(10)));
  EXPECT_TRUE(inf.Get("default", "old-0").has_value());
  ASSERT_TRUE(client_->Create("configmaps", "default", MakeObject("configmaps", "default", "inf-1")).ok());
  ASSERT_TRUE(client_->Delete("configmaps", "default", "old-0").ok());
  for (int i = 0; i < 100 && (adds < 2 || deletes < 1); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(adds, 2);
  EXPECT_EQ(deletes, 1);
  EXPECT_FALSE(inf.Get("default", "old-0").has_value());
  inf.Stop();
}

TEST_P(ApiTest, WatchResumesAcrossAnApiServerRestart) {
  auto list = client_->List("secrets", "default");
  ASSERT_TRUE(list.ok());
  skiff::client::ListOptions wo;
  wo.resource_version = list->resource_version();
  auto w = client_->Watch("secrets", "default", wo);
  ASSERT_TRUE(w.ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(client_->Create("secrets", "default", MakeObject("secrets", "default", absl::StrCat("s", i))).ok());
  std::string last_rv;
  for (int i = 0; i < 3; ++i) {
    auto ev = (*w)->Next();
    ASSERT_TRUE(ev.ok());
    if (ev->type() == "BOOKMARK") {
      --i;
      continue;
    }
    last_rv = Meta(ev->object()).resource_version();
  }
  (*w)->Cancel();
  w->reset();
  client_.reset();
  server_->Shutdown();
  server_.reset();
  // Changes while no API server runs: straight through a second server that
  // then goes away too.
  {
    auto opts = ServerOpts(*backend_, data_dir_);
    auto s2 = skiff::apiserver::ApiServer::Start(opts);
    ASSERT_TRUE(s2.ok()) << s2.status();
    auto c2 = skiff::client::Dial((*s2)->AdminCredentials());
    ASSERT_TRUE(c2.ok());
    ASSERT_TRUE((*c2)->Create("secrets", "default", MakeObject("secrets", "default", "s3")).ok());
    ASSERT_TRUE((*c2)->Delete("secrets", "default", "s0").ok());
    (*s2)->Shutdown();
  }
  auto opts = ServerOpts(*backend_, data_dir_);
  auto s = skiff::apiserver::ApiServer::Start(opts);
  ASSERT_TRUE(s.ok()) << s.status();
  server_ = std::move(*s);
  auto c = skiff::client::Dial(server_->AdminCredentials());
  ASSERT_TRUE(c.ok());
  client_ = std::move(*c);
  ASSERT_TRUE(client_->Create("secrets", "default", MakeObject("secrets", "default", "s4")).ok());
  wo.resource_version = last_rv;
  auto w2 = client_->Watch("secrets", "default", wo);
  ASSERT_TRUE(w2.ok()) << w2.status();
  std::vector<std::string> got;
  while (got.size() < 3) {
    auto ev = (*w2)->Next();
    ASSERT_TRUE(ev.ok()) << ev.status();
    if (ev->type() == "BOOKMARK") continue;
    got.push_back(ev->type() + " " + Meta(ev->object()).name());
  }
  EXPECT_EQ(got, (std::vector<std::string>{"ADDED s3", "DELETED s0", "ADDED s4"}));
}

INSTANTIATE_TEST_SUITE_P(Storage, ApiTest,
                         ::testing::Values(Backend::Kind::kEtcd, Backend::Kind::kEtcdCluster, Backend::Kind::kEmbedded),
                         [](const auto& info) {
                           switch (info.param) {
                             case Backend::Kind::kEtcd: return std::string("DebianEtcd");
                             case Backend::Kind::kEtcdCluster: return std::string("DebianEtcdThreeMembers");
                             default: return std::string("EmbeddedStore");
                           }
                         });

// A 3-member Debian etcd cluster loses a member in the middle of the test.
class EtcdClusterTest : public ApiTest {};

TEST_P(EtcdClusterTest, SurvivesLosingAnEtcdMember) {
  ASSERT_EQ(backend_->members(), 3u);
  ASSERT_TRUE(client_->Create("configmaps", "default", MakeObject("configmaps", "default", "before")).ok());
  auto list = client_->List("configmaps", "default");
  skiff::client::ListOptions wo;
  wo.resource_version = list->resource_version();
  auto w = client_->Watch("configmaps", "default", wo);
  ASSERT_TRUE(w.ok());
  backend_->member(0)->Kill();
  for (int i = 0; i < 5; ++i) {
    auto r = client_->Create("configmaps", "default", MakeObject("configmaps", "default", absl::StrCat("after-", i)));
    ASSERT_TRUE(r.ok()) << r.status();
  }
  ExerciseKind(client_.get(), "pods", "after-kill");
  int seen = 0;
  while (seen < 5) {
    auto ev = (*w)->Next();
    ASSERT_TRUE(ev.ok()) << ev.status();
    if (ev->type() == "ADDED" && Meta(ev->object()).name().rfind("after-", 0) == 0) ++seen;
  }
  EXPECT_EQ(seen, 5);
}

INSTANTIATE_TEST_SUITE_P(Storage, EtcdClusterTest, ::testing::Values(Backend::Kind::kEtcdCluster),
                         [](const auto&) { return std::string("DebianEtcdThreeMembers"); });

}  // namespace
}  // namespace skiff::apitest
