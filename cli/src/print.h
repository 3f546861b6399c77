// Tables with kubectl's columns, kubectl's age format, jsonpath and
// custom-columns, label selectors.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/api/v1/objects.pb.h"
#include "skiff/manifest/manifest.h"

namespace skiff::cli {

// kubectl's HumanDuration: 45s, 2m10s, 15m, 5h3m, 3d4h, 400d, 2y10d.
std::string HumanDuration(int64_t seconds);
// Age column of an RFC 3339 timestamp ("<unknown>" when unset).
std::string Age(const std::string& rfc3339, std::chrono::system_clock::time_point now);

struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
};
// Columns padded as Go's tabwriter with padding 3; the last column unpadded.
std::string RenderTable(const Table& t, bool headers = true, size_t padding = 3);

struct TableOptions {
  bool wide = false;
  bool with_namespace = false;  // -A: NAMESPACE first
  bool show_labels = false;
  std::vector<std::string> label_columns;  // -L
  std::chrono::system_clock::time_point now;
};
// The table kubectl prints for `get <kind>`.
Table MakeTable(const manifest::KindInfo& k, const std::vector<api::v1::Object>& objs, const TableOptions& opts);

// jsonpath templates as kubectl's -o jsonpath: {.a.b}, {.items[*].x},
// {.items[0]}, {['key.with.dots']}, {range .items[*]}...{end}, {"\n"},
// filters [?(@.type=="Ready")].
absl::StatusOr<std::string> JsonPathTemplate(const std::string& tmpl, const manifest::Value& root);
// One path expression (".spec.containers[*].image") -> matches.
absl::StatusOr<std::vector<manifest::Value>> JsonPathEval(const std::string& expr, const manifest::Value& root);

// Label selectors in Kubernetes syntax: a=b, a!=b, a in (x,y), a notin (x), a, !a.
struct Requirement {
  std::string key;
  std::string op;  // "=", "!=", "in", "notin", "exists", "!"
  std::vector<std::string> values;
};
absl::StatusOr<std::vector<Requirement>> ParseSelector(const std::string& s);
bool SelectorMatches(const std::vector<Requirement>& sel, const google::protobuf::Map<std::string, std::string>& labels);
// "app=web,tier in (a,b)" from a LabelSelector; "" when empty.
std::string FormatLabelSelector(const api::v1::LabelSelector& sel);
// "app=web,tier=db" from a map (sorted); "<none>" when empty if `none`.
std::string FormatLabels(const google::protobuf::Map<std::string, std::string>& m, bool none = true);

}  // namespace skiff::cli
