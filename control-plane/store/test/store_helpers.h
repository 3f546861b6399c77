// Helpers shared by the in-process store tests.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "skiff/store/store.h"

namespace skiff::store::testing {

// Removes dir/<prefix><pid>... entries whose process is gone (leftovers of a
// crashed run); entries of live processes (concurrent runs) stay.
inline void RemoveStale(const std::filesystem::path& dir, const std::string& prefix) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const pid_t pid = static_cast<pid_t>(std::atol(name.c_str() + prefix.size()));
    if (pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0) std::filesystem::remove_all(e.path(), ec);
  }
}

inline std::unique_ptr<Store> OpenStore(const std::string& dir, Options o = {}) {
  o.data_dir = dir;
  auto s = Store::Open(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

// Puts k=v and returns the revision it was written at (-1 on failure).
inline int64_t Put(Store* s, const std::string& k, const std::string& v, int64_t lease = 0) {
  etcdserverpb::PutRequest r;
  r.set_key(k);
  r.set_value(v);
  r.set_lease(lease);
  auto resp = s->Put(r);
  EXPECT_TRUE(resp.ok()) << resp.status();
  return resp.ok() ? resp->header().revision() : -1;
}

}  // namespace skiff::store::testing
