// The store's errors, as etcd reports them. Each is an absl::Status whose code
// is the gRPC code etcd uses and whose message is etcd's exact text, because
// etcd clients match on the text ("etcdserver: mvcc: required revision has
// been compacted"). ToGrpcStatus (server.h) is the one place that maps them to
// the wire.
#pragma once

#include "absl/status/status.h"

namespace skiff::store {

inline absl::Status ErrEmptyKey() { return absl::InvalidArgumentError("etcdserver: key is not provided"); }
inline absl::Status ErrKeyNotFound() { return absl::InvalidArgumentError("etcdserver: key not found"); }
inline absl::Status ErrValueProvided() { return absl::InvalidArgumentError("etcdserver: value is provided"); }
inline absl::Status ErrLeaseProvided() { return absl::InvalidArgumentError("etcdserver: lease is provided"); }
inline absl::Status ErrTooManyOps() {
  return absl::InvalidArgumentError("etcdserver: too many operations in txn request");
}
inline absl::Status ErrDuplicateKey() {
  return absl::InvalidArgumentError("etcdserver: duplicate key given in txn request");
}
inline absl::Status ErrRequestTooLarge() { return absl::InvalidArgumentError("etcdserver: request is too large"); }
inline absl::Status ErrCompacted() {
  return absl::OutOfRangeError("etcdserver: mvcc: required revision has been compacted");
}
inline absl::Status ErrFutureRev() {
  return absl::OutOfRangeError("etcdserver: mvcc: required revision is a future revision");
}
inline absl::Status ErrNoSpace() { return absl::ResourceExhaustedError("etcdserver: mvcc: database space exceeded"); }
inline absl::Status ErrLeaseNotFound() { return absl::NotFoundError("etcdserver: requested lease not found"); }
inline absl::Status ErrLeaseExist() { return absl::FailedPreconditionError("etcdserver: lease already exists"); }
inline absl::Status ErrLeaseTTLTooLarge() { return absl::OutOfRangeError("etcdserver: too large lease TTL"); }
inline absl::Status ErrStopped() { return absl::UnavailableError("etcdserver: server stopped"); }
inline absl::Status ErrNotCapable() { return absl::UnavailableError("etcdserver: not capable"); }
inline absl::Status ErrBadLeaderTransferee() {
  return absl::FailedPreconditionError("etcdserver: bad leader transferee");
}

}  // namespace skiff::store
