// Mounting with paths relative to a directory, without touching the process's working directory.
//
// overlay2 mounts deep layer stacks with relative lower paths (`l/<26 chars>`) because the absolute ones do not
// fit the one page mount(2) accepts for its data. The kernel resolves those relative paths against the cwd of
// the calling thread, and every thread of a process shares one cwd (CLONE_FS), so chdir() in the addon would
// race with every other relative path the process uses. Instead a short-lived thread gives up its share of the
// fs_struct (unshare(CLONE_FS)), fchdir()s into the directory, mounts and exits; the rest of the process never
// sees a different cwd. This replaces the fork/exec helper Docker uses for the same purpose.
//

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>

#include <cerrno>
#include <climits>
#include <optional>
#include <string>
#include <system_error>
#include <thread>

#include "common/args.h"
#include "common/async.h"
#include "common/fd.h"
#include "modules.h"

namespace gd {
void RegisterMountApi(Napi::Env env, Napi::Object exports);

namespace {

std::optional<std::string> ArgNullableString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info[i].IsNull() || info[i].IsUndefined()) return std::nullopt;
  return ArgString(info, i, what);
}

const char* CStrOrNull(const std::optional<std::string>& s) { return s ? s->c_str() : nullptr; }

// What the helper thread reports back: the failing step and its errno (0 = mounted).
struct ThreadResult {
  int err = 0;
  const char* step = "";
};

// mountFrom(dir, source, target, fstype, flags, data): mount(2) with the cwd of the calling thread set to `dir`,
// so relative `source`, `target` and paths inside `data` resolve from there.
Napi::Value MountFrom(const Napi::CallbackInfo& info) {
  std::string dir = ArgPath(info, 0, "dir");
  std::string source = ArgString(info, 1, "source");
  std::string target = ArgPath(info, 2, "target");
  std::optional<std::string> fstype = ArgNullableString(info, 3, "fstype");
  uint64_t flags = ArgUint(info, 4, "flags");
  std::optional<std::string> data = ArgNullableString(info, 5, "data");
  if (flags > ULONG_MAX) throw Napi::TypeError::New(info.Env(), "flags out of range");
  return RunVoid(info.Env(), "mountFrom", [=](Failure& f) {
    // Opened here, on the pool thread, so a missing directory is reported against `dir` itself.
    UniqueFd dirfd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dirfd.valid()) {
      f.Errno("open", dir);
      return;
    }
    ThreadResult r;
    const int fd = dirfd.get();
    try {
      std::thread t([&r, fd, &source, &target, &fstype, &data, flags] {
        // Private cwd/root for this thread only; it dies right after, so nothing else ever runs with it.
        if (::unshare(CLONE_FS) != 0) {
          r = {errno, "unshare"};
          return;
        }
        if (::fchdir(fd) != 0) {
          r = {errno, "fchdir"};
          return;
        }
        if (::mount(source.c_str(), target.c_str(), CStrOrNull(fstype), static_cast<unsigned long>(flags),
                    CStrOrNull(data)) != 0) {
          r = {errno, "mount"};
        }
      });
      t.join();
    } catch (const std::system_error& e) {
      // std::thread could not start a thread (EAGAIN when the process is at its thread limit).
      f.Set(e.code().value() > 0 ? e.code().value() : EAGAIN, "pthread_create", dir);
      return;
    }
    if (r.err == 0) return;
    const std::string where = dir + "/" + target;
    if (std::string(r.step) == "mount") {
      f.Set(r.err, "mount", source, where);
    } else {
      f.Set(r.err, r.step, dir);
    }
  });
}

}  // namespace

void RegisterMountApi(Napi::Env env, Napi::Object exports) {
  exports.Set("mountFrom", Napi::Function::New(env, MountFrom, "mountFrom"));
}

}  // namespace gd
