#include "skiff/apiserver/merge_patch.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace skiff::apiserver {
namespace {

// RFC 7386 appendix A cases.
struct Case {
  const char* target;
  const char* patch;
  const char* result;
};

TEST(MergePatch, Rfc7386Examples) {
  const Case cases[] = {
      {R"({"a":"b"})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"b"})", R"({"b":"c"})", R"({"a":"b","b":"c"})"},
      {R"({"a":"b"})", R"({"a":null})", R"({})"},
      {R"({"a":"b","b":"c"})", R"({"a":null})", R"({"b":"c"})"},
      {R"({"a":["b"]})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"c"})", R"({"a":["b"]})", R"({"a":["b"]})"},
      {R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})", R"({"a":{"b":"d"}})"},
      {R"({"a":[{"b":"c"}]})", R"({"a":[1]})", R"({"a":[1]})"},
      {R"(["a","b"])", R"(["c","d"])", R"(["c","d"])"},
      {R"({"a":"b"})", R"(["c"])", R"(["c"])"},
      {R"({"a":"foo"})", R"(null)", R"(null)"},
      {R"({"a":"foo"})", R"("bar")", R"("bar")"},
      {R"({"e":null})", R"({"a":1})", R"({"a":1,"e":null})"},
      {R"([1,2])", R"({"a":"b","c":null})", R"({"a":"b"})"},
      {R"({})", R"({"a":{"bb":{"ccc":null}}})", R"({"a":{"bb":{}}})"},
  };
  for (const auto& c : cases) {
    auto r = ApplyMergePatch(c.target, c.patch);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(nlohmann::json::parse(*r), nlohmann::json::parse(c.result)) << c.target << " + " << c.patch;
  }
}

TEST(MergePatch, RejectsInvalidJson) {
  auto r = ApplyMergePatch("{}", "{not json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace skiff::apiserver
