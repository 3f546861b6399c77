// skiff-image: the image store from the command line, for skiffctl, make-up
// scripts and operators.
//
//   skiff-image [--root DIR] [--insecure-registry HOST:PORT]... [--credentials FILE]
//               [--concurrency N] [-v] VERB ARGS
//   pull REF | import ARCHIVE [NAME] | list | inspect REF | rm REF...
//   gc [--high PCT] [--low PCT] [--in-use DIGEST,...] | mount REF DIR | umount DIR
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "skiff/common/log.h"
#include "skiff/image/progress_bar.h"
#include "skiff/image/store.h"

namespace {

using skiff::image::Image;

int Usage() {
  std::cerr << "usage: skiff-image [--root DIR] [--insecure-registry HOST]... [--credentials FILE]\n"
               "                   [--concurrency N] [-v] VERB ARGS\n"
               "verbs: pull REF | import ARCHIVE [NAME] | list | inspect REF | rm REF... |\n"
               "       gc [--high PCT] [--low PCT] [--in-use DIGEST,...] | mount REF DIR | umount DIR\n";
  return 2;
}

int Fail(const absl::Status& st) {
  std::cerr << "skiff-image: " << st.message() << " (reason " << skiff::image::KubeletReason(st) << ")\n";
  return 1;
}

nlohmann::json ToJson(const Image& img) {
  return {{"ref", img.ref},
          {"digest", img.digest},
          {"configDigest", img.config_digest},
          {"size", img.size_bytes},
          {"layers", img.layer_dirs},
          {"config",
           {{"entrypoint", img.config.entrypoint},
            {"cmd", img.config.cmd},
            {"env", img.config.env},
            {"workingDir", img.config.working_dir},
            {"user", img.config.user}}}};
}

std::string HumanSize(int64_t b) {
  char buf[32];
  if (b >= (1 << 20)) std::snprintf(buf, sizeof buf, "%.1fMB", static_cast<double>(b) / (1 << 20));
  else std::snprintf(buf, sizeof buf, "%.1fkB", static_cast<double>(b) / 1024);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  skiff::log::Init("skiff-image");
  std::string root = skiff::image::Store::kDefaultRoot;
  skiff::image::Options opts;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--root") root = value();
    else if (a == "--insecure-registry") opts.insecure_registries.push_back(value());
    else if (a == "--credentials") opts.credentials_file = value();
    else if (a == "--concurrency") opts.max_concurrent_downloads = std::atoi(value().c_str());
    else if (a == "-v") skiff::log::SetLevel(skiff::log::Level::kDebug);
    else if (a == "-h" || a == "--help") return Usage();
    else args.push_back(a);
  }
  if (args.empty()) return Usage();
  auto store = skiff::image::Store::Open(root, opts);
  if (!store.ok()) return Fail(store.status());
  auto& s = **store;
  const std::string verb = args[0];

  if (verb == "pull" && args.size() == 2) {
    skiff::image::PullOptions po;
    std::unique_ptr<skiff::image::ProgressBar> bar;
    if (::isatty(STDERR_FILENO)) {
      bar = std::make_unique<skiff::image::ProgressBar>(STDERR_FILENO, args[1]);
      po.progress = bar->Callback();
    }
    auto img = s.Pull(args[1], po);
    if (bar) bar->Finish();
    if (!img.ok()) return Fail(img.status());
    std::cout << img->ref << " " << img->digest << "\n";
    return 0;
  }
  if (verb == "import" && (args.size() == 2 || args.size() == 3)) {
    auto imgs = s.Import(args[1], args.size() == 3 ? args[2] : "");
    if (!imgs.ok()) return Fail(imgs.status());
    for (const auto& img : *imgs) std::cout << (img.ref.empty() ? "<none>" : img.ref) << " " << img.digest << "\n";
    return 0;
  }
  if (verb == "list" && args.size() == 1) {
    auto imgs = s.List();
    if (!imgs.ok()) return Fail(imgs.status());
    std::printf("%-60s %-19s %s\n", "IMAGE", "DIGEST", "SIZE");
    for (const auto& img : *imgs) {
      std::printf("%-60s %-19s %s\n", img.ref.empty() ? "<none>" : img.ref.c_str(), img.digest.substr(0, 19).c_str(),
                  HumanSize(img.size_bytes).c_str());
    }
    return 0;
  }
  if (verb == "inspect" && args.size() == 2) {
    auto img = s.Get(args[1]);
    if (!img.ok()) return Fail(img.status());
    std::cout << ToJson(*img).dump(2) << "\n";
    return 0;
  }
  if (verb == "rm" && args.size() >= 2) {
    int rc = 0;
    for (size_t i = 1; i < args.size(); ++i) {
      auto st = s.Remove(args[i]);
      if (!st.ok()) rc = Fail(st);
    }
    return rc;
  }
  if (verb == "gc") {
    int high = 85, low = 80;
    std::set<std::string> in_use;
    for (size_t i = 1; i < args.size(); ++i) {
      if (args[i] == "--high" && i + 1 < args.size()) high = std::atoi(args[++i].c_str());
      else if (args[i] == "--low" && i + 1 < args.size()) low = std::atoi(args[++i].c_str());
      else if (args[i] == "--in-use" && i + 1 < args.size()) {
        std::string list = args[++i];
        size_t p = 0;
        while (p <= list.size()) {
          size_t c = list.find(',', p);
          if (c == std::string::npos) c = list.size();
          if (c > p) in_use.insert(list.substr(p, c - p));
          p = c + 1;
        }
      } else {
        return Usage();
      }
    }
    auto st = s.GarbageCollect(in_use, high, low);
    if (!st.ok()) return Fail(st);
    return 0;
  }
  if (verb == "mount" && args.size() == 3) {
    auto img = s.Get(args[1]);
    if (!img.ok()) return Fail(img.status());
    auto merged = s.MountRootfs(*img, args[2]);
    if (!merged.ok()) return Fail(merged.status());
    std::cout << *merged << "\n";
    return 0;
  }
  if (verb == "umount" && args.size() == 2) {
    auto st = s.UnmountRootfs(args[1]);
    if (!st.ok()) return Fail(st);
    return 0;
  }
  return Usage();
}
