// Bounded path resolution (see bounded-path.h).
//
// Kernel path: openat2(2) with RESOLVE_IN_ROOT or RESOLVE_BENEATH, always RESOLVE_NO_MAGICLINKS, optionally
// RESOLVE_NO_SYMLINKS. The kernel answers EAGAIN when a concurrent rename could have let '..' escape; we retry a few
// times and then use the user-space walk, which is immune to that race by construction.
//
// User-space walk (kernels without openat2, or GRAPHDRIVER_NO_OPENAT2=1): the path is split into components and
// walked one at a time with openat(O_NOFOLLOW) relative to a stack of directory fds whose bottom is the root. We
// never hand the kernel more than one component, so it never follows a symlink or '..' on our behalf:
//   - '.' is ignored; '..' pops the stack (in-root: stays at the root; beneath: EXDEV when it would leave it);
//   - a symlink's target is read and its components are spliced in front of the remaining ones; an absolute
//     target restarts at the root (beneath: EXDEV); at most 40 symlinks are followed (ELOOP, like the kernel);
//   - RESOLVE_NO_SYMLINKS: any symlink that would be followed fails with ELOOP;
//   - RESOLVE_NO_MAGICLINKS: a symlink living on procfs whose target is not a plain relative path (the
//     /proc/<pid>/{fd/*,root,cwd,exe,ns/*,map_files/*} family reads as "/...", "socket:[..]", "(unreachable)/..")
//     fails with ELOOP. Even if this heuristic misjudged a link, the walk only ever uses the link's text as a path
//     inside the root, so it can not escape the way a real magic-link jump could.
//   - the last component gets the caller's flags plus O_NOFOLLOW. It is followed (when it is a symlink) unless the
//     caller passed O_NOFOLLOW or O_CREAT|O_EXCL, or forced when the path ends in '/', exactly as open(2) decides.
//     With O_CREAT a dangling symlink is therefore followed and its target created *inside* the root, which is
//     what openat2(RESOLVE_IN_ROOT) does as well. O_CREAT with a trailing '/' fails with EISDIR.
// The flag checks openat2 makes (unknown bits, O_PATH with non-path flags, mode bits beyond 07777) are repeated so
// both paths reject the same requests. Differences that remain: fs.protected_symlinks (sticky world-writable
// directories) is not emulated, and magic-link detection is the heuristic above.
#include "common/bounded-path.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/fd.h"

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

namespace gd {

namespace {

constexpr int kMaxSymlinks = 40;      // MAXSYMLINKS in the kernel
constexpr int kOpenat2Retries = 16;   // EAGAIN retries before falling back to the walk
constexpr int kPathMax = 4096;        // PATH_MAX including the NUL

// Flags openat2 accepts (VALID_OPEN_FLAGS minus O_LARGEFILE, which userspace headers define as 0 on 64-bit).
constexpr int kValidFlags = O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND | O_NONBLOCK | O_DSYNC |
                            FASYNC | O_DIRECT | O_LARGEFILE | O_DIRECTORY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC |
                            O_SYNC | O_PATH | O_TMPFILE;
// With O_PATH only these may be set (openat2 rejects anything else with EINVAL).
constexpr int kPathFlags = O_DIRECTORY | O_NOFOLLOW | O_PATH | O_CLOEXEC;

bool Creates(int flags) { return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE; }

// Read once: the switch exists so tests (run in a fresh process) can exercise the walk on a kernel with openat2.
bool Openat2Disabled() {
  static const bool disabled = [] {
    const char* v = std::getenv("GRAPHDRIVER_NO_OPENAT2");
    return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
  }();
  return disabled;
}

// Set once openat2 answered ENOSYS (old kernel or a seccomp filter): later calls go straight to the walk.
std::atomic<bool> g_openat2_missing{false};

// Strips leading slashes: the path is always relative to the root. An all-slash path names the root itself.
std::string RelativePath(const std::string& path) {
  size_t i = path.find_first_not_of('/');
  if (i == std::string::npos) return ".";
  return path.substr(i);
}

// Components in reverse order (so the next one is back()); empty components (from '//') are dropped.
void PushComponents(const std::string& s, std::vector<std::string>& rev) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find('/', i);
    if (j == std::string::npos) j = s.size();
    if (j > i) parts.emplace_back(s, i, j - i);
    i = j + 1;
  }
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) rev.push_back(std::move(*it));
}

// readlinkat into a std::string; false with errno set on failure, ENAMETOOLONG when the target does not fit.
bool ReadLink(int dirfd, const char* name, std::string& out) {
  std::vector<char> buf(kPathMax);
  ssize_t n = ::readlinkat(dirfd, name, buf.data(), buf.size());
  if (n < 0) return false;
  if (static_cast<size_t>(n) >= buf.size()) {
    errno = ENAMETOOLONG;
    return false;
  }
  out.assign(buf.data(), static_cast<size_t>(n));
  return true;
}

