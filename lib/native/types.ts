/**
 * Typed surface of the native addon. Every method returns a Promise and runs off the event loop; failures
 * reject with a {@link NativeError}. Paths are absolute or relative to the process cwd unless stated.
 * @module
 */

/** Error thrown by native calls: Node-style, like `fs` errors. */
export interface NativeError extends Error {
  /** Symbolic errno name, e.g. `'EBUSY'`. */
  code: string;
  /** Negative errno, as Node's `fs` reports it. */
  errno: number;
  /** The system call (or ioctl) that failed, e.g. `'mount'`, `'ioctl(DM_TABLE_LOAD)'`. */
  syscall: string;
  /** The path the call acted on, when there is one. */
  path?: string;
  /** The second path (mount target, rename destination), when there is one. */
  dest?: string;
}

/** Result of statfs(2). */
export interface StatfsInfo {
  /** Filesystem magic (`f_type`), compare with {@link FsMagic}. */
  type: number;
  bsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  namelen: number;
  /** Mount flags (`f_flags`, ST_* bits). */
  flags: number;
}

/** Options for {@link NativeBindings.loopAttach}. */
export interface LoopAttachOptions {
  /** Attach read-only. */
  readOnly?: boolean;
  /**
   * Detach automatically when the last user closes the device (LO_FLAGS_AUTOCLEAR); default true. The addon
   * itself keeps an autoclear device open until {@link NativeBindings.loopDetach} or process exit (otherwise the
   * kernel would detach it the moment the attach call closed its descriptor); after that the device lives as
   * long as its other users (a mount, a device-mapper table).
   */
  autoclear?: boolean;
  /** Use direct I/O on the backing file (LO_FLAGS_DIRECT_IO). */
  directIo?: boolean;
  /** Byte offset into the backing file. */
  offset?: number;
  /** Size limit in bytes (0 = whole file). */
  sizeLimit?: number;
}

/** A loop device attached to a file. */
export interface LoopDevice {
  /** Device node, e.g. `/dev/loop3`. */
  device: string;
  /** Loop index (the N in /dev/loopN). */
  index: number;
}

/** Status of a loop device (LOOP_GET_STATUS64). */
export interface LoopInfo {
  device: string;
  index: number;
  /** Backing file path as the kernel recorded it (may be truncated to 64 bytes by old kernels; read from sysfs when possible). */
  backingFile: string;
  /** Device and inode of the backing file, to match a file even when its path was truncated. */
  backingDev: number;
  backingInode: number;
  offset: number;
  sizeLimit: number;
  autoclear: boolean;
  readOnly: boolean;
}

/** One row of a device-mapper table. */
export interface DmTarget {
  /** Start sector (512-byte units). */
  start: number;
  /** Length in sectors. */
  length: number;
  /** Target type, e.g. `'thin-pool'`, `'thin'`, `'linear'`. */
  type: string;
  /** Target parameters (for tables) or status line (for status queries). */
  params: string;
}

/** State of one device-mapper device (DM_DEV_STATUS). */
export interface DmInfo {
  name: string;
  uuid: string;
  major: number;
  minor: number;
  /** Linux dev_t (`makedev(major, minor)`), ready for {@link NativeBindings.mknod}. */
  dev: number;
  openCount: number;
  eventNr: number;
  targetCount: number;
  suspended: boolean;
  readOnly: boolean;
  /** A live table is loaded. */
  liveTable: boolean;
  /** An inactive (loaded, not yet resumed) table is present. */
  inactiveTable: boolean;
  /** Removal was deferred until the last opener closes. */
  deferredRemove: boolean;
}

/** Entry of {@link NativeBindings.dmList}. */
export interface DmListEntry {
  name: string;
  major: number;
  minor: number;
  dev: number;
}

