// The engine: LMDB storage, MVCC writes through leader-based group commit,
// reads against the committed revision, leases, compaction and maintenance.
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"
#include "skiff/store/errors.h"
#include "bolt.h"
#include "lmdb_checkpoint.h"
#include "auth.h"
#include "store_impl.h"
#include "wal.h"

namespace skiff::store {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kMaxLeaseTTL = 9000000000;
constexpr char kPutRecord = 'p';
constexpr char kTombRecord = 't';

absl::Status MdbError(int rc, const std::string& what) {
  if (rc == MDB_MAP_FULL) return ErrNoSpace();
  return absl::InternalError(absl::StrCat(what, ": ", mdb_strerror(rc)));
}

void PutBe64(char* p, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    p[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}
uint64_t GetBe64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
std::string RevKey(int64_t main, int64_t sub) {
  std::string k(16, '\0');
  PutBe64(k.data(), static_cast<uint64_t>(main));
  PutBe64(k.data() + 8, static_cast<uint64_t>(sub));
  return k;
}
MDB_val Val(const std::string& s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }

bool InRange(const std::string& k, const std::string& key, const std::string& end) {
  if (end.empty()) return k == key;
  if (end.size() == 1 && end[0] == '\0') return k >= key;
  return k >= key && k < end;
}

uint64_t RandomId() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                      static_cast<uint64_t>(Clock::now().time_since_epoch().count()));
  uint64_t v = 0;
  while (v == 0) v = gen() & 0x7fffffffffffffffULL;
  return v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const Options& options) {
  if (options.max_txn_ops <= 0) return absl::InvalidArgumentError("max_txn_ops must be positive");
  if (options.max_request_bytes == 0) return absl::InvalidArgumentError("max_request_bytes must be positive");
  auto s = std::make_unique<StoreImpl>(options);
  RETURN_IF_ERROR(s->Init());
  return std::unique_ptr<Store>(std::move(s));
}

StoreImpl::StoreImpl(const Options& o) : hub_(this), opts_(o) { link_->store = this; }

StoreImpl::~StoreImpl() {
  {
    // Watch streams the embedder still holds stop using the store: each is
    // closed (Next returns false) and later calls on it do nothing.
    std::unique_lock<std::shared_mutex> alive(link_->mu);
    std::lock_guard<std::mutex> hlk(hub_.mu);
    for (StreamImpl* s : hub_.streams) s->Detach();
    hub_.streams.clear();
    hub_.synced.clear();
    link_->store = nullptr;
  }
  {
    std::lock_guard<std::mutex> lk(q_mu_);
    stopping_ = true;
  }
  q_cv_.notify_all();
  {
    std::lock_guard<std::mutex> lk(ticker_mu_);
  }
  ticker_cv_.notify_all();
  if (ticker_.joinable()) ticker_.join();
  if (committer_.joinable()) committer_.join();
  // Wait for a leader still committing (callers racing the destructor).
  for (;;) {
    std::lock_guard<std::mutex> lk(q_mu_);
    if (!leader_busy_) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  {
    std::lock_guard<std::mutex> lk(ckpt_mu_);
    ckpt_stop_ = true;
  }
  ckpt_cv_.notify_all();
  if (checkpointer_.joinable()) checkpointer_.join();
  // A clean close checkpoints once more (the next open then starts from
  // exactly this state); segments a failed checkpoint did not cover stay.
  if (env_ != nullptr && ckpt_fd_) {
    absl::Status st = Checkpoint();
    if (!st.ok()) log::Error("store: final checkpoint failed: ", st);
  }
  if (ckpt_pin_ != nullptr) mdb_txn_abort(ckpt_pin_);
  ckpt_pin_ = nullptr;
  {
    std::lock_guard<std::mutex> lk(hub_.mu);
    for (StreamImpl* s : hub_.streams) s->Close();
  }
  for (MDB_txn* t : read_pool_) mdb_txn_abort(t);
  read_pool_.clear();
  if (env_ != nullptr) mdb_env_close(env_);
}

absl::Status StoreImpl::Init() {
  if (opts_.data_dir.empty()) return absl::InvalidArgumentError("store: --data-dir is empty");
  std::string dir = opts_.data_dir + "/member/skiff";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", dir, ": ", ec.message()));
  ::chmod(opts_.data_dir.c_str(), 0700);
  // A defragmentation that crashed before its swap leaves its copy behind.
  ::unlink((dir + "/data.mdb.defrag").c_str());
  // Before LMDB reads its header: go back to the last checkpointed snapshot
  // (its pages are intact on disk, later commits may be torn after a machine
  // crash); the log holds everything after it. See lmdb_checkpoint.h.
  const std::string ckpt_path = dir + "/lmdb.ckpt";
  ASSIGN_OR_RETURN(std::optional<MetaCheckpoint> ckpt, ReadMetaCheckpoint(ckpt_path));
  if (ckpt) {
    RETURN_IF_ERROR(RestoreLmdbMeta(dir + "/data.mdb", *ckpt));
    ckpt_gen_ = ckpt->gen;
  }
  RETURN_IF_ERROR(OpenEnv(dir));
  RETURN_IF_ERROR(OpenDbs());
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, 0, &txn);
  if (rc != 0) return MdbError(rc, "begin init txn");
  auto get_meta = [&](const std::string& k, int64_t* v) {
    MDB_val key = Val(k), val;
    if (mdb_get(txn, meta_dbi_, &key, &val) == 0 && val.mv_size == 8) {
      *v = static_cast<int64_t>(GetBe64(static_cast<const char*>(val.mv_data)));
      return true;
    }
    return false;
  };
  int64_t v = 0;
  if (get_meta("member_id", &v)) {
    member_id_ = static_cast<uint64_t>(v);
    get_meta("cluster_id", &v);
    cluster_id_ = static_cast<uint64_t>(v);
  } else {
    member_id_ = RandomId();
    cluster_id_ = RandomId();
    PutMeta(txn, "member_id", static_cast<int64_t>(member_id_), nullptr);
    PutMeta(txn, "cluster_id", static_cast<int64_t>(cluster_id_), nullptr);
  }
  // Redo what the write-ahead log holds beyond LMDB's last applied record.
  int64_t lmdb_seq = 0;
  get_meta("wal_seq", &lmdb_seq);
  uint64_t last_seq = 0;
  int64_t replayed = 0;
  absl::Status rs = ReplayWal(
      dir + "/wal", static_cast<uint64_t>(lmdb_seq),
      [&](uint64_t, std::string_view payload) {
        ++replayed;
        return ApplyWalRecord(txn, payload);
      },
      &last_seq);
  if (!rs.ok()) {
    mdb_txn_abort(txn);
    return rs;
  }
  if (last_seq > static_cast<uint64_t>(lmdb_seq)) PutMeta(txn, "wal_seq", static_cast<int64_t>(last_seq), nullptr);
  const uint64_t next_seq = std::max<uint64_t>(last_seq, static_cast<uint64_t>(lmdb_seq)) + 1;
  int64_t meta_rev = 1;
  get_meta("rev", &meta_rev);
  int64_t compact = 0;
  get_meta("compact", &compact);
  int64_t alarm = 0;
  get_meta("alarm_nospace", &alarm);
  nospace_ = alarm != 0;
  // Rebuild the index from the revision-ordered records.
  MDB_cursor* cur = nullptr;
  rc = mdb_cursor_open(txn, kv_dbi_, &cur);
  if (rc != 0) {
    mdb_txn_abort(txn);
    return MdbError(rc, "open cursor");
  }
  MDB_val k, val;
  int64_t max_rev = 0;
  mvccpb::KeyValue kv;
  for (rc = mdb_cursor_get(cur, &k, &val, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
    if (k.mv_size != 16 || val.mv_size < 1) continue;
    const char* kp = static_cast<const char*>(k.mv_data);
    const char* vp = static_cast<const char*>(val.mv_data);
    if (!kv.ParseFromArray(vp + 1, static_cast<int>(val.mv_size - 1))) {
      mdb_cursor_close(cur);
      mdb_txn_abort(txn);
      return absl::DataLossError("store: corrupt kv record");
    }
    IndexEntry e;
    e.main = static_cast<int64_t>(GetBe64(kp));
    e.sub = static_cast<int32_t>(GetBe64(kp + 8));
    e.tombstone = vp[0] == kTombRecord;
    e.create = kv.create_revision();
    e.version = kv.version();
    e.lease = kv.lease();
    index_.Append(kv.key(), e);
    max_rev = std::max(max_rev, e.main);
  }
  mdb_cursor_close(cur);
  rev_ = std::max(meta_rev, max_rev);
  {
    std::lock_guard<std::mutex> lk(lmdb_commit_mu_);
    rc = mdb_txn_commit(txn);
  }
  if (rc != 0) return MdbError(rc, "commit init txn");
  // LMDB now holds everything the old log did: checkpoint it, then start a
  // fresh log (appending after a torn tail would hide the new records).
  lmdb_fd_.reset(::open((dir + "/data.mdb").c_str(), O_RDWR | O_CLOEXEC));
  if (!lmdb_fd_) return LastErrnoError("open data.mdb");
  ckpt_fd_.reset(::open(ckpt_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!ckpt_fd_) return LastErrnoError("open " + ckpt_path);
  if (!ckpt) {
    // A new checkpoint file: make its directory entry durable.
    UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dfd || ::fsync(dfd.get()) != 0) return LastErrnoError("fsync " + dir);
  }
  RETURN_IF_ERROR(Checkpoint());
  ASSIGN_OR_RETURN(wal_, Wal::Create(dir + "/wal", next_seq, opts_.wal_segment_bytes));
  wal_seq_ = next_seq - 1;
  if (replayed > 0) log::Info("store: replayed write-ahead log ", log::Field("records", replayed));
  committed_rev_ = rev_;
  compact_rev_ = compact;
  hub_.rev = rev_;
  pend_floor_ = rev_;
  RETURN_IF_ERROR(RebuildLeases());
  ReserveLmdbSpace();
  committer_ = std::thread([this] { CommitterLoop(); });
  checkpointer_ = std::thread([this] { CheckpointerLoop(); });

  ticker_ = std::thread([this] { TickerLoop(); });
  log::Info("store: opened ", log::Field("data_dir", opts_.data_dir), " ", log::Field("revision", rev_), " ",
            log::Field("keys", static_cast<long long>(index_.LiveKeys())));
  return absl::OkStatus();
}

absl::Status StoreImpl::OpenEnv(const std::string& dir) {
  int rc = mdb_env_create(&env_);
  if (rc != 0) return MdbError(rc, "mdb_env_create");
  mdb_env_set_maxdbs(env_, 4);
  mdb_env_set_maxreaders(env_, 4096);
  rc = mdb_env_set_mapsize(env_, static_cast<size_t>(MapBytes()));
  if (rc != 0) return MdbError(rc, "mdb_env_set_mapsize");
  // MDB_NOTLS: read txns are pooled and move between threads.
  // MDB_NOSYNC: durability comes from the write-ahead log; LMDB is flushed
  // by checkpoints (see RunGroup and Checkpoint).
  rc = mdb_env_open(env_, dir.c_str(), MDB_NOTLS | MDB_NORDAHEAD | MDB_NOSYNC, 0600);
  if (rc != 0) return MdbError(rc, absl::StrCat("open lmdb in ", dir));
  return absl::OkStatus();
}

absl::Status StoreImpl::OpenDbs() {
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, 0, &txn);
  if (rc != 0) return MdbError(rc, "begin txn");
  if ((rc = mdb_dbi_open(txn, "kv", MDB_CREATE, &kv_dbi_)) != 0 ||
      (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &meta_dbi_)) != 0 ||
      (rc = mdb_dbi_open(txn, "lease", MDB_CREATE, &lease_dbi_)) != 0) {
    mdb_txn_abort(txn);
    return MdbError(rc, "open lmdb databases");
  }
  std::lock_guard<std::mutex> lk(lmdb_commit_mu_);
  rc = mdb_txn_commit(txn);
  if (rc != 0) return MdbError(rc, "commit lmdb databases");
  return absl::OkStatus();
}

absl::Status StoreImpl::RebuildLeases() {
  RETURN_IF_ERROR(ApplyPending());
  ReadTxn rt(this);
  RETURN_IF_ERROR(rt.status());
  std::lock_guard<std::mutex> lk(lease_mu_);
  auto old = std::move(leases_);
  leases_.clear();
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(rt.get(), lease_dbi_, &cur);
  if (rc != 0) return MdbError(rc, "open lease cursor");
  MDB_val k, v;
  auto now = Clock::now();
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8 || v.mv_size != 8) continue;
    Lease l;
    l.id = static_cast<int64_t>(GetBe64(static_cast<const char*>(k.mv_data)));
    l.ttl = static_cast<int64_t>(GetBe64(static_cast<const char*>(v.mv_data)));
    auto it = old.find(l.id);
    // A restart renews every lease (etcd does the same on leader change).
    l.expiry = it != old.end() ? it->second.expiry : now + std::chrono::seconds(l.ttl);
    leases_[l.id] = std::move(l);
  }
  mdb_cursor_close(cur);
  std::shared_lock<std::shared_mutex> il(index_mu_);
  index_.ForEachLatest([&](const std::string& key, const IndexEntry& e) {
    if (e.lease == 0 || e.main > committed_rev_) return;
    auto it = leases_.find(e.lease);
    if (it != leases_.end()) it->second.keys.insert(key);
  });
  return absl::OkStatus();
}

void StoreImpl::PutMeta(MDB_txn* txn, const std::string& key, int64_t v, WriteCtx* c) {
  std::string buf(8, '\0');
  PutBe64(buf.data(), static_cast<uint64_t>(v));
  int rc = 0;
  if (c != nullptr && c->wal != nullptr) {
    rc = TxPut(*c, meta_dbi_, key, buf, 0);
  } else {
    MDB_val k = Val(key), val = Val(buf);
    rc = mdb_put(txn, meta_dbi_, &k, &val, 0);
  }
  if (rc != 0 && c != nullptr && c->fatal.ok()) c->fatal = MdbError(rc, "put meta");
}

