// Loop devices: attach a file (LOOP_CONFIGURE, or LOOP_SET_FD + LOOP_SET_STATUS64 on kernels before 5.8),
// detach, query and resize. Used by the devicemapper driver for its sparse data/metadata files.
//
// Autoclear: the kernel detaches an LO_FLAGS_AUTOCLEAR device on the last close of the block device. If we
// closed our descriptor right after attaching, nothing would hold the device yet and it would vanish before the
// caller could use it. So for autoclear attaches the addon keeps the device open (one O_CLOEXEC fd per device)
// until loopDetach() or process exit; from then on the device lives exactly as long as its other users (a
// mounted filesystem, a device-mapper table), which is what autoclear is for.
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <string>

#include "common/args.h"
#include "common/async.h"
#include "common/fd.h"
#include "modules.h"

namespace gd {
namespace {

constexpr const char* kLoopControl = "/dev/loop-control";
constexpr unsigned kLoopMajor = 7;
constexpr int kAttachAttempts = 16;  // free devices taken by concurrent attachers before we give up with EBUSY

// Descriptors kept open for autoclear devices, keyed by the device number (st_rdev). Touched only on worker
// threads, hence the mutex.
std::mutex gHeldMutex;
std::map<dev_t, int>& HeldFds() {
  static auto* held = new std::map<dev_t, int>();  // never destroyed: fds must stay valid until process exit
  return *held;
}

void HoldFd(dev_t rdev, int fd) {
  std::lock_guard<std::mutex> lock(gHeldMutex);
  auto& held = HeldFds();
  auto it = held.find(rdev);
  if (it != held.end()) {
    // A stale hold from an earlier attach of the same device (detached by someone else since): replace it.
    ::close(it->second);
    it->second = fd;
  } else {
    held.emplace(rdev, fd);
  }
}

void ReleaseFd(dev_t rdev) {
  int fd = -1;
  {
    std::lock_guard<std::mutex> lock(gHeldMutex);
    auto& held = HeldFds();
    auto it = held.find(rdev);
    if (it == held.end()) return;
    fd = it->second;
    held.erase(it);
  }
  ::close(fd);
}

// Reads a small sysfs attribute; false when it does not exist. Strips the trailing newline.
bool ReadSysfs(const std::string& path, std::string& out) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  char buf[4097];
  ssize_t total = 0;
  while (total < static_cast<ssize_t>(sizeof(buf) - 1)) {
    ssize_t n = ::read(fd.get(), buf + total, sizeof(buf) - 1 - total);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) break;
    total += n;
  }
  out.assign(buf, static_cast<size_t>(total));
  while (!out.empty() && (out.back() == '\n' || out.back() == '\0')) out.pop_back();
  return true;
}

int GetFreeIndex(Failure& f) {
  UniqueFd ctl(::open(kLoopControl, O_RDWR | O_CLOEXEC));
  if (!ctl.valid()) {
    f.Errno("open", kLoopControl);
    return -1;
  }
  int idx = ::ioctl(ctl.get(), LOOP_CTL_GET_FREE);
  if (idx < 0) f.Errno("ioctl(LOOP_CTL_GET_FREE)", kLoopControl);
  return idx;
}

// Opens /dev/loopN, creating the node when /dev is static (containers without udev). The device number comes
// from sysfs because loop minors are shifted when the module runs with max_part > 0.
int OpenLoopNode(int idx, const std::string& path, int flags, Failure& f) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd >= 0 || errno != ENOENT) {
    if (fd < 0) f.Errno("open", path);
    return fd;
  }
  dev_t dev = makedev(kLoopMajor, static_cast<unsigned>(idx));
  std::string sys;
  unsigned maj = 0, min = 0;
  if (ReadSysfs("/sys/block/loop" + std::to_string(idx) + "/dev", sys) && std::sscanf(sys.c_str(), "%u:%u", &maj, &min) == 2) {
    dev = makedev(maj, min);
  }
  if (::mknod(path.c_str(), S_IFBLK | 0660, dev) != 0 && errno != EEXIST) {
    f.Errno("mknod", path);
    return -1;
  }
  fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) f.Errno("open", path);
  return fd;
}

