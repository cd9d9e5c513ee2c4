"use strict";
/**
 * Linux ABI constants used with {@link NativeBindings} (x86_64 / generic values; identical on arm64).
 * @module
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.FsMagic = exports.FileType = exports.OpenFlags = exports.XattrFlags = exports.RenameFlags = exports.FallocFlags = exports.UmountFlags = exports.MountFlags = void 0;
exports.makedev = makedev;
exports.major = major;
exports.minor = minor;
/** mount(2) flags. */
exports.MountFlags = {
    MS_RDONLY: 0x1,
    MS_NOSUID: 0x2,
    MS_NODEV: 0x4,
    MS_NOEXEC: 0x8,
    MS_SYNCHRONOUS: 0x10,
    MS_REMOUNT: 0x20,
    MS_MANDLOCK: 0x40,
    MS_DIRSYNC: 0x80,
    MS_NOATIME: 0x400,
    MS_NODIRATIME: 0x800,
    MS_BIND: 0x1000,
    MS_MOVE: 0x2000,
    MS_REC: 0x4000,
    MS_SILENT: 0x8000,
    MS_UNBINDABLE: 0x20000,
    MS_PRIVATE: 0x40000,
    MS_SLAVE: 0x80000,
    MS_SHARED: 0x100000,
    MS_RELATIME: 0x200000,
    MS_STRICTATIME: 0x1000000,
    MS_LAZYTIME: 0x2000000,
};
/** umount2(2) flags. */
exports.UmountFlags = {
    MNT_FORCE: 0x1,
    MNT_DETACH: 0x2,
    MNT_EXPIRE: 0x4,
    UMOUNT_NOFOLLOW: 0x8,
};
/** fallocate(2) modes. */
exports.FallocFlags = {
    FALLOC_FL_KEEP_SIZE: 0x01,
    FALLOC_FL_PUNCH_HOLE: 0x02,
    FALLOC_FL_COLLAPSE_RANGE: 0x08,
    FALLOC_FL_ZERO_RANGE: 0x10,
    FALLOC_FL_INSERT_RANGE: 0x20,
};
/** renameat2(2) flags. */
exports.RenameFlags = {
    RENAME_NOREPLACE: 0x1,
    RENAME_EXCHANGE: 0x2,
    RENAME_WHITEOUT: 0x4,
};
/** xattr set flags. */
exports.XattrFlags = {
    XATTR_CREATE: 0x1,
    XATTR_REPLACE: 0x2,
};
/** open(2) flags for {@link NativeBindings.openBounded}. */
exports.OpenFlags = {
    O_RDONLY: 0o0,
    O_WRONLY: 0o1,
    O_RDWR: 0o2,
    O_CREAT: 0o100,
    O_EXCL: 0o200,
    O_NOCTTY: 0o400,
    O_TRUNC: 0o1000,
    O_APPEND: 0o2000,
    O_NONBLOCK: 0o4000,
    O_DIRECTORY: 0o200000,
    O_NOFOLLOW: 0o400000,
    O_CLOEXEC: 0o2000000,
    O_PATH: 0o10000000,
};
/** File type bits of st_mode. */
exports.FileType = {
    S_IFMT: 0o170000,
    S_IFSOCK: 0o140000,
    S_IFLNK: 0o120000,
    S_IFREG: 0o100000,
    S_IFBLK: 0o060000,
    S_IFDIR: 0o040000,
    S_IFCHR: 0o020000,
    S_IFIFO: 0o010000,
};
/** statfs(2) f_type magics of the filesystems graphdriver cares about. */
exports.FsMagic = {
    BTRFS: 0x9123683e,
    EXT4: 0xef53,
    XFS: 0x58465342,
    TMPFS: 0x01021994,
    OVERLAY: 0x794c7630,
    AUFS: 0x61756673,
    ZFS: 0x2fc12fc1,
    ECRYPTFS: 0xf15f,
    NFS: 0x6969,
    SQUASHFS: 0x73717368,
    RAMFS: 0x858458f6,
    PROC: 0x9fa0,
    F2FS: 0xf2f52010,
    FUSE: 0x65735546,
};
/** Linux dev_t encoding (glibc `makedev`), in plain arithmetic so it never overflows 32-bit bit operations. */
function makedev(maj, min) {
    return (min % 256) + (maj % 4096) * 256 + Math.floor(min / 256) * 2 ** 20 + Math.floor(maj / 4096) * 2 ** 44;
}
/** Major number of a dev_t (glibc `major`). */
function major(dev) {
    return (Math.floor(dev / 256) % 4096) + Math.floor(dev / 2 ** 44) * 4096;
}
/** Minor number of a dev_t (glibc `minor`). */
function minor(dev) {
    return (dev % 256) + (Math.floor(dev / 2 ** 20) % 2 ** 24) * 256;
}
//# sourceMappingURL=constants.js.map