#include "skiff/fakeclient/fake_client.h"

#include <gtest/gtest.h>

#include "skiff/controllers/objects.h"
#include "skiff/fakeclient/builders.h"

namespace skiff::fakeclient {
namespace {

using objects::Wrap;

TEST(FakeClient, CreateAssignsMetadataAndRejectsDuplicates) {
  FakeClient api;
  ASSERT_TRUE(api.Create("namespaces", "", Wrap(MakeNamespace("a"))).ok());
  auto p = api.Create("pods", "a", Wrap(MakePod("a", "web")));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->pod().metadata().uid().empty());
  EXPECT_FALSE(p->pod().metadata().resource_version().empty());
  EXPECT_EQ(p->pod().status().phase(), "Pending");
  EXPECT_EQ(api.Create("pods", "a", Wrap(MakePod("a", "web"))).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(api.Create("pods", "nope", Wrap(MakePod("nope", "web"))).status().code(), absl::StatusCode::kNotFound);
}

TEST(FakeClient, UpdateChecksResourceVersionAndBumpsGeneration) {
  FakeClient api;
  ASSERT_TRUE(api.Create("namespaces", "", Wrap(MakeNamespace("a"))).ok());
  auto d = api.Create("deployments", "a", Wrap(MakeDeployment("a", "web", 1)));
  ASSERT_TRUE(d.ok());
  auto o = *d;
  o.mutable_deployment()->mutable_spec()->set_replicas(3);
  auto u = api.Update("deployments", "a", o);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->deployment().metadata().generation(), 2);
  EXPECT_EQ(api.Update("deployments", "a", o).status().code(), absl::StatusCode::kAborted);
  // Status is ignored by Update and taken by UpdateStatus.
  auto s = *u;
  s.mutable_deployment()->mutable_status()->set_replicas(7);
  auto u2 = api.UpdateStatus("deployments", "a", s);
  ASSERT_TRUE(u2.ok());
  EXPECT_EQ(u2->deployment().status().replicas(), 7);
  EXPECT_EQ(u2->deployment().metadata().generation(), 2);
}

TEST(FakeClient, ListAndWatchHonourSelectorsAndResume) {
  FakeClient api;
  ASSERT_TRUE(api.Create("namespaces", "", Wrap(MakeNamespace("a"))).ok());
  auto p1 = MakePod("a", "one");
  (*p1.mutable_metadata()->mutable_labels())["app"] = "x";
  ASSERT_TRUE(api.Create("pods", "a", Wrap(p1)).ok());
  ASSERT_TRUE(api.Create("pods", "a", Wrap(MakePod("a", "two"))).ok());
  auto l = api.List("pods", "a", WithLabels("app in (x,y)"));
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->items_size(), 1);
  EXPECT_EQ(l->items(0).pod().metadata().name(), "one");
  auto w = api.Watch("pods", "", FromVersion(l->resource_version()));
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(api.Delete("pods", "a", "two").ok());
  auto ev = (*w)->Next();
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(ev->type(), "DELETED");
  EXPECT_EQ(ev->object().pod().metadata().name(), "two");
  auto f = api.List("pods", "", WithFields("metadata.name=two"));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->items_size(), 0);
}

TEST(FakeClient, MergePatchAndFinalizers) {
  FakeClient api;
  ASSERT_TRUE(api.Create("namespaces", "", Wrap(MakeNamespace("a"))).ok());
  auto cm = api::v1::ConfigMap();
  cm.mutable_metadata()->set_name("c");
  cm.mutable_metadata()->add_finalizers("example.com/hold");
  ASSERT_TRUE(api.Create("configmaps", "a", Wrap(cm)).ok());
  auto p = api.Patch("configmaps", "a", "c", R"({"data":{"k":"v"},"metadata":{"labels":{"l":"1"}}})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->config_map().data().at("k"), "v");
  EXPECT_EQ(p->config_map().metadata().labels().at("l"), "1");
  auto d = api.Delete("configmaps", "a", "c");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->config_map().metadata().deletion_timestamp().empty());
  ASSERT_TRUE(api.Get("configmaps", "a", "c").ok());
  ASSERT_TRUE(api.Patch("configmaps", "a", "c", R"({"metadata":{"finalizers":null}})").ok());
  EXPECT_EQ(api.Get("configmaps", "a", "c").status().code(), absl::StatusCode::kNotFound);
}

TEST(Selector, ParsesKubernetesSyntax) {
  auto s = objects::Selector::Parse("a=b,c!=d,e in (x, y),f notin (z),g,!h");
  ASSERT_TRUE(s.ok());
  std::map<std::string, std::string> l = {{"a", "b"}, {"e", "y"}, {"g", "1"}};
  EXPECT_TRUE(s->Matches(l));
  l["h"] = "1";
  EXPECT_FALSE(s->Matches(l));
  EXPECT_FALSE(objects::Selector::Parse("a in x").ok());
}

TEST(Quantity, ParsesSuffixes) {
  EXPECT_EQ(*objects::ParseMilli("100m"), 100);
  EXPECT_EQ(*objects::ParseMilli("1.5"), 1500);
  EXPECT_EQ(*objects::ParseValue("64Mi"), 64 << 20);
  EXPECT_EQ(*objects::ParseValue("1G"), 1000000000);
  EXPECT_FALSE(objects::ParseValue("abc").ok());
}

}  // namespace
}  // namespace skiff::fakeclient
