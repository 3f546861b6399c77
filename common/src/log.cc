#include "skiff/common/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>

#include <cctype>

namespace skiff::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::mutex g_mu;
std::string& ComponentName() {
  static std::string name = "skiff";
  return name;
}
const char* LevelName(Level l) {
  switch (l) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarning: return "warning";
    case Level::kError: return "error";
  }
  return "info";
}
}  // namespace

void Init(std::string_view component, Level min_level) {
  std::lock_guard<std::mutex> lock(g_mu);
  ComponentName() = std::string(component);
  g_level = static_cast<int>(min_level);
}

void SetLevel(Level level) { g_level = static_cast<int>(level); }

Level ParseLevel(std::string_view name, Level fallback) {
  std::string n(name);
  for (char& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "debug") return Level::kDebug;
  if (n == "info") return Level::kInfo;
  if (n == "warning" || n == "warn") return Level::kWarning;
  if (n == "error") return Level::kError;
  return fallback;
}

bool Enabled(Level level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

void Write(Level level, std::string_view message) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    line = Cat(LevelName(level), " ", ComponentName(), " ", message, "\n");
  }
  // One write(2) per line so concurrent lines never interleave.
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

std::string Field(std::string_view key, std::string_view value) {
  bool quote = value.empty() || value.find_first_of(" \"") != std::string_view::npos;
  if (!quote) return std::string(key) + "=" + std::string(value);
  std::string out = std::string(key) + "=\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

}  // namespace skiff::log
