// A client of the OCI distribution API v2 (docker registry) for one
// repository: manifests and blobs, bearer-token and basic auth, Range resume.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "skiff/image/store.h"

namespace skiff::image {

struct FetchedManifest {
  std::string body;
  std::string media_type;
  std::string digest;  // sha256 of body
};

struct BlobCounters {
  std::atomic<int64_t>* blobs = nullptr;
  std::atomic<int64_t>* bytes = nullptr;
};

class RegistryClient {
 public:
  RegistryClient(const Reference& ref, const Options& options, std::optional<RegistryAuth> auth);

  // GET /v2/<repo>/manifests/<tag or digest>. When `reference` is a digest
  // the body must hash to it; a Docker-Content-Digest header must match too.
  absl::StatusOr<FetchedManifest> GetManifest(const std::string& reference);

  // GET /v2/<repo>/blobs/<digest> into `partial_path`, resuming from the
  // bytes already there with a Range request; retried up to
  // options.blob_attempts times. On success the file holds exactly `size`
  // bytes hashing to `digest`; on a mismatch it is deleted (DataLoss).
  absl::Status FetchBlob(const std::string& digest, int64_t size, const std::string& partial_path,
                         const std::function<void(int64_t done, int64_t total)>& progress, BlobCounters counters);

  // "http://host" or "https://host" for this registry.
  const std::string& base_url() const { return base_url_; }

 private:
  struct Response {
    long status = 0;
    std::string body;
    std::map<std::string, std::string> headers;  // lowercase names, last value
  };
  // Receives the body of a 2xx answer (with its status); false aborts.
  using Sink = std::function<bool(long status, const char* data, size_t len)>;
  // One HTTP GET with the current credentials; on a 401 answers the
  // WWW-Authenticate challenge once and repeats the request.
  absl::StatusOr<Response> Get(const std::string& url, const std::vector<std::string>& headers,
                               const Sink& sink = nullptr);
  absl::StatusOr<Response> Perform(const std::string& url, const std::vector<std::string>& headers,
                                   const Sink& sink);
  absl::Status Authenticate(const std::string& challenge);

  Reference ref_;
  Options options_;
  std::optional<RegistryAuth> auth_;
  std::string base_url_;
  std::mutex mu_;
  std::string authorization_;  // the Authorization header value in use
};

std::string Base64Encode(const std::string& in);
absl::StatusOr<std::string> Base64Decode(const std::string& in);
// Parses `Bearer realm="...",service="...",scope="..."` into lowercase keys;
// "scheme" holds the scheme in lowercase.
std::map<std::string, std::string> ParseChallenge(const std::string& header);

}  // namespace skiff::image
