// scanTree and lstatMany: lstat data for a whole tree (or a batch of root-relative paths) in one trip to the
// thread pool; readFiles: the content of many small files the same way (see below). The walk never follows
// symlinks: every directory is opened relative to its parent's fd with O_NOFOLLOW, and all stat calls use
// AT_SYMLINK_NOFOLLOW.
//
// Speed (a 140k-entry /usr must scan well under a second): records are compact and stored in fixed chunks
// (no reallocation copies), paths/link targets/xattrs live in one string arena, names are passed to fstatat
// straight from the getdents64 buffer, sorting works on a small key array, and the JS objects are assembled
// by a little JS function from columnar data (see ConvertScan) because V8 builds object literals an order of
// magnitude faster than N-API property calls.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <memory>
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
#include "tree-util.h"

namespace gd {
namespace {

struct XattrMode {
  bool all = false;
  std::vector<std::string> names;  // when !all; empty + !all = none
  bool any() const { return all || !names.empty(); }
};

struct ScanOpts {
  XattrMode xattrs;
  bool oneFilesystem = true;
  bool sort = true;
};

struct Span {
  size_t off = 0;
  size_t len = 0;
};

struct XattrRec {
  Span name;
  Span value;
};

// The lstat fields a ScanEntry reports (struct stat is 144 bytes with padding and fields we do not need).
struct CStat {
  uint32_t mode, uid, gid;
  uint64_t nlink;
  int64_t size, blocks;
  int64_t mtimeSec, atimeSec, ctimeSec;
  uint32_t mtimeNsec, atimeNsec, ctimeNsec;
  uint64_t rdev, dev, ino;

  void From(const struct stat& st) {
    mode = st.st_mode;
    uid = st.st_uid;
    gid = st.st_gid;
    nlink = st.st_nlink;
    size = st.st_size;
    blocks = st.st_blocks;
    mtimeSec = st.st_mtim.tv_sec;
    atimeSec = st.st_atim.tv_sec;
    ctimeSec = st.st_ctim.tv_sec;
    mtimeNsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
    atimeNsec = static_cast<uint32_t>(st.st_atim.tv_nsec);
    ctimeNsec = static_cast<uint32_t>(st.st_ctim.tv_nsec);
    rdev = st.st_rdev;
    dev = st.st_dev;
    ino = st.st_ino;
  }
};

struct Rec {
  Span path;
  Span link;
  uint32_t xattrBegin = 0;
  uint32_t xattrCount = 0;
  bool hasLink = false;
  bool missing = false;  // lstatMany: the path does not exist
  CStat st{};
};

// Append-only record storage in fixed-size chunks: growing never copies what is already there.
class RecStore {
 public:
  static constexpr size_t kChunk = 4096;
  size_t size() const { return size_; }
  Rec& operator[](size_t i) { return chunks_[i / kChunk][i % kChunk]; }
  const Rec& operator[](size_t i) const { return chunks_[i / kChunk][i % kChunk]; }
  Rec& push_back(const Rec& r) {
    if (size_ % kChunk == 0) chunks_.emplace_back(std::make_unique<Rec[]>(kChunk));
    Rec& slot = chunks_.back()[size_ % kChunk];
    slot = r;
    size_++;
    return slot;
  }
  Rec& back() { return (*this)[size_ - 1]; }

