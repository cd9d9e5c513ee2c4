// btrfs subvolumes, snapshots and quotas through the ioctls of <linux/btrfs.h> (no btrfs-progs needed).
//
// Subvolume create/snapshot/delete act on the directory that holds (or will hold) the subvolume and name the
// entry by its last path component, the way the kernel API is shaped. Deleting a subvolume that still contains
// other subvolumes fails with ENOTEMPTY: callers must delete nested subvolumes first (deepest first).
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/args.h"
#include "common/async.h"
#include "common/failure.h"
#include "common/fd.h"
#include "modules.h"

namespace gd {
namespace {

int Ioctl(int fd, unsigned long req, void* arg) {
  int rc;
  do {
    rc = ::ioctl(fd, req, arg);
  } while (rc < 0 && errno == EINTR);
  return rc;
}

// Splits `path` into the directory holding the last component and that component. Trailing slashes are
// ignored; the component must be a real name (not empty, "." or "..") and fit in NAME_MAX.
bool SplitPath(const std::string& path, const char* sys, std::string& parent, std::string& leaf, Failure& f) {
  size_t end = path.size();
  while (end > 1 && path[end - 1] == '/') end--;
  size_t slash = path.rfind('/', end - 1);
  if (slash == std::string::npos) {
    parent.assign(1, '.');  // assign(n, c): GCC 12 warns falsely (-Wrestrict) on assigning a literal here
    leaf = path.substr(0, end);
  } else {
    parent = path.substr(0, slash == 0 ? 1 : slash);
    leaf = path.substr(slash + 1, end - slash - 1);
  }
  if (leaf.empty() || leaf == "." || leaf == "..") {
    f.Set(EINVAL, sys, path);
    f.detail = "path must end in a subvolume name";
    return false;
  }
  if (leaf.size() > NAME_MAX) return f.Set(ENAMETOOLONG, sys, path);
  return true;
}

bool OpenDir(const std::string& path, UniqueFd& fd, Failure& f) {
  fd.reset(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return f.Errno("open", path);
  return true;
}

// Copies a checked name into a fixed ioctl buffer of `cap` bytes (including the NUL).
void CopyName(char* dst, size_t cap, const std::string& name) {
  size_t n = name.size() < cap ? name.size() : cap - 1;
  std::memcpy(dst, name.data(), n);
  dst[n] = '\0';
}

bool SubvolumeCreate(const std::string& path, Failure& f) {
  const char* sys = "ioctl(BTRFS_IOC_SUBVOL_CREATE)";
  std::string parent, leaf;
  if (!SplitPath(path, sys, parent, leaf, f)) return false;
  UniqueFd dir;
  if (!OpenDir(parent, dir, f)) return false;
  btrfs_ioctl_vol_args args;
  std::memset(&args, 0, sizeof(args));
  static_assert(NAME_MAX < sizeof(args.name), "vol_args name holds NAME_MAX");
  CopyName(args.name, sizeof(args.name), leaf);
  if (Ioctl(dir.get(), BTRFS_IOC_SUBVOL_CREATE, &args) < 0) return f.Errno(sys, path);
  return true;
}

bool Snapshot(const std::string& source, const std::string& dest, bool readOnly, Failure& f) {
  const char* sys = "ioctl(BTRFS_IOC_SNAP_CREATE_V2)";
  std::string parent, leaf;
  if (!SplitPath(dest, sys, parent, leaf, f)) return false;
  UniqueFd src;
  if (!OpenDir(source, src, f)) return false;
  UniqueFd dir;
  if (!OpenDir(parent, dir, f)) return false;
  btrfs_ioctl_vol_args_v2 args;
  std::memset(&args, 0, sizeof(args));
  static_assert(NAME_MAX < sizeof(args.name), "vol_args_v2 name holds NAME_MAX");
  args.fd = src.get();
  args.flags = readOnly ? BTRFS_SUBVOL_RDONLY : 0;
  CopyName(args.name, sizeof(args.name), leaf);
  if (Ioctl(dir.get(), BTRFS_IOC_SNAP_CREATE_V2, &args) < 0) return f.Errno(sys, source, dest);
  return true;
}

bool SubvolumeDelete(const std::string& path, Failure& f) {
  const char* sys = "ioctl(BTRFS_IOC_SNAP_DESTROY)";
  std::string parent, leaf;
  if (!SplitPath(path, sys, parent, leaf, f)) return false;
  UniqueFd dir;
  if (!OpenDir(parent, dir, f)) return false;
  btrfs_ioctl_vol_args args;
  std::memset(&args, 0, sizeof(args));
  CopyName(args.name, sizeof(args.name), leaf);
  if (Ioctl(dir.get(), BTRFS_IOC_SNAP_DESTROY, &args) < 0) return f.Errno(sys, path);
  return true;
}

bool IsSubvolume(const std::string& path, bool& out, Failure& f) {
  out = false;
  struct statfs sfs;
  if (::statfs(path.c_str(), &sfs) < 0) return f.Errno("statfs", path);
  if (static_cast<unsigned long>(sfs.f_type) != static_cast<unsigned long>(BTRFS_SUPER_MAGIC)) return true;
  struct stat st;
  if (::stat(path.c_str(), &st) < 0) return f.Errno("stat", path);
  // Every subvolume root is inode BTRFS_FIRST_FREE_OBJECTID (256) of its own tree.
  out = S_ISDIR(st.st_mode) && st.st_ino == BTRFS_FIRST_FREE_OBJECTID;
  return true;
}

struct SubvolInfo {
  uint64_t id = 0;
  bool readOnly = false;
};

bool SubvolumeInfo(const std::string& path, SubvolInfo& out, Failure& f) {
  UniqueFd dir;
  if (!OpenDir(path, dir, f)) return false;
  // treeid 0 asks for the tree of the fd; the kernel writes that tree's id back into treeid.
  btrfs_ioctl_ino_lookup_args look;
  std::memset(&look, 0, sizeof(look));
  look.treeid = 0;
  look.objectid = BTRFS_FIRST_FREE_OBJECTID;
  if (Ioctl(dir.get(), BTRFS_IOC_INO_LOOKUP, &look) < 0) return f.Errno("ioctl(BTRFS_IOC_INO_LOOKUP)", path);
  // GETFLAGS fails with EINVAL unless the fd is a subvolume root, which is the check we want here too.
  uint64_t flags = 0;
  if (Ioctl(dir.get(), BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0)
    return f.Errno("ioctl(BTRFS_IOC_SUBVOL_GETFLAGS)", path);
  out.id = look.treeid;
  out.readOnly = (flags & BTRFS_SUBVOL_RDONLY) != 0;
  return true;
}

bool QuotaCtl(const std::string& path, bool enable, Failure& f) {
  UniqueFd dir;
  if (!OpenDir(path, dir, f)) return false;
  btrfs_ioctl_quota_ctl_args args;
  std::memset(&args, 0, sizeof(args));
  args.cmd = enable ? BTRFS_QUOTA_CTL_ENABLE : BTRFS_QUOTA_CTL_DISABLE;
  if (Ioctl(dir.get(), BTRFS_IOC_QUOTA_CTL, &args) < 0) return f.Errno("ioctl(BTRFS_IOC_QUOTA_CTL)", path);
  return true;
}

bool QgroupLimit(const std::string& path, uint64_t bytes, Failure& f) {
  UniqueFd dir;
  if (!OpenDir(path, dir, f)) return false;
  btrfs_ioctl_qgroup_limit_args args;
  std::memset(&args, 0, sizeof(args));
  args.qgroupid = 0;  // 0 = the level-0 qgroup of the subvolume the fd belongs to
  args.lim.flags = BTRFS_QGROUP_LIMIT_MAX_RFER;
  // The kernel clears a limit when it is set to (u64)-1 ("none" in btrfs-progs).
  args.lim.max_rfer = bytes == 0 ? UINT64_MAX : bytes;
  if (Ioctl(dir.get(), BTRFS_IOC_QGROUP_LIMIT, &args) < 0) return f.Errno("ioctl(BTRFS_IOC_QGROUP_LIMIT)", path);
  return true;
}

Napi::Value JsSubvolumeCreate(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  return RunVoid(info.Env(), "btrfsSubvolumeCreate", [path](Failure& f) { SubvolumeCreate(path, f); });
}

Napi::Value JsSnapshot(const Napi::CallbackInfo& info) {
  std::string source = ArgPath(info, 0, "source");
  std::string dest = ArgPath(info, 1, "dest");
  Napi::Object opts = ArgOptObject(info, 2, "opts");
  bool readOnly = PropBool(opts, "readOnly", false);
  return RunVoid(info.Env(), "btrfsSnapshot",
                 [source, dest, readOnly](Failure& f) { Snapshot(source, dest, readOnly, f); });
}

Napi::Value JsSubvolumeDelete(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  return RunVoid(info.Env(), "btrfsSubvolumeDelete", [path](Failure& f) { SubvolumeDelete(path, f); });
}

Napi::Value JsIsSubvolume(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  return RunAsync<bool>(
      info.Env(), "btrfsIsSubvolume",
      [path](Failure& f) {
        bool out = false;
        IsSubvolume(path, out, f);
        return out;
      },
      [](Napi::Env env, bool& b) { return Napi::Boolean::New(env, b); });
}

Napi::Value JsSubvolumeInfo(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  return RunAsync<SubvolInfo>(
      info.Env(), "btrfsSubvolumeInfo",
      [path](Failure& f) {
        SubvolInfo out;
        SubvolumeInfo(path, out, f);
        return out;
      },
      [](Napi::Env env, SubvolInfo& s) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("id", Napi::Number::New(env, static_cast<double>(s.id)));
        o.Set("readOnly", Napi::Boolean::New(env, s.readOnly));
        return o;
      });
}

Napi::Value JsQuotaCtl(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  bool enable = ArgBool(info, 1, "enable", true);
  return RunVoid(info.Env(), "btrfsQuotaCtl", [path, enable](Failure& f) { QuotaCtl(path, enable, f); });
}

Napi::Value JsQgroupLimit(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  uint64_t bytes = ArgUint(info, 1, "maxReferenced");
  return RunVoid(info.Env(), "btrfsQgroupLimit", [path, bytes](Failure& f) { QgroupLimit(path, bytes, f); });
}

}  // namespace

void RegisterBtrfs(Napi::Env env, Napi::Object exports) {
  exports.Set("btrfsSubvolumeCreate", Napi::Function::New(env, JsSubvolumeCreate, "btrfsSubvolumeCreate"));
  exports.Set("btrfsSnapshot", Napi::Function::New(env, JsSnapshot, "btrfsSnapshot"));
  exports.Set("btrfsSubvolumeDelete", Napi::Function::New(env, JsSubvolumeDelete, "btrfsSubvolumeDelete"));
  exports.Set("btrfsIsSubvolume", Napi::Function::New(env, JsIsSubvolume, "btrfsIsSubvolume"));
  exports.Set("btrfsSubvolumeInfo", Napi::Function::New(env, JsSubvolumeInfo, "btrfsSubvolumeInfo"));
  exports.Set("btrfsQuotaCtl", Napi::Function::New(env, JsQuotaCtl, "btrfsQuotaCtl"));
  exports.Set("btrfsQgroupLimit", Napi::Function::New(env, JsQgroupLimit, "btrfsQgroupLimit"));
}

}  // namespace gd
