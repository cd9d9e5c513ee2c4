// Helpers shared by the batched tree primitives (apply-entries, scan-tree, copy-tree): a bounds-checked
// getdents64 reader, xattr reads that cope with ERANGE, /proc/self/fd path building and a bounded recursive
// remove. Worker-thread code only: nothing here touches N-API.
#pragma once
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/failure.h"
#include "common/fd.h"

namespace gd::tree {

// Layout of struct linux_dirent64 (getdents64(2)); glibc does not export it under this name.
struct RawDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[1];
};

// Reads a directory with getdents64 into a caller-owned buffer (so one buffer serves a whole walk).
// Skips "." and "..". Every record is checked against the byte count the kernel returned.
class DirReader {
 public:
  DirReader(int fd, std::vector<char>& buf) : fd_(fd), buf_(buf) {
    if (buf_.size() < 32768) buf_.resize(32768);
  }

  // Returns 1 with name/type set, 0 at the end, -1 on error (errno set). `name` points into the buffer and is
  // NUL-terminated there (usable as a C string until the next call).
  int Next(std::string_view& name, unsigned char& type) {
    for (;;) {
      if (pos_ >= len_) {
        long n = ::syscall(SYS_getdents64, fd_, buf_.data(), buf_.size());
        if (n < 0) return -1;
        if (n == 0) return 0;
        if (static_cast<size_t>(n) > buf_.size()) {
          errno = EIO;
          return -1;
        }
        len_ = static_cast<size_t>(n);
        pos_ = 0;
      }
      constexpr size_t kNameOff = offsetof(RawDirent64, d_name);
      if (len_ - pos_ < kNameOff + 1) {
        errno = EIO;
        return -1;
      }
      const char* rec = buf_.data() + pos_;
      unsigned short reclen;
      std::memcpy(&reclen, rec + offsetof(RawDirent64, d_reclen), sizeof reclen);
      if (reclen < kNameOff + 1 || reclen > len_ - pos_) {
        errno = EIO;
        return -1;
      }
      pos_ += reclen;
      const char* nm = rec + kNameOff;
      size_t nlen = strnlen(nm, reclen - kNameOff);
      if (nlen == reclen - kNameOff) {  // not NUL-terminated inside its record
        errno = EIO;
        return -1;
      }
      if (nlen == 0) continue;
      if (nm[0] == '.' && (nlen == 1 || (nlen == 2 && nm[1] == '.'))) continue;
      name = std::string_view(nm, nlen);
      type = static_cast<unsigned char>(rec[offsetof(RawDirent64, d_type)]);
      return 1;
    }
  }

 private:
  int fd_;
  std::vector<char>& buf_;
  size_t pos_ = 0;
  size_t len_ = 0;
};

// "/proc/self/fd/<fd>/<name>" (or "/proc/self/fd/<fd>" when name is empty): lets the l*xattr calls act on an
// entry named relative to a directory fd without following a symlink at the leaf.
inline std::string ProcFdPath(int fd, std::string_view name) {
  char head[40];
  int n = std::snprintf(head, sizeof head, "/proc/self/fd/%d", fd);
  std::string s(head, n > 0 ? static_cast<size_t>(n) : 0);
  if (!name.empty()) {
    s.push_back('/');
    s.append(name);
  }
  return s;
}

// ---- xattrs relative to a directory fd ----
// Linux 6.13 added getxattrat/setxattrat/listxattrat(dirfd, name, AT_SYMLINK_NOFOLLOW, ...). They act on
// an entry named relative to a directory fd in one lookup; the older way is l*xattr on
// "/proc/self/fd/<dirfd>/<name>", which walks procfs for every call (several times slower on big trees).
// glibc has no wrappers yet; the numbers are from the kernel's unified syscall table (x86_64 and the generic
// table used by arm64 agree). Availability is probed once: a seccomp filter may answer ENOSYS or EPERM.
#if defined(__x86_64__) || defined(__aarch64__)
constexpr long kSysSetxattrat = 463;
constexpr long kSysGetxattrat = 464;
constexpr long kSysListxattrat = 465;
#define GD_HAVE_XATTRAT_NUMBERS 1
#endif

// struct xattr_args of <linux/xattr.h> (XATTR_ARGS_SIZE_VER0 = 16 bytes).
struct XattrArgs {
  uint64_t value;
  uint32_t size;
  uint32_t flags;
};

