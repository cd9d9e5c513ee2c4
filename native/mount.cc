// Mount primitives: mount(2), umount2(2), bind mounts, propagation changes, mountpoint detection and statfs(2).
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <climits>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "common/args.h"
#include "common/async.h"
#include "modules.h"

#ifndef STATX_ATTR_MOUNT_ROOT
#define STATX_ATTR_MOUNT_ROOT 0x00002000
#endif

namespace gd {
namespace {

// Distinguishes null/undefined (pass NULL to the kernel) from an empty string, which mount(2) treats differently
// for `data` (an empty option string is still parsed by some filesystems).
std::optional<std::string> ArgNullableString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info[i].IsNull() || info[i].IsUndefined()) return std::nullopt;
  return ArgString(info, i, what);
}

const char* CStrOrNull(const std::optional<std::string>& s) { return s ? s->c_str() : nullptr; }

Napi::Value Mount(const Napi::CallbackInfo& info) {
  std::string source = ArgString(info, 0, "source");
  std::string target = ArgPath(info, 1, "target");
  std::optional<std::string> fstype = ArgNullableString(info, 2, "fstype");
  std::optional<std::string> data = ArgNullableString(info, 4, "data");
  uint64_t flags = ArgUint(info, 3, "flags");
  if (flags > ULONG_MAX) throw Napi::TypeError::New(info.Env(), "flags out of range");
  return RunVoid(info.Env(), "mount", [=](Failure& f) {
    if (::mount(source.c_str(), target.c_str(), CStrOrNull(fstype), static_cast<unsigned long>(flags),
                CStrOrNull(data)) != 0) {
      f.Errno("mount", source, target);
    }
  });
}

Napi::Value Umount(const Napi::CallbackInfo& info) {
  std::string target = ArgPath(info, 0, "target");
  uint64_t flags = ArgUint(info, 1, "flags");
  if (flags > INT_MAX) throw Napi::TypeError::New(info.Env(), "flags out of range");
  return RunVoid(info.Env(), "umount", [=](Failure& f) {
    if (::umount2(target.c_str(), static_cast<int>(flags)) != 0) f.Errno("umount2", target);
  });
}

