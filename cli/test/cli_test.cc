// skiffctl against an in-memory API: golden tables and -o yaml/json, bad
// input, and the verbs' effects.
#include <algorithm>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <tuple>

#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "memory_client.h"
#include "print.h"
#include "skiff/cli/cli.h"
#include "skiff/common/unique_fd.h"
#include "skiff/manifest/manifest.h"

namespace skiff::cli {
namespace {

using ::testing::HasSubstr;
using testing::MemoryApi;

// A TCP listener on loopback that never accepts: enough for skiffctl's
// reachability probe; the API itself is in memory.
class Listener {
 public:
  Listener() {
    fd_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(::listen(fd_.get(), 64), 0);
    socklen_t len = sizeof sa;
    ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
  }
  int port() const { return port_; }

 private:
  UniqueFd fd_;
  int port_ = 0;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Leftovers of crashed runs (their pid is gone).
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(std::filesystem::temp_directory_path(), ec)) {
      std::string name = e.path().filename().string();
      if (name.rfind("skiffctl-test-", 0) != 0) continue;
      int pid = std::atoi(name.c_str() + strlen("skiffctl-test-"));
      if (pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0) std::filesystem::remove_all(e.path(), ec);
    }
    home_ = std::filesystem::temp_directory_path() / ("skiffctl-test-" + std::to_string(::getpid()));
    std::filesystem::remove_all(home_);
    std::filesystem::create_directories(home_);
    server_ = "http://127.0.0.1:" + std::to_string(listener_.port());
  }
  void TearDown() override { std::filesystem::remove_all(home_); }

  // Runs skiffctl with --server pointing at the in-memory API.
  int Run(const std::vector<std::string>& args, const std::string& stdin_text = "") {
    std::vector<std::string> full = {"--server", server_};
    full.insert(full.end(), args.begin(), args.end());
    return RunRaw(full, stdin_text);
  }
  int RunRaw(const std::vector<std::string>& args, const std::string& stdin_text = "") {
    std::istringstream in(stdin_text);
    std::ostringstream out, err;
    Environment env;
    env.in = &in;
    env.out = &out;
    env.err = &err;
    env.dial = [this](const client::Credentials& creds) -> absl::StatusOr<Connection> {
      dialed_ = creds;
      Connection c;
      c.client = api_.NewClient();
      c.node = api_.NewNodeApi();
      return c;
    };
    absl::Time now;
    std::string e;
    absl::ParseTime(absl::RFC3339_full, "2026-11-22T07:00:00Z", &now, &e);
    env.now = [now] { return absl::ToChronoTime(now); };
    env.getenv = [this](const std::string& name) -> std::string {
      if (name == "HOME") return home_.string();
      auto it = vars_.find(name);
      return it == vars_.end() ? "" : it->second;
    };
    env.poll_interval = std::chrono::milliseconds(5);
    int rc = cli::Run(args, env);
    out_ = out.str();
    err_ = err.str();
    return rc;
  }
  std::string WriteFile(const std::string& name, const std::string& text) {
    auto p = home_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }

  Listener listener_;
  MemoryApi api_;
  std::filesystem::path home_;
  std::string server_;
  std::string out_, err_;
  std::map<std::string, std::string> vars_;
  client::Credentials dialed_;
};

api::v1::Object RunningPod(const std::string& name, const std::string& node, int restarts) {
  auto docs = manifest::DecodeManifests(R"(apiVersion: v1
kind: Pod
metadata:
  name: NAME
  namespace: default
  creationTimestamp: "2026-11-22T06:55:00Z"
  labels: {app: web}
spec:
  nodeName: NODE
  containers:
  - name: web
    image: nginx:1.25
status:
  phase: Running
  podIP: 10.244.1.5
  containerStatuses:
  - name: web
    ready: true
    restartCount: 0
    state:
      running: {startedAt: "2026-11-22T06:55:03Z"}
)", "pod");
  api::v1::Object obj = (*docs)[0].object;
  obj.mutable_pod()->mutable_metadata()->set_name(name);
  obj.mutable_pod()->mutable_spec()->set_node_name(node);
  obj.mutable_pod()->mutable_status()->mutable_container_statuses(0)->set_restart_count(restarts);
  return obj;
}

constexpr char kAppManifests[] = R"(# Modelled on Kubernetes' documentation examples.
apiVersion: v1
kind: ConfigMap
metadata:
  name: game-demo
data:
  player_initial_lives: "3"
  ui_properties_file_name: "user-interface.properties"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
        env:
        - name: DEBUG
          value: "1"
---
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app.kubernetes.io/name: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
)";

// ------------------------------------------------------------ golden tables

TEST_F(CliTest, GetPodsPrintsKubectlColumnsAndAges) {
  api_.Put(RunningPod("web-0", "node-a", 0));
  api_.Put(RunningPod("web-1", "node-b", 12));
  ASSERT_EQ(Run({"get", "pods"}), 0) << err_;
  EXPECT_EQ(out_,
            "NAME    READY   STATUS    RESTARTS   AGE\n"
            "web-0   1/1     Running   0          5m\n"
            "web-1   1/1     Running   12         5m\n");
  ASSERT_EQ(Run({"get", "po", "-o", "wide"}), 0) << err_;
  EXPECT_EQ(out_,
            "NAME    READY   STATUS    RESTARTS   AGE   IP           NODE     NOMINATED NODE   READINESS GATES\n"
            "web-0   1/1     Running   0          5m    10.244.1.5   node-a   <none>           <none>\n"
            "web-1   1/1     Running   12         5m    10.244.1.5   node-b   <none>           <none>\n");
  ASSERT_EQ(Run({"get", "pods", "--show-labels", "-A"}), 0) << err_;
  EXPECT_EQ(out_,
            "NAMESPACE   NAME    READY   STATUS    RESTARTS   AGE   LABELS\n"
            "default     web-0   1/1     Running   0          5m    app=web\n"
            "default     web-1   1/1     Running   12         5m    app=web\n");
}

TEST_F(CliTest, EmptyListSaysNoResourcesFound) {
  ASSERT_EQ(Run({"get", "pods"}), 0);
  EXPECT_EQ(out_, "");
  EXPECT_EQ(err_, "No resources found in default namespace.\n");
  ASSERT_EQ(Run({"get", "nodes"}), 0);
  EXPECT_EQ(err_, "No resources found\n");
}

TEST_F(CliTest, MissingObjectIsErrorFromServerExit1) {
  EXPECT_EQ(Run({"get", "pod", "x"}), 1);
  EXPECT_EQ(err_, "Error from server (NotFound): pods \"x\" not found\n");
  EXPECT_EQ(Run({"get", "deploy/x"}), 1);
  EXPECT_EQ(err_, "Error from server (NotFound): deployments.apps \"x\" not found\n");
  EXPECT_EQ(Run({"get", "frobs"}), 1);
  EXPECT_EQ(err_, "error: the server doesn't have a resource type \"frobs\"\n");
}

