#include "args.h"

#include <cmath>

namespace gd {

namespace {
constexpr double kMaxSafe = 9007199254740991.0;  // Number.MAX_SAFE_INTEGER

[[noreturn]] void Throw(Napi::Env env, const std::string& msg) {
  throw Napi::TypeError::New(env, msg);
}

std::string CheckedString(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsString()) Throw(env, std::string(what) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) Throw(env, std::string(what) + " must not contain NUL bytes");
  return s;
}

double CheckedInteger(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsNumber()) Throw(env, std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || std::fabs(d) > kMaxSafe)
    Throw(env, std::string(what) + " must be a safe integer");
  return d;
}
}  // namespace

std::string ArgPath(const Napi::CallbackInfo& info, size_t i, const char* what) {
  std::string s = CheckedString(info.Env(), info[i], what);
  if (s.empty()) Throw(info.Env(), std::string(what) + " must not be empty");
  return s;
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  return CheckedString(info.Env(), info[i], what);
}

std::string ArgOptString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info[i].IsNull() || info[i].IsUndefined()) return std::string();
  return CheckedString(info.Env(), info[i], what);
}

int64_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what) {
  return static_cast<int64_t>(CheckedInteger(info.Env(), info[i], what));
}

uint64_t ArgUint(const Napi::CallbackInfo& info, size_t i, const char* what) {
  double d = CheckedInteger(info.Env(), info[i], what);
  if (d < 0) Throw(info.Env(), std::string(what) + " must not be negative");
  return static_cast<uint64_t>(d);
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* what, bool dflt) {
  if (info[i].IsNull() || info[i].IsUndefined()) return dflt;
  if (!info[i].IsBoolean()) Throw(info.Env(), std::string(what) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

Napi::Object ArgOptObject(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info[i].IsNull() || info[i].IsUndefined()) return Napi::Object::New(info.Env());
  if (!info[i].IsObject()) Throw(info.Env(), std::string(what) + " must be an object");
  return info[i].As<Napi::Object>();
}

std::string PropString(Napi::Object o, const char* key, const std::string& dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsNull() || v.IsUndefined()) return dflt;
  return CheckedString(o.Env(), v, key);
}

int64_t PropInt(Napi::Object o, const char* key, int64_t dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsNull() || v.IsUndefined()) return dflt;
  return static_cast<int64_t>(CheckedInteger(o.Env(), v, key));
}

uint64_t PropUint(Napi::Object o, const char* key, uint64_t dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsNull() || v.IsUndefined()) return dflt;
  double d = CheckedInteger(o.Env(), v, key);
  if (d < 0) Throw(o.Env(), std::string(key) + " must not be negative");
  return static_cast<uint64_t>(d);
}

bool PropBool(Napi::Object o, const char* key, bool dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsNull() || v.IsUndefined()) return dflt;
  if (!v.IsBoolean()) Throw(o.Env(), std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

}  // namespace gd