/** Options for {@link NativeBindings.dmCreate}. */
export interface DmCreateOptions {
  uuid?: string;
  /**
   * Make the device read-only. The kernel attaches read-only to tables, not devices, so this process remembers
   * the name and every later {@link NativeBindings.dmLoad} of it passes DM_READONLY_FLAG (until dmRemove).
   */
  readOnly?: boolean;
}

/** Options for {@link NativeBindings.dmRemove}. */
export interface DmRemoveOptions {
  /** DM_DEFERRED_REMOVE: remove once the last opener closes instead of failing with EBUSY. */
  deferred?: boolean;
}

/** Options for {@link NativeBindings.dmSuspend}. */
export interface DmSuspendOptions {
  /** DM_NOFLUSH_FLAG: do not flush outstanding I/O (used for thin-pool origins). */
  noFlush?: boolean;
  /** DM_SKIP_LOCKFS_FLAG: do not freeze the filesystem on the device. */
  skipLockfs?: boolean;
}

/** Result of {@link NativeBindings.btrfsSubvolumeInfo}. */
export interface BtrfsSubvolumeInfo {
  /** Subvolume (tree) id. */
  id: number;
  /** Whether the subvolume is read-only. */
  readOnly: boolean;
}

/** Entry kinds understood by the batched primitives. */
export type EntryType = 'file' | 'dir' | 'symlink' | 'link' | 'char' | 'block' | 'fifo';

/**
 * One operation of {@link NativeBindings.applyEntries}. `path` is relative to the root fd, `/`-separated,
 * already cleaned (no empty, `.` or `..` components); it is resolved inside the root (RESOLVE_IN_ROOT), so
 * absolute symlinks in the tree point inside the root and nothing outside it is ever touched.
 */
export interface ApplyEntry {
  /**
   * What to do: create an entry, remove a path recursively, make an overlay whiteout (char 0/0), or set
   * `xattrs` on an existing path without following a final symlink ('xattrs', used for overlay opaque dirs).
   */
  op: 'create' | 'remove' | 'whiteout' | 'xattrs';
  path: string;
  /** Required for op 'create'. */
  type?: EntryType;
  /** Permission and special bits (07777). Default for new entries: 0644 (0755 for dirs); an existing dir kept
   *  by a dir entry keeps its mode. Owner (uid/gid) and times are left as created when absent; atime defaults
   *  to mtime. Whiteouts are owned by uid/gid when given, else 0:0. */
  mode?: number;
  uid?: number;
  gid?: number;
  mtimeSec?: number;
  mtimeNsec?: number;
  atimeSec?: number;
  atimeNsec?: number;
  /** Symlink target (stored verbatim) or, for hardlinks, the root-relative path of the existing file. */
  linkname?: string;
  devMajor?: number;
  devMinor?: number;
  /** Extended attributes to set (name → value). */
  xattrs?: Record<string, Buffer>;
  /** Whole content of a regular file. Omit and use `keepOpen` to stream large files through the returned fd. */
  data?: Buffer;
  /** Logical size of a file: when larger than `data`, the file is extended with a hole (sparse). Whole 4 KiB
   *  blocks of zeros in `data` are not written either, so they stay holes. */
  size?: number;
  /** For files: leave the new file open for writing and return its fd (caller writes then calls finishFile). */
  keepOpen?: boolean;
  /** For dirs: do not set times now (directory times are set after all entries, see setTimes). */
  deferTimes?: boolean;
  /** What to do when the path exists: replace it unless both are directories (default), or fail with EEXIST. */
  noReplace?: boolean;
}

/** Per-entry outcome of {@link NativeBindings.applyEntries}, same order as the input. */
export interface ApplyResult {
  /** 0 on success, else the (positive) errno of the first failing step. */
  errno: number;
  /** errno symbolic name, '' when ok. */
  code: string;
  /** Failing step, e.g. 'openat2', 'fchown'. */
  syscall: string;
  /** Open fd for `keepOpen` files, else -1. */
  fd: number;
  /** Non-fatal problems (xattrs the filesystem refused with ENOTSUP/EPERM), as `'<name>: <code>'`. */
  warnings?: string[];
}

