// The agent-wide health (kube-proxy's :10256 /healthz and /livez) on a
// controlled clock.
#include "skiff/proxy/health.h"

#include "gtest/gtest.h"

namespace skiff::proxy {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::system_clock;

TEST(ProxierHealth, HealthyUntilAQueuedUpdateWaitsLongerThanTheTimeout) {
  system_clock::time_point now = system_clock::time_point(seconds(1700000000));
  ProxierHealth h(seconds(60), [&] { return now; });
  // Starting up with nothing queued: healthy, as kube-proxy.
  EXPECT_EQ(h.Healthz().code, 200);
  h.QueuedUpdate();
  now += seconds(59);
  EXPECT_TRUE(h.Healthy());
  h.QueuedUpdate();  // a later change does not move the oldest one
  now += seconds(2);
  EXPECT_FALSE(h.Healthy());
  ProxierHealth::Answer a = h.Healthz();
  EXPECT_EQ(a.code, 503);
  // Never programmed: the zero time, as Go prints it.
  EXPECT_EQ(a.body,
            "{\"lastUpdated\": \"0001-01-01 00:00:00 +0000 UTC\",\"currentTime\": \"2023-11-14 22:14:21 +0000 UTC\", "
            "\"nodeEligible\": true}");
  EXPECT_EQ(h.Livez().code, 503);
  EXPECT_EQ(h.Livez().body.find("nodeEligible"), std::string::npos);
  h.Updated();
  EXPECT_EQ(h.Healthz().code, 200);
  EXPECT_EQ(h.Livez().code, 200);
  // Programmed once, then stuck: lastUpdated is the last success.
  h.QueuedUpdate();
  now += milliseconds(60500);
  a = h.Healthz();
  EXPECT_EQ(a.code, 503);
  EXPECT_NE(a.body.find("\"lastUpdated\": \"2023-11-14 22:14:21 +0000 UTC\""), std::string::npos) << a.body;
  EXPECT_NE(a.body.find("\"currentTime\": \"2023-11-14 22:15:21.5 +0000 UTC\""), std::string::npos) << a.body;
}

TEST(ProxierHealth, HealthyAnswerReportsLastUpdatedAsNow) {
  system_clock::time_point now = system_clock::time_point(seconds(1700000000) + milliseconds(250));
  ProxierHealth h(seconds(60), [&] { return now; });
  h.QueuedUpdate();
  h.Updated();
  now += seconds(3600);
  ProxierHealth::Answer a = h.Healthz();
  EXPECT_EQ(a.code, 200);
  EXPECT_EQ(a.body,
            "{\"lastUpdated\": \"2023-11-14 23:13:20.25 +0000 UTC\",\"currentTime\": \"2023-11-14 23:13:20.25 +0000 "
            "UTC\", \"nodeEligible\": true}");
}

}  // namespace
}  // namespace skiff::proxy
