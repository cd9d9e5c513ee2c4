// Device-mapper control: the DM_* ioctls on /dev/mapper/control that libdevmapper would otherwise issue.
//
// Every call opens the control node itself (O_RDWR|O_CLOEXEC) and closes it when done: the kernel keeps no
// per-fd state for these ioctls, so concurrent calls from several pool threads need no lock, and a host without
// device-mapper reports ENOENT from `open` on each call instead of failing once at load time.
//
// Wire format (include/uapi/linux/dm-ioctl.h, drivers/md/dm-ioctl.c): one buffer holds a struct dm_ioctl header
// followed by a data area at `data_start`. Input payloads (table specs, target messages) go there; the kernel
// writes its output at the 8-byte aligned end of the header, sets `data_size` to the bytes it filled and flags
// DM_BUFFER_FULL_FLAG when the buffer was too small, in which case the call is repeated with a larger buffer.
// Nothing the kernel returns is trusted: every offset is checked against the buffer before it is read.
#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/args.h"
#include "common/async.h"
#include "common/failure.h"
#include "common/fd.h"
#include "modules.h"

namespace gd {
namespace {

constexpr const char* kControl = "/dev/mapper/control";

// The kernel places its output at the header size rounded up to 8 (get_result_buffer); input payloads use the
// same offset so the two layouts agree.
constexpr size_t kDataStart = (sizeof(struct dm_ioctl) + 7) & ~size_t{7};
constexpr size_t kInitialBuffer = 16 * 1024;
constexpr size_t kMaxBuffer = 16 * 1024 * 1024;
// Target messages are executed before the kernel finds out the reply does not fit, so they are never re-sent
// with a larger buffer; this size is generous for every reply the in-tree targets produce.
constexpr size_t kMessageBuffer = 256 * 1024;

// ---------------------------------------------------------------------------------------------------------
// Read-only devices. The kernel makes read-only a property of a table (DM_READONLY_FLAG on DM_TABLE_LOAD), not
// of the device, so dmCreate({readOnly}) records the name here and dmLoad loads that device's tables read-only.
// The record lives for this process and is dropped when the device is removed through dmRemove.
std::mutex gReadOnlyMutex;
std::set<std::string> gReadOnlyNames;

void SetReadOnly(const std::string& name, bool ro) {
  std::lock_guard<std::mutex> lock(gReadOnlyMutex);
  if (ro)
    gReadOnlyNames.insert(name);
  else
    gReadOnlyNames.erase(name);
}

bool IsReadOnly(const std::string& name) {
  std::lock_guard<std::mutex> lock(gReadOnlyMutex);
  return gReadOnlyNames.count(name) != 0;
}

// ---------------------------------------------------------------------------------------------------------
// Buffer and one ioctl round trip.

// 8-byte aligned, zero-filled storage for a dm_ioctl and its data area (dm_ioctl holds a __u64).
class DmBuffer {
 public:
  DmBuffer() = default;
  explicit DmBuffer(size_t bytes) : words_((bytes + 7) / 8, 0) {}

  size_t size() const { return words_.size() * 8; }
  dm_ioctl* io() { return reinterpret_cast<dm_ioctl*>(words_.data()); }
  const dm_ioctl* io() const { return reinterpret_cast<const dm_ioctl*>(words_.data()); }
  char* bytes() { return reinterpret_cast<char*>(words_.data()); }
  const char* bytes() const { return reinterpret_cast<const char*>(words_.data()); }

  // The data area the kernel reported ([data_start, data_size)), or an empty range when those fields are
  // inconsistent with the buffer.
  bool DataRange(size_t& start, size_t& len) const {
    if (words_.empty()) return false;
    const dm_ioctl* h = io();
    size_t ds = h->data_start;
    size_t dz = h->data_size;
    if (ds < offsetof(dm_ioctl, data) || ds > dz || dz > size()) {
      start = len = 0;
      return false;
    }
    start = ds;
    len = dz - ds;
    return true;
  }