/** Metadata to apply when a streamed file is complete ({@link NativeBindings.finishFile}). */
export interface FinishFileOptions {
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  atimeSec?: number;
  atimeNsec?: number;
  xattrs?: Record<string, Buffer>;
  /** Final logical size (extends with a hole when data ended early in a sparse file). */
  size?: number;
}

/** Outcome of one batch of an {@link ApplySession}. */
export interface ApplyBatchResult {
  /** The batch did not run because an earlier batch of the session failed. */
  skipped: boolean;
  /** The operation that failed (the batch and the session stop there), or null. */
  failed: {
    /** Index of the operation in the batch. */
    index: number;
    errno: number;
    code: string;
    syscall: string;
    /** The path the failure is about. */
    path: string;
    /** A second name the failure is about (hardlink source, xattr name), or ''. */
    dest: string;
    /** 'create', 'remove', 'whiteout', 'xattrs', 'write', 'finish' or 'times', and for 'create' the entry type. */
    op: string;
    type: string;
  } | null;
  /** Non-fatal problems (xattrs the filesystem refused with ENOTSUP/EPERM), message `'<name>: <code>'`. */
  warnings: Array<{ index: number; path: string; message: string }>;
}

/**
 * A layer apply in progress ({@link NativeBindings.openApplySession}): batches of operations run strictly in
 * submission order on one pool thread, back to back while batches are queued. The operations are packed
 * records (the format is documented in native/apply-entries.cc, BatchReader::Next; lib/archive/apply.ts writes
 * them) whose file contents are slices of `chunks`, which must not change until the batch settles. After a
 * failed operation every later batch is skipped. Methods check their own arguments (TypeError).
 */
export interface ApplySession {
  run(ops: Uint8Array, chunks: Uint8Array[]): Promise<ApplyBatchResult>;
  /** After the queued batches: closes a streamed file left open and the session's root fd. */
  close(): Promise<void>;
}

/** Flag of a {@link Sha256Stream.update} CRC range: the range begins a new checksum. */
export const CRC_RANGE_START = 1;
/** Flag of a {@link Sha256Stream.update} CRC range: the checksum is complete after the range. */
export const CRC_RANGE_END = 2;

/** A SHA-256 computed on the thread pool ({@link NativeBindings.createSha256}). */
export interface Sha256Stream {
  /** Queues a chunk (hashed in call order); resolves once it is hashed. The chunk must not change until then. */
  update(chunk: Uint8Array): Promise<void>;
  /**
   * Same, and also computes CRC-64/ISO (Go's `crc64.ISO`) over byte ranges of the chunk: `crcRanges` holds
   * `(offset, length, flags)` triples, flags {@link CRC_RANGE_START} (the range begins a new checksum) and
   * {@link CRC_RANGE_END} (the checksum is complete after it). A checksum may continue across chunks. Resolves
   * to the checksums completed in this chunk, 8 bytes big-endian each, in order (tar-split's per-file checksums).
   */
  update(chunk: Uint8Array, crcRanges: Uint32Array): Promise<Buffer>;
  /** Resolves to the lowercase hex digest of everything queued before; the stream is finished afterwards. */
  digest(): Promise<string>;
}

/** Options for {@link NativeBindings.scanTree}. */
export interface ScanOptions {
  /** Read xattrs: false (none, default), true (all) or a list of names to read (e.g. `['security.capability']`). */
  xattrs?: boolean | string[];
  /** Do not descend into other filesystems (default true). */
  oneFilesystem?: boolean;
  /** Return entries sorted by path (bytewise), default true. */
  sort?: boolean;
}

