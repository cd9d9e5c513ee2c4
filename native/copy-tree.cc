// copyTree: the vfs driver's create() — a full copy of a layer tree that keeps everything a layer diff can
// observe: type, owner, mode (incl. setuid/setgid/sticky), times (directories after their contents), xattrs,
// symlinks, device nodes, fifos, sockets, hardlinks (as hardlinks) and holes. Content goes through FICLONE when
// the filesystem can share extents, else copy_file_range over the data segments (SEEK_DATA/SEEK_HOLE), else
// read/write. The walk never follows symlinks and does not descend into other mounts (their mount point
// directories are copied empty, like a one-filesystem copy).
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/args.h"
#include "common/async.h"
#include "common/failure.h"
#include "common/fd.h"
#include "modules.h"
#include "tree-util.h"

namespace gd {
namespace {

struct CopyStats {
  double entries = 0;
  double bytes = 0;
  double reflinked = 0;
};

// How the xattr calls reach an entry: an open fd, or a directory fd + name without following the leaf.
struct XRef {
  int fd = -1;
  int dir = -1;
  std::string name;
};

XRef RefOf(int fd) {
  XRef r;
  r.fd = fd;
  return r;
}

XRef RefOf(int dirFd, const std::string& name) {
  XRef r;
  r.dir = dirFd;
  r.name = name;
  return r;
}

class Copier {
 public:
  Copier(bool reflink, Failure& f) : reflink_(reflink), f_(f) {}

  CopyStats stats;

