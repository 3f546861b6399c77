// etcd's v3 auth: see auth.h.
#include "auth.h"

#include <crypt.h>
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::store {

absl::Status ErrUserEmpty() { return absl::InvalidArgumentError("etcdserver: user name is empty"); }
absl::Status ErrInvalidAuthToken() { return absl::UnauthenticatedError("etcdserver: invalid auth token"); }
absl::Status ErrPermissionDenied() { return absl::PermissionDeniedError("etcdserver: permission denied"); }
absl::Status ErrAuthNotEnabled() {
  return absl::FailedPreconditionError("etcdserver: authentication is not enabled");
}

namespace {

constexpr char kRoot[] = "root";
constexpr char kMagic[] = "skiff-auth 1\n";

absl::Status ErrRootUserNotExist() { return absl::FailedPreconditionError("etcdserver: root user does not exist"); }
absl::Status ErrRootRoleNotExist() {
  return absl::FailedPreconditionError("etcdserver: root user does not have root role");
}
absl::Status ErrUserAlreadyExist() { return absl::FailedPreconditionError("etcdserver: user name already exists"); }
absl::Status ErrUserNotFound() { return absl::FailedPreconditionError("etcdserver: user name not found"); }
absl::Status ErrRoleAlreadyExist() { return absl::FailedPreconditionError("etcdserver: role name already exists"); }
absl::Status ErrRoleNotFound() { return absl::FailedPreconditionError("etcdserver: role name not found"); }
absl::Status ErrRoleEmpty() { return absl::InvalidArgumentError("etcdserver: role name is empty"); }
absl::Status ErrAuthFailed() {
  return absl::InvalidArgumentError("etcdserver: authentication failed, invalid user ID or password");
}
absl::Status ErrRoleNotGranted() {
  return absl::FailedPreconditionError("etcdserver: role is not granted to the user");
}
absl::Status ErrPermissionNotGranted() {
  return absl::FailedPreconditionError("etcdserver: permission is not granted to the role");
}
absl::Status ErrInvalidAuthMgmt() { return absl::InvalidArgumentError("etcdserver: invalid auth management"); }

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// bcrypt ($2b$) through libcrypt, as etcd hashes passwords.
absl::StatusOr<std::string> HashPassword(const std::string& password, int cost) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (crypt_gensalt_rn("$2b$", static_cast<unsigned long>(cost), nullptr, 0, setting, sizeof(setting)) == nullptr) {
    return absl::InternalError(absl::StrCat("bcrypt salt: ", std::strerror(errno)));
  }
  crypt_data data{};
  const char* h = crypt_rn(password.c_str(), setting, &data, sizeof(data));
  if (h == nullptr || h[0] == '*') return absl::InternalError("bcrypt failed");
  return std::string(h);
}

bool PasswordMatches(const std::string& password, const std::string& hash) {
  if (hash.empty()) return false;
  crypt_data data{};
  const char* h = crypt_rn(password.c_str(), hash.c_str(), &data, sizeof(data));
  if (h == nullptr || std::strlen(h) != hash.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < hash.size(); ++i) diff |= static_cast<unsigned char>(h[i] ^ hash[i]);
  return diff == 0;
}

// A key interval [start, end); end "" = no end (a permission "from key").
struct Interval {
  std::string start, end;
  bool open_end = false;
};

// A permission's keys as an interval: a single key is [k, k\0); a range end
// of "\0" means every key from k on, as in etcd.
Interval PermInterval(const authpb::Permission& p) {
  if (p.range_end().empty()) return Interval{p.key(), p.key() + std::string(1, '\0'), false};
  if (p.range_end() == std::string(1, '\0')) return Interval{p.key(), "", true};
  return Interval{p.key(), p.range_end(), false};
}

// Is [key, end) (end "\0" = unbounded; "" = the one key) inside the union of ivs?
bool Covered(std::vector<Interval> ivs, std::string_view key, std::string_view end) {
  if (end.empty()) {
    for (const auto& iv : ivs) {
      if (iv.start <= key && (iv.open_end || key < iv.end)) return true;
    }
    return false;
  }
  const bool want_open = end == std::string_view("\0", 1);
  std::sort(ivs.begin(), ivs.end(), [](const Interval& a, const Interval& b) { return a.start < b.start; });
  std::string cur(key);
  for (const auto& iv : ivs) {
    if (iv.start > cur) break;  // a gap at cur
    if (iv.open_end) return true;
    if (iv.end > cur) cur = iv.end;
    if (!want_open && cur >= end) return true;
  }
  return false;
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

bool GetU32(std::string_view* in, uint32_t* v) {
  if (in->size() < 4) return false;
  *v = 0;
  for (int i = 0; i < 4; ++i) *v |= uint32_t{static_cast<unsigned char>((*in)[i])} << (8 * i);
  in->remove_prefix(4);
  return true;
}

std::string RandomLetters(size_t n) {
  static const char kLetters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::string s(n, 'a');
  unsigned char b[64];
  if (n > sizeof(b) || ::getrandom(b, n, 0) != static_cast<ssize_t>(n)) return s;
  for (size_t i = 0; i < n; ++i) s[i] = kLetters[b[i] % 52];
  return s;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AuthStore>> AuthStore::Open(const AuthOptions& o) {
  if (o.bcrypt_cost < 4 || o.bcrypt_cost > 31) {
    return absl::InvalidArgumentError("bcrypt cost must be between 4 and 31");
  }
  std::unique_ptr<AuthStore> a(new AuthStore(o));
  ASSIGN_OR_RETURN(AuthState st, ReadAuthState(o.path));
  a->enabled_.store(st.enabled, std::memory_order_release);
  std::atomic_store(&a->st_, std::make_shared<const AuthState>(std::move(st)));
  return a;
}

absl::StatusOr<AuthState> ReadAuthState(const std::string& path) {
  AuthState s;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (std::filesystem::exists(path)) return absl::InternalError("cannot read " + path);
    return s;  // no file: auth off, no users, no roles
  }
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  std::string_view v(data);
  auto bad = [&] { return absl::DataLossError(path + ": damaged auth state"); };
  if (v.substr(0, sizeof(kMagic) - 1) != kMagic) return bad();
  v.remove_prefix(sizeof(kMagic) - 1);
  uint32_t enabled, rev_lo, rev_hi, n;
  if (!GetU32(&v, &enabled) || !GetU32(&v, &rev_lo) || !GetU32(&v, &rev_hi)) return bad();
  s.enabled = enabled != 0;
  s.revision = (uint64_t{rev_hi} << 32) | rev_lo;
  for (int kind = 0; kind < 2; ++kind) {
    if (!GetU32(&v, &n)) return bad();
    for (uint32_t i = 0; i < n; ++i) {
      uint32_t len;
      if (!GetU32(&v, &len) || v.size() < len) return bad();
      std::string_view rec = v.substr(0, len);
      v.remove_prefix(len);
      if (kind == 0) {
        authpb::User u;
        if (!u.ParseFromArray(rec.data(), static_cast<int>(rec.size()))) return bad();
        s.users[u.name()] = std::move(u);
      } else {
        authpb::Role r;
        if (!r.ParseFromArray(rec.data(), static_cast<int>(rec.size()))) return bad();
        s.roles[r.name()] = std::move(r);
      }
    }
  }
  if (!v.empty()) return bad();
  return s;
}

absl::Status WriteAuthState(const std::string& path, const AuthState& s) {
  std::string out = kMagic;
  PutU32(&out, s.enabled ? 1 : 0);
  PutU32(&out, static_cast<uint32_t>(s.revision));
  PutU32(&out, static_cast<uint32_t>(s.revision >> 32));
  PutU32(&out, static_cast<uint32_t>(s.users.size()));
  for (const auto& [name, u] : s.users) {
    std::string b = u.SerializeAsString();
    PutU32(&out, static_cast<uint32_t>(b.size()));
    out += b;
  }
  PutU32(&out, static_cast<uint32_t>(s.roles.size()));
  for (const auto& [name, r] : s.roles) {
    std::string b = r.SerializeAsString();
    PutU32(&out, static_cast<uint32_t>(b.size()));
    out += b;
  }
  const std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (fd.get() < 0) return LastErrnoError("open " + tmp);
  for (size_t off = 0; off < out.size();) {
    ssize_t w = ::write(fd.get(), out.data() + off, out.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return LastErrnoError("write " + tmp);
    off += static_cast<size_t>(w);
  }
  if (::fsync(fd.get()) != 0) return LastErrnoError("fsync " + tmp);
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) return LastErrnoError("rename " + tmp);
  const std::string dir = std::filesystem::path(path).parent_path().string();
  UniqueFd d(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.get() < 0 || ::fsync(d.get()) != 0) return LastErrnoError("fsync " + dir);
  return absl::OkStatus();
}

absl::Status AuthStore::Change(const std::function<absl::Status(State&)>& change) {
  std::lock_guard<std::mutex> l(change_mu_);
  State next = *Snap();
  RETURN_IF_ERROR(change(next));
  ++next.revision;
  RETURN_IF_ERROR(WriteAuthState(o_.path, next));
  enabled_.store(next.enabled, std::memory_order_release);
  std::atomic_store(&st_, std::shared_ptr<const State>(std::make_shared<const State>(std::move(next))));
  return absl::OkStatus();
}

void AuthStore::DropTokens(const std::function<bool(const Token&)>& which) {
  std::lock_guard<std::mutex> l(token_mu_);
  for (auto it = tokens_.begin(); it != tokens_.end();) {
    it = which(it->second) ? tokens_.erase(it) : std::next(it);
  }
}

absl::StatusOr<std::string> AuthStore::UserOf(std::string_view token, std::string_view cert_cn) {
  if (!Enabled()) return std::string();
  if (token.empty()) return std::string(cert_cn);
  std::lock_guard<std::mutex> l(token_mu_);
  auto it = tokens_.find(std::string(token));
  const int64_t now = NowMs();
  if (it == tokens_.end() || it->second.expires_ms < now) {
    if (it != tokens_.end()) tokens_.erase(it);
    return ErrInvalidAuthToken();
  }
  it->second.expires_ms = now + o_.token_ttl_s * 1000;
  return it->second.user;
}

bool AuthStore::HasRoot(const State& st, const std::string& user) {
  auto u = st.users.find(user);
  if (u == st.users.end()) return false;
  return std::find(u->second.roles().begin(), u->second.roles().end(), kRoot) != u->second.roles().end();
}

absl::Status AuthStore::Admin(const State& st, const std::string& user) {
  if (!st.enabled) return absl::OkStatus();
  if (user.empty()) return ErrUserEmpty();
  if (!st.users.contains(user)) return ErrUserNotFound();
  return HasRoot(st, user) ? absl::OkStatus() : ErrPermissionDenied();
}

absl::Status AuthStore::CheckAdmin(const std::string& user) const {
  const std::shared_ptr<const State> snap = Snap();
  const State& st = *snap;
  return Admin(st, user);
}

absl::Status AuthStore::CheckKeys(const std::string& user, std::string_view key, std::string_view end,
                                  bool write) const {
  const std::shared_ptr<const State> snap = Snap();
  const State& st = *snap;
  if (!st.enabled) return absl::OkStatus();
  if (user.empty()) return ErrUserEmpty();
  auto u = st.users.find(user);
  if (u == st.users.end()) return ErrPermissionDenied();
  if (HasRoot(st, user)) return absl::OkStatus();
  std::vector<Interval> ivs;
  for (const auto& name : u->second.roles()) {
    auto r = st.roles.find(name);
    if (r == st.roles.end()) continue;
    for (const auto& p : r->second.keypermission()) {
      const bool ok = p.permtype() == authpb::Permission::READWRITE ||
                      p.permtype() == (write ? authpb::Permission::WRITE : authpb::Permission::READ);
      if (ok) ivs.push_back(PermInterval(p));
    }
  }
  return Covered(std::move(ivs), key, end) ? absl::OkStatus() : ErrPermissionDenied();
}

absl::Status AuthStore::Enable(const std::string& user) {
  {
    const std::shared_ptr<const State> snap = Snap();
    const State& st = *snap;
    if (st.enabled) return Admin(st, user);  // already on: nothing to do
  }
  return Change([](State& s) {
    if (s.enabled) return absl::OkStatus();
    auto root = s.users.find(kRoot);
    if (root == s.users.end()) return ErrRootUserNotExist();
    const auto& roles = root->second.roles();
    if (std::find(roles.begin(), roles.end(), kRoot) == roles.end()) return ErrRootRoleNotExist();
    s.enabled = true;
    return absl::OkStatus();
  });
}

absl::Status AuthStore::Disable(const std::string& user) {
  {
    const std::shared_ptr<const State> snap = Snap();
    const State& st = *snap;
    if (!st.enabled) return absl::OkStatus();
    RETURN_IF_ERROR(Admin(st, user));
  }
  RETURN_IF_ERROR(Change([](State& s) {
    s.enabled = false;
    return absl::OkStatus();
  }));
  DropTokens([](const Token&) { return true; });
  return absl::OkStatus();
}

etcdserverpb::AuthStatusResponse AuthStore::Status() const {
  const std::shared_ptr<const State> snap = Snap();
  const State& st = *snap;
  etcdserverpb::AuthStatusResponse r;
  r.set_enabled(st.enabled);
  r.set_authrevision(st.revision);
  return r;
}

absl::StatusOr<std::string> AuthStore::Authenticate(const std::string& name, const std::string& password) {
  std::string hash;
  {
    const std::shared_ptr<const State> snap = Snap();
    const State& st = *snap;
    if (!st.enabled) return ErrAuthNotEnabled();
    auto u = st.users.find(name);
    if (u == st.users.end() || (u->second.has_options() && u->second.options().no_password())) {
      return ErrAuthFailed();
    }
    hash = u->second.password();
  }
  if (!PasswordMatches(password, hash)) return ErrAuthFailed();  // bcrypt: outside the lock
  std::lock_guard<std::mutex> l(token_mu_);
  const int64_t now = NowMs();
  // Tokens nobody uses again (every etcdctl run authenticates anew) go once
  // expired: swept every 256 logins, so the map stays as big as the logins
  // of one TTL.
  if (++token_seq_ % 256 == 0) {
    for (auto it = tokens_.begin(); it != tokens_.end();) {
      it = it->second.expires_ms < now ? tokens_.erase(it) : std::next(it);
    }
  }
  std::string token = absl::StrCat(RandomLetters(16), ".", token_seq_);
  tokens_[token] = Token{name, now + o_.token_ttl_s * 1000};
  return token;
}

absl::Status AuthStore::UserAdd(const std::string& user, const etcdserverpb::AuthUserAddRequest& r) {
  RETURN_IF_ERROR(CheckAdmin(user));
  if (r.name().empty()) return ErrUserEmpty();
  std::string hash;
  const bool no_password = r.has_options() && r.options().no_password();
  if (!no_password) {
    if (!r.hashedpassword().empty()) {
      hash = r.hashedpassword();
    } else {
      ASSIGN_OR_RETURN(hash, HashPassword(r.password(), o_.bcrypt_cost));
    }
  }
  return Change([&](State& s) {
    RETURN_IF_ERROR(Admin(s, user));
    if (s.users.contains(r.name())) return ErrUserAlreadyExist();
    authpb::User u;
    u.set_name(r.name());
    u.set_password(hash);
    if (r.has_options()) *u.mutable_options() = r.options();
    s.users[r.name()] = std::move(u);
    return absl::OkStatus();
  });
}

absl::StatusOr<etcdserverpb::AuthUserGetResponse> AuthStore::UserGet(
    const std::string& user, const etcdserverpb::AuthUserGetRequest& r) const {
  const std::shared_ptr<const State> snap = Snap();
  const State& st = *snap;
  if (!(st.enabled && user == r.name())) RETURN_IF_ERROR(Admin(st, user));
  auto u = st.users.find(r.name());
  if (u == st.users.end()) return ErrUserNotFound();
  etcdserverpb::AuthUserGetResponse resp;
  for (const auto& role : u->second.roles()) resp.add_roles(role);
  return resp;
}

absl::StatusOr<etcdserverpb::AuthUserListResponse> AuthStore::UserList(const std::string& user) const {
  const std::shared_ptr<const State> snap = Snap();
  const State& st = *snap;
  RETURN_IF_ERROR(Admin(st, user));
  etcdserverpb::AuthUserListResponse resp;
  for (const auto& [name, u] : st.users) resp.add_users(name);
  return resp;
}

absl::Status AuthStore::UserDelete(const std::string& user, const etcdserverpb::AuthUserDeleteRequest& r) {
  RETURN_IF_ERROR(Change([&](State& s) {
    RETURN_IF_ERROR(Admin(s, user));
    if (s.enabled && r.name() == kRoot) return ErrInvalidAuthMgmt();
    if (s.users.erase(r.name()) == 0) return ErrUserNotFound();
    return absl::OkStatus();
  }));
  DropTokens([&](const Token& t) { return t.user == r.name(); });
  return absl::OkStatus();
}

absl::Status AuthStore::UserChangePassword(const std::string& user,
                                           const etcdserverpb::AuthUserChangePasswordRequest& r) {
  RETURN_IF_ERROR(CheckAdmin(user));
  std::string hash = r.hashedpassword();
  if (hash.empty()) {
    ASSIGN_OR_RETURN(hash, HashPassword(r.password(), o_.bcrypt_cost));
  }
  RETURN_IF_ERROR(Change([&](State& s) {
    RETURN_IF_ERROR(Admin(s, user));
    auto u = s.users.find(r.name());
    if (u == s.users.end()) return ErrUserNotFound();
    u->second.set_password(hash);
    return absl::OkStatus();
  }));
  DropTokens([&](const Token& t) { return t.user == r.name(); });
  return absl::OkStatus();
}

absl::Status AuthStore::UserGrantRole(const std::string& user, const etcdserverpb::AuthUserGrantRoleRequest& r) {
  return Change([&](State& s) {
    RETURN_IF_ERROR(Admin(s, user));
    auto u = s.users.find(r.user());
    if (u == s.users.end()) return ErrUserNotFound();
    if (r.role() != kRoot && !s.roles.contains(r.role())) return ErrRoleNotFound();
    std::vector<std::string> roles(u->second.roles().begin(), u->second.roles().end());
    auto at = std::lower_bound(roles.begin(), roles.end(), r.role());
    if (at != roles.end() && *at == r.role()) return absl::OkStatus();  // already granted
    roles.insert(at, r.role());
    u->second.clear_roles();
    for (auto& role : roles) u->second.add_roles(std::move(role));
    return absl::OkStatus();
  });
}

absl::Status AuthStore::UserRevokeRole(const std::string& user, const etcdserverpb::AuthUserRevokeRoleRequest& r) {
  return Change([&](State& s) {
    RETURN_IF_ERROR(Admin(s, user));
    if (s.enabled && r.name() == kRoot && r.role() == kRoot) return ErrInvalidAuthMgmt();
    auto u = s.users.find(r.name());
    if (u == s.users.end()) return ErrUserNotFound();
    auto* roles = u->second.mutable_roles();
    auto at = std::find(roles->begin(), roles->end(), r.role());
    if (at == roles->end()) return ErrRoleNotGranted();
    roles->erase(at);
    return absl::OkStatus();
  });
}

absl::Status AuthStore::RoleAdd(const std::string& user, const etcdserverpb::AuthRoleAddRequest& r) {
  return Change([&](State& s) {
    RETURN_IF_ERROR(Admin(s, user));
    if (r.name().empty()) return ErrRoleEmpty();
    if (s.roles.contains(r.name())) return ErrRoleAlreadyExist();
    s.roles[r.name()].set_name(r.name());
    return absl::OkStatus();
  });
}

absl::StatusOr<etcdserverpb::AuthRoleGetResponse> AuthStore::RoleGet(
    const std::string& user, const etcdserverpb::AuthRoleGetRequest& r) const {
  const std::shared_ptr<const State> snap = Snap();
  const State& st = *snap;
  bool own = false;
  if (st.enabled) {
    auto u = st.users.find(user);
    own = u != st.users.end() &&
          std::find(u->second.roles().begin(), u->second.roles().end(), r.role()) != u->second.roles().end();
  }
  if (!own) RETURN_IF_ERROR(Admin(st, user));
  auto role = st.roles.find(r.role());
  if (role == st.roles.end()) return ErrRoleNotFound();
  etcdserverpb::AuthRoleGetResponse resp;
  for (const auto& p : role->second.keypermission()) *resp.add_perm() = p;
  return resp;
}

absl::StatusOr<etcdserverpb::AuthRoleListResponse> AuthStore::RoleList(const std::string& user) const {
  const std::shared_ptr<const State> snap = Snap();
  const State& st = *snap;
  RETURN_IF_ERROR(Admin(st, user));
  etcdserverpb::AuthRoleListResponse resp;
  for (const auto& [name, r] : st.roles) resp.add_roles(name);
  return resp;
}

absl::Status AuthStore::RoleDelete(const std::string& user, const etcdserverpb::AuthRoleDeleteRequest& r) {
  return Change([&](State& s) {
    RETURN_IF_ERROR(Admin(s, user));
    if (s.enabled && r.role() == kRoot) return ErrInvalidAuthMgmt();
    if (s.roles.erase(r.role()) == 0) return ErrRoleNotFound();
    for (auto& [name, u] : s.users) {
      auto* roles = u.mutable_roles();
      roles->erase(std::remove(roles->begin(), roles->end(), r.role()), roles->end());
    }
    return absl::OkStatus();
  });
}

absl::Status AuthStore::RoleGrantPermission(const std::string& user,
                                            const etcdserverpb::AuthRoleGrantPermissionRequest& r) {
  return Change([&](State& s) {
    RETURN_IF_ERROR(Admin(s, user));
    auto role = s.roles.find(r.name());
    if (role == s.roles.end()) return ErrRoleNotFound();
    std::vector<authpb::Permission> perms(role->second.keypermission().begin(), role->second.keypermission().end());
    auto same = std::find_if(perms.begin(), perms.end(), [&](const authpb::Permission& p) {
      return p.key() == r.perm().key() && p.range_end() == r.perm().range_end();
    });
    if (same != perms.end()) {
      same->set_permtype(r.perm().permtype());
    } else {
      perms.push_back(r.perm());
      std::sort(perms.begin(), perms.end(), [](const authpb::Permission& a, const authpb::Permission& b) {
        return a.key() != b.key() ? a.key() < b.key() : a.range_end() < b.range_end();
      });
    }
    role->second.clear_keypermission();
    for (auto& p : perms) *role->second.add_keypermission() = std::move(p);
    return absl::OkStatus();
  });
}

absl::Status AuthStore::RoleRevokePermission(const std::string& user,
                                             const etcdserverpb::AuthRoleRevokePermissionRequest& r) {
  return Change([&](State& s) {
    RETURN_IF_ERROR(Admin(s, user));
    auto role = s.roles.find(r.role());
    if (role == s.roles.end()) return ErrRoleNotFound();
    auto* perms = role->second.mutable_keypermission();
    auto at = std::find_if(perms->begin(), perms->end(), [&](const authpb::Permission& p) {
      return p.key() == r.key() && p.range_end() == r.range_end();
    });
    if (at == perms->end()) return ErrPermissionNotGranted();
    perms->erase(at);
    return absl::OkStatus();
  });
}

}  // namespace skiff::store
