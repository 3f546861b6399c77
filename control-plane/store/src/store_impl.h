// Private: the engine behind skiff::store::Store.
#pragma once

#include <lmdb.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "mvcc_index.h"
#include "skiff/common/unique_fd.h"
#include "skiff/store/store.h"

namespace skiff::store {

// All events of one revision, shared by every watcher that wants them.
struct RevEvents {
  int64_t rev = 0;
  std::vector<mvccpb::Event> events;
};
using RevEventsPtr = std::shared_ptr<const RevEvents>;

class StreamImpl;
class StoreImpl;
class Wal;
class ReadTxn;

struct Watcher {
  int64_t id = 0;
  std::string key, end;
  bool prev_kv = false, progress_notify = false, fragment = false;
  bool no_put = false, no_delete = false;
  int64_t min_rev = 0;   // events below this are not delivered
  bool synced = false;   // receives live events from the hub
  int64_t next_rev = 0;  // when !synced: first revision still to replay
  std::deque<RevEventsPtr> queue;
  size_t frag_off = 0;  // events of queue.front() already sent as fragments
  bool sent_since_tick = false;
  StreamImpl* stream = nullptr;

  bool Matches(const std::string& k) const;
};

// Shared by a store and its watch streams, so that a stream may outlive its
// store (an embedder that drops the store first). A stream holds `mu` shared
// while it uses the store; the store's destructor takes it exclusively, closes
// every stream and clears `store`, and a stream that finds nullptr afterwards
// acts closed. Lock order: mu, then hub.mu, then a stream's mu.
struct StoreLink {
  std::shared_mutex mu;
  StoreImpl* store = nullptr;
};

// Fans committed events out to synced watchers. Lock order: hub.mu, then a
// stream's mu.
class WatchHub {
 public:
  explicit WatchHub(StoreImpl* store) : store_(store) {}
  void Publish(const std::vector<RevEventsPtr>& batch);
  void ProgressTick();

  std::mutex mu;
  int64_t rev = 0;  // newest revision published
  std::set<Watcher*> synced;
  std::set<StreamImpl*> streams;
  int64_t slow_watchers = 0;
  StoreImpl* store_;
};

class StreamImpl final : public WatchStream {
 public:
  explicit StreamImpl(StoreImpl* store);
  ~StreamImpl() override;
  void Create(const etcdserverpb::WatchCreateRequest& req) override;
  void Cancel(int64_t watch_id) override;
  void RequestProgress() override;
  bool Next(etcdserverpb::WatchResponse* out) override;
  bool NextFor(etcdserverpb::WatchResponse* out, int64_t timeout_ms, bool* closed) override;
  void Close() override;
  // Called by the store's destructor: the stream acts closed from now on and
  // no longer uses the store (StoreLink).
  void Detach();

 private:
  friend class WatchHub;
  bool NextLocked(std::unique_lock<std::mutex>& lk, etcdserverpb::WatchResponse* out);
  bool BuildEvents(Watcher* w, etcdserverpb::WatchResponse* out);
  // Replays history for an unsynced watcher; called without mu held.
  void CatchUp(std::shared_ptr<Watcher> w);

  std::shared_ptr<StoreLink> link_;
  StoreImpl* store_;  // valid while link_->store is (hold link_->mu shared)
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int64_t, std::shared_ptr<Watcher>> watchers_;
  std::deque<etcdserverpb::WatchResponse> control_;
  bool progress_requested_ = false;
  bool closed_ = false;
  int64_t next_id_ = 0;
  int64_t rr_ = 0;  // round-robin cursor over watcher ids
};

class StoreImpl final : public Store {
 public:
  explicit StoreImpl(const Options& o);
  ~StoreImpl() override;
  absl::Status Init();
  // Makes the newest LMDB snapshot the recovery point: pin it, flush LMDB,
  // record its meta pages, release the previous pin, drop covered log
  // segments. Runs on the checkpointer thread, after compaction and at
  // close; public for tests (Options::checkpoint_hook sees each step).
  absl::Status Checkpoint();

