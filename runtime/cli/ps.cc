// ps [--format|-f table|json] ID: the container's processes (host pids).
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli.h"

namespace skiff::runtime::cli {

int CmdPs(Globals& g, Args& a) {
  if (auto s = a.Parse({{"--format", "-f"}}, {}); !s.ok()) return Fail(s);
  std::string format = "table";
  a.Value("--format", "-f", &format);
  auto rest = a.Rest();
  if (!rest.ok()) return Fail(rest.status());
  if (rest->size() != 1) return Fail("requires exactly 1 argument (container id)");
  Runtime rt(g.runtime);
  auto pids = rt.Pids((*rest)[0]);
  if (!pids.ok()) return Fail(pids.status());
  if (format == "json") {
    printf("%s\n", nlohmann::json(*pids).dump().c_str());
    return 0;
  }
  printf("%-8s %s\n", "PID", "CMD");
  for (pid_t p : *pids) {
    std::ifstream in("/proc/" + std::to_string(p) + "/comm");
    std::string comm;
    std::getline(in, comm);
    printf("%-8d %s\n", p, comm.c_str());
  }
  return 0;
}

}  // namespace skiff::runtime::cli
