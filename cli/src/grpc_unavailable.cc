// Built when skiff::client (the gRPC implementation) is not in the tree yet.
#include "skiff/cli/cli.h"

namespace skiff::cli {

absl::StatusOr<Connection> DialGrpc(const client::Credentials& creds) {
  return absl::UnimplementedError("this skiffctl was built without the gRPC client (skiff::client)");
}

}  // namespace skiff::cli
