// Bounded path resolution: open a path as if `root` were '/', so '..' and absolute symlinks can never leave it.
// openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) when the kernel has it (5.6+), else a component-by-component
// walk with O_NOFOLLOW that follows symlinks itself, with the same semantics. Used by fsops and the batched
// primitives; runs on worker threads only.
#pragma once
#include <string>

#include "common/failure.h"

namespace gd {

enum class ResolveMode { InRoot, Beneath };

struct BoundedOpenOptions {
  int flags = 0;           // open(2) flags; O_CLOEXEC always added
  unsigned mode = 0;       // creation mode
  ResolveMode resolve = ResolveMode::InRoot;
  bool noSymlinks = false; // RESOLVE_NO_SYMLINKS
};

// Opens `path` (relative; leading '/' ignored) under directory fd `rootFd`. Returns the fd or -1 with `f` set.
int OpenBounded(int rootFd, const std::string& path, const BoundedOpenOptions& opts, Failure& f);

// Opens the parent directory of `path` bounded to the root and returns its fd; `leaf` receives the last
// component (never "", "." or ".."). Returns -1 with `f` set on failure (EINVAL for an empty or root path).
int OpenParentBounded(int rootFd, const std::string& path, std::string& leaf, Failure& f);

}  // namespace gd
