#include "skiff/manifest/value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <regex>

namespace skiff::manifest {

Value Value::Bool(bool b) {
  Value v;
  v.type_ = Type::kBool;
  v.b_ = b;
  v.s_ = b ? "true" : "false";
  return v;
}
Value Value::Int(int64_t i) {
  Value v;
  v.type_ = Type::kInt;
  v.i_ = i;
  v.s_ = std::to_string(i);
  return v;
}
Value Value::Double(double d) {
  Value v;
  v.type_ = Type::kDouble;
  v.d_ = d;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", d);
  v.s_ = buf;
  return v;
}
Value Value::String(std::string s) {
  Value v;
  v.type_ = Type::kString;
  v.s_ = std::move(s);
  return v;
}
Value Value::List() {
  Value v;
  v.type_ = Type::kList;
  return v;
}
Value Value::Map() {
  Value v;
  v.type_ = Type::kMap;
  return v;
}

const Value* Value::Find(std::string_view key) const {
  for (const auto& [k, v] : map_)
    if (k == key) return &v;
  return nullptr;
}
Value* Value::Find(std::string_view key) {
  for (auto& [k, v] : map_)
    if (k == key) return &v;
  return nullptr;
}
Value& Value::Set(std::string key, Value v) {
  if (type_ != Type::kMap) {
    *this = Map();
  }
  for (auto& [k, old] : map_) {
    if (k == key) {
      old = std::move(v);
      return old;
    }
  }
  map_.emplace_back(std::move(key), std::move(v));
  return map_.back().second;
}
bool Value::Erase(std::string_view key) {
  auto it = std::find_if(map_.begin(), map_.end(), [&](const auto& e) { return e.first == key; });
  if (it == map_.end()) return false;
  map_.erase(it);
  return true;
}
const Value* Value::FindPath(std::string_view dotted) const {
  const Value* cur = this;
  while (!dotted.empty()) {
    size_t dot = dotted.find('.');
    std::string_view part = dotted.substr(0, dot);
    if (!cur->is_map()) return nullptr;
    cur = cur->Find(part);
    if (cur == nullptr) return nullptr;
    if (dot == std::string_view::npos) break;
    dotted.remove_prefix(dot + 1);
  }
  return cur;
}

void Value::SortKeys() {
  if (type_ == Type::kMap) {
    std::stable_sort(map_.begin(), map_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [k, v] : map_) v.SortKeys();
  } else if (type_ == Type::kList) {
    for (auto& v : list_) v.SortKeys();
  }
}

bool operator==(const Value& a, const Value& b) {
  if (a.type_ != b.type_) return false;
  switch (a.type_) {
    case Value::Type::kNull: return true;
    case Value::Type::kBool: return a.b_ == b.b_;
    case Value::Type::kInt: return a.i_ == b.i_;
    case Value::Type::kDouble: return a.d_ == b.d_;
    case Value::Type::kString: return a.s_ == b.s_;
    case Value::Type::kList: return a.list_ == b.list_;
    case Value::Type::kMap: return a.map_ == b.map_;
  }
  return false;
}

// ------------------------------------------------------------------ JSON


namespace {

void WriteJson(const Value& v, int indent, int depth, std::string* out) {
  auto newline = [&](int d) {
    if (indent == 0) return;
    *out += '\n';
    out->append(static_cast<size_t>(d * indent), ' ');
  };
  switch (v.type()) {
    case Value::Type::kNull: *out += "null"; break;
    case Value::Type::kBool: *out += v.bool_value() ? "true" : "false"; break;
    case Value::Type::kInt: *out += std::to_string(v.int_value()); break;
    case Value::Type::kDouble: *out += v.text(); break;
    case Value::Type::kString: *out += JsonQuote(v.text()); break;
    case Value::Type::kList:
      if (v.items().empty()) {
        *out += "[]";
        break;
      }
      *out += '[';
      for (size_t i = 0; i < v.items().size(); ++i) {
        if (i) *out += ',';
        newline(depth + 1);
        WriteJson(v.items()[i], indent, depth + 1, out);
      }
      newline(depth);
      *out += ']';
      break;
    case Value::Type::kMap:
      if (v.entries().empty()) {
        *out += "{}";
        break;
      }
      *out += '{';
      for (size_t i = 0; i < v.entries().size(); ++i) {
        if (i) *out += ',';
        newline(depth + 1);
        *out += JsonQuote(v.entries()[i].first);
        *out += indent ? ": " : ":";
        WriteJson(v.entries()[i].second, indent, depth + 1, out);
      }
      newline(depth);
      *out += '}';
      break;
  }
}

// ------------------------------------------------------------------ YAML

// Would a plain scalar with this text be read back as something other than
// a string (YAML 1.1 as go-yaml resolves it)?
bool ResolvesToNonString(const std::string& s) {
  static const char* const kWords[] = {"~",     "null", "Null", "NULL", "y",   "Y",   "yes", "Yes", "YES",
                                       "n",     "N",    "no",   "No",   "NO",  "true", "True", "TRUE",
                                       "false", "False", "FALSE", "on",  "On",  "ON",  "off", "Off",
                                       "OFF",   ".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", ".nan",
                                       ".NaN",  ".NAN", "<<"};
  for (const char* w : kWords)
    if (s == w) return true;
  static const std::regex kNumber(
      R"(^[-+]?(0b[01_]+|0x[0-9a-fA-F_]+|0o?[0-7_]+|[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?|\.[0-9_]+([eE][-+]?[0-9]+)?|[1-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?)$)");
  static const std::regex kTimestamp(R"(^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?$)");
  return std::regex_match(s, kNumber) || std::regex_match(s, kTimestamp);
}

bool PlainAllowed(const std::string& s) {
  if (s.empty()) return false;
  unsigned char c0 = s[0];
  if (std::string_view("[]{}#&*!|>'\"%@`,").find(static_cast<char>(c0)) != std::string_view::npos) return false;
  if ((c0 == '-' || c0 == '?' || c0 == ':') && (s.size() == 1 || s[1] == ' ')) return false;
  if (s.front() == ' ' || s.back() == ' ' || s.back() == ':') return false;
  if (s.find(": ") != std::string::npos || s.find(" #") != std::string::npos) return false;
  if (s == "---" || s == "...") return false;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

std::string YamlScalar(const std::string& s) {
  if (PlainAllowed(s) && !ResolvesToNonString(s)) return s;
  bool printable = true;
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) printable = false;
  if (printable && (s.empty() || ResolvesToNonString(s))) return JsonQuote(s);
  if (printable) {
    std::string out = "'";
    for (char c : s) {
      if (c == '\'') out += '\'';
      out += c;
    }
    return out + "'";
  }
  return JsonQuote(s);
}

bool IsMultiline(const Value& v) {
  return v.is_string() && v.text().find('\n') != std::string::npos && v.text().find('\t') == std::string::npos &&
         v.text().front() != ' ';
}

void WriteLiteral(const std::string& s, int indent, std::string* out) {
  size_t trailing = 0;
  while (trailing < s.size() && s[s.size() - 1 - trailing] == '\n') ++trailing;
  *out += trailing == 0 ? "|-" : trailing == 1 ? "|" : "|+";
  *out += '\n';
  std::string body = s.substr(0, s.size() - trailing);
  size_t start = 0;
  while (true) {
    size_t nl = body.find('\n', start);
    std::string line = body.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    if (!line.empty()) {
      out->append(static_cast<size_t>(indent), ' ');
      *out += line;
    }
    *out += '\n';
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  for (size_t i = 1; i < trailing; ++i) *out += '\n';
}

std::string InlineScalar(const Value& v) {
  switch (v.type()) {
    case Value::Type::kNull: return "null";
    case Value::Type::kBool: return v.bool_value() ? "true" : "false";
    case Value::Type::kInt: return std::to_string(v.int_value());
    case Value::Type::kDouble: return v.text();
    case Value::Type::kString: return YamlScalar(v.text());
    case Value::Type::kList: return "[]";
    case Value::Type::kMap: return "{}";
  }
  return "";
}

void WriteYaml(const Value& v, int indent, std::string* out);

// Writes a map's entries, each starting at `indent`; the first line's
// indentation is already written when `first_inline`.
void WriteMapEntries(const Value& v, int indent, bool first_inline, std::string* out) {
  bool first = true;
  for (const auto& [k, child] : v.entries()) {
    if (!(first && first_inline)) out->append(static_cast<size_t>(indent), ' ');
    first = false;
    *out += YamlScalar(k);
    *out += ':';
    if (child.is_map() && !child.entries().empty()) {
      *out += '\n';
      WriteMapEntries(child, indent + 2, false, out);
    } else if (child.is_list() && !child.items().empty()) {
      *out += '\n';
      WriteYaml(child, indent, out);  // go-yaml: "- " at the key's column
    } else if (IsMultiline(child)) {
      *out += ' ';
      WriteLiteral(child.text(), indent + 2, out);
    } else {
      *out += ' ';
      *out += InlineScalar(child);
      *out += '\n';
    }
  }
}

void WriteListItems(const Value& v, int indent, bool first_inline, std::string* out) {
  bool first = true;
  for (const auto& item : v.items()) {
    if (!(first && first_inline)) out->append(static_cast<size_t>(indent), ' ');
    first = false;
    *out += "- ";
    if (item.is_map() && !item.entries().empty()) {
      WriteMapEntries(item, indent + 2, true, out);
    } else if (item.is_list() && !item.items().empty()) {
      WriteListItems(item, indent + 2, true, out);
    } else if (IsMultiline(item)) {
      WriteLiteral(item.text(), indent + 2, out);
    } else {
      *out += InlineScalar(item);
      *out += '\n';
    }
  }
}

void WriteYaml(const Value& v, int indent, std::string* out) {
  if (v.is_map() && !v.entries().empty()) {
    WriteMapEntries(v, indent, false, out);
  } else if (v.is_list() && !v.items().empty()) {
    WriteListItems(v, indent, false, out);
  } else {
    out->append(static_cast<size_t>(indent), ' ');
    *out += InlineScalar(v);
    *out += '\n';
  }
}

}  // namespace

std::string ToJson(const Value& v, int indent) {
  std::string out;
  WriteJson(v, indent, 0, &out);
  return out;
}

std::string ToYaml(const Value& v) {
  std::string out;
  WriteYaml(v, 0, &out);
  return out;
}

Value ApplyMergePatch(const Value& target, const Value& patch) {
  if (!patch.is_map()) return patch;
  Value result = target.is_map() ? target : Value::Map();
  for (const auto& [k, pv] : patch.entries()) {
    if (pv.is_null()) {
      result.Erase(k);
    } else {
      const Value* cur = result.Find(k);
      Value merged = ApplyMergePatch(cur ? *cur : Value(), pv);
      result.Set(k, std::move(merged));
    }
  }
  return result;
}

}  // namespace skiff::manifest