// A write-ahead log record is the batch's LMDB mutations, in order:
//   u8 database (0 kv, 1 meta, 2 lease) | u8 'p' or 'd' | u32 key length |
//   key | (for 'p') u32 value length | value        (lengths big endian)
// Replaying them redoes the batch exactly, whatever the requests were
// (lease IDs, expiry and compare results are already decided).
namespace {
void PutBe32(std::string* out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  out->append(b, 4);
}
uint32_t GetBe32(const char* p) {
  return (uint32_t{static_cast<unsigned char>(p[0])} << 24) | (uint32_t{static_cast<unsigned char>(p[1])} << 16) |
         (uint32_t{static_cast<unsigned char>(p[2])} << 8) | uint32_t{static_cast<unsigned char>(p[3])};
}
}  // namespace

int StoreImpl::TxPut(WriteCtx& c, MDB_dbi dbi, const std::string& key, const std::string& val, unsigned flags) {
  int rc = 0;
  if (c.deferred) {
    // Logged now, applied to LMDB by ApplyPending; reads meanwhile (this
    // batch's own included) find kv values here.
    if (dbi == kv_dbi_) {
      std::unique_lock<std::shared_mutex> lk(pend_mu_);
      pend_kv_.push_back(PendKv{static_cast<int64_t>(GetBe64(key.data())),
                                static_cast<int64_t>(GetBe64(key.data() + 8)), val});
    }
  } else {
    MDB_val k = Val(key), v = Val(val);
    rc = mdb_put(c.txn, dbi, &k, &v, flags);
  }
  if (rc == 0 && c.wal != nullptr) {
    c.wal->push_back(static_cast<char>(dbi == kv_dbi_ ? 0 : dbi == meta_dbi_ ? 1 : 2));
    c.wal->push_back('p');
    PutBe32(c.wal, static_cast<uint32_t>(key.size()));
    c.wal->append(key);
    PutBe32(c.wal, static_cast<uint32_t>(val.size()));
    c.wal->append(val);
  }
  return rc;
}

int StoreImpl::TxDel(WriteCtx& c, MDB_dbi dbi, const std::string& key) {
  int rc = 0;
  if (!c.deferred) {
    MDB_val k = Val(key);
    rc = mdb_del(c.txn, dbi, &k, nullptr);
  }
  if (rc == 0 && c.wal != nullptr) {
    c.wal->push_back(static_cast<char>(dbi == kv_dbi_ ? 0 : dbi == meta_dbi_ ? 1 : 2));
    c.wal->push_back('d');
    PutBe32(c.wal, static_cast<uint32_t>(key.size()));
    c.wal->append(key);
  }
  return rc;
}

absl::Status StoreImpl::ApplyWalRecord(MDB_txn* txn, std::string_view p) {
  auto bad = [] { return absl::DataLossError("store: malformed write-ahead log record"); };
  size_t off = 0;
  while (off < p.size()) {
    if (p.size() - off < 6) return bad();
    const int db = p[off];
    const char op = p[off + 1];
    uint32_t klen = GetBe32(p.data() + off + 2);
    off += 6;
    if (db < 0 || db > 2 || (op != 'p' && op != 'd') || p.size() - off < klen) return bad();
    MDB_dbi dbi = db == 0 ? kv_dbi_ : db == 1 ? meta_dbi_ : lease_dbi_;
    MDB_val k{klen, const_cast<char*>(p.data() + off)};
    off += klen;
    int rc = 0;
    if (op == 'p') {
      if (p.size() - off < 4) return bad();
      uint32_t vlen = GetBe32(p.data() + off);
      off += 4;
      if (p.size() - off < vlen) return bad();
      MDB_val v{vlen, const_cast<char*>(p.data() + off)};
      off += vlen;
      // kv keys are revisions: a batch's are past everything stored.
      rc = mdb_put(txn, dbi, &k, &v, db == 0 ? MDB_APPEND : 0);
      if (rc == MDB_KEYEXIST && db == 0) rc = mdb_put(txn, dbi, &k, &v, 0);
    } else {
      rc = mdb_del(txn, dbi, &k, nullptr);
      if (rc == MDB_NOTFOUND) rc = 0;
    }
    if (rc != 0) return MdbError(rc, "replay write-ahead log");
  }
  return absl::OkStatus();
}

etcdserverpb::ResponseHeader StoreImpl::HeaderAt(int64_t rev) const {
  etcdserverpb::ResponseHeader h;
  h.set_cluster_id(cluster_id_);
  h.set_member_id(member_id_);
  h.set_revision(rev);
  h.set_raft_term(2);
  return h;
}
etcdserverpb::ResponseHeader StoreImpl::Header() const { return HeaderAt(Revision()); }

// ---------------------------------------------------------------- reads

const StoreImpl::PendKv* StoreImpl::FindPending(int64_t main, int64_t sub) const {
  auto it = std::lower_bound(pend_kv_.begin(), pend_kv_.end(), std::make_pair(main, sub),
                             [](const PendKv& e, const std::pair<int64_t, int64_t>& k) {
                               return std::make_pair(e.main, e.sub) < k;
                             });
  return it != pend_kv_.end() && it->main == main && it->sub == sub ? &*it : nullptr;
}

absl::Status StoreImpl::LoadValue(MDB_txn* txn, int64_t main, int64_t sub, mvccpb::KeyValue* kv, bool* tomb) {
  std::string k = RevKey(main, sub);
  auto parse = [&](const char* p, size_t n) {
    if (n < 1 || !kv->ParseFromArray(p + 1, static_cast<int>(n - 1))) {
      return absl::DataLossError("store: corrupt kv record");
    }
    if (tomb != nullptr) *tomb = p[0] == kTombRecord;
    return absl::OkStatus();
  };
  if (main > pend_floor_.load(std::memory_order_acquire)) {
    std::shared_lock<std::shared_mutex> lk(pend_mu_);
    if (const PendKv* e = FindPending(main, sub)) return parse(e->rec.data(), e->rec.size());
  }
  MDB_val key = Val(k), val;
  int rc = mdb_get(txn, kv_dbi_, &key, &val);
  if (rc == MDB_NOTFOUND && Deferred()) {
    // ApplyPending moved it from pend_kv_ into a newer LMDB snapshot than
    // this read txn's (values of a revision never change: read on there).
    mdb_txn_reset(txn);
    rc = mdb_txn_renew(txn);
    if (rc == 0) rc = mdb_get(txn, kv_dbi_, &key, &val);
  }
  if (rc != 0) return MdbError(rc, absl::StrCat("read revision ", main));
  return parse(static_cast<const char*>(val.mv_data), val.mv_size);
}

void StoreImpl::FillKv(MDB_txn* txn, const std::string& key, const IndexEntry& e, bool keys_only,
                       mvccpb::KeyValue* kv) {
  if (!keys_only && LoadValue(txn, e.main, e.sub, kv, nullptr).ok()) return;
  kv->Clear();
  kv->set_key(key);
  kv->set_create_revision(e.create);
  kv->set_mod_revision(e.main);
  kv->set_version(e.version);
  kv->set_lease(e.lease);
}

absl::Status StoreImpl::DoRange(MDB_txn* txn, int64_t current, const etcdserverpb::RangeRequest& r,
                                etcdserverpb::RangeResponse* out) {
  using RR = etcdserverpb::RangeRequest;
  RETURN_IF_ERROR(CheckRangeShape(r));
  if (r.revision() > current) return ErrFutureRev();
  int64_t rev = r.revision() > 0 ? r.revision() : current;
  if (rev < compact_rev_.load(std::memory_order_acquire)) return ErrCompacted();
  *out->mutable_header() = HeaderAt(current);
  RR::SortOrder order = r.sort_order();
  if (order == RR::NONE && r.sort_target() != RR::KEY) order = RR::ASCEND;
  const bool sorted = !(order == RR::NONE || (r.sort_target() == RR::KEY && order == RR::ASCEND));
  const bool filtered = r.min_mod_revision() || r.max_mod_revision() || r.min_create_revision() ||
                        r.max_create_revision();
  // Without sorting or filtering only limit+1 entries are materialised; the
  // count still covers the whole range, as in etcd.
  const int64_t fetch = (sorted || filtered || r.limit() <= 0) ? -1 : r.limit() + 1;
  std::vector<std::pair<const std::string*, const IndexEntry*>> hits;
  int64_t count = 0;
  index_.Range(r.key(), r.range_end(), rev, [&](const std::string& k, const IndexEntry& e) {
    ++count;
    if (r.count_only()) return true;
    if (fetch >= 0 && static_cast<int64_t>(hits.size()) >= fetch) return true;
    if (r.min_mod_revision() && e.main < r.min_mod_revision()) return true;
    if (r.max_mod_revision() && e.main > r.max_mod_revision()) return true;
    if (r.min_create_revision() && e.create < r.min_create_revision()) return true;
    if (r.max_create_revision() && e.create > r.max_create_revision()) return true;
    hits.emplace_back(&k, &e);
    return true;
  });
  out->set_count(count);
  if (r.count_only()) return absl::OkStatus();
  if (sorted) {
    const bool need_values = r.sort_target() == RR::VALUE;
    std::vector<mvccpb::KeyValue> kvs(hits.size());
    for (size_t i = 0; i < hits.size(); ++i) {
      FillKv(txn, *hits[i].first, *hits[i].second, r.keys_only() && !need_values, &kvs[i]);
    }
    auto key_of = [&](const mvccpb::KeyValue& kv) -> std::tuple<int64_t, const std::string*> {
      switch (r.sort_target()) {
        case RR::VERSION: return {kv.version(), nullptr};
        case RR::CREATE: return {kv.create_revision(), nullptr};
        case RR::MOD: return {kv.mod_revision(), nullptr};
        case RR::VALUE: return {0, &kv.value()};
        default: return {0, &kv.key()};
      }
    };
    auto less = [&](const mvccpb::KeyValue& a, const mvccpb::KeyValue& b) {
      auto [ai, as] = key_of(a);
      auto [bi, bs] = key_of(b);
      if (as != nullptr) return *as < *bs;
      return ai < bi;
    };
    if (order == RR::DESCEND) {
      std::stable_sort(kvs.begin(), kvs.end(), [&](const auto& a, const auto& b) { return less(b, a); });
    } else {
      std::stable_sort(kvs.begin(), kvs.end(), less);
    }
    size_t n = kvs.size();
    if (r.limit() > 0 && n > static_cast<size_t>(r.limit())) {
      n = static_cast<size_t>(r.limit());
      out->set_more(true);
    }
    for (size_t i = 0; i < n; ++i) {
      auto* kv = out->add_kvs();
      *kv = std::move(kvs[i]);
      if (r.keys_only()) kv->clear_value();
    }
    return absl::OkStatus();
  }
  size_t n = hits.size();
  if (r.limit() > 0 && n > static_cast<size_t>(r.limit())) {
    n = static_cast<size_t>(r.limit());
    out->set_more(true);
  }
  out->mutable_kvs()->Reserve(static_cast<int>(n));
  for (size_t i = 0; i < n; ++i) FillKv(txn, *hits[i].first, *hits[i].second, r.keys_only(), out->add_kvs());
  return absl::OkStatus();
}

absl::StatusOr<etcdserverpb::RangeResponse> StoreImpl::Range(const etcdserverpb::RangeRequest& req) {
  ranges_.fetch_add(1, std::memory_order_relaxed);
  if (req.key().empty()) return ErrEmptyKey();
  etcdserverpb::RangeResponse out;
  std::shared_lock<std::shared_mutex> lk(index_mu_);
  int64_t current = committed_rev_.load(std::memory_order_acquire);
  ReadTxn rt(this);
  RETURN_IF_ERROR(rt.status());
  RETURN_IF_ERROR(DoRange(rt.get(), current, req, &out));
  return out;
}

// ---------------------------------------------------------------- writes

// Group commit without a writer thread: the first caller to find no commit in
// progress becomes the leader, takes every queued request as one batch,
// applies and fsyncs it and completes the others. If requests queued up
// meanwhile, leadership passes to the first of them when it is a blocked
// synchronous caller; asynchronous requests (the gRPC adapter's) have no
// thread of their own, so the leader keeps going until the queue is empty.
// A lone client pays no thread hand-off at all; under load the queue that
// builds up during one fsync becomes the next batch.
void StoreImpl::Complete(PendingOp* op) {
  if (op->callback) {
    op->callback(op->status);
    delete op;
  } else {
    op->done.release();
  }
}

namespace {
thread_local bool tl_hand_async_to_committer = false;
thread_local bool tl_lead_at_turn_end = false;
thread_local StoreImpl* tl_deferred = nullptr;  // has requests this thread deferred
}  // namespace

void HandAsyncWritesToCommitter() { tl_hand_async_to_committer = true; }
void LeadAsyncWritesAtTurnEnd() { tl_lead_at_turn_end = true; }

void LeadDeferredWrites() {
  StoreImpl* s = tl_deferred;
  tl_deferred = nullptr;
  if (s != nullptr) s->LeadQueued();
}

void StoreImpl::LeadQueued() {
  {
    std::lock_guard<std::mutex> lk(q_mu_);
    if (leader_busy_ || queue_.empty()) return;
    leader_busy_ = true;
  }
  LeadLoop(nullptr, false);
}

