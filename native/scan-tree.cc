// scanTree and lstatMany: lstat data for a whole tree (or a batch of root-relative paths) in one trip to the
// thread pool. The walk never follows symlinks: every directory is opened relative to its parent's fd with
// O_NOFOLLOW, and all stat calls use AT_SYMLINK_NOFOLLOW. Results are collected into flat arrays (one string
// arena for paths, link targets and xattrs) so a 100k-entry tree costs a handful of allocations, and the JS
// objects are built with one napi_define_properties call each from cached keys.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <sys/resource.h>
#include <cstring>
#include <string>
#include <string_view>
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

struct Rec {
  Span path;
  Span link;
  bool hasLink = false;
  bool missing = false;  // lstatMany: the path does not exist
  uint32_t xattrBegin = 0;
  uint32_t xattrCount = 0;
  struct stat st;
};

// Everything a scan produced; moved into the convert step on the main thread.
struct ScanResult {
  std::string arena;
  std::vector<Rec> recs;
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
                std::vector<char>& listBuf, std::vector<char>& valBuf, Failure& f, std::string_view display) {
  rec.xattrBegin = static_cast<uint32_t>(out.xattrs.size());
  tree::XattrTarget target(dirFd, name);
  auto get = [&](const std::string& attr) -> bool {
    ssize_t n = tree::ReadGrowing([&](char* b, size_t sz) { return target.Get(attr.c_str(), b, sz); }, valBuf);
    if (n < 0) {
      if (errno == ENODATA || errno == ENOTSUP) return true;
      return f.Errno("lgetxattr", std::string(display), attr);
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
      return f.Errno("llistxattr", std::string(display));
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

bool ReadLink(int dirFd, const char* name, std::string& buf, std::string_view display, Failure& f) {
  buf.resize(4096);
  for (int attempt = 0; attempt < 8; attempt++) {
    ssize_t n = ::readlinkat(dirFd, name, buf.data(), buf.size());
    if (n < 0) return f.Errno("readlinkat", std::string(display));
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      return true;
    }
    buf.resize(buf.size() * 2);
  }
  return f.Set(ENAMETOOLONG, "readlinkat", std::string(display));
}

class Walker {
 public:
  Walker(const ScanOpts& opts, ScanResult& out, Failure& f) : opts_(opts), out_(out), f_(f) {}

  bool Run(const std::string& root) {
    struct stat st;
    if (::fstatat(AT_FDCWD, root.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return f_.Errno("lstat", root);
    if (!S_ISDIR(st.st_mode)) {
      // A non-directory root is reported alone (its xattrs through its path, without following).
      Rec rec;
      rec.path = Append(out_.arena, "/");
      rec.st = st;
      if (S_ISLNK(st.st_mode)) {
        if (!ReadLink(AT_FDCWD, root.c_str(), linkBuf_, root, f_)) return false;
        rec.link = Append(out_.arena, linkBuf_);
        rec.hasLink = true;
      }
      out_.recs.push_back(rec);
      if (opts_.xattrs.any() &&
          !ReadXattrs(AT_FDCWD, root, opts_.xattrs, out_, out_.recs.back(), listBuf_, valBuf_, f_, root))
        return false;
      return true;
    }
    UniqueFd rootFd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!rootFd.valid()) return f_.Errno("open", root);
    if (::fstat(rootFd.get(), &st) != 0) return f_.Errno("fstat", root);
    rootDev_ = st.st_dev;
    Rec rec;
    rec.path = Append(out_.arena, "/");
    rec.st = st;
    out_.recs.push_back(rec);
    if (opts_.xattrs.any() &&
        !ReadXattrs(rootFd.get(), "", opts_.xattrs, out_, out_.recs.back(), listBuf_, valBuf_, f_, "/"))
      return false;
    return Walk(std::move(rootFd), 0);
  }

 private:
  struct Frame {
    UniqueFd fd;
    std::vector<uint32_t> subdirs;  // record indices of child directories still to visit
    size_t next = 0;
  };

  // Reads every entry of directory `fd` (record `dirRec`) and returns the child directories to descend into.
  bool ReadDir(int fd, uint32_t dirRec, std::vector<uint32_t>& subdirs) {
    std::string prefix(View(out_.arena, out_.recs[dirRec].path));
    if (prefix.size() == 1) prefix.clear();  // root: children are "/name"
    tree::DirReader rd(fd, dirBuf_);
    std::string_view name;
    unsigned char type;
    int r;
    std::string nameZ;
    while ((r = rd.Next(name, type)) == 1) {
      nameZ.assign(name);
      Rec rec;
      if (::fstatat(fd, nameZ.c_str(), &rec.st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;  // removed while we were reading
        return f_.Errno("fstatat", prefix + "/" + nameZ);
      }
      rec.path.off = out_.arena.size();
      out_.arena.append(prefix);
      out_.arena.push_back('/');
      out_.arena.append(name);
      rec.path.len = out_.arena.size() - rec.path.off;
      if (S_ISLNK(rec.st.st_mode)) {
        if (!ReadLink(fd, nameZ.c_str(), linkBuf_, nameZ, f_)) {
          if (f_.err != ENOENT) return false;
          f_ = Failure();
          continue;
        }
        rec.link = Append(out_.arena, linkBuf_);
        rec.hasLink = true;
      }
      // The display path is copied: ReadXattrs appends to the arena, which may move it.
      if (opts_.xattrs.any() && !ReadXattrs(fd, nameZ, opts_.xattrs, out_, rec, listBuf_, valBuf_, f_,
                                            std::string(View(out_.arena, rec.path))))
        return false;
      uint32_t idx = static_cast<uint32_t>(out_.recs.size());
      out_.recs.push_back(rec);
      if (S_ISDIR(rec.st.st_mode) && (!opts_.oneFilesystem || rec.st.st_dev == rootDev_)) subdirs.push_back(idx);
    }
    if (r < 0) return f_.Errno("getdents64", prefix.empty() ? "/" : prefix);
    return true;
  }

  bool Walk(UniqueFd rootFd, uint32_t rootRec) {
    std::vector<Frame> stack;
    {
      Frame fr;
      if (!ReadDir(rootFd.get(), rootRec, fr.subdirs)) return false;
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
      const struct stat& want = out_.recs[idx].st;
      if (st.st_ino != want.st_ino || st.st_dev != want.st_dev) continue;  // swapped under us: do not descend
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
  std::string linkBuf_;
};

void SortByPath(ScanResult& r) {
  const std::string& a = r.arena;
  std::sort(r.order.begin(), r.order.end(), [&](uint32_t x, uint32_t y) {
    // std::string_view compares with char_traits<char>::compare = memcmp semantics (unsigned bytes).
    return View(a, r.recs[x].path) < View(a, r.recs[y].path);
  });
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

// Building 100k objects through N-API costs one runtime call per property; V8 builds object literals in JS
// an order of magnitude faster. So the result crosses as columns (one Float64Array of numbers, the paths and
// link targets as NUL-joined strings in chunks, xattr objects as [index, object] pairs) and a small fixed JS
// function assembles the ScanEntry objects. The function is compiled with napi_run_script; V8's compilation
// cache makes later calls a lookup.
constexpr const char* kBuildEntries = R"JS((function (count, numsPerEntry, nums, pathChunks, linkChunks, xattrs) {
  'use strict';
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
    const e = { path: paths[pi++], mode: nums[j], uid: nums[j + 1], gid: nums[j + 2], size: nums[j + 3],
      blocks: nums[j + 4], mtimeSec: nums[j + 5], mtimeNsec: nums[j + 6], atimeSec: nums[j + 7],
      atimeNsec: nums[j + 8], ctimeSec: nums[j + 9], ctimeNsec: nums[j + 10], rdev: nums[j + 11],
      dev: nums[j + 12], ino: nums[j + 13], nlink: nums[j + 14] };
    if (li >= 0) e.linkname = links[li];
    res[i] = e;
  }
  for (let k = 0; k + 1 < xattrs.length; k += 2) res[xattrs[k]].xattrs = xattrs[k + 1];
  return res;
}))JS";

constexpr size_t kNumsPerEntry = 16;         // 15 stat numbers + link index (-1 none, -2 missing entry)
constexpr size_t kChunkBytes = 64u << 20;    // well under V8's maximum string length

void Check(Napi::Env env, napi_status s) {
  if (s != napi_ok) throw Napi::Error::New(env, "failed to build the scan result");
}

// NUL-joined strings, split into chunks at item boundaries (a chunk never ends in the middle of an item).
class ChunkedJoin {
 public:
  void Add(std::string_view s) {
    if (!cur_.empty() && cur_.size() + s.size() + 1 > kChunkBytes) {
      chunks_.push_back(std::move(cur_));
      cur_.clear();
      started_ = false;
    }
    if (started_) cur_.push_back('\0');
    cur_.append(s);
    started_ = true;
  }
  Napi::Array ToJs(Napi::Env env) {
    if (started_) chunks_.push_back(std::move(cur_));
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

Napi::Value ConvertScanX(Napi::Env env, ScanResult& r);
Napi::Value ConvertScan(Napi::Env env, ScanResult& r) {
  auto t0 = std::chrono::steady_clock::now();
  struct rusage ru0, ru1; getrusage(RUSAGE_THREAD, &ru0);
  auto v = ConvertScanX(env, r);
  getrusage(RUSAGE_THREAD, &ru1);
  if (getenv("GD_TIMING")) fprintf(stderr, "convert %ld ms cpu %ld ms\n", (long)std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now()-t0).count(), (ru1.ru_utime.tv_sec-ru0.ru_utime.tv_sec)*1000+(ru1.ru_utime.tv_usec-ru0.ru_utime.tv_usec)/1000 + (ru1.ru_stime.tv_sec-ru0.ru_stime.tv_sec)*1000+(ru1.ru_stime.tv_usec-ru0.ru_stime.tv_usec)/1000);
  return v;
}
Napi::Value ConvertScanX(Napi::Env env, ScanResult& r) {
  size_t count = r.order.size();
  Napi::Float64Array nums = Napi::Float64Array::New(env, count * kNumsPerEntry);
  double* d = nums.Data();
  ChunkedJoin paths, links;
  Napi::Array xattrs = Napi::Array::New(env);
  uint32_t xn = 0;
  double linkIndex = 0;
  for (size_t i = 0; i < count; i++) {
    const Rec& rec = r.recs.at(r.order[i]);
    double* e = d + i * kNumsPerEntry;
    if (rec.missing) {
      std::fill(e, e + kNumsPerEntry, 0.0);
      e[15] = -2;
      continue;
    }
    const struct stat& st = rec.st;
    e[0] = st.st_mode;
    e[1] = st.st_uid;
    e[2] = st.st_gid;
    e[3] = static_cast<double>(st.st_size);
    e[4] = static_cast<double>(st.st_blocks);
    e[5] = static_cast<double>(st.st_mtim.tv_sec);
    e[6] = static_cast<double>(st.st_mtim.tv_nsec);
    e[7] = static_cast<double>(st.st_atim.tv_sec);
    e[8] = static_cast<double>(st.st_atim.tv_nsec);
    e[9] = static_cast<double>(st.st_ctim.tv_sec);
    e[10] = static_cast<double>(st.st_ctim.tv_nsec);
    e[11] = static_cast<double>(st.st_rdev);
    e[12] = static_cast<double>(st.st_dev);
    e[13] = static_cast<double>(st.st_ino);
    e[14] = static_cast<double>(st.st_nlink);
    e[15] = -1;
    paths.Add(View(r.arena, rec.path));
    if (rec.hasLink) {
      links.Add(View(r.arena, rec.link));
      e[15] = linkIndex++;
    }
    if (rec.xattrCount > 0) {
      Napi::HandleScope scope(env);
      Napi::Object xo = Napi::Object::New(env);
      for (uint32_t k = 0; k < rec.xattrCount; k++) {
        const XattrRec& x = r.xattrs.at(rec.xattrBegin + k);
        std::string_view val = View(r.arena, x.value);
        xo.Set(std::string(View(r.arena, x.name)), Napi::Buffer<char>::Copy(env, val.data(), val.size()));
      }
      xattrs.Set(xn++, Napi::Number::New(env, static_cast<double>(i)));
      xattrs.Set(xn++, xo);
    }
  }
  napi_value src, fn;
  Check(env, napi_create_string_utf8(env, kBuildEntries, NAPI_AUTO_LENGTH, &src));
  Check(env, napi_run_script(env, src, &fn));
  Napi::Function build(env, fn);
  return build.Call({Napi::Number::New(env, static_cast<double>(count)), Napi::Number::New(env, kNumsPerEntry),
                     nums, paths.ToJs(env), links.ToJs(env), xattrs});
}

Napi::Value ScanTree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string root = ArgPath(info, 0, "root");
  ScanOpts opts = ReadScanOpts(ArgOptObject(info, 1, "opts"));
  return RunAsync<ScanResult>(
      env, "scanTree",
      [root, opts](Failure& f) {
        auto t0 = std::chrono::steady_clock::now();
        ScanResult r;
        r.arena.reserve(1 << 20);
        Walker w(opts, r, f);
        if (!w.Run(root)) {
          if (!f.failed()) f.Set(EIO, "scanTree", root);
          return ScanResult();
        }
        r.order.resize(r.recs.size());
        for (size_t i = 0; i < r.order.size(); i++) r.order[i] = static_cast<uint32_t>(i);
        if (getenv("GD_TIMING")) { struct rusage ru; getrusage(RUSAGE_THREAD, &ru); fprintf(stderr, "thread cpu user %ld ms sys %ld ms\n", ru.ru_utime.tv_sec*1000+ru.ru_utime.tv_usec/1000, ru.ru_stime.tv_sec*1000+ru.ru_stime.tv_usec/1000); }
        if (getenv("GD_TIMING")) fprintf(stderr, "walk %ld ms\n", (long)std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now()-t0).count());
        if (opts.sort) SortByPath(r);
        if (getenv("GD_TIMING")) fprintf(stderr, "sort %ld ms\n", (long)std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now()-t0).count());
        return r;
      },
      ConvertScan);
}

// "", "/", "." and runs of them name the root itself.
bool IsRootPath(const std::string& p) {
  for (char c : p)
    if (c != '/' && c != '.') return false;
  return p.find("..") == std::string::npos;
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
  return RunAsync<ScanResult>(
      env, "lstatMany",
      [fd, paths = std::move(paths), opts](Failure& f) {
        ScanResult r;
        std::vector<char> listBuf, valBuf;
        std::string linkBuf;
        for (const std::string& p : paths) {
          Rec rec;
          size_t start = p.find_first_not_of('/');
          std::string_view clean = start == std::string::npos ? std::string_view() : std::string_view(p).substr(start);
          rec.path.off = r.arena.size();
          r.arena.push_back('/');
          r.arena.append(clean);
          rec.path.len = r.arena.size() - rec.path.off;
          UniqueFd parent;
          std::string leaf;
          int dirFd;
          if (IsRootPath(p)) {
            if (::fstat(fd, &rec.st) != 0) {
              f.Errno("fstat", p);
              return ScanResult();
            }
            dirFd = fd;
          } else {
            Failure pf;
            parent.reset(OpenParentBounded(fd, p, leaf, pf));
            if (!parent.valid()) {
              if (pf.err == ENOENT || pf.err == ENOTDIR) {
                rec.missing = true;
                r.recs.push_back(rec);
                continue;
              }
              f = pf;
              if (f.path.empty()) f.path = p;
              return ScanResult();
            }
            dirFd = parent.get();
            if (::fstatat(dirFd, leaf.c_str(), &rec.st, AT_SYMLINK_NOFOLLOW) != 0) {
              if (errno == ENOENT || errno == ENOTDIR) {
                rec.missing = true;
                r.recs.push_back(rec);
                continue;
              }
              f.Errno("fstatat", p);
              return ScanResult();
            }
            if (S_ISLNK(rec.st.st_mode)) {
              if (!ReadLink(dirFd, leaf.c_str(), linkBuf, p, f)) return ScanResult();
              rec.link = Append(r.arena, linkBuf);
              rec.hasLink = true;
            }
          }
          if (opts.xattrs.any() &&
              !ReadXattrs(dirFd, leaf, opts.xattrs, r, rec, listBuf, valBuf, f, p))
            return ScanResult();
          r.recs.push_back(rec);
        }
        r.order.resize(r.recs.size());
        for (size_t i = 0; i < r.order.size(); i++) r.order[i] = static_cast<uint32_t>(i);
        return r;
      },
      ConvertScan);
}

}  // namespace

void RegisterScanTree(Napi::Env env, Napi::Object exports) {
  exports.Set("scanTree", Napi::Function::New(env, ScanTree, "scanTree"));
  exports.Set("lstatMany", Napi::Function::New(env, LstatMany, "lstatMany"));
}

}  // namespace gd
