// The systemd driver: a transient scope unit with Delegate=yes, created over
// sd-bus (org.freedesktop.systemd1.Manager.StartTransientUnit) with the
// container's init in PIDs and the limits systemd owns as unit properties
// (MemoryMax, TasksMax, CPUWeight, CPUQuotaPerSecUSec); all limits are then
// also written inside the delegated cgroup like the cgroupfs driver does.
// Transient slices (the kubelet's pod slices) carry their limits the same
// way. Provable only where systemd is PID 1 (the vm tier); here the units
// are built and tested as data.
#include <dlfcn.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_split.h"
#include "skiff/common/status.h"
#include "skiff/runtime/cgroup.h"

namespace skiff::runtime {
namespace {

// libsystemd is opened on first use: linking it would load it (and
// libgcrypt, liblzma, libzstd, liblz4 behind it) into every skiff-runtime
// start, which costs more than the whole cgroupfs path.
struct SdBusApi {
  decltype(&sd_bus_open_system) open_system;
  decltype(&sd_bus_new) bus_new;
  decltype(&sd_bus_set_address) set_address;
  decltype(&sd_bus_start) start;
  decltype(&sd_bus_message_new_method_call) new_method_call;
  decltype(&sd_bus_message_append) append;
  decltype(&sd_bus_message_open_container) open_container;
  decltype(&sd_bus_message_close_container) close_container;
  decltype(&sd_bus_call) call;
  decltype(&sd_bus_call_method) call_method;
  decltype(&sd_bus_error_free) error_free;
  decltype(&sd_bus_message_unref) message_unref;
  decltype(&sd_bus_flush_close_unref) flush_close_unref;
};

absl::StatusOr<const SdBusApi*> SdBus() {
  static SdBusApi api;
  static std::string error = [] {
    void* h = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!h) return std::string("cannot load libsystemd.so.0: ") + dlerror();
    bool ok = true;
    auto sym = [&](auto* fn, const char* name) {
      *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(dlsym(h, name));
      ok = ok && *fn;
    };
    sym(&api.open_system, "sd_bus_open_system");
    sym(&api.bus_new, "sd_bus_new");
    sym(&api.set_address, "sd_bus_set_address");
    sym(&api.start, "sd_bus_start");
    sym(&api.new_method_call, "sd_bus_message_new_method_call");
    sym(&api.append, "sd_bus_message_append");
    sym(&api.open_container, "sd_bus_message_open_container");
    sym(&api.close_container, "sd_bus_message_close_container");
    sym(&api.call, "sd_bus_call");
    sym(&api.call_method, "sd_bus_call_method");
    sym(&api.error_free, "sd_bus_error_free");
    sym(&api.message_unref, "sd_bus_message_unref");
    sym(&api.flush_close_unref, "sd_bus_flush_close_unref");
    return ok ? std::string() : std::string("libsystemd.so.0 lacks sd-bus symbols");
  }();
  if (!error.empty()) return absl::UnavailableError(error);
  return &api;
}

// "a-b-c.slice" lives at a.slice/a-b.slice/a-b-c.slice.
absl::StatusOr<std::string> ExpandSlice(const std::string& slice) {
  const std::string suffix = ".slice";
  if (slice.size() <= suffix.size() || slice.compare(slice.size() - suffix.size(), suffix.size(), suffix) != 0)
    return absl::InvalidArgumentError("linux.cgroupsPath: invalid slice name \"" + slice + "\"");
  std::string base = slice.substr(0, slice.size() - suffix.size());
  if (base == "-") return std::string("");
  if (base.find('/') != std::string::npos)
    return absl::InvalidArgumentError("linux.cgroupsPath: invalid slice name \"" + slice + "\"");
  std::string path, prefix;
  for (absl::string_view part : absl::StrSplit(base, '-')) {
    if (part.empty()) return absl::InvalidArgumentError("linux.cgroupsPath: invalid slice name \"" + slice + "\"");
    prefix += (prefix.empty() ? "" : "-") + std::string(part);
    path += "/" + prefix + suffix;
  }
  return path;
}

struct BusDeleter {
  void operator()(sd_bus* b) const { SdBus().value()->flush_close_unref(b); }
};
struct MsgDeleter {
  void operator()(sd_bus_message* m) const { SdBus().value()->message_unref(m); }
};

using Bus = std::unique_ptr<sd_bus, BusDeleter>;

// As root, systemd's own socket first (what systemctl does): it works
// without a dbus-daemon and before the system bus is up. Else the system bus.
absl::StatusOr<Bus> ConnectSystemd(const SdBusApi* sd) {
  sd_bus* raw = nullptr;
  if (geteuid() == 0 && access("/run/systemd/private", F_OK) == 0) {
    int rc = sd->bus_new(&raw);
    if (rc >= 0) rc = sd->set_address(raw, "unix:path=/run/systemd/private");
    if (rc >= 0) rc = sd->start(raw);
    if (rc >= 0) return Bus(raw);
    if (raw) sd->flush_close_unref(raw);
    raw = nullptr;
  }
  int rc = sd->open_system(&raw);
  if (rc < 0) return ErrnoError(-rc, "connect to systemd (/run/systemd/private or the system bus)");
  return Bus(raw);
}

bool CgroupHasPid(const std::string& dir, pid_t pid) {
  auto pids = CgroupPids(dir);
  if (!pids.ok()) return false;
  for (pid_t p : *pids)
    if (p == pid) return true;
  return false;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The a(sv) array of unit properties, inside an already opened message.
int AppendProperties(const SdBusApi* sd, sd_bus_message* m, const TransientUnit& u, bool for_start) {
  int rc = sd->open_container(m, 'a', "(sv)");
  if (for_start && rc >= 0) rc = sd->append(m, "(sv)", "Description", "s", u.description.c_str());
  if (EndsWith(u.name, ".scope") && for_start) {
    if (rc >= 0) rc = sd->append(m, "(sv)", "Slice", "s", u.slice.c_str());
    if (rc >= 0) rc = sd->append(m, "(sv)", "Delegate", "b", u.delegate ? 1 : 0);
    if (rc >= 0) rc = sd->append(m, "(sv)", "DefaultDependencies", "b", 0);
    if (rc >= 0) rc = sd->open_container(m, 'r', "sv");
    if (rc >= 0) rc = sd->append(m, "s", "PIDs");
    if (rc >= 0) rc = sd->open_container(m, 'v', "au");
    if (rc >= 0) rc = sd->open_container(m, 'a', "u");
    for (uint32_t p : u.pids)
      if (rc >= 0) rc = sd->append(m, "u", p);
    if (rc >= 0) rc = sd->close_container(m);
    if (rc >= 0) rc = sd->close_container(m);
    if (rc >= 0) rc = sd->close_container(m);
  }
  for (auto& [k, v] : u.bool_properties)
    if (rc >= 0) rc = sd->append(m, "(sv)", k.c_str(), "b", v ? 1 : 0);
  for (auto& [k, v] : u.u64_properties)
    if (rc >= 0) rc = sd->append(m, "(sv)", k.c_str(), "t", v);
  if (rc >= 0) rc = sd->close_container(m);
  return rc;
}

struct CallResult {
  int rc = 0;
  std::string error_name, message;
};

// StartTransientUnit(name, "fail", properties, no aux units), or, with
// `set`, SetUnitProperties(name, runtime=true, properties) on an existing unit.
absl::StatusOr<CallResult> CallWithProperties(const SdBusApi* sd, sd_bus* bus, const TransientUnit& u, bool set) {
  sd_bus_message* m = nullptr;
  const char* method = set ? "SetUnitProperties" : "StartTransientUnit";
  int rc = sd->new_method_call(bus, &m, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                               "org.freedesktop.systemd1.Manager", method);
  if (rc < 0) return ErrnoError(-rc, std::string("build ") + method);
  std::unique_ptr<sd_bus_message, MsgDeleter> msg(m);
  rc = set ? sd->append(m, "sb", u.name.c_str(), 1) : sd->append(m, "ss", u.name.c_str(), "fail");
  if (rc >= 0) rc = AppendProperties(sd, m, u, !set);
  if (rc >= 0 && !set) rc = sd->append(m, "a(sa(sv))", 0);
  if (rc < 0) return ErrnoError(-rc, std::string("build ") + method + " " + u.name);
  sd_bus_error err = SD_BUS_ERROR_NULL;
  sd_bus_message* reply = nullptr;
  CallResult r;
  r.rc = sd->call(bus, m, 0, &err, &reply);
  if (err.name) r.error_name = err.name;
  if (err.message) r.message = err.message;
  sd->error_free(&err);
  sd->message_unref(reply);
  return r;
}

class SystemdManager : public CgroupManager {
 public:
  explicit SystemdManager(std::string root) : CgroupManager(std::move(root)) {}
  const char* name() const override { return "systemd"; }
  bool CreatesBeforeProcess() const override { return false; }

  absl::StatusOr<std::string> Prepare(const std::string& path) override {
    ASSIGN_OR_RETURN(TransientUnit u, TransientUnitFor(path, 0, nullptr));
    ASSIGN_OR_RETURN(std::string slice_dir, ExpandSlice(u.slice));
    return root_ + slice_dir + "/" + u.name;
  }

  absl::Status AddProcess(const std::string& path, const std::string& dir, pid_t pid, const Resources& r) override {
    ASSIGN_OR_RETURN(TransientUnit u, TransientUnitFor(path, pid, &r));
    ASSIGN_OR_RETURN(const SdBusApi* sd, SdBus());
    ASSIGN_OR_RETURN(Bus bus, ConnectSystemd(sd));
    ASSIGN_OR_RETURN(CallResult res, CallWithProperties(sd, bus.get(), u, false));
    if (res.rc < 0) return ErrnoError(-res.rc, "StartTransientUnit " + u.name + ": " + res.message);
    // The job runs asynchronously: done once the init is in the scope's
    // cgroup (the runtime releases the init only after that).
    for (int i = 0; i < 1000; i++) {
      if (CgroupHasPid(dir, pid)) return absl::OkStatus();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return absl::DeadlineExceededError("systemd did not move pid " + std::to_string(pid) + " into " + dir);
  }

  absl::Status Destroy(const std::string& path, const std::string& dir) override {
    if (access(dir.c_str(), F_OK) == 0) RETURN_IF_ERROR(KillCgroup(dir));
    ASSIGN_OR_RETURN(TransientUnit u, TransientUnitFor(path, 0, nullptr));
    return StopSystemdUnit(u.name);
  }
};

}  // namespace

namespace {

// Limits systemd owns on the unit's cgroup: set as properties, or a later
// daemon-reload (or any re-realization of the unit) would write systemd's
// own values over files we wrote.
void AddLimitProperties(const Resources* r, TransientUnit* u) {
  u->bool_properties["CPUAccounting"] = true;
  u->bool_properties["MemoryAccounting"] = true;
  u->bool_properties["TasksAccounting"] = true;
  if (!r) return;
  if (r->memory && r->memory->limit && *r->memory->limit > 0) u->u64_properties["MemoryMax"] = *r->memory->limit;
  if (r->pids_limit && *r->pids_limit > 0) u->u64_properties["TasksMax"] = *r->pids_limit;
  if (r->cpu && r->cpu->shares && *r->cpu->shares > 0) {
    uint64_t s = std::clamp<uint64_t>(*r->cpu->shares, 2, 262144);
    u->u64_properties["CPUWeight"] = 1 + ((s - 2) * 9999) / 262142;
  }
  if (r->cpu && r->cpu->quota && *r->cpu->quota > 0) {
    uint64_t period = r->cpu->period.value_or(100000);
    // systemd wants CPU time per second of wall time, in usec; it writes
    // cpu.max with its default 100 ms period, the kubelet's period too.
    u->u64_properties["CPUQuotaPerSecUSec"] = static_cast<uint64_t>(*r->cpu->quota) * 1000000 / period;
  }
}

}  // namespace

absl::StatusOr<TransientUnit> TransientUnitFor(const std::string& cgroups_path, pid_t pid, const Resources* r) {
  std::vector<std::string> parts = absl::StrSplit(cgroups_path, ':');
  if (parts.size() != 3)
    return absl::InvalidArgumentError("linux.cgroupsPath: \"" + cgroups_path +
                                      "\" must be slice:prefix:name for the systemd driver");
  TransientUnit u;
  u.slice = parts[0].empty() ? "system.slice" : parts[0];
  RETURN_IF_ERROR(ExpandSlice(u.slice).status());
  if (parts[2].empty()) return absl::InvalidArgumentError("linux.cgroupsPath: empty unit name");
  if (EndsWith(parts[2], ".slice"))
    u.name = parts[2];
  else
    u.name = (parts[1].empty() ? "" : parts[1] + "-") + parts[2] + ".scope";
  u.description = "skiff container " + parts[2];
  if (pid > 0) u.pids.push_back(static_cast<uint32_t>(pid));
  u.delegate = true;
  if (r) AddLimitProperties(r, &u);
  return u;
}

absl::StatusOr<std::string> SliceCgroupPath(const std::string& slice) { return ExpandSlice(slice); }

absl::StatusOr<TransientUnit> TransientSliceFor(const std::string& slice, const Resources* r) {
  ASSIGN_OR_RETURN(std::string path, ExpandSlice(slice));
  if (path.empty()) return absl::InvalidArgumentError("the root slice cannot be started");
  TransientUnit u;
  u.name = slice;
  u.description = "skiff " + slice;
  u.delegate = false;
  AddLimitProperties(r, &u);
  return u;
}

absl::Status StartSystemdSlice(const TransientUnit& u) {
  if (!EndsWith(u.name, ".slice")) return absl::InvalidArgumentError("not a slice: " + u.name);
  ASSIGN_OR_RETURN(const SdBusApi* sd, SdBus());
  ASSIGN_OR_RETURN(Bus bus, ConnectSystemd(sd));
  ASSIGN_OR_RETURN(CallResult res, CallWithProperties(sd, bus.get(), u, false));
  if (res.rc >= 0) return absl::OkStatus();
  if (res.error_name != "org.freedesktop.systemd1.UnitExists")
    return ErrnoError(-res.rc, "StartTransientUnit " + u.name + ": " + res.message);
  ASSIGN_OR_RETURN(res, CallWithProperties(sd, bus.get(), u, true));
  if (res.rc < 0) return ErrnoError(-res.rc, "SetUnitProperties " + u.name + ": " + res.message);
  return absl::OkStatus();
}

absl::Status StopSystemdUnit(const std::string& name) {
  ASSIGN_OR_RETURN(const SdBusApi* sd, SdBus());
  ASSIGN_OR_RETURN(Bus bus, ConnectSystemd(sd));
  auto call = [&](const char* method, const char* sig, const char* arg2, std::string* error_name) {
    sd_bus_error err = SD_BUS_ERROR_NULL;
    int rc = arg2 ? sd->call_method(bus.get(), "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                    "org.freedesktop.systemd1.Manager", method, &err, nullptr, sig, name.c_str(), arg2)
                  : sd->call_method(bus.get(), "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                    "org.freedesktop.systemd1.Manager", method, &err, nullptr, sig, name.c_str());
    std::string msg = err.message ? err.message : "";
    if (err.name) *error_name = err.name;
    sd->error_free(&err);
    if (rc >= 0) return absl::OkStatus();
    return ErrnoError(-rc, std::string(method) + " " + name + ": " + msg);
  };
  std::string error_name;
  absl::Status st = call("StopUnit", "ss", "replace", &error_name);
  if (!st.ok() && error_name != "org.freedesktop.systemd1.NoSuchUnit") return st;
  // A unit that failed (a scope whose stop timed out) stays listed until
  // reset; nothing to reset is the usual answer.
  error_name.clear();
  call("ResetFailedUnit", "s", nullptr, &error_name).IgnoreError();
  return absl::OkStatus();
}

std::unique_ptr<CgroupManager> MakeSystemdManager(std::string root) {
  return std::make_unique<SystemdManager>(std::move(root));
}

}  // namespace skiff::runtime