// GRAPHDRIVER_NO_XATTRAT=1 forces the /proc fallback (read once, so tests run it in a fresh process).
inline bool XattratAvailable() {
#ifdef GD_HAVE_XATTRAT_NUMBERS
  static const bool ok = [] {
    const char* off = std::getenv("GRAPHDRIVER_NO_XATTRAT");
    if (off != nullptr && off[0] != '\0' && std::strcmp(off, "0") != 0) return false;
    XattrArgs a{0, 0, 0};
    long r = ::syscall(kSysGetxattrat, AT_FDCWD, "/", AT_SYMLINK_NOFOLLOW, "user.graphdriver-probe", &a, sizeof a);
    return r >= 0 || (errno != ENOSYS && errno != EPERM && errno != EINVAL && errno != EFAULT);
  }();
  return ok;
#else
  return false;
#endif
}

// An entry named relative to a directory fd (name empty: the directory itself), for the xattr calls below.
// Never follows a symlink at the leaf.
class XattrTarget {
 public:
  XattrTarget(int dirFd, std::string_view name) : dir_(dirFd), name_(name) {
    if (!XattratAvailable()) {
      if (dirFd == AT_FDCWD) {
        proc_ = name_;
      } else {
        proc_ = ProcFdPath(dirFd, name_);
        follow_ = name_.empty();  // the magic link itself must be followed to reach the directory
      }
    }
  }

  ssize_t List(char* buf, size_t size) const {
#ifdef GD_HAVE_XATTRAT_NUMBERS
    if (proc_.empty()) return ::syscall(kSysListxattrat, dir_, name_.c_str(), Flags(), buf, size);
#endif
    return follow_ ? ::listxattr(proc_.c_str(), buf, size) : ::llistxattr(proc_.c_str(), buf, size);
  }

  ssize_t Get(const char* attr, void* buf, size_t size) const {
#ifdef GD_HAVE_XATTRAT_NUMBERS
    if (proc_.empty()) {
      XattrArgs a{reinterpret_cast<uintptr_t>(buf), static_cast<uint32_t>(std::min<size_t>(size, UINT32_MAX)), 0};
      return ::syscall(kSysGetxattrat, dir_, name_.c_str(), Flags(), attr, &a, sizeof a);
    }
#endif
    return follow_ ? ::getxattr(proc_.c_str(), attr, buf, size) : ::lgetxattr(proc_.c_str(), attr, buf, size);
  }

  int Set(const char* attr, const void* value, size_t size, int flags) const {
#ifdef GD_HAVE_XATTRAT_NUMBERS
    if (proc_.empty()) {
      if (size > UINT32_MAX) {
        errno = E2BIG;
        return -1;
      }
      XattrArgs a{reinterpret_cast<uintptr_t>(value), static_cast<uint32_t>(size), static_cast<uint32_t>(flags)};
      return static_cast<int>(::syscall(kSysSetxattrat, dir_, name_.c_str(), Flags(), attr, &a, sizeof a));
    }
#endif
    return follow_ ? ::setxattr(proc_.c_str(), attr, value, size, flags)
                   : ::lsetxattr(proc_.c_str(), attr, value, size, flags);
  }

 private:
  unsigned Flags() const { return AT_SYMLINK_NOFOLLOW | (name_.empty() ? AT_EMPTY_PATH : 0u); }

  int dir_;
  std::string name_;
  std::string proc_;  // fallback path when the *xattrat calls are unavailable
  bool follow_ = false;
};

// Calls `fn(buf, size)` (an *listxattr/*getxattr wrapper returning ssize_t) with a buffer that grows on
// ERANGE. XATTR_SIZE_MAX/XATTR_LIST_MAX are 64 KiB so the first try normally fits. Returns the length or -1.
template <typename Fn>
ssize_t ReadGrowing(Fn fn, std::vector<char>& buf) {
  if (buf.size() < 65536) buf.resize(65536);
  for (int attempt = 0; attempt < 4; attempt++) {
    ssize_t n = fn(buf.data(), buf.size());
    if (n >= 0) {
      if (static_cast<size_t>(n) > buf.size()) {
        errno = EIO;
        return -1;
      }
      return n;
    }
    if (errno != ERANGE) return -1;
    ssize_t want = fn(nullptr, 0);
    if (want < 0) return -1;
    buf.resize(static_cast<size_t>(want) + 4096);
  }
  errno = ERANGE;
  return -1;
}

// Splits an xattr name list (NUL-separated) into names; ignores empty pieces and an unterminated tail.
template <typename Fn>
void ForEachXattrName(const char* list, size_t len, Fn fn) {
  size_t i = 0;
  while (i < len) {
    const void* z = std::memchr(list + i, '\0', len - i);
    if (z == nullptr) break;
    size_t end = static_cast<size_t>(static_cast<const char*>(z) - list);
    if (end > i) fn(std::string_view(list + i, end - i));
    i = end + 1;
  }
}

