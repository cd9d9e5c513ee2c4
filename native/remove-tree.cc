// removeTree: recursive removal of a layer directory in one trip to the thread pool.
//
// Node's fs.rm({recursive}) costs one libuv round trip plus an lstat per entry; here every directory is opened
// once, read with getdents64 (d_type says what each entry is, so no stat per entry), and its entries are removed
// with unlinkat relative to the directory fd.
//
// Safety properties (see NativeBindings.removeTree in lib/native/types.ts for the contract):
// - Symlinks are never followed: every directory is opened relative to its parent's fd with
//   O_DIRECTORY|O_NOFOLLOW, so an entry swapped for a symlink mid-walk cannot lead outside the tree.
// - One mount only: a directory below the top that is on another mount (or another device that is not a btrfs
//   subvolume of the same filesystem) is not entered and not removed. Removing a layer must never delete
//   through a leftover bind mount into someone else's data; st_dev alone misses a bind mount from the same
//   filesystem, hence the mount id from statx.
// - Depth is bounded by memory, not by the thread's stack or the fd limit: the walk keeps an explicit stack of
//   frames, only the deepest kMaxOpenDirs of which hold an open fd; an ancestor whose fd was closed is reopened
//   by name from the nearest open ancestor when the walk climbs back to it, and its identity (device, inode,
//   mount) is checked so that a rename or mount in the meantime cannot redirect the walk.
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>

#include "common/args.h"
#include "common/async.h"
#include "common/failure.h"
#include "common/fd.h"
#include "modules.h"
#include "tree-util.h"