/** One file found by {@link NativeBindings.scanTree}. */
export interface ScanEntry {
  /** Path relative to the scanned root with a leading '/', e.g. `/etc/hosts`; the root itself is `/`. */
  path: string;
  /** st_mode (type and permission bits). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Allocated 512-byte blocks (to detect sparse files). */
  blocks: number;
  mtimeSec: number;
  mtimeNsec: number;
  atimeSec: number;
  atimeNsec: number;
  ctimeSec: number;
  ctimeNsec: number;
  /** Device of a char/block special file. */
  rdev: number;
  dev: number;
  ino: number;
  nlink: number;
  /** Symlink target, for symlinks. */
  linkname?: string;
  /** Requested xattrs that exist. */
  xattrs?: Record<string, Buffer>;
}

/** Options for {@link NativeBindings.readFiles}. */
export interface ReadFilesOptions {
  /** Each file's slot in `data` is its size rounded up to a multiple of this (default 1; 512 gives tar padding). */
  align?: number;
}

/** Result of {@link NativeBindings.readFiles}. */
export interface ReadFilesResult {
  /** The files' slots, back to back. */
  data: Buffer;
  /** Per file: bytes read, -1 for a path that is not a regular file, or the error that kept it from being read. */
  read: Array<number | NodeJS.ErrnoException>;
}

/** Options for {@link NativeBindings.openBounded}. */
export interface OpenBoundedOptions {
  /** open(2) flags (`O_*` from {@link OpenFlags}); O_CLOEXEC is always added. */
  flags?: number;
  /** Creation mode. */
  mode?: number;
  /** 'in-root' (default): resolve as if root were '/' (absolute symlinks and '..' stay inside);
   *  'beneath': fail with EXDEV on any attempt to leave the root. */
  resolve?: 'in-root' | 'beneath';
  /** Refuse symlinks anywhere in the path (RESOLVE_NO_SYMLINKS). */
  noSymlinks?: boolean;
}

/** Options for {@link NativeBindings.copyTree}. */
export interface CopyTreeOptions {
  /** Try FICLONE reflinks first (default true), then copy_file_range, then read/write. */
  reflink?: boolean;
}

/** Statistics of {@link NativeBindings.copyTree}. */
export interface CopyTreeResult {
  entries: number;
  bytes: number;
  reflinked: number;
}

/** Result of {@link NativeBindings.removeTree}. */
export interface RemoveTreeResult {
  /** Entries removed, the top included (0 when `path` did not exist). */
  entries: number;
}

/**
 * The whole native addon. Every consumer takes one of these (default: {@link loadBindings}); tests inject mocks.
 */
export interface NativeBindings {
  // ---- mounts ----
  /** mount(2). `fstype`/`data` may be null. */
  mount(source: string, target: string, fstype: string | null, flags: number, data: string | null): Promise<void>;
  /** umount2(2) with MNT_* flags. */
  umount(target: string, flags: number): Promise<void>;
  /** Bind-mount `source` on `target` (MS_BIND, with MS_REC when recursive); read-only via a remount. */
  bindMount(source: string, target: string, opts?: { recursive?: boolean; readOnly?: boolean }): Promise<void>;
  /** Set mount propagation: 'private' | 'shared' | 'slave' | 'unbindable' (MS_REC when recursive). */
  makeMount(target: string, propagation: 'private' | 'shared' | 'slave' | 'unbindable', recursive?: boolean): Promise<void>;
  /** Whether `path` is the root of a mount (statx STATX_ATTR_MOUNT_ROOT, falling back to st_dev/parent). */
  isMountpoint(path: string): Promise<boolean>;
  /** statfs(2). */
  statfs(path: string): Promise<StatfsInfo>;
  /**
   * mount(2) with relative `source`, `target` and paths inside `data` resolved from `dir`: runs on a short-lived
   * thread that unshares its cwd (CLONE_FS) and fchdir()s into `dir`, so the process cwd never changes (overlay2
   * mounts of deep stacks whose absolute lower paths exceed one page). Errors carry path = source, dest = dir/target.
   * Provided by native/mount-api.cc; rejects with ERR_NATIVE_MISSING in builds without it.
   */
  mountFrom(dir: string, source: string, target: string, fstype: string | null, flags: number, data: string | null): Promise<void>;