 private:
  std::vector<std::unique_ptr<Rec[]>> chunks_;
  size_t size_ = 0;
};

// Everything a scan produced; handed to the convert step on the main thread.
struct ScanResult {
  std::string arena;
  RecStore recs;
  std::vector<XattrRec> xattrs;
  std::vector<uint32_t> order;  // output order (sorted or walk order)
};

Span Append(std::string& arena, std::string_view s) {
  Span sp{arena.size(), s.size()};
  arena.append(s);
  return sp;
}

std::string_view View(const std::string& arena, Span s) { return std::string_view(arena).substr(s.off, s.len); }

// Reads the requested xattrs of the entry `name` in directory `dirFd` (name empty: dirFd itself) into `out`.
// ENOTSUP (filesystem without xattrs) and ENODATA (absent) are not errors.
bool ReadXattrs(int dirFd, std::string_view name, const XattrMode& mode, ScanResult& out, Rec& rec,
                std::vector<char>& listBuf, std::vector<char>& valBuf, Failure& f, const std::string& display) {
  rec.xattrBegin = static_cast<uint32_t>(out.xattrs.size());
  tree::XattrTarget target(dirFd, name);
  auto get = [&](const std::string& attr) -> bool {
    ssize_t n = tree::ReadGrowing([&](char* b, size_t sz) { return target.Get(attr.c_str(), b, sz); }, valBuf);
    if (n < 0) {
      if (errno == ENODATA || errno == ENOTSUP) return true;
      return f.Errno("lgetxattr", display, attr);
    }
    XattrRec x;
    x.name = Append(out.arena, attr);
    x.value = Append(out.arena, std::string_view(valBuf.data(), static_cast<size_t>(n)));
    out.xattrs.push_back(x);
    rec.xattrCount++;
    return true;
  };
  if (mode.all) {
    ssize_t n = tree::ReadGrowing([&](char* b, size_t sz) { return target.List(b, sz); }, listBuf);
    if (n < 0) {
      if (errno == ENOTSUP) return true;
      return f.Errno("llistxattr", display);
    }
    std::string names(listBuf.data(), static_cast<size_t>(n));
    bool ok = true;
    tree::ForEachXattrName(names.data(), names.size(), [&](std::string_view nm) {
      if (ok) ok = get(std::string(nm));
    });
    return ok;
  }
  for (const std::string& nm : mode.names)
    if (!get(nm)) return false;
  return true;
}

// readlinkat into `buf`; returns the target length or -1 (errno set). Grows for targets longer than 4 KiB.
ssize_t ReadLink(int dirFd, const char* name, std::vector<char>& buf) {
  if (buf.size() < 4096) buf.resize(4096);
  for (int attempt = 0; attempt < 8; attempt++) {
    ssize_t n = ::readlinkat(dirFd, name, buf.data(), buf.size());
    if (n < 0) return -1;
    if (static_cast<size_t>(n) < buf.size()) return n;
    buf.resize(buf.size() * 2);
  }
  errno = ENAMETOOLONG;
  return -1;
}

class Walker {
 public:
  Walker(const ScanOpts& opts, ScanResult& out, Failure& f) : opts_(opts), out_(out), f_(f) {}

