/**
 * What aufs finds out about the kernel and the tools at init, as Docker's: whether the kernel has aufs (loading
 * the module when it is not listed yet), whether it takes the `dirperm1` option (a test mount), and where
 * auplink is (used before every unmount when installed).
 * @module
 */
import { spawn } from 'node:child_process';
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { UmountFlags } from '../../native/constants';
import type { NativeBindings } from '../../native/types';
import { DIRPERM1_OPTION, FSTYPE, MOUNT_SOURCE, XINO_OPTION } from './branches';
import { CHECK_PREFIX } from './layout';

/** Kernel and tool probes (tests replace them). */
export interface AufsProbe {
  /** Whether /proc/filesystems lists aufs, after a `modprobe aufs` attempt when it does not at first. */
  hasAufs(): Promise<boolean>;
  /** Docker's useDirperm: whether a test union mounted with `dirperm1` in a scratch directory of `home` works. */
  dirperm1(home: string, b: NativeBindings): Promise<boolean>;
  /** Absolute path of the auplink tool, null when it is not installed. */
  auplink(): Promise<string | null>;
}

async function listsAufs(): Promise<boolean> {
  try {
    const text = await fs.readFile('/proc/filesystems', 'utf8');
    return text.split('\n').some((l) => l.trim().split(/\s+/).pop() === 'aufs');
  } catch {
    return false;
  }
}

/** Runs a command to completion, ignoring its output; resolves to its exit code (-1 when it could not start). */
export function runQuietly(cmd: string, args: readonly string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: 'ignore' });
    child.on('error', () => resolve(-1));
    child.on('close', (code) => resolve(code ?? -1));
  });
}

async function hasAufs(): Promise<boolean> {
  if (await listsAufs()) return true;
  // Docker's supportsAufs: the module may just not be loaded yet.
  await runQuietly('modprobe', ['aufs']);
  return listsAufs();
}

/** The first executable `name` on PATH (plus the sbin directories, where auplink lives), or null. */
export async function findTool(name: string): Promise<string | null> {
  const dirs = (process.env.PATH ?? '').split(':').filter((d) => d !== '').concat(['/usr/local/sbin', '/usr/sbin', '/sbin']);
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      await fs.access(p, fsSync.constants.X_OK);
      if ((await fs.stat(p)).isFile()) return p;
    } catch {
      // not here
    }
  }
  return null;
}

async function dirperm1(home: string, b: NativeBindings): Promise<boolean> {
  const td = await fs.mkdtemp(path.join(home, `${CHECK_PREFIX}dirperm1-`));
  try {
    const base = path.join(td, 'base');
    const union = path.join(td, 'union');
    await fs.mkdir(base, { mode: 0o755 });
    await fs.mkdir(union, { mode: 0o755 });
    try {
      await b.mount(MOUNT_SOURCE, union, FSTYPE, 0, `br:${base},${DIRPERM1_OPTION},${XINO_OPTION}`);
    } catch {
      return false;
    }
    try {
      await b.umount(union, 0);
    } catch {
      await b.umount(union, UmountFlags.MNT_DETACH).catch(() => undefined);
    }
    return true;
  } finally {
    await fs.rm(td, { recursive: true, force: true });
  }
}

/** The probes used outside tests. */
export const realProbe: AufsProbe = {
  hasAufs,
  dirperm1,
  auplink: () => findTool('auplink'),
};
