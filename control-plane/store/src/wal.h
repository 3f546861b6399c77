// Private: the write-ahead log in front of LMDB.
//
// A log is a directory of segment files named after the first sequence number
// they may hold (16 hex digits + ".wal"). Each segment is preallocated with
// real zeros, so an append overwrites allocated blocks and fdatasync has no
// file-system metadata to commit. A record is
//
//   u32 payload length | u32 CRC-32C over (seq, payload) | u64 seq | payload
//
// (little endian). A zero length marks the end of a segment's records; a bad
// CRC, a length running past the segment or a sequence gap marks a torn tail.
// Sequence numbers are consecutive across segments.
#pragma once

#include <cstdint>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skiff/common/unique_fd.h"

namespace skiff::store {

inline constexpr size_t kWalHeaderBytes = 16;

uint32_t Crc32c(uint32_t crc, const void* data, size_t n);

// Replays every intact record with seq > after, in order, stopping at the
// first torn record. *last is the last intact sequence number seen (or
// `after` when none). A torn record followed by intact records of a later
// segment is reported as DataLoss: acknowledged writes would be skipped.
absl::Status ReplayWal(const std::string& dir, uint64_t after,
                       const std::function<absl::Status(uint64_t seq, std::string_view payload)>& apply,
                       uint64_t* last);

class Wal {
 public:
  // Removes every old segment of dir and starts an empty one for next_seq.
  // Call only after the state the old segments described is durable.
  static absl::StatusOr<std::unique_ptr<Wal>> Create(const std::string& dir, uint64_t next_seq,
                                                     int64_t segment_bytes);

  // Appends one record (seq must be the previous seq + 1); returns once it
  // is durable.
  // Called by one thread at a time (the commit leader).
  absl::Status Append(uint64_t seq, std::string_view payload);

  // The state up to and including seq is durable elsewhere: deletes the
  // segments that hold nothing newer. Safe to call concurrently with Append.
  void DropThrough(uint64_t seq);

  // Prepares a zero-filled spare segment so a rotation does not wait for one.
  // Runs outside the commit path (background thread).
  void PrepareSpare();

  int64_t BytesSinceRotation() const;
  size_t SegmentCount();

 private:
  struct Segment {
    uint64_t first_seq;
    std::string path;
  };
  Wal(std::string dir, int64_t segment_bytes) : dir_(std::move(dir)), segment_bytes_(segment_bytes) {}
  absl::Status Rotate(uint64_t first_seq, size_t need);
  // Creates a zero-filled file of at least `bytes` at path (fsynced).
  static absl::Status Preallocate(const std::string& path, int64_t bytes);
  absl::Status SyncDir();

  std::string dir_;
  int64_t segment_bytes_;
  UniqueFd fd_;  // current segment (leader only)
  int64_t off_ = 0, size_ = 0;
  std::atomic<int64_t> written_{0};  // bytes appended to the current segment
  uint64_t last_seq_ = 0;

  std::mutex mu_;                  // guards segments_ and spare_
  std::vector<Segment> segments_;  // oldest first; back() is current
  std::string spare_;              // path of a ready spare, empty if none
  int64_t spare_bytes_ = 0;
  // Appends go straight to the device (O_DIRECT | O_DSYNC) in whole aligned
  // blocks: no page-cache copy, no writeback scan, one write that returns
  // once durable. The block holding the end of the log is rewritten by the
  // next append, so the buffer keeps its bytes (tail_) at its start. Where
  // the file system refuses O_DIRECT (tmpfs), pwrite + fdatasync as before.
  static constexpr size_t kAlign = 4096;
  bool direct_ = false;
  size_t tail_ = 0;  // bytes of the last, partial block, at buf_ start
  struct FreeDeleter {
    void operator()(char* p) const;
  };
  std::unique_ptr<char, FreeDeleter> buf_;
  size_t buf_cap_ = 0;
};

}  // namespace skiff::store
