#include "skiff/apiserver/selectors.h"

#include <gtest/gtest.h>

#include "skiff/apiserver/resources.h"

namespace skiff::apiserver {
namespace {

bool Match(const std::string& sel, std::map<std::string, std::string> labels) {
  auto s = LabelSelector::Parse(sel);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() && s->Matches(labels);
}

TEST(LabelSelector, EqualityForms) {
  EXPECT_TRUE(Match("app=web", {{"app", "web"}}));
  EXPECT_TRUE(Match("app==web", {{"app", "web"}}));
  EXPECT_FALSE(Match("app=web", {{"app", "db"}}));
  EXPECT_FALSE(Match("app=web", {}));
  EXPECT_TRUE(Match("app!=web", {{"app", "db"}}));
  EXPECT_TRUE(Match("app!=web", {}));
  EXPECT_FALSE(Match("app!=web", {{"app", "web"}}));
}

TEST(LabelSelector, SetForms) {
  EXPECT_TRUE(Match("tier in (a, b)", {{"tier", "b"}}));
  EXPECT_FALSE(Match("tier in (a,b)", {{"tier", "c"}}));
  EXPECT_FALSE(Match("tier in (a,b)", {}));
  EXPECT_TRUE(Match("tier notin (a,b)", {{"tier", "c"}}));
  EXPECT_TRUE(Match("tier notin (a,b)", {}));
  EXPECT_FALSE(Match("tier notin (a,b)", {{"tier", "a"}}));
}

TEST(LabelSelector, ExistenceForms) {
  EXPECT_TRUE(Match("legacy", {{"legacy", ""}}));
  EXPECT_FALSE(Match("legacy", {}));
  EXPECT_TRUE(Match("!legacy", {}));
  EXPECT_FALSE(Match("!legacy", {{"legacy", "x"}}));
}

TEST(LabelSelector, ConjunctionOfTerms) {
  EXPECT_TRUE(Match("app=web,tier in (fe,be),!legacy", {{"app", "web"}, {"tier", "fe"}}));
  EXPECT_FALSE(Match("app=web,tier in (fe,be),!legacy", {{"app", "web"}, {"tier", "fe"}, {"legacy", "1"}}));
  EXPECT_TRUE(Match("", {{"anything", "x"}}));
}

TEST(LabelSelector, RejectsGarbage) {
  EXPECT_FALSE(LabelSelector::Parse("app in web").ok());
  EXPECT_FALSE(LabelSelector::Parse("app in ()").ok());
  EXPECT_FALSE(LabelSelector::Parse("app=we b!").ok());
  EXPECT_FALSE(LabelSelector::Parse("app,,x").ok());
  EXPECT_EQ(LabelSelector::Parse("tier in (a").status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(LabelSelector, FromProto) {
  api::v1::LabelSelector p;
  (*p.mutable_match_labels())["app"] = "web";
  auto* e = p.add_match_expressions();
  e->set_key("tier");
  e->set_operator_("NotIn");
  e->add_values("db");
  auto s = LabelSelector::FromProto(p);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->Matches(std::map<std::string, std::string>{{"app", "web"}, {"tier", "fe"}}));
  EXPECT_FALSE(s->Matches(std::map<std::string, std::string>{{"app", "web"}, {"tier", "db"}}));
}

TEST(FieldSelector, MatchesPodFields) {
  Object o;
  o.mutable_pod()->mutable_metadata()->set_name("p");
  o.mutable_pod()->mutable_metadata()->set_namespace_("ns");
  o.mutable_pod()->mutable_spec()->set_node_name("n1");
  o.mutable_pod()->mutable_status()->set_phase("Running");
  auto m = [&](const std::string& s) {
    auto f = FieldSelector::Parse(s);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() && f->Matches(o);
  };
  EXPECT_TRUE(m("spec.nodeName=n1"));
  EXPECT_FALSE(m("spec.nodeName=n2"));
  EXPECT_TRUE(m("spec.nodeName!=n2"));
  EXPECT_FALSE(m("spec.nodeName="));  // matches only unscheduled pods
  EXPECT_TRUE(m("metadata.name=p,metadata.namespace=ns"));
  EXPECT_TRUE(m("status.phase==Running"));
  EXPECT_FALSE(m("status.phase!=Running"));
}

TEST(FieldSelector, RejectsUnknownFields) {
  auto f = FieldSelector::Parse("spec.bogus=1");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().message(), "field label not supported: spec.bogus");
}

}  // namespace
}  // namespace skiff::apiserver