  absl::StatusOr<etcdserverpb::RangeResponse> Range(const etcdserverpb::RangeRequest& req) override;
  absl::StatusOr<etcdserverpb::PutResponse> Put(const etcdserverpb::PutRequest& req) override;
  absl::StatusOr<etcdserverpb::DeleteRangeResponse> DeleteRange(const etcdserverpb::DeleteRangeRequest& req) override;
  absl::StatusOr<etcdserverpb::TxnResponse> Txn(const etcdserverpb::TxnRequest& req) override;
  absl::StatusOr<etcdserverpb::CompactionResponse> Compact(const etcdserverpb::CompactionRequest& req) override;
  void PutAsync(const etcdserverpb::PutRequest& req, etcdserverpb::PutResponse* resp, Done done) override;
  void DeleteRangeAsync(const etcdserverpb::DeleteRangeRequest& req, etcdserverpb::DeleteRangeResponse* resp,
                        Done done) override;
  void TxnAsync(const etcdserverpb::TxnRequest& req, etcdserverpb::TxnResponse* resp, Done done) override;
  void CompactAsync(const etcdserverpb::CompactionRequest& req, etcdserverpb::CompactionResponse* resp,
                    Done done) override;
  std::unique_ptr<WatchStream> NewWatchStream() override;
  absl::StatusOr<etcdserverpb::LeaseGrantResponse> LeaseGrant(const etcdserverpb::LeaseGrantRequest& req) override;
  absl::StatusOr<etcdserverpb::LeaseRevokeResponse> LeaseRevoke(const etcdserverpb::LeaseRevokeRequest& req) override;
  absl::StatusOr<etcdserverpb::LeaseKeepAliveResponse> LeaseKeepAlive(
      const etcdserverpb::LeaseKeepAliveRequest& req) override;
  absl::StatusOr<etcdserverpb::LeaseTimeToLiveResponse> LeaseTimeToLive(
      const etcdserverpb::LeaseTimeToLiveRequest& req) override;
  absl::StatusOr<etcdserverpb::LeaseLeasesResponse> LeaseLeases(const etcdserverpb::LeaseLeasesRequest& req) override;
  absl::StatusOr<etcdserverpb::StatusResponse> Status() override;
  absl::StatusOr<etcdserverpb::HashResponse> Hash() override;
  absl::StatusOr<etcdserverpb::HashKVResponse> HashKV(const etcdserverpb::HashKVRequest& req) override;
  absl::StatusOr<etcdserverpb::AlarmResponse> Alarm(const etcdserverpb::AlarmRequest& req) override;
  absl::StatusOr<etcdserverpb::DefragmentResponse> Defragment() override;
  absl::StatusOr<etcdserverpb::MemberListResponse> MemberList() override;
  absl::Status Snapshot(const std::function<bool(const std::string&, uint64_t)>& sink) override;
  etcdserverpb::ResponseHeader Header() const override;
  Metrics GetMetrics() const override;
  size_t MaxRequestBytes() const override { return opts_.max_request_bytes; }
  int64_t Revision() const override { return committed_rev_.load(std::memory_order_acquire); }

  // Used by the watch code.
  int64_t CompactRevision() const { return compact_rev_.load(std::memory_order_acquire); }
  // Reads events for revisions [from, to] matching w into out (at most
  // max_revs revisions). Returns the last revision examined.
  absl::StatusOr<int64_t> ReadHistory(const Watcher& w, int64_t from, int64_t to, size_t max_revs,
                                      std::vector<RevEventsPtr>* out);
  int64_t progress_interval_ms() const { return opts_.progress_notify_interval_ms; }
  WatchHub hub_;
  std::shared_ptr<StoreLink> link_ = std::make_shared<StoreLink>();
  std::atomic<bool> watchers_seen_{false};