  bool Run(const std::string& root) {
    struct stat st;
    if (::fstatat(AT_FDCWD, root.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return f_.Errno("lstat", root);
    if (!S_ISDIR(st.st_mode)) {
      // A non-directory root is reported alone.
      Rec rec;
      rec.path = Append(out_.arena, "/");
      rec.st.From(st);
      if (S_ISLNK(st.st_mode)) {
        ssize_t n = ReadLink(AT_FDCWD, root.c_str(), linkBuf_);
        if (n < 0) return f_.Errno("readlinkat", root);
        rec.link = Append(out_.arena, std::string_view(linkBuf_.data(), static_cast<size_t>(n)));
        rec.hasLink = true;
      }
      Rec& r = out_.recs.push_back(rec);
      return !opts_.xattrs.any() || ReadXattrs(AT_FDCWD, root, opts_.xattrs, out_, r, listBuf_, valBuf_, f_, root);
    }
    UniqueFd rootFd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!rootFd.valid()) return f_.Errno("open", root);
    if (::fstat(rootFd.get(), &st) != 0) return f_.Errno("fstat", root);
    rootDev_ = st.st_dev;
    Rec rec;
    rec.path = Append(out_.arena, "/");
    rec.st.From(st);
    Rec& r = out_.recs.push_back(rec);
    if (opts_.xattrs.any() && !ReadXattrs(rootFd.get(), "", opts_.xattrs, out_, r, listBuf_, valBuf_, f_, "/"))
      return false;
    return Walk(std::move(rootFd));
  }

 private:
  struct Frame {
    UniqueFd fd;
    std::vector<uint32_t> subdirs;  // record indices of child directories still to visit
    size_t next = 0;
  };

  // Reads every entry of directory `fd` (record `dirRec`) and lists the child directories to descend into.
  bool ReadDir(int fd, uint32_t dirRec, std::vector<uint32_t>& subdirs) {
    std::string prefix(View(out_.arena, out_.recs[dirRec].path));
    if (prefix.size() == 1) prefix.clear();  // root: children are "/name"
    tree::DirReader rd(fd, dirBuf_);
    std::string_view name;
    unsigned char type;
    int r;
    struct stat st;
    while ((r = rd.Next(name, type)) == 1) {
      const char* cname = name.data();  // NUL-terminated inside the getdents buffer
      if (::fstatat(fd, cname, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;  // removed while we were reading
        return f_.Errno("fstatat", prefix + "/" + std::string(name));
      }
      Rec rec;
      rec.st.From(st);
      rec.path.off = out_.arena.size();
      out_.arena.append(prefix);
      out_.arena.push_back('/');
      out_.arena.append(name);
      rec.path.len = out_.arena.size() - rec.path.off;
      if (S_ISLNK(st.st_mode)) {
        ssize_t n = ReadLink(fd, cname, linkBuf_);
        if (n < 0) {
          if (errno == ENOENT) {
            out_.arena.resize(rec.path.off);
            continue;
          }
          return f_.Errno("readlinkat", std::string(View(out_.arena, rec.path)));
        }
        rec.link = Append(out_.arena, std::string_view(linkBuf_.data(), static_cast<size_t>(n)));
        rec.hasLink = true;
      }
      // The display path is copied: ReadXattrs appends to the arena, which may move it.
      if (opts_.xattrs.any() && !ReadXattrs(fd, name, opts_.xattrs, out_, rec, listBuf_, valBuf_, f_,
                                            std::string(View(out_.arena, rec.path))))
        return false;
      uint32_t idx = static_cast<uint32_t>(out_.recs.size());
      out_.recs.push_back(rec);
      if (S_ISDIR(st.st_mode) && (!opts_.oneFilesystem || st.st_dev == rootDev_)) subdirs.push_back(idx);
    }
    if (r < 0) return f_.Errno("getdents64", prefix.empty() ? "/" : prefix);
    return true;
  }

  bool Walk(UniqueFd rootFd) {
    std::vector<Frame> stack;
    {
      Frame fr;
      if (!ReadDir(rootFd.get(), 0, fr.subdirs)) return false;
      fr.fd = std::move(rootFd);
      if (!fr.subdirs.empty()) stack.push_back(std::move(fr));
    }
    while (!stack.empty()) {
      Frame& top = stack.back();
      if (top.next >= top.subdirs.size()) {
        stack.pop_back();
        continue;
      }
      uint32_t idx = top.subdirs[top.next++];
      std::string_view p = View(out_.arena, out_.recs[idx].path);
      std::string name(p.substr(p.rfind('/') + 1));
      int fd = ::openat(top.fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) continue;  // replaced while walking
        return f_.Errno("openat", std::string(p));
      }
      UniqueFd dfd(fd);
      struct stat st;
      if (::fstat(fd, &st) != 0) return f_.Errno("fstat", std::string(p));
      const CStat& want = out_.recs[idx].st;
      if (st.st_ino != want.ino || st.st_dev != want.dev) continue;  // swapped under us: do not descend
      Frame fr;
      if (!ReadDir(fd, idx, fr.subdirs)) return false;
      if (!fr.subdirs.empty()) {
        fr.fd = std::move(dfd);
        stack.push_back(std::move(fr));  // invalidates `top`, which is not used after this
      }
    }
    return true;
  }

  const ScanOpts& opts_;
  ScanResult& out_;
  Failure& f_;
  dev_t rootDev_ = 0;
  std::vector<char> dirBuf_;
  std::vector<char> listBuf_;
  std::vector<char> valBuf_;
  std::vector<char> linkBuf_;
};

void SetOrder(ScanResult& r, bool sort) {
  size_t n = r.recs.size();
  r.order.resize(n);
  if (!sort) {
    for (size_t i = 0; i < n; i++) r.order[i] = static_cast<uint32_t>(i);
    return;
  }
  // Sort small (key, index) pairs instead of chasing records. string_view compares like memcmp on unsigned
  // bytes (char_traits<char>), which is the bytewise order promised.
  std::vector<std::pair<std::string_view, uint32_t>> keys(n);
  for (size_t i = 0; i < n; i++) keys[i] = {View(r.arena, r.recs[i].path), static_cast<uint32_t>(i)};
  std::sort(keys.begin(), keys.end());
  for (size_t i = 0; i < n; i++) r.order[i] = keys[i].second;
}

ScanOpts ReadScanOpts(Napi::Object o) {
  ScanOpts s;
  Napi::Env env = o.Env();
  Napi::Value x = o.Get("xattrs");
  if (x.IsBoolean()) {
    s.xattrs.all = x.As<Napi::Boolean>().Value();
  } else if (x.IsArray()) {
    Napi::Array arr = x.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsString()) throw Napi::TypeError::New(env, "opts.xattrs entries must be strings");
      std::string nm = v.As<Napi::String>().Utf8Value();
      if (nm.empty() || nm.find('\0') != std::string::npos)
        throw Napi::TypeError::New(env, "opts.xattrs entries must be non-empty strings without NUL");
      s.xattrs.names.push_back(std::move(nm));
    }
  } else if (!x.IsUndefined() && !x.IsNull()) {
    throw Napi::TypeError::New(env, "opts.xattrs must be a boolean or an array of names");
  }
  s.oneFilesystem = PropBool(o, "oneFilesystem", true);
  s.sort = PropBool(o, "sort", true);
  return s;
}

// The result crosses as columns: one Float64Array of numbers, paths and link targets as NUL-joined strings
// (in chunks, see ChunkedJoin), xattr objects as [index, object] pairs; this fixed function builds the
// objects. `s` turns integral values into small integers so V8 keeps the fields unboxed (a Float64Array
// load is otherwise stored as a heap number, which makes building 100k objects several times slower).
// Compiled with napi_run_script; V8's compilation cache makes later calls a lookup.
constexpr const char* kBuildEntries = R"JS((function (count, numsPerEntry, nums, pathChunks, linkChunks, xattrs) {
  'use strict';
  const s = (v) => ((v | 0) === v ? v | 0 : v);
  const split = (chunks) => {
    let out = [];
    for (const c of chunks) out = out.length === 0 ? c.split('\0') : out.concat(c.split('\0'));
    return out;
  };
  const paths = split(pathChunks);
  const links = split(linkChunks);
  const res = new Array(count);
  let pi = 0;
  for (let i = 0, j = 0; i < count; i++, j += numsPerEntry) {
    const li = nums[j + 15];
    if (li === -2) { res[i] = null; continue; }
    const e = { path: paths[pi++], mode: s(nums[j]), uid: s(nums[j + 1]), gid: s(nums[j + 2]), size: s(nums[j + 3]),
      blocks: s(nums[j + 4]), mtimeSec: s(nums[j + 5]), mtimeNsec: s(nums[j + 6]), atimeSec: s(nums[j + 7]),
      atimeNsec: s(nums[j + 8]), ctimeSec: s(nums[j + 9]), ctimeNsec: s(nums[j + 10]), rdev: s(nums[j + 11]),
      dev: s(nums[j + 12]), ino: s(nums[j + 13]), nlink: s(nums[j + 14]) };
    if (li >= 0) e.linkname = links[li];
    res[i] = e;
  }
  for (let k = 0; k + 1 < xattrs.length; k += 2) res[xattrs[k]].xattrs = xattrs[k + 1];
  return res;
}))JS";

