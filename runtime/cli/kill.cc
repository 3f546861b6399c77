// kill [--all|-a] ID [SIGNAL]   (default SIGTERM)
#include <signal.h>

#include "cli.h"

namespace skiff::runtime::cli {

int CmdKill(Globals& g, Args& a) {
  if (auto s = a.Parse({}, {{"--all", "-a"}}); !s.ok()) return Fail(s);
  bool all = a.Flag("--all", "-a");
  auto rest = a.Rest();
  if (!rest.ok()) return Fail(rest.status());
  if (rest->empty() || rest->size() > 2) return Fail("requires 1 or 2 arguments (container id [signal])");
  int sig = SIGTERM;
  if (rest->size() == 2) {
    auto s = ParseSignal((*rest)[1]);
    if (!s.ok()) return Fail(s.status());
    sig = *s;
  }
  Runtime rt(g.runtime);
  absl::Status s = rt.Kill((*rest)[0], sig, all);
  return s.ok() ? 0 : Fail(s);
}

}  // namespace skiff::runtime::cli
