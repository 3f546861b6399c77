// skiffctl logs / exec / port-forward: the node streams, proxied by the API
// server to the kubelet that runs the pod.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "cmd.h"
#include "print.h"
#include "skiff/common/unique_fd.h"

namespace skiff::cli {

namespace {

// POD, pod/POD, deploy/NAME, svc/NAME -> a pod (the first running one for
// controllers, as kubectl does).
absl::StatusOr<api::v1::Pod> ResolvePod(Ctx& ctx, client::Client* c, const std::string& arg) {
  std::string ns = ctx.Namespace();
  if (arg.find('/') == std::string::npos) {
    ASSIGN_OR_RETURN(Object o, c->Get("pods", ns, arg));
    return o.pod();
  }
  ASSIGN_OR_RETURN(auto pairs, ResolveTypeNames({arg}));
  const KindInfo* k = pairs[0].first;
  ASSIGN_OR_RETURN(Object o, c->Get(k->resource, NsFor(*k, ns), pairs[0].second));
  std::string selector;
  if (o.has_pod()) return o.pod();
  if (o.has_deployment()) selector = FormatLabelSelector(o.deployment().spec().selector());
  if (o.has_replica_set()) selector = FormatLabelSelector(o.replica_set().spec().selector());
  if (o.has_service()) selector = FormatLabels(o.service().spec().selector(), false);
  if (selector.empty()) return absl::InvalidArgumentError(absl::StrCat("cannot attach to ", k->kind, " ", arg));
  client::ListOptions lo;
  lo.label_selector = selector;
  ASSIGN_OR_RETURN(auto list, c->List("pods", ns, lo));
  const api::v1::Pod* best = nullptr;
  for (const auto& item : list.items()) {
    if (best == nullptr || (item.pod().status().phase() == "Running" && best->status().phase() != "Running"))
      best = &item.pod();
  }
  if (best == nullptr) return absl::NotFoundError(absl::StrCat("no pods found for ", arg));
  return *best;
}

std::string PickContainer(Ctx& ctx, const api::v1::Pod& pod) {
  std::string c = ctx.flags.Get("container");
  if (!c.empty() || pod.spec().containers().empty()) return c;
  if (pod.spec().containers_size() > 1) {
    std::vector<std::string> names;
    for (const auto& ctr : pod.spec().containers()) names.push_back(ctr.name());
    ctx.err() << "Defaulted container \"" << names[0] << "\" out of: " << absl::StrJoin(names, ", ") << "\n";
  }
  return pod.spec().containers(0).name();
}

// The API server's answer for a container the pod does not have (checked
// here, where the pod is at hand, so no node is asked).
absl::Status CheckContainer(const api::v1::Pod& pod, const std::string& container) {
  for (const auto* list : {&pod.spec().containers(), &pod.spec().init_containers()})
    for (const auto& c : *list)
      if (c.name() == container) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("container ", container, " is not valid for pod ", pod.metadata().name()));
}

int PodError(Ctx& ctx, const absl::Status& st) {
  if (st.code() == absl::StatusCode::kInvalidArgument && !IsTransportError(st)) return Fail(ctx, st);
  return ServerFail(ctx, st);
}

}  // namespace

int CmdLogs(Ctx& ctx) {
  if (ctx.flags.args.empty()) return Fail(ctx, "expected 'logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]'.\nPOD or TYPE/NAME is a required argument for the logs command");
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  NodeApi* node = ctx.Node();
  if (node == nullptr) return 1;
  auto pod = ResolvePod(ctx, c, ctx.flags.args[0]);
  if (!pod.ok()) return PodError(ctx, pod.status());
  std::string container = ctx.flags.args.size() > 1 ? ctx.flags.args[1] : PickContainer(ctx, *pod);
  if (absl::Status st = CheckContainer(*pod, container); !st.ok()) return ServerFail(ctx, st);
  api::v1::LogsRequest req;
  req.set_namespace_(pod->metadata().namespace_());
  req.set_pod(pod->metadata().name());
  req.set_container(container);
  req.set_follow(ctx.flags.Bool("follow"));
  req.set_previous(ctx.flags.Bool("previous"));
  req.set_timestamps(ctx.flags.Bool("timestamps"));
  if (ctx.flags.Has("tail")) {
    auto t = ctx.flags.Int("tail", -1);
    if (!t.ok()) return Fail(ctx, t.status());
    if (*t >= 0) req.set_tail_lines(*t);
  }
  if (ctx.flags.Has("since")) {
    absl::Duration d;
    if (!absl::ParseDuration(ctx.flags.Get("since"), &d)) {
      return Fail(ctx, absl::StrCat("invalid argument \"", ctx.flags.Get("since"), "\" for \"--since\" flag: time: invalid duration \"", ctx.flags.Get("since"), "\""));
    }
    req.set_since_seconds(std::max<int64_t>(1, absl::ToInt64Seconds(d)));
  }
  if (ctx.flags.Has("since-time")) req.set_since_time(ctx.flags.Get("since-time"));
  if (ctx.flags.Has("limit-bytes")) {
    auto l = ctx.flags.Int("limit-bytes", 0);
    if (!l.ok()) return Fail(ctx, l.status());
    req.set_limit_bytes(*l);
  }
  absl::Status st = node->Logs(req, [&](const std::string& data) {
    ctx.out() << data;
    ctx.out().flush();
  });
  if (!st.ok()) return ServerFail(ctx, st);
  return 0;
}