struct AttachParams {
  std::string file;
  bool readOnly = false;
  bool autoclear = true;
  bool directIo = false;
  uint64_t offset = 0;
  uint64_t sizeLimit = 0;
  bool noConfigure = false;  // GRAPHDRIVER_LOOP_NO_CONFIGURE=1: exercise the pre-5.8 path
};

struct AttachResult {
  std::string device;
  int index = -1;
};

loop_info64 MakeInfo(const AttachParams& p) {
  loop_info64 li;
  std::memset(&li, 0, sizeof(li));
  li.lo_offset = p.offset;
  li.lo_sizelimit = p.sizeLimit;
  li.lo_flags = (p.autoclear ? LO_FLAGS_AUTOCLEAR : 0) | (p.readOnly ? LO_FLAGS_READ_ONLY : 0) |
                (p.directIo ? LO_FLAGS_DIRECT_IO : 0);
  // The kernel keeps only LO_NAME_SIZE bytes (NUL included); the full path is in sysfs backing_file.
  std::strncpy(reinterpret_cast<char*>(li.lo_file_name), p.file.c_str(), LO_NAME_SIZE - 1);
  return li;
}

enum class Outcome { Ok, Busy, Unsupported, Failed };

Outcome TryConfigure(int devFd, int fileFd, const AttachParams& p, const std::string& dev, Failure& f) {
  loop_config cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.fd = static_cast<__u32>(fileFd);
  cfg.info = MakeInfo(p);
  if (::ioctl(devFd, LOOP_CONFIGURE, &cfg) == 0) return Outcome::Ok;
  if (errno == EBUSY) return Outcome::Busy;
  // Kernels before 5.8 do not know LOOP_CONFIGURE: EINVAL from the loop driver, ENOTTY from the block layer.
  if (errno == EINVAL || errno == ENOTTY) return Outcome::Unsupported;
  f.Errno("ioctl(LOOP_CONFIGURE)", p.file, dev);
  return Outcome::Failed;
}

Outcome TrySetFd(int devFd, int fileFd, const AttachParams& p, const std::string& dev, Failure& f) {
  if (::ioctl(devFd, LOOP_SET_FD, fileFd) != 0) {
    if (errno == EBUSY) return Outcome::Busy;
    f.Errno("ioctl(LOOP_SET_FD)", p.file, dev);
    return Outcome::Failed;
  }
  // LOOP_SET_STATUS64 ignores READ_ONLY (it follows the open modes) and DIRECT_IO (separate ioctl below).
  loop_info64 li = MakeInfo(p);
  li.lo_flags &= LO_FLAGS_AUTOCLEAR;
  int rc = -1;
  for (int attempt = 0; attempt < 20; ++attempt) {
    rc = ::ioctl(devFd, LOOP_SET_STATUS64, &li);
    // EAGAIN: the kernel could not drop the page cache after an offset change yet; it asks to retry.
    if (rc == 0 || errno != EAGAIN) break;
    struct timespec ts = {0, 25 * 1000 * 1000};
    ::nanosleep(&ts, nullptr);
  }
  if (rc != 0) {
    f.Errno("ioctl(LOOP_SET_STATUS64)", p.file, dev);
    ::ioctl(devFd, LOOP_CLR_FD, 0);
    return Outcome::Failed;
  }
  // Direct I/O is an optimisation: LOOP_CONFIGURE also drops it silently when the backing file cannot do it.
  if (p.directIo) ::ioctl(devFd, LOOP_SET_DIRECT_IO, 1UL);
  return Outcome::Ok;
}