constexpr size_t kNumsPerEntry = 16;    // 15 stat numbers + link index (-1 none, -2 missing entry)
constexpr size_t kChunkBytes = 1u << 20;  // per JS string; a chunk with non-ASCII becomes two-byte, so keep it small

void Check(Napi::Env env, napi_status s) {
  if (s != napi_ok) throw Napi::Error::New(env, "failed to build the scan result");
}

// NUL-joined strings, split into chunks at item boundaries (an item is never cut). Paths cannot contain NUL.
class ChunkedJoin {
 public:
  void Add(std::string_view s) {
    if (started_ && cur_.size() + s.size() + 1 > kChunkBytes) {
      chunks_.push_back(std::move(cur_));
      cur_.clear();
      started_ = false;
    }
    if (started_) cur_.push_back('\0');
    cur_.append(s);
    started_ = true;
  }
  void Finish() {
    if (started_) chunks_.push_back(std::move(cur_));
    cur_.clear();
    started_ = false;
  }
  Napi::Array ToJs(Napi::Env env) const {
    Napi::Array a = Napi::Array::New(env, chunks_.size());
    for (uint32_t i = 0; i < chunks_.size(); i++) {
      napi_value v;
      Check(env, napi_create_string_utf8(env, chunks_[i].data(), chunks_[i].size(), &v));
      a.Set(i, Napi::Value(env, v));
    }
    return a;
  }

