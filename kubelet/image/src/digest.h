// SHA-256 content digests ("sha256:<64 hex>") for blobs and diff ids.
#pragma once

#include <openssl/evp.h>

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace skiff::image {

// An incremental SHA-256 over a byte stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t len);
  // "sha256:<hex>"; the hasher must not be updated afterwards.
  std::string Finish();

 private:
  EVP_MD_CTX* ctx_;
};

// Checks "sha256:<64 lowercase hex>" and returns the hex part. Other
// algorithms are refused: every digest names a file under blobs/sha256/.
absl::StatusOr<std::string> DigestHex(const std::string& digest);

std::string DigestOfBytes(const std::string& bytes);
absl::StatusOr<std::string> DigestOfFile(const std::string& path);

}  // namespace skiff::image
