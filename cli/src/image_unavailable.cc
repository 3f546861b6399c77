// Built when the image store (skiff::image) is not part of the tree.
#include "cmd.h"

namespace skiff::cli {

int CmdImage(Ctx& ctx) { return Fail(ctx, "this skiffctl was built without the image store (skiff::image)"); }

}  // namespace skiff::cli