 private:
  std::vector<std::string> chunks_;
  std::string cur_;
  bool started_ = false;
};

// The result in the columnar form the JS builder takes, prepared on the pool thread so the main thread only
// creates the strings and runs the builder.
struct Columns {
  size_t count = 0;
  double* nums = nullptr;  // malloc'd; handed to an external ArrayBuffer when possible
  ChunkedJoin paths, links;
  struct XRef {
    uint32_t index;  // output position
    uint32_t begin;  // into ScanResult::xattrs
    uint32_t count;
  };
  std::vector<XRef> xattrs;

  Columns() = default;
  Columns(const Columns&) = delete;
  Columns& operator=(const Columns&) = delete;
  ~Columns() { std::free(nums); }
};

// Fills `c` from the records in output order, then drops the records (they are no longer needed).
void BuildColumns(ScanResult& r, Columns& c) {
  c.count = r.order.size();
  size_t n = c.count * kNumsPerEntry;
  if (n > 0) {
    c.nums = static_cast<double*>(std::malloc(n * sizeof(double)));
    if (c.nums == nullptr) throw std::bad_alloc();
  }
  double linkIndex = 0;
  for (size_t i = 0; i < c.count; i++) {
    const Rec& rec = r.recs[r.order[i]];
    double* e = c.nums + i * kNumsPerEntry;
    if (rec.missing) {
      std::fill(e, e + kNumsPerEntry, 0.0);
      e[15] = -2;
      continue;
    }
    const CStat& st = rec.st;
    e[0] = st.mode;
    e[1] = st.uid;
    e[2] = st.gid;
    e[3] = static_cast<double>(st.size);
    e[4] = static_cast<double>(st.blocks);
    e[5] = static_cast<double>(st.mtimeSec);
    e[6] = st.mtimeNsec;
    e[7] = static_cast<double>(st.atimeSec);
    e[8] = st.atimeNsec;
    e[9] = static_cast<double>(st.ctimeSec);
    e[10] = st.ctimeNsec;
    e[11] = static_cast<double>(st.rdev);
    e[12] = static_cast<double>(st.dev);
    e[13] = static_cast<double>(st.ino);
    e[14] = static_cast<double>(st.nlink);
    e[15] = -1;
    c.paths.Add(View(r.arena, rec.path));
    if (rec.hasLink) {
      c.links.Add(View(r.arena, rec.link));
      e[15] = linkIndex++;
    }
    if (rec.xattrCount > 0) c.xattrs.push_back({static_cast<uint32_t>(i), rec.xattrBegin, rec.xattrCount});
  }
  c.paths.Finish();
  c.links.Finish();
  r.recs = RecStore();
  std::vector<uint32_t>().swap(r.order);
}

