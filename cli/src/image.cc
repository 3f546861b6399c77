// skiffctl image import: loads OCI layout / docker-archive tarballs into the
// image store of the node skiffctl runs on, for air-gapped nodes. The API has
// no call to push an archive to a remote node, so --node is refused.
#include "absl/strings/str_cat.h"
#include "cmd.h"
#include "skiff/image/store.h"

namespace skiff::cli {

int CmdImagePull(Ctx& ctx);  // image_pull.cc

int CmdImage(Ctx& ctx) {
  if (!ctx.flags.args.empty() && ctx.flags.args[0] == "pull") return CmdImagePull(ctx);
  if (ctx.flags.args.empty() || ctx.flags.args[0] != "import" || ctx.flags.args.size() < 2) {
    return Fail(ctx, "Usage: skiffctl image import ARCHIVE... [--name REF] [--root-dir /var/lib/skiff/images]");
  }
  if (ctx.flags.Has("node")) {
    return Fail(ctx, "importing onto another node is not supported: run `skiffctl image import` on that node");
  }
  std::vector<std::string> archives(ctx.flags.args.begin() + 1, ctx.flags.args.end());
  if (ctx.flags.Has("name") && archives.size() != 1) return Fail(ctx, "--name needs exactly one archive");
  auto store = image::Store::Open(ctx.flags.Get("root-dir", "/var/lib/skiff/images"), image::Options{});
  if (!store.ok()) return Fail(ctx, store.status());
  int rc = 0;
  for (const auto& a : archives) {
    auto images = (*store)->Import(a, ctx.flags.Get("name"));
    if (!images.ok()) {
      rc = Fail(ctx, absl::StrCat("importing ", a, ": ", images.status().message()));
      continue;
    }
    for (const auto& img : *images) ctx.out() << "unpacking " << img.ref << " (" << img.digest << ")...done\n";
  }
  return rc;
}

}  // namespace skiff::cli
