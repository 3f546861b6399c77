// A JSON/YAML value tree: what a manifest document is before it becomes a
// protobuf message and after it has been turned back into one. Maps keep
// their insertion order; every node remembers the source line it came from
// (1-based, 0 = not from a file), so errors can point at it.
#pragma once

#include "skiff/common/json.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace skiff::manifest {

class Value {
 public:
  enum class Type { kNull, kBool, kInt, kDouble, kString, kList, kMap };

  Value() = default;
  static Value Null() { return Value(); }
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Double(double d);
  static Value String(std::string s);
  static Value List();
  static Value Map();

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_map() const { return type_ == Type::kMap; }
  bool is_list() const { return type_ == Type::kList; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_scalar() const { return type_ != Type::kList && type_ != Type::kMap; }

  bool bool_value() const { return b_; }
  int64_t int_value() const { return i_; }
  double double_value() const { return d_; }
  // For strings: the string. For other scalars parsed from YAML: the text as
  // written ("8080", "true"); for built scalars: a canonical rendering.
  const std::string& text() const { return s_; }
  void set_text(std::string s) { s_ = std::move(s); }

  // Lists.
  const std::vector<Value>& items() const { return list_; }
  std::vector<Value>& items() { return list_; }
  void Append(Value v) { list_.push_back(std::move(v)); }

  // Maps (ordered).
  const std::vector<std::pair<std::string, Value>>& entries() const { return map_; }
  std::vector<std::pair<std::string, Value>>& entries() { return map_; }
  const Value* Find(std::string_view key) const;
  Value* Find(std::string_view key);
  // Inserts or replaces.
  Value& Set(std::string key, Value v);
  bool Erase(std::string_view key);
  // Nested lookup "metadata.name"; nullptr when absent.
  const Value* FindPath(std::string_view dotted) const;

  // Line in the source (1-based), 0 if unknown.
  int line() const { return line_; }
  void set_line(int line) { line_ = line; }
  // A YAML scalar written in quotes (always a string).
  bool quoted() const { return quoted_; }
  void set_quoted(bool q) { quoted_ = q; }

  // Keys sorted at every level (kubectl's output order).
  void SortKeys();

  friend bool operator==(const Value& a, const Value& b);

 private:
  Type type_ = Type::kNull;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::string s_;
  std::vector<Value> list_;
  std::vector<std::pair<std::string, Value>> map_;
  int line_ = 0;
  bool quoted_ = false;
};

// Text encodings. ToJson with indent 0 is compact ({"a":1}); kubectl uses 4.
std::string ToJson(const Value& v, int indent = 4);
// YAML in go-yaml's style (what kubectl prints): block style, sequences at
// the parent key's indentation, strings quoted only when they would read as
// something else, multi-line strings as literal blocks.
std::string ToYaml(const Value& v);
// Quote a string as a JSON string literal (skiff/common/json.h).
using skiff::JsonQuote;

// RFC 7386 JSON merge patch: null in the patch deletes, maps merge, anything
// else replaces.
Value ApplyMergePatch(const Value& target, const Value& patch);

}  // namespace skiff::manifest