void StoreImpl::Enqueue(PendingOp* op, PendingOp* self) {
  {
    std::unique_lock<std::mutex> lk(q_mu_);
    if (stopping_) {
      lk.unlock();
      op->status = ErrStopped();
      Complete(op);
      return;
    }
    if (queue_.empty()) first_queued_ = Clock::now();
    queue_.push_back(op);
    if (self == nullptr) {
      // An async request (from a gRPC callback thread) that finds no commit
      // in progress leads inline: no thread hand-off, and gRPC's other
      // threads keep reading requests into the queue meanwhile. Measured
      // here, this beats handing every batch to a dedicated thread.
      if (leader_busy_) {
        if (gathering_ && queue_.size() == kGatherEnough) q_cv_.notify_one();
        return;
      }
      if (tl_lead_at_turn_end) {
        tl_deferred = this;  // LeadDeferredWrites, once the loop read all it could
        return;
      }
      if (tl_hand_async_to_committer) {
        q_cv_.notify_one();
        return;
      }
      leader_busy_ = true;
    } else if (leader_busy_) {
      lk.unlock();
      self->done.acquire();
      if (!self->lead) return;
    } else {
      leader_busy_ = true;
    }
  }
  LeadLoop(self, false);
}

// Runs batches while this thread holds leadership (leader_busy_). Each batch
// costs one write-ahead log fdatasync; requests that arrive meanwhile form the
// next batch.
void StoreImpl::LeadLoop(PendingOp* self, bool committer) {
  leader_self_ = self;
  for (;;) {
    std::vector<PendingOp*> batch;
    {
      std::lock_guard<std::mutex> lk(q_mu_);
      batch.swap(queue_);
    }
    if (!batch.empty()) ProcessBatch(batch);
    std::unique_lock<std::mutex> lk(q_mu_);
    if (queue_.empty()) {
      leader_self_ = nullptr;
      leader_busy_ = false;
      return;
    }
    PendingOp* next = queue_.front();
    // Only the committer thread keeps leading while work keeps coming: a
    // gRPC thread that led one batch inline goes back to serving its
    // connections (otherwise their requests wait until the queue drains).
    if (!next->callback || self != nullptr || !committer) {
      leader_self_ = nullptr;
      if (!next->callback) {
        next->lead = true;
        next->done.release();
      } else {
        // A blocked in-process caller should not serve the gRPC load.
        leader_busy_ = false;
        q_cv_.notify_one();
      }
      return;
    }
    // The committer carries on: these requests arrived while the last batch
    // was being made durable. When that many did, many clients are writing
    // at once: let the batch fill up for a moment (bounded by the oldest
    // request's wait) so one flush serves more of them. A few requests in a
    // row (a light or paced load) go at once: their latency matters more.
    if (opts_.commit_window_us > 0 && queue_.size() >= kCommitSiblings && queue_.size() < kGatherEnough) {
      gathering_ = true;
      q_cv_.wait_until(lk, first_queued_ + std::chrono::microseconds(opts_.commit_window_us),
                       [&] { return stopping_ || queue_.size() >= kGatherEnough; });
      gathering_ = false;
    }
  }
}

void StoreImpl::CompleteOne(PendingOp* op) {
  if (op != leader_self_) Complete(op);
}

// Makes a durable batch visible and completes its requests.
void StoreImpl::Ack(Durable d) {
  {
    std::lock_guard<std::mutex> lk(hub_.mu);
    committed_rev_.store(d.rev, std::memory_order_release);
    hub_.Publish(d.events);
    hub_.rev = d.rev;
  }
  {
    std::lock_guard<std::mutex> lk(metrics_mu_);
    metrics_.commits++;
    metrics_.committed_requests += static_cast<int64_t>(d.ops.size());
    metrics_.commit_ns_total += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - d.t0).count();
  }
  for (PendingOp* op : d.ops) CompleteOne(op);
}

// A checkpoint makes the newest LMDB snapshot the point recovery starts
// from, without ever relying on the order in which the kernel writes LMDB's
// unsynced pages (MDB_NOSYNC):
//   pinned:   a read txn on the newest snapshot S, begun while no commit
//             runs, and a copy of S's two meta pages taken at that moment.
//             LMDB reuses no page a reader can see, so from now on no commit
//             overwrites a page of S.
//   synced:   mdb_env_sync: every page of S (written before the pin) is on
//             disk. Commits after S may be partly on disk — harmless.
//   recorded: S's meta pages go into lmdb.ckpt (alternating slots, CRC,
//             fdatasync). From here on a restart restores them into
//             data.mdb, and LMDB opens exactly S.
//   released: the previous pin goes (its pages may be reused now that S is
//             the recovery point) and log segments up to S's wal_seq are
//             dropped — the log still holds every record after S.
// A crash between any two steps recovers from the previous record (whose
// snapshot is still pinned until "released") plus the log.
absl::Status StoreImpl::Checkpoint() {
  std::lock_guard<std::mutex> run(ckpt_run_mu_);
  RETURN_IF_ERROR(ApplyPendingLocked());
  auto hook = [&](const char* step) {
    if (opts_.checkpoint_hook) opts_.checkpoint_hook(step);
  };
  MDB_stat st;
  mdb_env_stat(env_, &st);
  MetaCheckpoint c;
  c.psize = st.ms_psize;
  c.metas.assign(2 * static_cast<size_t>(c.psize), '\0');
  MDB_txn* pin = nullptr;
  {
    std::lock_guard<std::mutex> lk(lmdb_commit_mu_);
    MDB_envinfo info;
    mdb_env_info(env_, &info);
    if (ckpt_pin_ != nullptr && info.me_last_txnid == ckpt_txnid_) return absl::OkStatus();
    int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &pin);
    if (rc != 0) return MdbError(rc, "begin checkpoint txn");
    size_t done = 0;
    while (done < c.metas.size()) {
      ssize_t n = ::pread(lmdb_fd_.get(), c.metas.data() + done, c.metas.size() - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        mdb_txn_abort(pin);
        return n < 0 ? LastErrnoError("read lmdb meta pages") : absl::DataLossError("data.mdb is truncated");
      }
      done += static_cast<size_t>(n);
    }
  }
  c.txnid = mdb_txn_id(pin);

  if (LmdbMetaTxnId(c.metas.data(), c.psize) != c.txnid &&
      LmdbMetaTxnId(c.metas.data() + c.psize, c.psize) != c.txnid) {
    mdb_txn_abort(pin);
    return absl::InternalError(absl::StrCat("store: no LMDB meta page for transaction ", c.txnid));
  }
  {
    std::string k = "wal_seq";
    MDB_val key = Val(k), val;
    if (mdb_get(pin, meta_dbi_, &key, &val) == 0 && val.mv_size == 8) {
      c.wal_seq = GetBe64(static_cast<const char*>(val.mv_data));
    }
  }
  hook("pinned");
  int rc = mdb_env_sync(env_, 1);
  if (rc != 0) {
    // Like etcd on a failed fsync: the state on disk is unknown.
    log::Error("store: lmdb checkpoint fdatasync failed, stopping: ", mdb_strerror(rc));
    std::abort();
  }
  hook("synced");
  c.gen = ckpt_gen_ + 1;
  absl::Status ws = WriteMetaCheckpoint(ckpt_fd_.get(), c);
  if (!ws.ok()) {
    // The slot written may be torn; the other one (the previous checkpoint,
    // still pinned) stays valid. fdatasync failing leaves nothing to trust.
    log::Error("store: writing the lmdb checkpoint record failed, stopping: ", ws);
    std::abort();
  }
  ckpt_gen_ = c.gen;
  hook("recorded");
  if (ckpt_pin_ != nullptr) mdb_txn_abort(ckpt_pin_);
  ckpt_pin_ = pin;
  ckpt_txnid_ = c.txnid;
  if (wal_) wal_->DropThrough(c.wal_seq);
  hook("released");
  return absl::OkStatus();
}

absl::Status StoreImpl::ApplyPending() {
  if (!HasPending()) return absl::OkStatus();
  std::lock_guard<std::mutex> run(ckpt_run_mu_);
  return ApplyPendingLocked();
}

// One LMDB transaction for every batch logged since the last one: the same
// mutations a replay of their log records would make, and the last
// record's sequence number. Not synced: the records stay in the log until a
// checkpoint has flushed LMDB.
absl::Status StoreImpl::ApplyPendingLocked() {
  std::string log;
  uint64_t seq = 0;
  int64_t rev = 0;
  {
    std::unique_lock<std::shared_mutex> lk(pend_mu_);
    if (pend_log_.empty()) return absl::OkStatus();
    log.swap(pend_log_);
    seq = pend_seq_;
    rev = pend_rev_;
  }
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, 0, &txn);
  absl::Status st = rc == 0 ? ApplyWalRecord(txn, log) : MdbError(rc, "begin apply txn");
  if (st.ok()) {
    PutMeta(txn, "wal_seq", static_cast<int64_t>(seq), nullptr);
    std::lock_guard<std::mutex> lk(lmdb_commit_mu_);
    rc = mdb_txn_commit(txn);
    txn = nullptr;
    if (rc != 0) st = MdbError(rc, "commit apply txn");
  }
  if (txn != nullptr) mdb_txn_abort(txn);
  if (!st.ok()) {
    // Still logged and still readable from pend_kv_: try again next time.
    std::unique_lock<std::shared_mutex> lk(pend_mu_);
    pend_log_.insert(0, log);
    if (absl::IsResourceExhausted(st)) nospace_ = true;
    return st;
  }
  pend_floor_.store(rev, std::memory_order_release);
  std::unique_lock<std::shared_mutex> lk(pend_mu_);
  while (!pend_kv_.empty() && pend_kv_.front().main <= rev) pend_kv_.pop_front();
  pend_bytes_.store(static_cast<int64_t>(pend_log_.size()), std::memory_order_release);
  return absl::OkStatus();
}

// Reserves blocks ahead of LMDB's high-water mark (FALLOC_FL_KEEP_SIZE: no
// data written, so it can run beside LMDB's own writes), so checkpoints do
// not have to allocate — and flush as ordered data — the file's growth.
void StoreImpl::ReserveLmdbSpace() {
  std::lock_guard<std::mutex> run(ckpt_run_mu_);  // env_ and lmdb_fd_ stay put
  constexpr int64_t kAhead = int64_t{64} << 20;
  const int64_t used = DbSize();
  if (used + kAhead / 2 < reserved_end_) return;
  const int64_t target = std::min<int64_t>(used + kAhead, MapBytes());
  if (target > used && ::fallocate(lmdb_fd_.get(), FALLOC_FL_KEEP_SIZE, used, target - used) == 0) {
    reserved_end_ = target;
  }
}

void StoreImpl::CheckpointerLoop() {
  const auto interval = std::chrono::milliseconds(std::max<int64_t>(opts_.checkpoint_interval_ms, 10));
  const auto apply_every = std::chrono::milliseconds(Deferred() ? std::max<int64_t>(opts_.lmdb_apply_interval_ms, 1)
                                                                 : std::max<int64_t>(opts_.checkpoint_interval_ms, 10));
  auto next = Clock::now() + interval;
  std::unique_lock<std::mutex> lk(ckpt_mu_);
  for (;;) {
    ckpt_cv_.wait_until(lk, std::min(next, Clock::now() + apply_every), [&] { return ckpt_stop_ || spare_wanted_; });
    if (ckpt_stop_) return;
    spare_wanted_ = false;
    const bool due = Clock::now() >= next;
    lk.unlock();
    if (!due && HasPending()) {
      absl::Status st = ApplyPending();
      if (!st.ok()) log::Error("store: applying logged writes to lmdb: ", st);
    }
    if (due) {
      ReserveLmdbSpace();
      absl::Status st = Checkpoint();
      if (!st.ok()) log::Error("store: checkpoint: ", st);
    }
    wal_->PrepareSpare();
    lk.lock();
    if (due) next = Clock::now() + interval;
  }
}

void StoreImpl::CommitterLoop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(q_mu_);
      q_cv_.wait(lk, [&] { return stopping_ || (!queue_.empty() && !leader_busy_); });
      if (stopping_ && (queue_.empty() || leader_busy_)) return;
      leader_busy_ = true;
    }
    LeadLoop(nullptr, true);
  }
}

absl::Status StoreImpl::Submit(PendingOp& op) {
  Enqueue(&op, &op);
  return op.status;
}

void StoreImpl::SubmitAsync(PendingOp::Kind kind, const google::protobuf::Message* req,
                            google::protobuf::Message* resp, Done done) {
  auto* op = new PendingOp(kind, req, resp);
  op->callback = std::move(done);
  Enqueue(op, nullptr);
}

void StoreImpl::PutAsync(const etcdserverpb::PutRequest& req, etcdserverpb::PutResponse* resp, Done done) {
  SubmitAsync(PendingOp::Kind::kPut, &req, resp, std::move(done));
}
void StoreImpl::DeleteRangeAsync(const etcdserverpb::DeleteRangeRequest& req,
                                 etcdserverpb::DeleteRangeResponse* resp, Done done) {
  SubmitAsync(PendingOp::Kind::kDelete, &req, resp, std::move(done));
}
void StoreImpl::TxnAsync(const etcdserverpb::TxnRequest& req, etcdserverpb::TxnResponse* resp, Done done) {
  SubmitAsync(PendingOp::Kind::kTxn, &req, resp, std::move(done));
}
void StoreImpl::CompactAsync(const etcdserverpb::CompactionRequest& req, etcdserverpb::CompactionResponse* resp,
                             Done done) {
  SubmitAsync(PendingOp::Kind::kCompact, &req, resp, std::move(done));
}