  bool Run(const std::string& src, const std::string& dst) {
    src_ = src;
    struct stat st;
    if (::fstatat(AT_FDCWD, src.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return f_.Errno("lstat", src);
    if (!S_ISDIR(st.st_mode)) return CopyLeaf(AT_FDCWD, src, AT_FDCWD, dst, st, "");
    UniqueFd sfd(::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sfd.valid()) return f_.Errno("open", src);
    if (::fstat(sfd.get(), &st) != 0) return f_.Errno("fstat", src);
    rootDev_ = st.st_dev;
    if (::mkdir(dst.c_str(), 0700) != 0) return f_.Errno("mkdir", dst);
    UniqueFd dfd(::open(dst.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dfd.valid()) return f_.Errno("open", dst);
    dstRoot_ = dfd.get();
    stats.entries++;
    return Walk(std::move(sfd), std::move(dfd), st);
  }

 private:
  struct Sub {
    std::string name;
    struct stat st;
  };
  struct Frame {
    UniqueFd src;
    UniqueFd dst;
    struct stat st;   // the source directory, applied to the copy when its contents are done
    std::string rel;  // path below the root, "" for the root
    std::vector<Sub> subdirs;
    size_t next = 0;
  };

  std::string Display(const std::string& rel) const { return rel.empty() ? src_ : src_ + "/" + rel; }
  static std::string Join(const std::string& rel, const std::string& name) {
    return rel.empty() ? name : rel + "/" + name;
  }

  // Copies every non-directory of the frame's directory and lists its subdirectories.
  bool ReadDir(Frame& fr) {
    tree::DirReader rd(fr.src.get(), dirBuf_);
    std::string_view nm;
    unsigned char type;
    int r;
    std::string name;
    while ((r = rd.Next(nm, type)) == 1) {
      name.assign(nm);
      struct stat st;
      if (::fstatat(fr.src.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;
        return f_.Errno("fstatat", Display(Join(fr.rel, name)));
      }
      if (S_ISDIR(st.st_mode)) {
        fr.subdirs.push_back(Sub{name, st});
        continue;
      }
      if (!CopyLeaf(fr.src.get(), name, fr.dst.get(), name, st, Join(fr.rel, name))) return false;
    }
    if (r < 0) return f_.Errno("getdents64", Display(fr.rel));
    return true;
  }

  bool FinishDir(Frame& fr) {
    return Metadata(fr.dst.get(), -1, "", fr.st, RefOf(fr.src.get()), Display(fr.rel));
  }

  bool Walk(UniqueFd srcRoot, UniqueFd dstRoot, const struct stat& rootSt) {
    std::vector<Frame> stack;
    Frame root;
    root.src = std::move(srcRoot);
    root.dst = std::move(dstRoot);
    root.st = rootSt;
    if (!ReadDir(root)) return false;
    stack.push_back(std::move(root));
    while (!stack.empty()) {
      Frame& top = stack.back();
      if (top.next >= top.subdirs.size()) {
        if (!FinishDir(top)) return false;
        if (stack.size() == 1) {
          // Keep the destination root fd valid (hardlinks are made relative to it) until the very end.
          UniqueFd keep = std::move(top.dst);
          stack.pop_back();
          return true;
        }
        stack.pop_back();
        continue;
      }
      const Sub& sub = top.subdirs[top.next++];
      std::string rel = Join(top.rel, sub.name);
      if (::mkdirat(top.dst.get(), sub.name.c_str(), 0700) != 0) return f_.Errno("mkdirat", Display(rel));
      stats.entries++;
      Frame fr;
      fr.st = sub.st;
      fr.rel = rel;
      fr.dst.reset(::openat(top.dst.get(), sub.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fr.dst.valid()) return f_.Errno("openat", Display(rel));
      if (sub.st.st_dev != rootDev_) {
        // A mount point: copy the directory itself, not what is mounted below it.
        UniqueFd s(::openat(top.src.get(), sub.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!s.valid()) return f_.Errno("openat", Display(rel));
        if (!Metadata(fr.dst.get(), -1, "", sub.st, RefOf(s.get()), Display(rel))) return false;
        continue;
      }
      fr.src.reset(::openat(top.src.get(), sub.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fr.src.valid()) return f_.Errno("openat", Display(rel));
      struct stat now;
      if (::fstat(fr.src.get(), &now) != 0) return f_.Errno("fstat", Display(rel));
      if (now.st_ino != sub.st.st_ino || now.st_dev != sub.st.st_dev)
        return f_.Set(EAGAIN, "openat", Display(rel));  // replaced while copying
      if (!ReadDir(fr)) return false;
      stack.push_back(std::move(fr));  // `top` is not used after this
    }
    return true;
  }

  // Copies one non-directory entry `sname` of directory `sdir` to `dname` in `ddir`.
  bool CopyLeaf(int sdir, const std::string& sname, int ddir, const std::string& dname, const struct stat& st,
                const std::string& rel) {
    std::string disp = rel.empty() ? src_ : Display(rel);
    bool linkable = st.st_nlink > 1 && dstRoot_ >= 0;
    std::pair<dev_t, ino_t> key(st.st_dev, st.st_ino);
    if (linkable) {
      auto it = links_.find(key);
      if (it != links_.end()) {
        if (::linkat(dstRoot_, it->second.c_str(), ddir, dname.c_str(), 0) != 0)
          return f_.Errno("linkat", disp, it->second);
        stats.entries++;
        return true;
      }
    }
    bool ok;
    if (S_ISREG(st.st_mode)) {
      ok = CopyFile(sdir, sname, ddir, dname, st, disp);
    } else if (S_ISLNK(st.st_mode)) {
      ok = ReadLink(sdir, sname, disp) && Create(::symlinkat(link_.c_str(), ddir, dname.c_str()), "symlinkat", disp) &&
           Metadata(-1, ddir, dname, st, RefOf(sdir, sname), disp);
    } else {
      // Devices, fifos and sockets are all made with mknod.
      mode_t kind = st.st_mode & S_IFMT;
      ok = Create(::mknodat(ddir, dname.c_str(), kind | 0600, st.st_rdev), "mknodat", disp) &&
           Metadata(-1, ddir, dname, st, RefOf(sdir, sname), disp);
    }
    if (!ok) return false;
    stats.entries++;
    if (linkable) links_.emplace(key, rel);
    return true;
  }

  bool Create(int rc, const char* sys, const std::string& disp) { return rc == 0 || f_.Errno(sys, disp); }

  bool ReadLink(int dir, const std::string& name, const std::string& disp) {
    link_.resize(4096);
    for (int attempt = 0; attempt < 8; attempt++) {
      ssize_t n = ::readlinkat(dir, name.c_str(), link_.data(), link_.size());
      if (n < 0) return f_.Errno("readlinkat", disp);
      if (static_cast<size_t>(n) < link_.size()) {
        link_.resize(static_cast<size_t>(n));
        return true;
      }
      link_.resize(link_.size() * 2);
    }
    return f_.Set(ENAMETOOLONG, "readlinkat", disp);
  }

  bool CopyFile(int sdir, const std::string& sname, int ddir, const std::string& dname, const struct stat& st,
                const std::string& disp) {
    // O_NOATIME keeps the source's access times as they were (allowed for the owner and for root).
    UniqueFd in(::openat(sdir, sname.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME));
    if (!in.valid() && errno == EPERM) in.reset(::openat(sdir, sname.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in.valid()) return f_.Errno("openat", disp);
    UniqueFd out(::openat(ddir, dname.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out.valid()) return f_.Errno("openat", disp);
    if (st.st_size > 0) {
      bool cloned = false;
      if (reflink_ && reflinkWorks_) {
        if (::ioctl(out.get(), FICLONE, in.get()) == 0) {
          cloned = true;
          stats.reflinked++;
        } else if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EXDEV || errno == ENOSYS) {
          reflinkWorks_ = false;  // a filesystem-level "no": do not ask again for every file
        } else if (errno != EINVAL && errno != EPERM && errno != ETXTBSY) {
          return f_.Errno("ioctl(FICLONE)", disp);
        }
      }
      // A file with as many allocated blocks as bytes has no holes to keep: one copy of the whole, without the
      // SEEK_DATA/SEEK_HOLE probes and the final ftruncate (three syscalls per file of a rootfs copy).
      const bool dense = static_cast<uint64_t>(st.st_blocks) * 512 >= static_cast<uint64_t>(st.st_size);
      if (!cloned && !CopyData(in.get(), out.get(), static_cast<uint64_t>(st.st_size), dense, disp)) return false;
      stats.bytes += static_cast<double>(st.st_size);
    }
    if (!Metadata(out.get(), -1, "", st, RefOf(in.get()), disp)) return false;
    int raw = out.release();
    if (::close(raw) != 0 && errno != EINTR) return f_.Errno("close", disp);
    return true;
  }

  // Copies the data segments of `in` (holes are skipped) and sets the final size.
  bool CopyData(int in, int out, uint64_t size, bool dense, const std::string& disp) {
    if (dense) {
      if (!CopyRange(in, out, 0, size, disp)) return false;
      // The source shrank while being copied: the copy keeps the size it was listed with, as below.
      if (copiedEnd_ < size && ::ftruncate(out, static_cast<off_t>(size)) != 0) return f_.Errno("ftruncate", disp);
      return true;
    }
    uint64_t off = 0;
    bool seekable = true;
    while (off < size) {
      uint64_t data = off, hole = size;
      if (seekable) {
        off_t d = ::lseek(in, static_cast<off_t>(off), SEEK_DATA);
        if (d < 0) {
          if (errno == ENXIO) break;  // only a hole from here to the end
          if (errno != EINVAL && errno != EOPNOTSUPP) return f_.Errno("lseek", disp);
          seekable = false;
        } else {
          data = static_cast<uint64_t>(d);
          off_t h = ::lseek(in, d, SEEK_HOLE);
          if (h < 0) return f_.Errno("lseek", disp);
          hole = std::min<uint64_t>(static_cast<uint64_t>(h), size);
        }
      }
      if (data >= size) break;
      if (hole <= data) hole = size;
      if (!CopyRange(in, out, data, hole - data, disp)) return false;
      off = hole;
    }
    if (::ftruncate(out, static_cast<off_t>(size)) != 0) return f_.Errno("ftruncate", disp);
    return true;
  }

  // Sets copiedEnd_ to the offset reached (short of off + len when the source ended early).
  bool CopyRange(int in, int out, uint64_t off, uint64_t len, const std::string& disp) {
    struct Reached {
      uint64_t& end;
      const uint64_t& off;
      ~Reached() { end = off; }
    } reached{copiedEnd_, off};
    while (len > 0 && cfrWorks_) {
      loff_t io = static_cast<loff_t>(off), oo = static_cast<loff_t>(off);
      ssize_t n = ::copy_file_range(in, &io, out, &oo, std::min<uint64_t>(len, 1u << 30), 0);
      if (n > 0) {
        off += static_cast<uint64_t>(n);
        len -= static_cast<uint64_t>(n);
        continue;
      }
      if (n == 0) return true;  // source shrank: copy what there is
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP || errno == EBADF) {
        cfrWorks_ = false;
        break;
      }
      return f_.Errno("copy_file_range", disp);
    }
    if (len == 0) return true;
    if (buf_.empty()) buf_.resize(1 << 20);
    while (len > 0) {
      ssize_t n = ::pread(in, buf_.data(), std::min<uint64_t>(len, buf_.size()), static_cast<off_t>(off));
      if (n < 0) {
        if (errno == EINTR) continue;
        return f_.Errno("read", disp);
      }
      if (n == 0) return true;
      size_t done = 0;
      while (done < static_cast<size_t>(n)) {
        ssize_t w = ::pwrite(out, buf_.data() + done, static_cast<size_t>(n) - done, static_cast<off_t>(off + done));
        if (w < 0) {
          if (errno == EINTR) continue;
          return f_.Errno("write", disp);
        }
        if (w == 0) return f_.Set(EIO, "write", disp);
        done += static_cast<size_t>(w);
      }
      off += static_cast<uint64_t>(n);
      len -= static_cast<uint64_t>(n);
    }
    return true;
  }

  // Copies every xattr of `from` to the target (fd, or dir+name). Attributes the destination cannot hold
  // (ENOTSUP) are skipped.
  bool CopyXattrs(const XRef& from, int fd, int dir, const std::string& name, const std::string& disp) {
    std::optional<tree::XattrTarget> src, dst;
    if (from.fd < 0) src.emplace(from.dir, from.name);
    ssize_t n = tree::ReadGrowing(
        [&](char* b, size_t sz) { return from.fd >= 0 ? ::flistxattr(from.fd, b, sz) : src->List(b, sz); }, listBuf_);
    if (n < 0) {
      if (errno == ENOTSUP) return true;
      return f_.Errno("llistxattr", disp);
    }
    if (n == 0) return true;
    std::string names(listBuf_.data(), static_cast<size_t>(n));
    if (fd < 0) dst.emplace(dir, name);
    bool ok = true;
    tree::ForEachXattrName(names.data(), names.size(), [&](std::string_view nv) {
      if (!ok) return;
      std::string attr(nv);
      ssize_t len = tree::ReadGrowing(
          [&](char* b, size_t sz) {
            return from.fd >= 0 ? ::fgetxattr(from.fd, attr.c_str(), b, sz) : src->Get(attr.c_str(), b, sz);
          },
          valBuf_);
      if (len < 0) {
        if (errno == ENODATA) return;  // removed meanwhile
        ok = f_.Errno("lgetxattr", disp, attr);
        return;
      }
      size_t vl = static_cast<size_t>(len);
      int rc = fd >= 0 ? ::fsetxattr(fd, attr.c_str(), valBuf_.data(), vl, 0)
                       : dst->Set(attr.c_str(), valBuf_.data(), vl, 0);
      if (rc != 0 && errno != ENOTSUP) ok = f_.Errno("lsetxattr", disp, attr);
    });
    return ok;
  }

  // Owner, then mode (chown clears setuid/setgid), xattrs (chown clears security.capability), then times.
  // Target: `fd` when >= 0, else `dir` + `name` without following a symlink leaf.
  bool Metadata(int fd, int dir, const std::string& name, const struct stat& st, const XRef& from,
                const std::string& disp) {
    bool lnk = S_ISLNK(st.st_mode);
    int rc = fd >= 0 ? ::fchown(fd, st.st_uid, st.st_gid)
                     : ::fchownat(dir, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW);
    if (rc != 0) return f_.Errno("lchown", disp);
    if (!lnk) {
      rc = fd >= 0 ? ::fchmod(fd, st.st_mode & 07777) : ::fchmodat(dir, name.c_str(), st.st_mode & 07777, 0);
      if (rc != 0) return f_.Errno("chmod", disp);
    }
    if (!CopyXattrs(from, fd, dir, name, disp)) return false;
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    rc = fd >= 0 ? ::futimens(fd, ts) : ::utimensat(dir, name.c_str(), ts, AT_SYMLINK_NOFOLLOW);
    if (rc != 0) return f_.Errno("utimensat", disp);
    return true;
  }

  bool reflink_;
  bool reflinkWorks_ = true;
  bool cfrWorks_ = true;
  uint64_t copiedEnd_ = 0;  // where the last CopyRange stopped
  Failure& f_;
  std::string src_;
  dev_t rootDev_ = 0;
  int dstRoot_ = -1;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;  // first copy of each multiply-linked inode
  std::vector<char> dirBuf_, listBuf_, valBuf_, buf_;
  std::string link_;
};

Napi::Value CopyTree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string source = ArgPath(info, 0, "source");
  std::string dest = ArgPath(info, 1, "dest");
  Napi::Object o = ArgOptObject(info, 2, "opts");
  bool reflink = PropBool(o, "reflink", true);
  return RunAsync<CopyStats>(
      env, "copyTree",
      [source, dest, reflink](Failure& f) {
        Copier c(reflink, f);
        if (!c.Run(source, dest) && !f.failed()) f.Set(EIO, "copyTree", source);
        return c.stats;
      },
      [](Napi::Env e, CopyStats& s) {
        Napi::Object r = Napi::Object::New(e);
        r.Set("entries", s.entries);
        r.Set("bytes", s.bytes);
        r.Set("reflinked", s.reflinked);
        return r;
      });
}

}  // namespace

void RegisterCopyTree(Napi::Env env, Napi::Object exports) {
  exports.Set("copyTree", Napi::Function::New(env, CopyTree, "copyTree"));
}

}  // namespace gd
