// Extended attributes on paths without following symlinks: lgetxattr/lsetxattr/llistxattr/lremovexattr.
// Sizes come from the kernel in a query-then-read dance; the value can change in between (ERANGE), so the read is
// retried a few times and every length the kernel reports is checked against the buffer we actually own.
#include <sys/xattr.h>

#include <cerrno>
#include <climits>
#include <optional>
#include <string>
#include <vector>

#include "common/args.h"
#include "common/async.h"
#include "modules.h"

namespace gd {
namespace {

constexpr int kSizeRetries = 8;

// Runs `call(buf, size)` (a getxattr/listxattr-like function) until the value fits. Returns false with errno set.
template <typename Call>
bool ReadSized(Call call, std::vector<char>& out) {
  for (int attempt = 0; attempt < kSizeRetries; ++attempt) {
    ssize_t want = call(nullptr, 0);
    if (want < 0) return false;
    // A little slack so a value that grows slightly between the two calls still fits.
    std::vector<char> buf(static_cast<size_t>(want) + 256);
    ssize_t got = call(buf.data(), buf.size());
    if (got < 0) {
      if (errno == ERANGE) continue;
      return false;
    }
    if (static_cast<size_t>(got) > buf.size()) {  // never trust the kernel's length beyond our buffer
      errno = EIO;
      return false;
    }
    buf.resize(static_cast<size_t>(got));
    out = std::move(buf);
    return true;
  }
  errno = ERANGE;
  return false;
}

Napi::Value Lgetxattr(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  std::string name = ArgPath(info, 1, "name");
  return RunAsync<std::optional<std::vector<char>>>(
      info.Env(), "lgetxattr",
      [=](Failure& f) -> std::optional<std::vector<char>> {
        std::vector<char> value;
        bool ok = ReadSized(
            [&](char* buf, size_t size) { return ::lgetxattr(path.c_str(), name.c_str(), buf, size); }, value);
        if (ok) return value;
        if (errno == ENODATA) return std::nullopt;
        f.Errno("lgetxattr", path);
        f.detail = name;
        return std::nullopt;
      },
      [](Napi::Env env, std::optional<std::vector<char>>& v) -> Napi::Value {
        if (!v) return env.Null();
        return Napi::Buffer<char>::Copy(env, v->data(), v->size());
      });
}

Napi::Value Lsetxattr(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  std::string name = ArgPath(info, 1, "name");
  if (!info[2].IsBuffer()) throw Napi::TypeError::New(info.Env(), "value must be a Buffer");
  Napi::Buffer<char> b = info[2].As<Napi::Buffer<char>>();
  std::vector<char> value(b.Data(), b.Data() + b.Length());
  uint64_t flags = info[3].IsUndefined() || info[3].IsNull() ? 0 : ArgUint(info, 3, "flags");
  if (flags > INT_MAX) throw Napi::TypeError::New(info.Env(), "flags out of range");
  return RunVoid(info.Env(), "lsetxattr", [=](Failure& f) {
    if (::lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), static_cast<int>(flags)) != 0) {
      f.Errno("lsetxattr", path);
      f.detail = name;
    }
  });
}

Napi::Value Llistxattr(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  return RunAsync<std::vector<std::string>>(
      info.Env(), "llistxattr",
      [=](Failure& f) {
        std::vector<std::string> names;
        std::vector<char> list;
        if (!ReadSized([&](char* buf, size_t size) { return ::llistxattr(path.c_str(), buf, size); }, list)) {
          f.Errno("llistxattr", path);
          return names;
        }
        // NUL-separated names; the last one may lack its NUL if the kernel misbehaved, so split on the length.
        size_t i = 0;
        while (i < list.size()) {
          size_t j = i;
          while (j < list.size() && list[j] != '\0') ++j;
          if (j > i) names.emplace_back(list.data() + i, j - i);
          i = j + 1;
        }
        return names;
      },
      [](Napi::Env env, std::vector<std::string>& names) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, names.size());
        for (size_t i = 0; i < names.size(); ++i) a.Set(static_cast<uint32_t>(i), names[i]);
        return a;
      });
}

Napi::Value Lremovexattr(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  std::string name = ArgPath(info, 1, "name");
  return RunVoid(info.Env(), "lremovexattr", [=](Failure& f) {
    if (::lremovexattr(path.c_str(), name.c_str()) != 0) {
      f.Errno("lremovexattr", path);
      f.detail = name;
    }
  });
}

}  // namespace

void RegisterXattr(Napi::Env env, Napi::Object exports) {
  exports.Set("lgetxattr", Napi::Function::New(env, Lgetxattr, "lgetxattr"));
  exports.Set("lsetxattr", Napi::Function::New(env, Lsetxattr, "lsetxattr"));
  exports.Set("llistxattr", Napi::Function::New(env, Llistxattr, "llistxattr"));
  exports.Set("lremovexattr", Napi::Function::New(env, Lremovexattr, "lremovexattr"));
}

}  // namespace gd