 private:
  struct PendingOp {
    enum class Kind { kPut, kDelete, kTxn, kCompact, kDefrag, kLeaseGrant, kLeaseRevoke, kAlarm } kind;
    const google::protobuf::Message* req = nullptr;
    google::protobuf::Message* resp = nullptr;
    absl::Status status;
    std::binary_semaphore done{0};
    bool lead = false;  // woken to lead the next batch rather than finished
    Done callback;      // set for asynchronous requests
    PendingOp(Kind k, const google::protobuf::Message* r, google::protobuf::Message* p) : kind(k), req(r), resp(p) {}
  };
  struct WriteCtx {
    MDB_txn* txn = nullptr;  // the write txn; a read txn when deferred
    bool deferred = false;   // mutations go to the log and pend_kv_, not LMDB
    int64_t rev = 0;  // revision this op writes at
    int32_t sub = 0;  // number of changes so far in this op
    std::vector<mvccpb::Event> events;
    std::vector<std::string>* touched = nullptr;
    std::string* wal = nullptr;  // the batch's write-ahead log record (mutations)
    absl::Status fatal;  // an LMDB failure: the whole batch is aborted
  };
  struct Lease {
    int64_t id = 0;
    int64_t ttl = 0;
    std::chrono::steady_clock::time_point expiry;
    std::set<std::string> keys;
    bool revoking = false;
  };
  friend class ReadTxn;

  absl::Status Submit(PendingOp& op);
  void Enqueue(PendingOp* op, PendingOp* self);

 public:
  // Leads a commit of the queued requests here unless one is running.
  void LeadQueued();

 private:
  void Complete(PendingOp* op);
  void CommitterLoop();
  void LeadLoop(PendingOp* self, bool committer);
  void CompleteOne(PendingOp* op);
  PendingOp* leader_self_ = nullptr;
  std::thread committer_;
  void SubmitAsync(PendingOp::Kind kind, const google::protobuf::Message* req, google::protobuf::Message* resp,
                   Done done);
  // Applies a batch in one LMDB transaction (committed without fsync), logs
  // its mutations as one write-ahead log record (one fdatasync), then makes it
  // visible and completes its requests.
  void RunGroup(const std::vector<PendingOp*>& group);
  struct Durable {
    int64_t rev;
    std::vector<RevEventsPtr> events;
    std::vector<PendingOp*> ops;
    std::chrono::steady_clock::time_point t0;
  };
  void Ack(Durable d);
  // LMDB writes of the commit path: applied to txn and logged to c.wal.
  int TxPut(WriteCtx& c, MDB_dbi dbi, const std::string& key, const std::string& val, unsigned flags);
  int TxDel(WriteCtx& c, MDB_dbi dbi, const std::string& key);
  absl::Status ApplyWalRecord(MDB_txn* txn, std::string_view payload);
  void CheckpointerLoop();
  // Deferred LMDB apply (Options::lmdb_apply_interval_ms > 0): the log
  // records of durable batches wait in pend_log_ and are applied to LMDB in
  // one transaction by ApplyPending. Until then LoadValue finds their kv
  // values in pend_kv_. Revisions up to pend_floor_ are all in LMDB.
  bool Deferred() const { return opts_.lmdb_apply_interval_ms > 0; }

 public:
  absl::Status ApplyPending();  // takes ckpt_run_mu_; public for tests