Napi::Value ConvertScan(Napi::Env env, ScanResult& r, Columns& c) {
  size_t bytes = c.count * kNumsPerEntry * sizeof(double);
  napi_value ab = nullptr;
  if (bytes > 0 &&
      napi_create_external_arraybuffer(
          env, c.nums, bytes, [](napi_env, void* data, void*) { std::free(data); }, nullptr, &ab) == napi_ok) {
    c.nums = nullptr;  // owned by the ArrayBuffer now
  } else {
    // Runtimes that forbid external buffers (or an empty result): copy.
    void* data = nullptr;
    Check(env, napi_create_arraybuffer(env, bytes, &data, &ab));
    if (bytes > 0) std::memcpy(data, c.nums, bytes);
  }
  Napi::Float64Array nums = Napi::Float64Array::New(env, c.count * kNumsPerEntry, Napi::ArrayBuffer(env, ab), 0);
  Napi::Array xattrs = Napi::Array::New(env, c.xattrs.size() * 2);
  uint32_t xn = 0;
  for (const Columns::XRef& ref : c.xattrs) {
    Napi::HandleScope scope(env);
    Napi::Object xo = Napi::Object::New(env);
    for (uint32_t k = 0; k < ref.count; k++) {
      const XattrRec& x = r.xattrs.at(ref.begin + k);
      std::string_view val = View(r.arena, x.value);
      xo.Set(std::string(View(r.arena, x.name)), Napi::Buffer<char>::Copy(env, val.data(), val.size()));
    }
    xattrs.Set(xn++, Napi::Number::New(env, ref.index));
    xattrs.Set(xn++, xo);
  }
  napi_value src, fn;
  Check(env, napi_create_string_utf8(env, kBuildEntries, NAPI_AUTO_LENGTH, &src));
  Check(env, napi_run_script(env, src, &fn));
  Napi::Function build(env, fn);
  return build.Call({Napi::Number::New(env, static_cast<double>(c.count)), Napi::Number::New(env, kNumsPerEntry),
                     nums, c.paths.ToJs(env), c.links.ToJs(env), xattrs});
}

// What the pool thread hands to the main thread.
struct Prepared {
  ScanResult result;
  Columns cols;
};

Napi::Value ConvertPrepared(Napi::Env env, std::shared_ptr<Prepared>& p) { return ConvertScan(env, p->result, p->cols); }

Napi::Value ScanTree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string root = ArgPath(info, 0, "root");
  ScanOpts opts = ReadScanOpts(ArgOptObject(info, 1, "opts"));
  // The result is held by pointer so moving it between the pool thread and the convert step is free.
  return RunAsync<std::shared_ptr<Prepared>>(
      env, "scanTree",
      [root, opts](Failure& f) {
        auto p = std::make_shared<Prepared>();
        p->result.arena.reserve(1 << 20);
        Walker w(opts, p->result, f);
        if (!w.Run(root)) {
          if (!f.failed()) f.Set(EIO, "scanTree", root);
          return std::shared_ptr<Prepared>();
        }
        SetOrder(p->result, opts.sort);
        BuildColumns(p->result, p->cols);
        return p;
      },
      ConvertPrepared);
}

// "", "/", "." (and runs of them) name the root itself.
bool IsRootPath(const std::string& p) {
  for (char c : p)
    if (c != '/' && c != '.') return false;
  return p.find("..") == std::string::npos;
}

bool LstatOne(int rootFd, const std::string& p, const ScanOpts& opts, ScanResult& r, std::vector<char>& listBuf,
              std::vector<char>& valBuf, std::vector<char>& linkBuf, Failure& f) {
  Rec rec;
  size_t start = p.find_first_not_of('/');
  std::string_view clean = start == std::string::npos ? std::string_view() : std::string_view(p).substr(start);
  rec.path.off = r.arena.size();
  r.arena.push_back('/');
  r.arena.append(clean);
  rec.path.len = r.arena.size() - rec.path.off;
  struct stat st;
  UniqueFd parent;
  std::string leaf;
  int dirFd;
  if (IsRootPath(p)) {
    if (::fstat(rootFd, &st) != 0) return f.Errno("fstat", p);
    dirFd = rootFd;
  } else {
    Failure pf;
    parent.reset(OpenParentBounded(rootFd, p, leaf, pf));
    if (!parent.valid()) {
      if (pf.err != ENOENT && pf.err != ENOTDIR) {
        f = pf;
        if (f.path.empty()) f.path = p;
        return false;
      }
      rec.missing = true;
      r.recs.push_back(rec);
      return true;
    }
    dirFd = parent.get();
    if (::fstatat(dirFd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT && errno != ENOTDIR) return f.Errno("fstatat", p);
      rec.missing = true;
      r.recs.push_back(rec);
      return true;
    }
    if (S_ISLNK(st.st_mode)) {
      ssize_t n = ReadLink(dirFd, leaf.c_str(), linkBuf);
      if (n < 0) return f.Errno("readlinkat", p);
      rec.link = Append(r.arena, std::string_view(linkBuf.data(), static_cast<size_t>(n)));
      rec.hasLink = true;
    }
  }
  rec.st.From(st);
  if (opts.xattrs.any() && !ReadXattrs(dirFd, leaf, opts.xattrs, r, rec, listBuf, valBuf, f, p)) return false;
  r.recs.push_back(rec);
  return true;
}

