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
  std::string p = tree::ProcFdPath(dirFd, name);
  // With an empty name the path is the magic link itself, which must be followed to reach the file; with a
  // name, the leaf must not be followed.
  bool follow = name.empty();
  auto get = [&](const std::string& attr) -> bool {
    ssize_t n = tree::ReadGrowing(
        [&](char* b, size_t sz) {
          return follow ? ::getxattr(p.c_str(), attr.c_str(), b, sz) : ::lgetxattr(p.c_str(), attr.c_str(), b, sz);
        },
        valBuf);
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
    ssize_t n = tree::ReadGrowing(
        [&](char* b, size_t sz) { return follow ? ::listxattr(p.c_str(), b, sz) : ::llistxattr(p.c_str(), b, sz); },
        listBuf);
    if (n < 0) {
      if (errno == ENOTSUP) return true;
      return f.Errno("llistxattr", std::string(display));
    }
    // Copy the list: `get` reuses valBuf only, but keep listBuf stable while iterating anyway.
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
      if (opts_.xattrs.any()) {
        UniqueFd pfd(::open(root.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
        if (!pfd.valid()) return f_.Errno("open", root);
        if (!ReadXattrs(pfd.get(), "", opts_.xattrs, out_, out_.recs.back(), listBuf_, valBuf_, f_, root)) return false;
      }
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

// Builds ScanEntry objects. Keys are created once per call; each object gets all its properties in one
// napi_define_properties call, inside its own handle scope so 100k entries do not pile up handles.
class EntryBuilder {
 public:
  explicit EntryBuilder(napi_env env) : env_(env) {
    static const char* const kNames[kCount] = {"path",      "mode",      "uid",      "gid",      "size",
                                               "blocks",    "mtimeSec",  "mtimeNsec", "atimeSec", "atimeNsec",
                                               "ctimeSec",  "ctimeNsec", "rdev",     "dev",      "ino",
                                               "nlink",     "linkname",  "xattrs"};
    for (int i = 0; i < kCount; i++) Check(napi_create_string_utf8(env_, kNames[i], NAPI_AUTO_LENGTH, &keys_[i]));
  }

  napi_value Build(const ScanResult& r, const Rec& rec) {
    napi_property_descriptor d[kCount];
    std::memset(d, 0, sizeof d);
    int n = 0;
    auto str = [&](int key, std::string_view s) {
      napi_value v;
      Check(napi_create_string_utf8(env_, s.data(), s.size(), &v));
      Add(d, n, key, v);
    };
    auto num = [&](int key, double x) {
      napi_value v;
      Check(napi_create_double(env_, x, &v));
      Add(d, n, key, v);
    };
    const struct stat& st = rec.st;
    str(0, View(r.arena, rec.path));
    num(1, st.st_mode);
    num(2, st.st_uid);
    num(3, st.st_gid);
    num(4, static_cast<double>(st.st_size));
    num(5, static_cast<double>(st.st_blocks));
    num(6, static_cast<double>(st.st_mtim.tv_sec));
    num(7, static_cast<double>(st.st_mtim.tv_nsec));
    num(8, static_cast<double>(st.st_atim.tv_sec));
    num(9, static_cast<double>(st.st_atim.tv_nsec));
    num(10, static_cast<double>(st.st_ctim.tv_sec));
    num(11, static_cast<double>(st.st_ctim.tv_nsec));
    num(12, static_cast<double>(st.st_rdev));
    num(13, static_cast<double>(st.st_dev));
    num(14, static_cast<double>(st.st_ino));
    num(15, static_cast<double>(st.st_nlink));
    if (rec.hasLink) str(16, View(r.arena, rec.link));
    if (rec.xattrCount > 0) {
      napi_value xo;
      Check(napi_create_object(env_, &xo));
      for (uint32_t i = 0; i < rec.xattrCount; i++) {
        const XattrRec& x = r.xattrs.at(rec.xattrBegin + i);
        std::string_view val = View(r.arena, x.value);
        std::string key(View(r.arena, x.name));
        napi_value buf;
        Check(napi_create_buffer_copy(env_, val.size(), val.data(), nullptr, &buf));
        Check(napi_set_named_property(env_, xo, key.c_str(), buf));
      }
      Add(d, n, 17, xo);
    }
    napi_value obj;
    Check(napi_create_object(env_, &obj));
    Check(napi_define_properties(env_, obj, static_cast<size_t>(n), d));
    return obj;
  }

  // Array of entries in `r.order`; missing records (lstatMany) become null.
  napi_value BuildAll(const ScanResult& r) {
    napi_value arr;
    Check(napi_create_array_with_length(env_, r.order.size(), &arr));
    napi_value nul;
    Check(napi_get_null(env_, &nul));
    for (size_t i = 0; i < r.order.size(); i++) {
      napi_handle_scope scope;
      Check(napi_open_handle_scope(env_, &scope));
      const Rec& rec = r.recs.at(r.order[i]);
      napi_value v = rec.missing ? nul : Build(r, rec);
      Check(napi_set_element(env_, arr, static_cast<uint32_t>(i), v));
      Check(napi_close_handle_scope(env_, scope));
    }
    return arr;
  }

 private:
  static constexpr int kCount = 18;

  void Add(napi_property_descriptor* d, int& n, int key, napi_value v) {
    d[n].name = keys_[key];
    d[n].value = v;
    d[n].attributes = napi_default_jsproperty;
    n++;
  }
  void Check(napi_status s) {
    if (s != napi_ok) NAPI_THROW_VOID(Napi::Error::New(Napi::Env(env_), "failed to build scan result"));
  }

  napi_env env_;
  napi_value keys_[kCount];
};

Napi::Value ConvertScan(Napi::Env env, ScanResult& r) {
  auto t0 = std::chrono::steady_clock::now();
  EntryBuilder b(env);
  auto v = Napi::Value(env, b.BuildAll(r));
  if (getenv("GD_TIMING")) fprintf(stderr, "convert %ld ms\n", (long)std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now()-t0).count());
  return v;
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
