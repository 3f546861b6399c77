// Shared error helpers for every Skiff component. Errors are values:
// absl::Status / absl::StatusOr<T>, built from errno with a message that names
// the object the call was about.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace skiff {

// An absl::Status from an errno value: "<what>: <strerror>" with the code
// absl maps errno to (ENOENT -> NotFound, EEXIST -> AlreadyExists, ...).
// Debian 12's abseil is built with its own absl::string_view (not an alias of
// std::string_view), so this converts at the boundary.
inline absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

inline absl::Status ErrnoError(int err, std::string_view what) {
  return absl::ErrnoToStatus(err, ToAbsl(what));
}

// The same, for the errno the failed call just left behind.
inline absl::Status LastErrnoError(std::string_view what) {
  int err = errno;
  return absl::ErrnoToStatus(err, ToAbsl(what));
}

// Returns `st` with `context` put in front of its message, keeping its code.
inline absl::Status Annotate(const absl::Status& st, std::string_view context) {
  if (st.ok()) return st;
  return absl::Status(st.code(), absl::StrCat(ToAbsl(context), ": ", st.message()));
}

}  // namespace skiff

#define SKIFF_STATUS_CONCAT_INNER_(a, b) a##b
#define SKIFF_STATUS_CONCAT_(a, b) SKIFF_STATUS_CONCAT_INNER_(a, b)

// RETURN_IF_ERROR(expr): evaluates an absl::Status (or StatusOr) expression and
// returns it from the enclosing function when it is not OK.
#define RETURN_IF_ERROR(expr)                                   \
  do {                                                          \
    auto skiff_status_ = ::skiff::internal::ToStatus((expr));   \
    if (!skiff_status_.ok()) return skiff_status_;              \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates an absl::StatusOr<T> expression; on
// error returns its status, otherwise moves the value into `lhs` (which may be
// a declaration such as `auto fd`).
#define ASSIGN_OR_RETURN(lhs, expr) \
  SKIFF_ASSIGN_OR_RETURN_IMPL_(SKIFF_STATUS_CONCAT_(skiff_statusor_, __LINE__), lhs, expr)
#define SKIFF_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

namespace skiff::internal {
inline const absl::Status& ToStatus(const absl::Status& s) { return s; }
template <typename T>
inline absl::Status ToStatus(const absl::StatusOr<T>& s) {
  return s.status();
}
}  // namespace skiff::internal
