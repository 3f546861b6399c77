#include "skiff/apiserver/pki.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "skiff/common/status.h"

namespace skiff::apiserver {

namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using PKeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using NamePtr = std::unique_ptr<X509_NAME, Deleter<X509_NAME, X509_NAME_free>>;

absl::Status SslError(const std::string& what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "unknown";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return absl::InternalError(absl::StrCat(what, ": ", buf));
}

absl::StatusOr<PKeyPtr> NewKey() {
  PKeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return SslError("generate EC key");
  return key;
}

std::string Pem(X509* c) {
  BioPtr b(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(b.get(), c);
  char* data;
  long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, n);
}

std::string KeyPem(EVP_PKEY* k) {
  BioPtr b(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr);
  char* data;
  long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, n);
}

absl::StatusOr<X509Ptr> LoadCert(const std::string& pem) {
  BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr c(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
  if (!c) return SslError("parse certificate");
  return c;
}

absl::StatusOr<PKeyPtr> LoadKey(const std::string& pem) {
  BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PKeyPtr k(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
  if (!k) return SslError("parse private key");
  return k;
}

NamePtr MakeName(const std::string& cn, const std::vector<std::string>& orgs) {
  NamePtr n(X509_NAME_new());
  for (const auto& o : orgs)
    X509_NAME_add_entry_by_txt(n.get(), "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(o.c_str()), -1, -1, 0);
  X509_NAME_add_entry_by_txt(n.get(), "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  return n;
}

void SetSerial(X509* c) {
  unsigned char buf[16];
  RAND_bytes(buf, sizeof buf);
  buf[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(buf, sizeof buf, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c));
  BN_free(bn);
}

absl::Status AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return SslError(absl::StrCat("extension ", value));
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return absl::OkStatus();
}

CertSubject SubjectOf(X509_NAME* name) {
  CertSubject s;
  for (int i = 0; i < X509_NAME_entry_count(name); ++i) {
    X509_NAME_ENTRY* e = X509_NAME_get_entry(name, i);
    int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
    unsigned char* utf8 = nullptr;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
    if (n < 0) continue;
    std::string v(reinterpret_cast<char*>(utf8), n);
    OPENSSL_free(utf8);
    if (nid == NID_commonName) s.common_name = v;
    if (nid == NID_organizationName) s.organizations.push_back(v);
  }
  return s;
}

}  // namespace

absl::StatusOr<CertKey> CreateCa(const std::string& common_name, int days) {
  ASSIGN_OR_RETURN(PKeyPtr key, NewKey());
  X509Ptr c(X509_new());
  X509_set_version(c.get(), 2);
  SetSerial(c.get());
  X509_gmtime_adj(X509_getm_notBefore(c.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(c.get()), static_cast<long>(days) * 86400);
  NamePtr name = MakeName(common_name, {});
  X509_set_subject_name(c.get(), name.get());
  X509_set_issuer_name(c.get(), name.get());
  X509_set_pubkey(c.get(), key.get());
  RETURN_IF_ERROR(AddExt(c.get(), c.get(), NID_basic_constraints, "critical,CA:TRUE"));
  RETURN_IF_ERROR(AddExt(c.get(), c.get(), NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"));
  RETURN_IF_ERROR(AddExt(c.get(), c.get(), NID_subject_key_identifier, "hash"));
  if (!X509_sign(c.get(), key.get(), EVP_sha256())) return SslError("sign CA");
  return CertKey{Pem(c.get()), KeyPem(key.get())};
}

static absl::StatusOr<X509Ptr> NewCert(const CertKey& ca, EVP_PKEY* pub, X509_NAME* subject, int days,
                                        X509Ptr* ca_cert_out, PKeyPtr* ca_key_out) {
  ASSIGN_OR_RETURN(X509Ptr ca_cert, LoadCert(ca.cert_pem));
  ASSIGN_OR_RETURN(PKeyPtr ca_key, LoadKey(ca.key_pem));
  X509Ptr c(X509_new());
  X509_set_version(c.get(), 2);
  SetSerial(c.get());
  X509_gmtime_adj(X509_getm_notBefore(c.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(c.get()), static_cast<long>(days) * 86400);
  X509_set_subject_name(c.get(), subject);
  X509_set_issuer_name(c.get(), X509_get_subject_name(ca_cert.get()));
  X509_set_pubkey(c.get(), pub);
  *ca_cert_out = std::move(ca_cert);
  *ca_key_out = std::move(ca_key);
  return c;
}

absl::StatusOr<CertKey> IssueCertificate(const CertKey& ca, const CertSpec& spec) {
  ASSIGN_OR_RETURN(PKeyPtr key, NewKey());
  NamePtr name = MakeName(spec.common_name, spec.organizations);
  X509Ptr ca_cert;
  PKeyPtr ca_key;
  ASSIGN_OR_RETURN(X509Ptr c, NewCert(ca, key.get(), name.get(), spec.days, &ca_cert, &ca_key));
  RETURN_IF_ERROR(AddExt(c.get(), ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE"));
  RETURN_IF_ERROR(AddExt(c.get(), ca_cert.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment"));
  std::vector<std::string> eku;
  if (spec.server) eku.push_back("serverAuth");
  if (spec.client) eku.push_back("clientAuth");
  if (!eku.empty()) RETURN_IF_ERROR(AddExt(c.get(), ca_cert.get(), NID_ext_key_usage, absl::StrJoin(eku, ",")));
  std::vector<std::string> sans;
  for (const auto& d : spec.dns_names) sans.push_back("DNS:" + d);
  for (const auto& ip : spec.ip_addresses) sans.push_back("IP:" + ip);
  if (!sans.empty()) RETURN_IF_ERROR(AddExt(c.get(), ca_cert.get(), NID_subject_alt_name, absl::StrJoin(sans, ",")));
  RETURN_IF_ERROR(AddExt(c.get(), ca_cert.get(), NID_authority_key_identifier, "keyid:always"));
  if (!X509_sign(c.get(), ca_key.get(), EVP_sha256())) return SslError("sign certificate");
  return CertKey{Pem(c.get()), KeyPem(key.get())};
}

absl::StatusOr<CertKey> CreateCsr(const std::string& common_name, const std::vector<std::string>& orgs) {
  ASSIGN_OR_RETURN(PKeyPtr key, NewKey());
  ReqPtr req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  NamePtr name = MakeName(common_name, orgs);
  X509_REQ_set_subject_name(req.get(), name.get());
  X509_REQ_set_pubkey(req.get(), key.get());
  if (!X509_REQ_sign(req.get(), key.get(), EVP_sha256())) return SslError("sign CSR");
  BioPtr b(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(b.get(), req.get());
  char* data;
  long n = BIO_get_mem_data(b.get(), &data);
  return CertKey{std::string(data, n), KeyPem(key.get())};
}

absl::StatusOr<std::string> SignClientCsr(const CertKey& ca, const std::string& csr_pem, const std::string& expected_cn,
                                          const std::string& expected_org, int days) {
  BioPtr b(BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size())));
  ReqPtr req(PEM_read_bio_X509_REQ(b.get(), nullptr, nullptr, nullptr));
  if (!req) return absl::InvalidArgumentError("csr: not a PEM-encoded PKCS#10 certificate request");
  PKeyPtr pub(X509_REQ_get_pubkey(req.get()));
  if (!pub || X509_REQ_verify(req.get(), pub.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("csr: signature does not verify");
  }
  CertSubject subj = SubjectOf(X509_REQ_get_subject_name(req.get()));
  if (subj.common_name != expected_cn)
    return absl::InvalidArgumentError(absl::StrCat("csr: subject CN must be \"", expected_cn, "\", got \"", subj.common_name, "\""));
  if (subj.organizations.size() != 1 || subj.organizations[0] != expected_org)
    return absl::InvalidArgumentError(absl::StrCat("csr: subject O must be exactly \"", expected_org, "\""));
  NamePtr name = MakeName(expected_cn, {expected_org});
  X509Ptr ca_cert;
  PKeyPtr ca_key;
  ASSIGN_OR_RETURN(X509Ptr c, NewCert(ca, pub.get(), name.get(), days, &ca_cert, &ca_key));
  RETURN_IF_ERROR(AddExt(c.get(), ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE"));
  RETURN_IF_ERROR(AddExt(c.get(), ca_cert.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment"));
  RETURN_IF_ERROR(AddExt(c.get(), ca_cert.get(), NID_ext_key_usage, "clientAuth"));
  if (!X509_sign(c.get(), ca_key.get(), EVP_sha256())) return SslError("sign certificate");
  return Pem(c.get());
}

absl::StatusOr<CertSubject> ParseCertSubject(const std::string& cert_pem) {
  ASSIGN_OR_RETURN(X509Ptr c, LoadCert(cert_pem));
  return SubjectOf(X509_get_subject_name(c.get()));
}

absl::StatusOr<std::string> PublicKeyHash(const std::string& cert_pem) {
  ASSIGN_OR_RETURN(X509Ptr c, LoadCert(cert_pem));
  unsigned char* der = nullptr;
  int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(c.get()), &der);
  if (n <= 0) return SslError("encode public key");
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(der, n, md);
  OPENSSL_free(der);
  return absl::StrCat("sha256:", absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(md), sizeof md)));
}

}  // namespace skiff::apiserver
