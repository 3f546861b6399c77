#include "skiff/proxy/datapath.h"

namespace skiff::proxy {

absl::Status Datapath::LoadTc() { return absl::UnimplementedError("tc datapath not built yet"); }
void Datapath::DestroyTc() {}
absl::Status Datapath::AttachTc(const std::string&) { return absl::UnimplementedError("tc datapath not built yet"); }
absl::Status Datapath::SetTcConfig(uint32_t) { return absl::UnimplementedError("tc datapath not built yet"); }
int Datapath::tc_ingress_fd() const { return -1; }
int Datapath::tc_egress_fd() const { return -1; }

}  // namespace skiff::proxy
