// applyEntries, finishFile, setTimes, openApplySession: the batched write path the archive layer applies layer
// tars with.
//
// Every path is resolved inside the root (OpenParentBounded: RESOLVE_IN_ROOT), the leaf is handled with
// *at calls that never follow it, and removals only use unlinkat on directory fds opened with O_NOFOLLOW, so no
// entry can create, change or remove anything outside the root whatever symlinks the tree already holds.
// One call's entries run in order on one pool thread; each entry reports its own outcome.
//
// openApplySession is the same engine for a whole layer: batches of operations packed into one Buffer (the
// format is described at DecodeRecord) whose file contents are slices of the archive's own chunks (no copy
// in JavaScript), run strictly in order by one pool thread for as long as batches are queued (SerialQueue), so
// the main thread parses the next entries while the previous ones are written. The session also streams large
// files (create, write pieces, finish) without handing an fd to JavaScript, and stops at the first failure.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/args.h"
#include "common/async.h"
#include "common/bounded-path.h"
#include "common/failure.h"
#include "common/fd.h"
#include "modules.h"
#include "serial-queue.h"
#include "tree-util.h"

namespace gd {
namespace {

// Write, Finish and Times exist only in sessions (see DecodeRecord).
enum class Op { Create, Remove, Whiteout, Xattrs, Write, Finish, Times };
enum class Type { None, File, Dir, Symlink, Link, Char, Block, Fifo };

using Xattrs = std::vector<std::pair<std::string, std::string>>;

// A piece of file content.
struct Seg {
  const unsigned char* p;
  size_t n;
};

struct Times {
  bool has = false;  // mtime given; atime defaults to mtime
  struct timespec ts[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};  // [atime, mtime] as utimensat wants them
};

struct Entry {
  Op op = Op::Create;
  Type type = Type::None;
  std::string path;
  bool hasMode = false;
  mode_t mode = 0;
  uid_t uid = static_cast<uid_t>(-1);  // -1: leave as created
  gid_t gid = static_cast<gid_t>(-1);
  Times times;
  std::string linkname;
  unsigned devMajor = 0;
  unsigned devMinor = 0;
  Xattrs xattrs;
  std::vector<Seg> segs;  // file content, in order: bytes of Buffers kept alive by the worker's references
  bool hasSize = false;
  uint64_t size = 0;
  bool keepOpen = false;
  bool deferTimes = false;
  bool noReplace = false;
  bool stream = false;    // session: the new file stays open in the session for Write/Finish operations
  bool tolerant = false;  // Times: a path that no longer resolves (ENOENT, ENOTDIR, ELOOP) is skipped