// Removes `leaf` inside directory `parentFd` and, when it is a directory, everything below it. Only *at calls
// relative to directory fds opened with O_NOFOLLOW: symlinks are removed, never followed, so nothing outside
// the tree is touched. A missing leaf is success.
//
// Depth is not limited by the fd limit: a layer can build a tree far deeper than RLIMIT_NOFILE (each symlink
// hop adds up to the archive's path depth), so at most kRemoveOpenFds directory fds are held at once. Frames
// deeper in the stack keep theirs; a frame whose fd was closed is reopened, when the walk climbs back to it, by
// opening the names from the nearest open ancestor (or `parentFd`) with O_NOFOLLOW|O_DIRECTORY, never via "..".
constexpr size_t kRemoveOpenFds = 64;

inline bool RemoveAllAt(int parentFd, const std::string& leaf, const std::string& displayPath, Failure& f) {
  if (::unlinkat(parentFd, leaf.c_str(), 0) == 0 || errno == ENOENT) return true;
  if (errno != EISDIR && errno != EPERM) return f.Errno("unlinkat", displayPath);
  if (errno == EPERM) {
    // POSIX allows EPERM for unlink(dir); only recurse when it really is a directory.
    struct stat st;
    if (::fstatat(parentFd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return f.Errno("fstatat", displayPath);
    if (!S_ISDIR(st.st_mode)) return f.Set(EPERM, "unlinkat", displayPath);
  }
  struct Frame {
    UniqueFd fd;       // closed while the frame is more than kRemoveOpenFds levels above the deepest one
    std::string name;  // name in the parent frame (or leaf for the first)
    std::vector<std::string> children;
    std::vector<unsigned char> types;
    size_t next = 0;
  };
  constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  std::vector<char> dbuf;
  std::vector<Frame> stack;
  auto push = [&](int dirFd, const std::string& name) -> bool {
    int fd = ::openat(dirFd, name.c_str(), kDirFlags);
    if (fd < 0) return f.Errno("openat", displayPath);
    Frame fr;
    fr.fd.reset(fd);
    fr.name = name;
    // Read all names first: unlinking while iterating getdents may skip entries on some filesystems.
    DirReader rd(fd, dbuf);
    std::string_view nm;
    unsigned char ty;
    int r;
    while ((r = rd.Next(nm, ty)) == 1) {
      fr.children.emplace_back(nm);
      fr.types.push_back(ty);
    }
    if (r < 0) return f.Errno("getdents64", displayPath);
    stack.push_back(std::move(fr));
    if (stack.size() > kRemoveOpenFds) stack[stack.size() - 1 - kRemoveOpenFds].fd.reset();
    return true;
  };
  // Makes sure the top frame has an open fd. Open fds always form one run at the top of the stack, so when the
  // top's is closed every frame's is: reopen from `parentFd` down, keeping the last kRemoveOpenFds (so the next
  // that many climbs need no reopening).
  auto reopenTop = [&]() -> bool {
    size_t top = stack.size() - 1;
    if (stack[top].fd.valid()) return true;
    size_t start = top;
    while (start > 0 && !stack[start - 1].fd.valid()) start--;
    size_t keepFrom = top + 1 > kRemoveOpenFds ? top + 1 - kRemoveOpenFds : 0;
    UniqueFd walk;  // the current intermediate directory when it is not one of the kept frames
    int cur = start == 0 ? parentFd : stack[start - 1].fd.get();
    for (size_t k = start; k <= top; k++) {
      int fd = ::openat(cur, stack[k].name.c_str(), kDirFlags);
      if (fd < 0) return f.Errno("openat", displayPath);
      if (k >= keepFrom) {
        stack[k].fd.reset(fd);
      } else {
        walk.reset(fd);  // closes the previous intermediate, already used to open this one
      }
      cur = fd;
    }
    return true;
  };
  if (!push(parentFd, leaf)) return false;
  while (!stack.empty()) {
    if (!reopenTop()) return false;
    Frame& top = stack.back();
    if (top.next < top.children.size()) {
      size_t i = top.next++;
      const std::string& name = top.children[i];
      bool isDir = top.types[i] == DT_DIR;
      if (!isDir) {
        if (::unlinkat(top.fd.get(), name.c_str(), 0) == 0 || errno == ENOENT) continue;
        if (errno != EISDIR && !(errno == EPERM && top.types[i] == DT_UNKNOWN))
          return f.Errno("unlinkat", displayPath);
        isDir = true;
      }
      int dirFd = top.fd.get();
      std::string child = name;  // `top` may move when the stack grows
      if (!push(dirFd, child)) {
        if (f.err == ENOENT) {
          f = Failure();
          continue;
        }
        return false;
      }
      continue;
    }
    std::string name = std::move(top.name);
    stack.pop_back();
    if (!stack.empty() && !reopenTop()) return false;
    int pfd = stack.empty() ? parentFd : stack.back().fd.get();
    if (::unlinkat(pfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
      return f.Errno("unlinkat", displayPath);
  }
  return true;
}

}  // namespace gd::tree
