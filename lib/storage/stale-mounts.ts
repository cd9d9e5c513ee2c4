/**
 * Mounts found in a store when it is opened: the ones a process left on purpose (`Storage.close({ keepMounts })`,
 * e.g. the CLI's `graphdriver mount`), recorded in `<root>/kept-mounts.json`, and the ones a process that died
 * (crash, SIGKILL) left behind, which nobody will ever unmount unless the next open does.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { mountsBelow, readMountInfo } from '../drivers/overlay2/mountinfo';
import { HEX64_RE } from '../layer/digest';
import { loadBindings } from '../native/bindings';
import { UmountFlags } from '../native/constants';
import type { NativeBindings } from '../native/types';
import { atomicWriteFile, errCode, readTextIfExists } from './fsutil';

/** Name of the record of kept mounts in the store root. */
export const KEPT_MOUNTS_FILE = 'kept-mounts.json';

/** A container's root filesystem left mounted on purpose. */
export interface KeptMount {
  /** Container id (64 hex). */
  container: string;
  /** Mount point, symlinks resolved (as the kernel reports it). */
  path: string;
}

/** Reads the record (entries of the wrong shape are dropped: the file is only a hint, never trusted as a path). */
export async function readKeptMounts(root: string): Promise<KeptMount[]> {
  let text: string | null;
  try {
    text = await readTextIfExists(path.join(root, KEPT_MOUNTS_FILE));
  } catch {
    return [];
  }
  if (text === null) return [];
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return [];
  }
  if (!Array.isArray(v)) return [];
  return v.filter(
    (k): k is KeptMount =>
      typeof k === 'object' && k !== null && typeof (k as KeptMount).container === 'string' && HEX64_RE.test((k as KeptMount).container) && typeof (k as KeptMount).path === 'string' && path.isAbsolute((k as KeptMount).path),
  );
}

/** Replaces the record (removes it when there is nothing to keep). */
export async function writeKeptMounts(root: string, kept: readonly KeptMount[], sync: boolean): Promise<void> {
  const file = path.join(root, KEPT_MOUNTS_FILE);
  if (kept.length === 0) {
    await fs.rm(file, { force: true });
    return;
  }
  await atomicWriteFile(file, `${JSON.stringify(kept)}\n`, { sync }, 0o600);
}

/** `p` with symlinks resolved, or as it is when it cannot be resolved. */
export async function realPath(p: string): Promise<string> {
  try {
    return await fs.realpath(p);
  } catch (e) {
    if (errCode(e) === 'ENOENT' || errCode(e) === 'ENOTDIR') return p;
    throw e;
  }
}

/**
 * Settles the mounts below `home`, a driver home whose store lock the caller holds (so no live process uses the
 * store): mounts recorded as kept that are still mounted stay (with whatever is mounted below them); every other
 * mount strictly below the home was left by a process that died and is unmounted (MNT_DETACH, deepest first). The
 * home itself may be a mount point (a dedicated filesystem) and is left alone. Failures are reported through
 * `warn` and skipped. Resolves to the kept mounts that are still there.
 */
export async function settleMounts(root: string, home: string, bindings: NativeBindings | undefined, warn: (m: string) => void): Promise<KeptMount[]> {
  const realHome = await realPath(home);
  const below = mountsBelow(await readMountInfo(), realHome);
  const mounted = new Set(below.map((m) => m.mountPoint));
  const kept = (await readKeptMounts(root)).filter((k) => mounted.has(k.path));
  const isKept = (mp: string): boolean => kept.some((k) => mp === k.path || mp.startsWith(`${k.path}/`));
  const stale = below.filter((m) => !isKept(m.mountPoint));
  if (stale.length > 0) {
    const b = bindings ?? loadBindings();
    for (const m of stale) {
      try {
        await b.umount(m.mountPoint, UmountFlags.MNT_DETACH);
      } catch (e) {
        warn(`could not unmount ${m.mountPoint}, left mounted by a process that died: ${(e as Error).message}`);
      }
    }
  }
  return kept;
}
