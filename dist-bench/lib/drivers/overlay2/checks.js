"use strict";
var __createBinding = (this && this.__createBinding) || (Object.create ? (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    var desc = Object.getOwnPropertyDescriptor(m, k);
    if (!desc || ("get" in desc ? !m.__esModule : desc.writable || desc.configurable)) {
      desc = { enumerable: true, get: function() { return m[k]; } };
    }
    Object.defineProperty(o, k2, desc);
}) : (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    o[k2] = m[k];
}));
var __setModuleDefault = (this && this.__setModuleDefault) || (Object.create ? (function(o, v) {
    Object.defineProperty(o, "default", { enumerable: true, value: v });
}) : function(o, v) {
    o["default"] = v;
});
var __importStar = (this && this.__importStar) || (function () {
    var ownKeys = function(o) {
        ownKeys = Object.getOwnPropertyNames || function (o) {
            var ar = [];
            for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) ar[ar.length] = k;
            return ar;
        };
        return ownKeys(o);
    };
    return function (mod) {
        if (mod && mod.__esModule) return mod;
        var result = {};
        if (mod != null) for (var k = ownKeys(mod), i = 0; i < k.length; i++) if (k[i] !== "default") __createBinding(result, mod, k[i]);
        __setModuleDefault(result, mod);
        return result;
    };
})();
Object.defineProperty(exports, "__esModule", { value: true });
exports.realProbe = exports.INCOMPATIBLE_FS = exports.OverlayMountTestError = exports.CHECK_PREFIX = void 0;
exports.backingFsName = backingFsName;
exports.isKernelDirent = isKernelDirent;
/**
 * What overlay2 finds out about the kernel and the backing filesystem at init, as Docker does: overlay support,
 * d_type, the native-diff hazards (opaque copy-up bug, redirect_dir) and metacopy. The checks that need real
 * overlay behaviour mount small test overlays in hidden directories of the home.
 * @module
 */
