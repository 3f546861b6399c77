// skiffctl image pull REF: pulls into the image store of the node skiffctl
// runs on (as `crictl pull` does), with a progress bar on stderr when stderr
// is a terminal and nothing but the result line otherwise.
#include <unistd.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "cmd.h"
#include "skiff/image/progress_bar.h"
#include "skiff/image/store.h"

namespace skiff::cli {

int CmdImagePull(Ctx& ctx) {
  if (ctx.flags.args.size() != 2) {
    return Fail(ctx,
                "Usage: skiffctl image pull REF [--root-dir /var/lib/skiff/images] [--insecure-registry HOST:PORT]... "
                "[--credentials config.json]");
  }
  if (ctx.flags.Has("node")) return Fail(ctx, "pulling onto another node is not supported: run it on that node");
  const std::string ref = ctx.flags.args[1];
  image::Options opts;
  for (const auto& r : ctx.flags.All("insecure-registry")) opts.insecure_registries.push_back(r);
  opts.credentials_file = ctx.flags.Get("credentials");
  auto store = image::Store::Open(ctx.flags.Get("root-dir", "/var/lib/skiff/images"), opts);
  if (!store.ok()) return Fail(ctx, store.status());
  image::PullOptions po;
  std::unique_ptr<image::ProgressBar> bar;
  if (::isatty(STDERR_FILENO)) {
    bar = std::make_unique<image::ProgressBar>(STDERR_FILENO, ref);
    po.progress = bar->Callback();
  }
  auto img = (*store)->Pull(ref, po);
  if (bar) bar->Finish();
  if (!img.ok()) return Fail(ctx, absl::StrCat("pulling ", ref, ": ", img.status().message()));
  ctx.out() << img->ref << " " << img->digest << "\n";
  return 0;
}

}  // namespace skiff::cli