namespace gd {
namespace {

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
// Open directory fds held at once. Far below any sane RLIMIT_NOFILE, deep enough that ordinary trees never
// reopen anything.
constexpr size_t kMaxOpenDirs = 128;
// Inode flags that make unlink/rmdir fail with EPERM even for root (chattr +i / +a).
constexpr int kBlockingFlags = FS_IMMUTABLE_FL | FS_APPEND_FL;
constexpr uint64_t kBtrfsSubvolRootIno = 256;

struct Ident {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t mnt = 0;
  uint32_t mode = 0;
  bool hasMnt = false;     // the kernel reported a mount id (STATX_MNT_ID, Linux 5.8+)
  bool mountRoot = false;  // STATX_ATTR_MOUNT_ROOT
};

bool IdentOf(int dirFd, const char* name, int flags, Ident& out) {
  struct statx sx {};
  if (::statx(dirFd, name, flags | AT_STATX_SYNC_AS_STAT, STATX_TYPE | STATX_MODE | STATX_INO | STATX_MNT_ID, &sx) != 0)
    return false;
  out.dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
  out.ino = sx.stx_ino;
  out.mode = sx.stx_mode;
  out.hasMnt = (sx.stx_mask & STATX_MNT_ID) != 0;
  out.mnt = out.hasMnt ? sx.stx_mnt_id : 0;
  out.mountRoot = (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) != 0 && (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
  return true;
}

bool SameDir(const Ident& a, const Ident& b) {
  return a.dev == b.dev && a.ino == b.ino && (!a.hasMnt || !b.hasMnt || a.mnt == b.mnt);
}

// A btrfs subvolume has its own st_dev but is part of the same filesystem and mount: entering it is fine.
bool IsBtrfsSubvolumeRoot(int fd, const Ident& id) {
  if (id.ino != kBtrfsSubvolRootIno) return false;
  struct statfs sf {};
  return ::fstatfs(fd, &sf) == 0 && static_cast<unsigned long>(sf.f_type) == BTRFS_SUPER_MAGIC;
}

// Clears chattr +i/+a on an open file or directory. True when flags were cleared (a retry may now succeed).
bool ClearBlockingFlags(int fd) {
  int flags = 0;
  if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) return false;
  if ((flags & kBlockingFlags) == 0) return false;
  flags &= ~kBlockingFlags;
  return ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
}

// Clears chattr +i/+a on entry `name` of `dirFd` when it is a regular file or a directory (the only kinds that can
// carry them and that can be opened without side effects; O_NONBLOCK|O_NOCTTY in case it was swapped for a fifo
// or tty, and the type is checked again on the open fd).
bool ClearBlockingFlagsAt(int dirFd, const char* name) {
  struct stat st {};
  if (::fstatat(dirFd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return false;
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return false;
  UniqueFd fd(::openat(dirFd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd.valid()) return false;
  struct stat st2 {};
  if (::fstat(fd.get(), &st2) != 0 || (st2.st_mode & S_IFMT) != (st.st_mode & S_IFMT)) return false;
  return ClearBlockingFlags(fd.get());
}

// Opens directory `name` of `dirFd` that the caller may not read or search (a 0000 or 0200 directory it owns):
// adds owner rwx through an O_PATH handle (which needs no permission on the directory itself) and opens it.
// Returns -1 with errno = EACCES when that is not possible.
int OpenAfterChmod(int dirFd, const char* name) {
  UniqueFd handle(::openat(dirFd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (!handle.valid() || ::fstat(handle.get(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    errno = EACCES;
    return -1;
  }
  // fchmod does not take O_PATH fds; the /proc magic link reaches exactly the directory opened above.
  if (::chmod(tree::ProcFdPath(handle.get(), {}).c_str(), (st.st_mode & 07777) | 0700) != 0) {
    errno = EACCES;
    return -1;
  }
  int fd = ::openat(handle.get(), ".", kDirFlags);
  if (fd < 0) errno = EACCES;
  return fd;
}

struct Frame {
  UniqueFd fd;        // closed while the frame is more than kMaxOpenDirs levels above the deepest one
  std::string name;   // name in the parent directory
  Ident id;           // identity when first opened; a reopened fd must match it
  std::string names;  // the entries, NUL-terminated one after another (read before anything is removed)
  std::vector<uint32_t> offs;
  std::vector<unsigned char> types;
  size_t next = 0;
  bool chmodTried = false;
  bool flagsTried = false;
  bool kept = false;  // something below was not removed (a mount point): the directory stays too
  bool batched = false;  // the non-directories went through BatchUnlink
};

// Unlinks the non-directories of one directory on several threads at once. Removing a file whose blocks are
// allocated frees them on the unlinking thread, and on a filesystem mounted with online discard (or on slow
// storage) that waits for the device; fs.rm hides this by running four unlinks at a time on the libuv pool, a
// single walker cannot. Unlinks in one directory do run in parallel: the directory lock is dropped before the
// inode is evicted. The helpers are started on the first large directory only (small trees never pay for them).
class UnlinkPool {
 public:
  // Directories with fewer non-directories than this are handled by the walker alone.
  static constexpr size_t kMinBatch = 4;
  static constexpr unsigned kHelpers = 7;

  UnlinkPool() = default;
  UnlinkPool(const UnlinkPool&) = delete;
  UnlinkPool& operator=(const UnlinkPool&) = delete;
  ~UnlinkPool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // unlinkat(dirFd, names[i], 0) for every i; errs[i] = 0 or the errno. Returns when every call has returned.
  void Run(int dirFd, const std::vector<const char*>& names, std::vector<int>& errs) {
    errs.assign(names.size(), 0);
    Batch batch{dirFd, &names, &errs};
    Start();
    {
      std::lock_guard<std::mutex> lk(mu_);
      batch_ = &batch;
      gen_++;
    }
    cv_.notify_all();
    Work(batch);
    std::unique_lock<std::mutex> lk(mu_);
    // No helper may still hold `batch` (it lives on this stack frame) when Run returns.
    done_.wait(lk, [&] { return active_ == 0; });
    batch_ = nullptr;
  }

 private:
  struct Batch {
    int fd;
    const std::vector<const char*>* names;
    std::vector<int>* errs;
    std::atomic<size_t> next{0};
  };

  static void Work(Batch& b) {
    const size_t n = b.names->size();
    for (size_t i; (i = b.next.fetch_add(1, std::memory_order_relaxed)) < n;) {
      (*b.errs)[i] = ::unlinkat(b.fd, (*b.names)[i], 0) == 0 ? 0 : errno;
    }
  }

  void Start() {
    if (started_) return;
    started_ = true;
    try {
      for (unsigned i = 0; i < kHelpers; i++) threads_.emplace_back([this] { Helper(); });
    } catch (const std::system_error&) {
      // No threads (limits): the walker does every unlink itself.
    }
  }

  void Helper() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [&] { return stop_ || (batch_ != nullptr && gen_ != seen); });
      if (stop_) return;
      seen = gen_;
      Batch* b = batch_;
      active_++;
      lk.unlock();
      Work(*b);
      lk.lock();
      if (--active_ == 0) done_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;    // a new batch, or stop
  std::condition_variable done_;  // a helper left its batch
  Batch* batch_ = nullptr;
  uint64_t gen_ = 0;
  unsigned active_ = 0;
  bool stop_ = false;
  bool started_ = false;
  std::vector<std::thread> threads_;
};

// types[i] of an entry already removed (or found gone) by the batch pass; real DT_* values are below 16.
constexpr unsigned char kHandled = 0xff;

struct RemoveResult {
  uint64_t entries = 0;
};

class Remover {
 public:
  Remover(std::string top, Failure& f) : top_(std::move(top)), f_(f) {}

  bool Run(RemoveResult& res) {
    // Trailing slashes are ignored: "link/" removes the link, never what it points to.
    std::string p = top_;
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    size_t slash = p.rfind('/');
    std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
    base_ = slash == std::string::npos ? p : p.substr(slash + 1);
    top_ = p;
    if (base_.empty() || base_ == "." || base_ == "..") return f_.Set(EINVAL, "removeTree", top_);

    // O_PATH: the parent needs no read permission, only to be reachable.
    outer_.reset(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!outer_.valid()) {
      if (errno == ENOENT) return true;
      return f_.Errno("open", dir);
    }
    struct stat st {};
    if (::fstatat(outer_.get(), base_.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return true;
      return f_.Errno("lstat", top_);
    }
    if (!S_ISDIR(st.st_mode)) {
      int r = RemoveIn(SIZE_MAX, base_.c_str(), 0);
      if (r < 0) return f_.Set(-r, "unlink", top_);
      res.entries += static_cast<uint64_t>(r);
      return true;
    }

    Ident parent;
    if (!IdentOf(outer_.get(), "", AT_EMPTY_PATH, parent)) return f_.Errno("statx", dir);
    int pr = Push(SIZE_MAX, base_, &parent);
    if (pr < 0) return false;
    if (pr == 0) return true;  // vanished meanwhile
    if (pr == 2) {             // replaced by a non-directory meanwhile
      int r = RemoveIn(SIZE_MAX, base_.c_str(), 0);
      if (r < 0) return f_.Set(-r, "unlink", top_);
      res.entries += static_cast<uint64_t>(r);
      return true;
    }
    if (!Walk(res)) return false;
    if (!crossed_.empty()) return f_.Set(EXDEV, "removeTree", crossed_);
    return true;
  }

 private:
  // Removes `name` from the directory of frame k (SIZE_MAX: the top's parent, which is not ours to chmod or
  // chattr). 1 removed, 0 already gone, -errno on failure (not recorded: the caller decides).
  int RemoveIn(size_t k, const char* name, int flags) {
    int dirFd = k == SIZE_MAX ? outer_.get() : stack_[k].fd.get();
    for (int attempt = 0; attempt < 4; attempt++) {
      if (::unlinkat(dirFd, name, flags) == 0) return 1;
      int e = errno;
      if (e == ENOENT) return 0;
      bool retry = false;
      if (e == EACCES && k != SIZE_MAX && !stack_[k].chmodTried) {
        // A 0555 directory of an image layer (or any directory the caller owns but cannot write).
        Frame& fr = stack_[k];
        fr.chmodTried = true;
        retry = ::fchmod(dirFd, (fr.id.mode & 07777) | 0700) == 0;
      } else if (e == EPERM) {
        // chattr +i/+a on the entry or on the directory holding it.
        retry = ClearBlockingFlagsAt(dirFd, name);
        if (k != SIZE_MAX && !stack_[k].flagsTried) {
          stack_[k].flagsTried = true;
          retry = ClearBlockingFlags(dirFd) || retry;
        }
      }
      if (!retry) return -e;
    }
    return -EPERM;
  }

  // Display path of frame k (k = 0 is the top).
  std::string FramePath(size_t k) const {
    std::string s = top_;
    for (size_t i = 1; i <= k && i < stack_.size(); i++) {
      s.push_back('/');
      s += stack_[i].name;
    }
    return s;
  }
  std::string ChildPath(size_t k, std::string_view name) const {
    if (k == SIZE_MAX) return top_;
    std::string s = FramePath(k);
    s.push_back('/');
    s.append(name);
    return s;
  }

  // Opens directory `name` of frame k (SIZE_MAX: the top) and pushes its frame with all its entries read.
  // 1 pushed, 0 gone or not entered (a mount point, recorded in crossed_), 2 no longer a directory,
  // -1 failure (recorded). `outerId` is the identity of the top's parent (only for the top).
  int Push(size_t k, const std::string& name, const Ident* outerId) {
    int dirFd = k == SIZE_MAX ? outer_.get() : stack_[k].fd.get();
    int fd = ::openat(dirFd, name.c_str(), kDirFlags);
    if (fd < 0 && errno == EACCES) fd = OpenAfterChmod(dirFd, name.c_str());
    if (fd < 0) {
      int e = errno;
      if (e == ENOENT) return 0;
      if (e == ENOTDIR || e == ELOOP) return 2;
      f_.Set(e, "openat", ChildPath(k, name));
      return -1;
    }
    Frame fr;
    fr.fd.reset(fd);
    fr.name = name;
    if (!IdentOf(fd, "", AT_EMPTY_PATH, fr.id)) {
      f_.Errno("statx", ChildPath(k, name));
      return -1;
    }
    if (k == SIZE_MAX) {
      // The top itself must not be a mount point: everything in it would belong to the mounted filesystem.
      if (fr.id.mountRoot || (fr.id.hasMnt && outerId->hasMnt && fr.id.mnt != outerId->mnt) ||
          (fr.id.dev != outerId->dev && !IsBtrfsSubvolumeRoot(fd, fr.id))) {
        f_.Set(EXDEV, "removeTree", top_);
        return -1;
      }
    } else {
      const Ident& parent = stack_[k].id;
      const Ident& top = stack_[0].id;
      if (fr.id.mountRoot || (fr.id.hasMnt && top.hasMnt && fr.id.mnt != top.mnt) ||
          (fr.id.dev != parent.dev && !IsBtrfsSubvolumeRoot(fd, fr.id))) {
        if (crossed_.empty()) crossed_ = ChildPath(k, name);
        stack_[k].kept = true;
        return 0;
      }
    }
    // Read every name first: removing entries while getdents64 is still iterating may skip some on some
    // filesystems.
    tree::DirReader rd(fd, dbuf_);
    std::string_view nm;
    unsigned char ty;
    int r;
    while ((r = rd.Next(nm, ty)) == 1) {
      if (fr.names.size() > UINT32_MAX - nm.size() - 1) {
        f_.Set(ENOMEM, "getdents64", ChildPath(k, name));
        return -1;
      }
      fr.offs.push_back(static_cast<uint32_t>(fr.names.size()));
      fr.names.append(nm);
      fr.names.push_back('\0');
      fr.types.push_back(ty);
    }
    if (r < 0) {
      f_.Errno("getdents64", ChildPath(k, name));
      return -1;
    }
    stack_.push_back(std::move(fr));
    if (stack_.size() > kMaxOpenDirs) stack_[stack_.size() - 1 - kMaxOpenDirs].fd.reset();
    return 1;
  }

  // Makes sure the deepest frame has an open fd. Open fds always form one run at the deep end of the stack, so
  // when the deepest frame's is closed so is every frame's up to the nearest open ancestor: reopen from there,
  // keeping the deepest kMaxOpenDirs, and check each reopened directory is the one first seen.
  bool ReopenTop() {
    size_t last = stack_.size() - 1;
    if (stack_[last].fd.valid()) return true;
    size_t start = last;
    while (start > 0 && !stack_[start - 1].fd.valid()) start--;
    size_t keepFrom = last + 1 > kMaxOpenDirs ? last + 1 - kMaxOpenDirs : 0;
    UniqueFd walk;  // intermediate directory that is not kept
    int cur = start == 0 ? outer_.get() : stack_[start - 1].fd.get();
    for (size_t k = start; k <= last; k++) {
      UniqueFd fd(::openat(cur, stack_[k].name.c_str(), kDirFlags));
      if (!fd.valid()) return f_.Errno("openat", FramePath(k));
      Ident id;
      if (!IdentOf(fd.get(), "", AT_EMPTY_PATH, id)) return f_.Errno("statx", FramePath(k));
      // Renamed or mounted over while its fd was closed: the walk must not continue somewhere else.
      if (!SameDir(id, stack_[k].id)) return f_.Set(ESTALE, "openat", FramePath(k));
      cur = fd.get();
      if (k >= keepFrom) {
        stack_[k].fd = std::move(fd);
      } else {
        walk = std::move(fd);
      }
    }
    return true;
  }

  // Removes the non-directories of frame k on the pool when there are enough of them. Entries the plain
  // unlinkat could not remove (EACCES, EPERM, EISDIR...) are left to the walker, which knows the retries.
  bool BatchUnlink(size_t k, RemoveResult& res) {
    Frame& fr = stack_[k];
    const size_t n = fr.offs.size();
    if (n < UnlinkPool::kMinBatch) return true;
    batchNames_.clear();
    batchIdx_.clear();
    for (size_t i = 0; i < n; i++) {
      const char* name = fr.names.data() + fr.offs[i];
      if (fr.types[i] == DT_UNKNOWN) {
        struct stat st {};
        if (::fstatat(fr.fd.get(), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
          if (errno == ENOENT) {
            fr.types[i] = kHandled;
            continue;
          }
          return f_.Errno("fstatat", ChildPath(k, name));
        }
        fr.types[i] = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
      }
      if (fr.types[i] == DT_DIR) continue;
      batchNames_.push_back(name);
      batchIdx_.push_back(i);
    }
    if (batchNames_.size() < UnlinkPool::kMinBatch) return true;
    pool_.Run(fr.fd.get(), batchNames_, batchErrs_);
    for (size_t j = 0; j < batchIdx_.size(); j++) {
      int e = batchErrs_[j];
      if (e == 0) res.entries++;
      if (e == 0 || e == ENOENT) fr.types[batchIdx_[j]] = kHandled;
    }
    return true;
  }

  bool Walk(RemoveResult& res) {
    while (!stack_.empty()) {
      if (!ReopenTop()) return false;
      size_t k = stack_.size() - 1;
      Frame& fr = stack_[k];
      if (fr.next == 0 && !fr.batched) {
        fr.batched = true;
        if (!BatchUnlink(k, res)) return false;
      }
      if (fr.next < fr.offs.size()) {
        size_t i = fr.next++;
        const char* name = fr.names.data() + fr.offs[i];
        unsigned char ty = fr.types[i];
        if (ty == kHandled) continue;
        if (ty == DT_UNKNOWN) {
          struct stat st {};
          if (::fstatat(fr.fd.get(), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) continue;
            return f_.Errno("fstatat", ChildPath(k, name));
          }
          ty = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
        }
        if (ty != DT_DIR) {
          int r = RemoveIn(k, name, 0);
          if (r >= 0) {
            res.entries += static_cast<uint64_t>(r);
            continue;
          }
          // d_type said file but it is a directory now (replaced meanwhile): remove it as one.
          if (r != -EISDIR) return f_.Set(-r, "unlinkat", ChildPath(k, name));
        }
        std::string child(name);  // `fr` and `name` are invalid once the stack grows
        int pr = Push(k, child, nullptr);
        if (pr < 0) return false;
        if (pr == 2) {
          int r = RemoveIn(k, child.c_str(), 0);
          if (r < 0) return f_.Set(-r, "unlinkat", ChildPath(k, child));
          res.entries += static_cast<uint64_t>(r);
        }
        continue;
      }
      // Every entry of the deepest frame is handled: remove the directory itself from its parent.
      std::string path = FramePath(k);
      std::string name = std::move(fr.name);
      bool kept = fr.kept;
      stack_.pop_back();
      size_t parent = SIZE_MAX;
      if (!stack_.empty()) {
        if (!ReopenTop()) return false;
        parent = stack_.size() - 1;
        if (kept) stack_[parent].kept = true;
      }
      if (kept) continue;
      int r = RemoveIn(parent, name.c_str(), AT_REMOVEDIR);
      if (r < 0) return f_.Set(-r, "rmdir", path);
      res.entries += static_cast<uint64_t>(r);
    }
    return true;
  }

  std::string top_;
  std::string base_;
  Failure& f_;
  UniqueFd outer_;  // the top's parent directory (O_PATH)
  std::vector<Frame> stack_;
  std::vector<char> dbuf_;
  UnlinkPool pool_;
  std::vector<const char*> batchNames_;
  std::vector<size_t> batchIdx_;
  std::vector<int> batchErrs_;
  std::string crossed_;  // first mount point found below the top (not entered)
};

Napi::Value RemoveTree(const Napi::CallbackInfo& info) {
  std::string path = ArgPath(info, 0, "path");
  return RunAsync<RemoveResult>(
      info.Env(), "removeTree",
      [path](Failure& f) {
        RemoveResult res;
        Remover(path, f).Run(res);
        return res;
      },
      [](Napi::Env env, RemoveResult& r) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("entries", Napi::Number::New(env, static_cast<double>(r.entries)));
        return o;
      });
}

}  // namespace

void RegisterRemoveTree(Napi::Env env, Napi::Object exports) {
  exports.Set("removeTree", Napi::Function::New(env, RemoveTree, "removeTree"));
}

}  // namespace gd
