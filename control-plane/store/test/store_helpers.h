// Helpers shared by the in-process store tests.
#pragma once

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "skiff/store/store.h"

namespace skiff::store::testing {

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