  // ---- project quotas (xfs pquota; native/quota.cc) ----
  /** FS_IOC_FSGETXATTR: the project id of directory `path`. */
  getProjectId(path: string): Promise<number>;
  /** FS_IOC_FSSETXATTR: sets the project id of directory `path` and FS_XFLAG_PROJINHERIT (new entries inherit it). */
  setProjectId(path: string, projectId: number): Promise<void>;
  /** quotactl(Q_XSETQLIM, PRJQUOTA) on the block device node `device`: hard and soft block limit in bytes (0 = none). */
  setProjectQuota(device: string, projectId: number, bytes: number): Promise<void>;
  /** quotactl(Q_XGETQUOTA, PRJQUOTA): the project's hard limit and usage, in bytes. */
  getProjectQuota(device: string, projectId: number): Promise<{ hardLimit: number; used: number }>;

  // ---- loop devices ----
  /** LOOP_CTL_GET_FREE: index of a free loop device (creating one if needed). */
  loopGetFree(): Promise<number>;
  /** Attach `file` to a free loop device (LOOP_CONFIGURE, falling back to LOOP_SET_FD + LOOP_SET_STATUS64). */
  loopAttach(file: string, opts?: LoopAttachOptions): Promise<LoopDevice>;
  /** LOOP_CLR_FD (the kernel completes it on the last close when the device is still in use); also drops the
   *  addon's own hold on an autoclear device. */
  loopDetach(device: string): Promise<void>;
  /** LOOP_GET_STATUS64 (+ sysfs backing_file). Rejects with ENXIO when the device has no backing file. */
  loopInfo(device: string): Promise<LoopInfo>;
  /** LOOP_SET_CAPACITY: re-read the backing file size after it grew. */
  loopSetCapacity(device: string): Promise<void>;
  /** BLKGETSIZE64 of a block device, in bytes. */
  blockDeviceSize(device: string): Promise<number>;

  // ---- sparse files and discard ----
  /** fallocate(2) on `path` (opened O_RDWR); `mode` is FALLOC_FL_* bits (0 = allocate). */
  fallocate(path: string, mode: number, offset: number, length: number): Promise<void>;
  /** Open (creating with 0600 when `create`) and ftruncate(2) to `size` bytes: makes sparse files. */
  truncate(path: string, size: number, create?: boolean): Promise<void>;
  /** BLKDISCARD on a block device range. */
  blkDiscard(device: string, offset: number, length: number): Promise<void>;

  // ---- device-mapper (/dev/mapper/control) ----
  /** DM_VERSION: [major, minor, patch] of the kernel's DM interface. */
  dmVersion(): Promise<[number, number, number]>;
  /** DM_DEV_CREATE: a device with no table. */
  dmCreate(name: string, opts?: DmCreateOptions): Promise<DmInfo>;
  /** DM_TABLE_LOAD into the inactive slot. */
  dmLoad(name: string, targets: DmTarget[]): Promise<DmInfo>;
  /** DM_DEV_SUSPEND with DM_SUSPEND_FLAG. */
  dmSuspend(name: string, opts?: DmSuspendOptions): Promise<DmInfo>;
  /** DM_DEV_SUSPEND without the suspend flag: swaps in the inactive table and resumes. */
  dmResume(name: string): Promise<DmInfo>;
  /** DM_DEV_REMOVE (DM_DEFERRED_REMOVE when `deferred`). */
  dmRemove(name: string, opts?: DmRemoveOptions): Promise<void>;
  /** DM_TARGET_MSG, e.g. `create_thin 1`, `create_snap 2 1`, `delete 2`, `set_transaction_id 0 1`; resolves to the reply. */
  dmMessage(name: string, sector: number, message: string): Promise<string>;
  /** DM_TABLE_STATUS (status lines). */
  dmStatus(name: string): Promise<DmTarget[]>;
  /** DM_TABLE_STATUS with DM_STATUS_TABLE_FLAG (the loaded table). */
  dmTable(name: string): Promise<DmTarget[]>;
  /** DM_DEV_STATUS; resolves to null when no such device exists. */
  dmInfo(name: string): Promise<DmInfo | null>;
  /** DM_LIST_DEVICES. */
  dmList(): Promise<DmListEntry[]>;

