#include "skiff/kubelet/container_record.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>

#include "skiff/common/status.h"

namespace skiff::kubelet {

std::string ContainerRecord::Serialize() const {
  std::ostringstream o;
  o << "id=" << id << "\nattempt=" << attempt << "\nmonitor_pid=" << monitor_pid << "\npid=" << pid
    << "\nstarted_at=" << started_at << "\nexited=" << (exited ? 1 : 0) << "\nexit_code=" << exit_code
    << "\nsignal=" << signal << "\noom_killed=" << (oom_killed ? 1 : 0) << "\nfinished_at=" << finished_at
    << "\nerror=" << error << "\nwarnings=" << warnings << "\n";
  return o.str();
}

absl::StatusOr<ContainerRecord> ContainerRecord::Parse(const std::string& text) {
  ContainerRecord r;
  std::istringstream in(text);
  std::string line;
  bool any = false;
  while (std::getline(in, line)) {
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    long n = std::atol(v.c_str());
    any = true;
    if (k == "id") r.id = v;
    else if (k == "attempt") r.attempt = static_cast<int>(n);
    else if (k == "monitor_pid") r.monitor_pid = static_cast<pid_t>(n);
    else if (k == "pid") r.pid = static_cast<pid_t>(n);
    else if (k == "started_at") r.started_at = v;
    else if (k == "exited") r.exited = n != 0;
    else if (k == "exit_code") r.exit_code = static_cast<int>(n);
    else if (k == "signal") r.signal = static_cast<int>(n);
    else if (k == "oom_killed") r.oom_killed = n != 0;
    else if (k == "finished_at") r.finished_at = v;
    else if (k == "error") r.error = v;
    else if (k == "warnings") r.warnings = v;
  }
  if (!any) return absl::DataLossError("empty container record");
  return r;
}

absl::Status WriteRecordFile(const std::string& path, const ContainerRecord& r) {
  std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return LastErrnoError("create " + tmp);
  std::string s = r.Serialize();
  ssize_t n = write(fd, s.data(), s.size());
  int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(s.size())) return ErrnoError(err, "write " + tmp);
  if (rename(tmp.c_str(), path.c_str()) != 0) return LastErrnoError("rename " + tmp);
  return absl::OkStatus();
}

absl::StatusOr<ContainerRecord> ReadRecordFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return LastErrnoError("open " + path);
  std::string s;
  char buf[1024];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) s.append(buf, n);
  close(fd);
  return ContainerRecord::Parse(s);
}

}  // namespace skiff::kubelet
