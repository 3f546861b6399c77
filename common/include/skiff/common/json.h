// A string as a JSON string literal, escaped as Go's encoding/json does
// (HTML-safe: <, > and & as \u003c, \u003e, \u0026), so what Skiff prints
// matches what kubectl and etcd's gateway print.
#pragma once

#include <string>
#include <string_view>

namespace skiff {

std::string JsonQuote(std::string_view s);

}  // namespace skiff
