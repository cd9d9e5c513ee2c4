// Sparse files and discard: fallocate(2), ftruncate(2) and BLKDISCARD, the space primitives of the loop-backed
// devicemapper pool (sparse data/metadata files, hole punching on delete).
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <string>

#include "common/args.h"
#include "common/async.h"
#include "common/fd.h"
#include "modules.h"

namespace gd {
namespace {

constexpr uint64_t kMaxOff = static_cast<uint64_t>(std::numeric_limits<off_t>::max());

Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  uint64_t mode = ArgUint(info, 1, "mode");
  uint64_t offset = ArgUint(info, 2, "offset");
  uint64_t length = ArgUint(info, 3, "length");
  if (mode > static_cast<uint64_t>(std::numeric_limits<int>::max())) throw Napi::TypeError::New(info.Env(), "mode out of range");
  return RunVoid(info.Env(), "fallocate", [=](Failure& f) {
    // Safe integers always fit off_t; the kernel itself rejects offset + length beyond the maximum file size.
    if (offset > kMaxOff || length > kMaxOff) {
      f.Set(EFBIG, "fallocate", path);
      return;
    }
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid()) {
      f.Errno("open", path);
      return;
    }
    if (::fallocate(fd.get(), static_cast<int>(mode), static_cast<off_t>(offset), static_cast<off_t>(length)) != 0) {
      f.Errno("fallocate", path);
    }
  });
}

Napi::Value Truncate(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  uint64_t size = ArgUint(info, 1, "size");
  bool create = ArgBool(info, 2, "create", false);
  return RunVoid(info.Env(), "truncate", [=](Failure& f) {
    if (size > kMaxOff) {
      f.Set(EFBIG, "ftruncate", path);
      return;
    }
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | (create ? O_CREAT : 0), 0600));
    if (!fd.valid()) {
      f.Errno("open", path);
      return;
    }
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) f.Errno("ftruncate", path);
  });
}

Napi::Value BlkDiscard(const Napi::CallbackInfo& info) {
  std::string device = ArgPath(info, 0, "device");
  uint64_t offset = ArgUint(info, 1, "offset");
  uint64_t length = ArgUint(info, 2, "length");
  return RunVoid(info.Env(), "blkDiscard", [=](Failure& f) {
    // BLKDISCARD needs the device open for writing (EBADF otherwise).
    UniqueFd fd(::open(device.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) {
      f.Errno("open", device);
      return;
    }
    uint64_t range[2] = {offset, length};
    if (::ioctl(fd.get(), BLKDISCARD, range) != 0) f.Errno("ioctl(BLKDISCARD)", device);
  });
}

}  // namespace

void RegisterSparse(Napi::Env env, Napi::Object exports) {
  exports.Set("fallocate", Napi::Function::New(env, Fallocate, "fallocate"));
  exports.Set("truncate", Napi::Function::New(env, Truncate, "truncate"));
  exports.Set("blkDiscard", Napi::Function::New(env, BlkDiscard, "blkDiscard"));
}

}  // namespace gd