Napi::Value BindMount(const Napi::CallbackInfo& info) {
  std::string source = ArgPath(info, 0, "source");
  std::string target = ArgPath(info, 1, "target");
  Napi::Object opts = ArgOptObject(info, 2, "opts");
  bool recursive = PropBool(opts, "recursive", false);
  bool readOnly = PropBool(opts, "readOnly", false);
  return RunVoid(info.Env(), "bindMount", [=](Failure& f) {
    unsigned long flags = MS_BIND | (recursive ? MS_REC : 0);
    if (::mount(source.c_str(), target.c_str(), nullptr, flags, nullptr) != 0) {
      f.Errno("mount", source, target);
      return;
    }
    if (!readOnly) return;
    // MS_RDONLY is ignored on the initial bind; only a bind remount makes the new mount read-only.
    if (::mount(source.c_str(), target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
      f.Errno("mount", source, target);
      // Do not leave a writable bind mount behind when the caller asked for a read-only one.
      ::umount2(target.c_str(), MNT_DETACH);
    }
  });
}

Napi::Value MakeMount(const Napi::CallbackInfo& info) {
  std::string target = ArgPath(info, 0, "target");
  std::string propagation = ArgString(info, 1, "propagation");
  bool recursive = ArgBool(info, 2, "recursive", false);
  unsigned long flags;
  if (propagation == "private") {
    flags = MS_PRIVATE;
  } else if (propagation == "shared") {
    flags = MS_SHARED;
  } else if (propagation == "slave") {
    flags = MS_SLAVE;
  } else if (propagation == "unbindable") {
    flags = MS_UNBINDABLE;
  } else {
    throw Napi::TypeError::New(info.Env(), "propagation must be private, shared, slave or unbindable");
  }
  if (recursive) flags |= MS_REC;
  return RunVoid(info.Env(), "makeMount", [=](Failure& f) {
    if (::mount("none", target.c_str(), nullptr, flags, nullptr) != 0) f.Errno("mount", target);
  });
}

// Fallback for kernels without STATX_ATTR_MOUNT_ROOT (< 5.8): a path is a mount root when its device differs
// from its parent's, or when it is its own parent ("/"). Bind mounts of a directory of the same filesystem are
// not detectable this way; that is the documented limit of the fallback.
bool IsMountpointByParent(const std::string& path, bool& result, Failure& f) {
  std::unique_ptr<char, decltype(&std::free)> real(::realpath(path.c_str(), nullptr), &std::free);
  if (!real) return f.Errno("realpath", path);
  std::string resolved(real.get());
  if (resolved == "/") {
    result = true;
    return true;
  }
  // realpath results are absolute and canonical, so the last '/' exists and separates the parent.
  size_t slash = resolved.find_last_of('/');
  std::string parent = slash == 0 || slash == std::string::npos ? std::string("/") : resolved.substr(0, slash);
  struct stat self {}, up {};
  if (::stat(resolved.c_str(), &self) != 0) return f.Errno("stat", path);
  if (::stat(parent.c_str(), &up) != 0) return f.Errno("stat", parent);
  result = self.st_dev != up.st_dev || self.st_ino == up.st_ino;
  return true;
}

Napi::Value IsMountpoint(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  return RunAsync<bool>(
      info.Env(), "isMountpoint",
      [=](Failure& f) {
        struct statx stx {};
        // AT_NO_AUTOMOUNT: asking whether something is a mountpoint must not trigger an automount.
        if (::statx(AT_FDCWD, path.c_str(), AT_NO_AUTOMOUNT, STATX_TYPE | STATX_INO, &stx) == 0) {
          if (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
        } else if (errno != ENOSYS) {
          f.Errno("statx", path);
          return false;
        }
        bool result = false;
        IsMountpointByParent(path, result, f);
        return result;
      },
      [](Napi::Env env, bool& r) { return Napi::Boolean::New(env, r); });
}

struct StatfsResult {
  double type = 0, bsize = 0, blocks = 0, bfree = 0, bavail = 0, files = 0, ffree = 0, namelen = 0, flags = 0;
};

Napi::Value Statfs(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  return RunAsync<StatfsResult>(
      info.Env(), "statfs",
      [=](Failure& f) {
        struct statfs s {};
        StatfsResult r;
        if (::statfs(path.c_str(), &s) != 0) {
          f.Errno("statfs", path);
          return r;
        }
        // f_type is a signed word on some ABIs; magics such as BTRFS (0x9123683e) must come out unsigned.
        r.type = static_cast<double>(static_cast<uint32_t>(s.f_type));
        r.bsize = static_cast<double>(s.f_bsize);
        r.blocks = static_cast<double>(s.f_blocks);
        r.bfree = static_cast<double>(s.f_bfree);
        r.bavail = static_cast<double>(s.f_bavail);
        r.files = static_cast<double>(s.f_files);
        r.ffree = static_cast<double>(s.f_ffree);
        r.namelen = static_cast<double>(s.f_namelen);
        r.flags = static_cast<double>(s.f_flags);
        return r;
      },
      [](Napi::Env env, StatfsResult& r) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("type", r.type);
        o.Set("bsize", r.bsize);
        o.Set("blocks", r.blocks);
        o.Set("bfree", r.bfree);
        o.Set("bavail", r.bavail);
        o.Set("files", r.files);
        o.Set("ffree", r.ffree);
        o.Set("namelen", r.namelen);
        o.Set("flags", r.flags);
        return o;
      });
}

}  // namespace

void RegisterMount(Napi::Env env, Napi::Object exports) {
  exports.Set("mount", Napi::Function::New(env, Mount, "mount"));
  exports.Set("umount", Napi::Function::New(env, Umount, "umount"));
  exports.Set("bindMount", Napi::Function::New(env, BindMount, "bindMount"));
  exports.Set("makeMount", Napi::Function::New(env, MakeMount, "makeMount"));
  exports.Set("isMountpoint", Napi::Function::New(env, IsMountpoint, "isMountpoint"));
  exports.Set("statfs", Napi::Function::New(env, Statfs, "statfs"));
}

}  // namespace gd
