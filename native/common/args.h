// Argument readers used on the main thread. TypeScript validates first (TypeError before native code);
// these checks are the second line so that no input can crash the process.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

namespace gd {

// Throws a JS TypeError (via NAPI_CPP_EXCEPTIONS) when the argument is missing or of the wrong type.
std::string ArgPath(const Napi::CallbackInfo& info, size_t i, const char* what);   // no NUL, non-empty
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what); // no NUL, may be empty
std::string ArgOptString(const Napi::CallbackInfo& info, size_t i, const char* what);  // null/undefined -> ""
int64_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what);         // safe integer
uint64_t ArgUint(const Napi::CallbackInfo& info, size_t i, const char* what);       // safe non-negative integer
bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* what, bool dflt);
Napi::Object ArgOptObject(const Napi::CallbackInfo& info, size_t i, const char* what);  // {} when absent

// Same readers for object properties.
std::string PropString(Napi::Object o, const char* key, const std::string& dflt);
int64_t PropInt(Napi::Object o, const char* key, int64_t dflt);
uint64_t PropUint(Napi::Object o, const char* key, uint64_t dflt);
bool PropBool(Napi::Object o, const char* key, bool dflt);

}  // namespace gd
