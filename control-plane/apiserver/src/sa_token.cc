#include "skiff/apiserver/sa_token.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"

namespace skiff::apiserver {

namespace {

using json = nlohmann::json;

std::string B64Url(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+') c = '-';
    else if (c == '/') c = '_';
  }
  return out;
}

bool B64UrlDecode(const std::string& in, std::string* out) {
  std::string s = in;
  for (char& c : s) {
    if (c == '-') c = '+';
    else if (c == '_') c = '/';
    else if (c == '+' || c == '/' || c == '=') return false;
  }
  if (s.size() % 4 == 1) return false;
  size_t pad = (4 - s.size() % 4) % 4;
  s.append(pad, '=');
  out->assign(s.size() / 4 * 3 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out->data()),
                          reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (n < 0) return false;
  out->resize(static_cast<size_t>(n) - pad);
  return true;
}

std::string Hmac(const std::string& key, const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), md, &len);
  return std::string(reinterpret_cast<char*>(md), len);
}

absl::Status Unauthorized() { return absl::UnauthenticatedError("Unauthorized"); }

}  // namespace

bool LooksLikeJwt(const std::string& token) {
  int dots = 0;
  for (char c : token) {
    if (c == '.') ++dots;
    else if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  }
  return dots == 2;
}

absl::StatusOr<TokenSigner> TokenSigner::LoadOrCreate(const std::string& key_path) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::ifstream in(key_path, std::ios::binary);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      std::string key = ss.str();
      if (key.size() < 32) return absl::DataLossError(absl::StrCat(key_path, ": key shorter than 32 bytes"));
      return TokenSigner(key);
    }
    unsigned char buf[32];
    if (RAND_bytes(buf, sizeof buf) != 1) return absl::InternalError("RAND_bytes failed");
    std::string tmp = absl::StrCat(key_path, ".", getpid(), ".tmp");
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return LastErrnoError(absl::StrCat("create ", tmp));
    ssize_t n = ::write(fd, buf, sizeof buf);
    int err = n == sizeof buf ? 0 : (n < 0 ? errno : EIO);
    if (err == 0 && ::fsync(fd) != 0) err = errno;
    ::close(fd);
    if (err != 0) {
      ::unlink(tmp.c_str());
      return ErrnoError(err, absl::StrCat("write ", tmp));
    }
    // link() fails with EEXIST when another replica sharing the directory
    // won the race: then read theirs.
    int rc = ::link(tmp.c_str(), key_path.c_str());
    int link_err = errno;
    ::unlink(tmp.c_str());
    if (rc != 0 && link_err != EEXIST) return ErrnoError(link_err, absl::StrCat("link ", key_path));
  }
  return absl::InternalError(absl::StrCat(key_path, ": cannot create or read"));
}

std::string TokenSigner::Sign(const ServiceAccountClaims& c) const {
  json header = {{"alg", "HS256"}, {"typ", "JWT"}};
  json k8s = {{"namespace", c.ns}, {"serviceaccount", {{"name", c.name}, {"uid", c.sa_uid}}}};
  if (!c.pod_name.empty()) k8s["pod"] = {{"name", c.pod_name}, {"uid", c.pod_uid}};
  json claims = {{"iss", kServiceAccountIssuer},
                 {"sub", c.Username()},
                 {"aud", c.audiences},
                 {"iat", c.issued_at},
                 {"nbf", c.issued_at},
                 {"exp", c.expires},
                 {"kubernetes.io", k8s}};
  std::string signing_input = B64Url(header.dump()) + "." + B64Url(claims.dump());
  return signing_input + "." + B64Url(Hmac(key_, signing_input));
}

absl::StatusOr<ServiceAccountClaims> TokenSigner::Verify(const std::string& token, absl::Time now) const {
  if (!LooksLikeJwt(token)) return Unauthorized();
  size_t d1 = token.find('.'), d2 = token.find('.', d1 + 1);
  std::string signing_input = token.substr(0, d2);
  // Compared in its canonical encoding, so no second spelling of a
  // signature (non-zero padding bits) is accepted.
  std::string sig = token.substr(d2 + 1);
  std::string want = B64Url(Hmac(key_, signing_input));
  if (sig.size() != want.size() || CRYPTO_memcmp(sig.data(), want.data(), want.size()) != 0) return Unauthorized();
  std::string header_s, claims_s;
  if (!B64UrlDecode(token.substr(0, d1), &header_s) || !B64UrlDecode(token.substr(d1 + 1, d2 - d1 - 1), &claims_s))
    return Unauthorized();
  json header = json::parse(header_s, nullptr, false);
  json claims = json::parse(claims_s, nullptr, false);
  if (header.is_discarded() || claims.is_discarded() || !header.is_object() || !claims.is_object())
    return Unauthorized();
  if (header.value("alg", "") != "HS256") return Unauthorized();
  if (claims.value("iss", "") != kServiceAccountIssuer) return Unauthorized();
  ServiceAccountClaims c;
  try {
    c.issued_at = claims.at("iat").get<int64_t>();
    c.expires = claims.at("exp").get<int64_t>();
    int64_t nbf = claims.value("nbf", c.issued_at);
    int64_t t = absl::ToUnixSeconds(now);
    if (t >= c.expires || t + 60 < nbf) return Unauthorized();  // a minute of clock skew
    const json& aud = claims.at("aud");
    if (aud.is_string()) c.audiences.push_back(aud.get<std::string>());
    else
      for (const auto& a : aud) c.audiences.push_back(a.get<std::string>());
    const json& k = claims.at("kubernetes.io");
    c.ns = k.at("namespace").get<std::string>();
    c.name = k.at("serviceaccount").at("name").get<std::string>();
    c.sa_uid = k.at("serviceaccount").value("uid", "");
    if (k.contains("pod")) {
      c.pod_name = k.at("pod").at("name").get<std::string>();
      c.pod_uid = k.at("pod").value("uid", "");
    }
  } catch (const json::exception&) {
    return Unauthorized();
  }
  if (claims.value("sub", "") != c.Username() || c.ns.empty() || c.name.empty()) return Unauthorized();
  return c;
}

}  // namespace skiff::apiserver
