// The in-memory MVCC index: for every key, the revisions at which it was
// written or deleted (a tombstone), like etcd's treeIndex. Values live in
// LMDB under their revision; the index answers "which revision of key K is
// visible at revision R" and carries enough metadata (create revision,
// version, lease) to serve keys_only/count_only reads without touching disk.
//
// Thread-safety: none here; StoreImpl guards it with a shared_mutex. Only the
// commit leader mutates it, and readers bound every lookup by the committed
// revision, so entries the writer has appended but not yet fsynced are
// invisible to them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"

namespace skiff::store {

struct Revision {
  int64_t main = 0;
  int64_t sub = 0;
  bool operator==(const Revision&) const = default;
};

struct IndexEntry {
  int64_t main = 0;
  int64_t create = 0;
  int64_t version = 0;
  int64_t lease = 0;
  int32_t sub = 0;
  bool tombstone = false;
};

class MvccIndex {
 public:
  // The entry of `key` visible at `rev` (rev <= 0: newest), or nullptr when the
  // key did not exist then or was deleted.
  const IndexEntry* Get(const std::string& key, int64_t rev) const {
    auto it = keys_.find(key);
    if (it == keys_.end()) return nullptr;
    return Visible(it->second, rev);
  }

  // Calls fn(key, entry) for every key in [key, end) alive at `rev`, in key
  // order, until fn returns false. `end` follows etcd: empty = just `key`,
  // "\0" = every key >= key.
  template <typename Fn>
  void Range(const std::string& key, const std::string& end, int64_t rev, Fn&& fn) const {
    if (end.empty()) {
      if (const IndexEntry* e = Get(key, rev)) fn(key, *e);
      return;
    }
    const bool to_end = end.size() == 1 && end[0] == '\0';
    if (!to_end && end <= key) return;
    for (auto it = keys_.lower_bound(key); it != keys_.end(); ++it) {
      if (!to_end && it->first >= end) break;
      const IndexEntry* e = Visible(it->second, rev);
      if (e == nullptr) continue;
      if (!fn(it->first, *e)) break;
    }
  }

  void Append(const std::string& key, const IndexEntry& e) { keys_[key].push_back(e); }

  // Drops every entry newer than `rev` (an aborted write batch).
  void RollbackAbove(int64_t rev, const std::vector<std::string>& keys) {
    for (const auto& k : keys) {
      auto it = keys_.find(k);
      if (it == keys_.end()) continue;
      auto& v = it->second;
      while (!v.empty() && v.back().main > rev) v.pop_back();
      if (v.empty()) keys_.erase(it);
    }
  }

  // etcd's compaction rule: for each key keep the newest entry at or below
  // `rev` unless it is a tombstone, and everything above `rev`. The removed
  // revisions are appended to `removed` so the caller can delete the values.
  void Compact(int64_t rev, std::vector<Revision>* removed) {
    for (auto it = keys_.begin(); it != keys_.end();) {
      auto& v = it->second;
      size_t keep_from = 0;
      // Index of the newest entry <= rev.
      size_t n = 0;
      while (n < v.size() && v[n].main <= rev) ++n;
      if (n > 0) {
        keep_from = v[n - 1].tombstone ? n : n - 1;
        for (size_t i = 0; i < keep_from; ++i) removed->push_back({v[i].main, v[i].sub});
        v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(keep_from));
      }
      if (v.empty()) {
        it = keys_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Number of keys alive at the newest revision.
  size_t LiveKeys() const {
    size_t n = 0;
    for (const auto& [k, v] : keys_) n += (!v.empty() && !v.back().tombstone);
    return n;
  }
  size_t TotalKeys() const { return keys_.size(); }
  template <typename Fn>
  void ForEachLatest(Fn&& fn) const {
    for (const auto& [k, v] : keys_) {
      if (!v.empty() && !v.back().tombstone) fn(k, v.back());
    }
  }
  void Clear() { keys_.clear(); }

 private:
  static const IndexEntry* Visible(const std::vector<IndexEntry>& v, int64_t rev) {
    for (auto it = v.rbegin(); it != v.rend(); ++it) {
      if (rev > 0 && it->main > rev) continue;
      return it->tombstone ? nullptr : &*it;
    }
    return nullptr;
  }

  absl::btree_map<std::string, std::vector<IndexEntry>> keys_;
};

}  // namespace skiff::store