AttachResult Attach(const AttachParams& p, Failure& f) {
  AttachResult r;
  int mode = p.readOnly ? O_RDONLY : O_RDWR;
  UniqueFd file(::open(p.file.c_str(), mode | O_CLOEXEC));
  if (!file.valid()) {
    f.Errno("open", p.file);
    return r;
  }
  bool useConfigure = !p.noConfigure;
  for (int attempt = 0; attempt < kAttachAttempts; ++attempt) {
    int idx = GetFreeIndex(f);
    if (idx < 0) return r;
    std::string dev = "/dev/loop" + std::to_string(idx);
    UniqueFd devFd(OpenLoopNode(idx, dev, mode, f));
    if (!devFd.valid()) return r;
    Outcome o = Outcome::Unsupported;
    if (useConfigure) {
      o = TryConfigure(devFd.get(), file.get(), p, dev, f);
      if (o == Outcome::Unsupported) useConfigure = false;  // remember for the retries
    }
    if (o == Outcome::Unsupported) o = TrySetFd(devFd.get(), file.get(), p, dev, f);
    if (o == Outcome::Busy) continue;  // another attacher took this index between GET_FREE and our ioctl
    if (o == Outcome::Failed) return r;
    if (p.autoclear) {
      struct stat st {};
      if (::fstat(devFd.get(), &st) != 0) {
        f.Errno("fstat", dev);
        ::ioctl(devFd.get(), LOOP_CLR_FD, 0);
        return r;
      }
      HoldFd(st.st_rdev, devFd.release());
    }
    r.device = dev;
    r.index = idx;
    return r;
  }
  f.Set(EBUSY, "ioctl(LOOP_CONFIGURE)", p.file);
  return r;
}

Napi::Value LoopGetFree(const Napi::CallbackInfo& info) {
  return RunAsync<int>(
      info.Env(), "loopGetFree", [](Failure& f) { return GetFreeIndex(f); },
      [](Napi::Env env, int& idx) { return Napi::Number::New(env, idx); });
}

Napi::Value LoopAttach(const Napi::CallbackInfo& info) {
  AttachParams p;
  p.file = ArgPath(info, 0, "file");
  Napi::Object opts = ArgOptObject(info, 1, "opts");
  p.readOnly = PropBool(opts, "readOnly", false);
  p.autoclear = PropBool(opts, "autoclear", true);
  p.directIo = PropBool(opts, "directIo", false);
  p.offset = PropUint(opts, "offset", 0);
  p.sizeLimit = PropUint(opts, "sizeLimit", 0);
  // Read here, on the main thread: getenv is not safe against concurrent setenv from JS (process.env writes).
  const char* noConf = std::getenv("GRAPHDRIVER_LOOP_NO_CONFIGURE");
  p.noConfigure = noConf != nullptr && std::strcmp(noConf, "1") == 0;
  return RunAsync<AttachResult>(
      info.Env(), "loopAttach", [p](Failure& f) { return Attach(p, f); },
      [](Napi::Env env, AttachResult& r) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("device", r.device);
        o.Set("index", r.index);
        return o;
      });
}

