// list [-q] [--format|-f table|json]
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli.h"

namespace skiff::runtime::cli {

int CmdList(Globals& g, Args& a) {
  if (auto s = a.Parse({{"--format", "-f"}}, {{"--quiet", "-q"}}); !s.ok()) return Fail(s);
  bool quiet = a.Flag("--quiet", "-q");
  std::string format = "table";
  a.Value("--format", "-f", &format);
  auto rest = a.Rest();
  if (!rest.ok()) return Fail(rest.status());
  Runtime rt(g.runtime);
  auto list = rt.List();
  if (!list.ok()) return Fail(list.status());
  if (quiet) {
    for (auto& s : *list) printf("%s\n", s.id.c_str());
    return 0;
  }
  if (format == "json") {
    nlohmann::json arr = nlohmann::json::array();
    for (auto& s : *list)
      arr.push_back({{"ociVersion", s.oci_version}, {"id", s.id}, {"pid", s.pid},
                     {"status", ContainerStatusName(s.status)}, {"bundle", s.bundle}, {"created", s.created},
                     {"owner", "root"}});
    printf("%s\n", arr.dump().c_str());
    return 0;
  }
  printf("%-12s %-8s %-10s %-40s %-31s %s\n", "ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER");
  for (auto& s : *list)
    printf("%-12s %-8d %-10s %-40s %-31s %s\n", s.id.c_str(), s.pid, ContainerStatusName(s.status), s.bundle.c_str(),
           s.created.c_str(), "root");
  return 0;
}

}  // namespace skiff::runtime::cli
