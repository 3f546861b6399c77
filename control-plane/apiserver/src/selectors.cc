#include "skiff/apiserver/selectors.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "skiff/apiserver/resources.h"

namespace skiff::apiserver {

namespace {

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

bool ValidLabelKeyChars(const std::string& k) {
  if (k.empty()) return false;
  for (char c : k)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '/')) return false;
  return true;
}

bool ValidLabelValueChars(const std::string& v) {
  for (char c : v)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

// Splits on commas that are not inside parentheses.
absl::StatusOr<std::vector<std::string>> SplitTerms(const std::string& text) {
  std::vector<std::string> out;
  int depth = 0;
  std::string cur;
  for (char c : text) {
    if (c == '(') ++depth;
    if (c == ')') {
      if (--depth < 0) return absl::FailedPreconditionError(absl::StrCat("unable to parse requirement: unbalanced parenthesis in \"", text, "\""));
    }
    if (c == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (depth != 0) return absl::FailedPreconditionError(absl::StrCat("unable to parse requirement: unbalanced parenthesis in \"", text, "\""));
  out.push_back(cur);
  return out;
}

absl::Status BadSelector(const std::string& term, const std::string& why) {
  return absl::FailedPreconditionError(absl::StrCat("unable to parse requirement: ", why, " in \"", term, "\""));
}

}  // namespace

absl::StatusOr<LabelSelector> LabelSelector::Parse(const std::string& text) {
  LabelSelector sel;
  if (Trim(text).empty()) return sel;
  auto terms = SplitTerms(text);
  if (!terms.ok()) return terms.status();
  for (const std::string& raw : *terms) {
    std::string t = Trim(raw);
    if (t.empty()) return BadSelector(raw, "empty requirement");
    LabelRequirement r;
    if (t[0] == '!') {
      r.key = Trim(t.substr(1));
      r.op = LabelRequirement::Op::kDoesNotExist;
    } else {
      // Find the operator.
      size_t i = 0;
      while (i < t.size() && !isspace(static_cast<unsigned char>(t[i])) && t[i] != '=' && t[i] != '!') ++i;
      r.key = t.substr(0, i);
      std::string rest = Trim(t.substr(i));
      if (rest.empty()) {
        r.op = LabelRequirement::Op::kExists;
      } else if (rest.rfind("==", 0) == 0) {
        r.op = LabelRequirement::Op::kEquals;
        r.values = {Trim(rest.substr(2))};
      } else if (rest.rfind("!=", 0) == 0) {
        r.op = LabelRequirement::Op::kNotEquals;
        r.values = {Trim(rest.substr(2))};
      } else if (rest.rfind("=", 0) == 0) {
        r.op = LabelRequirement::Op::kEquals;
        r.values = {Trim(rest.substr(1))};
      } else {
        bool in = false;
        if (rest.rfind("in", 0) == 0 && rest.size() > 2 && (rest[2] == '(' || isspace(static_cast<unsigned char>(rest[2])))) {
          in = true;
          rest = Trim(rest.substr(2));
          r.op = LabelRequirement::Op::kIn;
        } else if (rest.rfind("notin", 0) == 0 && rest.size() > 5 &&
                   (rest[5] == '(' || isspace(static_cast<unsigned char>(rest[5])))) {
          in = true;
          rest = Trim(rest.substr(5));
          r.op = LabelRequirement::Op::kNotIn;
        }
        if (!in) return BadSelector(t, "unknown operator");
        if (rest.size() < 2 || rest.front() != '(' || rest.back() != ')')
          return BadSelector(t, "expected a parenthesised value list");
        for (const auto& v : absl::StrSplit(rest.substr(1, rest.size() - 2), ',')) {
          std::string val = Trim(std::string(v));
          r.values.push_back(val);
        }
        if (r.values.size() == 1 && r.values[0].empty() ) r.values.clear();
        if (r.values.empty()) return BadSelector(t, "for 'in', 'notin' operators, values set can't be empty");
      }
    }
    if (!ValidLabelKeyChars(r.key)) return BadSelector(t, absl::StrCat("invalid label key \"", r.key, "\""));
    for (const auto& v : r.values)
      if (!ValidLabelValueChars(v)) return BadSelector(t, absl::StrCat("invalid label value: \"", v, "\""));
    sel.reqs_.push_back(std::move(r));
  }
  return sel;
}

absl::StatusOr<LabelSelector> LabelSelector::FromProto(const skiff::api::v1::LabelSelector& p) {
  LabelSelector sel;
  std::map<std::string, std::string> sorted(p.match_labels().begin(), p.match_labels().end());
  for (const auto& [k, v] : sorted) sel.reqs_.push_back({k, LabelRequirement::Op::kEquals, {v}});
  for (const auto& e : p.match_expressions()) {
    LabelRequirement r;
    r.key = e.key();
    r.values.assign(e.values().begin(), e.values().end());
    if (e.operator_() == "In") r.op = LabelRequirement::Op::kIn;
    else if (e.operator_() == "NotIn") r.op = LabelRequirement::Op::kNotIn;
    else if (e.operator_() == "Exists") r.op = LabelRequirement::Op::kExists;
    else if (e.operator_() == "DoesNotExist") r.op = LabelRequirement::Op::kDoesNotExist;
    else return absl::InvalidArgumentError(absl::StrCat("\"", e.operator_(), "\" is not a valid pod selector operator"));
    sel.reqs_.push_back(std::move(r));
  }
  return sel;
}

template <typename MapT>
static bool MatchImpl(const std::vector<LabelRequirement>& reqs, const MapT& labels) {
  for (const auto& r : reqs) {
    auto it = labels.find(r.key);
    bool has = it != labels.end();
    auto in_values = [&] {
      if (!has) return false;
      for (const auto& v : r.values)
        if (v == it->second) return true;
      return false;
    };
    switch (r.op) {
      case LabelRequirement::Op::kEquals:
      case LabelRequirement::Op::kIn:
        if (!in_values()) return false;
        break;
      case LabelRequirement::Op::kNotEquals:
      case LabelRequirement::Op::kNotIn:
        if (in_values()) return false;
        break;
      case LabelRequirement::Op::kExists:
        if (!has) return false;
        break;
      case LabelRequirement::Op::kDoesNotExist:
        if (has) return false;
        break;
    }
  }
  return true;
}

bool LabelSelector::Matches(const google::protobuf::Map<std::string, std::string>& labels) const {
  return MatchImpl(reqs_, labels);
}
bool LabelSelector::Matches(const std::map<std::string, std::string>& labels) const { return MatchImpl(reqs_, labels); }

std::string FieldValue(const skiff::api::v1::Object& obj, const std::string& field) {
  const auto& m = Meta(obj);
  if (field == "metadata.name") return m.name();
  if (field == "metadata.namespace") return m.namespace_();
  if (field == "spec.nodeName" && obj.has_pod()) return obj.pod().spec().node_name();
  if (field == "status.phase" && obj.has_pod()) return obj.pod().status().phase();
  if (field == "status.phase" && obj.has_namespace_()) return obj.namespace_().status().phase();
  if (field == "spec.schedulerName" && obj.has_pod()) return obj.pod().spec().scheduler_name();
  if (field == "spec.unschedulable" && obj.has_node()) return obj.node().spec().unschedulable() ? "true" : "false";
  if (field == "type" && obj.has_secret()) return obj.secret().type();
  if (field == "spec.type" && obj.has_service()) return obj.service().spec().type();
  if (field == "involvedObject.name" && obj.has_event()) return obj.event().involved_object().name();
  if (field == "involvedObject.kind" && obj.has_event()) return obj.event().involved_object().kind();
  if (field == "involvedObject.uid" && obj.has_event()) return obj.event().involved_object().uid();
  return "";
}

absl::StatusOr<FieldSelector> FieldSelector::Parse(const std::string& text) {
  static const char* kFields[] = {"metadata.name",       "metadata.namespace", "spec.nodeName",      "status.phase",
                                  "spec.schedulerName",  "spec.unschedulable", "type",               "spec.type",
                                  "involvedObject.name", "involvedObject.kind", "involvedObject.uid"};
  FieldSelector sel;
  if (Trim(text).empty()) return sel;
  for (const auto& part : absl::StrSplit(text, ',')) {
    std::string t = Trim(std::string(part));
    Req r;
    size_t pos;
    if ((pos = t.find("!=")) != std::string::npos) {
      r.field = Trim(t.substr(0, pos));
      r.equals = false;
      r.value = Trim(t.substr(pos + 2));
    } else if ((pos = t.find("==")) != std::string::npos) {
      r.field = Trim(t.substr(0, pos));
      r.equals = true;
      r.value = Trim(t.substr(pos + 2));
    } else if ((pos = t.find('=')) != std::string::npos) {
      r.field = Trim(t.substr(0, pos));
      r.equals = true;
      r.value = Trim(t.substr(pos + 1));
    } else {
      return absl::FailedPreconditionError(absl::StrCat("invalid selector: '", text, "'; can't understand '", t, "'"));
    }
    bool known = false;
    for (const char* f : kFields)
      if (r.field == f) known = true;
    if (!known)
      return absl::FailedPreconditionError(absl::StrCat("field label not supported: ", r.field));
    sel.reqs_.push_back(std::move(r));
  }
  return sel;
}

bool FieldSelector::Matches(const skiff::api::v1::Object& obj) const {
  for (const auto& r : reqs_) {
    bool eq = FieldValue(obj, r.field) == r.value;
    if (eq != r.equals) return false;
  }
  return true;
}

std::string FieldSelector::ExactValue(const std::string& field) const {
  for (const auto& r : reqs_)
    if (r.field == field && r.equals) return r.value;
  return "";
}

}  // namespace skiff::apiserver
