#include "registry.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "digest.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::image {
namespace {

constexpr size_t kMaxBufferedBody = 8 << 20;  // manifests, tokens, error bodies

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string UrlEscape(const std::string& s) {
  std::string out;
  static const char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

struct Transfer {
  CURL* curl;
  const std::function<bool(long, const char*, size_t)>* sink;
  std::string body;
  std::map<std::string, std::string> headers;
  bool overflow = false;
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    t->headers.clear();  // a new response (after a redirect or 100-continue)
  } else if (auto colon = line.find(':'); colon != std::string::npos) {
    t->headers[Lower(Trim(line.substr(0, colon)))] = Trim(line.substr(colon + 1));
  }
  return size * n;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  long status = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
  size_t len = size * n;
  if (status >= 200 && status < 300 && t->sink && *t->sink) {
    return (*t->sink)(status, data, len) ? len : 0;
  }
  if (t->body.size() + len > kMaxBufferedBody) {
    t->overflow = true;
    return 0;
  }
  t->body.append(data, len);
  return len;
}

bool IsInsecure(const Options& o, const std::string& host) {
  return std::find(o.insecure_registries.begin(), o.insecure_registries.end(), host) != o.insecure_registries.end();
}

absl::Status HttpError(const std::string& what, long status, const std::string& body) {
  std::string msg = what + ": HTTP " + std::to_string(status);
  // Registries answer {"errors":[{"code":..,"message":..}]}.
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("errors") && j["errors"].is_array() && !j["errors"].empty()) {
    const auto& e = j["errors"][0];
    if (e.is_object()) msg += " " + e.value("code", std::string()) + ": " + e.value("message", std::string());
  }
  if (status == 404) return absl::NotFoundError(msg);
  if (status == 401) return absl::UnauthenticatedError(msg);
  if (status == 403) return absl::PermissionDeniedError(msg);
  if (status == 429 || status >= 500) return absl::UnavailableError(msg);
  return absl::FailedPreconditionError(msg);
}

}  // namespace

std::string Base64Encode(const std::string& in) {
  static const char kTable[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  while (i + 2 < in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += {kTable[v >> 18], kTable[(v >> 12) & 63], kTable[(v >> 6) & 63], kTable[v & 63]};
    i += 3;
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += {kTable[v >> 18], kTable[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += {kTable[v >> 18], kTable[(v >> 12) & 63], kTable[(v >> 6) & 63], '='};
  }
  return out;
}

absl::StatusOr<std::string> Base64Decode(const std::string& in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else if (c == '=' || c == '\n' || c == '\r') continue;
    else return absl::InvalidArgumentError("invalid base64");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

std::map<std::string, std::string> ParseChallenge(const std::string& header) {
  std::map<std::string, std::string> out;
  std::string h = Trim(header);
  auto sp = h.find(' ');
  out["scheme"] = Lower(h.substr(0, sp));
  if (sp == std::string::npos) return out;
  size_t i = sp + 1;
  while (i < h.size()) {
    while (i < h.size() && (h[i] == ' ' || h[i] == ',')) ++i;
    size_t eq = h.find('=', i);
    if (eq == std::string::npos) break;
    std::string key = Lower(Trim(h.substr(i, eq - i)));
    i = eq + 1;
    std::string value;
    if (i < h.size() && h[i] == '"') {
      ++i;
      while (i < h.size() && h[i] != '"') {
        if (h[i] == '\\' && i + 1 < h.size()) ++i;
        value.push_back(h[i++]);
      }
      ++i;
    } else {
      size_t end = h.find(',', i);
      value = Trim(h.substr(i, end == std::string::npos ? std::string::npos : end - i));
      i = end == std::string::npos ? h.size() : end;
    }
    out[key] = value;
  }
  return out;
}

RegistryClient::RegistryClient(const Reference& ref, const Options& options, std::optional<RegistryAuth> auth)
    : ref_(ref), options_(options), auth_(std::move(auth)) {
  std::string host = ref.registry == "docker.io" ? "registry-1.docker.io" : ref.registry;
  base_url_ = (IsInsecure(options, ref.registry) ? "http://" : "https://") + host;
}

absl::StatusOr<RegistryClient::Response> RegistryClient::Perform(const std::string& url,
                                                                 const std::vector<std::string>& headers,
                                                                 const Sink& sink) {
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return absl::InternalError("curl_easy_init failed");
  curl_slist* raw = nullptr;
  for (const auto& h : headers) raw = curl_slist_append(raw, h.c_str());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!authorization_.empty()) raw = curl_slist_append(raw, ("Authorization: " + authorization_).c_str());
  }
  std::unique_ptr<curl_slist, SlistDeleter> list(raw);
  Transfer t{curl.get(), &sink, {}, {}, false};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list.get());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_USERAGENT, "skiff-image/0.1");
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(options_.connect_timeout_seconds));
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options_.low_speed_timeout_seconds));
  if (!options_.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options_.ca_file.c_str());
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  CURLcode rc = curl_easy_perform(c);
  Response r;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  if (t.overflow) return absl::ResourceExhaustedError("GET " + url + ": response body too large");
  if (rc != CURLE_OK) {
    return absl::UnavailableError("GET " + url + ": " + curl_easy_strerror(rc));
  }
  r.body = std::move(t.body);
  r.headers = std::move(t.headers);
  return r;
}