 private:
  absl::Status ApplyPendingLocked();  // caller holds ckpt_run_mu_
  bool HasPending() const { return pend_bytes_.load(std::memory_order_acquire) > 0; }
  mutable std::shared_mutex pend_mu_;
  // kv records newer than pend_floor_, in revision order (they are written
  // in that order): appended at the back, applied ones dropped at the front.
  struct PendKv {
    int64_t main;
    int64_t sub;
    std::string rec;
  };
  std::deque<PendKv> pend_kv_;
  const PendKv* FindPending(int64_t main, int64_t sub) const;  // pend_mu_ held
  std::string pend_log_;                        // mutations of logged batches not yet in LMDB
  uint64_t pend_seq_ = 0;                       // last log record in pend_log_
  int64_t pend_rev_ = 0;                        // revision after pend_log_
  std::atomic<int64_t> pend_floor_{0};
  std::atomic<int64_t> pend_bytes_{0};
  std::unique_ptr<Wal> wal_;
  uint64_t wal_seq_ = 0;                     // last record written (leader only)
  // Checkpoints (see lmdb_checkpoint.h for the argument).
  std::mutex lmdb_commit_mu_;    // held around every LMDB write commit
  std::mutex ckpt_run_mu_;       // one checkpoint at a time; guards the fields below
  MDB_txn* ckpt_pin_ = nullptr;  // read txn holding the last checkpoint's snapshot
  uint64_t ckpt_txnid_ = 0;      // its LMDB transaction id
  uint64_t ckpt_gen_ = 0;        // generation of the last checkpoint record
  UniqueFd ckpt_fd_;             // member/skiff/lmdb.ckpt
  std::thread checkpointer_;
  std::mutex ckpt_mu_;
  std::condition_variable ckpt_cv_;
  bool ckpt_stop_ = false;
  bool spare_wanted_ = false;  // the log rotated onto its spare segment
  void ReserveLmdbSpace();
  UniqueFd lmdb_fd_;          // data.mdb, for fallocate (checkpointer only)
  int64_t reserved_end_ = 0;  // blocks reserved up to here
  void ProcessBatch(const std::vector<PendingOp*>& batch);
  void RunCompaction(PendingOp* op);
  // Defragmentation: a compacting copy of LMDB replaces data.mdb (leader
  // only, so no write transaction is open).
  void RunDefrag(PendingOp* op);
  absl::Status OpenEnv(const std::string& dir);  // env_ = a configured, open environment
  absl::Status OpenDbs();                         // kv_dbi_, meta_dbi_, lease_dbi_ of env_
  void ApplyOp(WriteCtx& c, PendingOp* op);
  void TickerLoop();

  // Reads (writer view when txn is the write txn and rev_bound <= 0).
  absl::Status DoRange(MDB_txn* txn, int64_t current, const etcdserverpb::RangeRequest& r,
                       etcdserverpb::RangeResponse* out);
  absl::Status LoadValue(MDB_txn* txn, int64_t main, int64_t sub, mvccpb::KeyValue* kv, bool* tombstone);
  void FillKv(MDB_txn* txn, const std::string& key, const IndexEntry& e, bool keys_only, mvccpb::KeyValue* kv);
  // Writes; each assumes validation already happened.
  void WritePut(WriteCtx& c, const etcdserverpb::PutRequest& r, etcdserverpb::PutResponse* resp);
  void WriteDelete(WriteCtx& c, const etcdserverpb::DeleteRangeRequest& r, etcdserverpb::DeleteRangeResponse* resp);
  void WriteTxn(WriteCtx& c, const etcdserverpb::TxnRequest& r, etcdserverpb::TxnResponse* resp);
  void DeleteKey(WriteCtx& c, const std::string& key, const IndexEntry& old, mvccpb::KeyValue* prev_out);
  absl::Status CheckPut(const etcdserverpb::PutRequest& r);
  // max: the ops a txn at this depth may have in a branch (--max-txn-ops at the top).
  absl::Status CheckTxn(const etcdserverpb::TxnRequest& r, int max);
  static absl::Status CheckRangeShape(const etcdserverpb::RangeRequest& r);
  int64_t MapBytes() const;
  bool EvalCompare(const etcdserverpb::Compare& c, MDB_txn* txn);
  bool QuotaAllows(WriteCtx& c, size_t cost);
  bool TxnHasPut(const etcdserverpb::TxnRequest& r) const;
  void PutMeta(MDB_txn* txn, const std::string& key, int64_t v, WriteCtx* c);
  void DetachLease(const std::string& key, int64_t lease);
  void AttachLease(const std::string& key, int64_t lease);
  absl::Status RebuildLeases();
  int64_t DbSize() const;  // callers hold env_mu_, ckpt_run_mu_ or are the commit leader
  etcdserverpb::ResponseHeader HeaderAt(int64_t rev) const;

