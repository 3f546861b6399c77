// Private: durable checkpoints of LMDB's two meta pages.
//
// Why: LMDB runs with MDB_NOSYNC between checkpoints (the write-ahead log
// makes writes durable). Without syncs the kernel may write LMDB's pages in
// any order, so after a machine crash the meta page on disk may point at data
// pages that never reached the disk, or at pages a later commit reused. The
// store therefore
//   1. pins the checkpointed snapshot with a read transaction: LMDB never
//      reuses a page a live reader can see, so no later commit overwrites a
//      page of that snapshot, whatever the kernel writes back and when;
//   2. flushes LMDB (mdb_env_sync), so the snapshot's pages are on disk;
//   3. only then records a copy of the snapshot's meta pages in this file
//      (two alternating CRC-protected slots, fdatasync'd): the newest valid
//      slot names a snapshot whose every page is on disk and untouched;
//   4. releases the previous pin and drops the log segments the snapshot
//      covers.
// On open, before LMDB reads its header, the meta pages of data.mdb are put
// back to the recorded ones, so LMDB sees exactly the checkpointed snapshot
// (whatever later, possibly torn, commits left on disk is just free space to
// it), and the log replays everything after it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace skiff::store {

struct MetaCheckpoint {
  uint64_t gen = 0;      // increases with every checkpoint; slot = gen & 1
  uint64_t txnid = 0;    // LMDB transaction id of the snapshot
  uint64_t wal_seq = 0;  // last log record the snapshot holds
  uint32_t psize = 0;    // LMDB page size
  std::string metas;     // pages 0 and 1 of data.mdb, 2 * psize bytes
};

// The transaction id LMDB stored in a meta page (0 if it is not one).
uint64_t LmdbMetaTxnId(const char* page, size_t size);

// The newest intact checkpoint in the file, nullopt if the file is missing
// or holds none.
absl::StatusOr<std::optional<MetaCheckpoint>> ReadMetaCheckpoint(const std::string& path);

// Writes c into its slot of the open checkpoint file and fdatasyncs it.
absl::Status WriteMetaCheckpoint(int fd, const MetaCheckpoint& c);

// Puts the checkpoint's meta pages back into data.mdb (and fdatasyncs) if
// they differ. DataLoss if data.mdb is older than the checkpoint (its
// newest meta page names an earlier transaction): that file is not the one
// the checkpoint describes.
absl::Status RestoreLmdbMeta(const std::string& data_path, const MetaCheckpoint& c);

}  // namespace skiff::store