TEST_F(CliTest, AppliedManifestsPrintAsTablesYamlJson) {
  std::string f = WriteFile("app.yaml", kAppManifests);
  ASSERT_EQ(Run({"apply", "-f", f}), 0) << err_;
  EXPECT_EQ(out_,
            "configmap/game-demo created\n"
            "deployment.apps/nginx-deployment created\n"
            "service/my-service created\n");
  ASSERT_EQ(Run({"get", "deploy,svc,cm"}), 0) << err_;
  EXPECT_EQ(out_,
            "NAME                               READY   UP-TO-DATE   AVAILABLE   AGE\n"
            "deployment.apps/nginx-deployment   0/3     0            0           60m\n"
            "\n"
            "NAME                 TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE\n"
            "service/my-service   ClusterIP   <none>       <none>        80/TCP    60m\n"
            "\n"
            "NAME                  DATA   AGE\n"
            "configmap/game-demo   2      60m\n");
  ASSERT_EQ(Run({"get", "svc", "my-service", "-o", "yaml"}), 0) << err_;
  EXPECT_EQ(out_, R"(apiVersion: v1
kind: Service
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"v1","kind":"Service","metadata":{"name":"my-service","namespace":"default"},"spec":{"ports":[{"port":80,"protocol":"TCP","targetPort":9376}],"selector":{"app.kubernetes.io/name":"MyApp"}}}
  creationTimestamp: "2026-11-22T06:00:00Z"
  generation: 1
  name: my-service
  namespace: default
  resourceVersion: "103"
  uid: uid-103
spec:
  ports:
  - port: 80
    protocol: TCP
    targetPort: 9376
  selector:
    app.kubernetes.io/name: MyApp
)");
  ASSERT_EQ(Run({"get", "cm", "game-demo", "-o", "json"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr(R"({
    "apiVersion": "v1",
    "data": {
        "player_initial_lives": "3",
        "ui_properties_file_name": "user-interface.properties"
    },
    "kind": "ConfigMap",
)"));
  ASSERT_EQ(Run({"get", "pods,deploy", "-o", "name"}), 0) << err_;
  EXPECT_EQ(out_, "deployment.apps/nginx-deployment\n");
  ASSERT_EQ(Run({"get", "deploy", "-o", "jsonpath={.items[*].metadata.name} {.items[0].spec.replicas}"}), 0) << err_;
  EXPECT_EQ(out_, "nginx-deployment 3");
  ASSERT_EQ(Run({"get", "svc", "my-service", "-o", R"(jsonpath={.spec.selector.app\.kubernetes\.io/name})"}), 0) << err_;
  EXPECT_EQ(out_, "MyApp");
  ASSERT_EQ(Run({"get", "deploy", "-o",
                 R"(jsonpath={range .items[*]}{.metadata.name}{"\t"}{.spec.template.spec.containers[?(@.name=="nginx")].image}{"\n"}{end})"}),
            0)
      << err_;
  EXPECT_EQ(out_, "nginx-deployment\tnginx:1.14.2\n");
  ASSERT_EQ(Run({"get", "deploy", "-o", "custom-columns=NAME:.metadata.name,IMAGE:.spec.template.spec.containers[*].image,X:.nope"}), 0) << err_;
  EXPECT_EQ(out_, "NAME               IMAGE          X\nnginx-deployment   nginx:1.14.2   <none>\n");
  ASSERT_EQ(Run({"get", "deploy", "-o", "yaml"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("apiVersion: v1\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n"));
  EXPECT_THAT(out_, HasSubstr("kind: List\nmetadata:\n  resourceVersion: \"\"\n"));
}

// ------------------------------------------------------------ apply semantics

TEST_F(CliTest, ApplyAgainIsUnchangedAndRemovedFieldsAreRemoved) {
  std::string f = WriteFile("app.yaml", kAppManifests);
  ASSERT_EQ(Run({"apply", "-f", f}), 0) << err_;
  // Someone else labels the deployment; apply must keep that.
  ASSERT_EQ(Run({"label", "deploy", "nginx-deployment", "team=blue"}), 0) << err_;
  ASSERT_EQ(Run({"apply", "-f", f}), 0) << err_;
  EXPECT_EQ(out_,
            "configmap/game-demo unchanged\n"
            "deployment.apps/nginx-deployment unchanged\n"
            "service/my-service unchanged\n");
  std::string edited = kAppManifests;
  edited.erase(edited.find("        env:\n"), std::string("        env:\n        - name: DEBUG\n          value: \"1\"\n").size());
  edited.replace(edited.find("replicas: 3"), 11, "replicas: 2");
  WriteFile("app.yaml", edited);
  ASSERT_EQ(Run({"apply", "-f", f}), 0) << err_;
  EXPECT_EQ(out_,
            "configmap/game-demo unchanged\n"
            "deployment.apps/nginx-deployment configured\n"
            "service/my-service unchanged\n");
  auto d = api_.Find("deployments", "default", "nginx-deployment");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->deployment().spec().replicas(), 2);
  EXPECT_EQ(d->deployment().spec().template_().spec().containers(0).env_size(), 0);
  EXPECT_EQ(d->deployment().metadata().labels().at("team"), "blue");
}

TEST_F(CliTest, ApplyFromStdinAndDirectories) {
  ASSERT_EQ(Run({"apply", "-f", "-"}, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n"), 0) << err_;
  EXPECT_EQ(out_, "namespace/prod created\n");
  WriteFile("dir/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n");
  WriteFile("dir/sub/b.json", R"({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}})");
  ASSERT_EQ(Run({"apply", "-n", "prod", "-R", "-f", (home_ / "dir").string()}), 0) << err_;
  EXPECT_EQ(out_, "configmap/a created\nconfigmap/b created\n");
  EXPECT_TRUE(api_.Find("configmaps", "prod", "b"));
}

// ------------------------------------------------------------ bad input

TEST_F(CliTest, BadInputChangesNothingAndExits1) {
  struct Case {
    std::string text, want;
  } cases[] = {
      {"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: [x\n", "error: error parsing "},
      {"apiVersion: v1\nkind: Frob\nmetadata: {name: a}\n", "no matches for kind \"Frob\" in version \"v1\""},
      {"apiVersion: apps/v2\nkind: Deployment\nmetadata: {name: a}\n",
       "no matches for kind \"Deployment\" in version \"apps/v2\""},
      {"apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n  - name: a\n    imagee: nginx\n",
       "unknown field \"spec.containers[0].imagee\" (line 11)"},
      {"apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n", "metadata.name: Required value"},
  };
  for (const auto& c : cases) {
    // A valid document first: it must not be written either.
    std::string f = WriteFile("bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: good}\n---\n" + c.text);
    int64_t before = api_.writes();
    EXPECT_EQ(Run({"apply", "-f", f}), 1) << c.text;
    EXPECT_THAT(err_, HasSubstr(c.want)) << c.text;
    EXPECT_THAT(err_, ::testing::StartsWith("error: "));
    EXPECT_EQ(api_.writes(), before) << c.text;
    EXPECT_EQ(Run({"create", "-f", f}), 1) << c.text;
    EXPECT_EQ(api_.writes(), before) << c.text;
  }
  EXPECT_EQ(Run({"apply", "-f", (home_ / "nope.yaml").string()}), 1);
  EXPECT_THAT(err_, HasSubstr("does not exist"));
}

TEST_F(CliTest, UnreachableServerNamesTheAddress) {
  // A port nobody listens on.
  int port;
  {
    Listener l;
    port = l.port();
  }
  std::string addr = "127.0.0.1:" + std::to_string(port);
  EXPECT_EQ(RunRaw({"--server", "https://" + addr, "get", "pods"}), 1);
  EXPECT_EQ(err_, "error: cannot reach the API server at " + addr + ": connection refused\n");
  std::string f = WriteFile("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n");
  EXPECT_EQ(RunRaw({"--server", "https://" + addr, "apply", "-f", f}), 1);
  EXPECT_EQ(err_, "error: cannot reach the API server at " + addr + ": connection refused\n");
}

TEST_F(CliTest, UnknownFlagsAndCommands) {
  EXPECT_EQ(Run({"get", "pods", "--frob"}), 1);
  EXPECT_EQ(err_, "error: unknown flag: --frob\nSee 'skiffctl get --help' for usage.\n");
  EXPECT_EQ(Run({"frobnicate"}), 1);
  EXPECT_THAT(err_, HasSubstr("unknown command \"frobnicate\""));
}

// ------------------------------------------------------------ verbs

TEST_F(CliTest, CreateGeneratorsRunExposeScale) {
  ASSERT_EQ(Run({"create", "deployment", "web", "--image=nginx:1.25", "--replicas=2", "--port=80"}), 0) << err_;
  EXPECT_EQ(out_, "deployment.apps/web created\n");
  ASSERT_EQ(Run({"expose", "deployment", "web", "--port=8080", "--target-port=80"}), 0) << err_;
  EXPECT_EQ(out_, "service/web exposed\n");
  auto svc = api_.Find("services", "default", "web");
  ASSERT_TRUE(svc);
  EXPECT_EQ(svc->service().spec().selector().at("app"), "web");
  EXPECT_EQ(svc->service().spec().ports(0).target_port(), "80");
  ASSERT_EQ(Run({"scale", "deploy/web", "--replicas=5"}), 0) << err_;
  EXPECT_EQ(out_, "deployment.apps/web scaled\n");
  EXPECT_EQ(api_.Find("deployments", "default", "web")->deployment().spec().replicas(), 5);
  ASSERT_EQ(Run({"run", "box", "--image=busybox", "--restart=Never", "--", "sleep", "3600"}), 0) << err_;
  EXPECT_EQ(out_, "pod/box created\n");
  auto pod = api_.Find("pods", "default", "box");
  ASSERT_TRUE(pod);
  EXPECT_EQ(pod->pod().metadata().labels().at("run"), "box");
  EXPECT_EQ(pod->pod().spec().containers(0).args(1), "3600");
  ASSERT_EQ(Run({"run", "box2", "--image=busybox", "--dry-run=client", "-o", "yaml"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("kind: Pod\nmetadata:\n  labels:\n    run: box2\n  name: box2\n  namespace: default\n"));
  EXPECT_FALSE(api_.Find("pods", "default", "box2"));
  ASSERT_EQ(Run({"create", "namespace", "dev"}), 0);
  EXPECT_EQ(out_, "namespace/dev created\n");
  ASSERT_EQ(Run({"create", "configmap", "cfg", "--from-literal=a=1", "--from-literal=b=2"}), 0);
  EXPECT_EQ(api_.Find("configmaps", "default", "cfg")->config_map().data().at("b"), "2");
  ASSERT_EQ(Run({"create", "secret", "generic", "pw", "--from-literal=password=hunter2"}), 0);
  EXPECT_EQ(api_.Find("secrets", "default", "pw")->secret().data().at("password"), "hunter2");
  ASSERT_EQ(Run({"get", "secret", "pw", "-o", "jsonpath={.data.password}"}), 0);
  EXPECT_EQ(out_, "aHVudGVyMg==");
  ASSERT_EQ(Run({"create", "service", "nodeport", "np", "--tcp=80:8080", "--node-port=30080"}), 0) << err_;
  ASSERT_EQ(Run({"get", "svc", "np"}), 0);
  EXPECT_EQ(out_, "NAME   TYPE       CLUSTER-IP   EXTERNAL-IP   PORT(S)        AGE\n"
                  "np     NodePort   <none>       <none>        80:30080/TCP   60m\n");
  EXPECT_EQ(Run({"create", "namespace", "dev"}), 1);
  EXPECT_EQ(err_, "Error from server (AlreadyExists): namespaces \"dev\" already exists\n");
}

TEST_F(CliTest, DeleteByNameFileAndSelector) {
  std::string f = WriteFile("app.yaml", kAppManifests);
  ASSERT_EQ(Run({"apply", "-f", f}), 0) << err_;
  api_.Put(RunningPod("web-0", "node-a", 0));
  api_.Put(RunningPod("web-1", "node-a", 0));
  ASSERT_EQ(Run({"delete", "pods", "-l", "app=web"}), 0) << err_;
  EXPECT_EQ(out_, "pod \"web-0\" deleted\npod \"web-1\" deleted\n");
  ASSERT_EQ(Run({"delete", "-f", f}), 0) << err_;
  EXPECT_EQ(out_,
            "configmap \"game-demo\" deleted\ndeployment.apps \"nginx-deployment\" deleted\nservice \"my-service\" "
            "deleted\n");
  EXPECT_EQ(Run({"delete", "pod", "ghost"}), 1);
  EXPECT_EQ(err_, "Error from server (NotFound): pods \"ghost\" not found\n");
  EXPECT_EQ(Run({"delete", "pod", "ghost", "--ignore-not-found"}), 0);
  api_.Put(RunningPod("web-2", "node-a", 0));
  ASSERT_EQ(Run({"delete", "pod", "web-2", "--grace-period=0", "--force"}), 0) << err_;
  EXPECT_EQ(out_, "pod \"web-2\" force deleted\n");
  EXPECT_THAT(err_, HasSubstr("Warning: Immediate deletion does not wait"));
}

TEST_F(CliTest, LabelAnnotateCordonTaintDrain) {
  api_.Put(RunningPod("web-0", "node-a", 0));
  ASSERT_EQ(Run({"label", "pod", "web-0", "tier=front"}), 0) << err_;
  EXPECT_EQ(out_, "pod/web-0 labeled\n");
  EXPECT_EQ(Run({"label", "pod", "web-0", "tier=back"}), 1);
  EXPECT_EQ(err_, "error: 'tier' already has a value (front), and --overwrite is false\n");
  ASSERT_EQ(Run({"label", "pod", "web-0", "tier=back", "--overwrite"}), 0) << err_;
  ASSERT_EQ(Run({"label", "pod", "web-0", "tier-"}), 0) << err_;
  EXPECT_EQ(api_.Find("pods", "default", "web-0")->pod().metadata().labels().count("tier"), 0u);
  ASSERT_EQ(Run({"annotate", "pod/web-0", "note=hi"}), 0) << err_;
  EXPECT_EQ(out_, "pod/web-0 annotated\n");

  auto node = manifest::NewObject(*manifest::FindResource("nodes"));
  node.mutable_node()->mutable_metadata()->set_name("node-a");
  node.mutable_node()->mutable_metadata()->set_creation_timestamp("2026-11-20T07:00:00Z");
  auto* cond = node.mutable_node()->mutable_status()->add_conditions();
  cond->set_type("Ready");
  cond->set_status("True");
  node.mutable_node()->mutable_status()->mutable_node_info()->set_kubelet_version("v0.1.0");
  api_.Put(node);
  ASSERT_EQ(Run({"cordon", "node-a"}), 0) << err_;
  EXPECT_EQ(out_, "node/node-a cordoned\n");
  ASSERT_EQ(Run({"get", "nodes"}), 0) << err_;
  EXPECT_EQ(out_, "NAME     STATUS                     ROLES    AGE   VERSION\n"
                  "node-a   Ready,SchedulingDisabled   <none>   2d    v0.1.0\n");
  ASSERT_EQ(Run({"uncordon", "node-a"}), 0) << err_;
  ASSERT_EQ(Run({"taint", "nodes", "node-a", "dedicated=gpu:NoSchedule"}), 0) << err_;
  EXPECT_EQ(out_, "node/node-a tainted\n");
  EXPECT_EQ(api_.Find("nodes", "", "node-a")->node().spec().taints(0).value(), "gpu");
  ASSERT_EQ(Run({"taint", "nodes", "node-a", "dedicated:NoSchedule-"}), 0) << err_;
  EXPECT_EQ(out_, "node/node-a untainted\n");

  // web-0 has no controller: drain refuses without --force.
  EXPECT_EQ(Run({"drain", "node-a"}), 1);
  EXPECT_THAT(err_, HasSubstr("cannot delete Pods that declare no controller"));
  ASSERT_EQ(Run({"drain", "node-a", "--force"}), 0) << err_;
  EXPECT_EQ(out_, "node/node-a already cordoned\nevicting pod default/web-0\npod/web-0 evicted\nnode/node-a drained\n");
  EXPECT_FALSE(api_.Find("pods", "default", "web-0"));
}

TEST_F(CliTest, RolloutStatusHistoryUndoRestart) {
  ASSERT_EQ(Run({"create", "deployment", "web", "--image=nginx:1.24"}), 0) << err_;
  auto dep = *api_.Find("deployments", "default", "web");
  auto make_rs = [&](const std::string& name, const std::string& image, int rev) {
    auto rs = manifest::NewObject(*manifest::FindResource("rs"));
    auto* r = rs.mutable_replica_set();
    r->mutable_metadata()->set_name(name);
    r->mutable_metadata()->set_namespace_("default");
    (*r->mutable_metadata()->mutable_labels())["app"] = "web";
    (*r->mutable_metadata()->mutable_annotations())["deployment.kubernetes.io/revision"] = std::to_string(rev);
    auto* o = r->mutable_metadata()->add_owner_references();
    o->set_kind("Deployment");
    o->set_name("web");
    o->set_uid(dep.deployment().metadata().uid());
    o->set_controller(true);
    *r->mutable_spec()->mutable_template_() = dep.deployment().spec().template_();
    r->mutable_spec()->mutable_template_()->mutable_spec()->mutable_containers(0)->set_image(image);
    (*r->mutable_spec()->mutable_template_()->mutable_metadata()->mutable_labels())["pod-template-hash"] = name;
    api_.Put(rs);
  };
  make_rs("web-1", "nginx:1.24", 1);
  make_rs("web-2", "nginx:1.25", 2);
  ASSERT_EQ(Run({"rollout", "history", "deployment/web"}), 0) << err_;
  EXPECT_EQ(out_, "deployment.apps/web \nREVISION   CHANGE-CAUSE\n1          <none>\n2          <none>\n\n");
  ASSERT_EQ(Run({"rollout", "undo", "deployment/web", "--to-revision=2"}), 0) << err_;
  EXPECT_EQ(out_, "deployment.apps/web rolled back\n");
  EXPECT_EQ(api_.Find("deployments", "default", "web")->deployment().spec().template_().spec().containers(0).image(),
            "nginx:1.25");
  EXPECT_EQ(api_.Find("deployments", "default", "web")
                ->deployment().spec().template_().metadata().labels().count("pod-template-hash"),
            0u);
  ASSERT_EQ(Run({"rollout", "restart", "deploy/web"}), 0) << err_;
  EXPECT_EQ(api_.Find("deployments", "default", "web")
                ->deployment().spec().template_().metadata().annotations().at("kubectl.kubernetes.io/restartedAt"),
            "2026-11-22T07:00:00Z");

  // Status: progress reported until the controller (this test) finishes.
  std::thread controller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto d = *api_.Find("deployments", "default", "web");
    auto* s = d.mutable_deployment()->mutable_status();
    s->set_observed_generation(d.deployment().metadata().generation());
    s->set_replicas(1);
    s->set_updated_replicas(1);
    s->set_ready_replicas(1);
    s->set_available_replicas(1);
    d.mutable_deployment()->mutable_metadata()->clear_resource_version();
    ASSERT_TRUE(api_.NewClient()->UpdateStatus("deployments", "default", d).ok());
  });
  int rc = Run({"rollout", "status", "deployment/web", "--timeout=10s"});
  controller.join();
  ASSERT_EQ(rc, 0) << err_;
  EXPECT_EQ(out_, "Waiting for deployment spec update to be observed...\n"
                  "deployment \"web\" successfully rolled out\n");
}

TEST_F(CliTest, WatchSeesChanges) {
  api_.Put(RunningPod("web-0", "node-a", 0));
  std::ostringstream out, err;
  std::istringstream in;
  Environment env;
  env.in = &in;
  env.out = &out;
  env.err = &err;
  std::unique_ptr<client::WatchStream>* captured = nullptr;
  (void)captured;
  env.dial = [this](const client::Credentials&) -> absl::StatusOr<Connection> {
    Connection c;
    c.client = api_.NewClient();
    return c;
  };
  env.getenv = [](const std::string&) { return std::string(); };
  std::thread t([&] { cli::Run({"--server", server_, "get", "pods", "-w"}, env); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto c = api_.NewClient();
  auto p = RunningPod("web-1", "node-b", 0);
  ASSERT_TRUE(c->Create("pods", "default", p).ok());
  ASSERT_TRUE(c->Delete("pods", "default", "web-0").ok());
  // The watch never ends by itself; end it by waiting for the output, then
  // detaching is not allowed — so cancel through a final event count.
  // Header, web-0, web-1 added, web-0 deleted: wait for all four lines (the
  // last one comes after the delete, and sanitizer builds are slow).
  for (int i = 0; i < 1000; ++i) {
    std::string s = out.str();
    if (std::count(s.begin(), s.end(), '\n') >= 4) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // Stop: deleting the namespace isn't modelled; break the stream instead.
  api_.CancelAllWatches();
  t.join();
  std::vector<std::string> lines = absl::StrSplit(out.str(), '\n', absl::SkipEmpty());
  ASSERT_GE(lines.size(), 4u) << out.str();
  EXPECT_THAT(lines[0], HasSubstr("NAME"));
  EXPECT_THAT(lines[1], HasSubstr("web-0"));
  EXPECT_THAT(lines[2], HasSubstr("web-1"));
  EXPECT_THAT(lines[3], HasSubstr("web-0"));
}

TEST_F(CliTest, DescribeShowsEvents) {
  api_.Put(RunningPod("web-0", "node-a", 0));
  auto ev = manifest::NewObject(*manifest::FindResource("events"));
  auto* e = ev.mutable_event();
  e->mutable_metadata()->set_name("web-0.1");
  e->mutable_metadata()->set_namespace_("default");
  e->mutable_involved_object()->set_kind("Pod");
  e->mutable_involved_object()->set_name("web-0");
  e->set_type("Normal");
  e->set_reason("Scheduled");
  e->set_message("Successfully assigned default/web-0 to node-a");
  e->mutable_source()->set_component("default-scheduler");
  e->set_last_timestamp("2026-11-22T06:59:50Z");
  api_.Put(ev);
  ASSERT_EQ(Run({"describe", "pod", "web-0"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("Name:             web-0\nNamespace:        default\n"));
  EXPECT_THAT(out_, HasSubstr("Status:           Running\n"));
  EXPECT_THAT(out_, HasSubstr("Events:\n  Type    Reason     Age   From               Message\n"
                              "  ----    ------     ----  ----               -------\n"
                              "  Normal  Scheduled  10s   default-scheduler  Successfully assigned default/web-0 "
                              "to node-a\n"));
}

TEST_F(CliTest, LogsAndExecUseTheNodeStreams) {
  api_.Put(RunningPod("web-0", "node-a", 0));
  ASSERT_EQ(Run({"logs", "web-0", "--tail=1"}), 0) << err_;
  EXPECT_EQ(out_, "[web] line 2\n");
  ASSERT_EQ(Run({"exec", "web-0", "--", "echo", "hello", "world"}), 0) << err_;
  EXPECT_EQ(out_, "hello world\n");
  EXPECT_EQ(Run({"exec", "web-0", "--", "exit", "3"}), 3);
  EXPECT_EQ(err_, "command terminated with exit code 3\n");
  EXPECT_EQ(Run({"logs", "nope"}), 1);
  EXPECT_EQ(err_, "Error from server (NotFound): pods \"nope\" not found\n");
  // A container the pod does not have: the API server's words, no node asked.
  EXPECT_EQ(Run({"exec", "web-0", "-c", "nosuch", "--", "echo", "x"}), 1);
  EXPECT_EQ(out_, "");
  EXPECT_EQ(err_, "Error from server (BadRequest): container nosuch is not valid for pod web-0\n");
  EXPECT_EQ(Run({"logs", "web-0", "-c", "nosuch"}), 1);
  EXPECT_EQ(err_, "Error from server (BadRequest): container nosuch is not valid for pod web-0\n");
}

TEST_F(CliTest, ConfigContextsAndNamespace) {
  std::string cfg = WriteFile("cfg", R"(apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: SERVER
users:
- name: admin
  user:
    token: s3cret
contexts:
- name: admin@lab
  context: {cluster: lab, user: admin, namespace: team-a}
current-context: admin@lab
)");
  std::string text;
  {
    std::ifstream f(cfg);
    std::stringstream ss;
    ss << f.rdbuf();
    text = ss.str();
  }
  text.replace(text.find("SERVER"), 6, server_);
  WriteFile("cfg", text);
  vars_["SKIFFCONFIG"] = cfg;
  ASSERT_EQ(RunRaw({"get", "pods"}), 0) << err_;
  EXPECT_EQ(err_, "No resources found in team-a namespace.\n");
  EXPECT_EQ(dialed_.token, "s3cret");
  EXPECT_TRUE(dialed_.insecure);
  ASSERT_EQ(RunRaw({"config", "set-context", "other", "--cluster=lab", "--user=admin", "--namespace=team-b"}), 0) << err_;
  EXPECT_EQ(out_, "Context \"other\" created.\n");
  ASSERT_EQ(RunRaw({"config", "use-context", "other"}), 0) << err_;
  EXPECT_EQ(out_, "Switched to context \"other\".\n");
  ASSERT_EQ(RunRaw({"get", "pods"}), 0) << err_;
  EXPECT_EQ(err_, "No resources found in team-b namespace.\n");
  ASSERT_EQ(RunRaw({"config", "view"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("current-context: other\n"));
  EXPECT_THAT(out_, HasSubstr("token: REDACTED\n"));
  EXPECT_EQ(RunRaw({"config", "use-context", "nope"}), 1);
  EXPECT_EQ(err_, "error: no context exists with the name: \"nope\"\n");
  // --config wins over $SKIFFCONFIG.
  EXPECT_EQ(RunRaw({"--config", (home_ / "missing").string(), "get", "pods"}), 1);
  EXPECT_THAT(err_, HasSubstr("no server configured"));
}

TEST_F(CliTest, VersionApiResourcesCompletionToken) {
  ASSERT_EQ(Run({"version"}), 0) << err_;
  EXPECT_EQ(out_, "Client Version: v0.1.0\nServer Version: v0.1.0-memory\n");
  ASSERT_EQ(Run({"api-resources"}), 0);
  EXPECT_THAT(out_, HasSubstr("deployments           deploy       apps/v1                        true         Deployment\n"));
  ASSERT_EQ(Run({"completion", "bash"}), 0);
  EXPECT_THAT(out_, HasSubstr("complete -F _skiffctl skiffctl"));
  // The script loads in bash and completes verbs and resource types.
  std::string script = WriteFile("completion.bash", out_);
  std::string probe = WriteFile("probe.sh", "source '" + script +
                                                "'\nCOMP_WORDS=(skiffctl ge); COMP_CWORD=1; _skiffctl; echo \"${COMPREPLY[@]}\"\n"
                                                "COMP_WORDS=(skiffctl get dep); COMP_CWORD=2; _skiffctl; echo "
                                                "\"${COMPREPLY[@]}\"\n");
  std::string result = (home_ / "result").string();
  ASSERT_EQ(std::system(("bash '" + probe + "' > '" + result + "' 2>&1").c_str()), 0);
  std::stringstream got;
  got << std::ifstream(result).rdbuf();
  EXPECT_EQ(got.str(), "get\ndeployments deploy\n");
  ASSERT_EQ(Run({"completion", "zsh"}), 0);
  EXPECT_THAT(out_, HasSubstr("#compdef skiffctl"));
  // The zsh script loads in zsh and offers verbs, resource types and the
  // rollout sub-verbs (zsh's completion builtins stubbed to print what they
  // were given; zsh itself filters by the typed prefix).
  std::string zscript = WriteFile("completion.zsh", out_);
  std::string zprobe = WriteFile(
      "probe.zsh",
      "compdef() { print -r -- compdef \"$@\" }\n"
      "_describe() { print -r -- ${(P)2} }\n"
      "compadd() { [[ $1 == -- ]] && shift; print -r -- \"$@\" }\n"
      "_files() { print -r -- files }\n"
      "source '" + zscript + "'\n"
      "words=(skiffctl ge); CURRENT=2; _skiffctl\n"
      "words=(skiffctl get dep); CURRENT=3; _skiffctl\n"
      "words=(skiffctl rollout u); CURRENT=3; _skiffctl\n");
  ASSERT_EQ(std::system(("zsh -f '" + zprobe + "' > '" + result + "' 2>&1").c_str()), 0);
  std::stringstream zgot;
  zgot << std::ifstream(result).rdbuf();
  std::vector<std::string> zlines = absl::StrSplit(zgot.str(), '\n');
  ASSERT_EQ(zlines.size(), 5u) << zgot.str();
  EXPECT_EQ(zlines[0], "compdef _skiffctl skiffctl");
  EXPECT_THAT(zlines[1], HasSubstr(" get "));
  EXPECT_THAT(zlines[1], HasSubstr(" rollout "));
  EXPECT_THAT(zlines[2], HasSubstr("deployments"));
  EXPECT_EQ(zlines[3], "status history undo restart");
  ASSERT_EQ(Run({"token", "create"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("--bootstrap-token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:00ff"));
}

TEST_F(CliTest, EditWritesBackWhatTheEditorChanged) {
  ASSERT_EQ(Run({"create", "configmap", "cfg", "--from-literal=a=1"}), 0) << err_;
  std::string script = WriteFile("editor.sh", "#!/bin/sh\nsed -i 's/a: \"1\"/a: \"2\"/' \"$1\"\n");
  std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  vars_["EDITOR"] = script;
  ASSERT_EQ(Run({"edit", "cm", "cfg"}), 0) << err_;
  EXPECT_EQ(out_, "configmap/cfg edited\n");
  EXPECT_EQ(api_.Find("configmaps", "default", "cfg")->config_map().data().at("a"), "2");
  vars_["EDITOR"] = "true";
  ASSERT_EQ(Run({"edit", "cm", "cfg"}), 0) << err_;
  EXPECT_EQ(out_, "Edit cancelled, no changes made.\n");
}

TEST_F(CliTest, GetNamesSelectorsAndFieldSelectors) {
  api_.Put(RunningPod("web-0", "node-a", 0));
  api_.Put(RunningPod("web-1", "node-b", 0));
  auto other = RunningPod("db-0", "node-b", 0);
  (*other.mutable_pod()->mutable_metadata()->mutable_labels())["app"] = "db";
  api_.Put(other);
  ASSERT_EQ(Run({"get", "pods", "web-1", "db-0", "-o", "name"}), 0) << err_;
  EXPECT_EQ(out_, "pod/web-1\npod/db-0\n");
  ASSERT_EQ(Run({"get", "pods", "-l", "app=web", "-o", "name"}), 0) << err_;
  EXPECT_EQ(out_, "pod/web-0\npod/web-1\n");
  ASSERT_EQ(Run({"get", "pods", "--selector", "app notin (web)", "--no-headers"}), 0) << err_;
  EXPECT_EQ(out_, "db-0   1/1   Running   0   5m\n");
  ASSERT_EQ(Run({"get", "pods", "--field-selector", "spec.nodeName=node-b", "-o", "name"}), 0) << err_;
  EXPECT_EQ(out_, "pod/db-0\npod/web-1\n");
  ASSERT_EQ(Run({"get", "pods", "-L", "app"}), 0) << err_;
  EXPECT_EQ(out_,
            "NAME    READY   STATUS    RESTARTS   AGE   APP\n"
            "db-0    1/1     Running   0          5m    db\n"
            "web-0   1/1     Running   0          5m    web\n"
            "web-1   1/1     Running   0          5m    web\n");
  // One name missing among several: the others print, the error too, exit 1.
  EXPECT_EQ(Run({"get", "pods", "web-0", "ghost", "-o", "name"}), 1);
  EXPECT_EQ(out_, "pod/web-0\n");
  EXPECT_EQ(err_, "Error from server (NotFound): pods \"ghost\" not found\n");
  // -n picks the namespace; a selector that matches nothing there says so.
  ASSERT_EQ(Run({"get", "pods", "-n", "kube-system", "-l", "app=web"}), 0) << err_;
  EXPECT_EQ(err_, "No resources found in kube-system namespace.\n");
}

TEST_F(CliTest, ContextFlagServerFlagAndClusterInfo) {
  std::string cfg = WriteFile("cfg", "apiVersion: v1\nkind: Config\nclusters:\n"
                                     "- name: one\n  cluster: {server: 'http://127.0.0.1:1'}\n"
                                     "- name: two\n  cluster: {server: '" + server_ + "'}\n"
                                     "users:\n- name: u\n  user: {token: t1}\n- name: v\n  user: {token: t2}\n"
                                     "contexts:\n- name: c1\n  context: {cluster: one, user: u}\n"
                                     "- name: c2\n  context: {cluster: two, user: v, namespace: ns2}\n"
                                     "current-context: c1\n");
  // The current context's server answers nothing on port 1.
  EXPECT_EQ(RunRaw({"--config", cfg, "get", "pods"}), 1);
  EXPECT_EQ(err_, "error: cannot reach the API server at 127.0.0.1:1: connection refused\n");
  // --context switches cluster, user and namespace for one call.
  ASSERT_EQ(RunRaw({"--config", cfg, "--context", "c2", "get", "pods"}), 0) << err_;
  EXPECT_EQ(err_, "No resources found in ns2 namespace.\n");
  EXPECT_EQ(dialed_.token, "t2");
  // --server overrides the address but keeps the context's user.
  ASSERT_EQ(RunRaw({"--config", cfg, "--server", server_, "get", "pods"}), 0) << err_;
  EXPECT_EQ(dialed_.token, "t1");
  // The file is unchanged by --context.
  ASSERT_EQ(RunRaw({"--config", cfg, "config", "current-context"}), 0) << err_;
  EXPECT_EQ(out_, "c1\n");
  ASSERT_EQ(RunRaw({"--config", cfg, "--context", "c2", "cluster-info"}), 0) << err_;
  EXPECT_EQ(out_, "Skiff control plane is running at https://" + server_.substr(strlen("http://")) +
                      "\n\nTo further debug and diagnose cluster problems, use 'skiffctl get nodes' and "
                      "'skiffctl get events -A'.\n");
  EXPECT_EQ(RunRaw({"--config", cfg, "--context", "c9", "get", "pods"}), 1);
  EXPECT_THAT(err_, HasSubstr("c9"));
  // ~/.skiff/config is the default.
  WriteFile(".skiff/config", "apiVersion: v1\nkind: Config\nclusters:\n- name: two\n  cluster: {server: '" + server_ +
                                 "'}\nusers:\n- name: v\n  user: {token: home}\ncontexts:\n- name: h\n"
                                 "  context: {cluster: two, user: v}\ncurrent-context: h\n");
  ASSERT_EQ(RunRaw({"get", "pods"}), 0) << err_;
  EXPECT_EQ(dialed_.token, "home");
}

TEST_F(CliTest, DeleteTimeoutIsCheckedBeforeDeleting) {
  api_.Put(RunningPod("web-0", "node-a", 0));
  int64_t before = api_.writes();
  EXPECT_EQ(Run({"delete", "pod", "web-0", "--timeout=soon"}), 1);
  EXPECT_EQ(err_, "error: invalid argument \"soon\" for \"--timeout\" flag: time: invalid duration \"soon\"\n");
  EXPECT_EQ(api_.writes(), before);
  ASSERT_EQ(Run({"delete", "pod", "web-0", "--timeout=1m30s"}), 0) << err_;
  EXPECT_FALSE(api_.Find("pods", "default", "web-0"));
}

// ------------------------------------------------------------ top

api::v1::Object StatsNode(const std::string& name, const std::string& cpu, const std::string& memory) {
  auto node = manifest::NewObject(*manifest::FindResource("nodes"));
  node.mutable_node()->mutable_metadata()->set_name(name);
  (*node.mutable_node()->mutable_status()->mutable_allocatable())["cpu"] = cpu;
  (*node.mutable_node()->mutable_status()->mutable_allocatable())["memory"] = memory;
  return node;
}

void AddPodStats(api::v1::StatsResponse* s, const std::string& ns, const std::string& pod,
                 const std::vector<std::tuple<std::string, uint64_t, uint64_t>>& containers) {
  auto* p = s->add_pods();
  p->set_namespace_(ns);
  p->set_name(pod);
  for (const auto& [name, cpu, mem] : containers) {
    auto* c = p->add_containers();
    c->set_name(name);
    c->set_cpu_usage_nano_cores(cpu);
    c->set_memory_working_set_bytes(mem);
  }
}

TEST_F(CliTest, TopNodesAndPodsPrintKubectlColumns) {
  api_.Put(StatsNode("node-a", "2", "4Gi"));
  api_.Put(StatsNode("node-b", "1500m", "8048312Ki"));
  api_.Put(StatsNode("node-c", "4", "16Gi"));  // its kubelet does not answer
  auto& a = api_.stats["node-a"];
  a.set_node_name("node-a");
  a.set_cpu_usage_nano_cores(250'000'000);         // 250m of 2 cores = 12%
  a.set_memory_working_set_bytes(1073741824);      // 1024Mi of 4Gi = 25%
  auto& b = api_.stats["node-b"];
  b.set_node_name("node-b");
  b.set_cpu_usage_nano_cores(1'200'000'000);       // 1200m of 1500m = 80%
  b.set_memory_working_set_bytes(3 * 1073741824ull);
  ASSERT_EQ(Run({"top", "nodes"}), 0) << err_;
  EXPECT_EQ(out_,
            "NAME     CPU(cores)   CPU%        MEMORY(bytes)   MEMORY%\n"
            "node-a   250m         12%         1024Mi          25%\n"
            "node-b   1200m        80%         3072Mi          39%\n"
            "node-c   <unknown>    <unknown>   <unknown>       <unknown>\n");
  ASSERT_EQ(Run({"top", "node", "node-b", "--no-headers"}), 0) << err_;
  EXPECT_EQ(out_, "node-b   1200m   80%   3072Mi   39%\n");
  ASSERT_EQ(Run({"top", "nodes", "--sort-by=cpu"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("\nnode-b "));
  EXPECT_LT(out_.find("node-b"), out_.find("node-a"));

  // Pods: one Stats call per node, only this namespace's pods, sums of containers.
  api_.Put(RunningPod("web-0", "node-a", 0));
  api_.Put(RunningPod("web-1", "node-b", 0));
  auto other = RunningPod("db-0", "node-b", 0);
  other.mutable_pod()->mutable_metadata()->set_namespace_("data");
  api_.Put(other);
  AddPodStats(&a, "default", "web-0", {{"web", 5'000'000, 20 * 1048576}, {"sidecar", 1'000'000, 4 * 1048576}});
  AddPodStats(&b, "default", "web-1", {{"web", 120'000'000, 200 * 1048576}});
  AddPodStats(&b, "data", "db-0", {{"db", 900'000'000, 2048ull * 1048576}});
  AddPodStats(&b, "default", "gone", {{"x", 1, 1}});  // no such pod any more: not shown
  ASSERT_EQ(Run({"top", "pods"}), 0) << err_;
  EXPECT_EQ(out_,
            "NAME    CPU(cores)   MEMORY(bytes)\n"
            "web-0   6m           24Mi\n"
            "web-1   120m         200Mi\n");
  ASSERT_EQ(Run({"top", "pod", "--containers"}), 0) << err_;
  EXPECT_EQ(out_,
            "POD     NAME      CPU(cores)   MEMORY(bytes)\n"
            "web-0   web       5m           20Mi\n"
            "web-0   sidecar   1m           4Mi\n"
            "web-1   web       120m         200Mi\n");
  ASSERT_EQ(Run({"top", "pods", "-A"}), 0) << err_;
  EXPECT_EQ(out_,
            "NAMESPACE   NAME    CPU(cores)   MEMORY(bytes)\n"
            "data        db-0    900m         2048Mi\n"
            "default     web-0   6m           24Mi\n"
            "default     web-1   120m         200Mi\n");
  ASSERT_EQ(Run({"top", "pods", "-A", "--containers", "--sort-by=memory"}), 0) << err_;
  EXPECT_EQ(out_,
            "NAMESPACE   POD     NAME      CPU(cores)   MEMORY(bytes)\n"
            "data        db-0    db        900m         2048Mi\n"
            "default     web-1   web       120m         200Mi\n"
            "default     web-0   web       5m           20Mi\n"
            "default     web-0   sidecar   1m           4Mi\n");
  ASSERT_EQ(Run({"top", "pod", "web-1", "-n", "default"}), 0) << err_;
  EXPECT_EQ(out_, "NAME    CPU(cores)   MEMORY(bytes)\nweb-1   120m         200Mi\n");
}

TEST_F(CliTest, TopPodsShowsUnknownForWhatTheNodeCannotMeasure) {
  // A node whose cgroups have no memory controller (this build host's hybrid
  // layout) names memory in ContainerStats.unavailable and sends 0: skiffctl
  // prints <unknown> there, never "0Mi", and keeps the CPU it has.
  api_.Put(StatsNode("node-a", "2", "4Gi"));
  api_.Put(RunningPod("web-0", "node-a", 0));
  api_.Put(RunningPod("web-1", "node-a", 0));
  auto& a = api_.stats["node-a"];
  a.set_node_name("node-a");
  AddPodStats(&a, "default", "web-0", {{"web", 7'000'000, 0}, {"sidecar", 2'000'000, 0}});
  AddPodStats(&a, "default", "web-1", {{"web", 30'000'000, 0}, {"sidecar", 1'000'000, 5 * 1048576}});
  for (auto* c : {a.mutable_pods(0)->mutable_containers(0), a.mutable_pods(0)->mutable_containers(1),
                  a.mutable_pods(1)->mutable_containers(0)}) {
    c->add_unavailable("memory");
  }
  ASSERT_EQ(Run({"top", "pods"}), 0) << err_;
  EXPECT_EQ(out_,
            "NAME    CPU(cores)   MEMORY(bytes)\n"
            "web-0   9m           <unknown>\n"
            "web-1   31m          <unknown>\n");  // one container unmeasured: no partial sum
  ASSERT_EQ(Run({"top", "pods", "--containers"}), 0) << err_;
  EXPECT_EQ(out_,
            "POD     NAME      CPU(cores)   MEMORY(bytes)\n"
            "web-0   web       7m           <unknown>\n"
            "web-0   sidecar   2m           <unknown>\n"
            "web-1   web       30m          <unknown>\n"
            "web-1   sidecar   1m           5Mi\n");
  // CPU unavailable too (a container seen once, no rate yet); unknowns sort last.
  a.mutable_pods(1)->mutable_containers(0)->add_unavailable("cpu");
  ASSERT_EQ(Run({"top", "pods", "--sort-by=cpu", "--no-headers"}), 0) << err_;
  EXPECT_EQ(out_,
            "web-0   9m          <unknown>\n"
            "web-1   <unknown>   <unknown>\n");
}

TEST_F(CliTest, TopWithoutStatsSaysWhatKubectlSays) {
  api_.Put(StatsNode("node-a", "2", "4Gi"));
  // No kubelet answers: kubectl's "metrics not available yet".
  EXPECT_EQ(Run({"top", "nodes"}), 1);
  EXPECT_EQ(err_, "error: metrics not available yet\n");
  // A pod with no stats yet: named with its age, as kubectl does.
  api_.Put(RunningPod("web-0", "node-a", 0));
  EXPECT_EQ(Run({"top", "pods"}), 1);
  EXPECT_EQ(err_, "error: Metrics not available for pod default/web-0, age: 5m0s\n");
  // No pods at all.
  ASSERT_EQ(Run({"top", "pods", "-n", "empty"}), 0) << err_;
  EXPECT_EQ(out_, "");
  EXPECT_EQ(err_, "No resources found in empty namespace.\n");
  EXPECT_EQ(Run({"top", "pod", "ghost"}), 1);
  EXPECT_EQ(err_, "Error from server (NotFound): pods \"ghost\" not found\n");
  // An API server without the stats call.
  api_.stats_unimplemented = true;
  EXPECT_EQ(Run({"top", "nodes"}), 1);
  EXPECT_EQ(err_, "error: Metrics API not available\n");
  EXPECT_EQ(Run({"top", "pods"}), 1);
  EXPECT_EQ(err_, "error: Metrics API not available\n");
  EXPECT_EQ(Run({"top", "frobs"}), 1);
  EXPECT_THAT(err_, HasSubstr("Usage: skiffctl top nodes|pods"));
  EXPECT_EQ(Run({"top", "pods", "--sort-by=name"}), 1);
  EXPECT_EQ(err_, "error: --sort-by accepts only cpu or memory\n");
}

TEST(HumanDuration, MatchesKubectl) {
  EXPECT_EQ(HumanDuration(5), "5s");
  EXPECT_EQ(HumanDuration(119), "119s");
  EXPECT_EQ(HumanDuration(130), "2m10s");
  EXPECT_EQ(HumanDuration(600), "10m");
  EXPECT_EQ(HumanDuration(3 * 3600 + 5 * 60), "3h5m");
  EXPECT_EQ(HumanDuration(10 * 3600), "10h");
  EXPECT_EQ(HumanDuration(3 * 86400 + 4 * 3600), "3d4h");
  EXPECT_EQ(HumanDuration(400 * 86400), "400d");
  EXPECT_EQ(HumanDuration(3 * 365 * 86400 + 10 * 86400), "3y10d");
  EXPECT_EQ(HumanDuration(-5), "<invalid>");
}

TEST(Selectors, ParseAndMatch) {
  google::protobuf::Map<std::string, std::string> labels;
  labels["app"] = "web";
  labels["tier"] = "front";
  auto s = ParseSelector("app=web,tier in (front, back),!legacy");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(SelectorMatches(*s, labels));
  auto t = ParseSelector("app!=web");
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(SelectorMatches(*t, labels));
}

}  // namespace
}  // namespace skiff::cli
