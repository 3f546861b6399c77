// The manifest codec: Kubernetes YAML/JSON in, protobuf objects out, and back.
#include "skiff/manifest/manifest.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skiff::manifest {
namespace {

using ::testing::HasSubstr;

constexpr char kDeployment[] = R"(apiVersion: apps/v1
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
  strategy:
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 25%
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
        readinessProbe:
          httpGet:
            path: /
            port: http
        livenessProbe:
          tcpSocket:
            port: 80
      volumes:
      - name: cfg
        configMap:
          name: cfg
          defaultMode: 0644
)";

TEST(ManifestDecode, DeploymentFieldsLandInTheProto) {
  auto docs = DecodeManifests(kDeployment, "web.yaml");
  ASSERT_TRUE(docs.ok()) << docs.status();
  ASSERT_EQ(docs->size(), 1u);
  const Object& obj = (*docs)[0].object;
  ASSERT_TRUE(obj.has_deployment());
  const auto& d = obj.deployment();
  EXPECT_EQ(d.metadata().name(), "nginx-deployment");
  EXPECT_EQ(d.spec().replicas(), 3);
  EXPECT_EQ(d.spec().strategy().rolling_update().max_surge(), "1");
  EXPECT_EQ(d.spec().strategy().rolling_update().max_unavailable(), "25%");
  const auto& c = d.spec().template_().spec().containers(0);
  EXPECT_EQ(c.image(), "nginx:1.14.2");
  EXPECT_EQ(c.ports(0).container_port(), 80);
  EXPECT_EQ(c.readiness_probe().http_get().port(), "http");
  EXPECT_EQ(c.liveness_probe().tcp_socket().port(), "80");
  EXPECT_EQ(d.spec().template_().spec().volumes(0).config_map().default_mode(), 0644);
  EXPECT_EQ(KindOf(obj)->resource, "deployments");
}

TEST(ManifestDecode, UnknownFieldNamesPathAndLine) {
  std::string bad = kDeployment;
  bad.replace(bad.find("image: nginx"), 5, "imagee");
  auto docs = DecodeManifests(bad, "web.yaml");
  ASSERT_FALSE(docs.ok());
  EXPECT_EQ(std::string(docs.status().message()),
            "error validating \"web.yaml\": error validating data: unknown field "
            "\"spec.template.spec.containers[0].imagee\" (line 23)");
}

TEST(ManifestDecode, SeveralUnknownFieldsAreAllReported) {
  auto docs = DecodeManifests("apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  nmae: b\nspex: {}\n", "p.yaml");
  ASSERT_FALSE(docs.ok());
  EXPECT_THAT(std::string(docs.status().message()), HasSubstr("[unknown field \"metadata.nmae\" (line 5), "
                                                              "unknown field \"spex\" (line 6)]"));
}

TEST(ManifestDecode, MalformedYamlShowsTheLine) {
  auto docs = DecodeManifests("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [a\n  x: y: z\n", "bad.yaml");
  ASSERT_FALSE(docs.ok());
  EXPECT_THAT(std::string(docs.status().message()), HasSubstr("error parsing bad.yaml: yaml: line "));
}

TEST(ManifestDecode, UnknownKindAndWrongApiVersion) {
  auto a = DecodeManifests("apiVersion: v1\nkind: Frobnicator\nmetadata: {name: x}\n", "f.yaml");
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(std::string(a.status().message()),
              HasSubstr("resource mapping not found for name: \"x\" namespace: \"\" from \"f.yaml\": no matches for "
                        "kind \"Frobnicator\" in version \"v1\""));
  auto b = DecodeManifests("apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n", "f.yaml");
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("no matches for kind \"Deployment\" in version \"v1\""));
  auto c = DecodeManifests("kind: Pod\nmetadata: {name: x}\n", "f.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("apiVersion not set"));
  auto d = DecodeManifests("apiVersion: v1\nmetadata: {name: x}\n", "f.yaml");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("kind not set"));
}

TEST(ManifestDecode, MissingNameIsRequired) {
  auto docs = DecodeManifests("apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n", "cm.yaml");
  ASSERT_TRUE(docs.ok()) << docs.status();
  auto st = RequireName((*docs)[0]);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("ConfigMap: metadata.name: Required value"));
}

TEST(ManifestDecode, WrongTypesAreErrorsWithLine) {
  auto docs = DecodeManifests(
      "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: \"3\"\n  paused: maybe\n", "d.yaml");
  ASSERT_FALSE(docs.ok());
  std::string msg(docs.status().message());
  EXPECT_THAT(msg, HasSubstr("invalid type for field \"spec.replicas\": expected integer, got string \"3\" (line 5)"));
  EXPECT_THAT(msg, HasSubstr("\"spec.paused\": expected boolean"));
  auto big = DecodeManifests("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports:\n  - port: 99999999999\n",
                             "s.yaml");
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("out of range"));
}