absl::Status RegistryClient::Authenticate(const std::string& challenge) {
  auto ch = ParseChallenge(challenge);
  const std::string& scheme = ch["scheme"];
  if (scheme == "basic") {
    if (!auth_ || auth_->username.empty()) {
      return absl::UnauthenticatedError("registry " + ref_.registry + " requires credentials and none are configured");
    }
    std::lock_guard<std::mutex> lock(mu_);
    authorization_ = "Basic " + Base64Encode(auth_->username + ":" + auth_->password);
    return absl::OkStatus();
  }
  if (scheme != "bearer") {
    return absl::UnauthenticatedError("registry " + ref_.registry + " asks for unsupported auth scheme \"" + scheme + "\"");
  }
  std::string realm = ch["realm"];
  if (realm.rfind("https://", 0) != 0 && realm.rfind("http://", 0) != 0) {
    return absl::UnauthenticatedError("registry " + ref_.registry + " names a bad token realm \"" + realm + "\"");
  }
  std::string scope = ch.count("scope") ? ch["scope"] : "repository:" + ref_.repository + ":pull";
  std::string url = realm + (realm.find('?') == std::string::npos ? "?" : "&") +
                    "service=" + UrlEscape(ch["service"]) + "&scope=" + UrlEscape(scope);
  std::vector<std::string> headers;
  if (auth_ && !auth_->username.empty()) {
    headers.push_back("Authorization: Basic " + Base64Encode(auth_->username + ":" + auth_->password));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    authorization_.clear();
  }
  // The token endpoint gets only our basic credentials, not an old token.
  ASSIGN_OR_RETURN(Response r, Perform(url, headers, nullptr));
  if (r.status != 200) return Annotate(HttpError("token request to " + realm, r.status, r.body), "auth");
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  std::string token;
  if (j.is_object()) {
    if (j.contains("token") && j["token"].is_string()) token = j["token"];
    else if (j.contains("access_token") && j["access_token"].is_string()) token = j["access_token"];
  }
  if (token.empty()) return absl::UnauthenticatedError("token endpoint " + realm + " returned no token");
  std::lock_guard<std::mutex> lock(mu_);
  authorization_ = "Bearer " + token;
  return absl::OkStatus();
}

absl::StatusOr<RegistryClient::Response> RegistryClient::Get(const std::string& url,
                                                             const std::vector<std::string>& headers,
                                                             const Sink& sink) {
  ASSIGN_OR_RETURN(Response r, Perform(url, headers, sink));
  if (r.status != 401) return r;
  auto it = r.headers.find("www-authenticate");
  if (it == r.headers.end()) return HttpError("GET " + url, r.status, r.body);
  RETURN_IF_ERROR(Authenticate(it->second));
  ASSIGN_OR_RETURN(r, Perform(url, headers, sink));
  if (r.status == 401) {
    return absl::UnauthenticatedError("registry " + ref_.registry + " refused our credentials for " + ref_.repository);
  }
  return r;
}

absl::StatusOr<FetchedManifest> RegistryClient::GetManifest(const std::string& reference) {
  std::string url = base_url_ + "/v2/" + ref_.repository + "/manifests/" + reference;
  std::vector<std::string> headers = {
      "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
      "application/vnd.docker.distribution.manifest.list.v2+json, "
      "application/vnd.docker.distribution.manifest.v2+json"};
  ASSIGN_OR_RETURN(Response r, Get(url, headers));
  if (r.status != 200) {
    absl::Status st = HttpError("manifest " + ref_.registry + "/" + ref_.repository + ":" + reference, r.status, r.body);
    if (r.status == 404) return absl::NotFoundError(absl::StrCat("image ", ref_.String(), " not found: ", st.message()));
    return st;
  }
  FetchedManifest m;
  m.body = std::move(r.body);
  m.digest = DigestOfBytes(m.body);
  auto ct = r.headers.find("content-type");
  if (ct != r.headers.end()) m.media_type = Trim(ct->second.substr(0, ct->second.find(';')));
  if (reference.rfind("sha256:", 0) == 0 && m.digest != reference) {
    return absl::DataLossError("manifest digest mismatch: asked for " + reference + ", got " + m.digest);
  }
  auto dh = r.headers.find("docker-content-digest");
  if (dh != r.headers.end() && dh->second.rfind("sha256:", 0) == 0 && dh->second != m.digest) {
    return absl::DataLossError("manifest digest mismatch: registry says " + dh->second + ", content is " + m.digest);
  }
  return m;
}

