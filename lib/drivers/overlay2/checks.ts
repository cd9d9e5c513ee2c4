/**
 * What overlay2 finds out about the kernel and the backing filesystem at init, as Docker does: overlay support,
 * d_type, the native-diff hazards (opaque copy-up bug, redirect_dir) and metacopy. The checks that need real
 * overlay behaviour mount small test overlays in hidden directories of the home.
 * @module
 */
import { Dirent } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { FsMagic, UmountFlags } from '../../native/constants';
import type { NativeBindings } from '../../native/types';
import { readMountInfo, type MountInfoEntry } from './mountinfo';

/** Prefix of the scratch directories of the checks (layer ids never start with '.', so no clash). */
export const CHECK_PREFIX = '.check-';

/** Outcome of the native-diff check. */
export interface NativeDiffCheck {
  /** Whether diffs can be read straight from the upper directories. */
  ok: boolean;
  /** Why not (empty when ok). */
  reason: string;
}

/** The mount of a test overlay failed: overlay cannot work on this backing filesystem. */
export class OverlayMountTestError extends Error {
  constructor(cause: unknown) {
    super(`test overlay mount failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** Kernel and filesystem probes (tests replace them). */
export interface OverlayProbe {
  /** Whether /proc/filesystems lists overlay. */
  hasOverlay(): Promise<boolean>;
  /** Whether readdir on `dir`'s filesystem reports file types (d_type) without a stat. */
  supportsDType(dir: string): Promise<boolean>;
  /** Docker's doesSupportNativeDiff, run in a scratch directory of `home`. Throws OverlayMountTestError. */
  nativeDiff(home: string, b: NativeBindings): Promise<NativeDiffCheck>;
  /** Whether the kernel copies up metadata only (metacopy), tested in a scratch directory of `home`. */
  metacopy(home: string, b: NativeBindings): Promise<boolean>;
  /** Whether the overlay module has the `index` parameter (then mounts pass `index=off`). */
  indexParam(): Promise<boolean>;
  /** The mount table of this process. */
  mountInfo(): Promise<MountInfoEntry[]>;
}

/** Docker's names of backing filesystems (fstype.FsNames), by statfs magic. */
const FS_NAMES = new Map<number, string>([
  [FsMagic.AUFS, 'aufs'],
  [FsMagic.BTRFS, 'btrfs'],
  [0x28cd3d45, 'cramfs'],
  [FsMagic.ECRYPTFS, 'ecryptfs'],
  [FsMagic.EXT4, 'extfs'],
  [FsMagic.F2FS, 'f2fs'],
  [0x47504653, 'gpfs'],
  [0x000072b6, 'jffs2'],
  [0x3153464a, 'jfs'],
  [FsMagic.NFS, 'nfs'],
  [FsMagic.OVERLAY, 'overlayfs'],
  [FsMagic.RAMFS, 'ramfs'],
  [0x52654973, 'reiserfs'],
  [0x0000517b, 'smb'],
  [FsMagic.SQUASHFS, 'squashfs'],
  [FsMagic.TMPFS, 'tmpfs'],
  [0xa501fcf5, 'vxfs'],
  [FsMagic.XFS, 'xfs'],
  [FsMagic.ZFS, 'zfs'],
]);

/** Docker's name of the filesystem with statfs magic `magic` ('<unknown>' when it has none). */
export function backingFsName(magic: number): string {
  return FS_NAMES.get(magic >>> 0) ?? '<unknown>';
}

/** Backing filesystems overlay2 refuses (as Docker): overlay cannot be stacked on them as upper. */
export const INCOMPATIBLE_FS: ReadonlySet<number> = new Set([FsMagic.AUFS, FsMagic.OVERLAY, FsMagic.ZFS, FsMagic.ECRYPTFS]);

function errCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : undefined;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function scratch(home: string, what: string): Promise<string> {
  return fs.mkdtemp(path.join(home, `${CHECK_PREFIX}${what}-`));
}

async function unmountQuietly(b: NativeBindings, target: string): Promise<void> {
  try {
    await b.umount(target, 0);
  } catch {
    await b.umount(target, UmountFlags.MNT_DETACH).catch(() => undefined);
  }
}

async function hasOverlay(): Promise<boolean> {
  try {
    const text = await fs.readFile('/proc/filesystems', 'utf8');
    return text.split('\n').some((l) => l.trim().split(/\s+/).pop() === 'overlay');
  } catch {
    return false;
  }
}

/**
 * d_type check, as Docker's fs.SupportsDType: a fresh file is listed and its type must come from the directory
 * entry itself. Node fills in DT_UNKNOWN entries with an lstat and then hands out a different Dirent subclass
 * (DirentFromStats), which is how the kernel's answer is told apart here.
 */
async function supportsDType(dir: string): Promise<boolean> {
  const td = await fs.mkdtemp(path.join(dir, `${CHECK_PREFIX}dtype-`));
  try {
    await fs.writeFile(path.join(td, 'f'), '');
    const entries = await fs.readdir(td, { withFileTypes: true });
    const f = entries.find((e) => e.name === 'f');
    return f !== undefined && isKernelDirent(f);
  } finally {
    await fs.rm(td, { recursive: true, force: true });
  }
}

/** Whether a Dirent carries the type readdir reported (not one filled in by a stat). */
export function isKernelDirent(d: object): boolean {
  return Object.getPrototypeOf(d) === Dirent.prototype;
}

async function nativeDiff(home: string, b: NativeBindings): Promise<NativeDiffCheck> {
  const td = await scratch(home, 'opaque');
  try {
    for (const d of ['l1/d', 'l1/d1', 'l2/d', 'l3', 'work', 'merged']) await fs.mkdir(path.join(td, d), { recursive: true, mode: 0o755 });
    try {
      await b.lsetxattr(path.join(td, 'l2', 'd'), 'trusted.overlay.opaque', Buffer.from('y'), 0);
    } catch (e) {
      return { ok: false, reason: `failed to set opaque flag on middle layer: ${message(e)}` };
    }
    const merged = path.join(td, 'merged');
    const data = `lowerdir=${path.join(td, 'l2')}:${path.join(td, 'l1')},upperdir=${path.join(td, 'l3')},workdir=${path.join(td, 'work')}`;
    try {
      await b.mount('overlay', merged, 'overlay', 0, data);
    } catch (e) {
      throw new OverlayMountTestError(e);
    }
    try {
      // Writing into d copies the opaque directory d up from l2 to l3.
      try {
        await fs.writeFile(path.join(merged, 'd', 'f'), '');
      } catch (e) {
        return { ok: false, reason: `failed to write to merged directory: ${message(e)}` };
      }
      const opaque = await b.lgetxattr(path.join(td, 'l3', 'd'), 'trusted.overlay.opaque');
      if (opaque !== null && opaque.toString() === 'y') {
        return { ok: false, reason: 'opaque flag erroneously copied up, consider update to kernel 4.8 or later to fix' };
      }
      try {
        await fs.rename(path.join(merged, 'd1'), path.join(merged, 'd2'));
      } catch (e) {
        // EXDEV: the kernel does not redirect directory renames (no redirect_dir): upper dirs stay readable.
        if (errCode(e) === 'EXDEV') return { ok: true, reason: '' };
        return { ok: false, reason: `failed to rename dir in merged directory: ${message(e)}` };
      }
      const redirect = await b.lgetxattr(path.join(td, 'l3', 'd2'), 'trusted.overlay.redirect');
      if (redirect !== null && redirect.toString() === 'd1') {
        return { ok: false, reason: 'kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled' };
      }
      return { ok: true, reason: '' };
    } finally {
      await unmountQuietly(b, merged);
    }
  } finally {
    await fs.rm(td, { recursive: true, force: true });
  }
}

async function metacopy(home: string, b: NativeBindings): Promise<boolean> {
  const td = await scratch(home, 'metacopy');
  try {
    for (const d of ['l1', 'l2', 'work', 'merged']) await fs.mkdir(path.join(td, d), { mode: 0o755 });
    await fs.writeFile(path.join(td, 'l1', 'f'), '', { mode: 0o700 });
    const merged = path.join(td, 'merged');
    const data = `lowerdir=${path.join(td, 'l1')},upperdir=${path.join(td, 'l2')},workdir=${path.join(td, 'work')}`;
    try {
      await b.mount('overlay', merged, 'overlay', 0, data);
    } catch {
      return false;
    }
    try {
      // A metadata-only change: with metacopy the copy in the upper dir is marked as metadata-only.
      await fs.chmod(path.join(merged, 'f'), 0o600);
      return (await b.lgetxattr(path.join(td, 'l2', 'f'), 'trusted.overlay.metacopy')) !== null;
    } finally {
      await unmountQuietly(b, merged);
    }
  } finally {
    await fs.rm(td, { recursive: true, force: true });
  }
}

async function indexParam(): Promise<boolean> {
  try {
    await fs.stat('/sys/module/overlay/parameters/index');
    return true;
  } catch {
    return false;
  }
}

/** The probes used outside tests. */
export const realProbe: OverlayProbe = {
  hasOverlay,
  supportsDType,
  nativeDiff,
  metacopy,
  indexParam,
  mountInfo: () => readMountInfo(),
};
