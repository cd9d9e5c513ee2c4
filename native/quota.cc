// Project quotas (xfs `pquota`), as Docker's daemon/graphdriver/quota: a directory gets a project id that its new
// entries inherit (FS_IOC_FSSETXATTR with FS_XFLAG_PROJINHERIT), and the project gets a block limit
// (quotactl Q_XSETQLIM on a block device node of the filesystem).
//

#include <fcntl.h>
#include <linux/dqblk_xfs.h>
#include <linux/fs.h>
#include <linux/quota.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/args.h"
#include "common/async.h"
#include "common/fd.h"
#include "modules.h"

namespace gd {
void RegisterQuota(Napi::Env env, Napi::Object exports);

namespace {

constexpr uint64_t kMaxProjectId = 0xffffffffULL;
// fs_disk_quota counts basic blocks of 512 bytes.
constexpr uint64_t kBasicBlock = 512;

int QuotaCtl(int cmd, const std::string& device, uint32_t id, void* addr) {
  return static_cast<int>(::syscall(SYS_quotactl, cmd, device.c_str(), static_cast<int>(id), addr));
}

bool GetFsxattr(const std::string& path, UniqueFd& fd, struct fsxattr& fsx, Failure& f) {
  fd.reset(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return f.Errno("open", path);
  std::memset(&fsx, 0, sizeof fsx);
  if (::ioctl(fd.get(), FS_IOC_FSGETXATTR, &fsx) != 0) return f.Errno("ioctl(FS_IOC_FSGETXATTR)", path);
  return true;
}

// getProjectId(dir): the project id of a directory.
Napi::Value GetProjectId(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  return RunAsync<uint32_t>(
      info.Env(), "getProjectId",
      [=](Failure& f) -> uint32_t {
        UniqueFd fd;
        struct fsxattr fsx;
        if (!GetFsxattr(path, fd, fsx, f)) return 0;
        return fsx.fsx_projid;
      },
      [](Napi::Env env, uint32_t& id) { return Napi::Number::New(env, id); });
}

// setProjectId(dir, id): sets the project id and FS_XFLAG_PROJINHERIT, so new entries below get the id too.
Napi::Value SetProjectId(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  uint64_t id = ArgUint(info, 1, "projectId");
  if (id > kMaxProjectId) throw Napi::RangeError::New(info.Env(), "projectId out of range");
  return RunVoid(info.Env(), "setProjectId", [=](Failure& f) {
    UniqueFd fd;
    struct fsxattr fsx;
    if (!GetFsxattr(path, fd, fsx, f)) return;
    fsx.fsx_projid = static_cast<uint32_t>(id);
    fsx.fsx_xflags |= FS_XFLAG_PROJINHERIT;
    if (::ioctl(fd.get(), FS_IOC_FSSETXATTR, &fsx) != 0) f.Errno("ioctl(FS_IOC_FSSETXATTR)", path);
  });
}

// setProjectQuota(device, id, bytes): hard and soft block limits of a project (0 = no limit).
Napi::Value SetProjectQuota(const Napi::CallbackInfo& info) {
  std::string device = ArgPath(info, 0, "device");
  uint64_t id = ArgUint(info, 1, "projectId");
  uint64_t bytes = ArgUint(info, 2, "bytes");
  if (id > kMaxProjectId) throw Napi::RangeError::New(info.Env(), "projectId out of range");
  return RunVoid(info.Env(), "setProjectQuota", [=](Failure& f) {
    struct fs_disk_quota d;
    std::memset(&d, 0, sizeof d);
    d.d_version = FS_DQUOT_VERSION;
    d.d_id = static_cast<uint32_t>(id);
    d.d_flags = FS_PROJ_QUOTA;
    d.d_fieldmask = FS_DQ_BHARD | FS_DQ_BSOFT;
    // Rounded up so that a limit is never smaller than asked for.
    const uint64_t blocks = bytes / kBasicBlock + (bytes % kBasicBlock != 0 ? 1 : 0);
    d.d_blk_hardlimit = blocks;
    d.d_blk_softlimit = blocks;
    if (QuotaCtl(QCMD(Q_XSETQLIM, PRJQUOTA), device, static_cast<uint32_t>(id), &d) != 0) {
      f.Errno("quotactl(Q_XSETQLIM)", device);
    }
  });
}

struct QuotaInfo {
  uint64_t hardLimit = 0;
  uint64_t used = 0;
};

// getProjectQuota(device, id): { hardLimit, used } in bytes.
Napi::Value GetProjectQuota(const Napi::CallbackInfo& info) {
  std::string device = ArgPath(info, 0, "device");
  uint64_t id = ArgUint(info, 1, "projectId");
  if (id > kMaxProjectId) throw Napi::RangeError::New(info.Env(), "projectId out of range");
  return RunAsync<QuotaInfo>(
      info.Env(), "getProjectQuota",
      [=](Failure& f) -> QuotaInfo {
        struct fs_disk_quota d;
        std::memset(&d, 0, sizeof d);
        QuotaInfo q;
        if (QuotaCtl(QCMD(Q_XGETQUOTA, PRJQUOTA), device, static_cast<uint32_t>(id), &d) != 0) {
          f.Errno("quotactl(Q_XGETQUOTA)", device);
          return q;
        }
        // Saturate instead of overflowing on absurd values from the kernel.
        constexpr uint64_t kMax = UINT64_MAX / kBasicBlock;
        q.hardLimit = d.d_blk_hardlimit > kMax ? UINT64_MAX : d.d_blk_hardlimit * kBasicBlock;
        q.used = d.d_bcount > kMax ? UINT64_MAX : d.d_bcount * kBasicBlock;
        return q;
      },
      [](Napi::Env env, QuotaInfo& q) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("hardLimit", Napi::Number::New(env, static_cast<double>(q.hardLimit)));
        o.Set("used", Napi::Number::New(env, static_cast<double>(q.used)));
        return o;
      });
}

}  // namespace

void RegisterQuota(Napi::Env env, Napi::Object exports) {
  exports.Set("getProjectId", Napi::Function::New(env, GetProjectId, "getProjectId"));
  exports.Set("setProjectId", Napi::Function::New(env, SetProjectId, "setProjectId"));
  exports.Set("setProjectQuota", Napi::Function::New(env, SetProjectQuota, "setProjectQuota"));
  exports.Set("getProjectQuota", Napi::Function::New(env, GetProjectQuota, "getProjectQuota"));
}

}  // namespace gd