  // ---- btrfs ----
  /** BTRFS_IOC_SUBVOL_CREATE at `path` (its parent must exist). */
  btrfsSubvolumeCreate(path: string): Promise<void>;
  /** BTRFS_IOC_SNAP_CREATE_V2 of subvolume `source` at `dest`. */
  btrfsSnapshot(source: string, dest: string, opts?: { readOnly?: boolean }): Promise<void>;
  /** BTRFS_IOC_SNAP_DESTROY of the subvolume at `path` (nested subvolumes must be deleted first). */
  btrfsSubvolumeDelete(path: string): Promise<void>;
  /** Whether `path` is the root of a btrfs subvolume (btrfs magic and inode 256). */
  btrfsIsSubvolume(path: string): Promise<boolean>;
  /** Subvolume id (BTRFS_IOC_INO_LOOKUP) and read-only flag (BTRFS_IOC_SUBVOL_GETFLAGS). */
  btrfsSubvolumeInfo(path: string): Promise<BtrfsSubvolumeInfo>;
  /** BTRFS_IOC_QUOTA_CTL enable/disable on the filesystem containing `path`. */
  btrfsQuotaCtl(path: string, enable: boolean): Promise<void>;
  /** BTRFS_IOC_QGROUP_LIMIT: limit referenced bytes of the subvolume at `path` (0 = no limit). */
  btrfsQgroupLimit(path: string, maxReferenced: number): Promise<void>;

  // ---- xattrs (never follow symlinks) ----
  /** lgetxattr(2); resolves to null when the attribute does not exist (ENODATA). */
  lgetxattr(path: string, name: string): Promise<Buffer | null>;
  /** lsetxattr(2) with XATTR_CREATE/XATTR_REPLACE flags (0 = either). */
  lsetxattr(path: string, name: string, value: Buffer, flags?: number): Promise<void>;
  /** llistxattr(2). */
  llistxattr(path: string): Promise<string[]>;
  /** lremovexattr(2). */
  lremovexattr(path: string, name: string): Promise<void>;

  // ---- filesystem helpers ----
  /** mknod(2); `mode` includes the file type (S_IFCHR etc.). An overlay whiteout is `mknod(p, S_IFCHR, 0)`. */
  mknod(path: string, mode: number, dev: number): Promise<void>;
  /** renameat2(2) with RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT flags. */
  renameat2(oldPath: string, newPath: string, flags: number): Promise<void>;
  /** syncfs(2) of the filesystem holding `path`. */
  syncfs(path: string): Promise<void>;
  /**
   * Open `path` resolved inside `root` (openat2 with RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS; on kernels without
   * openat2, a component-by-component O_NOFOLLOW walk with the same semantics). Resolves to a raw fd that the
   * caller must close (`fs.close`).
   */
  openBounded(root: string, path: string, opts?: OpenBoundedOptions): Promise<number>;

