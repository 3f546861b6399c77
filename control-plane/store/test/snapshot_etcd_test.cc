// Snapshots between skiff-store and a real etcd, both ways, with the real
// etcdctl (Debian's etcd-client 3.4): `etcdctl snapshot save` from
// skiff-store, `snapshot status`, `snapshot restore` and a real etcd serving
// the restored dir the same history (the migration to an etcd cluster); and
// a real etcd's snapshot restored by `skiff-store snapshot restore` (the way
// back). Loopback only, ports from the kernel, scratch dirs per pid.
#include <filesystem>
#include <regex>

#include "gtest/gtest.h"
#include "test_process.h"

namespace skiff::store::testing {
namespace {

// Masks what differs between two members serving the same data.
std::string Normalize(std::string s) {
  s = std::regex_replace(s, std::regex(R"("cluster_id":\d+,"member_id":\d+)"),
                         R"("cluster_id":C,"member_id":M)");
  s = std::regex_replace(s, std::regex(R"("raft_term":\d+)"), R"("raft_term":T)");
  s = std::regex_replace(s, std::regex(R"(remaining\(\d+s\))"), "remaining(Ns)");
  return s;
}

// The same history on any server: puts, overwrites, a delete, a big value,
// a lease with a key, a compaction at 8. Returns the lease ID (hex).
std::string WriteHistory(const Server& s) {
  auto run = [&](std::vector<std::string> args) {
    CmdResult r = Etcdctl(s.endpoint(), args);
    EXPECT_EQ(r.code, 0) << args[0] << ": " << r.err;
    return r.out;
  };
  for (const char* k : {"a", "b", "c", "d", "e"}) run({"put", k, std::string("v-") + k});  // 2..6
  run({"put", "a", "a2"});                                                                 // 7
  run({"put", "b", std::string(9000, 'B')});  // 8: overflow pages
  run({"del", "c"});                          // 9
  std::smatch m;
  std::string grant = run({"lease", "grant", "600"});
  EXPECT_TRUE(std::regex_search(grant, m, std::regex("lease ([0-9a-f]+) granted"))) << grant;
  std::string lease = m.size() > 1 ? m[1].str() : "0";
  run({"put", "l1", "x", "--lease=" + lease});  // 10
  run({"put", "l2", "y"});                      // 11
  run({"compact", "8"});
  return lease;
}

// The commands whose output must be the same on both servers.
std::vector<std::vector<std::string>> Probes(const std::string& lease) {
  return {{"get", "", "--prefix", "-w", "json"},
          {"get", "", "--prefix", "--rev", "9", "-w", "json"},
          {"get", "a", "--rev", "8", "-w", "json"},
          {"get", "c", "--rev", "8", "-w", "json"},
          {"get", "a", "--rev", "5"},              // compacted
          {"get", "", "--prefix", "--rev", "12"},  // future
          {"lease", "timetolive", lease, "--keys"},
          {"lease", "list"}};
}

void ExpectSameAnswers(const Server& want, const Server& got, const std::string& lease) {
  // Both answer with the history, not with the same error.
  for (const Server* s : {&want, &got}) {
    CmdResult all = Etcdctl(s->endpoint(), {"get", "", "--prefix", "--keys-only"});
    EXPECT_EQ(all.out, "a\n\nb\n\nd\n\ne\n\nl1\n\nl2\n\n") << all.err;
  }
  for (const auto& args : Probes(lease)) {
    std::string what;
    for (const auto& a : args) what += a + " ";
    CmdResult a = Etcdctl(want.endpoint(), args), b = Etcdctl(got.endpoint(), args);
    EXPECT_EQ(a.code, b.code) << what << "\nwant: " << a.err << "\ngot: " << b.err;
    EXPECT_EQ(Normalize(a.out), Normalize(b.out)) << what;
    EXPECT_EQ(ErrorLine(a.err), ErrorLine(b.err)) << what;
  }
}

std::string TestName() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

TEST(SnapshotMigration, SkiffSnapshotHasRightStatusAndRestoresIntoARealEtcd) {
  ScratchDir dir("snap-" + TestName());
  Server ours = StartSkiffStore(dir.sub("skiff"), dir.sub("skiff.log"));
  ASSERT_GT(ours.child.pid(), 0) << "skiff-store did not start";
  const std::string lease = WriteHistory(ours);
  const std::string snap = dir.sub("skiff.snap");
  CmdResult save = Etcdctl(ours.endpoint(), {"snapshot", "save", snap});
  ASSERT_EQ(save.code, 0) << save.err;

  // key: a@7 b@8 c@4 d@5 e@6 (kept by the compaction at 8), c's tombstone,
  // l1, l2; lease: 1; meta: consistent_index and both compaction marks;
  // auth: authRevision.
  CmdResult status = Etcdctl(ours.endpoint(), {"snapshot", "status", snap, "-w", "json"});
  ASSERT_EQ(status.code, 0) << status.err;
  EXPECT_NE(status.out.find("\"revision\":11,"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("\"totalKey\":13,"), std::string::npos) << status.out;

  const int peer = FreePort();
  const std::string peer_url = "http://127.0.0.1:" + std::to_string(peer);
  CmdResult restore =
      Etcdctl(ours.endpoint(),
              {"snapshot", "restore", snap, "--data-dir", dir.sub("etcd"), "--name", "default",
               "--initial-cluster", "default=" + peer_url, "--initial-advertise-peer-urls", peer_url});
  ASSERT_EQ(restore.code, 0) << restore.err;
  Server etcd = StartEtcd(dir.sub("etcd"), dir.sub("etcd.log"), peer);
  ASSERT_GT(etcd.child.pid(), 0) << "etcd did not start on the restored data dir";
  ExpectSameAnswers(ours, etcd, lease);
  // The restored etcd goes on from the snapshot's revision.
  CmdResult put = Etcdctl(etcd.endpoint(), {"put", "after", "restore", "-w", "json"});
  EXPECT_NE(put.out.find("\"revision\":12"), std::string::npos) << put.out << put.err;
}

TEST(SnapshotMigration, RealEtcdSnapshotRestoresIntoSkiffStore) {
  ScratchDir dir("snap-" + TestName());
  Server etcd = StartEtcd(dir.sub("etcd"), dir.sub("etcd.log"));
  ASSERT_GT(etcd.child.pid(), 0) << "etcd did not start";
  const std::string lease = WriteHistory(etcd);
  // A user (auth off): carried over.
  ASSERT_EQ(Etcdctl(etcd.endpoint(), {"user", "add", "alice:secret"}).code, 0);
  const std::string snap = dir.sub("etcd.snap");
  CmdResult save = Etcdctl(etcd.endpoint(), {"snapshot", "save", snap});
  ASSERT_EQ(save.code, 0) << save.err;

  // A truncated copy is refused with a clear error and leaves no data dir.
  {
    std::filesystem::copy_file(snap, dir.sub("truncated.snap"));
    std::filesystem::resize_file(dir.sub("truncated.snap"), std::filesystem::file_size(snap) / 2);
    Child bad({BinDir() + "/skiff-store", "snapshot", "restore", dir.sub("truncated.snap"), "--data-dir",
               dir.sub("bad")},
              dir.sub("bad.log"));
    EXPECT_NE(bad.Wait(), 0);
    std::ifstream in(dir.sub("bad.log"));
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_NE(ss.str().find("Error: snapshot"), std::string::npos) << ss.str();
    EXPECT_FALSE(std::filesystem::exists(dir.sub("bad")));
  }

  Child restore({BinDir() + "/skiff-store", "snapshot", "restore", snap, "--data-dir", dir.sub("skiff")},
                dir.sub("restore.log"));
  ASSERT_EQ(restore.Wait(), 0);
  Server ours = StartSkiffStore(dir.sub("skiff"), dir.sub("skiff.log"));
  ASSERT_GT(ours.child.pid(), 0) << "skiff-store did not start on the restored data dir";
  ExpectSameAnswers(etcd, ours, lease);
  EXPECT_EQ(Etcdctl(ours.endpoint(), {"user", "list"}).out, "alice\n");
  CmdResult put = Etcdctl(ours.endpoint(), {"put", "after", "restore", "-w", "json"});
  EXPECT_NE(put.out.find("\"revision\":12"), std::string::npos) << put.out << put.err;
}

// Auth travels with snapshots both ways, as in etcd's own snapshots: users
// (each side reads the other's bcrypt hashes), roles, permissions and the
// enabled flag. skiff-store with auth on → snapshot → a real etcd; a user
// added there → etcd's snapshot → skiff-store; the same commands answer the
// same on all three.
TEST(SnapshotMigration, AuthTravelsWithSnapshotsBothWays) {
  ScratchDir dir("snap-" + TestName());
  Server ours = StartSkiffStore(dir.sub("skiff"), dir.sub("skiff.log"));
  ASSERT_GT(ours.child.pid(), 0) << "skiff-store did not start";
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"user", "add", "root:rootpw"},
           {"role", "add", "root"},
           {"user", "grant-role", "root", "root"},
           {"user", "add", "alice:apw"},
           {"role", "add", "reader"},
           {"role", "grant-permission", "reader", "read", "/a", "--prefix"},
           {"user", "grant-role", "alice", "reader"},
           {"put", "/a/1", "one"},
           {"put", "/b/1", "two"},
           {"auth", "enable"}}) {
    CmdResult r = Etcdctl(ours.endpoint(), args);
    ASSERT_EQ(r.code, 0) << args[0] << " " << args[1] << ": " << r.err;
  }
  auto answers = [](const Server& s) {
    std::vector<std::string> out;
    for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
             {"get", "/a/1"},
             {"--user", "alice:apw", "get", "/a/1", "--print-value-only"},
             {"--user", "alice:apw", "get", "/b/1"},
             {"--user", "alice:wrong", "get", "/a/1"},
             {"--user", "root:rootpw", "user", "list"},
             {"--user", "root:rootpw", "role", "get", "reader"},
             {"--user", "root:rootpw", "user", "get", "alice"}}) {
      CmdResult r = Etcdctl(s.endpoint(), args);
      out.push_back(std::to_string(r.code) + " " + r.out + ErrorLine(r.err));
    }
    return out;
  };
  const std::vector<std::string> want = answers(ours);
  EXPECT_EQ(want[0], "1 Error: etcdserver: user name is empty");
  EXPECT_EQ(want[1], "0 one\n");
  EXPECT_EQ(want[2], "1 Error: etcdserver: permission denied");

  const std::string snap = dir.sub("skiff.snap");
  ASSERT_EQ(Etcdctl(ours.endpoint(), {"--user", "root:rootpw", "snapshot", "save", snap}).code, 0);
  const int peer = FreePort();
  const std::string peer_url = "http://127.0.0.1:" + std::to_string(peer);
  CmdResult restore = Etcdctl(ours.endpoint(), {"snapshot", "restore", snap, "--data-dir", dir.sub("etcd"), "--name",
                                                "default", "--initial-cluster", "default=" + peer_url,
                                                "--initial-advertise-peer-urls", peer_url});
  ASSERT_EQ(restore.code, 0) << restore.err;
  Server etcd = StartEtcd(dir.sub("etcd"), dir.sub("etcd.log"), peer);
  ASSERT_GT(etcd.child.pid(), 0) << "etcd did not start on the restored data dir";
  EXPECT_EQ(answers(etcd), want);

  // A user etcd hashed, back into skiff-store.
  ASSERT_EQ(Etcdctl(etcd.endpoint(), {"--user", "root:rootpw", "user", "add", "bob:bpw"}).code, 0);
  ASSERT_EQ(Etcdctl(etcd.endpoint(), {"--user", "root:rootpw", "user", "grant-role", "bob", "reader"}).code, 0);
  const std::string back = dir.sub("etcd.snap");
  ASSERT_EQ(Etcdctl(etcd.endpoint(), {"--user", "root:rootpw", "snapshot", "save", back}).code, 0);
  Child r2({BinDir() + "/skiff-store", "snapshot", "restore", back, "--data-dir", dir.sub("skiff2")},
           dir.sub("restore2.log"));
  ASSERT_EQ(r2.Wait(), 0);
  Server ours2 = StartSkiffStore(dir.sub("skiff2"), dir.sub("skiff2.log"));
  ASSERT_GT(ours2.child.pid(), 0) << "skiff-store did not start on etcd's snapshot";
  std::vector<std::string> want2 = answers(etcd);
  EXPECT_EQ(answers(ours2), want2);
  CmdResult bob = Etcdctl(ours2.endpoint(), {"--user", "bob:bpw", "get", "/a/1", "--print-value-only"});
  EXPECT_EQ(bob.out, "one\n") << bob.err;
}

