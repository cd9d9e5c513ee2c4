// Module entry point: registers every concern's functions on `exports`. No logic lives here.
#include <napi.h>

#include "modules.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  gd::RegisterMount(env, exports);
  gd::RegisterLoop(env, exports);
  gd::RegisterSparse(env, exports);
  gd::RegisterDevmapper(env, exports);
  gd::RegisterBtrfs(env, exports);
  gd::RegisterXattr(env, exports);
  gd::RegisterFsops(env, exports);
  gd::RegisterApplyEntries(env, exports);
  gd::RegisterScanTree(env, exports);
  gd::RegisterCopyTree(env, exports);
  gd::RegisterMountApi(env, exports);
  gd::RegisterQuota(env, exports);
  gd::RegisterSha256(env, exports);
  gd::RegisterRemoveTree(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(graphdriver, Init)
