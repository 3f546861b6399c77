// skiff::store — an etcd-v3-compatible key-value store: MVCC on LMDB with a
// global revision, durable group commit, watches, leases, compaction and a
// space quota. The request/response types are etcd's own protobuf messages
// (etcdserverpb, mvccpb), so the gRPC adapter (server.h) is a thin layer and
// an embedding process calls exactly the same functions in-process.
//
//   skiff::store::Options opts;
//   opts.data_dir = "/var/lib/skiff/store";
//   ASSIGN_OR_RETURN(auto store, skiff::store::Store::Open(opts));
//   etcdserverpb::PutRequest put; put.set_key("a"); put.set_value("1");
//   ASSIGN_OR_RETURN(auto resp, store->Put(put));   // returns once fsynced
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "etcdserverpb/rpc.pb.h"
#include "mvccpb/kv.pb.h"

namespace skiff::store {

// The etcd version string we report. Clients (Kubernetes' apiserver among
// them) enable progress-notify based consistent reads from 3.5.13 on.
inline constexpr const char* kEtcdVersion = "3.5.13";
inline constexpr int64_t kDefaultQuotaBytes = int64_t{2} << 30;
inline constexpr size_t kMaxRequestBytes = 1536 * 1024;  // etcd's --max-request-bytes default
inline constexpr int kMaxTxnOps = 128;                   // etcd's --max-txn-ops default

struct Options {
  std::string data_dir;
  std::string name = "default";
  // Bytes the database may hold before the NOSPACE alarm; negative = no quota.
  int64_t quota_bytes = kDefaultQuotaBytes;
  // Most operations of each kind (compares, success ops, failure ops) in
  // one txn (etcd's --max-txn-ops).
  int max_txn_ops = kMaxTxnOps;
  // Writes (put, delete, txn) above this fail with "etcdserver: request is
  // too large" once they passed validation, as in etcd (--max-request-bytes);
  // the gRPC server takes messages up to 512 KiB more.
  size_t max_request_bytes = kMaxRequestBytes;
  // Periodic auto-compaction: keep this much history (0 = off).
  int64_t auto_compaction_retention_ms = 0;
  // Revision auto-compaction (etcd's --auto-compaction-mode=revision): every
  // auto_compaction_check_ms, compact to the current revision minus this
  // many (0 = off).
  int64_t auto_compaction_retention_revs = 0;
  int64_t auto_compaction_check_ms = 5 * 60 * 1000;  // etcd's 5 minutes
  // How often watchers created with progress_notify get a progress response.
  int64_t progress_notify_interval_ms = 10 * 60 * 1000;
  // Peer and client URLs reported by MemberList.
  std::vector<std::string> advertise_client_urls;
  std::vector<std::string> peer_urls = {"http://localhost:2380"};
  // Shortest lease TTL granted (etcd's single-member default rounds to 2 s).
  int64_t min_lease_ttl_s = 2;
  // Write-ahead log: size of a preallocated segment, and how often LMDB is
  // flushed (checkpointed) so older segments can be dropped.
  int64_t wal_segment_bytes = int64_t{16} << 20;
  int64_t checkpoint_interval_ms = 1000;
  // Batches are durable once their log record is; LMDB takes them later,
  // many batches in one transaction, every this often (and before anything
  // that scans LMDB: watch catch-up, hash, snapshot, compaction, defrag).
  // Until then reads find their values in memory. 0 = every batch is its
  // own LMDB transaction, committed before its log record is written.
  int64_t lmdb_apply_interval_ms = 100;
  // Group commit window for requests from the network (the committer
  // thread): when at least 8 requests arrived while the previous batch was
  // being made durable (many clients writing at once), the next batch waits
  // until its oldest request has waited this long, or 64 are queued, before
  // it is flushed, so one flush serves more requests. Fewer requests, and a
  // lone client's, never wait. 0 = no window. Like PostgreSQL's commit_delay
  // with commit_siblings.
  int64_t commit_window_us = 500;
  // Tests only: called at each step of a checkpoint ("pinned", "synced",
  // "recorded", "released") on the thread running it.
  std::function<void(const char* step)> checkpoint_hook;
};

// Counters for /metrics.
struct Metrics {
  int64_t puts = 0, ranges = 0, deletes = 0, txns = 0, compactions = 0;
  int64_t commits = 0, committed_requests = 0;
  int64_t commit_ns_total = 0;
  int64_t watchers = 0, watch_streams = 0, slow_watchers = 0;
  int64_t leases = 0, keys = 0;
  int64_t revision = 0, compact_revision = 0;
  int64_t db_size = 0, db_size_in_use = 0, quota = 0;
  bool nospace_alarm = false;
};

// One client's watch stream: many watchers, one ordered response sequence.
// Create/Cancel/RequestProgress may be called from one thread while another
// drains responses with Next(). A slow consumer only delays itself: once its
// backlog grows too long the stream stops buffering live events and later
// replays them from the stored history. A stream may outlive its Store: once
// the store is destroyed, Next returns false and the other calls do nothing.
class WatchStream {
 public:
  virtual ~WatchStream() = default;
  virtual void Create(const etcdserverpb::WatchCreateRequest& req) = 0;
  virtual void Cancel(int64_t watch_id) = 0;
  virtual void RequestProgress() = 0;
  // Blocks for the next response; false once Close() was called.
  virtual bool Next(etcdserverpb::WatchResponse* out) = 0;
  // Like Next, but gives up after timeout_ms (returns false, *closed=false).
  virtual bool NextFor(etcdserverpb::WatchResponse* out, int64_t timeout_ms, bool* closed) = 0;
  virtual void Close() = 0;
};

class Store {
 public:
  static absl::StatusOr<std::unique_ptr<Store>> Open(const Options& options);
  virtual ~Store() = default;