// A procfs symlink whose text is not a plain relative path is one of the "magic" links that jump to an object
// instead of naming a path (see the file comment).
bool LooksMagic(int dirfd, const std::string& target) {
  struct statfs sfs;
  if (::fstatfs(dirfd, &sfs) != 0) return true;  // cannot tell: refuse rather than risk it
  if (static_cast<unsigned long>(sfs.f_type) != PROC_SUPER_MAGIC) return false;
  if (target.empty() || target[0] == '/') return true;
  return target.find_first_of(":[]()") != std::string::npos;
}

class Walker {
 public:
  Walker(int rootFd, const std::string& path, const BoundedOpenOptions& opts, Failure& f)
      : root_(rootFd), path_(path), opts_(opts), f_(f) {}

  int Run() {
    int flags = opts_.flags;
    if ((flags & ~kValidFlags) != 0) return Fail(EINVAL);
    if ((flags & O_PATH) != 0 && (flags & ~kPathFlags) != 0) return Fail(EINVAL);
    if (Creates(flags) && (opts_.mode & ~07777u) != 0) return Fail(EINVAL);
    // build_open_flags(): O_TMPFILE needs write access and excludes O_CREAT; O_CREAT|O_DIRECTORY is invalid.
    if ((flags & O_TMPFILE & ~O_DIRECTORY) != 0 &&
        ((flags & (O_TMPFILE | O_CREAT)) != O_TMPFILE || (flags & O_ACCMODE) == O_RDONLY))
      return Fail(EINVAL);
    if ((flags & (O_CREAT | O_DIRECTORY)) == (O_CREAT | O_DIRECTORY)) return Fail(EINVAL);
    if (path_.empty()) return Fail(ENOENT);
    std::string rel = RelativePath(path_);
    if (rel.size() >= static_cast<size_t>(kPathMax)) return Fail(ENAMETOOLONG);
    trailing_ = rel.back() == '/';
    PushComponents(rel, rest_);

    while (true) {
      if (rest_.empty()) return OpenFinal(".");
      std::string comp = std::move(rest_.back());
      rest_.pop_back();
      bool last = rest_.empty();
      if (comp == ".") {
        if (last) return OpenFinal(".");
        continue;
      }
      if (comp == "..") {
        if (stack_.empty()) {
          if (opts_.resolve == ResolveMode::Beneath) return Fail(EXDEV);
        } else {
          stack_.pop_back();
        }
        if (last) return OpenFinal(".");
        continue;
      }
      if (!last) {
        if (!StepDir(comp)) return -1;
        continue;
      }
      int r = OpenLast(comp);
      if (r != kContinue) return r;
    }
  }

 private:
  static constexpr int kContinue = -2;

  int Cur() const { return stack_.empty() ? root_ : stack_.back().get(); }

  int Fail(int err) {
    f_.Set(err, "openat", path_);
    return -1;
  }
  bool FailB(int err) {
    Fail(err);
    return false;
  }

  // Splices a symlink target in front of the remaining components, applying the symlink rules.
  bool Follow(int dirfd, const std::string& target, bool wasLast) {
    if (opts_.noSymlinks) return FailB(ELOOP);
    if (LooksMagic(dirfd, target)) return FailB(ELOOP);
    if (++links_ > kMaxSymlinks) return FailB(ELOOP);
    if (target.empty()) return FailB(ENOENT);
    if (target[0] == '/') {
      if (opts_.resolve == ResolveMode::Beneath) return FailB(EXDEV);
      stack_.clear();
    }
    // A trailing '/' in the target of the last component makes the final object a directory, like one in the path.
    if (wasLast && target.back() == '/') trailing_ = true;
    PushComponents(target, rest_);
    return true;
  }

  // Descends into an intermediate component: a directory is pushed, a symlink is followed.
  bool StepDir(const std::string& comp) {
    int fd = ::openat(Cur(), comp.c_str(), O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      stack_.emplace_back(fd);
      return true;
    }
    int err = errno;
    if (err != ENOTDIR && err != ELOOP) return FailB(err);
    // Not a directory: a symlink to follow, or really not a directory.
    std::string target;
    if (!ReadLink(Cur(), comp.c_str(), target)) return FailB(errno == EINVAL ? ENOTDIR : errno);
    return Follow(Cur(), target, false);
  }

