// delete [--force|-f] ID
#include "cli.h"

namespace skiff::runtime::cli {

int CmdDelete(Globals& g, Args& a) {
  if (auto s = a.Parse({}, {{"--force", "-f"}}); !s.ok()) return Fail(s);
  bool force = a.Flag("--force", "-f");
  auto rest = a.Rest();
  if (!rest.ok()) return Fail(rest.status());
  if (rest->size() != 1) return Fail("requires exactly 1 argument (container id)");
  Runtime rt(g.runtime);
  absl::Status s = rt.Delete((*rest)[0], force);
  if (!s.ok() && force && absl::IsNotFound(s)) return 0;  // runc: delete -f of a missing container is fine
  return s.ok() ? 0 : Fail(s);
}

}  // namespace skiff::runtime::cli