  // KV. Writes return once their write-ahead log record is fdatasynced;
  // concurrent writers share one record and one fdatasync (group commit).
  virtual absl::StatusOr<etcdserverpb::RangeResponse> Range(const etcdserverpb::RangeRequest& req) = 0;
  virtual absl::StatusOr<etcdserverpb::PutResponse> Put(const etcdserverpb::PutRequest& req) = 0;
  virtual absl::StatusOr<etcdserverpb::DeleteRangeResponse> DeleteRange(
      const etcdserverpb::DeleteRangeRequest& req) = 0;
  virtual absl::StatusOr<etcdserverpb::TxnResponse> Txn(const etcdserverpb::TxnRequest& req) = 0;
  virtual absl::StatusOr<etcdserverpb::CompactionResponse> Compact(const etcdserverpb::CompactionRequest& req) = 0;

  // The same writes without blocking the caller: `done` runs once the write
  // is durable (or failed), on whichever thread committed it, after *resp is
  // filled. req and resp must stay valid until then. Used by the gRPC adapter
  // so a thousand in-flight writes do not need a thousand threads.
  using Done = std::function<void(absl::Status)>;
  virtual void PutAsync(const etcdserverpb::PutRequest& req, etcdserverpb::PutResponse* resp, Done done) = 0;
  virtual void DeleteRangeAsync(const etcdserverpb::DeleteRangeRequest& req, etcdserverpb::DeleteRangeResponse* resp,
                                Done done) = 0;
  virtual void TxnAsync(const etcdserverpb::TxnRequest& req, etcdserverpb::TxnResponse* resp, Done done) = 0;
  virtual void CompactAsync(const etcdserverpb::CompactionRequest& req, etcdserverpb::CompactionResponse* resp,
                            Done done) = 0;

  // Watch.
  virtual std::unique_ptr<WatchStream> NewWatchStream() = 0;

  // Lease.
  virtual absl::StatusOr<etcdserverpb::LeaseGrantResponse> LeaseGrant(const etcdserverpb::LeaseGrantRequest& req) = 0;
  virtual absl::StatusOr<etcdserverpb::LeaseRevokeResponse> LeaseRevoke(
      const etcdserverpb::LeaseRevokeRequest& req) = 0;
  // Renews the lease; the response's TTL is 0 when the lease does not exist.
  virtual absl::StatusOr<etcdserverpb::LeaseKeepAliveResponse> LeaseKeepAlive(
      const etcdserverpb::LeaseKeepAliveRequest& req) = 0;
  virtual absl::StatusOr<etcdserverpb::LeaseTimeToLiveResponse> LeaseTimeToLive(
      const etcdserverpb::LeaseTimeToLiveRequest& req) = 0;
  virtual absl::StatusOr<etcdserverpb::LeaseLeasesResponse> LeaseLeases(
      const etcdserverpb::LeaseLeasesRequest& req) = 0;

  // Maintenance and cluster.
  virtual absl::StatusOr<etcdserverpb::StatusResponse> Status() = 0;
  virtual absl::StatusOr<etcdserverpb::HashResponse> Hash() = 0;
  virtual absl::StatusOr<etcdserverpb::HashKVResponse> HashKV(const etcdserverpb::HashKVRequest& req) = 0;
  virtual absl::StatusOr<etcdserverpb::AlarmResponse> Alarm(const etcdserverpb::AlarmRequest& req) = 0;
  virtual absl::StatusOr<etcdserverpb::DefragmentResponse> Defragment() = 0;
  virtual absl::StatusOr<etcdserverpb::MemberListResponse> MemberList() = 0;
  // Streams a consistent snapshot to `sink` in chunks (`remaining` counts the
  // bytes still to come): a bbolt database in etcd 3.4's backend schema
  // followed by its SHA-256, what a real etcd streams, so `etcdctl snapshot
  // status/restore` read it and a real etcd starts on the restored data dir.
  virtual absl::Status Snapshot(
      const std::function<bool(const std::string& chunk, uint64_t remaining)>& sink) = 0;

  virtual etcdserverpb::ResponseHeader Header() const = 0;
  virtual Metrics GetMetrics() const = 0;
  // Options::max_request_bytes.
  virtual size_t MaxRequestBytes() const = 0;
  virtual int64_t Revision() const = 0;
};

// Verifies a snapshot (ours, or one `etcdctl snapshot save` got from a real
// etcd; also the LMDB snapshots of older skiff-store versions) and installs
// it as the database of a new data dir (absent or empty): the history it
// holds, its compaction point, leases and their keys. A file without a valid
// SHA-256 trailer or with a damaged database is refused; on failure nothing
// is left behind.
// skip_hash_check (etcdctl's --skip-hash-check): also take a database file
// without a trailer, e.g. member/snap/db copied from a stopped etcd.
absl::Status RestoreSnapshot(const std::string& snapshot_path, const std::string& data_dir,
                             bool skip_hash_check = false);

}  // namespace skiff::store