  // Opens the last component with the caller's flags; returns kContinue when it was a symlink that got spliced.
  int OpenLast(const std::string& comp) {
    int flags = opts_.flags;
    bool create = (flags & O_CREAT) != 0;
    if (create && trailing_) return Fail(EISDIR);
    bool follow = trailing_ || ((flags & O_NOFOLLOW) == 0 && !(create && (flags & O_EXCL) != 0));
    if (follow) {
      std::string target;
      if (ReadLink(Cur(), comp.c_str(), target)) return Follow(Cur(), target, true) ? kContinue : -1;
      if (errno != EINVAL && errno != ENOENT) return Fail(errno);
    }
    int extra = O_NOFOLLOW | O_CLOEXEC | (trailing_ ? O_DIRECTORY : 0);
    unsigned mode = Creates(flags) ? opts_.mode : 0;
    int fd = ::openat(Cur(), comp.c_str(), flags | extra, mode);
    int err = errno;
    if (!follow) return fd >= 0 ? fd : Fail(err);
    if (fd >= 0) {
      if ((flags & O_PATH) == 0) return fd;
      struct stat st;
      if (::fstat(fd, &st) == 0 && !S_ISLNK(st.st_mode)) return fd;
      ::close(fd);  // became a symlink after we looked: follow it below
      err = ELOOP;
    }
    // ELOOP/ENOTDIR here can mean a symlink was swapped in after readlinkat said otherwise: look again.
    if ((err == ELOOP || err == ENOTDIR) && ++races_ <= kMaxSymlinks) {
      std::string target;
      if (ReadLink(Cur(), comp.c_str(), target)) return Follow(Cur(), target, true) ? kContinue : -1;
    }
    return Fail(err);
  }

  // The path named a directory already on the stack ("", ".", "..", "a/."): open it with the caller's flags.
  int OpenFinal(const char* dot) {
    // With O_CREAT the kernel answers EEXIST (O_EXCL) or EISDIR here, exactly as openat2 does for "a/.".
    int flags = opts_.flags;
    int fd = ::openat(Cur(), dot, flags | O_NOFOLLOW | O_CLOEXEC, Creates(flags) ? opts_.mode : 0);
    return fd >= 0 ? fd : Fail(errno);
  }

  int root_;
  const std::string& path_;
  const BoundedOpenOptions& opts_;
  Failure& f_;
  std::vector<UniqueFd> stack_;     // directories below the root, innermost last (O_PATH)
  std::vector<std::string> rest_;   // remaining components, next one last
  bool trailing_ = false;           // the final component must be a directory (path or link text ended in '/')
  int links_ = 0;
  int races_ = 0;
};

int OpenWalk(int rootFd, const std::string& path, const BoundedOpenOptions& opts, Failure& f) {
  return Walker(rootFd, path, opts, f).Run();
}

}  // namespace

int OpenBounded(int rootFd, const std::string& path, const BoundedOpenOptions& opts, Failure& f) {
  if (Openat2Disabled() || g_openat2_missing.load(std::memory_order_relaxed)) return OpenWalk(rootFd, path, opts, f);
  if (path.empty()) {
    f.Set(ENOENT, "openat2", path);
    return -1;
  }
  // The header promises "leading '/' ignored" in both modes (RESOLVE_BENEATH would reject an absolute path).
  std::string rel = RelativePath(path);
  struct open_how how;
  std::memset(&how, 0, sizeof how);
  how.flags = static_cast<uint64_t>(static_cast<unsigned>(opts.flags | O_CLOEXEC));
  // openat2 rejects a mode without O_CREAT/O_TMPFILE; callers pass one by habit, so drop it when not creating.
  how.mode = Creates(opts.flags) ? opts.mode : 0;
  how.resolve = RESOLVE_NO_MAGICLINKS | (opts.resolve == ResolveMode::Beneath ? RESOLVE_BENEATH : RESOLVE_IN_ROOT);
  if (opts.noSymlinks) how.resolve |= RESOLVE_NO_SYMLINKS;
  for (int attempt = 0; attempt < kOpenat2Retries; ++attempt) {
    long fd = ::syscall(SYS_openat2, rootFd, rel.c_str(), &how, sizeof how);
    if (fd >= 0) return static_cast<int>(fd);
    if (errno == EAGAIN || errno == EINTR) continue;
    if (errno == ENOSYS) {
      g_openat2_missing.store(true, std::memory_order_relaxed);
      return OpenWalk(rootFd, path, opts, f);
    }
    f.Errno("openat2", path);
    return -1;
  }
  // Renames kept racing with '..': the walk does not depend on them.
  return OpenWalk(rootFd, path, opts, f);
}

int OpenParentBounded(int rootFd, const std::string& path, std::string& leaf, Failure& f) {
  size_t end = path.find_last_not_of('/');  // trailing slashes do not change which entry is meant
  if (end == std::string::npos) {           // "" or "/": the root has no parent inside the root
    f.Set(EINVAL, "openat", path);
    return -1;
  }
  size_t slash = path.rfind('/', end);
  size_t start = slash == std::string::npos ? 0 : slash + 1;
  std::string name = path.substr(start, end + 1 - start);
  if (name == "." || name == "..") {
    f.Set(EINVAL, "openat", path);
    return -1;
  }
  std::string parent = start == 0 ? std::string(".") : path.substr(0, start);
  BoundedOpenOptions o;
  // O_RDONLY (not O_PATH) so the fd also works for fchown/fsync/fgetxattr-style calls, not only *at lookups.
  o.flags = O_RDONLY | O_DIRECTORY;
  int fd = OpenBounded(rootFd, parent, o, f);
  if (fd < 0) {
    f.path = path;
    return -1;
  }
  leaf = std::move(name);
  return fd;
}

}  // namespace gd