absl::StatusOr<etcdserverpb::PutResponse> StoreImpl::Put(const etcdserverpb::PutRequest& req) {
  etcdserverpb::PutResponse resp;
  PendingOp op{PendingOp::Kind::kPut, &req, &resp};
  RETURN_IF_ERROR(Submit(op));
  return resp;
}
absl::StatusOr<etcdserverpb::DeleteRangeResponse> StoreImpl::DeleteRange(const etcdserverpb::DeleteRangeRequest& req) {
  etcdserverpb::DeleteRangeResponse resp;
  PendingOp op{PendingOp::Kind::kDelete, &req, &resp};
  RETURN_IF_ERROR(Submit(op));
  return resp;
}
absl::StatusOr<etcdserverpb::TxnResponse> StoreImpl::Txn(const etcdserverpb::TxnRequest& req) {
  etcdserverpb::TxnResponse resp;
  PendingOp op{PendingOp::Kind::kTxn, &req, &resp};
  RETURN_IF_ERROR(Submit(op));
  return resp;
}
absl::StatusOr<etcdserverpb::CompactionResponse> StoreImpl::Compact(const etcdserverpb::CompactionRequest& req) {
  etcdserverpb::CompactionResponse resp;
  PendingOp op{PendingOp::Kind::kCompact, &req, &resp};
  RETURN_IF_ERROR(Submit(op));
  return resp;
}
absl::StatusOr<etcdserverpb::LeaseGrantResponse> StoreImpl::LeaseGrant(const etcdserverpb::LeaseGrantRequest& req) {
  etcdserverpb::LeaseGrantResponse resp;
  PendingOp op{PendingOp::Kind::kLeaseGrant, &req, &resp};
  RETURN_IF_ERROR(Submit(op));
  return resp;
}
absl::StatusOr<etcdserverpb::LeaseRevokeResponse> StoreImpl::LeaseRevoke(const etcdserverpb::LeaseRevokeRequest& req) {
  etcdserverpb::LeaseRevokeResponse resp;
  PendingOp op{PendingOp::Kind::kLeaseRevoke, &req, &resp};
  RETURN_IF_ERROR(Submit(op));
  return resp;
}
absl::StatusOr<etcdserverpb::AlarmResponse> StoreImpl::Alarm(const etcdserverpb::AlarmRequest& req) {
  etcdserverpb::AlarmResponse resp;
  if (req.action() == etcdserverpb::AlarmRequest::GET) {
    *resp.mutable_header() = Header();
    if (nospace_) {
      auto* a = resp.add_alarms();
      a->set_memberid(member_id_);
      a->set_alarm(etcdserverpb::NOSPACE);
    }
    return resp;
  }
  PendingOp op{PendingOp::Kind::kAlarm, &req, &resp};
  RETURN_IF_ERROR(Submit(op));
  return resp;
}

void StoreImpl::ProcessBatch(const std::vector<PendingOp*>& batch) {
  size_t i = 0;
  while (i < batch.size()) {
    if (batch[i]->kind == PendingOp::Kind::kDefrag) {
      RunDefrag(batch[i]);
      CompleteOne(batch[i]);
      ++i;
      continue;
    }
    if (batch[i]->kind == PendingOp::Kind::kCompact) {
      RunCompaction(batch[i]);
      CompleteOne(batch[i]);
      ++i;
      continue;
    }
    size_t j = i;
    while (j < batch.size() && batch[j]->kind != PendingOp::Kind::kCompact &&
           batch[j]->kind != PendingOp::Kind::kDefrag) {
      ++j;
    }
    std::vector<PendingOp*> group(batch.begin() + static_cast<std::ptrdiff_t>(i),
                                  batch.begin() + static_cast<std::ptrdiff_t>(j));
    RunGroup(group);
    i = j;
  }
}

// One batch: apply every request in one LMDB write transaction, committed
// without fsync (MDB_NOSYNC: the pages only reach the page cache, which a
// killed process cannot lose), then append the batch's mutations to the
// write-ahead log as one record and fdatasync it — the only flush an
// acknowledgement waits for. LMDB itself is flushed by the checkpointer.
// The LMDB commit comes first so that a failing commit (MDB_MAP_FULL) never
// leaves a log record of requests that were answered with an error.
void StoreImpl::RunGroup(const std::vector<PendingOp*>& group) {
  auto t0 = Clock::now();
  const bool deferred = Deferred();
  MDB_txn* txn = nullptr;
  std::optional<ReadTxn> rt;  // deferred: reads only, through pend_kv_
  int rc = 0;
  absl::Status begun;
  if (deferred) {
    rt.emplace(this);
    begun = rt->status();
    txn = rt->get();
  } else {
    rc = mdb_txn_begin(env_, nullptr, 0, &txn);
    if (rc != 0) begun = MdbError(rc, "begin write txn");
  }
  if (!begun.ok()) {
    for (PendingOp* op : group) {
      op->status = begun;
      CompleteOne(op);
    }
    return;
  }
  const int64_t start_rev = rev_;
  std::vector<std::string> touched;
  std::vector<RevEventsPtr> events;
  std::string record;
  absl::Status fatal;
  for (PendingOp* op : group) {
    WriteCtx c;
    c.txn = txn;
    c.deferred = deferred;
    c.rev = rev_ + 1;
    c.touched = &touched;
    c.wal = &record;
    ApplyOp(c, op);
    if (!c.fatal.ok()) {
      fatal = c.fatal;
      break;
    }
    if (c.sub > 0) {
      rev_ = c.rev;
      auto ev = std::make_shared<RevEvents>();
      ev->rev = c.rev;
      ev->events = std::move(c.events);
      events.push_back(std::move(ev));
    }
  }
  if (fatal.ok() && rev_ != start_rev) {
    WriteCtx c;
    c.txn = txn;
    c.deferred = deferred;
    c.wal = &record;
    PutMeta(txn, "rev", rev_, &c);
    fatal = c.fatal;
  }
  const bool logged = !record.empty();
  if (fatal.ok() && logged && !deferred) {
    WriteCtx c;  // not logged itself: replay sets it
    c.txn = txn;
    PutMeta(txn, "wal_seq", static_cast<int64_t>(wal_seq_ + 1), &c);
    fatal = c.fatal;
  }
  if (deferred) {
    rt.reset();
  } else if (fatal.ok()) {
    {
      std::lock_guard<std::mutex> lk(lmdb_commit_mu_);
      rc = mdb_txn_commit(txn);
    }
    if (rc != 0) fatal = MdbError(rc, "commit");
  } else {
    mdb_txn_abort(txn);
  }
  if (!fatal.ok()) {
    log::Error("store: write batch failed: ", fatal);
    if (deferred) {
      std::unique_lock<std::shared_mutex> lk(pend_mu_);
      while (!pend_kv_.empty() && pend_kv_.back().main > start_rev) pend_kv_.pop_back();
    }
    {
      std::unique_lock<std::shared_mutex> lk(index_mu_);
      index_.RollbackAbove(start_rev, touched);
      rev_ = start_rev;
    }
    (void)RebuildLeases();
    if (fatal.code() == absl::StatusCode::kResourceExhausted && !nospace_) nospace_ = true;
    for (PendingOp* op : group) {
      op->status = fatal;
      CompleteOne(op);
    }
    return;
  }
  if (logged) {
    const int64_t before = wal_->BytesSinceRotation();
    absl::Status st = wal_->Append(wal_seq_ + 1, record);
    if (!st.ok()) {
      // Like etcd on a failed WAL write: nothing further can be promised.
      log::Error("store: write-ahead log append failed, stopping: ", st);
      std::abort();
    }
    ++wal_seq_;
    if (deferred) {
      std::unique_lock<std::shared_mutex> lk(pend_mu_);
      pend_log_.append(record);
      pend_seq_ = wal_seq_;
      pend_rev_ = rev_;
      pend_bytes_.store(static_cast<int64_t>(pend_log_.size()), std::memory_order_release);
    }
    if (wal_->BytesSinceRotation() < before) {
      // Rotated onto the spare: have the next one ready before it fills.
      {
        std::lock_guard<std::mutex> lk(ckpt_mu_);
        spare_wanted_ = true;
      }
      ckpt_cv_.notify_one();
    }
  }
  Ack(Durable{rev_, std::move(events), group, t0});
}

absl::Status StoreImpl::CheckRangeShape(const etcdserverpb::RangeRequest& r) {
  using RR = etcdserverpb::RangeRequest;
  if (r.sort_order() < RR::NONE || r.sort_order() > RR::DESCEND || r.sort_target() < RR::KEY ||
      r.sort_target() > RR::VALUE) {
    return absl::InvalidArgumentError("etcdserver: invalid sort option");
  }
  return absl::OkStatus();
}

absl::Status StoreImpl::CheckPut(const etcdserverpb::PutRequest& r) {
  if (r.key().empty()) return ErrEmptyKey();
  if (r.ignore_value() && !r.value().empty()) return ErrValueProvided();
  if (r.ignore_lease() && r.lease() != 0) return ErrLeaseProvided();
  if (r.lease() != 0) {
    std::lock_guard<std::mutex> lk(lease_mu_);
    if (!leases_.contains(r.lease())) return ErrLeaseNotFound();
  }
  if (r.ignore_value() || r.ignore_lease()) {
    if (index_.Get(r.key(), 0) == nullptr) return ErrKeyNotFound();
  }
  return absl::OkStatus();
}

bool StoreImpl::TxnHasPut(const etcdserverpb::TxnRequest& r) const {
  for (const auto* ops : {&r.success(), &r.failure()}) {
    for (const auto& op : *ops) {
      if (op.has_request_put()) return true;
      if (op.has_request_txn() && TxnHasPut(op.request_txn())) return true;
    }
  }
  return false;
}

// What etcd's gRPC layer checks of every txn before it runs, in its order:
// the number of ops (a nested txn gets what its parent left of max), every
// compare's key, then each op of both branches whichever runs. An empty op is
// etcd's "key not found".
absl::Status StoreImpl::CheckTxn(const etcdserverpb::TxnRequest& r, int max) {
  const int opc = std::max({r.compare_size(), r.success_size(), r.failure_size()});
  if (opc > max) return ErrTooManyOps();
  for (const auto& c : r.compare()) {
    if (c.key().empty()) return ErrEmptyKey();
  }
  using Op = etcdserverpb::RequestOp;
  for (const auto* ops : {&r.success(), &r.failure()}) {
    for (const auto& op : *ops) {
      switch (op.request_case()) {
        case Op::kRequestRange:
          if (op.request_range().key().empty()) return ErrEmptyKey();
          RETURN_IF_ERROR(CheckRangeShape(op.request_range()));
          break;
        case Op::kRequestPut: {
          const auto& p = op.request_put();
          if (p.key().empty()) return ErrEmptyKey();
          if (p.ignore_value() && !p.value().empty()) return ErrValueProvided();
          if (p.ignore_lease() && p.lease() != 0) return ErrLeaseProvided();
          break;
        }
        case Op::kRequestDeleteRange:
          if (op.request_delete_range().key().empty()) return ErrEmptyKey();
          break;
        case Op::kRequestTxn:
          RETURN_IF_ERROR(CheckTxn(op.request_txn(), max - opc));
          break;
        default:
          return ErrKeyNotFound();
      }
    }
  }
  for (const auto* ops : {&r.success(), &r.failure()}) {
    // etcd rejects a txn branch that writes the same key twice or deletes a
    // key it also puts.
    std::set<std::string> puts;
    std::vector<std::pair<std::string, std::string>> dels;
    for (const auto& op : *ops) {
      if (op.has_request_put()) {
        if (!puts.insert(op.request_put().key()).second) return ErrDuplicateKey();
      } else if (op.has_request_delete_range()) {
        dels.emplace_back(op.request_delete_range().key(), op.request_delete_range().range_end());
      }
    }
    for (const auto& [k, e] : dels) {
      for (const auto& p : puts) {
        if (InRange(p, k, e)) return ErrDuplicateKey();
      }
    }
  }
  return absl::OkStatus();
}

bool StoreImpl::EvalCompare(const etcdserverpb::Compare& c, MDB_txn* txn) {
  using C = etcdserverpb::Compare;
  auto cmp_one = [&](const std::string& key, const IndexEntry* e) -> bool {
    int r = 0;
    auto icmp = [](int64_t a, int64_t b) { return a < b ? -1 : (a > b ? 1 : 0); };
    switch (c.target()) {
      case C::VERSION: r = icmp(e ? e->version : 0, c.version()); break;
      case C::CREATE: r = icmp(e ? e->create : 0, c.create_revision()); break;
      case C::MOD: r = icmp(e ? e->main : 0, c.mod_revision()); break;
      case C::LEASE: r = icmp(e ? e->lease : 0, c.lease()); break;
      case C::VALUE: {
        if (e == nullptr) return false;  // etcd: a value compare on a missing key fails
        mvccpb::KeyValue kv;
        if (!LoadValue(txn, e->main, e->sub, &kv, nullptr).ok()) return false;
        int x = kv.value().compare(c.value());
        r = x < 0 ? -1 : (x > 0 ? 1 : 0);
        break;
      }
      default: return false;
    }
    switch (c.result()) {
      case C::EQUAL: return r == 0;
      case C::GREATER: return r > 0;
      case C::LESS: return r < 0;
      case C::NOT_EQUAL: return r != 0;
      default: return false;
    }
  };
  if (c.range_end().empty()) return cmp_one(c.key(), index_.Get(c.key(), 0));
  bool all = true;
  index_.Range(c.key(), c.range_end(), 0, [&](const std::string& k, const IndexEntry& e) {
    if (!cmp_one(k, &e)) all = false;
    return all;
  });
  return all;
}

void StoreImpl::DetachLease(const std::string& key, int64_t lease) {
  if (lease == 0) return;
  std::lock_guard<std::mutex> lk(lease_mu_);
  auto it = leases_.find(lease);
  if (it != leases_.end()) it->second.keys.erase(key);
}
void StoreImpl::AttachLease(const std::string& key, int64_t lease) {
  if (lease == 0) return;
  std::lock_guard<std::mutex> lk(lease_mu_);
  auto it = leases_.find(lease);
  if (it != leases_.end()) it->second.keys.insert(key);
}