  // Back to the defaults, keeping allocated capacity (sessions decode every record into one Entry).
  void Clear() {
    op = Op::Create;
    type = Type::None;
    path.clear();
    hasMode = false;
    mode = 0;
    uid = static_cast<uid_t>(-1);
    gid = static_cast<gid_t>(-1);
    times = Times{};
    linkname.clear();
    devMajor = devMinor = 0;
    xattrs.clear();
    segs.clear();
    hasSize = false;
    size = 0;
    keepOpen = deferTimes = noReplace = stream = tolerant = false;
  }
};

struct Result {
  int err = 0;
  std::string syscall;
  std::string path;  // the path the failure is about
  std::string dest;  // second name: hardlink source, xattr name
  int fd = -1;
  std::vector<std::string> warnings;
};

// ---- reading arguments (main thread) ----

constexpr double kMaxSafe = 9007199254740991.0;

[[noreturn]] void ThrowType(Napi::Env env, const std::string& what, const char* msg) {
  throw Napi::TypeError::New(env, what + " " + msg);
}

bool Absent(Napi::Value v) { return v.IsUndefined() || v.IsNull(); }

// Field names are only formatted into a message when a check fails.
struct Where {
  const char* base;
  size_t index;
  const char* field;
  std::string str() const {
    std::string s(base);
    if (index != static_cast<size_t>(-1)) s += "[" + std::to_string(index) + "]";
    return s + "." + field;
  }
};

int64_t IntOf(Napi::Env env, Napi::Value v, const Where& w) {
  if (!v.IsNumber()) ThrowType(env, w.str(), "must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= -kMaxSafe && d <= kMaxSafe) || d != static_cast<double>(static_cast<int64_t>(d)))
    ThrowType(env, w.str(), "must be a safe integer");
  return static_cast<int64_t>(d);
}

uint64_t UintOf(Napi::Env env, Napi::Value v, const Where& w, uint64_t max) {
  int64_t x = IntOf(env, v, w);
  if (x < 0 || static_cast<uint64_t>(x) > max) throw Napi::RangeError::New(env, w.str() + " is out of range");
  return static_cast<uint64_t>(x);
}

bool BoolOf(Napi::Env env, Napi::Value v, const Where& w) {
  if (Absent(v)) return false;
  if (!v.IsBoolean()) ThrowType(env, w.str(), "must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::string StringOf(Napi::Env env, Napi::Value v, const Where& w) {
  if (!v.IsString()) ThrowType(env, w.str(), "must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) ThrowType(env, w.str(), "must not contain NUL bytes");
  return s;
}

// Bytes of a Uint8Array/Buffer (pointer and length; the caller keeps the object alive).
void BytesOf(Napi::Env env, Napi::Value v, const Where& w, const unsigned char*& data, size_t& len) {
  if (!v.IsTypedArray()) ThrowType(env, w.str(), "must be a Buffer");
  napi_typedarray_type t;
  size_t n;
  void* p;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, &n, &p, &ab, &off) != napi_ok) ThrowType(env, w.str(), "must be a Buffer");
  if (t != napi_uint8_array && t != napi_uint8_clamped_array) ThrowType(env, w.str(), "must be a Buffer");
  data = static_cast<const unsigned char*>(p);
  len = n;
  if (len > 0 && data == nullptr) ThrowType(env, w.str(), "must be a Buffer");
}

Xattrs XattrsOf(Napi::Env env, Napi::Value v, const Where& w) {
  Xattrs out;
  if (Absent(v)) return out;
  if (!v.IsObject() || v.IsArray()) ThrowType(env, w.str(), "must be an object");
  Napi::Object o = v.As<Napi::Object>();
  Napi::Array names = o.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); i++) {
    Napi::Value k = names.Get(i);
    std::string name = k.ToString().Utf8Value();
    if (name.empty() || name.find('\0') != std::string::npos)
      ThrowType(env, w.str(), "names must be non-empty and free of NUL bytes");
    const unsigned char* d;
    size_t n;
    BytesOf(env, o.Get(k), w, d, n);
    out.emplace_back(std::move(name), n > 0 ? std::string(reinterpret_cast<const char*>(d), n) : std::string());
  }
  return out;
}

void ReadTimes(Napi::Env env, Napi::Value ms, Napi::Value mns, Napi::Value as, Napi::Value ans, const char* base,
               size_t i, Times& t) {
  if (Absent(ms)) return;
  t.has = true;
  t.ts[1].tv_sec = static_cast<time_t>(IntOf(env, ms, {base, i, "mtimeSec"}));
  t.ts[1].tv_nsec = Absent(mns) ? 0 : static_cast<long>(UintOf(env, mns, {base, i, "mtimeNsec"}, 999999999));
  if (Absent(as)) {
    t.ts[0] = t.ts[1];
  } else {
    t.ts[0].tv_sec = static_cast<time_t>(IntOf(env, as, {base, i, "atimeSec"}));
    t.ts[0].tv_nsec = Absent(ans) ? 0 : static_cast<long>(UintOf(env, ans, {base, i, "atimeNsec"}, 999999999));
  }
}

// Property keys created once per call: napi_get_property with a ready key is cheaper than by C string.
struct Keys {
  explicit Keys(Napi::Env env)
      : op(K(env, "op")), path(K(env, "path")), type(K(env, "type")), mode(K(env, "mode")), uid(K(env, "uid")),
        gid(K(env, "gid")), mtimeSec(K(env, "mtimeSec")), mtimeNsec(K(env, "mtimeNsec")),
        atimeSec(K(env, "atimeSec")), atimeNsec(K(env, "atimeNsec")), linkname(K(env, "linkname")),
        devMajor(K(env, "devMajor")), devMinor(K(env, "devMinor")), xattrs(K(env, "xattrs")), data(K(env, "data")),
        size(K(env, "size")), keepOpen(K(env, "keepOpen")), deferTimes(K(env, "deferTimes")),
        noReplace(K(env, "noReplace")) {}
  static Napi::String K(Napi::Env env, const char* s) { return Napi::String::New(env, s); }
  Napi::String op, path, type, mode, uid, gid, mtimeSec, mtimeNsec, atimeSec, atimeNsec, linkname, devMajor,
      devMinor, xattrs, data, size, keepOpen, deferTimes, noReplace;
};

Type TypeOf(const std::string& s) {
  if (s == "file") return Type::File;
  if (s == "dir") return Type::Dir;
  if (s == "symlink") return Type::Symlink;
  if (s == "link") return Type::Link;
  if (s == "char") return Type::Char;
  if (s == "block") return Type::Block;
  if (s == "fifo") return Type::Fifo;
  return Type::None;
}

// Reads entry `i`; a `data` Buffer is appended to `keep` so it stays alive until the worker is done.
Entry ReadEntry(Napi::Env env, const Keys& k, Napi::Value v, size_t i, Napi::Array keep) {
  const char* b = "entries";
  if (!v.IsObject() || v.IsArray()) ThrowType(env, "entries[" + std::to_string(i) + "]", "must be an object");
  Napi::Object o = v.As<Napi::Object>();
  Entry e;
  std::string op = StringOf(env, o.Get(k.op), {b, i, "op"});
  if (op == "create") e.op = Op::Create;
  else if (op == "remove") e.op = Op::Remove;
  else if (op == "whiteout") e.op = Op::Whiteout;
  else if (op == "xattrs") e.op = Op::Xattrs;
  else ThrowType(env, Where{b, i, "op"}.str(), "must be one of create, remove, whiteout, xattrs");
  e.path = StringOf(env, o.Get(k.path), {b, i, "path"});
  if (e.op == Op::Create) {
    e.type = TypeOf(StringOf(env, o.Get(k.type), {b, i, "type"}));
    if (e.type == Type::None) ThrowType(env, Where{b, i, "type"}.str(), "must be one of file, dir, symlink, link, char, block, fifo");
  }
  Napi::Value x = o.Get(k.mode);
  if (!Absent(x)) {
    e.hasMode = true;
    // Only permission and special bits: the type comes from `type`.
    e.mode = static_cast<mode_t>(UintOf(env, x, {b, i, "mode"}, 0xffffffff) & 07777);
  }
  x = o.Get(k.uid);
  if (!Absent(x)) e.uid = static_cast<uid_t>(UintOf(env, x, {b, i, "uid"}, 0xfffffffe));
  x = o.Get(k.gid);
  if (!Absent(x)) e.gid = static_cast<gid_t>(UintOf(env, x, {b, i, "gid"}, 0xfffffffe));
  ReadTimes(env, o.Get(k.mtimeSec), o.Get(k.mtimeNsec), o.Get(k.atimeSec), o.Get(k.atimeNsec), b, i, e.times);
  x = o.Get(k.linkname);
  if (!Absent(x)) e.linkname = StringOf(env, x, {b, i, "linkname"});
  if ((e.type == Type::Symlink || e.type == Type::Link) && Absent(x))
    ThrowType(env, Where{b, i, "linkname"}.str(), "is required for symlinks and hardlinks");
  x = o.Get(k.devMajor);
  if (!Absent(x)) e.devMajor = static_cast<unsigned>(UintOf(env, x, {b, i, "devMajor"}, 0xffffffff));
  x = o.Get(k.devMinor);
  if (!Absent(x)) e.devMinor = static_cast<unsigned>(UintOf(env, x, {b, i, "devMinor"}, 0xffffffff));
  e.xattrs = XattrsOf(env, o.Get(k.xattrs), {b, i, "xattrs"});
  x = o.Get(k.data);
  if (!Absent(x)) {
    const unsigned char* d;
    size_t n;
    BytesOf(env, x, {b, i, "data"}, d, n);
    keep.Set(keep.Length(), x);
    if (n > 0) e.segs.push_back({d, n});
  }
  x = o.Get(k.size);
  if (!Absent(x)) {
    e.hasSize = true;
    e.size = UintOf(env, x, {b, i, "size"}, static_cast<uint64_t>(INT64_MAX));
  }
  e.keepOpen = BoolOf(env, o.Get(k.keepOpen), {b, i, "keepOpen"});
  e.deferTimes = BoolOf(env, o.Get(k.deferTimes), {b, i, "deferTimes"});
  e.noReplace = BoolOf(env, o.Get(k.noReplace), {b, i, "noReplace"});
  return e;
}

// ---- applying (worker thread) ----

// "", "/", "." (and runs of them) name the root itself.
bool IsRootPath(const std::string& p) {
  for (char c : p)
    if (c != '/' && c != '.') return false;
  return p.find("..") == std::string::npos;
}

bool IsZeroBlock(const unsigned char* p, size_t n) {
  // Compare the block with itself shifted by one byte: all equal and the first is 0 means all zero.
  return n > 0 && p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0;
}

bool PwriteAll(int fd, const unsigned char* p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, std::min<size_t>(n, 1u << 30), static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (w == 0) {
      errno = EIO;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return true;
}

// Writes a file's content sequentially through its fd, leaving whole 4 KiB blocks of zeros (at 4 KiB-aligned
// file offsets) unwritten so they stay holes (sparse files stay sparse). Pieces may come in any sizes (archive
// chunks split bodies anywhere): a partial block is carried to the next piece. Finish() writes the partial last
// block and extends the file with ftruncate to its logical size, so trailing holes and a larger declared size
// are kept.
class FileWriter {
 public:
  bool Write(int fd, const unsigned char* p, size_t n, Failure& f, const std::string& path) {
    while (n > 0) {
      if (carryLen_ > 0) {
        size_t take = std::min(n, kBlock - carryLen_);
        std::memcpy(carry_ + carryLen_, p, take);
        carryLen_ += take;
        p += take;
        n -= take;
        pos_ += take;
        if (carryLen_ == kBlock) {
          if (!IsZeroBlock(carry_, kBlock) && !Put(fd, carry_, kBlock, pos_ - kBlock, f, path)) return false;
          carryLen_ = 0;
        }
        continue;
      }
      // pos_ is block-aligned here: whole blocks go straight from the piece, one pwrite per run of data.
      size_t whole = n - n % kBlock;
      size_t run = SIZE_MAX;
      for (size_t off = 0; off < whole; off += kBlock) {
        if (IsZeroBlock(p + off, kBlock)) {
          if (run != SIZE_MAX) {
            if (!Put(fd, p + run, off - run, pos_ + run, f, path)) return false;
            run = SIZE_MAX;
          }
        } else if (run == SIZE_MAX) {
          run = off;
        }
      }
      if (run != SIZE_MAX && !Put(fd, p + run, whole - run, pos_ + run, f, path)) return false;
      p += whole;
      n -= whole;
      pos_ += whole;
      if (n > 0) {
        std::memcpy(carry_, p, n);
        carryLen_ = n;
        pos_ += n;
        n = 0;
      }
    }
    return true;
  }

  bool Finish(int fd, uint64_t logical, Failure& f, const std::string& path) {
    if (carryLen_ > 0) {
      if (!Put(fd, carry_, carryLen_, pos_ - carryLen_, f, path)) return false;
      carryLen_ = 0;
    }
    uint64_t size = std::max(logical, pos_);
    if (size > end_ && ::ftruncate(fd, static_cast<off_t>(size)) != 0) return f.Errno("ftruncate", path);
    return true;
  }

 private:
  static constexpr size_t kBlock = 4096;

  bool Put(int fd, const unsigned char* p, size_t n, uint64_t off, Failure& f, const std::string& path) {
    if (!PwriteAll(fd, p, n, off)) return f.Errno("write", path);
    end_ = std::max(end_, off + n);
    return true;
  }

  unsigned char carry_[kBlock];
  size_t carryLen_ = 0;
  uint64_t pos_ = 0;  // bytes of content received
  uint64_t end_ = 0;  // end of the last byte written
};

void AddXattrWarning(Result& r, const std::string& name, int err) { r.warnings.push_back(name + ": " + ErrnoName(err)); }

// Where metadata calls go: an open fd (regular files, the root) or parent fd + leaf name.
struct Target {
  int fd = -1;         // when >= 0, use f* calls on it
  int parent = -1;     // else *at calls on parent + leaf, never following the leaf
  const char* leaf = nullptr;
  bool symlink = false;
};

bool SetXattrs(const Target& t, const Xattrs& xs, Result& r, Failure& f, const std::string& p) {
  if (xs.empty()) return true;
  std::optional<tree::XattrTarget> at;
  if (t.fd < 0) at.emplace(t.parent, t.leaf);
  for (const auto& [name, value] : xs) {
    int rc = t.fd >= 0 ? ::fsetxattr(t.fd, name.c_str(), value.data(), value.size(), 0)
                       : at->Set(name.c_str(), value.data(), value.size(), 0);
    if (rc == 0) continue;
    if (errno == ENOTSUP || errno == EPERM) {
      AddXattrWarning(r, name, errno);
      continue;
    }
    return f.Errno(t.fd >= 0 ? "fsetxattr" : "lsetxattr", p, name);
  }
  return true;
}

// Docker's order: owner first (chown clears setuid/setgid and file capabilities), then mode, xattrs, times.
bool ApplyMetadata(const Target& t, const Entry& e, mode_t dfltMode, Result& r, Failure& f) {
  const std::string& p = e.path;
  if (e.uid != static_cast<uid_t>(-1) || e.gid != static_cast<gid_t>(-1)) {
    int rc = t.fd >= 0 ? ::fchown(t.fd, e.uid, e.gid) : ::fchownat(t.parent, t.leaf, e.uid, e.gid, AT_SYMLINK_NOFOLLOW);
    if (rc != 0) return f.Errno(t.fd >= 0 ? "fchown" : "fchownat", p);
  }
  if (!t.symlink && (e.hasMode || dfltMode != static_cast<mode_t>(-1))) {
    mode_t m = e.hasMode ? e.mode : dfltMode;
    // The leaf was just created (or checked) as a non-symlink, so fchmodat following it is the same inode.
    int rc = t.fd >= 0 ? ::fchmod(t.fd, m) : ::fchmodat(t.parent, t.leaf, m, 0);
    if (rc != 0) return f.Errno(t.fd >= 0 ? "fchmod" : "fchmodat", p);
  }
  if (!SetXattrs(t, e.xattrs, r, f, p)) return false;
  if (e.times.has && !e.deferTimes) {
    int rc = t.fd >= 0 ? ::futimens(t.fd, e.times.ts) : ::utimensat(t.parent, t.leaf, e.times.ts, AT_SYMLINK_NOFOLLOW);
    if (rc != 0) return f.Errno(t.fd >= 0 ? "futimens" : "utimensat", p);
  }
  return true;
}

const char* CreateSyscall(Type t) {
  switch (t) {
    case Type::File: return "openat";
    case Type::Dir: return "mkdirat";
    case Type::Symlink: return "symlinkat";
    case Type::Link: return "linkat";
    default: return "mknodat";
  }
}

// Applies entries in order. Two things keep the syscall count near GNU tar's (one create, one write, owner,
// mode, times, close per file):
//  - the parent directory fd is cached while consecutive entries share a parent (tar order makes that the
//    common case), and top-level entries use the root fd itself; the cache is dropped whenever a directory
//    or symlink is removed, since that can change what a parent path resolves to;
//  - creation is optimistic: the create call runs first and only EEXIST triggers the stat + replace logic.
class Applier {
 public:
  explicit Applier(int rootFd) : root_(rootFd) {}

  void Apply(const Entry& e, Result& r) {
    Failure f;
    bool ok = false;
    try {
      switch (e.op) {
        case Op::Create: ok = Create(e, r, f); break;
        case Op::Remove: ok = Remove(e, f); break;
        case Op::Whiteout: ok = Whiteout(e, f); break;
        case Op::Xattrs: ok = Xattrs(e, r, f); break;
        case Op::Write: ok = Write(e, f); break;
        case Op::Finish: ok = Finish(e, r, f); break;
        case Op::Times: ok = SetTimesAt(e, f); break;
      }
    } catch (const std::bad_alloc&) {
      f.Set(ENOMEM, "allocate", e.path);
    }
    if (dropCache_) ResetCache();
    if (!ok && !f.failed()) f.Set(EIO, "apply", e.path);
    if (f.failed()) {
      r.err = f.err;
      r.syscall = f.syscall;
      r.path = f.path.empty() ? e.path : f.path;
      r.dest = f.dest;
      if (r.fd >= 0) {
        ::close(r.fd);
        r.fd = -1;
      }
    }
  }

  // Forgets the cached parent directory (sessions start every batch with a fresh lookup, as separate
  // applyEntries calls did).
  void ResetCache() {
    cache_.reset();
    cacheKey_.clear();
    dropCache_ = false;
  }

  // Closes a streamed file left open (the session failed or ended before its Finish).
  void CloseOpen() {
    open_.fd.reset();
    open_.writer.reset();
  }

 private:
  // A file being streamed by a session: created by a Create with `stream`, fed by Write, closed by Finish.
  struct OpenFile {
    UniqueFd fd;
    std::unique_ptr<FileWriter> writer;
    std::string path;
  };

  bool Write(const Entry& e, Failure& f) {
    if (!open_.fd.valid()) return f.Set(EINVAL, "write", e.path);
    for (const Seg& s : e.segs)
      if (!open_.writer->Write(open_.fd.get(), s.p, s.n, f, open_.path)) return false;
    return true;
  }

  // Ends a streamed file: last partial block, logical size, then the metadata of `e` (as for an inline file).
  bool Finish(const Entry& e, Result& r, Failure& f) {
    if (!open_.fd.valid()) return f.Set(EINVAL, "close", e.path);
    UniqueFd fd = std::move(open_.fd);
    std::unique_ptr<FileWriter> w = std::move(open_.writer);
    for (const Seg& s : e.segs)
      if (!w->Write(fd.get(), s.p, s.n, f, open_.path)) return false;
    if (!w->Finish(fd.get(), e.hasSize ? e.size : 0, f, open_.path)) return false;
    Target t;
    t.fd = fd.get();
    if (!ApplyMetadata(t, e, 0644, r, f)) return false;
    int raw = fd.release();
    if (::close(raw) != 0 && errno != EINTR) return f.Errno("close", open_.path);
    return true;
  }

  // Times of an existing path (directories after all entries), not following a final symlink.
  bool SetTimesAt(const Entry& e, Failure& f) {
    if (!e.times.has) return true;
    auto skip = [&]() { return e.tolerant && (f.err == ENOENT || f.err == ENOTDIR || f.err == ELOOP); };
    if (IsRootPath(e.path)) {
      UniqueFd fd(::openat(root_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!fd.valid()) return f.Errno("openat", e.path);
      if (::futimens(fd.get(), e.times.ts) != 0) return f.Errno("futimens", e.path);
      return true;
    }
    std::string leaf;
    int parent = Parent(e.path, leaf, f);
    if (parent < 0) {
      if (!skip()) return false;
      f = Failure{};
      return true;
    }
    if (::utimensat(parent, leaf.c_str(), e.times.ts, AT_SYMLINK_NOFOLLOW) != 0) {
      f.Errno("utimensat", e.path);
      if (!skip()) return false;
      f = Failure{};
    }
    return true;
  }

  // Returns the fd of the directory holding `path` (borrowed: the root or the cache owns it) and its last
  // component in `leaf`, resolved inside the root; -1 with `f` set on failure.
  int Parent(const std::string& path, std::string& leaf, Failure& f) {
    size_t end = path.find_last_not_of('/');
    if (end == std::string::npos) return f.Set(EINVAL, "openat", path), -1;
    size_t slash = path.rfind('/', end);
    size_t start = slash == std::string::npos ? 0 : slash + 1;
    leaf.assign(path, start, end + 1 - start);
    if (leaf == "." || leaf == "..") return f.Set(EINVAL, "openat", path), -1;
    std::string_view key(path.data(), start);
    while (!key.empty() && key.back() == '/') key.remove_suffix(1);
    while (!key.empty() && key.front() == '/') key.remove_prefix(1);
    if (key.empty()) return root_;
    if (cache_.valid() && key == cacheKey_) return cache_.get();
    std::string l2;
    int fd = OpenParentBounded(root_, path, l2, f);
    if (fd < 0) return -1;
    cache_.reset(fd);
    cacheKey_.assign(key);
    return fd;
  }

  // Removes whatever is at parent/leaf so a new entry can take its place.
  bool Replace(int parent, const std::string& leaf, const struct stat& old, const std::string& path, Failure& f) {
    if (S_ISDIR(old.st_mode) || S_ISLNK(old.st_mode)) dropCache_ = true;
    return tree::RemoveAllAt(parent, leaf, path, f);
  }

  bool CreateRoot(const Entry& e, Result& r, Failure& f) {
    if (e.type != Type::Dir) return f.Set(EISDIR, CreateSyscall(e.type), e.path);
    UniqueFd fd(::openat(root_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd.valid()) return f.Errno("openat", e.path);
    Target t;
    t.fd = fd.get();
    return ApplyMetadata(t, e, static_cast<mode_t>(-1), r, f);
  }

  // One attempt at creating the entry itself; returns 0 or an errno. For files, `fd` receives the new file.
  int MakeNode(const Entry& e, int parent, const char* lf, int srcParent, const char* srcLeaf, UniqueFd& fd) {
    int rc = 0;
    switch (e.type) {
      case Type::File:
        fd.reset(::openat(parent, lf, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
        rc = fd.valid() ? 0 : -1;
        break;
      case Type::Dir:
        rc = ::mkdirat(parent, lf, 0700);
        break;
      case Type::Symlink:
        rc = ::symlinkat(e.linkname.c_str(), parent, lf);
        break;
      case Type::Link:
        // No AT_SYMLINK_FOLLOW: a hardlink to a symlink links the symlink itself.
        rc = ::linkat(srcParent, srcLeaf, parent, lf, 0);
        break;
      case Type::Char:
      case Type::Block:
      case Type::Fifo: {
        mode_t kind = e.type == Type::Char ? S_IFCHR : e.type == Type::Block ? S_IFBLK : S_IFIFO;
        dev_t dev = e.type == Type::Fifo ? 0 : makedev(e.devMajor, e.devMinor);
        rc = ::mknodat(parent, lf, kind | 0600, dev);
        break;
      }
      case Type::None:
        return EINVAL;
    }
    return rc == 0 ? 0 : errno;
  }

  bool Create(const Entry& e, Result& r, Failure& f) {
    if (IsRootPath(e.path)) return CreateRoot(e, r, f);
    std::string leaf;
    int parent = Parent(e.path, leaf, f);
    if (parent < 0) return false;
    const char* lf = leaf.c_str();

    // Hardlink source: resolved inside the root like any path; must exist and must not be a directory.
    UniqueFd srcParent;
    std::string srcLeaf;
    struct stat src;
    if (e.type == Type::Link) {
      if (IsRootPath(e.linkname)) return f.Set(EPERM, "linkat", e.path, e.linkname);
      srcParent.reset(OpenParentBounded(root_, e.linkname, srcLeaf, f));
      if (!srcParent.valid()) {
        f.syscall = "linkat";
        f.dest = e.linkname;
        return false;
      }
      if (::fstatat(srcParent.get(), srcLeaf.c_str(), &src, AT_SYMLINK_NOFOLLOW) != 0)
        return f.Errno("linkat", e.path, e.linkname);
      if (S_ISDIR(src.st_mode)) return f.Set(EPERM, "linkat", e.path, e.linkname);
    }

    // Only one streamed file at a time: a second one would mean the caller lost track of the first.
    if (e.stream && (e.type != Type::File || open_.fd.valid())) return f.Set(EINVAL, "openat", e.path);
    UniqueFd fd;
    bool keepDir = false;
    int err = MakeNode(e, parent, lf, srcParent.get(), srcLeaf.c_str(), fd);
    if (err == EEXIST) {
      // Something is there: Docker's rules decide (both dirs: keep; else replace unless noReplace).
      struct stat old;
      if (::fstatat(parent, lf, &old, AT_SYMLINK_NOFOLLOW) != 0) return f.Errno("fstatat", e.path);
      if (e.type == Type::Link && old.st_dev == src.st_dev && old.st_ino == src.st_ino) return true;  // already linked
      if (e.type == Type::Dir && S_ISDIR(old.st_mode)) {
        keepDir = true;
        err = 0;
      } else if (e.noReplace) {
        return f.Set(EEXIST, CreateSyscall(e.type), e.path);
      } else {
        if (!Replace(parent, leaf, old, e.path, f)) return false;
        err = MakeNode(e, parent, lf, srcParent.get(), srcLeaf.c_str(), fd);
      }
    }
    if (err != 0) return f.Set(err, CreateSyscall(e.type), e.path, e.type == Type::Link ? e.linkname : std::string());

    Target t;
    t.parent = parent;
    t.leaf = lf;
    switch (e.type) {
      case Type::File: {
        if (e.stream) {
          auto w = std::make_unique<FileWriter>();
          for (const Seg& s : e.segs)
            if (!w->Write(fd.get(), s.p, s.n, f, e.path)) return false;
          open_.fd = std::move(fd);
          open_.writer = std::move(w);
          open_.path = e.path;
          return true;
        }
        FileWriter w;
        for (const Seg& s : e.segs)
          if (!w.Write(fd.get(), s.p, s.n, f, e.path)) return false;
        if (!w.Finish(fd.get(), e.hasSize ? e.size : 0, f, e.path)) return false;
        if (e.keepOpen) {
          // The caller streams the rest and calls finishFile, which applies all metadata.
          r.fd = fd.release();
          return true;
        }
        t.fd = fd.get();
        if (!ApplyMetadata(t, e, 0644, r, f)) return false;
        int raw = fd.release();
        if (::close(raw) != 0 && errno != EINTR) return f.Errno("close", e.path);
        return true;
      }
      case Type::Dir:
        return ApplyMetadata(t, e, keepDir ? static_cast<mode_t>(-1) : 0755, r, f);
      case Type::Symlink:
        t.symlink = true;
        return ApplyMetadata(t, e, static_cast<mode_t>(-1), r, f);
      case Type::Link:
        return true;  // a hardlink shares its source's metadata
      default:
        return ApplyMetadata(t, e, 0644, r, f);
    }
  }

  bool Remove(const Entry& e, Failure& f) {
    if (IsRootPath(e.path)) return f.Set(EINVAL, "unlinkat", e.path);
    std::string leaf;
    Failure pf;
    int parent = Parent(e.path, leaf, pf);
    if (parent < 0) {
      if (pf.err == ENOENT || pf.err == ENOTDIR) return true;  // nothing there to remove
      f = pf;
      return false;
    }
    dropCache_ = true;
    return tree::RemoveAllAt(parent, leaf, e.path, f);
  }

  bool Whiteout(const Entry& e, Failure& f) {
    if (IsRootPath(e.path)) return f.Set(EINVAL, "mknodat", e.path);
    std::string leaf;
    int parent = Parent(e.path, leaf, f);
    if (parent < 0) return false;
    dropCache_ = true;
    const char* lf = leaf.c_str();
    // overlayfs's whiteout format: a character device 0/0 with no permission bits.
    if (::mknodat(parent, lf, S_IFCHR, makedev(0, 0)) != 0) {
      if (errno != EEXIST) return f.Errno("mknodat", e.path);
      if (!tree::RemoveAllAt(parent, leaf, e.path, f)) return false;
      if (::mknodat(parent, lf, S_IFCHR, makedev(0, 0)) != 0) return f.Errno("mknodat", e.path);
    }
    uid_t uid = e.uid == static_cast<uid_t>(-1) ? 0 : e.uid;
    gid_t gid = e.gid == static_cast<gid_t>(-1) ? 0 : e.gid;
    if (::fchownat(parent, lf, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) return f.Errno("fchownat", e.path);
    if (e.times.has && !e.deferTimes && ::utimensat(parent, lf, e.times.ts, AT_SYMLINK_NOFOLLOW) != 0)
      return f.Errno("utimensat", e.path);
    return true;
  }

  // Sets xattrs on an existing entry (never following a symlink leaf); the filesystem refusing one (ENOTSUP,
  // EPERM) is a warning, like for created entries.
  bool Xattrs(const Entry& e, Result& r, Failure& f) {
    Target t;
    UniqueFd rootDir;
    std::string leaf;
    if (IsRootPath(e.path)) {
      rootDir.reset(::openat(root_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!rootDir.valid()) return f.Errno("openat", e.path);
      t.fd = rootDir.get();
    } else {
      t.parent = Parent(e.path, leaf, f);
      if (t.parent < 0) return false;
      t.leaf = leaf.c_str();
    }
    return SetXattrs(t, e.xattrs, r, f, e.path);
  }

  int root_;
  UniqueFd cache_;        // parent directory of the previous entry
  std::string cacheKey_;  // its path relative to the root (no leading/trailing '/')
  bool dropCache_ = false;
  OpenFile open_;
};

// Holds a reference to the array of `data` Buffers so their bytes stay valid while the pool thread reads them.
class ApplyWorker : public Napi::AsyncWorker {
 public:
  ApplyWorker(Napi::Env env, int rootFd, std::vector<Entry> entries, Napi::Array keep)
      : Napi::AsyncWorker(env, "applyEntries"), deferred_(Napi::Promise::Deferred::New(env)), root_(rootFd),
        entries_(std::move(entries)), keep_(Napi::Persistent(keep)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    results_.resize(entries_.size());
    Applier a(root_);
    for (size_t i = 0; i < entries_.size(); i++) a.Apply(entries_[i], results_[i]);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    keep_.Reset();
    try {
      Napi::String kErrno = Napi::String::New(env, "errno"), kCode = Napi::String::New(env, "code"),
                   kSys = Napi::String::New(env, "syscall"), kFd = Napi::String::New(env, "fd"),
                   kWarn = Napi::String::New(env, "warnings");
      Napi::String empty = Napi::String::New(env, "");
      Napi::Array out = Napi::Array::New(env, results_.size());
      for (size_t i = 0; i < results_.size(); i++) {
        Napi::HandleScope inner(env);
        const Result& r = results_[i];
        Napi::Object o = Napi::Object::New(env);
        o.Set(kErrno, Napi::Number::New(env, r.err));
        o.Set(kCode, r.err == 0 ? empty : Napi::String::New(env, ErrnoName(r.err)));
        o.Set(kSys, r.err == 0 ? empty : Napi::String::New(env, r.syscall));
        o.Set(kFd, Napi::Number::New(env, r.fd));
        if (!r.warnings.empty()) {
          Napi::Array w = Napi::Array::New(env, r.warnings.size());
          for (uint32_t j = 0; j < r.warnings.size(); j++) w.Set(j, Napi::String::New(env, r.warnings[j]));
          o.Set(kWarn, w);
        }
        out.Set(static_cast<uint32_t>(i), o);
      }
      deferred_.Resolve(out);
    } catch (const Napi::Error& e) {
      CloseKept();
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& e) override {
    keep_.Reset();
    CloseKept();
    deferred_.Reject(e.Value());
  }

 private:
  // Files left open for the caller would leak if the caller never learns their fds.
  void CloseKept() {
    for (Result& r : results_)
      if (r.fd >= 0) {
        ::close(r.fd);
        r.fd = -1;
      }
  }

  Napi::Promise::Deferred deferred_;
  int root_;
  std::vector<Entry> entries_;
  Napi::Reference<Napi::Array> keep_;
  std::vector<Result> results_;
};

int FdArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  int64_t fd = ArgInt(info, i, what);
  if (fd < 0 || fd > 0x7fffffff) throw Napi::RangeError::New(info.Env(), std::string(what) + " is not a file descriptor");
  return static_cast<int>(fd);
}

Napi::Value ApplyEntries(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int rootFd = FdArg(info, 0, "rootFd");
  if (!info[1].IsArray()) throw Napi::TypeError::New(env, "entries must be an array");
  Napi::Array arr = info[1].As<Napi::Array>();
  Keys keys(env);
  Napi::Array keep = Napi::Array::New(env);
  std::vector<Entry> entries;
  uint32_t n = arr.Length();
  entries.reserve(n);
  for (uint32_t i = 0; i < n; i++) entries.push_back(ReadEntry(env, keys, arr.Get(i), i, keep));
  auto* w = new ApplyWorker(env, rootFd, std::move(entries), keep);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// ---- finishFile ----

struct FinishOpts {
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  Times times;
  Xattrs xattrs;
  bool hasSize = false;
  uint64_t size = 0;
};

Napi::Value FinishFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "fd");
  if (!info[1].IsObject() || info[1].IsArray()) throw Napi::TypeError::New(env, "opts must be an object");
  Napi::Object o = info[1].As<Napi::Object>();
  const char* b = "opts";
  size_t none = static_cast<size_t>(-1);
  FinishOpts fo;
  fo.mode = static_cast<mode_t>(UintOf(env, o.Get("mode"), {b, none, "mode"}, 0xffffffff) & 07777);
  fo.uid = static_cast<uid_t>(UintOf(env, o.Get("uid"), {b, none, "uid"}, 0xfffffffe));
  fo.gid = static_cast<gid_t>(UintOf(env, o.Get("gid"), {b, none, "gid"}, 0xfffffffe));
  if (Absent(o.Get("mtimeSec"))) ThrowType(env, "opts.mtimeSec", "must be a number");
  ReadTimes(env, o.Get("mtimeSec"), o.Get("mtimeNsec"), o.Get("atimeSec"), o.Get("atimeNsec"), b, none, fo.times);
  fo.xattrs = XattrsOf(env, o.Get("xattrs"), {b, none, "xattrs"});
  Napi::Value sz = o.Get("size");
  if (!Absent(sz)) {
    fo.hasSize = true;
    fo.size = UintOf(env, sz, {b, none, "size"}, static_cast<uint64_t>(INT64_MAX));
  }
  return RunVoid(env, "finishFile", [fd, fo = std::move(fo)](Failure& f) {
    // The fd is closed whatever happens: it was handed over to this call.
    UniqueFd owned(fd);
    if (fo.hasSize) {
      struct stat st;
      if (::fstat(fd, &st) != 0) return (void)f.Errno("fstat");
      if (static_cast<uint64_t>(st.st_size) < fo.size && ::ftruncate(fd, static_cast<off_t>(fo.size)) != 0)
        return (void)f.Errno("ftruncate");
    }
    if (::fchown(fd, fo.uid, fo.gid) != 0) return (void)f.Errno("fchown");
    if (::fchmod(fd, fo.mode) != 0) return (void)f.Errno("fchmod");
    for (const auto& [name, value] : fo.xattrs) {
      if (::fsetxattr(fd, name.c_str(), value.data(), value.size(), 0) == 0) continue;
      if (errno == ENOTSUP || errno == EPERM) continue;  // same tolerance as applyEntries (which warns)
      return (void)f.Errno("fsetxattr", std::string(), name);
    }
    if (::futimens(fd, fo.times.ts) != 0) return (void)f.Errno("futimens");
    int raw = owned.release();
    if (::close(raw) != 0 && errno != EINTR) return (void)f.Errno("close");
  });
}

// ---- setTimes ----

struct TimeEntry {
  std::string path;
  Times times;
};

Napi::Value SetTimes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int rootFd = FdArg(info, 0, "rootFd");
  if (!info[1].IsArray()) throw Napi::TypeError::New(env, "entries must be an array");
  Napi::Array arr = info[1].As<Napi::Array>();
  Napi::String kPath = Napi::String::New(env, "path"), kMs = Napi::String::New(env, "mtimeSec"),
               kMns = Napi::String::New(env, "mtimeNsec"), kAs = Napi::String::New(env, "atimeSec"),
               kAns = Napi::String::New(env, "atimeNsec");
  std::vector<TimeEntry> list;
  list.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsObject() || v.IsArray()) ThrowType(env, "entries[" + std::to_string(i) + "]", "must be an object");
    Napi::Object o = v.As<Napi::Object>();
    TimeEntry t;
    t.path = StringOf(env, o.Get(kPath), {"entries", i, "path"});
    if (Absent(o.Get(kMs))) ThrowType(env, Where{"entries", i, "mtimeSec"}.str(), "must be a number");
    ReadTimes(env, o.Get(kMs), o.Get(kMns), o.Get(kAs), o.Get(kAns), "entries", i, t.times);
    list.push_back(std::move(t));
  }
  return RunVoid(env, "setTimes", [rootFd, list = std::move(list)](Failure& f) {
    for (const TimeEntry& t : list) {
      if (IsRootPath(t.path)) {
        UniqueFd fd(::openat(rootFd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fd.valid()) return (void)f.Errno("openat", t.path);
        if (::futimens(fd.get(), t.times.ts) != 0) return (void)f.Errno("futimens", t.path);
        continue;
      }
      std::string leaf;
      UniqueFd parent(OpenParentBounded(rootFd, t.path, leaf, f));
      if (!parent.valid()) return;
      if (::utimensat(parent.get(), leaf.c_str(), t.times.ts, AT_SYMLINK_NOFOLLOW) != 0)
        return (void)f.Errno("utimensat", t.path);
    }
  });
}


// ---- openApplySession ----

// Reads the records of one session batch. Every size and index is checked against the buffers: a malformed
// batch is refused with a message, never read out of bounds.
class BatchReader {
 public:
  BatchReader(const unsigned char* p, size_t n, const std::vector<Seg>& chunks) : p_(p), n_(n), chunks_(chunks) {}

  bool More() const { return pos_ < n_; }
  size_t Pos() const { return pos_; }
  const std::string& Error() const { return err_; }

  // One operation, little-endian:
  //    0  u8  op        0 create, 1 remove, 2 whiteout, 3 xattrs, 4 write, 5 finish, 6 times
  //    1  u8  type      0 none, 1 file, 2 dir, 3 symlink, 4 link, 5 char, 6 block, 7 fifo (create only)
  //    2  u16 flags     1 mode, 2 owner (uid and gid), 4 mtime, 8 atime, 16 deferTimes, 32 noReplace,
  //                     64 stream (create: keep the file open for write/finish), 128 tolerant (times)
  //    4  u32 mode      permission and special bits (at most 07777)
  //    8  u32 uid
  //   12  u32 gid
  //   16  f64 mtimeSec  an integer
  //   24  u32 mtimeNsec
  //   28  u32 atimeNsec
  //   32  f64 atimeSec  an integer
  //   40  u32 devMajor
  //   44  u32 devMinor
  //   48  f64 size      logical size of a file, an integer below 2^53 (0: the content's length)
  //   56  u32 path length, path bytes; u32 link length, link bytes (symlink target or hardlink source);
  //       u32 xattr count, then per xattr: u32 name length, name, u32 value length, value;
  //       u32 piece count, then per piece: u32 chunk (index into the batch's chunks), u32 offset, u32 length.
  // create, remove, whiteout, xattrs mean what they mean for applyEntries; write appends pieces to the open
  // streamed file; finish appends its pieces, sets the size and metadata and closes it; times sets the times of
  // an existing path without following a final symlink.
  bool Next(Entry& e) {
    const unsigned char* h = Take(56);
    if (h == nullptr) return Fail("truncated record");
    uint8_t op = h[0];
    uint8_t type = h[1];
    uint16_t flags = U16(h + 2);
    if (op > 6) return Fail("unknown op");
    if (type > 7 || (op == 0) != (type != 0)) return Fail("bad type");
    if ((flags & ~0xffu) != 0) return Fail("unknown flags");
    static constexpr Op kOps[] = {Op::Create, Op::Remove, Op::Whiteout, Op::Xattrs, Op::Write, Op::Finish, Op::Times};
    static constexpr Type kTypes[] = {Type::None, Type::File,  Type::Dir,   Type::Symlink,
                                      Type::Link, Type::Char, Type::Block, Type::Fifo};
    e.op = kOps[op];
    e.type = kTypes[type];
    if (flags & 1) {
      uint32_t mode = U32(h + 4);
      if (mode > 07777) return Fail("mode out of range");
      e.hasMode = true;
      e.mode = static_cast<mode_t>(mode);
    }
    if (flags & 2) {
      uint32_t uid = U32(h + 8), gid = U32(h + 12);
      if (uid == 0xffffffffu || gid == 0xffffffffu) return Fail("uid/gid out of range");
      e.uid = static_cast<uid_t>(uid);
      e.gid = static_cast<gid_t>(gid);
    }
    if (flags & 4) {
      int64_t ms, as;
      uint32_t mns = U32(h + 24), ans = U32(h + 28);
      if (!Int(h + 16, -kMaxSafe, kMaxSafe, ms) || mns > 999999999) return Fail("bad mtime");
      e.times.has = true;
      e.times.ts[1].tv_sec = static_cast<time_t>(ms);
      e.times.ts[1].tv_nsec = static_cast<long>(mns);
      if (flags & 8) {
        if (!Int(h + 32, -kMaxSafe, kMaxSafe, as) || ans > 999999999) return Fail("bad atime");
        e.times.ts[0].tv_sec = static_cast<time_t>(as);
        e.times.ts[0].tv_nsec = static_cast<long>(ans);
      } else {
        e.times.ts[0] = e.times.ts[1];
      }
    }
    e.deferTimes = (flags & 16) != 0;
    e.noReplace = (flags & 32) != 0;
    e.stream = (flags & 64) != 0;
    e.tolerant = (flags & 128) != 0;
    e.devMajor = U32(h + 40);
    e.devMinor = U32(h + 44);
    int64_t size;
    if (!Int(h + 48, 0, kMaxSafe, size)) return Fail("bad size");
    e.hasSize = size > 0;
    e.size = static_cast<uint64_t>(size);
    if (!Str(e.path) || !Str(e.linkname)) return false;
    uint32_t nx;
    if (!Count(nx, 8)) return false;
    for (uint32_t i = 0; i < nx; i++) {
      std::string name, value;
      if (!Str(name) || !Bytes(value)) return false;
      if (name.empty()) return Fail("empty xattr name");
      e.xattrs.emplace_back(std::move(name), std::move(value));
    }
    uint32_t ns;
    if (!Count(ns, 12)) return false;
    for (uint32_t i = 0; i < ns; i++) {
      const unsigned char* q = Take(12);
      if (q == nullptr) return Fail("truncated record");
      uint32_t c = U32(q), off = U32(q + 4), len = U32(q + 8);
      if (c >= chunks_.size()) return Fail("chunk index out of range");
      const Seg& ch = chunks_[c];
      if (off > ch.n || len > ch.n - off) return Fail("piece outside its chunk");
      if (len > 0) e.segs.push_back({ch.p + off, len});
    }
    if (e.stream && (e.op != Op::Create || e.type != Type::File)) return Fail("stream on a non-file");
    return true;
  }

 private:
  static uint16_t U16(const unsigned char* q) { return static_cast<uint16_t>(q[0] | (q[1] << 8)); }
  static uint32_t U32(const unsigned char* q) {
    return static_cast<uint32_t>(q[0]) | (static_cast<uint32_t>(q[1]) << 8) | (static_cast<uint32_t>(q[2]) << 16) |
           (static_cast<uint32_t>(q[3]) << 24);
  }
  // A double holding an integer within [lo, hi] (NaN and fractions refused).
  static bool Int(const unsigned char* q, double lo, double hi, int64_t& out) {
    double d;
    std::memcpy(&d, q, sizeof d);
    if (!(d >= lo && d <= hi) || std::trunc(d) != d) return false;
    out = static_cast<int64_t>(d);
    return true;
  }
  const unsigned char* Take(size_t k) {
    if (n_ - pos_ < k) return nullptr;
    const unsigned char* q = p_ + pos_;
    pos_ += k;
    return q;
  }
  bool Fail(const char* why) {
    err_ = why;
    return false;
  }
  // A count of items of at least `minBytes` each: more than the bytes left is malformed (and would be a huge
  // allocation).
  bool Count(uint32_t& n, size_t minBytes) {
    const unsigned char* q = Take(4);
    if (q == nullptr) return Fail("truncated record");
    n = U32(q);
    if (n > (n_ - pos_) / minBytes) return Fail("count beyond the record");
    return true;
  }
  bool Bytes(std::string& out) {
    const unsigned char* q = Take(4);
    if (q == nullptr) return Fail("truncated record");
    uint32_t len = U32(q);
    const unsigned char* b = Take(len);
    if (b == nullptr) return Fail("truncated record");
    out.assign(reinterpret_cast<const char*>(b), len);
    return true;
  }
  bool Str(std::string& out) {
    if (!Bytes(out)) return false;
    if (out.find('\0') != std::string::npos) return Fail("NUL byte in a name");
    return true;
  }

  const unsigned char* p_;
  size_t n_;
  size_t pos_ = 0;
  const std::vector<Seg>& chunks_;
  std::string err_;
};

const char* OpName(Op op) {
  switch (op) {
    case Op::Create: return "create";
    case Op::Remove: return "remove";
    case Op::Whiteout: return "whiteout";
    case Op::Xattrs: return "xattrs";
    case Op::Write: return "write";
    case Op::Finish: return "finish";
    case Op::Times: return "times";
  }
  return "";
}

const char* TypeName(Type t) {
  switch (t) {
    case Type::File: return "file";
    case Type::Dir: return "dir";
    case Type::Symlink: return "symlink";
    case Type::Link: return "link";
    case Type::Char: return "char";
    case Type::Block: return "block";
    case Type::Fifo: return "fifo";
    case Type::None: return "";
  }
  return "";
}

// What one session owns. Only the session's queued jobs touch it, one at a time (SerialQueue), so it needs
// no lock of its own.
struct SessionState {
  explicit SessionState(int fd) : root(fd), applier(fd) {}
  UniqueFd root;  // a dup of the caller's root fd: the caller may close its own at any time
  Applier applier;
  bool failed = false;
  bool closed = false;
};

// Main-thread side of a session: what its JS functions share.
struct SessionCtx {
  std::shared_ptr<SessionState> state;
  std::shared_ptr<SerialQueue> queue;
  bool closing = false;
};

class BatchJob : public SerialQueue::Job {
 public:
  BatchJob(Napi::Env env, std::shared_ptr<SessionState> s)
      : state_(std::move(s)), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  // Main thread: the batch's Buffers, kept alive until Done.
  void Keep(Napi::Value v, const unsigned char*& p, size_t& n, const char* what) {
    Napi::Env env = v.Env();
    if (!v.IsTypedArray()) throw Napi::TypeError::New(env, std::string(what) + " must be a Buffer");
    BytesOf(env, v, {what, static_cast<size_t>(-1), "bytes"}, p, n);
    refs_.push_back(Napi::Persistent(v));
  }
  void SetOps(Napi::Value v) { Keep(v, ops_, opsLen_, "ops"); }
  void AddChunk(Napi::Value v) {
    Seg s{nullptr, 0};
    Keep(v, s.p, s.n, "chunks[]");
    chunks_.push_back(s);
  }

  void Run() override {
    SessionState& st = *state_;
    if (st.closed) {
      crash_.Set(EBADF, "applySession");
      return;
    }
    if (st.failed) {
      skipped_ = true;
      return;
    }
    st.applier.ResetCache();
    BatchReader rd(ops_, opsLen_, chunks_);
    Entry e;
    Result r;
    for (uint32_t i = 0; rd.More(); i++) {
      e.Clear();
      size_t at = rd.Pos();
      if (!rd.Next(e)) {
        decodeError_ = "applySession: malformed operation " + std::to_string(i) + " at byte " + std::to_string(at) +
                       ": " + rd.Error();
        Stop(st);
        return;
      }
      r = Result{};
      st.applier.Apply(e, r);
      for (std::string& w : r.warnings) warnings_.push_back({i, e.path, std::move(w)});
      if (r.err != 0) {
        failIndex_ = static_cast<int64_t>(i);
        failOp_ = e.op;
        failType_ = e.type;
        fail_ = std::move(r);
        Stop(st);
        return;
      }
    }
  }

  void Crashed(int err) override {
    crash_.Set(err, "applySession");
    Stop(*state_);
  }

  void Done(Napi::Env env) override {
    for (auto& ref : refs_) ref.Reset();
    refs_.clear();
    try {
      if (!decodeError_.empty()) return deferred_.Reject(Napi::TypeError::New(env, decodeError_).Value());
      if (crash_.failed()) return deferred_.Reject(MakeError(env, crash_).Value());
      Napi::Object o = Napi::Object::New(env);
      o.Set("skipped", Napi::Boolean::New(env, skipped_));
      if (failIndex_ >= 0) {
        Napi::Object x = Napi::Object::New(env);
        x.Set("index", Napi::Number::New(env, static_cast<double>(failIndex_)));
        x.Set("errno", Napi::Number::New(env, fail_.err));
        x.Set("code", Napi::String::New(env, ErrnoName(fail_.err)));
        x.Set("syscall", Napi::String::New(env, fail_.syscall));
        x.Set("path", Napi::String::New(env, fail_.path));
        x.Set("dest", Napi::String::New(env, fail_.dest));
        x.Set("op", Napi::String::New(env, OpName(failOp_)));
        x.Set("type", Napi::String::New(env, TypeName(failType_)));
        o.Set("failed", x);
      } else {
        o.Set("failed", env.Null());
      }
      Napi::Array w = Napi::Array::New(env, warnings_.size());
      for (uint32_t j = 0; j < warnings_.size(); j++) {
        Napi::Object x = Napi::Object::New(env);
        x.Set("index", Napi::Number::New(env, warnings_[j].index));
        x.Set("path", Napi::String::New(env, warnings_[j].path));
        x.Set("message", Napi::String::New(env, warnings_[j].message));
        w.Set(j, x);
      }
      o.Set("warnings", w);
      deferred_.Resolve(o);
    } catch (const Napi::Error& err) {
      deferred_.Reject(err.Value());
    }
  }

 private:
  // After a failure nothing more runs in this session, and a streamed file is not left open.
  static void Stop(SessionState& st) {
    st.failed = true;
    st.applier.CloseOpen();
  }

  struct Warning {
    uint32_t index;
    std::string path;
    std::string message;
  };

  std::shared_ptr<SessionState> state_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::Reference<Napi::Value>> refs_;
  const unsigned char* ops_ = nullptr;
  size_t opsLen_ = 0;
  std::vector<Seg> chunks_;
  // outcome
  bool skipped_ = false;
  std::string decodeError_;
  Failure crash_;
  int64_t failIndex_ = -1;
  Op failOp_ = Op::Create;
  Type failType_ = Type::None;
  Result fail_;
  std::vector<Warning> warnings_;
};

class CloseJob : public SerialQueue::Job {
 public:
  CloseJob(Napi::Env env, std::shared_ptr<SessionState> s)
      : state_(std::move(s)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Run() override {
    state_->applier.CloseOpen();
    state_->applier.ResetCache();
    state_->root.reset();
    state_->closed = true;
  }
  void Crashed(int) override { state_->closed = true; }
  void Done(Napi::Env env) override { deferred_.Resolve(env.Undefined()); }

 private:
  std::shared_ptr<SessionState> state_;
  Napi::Promise::Deferred deferred_;
};

Napi::Value SessionRun(const Napi::CallbackInfo& info, SessionCtx& ctx) {
  Napi::Env env = info.Env();
  if (ctx.closing) throw Napi::Error::New(env, "applySession: the session is closed");
  if (!info[1].IsArray()) throw Napi::TypeError::New(env, "chunks must be an array");
  auto job = std::make_unique<BatchJob>(env, ctx.state);
  job->SetOps(info[0]);
  Napi::Array arr = info[1].As<Napi::Array>();
  uint32_t n = arr.Length();
  for (uint32_t i = 0; i < n; i++) job->AddChunk(arr.Get(i));
  Napi::Promise p = job->Promise();
  ctx.queue->Push(env, std::move(job));
  return p;
}

Napi::Value SessionClose(const Napi::CallbackInfo& info, SessionCtx& ctx) {
  Napi::Env env = info.Env();
  if (ctx.closing) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Resolve(env.Undefined());
    return d.Promise();
  }
  ctx.closing = true;
  auto job = std::make_unique<CloseJob>(env, ctx.state);
  Napi::Promise p = job->Promise();
  ctx.queue->Push(env, std::move(job));
  return p;
}

Napi::Value OpenApplySession(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int rootFd = FdArg(info, 0, "rootFd");
  Failure f;
  // A dup, so the session does not depend on the caller keeping its fd open (or that number unchanged).
  UniqueFd fd(::fcntl(rootFd, F_DUPFD_CLOEXEC, 3));
  if (!fd.valid()) f.Errno("fcntl");
  struct stat st;
  if (!f.failed() && ::fstat(fd.get(), &st) != 0) f.Errno("fstat");
  if (!f.failed() && !S_ISDIR(st.st_mode)) f.Set(ENOTDIR, "openApplySession");
  auto d = Napi::Promise::Deferred::New(env);
  if (f.failed()) {
    d.Reject(MakeError(env, f).Value());
    return d.Promise();
  }
  auto ctx = std::make_shared<SessionCtx>();
  ctx->state = std::make_shared<SessionState>(fd.release());
  ctx->queue = SerialQueue::Create("applySession");
  Napi::Object o = Napi::Object::New(env);
  // Each function holds the context: the session lives as long as either is reachable or a job is queued.
  o.Set("run", Napi::Function::New(
                   env, [ctx](const Napi::CallbackInfo& i) { return SessionRun(i, *ctx); }, "run"));
  o.Set("close", Napi::Function::New(
                     env, [ctx](const Napi::CallbackInfo& i) { return SessionClose(i, *ctx); }, "close"));
  d.Resolve(o);
  return d.Promise();
}

}  // namespace

void RegisterApplyEntries(Napi::Env env, Napi::Object exports) {
  exports.Set("applyEntries", Napi::Function::New(env, ApplyEntries, "applyEntries"));
  exports.Set("finishFile", Napi::Function::New(env, FinishFile, "finishFile"));
  exports.Set("setTimes", Napi::Function::New(env, SetTimes, "setTimes"));
  exports.Set("openApplySession", Napi::Function::New(env, OpenApplySession, "openApplySession"));
}

}  // namespace gd
