// One Register* per concern; addon.cc calls them all and does nothing else.
#pragma once
#include <napi.h>

namespace gd {
void RegisterMount(Napi::Env env, Napi::Object exports);
void RegisterLoop(Napi::Env env, Napi::Object exports);
void RegisterSparse(Napi::Env env, Napi::Object exports);
void RegisterDevmapper(Napi::Env env, Napi::Object exports);
void RegisterBtrfs(Napi::Env env, Napi::Object exports);
void RegisterXattr(Napi::Env env, Napi::Object exports);
void RegisterFsops(Napi::Env env, Napi::Object exports);
void RegisterApplyEntries(Napi::Env env, Napi::Object exports);
void RegisterScanTree(Napi::Env env, Napi::Object exports);
void RegisterCopyTree(Napi::Env env, Napi::Object exports);
void RegisterMountApi(Napi::Env env, Napi::Object exports);
void RegisterQuota(Napi::Env env, Napi::Object exports);
void RegisterSha256(Napi::Env env, Napi::Object exports);
void RegisterRemoveTree(Napi::Env env, Napi::Object exports);
}  // namespace gd
