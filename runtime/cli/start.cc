// start ID
#include "cli.h"

namespace skiff::runtime::cli {

int CmdStart(Globals& g, Args& a) {
  auto rest = a.Rest();
  if (!rest.ok()) return Fail(rest.status());
  if (rest->size() != 1) return Fail("requires exactly 1 argument (container id)");
  Runtime rt(g.runtime);
  absl::Status s = rt.Start((*rest)[0]);
  return s.ok() ? 0 : Fail(s);
}

}  // namespace skiff::runtime::cli