void StoreImpl::WritePut(WriteCtx& c, const etcdserverpb::PutRequest& r, etcdserverpb::PutResponse* resp) {
  const IndexEntry* old = index_.Get(r.key(), 0);
  mvccpb::KeyValue prev;
  bool have_prev = false;
  // The previous value is needed for prev_kv, ignore_value, and for watch
  // events once any watcher has ever been created (they may ask prev_kv).
  if (old != nullptr && (r.prev_kv() || r.ignore_value() || watchers_seen_.load(std::memory_order_acquire))) {
    have_prev = LoadValue(c.txn, old->main, old->sub, &prev, nullptr).ok();
  }
  mvccpb::KeyValue kv;
  kv.set_key(r.key());
  kv.set_create_revision(old ? old->create : c.rev);
  kv.set_mod_revision(c.rev);
  kv.set_version(old ? old->version + 1 : 1);
  kv.set_value(r.ignore_value() && have_prev ? prev.value() : r.value());
  kv.set_lease(r.ignore_lease() && old ? old->lease : r.lease());
  std::string rec(1, kPutRecord);
  kv.AppendToString(&rec);
  int rc = TxPut(c, kv_dbi_, RevKey(c.rev, c.sub), rec, MDB_APPEND);
  if (rc != 0) {
    c.fatal = MdbError(rc, "put");
    return;
  }
  IndexEntry e{c.rev, kv.create_revision(), kv.version(), kv.lease(), c.sub, false};
  int64_t old_lease = old ? old->lease : 0;
  {
    std::unique_lock<std::shared_mutex> lk(index_mu_);
    index_.Append(r.key(), e);
  }
  c.touched->push_back(r.key());
  if (old_lease != kv.lease()) {
    DetachLease(r.key(), old_lease);
    AttachLease(r.key(), kv.lease());
  }
  c.sub++;
  auto* ev = &c.events.emplace_back();
  ev->set_type(mvccpb::Event::PUT);
  *ev->mutable_kv() = kv;
  if (have_prev) *ev->mutable_prev_kv() = prev;
  if (resp != nullptr) {
    if (r.prev_kv() && have_prev) *resp->mutable_prev_kv() = std::move(prev);
  }
}

void StoreImpl::DeleteKey(WriteCtx& c, const std::string& key, const IndexEntry& old, mvccpb::KeyValue* prev_out) {
  mvccpb::KeyValue prev;
  bool have_prev = LoadValue(c.txn, old.main, old.sub, &prev, nullptr).ok();
  int64_t old_lease = old.lease;
  mvccpb::KeyValue tomb;
  tomb.set_key(key);
  tomb.set_mod_revision(c.rev);
  std::string rec(1, kTombRecord);
  tomb.AppendToString(&rec);
  int rc = TxPut(c, kv_dbi_, RevKey(c.rev, c.sub), rec, MDB_APPEND);
  if (rc != 0) {
    c.fatal = MdbError(rc, "delete");
    return;
  }
  {
    std::unique_lock<std::shared_mutex> lk(index_mu_);
    index_.Append(key, IndexEntry{c.rev, 0, 0, 0, c.sub, true});
  }
  c.touched->push_back(key);
  DetachLease(key, old_lease);
  c.sub++;
  auto* ev = &c.events.emplace_back();
  ev->set_type(mvccpb::Event::DELETE);
  *ev->mutable_kv() = tomb;
  if (have_prev) *ev->mutable_prev_kv() = prev;
  if (prev_out != nullptr && have_prev) *prev_out = std::move(prev);
}

void StoreImpl::WriteDelete(WriteCtx& c, const etcdserverpb::DeleteRangeRequest& r,
                            etcdserverpb::DeleteRangeResponse* resp) {
  std::vector<std::pair<std::string, IndexEntry>> victims;
  index_.Range(r.key(), r.range_end(), 0, [&](const std::string& k, const IndexEntry& e) {
    victims.emplace_back(k, e);
    return true;
  });
  for (const auto& [k, e] : victims) {
    DeleteKey(c, k, e, r.prev_kv() ? resp->add_prev_kvs() : nullptr);
    if (!c.fatal.ok()) return;
  }
  resp->set_deleted(static_cast<int64_t>(victims.size()));
}

void StoreImpl::WriteTxn(WriteCtx& c, const etcdserverpb::TxnRequest& r, etcdserverpb::TxnResponse* resp) {
  bool ok = true;
  for (const auto& cmp : r.compare()) {
    if (!EvalCompare(cmp, c.txn)) {
      ok = false;
      break;
    }
  }
  resp->set_succeeded(ok);
  // Each inner response's header carries only the revision it saw, as etcd's:
  // the one before the txn until the txn changed something, then the txn's
  // own. A nested txn's header stays empty.
  auto seen = [&] { return c.sub > 0 ? c.rev : rev_; };
  for (const auto& op : ok ? r.success() : r.failure()) {
    auto* out = resp->add_responses();
    etcdserverpb::ResponseHeader* h = nullptr;
    int64_t at = 0;
    if (op.has_request_range()) {
      // Reads inside a txn see the txn's own earlier writes.
      auto* rr = out->mutable_response_range();
      at = seen();
      absl::Status st = DoRange(c.txn, at, op.request_range(), rr);
      if (!st.ok()) {
        // Checked up front for the common errors; a late one fails the op.
        rr->Clear();
      }
      h = rr->mutable_header();
    } else if (op.has_request_put()) {
      WritePut(c, op.request_put(), out->mutable_response_put());
      h = out->mutable_response_put()->mutable_header();
      at = seen();
    } else if (op.has_request_delete_range()) {
      WriteDelete(c, op.request_delete_range(), out->mutable_response_delete_range());
      h = out->mutable_response_delete_range()->mutable_header();
      at = seen();
    } else if (op.has_request_txn()) {
      WriteTxn(c, op.request_txn(), out->mutable_response_txn());
      out->mutable_response_txn()->mutable_header()->Clear();
    }
    if (h != nullptr) {
      h->Clear();
      h->set_revision(at);
    }
    if (!c.fatal.ok()) return;
  }
}

namespace {
// Validation that depends on the chosen branch: leases and keys for puts,
// revisions for ranges.
template <typename CheckPutFn, typename CheckRangeFn>
absl::Status CheckBranch(const etcdserverpb::TxnRequest& r, bool succeeded, CheckPutFn&& cp, CheckRangeFn&& cr) {
  for (const auto& op : succeeded ? r.success() : r.failure()) {
    if (op.has_request_put()) RETURN_IF_ERROR(cp(op.request_put()));
    if (op.has_request_range()) RETURN_IF_ERROR(cr(op.request_range()));
  }
  return absl::OkStatus();
}
}  // namespace

void StoreImpl::ApplyOp(WriteCtx& c, PendingOp* op) {
  using K = PendingOp::Kind;
  switch (op->kind) {
    case K::kPut: {
      const auto& r = static_cast<const etcdserverpb::PutRequest&>(*op->req);
      auto* resp = static_cast<etcdserverpb::PutResponse*>(op->resp);
      const size_t bytes = r.ByteSizeLong();
      if (!QuotaAllows(c, bytes)) {
        op->status = ErrNoSpace();
        return;
      }
      op->status = CheckPut(r);
      if (op->status.ok() && bytes > opts_.max_request_bytes) op->status = ErrRequestTooLarge();
      if (!op->status.ok()) return;
      WritePut(c, r, resp);
      *resp->mutable_header() = HeaderAt(c.rev);
      std::lock_guard<std::mutex> lk(metrics_mu_);
      metrics_.puts++;
      return;
    }
    case K::kDelete: {
      const auto& r = static_cast<const etcdserverpb::DeleteRangeRequest&>(*op->req);
      auto* resp = static_cast<etcdserverpb::DeleteRangeResponse*>(op->resp);
      if (r.key().empty()) {
        op->status = ErrEmptyKey();
        return;
      }
      if (r.ByteSizeLong() > opts_.max_request_bytes) {
        op->status = ErrRequestTooLarge();
        return;
      }
      WriteDelete(c, r, resp);
      *resp->mutable_header() = HeaderAt(c.sub > 0 ? c.rev : rev_);
      std::lock_guard<std::mutex> lk(metrics_mu_);
      metrics_.deletes++;
      return;
    }
    case K::kTxn: {
      const auto& r = static_cast<const etcdserverpb::TxnRequest&>(*op->req);
      auto* resp = static_cast<etcdserverpb::TxnResponse*>(op->resp);
      op->status = CheckTxn(r, static_cast<int>(opts_.max_txn_ops));
      if (!op->status.ok()) return;
      const size_t bytes = r.ByteSizeLong();
      if (bytes > opts_.max_request_bytes) {
        op->status = ErrRequestTooLarge();
        return;
      }
      if (TxnHasPut(r) && !QuotaAllows(c, bytes)) {
        op->status = ErrNoSpace();
        return;
      }
      // Evaluate the guard once to validate the branch that will run (nested
      // txns are validated recursively by the same rule as they execute).
      std::function<absl::Status(const etcdserverpb::TxnRequest&)> check =
          [&](const etcdserverpb::TxnRequest& t) -> absl::Status {
        bool ok = true;
        for (const auto& cmp : t.compare()) {
          if (!EvalCompare(cmp, c.txn)) {
            ok = false;
            break;
          }
        }
        RETURN_IF_ERROR(CheckBranch(
            t, ok, [&](const etcdserverpb::PutRequest& p) { return CheckPut(p); },
            [&](const etcdserverpb::RangeRequest& rr) -> absl::Status {
              if (rr.revision() > rev_) return ErrFutureRev();
              if (rr.revision() > 0 && rr.revision() < compact_rev_) return ErrCompacted();
              return absl::OkStatus();
            }));
        for (const auto& op2 : ok ? t.success() : t.failure()) {
          if (op2.has_request_txn()) RETURN_IF_ERROR(check(op2.request_txn()));
        }
        return absl::OkStatus();
      };
      op->status = check(r);
      if (!op->status.ok()) return;
      WriteTxn(c, r, resp);
      int64_t rev = c.sub > 0 ? c.rev : rev_;
      *resp->mutable_header() = HeaderAt(rev);
      std::lock_guard<std::mutex> lk(metrics_mu_);
      metrics_.txns++;
      return;
    }
    case K::kLeaseGrant: {
      const auto& r = static_cast<const etcdserverpb::LeaseGrantRequest&>(*op->req);
      auto* resp = static_cast<etcdserverpb::LeaseGrantResponse*>(op->resp);
      if (!QuotaAllows(c, 16)) {
        op->status = ErrNoSpace();
        return;
      }
      if (r.ttl() > kMaxLeaseTTL) {
        op->status = ErrLeaseTTLTooLarge();
        return;
      }
      int64_t ttl = std::max(r.ttl(), opts_.min_lease_ttl_s);
      int64_t id = r.id();
      {
        std::lock_guard<std::mutex> lk(lease_mu_);
        if (id != 0 && leases_.contains(id)) {
          op->status = ErrLeaseExist();
          return;
        }
        while (id == 0 || leases_.contains(id)) id = static_cast<int64_t>(RandomId());
        Lease l;
        l.id = id;
        l.ttl = ttl;
        l.expiry = Clock::now() + std::chrono::seconds(ttl);
        leases_[id] = std::move(l);
      }
      std::string kb(8, '\0'), vb(8, '\0');
      PutBe64(kb.data(), static_cast<uint64_t>(id));
      PutBe64(vb.data(), static_cast<uint64_t>(ttl));
      int rc = TxPut(c, lease_dbi_, kb, vb, 0);
      if (rc != 0) {
        c.fatal = MdbError(rc, "put lease");
        return;
      }
      *resp->mutable_header() = HeaderAt(rev_);
      resp->set_id(id);
      resp->set_ttl(ttl);
      return;
    }
    case K::kLeaseRevoke: {
      const auto& r = static_cast<const etcdserverpb::LeaseRevokeRequest&>(*op->req);
      auto* resp = static_cast<etcdserverpb::LeaseRevokeResponse*>(op->resp);
      std::set<std::string> keys;
      {
        std::lock_guard<std::mutex> lk(lease_mu_);
        auto it = leases_.find(r.id());
        if (it == leases_.end()) {
          op->status = ErrLeaseNotFound();
          return;
        }
        keys = it->second.keys;
        leases_.erase(it);
      }
      for (const auto& k : keys) {
        const IndexEntry* e = index_.Get(k, 0);
        if (e == nullptr) continue;
        IndexEntry copy = *e;
        DeleteKey(c, k, copy, nullptr);
        if (!c.fatal.ok()) return;
      }
      std::string kb(8, '\0');
      PutBe64(kb.data(), static_cast<uint64_t>(r.id()));
      int rc = TxDel(c, lease_dbi_, kb);
      if (rc != 0 && rc != MDB_NOTFOUND) {
        c.fatal = MdbError(rc, "delete lease");
        return;
      }
      *resp->mutable_header() = HeaderAt(c.sub > 0 ? c.rev : rev_);
      return;
    }
    case K::kAlarm: {
      const auto& r = static_cast<const etcdserverpb::AlarmRequest&>(*op->req);
      auto* resp = static_cast<etcdserverpb::AlarmResponse*>(op->resp);
      if (r.alarm() == etcdserverpb::NOSPACE || r.alarm() == etcdserverpb::NONE) {
        bool on = r.action() == etcdserverpb::AlarmRequest::ACTIVATE;
        if (on && r.alarm() == etcdserverpb::NONE) on = nospace_;
        if (nospace_ && !on) {
          auto* a = resp->add_alarms();
          a->set_memberid(member_id_);
          a->set_alarm(etcdserverpb::NOSPACE);
        }
        if (on) {
          auto* a = resp->add_alarms();
          a->set_memberid(member_id_);
          a->set_alarm(etcdserverpb::NOSPACE);
        }
        nospace_ = on;
        PutMeta(c.txn, "alarm_nospace", on ? 1 : 0, &c);
      }
      *resp->mutable_header() = HeaderAt(rev_);
      return;
    }
    case K::kCompact:
    case K::kDefrag:
      return;
  }
}