Napi::Value LstatMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t rootFd = ArgInt(info, 0, "rootFd");
  if (rootFd < 0 || rootFd > 0x7fffffff) throw Napi::RangeError::New(env, "rootFd is not a file descriptor");
  if (!info[1].IsArray()) throw Napi::TypeError::New(env, "paths must be an array");
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<std::string> paths;
  paths.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(env, "paths must be strings");
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s.find('\0') != std::string::npos) throw Napi::TypeError::New(env, "paths must not contain NUL bytes");
    paths.push_back(std::move(s));
  }
  ScanOpts opts = ReadScanOpts(ArgOptObject(info, 2, "opts"));
  int fd = static_cast<int>(rootFd);
  return RunAsync<std::shared_ptr<Prepared>>(
      env, "lstatMany",
      [fd, paths = std::move(paths), opts](Failure& f) {
        auto p = std::make_shared<Prepared>();
        std::vector<char> listBuf, valBuf, linkBuf;
        for (const std::string& path : paths)
          if (!LstatOne(fd, path, opts, p->result, listBuf, valBuf, linkBuf, f)) return std::shared_ptr<Prepared>();
        SetOrder(p->result, false);
        BuildColumns(p->result, p->cols);
        return p;
      },
      ConvertPrepared);
}

// ---- readFiles: the content of many small regular files in one trip to the thread pool ----
//
// A diff of a container holds mostly small files; reading each through openBounded + fstat + read + close from
// JavaScript costs four pool round trips per file, which dominated the export. Here one worker opens each file
// bounded to the root exactly as openBounded does (RESOLVE_IN_ROOT, no magic links, O_NOFOLLOW so a final symlink
// is never followed, O_NONBLOCK|O_NOCTTY so a fifo or tty swapped in neither blocks nor becomes ours), checks it is
// a regular file, and reads it into its slot of one zeroed buffer.

constexpr uint64_t kReadFilesMaxBytes = 256ull << 20;  // one call's buffer; callers batch far less
constexpr uint64_t kReadFilesMaxAlign = 1 << 16;
constexpr int64_t kNotRegular = -1;

struct ReadFilesResult {
  std::unique_ptr<char[]> data;
  size_t size = 0;
  std::vector<int64_t> got;  // bytes read, kNotRegular, or -2 when failures[i] holds the error
  std::vector<Failure> failures;
};

// Reads up to `want` bytes of `path` into `dst`. Returns bytes read, kNotRegular, or -2 with `f` set.
int64_t ReadOneFile(int rootFd, const std::string& path, char* dst, uint64_t want, Failure& f) {
  BoundedOpenOptions o;
  o.flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
  UniqueFd fd(OpenBounded(rootFd, path, o, f));
  if (!fd.valid()) {
    if (!f.failed()) f.Set(EIO, "openat2", path);
    if (f.path.empty()) f.path = path;
    return -2;
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    f.Errno("fstat", path);
    return -2;
  }
  if (!S_ISREG(st.st_mode)) return kNotRegular;
  uint64_t off = 0;
  while (off < want) {
    ssize_t n = ::pread(fd.get(), dst + off, static_cast<size_t>(want - off), static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      f.Errno("read", path);
      return -2;
    }
    if (n == 0) break;  // the file shrank: the rest of the slot stays zero
    // Never trust the count beyond what was asked for.
    off += std::min<uint64_t>(static_cast<uint64_t>(n), want - off);
  }
  return static_cast<int64_t>(off);
}