TEST(ManifestDecode, SecretDataIsBase64AndStringDataMerges) {
  auto docs = DecodeManifests(
      "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  user: YWRtaW4=\nstringData:\n  pass: hunter2\n",
      "s.yaml");
  ASSERT_TRUE(docs.ok()) << docs.status();
  const auto& s = (*docs)[0].object.secret();
  EXPECT_EQ(s.data().at("user"), "admin");
  EXPECT_EQ(s.data().at("pass"), "hunter2");
  auto bad = DecodeManifests("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  user: '!!'\n", "s.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("illegal base64 data"));
}

TEST(ManifestDecode, JsonMultiDocumentAndListsWork) {
  auto json = DecodeManifests(
      R"({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
          "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "web"}, "clusterIP": "None"}})",
      "s.json");
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ((*json)[0].object.service().spec().ports(0).target_port(), "8080");
  EXPECT_EQ((*json)[0].object.service().spec().cluster_ip(), "None");

  auto multi = DecodeManifests(
      "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: List\nitems:\n"
      "- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n---\n",
      "m.yaml");
  ASSERT_TRUE(multi.ok()) << multi.status();
  ASSERT_EQ(multi->size(), 2u);
  EXPECT_TRUE((*multi)[1].object.has_namespace_());
}

TEST(ManifestEncode, YamlIsKubectlShaped) {
  auto docs = DecodeManifests(kDeployment, "web.yaml");
  ASSERT_TRUE(docs.ok()) << docs.status();
  std::string yaml = ObjectToYaml((*docs)[0].object);
  EXPECT_EQ(yaml, R"(apiVersion: apps/v1
kind: Deployment
metadata:
  labels:
    app: nginx
  name: nginx-deployment
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  strategy:
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 25%
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - image: nginx:1.14.2
        livenessProbe:
          tcpSocket:
            port: 80
        name: nginx
        ports:
        - containerPort: 80
        readinessProbe:
          httpGet:
            path: /
            port: http
      volumes:
      - configMap:
          defaultMode: 420
          name: cfg
        name: cfg
)");
  // And it reads back to the same object.
  auto again = DecodeManifests(yaml, "out.yaml");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)[0].object.SerializeAsString(), (*docs)[0].object.SerializeAsString());
}

TEST(ManifestEncode, StringsThatLookLikeOtherTypesAreQuoted) {
  Value v = Value::Map();
  v.Set("a", Value::String("123"));
  v.Set("b", Value::String("true"));
  v.Set("c", Value::String(""));
  v.Set("d", Value::String("x: y"));
  v.Set("e", Value::String("2026-11-22T06:44:28Z"));
  v.Set("f", Value::String("line1\nline2\n"));
  v.Set("g", Value::String("*"));
  EXPECT_EQ(ToYaml(v), "a: \"123\"\nb: \"true\"\nc: \"\"\nd: 'x: y'\ne: \"2026-11-22T06:44:28Z\"\nf: |\n  line1\n  line2\ng: '*'\n");
  auto back = ParseValue(ToYaml(v), "x");
  ASSERT_TRUE(back.ok());
  for (const auto& [k, val] : v.entries()) {
    ASSERT_NE(back->Find(k), nullptr) << k;
    EXPECT_EQ(back->Find(k)->text(), val.text()) << k;
    EXPECT_TRUE(back->Find(k)->is_string()) << k;
  }
}

TEST(ManifestEncode, JsonIsSortedAndIndented) {
  Object obj = NewObject(*FindResource("cm"));
  obj.mutable_config_map()->mutable_metadata()->set_name("cfg");
  (*obj.mutable_config_map()->mutable_data())["k"] = "<v>";
  EXPECT_EQ(ObjectToJson(obj), R"({
    "apiVersion": "v1",
    "data": {
        "k": "\u003cv\u003e"
    },
    "kind": "ConfigMap",
    "metadata": {
        "name": "cfg"
    }
}
)");
}

TEST(ManifestKinds, ShortNamesAndGroups) {
  EXPECT_EQ(FindResource("po")->kind, "Pod");
  EXPECT_EQ(FindResource("deploy")->kind, "Deployment");
  EXPECT_EQ(FindResource("deployments.apps")->kind, "Deployment");
  EXPECT_EQ(FindResource("svc")->resource, "services");
  EXPECT_EQ(FindResource("Node")->resource, "nodes");
  EXPECT_FALSE(FindResource("no")->namespaced);
  EXPECT_EQ(FindResource("frob"), nullptr);
  EXPECT_EQ(FindResource("deployments.core"), nullptr);
}

TEST(ManifestRead, FilesDirectoriesRecursionAndStdin) {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("skiff-manifest-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir / "sub");
  std::ofstream(dir / "a.yaml") << "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";
  std::ofstream(dir / "notes.txt") << "not a manifest";
  std::ofstream(dir / "sub" / "b.json") << R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}})";
  std::istringstream in("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n");
  auto flat = ReadManifests({dir.string()}, false, in);
  auto deep = ReadManifests({dir.string(), "-"}, true, in);
  auto missing = ReadManifests({(dir / "nope.yaml").string()}, false, in);
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(flat.ok()) << flat.status();
  EXPECT_EQ(flat->size(), 1u);
  ASSERT_TRUE(deep.ok()) << deep.status();
  ASSERT_EQ(deep->size(), 3u);
  EXPECT_EQ((*deep)[2].source, "STDIN");
  EXPECT_EQ((*deep)[2].object.config_map().metadata().name(), "c");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("does not exist"));
}

TEST(MergePatch, NullDeletesMapsMergeOthersReplace) {
  auto target = ParseValue("{a: 1, b: {c: 2, d: 3}, e: [1, 2]}", "t");
  auto patch = ParseValue("{a: null, b: {c: 5}, e: [3]}", "p");
  ASSERT_TRUE(target.ok() && patch.ok());
  EXPECT_EQ(ToJson(ApplyMergePatch(*target, *patch), 0), R"({"b":{"c":5,"d":3},"e":[3]})");
}

}  // namespace
}  // namespace skiff::manifest