// etcd's quota rule: a request that would grow the database past the quota
// raises the NOSPACE alarm, and while the alarm is on only requests that do
// not add data (deletes, compaction, reads, revokes) are served.
// The map must hold everything the quota admits plus the copy-on-write pages
// of the transactions in flight; without a quota, 64 GiB of address space.
int64_t StoreImpl::MapBytes() const {
  return opts_.quota_bytes < 0 ? int64_t{64} << 30 : opts_.quota_bytes + (int64_t{1} << 30);
}

bool StoreImpl::QuotaAllows(WriteCtx& c, size_t cost) {
  if (nospace_) return false;
  if (opts_.quota_bytes < 0) return true;  // disabled, as a negative quota does in etcd
  if (DbSize() + pend_bytes_.load(std::memory_order_acquire) + static_cast<int64_t>(cost) <= opts_.quota_bytes) {
    return true;
  }
  nospace_ = true;
  PutMeta(c.txn, "alarm_nospace", 1, &c);
  log::Warn("store: database space exceeded, NOSPACE alarm raised ", log::Field("quota", opts_.quota_bytes));
  return false;
}

void StoreImpl::RunCompaction(PendingOp* op) {
  const auto& r = static_cast<const etcdserverpb::CompactionRequest&>(*op->req);
  auto* resp = static_cast<etcdserverpb::CompactionResponse*>(op->resp);
  if (r.revision() <= compact_rev_) {
    op->status = ErrCompacted();
    return;
  }
  if (r.revision() > rev_) {
    op->status = ErrFutureRev();
    return;
  }
  // Every revision it removes must be in LMDB first.
  if (absl::Status st = ApplyPending(); !st.ok()) {
    op->status = st;
    return;
  }
  std::vector<::skiff::store::Revision> removed;
  {
    std::unique_lock<std::shared_mutex> lk(index_mu_);
    index_.Compact(r.revision(), &removed);
    compact_rev_.store(r.revision(), std::memory_order_release);
  }
  // Compaction never fails the request once the index moved: at worst the
  // old values stay in the file until the next compaction removes them.
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, 0, &txn);
  if (rc == 0) {
    for (const auto& rv : removed) {
      std::string k = RevKey(rv.main, rv.sub);
      MDB_val mk = Val(k);
      mdb_del(txn, kv_dbi_, &mk, nullptr);
    }
    PutMeta(txn, "compact", r.revision(), nullptr);
    std::lock_guard<std::mutex> lk(lmdb_commit_mu_);
    rc = mdb_txn_commit(txn);
  }
  if (rc != 0) log::Error("store: compaction commit: ", mdb_strerror(rc));
  // Compaction is not in the log: checkpoint it before answering.
  if (rc == 0) {
    absl::Status st = Checkpoint();
    if (!st.ok()) log::Error("store: checkpoint after compaction: ", st);
  }
  *resp->mutable_header() = HeaderAt(rev_);
  std::lock_guard<std::mutex> lk(metrics_mu_);
  metrics_.compactions++;
  log::Info("store: compacted ", log::Field("revision", r.revision()), " ",
            log::Field("removed", static_cast<long long>(removed.size())));
}

// ---------------------------------------------------------------- leases

absl::StatusOr<etcdserverpb::LeaseKeepAliveResponse> StoreImpl::LeaseKeepAlive(
    const etcdserverpb::LeaseKeepAliveRequest& req) {
  etcdserverpb::LeaseKeepAliveResponse resp;
  *resp.mutable_header() = Header();
  resp.set_id(req.id());
  std::lock_guard<std::mutex> lk(lease_mu_);
  auto it = leases_.find(req.id());
  if (it == leases_.end() || it->second.revoking) {
    resp.set_ttl(0);
    return resp;
  }
  it->second.expiry = Clock::now() + std::chrono::seconds(it->second.ttl);
  resp.set_ttl(it->second.ttl);
  return resp;
}

absl::StatusOr<etcdserverpb::LeaseTimeToLiveResponse> StoreImpl::LeaseTimeToLive(
    const etcdserverpb::LeaseTimeToLiveRequest& req) {
  etcdserverpb::LeaseTimeToLiveResponse resp;
  *resp.mutable_header() = Header();
  resp.set_id(req.id());
  std::lock_guard<std::mutex> lk(lease_mu_);
  auto it = leases_.find(req.id());
  if (it == leases_.end()) {
    resp.set_ttl(-1);
    return resp;
  }
  auto left = std::chrono::duration_cast<std::chrono::seconds>(it->second.expiry - Clock::now()).count();
  resp.set_ttl(std::max<int64_t>(left, 0));
  resp.set_grantedttl(it->second.ttl);
  if (req.keys()) {
    for (const auto& k : it->second.keys) resp.add_keys(k);
  }
  return resp;
}

absl::StatusOr<etcdserverpb::LeaseLeasesResponse> StoreImpl::LeaseLeases(const etcdserverpb::LeaseLeasesRequest&) {
  etcdserverpb::LeaseLeasesResponse resp;
  *resp.mutable_header() = Header();
  std::lock_guard<std::mutex> lk(lease_mu_);
  std::vector<int64_t> ids;
  for (const auto& [id, l] : leases_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (int64_t id : ids) resp.add_leases()->set_id(id);
  return resp;
}

void StoreImpl::TickerLoop() {
  auto last_progress = Clock::now();
  auto last_sample = Clock::now();
  std::deque<std::pair<Clock::time_point, int64_t>> samples;
  auto last_rev_check = Clock::now();
  int64_t last_rev_target = 0;
  std::unique_lock<std::mutex> lk(ticker_mu_);
  for (;;) {
    ticker_cv_.wait_for(lk, std::chrono::milliseconds(100));
    {
      std::lock_guard<std::mutex> qlk(q_mu_);
      if (stopping_) return;
    }
    auto now = Clock::now();
    std::vector<int64_t> expired;
    {
      std::lock_guard<std::mutex> llk(lease_mu_);
      for (auto& [id, l] : leases_) {
        if (!l.revoking && l.expiry <= now) {
          l.revoking = true;
          expired.push_back(id);
        }
      }
    }
    lk.unlock();
    for (int64_t id : expired) {
      etcdserverpb::LeaseRevokeRequest r;
      r.set_id(id);
      auto st = LeaseRevoke(r);
      if (!st.ok() && st.status().code() != absl::StatusCode::kNotFound) {
        log::Warn("store: revoking expired lease: ", st.status());
        std::lock_guard<std::mutex> llk(lease_mu_);
        auto it = leases_.find(id);
        if (it != leases_.end()) it->second.revoking = false;
      }
    }
    if (now - last_progress >= std::chrono::milliseconds(opts_.progress_notify_interval_ms)) {
      last_progress = now;
      hub_.ProgressTick();
    }
    if (opts_.auto_compaction_retention_ms > 0) {
      auto step = std::chrono::milliseconds(std::max<int64_t>(opts_.auto_compaction_retention_ms / 10, 100));
      if (now - last_sample >= step) {
        last_sample = now;
        samples.emplace_back(now, Revision());
        auto retention = std::chrono::milliseconds(opts_.auto_compaction_retention_ms);
        int64_t target = 0;
        while (!samples.empty() && now - samples.front().first >= retention) {
          target = samples.front().second;
          samples.pop_front();
        }
        if (target > CompactRevision()) {
          etcdserverpb::CompactionRequest cr;
          cr.set_revision(target);
          auto st = Compact(cr);
          if (!st.ok()) log::Warn("store: auto-compaction: ", st.status());
        }
      }
    }
    if (opts_.auto_compaction_retention_revs > 0 &&
        now - last_rev_check >= std::chrono::milliseconds(opts_.auto_compaction_check_ms)) {
      last_rev_check = now;
      // As etcd: nothing while the target has not moved since the last
      // compaction; an already compacted target counts as done.
      const int64_t target = Revision() - opts_.auto_compaction_retention_revs;
      if (target > 0 && target != last_rev_target) {
        etcdserverpb::CompactionRequest cr;
        cr.set_revision(target);
        auto st = Compact(cr);
        if (st.ok() || target <= CompactRevision()) {
          last_rev_target = target;
          if (st.ok()) log::Info("store: auto revision compaction ", log::Field("revision", target));
        } else {
          log::Warn("store: auto-compaction: ", st.status());
        }
      }
    }
    lk.lock();
  }
}

// ---------------------------------------------------------------- maintenance

int64_t StoreImpl::DbSize() const {
  MDB_envinfo info;
  MDB_stat st;
  mdb_env_info(env_, &info);
  mdb_env_stat(env_, &st);
  return static_cast<int64_t>((info.me_last_pgno + 1) * st.ms_psize);
}

absl::StatusOr<etcdserverpb::StatusResponse> StoreImpl::Status() {
  etcdserverpb::StatusResponse resp;
  *resp.mutable_header() = Header();
  resp.set_version(kEtcdVersion);
  // The LMDB high-water mark.
  {
    std::shared_lock<std::shared_mutex> lk(env_mu_);
    resp.set_dbsize(DbSize());
  }
  resp.set_dbsizeinuse(resp.dbsize());
  resp.set_leader(member_id_);
  resp.set_raftindex(static_cast<uint64_t>(Revision()));
  resp.set_raftterm(2);
  resp.set_raftappliedindex(static_cast<uint64_t>(Revision()));
  resp.set_dbsizequota(opts_.quota_bytes);
  resp.set_storageversion("3.5.0");
  if (nospace_) resp.add_errors(absl::StrCat("memberID:", member_id_, " alarm:NOSPACE "));
  return resp;
}

absl::StatusOr<etcdserverpb::HashKVResponse> StoreImpl::HashKV(const etcdserverpb::HashKVRequest& req) {
  etcdserverpb::HashKVResponse resp;
  int64_t cur = Revision();
  RETURN_IF_ERROR(ApplyPending());  // LMDB then holds every revision up to cur
  ReadTxn rt(this);
  RETURN_IF_ERROR(rt.status());
  int64_t rev = req.revision() > 0 ? req.revision() : cur;
  if (req.revision() > cur) return ErrFutureRev();
  int64_t compact = CompactRevision();
  if (rev < compact) return ErrCompacted();
  uint32_t h = 0;
  MDB_cursor* c = nullptr;
  int rc = mdb_cursor_open(rt.get(), kv_dbi_, &c);
  if (rc != 0) return MdbError(rc, "cursor");
  MDB_val k, v;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size == 16 && static_cast<int64_t>(GetBe64(static_cast<const char*>(k.mv_data))) > rev) break;
    h = Crc32c(h, k.mv_data, k.mv_size);
    h = Crc32c(h, v.mv_data, v.mv_size);
  }
  mdb_cursor_close(c);
  *resp.mutable_header() = HeaderAt(cur);
  resp.set_hash(h);
  resp.set_compact_revision(compact);
  resp.set_hash_revision(rev);
  return resp;
}

absl::StatusOr<etcdserverpb::HashResponse> StoreImpl::Hash() {
  etcdserverpb::HashResponse resp;
  RETURN_IF_ERROR(ApplyPending());
  ReadTxn rt(this);
  RETURN_IF_ERROR(rt.status());
  uint32_t h = 0;
  for (MDB_dbi dbi : {kv_dbi_, meta_dbi_, lease_dbi_}) {
    MDB_cursor* c = nullptr;
    int rc = mdb_cursor_open(rt.get(), dbi, &c);
    if (rc != 0) return MdbError(rc, "cursor");
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      // The log position depends on how requests were batched, not on the
      // history (etcd's Hash likewise ignores its consistent index).
      if (dbi == meta_dbi_ && k.mv_size == 7 && std::memcmp(k.mv_data, "wal_seq", 7) == 0) continue;
      h = Crc32c(h, k.mv_data, k.mv_size);
      h = Crc32c(h, v.mv_data, v.mv_size);
    }
    mdb_cursor_close(c);
  }
  *resp.mutable_header() = Header();
  resp.set_hash(h);
  return resp;
}

absl::StatusOr<etcdserverpb::DefragmentResponse> StoreImpl::Defragment() {
  etcdserverpb::DefragmentResponse resp;
  PendingOp op{PendingOp::Kind::kDefrag, nullptr, &resp};
  RETURN_IF_ERROR(Submit(op));
  *resp.mutable_header() = Header();
  return resp;
}

