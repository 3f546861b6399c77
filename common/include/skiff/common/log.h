// One logging facade for every daemon: lines that suit journald,
// "<level> <component> message key=value ...", to stderr.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace skiff::log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Sets the process-wide component name and minimum level (default info).
void Init(std::string_view component, Level min_level = Level::kInfo);
void SetLevel(Level level);
Level ParseLevel(std::string_view name, Level fallback = Level::kInfo);
bool Enabled(Level level);
void Write(Level level, std::string_view message);

// Formats "key=value", quoting the value when it has spaces or quotes.
std::string Field(std::string_view key, std::string_view value);
inline std::string Field(std::string_view key, long long value) {
  return std::string(key) + "=" + std::to_string(value);
}

// Concatenates anything with an operator<< (strings, numbers, absl::Status).
template <typename... Args>
std::string Cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <typename... Args>
void Debug(const Args&... args) {
  if (Enabled(Level::kDebug)) Write(Level::kDebug, Cat(args...));
}
template <typename... Args>
void Info(const Args&... args) {
  if (Enabled(Level::kInfo)) Write(Level::kInfo, Cat(args...));
}
template <typename... Args>
void Warn(const Args&... args) {
  if (Enabled(Level::kWarning)) Write(Level::kWarning, Cat(args...));
}
template <typename... Args>
void Error(const Args&... args) {
  if (Enabled(Level::kError)) Write(Level::kError, Cat(args...));
}

}  // namespace skiff::log