// Thousands of keys: leaf pages under two levels of branch pages, values in
// overflow pages, checked by bbolt itself (`snapshot status` runs bbolt's
// consistency check), restored into etcd, and etcd's own file of the same
// data (its page layout, no freelist) restored back into skiff-store.
TEST(SnapshotMigration, ManyPagesRoundTripThroughRealEtcdAndBack) {
  ScratchDir dir("snap-" + TestName());
  Server ours = StartSkiffStore(dir.sub("skiff"), dir.sub("skiff.log"));
  ASSERT_GT(ours.child.pid(), 0) << "skiff-store did not start";
  constexpr int kTxns = 40, kPerTxn = 100;
  for (int t = 0; t < kTxns; ++t) {
    std::string ops = "\n";  // no compares, then the success ops
    for (int i = 0; i < kPerTxn; ++i) {
      char key[32];
      std::snprintf(key, sizeof key, "bulk/%05d", t * kPerTxn + i);
      ops += std::string("put ") + key + " " +
             std::string(i % 10 == 0 ? 6000 : 150, static_cast<char>('a' + t % 26)) + "\n";
    }
    ops += "\n\n";
    ASSERT_EQ(Etcdctl(ours.endpoint(), {"txn"}, ops).code, 0);
  }
  const std::string snap = dir.sub("skiff.snap");
  ASSERT_EQ(Etcdctl(ours.endpoint(), {"snapshot", "save", snap}).code, 0);
  CmdResult status = Etcdctl(ours.endpoint(), {"snapshot", "status", snap, "-w", "json"});
  ASSERT_EQ(status.code, 0) << status.err;
  EXPECT_NE(status.out.find("\"revision\":" + std::to_string(kTxns + 1) + ","), std::string::npos)
      << status.out;
  // Every key, plus consistent_index and authRevision.
  EXPECT_NE(status.out.find("\"totalKey\":" + std::to_string(kTxns * kPerTxn + 2) + ","), std::string::npos)
      << status.out;

  const int peer = FreePort();
  const std::string peer_url = "http://127.0.0.1:" + std::to_string(peer);
  ASSERT_EQ(Etcdctl(ours.endpoint(),
                    {"snapshot", "restore", snap, "--data-dir", dir.sub("etcd"), "--name", "default",
                     "--initial-cluster", "default=" + peer_url, "--initial-advertise-peer-urls", peer_url})
                .code,
            0);
  Server etcd = StartEtcd(dir.sub("etcd"), dir.sub("etcd.log"), peer);
  ASSERT_GT(etcd.child.pid(), 0) << "etcd did not start on the restored data dir";
  const std::vector<std::string> all = {"get", "bulk/", "--prefix", "-w", "json"};
  CmdResult want = Etcdctl(ours.endpoint(), all);
  EXPECT_NE(want.out.find("\"count\":" + std::to_string(kTxns * kPerTxn)), std::string::npos);
  // Past the header (member IDs differ); std::regex on a megabyte is slow.
  auto kvs = [](const std::string& json) { return json.substr(std::min(json.find("\"kvs\""), json.size())); };
  EXPECT_EQ(kvs(Etcdctl(etcd.endpoint(), all).out), kvs(want.out));

  const std::string esnap = dir.sub("etcd.snap");
  ASSERT_EQ(Etcdctl(etcd.endpoint(), {"snapshot", "save", esnap}).code, 0);
  Child restore({BinDir() + "/skiff-store", "snapshot", "restore", esnap, "--data-dir", dir.sub("skiff2")},
                dir.sub("restore.log"));
  ASSERT_EQ(restore.Wait(), 0);
  Server back = StartSkiffStore(dir.sub("skiff2"), dir.sub("skiff2.log"));
  ASSERT_GT(back.child.pid(), 0) << "skiff-store did not start on the restored data dir";
  EXPECT_EQ(kvs(Etcdctl(back.endpoint(), all).out), kvs(want.out));
}

}  // namespace
}  // namespace skiff::store::testing
