// Namespace types of the spec and their clone flags.
#include <sched.h>

#include <string>

#include "plan.h"

namespace skiff::runtime {

absl::StatusOr<unsigned long> NamespaceFlag(const std::string& type) {
  if (type == "pid") return CLONE_NEWPID;
  if (type == "network") return CLONE_NEWNET;
  if (type == "mount") return CLONE_NEWNS;
  if (type == "ipc") return CLONE_NEWIPC;
  if (type == "uts") return CLONE_NEWUTS;
  if (type == "user") return CLONE_NEWUSER;
  if (type == "cgroup") return CLONE_NEWCGROUP;
#ifdef CLONE_NEWTIME
  if (type == "time") return CLONE_NEWTIME;
#endif
  return absl::InvalidArgumentError("unknown namespace type \"" + type + "\"");
}

const char* NamespaceProcName(int nstype) {
  switch (nstype) {
    case CLONE_NEWPID: return "pid";
    case CLONE_NEWNET: return "net";
    case CLONE_NEWNS: return "mnt";
    case CLONE_NEWIPC: return "ipc";
    case CLONE_NEWUTS: return "uts";
    case CLONE_NEWUSER: return "user";
    case CLONE_NEWCGROUP: return "cgroup";
#ifdef CLONE_NEWTIME
    case CLONE_NEWTIME: return "time";
#endif
  }
  return "?";
}

}  // namespace skiff::runtime
