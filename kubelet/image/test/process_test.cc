#include <gtest/gtest.h>

#include "skiff/image/store.h"

namespace skiff::image {
namespace {

ImageConfig Nginxish() {
  ImageConfig c;
  c.entrypoint = {"/docker-entrypoint.sh"};
  c.cmd = {"nginx", "-g", "daemon off;"};
  c.env = {"PATH=/usr/bin:/bin", "NGINX_VERSION=1.25"};
  c.working_dir = "/srv";
  c.user = "101";
  return c;
}

TEST(ResolveProcess, FollowsKubernetesCommandAndArgsRules) {
  auto img = Nginxish();
  EXPECT_EQ(ResolveProcess(img, {}, {}, {}, "").argv,
            (std::vector<std::string>{"/docker-entrypoint.sh", "nginx", "-g", "daemon off;"}));
  EXPECT_EQ(ResolveProcess(img, {}, {"echo", "hi"}, {}, "").argv,
            (std::vector<std::string>{"/docker-entrypoint.sh", "echo", "hi"}));
  EXPECT_EQ(ResolveProcess(img, {"/bin/sh"}, {}, {}, "").argv, (std::vector<std::string>{"/bin/sh"}));
  EXPECT_EQ(ResolveProcess(img, {"/bin/sh"}, {"-c", "x"}, {}, "").argv,
            (std::vector<std::string>{"/bin/sh", "-c", "x"}));
}

TEST(ResolveProcess, PodEnvAndWorkingDirOverrideTheImage) {
  auto p = ResolveProcess(Nginxish(), {}, {}, {{"NGINX_VERSION", "9"}, {"EXTRA", "1"}}, "/work");
  EXPECT_EQ(p.env, (std::vector<std::string>{"PATH=/usr/bin:/bin", "NGINX_VERSION=9", "EXTRA=1"}));
  EXPECT_EQ(p.working_dir, "/work");
  EXPECT_EQ(p.user, "101");
  EXPECT_EQ(ResolveProcess(Nginxish(), {}, {}, {}, "").working_dir, "/srv");
  EXPECT_EQ(ResolveProcess(ImageConfig{}, {}, {}, {}, "").working_dir, "/");
}

TEST(PullPolicy, DefaultsLikeKubernetes) {
  EXPECT_EQ(DefaultPullPolicy("busybox"), PullPolicy::kAlways);
  EXPECT_EQ(DefaultPullPolicy("busybox:latest"), PullPolicy::kAlways);
  EXPECT_EQ(DefaultPullPolicy("127.0.0.1:5000/x"), PullPolicy::kAlways);
  EXPECT_EQ(DefaultPullPolicy("127.0.0.1:5000/x:1.2"), PullPolicy::kIfNotPresent);
  EXPECT_EQ(DefaultPullPolicy("x@sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            PullPolicy::kIfNotPresent);
  EXPECT_EQ(ParsePullPolicy("Never", "busybox"), PullPolicy::kNever);
  EXPECT_EQ(ParsePullPolicy("", "busybox:1"), PullPolicy::kIfNotPresent);
}

TEST(PullBackOff, DoublesFromTenSecondsToFiveMinutes) {
  PullBackOff b;
  auto t = PullBackOff::Clock::time_point{} + std::chrono::hours(1);
  EXPECT_FALSE(b.InBackOff("img", t));
  std::vector<int> delays;
  for (int i = 0; i < 7; ++i) {
    b.Failed("img", t);
    delays.push_back(static_cast<int>(b.Delay("img").count()));
  }
  EXPECT_EQ(delays, (std::vector<int>{10, 20, 40, 80, 160, 300, 300}));
  EXPECT_TRUE(b.InBackOff("img", t + std::chrono::seconds(299)));
  EXPECT_FALSE(b.InBackOff("img", t + std::chrono::seconds(300)));
  b.Succeeded("img");
  EXPECT_EQ(b.Delay("img").count(), 0);
}

}  // namespace
}  // namespace skiff::image