// LMDB reuses freed pages but never gives them back: the file keeps its
// high-water size. Defragmentation writes a compacting copy (only live pages,
// renumbered), flushes it and renames it over data.mdb, then reopens LMDB.
// It runs as the commit leader, so no write happens meanwhile; readers go on
// during the copy and wait only for the swap (env_mu_). Crash safety:
// checkpoint first (the old file is complete and recorded); a crash before
// the record is dropped leaves the old file and its record (the copy is
// deleted on open). Then the record is dropped (the file emptied and
// flushed) before the rename: from here until the new file's record is
// written, whichever file data.mdb is, it is complete and flushed, and
// without a record open takes it as it is. The copy holds the same last log
// record as the old file, so the log replays the same.
void StoreImpl::RunDefrag(PendingOp* op) {
  auto fail = [&](absl::Status st) {
    log::Error("store: defragment: ", st);
    op->status = st;
  };
  absl::Status st = Checkpoint();
  if (!st.ok()) return fail(st);
  const std::string dir = opts_.data_dir + "/member/skiff";
  const std::string tmp = dir + "/data.mdb.defrag";
  std::unique_lock<std::mutex> run(ckpt_run_mu_);
  const int64_t before = DbSize();
  {
    UniqueFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) return fail(LastErrnoError("create " + tmp));
    int rc;
    {
      std::shared_lock<std::shared_mutex> lk(env_mu_);
      rc = mdb_env_copyfd2(env_, fd.get(), MDB_CP_COMPACT);
    }
    if (rc != 0 || ::fsync(fd.get()) != 0) {
      ::unlink(tmp.c_str());
      return fail(rc != 0 ? MdbError(rc, "copy database") : LastErrnoError("fsync " + tmp));
    }
  }
  // No record may describe the old file once the new one can be in its place.
  if (::ftruncate(ckpt_fd_.get(), 0) != 0 || ::fdatasync(ckpt_fd_.get()) != 0) {
    log::Error("store: defragment: dropping the checkpoint record failed, stopping: ", std::strerror(errno));
    std::abort();
  }
  {
    std::unique_lock<std::shared_mutex> lk(env_mu_);
    {
      std::lock_guard<std::mutex> pl(read_pool_mu_);
      for (MDB_txn* t : read_pool_) mdb_txn_abort(t);
      read_pool_.clear();
    }
    if (ckpt_pin_ != nullptr) mdb_txn_abort(ckpt_pin_);
    ckpt_pin_ = nullptr;
    ckpt_txnid_ = 0;
    mdb_env_close(env_);
    env_ = nullptr;
    // From here on the old environment is gone: failing to bring up the new
    // one leaves nothing to serve from.
    UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (::rename(tmp.c_str(), (dir + "/data.mdb").c_str()) != 0 || !dfd || ::fsync(dfd.get()) != 0) {
      log::Error("store: defragment: swapping in the copy failed, stopping: ", std::strerror(errno));
      std::abort();
    }
    st = OpenEnv(dir);
    if (st.ok()) st = OpenDbs();
    if (!st.ok()) {
      log::Error("store: defragment: reopening lmdb failed, stopping: ", st);
      std::abort();
    }
    lmdb_fd_.reset(::open((dir + "/data.mdb").c_str(), O_RDWR | O_CLOEXEC));
    if (!lmdb_fd_) {
      log::Error("store: defragment: reopening data.mdb failed, stopping: ", std::strerror(errno));
      std::abort();
    }
    reserved_end_ = 0;
  }
  const int64_t after = DbSize();
  run.unlock();
  // Record (and pin) the new file's snapshot.
  st = Checkpoint();
  if (!st.ok()) log::Error("store: checkpoint after defragment: ", st);
  log::Info("store: defragmented ", log::Field("before", static_cast<long long>(before)), " ",
            log::Field("after", static_cast<long long>(after)));
}

absl::StatusOr<etcdserverpb::MemberListResponse> StoreImpl::MemberList() {
  etcdserverpb::MemberListResponse resp;
  *resp.mutable_header() = Header();
  resp.mutable_header()->clear_revision();  // etcd answers MemberList from the cluster store, not the KV
  auto* m = resp.add_members();
  m->set_id(member_id_);
  m->set_name(opts_.name);
  for (const auto& u : opts_.peer_urls) m->add_peerurls(u);
  for (const auto& u : opts_.advertise_client_urls) m->add_clienturls(u);
  return resp;
}

// ---------------------------------------------------------------- snapshots
//
// A snapshot is a bbolt database in etcd 3.4's backend schema followed by
// its SHA-256, byte for byte what `etcdctl snapshot save` gets from a real
// etcd, so `etcdctl snapshot status/restore` read it and a real etcd starts
// on the restored data dir. The mapping from our LMDB databases:
//   kv    (main|sub -> 'p'|'t' + KeyValue)  ->  "key": main|'_'|sub[+'t'] -> KeyValue
//   lease (id -> ttl)                       ->  "lease": id -> leasepb.Lease{ID, TTL}
//   meta  rev, compact                      ->  "meta": consistent_index,
//                                               finishedCompactRev, scheduledCompactRev
//   the auth state file (auth.h)            ->  "auth": authEnabled, authRevision;
//                                               "authUsers": name -> authpb.User;
//                                               "authRoles": name -> authpb.Role
// and the buckets etcd keeps for the cluster and alarms, empty.
namespace {

constexpr const char* kEtcdEmptyBuckets[] = {"alarm", "cluster", "members", "members_removed"};

// Where skiff-store keeps its auth state (ServerOptions::auth_file).
std::string AuthFile(const std::string& data_dir) { return data_dir + "/member/skiff/auth"; }

// etcd's revision key (mvcc/revision.go): main | '_' | sub, big endian, and
// 't' appended for a tombstone.
std::string EtcdRevKey(int64_t main, int64_t sub, bool tombstone) {
  std::string k(17, '_');
  PutBe64(k.data(), static_cast<uint64_t>(main));
  PutBe64(k.data() + 9, static_cast<uint64_t>(sub));
  if (tombstone) k.push_back('t');
  return k;
}

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(std::string_view* in, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    const auto b = static_cast<unsigned char>(in->front());
    in->remove_prefix(1);
    *v |= uint64_t{b & 0x7fu} << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

// leasepb.Lease: ID = 1, TTL = 2, RemainingTTL = 3, all int64 varints.
std::string EncodeEtcdLease(int64_t id, int64_t ttl) {
  std::string out;
  if (id != 0) {
    out.push_back(0x08);
    PutVarint(&out, static_cast<uint64_t>(id));
  }
  if (ttl != 0) {
    out.push_back(0x10);
    PutVarint(&out, static_cast<uint64_t>(ttl));
  }
  return out;
}

bool DecodeEtcdLease(std::string_view in, int64_t* id, int64_t* ttl) {
  *id = *ttl = 0;
  while (!in.empty()) {
    uint64_t tag = 0, v = 0;
    if (!GetVarint(&in, &tag)) return false;
    switch (tag & 7) {
      case 0:
        if (!GetVarint(&in, &v)) return false;
        if ((tag >> 3) == 1) *id = static_cast<int64_t>(v);
        if ((tag >> 3) == 2) *ttl = static_cast<int64_t>(v);
        break;
      case 1:
        if (in.size() < 8) return false;
        in.remove_prefix(8);
        break;
      case 2:
        if (!GetVarint(&in, &v) || v > in.size()) return false;
        in.remove_prefix(v);
        break;
      case 5:
        if (in.size() < 4) return false;
        in.remove_prefix(4);
        break;
      default:
        return false;
    }
  }
  return true;
}

// An etcd backend file turned into our LMDB databases, in passes over the
// mapped file (nothing is copied but the leases): Check decodes and checks
// every record before anything is created; Write then fills a new LMDB.
class EtcdBackendRestore {
 public:
  explicit EtcdBackendRestore(std::string_view file) : file_(file) {}

  absl::Status Check() {
    bool have_key = false;
    RETURN_IF_ERROR(bolt::Walk(file_, [&](std::string_view bucket, std::string_view k, std::string_view v) {
      if (bucket == "key") {
        have_key = true;
        return k.empty() ? absl::OkStatus() : Decode(k, v, nullptr);
      }
      if (k.empty()) return absl::OkStatus();
      if (bucket == "meta" && (k == "finishedCompactRev" || k == "scheduledCompactRev")) {
        if (v.size() != 17) return Bad(absl::StrCat("meta ", ToAbsl(k), " is not a revision"));
        // A compaction scheduled but not finished is finished here (etcd
        // resumes it at start the same way).
        compact_ = std::max(compact_, static_cast<int64_t>(GetBe64(v.data())));
      } else if (bucket == "authUsers") {
        authpb::User u;
        if (!u.ParseFromArray(v.data(), static_cast<int>(v.size()))) return Bad("bad record in \"authUsers\"");
        auth_.users[u.name()] = std::move(u);
      } else if (bucket == "authRoles") {
        authpb::Role r;
        if (!r.ParseFromArray(v.data(), static_cast<int>(v.size()))) return Bad("bad record in \"authRoles\"");
        auth_.roles[r.name()] = std::move(r);
      } else if (bucket == "auth" && k == "authEnabled") {
        auth_.enabled = v.size() == 1 && v[0] == 1;
      } else if (bucket == "auth" && k == "authRevision") {
        if (v.size() != 8) return Bad("bad authRevision");
        auth_.revision = GetBe64(v.data());
      } else if (bucket == "alarm") {
        ++dropped_[std::string(bucket)];
      } else if (bucket == "lease") {
        int64_t id = 0, ttl = 0;
        if (k.size() != 8 || !DecodeEtcdLease(v, &id, &ttl) || id != static_cast<int64_t>(GetBe64(k.data()))) {
          return Bad("bad record in \"lease\"");
        }
        std::string ttl_be(8, '\0');
        PutBe64(ttl_be.data(), static_cast<uint64_t>(ttl));
        leases_.emplace_back(std::string(k), std::move(ttl_be));
      }
      return absl::OkStatus();
    }));
    if (!have_key) return Bad("no \"key\" bucket");
    for (const auto& [bucket, n] : dropped_) {
      log::Warn("store: restore leaves out what skiff-store does not have ", log::Field("bucket", bucket), " ",
                log::Field("entries", static_cast<long long>(n)));
    }
    rev_ = std::max(rev_, compact_);
    if (compact_ == 0) return absl::OkStatus();
    // The newest record at or below the compaction point of each key: the
    // only one there that compaction keeps (unless it is a tombstone).
    return bolt::Walk(file_, [&](std::string_view bucket, std::string_view k, std::string_view v) {
      if (bucket != "key" || k.empty()) return absl::OkStatus();
      Record r;
      RETURN_IF_ERROR(Decode(k, v, &r));
      if (r.main <= compact_) kept_[r.kv.key()] = {r.main, r.sub};
      return absl::OkStatus();
    });
  }

  // Fills the kv, meta and lease databases of txn (the file is checked).
  absl::Status Write(MDB_txn* txn, MDB_dbi kv, MDB_dbi meta, MDB_dbi lease) {
    auto put = [&](MDB_dbi dbi, const std::string& k, const std::string& v, unsigned flags) -> absl::Status {
      MDB_val key = Val(k), val = Val(v);
      int rc = mdb_put(txn, dbi, &key, &val, flags);
      return rc == 0 ? absl::OkStatus() : MdbError(rc, "write restored database");
    };
    RETURN_IF_ERROR(bolt::Walk(file_, [&](std::string_view bucket, std::string_view k, std::string_view v) {
      if (bucket != "key" || k.empty()) return absl::OkStatus();
      Record r;
      RETURN_IF_ERROR(Decode(k, v, &r));
      if (r.main <= compact_) {
        auto it = kept_.find(r.kv.key());
        if (r.tomb || it == kept_.end() || it->second != std::make_pair(r.main, r.sub)) return absl::OkStatus();
      }
      std::string rec(1, r.tomb ? kTombRecord : kPutRecord);
      if (r.tomb) r.kv.set_mod_revision(r.main);
      r.kv.AppendToString(&rec);
      return put(kv, RevKey(r.main, r.sub), rec, MDB_APPEND);
    }));
    for (const auto& [id, ttl] : leases_) RETURN_IF_ERROR(put(lease, id, ttl, 0));
    std::string be(8, '\0');
    if (rev_ > 0) {
      PutBe64(be.data(), static_cast<uint64_t>(rev_));
      RETURN_IF_ERROR(put(meta, "rev", be, 0));
    }
    if (compact_ > 0) {
      PutBe64(be.data(), static_cast<uint64_t>(compact_));
      RETURN_IF_ERROR(put(meta, "compact", be, 0));
    }
    return absl::OkStatus();
  }

 private:
  struct Record {
    int64_t main = 0, sub = 0;
    bool tomb = false;
    mvccpb::KeyValue kv;
  };
  static absl::Status Bad(const std::string& what) {
    return absl::DataLossError("snapshot is not a valid etcd backend: " + what);
  }
  // A "key" record: revision key and mvccpb.KeyValue.
  absl::Status Decode(std::string_view k, std::string_view v, Record* out) {
    Record local;
    Record& r = out != nullptr ? *out : local;
    r.tomb = k.size() == 18 && k[17] == 't';
    if ((k.size() != 17 && !r.tomb) || k[8] != '_') return Bad("bad revision key in \"key\"");
    r.main = static_cast<int64_t>(GetBe64(k.data()));
    r.sub = static_cast<int64_t>(GetBe64(k.data() + 9));
    if (r.main <= 0 || r.sub < 0 || !r.kv.ParseFromArray(v.data(), static_cast<int>(v.size())) ||
        r.kv.key().empty()) {
      return Bad(absl::StrCat("bad record at revision ", r.main));
    }
    rev_ = std::max(rev_, r.main);
    return absl::OkStatus();
  }

  std::string_view file_;
  int64_t rev_ = 0, compact_ = 0;
  std::vector<std::pair<std::string, std::string>> leases_;  // be64 id -> be64 ttl, ascending
  std::map<std::string, std::pair<int64_t, int64_t>> kept_;
  std::map<std::string, int64_t> dropped_;  // alarms: not carried over

 public:
  // The auth state the snapshot carries; written only when it has something.
  AuthState auth_;
  bool HasAuth() const { return auth_.enabled || !auth_.users.empty() || !auth_.roles.empty(); }
};

// A new LMDB environment in dir, filled by `fill` in one transaction.
absl::Status WriteLmdb(const std::string& dir, size_t map_hint,
                       const std::function<absl::Status(MDB_txn*, MDB_dbi, MDB_dbi, MDB_dbi)>& fill) {
  MDB_env* env = nullptr;
  int rc = mdb_env_create(&env);
  if (rc != 0) return MdbError(rc, "mdb_env_create");
  std::unique_ptr<MDB_env, decltype(&mdb_env_close)> owned(env, mdb_env_close);
  mdb_env_set_maxdbs(env, 4);
  rc = mdb_env_set_mapsize(env, std::max(map_hint * 2, size_t{1} << 30));
  if (rc == 0) rc = mdb_env_open(env, dir.c_str(), MDB_NOSYNC, 0600);
  if (rc != 0) return MdbError(rc, "open lmdb in " + dir);
  MDB_txn* txn = nullptr;
  rc = mdb_txn_begin(env, nullptr, 0, &txn);
  if (rc != 0) return MdbError(rc, "begin restore txn");
  MDB_dbi kv = 0, meta = 0, lease = 0;
  rc = mdb_dbi_open(txn, "kv", MDB_CREATE, &kv);
  if (rc == 0) rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &meta);
  if (rc == 0) rc = mdb_dbi_open(txn, "lease", MDB_CREATE, &lease);
  absl::Status st = rc == 0 ? fill(txn, kv, meta, lease) : MdbError(rc, "open lmdb databases");
  if (!st.ok()) {
    mdb_txn_abort(txn);
    return st;
  }
  rc = mdb_txn_commit(txn);
  if (rc == 0) rc = mdb_env_sync(env, 1);
  if (rc != 0) return MdbError(rc, "commit restored database");
  return absl::OkStatus();
}

absl::Status FsyncPath(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd || ::fsync(fd.get()) != 0) return LastErrnoError("fsync " + path);
  return absl::OkStatus();
}

}  // namespace

