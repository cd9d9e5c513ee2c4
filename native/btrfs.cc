// STUB: filled in by its owner.
#include "modules.h"
namespace gd {
void RegisterBtrfs(Napi::Env env, Napi::Object exports) {}
}  // namespace gd