absl::Status RegistryClient::FetchBlob(const std::string& digest, int64_t size, const std::string& partial_path,
                                       const std::function<void(int64_t, int64_t)>& progress,
                                       BlobCounters counters) {
  std::string url = base_url_ + "/v2/" + ref_.repository + "/blobs/" + digest;
  absl::Status last = absl::UnavailableError("no attempt made");
  int attempts = std::max(1, options_.blob_attempts);
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    if (attempt > 1) std::this_thread::sleep_for(std::chrono::milliseconds(100 * attempt));
    UniqueFd fd(::open(partial_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) return LastErrnoError("open " + partial_path);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return LastErrnoError("stat " + partial_path);
    int64_t have = st.st_size;
    if (size >= 0 && have > size) {
      if (::ftruncate(fd.get(), 0) != 0) return LastErrnoError("truncate " + partial_path);
      have = 0;
    }
    auto hash = std::make_unique<Sha256>();
    if (have > 0) {
      // Resuming: the digest covers the bytes we already have.
      char buf[1 << 16];
      int64_t off = 0;
      while (off < have) {
        ssize_t n = ::pread(fd.get(), buf, sizeof buf, off);
        if (n <= 0) return LastErrnoError("read " + partial_path);
        hash->Update(buf, static_cast<size_t>(n));
        off += n;
      }
    }
    const int64_t resumed_from = have;
    int64_t pos = have;
    bool started = false;
    absl::Status write_error;
    int64_t last_report = 0;
    Sink sink = [&](long status, const char* data, size_t len) -> bool {
      if (!started) {
        started = true;
        if (status == 200 && pos > 0) {  // the server ignored our Range
          if (::ftruncate(fd.get(), 0) != 0) {
            write_error = LastErrnoError("truncate " + partial_path);
            return false;
          }
          pos = 0;
          hash = std::make_unique<Sha256>();
        }
      }
      if (size >= 0 && pos + static_cast<int64_t>(len) > size) {
        write_error = absl::DataLossError("blob " + digest + " is larger than its descriptor says (" +
                                          std::to_string(size) + " bytes)");
        return false;
      }
      size_t done = 0;
      while (done < len) {
        ssize_t n = ::pwrite(fd.get(), data + done, len - done, pos + static_cast<int64_t>(done));
        if (n < 0) {
          if (errno == EINTR) continue;
          write_error = LastErrnoError("write " + partial_path);
          return false;
        }
        done += static_cast<size_t>(n);
      }
      hash->Update(data, len);
      pos += static_cast<int64_t>(len);
      if (counters.bytes) counters.bytes->fetch_add(static_cast<int64_t>(len));
      if (progress && (pos - last_report >= (1 << 20) || pos == size)) {
        last_report = pos;
        progress(pos, size);
      }
      return true;
    };
    std::vector<std::string> headers;
    if (have > 0 && (size < 0 || have < size)) headers.push_back("Range: bytes=" + std::to_string(have) + "-");
    absl::StatusOr<Response> r;
    if (size >= 0 && have == size) {
      r = Response{206, {}, {}};
    } else {
      r = Get(url, headers, sink);
    }
    if (!write_error.ok()) {
      ::unlink(partial_path.c_str());
      return write_error;
    }
    if (!r.ok()) {
      if (absl::IsUnauthenticated(r.status())) return r.status();
      last = r.status();
      log::Warn("image: blob fetch interrupted ", log::Field("digest", digest), " ",
                log::Field("attempt", attempt), " ", log::Field("have", pos), " ",
                log::Field("error", std::string(r.status().message())));
      continue;
    }
    if (r->status == 416) {
      if (::ftruncate(fd.get(), 0) != 0) return LastErrnoError("truncate " + partial_path);
      last = absl::DataLossError("registry refused range for " + digest);
      continue;
    }
    if (r->status < 200 || r->status >= 300) {
      absl::Status st = HttpError("blob " + digest, r->status, r->body);
      if (absl::IsUnavailable(st)) {
        last = st;
        continue;
      }
      return st;
    }
    if (size >= 0 && pos < size) {
      last = absl::DataLossError("blob " + digest + " truncated: got " + std::to_string(pos) + " of " +
                                 std::to_string(size) + " bytes");
      log::Warn("image: ", last.message());
      continue;
    }
    std::string got = hash->Finish();
    if (got != digest) {
      ::unlink(partial_path.c_str());
      last = absl::DataLossError("blob digest mismatch: expected " + digest + ", got " + got);
      // A resumed prefix may have been stale; one fresh attempt is worth it.
      if (resumed_from > 0) continue;
      return last;
    }
    if (::fsync(fd.get()) != 0) return LastErrnoError("fsync " + partial_path);
    if (counters.blobs) counters.blobs->fetch_add(1);
    return absl::OkStatus();
  }
  return Annotate(last, "fetch blob " + digest + " after " + std::to_string(attempts) + " attempts");
}

}  // namespace skiff::image