absl::Status StoreImpl::Snapshot(const std::function<bool(const std::string&, uint64_t)>& sink) {
  // Built into an unlinked temp file from one read transaction (a consistent
  // view), then streamed with its SHA-256.
  std::string tmpl = opts_.data_dir + "/member/snapshot.XXXXXX";
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return LastErrnoError("mkstemp " + tmpl);
  UniqueFd owned(fd);
  ::unlink(tmpl.c_str());
  off_t size = 0;
  RETURN_IF_ERROR(ApplyPending());
  {
    ReadTxn rt(this);
    RETURN_IF_ERROR(rt.status());
    long ps = ::sysconf(_SC_PAGESIZE);
    bolt::Writer w(fd, static_cast<uint32_t>(ps > 0 ? ps : 4096));
    for (const char* name : kEtcdEmptyBuckets) {
      RETURN_IF_ERROR(w.BeginBucket(name));
      RETURN_IF_ERROR(w.EndBucket());
    }
    // Auth as etcd keeps it: the flag and revision, users and roles by name.
    ASSIGN_OR_RETURN(AuthState auth, ReadAuthState(AuthFile(opts_.data_dir)));
    RETURN_IF_ERROR(w.BeginBucket("auth"));
    if (auth.enabled) RETURN_IF_ERROR(w.Put("authEnabled", std::string(1, '\1')));  // absent = off, as in etcd
    std::string auth_rev(8, '\0');
    PutBe64(auth_rev.data(), auth.revision);
    RETURN_IF_ERROR(w.Put("authRevision", auth_rev));
    RETURN_IF_ERROR(w.EndBucket());
    RETURN_IF_ERROR(w.BeginBucket("authUsers"));
    for (const auto& [name, u] : auth.users) RETURN_IF_ERROR(w.Put(name, u.SerializeAsString()));
    RETURN_IF_ERROR(w.EndBucket());
    RETURN_IF_ERROR(w.BeginBucket("authRoles"));
    for (const auto& [name, r] : auth.roles) RETURN_IF_ERROR(w.Put(name, r.SerializeAsString()));
    RETURN_IF_ERROR(w.EndBucket());
    auto for_each = [&](MDB_dbi dbi, const std::function<absl::Status(const MDB_val&, const MDB_val&)>& fn) {
      MDB_cursor* c = nullptr;
      int rc = mdb_cursor_open(rt.get(), dbi, &c);
      if (rc != 0) return MdbError(rc, "snapshot cursor");
      std::unique_ptr<MDB_cursor, decltype(&mdb_cursor_close)> cur(c, mdb_cursor_close);
      MDB_val k, v;
      for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        RETURN_IF_ERROR(fn(k, v));
      }
      return rc == MDB_NOTFOUND ? absl::OkStatus() : MdbError(rc, "snapshot cursor");
    };
    RETURN_IF_ERROR(w.BeginBucket("key"));
    RETURN_IF_ERROR(for_each(kv_dbi_, [&](const MDB_val& k, const MDB_val& v) -> absl::Status {
      if (k.mv_size != 16 || v.mv_size < 1) return absl::OkStatus();
      const char* kp = static_cast<const char*>(k.mv_data);
      const char* vp = static_cast<const char*>(v.mv_data);
      const int64_t main = static_cast<int64_t>(GetBe64(kp)), sub = static_cast<int64_t>(GetBe64(kp + 8));
      if (vp[0] != kTombRecord) {
        return w.Put(EtcdRevKey(main, sub, false), std::string_view(vp + 1, v.mv_size - 1));
      }
      // etcd's tombstone holds the key only.
      mvccpb::KeyValue kv, tomb;
      if (!kv.ParseFromArray(vp + 1, static_cast<int>(v.mv_size - 1))) {
        return absl::DataLossError("store: corrupt kv record");
      }
      tomb.set_key(kv.key());
      return w.Put(EtcdRevKey(main, sub, true), tomb.SerializeAsString());
    }));
    RETURN_IF_ERROR(w.EndBucket());
    RETURN_IF_ERROR(w.BeginBucket("lease"));
    RETURN_IF_ERROR(for_each(lease_dbi_, [&](const MDB_val& k, const MDB_val& v) -> absl::Status {
      if (k.mv_size != 8 || v.mv_size != 8) return absl::OkStatus();
      const int64_t id = static_cast<int64_t>(GetBe64(static_cast<const char*>(k.mv_data)));
      const int64_t ttl = static_cast<int64_t>(GetBe64(static_cast<const char*>(v.mv_data)));
      return w.Put(std::string_view(static_cast<const char*>(k.mv_data), 8), EncodeEtcdLease(id, ttl));
    }));
    RETURN_IF_ERROR(w.EndBucket());
    int64_t rev = 0, compact = 0;
    auto meta = [&](const std::string& name, int64_t* out) {
      MDB_val key = Val(name), val;
      if (mdb_get(rt.get(), meta_dbi_, &key, &val) == 0 && val.mv_size == 8) {
        *out = static_cast<int64_t>(GetBe64(static_cast<const char*>(val.mv_data)));
      }
    };
    meta("rev", &rev);
    meta("compact", &compact);
    // consistent_index stands in for etcd's raft index; `etcdctl snapshot
    // restore` rewrites it for the new member anyway.
    RETURN_IF_ERROR(w.BeginBucket("meta"));
    std::string ci(8, '\0');
    PutBe64(ci.data(), static_cast<uint64_t>(std::max<int64_t>(rev, 1)));
    RETURN_IF_ERROR(w.Put("consistent_index", ci));
    if (compact > 0) {
      RETURN_IF_ERROR(w.Put("finishedCompactRev", EtcdRevKey(compact, 0, false)));
      RETURN_IF_ERROR(w.Put("scheduledCompactRev", EtcdRevKey(compact, 0, false)));
    }
    RETURN_IF_ERROR(w.EndBucket());
    ASSIGN_OR_RETURN(uint64_t n, w.Finish());
    size = static_cast<off_t>(n);
  }
  if (::lseek(fd, 0, SEEK_SET) < 0) return LastErrnoError("seek snapshot");
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> sha(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!sha || EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr) != 1) return absl::InternalError("sha256 init");
  uint64_t remaining = static_cast<uint64_t>(size) + SHA256_DIGEST_LENGTH;
  std::string buf(32 * 1024, '\0');
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return LastErrnoError("read snapshot");
    }
    if (n == 0) break;
    EVP_DigestUpdate(sha.get(), buf.data(), static_cast<size_t>(n));
    remaining -= static_cast<uint64_t>(n);
    if (!sink(buf.substr(0, static_cast<size_t>(n)), remaining)) return absl::CancelledError("snapshot cancelled");
  }
  std::string digest(SHA256_DIGEST_LENGTH, '\0');
  EVP_DigestFinal_ex(sha.get(), reinterpret_cast<unsigned char*>(digest.data()), nullptr);
  if (!sink(digest, 0)) return absl::CancelledError("snapshot cancelled");
  return absl::OkStatus();
}

Metrics StoreImpl::GetMetrics() const {
  Metrics m;
  {
    std::lock_guard<std::mutex> lk(metrics_mu_);
    m = metrics_;
  }
  m.ranges = ranges_.load();
  m.revision = Revision();
  m.compact_revision = CompactRevision();
  {
    std::shared_lock<std::shared_mutex> lk(env_mu_);
    m.db_size = DbSize();
  }
  m.db_size_in_use = m.db_size;
  m.quota = opts_.quota_bytes;
  m.nospace_alarm = nospace_;
  {
    std::lock_guard<std::mutex> lk(lease_mu_);
    m.leases = static_cast<int64_t>(leases_.size());
  }
  {
    std::shared_lock<std::shared_mutex> lk(index_mu_);
    m.keys = static_cast<int64_t>(index_.LiveKeys());
  }
  {
    std::lock_guard<std::mutex> lk(const_cast<std::mutex&>(hub_.mu));
    m.watch_streams = static_cast<int64_t>(hub_.streams.size());
    m.slow_watchers = hub_.slow_watchers;
    m.watchers = static_cast<int64_t>(hub_.synced.size());
  }
  return m;
}

absl::Status RestoreSnapshot(const std::string& snapshot_path, const std::string& data_dir_arg, bool skip_hash_check) {
  // "dir/" would put the staging dir inside the target.
  std::string data_dir = data_dir_arg;
  while (data_dir.size() > 1 && data_dir.back() == '/') data_dir.pop_back();
  int fd = ::open(snapshot_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return LastErrnoError("open " + snapshot_path);
  UniqueFd in(fd);
  struct stat sb;
  if (::fstat(fd, &sb) != 0) return LastErrnoError("stat " + snapshot_path);
  // Mapped, not read: a snapshot can be as big as the quota.
  const size_t size = static_cast<size_t>(sb.st_size);
  void* map = size > 0 ? ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0) : nullptr;
  if (size > 0 && map == MAP_FAILED) return LastErrnoError("mmap " + snapshot_path);
  std::unique_ptr<void, std::function<void(void*)>> unmap(map, [size](void* p) {
    if (p != nullptr) ::munmap(p, size);
  });
  const std::string_view data(static_cast<const char*>(map), size);
  // etcdctl's rule: the file carries a SHA-256 trailer when its size is a
  // multiple of 512 plus 32 (database files are whole pages).
  const bool has_hash = data.size() > SHA256_DIGEST_LENGTH && data.size() % 512 == SHA256_DIGEST_LENGTH;
  if (!has_hash && !skip_hash_check) {
    return absl::DataLossError(absl::StrCat("snapshot ", snapshot_path, " has no sha256 trailer (", data.size(),
                                            " bytes): truncated or not a snapshot (a bare database file needs "
                                            "--skip-hash-check)"));
  }
  const size_t body = has_hash ? data.size() - SHA256_DIGEST_LENGTH : data.size();
  if (has_hash && !skip_hash_check) {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    if (EVP_Digest(data.data(), body, digest, nullptr, EVP_sha256(), nullptr) != 1) {
      return absl::InternalError("sha256");
    }
    if (std::memcmp(digest, data.data() + body, SHA256_DIGEST_LENGTH) != 0) {
      return absl::DataLossError("snapshot file integrity check failed (sha256 mismatch)");
    }
  }
  const std::string_view file(data.data(), body);
  // Snapshots are bbolt files (ours and etcd's); older skiff-store versions
  // wrote their LMDB file, which is installed as it is.
  std::optional<EtcdBackendRestore> etcd;
  if (bolt::LooksLikeBolt(file)) {
    etcd.emplace(file);
    RETURN_IF_ERROR(etcd->Check());
  } else if (body < 20 || bolt::LoadLe<uint32_t>(data.data() + 16) != 0xBEEFC0DEu) {
    return absl::DataLossError("snapshot is neither a bbolt nor an LMDB database");
  }
  std::error_code ec;
  if (std::filesystem::exists(data_dir, ec) && !std::filesystem::is_empty(data_dir, ec)) {
    return absl::AlreadyExistsError("data-dir " + data_dir + " exists and is not empty");
  }
  // Built beside the target and renamed into place: a failure leaves nothing.
  const std::string staging = absl::StrCat(data_dir, ".restoring-", ::getpid());
  std::filesystem::remove_all(staging, ec);
  const std::string dir = staging + "/member/skiff";
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError("create " + dir + ": " + ec.message());
  auto install = [&]() -> absl::Status {
    if (etcd) {
      RETURN_IF_ERROR(WriteLmdb(dir, body, [&](MDB_txn* txn, MDB_dbi kv, MDB_dbi meta, MDB_dbi lease) {
        return etcd->Write(txn, kv, meta, lease);
      }));
      ::unlink((dir + "/lock.mdb").c_str());
      if (etcd->HasAuth()) RETURN_IF_ERROR(WriteAuthState(AuthFile(staging), etcd->auth_));
    } else {
      const std::string path = dir + "/data.mdb";
      UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      if (!out) return LastErrnoError("create " + path);
      for (size_t w = 0; w < body;) {
        ssize_t n = ::write(out.get(), data.data() + w, body - w);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return LastErrnoError("write " + path);
        w += static_cast<size_t>(n);
      }
      if (::fsync(out.get()) != 0) return LastErrnoError("fsync " + path);
    }
    ::chmod(staging.c_str(), 0700);
    RETURN_IF_ERROR(FsyncPath(dir));
    RETURN_IF_ERROR(FsyncPath(staging + "/member"));
    RETURN_IF_ERROR(FsyncPath(staging));
    // rename(2) replaces an empty directory.
    if (::rename(staging.c_str(), data_dir.c_str()) != 0) return LastErrnoError("rename " + staging);
    std::filesystem::path parent = std::filesystem::absolute(data_dir).parent_path();
    return FsyncPath(parent.string());
  };
  absl::Status st = install();
  if (!st.ok()) std::filesystem::remove_all(staging, ec);
  return st;
}

}  // namespace skiff::store