Napi::Value ConvertReadFiles(Napi::Env env, std::shared_ptr<ReadFilesResult>& r) {
  Napi::Object out = Napi::Object::New(env);
  // Handed over without a copy where the runtime allows external buffers (NewOrCopy copies, and frees, elsewhere).
  char* raw = r->data.release();
  out.Set("data", Napi::Buffer<char>::NewOrCopy(env, raw, r->size, [](Napi::Env, char* p) { delete[] p; }));
  Napi::Array read = Napi::Array::New(env, r->got.size());
  for (size_t i = 0; i < r->got.size(); i++) {
    if (r->got[i] == -2)
      read.Set(static_cast<uint32_t>(i), MakeError(env, r->failures[i]).Value());
    else
      read.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(r->got[i])));
  }
  out.Set("read", read);
  return out;
}

Napi::Value ReadFiles(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t rootFd = ArgInt(info, 0, "rootFd");
  if (rootFd < 0 || rootFd > 0x7fffffff) throw Napi::RangeError::New(env, "rootFd is not a file descriptor");
  if (!info[1].IsArray()) throw Napi::TypeError::New(env, "paths must be an array");
  if (!info[2].IsArray()) throw Napi::TypeError::New(env, "sizes must be an array");
  Napi::Array pa = info[1].As<Napi::Array>();
  Napi::Array sa = info[2].As<Napi::Array>();
  if (pa.Length() != sa.Length()) throw Napi::RangeError::New(env, "paths and sizes must have the same length");
  Napi::Object opts = ArgOptObject(info, 3, "opts");
  uint64_t align = PropUint(opts, "align", 1);
  if (align == 0 || align > kReadFilesMaxAlign) throw Napi::RangeError::New(env, "opts.align must be 1..65536");
  std::vector<std::string> paths;
  std::vector<uint64_t> sizes, offsets;
  paths.reserve(pa.Length());
  sizes.reserve(pa.Length());
  offsets.reserve(pa.Length());
  uint64_t total = 0;
  for (uint32_t i = 0; i < pa.Length(); i++) {
    Napi::Value pv = pa.Get(i);
    if (!pv.IsString()) throw Napi::TypeError::New(env, "paths must be strings");
    std::string s = pv.As<Napi::String>().Utf8Value();
    if (s.find('\0') != std::string::npos) throw Napi::TypeError::New(env, "paths must not contain NUL bytes");
    Napi::Value sv = sa.Get(i);
    if (!sv.IsNumber()) throw Napi::TypeError::New(env, "sizes must be numbers");
    double d = sv.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > static_cast<double>(kReadFilesMaxBytes) || d != static_cast<double>(static_cast<uint64_t>(d)))
      throw Napi::RangeError::New(env, "sizes must be integers from 0 to 256 MiB");
    uint64_t size = static_cast<uint64_t>(d);
    uint64_t slot = (size + align - 1) / align * align;
    offsets.push_back(total);
    total += slot;  // each slot is at most 256 MiB + align, so this cannot wrap before the check below
    if (total > kReadFilesMaxBytes) throw Napi::RangeError::New(env, "readFiles: more than 256 MiB in one call");
    paths.push_back(std::move(s));
    sizes.push_back(size);
  }
  int fd = static_cast<int>(rootFd);
  return RunAsync<std::shared_ptr<ReadFilesResult>>(
      env, "readFiles",
      [fd, paths = std::move(paths), sizes = std::move(sizes), offsets = std::move(offsets), total](Failure&) {
        auto r = std::make_shared<ReadFilesResult>();
        r->size = static_cast<size_t>(total);
        r->data.reset(new char[r->size == 0 ? 1 : r->size]());  // zeroed: padding and unread bytes are zeros
        r->got.resize(paths.size());
        r->failures.resize(paths.size());
        for (size_t i = 0; i < paths.size(); i++)
          r->got[i] = ReadOneFile(fd, paths[i], r->data.get() + offsets[i], sizes[i], r->failures[i]);
        return r;
      },
      ConvertReadFiles);
}

}  // namespace

void RegisterScanTree(Napi::Env env, Napi::Object exports) {
  exports.Set("scanTree", Napi::Function::New(env, ScanTree, "scanTree"));
  exports.Set("lstatMany", Napi::Function::New(env, LstatMany, "lstatMany"));
  exports.Set("readFiles", Napi::Function::New(env, ReadFiles, "readFiles"));
}

}  // namespace gd
