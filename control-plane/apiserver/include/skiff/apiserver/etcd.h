// A small etcd v3 client over gRPC: the API server's only way to storage.
// Works against Debian's etcd and the embedded skiff::store alike.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "mvccpb/kv.pb.h"

namespace skiff::apiserver {

// Kubernetes-style key range helper: the end of the range of all keys with `prefix`.
std::string PrefixEnd(const std::string& prefix);

struct EtcdRange {
  std::vector<mvccpb::KeyValue> kvs;
  int64_t revision = 0;  // header revision the read happened at
  bool more = false;
  int64_t count = 0;
};

class EtcdClient {
 public:
  // endpoints: "http://127.0.0.1:2379" or "127.0.0.1:2379", several for a cluster.
  static absl::StatusOr<std::unique_ptr<EtcdClient>> Connect(const std::vector<std::string>& endpoints);
  // Builds a client over an existing channel (e.g. an in-process store).
  explicit EtcdClient(std::shared_ptr<grpc::Channel> channel);

  // Reads one key (latest). NotFound when absent.
  absl::StatusOr<mvccpb::KeyValue> Get(const std::string& key, int64_t revision = 0);
  // Reads [key, end) at `revision` (0 = latest), at most `limit` keys (0 = all).
  absl::StatusOr<EtcdRange> Range(const std::string& key, const std::string& end, int64_t revision, int64_t limit,
                                  bool count_only = false);
  absl::StatusOr<etcdserverpb::TxnResponse> Txn(const etcdserverpb::TxnRequest& req);
  absl::StatusOr<int64_t> CurrentRevision();
  absl::Status Compact(int64_t revision);

  // Create if absent. Returns the new mod_revision, AlreadyExists when present.
  absl::StatusOr<int64_t> Create(const std::string& key, const std::string& value);
  // Put if mod_revision == expected. Returns new revision; Aborted on mismatch.
  absl::StatusOr<int64_t> Update(const std::string& key, const std::string& value, int64_t expected_mod_revision);
  // Delete if mod_revision == expected. Returns the deletion revision; Aborted on mismatch.
  absl::StatusOr<int64_t> Delete(const std::string& key, int64_t expected_mod_revision);

  etcdserverpb::Watch::Stub* watch_stub() { return watch_.get(); }
  etcdserverpb::KV::Stub* kv_stub() { return kv_.get(); }

 private:
  template <typename Fn>
  absl::Status Retry(Fn&& fn);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<etcdserverpb::KV::Stub> kv_;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch_;
};

absl::Status FromGrpc(const grpc::Status& s);

// One etcd watch on a key prefix, run on its own thread. Delivers batches of
// events in revision order; on a broken stream it reconnects from the last
// seen revision + 1. When etcd reports the start revision compacted, calls
// on_compacted (the owner relists) and stops.
class EtcdWatch {
 public:
  using EventsFn = std::function<void(const std::vector<mvccpb::Event>& events, int64_t header_revision)>;
  using CompactedFn = std::function<void(int64_t compact_revision)>;
  EtcdWatch(EtcdClient* client, std::string prefix, int64_t start_revision, EventsFn on_events,
            CompactedFn on_compacted);
  ~EtcdWatch();
  void Stop();
  // Asks etcd for a progress notification (an empty batch carrying the
  // revision up to which all events were delivered).
  void RequestProgress();

 private:
  void Run();
  EtcdClient* client_;
  std::string prefix_;
  int64_t next_revision_;
  EventsFn on_events_;
  CompactedFn on_compacted_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  grpc::ClientContext* ctx_ = nullptr;
  grpc::ClientReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>* stream_ = nullptr;
  std::mutex write_mu_;
  std::thread thread_;
};

}  // namespace skiff::apiserver
