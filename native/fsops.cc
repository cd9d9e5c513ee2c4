// Filesystem helpers the drivers need and Node's fs lacks: mknod(2) (overlay whiteouts, device nodes),
// renameat2(2) (NOREPLACE / EXCHANGE / WHITEOUT), syncfs(2) and bounded opens (see common/bounded-path.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <climits>
#include <string>

#include "common/args.h"
#include "common/async.h"
#include "common/bounded-path.h"
#include "common/fd.h"
#include "modules.h"

namespace gd {
namespace {

Napi::Value Mknod(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  uint64_t mode = ArgUint(info, 1, "mode");
  uint64_t dev = ArgUint(info, 2, "dev");
  if (mode > UINT32_MAX) throw Napi::TypeError::New(info.Env(), "mode out of range");
  return RunVoid(info.Env(), "mknod", [=](Failure& f) {
    if (::mknod(path.c_str(), static_cast<mode_t>(mode), static_cast<dev_t>(dev)) != 0) f.Errno("mknod", path);
  });
}

Napi::Value Renameat2(const Napi::CallbackInfo& info) {
  std::string oldPath = ArgPath(info, 0, "oldPath");
  std::string newPath = ArgPath(info, 1, "newPath");
  uint64_t flags = ArgUint(info, 2, "flags");
  if (flags > UINT32_MAX) throw Napi::TypeError::New(info.Env(), "flags out of range");
  return RunVoid(info.Env(), "renameat2", [=](Failure& f) {
    // Through syscall(): glibc's renameat2 wrapper is recent, and it may emulate flags=0 with renameat.
    if (::syscall(SYS_renameat2, AT_FDCWD, oldPath.c_str(), AT_FDCWD, newPath.c_str(),
                  static_cast<unsigned>(flags)) != 0) {
      f.Errno("renameat2", oldPath, newPath);
    }
  });
}

Napi::Value Syncfs(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  return RunVoid(info.Env(), "syncfs", [=](Failure& f) {
    // syncfs needs a real (not O_PATH) fd. Try a directory first; for anything else O_NONBLOCK keeps a fifo from
    // blocking the pool thread and O_NOCTTY keeps a tty from becoming our controlling terminal.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd.valid() && errno == ENOTDIR) fd.reset(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (!fd.valid()) {
      f.Errno("open", path);
      return;
    }
    if (::syncfs(fd.get()) != 0) f.Errno("syncfs", path);
  });
}

Napi::Value OpenBoundedFn(const Napi::CallbackInfo& info) {
  std::string root = ArgPath(info, 0, "root");
  std::string path = ArgString(info, 1, "path");
  Napi::Object opts = ArgOptObject(info, 2, "opts");
  uint64_t flags = PropUint(opts, "flags", 0);
  uint64_t mode = PropUint(opts, "mode", 0);
  std::string resolve = PropString(opts, "resolve", "in-root");
  bool noSymlinks = PropBool(opts, "noSymlinks", false);
  if (flags > INT_MAX) throw Napi::TypeError::New(info.Env(), "opts.flags out of range");
  if (mode > UINT32_MAX) throw Napi::TypeError::New(info.Env(), "opts.mode out of range");
  if (resolve != "in-root" && resolve != "beneath")
    throw Napi::TypeError::New(info.Env(), "opts.resolve must be 'in-root' or 'beneath'");
  BoundedOpenOptions o;
  o.flags = static_cast<int>(flags);
  o.mode = static_cast<unsigned>(mode);
  o.resolve = resolve == "beneath" ? ResolveMode::Beneath : ResolveMode::InRoot;
  o.noSymlinks = noSymlinks;
  return RunAsync<int>(
      info.Env(), "openBounded",
      [=](Failure& f) {
        // The root itself is chosen by the (trusted) caller, so it is opened normally; O_PATH is enough for a dirfd.
        UniqueFd rootFd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!rootFd.valid()) {
          f.Errno("open", root);
          return -1;
        }
        int fd = OpenBounded(rootFd.get(), path, o, f);
        if (fd < 0) f.detail = "under " + root;
        return fd;
      },
      [](Napi::Env env, int& fd) { return Napi::Number::New(env, fd); });
}

}  // namespace

void RegisterFsops(Napi::Env env, Napi::Object exports) {
  exports.Set("mknod", Napi::Function::New(env, Mknod, "mknod"));
  exports.Set("renameat2", Napi::Function::New(env, Renameat2, "renameat2"));
  exports.Set("syncfs", Napi::Function::New(env, Syncfs, "syncfs"));
  exports.Set("openBounded", Napi::Function::New(env, OpenBoundedFn, "openBounded"));
}

}  // namespace gd
