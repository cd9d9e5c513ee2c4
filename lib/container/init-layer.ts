/**
 * The container init layer's content, as Docker's daemon/initlayer.Setup writes it: mount points the runtime
 * binds over (/dev/pts, /dev/shm, /proc, /sys, /.dockerenv, /etc/resolv.conf, /etc/hosts, /etc/hostname,
 * /dev/console) and /etc/mtab → /proc/mounts.
 *
 * For each path Docker first unlinks every component (so a file or symlink planted by the image at `/etc`, at
 * `/etc/hosts`, ... is removed; directories stay), then creates what is missing: directories 0755, empty files
 * 0755, owned by root, leaving an existing entry alone. Here every step goes through the native batched
 * primitives on an fd of the layer root (paths resolved inside the root by the kernel), so no symlink in the
 * image can redirect a write outside the layer.
 * @module
 */
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';

import { loadBindings } from '../native/bindings';
import { FileType } from '../native/constants';
import type { ApplyEntry, ApplyResult, NativeBindings } from '../native/types';

/** What the init layer holds: kind is 'dir', 'file', or a symlink target. */
export const INIT_PATHS: ReadonlyArray<readonly [string, 'dir' | 'file' | { symlink: string }]> = Object.freeze([
  ['/dev/pts', 'dir'],
  ['/dev/shm', 'dir'],
  ['/proc', 'dir'],
  ['/sys', 'dir'],
  ['/.dockerenv', 'file'],
  ['/etc/resolv.conf', 'file'],
  ['/etc/hosts', 'file'],
  ['/etc/hostname', 'file'],
  ['/dev/console', 'file'],
  ['/etc/mtab', { symlink: '/proc/mounts' }],
] as const);

function failure(r: ApplyResult, p: string): Error {
  return Object.assign(new Error(`${r.code}: ${r.syscall} failed for ${JSON.stringify(p)} while writing the container init layer`), {
    code: r.code,
    errno: -r.errno,
    syscall: r.syscall,
    path: p,
  });
}

/** Options of {@link setupInitLayer}. */
export interface InitLayerOptions {
  bindings?: NativeBindings;
  /** Owner of what is created (default root, when running as root; the caller's own otherwise). */
  uid?: number;
  gid?: number;
}

/** Root-relative prefixes of a path: 'etc/hosts' → ['etc', 'etc/hosts']. */
function prefixesOf(abs: string): string[] {
  const parts = abs.split('/').filter(Boolean);
  return parts.map((_, i) => parts.slice(0, i + 1).join('/'));
}

/**
 * Writes the init files into the layer mounted at `root`, in three native calls: lstat of every path component,
 * removal of the non-directories among them (a planted symlink or file at `etc` goes before anything is written
 * below it, and whatever was below it is then known to be gone), then the creation of what is missing, parents
 * first. The result is what Docker's per-path unlink-then-create sequence leaves.
 */
export async function setupInitLayer(root: string, opts: InitLayerOptions = {}): Promise<void> {
  const b = opts.bindings ?? loadBindings();
  const isRoot = process.getuid?.() === 0;
  const owner = opts.uid !== undefined && opts.gid !== undefined ? { uid: opts.uid, gid: opts.gid } : isRoot ? { uid: 0, gid: 0 } : {};
  const all = [...new Set(INIT_PATHS.flatMap(([abs]) => prefixesOf(abs)))];
  const rootFd = await fs.open(root, fsSync.constants.O_RDONLY | fsSync.constants.O_DIRECTORY);
  const fd = rootFd.fd;
  const run = async (entries: ApplyEntry[]): Promise<void> => {
    if (entries.length === 0) return;
    const results = await b.applyEntries(fd, entries);
    entries.forEach((e, i) => {
      const r = results[i];
      if (!r || r.errno !== 0) throw failure(r ?? { errno: 5, code: 'EIO', syscall: 'applyEntries', fd: -1 }, e.path);
    });
  };
  try {
    const stats = await b.lstatMany(fd, all);
    const isDir = new Map<string, boolean | null>(all.map((p, i) => [p, stats[i] ? (stats[i]!.mode & FileType.S_IFMT) === FileType.S_IFDIR : null]));
    // A component under a removed or missing one does not exist (its lstat went through a symlink, or failed).
    const gone = (p: string): boolean => {
      const parts = p.split('/');
      for (let i = 1; i < parts.length; i++) if (isDir.get(parts.slice(0, i).join('/')) !== true) return true;
      return false;
    };
    const removals = all.filter((p) => isDir.get(p) === false && !gone(p)).sort((x, y) => x.split('/').length - y.split('/').length);
    await run(removals.map((p) => ({ op: 'remove' as const, path: p })));
    const present = new Set(all.filter((p) => isDir.get(p) === true && !gone(p)));
    const creates: ApplyEntry[] = [];
    for (const [abs, kind] of INIT_PATHS) {
      const prefixes = prefixesOf(abs);
      const target = prefixes[prefixes.length - 1]!;
      if (present.has(target)) continue; // an existing directory stays as it is (anything else was removed)
      for (const d of prefixes.slice(0, -1)) {
        if (present.has(d)) continue;
        creates.push({ op: 'create', path: d, type: 'dir', mode: 0o755, noReplace: true, ...owner });
        present.add(d);
      }
      if (kind === 'dir') creates.push({ op: 'create', path: target, type: 'dir', mode: 0o755, noReplace: true, ...owner });
      else if (kind === 'file') creates.push({ op: 'create', path: target, type: 'file', mode: 0o755, data: Buffer.alloc(0), noReplace: true, ...owner });
      else creates.push({ op: 'create', path: target, type: 'symlink', linkname: kind.symlink, noReplace: true, ...owner });
      present.add(target);
    }
    await run(creates);
  } finally {
    await rootFd.close();
  }
}