  // ---- batched hot-path primitives ----
  /**
   * Apply many entries under `rootFd` (an O_DIRECTORY fd of the layer root) in one trip to the thread pool.
   * Each entry is resolved inside the root; parents must exist. Per-entry failures are reported in the
   * results (the call itself only rejects on invalid arguments).
   */
  applyEntries(rootFd: number, entries: ApplyEntry[]): Promise<ApplyResult[]>;
  /** Finish a file opened with `keepOpen`: set owner, mode, xattrs, size and times, then close the fd. */
  finishFile(fd: number, opts: FinishFileOptions): Promise<void>;
  /** Set times on paths under `rootFd` (without following symlinks); used for directories after all entries. */
  setTimes(rootFd: number, entries: Array<{ path: string; mtimeSec: number; mtimeNsec: number; atimeSec?: number; atimeNsec?: number }>): Promise<void>;
  /** Start a layer apply under `rootFd` (a directory; the session keeps its own dup of it). See {@link ApplySession}. */
  openApplySession(rootFd: number): Promise<ApplySession>;
  /** A SHA-256 whose updates run on the thread pool (rejects with code ERR_NATIVE_MISSING when node has no OpenSSL). */
  createSha256(): Promise<Sha256Stream>;
  /** Walk the tree under `root` (no symlink following) and return lstat data for every entry, including the root. */
  scanTree(root: string, opts?: ScanOptions): Promise<ScanEntry[]>;
  /** lstat several root-relative paths under `rootFd` at once; null where the path does not exist. */
  lstatMany(rootFd: number, paths: string[], opts?: ScanOptions): Promise<Array<ScanEntry | null>>;
  /**
   * Read several small regular files under `rootFd` in one trip to the thread pool. File i is opened bounded to
   * the root like {@link openBounded} (resolved in the root, no magic links) with O_NOFOLLOW, O_NONBLOCK and
   * O_NOCTTY, checked with fstat to be a regular file, and its first `sizes[i]` bytes are read into its slot of
   * `data`. Slots follow each other in order, each `sizes[i]` rounded up to a multiple of `opts.align` (default 1,
   * at most 65536); bytes not read stay zero. `read[i]` is the number of bytes read (fewer than `sizes[i]` when the
   * file is shorter), -1 when the path is not a regular file (nothing read), or the Node-style error (code, errno,
   * syscall, path) that kept it from being opened or read. At most 256 MiB per call (RangeError).
   */
  readFiles(rootFd: number, paths: string[], sizes: number[], opts?: ReadFilesOptions): Promise<ReadFilesResult>;
  /** Copy the tree `source` to `dest` (which must not exist) preserving owners, modes, times, xattrs, hardlinks,
   *  devices, fifos, symlinks and holes; reflinks where the filesystem allows. */
  copyTree(source: string, dest: string, opts?: CopyTreeOptions): Promise<CopyTreeResult>;
  /**
   * Remove `path` and everything below it, like `rm -rf --one-file-system`, in one trip to the thread pool
   * (native/remove-tree.cc). Trailing slashes are ignored; `/`, `.` and `..` as the last component reject with
   * EINVAL. A missing `path` (or missing parent) resolves `{ entries: 0 }`.
   * - Symlinks are never followed: when `path` is a symlink (or any non-directory) only it is unlinked; below the
   *   top every directory is opened relative to its parent's fd with O_DIRECTORY|O_NOFOLLOW.
   * - One mount only: when `path` itself is a mount point, rejects with EXDEV (syscall 'removeTree') and removes
   *   nothing. A directory below it on another mount (mount id from statx, or another st_dev that is not a btrfs
   *   subvolume) is not entered; everything else is still removed, that mount point and its ancestors stay, and
   *   the call then rejects with EXDEV (syscall 'removeTree', path = the first such mount point).
   * - Directories the caller cannot read or write (0555/0000 image directories it owns) get owner rwx added and
   *   the operation is retried; chattr +i/+a (FS_IMMUTABLE_FL/FS_APPEND_FL) on an entry or its directory is
   *   cleared on EPERM and the operation retried.
   * - Depth is unbounded (explicit stack; at most 128 directory fds open). A directory that was renamed or mounted
   *   over while its fd was closed for depth rejects with ESTALE.
   * - The non-directories of a directory with 4 or more of them are unlinked by the walker and 7 helper threads at
   *   once (started on the first such directory, joined before the call settles): freeing data blocks can wait for
   *   the device (online discard), which a single thread would serialize.
   * - Any other failure stops the walk and rejects Node-style (code, errno, syscall, path of the failing entry);
   *   what was removed until then stays removed.
   */
  removeTree(path: string): Promise<RemoveTreeResult>;
}
