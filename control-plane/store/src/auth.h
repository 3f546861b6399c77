// etcd's v3 auth for skiff-store: users with bcrypt-hashed passwords, roles
// with key-range permissions, the root user and role, simple tokens. Its
// state (enabled, revision, users, roles) lives in one file of the data dir,
// replaced atomically (write, fsync, rename, fsync the dir) by every change
// before the change answers; a change that cannot be written changes nothing.
//
// The checks and errors are etcd's: a request without a token while auth is
// on is "user name is empty", a token it does not know "invalid auth token",
// a key range outside the user's roles "permission denied"; the root role may
// do everything. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "authpb/auth.pb.h"
#include "etcdserverpb/rpc.pb.h"

namespace skiff::store {

// Everything auth keeps: what the state file holds and what snapshots carry
// (etcd's "auth", "authUsers" and "authRoles" buckets).
struct AuthState {
  bool enabled = false;
  uint64_t revision = 1;
  std::map<std::string, authpb::User> users;
  std::map<std::string, authpb::Role> roles;
};

// The state file: absent = the default state; damaged = DataLoss.
absl::StatusOr<AuthState> ReadAuthState(const std::string& path);
// Replaces the state file atomically (temporary file, fsync, rename, fsync
// of the directory).
absl::Status WriteAuthState(const std::string& path, const AuthState& s);

struct AuthOptions {
  std::string path;          // the state file (<data-dir>/auth)
  int bcrypt_cost = 10;      // etcd's --bcrypt-cost (4..31)
  int64_t token_ttl_s = 300; // etcd's --auth-token-ttl: a token unused this long expires
};

class AuthStore {
 public:
  static absl::StatusOr<std::unique_ptr<AuthStore>> Open(const AuthOptions& o);

  bool Enabled() const { return enabled_.load(std::memory_order_acquire); }

  // The user a request's token names: "" without a token or while auth is
  // off; "etcdserver: invalid auth token" for a token it did not issue or
  // that expired. A good token's lifetime starts again. Without a token, the
  // common name of the client's verified TLS certificate is the user, as in
  // etcd with --client-cert-auth.
  absl::StatusOr<std::string> UserOf(std::string_view token, std::string_view cert_cn = {});

  // May `user` read (or write) every key of [key, end)? end "" = the one key,
  // "\0" = every key from key on. OK while auth is off.
  absl::Status CheckKeys(const std::string& user, std::string_view key, std::string_view end, bool write) const;
  // Does `user` have the root role? OK while auth is off.
  absl::Status CheckAdmin(const std::string& user) const;

  // The Auth service as `user` (from UserOf) calls it; responses without
  // their header.
  absl::Status Enable(const std::string& user);
  absl::Status Disable(const std::string& user);
  etcdserverpb::AuthStatusResponse Status() const;
  absl::StatusOr<std::string> Authenticate(const std::string& name, const std::string& password);
  absl::Status UserAdd(const std::string& user, const etcdserverpb::AuthUserAddRequest& r);
  absl::StatusOr<etcdserverpb::AuthUserGetResponse> UserGet(const std::string& user,
                                                            const etcdserverpb::AuthUserGetRequest& r) const;
  absl::StatusOr<etcdserverpb::AuthUserListResponse> UserList(const std::string& user) const;
  absl::Status UserDelete(const std::string& user, const etcdserverpb::AuthUserDeleteRequest& r);
  absl::Status UserChangePassword(const std::string& user, const etcdserverpb::AuthUserChangePasswordRequest& r);
  absl::Status UserGrantRole(const std::string& user, const etcdserverpb::AuthUserGrantRoleRequest& r);
  absl::Status UserRevokeRole(const std::string& user, const etcdserverpb::AuthUserRevokeRoleRequest& r);
  absl::Status RoleAdd(const std::string& user, const etcdserverpb::AuthRoleAddRequest& r);
  absl::StatusOr<etcdserverpb::AuthRoleGetResponse> RoleGet(const std::string& user,
                                                            const etcdserverpb::AuthRoleGetRequest& r) const;
  absl::StatusOr<etcdserverpb::AuthRoleListResponse> RoleList(const std::string& user) const;
  absl::Status RoleDelete(const std::string& user, const etcdserverpb::AuthRoleDeleteRequest& r);
  absl::Status RoleGrantPermission(const std::string& user, const etcdserverpb::AuthRoleGrantPermissionRequest& r);
  absl::Status RoleRevokePermission(const std::string& user,
                                    const etcdserverpb::AuthRoleRevokePermissionRequest& r);

  // How many tokens are kept (tests).
  size_t TokenCount() {
    std::lock_guard<std::mutex> l(token_mu_);
    return tokens_.size();
  }

 private:
  using State = AuthState;
  struct Token {
    std::string user;
    int64_t expires_ms = 0;
  };

  explicit AuthStore(AuthOptions o) : o_(std::move(o)) {}
  // Runs change on a copy of the state; writes it and takes it when change
  // returned OK. Bumps the revision.
  absl::Status Change(const std::function<absl::Status(State&)>& change);
  static absl::Status Admin(const State& st, const std::string& user);
  static bool HasRoot(const State& st, const std::string& user);
  std::shared_ptr<const State> Snap() const { return std::atomic_load(&st_); }
  void DropTokens(const std::function<bool(const Token&)>& which);

  AuthOptions o_;
  // Readers take the current state without a lock (it is never changed in
  // place); changes are serialised and swap in a new one.
  std::shared_ptr<const State> st_ = std::make_shared<const State>();
  std::mutex change_mu_;
  std::atomic<bool> enabled_{false};
  std::mutex token_mu_;
  std::map<std::string, Token> tokens_;
  uint64_t token_seq_ = 0;
};

// etcd's auth errors (rpctypes), as the gRPC adapter maps them.
absl::Status ErrUserEmpty();
absl::Status ErrInvalidAuthToken();
absl::Status ErrPermissionDenied();
absl::Status ErrAuthNotEnabled();

}  // namespace skiff::store
