// Logs, Exec and PortForward go through the API server to the Kubelet
// service at the pod's node (a small Kubelet served in-process on loopback).
#include <gtest/gtest.h>

#include "fixture.h"
#include "objects.h"
#include "skiff/api/v1/kubelet.grpc.pb.h"

namespace skiff::apitest {
namespace {

namespace v1 = ::skiff::api::v1;

class EchoKubelet final : public v1::Kubelet::Service {
 public:
  grpc::Status Logs(grpc::ServerContext*, const v1::LogsRequest* req, grpc::ServerWriter<v1::LogsChunk>* w) override {
    for (int i = 0; i < 3; ++i) {
      v1::LogsChunk c;
      c.set_data(absl::StrCat(req->pod(), "/", req->container(), " line ", i, "\n"));
      w->Write(c);
    }
    return grpc::Status::OK;
  }
  grpc::Status Exec(grpc::ServerContext*, grpc::ServerReaderWriter<v1::ExecOutput, v1::ExecInput>* s) override {
    v1::ExecInput in;
    std::string cmd;
    while (s->Read(&in)) {
      if (!in.command().empty()) cmd = in.command(0);
      if (!in.stdin_data().empty()) {
        v1::ExecOutput out;
        out.set_stdout(cmd + ":" + in.stdin_data());
        s->Write(out);
      }
      if (in.stdin_close()) break;
    }
    v1::ExecOutput done;
    done.set_exited(true);
    done.set_exit_code(7);
    s->Write(done);
    return grpc::Status::OK;
  }
  grpc::Status PortForward(grpc::ServerContext*, grpc::ServerReaderWriter<v1::PortForwardFrame, v1::PortForwardFrame>* s) override {
    v1::PortForwardFrame f;
    while (s->Read(&f)) {
      if (f.close()) break;
      v1::PortForwardFrame back;
      back.set_data(absl::StrCat(f.port(), ">", f.data()));
      s->Write(back);
    }
    return grpc::Status::OK;
  }
};

TEST(NodeStreams, LogsExecAndPortForwardReachTheKubelet) {
  auto backend = Backend::Make(Backend::Kind::kEmbedded, "streams");
  ASSERT_NE(backend, nullptr);
  EchoKubelet kubelet;
  int kport = 0;
  auto ksrv = ServeOnLoopback(&kubelet, &kport);
  ASSERT_NE(kport, 0);

  auto s = skiff::apiserver::ApiServer::Start(ServerOpts(*backend, backend->dir() + "/cp"));
  ASSERT_TRUE(s.ok()) << s.status();
  auto c = std::move(*skiff::client::Dial((*s)->AdminCredentials()));
  Object node = MakeObject("nodes", "", "n1");
  node.mutable_node()->mutable_status()->mutable_daemon_endpoints()->mutable_kubelet_endpoint()->set_port(kport);
  ASSERT_TRUE(c->Create("nodes", "", node).ok());
  Object pod = MakeObject("pods", "default", "web");
  pod.mutable_pod()->mutable_spec()->set_node_name("n1");
  ASSERT_TRUE(c->Create("pods", "default", pod).ok());

  {
    grpc::ClientContext ctx;
    c->PrepareContext(&ctx);
    v1::LogsRequest req;
    req.set_namespace_("default");
    req.set_pod("web");
    req.set_container("app");
    auto r = c->stub()->Logs(&ctx, req);
    std::string all;
    v1::LogsChunk chunk;
    while (r->Read(&chunk)) all += chunk.data();
    ASSERT_TRUE(r->Finish().ok());
    EXPECT_EQ(all, "web/app line 0\nweb/app line 1\nweb/app line 2\n");
  }
  {
    grpc::ClientContext ctx;
    c->PrepareContext(&ctx);
    auto st = c->stub()->Exec(&ctx);
    v1::ExecInput first;
    first.set_namespace_("default");
    first.set_pod("web");
    first.add_command("cat");
    first.set_stdin(true);
    ASSERT_TRUE(st->Write(first));
    v1::ExecInput data;
    data.set_stdin_data("hello");
    ASSERT_TRUE(st->Write(data));
    v1::ExecInput close;
    close.set_stdin_close(true);
    ASSERT_TRUE(st->Write(close));
    st->WritesDone();
    std::string out;
    int code = -1;
    v1::ExecOutput o;
    while (st->Read(&o)) {
      out += o.stdout();
      if (o.exited()) code = o.exit_code();
    }
    st->Finish();
    EXPECT_EQ(out, "cat:hello");
    EXPECT_EQ(code, 7);
  }
  {
    grpc::ClientContext ctx;
    c->PrepareContext(&ctx);
    auto st = c->stub()->PortForward(&ctx);
    v1::PortForwardFrame f;
    f.set_namespace_("default");
    f.set_pod("web");
    f.set_port(8080);
    f.set_data("ping");
    ASSERT_TRUE(st->Write(f));
    v1::PortForwardFrame back;
    ASSERT_TRUE(st->Read(&back));
    EXPECT_EQ(back.data(), "8080>ping");
    v1::PortForwardFrame done;
    done.set_close(true);
    st->Write(done);
    st->WritesDone();
    while (st->Read(&back)) {
    }
    st->Finish();
  }
  // A pod that is not scheduled has nowhere to go.
  ASSERT_TRUE(c->Create("pods", "default", MakeObject("pods", "default", "pending")).ok());
  grpc::ClientContext ctx;
  c->PrepareContext(&ctx);
  v1::LogsRequest req;
  req.set_namespace_("default");
  req.set_pod("pending");
  auto r = c->stub()->Logs(&ctx, req);
  v1::LogsChunk chunk;
  EXPECT_FALSE(r->Read(&chunk));
  grpc::Status st = r->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(st.error_message(), "pod pending does not have a host assigned");
  c.reset();
  (*s)->Shutdown();
  ksrv->Shutdown();
}

}  // namespace
}  // namespace skiff::apitest