const node_fs_1 = require("node:fs");
const fs = __importStar(require("node:fs/promises"));
const path = __importStar(require("node:path"));
const constants_1 = require("../../native/constants");
const mountinfo_1 = require("./mountinfo");
/** Prefix of the scratch directories of the checks (layer ids never start with '.', so no clash). */
exports.CHECK_PREFIX = '.check-';
/** The mount of a test overlay failed: overlay cannot work on this backing filesystem. */
class OverlayMountTestError extends Error {
    constructor(cause) {
        super(`test overlay mount failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    }
}
exports.OverlayMountTestError = OverlayMountTestError;
/** Docker's names of backing filesystems (fstype.FsNames), by statfs magic. */
const FS_NAMES = new Map([
    [constants_1.FsMagic.AUFS, 'aufs'],
    [constants_1.FsMagic.BTRFS, 'btrfs'],
    [0x28cd3d45, 'cramfs'],
    [constants_1.FsMagic.ECRYPTFS, 'ecryptfs'],
    [constants_1.FsMagic.EXT4, 'extfs'],
    [constants_1.FsMagic.F2FS, 'f2fs'],
    [0x47504653, 'gpfs'],
    [0x000072b6, 'jffs2'],
    [0x3153464a, 'jfs'],
    [constants_1.FsMagic.NFS, 'nfs'],
    [constants_1.FsMagic.OVERLAY, 'overlayfs'],
    [constants_1.FsMagic.RAMFS, 'ramfs'],
    [0x52654973, 'reiserfs'],
    [0x0000517b, 'smb'],
    [constants_1.FsMagic.SQUASHFS, 'squashfs'],
    [constants_1.FsMagic.TMPFS, 'tmpfs'],
    [0xa501fcf5, 'vxfs'],
    [constants_1.FsMagic.XFS, 'xfs'],
    [constants_1.FsMagic.ZFS, 'zfs'],
]);
/** Docker's name of the filesystem with statfs magic `magic` ('<unknown>' when it has none). */
function backingFsName(magic) {
    return FS_NAMES.get(magic >>> 0) ?? '<unknown>';
}
/** Backing filesystems overlay2 refuses (as Docker): overlay cannot be stacked on them as upper. */
exports.INCOMPATIBLE_FS = new Set([constants_1.FsMagic.AUFS, constants_1.FsMagic.OVERLAY, constants_1.FsMagic.ZFS, constants_1.FsMagic.ECRYPTFS]);
function errCode(e) {
    return typeof e === 'object' && e !== null && 'code' in e ? String(e.code) : undefined;
}
function message(e) {
    return e instanceof Error ? e.message : String(e);
}
async function scratch(home, what) {
    return fs.mkdtemp(path.join(home, `${exports.CHECK_PREFIX}${what}-`));
}
async function unmountQuietly(b, target) {
    try {
        await b.umount(target, 0);
    }
    catch {
        await b.umount(target, constants_1.UmountFlags.MNT_DETACH).catch(() => undefined);
    }
}
async function hasOverlay() {
    try {
        const text = await fs.readFile('/proc/filesystems', 'utf8');
        return text.split('\n').some((l) => l.trim().split(/\s+/).pop() === 'overlay');
    }
    catch {
        return false;
    }
}
/**
 * d_type check, as Docker's fs.SupportsDType: a fresh file is listed and its type must come from the directory
 * entry itself. Node fills in DT_UNKNOWN entries with an lstat and then hands out a different Dirent subclass
 * (DirentFromStats), which is how the kernel's answer is told apart here.
 */
async function supportsDType(dir) {
    const td = await fs.mkdtemp(path.join(dir, `${exports.CHECK_PREFIX}dtype-`));
    try {
        await fs.writeFile(path.join(td, 'f'), '');
        const entries = await fs.readdir(td, { withFileTypes: true });
        const f = entries.find((e) => e.name === 'f');
        return f !== undefined && isKernelDirent(f);
    }
    finally {
        await fs.rm(td, { recursive: true, force: true });
    }
}
/** Whether a Dirent carries the type readdir reported (not one filled in by a stat). */
function isKernelDirent(d) {
    return Object.getPrototypeOf(d) === node_fs_1.Dirent.prototype;
}
async function nativeDiff(home, b) {
    const td = await scratch(home, 'opaque');
    try {
        for (const d of ['l1/d', 'l1/d1', 'l2/d', 'l3', 'work', 'merged'])
            await fs.mkdir(path.join(td, d), { recursive: true, mode: 0o755 });
        try {
            await b.lsetxattr(path.join(td, 'l2', 'd'), 'trusted.overlay.opaque', Buffer.from('y'), 0);
        }
        catch (e) {
            return { ok: false, reason: `failed to set opaque flag on middle layer: ${message(e)}` };
        }
        const merged = path.join(td, 'merged');
        const data = `lowerdir=${path.join(td, 'l2')}:${path.join(td, 'l1')},upperdir=${path.join(td, 'l3')},workdir=${path.join(td, 'work')}`;
        try {
            await b.mount('overlay', merged, 'overlay', 0, data);
        }
        catch (e) {
            throw new OverlayMountTestError(e);
        }
        try {
            // Writing into d copies the opaque directory d up from l2 to l3.
            try {
                await fs.writeFile(path.join(merged, 'd', 'f'), '');
            }
            catch (e) {
                return { ok: false, reason: `failed to write to merged directory: ${message(e)}` };
            }
            const opaque = await b.lgetxattr(path.join(td, 'l3', 'd'), 'trusted.overlay.opaque');
            if (opaque !== null && opaque.toString() === 'y') {
                return { ok: false, reason: 'opaque flag erroneously copied up, consider update to kernel 4.8 or later to fix' };
            }
            try {
                await fs.rename(path.join(merged, 'd1'), path.join(merged, 'd2'));
            }
            catch (e) {
                // EXDEV: the kernel does not redirect directory renames (no redirect_dir): upper dirs stay readable.
                if (errCode(e) === 'EXDEV')
                    return { ok: true, reason: '' };
                return { ok: false, reason: `failed to rename dir in merged directory: ${message(e)}` };
            }
            const redirect = await b.lgetxattr(path.join(td, 'l3', 'd2'), 'trusted.overlay.redirect');
            if (redirect !== null && redirect.toString() === 'd1') {
                return { ok: false, reason: 'kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled' };
            }
            return { ok: true, reason: '' };
        }
        finally {
            await unmountQuietly(b, merged);
        }
    }
    finally {
        await fs.rm(td, { recursive: true, force: true });
    }
}
async function metacopy(home, b) {
    const td = await scratch(home, 'metacopy');
    try {
        for (const d of ['l1', 'l2', 'work', 'merged'])
            await fs.mkdir(path.join(td, d), { mode: 0o755 });
        await fs.writeFile(path.join(td, 'l1', 'f'), '', { mode: 0o700 });
        const merged = path.join(td, 'merged');
        const data = `lowerdir=${path.join(td, 'l1')},upperdir=${path.join(td, 'l2')},workdir=${path.join(td, 'work')}`;
        try {
            await b.mount('overlay', merged, 'overlay', 0, data);
        }
        catch {
            return false;
        }
        try {
            // A metadata-only change: with metacopy the copy in the upper dir is marked as metadata-only.
            await fs.chmod(path.join(merged, 'f'), 0o600);
            return (await b.lgetxattr(path.join(td, 'l2', 'f'), 'trusted.overlay.metacopy')) !== null;
        }
        finally {
            await unmountQuietly(b, merged);
        }
    }
    finally {
        await fs.rm(td, { recursive: true, force: true });
    }
}
async function indexParam() {
    try {
        await fs.stat('/sys/module/overlay/parameters/index');
        return true;
    }
    catch {
        return false;
    }
}
/** The probes used outside tests. */
exports.realProbe = {
    hasOverlay,
    supportsDType,
    nativeDiff,
    metacopy,
    indexParam,
    mountInfo: () => (0, mountinfo_1.readMountInfo)(),
};
//# sourceMappingURL=checks.js.map