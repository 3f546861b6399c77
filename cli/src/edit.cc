// skiffctl edit: the object as YAML in $EDITOR, written back with Update.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "cmd.h"

namespace skiff::cli {

int CmdEdit(Ctx& ctx) {
  auto pairs = ResolveTypeNames(ctx.flags.args);
  if (!pairs.ok()) return Fail(ctx, pairs.status());
  if (pairs->size() != 1 || (*pairs)[0].second.empty()) return Fail(ctx, "edit needs exactly one TYPE NAME or TYPE/NAME");
  const KindInfo* k = (*pairs)[0].first;
  std::string name = (*pairs)[0].second;
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  std::string ns = NsFor(*k, ctx.Namespace());
  auto live = c->Get(k->resource, ns, name);
  if (!live.ok()) return ServerFail(ctx, live.status());
  std::string header =
      "# Please edit the object below. Lines beginning with a '#' will be ignored,\n"
      "# and an empty file will abort the edit. If an error occurs while saving this file will be\n"
      "# reopened with the relevant failures.\n#\n";
  bool json = ctx.flags.Get("output") == "json";
  std::string original = json ? manifest::ObjectToJson(*live) : manifest::ObjectToYaml(*live);
  std::string path = (std::filesystem::temp_directory_path() /
                      absl::StrCat("skiffctl-edit-", ::getpid(), json ? ".json" : ".yaml"))
                         .string();
  std::string editor = ctx.Getenv("SKIFF_EDITOR");
  if (editor.empty()) editor = ctx.Getenv("KUBE_EDITOR");
  if (editor.empty()) editor = ctx.Getenv("EDITOR");
  if (editor.empty()) editor = "vi";
  std::string error_comment;
  for (int round = 0; round < 5; ++round) {
    {
      std::ofstream f(path, std::ios::trunc);
      f << header << error_comment << original;
    }
    ctx.out().flush();
    std::string cmd = absl::StrCat(editor, " '", path, "'");
    int status = std::system(cmd.c_str());
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::filesystem::remove(path);
      return Fail(ctx, absl::StrCat("there was a problem with the editor \"", editor, "\""));
    }
    std::stringstream ss;
    ss << std::ifstream(path).rdbuf();
    std::string edited, line;
    std::istringstream lines(ss.str());
    while (std::getline(lines, line))
      if (line.rfind("#", 0) != 0) edited += line + "\n";
    if (edited.find_first_not_of(" \n\t") == std::string::npos) {
      std::filesystem::remove(path);
      ctx.out() << "Edit cancelled, no changes made.\n";
      return 0;
    }
    if (edited == original) {
      std::filesystem::remove(path);
      ctx.out() << "Edit cancelled, no changes made.\n";
      return 0;
    }
    auto docs = manifest::DecodeManifests(edited, path);
    absl::Status st = docs.ok() ? absl::OkStatus() : docs.status();
    if (st.ok() && docs->size() != 1) st = absl::InvalidArgumentError("the edited file must hold exactly one object");
    if (st.ok() && manifest::KindOf((*docs)[0].object) != k) st = absl::InvalidArgumentError("the kind may not change");
    if (st.ok()) {
      Object obj = (*docs)[0].object;
      auto updated = c->Update(k->resource, ns, obj);
      if (updated.ok()) {
        std::filesystem::remove(path);
        ctx.out() << RefName(*updated) << " edited\n";
        return 0;
      }
      st = updated.status();
      if (IsTransportError(st)) {
        ctx.err() << "error: A copy of your changes has been stored to \"" << path << "\"\n";
        return ServerFail(ctx, st);
      }
    }
    error_comment = absl::StrCat("# ", TypeName(*k), " \"", name, "\" was not valid:\n# * ", st.message(), "\n#\n");
    original = edited;
  }
  ctx.err() << "error: A copy of your changes has been stored to \"" << path << "\"\n";
  return 1;
}

}  // namespace skiff::cli
