// bbolt-format snapshots (etcd's backend file layout), so real etcdctl can
// read and restore skiff-store snapshots. Filled in by the snapshot work.
namespace skiff::store {}
