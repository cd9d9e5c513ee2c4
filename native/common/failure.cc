#include "failure.h"

#include <cstring>

namespace gd {

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);  // glibc >= 2.32
  if (name != nullptr) return name;
  return "E" + std::to_string(err);
}

Napi::Error MakeError(Napi::Env env, const Failure& f) {
  std::string code = ErrnoName(f.err);
  std::string msg = code + ": " + std::strerror(f.err) + ", " + f.syscall;
  if (!f.path.empty()) msg += " '" + f.path + "'";
  if (!f.dest.empty()) msg += " -> '" + f.dest + "'";
  if (!f.detail.empty()) msg += " (" + f.detail + ")";
  Napi::Error e = Napi::Error::New(env, msg);
  Napi::Object o = e.Value();
  o.Set("code", code);
  // Node reports errno as a negative number (uv convention); keep that so callers can compare with os.constants
  o.Set("errno", Napi::Number::New(env, -f.err));
  o.Set("syscall", f.syscall);
  if (!f.path.empty()) o.Set("path", f.path);
  if (!f.dest.empty()) o.Set("dest", f.dest);
  return e;
}

}  // namespace gd
