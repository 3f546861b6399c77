// A three-host lab used the way cluster tests use it: a service on one host,
// clients on the others, and a partition that isolates one host.
#include <unistd.h>

#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "lab.h"

namespace skiff::lab {
namespace {

bool Fetch(const Lab& lab, int from, const std::string& url, std::string* body) {
  auto r = lab.Run(from, {"curl", "-sS", "--max-time", "2", url});
  if (body) *body = r.output;
  return r.exit_code == 0;
}

TEST(LabCluster, PartitionIsolatesOneHostAndHeals) {
  if (geteuid() != 0) GTEST_SKIP() << "the lab needs root";
  auto lab = Lab::Create(3);
  ASSERT_TRUE(lab.ok()) << lab.status();
  const Host& h2 = (*lab)->host(2);
  const Host& h3 = (*lab)->host(3);

  // An HTTP server on h2 and one on h3, each serving its own name.
  for (const Host* h : {&h2, &h3}) {
    std::string www = h->dir + "/root/www";
    ASSERT_EQ(Lab::RunOnMachine({"mkdir", "-p", www}).exit_code, 0);
    ASSERT_EQ(Lab::RunOnMachine({"sh", "-c", "echo " + h->name + " > " + www + "/index.html"}).exit_code, 0);
  }
  auto s2 = (*lab)->Start(2, {"busybox", "httpd", "-f", "-p", "8080", "-h", h2.dir + "/root/www"}, "/dev/null");
  auto s3 = (*lab)->Start(3, {"busybox", "httpd", "-f", "-p", "8080", "-h", h3.dir + "/root/www"}, "/dev/null");
  ASSERT_TRUE(s2.ok() && s3.ok());

  std::string body;
  bool ok = false;
  for (int i = 0; i < 50 && !ok; ++i) {
    ok = Fetch(**lab, 1, "http://" + h2.address + ":8080/", &body);
    if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(ok) << body;
  EXPECT_EQ(body, "h2\n");
  ASSERT_TRUE(Fetch(**lab, 1, "http://" + h3.address + ":8080/", &body));
  EXPECT_EQ(body, "h3\n");

  ASSERT_TRUE((*lab)->Cut(3).ok());
  EXPECT_FALSE(Fetch(**lab, 1, "http://" + h3.address + ":8080/", nullptr));
  EXPECT_FALSE(Fetch(**lab, 2, "http://" + h3.address + ":8080/", nullptr));
  EXPECT_TRUE(Fetch(**lab, 1, "http://" + h2.address + ":8080/", nullptr)) << "h1-h2 must survive the partition";

  ASSERT_TRUE((*lab)->Restore(3).ok());
  ok = false;
  for (int i = 0; i < 30 && !ok; ++i) ok = Fetch(**lab, 1, "http://" + h3.address + ":8080/", nullptr);
  EXPECT_TRUE(ok) << "h3 did not come back";
}

}  // namespace
}  // namespace skiff::lab