  Options opts_;
  MDB_env* env_ = nullptr;
  // Shared by every user of env_ outside the commit leader (read txns,
  // snapshot, status); exclusive only while defragmentation swaps env_.
  mutable std::shared_mutex env_mu_;
  MDB_dbi kv_dbi_ = 0, meta_dbi_ = 0, lease_dbi_ = 0;
  uint64_t member_id_ = 0, cluster_id_ = 0;

  mutable std::shared_mutex index_mu_;
  MvccIndex index_;
  int64_t rev_ = 0;  // newest revision written by the writer (maybe not yet durable)
  std::atomic<int64_t> committed_rev_{0};
  std::atomic<int64_t> compact_rev_{0};
  std::atomic<bool> nospace_{false};

  mutable std::mutex lease_mu_;
  absl::flat_hash_map<int64_t, Lease> leases_;

  std::mutex read_pool_mu_;
  std::vector<MDB_txn*> read_pool_;

  std::mutex q_mu_;
  std::condition_variable q_cv_;
  std::vector<PendingOp*> queue_;
  bool stopping_ = false;
  bool leader_busy_ = false;
  // The committer waits for more requests (Options::commit_window_us).
  static constexpr size_t kCommitSiblings = 8, kGatherEnough = 64;
  bool gathering_ = false;
  std::chrono::steady_clock::time_point first_queued_;  // when queue_ last became non-empty
  std::thread ticker_;
  std::mutex ticker_mu_;
  std::condition_variable ticker_cv_;

  mutable std::mutex metrics_mu_;
  Metrics metrics_;
  std::atomic<int64_t> ranges_{0};
};

// A pooled read-only LMDB transaction: renewing a reset txn avoids taking a
// new reader slot for every request.
class ReadTxn {
 public:
  explicit ReadTxn(StoreImpl* s) : s_(s), env_lk_(s->env_mu_) {
    {
      std::lock_guard<std::mutex> lk(s_->read_pool_mu_);
      if (!s_->read_pool_.empty()) {
        txn_ = s_->read_pool_.back();
        s_->read_pool_.pop_back();
      }
    }
    if (txn_ != nullptr) {
      rc_ = mdb_txn_renew(txn_);
      if (rc_ != 0) {
        mdb_txn_abort(txn_);
        txn_ = nullptr;
      }
    }
    if (txn_ == nullptr) rc_ = mdb_txn_begin(s_->env_, nullptr, MDB_RDONLY, &txn_);
  }
  ~ReadTxn() {
    if (rc_ != 0 || txn_ == nullptr) return;
    mdb_txn_reset(txn_);
    std::lock_guard<std::mutex> lk(s_->read_pool_mu_);
    s_->read_pool_.push_back(txn_);
  }
  absl::Status status() const { return rc_ == 0 ? absl::OkStatus() : absl::InternalError(mdb_strerror(rc_)); }
  MDB_txn* get() const { return txn_; }

 private:
  StoreImpl* s_;
  std::shared_lock<std::shared_mutex> env_lk_;  // env_ stays while the txn lives
  MDB_txn* txn_ = nullptr;
  int rc_ = 0;
};

// From now on, async writes (PutAsync, TxnAsync, ...) submitted by the
// calling thread never lead a commit inline: the committer thread takes
// them. For event-loop threads, where an inline fdatasync would stall every
// connection of the loop and each request would be committed alone.
void HandAsyncWritesToCommitter();

// From now on, async writes submitted by the calling thread (an event loop)
// are only queued; the loop calls LeadDeferredWrites once it has read every
// request of its turn, and that commits them all as one batch on the loop
// thread itself (unless a commit is running: its leader takes them). No
// thread hand-off on the way in, and completions for this loop's own calls
// can be written in the same turn. Further batches that queue up meanwhile
// go to the committer thread.
void LeadAsyncWritesAtTurnEnd();
void LeadDeferredWrites();

}  // namespace skiff::store
