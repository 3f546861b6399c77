// state ID: the OCI state JSON.
#include <cstdio>

#include "cli.h"

namespace skiff::runtime::cli {

int CmdState(Globals& g, Args& a) {
  auto rest = a.Rest();
  if (!rest.ok()) return Fail(rest.status());
  if (rest->size() != 1) return Fail("requires exactly 1 argument (container id)");
  Runtime rt(g.runtime);
  auto st = rt.State((*rest)[0]);
  if (!st.ok()) return Fail(st.status());
  printf("%s\n", st->ToJson().c_str());
  return 0;
}

}  // namespace skiff::runtime::cli