Napi::Value LoopDetach(const Napi::CallbackInfo& info) {
  std::string device = ArgPath(info, 0, "device");
  return RunVoid(info.Env(), "loopDetach", [=](Failure& f) {
    UniqueFd fd(::open(device.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
      f.Errno("open", device);
      return;
    }
    struct stat st {};
    bool haveRdev = ::fstat(fd.get(), &st) == 0 && S_ISBLK(st.st_mode);
    // With other openers (our autoclear hold, a mount) the kernel defers the detach to the last close.
    if (::ioctl(fd.get(), LOOP_CLR_FD, 0) != 0) f.Errno("ioctl(LOOP_CLR_FD)", device);
    // Drop our hold in any case: after a detach (or on a device that is no longer attached) it has no purpose.
    if (haveRdev) ReleaseFd(st.st_rdev);
  });
}

struct InfoResult {
  std::string backingFile;
  double index = 0, backingDev = 0, backingInode = 0, offset = 0, sizeLimit = 0;
  bool autoclear = false, readOnly = false;
};

Napi::Value LoopInfo(const Napi::CallbackInfo& info) {
  std::string device = ArgPath(info, 0, "device");
  return RunAsync<InfoResult>(
      info.Env(), "loopInfo",
      [=](Failure& f) {
        InfoResult r;
        UniqueFd fd(::open(device.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd.valid()) {
          f.Errno("open", device);
          return r;
        }
        loop_info64 li;
        std::memset(&li, 0, sizeof(li));
        if (::ioctl(fd.get(), LOOP_GET_STATUS64, &li) != 0) {
          f.Errno("ioctl(LOOP_GET_STATUS64)", device);
          return r;
        }
        r.index = li.lo_number;
        r.backingDev = static_cast<double>(li.lo_device);
        r.backingInode = static_cast<double>(li.lo_inode);
        r.offset = static_cast<double>(li.lo_offset);
        r.sizeLimit = static_cast<double>(li.lo_sizelimit);
        r.autoclear = (li.lo_flags & LO_FLAGS_AUTOCLEAR) != 0;
        r.readOnly = (li.lo_flags & LO_FLAGS_READ_ONLY) != 0;
        // lo_file_name is cut at 63 bytes; sysfs has the whole path. The kernel NUL-terminates lo_file_name, but
        // bound the scan anyway.
        if (!ReadSysfs("/sys/block/loop" + std::to_string(li.lo_number) + "/loop/backing_file", r.backingFile)) {
          const char* name = reinterpret_cast<const char*>(li.lo_file_name);
          r.backingFile.assign(name, strnlen(name, LO_NAME_SIZE));
        }
        return r;
      },
      [device](Napi::Env env, InfoResult& r) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("device", device);
        o.Set("index", r.index);
        o.Set("backingFile", r.backingFile);
        o.Set("backingDev", r.backingDev);
        o.Set("backingInode", r.backingInode);
        o.Set("offset", r.offset);
        o.Set("sizeLimit", r.sizeLimit);
        o.Set("autoclear", r.autoclear);
        o.Set("readOnly", r.readOnly);
        return o;
      });
}

Napi::Value LoopSetCapacity(const Napi::CallbackInfo& info) {
  std::string device = ArgPath(info, 0, "device");
  return RunVoid(info.Env(), "loopSetCapacity", [=](Failure& f) {
    UniqueFd fd(::open(device.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
      f.Errno("open", device);
      return;
    }
    if (::ioctl(fd.get(), LOOP_SET_CAPACITY, 0) != 0) f.Errno("ioctl(LOOP_SET_CAPACITY)", device);
  });
}

Napi::Value BlockDeviceSize(const Napi::CallbackInfo& info) {
  std::string device = ArgPath(info, 0, "device");
  return RunAsync<double>(
      info.Env(), "blockDeviceSize",
      [=](Failure& f) {
        UniqueFd fd(::open(device.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd.valid()) {
          f.Errno("open", device);
          return 0.0;
        }
        uint64_t size = 0;
        if (::ioctl(fd.get(), BLKGETSIZE64, &size) != 0) {
          f.Errno("ioctl(BLKGETSIZE64)", device);
          return 0.0;
        }
        return static_cast<double>(size);
      },
      [](Napi::Env env, double& size) { return Napi::Number::New(env, size); });
}

}  // namespace

void RegisterLoop(Napi::Env env, Napi::Object exports) {
  exports.Set("loopGetFree", Napi::Function::New(env, LoopGetFree, "loopGetFree"));
  exports.Set("loopAttach", Napi::Function::New(env, LoopAttach, "loopAttach"));
  exports.Set("loopDetach", Napi::Function::New(env, LoopDetach, "loopDetach"));
  exports.Set("loopInfo", Napi::Function::New(env, LoopInfo, "loopInfo"));
  exports.Set("loopSetCapacity", Napi::Function::New(env, LoopSetCapacity, "loopSetCapacity"));
  exports.Set("blockDeviceSize", Napi::Function::New(env, BlockDeviceSize, "blockDeviceSize"));
}

}  // namespace gd