 private:
  std::vector<uint64_t> words_;
};

struct DmRequest {
  unsigned long cmd = 0;
  const char* sys = "";       // "ioctl(DM_...)" for errors
  std::string name;           // device name (may be empty for global commands)
  std::string uuid;           // only sent by DM_DEV_CREATE
  uint32_t flags = 0;
  uint32_t targetCount = 0;
  std::string payload;        // bytes placed at kDataStart
  std::string detail;         // appended to error messages
  size_t initial = kInitialBuffer;
  bool grow = true;           // repeat with a doubled buffer on DM_BUFFER_FULL_FLAG
  bool retryEintr = true;     // safe only for calls that can be repeated
};

bool CheckName(const std::string& name, const char* sys, Failure& f) {
  if (name.size() >= DM_NAME_LEN) {
    f.Set(EINVAL, sys, name);
    f.detail = "device name longer than " + std::to_string(DM_NAME_LEN - 1) + " bytes";
    return false;
  }
  return true;
}

// Issues one DM ioctl; on success `out` holds the kernel's answer with a validated header.
bool DmRun(const DmRequest& r, DmBuffer& out, Failure& f) {
  // Validated by the callers already; re-checked so that the memcpy below can never overflow.
  if (r.name.size() >= DM_NAME_LEN || r.uuid.size() >= DM_UUID_LEN) {
    f.Set(EINVAL, r.sys, r.name);
    f.detail = "device name or uuid too long";
    return false;
  }
  size_t need = kDataStart + ((r.payload.size() + 7) & ~size_t{7});
  size_t size = r.initial > need ? r.initial : need;
  if (size > kMaxBuffer) {
    f.Set(E2BIG, r.sys, r.name);
    f.detail = "request larger than " + std::to_string(kMaxBuffer) + " bytes";
    return false;
  }

  UniqueFd ctl(::open(kControl, O_RDWR | O_CLOEXEC));
  if (!ctl.valid()) return f.Errno("open", kControl);

  for (;;) {
    DmBuffer buf(size);
    dm_ioctl* h = buf.io();
    // Ask for interface 4.0.0: the kernel accepts any client minor up to its own and reports its version back.
    h->version[0] = DM_VERSION_MAJOR;
    h->version[1] = 0;
    h->version[2] = 0;
    h->data_size = static_cast<uint32_t>(buf.size());
    h->data_start = static_cast<uint32_t>(kDataStart);
    h->target_count = r.targetCount;
    h->flags = r.flags;
    std::memcpy(h->name, r.name.data(), r.name.size());
    std::memcpy(h->uuid, r.uuid.data(), r.uuid.size());
    if (!r.payload.empty()) std::memcpy(buf.bytes() + kDataStart, r.payload.data(), r.payload.size());

    int rc;
    do {
      rc = ::ioctl(ctl.get(), r.cmd, h);
    } while (rc < 0 && errno == EINTR && r.retryEintr);
    if (rc < 0) {
      f.Errno(r.sys, r.name);
      f.detail = r.detail;
      return false;
    }
    if (h->data_size > buf.size()) {
      f.Set(EIO, r.sys, r.name);
      f.detail = "kernel reported a data size beyond the buffer";
      return false;
    }
    if (h->flags & DM_BUFFER_FULL_FLAG) {
      if (!r.grow) {
        f.Set(ENOBUFS, r.sys, r.name);
        f.detail = "reply larger than " + std::to_string(buf.size()) + " bytes (the message was delivered)";
        return false;
      }
      if (size >= kMaxBuffer) {
        f.Set(ENOBUFS, r.sys, r.name);
        f.detail = "result larger than " + std::to_string(kMaxBuffer) + " bytes";
        return false;
      }
      size *= 2;
      if (size > kMaxBuffer) size = kMaxBuffer;
      continue;
    }
    out = std::move(buf);
    return true;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Results.

struct Info {
  std::string name;
  std::string uuid;
  uint32_t major = 0;
  uint32_t minor = 0;
  int32_t openCount = 0;
  uint32_t eventNr = 0;
  uint32_t targetCount = 0;
  uint32_t flags = 0;
};

std::string BoundedString(const char* s, size_t cap) { return std::string(s, ::strnlen(s, cap)); }

Info InfoFrom(const DmBuffer& b) {
  const dm_ioctl* h = b.io();
  Info i;
  i.name = BoundedString(h->name, sizeof(h->name));
  i.uuid = BoundedString(h->uuid, sizeof(h->uuid));
  // h->dev is huge_encode_dev(); glibc's major()/minor() decode that encoding.
  dev_t dev = static_cast<dev_t>(h->dev);
  i.major = major(dev);
  i.minor = minor(dev);
  i.openCount = h->open_count;
  i.eventNr = h->event_nr;
  i.targetCount = h->target_count;
  i.flags = h->flags;
  return i;
}

double DevNumber(uint32_t maj, uint32_t min) {
  // makedev() can exceed 32 bits; it stays below 2^53 for every major/minor the kernel hands out (12+20 bits).
  return static_cast<double>(makedev(maj, min));
}

Napi::Value InfoToJs(Napi::Env env, const Info& i) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", i.name);
  o.Set("uuid", i.uuid);
  o.Set("major", Napi::Number::New(env, i.major));
  o.Set("minor", Napi::Number::New(env, i.minor));
  o.Set("dev", Napi::Number::New(env, DevNumber(i.major, i.minor)));
  o.Set("openCount", Napi::Number::New(env, i.openCount));
  o.Set("eventNr", Napi::Number::New(env, i.eventNr));
  o.Set("targetCount", Napi::Number::New(env, i.targetCount));
  o.Set("suspended", Napi::Boolean::New(env, (i.flags & DM_SUSPEND_FLAG) != 0));
  o.Set("readOnly", Napi::Boolean::New(env, (i.flags & DM_READONLY_FLAG) != 0));
  o.Set("liveTable", Napi::Boolean::New(env, (i.flags & DM_ACTIVE_PRESENT_FLAG) != 0));
  o.Set("inactiveTable", Napi::Boolean::New(env, (i.flags & DM_INACTIVE_PRESENT_FLAG) != 0));
  o.Set("deferredRemove", Napi::Boolean::New(env, (i.flags & DM_DEFERRED_REMOVE) != 0));
  return o;
}

struct Target {
  uint64_t start = 0;
  uint64_t length = 0;
  std::string type;
  std::string params;
};

Napi::Value TargetsToJs(Napi::Env env, const std::vector<Target>& ts) {
  Napi::Array a = Napi::Array::New(env, ts.size());
  for (size_t i = 0; i < ts.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("start", Napi::Number::New(env, static_cast<double>(ts[i].start)));
    o.Set("length", Napi::Number::New(env, static_cast<double>(ts[i].length)));
    o.Set("type", ts[i].type);
    o.Set("params", ts[i].params);
    a.Set(static_cast<uint32_t>(i), o);
  }
  return a;
}

bool Malformed(Failure& f, const char* sys, const std::string& name, const char* what) {
  f.Set(EIO, sys, name);
  f.detail = std::string("malformed kernel reply: ") + what;
  return false;
}

// DM_TABLE_STATUS output: target_count dm_target_spec records, each followed by a NUL-terminated string; `next`
// is the offset of the following record from the start of the data area.
bool ParseTargets(const DmBuffer& b, const char* sys, const std::string& name, std::vector<Target>& out,
                  Failure& f) {
  uint32_t count = b.io()->target_count;
  if (count == 0) return true;
  size_t start = 0, len = 0;
  if (!b.DataRange(start, len)) return Malformed(f, sys, name, "data area out of range");
  const char* data = b.bytes() + start;
  size_t off = 0;
  for (uint32_t i = 0; i < count; i++) {
    if (off > len || len - off < sizeof(dm_target_spec)) return Malformed(f, sys, name, "truncated target spec");
    dm_target_spec spec;
    std::memcpy(&spec, data + off, sizeof(spec));
    size_t p = off + sizeof(spec);
    const void* nul = std::memchr(data + p, '\0', len - p);
    if (nul == nullptr) return Malformed(f, sys, name, "unterminated target parameters");
    Target t;
    t.start = spec.sector_start;
    t.length = spec.length;
    t.type = BoundedString(spec.target_type, sizeof(spec.target_type));
    t.params.assign(data + p, static_cast<const char*>(nul) - (data + p));
    out.push_back(std::move(t));
    if (i + 1 < count) {
      if (spec.next <= off) return Malformed(f, sys, name, "target spec offsets do not advance");
      off = spec.next;
    }
  }
  return true;
}

struct ListEntry {
  std::string name;
  uint32_t major = 0;
  uint32_t minor = 0;
};

// DM_LIST_DEVICES output: dm_name_list records chained by `next` (offset from the current record, 0 = last);
// a first record with dev == 0 means there are no devices.
bool ParseList(const DmBuffer& b, std::vector<ListEntry>& out, Failure& f) {
  const char* sys = "ioctl(DM_LIST_DEVICES)";
  size_t start = 0, len = 0;
  if (!b.DataRange(start, len)) return Malformed(f, sys, "", "data area out of range");
  const char* data = b.bytes() + start;
  constexpr size_t kNameOff = offsetof(dm_name_list, name);
  size_t off = 0;
  for (;;) {
    if (off > len || len - off < kNameOff) {
      if (off == 0) return true;  // nothing written: no devices
      return Malformed(f, sys, "", "truncated name list");
    }
    uint64_t dev;
    uint32_t next;
    std::memcpy(&dev, data + off + offsetof(dm_name_list, dev), sizeof(dev));
    std::memcpy(&next, data + off + offsetof(dm_name_list, next), sizeof(next));
    if (dev == 0 && off == 0) return true;
    size_t p = off + kNameOff;
    const void* nul = std::memchr(data + p, '\0', len - p);
    if (nul == nullptr) return Malformed(f, sys, "", "unterminated device name");
    ListEntry e;
    e.name.assign(data + p, static_cast<const char*>(nul) - (data + p));
    e.major = major(static_cast<dev_t>(dev));
    e.minor = minor(static_cast<dev_t>(dev));
    out.push_back(std::move(e));
    if (next == 0) return true;
    if (next < kNameOff || next > len - off) return Malformed(f, sys, "", "name list offset out of range");
    off += next;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Request builders.

DmRequest Device(unsigned long cmd, const char* sys, const std::string& name) {
  DmRequest r;
  r.cmd = cmd;
  r.sys = sys;
  r.name = name;
  return r;
}

// DM_TABLE_LOAD payload: per target a dm_target_spec, its NUL-terminated parameter string and zero padding to
// the next 8-byte boundary; `next` is the record size (offset from this spec to the following one).
bool BuildTable(const std::vector<Target>& targets, const std::string& name, std::string& out, Failure& f) {
  const char* sys = "ioctl(DM_TABLE_LOAD)";
  for (size_t i = 0; i < targets.size(); i++) {
    const Target& t = targets[i];
    if (t.type.empty() || t.type.size() >= DM_MAX_TYPE_NAME) {
      f.Set(EINVAL, sys, name);
      f.detail = "targets[" + std::to_string(i) + "].type must be 1.." + std::to_string(DM_MAX_TYPE_NAME - 1) +
                 " bytes";
      return false;
    }
    size_t rec = (sizeof(dm_target_spec) + t.params.size() + 1 + 7) & ~size_t{7};
    if (rec > kMaxBuffer || out.size() + rec > kMaxBuffer) {
      f.Set(E2BIG, sys, name);
      f.detail = "table larger than " + std::to_string(kMaxBuffer) + " bytes";
      return false;
    }
    dm_target_spec spec;
    std::memset(&spec, 0, sizeof(spec));
    spec.sector_start = t.start;
    spec.length = t.length;
    spec.next = static_cast<uint32_t>(rec);
    std::memcpy(spec.target_type, t.type.data(), t.type.size());
    size_t at = out.size();
    out.resize(at + rec, '\0');
    std::memcpy(&out[at], &spec, sizeof(spec));
    std::memcpy(&out[at + sizeof(spec)], t.params.data(), t.params.size());
  }
  return true;
}

std::string TargetTypes(const std::vector<Target>& targets) {
  std::string s;
  for (const Target& t : targets) {
    if (!s.empty()) s += ",";
    s += t.type;
  }
  return "targets: " + s;
}

// ---------------------------------------------------------------------------------------------------------
// JS entry points.

Napi::Value DmVersion(const Napi::CallbackInfo& info) {
  return RunAsync<std::array<uint32_t, 3>>(
      info.Env(), "dmVersion",
      [](Failure& f) {
        std::array<uint32_t, 3> v{};
        DmRequest r;
        r.cmd = DM_VERSION;
        r.sys = "ioctl(DM_VERSION)";
        DmBuffer b;
        if (!DmRun(r, b, f)) return v;
        v = {b.io()->version[0], b.io()->version[1], b.io()->version[2]};
        return v;
      },
      [](Napi::Env env, std::array<uint32_t, 3>& v) {
        Napi::Array a = Napi::Array::New(env, 3);
        for (uint32_t i = 0; i < 3; i++) a.Set(i, Napi::Number::New(env, v[i]));
        return a;
      });
}

Napi::Value DmCreate(const Napi::CallbackInfo& info) {
  std::string name = ArgPath(info, 0, "name");
  Napi::Object opts = ArgOptObject(info, 1, "opts");
  std::string uuid = PropString(opts, "uuid", "");
  bool readOnly = PropBool(opts, "readOnly", false);
  return RunAsync<Info>(
      info.Env(), "dmCreate",
      [name, uuid, readOnly](Failure& f) {
        const char* sys = "ioctl(DM_DEV_CREATE)";
        if (!CheckName(name, sys, f)) return Info{};
        if (uuid.size() >= DM_UUID_LEN) {
          f.Set(EINVAL, sys, name);
          f.detail = "uuid longer than " + std::to_string(DM_UUID_LEN - 1) + " bytes";
          return Info{};
        }
        // The kernel refuses these too (check_name), but only after the open; failing here keeps the error
        // independent of whether device-mapper is present.
        if (name.find('/') != std::string::npos || name == "." || name == "..") {
          f.Set(EINVAL, sys, name);
          f.detail = "device name must not contain '/' or be '.' or '..'";
          return Info{};
        }
        DmRequest r = Device(DM_DEV_CREATE, sys, name);
        r.uuid = uuid;
        if (readOnly) r.flags |= DM_READONLY_FLAG;
        DmBuffer b;
        if (!DmRun(r, b, f)) return Info{};
        SetReadOnly(name, readOnly);
        return InfoFrom(b);
      },
      [](Napi::Env env, Info& i) { return InfoToJs(env, i); });
}

Napi::Value DmLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgPath(info, 0, "name");
  if (!info[1].IsArray()) throw Napi::TypeError::New(env, "targets must be an array");
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<Target> targets;
  targets.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsObject()) throw Napi::TypeError::New(env, "targets[" + std::to_string(i) + "] must be an object");
    Napi::Object o = v.As<Napi::Object>();
    Target t;
    t.start = PropUint(o, "start", 0);
    t.length = PropUint(o, "length", 0);
    t.type = PropString(o, "type", "");
    t.params = PropString(o, "params", "");
    targets.push_back(std::move(t));
  }
  return RunAsync<Info>(
      env, "dmLoad",
      [name, targets = std::move(targets)](Failure& f) {
        const char* sys = "ioctl(DM_TABLE_LOAD)";
        if (!CheckName(name, sys, f)) return Info{};
        DmRequest r = Device(DM_TABLE_LOAD, sys, name);
        if (!BuildTable(targets, name, r.payload, f)) return Info{};
        r.targetCount = static_cast<uint32_t>(targets.size());
        if (IsReadOnly(name)) r.flags |= DM_READONLY_FLAG;
        r.detail = TargetTypes(targets);
        DmBuffer b;
        if (!DmRun(r, b, f)) return Info{};
        return InfoFrom(b);
      },
      [](Napi::Env e, Info& i) { return InfoToJs(e, i); });
}

Napi::Value DmSuspend(const Napi::CallbackInfo& info) {
  std::string name = ArgPath(info, 0, "name");
  Napi::Object opts = ArgOptObject(info, 1, "opts");
  bool noFlush = PropBool(opts, "noFlush", false);
  bool skipLockfs = PropBool(opts, "skipLockfs", false);
  return RunAsync<Info>(
      info.Env(), "dmSuspend",
      [name, noFlush, skipLockfs](Failure& f) {
        const char* sys = "ioctl(DM_DEV_SUSPEND)";
        if (!CheckName(name, sys, f)) return Info{};
        DmRequest r = Device(DM_DEV_SUSPEND, sys, name);
        r.flags = DM_SUSPEND_FLAG | (noFlush ? DM_NOFLUSH_FLAG : 0) | (skipLockfs ? DM_SKIP_LOCKFS_FLAG : 0);
        DmBuffer b;
        if (!DmRun(r, b, f)) return Info{};
        return InfoFrom(b);
      },
      [](Napi::Env env, Info& i) { return InfoToJs(env, i); });
}

Napi::Value DmResume(const Napi::CallbackInfo& info) {
  std::string name = ArgPath(info, 0, "name");
  return RunAsync<Info>(
      info.Env(), "dmResume",
      [name](Failure& f) {
        const char* sys = "ioctl(DM_DEV_SUSPEND)";
        if (!CheckName(name, sys, f)) return Info{};
        // No DM_SUSPEND_FLAG: swap in the inactive table (if any) and resume.
        DmRequest r = Device(DM_DEV_SUSPEND, sys, name);
        r.detail = "resume";
        DmBuffer b;
        if (!DmRun(r, b, f)) return Info{};
        return InfoFrom(b);
      },
      [](Napi::Env env, Info& i) { return InfoToJs(env, i); });
}

Napi::Value DmRemove(const Napi::CallbackInfo& info) {
  std::string name = ArgPath(info, 0, "name");
  Napi::Object opts = ArgOptObject(info, 1, "opts");
  bool deferred = PropBool(opts, "deferred", false);
  return RunVoid(info.Env(), "dmRemove", [name, deferred](Failure& f) {
    const char* sys = "ioctl(DM_DEV_REMOVE)";
    if (!CheckName(name, sys, f)) return;
    DmRequest r = Device(DM_DEV_REMOVE, sys, name);
    if (deferred) r.flags |= DM_DEFERRED_REMOVE;
    DmBuffer b;
    if (!DmRun(r, b, f)) return;
    // A deferred removal of an open device succeeds without removing it; the name stays in use until then.
    if (!deferred) SetReadOnly(name, false);
  });
}

Napi::Value DmMessage(const Napi::CallbackInfo& info) {
  std::string name = ArgPath(info, 0, "name");
  uint64_t sector = ArgUint(info, 1, "sector");
  std::string message = ArgPath(info, 2, "message");
  return RunAsync<std::string>(
      info.Env(), "dmMessage",
      [name, sector, message](Failure& f) {
        const char* sys = "ioctl(DM_TARGET_MSG)";
        if (!CheckName(name, sys, f)) return std::string();
        if (message.size() > kMaxBuffer / 2) {
          f.Set(E2BIG, sys, name);
          f.detail = "message too long";
          return std::string();
        }
        DmRequest r = Device(DM_TARGET_MSG, sys, name);
        r.payload.resize(offsetof(dm_target_msg, message) + message.size() + 1, '\0');
        std::memcpy(&r.payload[0], &sector, sizeof(sector));
        std::memcpy(&r.payload[offsetof(dm_target_msg, message)], message.data(), message.size());
        r.detail = message;
        r.initial = kMessageBuffer;
        r.grow = false;        // a message must not be delivered twice
        r.retryEintr = false;
        DmBuffer b;
        if (!DmRun(r, b, f)) return std::string();
        if (!(b.io()->flags & DM_DATA_OUT_FLAG)) return std::string();
        size_t start = 0, len = 0;
        if (!b.DataRange(start, len)) {
          Malformed(f, sys, name, "reply out of range");
          return std::string();
        }
        const char* p = b.bytes() + start;
        return std::string(p, ::strnlen(p, len));
      },
      [](Napi::Env env, std::string& s) { return Napi::String::New(env, s); });
}

Napi::Value TableStatus(const Napi::CallbackInfo& info, bool table) {
  std::string name = ArgPath(info, 0, "name");
  return RunAsync<std::vector<Target>>(
      info.Env(), table ? "dmTable" : "dmStatus",
      [name, table](Failure& f) {
        std::vector<Target> out;
        const char* sys = "ioctl(DM_TABLE_STATUS)";
        if (!CheckName(name, sys, f)) return out;
        DmRequest r = Device(DM_TABLE_STATUS, sys, name);
        if (table) r.flags |= DM_STATUS_TABLE_FLAG;
        DmBuffer b;
        if (!DmRun(r, b, f)) return out;
        if (!ParseTargets(b, sys, name, out, f)) out.clear();
        return out;
      },
      [](Napi::Env env, std::vector<Target>& ts) { return TargetsToJs(env, ts); });
}

Napi::Value DmStatus(const Napi::CallbackInfo& info) { return TableStatus(info, false); }
Napi::Value DmTable(const Napi::CallbackInfo& info) { return TableStatus(info, true); }

Napi::Value DmInfo(const Napi::CallbackInfo& info) {
  std::string name = ArgPath(info, 0, "name");
  return RunAsync<std::optional<Info>>(
      info.Env(), "dmInfo",
      [name](Failure& f) -> std::optional<Info> {
        const char* sys = "ioctl(DM_DEV_STATUS)";
        if (!CheckName(name, sys, f)) return std::nullopt;
        DmRequest r = Device(DM_DEV_STATUS, sys, name);
        DmBuffer b;
        if (!DmRun(r, b, f)) {
          // ENXIO from the ioctl (not from opening the control node) means "no such device".
          if (f.err == ENXIO && f.syscall == sys) f = Failure{};
          return std::nullopt;
        }
        return InfoFrom(b);
      },
      [](Napi::Env env, std::optional<Info>& i) -> Napi::Value {
        if (!i) return env.Null();
        return InfoToJs(env, *i);
      });
}

Napi::Value DmList(const Napi::CallbackInfo& info) {
  return RunAsync<std::vector<ListEntry>>(
      info.Env(), "dmList",
      [](Failure& f) {
        std::vector<ListEntry> out;
        DmRequest r;
        r.cmd = DM_LIST_DEVICES;
        r.sys = "ioctl(DM_LIST_DEVICES)";
        DmBuffer b;
        if (!DmRun(r, b, f)) return out;
        if (!ParseList(b, out, f)) out.clear();
        return out;
      },
      [](Napi::Env env, std::vector<ListEntry>& es) {
        Napi::Array a = Napi::Array::New(env, es.size());
        for (size_t i = 0; i < es.size(); i++) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("name", es[i].name);
          o.Set("major", Napi::Number::New(env, es[i].major));
          o.Set("minor", Napi::Number::New(env, es[i].minor));
          o.Set("dev", Napi::Number::New(env, DevNumber(es[i].major, es[i].minor)));
          a.Set(static_cast<uint32_t>(i), o);
        }
        return a;
      });
}

}  // namespace

void RegisterDevmapper(Napi::Env env, Napi::Object exports) {
  exports.Set("dmVersion", Napi::Function::New(env, DmVersion, "dmVersion"));
  exports.Set("dmCreate", Napi::Function::New(env, DmCreate, "dmCreate"));
  exports.Set("dmLoad", Napi::Function::New(env, DmLoad, "dmLoad"));
  exports.Set("dmSuspend", Napi::Function::New(env, DmSuspend, "dmSuspend"));
  exports.Set("dmResume", Napi::Function::New(env, DmResume, "dmResume"));
  exports.Set("dmRemove", Napi::Function::New(env, DmRemove, "dmRemove"));
  exports.Set("dmMessage", Napi::Function::New(env, DmMessage, "dmMessage"));
  exports.Set("dmStatus", Napi::Function::New(env, DmStatus, "dmStatus"));
  exports.Set("dmTable", Napi::Function::New(env, DmTable, "dmTable"));
  exports.Set("dmInfo", Napi::Function::New(env, DmInfo, "dmInfo"));
  exports.Set("dmList", Napi::Function::New(env, DmList, "dmList"));
}

}  // namespace gd