int CmdExec(Ctx& ctx) {
  if (ctx.flags.args.empty()) return Fail(ctx, "pod, type/name or --filename must be specified");
  if (ctx.flags.after_dash.empty()) {
    return Fail(ctx, "you must specify at least one command for the container");
  }
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  NodeApi* node = ctx.Node();
  if (node == nullptr) return 1;
  auto pod = ResolvePod(ctx, c, ctx.flags.args[0]);
  if (!pod.ok()) return PodError(ctx, pod.status());
  if (pod->status().phase() == "Succeeded" || pod->status().phase() == "Failed") {
    return Fail(ctx, absl::StrCat("cannot exec into a container in a completed pod; current phase is ",
                                  pod->status().phase()));
  }
  api::v1::ExecInput first;
  first.set_namespace_(pod->metadata().namespace_());
  first.set_pod(pod->metadata().name());
  first.set_container(PickContainer(ctx, *pod));
  if (absl::Status st = CheckContainer(*pod, first.container()); !st.ok()) return ServerFail(ctx, st);
  for (const auto& a : ctx.flags.after_dash) first.add_command(a);
  first.set_stdin(ctx.flags.Bool("stdin"));
  first.set_tty(ctx.flags.Bool("tty") && ctx.flags.Bool("stdin") && ::isatty(ctx.env.stdin_fd));
  if (ctx.flags.Bool("tty") && !first.tty()) {
    ctx.err() << "Unable to use a TTY - input is not a terminal or the right kind of file\n";
  }
  auto code = node->Exec(first, first.stdin() ? ctx.env.stdin_fd : -1, ctx.out(), ctx.err());
  if (!code.ok()) return ServerFail(ctx, code.status());
  if (*code != 0) {
    ctx.err() << "command terminated with exit code " << *code << "\n";
  }
  return *code;
}

int CmdPortForward(Ctx& ctx) {
  if (ctx.flags.args.size() < 2) return Fail(ctx, "TYPE/NAME and list of ports are required for port-forward");
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  NodeApi* node = ctx.Node();
  if (node == nullptr) return 1;
  auto pod = ResolvePod(ctx, c, ctx.flags.args[0]);
  if (!pod.ok()) return PodError(ctx, pod.status());
  std::string address = ctx.flags.Get("address", "127.0.0.1");
  struct Forward {
    int local, remote;
    UniqueFd listener;
  };
  std::vector<Forward> forwards;
  for (size_t i = 1; i < ctx.flags.args.size(); ++i) {
    const std::string& spec = ctx.flags.args[i];
    size_t colon = spec.find(':');
    int local = 0, remote = 0;
    if (!absl::SimpleAtoi(colon == std::string::npos ? spec : spec.substr(0, colon), &local) ||
        !absl::SimpleAtoi(colon == std::string::npos ? spec : spec.substr(colon + 1), &remote)) {
      return Fail(ctx, absl::StrCat("invalid port specification: ", spec));
    }
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return Fail(ctx, LastErrnoError("socket"));
    int one = 1;
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(local));
    if (::inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1) return Fail(ctx, "invalid --address " + address);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd.get(), 16) != 0) {
      return Fail(ctx, absl::StrCat("unable to listen on port ", local, ": ", std::strerror(errno)));
    }
    if (local == 0) {
      socklen_t len = sizeof sa;
      if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len) == 0) local = ntohs(sa.sin_port);
    }
    ctx.out() << "Forwarding from " << address << ":" << local << " -> " << remote << "\n";
    forwards.push_back({local, remote, std::move(fd)});
  }
  ctx.out().flush();
  std::vector<std::thread> acceptors;
  std::string ns = pod->metadata().namespace_(), name = pod->metadata().name();
  for (auto& f : forwards) {
    acceptors.emplace_back([&ctx, node, ns, name, &f] {
      while (true) {
        int conn = ::accept4(f.listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) {
          if (errno == EINTR) continue;
          return;
        }
        ctx.out() << "Handling connection for " << f.local << "\n";
        ctx.out().flush();
        std::thread([node, ns, name, remote = f.remote, conn, &ctx] {
          UniqueFd owned(conn);
          absl::Status st = node->PortForward(ns, name, remote, owned.get());
          if (!st.ok()) ctx.err() << "E port-forward: " << st.message() << "\n";
        }).detach();
      }
    });
  }
  for (auto& t : acceptors) t.join();
  return 0;
}

}  // namespace skiff::cli
