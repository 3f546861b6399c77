// config.json <-> Spec. Parsing keeps a field path so every error names the
// field it is about ("process.rlimits[0].type: ...").
#include <sys/stat.h>

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "caps.h"
#include "skiff/common/status.h"
#include "skiff/runtime/spec.h"

namespace skiff::runtime {
namespace {

using nlohmann::json;

absl::Status FieldError(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(path + ": " + what);
}

std::string TypeName(const json& j) { return j.type_name(); }

class Reader {
 public:
  Reader(const json& j, std::string path) : j_(j), path_(std::move(path)) {}

  const json* Get(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  std::string Path(const char* key) const { return path_.empty() ? key : path_ + "." + key; }

  absl::Status Str(const char* key, std::string* out, bool required = false) const {
    const json* v = Get(key);
    if (!v) return required ? FieldError(Path(key), "required") : absl::OkStatus();
    if (!v->is_string()) return FieldError(Path(key), "expected string, got " + TypeName(*v));
    *out = v->get<std::string>();
    return absl::OkStatus();
  }
  absl::Status Bool(const char* key, bool* out) const {
    const json* v = Get(key);
    if (!v) return absl::OkStatus();
    if (!v->is_boolean()) return FieldError(Path(key), "expected boolean, got " + TypeName(*v));
    *out = v->get<bool>();
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Int(const char* key, T* out, bool required = false) const {
    const json* v = Get(key);
    if (!v) return required ? FieldError(Path(key), "required") : absl::OkStatus();
    if (!v->is_number_integer()) return FieldError(Path(key), "expected integer, got " + TypeName(*v));
    if (v->is_number_unsigned()) {
      uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<T>::max()))
        return FieldError(Path(key), "out of range");
      *out = static_cast<T>(u);
    } else {
      int64_t s = v->get<int64_t>();
      if (s < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
          (s > 0 && static_cast<uint64_t>(s) > static_cast<uint64_t>(std::numeric_limits<T>::max())))
        return FieldError(Path(key), "out of range");
      *out = static_cast<T>(s);
    }
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status OptInt(const char* key, std::optional<T>* out) const {
    if (!Get(key)) return absl::OkStatus();
    T v{};
    RETURN_IF_ERROR(Int(key, &v));
    *out = v;
    return absl::OkStatus();
  }
  absl::Status StrList(const char* key, std::vector<std::string>* out) const {
    const json* v = Get(key);
    if (!v) return absl::OkStatus();
    if (!v->is_array()) return FieldError(Path(key), "expected array, got " + TypeName(*v));
    for (size_t i = 0; i < v->size(); i++) {
      if (!(*v)[i].is_string())
        return FieldError(Path(key) + "[" + std::to_string(i) + "]", "expected string");
      out->push_back((*v)[i].get<std::string>());
    }
    return absl::OkStatus();
  }
  absl::Status StrMap(const char* key, std::map<std::string, std::string>* out) const {
    const json* v = Get(key);
    if (!v) return absl::OkStatus();
    if (!v->is_object()) return FieldError(Path(key), "expected object, got " + TypeName(*v));
    for (auto& [k, val] : v->items()) {
      if (!val.is_string()) return FieldError(Path(key) + "." + k, "expected string");
      (*out)[k] = val.get<std::string>();
    }
    return absl::OkStatus();
  }
  // Calls fn(Reader) for each object element of array `key`.
  template <typename Fn>
  absl::Status Each(const char* key, Fn fn) const {
    const json* v = Get(key);
    if (!v) return absl::OkStatus();
    if (!v->is_array()) return FieldError(Path(key), "expected array, got " + TypeName(*v));
    for (size_t i = 0; i < v->size(); i++) {
      std::string p = Path(key) + "[" + std::to_string(i) + "]";
      if (!(*v)[i].is_object()) return FieldError(p, "expected object");
      RETURN_IF_ERROR(fn(Reader((*v)[i], p)));
    }
    return absl::OkStatus();
  }
  // Calls fn(Reader) for object `key` when present.
  template <typename Fn>
  absl::Status Object(const char* key, Fn fn) const {
    const json* v = Get(key);
    if (!v) return absl::OkStatus();
    if (!v->is_object()) return FieldError(Path(key), "expected object, got " + TypeName(*v));
    return fn(Reader(*v, Path(key)));
  }
  const std::string& path() const { return path_; }

 private:
  const json& j_;
  std::string path_;
};

absl::Status ParseHooks(const Reader& r, const char* key, std::vector<Hook>* out) {
  return r.Each(key, [&](const Reader& h) -> absl::Status {
    Hook hook;
    RETURN_IF_ERROR(h.Str("path", &hook.path, true));
    RETURN_IF_ERROR(h.StrList("args", &hook.args));
    RETURN_IF_ERROR(h.StrList("env", &hook.env));
    RETURN_IF_ERROR(h.OptInt("timeout", &hook.timeout));
    out->push_back(std::move(hook));
    return absl::OkStatus();
  });
}

absl::Status ParseIdMaps(const Reader& r, const char* key, std::vector<IdMapping>* out) {
  return r.Each(key, [&](const Reader& m) -> absl::Status {
    IdMapping im;
    RETURN_IF_ERROR(m.Int("containerID", &im.container_id, true));
    RETURN_IF_ERROR(m.Int("hostID", &im.host_id, true));
    RETURN_IF_ERROR(m.Int("size", &im.size, true));
    if (im.size == 0) return FieldError(m.path() + ".size", "must be positive");
    out->push_back(im);
    return absl::OkStatus();
  });
}

absl::Status ParseThrottle(const Reader& r, const char* key, std::vector<ThrottleDevice>* out) {
  return r.Each(key, [&](const Reader& d) -> absl::Status {
    ThrottleDevice t;
    RETURN_IF_ERROR(d.Int("major", &t.major, true));
    RETURN_IF_ERROR(d.Int("minor", &t.minor, true));
    RETURN_IF_ERROR(d.Int("rate", &t.rate, true));
    out->push_back(t);
    return absl::OkStatus();
  });
}

absl::Status ParseResources(const Reader& r, Resources* res) {
  RETURN_IF_ERROR(r.Object("memory", [&](const Reader& m) -> absl::Status {
    MemoryResources mem;
    RETURN_IF_ERROR(m.OptInt("limit", &mem.limit));
    RETURN_IF_ERROR(m.OptInt("reservation", &mem.reservation));
    RETURN_IF_ERROR(m.OptInt("swap", &mem.swap));
    res->memory = mem;
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.Object("cpu", [&](const Reader& c) -> absl::Status {
    CpuResources cpu;
    RETURN_IF_ERROR(c.OptInt("shares", &cpu.shares));
    RETURN_IF_ERROR(c.OptInt("quota", &cpu.quota));
    RETURN_IF_ERROR(c.OptInt("period", &cpu.period));
    RETURN_IF_ERROR(c.Str("cpus", &cpu.cpus));
    RETURN_IF_ERROR(c.Str("mems", &cpu.mems));
    res->cpu = cpu;
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.Object("pids", [&](const Reader& p) -> absl::Status {
    int64_t limit = 0;
    RETURN_IF_ERROR(p.Int("limit", &limit, true));
    res->pids_limit = limit;
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.Object("blockIO", [&](const Reader& b) -> absl::Status {
    BlockIoResources io;
    RETURN_IF_ERROR(b.OptInt("weight", &io.weight));
    RETURN_IF_ERROR(b.Each("weightDevice", [&](const Reader& d) -> absl::Status {
      WeightDevice w;
      RETURN_IF_ERROR(d.Int("major", &w.major, true));
      RETURN_IF_ERROR(d.Int("minor", &w.minor, true));
      RETURN_IF_ERROR(d.OptInt("weight", &w.weight));
      io.weight_device.push_back(w);
      return absl::OkStatus();
    }));
    RETURN_IF_ERROR(ParseThrottle(b, "throttleReadBpsDevice", &io.throttle_read_bps));
    RETURN_IF_ERROR(ParseThrottle(b, "throttleWriteBpsDevice", &io.throttle_write_bps));
    RETURN_IF_ERROR(ParseThrottle(b, "throttleReadIOPSDevice", &io.throttle_read_iops));
    RETURN_IF_ERROR(ParseThrottle(b, "throttleWriteIOPSDevice", &io.throttle_write_iops));
    res->block_io = io;
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.Each("hugepageLimits", [&](const Reader& h) -> absl::Status {
    HugepageLimit l;
    RETURN_IF_ERROR(h.Str("pageSize", &l.page_size, true));
    RETURN_IF_ERROR(h.Int("limit", &l.limit, true));
    res->hugepage_limits.push_back(l);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.Each("devices", [&](const Reader& d) -> absl::Status {
    DeviceCgroupRule rule;
    RETURN_IF_ERROR(d.Bool("allow", &rule.allow));
    RETURN_IF_ERROR(d.Str("type", &rule.type));
    RETURN_IF_ERROR(d.OptInt("major", &rule.major));
    RETURN_IF_ERROR(d.OptInt("minor", &rule.minor));
    RETURN_IF_ERROR(d.Str("access", &rule.access));
    res->devices.push_back(rule);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.StrMap("unified", &res->unified));
  return absl::OkStatus();
}

absl::Status ParseSeccomp(const Reader& r, Seccomp* sc) {
  RETURN_IF_ERROR(r.Str("defaultAction", &sc->default_action, true));
  RETURN_IF_ERROR(r.OptInt("defaultErrnoRet", &sc->default_errno_ret));
  RETURN_IF_ERROR(r.StrList("architectures", &sc->architectures));
  RETURN_IF_ERROR(r.StrList("flags", &sc->flags));
  return r.Each("syscalls", [&](const Reader& s) -> absl::Status {
    SeccompSyscall sys;
    RETURN_IF_ERROR(s.StrList("names", &sys.names));
    RETURN_IF_ERROR(s.Str("action", &sys.action, true));
    RETURN_IF_ERROR(s.OptInt("errnoRet", &sys.errno_ret));
    RETURN_IF_ERROR(s.Each("args", [&](const Reader& a) -> absl::Status {
      SeccompArg arg;
      RETURN_IF_ERROR(a.Int("index", &arg.index, true));
      RETURN_IF_ERROR(a.Int("value", &arg.value, true));
      RETURN_IF_ERROR(a.Int("valueTwo", &arg.value_two));
      RETURN_IF_ERROR(a.Str("op", &arg.op, true));
      sys.args.push_back(arg);
      return absl::OkStatus();
    }));
    sc->syscalls.push_back(std::move(sys));
    return absl::OkStatus();
  });
}

absl::Status ParseLinux(const Reader& r, Linux* lx) {
  RETURN_IF_ERROR(ParseIdMaps(r, "uidMappings", &lx->uid_mappings));
  RETURN_IF_ERROR(ParseIdMaps(r, "gidMappings", &lx->gid_mappings));
  RETURN_IF_ERROR(r.StrMap("sysctl", &lx->sysctl));
  RETURN_IF_ERROR(r.Object("resources", [&](const Reader& rr) -> absl::Status {
    Resources res;
    RETURN_IF_ERROR(ParseResources(rr, &res));
    lx->resources = std::move(res);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.Str("cgroupsPath", &lx->cgroups_path));
  RETURN_IF_ERROR(r.Each("namespaces", [&](const Reader& n) -> absl::Status {
    Namespace ns;
    RETURN_IF_ERROR(n.Str("type", &ns.type, true));
    RETURN_IF_ERROR(n.Str("path", &ns.path));
    lx->namespaces.push_back(ns);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.Each("devices", [&](const Reader& d) -> absl::Status {
    Device dev;
    RETURN_IF_ERROR(d.Str("path", &dev.path, true));
    RETURN_IF_ERROR(d.Str("type", &dev.type, true));
    RETURN_IF_ERROR(d.Int("major", &dev.major));
    RETURN_IF_ERROR(d.Int("minor", &dev.minor));
    RETURN_IF_ERROR(d.OptInt("fileMode", &dev.file_mode));
    RETURN_IF_ERROR(d.OptInt("uid", &dev.uid));
    RETURN_IF_ERROR(d.OptInt("gid", &dev.gid));
    lx->devices.push_back(dev);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.Object("seccomp", [&](const Reader& s) -> absl::Status {
    Seccomp sc;
    RETURN_IF_ERROR(ParseSeccomp(s, &sc));
    lx->seccomp = std::move(sc);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.Str("rootfsPropagation", &lx->rootfs_propagation));
  RETURN_IF_ERROR(r.StrList("maskedPaths", &lx->masked_paths));
  RETURN_IF_ERROR(r.StrList("readonlyPaths", &lx->readonly_paths));
  return absl::OkStatus();
}

absl::Status ParseProcess(const Reader& r, Process* p) {
  RETURN_IF_ERROR(r.Bool("terminal", &p->terminal));
  RETURN_IF_ERROR(r.Object("user", [&](const Reader& u) -> absl::Status {
    RETURN_IF_ERROR(u.Int("uid", &p->user.uid));
    RETURN_IF_ERROR(u.Int("gid", &p->user.gid));
    RETURN_IF_ERROR(u.OptInt("umask", &p->user.umask));
    const json* ag = u.Get("additionalGids");
    if (ag) {
      if (!ag->is_array()) return FieldError(u.Path("additionalGids"), "expected array");
      for (size_t i = 0; i < ag->size(); i++) {
        if (!(*ag)[i].is_number_unsigned())
          return FieldError(u.Path("additionalGids") + "[" + std::to_string(i) + "]",
                            "expected non-negative integer");
        p->user.additional_gids.push_back((*ag)[i].get<uint32_t>());
      }
    }
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.StrList("args", &p->args));
  RETURN_IF_ERROR(r.StrList("env", &p->env));
  RETURN_IF_ERROR(r.Str("cwd", &p->cwd, true));
  RETURN_IF_ERROR(r.Object("capabilities", [&](const Reader& c) -> absl::Status {
    Capabilities caps;
    RETURN_IF_ERROR(c.StrList("bounding", &caps.bounding));
    RETURN_IF_ERROR(c.StrList("effective", &caps.effective));
    RETURN_IF_ERROR(c.StrList("inheritable", &caps.inheritable));
    RETURN_IF_ERROR(c.StrList("permitted", &caps.permitted));
    RETURN_IF_ERROR(c.StrList("ambient", &caps.ambient));
    p->capabilities = std::move(caps);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.Each("rlimits", [&](const Reader& l) -> absl::Status {
    Rlimit rl;
    RETURN_IF_ERROR(l.Str("type", &rl.type, true));
    RETURN_IF_ERROR(l.Int("hard", &rl.hard, true));
    RETURN_IF_ERROR(l.Int("soft", &rl.soft, true));
    p->rlimits.push_back(rl);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.Bool("noNewPrivileges", &p->no_new_privileges));
  RETURN_IF_ERROR(r.OptInt("oomScoreAdj", &p->oom_score_adj));
  return absl::OkStatus();
}

// --- serialization ---------------------------------------------------------

json HooksJson(const std::vector<Hook>& hooks) {
  json a = json::array();
  for (const Hook& h : hooks) {
    json o = {{"path", h.path}};
    if (!h.args.empty()) o["args"] = h.args;
    if (!h.env.empty()) o["env"] = h.env;
    if (h.timeout) o["timeout"] = *h.timeout;
    a.push_back(o);
  }
  return a;
}

json IdMapsJson(const std::vector<IdMapping>& maps) {
  json a = json::array();
  for (auto& m : maps) a.push_back({{"containerID", m.container_id}, {"hostID", m.host_id}, {"size", m.size}});
  return a;
}

json ThrottleJson(const std::vector<ThrottleDevice>& v) {
  json a = json::array();
  for (auto& t : v) a.push_back({{"major", t.major}, {"minor", t.minor}, {"rate", t.rate}});
  return a;
}

json ResourcesJson(const Resources& r) {
  json o = json::object();
  if (r.memory) {
    json m = json::object();
    if (r.memory->limit) m["limit"] = *r.memory->limit;
    if (r.memory->reservation) m["reservation"] = *r.memory->reservation;
    if (r.memory->swap) m["swap"] = *r.memory->swap;
    o["memory"] = m;
  }
  if (r.cpu) {
    json c = json::object();
    if (r.cpu->shares) c["shares"] = *r.cpu->shares;
    if (r.cpu->quota) c["quota"] = *r.cpu->quota;
    if (r.cpu->period) c["period"] = *r.cpu->period;
    if (!r.cpu->cpus.empty()) c["cpus"] = r.cpu->cpus;
    if (!r.cpu->mems.empty()) c["mems"] = r.cpu->mems;
    o["cpu"] = c;
  }
  if (r.pids_limit) o["pids"] = {{"limit", *r.pids_limit}};
  if (r.block_io) {
    json b = json::object();
    if (r.block_io->weight) b["weight"] = *r.block_io->weight;
    json wd = json::array();
    for (auto& w : r.block_io->weight_device) {
      json e = {{"major", w.major}, {"minor", w.minor}};
      if (w.weight) e["weight"] = *w.weight;
      wd.push_back(e);
    }
    if (!wd.empty()) b["weightDevice"] = wd;
    b["throttleReadBpsDevice"] = ThrottleJson(r.block_io->throttle_read_bps);
    b["throttleWriteBpsDevice"] = ThrottleJson(r.block_io->throttle_write_bps);
    b["throttleReadIOPSDevice"] = ThrottleJson(r.block_io->throttle_read_iops);
    b["throttleWriteIOPSDevice"] = ThrottleJson(r.block_io->throttle_write_iops);
    o["blockIO"] = b;
  }
  if (!r.hugepage_limits.empty()) {
    json a = json::array();
    for (auto& h : r.hugepage_limits) a.push_back({{"pageSize", h.page_size}, {"limit", h.limit}});
    o["hugepageLimits"] = a;
  }
  if (!r.devices.empty()) {
    json a = json::array();
    for (auto& d : r.devices) {
      json e = {{"allow", d.allow}};
      if (!d.type.empty()) e["type"] = d.type;
      if (d.major) e["major"] = *d.major;
      if (d.minor) e["minor"] = *d.minor;
      if (!d.access.empty()) e["access"] = d.access;
      a.push_back(e);
    }
    o["devices"] = a;
  }
  if (!r.unified.empty()) o["unified"] = r.unified;
  return o;
}

json SeccompJson(const Seccomp& s) {
  json o = {{"defaultAction", s.default_action}};
  if (s.default_errno_ret) o["defaultErrnoRet"] = *s.default_errno_ret;
  if (!s.architectures.empty()) o["architectures"] = s.architectures;
  if (!s.flags.empty()) o["flags"] = s.flags;
  json a = json::array();
  for (auto& sys : s.syscalls) {
    json e = {{"names", sys.names}, {"action", sys.action}};
    if (sys.errno_ret) e["errnoRet"] = *sys.errno_ret;
    if (!sys.args.empty()) {
      json args = json::array();
      for (auto& arg : sys.args)
        args.push_back({{"index", arg.index}, {"value", arg.value}, {"valueTwo", arg.value_two}, {"op", arg.op}});
      e["args"] = args;
    }
    a.push_back(e);
  }
  o["syscalls"] = a;
  return o;
}

}  // namespace

absl::StatusOr<Spec> ParseSpec(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("config.json: malformed JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("config.json: expected a JSON object");
  Spec spec;
  Reader r(j, "");
  RETURN_IF_ERROR(r.Str("ociVersion", &spec.oci_version, true));
  RETURN_IF_ERROR(r.Object("process", [&](const Reader& p) -> absl::Status {
    Process proc;
    RETURN_IF_ERROR(ParseProcess(p, &proc));
    spec.process = std::move(proc);
    return absl::OkStatus();
  }));
  if (!r.Get("root")) return FieldError("root", "required");
  RETURN_IF_ERROR(r.Object("root", [&](const Reader& rt) -> absl::Status {
    RETURN_IF_ERROR(rt.Str("path", &spec.root.path, true));
    return rt.Bool("readonly", &spec.root.readonly);
  }));
  RETURN_IF_ERROR(r.Str("hostname", &spec.hostname));
  RETURN_IF_ERROR(r.Str("domainname", &spec.domainname));
  RETURN_IF_ERROR(r.Each("mounts", [&](const Reader& m) -> absl::Status {
    Mount mount;
    RETURN_IF_ERROR(m.Str("destination", &mount.destination, true));
    RETURN_IF_ERROR(m.Str("type", &mount.type));
    RETURN_IF_ERROR(m.Str("source", &mount.source));
    RETURN_IF_ERROR(m.StrList("options", &mount.options));
    spec.mounts.push_back(std::move(mount));
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.Object("hooks", [&](const Reader& h) -> absl::Status {
    Hooks hooks;
    RETURN_IF_ERROR(ParseHooks(h, "prestart", &hooks.prestart));
    RETURN_IF_ERROR(ParseHooks(h, "createRuntime", &hooks.create_runtime));
    RETURN_IF_ERROR(ParseHooks(h, "createContainer", &hooks.create_container));
    RETURN_IF_ERROR(ParseHooks(h, "startContainer", &hooks.start_container));
    RETURN_IF_ERROR(ParseHooks(h, "poststart", &hooks.poststart));
    RETURN_IF_ERROR(ParseHooks(h, "poststop", &hooks.poststop));
    spec.hooks = std::move(hooks);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(r.StrMap("annotations", &spec.annotations));
  RETURN_IF_ERROR(r.Object("linux", [&](const Reader& l) -> absl::Status {
    Linux lx;
    RETURN_IF_ERROR(ParseLinux(l, &lx));
    spec.linux = std::move(lx);
    return absl::OkStatus();
  }));
  return spec;
}

absl::StatusOr<Spec> LoadSpec(const std::string& bundle_dir) {
  std::string path = bundle_dir + "/config.json";
  std::ifstream in(path);
  if (!in) return LastErrnoError("open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseSpec(ss.str());
}

std::string SpecToJson(const Spec& s) {
  json j = {{"ociVersion", s.oci_version}};
  if (s.process) {
    const Process& p = *s.process;
    json user = {{"uid", p.user.uid}, {"gid", p.user.gid}};
    if (p.user.umask) user["umask"] = *p.user.umask;
    if (!p.user.additional_gids.empty()) user["additionalGids"] = p.user.additional_gids;
    json pj = {{"terminal", p.terminal}, {"user", user}, {"args", p.args}, {"env", p.env}, {"cwd", p.cwd}};
    if (p.capabilities) {
      pj["capabilities"] = {{"bounding", p.capabilities->bounding},
                            {"effective", p.capabilities->effective},
                            {"inheritable", p.capabilities->inheritable},
                            {"permitted", p.capabilities->permitted},
                            {"ambient", p.capabilities->ambient}};
    }
    if (!p.rlimits.empty()) {
      json a = json::array();
      for (auto& r : p.rlimits) a.push_back({{"type", r.type}, {"hard", r.hard}, {"soft", r.soft}});
      pj["rlimits"] = a;
    }
    pj["noNewPrivileges"] = p.no_new_privileges;
    if (p.oom_score_adj) pj["oomScoreAdj"] = *p.oom_score_adj;
    j["process"] = pj;
  }
  j["root"] = {{"path", s.root.path}, {"readonly", s.root.readonly}};
  if (!s.hostname.empty()) j["hostname"] = s.hostname;
  if (!s.domainname.empty()) j["domainname"] = s.domainname;
  json mounts = json::array();
  for (auto& m : s.mounts) {
    json o = {{"destination", m.destination}};
    if (!m.type.empty()) o["type"] = m.type;
    if (!m.source.empty()) o["source"] = m.source;
    if (!m.options.empty()) o["options"] = m.options;
    mounts.push_back(o);
  }
  j["mounts"] = mounts;
  if (s.hooks) {
    j["hooks"] = {{"prestart", HooksJson(s.hooks->prestart)},
                  {"createRuntime", HooksJson(s.hooks->create_runtime)},
                  {"createContainer", HooksJson(s.hooks->create_container)},
                  {"startContainer", HooksJson(s.hooks->start_container)},
                  {"poststart", HooksJson(s.hooks->poststart)},
                  {"poststop", HooksJson(s.hooks->poststop)}};
  }
  if (!s.annotations.empty()) j["annotations"] = s.annotations;
  if (s.linux) {
    const Linux& l = *s.linux;
    json lj = json::object();
    if (!l.uid_mappings.empty()) lj["uidMappings"] = IdMapsJson(l.uid_mappings);
    if (!l.gid_mappings.empty()) lj["gidMappings"] = IdMapsJson(l.gid_mappings);
    if (!l.sysctl.empty()) lj["sysctl"] = l.sysctl;
    if (l.resources) lj["resources"] = ResourcesJson(*l.resources);
    if (!l.cgroups_path.empty()) lj["cgroupsPath"] = l.cgroups_path;
    json ns = json::array();
    for (auto& n : l.namespaces) {
      json o = {{"type", n.type}};
      if (!n.path.empty()) o["path"] = n.path;
      ns.push_back(o);
    }
    lj["namespaces"] = ns;
    if (!l.devices.empty()) {
      json a = json::array();
      for (auto& d : l.devices) {
        json o = {{"path", d.path}, {"type", d.type}, {"major", d.major}, {"minor", d.minor}};
        if (d.file_mode) o["fileMode"] = *d.file_mode;
        if (d.uid) o["uid"] = *d.uid;
        if (d.gid) o["gid"] = *d.gid;
        a.push_back(o);
      }
      lj["devices"] = a;
    }
    if (l.seccomp) lj["seccomp"] = SeccompJson(*l.seccomp);
    if (!l.rootfs_propagation.empty()) lj["rootfsPropagation"] = l.rootfs_propagation;
    if (!l.masked_paths.empty()) lj["maskedPaths"] = l.masked_paths;
    if (!l.readonly_paths.empty()) lj["readonlyPaths"] = l.readonly_paths;
    j["linux"] = lj;
  }
  return j.dump(1, '\t');
}

absl::Status ValidateSpec(const Spec& spec, const std::string& bundle_dir) {
  if (spec.oci_version.empty() || spec.oci_version[0] != '1')
    return FieldError("ociVersion", "unsupported version \"" + spec.oci_version + "\"");
  if (spec.root.path.empty()) return FieldError("root.path", "required");
  std::string rootfs = spec.root.path[0] == '/' ? spec.root.path : bundle_dir + "/" + spec.root.path;
  struct stat st;
  if (stat(rootfs.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return FieldError("root.path", "rootfs \"" + rootfs + "\" is not a directory");
  if (!spec.process) return FieldError("process", "required");
  const Process& p = *spec.process;
  if (p.args.empty()) return FieldError("process.args", "must not be empty");
  if (p.cwd.empty() || p.cwd[0] != '/') return FieldError("process.cwd", "must be an absolute path");
  for (size_t i = 0; i < p.rlimits.size(); i++) {
    if (RlimitFromName(p.rlimits[i].type) < 0)
      return FieldError("process.rlimits[" + std::to_string(i) + "].type",
                        "unknown rlimit \"" + p.rlimits[i].type + "\"");
    if (p.rlimits[i].soft > p.rlimits[i].hard)
      return FieldError("process.rlimits[" + std::to_string(i) + "]", "soft limit above hard limit");
  }
  if (p.capabilities) {
    const std::pair<const char*, const std::vector<std::string>*> sets[] = {
        {"bounding", &p.capabilities->bounding},   {"effective", &p.capabilities->effective},
        {"inheritable", &p.capabilities->inheritable}, {"permitted", &p.capabilities->permitted},
        {"ambient", &p.capabilities->ambient}};
    for (auto& [name, list] : sets) {
      for (size_t i = 0; i < list->size(); i++) {
        if (CapFromName((*list)[i]) < 0)
          return FieldError(std::string("process.capabilities.") + name + "[" + std::to_string(i) + "]",
                            "unknown capability \"" + (*list)[i] + "\"");
      }
    }
  }
  for (size_t i = 0; i < spec.mounts.size(); i++) {
    if (spec.mounts[i].destination.empty() || spec.mounts[i].destination[0] != '/')
      return FieldError("mounts[" + std::to_string(i) + "].destination", "must be an absolute path");
  }
  if (!spec.linux) return absl::OkStatus();
  const Linux& l = *spec.linux;
  static const std::set<std::string> kTypes = {"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"};
  std::set<std::string> seen;
  bool userns = false;
  for (size_t i = 0; i < l.namespaces.size(); i++) {
    const std::string f = "linux.namespaces[" + std::to_string(i) + "]";
    if (!kTypes.count(l.namespaces[i].type))
      return FieldError(f + ".type", "unknown namespace type \"" + l.namespaces[i].type + "\"");
    if (!seen.insert(l.namespaces[i].type).second)
      return FieldError(f + ".type", "duplicate namespace \"" + l.namespaces[i].type + "\"");
    if (!l.namespaces[i].path.empty()) {
      if (l.namespaces[i].path[0] != '/') return FieldError(f + ".path", "must be an absolute path");
      if (access(l.namespaces[i].path.c_str(), F_OK) != 0)
        return FieldError(f + ".path", "\"" + l.namespaces[i].path + "\" does not exist");
    }
    if (l.namespaces[i].type == "user") userns = true;
  }
  if (!userns && (!l.uid_mappings.empty() || !l.gid_mappings.empty()))
    return FieldError(l.uid_mappings.empty() ? "linux.gidMappings" : "linux.uidMappings",
                      "id mappings need a user namespace");
  if (userns && (l.uid_mappings.empty() || l.gid_mappings.empty()))
    return FieldError(l.uid_mappings.empty() ? "linux.uidMappings" : "linux.gidMappings",
                      "a new user namespace needs uid and gid mappings");
  for (const char* path : {"linux.uidMappings", "linux.gidMappings"}) {
    const auto& maps = path[6] == 'u' ? l.uid_mappings : l.gid_mappings;
    for (size_t i = 0; i < maps.size(); i++) {
      if (uint64_t(maps[i].host_id) + maps[i].size > (1ull << 32) ||
          uint64_t(maps[i].container_id) + maps[i].size > (1ull << 32))
        return FieldError(std::string(path) + "[" + std::to_string(i) + "]", "mapping overflows 32-bit ids");
      for (size_t k = 0; k < i; k++) {
        if (maps[k].container_id < maps[i].container_id + maps[i].size &&
            maps[i].container_id < maps[k].container_id + maps[k].size)
          return FieldError(std::string(path) + "[" + std::to_string(i) + "]", "overlaps an earlier mapping");
      }
    }
  }
  for (auto& [key, value] : l.sysctl) {
    if (key.empty() || key.find("..") != std::string::npos || key[0] == '/')
      return FieldError("linux.sysctl." + key, "invalid sysctl name");
  }
  if (!l.rootfs_propagation.empty()) {
    static const std::set<std::string> kProp = {"private", "rprivate", "slave", "rslave", "shared", "rshared",
                                                "unbindable", "runbindable"};
    if (!kProp.count(l.rootfs_propagation))
      return FieldError("linux.rootfsPropagation", "unknown propagation \"" + l.rootfs_propagation + "\"");
  }
  for (size_t i = 0; i < l.masked_paths.size(); i++)
    if (l.masked_paths[i].empty() || l.masked_paths[i][0] != '/')
      return FieldError("linux.maskedPaths[" + std::to_string(i) + "]", "must be an absolute path");
  for (size_t i = 0; i < l.readonly_paths.size(); i++)
    if (l.readonly_paths[i].empty() || l.readonly_paths[i][0] != '/')
      return FieldError("linux.readonlyPaths[" + std::to_string(i) + "]", "must be an absolute path");
  return absl::OkStatus();
}

}  // namespace skiff::runtime
