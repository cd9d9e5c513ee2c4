/**
 * A test-only stand-in for the kernel's aufs, for machines without it: a NativeBindings wrapper that, for
 * fstype 'aufs', builds the union the kernel would show and bind-mounts it (for real) on the target, so that
 * everything around the union (mount data, remounts, the mount table, busy unmounts, reference counts, the
 * driver's diff directories) runs for real. Only the union itself is emulated:
 *
 * - mount: parses `br:<dir>[=perm]:...` and the options aufs would accept (dio, xino=, dirperm1, context=),
 *   refuses data longer than a page (the kernel would truncate it silently), copies the union of the branches
 *   into a staging directory honouring `.wh.<name>` whiteouts, `.wh..wh..opq` opaque directories and the aufs
 *   rules for merging directories (a non-directory or a whiteout ends a directory's merge with lower branches),
 *   then bind-mounts the staging directory on the target; a read-write top branch gets aufs's metadata at its
 *   root (`.wh..wh.aufs`, `.wh..wh.orph/`, `.wh..wh.plnk/`), as the kernel does;
 * - MS_REMOUNT with `append:<dir>[=perm]` options (several per call, applied in order): what was written so far
 *   is written back, the branches are appended, and the union rebuilt;
 * - umount: writes the changes made in the union back into the read-write branch as aufs would have made them
 *   (new and changed entries copied up, hardlinks kept together, deletions of lower entries as `.wh.` files,
 *   removals of the branch's own entries as removals, a directory re-created over a whiteout marked opaque), then
 *   unmounts the bind mount (so EBUSY with files open in it is the kernel's own).
 *
 * Everything else passes through to the real bindings.
 */
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import { FileType, MountFlags, UmountFlags, major, minor } from '../../lib/native/constants';
import { signatures } from '../../lib/native/signatures';
import type { ApplyEntry, NativeBindings, ScanEntry } from '../../lib/native/types';

const WH = '.wh.';
const WH_META = '.wh..wh.';
const OPAQUE = '.wh..wh..opq';
const BATCH = 256;

/** Branch permissions aufs knows that the stand-in accepts. */
export type BranchPerm = 'rw' | 'ro' | 'ro+wh' | 'rr' | 'rr+wh';
const PERMS: ReadonlySet<string> = new Set(['rw', 'ro', 'ro+wh', 'rr', 'rr+wh']);

export interface Branch {
  dir: string;
  perm: BranchPerm;
}

/** One union mounted by the stand-in. */
export interface StandInMount {
  target: string;
  /** Top first. */
  branches: Branch[];
  staging: string;
  options: string[];
  /** Scans of the branches, kept while mounted: only the stand-in writes to them then (aufs's own rule). */
  scans: BranchScan[];
  /** The union the staging directory was filled with. */
  view: UnionView;
  /** Signatures of the staging entries right after filling: unchanged ones need no write-back. */
  snapshot: Map<string, string>;
}

/** Every aufs mount(2) call the stand-in saw, in order. */
export interface AufsCall {
  target: string;
  flags: number;
  data: string | null;
}

function nativeError(code: string, errno: number, syscall: string, p: string, why: string): Error {
  return Object.assign(new Error(`${code}: ${why}, ${syscall} '${p}'`), { code, errno: -errno, syscall, path: p });
}

const isDir = (e: ScanEntry): boolean => (e.mode & FileType.S_IFMT) === FileType.S_IFDIR;
const typeOf = (e: ScanEntry): number => e.mode & FileType.S_IFMT;
const join = (dir: string, name: string): string => (dir === '/' ? `/${name}` : `${dir}/${name}`);
const rel = (p: string): string => p.slice(1);
const parentOf = (p: string): string => {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
};

/** Splits mount options at commas outside double quotes (labels hold commas). */
export function splitOptions(data: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of data) {
    if (ch === '"') quoted = !quoted;
    if (ch === ',' && !quoted) {
      out.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  out.push(cur);
  return out;
}

/** One branch, scanned: entries by path and child names by directory. */
export interface BranchScan {
  entries: Map<string, ScanEntry>;
  children: Map<string, string[]>;
  /** Whiteouts of this branch are honoured (rw, ro+wh, rr+wh). */
  whiteouts: boolean;
}

interface Visible {
  entry: ScanEntry;
  /** Index of the branch the entry comes from. */
  branch: number;
}

/** A union view: visible entries by path (walk order) and visible child names by directory. */
export interface UnionView {
  entries: Map<string, Visible>;
  children: Map<string, string[]>;
}

/**
 * The union aufs shows of `scans[from..]` (top first): in every directory, a name comes from the highest branch
 * holding it; a directory merges with the same directory of lower branches until a branch has a non-directory
 * there, a whiteout `.wh.<name>` hides it, or an opaque marker closes the parent; whiteouts and aufs metadata
 * are never visible.
 */
function unionView(scans: readonly BranchScan[], from: number): UnionView {
  const entries = new Map<string, Visible>();
  const children = new Map<string, string[]>();
  const visit = (dir: string, contributors: readonly number[]): void => {
    const hidden = new Set<string>();
    const found = new Map<string, { top: number; chain: number[]; open: boolean }>();
    for (const bi of contributors) {
      const sc = scans[bi]!;
      let opaque = false;
      const whiteouts: string[] = [];
      for (const name of sc.children.get(dir) ?? []) {
        if (name.startsWith(WH)) {
          if (!sc.whiteouts) continue;
          if (name === OPAQUE) opaque = true;
          else if (!name.startsWith(WH_META)) whiteouts.push(name.slice(WH.length));
          continue;
        }
        if (hidden.has(name)) continue;
        const e = sc.entries.get(join(dir, name))!;
        const f = found.get(name);
        if (f === undefined) found.set(name, { top: bi, chain: isDir(e) ? [bi] : [], open: isDir(e) });
        else if (f.open) {
          if (isDir(e)) f.chain.push(bi);
          else f.open = false;
        }
      }
      for (const w of whiteouts) {
        hidden.add(w);
        const f = found.get(w);
        if (f !== undefined) f.open = false;
      }
      if (opaque) break;
    }
    const names = [...found.keys()].sort();
    children.set(dir, names);
    for (const name of names) {
      const f = found.get(name)!;
      const p = join(dir, name);
      entries.set(p, { entry: scans[f.top]!.entries.get(p)!, branch: f.top });
      if (f.chain.length > 0) visit(p, f.chain);
    }
  };
  const all: number[] = [];
  for (let i = from; i < scans.length; i++) all.push(i);
  visit('/', all);
  return { entries, children };
}

function sameXattrs(a: ScanEntry, b: ScanEntry): boolean {
  const ax = a.xattrs ?? {};
  const bx = b.xattrs ?? {};
  const keys = Object.keys(ax).filter((k) => k !== 'security.selinux');
  if (keys.length !== Object.keys(bx).filter((k) => k !== 'security.selinux').length) return false;
  return keys.every((k) => bx[k] !== undefined && ax[k]!.equals(bx[k]!));
}

function sameDirMeta(a: ScanEntry, b: ScanEntry): boolean {
  return (a.mode & 0o7777) === (b.mode & 0o7777) && a.uid === b.uid && a.gid === b.gid && sameXattrs(a, b);
}

/** What changes whenever anything about an entry changes (ctime included): a cheap "untouched" test. */
function signature(e: ScanEntry): string {
  return `${e.mode}:${e.uid}:${e.gid}:${e.size}:${e.mtimeSec}.${e.mtimeNsec}:${e.ctimeSec}.${e.ctimeNsec}:${e.ino}:${e.nlink}:${e.linkname ?? ''}`;
}

function untouched(now: BranchScan, snapshot: ReadonlyMap<string, string>): boolean {
  if (now.entries.size !== snapshot.size) return false;
  for (const [p, e] of now.entries) if (snapshot.get(p) !== signature(e)) return false;
  return true;
}

/** Same entry (not counting directories' times): type, mode, owner, size, mtime, target, device, xattrs, content. */
async function sameEntry(a: ScanEntry, aPath: string, b: ScanEntry, bPath: string): Promise<boolean> {
  if (typeOf(a) !== typeOf(b) || !sameDirMeta(a, b)) return false;
  if (isDir(a)) return true;
  if (a.size !== b.size || a.mtimeSec !== b.mtimeSec || a.mtimeNsec !== b.mtimeNsec || a.rdev !== b.rdev || a.linkname !== b.linkname) return false;
  if (typeOf(a) !== FileType.S_IFREG) return true;
  // Same size and mtime after a same-tick rewrite is possible: the content decides.
  const [x, y] = await Promise.all([fs.readFile(aPath), fs.readFile(bPath)]);
  return x.equals(y);
}

/** The create entry reproducing `e` (found at `src` on disk) at `p`; null for sockets (aufs copies none either). */
async function createEntry(p: string, e: ScanEntry, src: string): Promise<ApplyEntry | null> {
  const common = {
    op: 'create' as const,
    path: rel(p),
    mode: e.mode & 0o7777,
    uid: e.uid,
    gid: e.gid,
    mtimeSec: e.mtimeSec,
    mtimeNsec: e.mtimeNsec,
    atimeSec: e.atimeSec,
    atimeNsec: e.atimeNsec,
    ...(e.xattrs !== undefined && Object.keys(e.xattrs).length > 0 ? { xattrs: e.xattrs } : {}),
  };
  switch (typeOf(e)) {
    case FileType.S_IFDIR:
      return { ...common, type: 'dir', deferTimes: true };
    case FileType.S_IFREG:
      return { ...common, type: 'file', data: await fs.readFile(src) };
    case FileType.S_IFLNK:
      return { ...common, type: 'symlink', linkname: e.linkname ?? '' };
    case FileType.S_IFCHR:
      return { ...common, type: 'char', devMajor: major(e.rdev), devMinor: minor(e.rdev) };
    case FileType.S_IFBLK:
      return { ...common, type: 'block', devMajor: major(e.rdev), devMinor: minor(e.rdev) };
    case FileType.S_IFIFO:
      return { ...common, type: 'fifo' };
    default:
      return null;
  }
}

/** A marker file aufs writes itself (whiteouts, opaque markers): empty, r--r--r--, root's. */
function markerEntry(p: string): ApplyEntry {
  return { op: 'create', path: rel(p), type: 'file', mode: 0o444, uid: 0, gid: 0, data: Buffer.alloc(0) };
}

/** The stand-in; see the module doc. `bindings` is what the driver under test gets. */
export class AufsStandIn {
  readonly bindings: NativeBindings;
  readonly calls: AufsCall[] = [];
  private readonly mounts = new Map<string, StandInMount>();
  private stagingRoot: string | null = null;
  /** The staging root is a tmpfs of its own (unions are rebuilt often; memory is much faster than a disk). */
  private stagingTmpfs = false;
  private serial = 0;
  private readonly pageSize: number;

  constructor(
    private readonly real: NativeBindings = loadBindings(),
    opts: { pageSize?: number } = {},
  ) {
    this.pageSize = opts.pageSize ?? 4096;
    const out: Record<string, unknown> = {};
    for (const name of Object.keys(signatures) as Array<keyof NativeBindings>) {
      const fn = real[name] as unknown as (...a: unknown[]) => Promise<unknown>;
      out[name] = (...a: unknown[]) => fn.apply(real, a);
    }
    out.mount = (source: string, target: string, fstype: string | null, flags: number, data: string | null) =>
      fstype === 'aufs' ? this.mount(target, flags, data) : real.mount(source, target, fstype, flags, data);
    out.umount = (target: string, flags: number) => {
      const m = this.mounts.get(path.resolve(target));
      return m === undefined ? real.umount(target, flags) : this.umount(m, flags);
    };
    this.bindings = out as unknown as NativeBindings;
  }

  /** The unions mounted now. */
  active(): StandInMount[] {
    return [...this.mounts.values()];
  }

  /** Detaches what is still mounted (without writing back) and deletes every staging directory. */
  async dispose(): Promise<void> {
    for (const m of this.mounts.values()) await this.real.umount(m.target, UmountFlags.MNT_DETACH).catch(() => undefined);
    this.mounts.clear();
    if (this.stagingRoot !== null) {
      if (this.stagingTmpfs) await this.real.umount(this.stagingRoot, UmountFlags.MNT_DETACH).catch(() => undefined);
      fsSync.rmSync(this.stagingRoot, { recursive: true, force: true });
    }
    this.stagingRoot = null;
    this.stagingTmpfs = false;
  }

  private async mount(targetArg: string, flags: number, data: string | null): Promise<void> {
    const target = path.resolve(targetArg);
    this.calls.push({ target, flags, data });
    const text = data ?? '';
    if (Buffer.byteLength(text) > this.pageSize - 1) {
      throw nativeError('EINVAL', 22, 'mount', target, `aufs stand-in: ${Buffer.byteLength(text)} bytes of mount data, the kernel would truncate them to one page`);
    }
    const opts = splitOptions(text).filter((o) => o !== '');
    if ((flags & MountFlags.MS_REMOUNT) !== 0) {
      const m = this.mounts.get(target);
      if (m === undefined) throw nativeError('EINVAL', 22, 'mount', target, 'aufs stand-in: remount of something that is not an aufs union');
      const added: Branch[] = [];
      for (const o of opts) {
        if (o.startsWith('append:')) added.push(await this.branch(o.slice('append:'.length), 'ro', target));
        else if (!o.startsWith('context=')) throw nativeError('EINVAL', 22, 'mount', target, `aufs stand-in: unknown remount option ${JSON.stringify(o)}`);
      }
      // Appending lower branches only adds entries, as long as nothing was written since the union was built.
      const now = await this.scan(m.staging, false);
      let old: UnionView | null = m.view;
      if (!untouched(now, m.snapshot)) {
        await this.writeBack(m, now);
        m.scans[0] = await this.scanBranch(m.branches[0]!);
        old = null;
      }
      m.scans.push(...(await Promise.all(added.map((b) => this.scanBranch(b)))));
      m.branches.push(...added);
      m.options.push(...opts);
      await this.materialise(m, old);
      return;
    }
    if (this.mounts.has(target)) throw nativeError('EBUSY', 16, 'mount', target, 'aufs stand-in: already a union');
    const branches: Branch[] = [];
    const options: string[] = [];
    for (const o of opts) {
      if (o.startsWith('br:')) {
        const parts = o.slice(3).split(':');
        for (const [i, part] of parts.entries()) branches.push(await this.branch(part, i === 0 ? 'rw' : 'ro', target));
      } else if (o === 'dio' || o === 'dirperm1' || o.startsWith('xino=') || o.startsWith('context=')) {
        options.push(o);
      } else {
        throw nativeError('EINVAL', 22, 'mount', target, `aufs stand-in: unknown option ${JSON.stringify(o)}`);
      }
    }
    if (branches.length === 0) throw nativeError('EINVAL', 22, 'mount', target, 'aufs stand-in: no branches');
    const st = await fs.stat(target).catch(() => null);
    if (st === null) throw nativeError('ENOENT', 2, 'mount', target, 'no such mount point');
    if (!st.isDirectory()) throw nativeError('ENOTDIR', 20, 'mount', target, 'mount point is not a directory');
    if (branches[0]!.perm === 'rw') await this.branchMetadata(branches[0]!.dir);
    const scans = await Promise.all(branches.map((b) => this.scanBranch(b)));
    const m: StandInMount = { target, branches, staging: await this.newStaging(), options, scans, view: { entries: new Map(), children: new Map() }, snapshot: new Map() };
    await this.materialise(m, null);
    await this.real.bindMount(m.staging, target);
    this.mounts.set(target, m);
  }

  private async branch(spec: string, defaultPerm: BranchPerm, target: string): Promise<Branch> {
    const eq = spec.lastIndexOf('=');
    const dir = eq < 0 ? spec : spec.slice(0, eq);
    const perm = eq < 0 ? defaultPerm : spec.slice(eq + 1);
    if (!PERMS.has(perm)) throw nativeError('EINVAL', 22, 'mount', target, `aufs stand-in: unknown branch permission ${JSON.stringify(perm)}`);
    if (!path.isAbsolute(dir)) throw nativeError('EINVAL', 22, 'mount', target, `aufs stand-in: branch ${JSON.stringify(dir)} is not absolute`);
    const st = await fs.stat(dir).catch(() => null);
    if (st === null || !st.isDirectory()) throw nativeError('ENOENT', 2, 'mount', dir, 'aufs stand-in: branch is not a directory');
    return { dir, perm: perm as BranchPerm };
  }

  /** What aufs creates at the root of a writable branch. */
  private async branchMetadata(dir: string): Promise<void> {
    await fs.writeFile(path.join(dir, `${WH_META}aufs`), '', { mode: 0o444, flag: 'a' });
    for (const d of [`${WH_META}orph`, `${WH_META}plnk`]) await fs.mkdir(path.join(dir, d), { mode: 0o700 }).catch(() => undefined);
  }

  private async newStaging(): Promise<string> {
    if (this.stagingRoot === null) {
      this.stagingRoot = fsSync.mkdtempSync(path.join(os.tmpdir(), 'gd-aufs-standin-'));
      // Without a tmpfs (no privilege for it) the staging directories simply live on the disk.
      this.stagingTmpfs = await this.real.mount('tmpfs', this.stagingRoot, 'tmpfs', 0, 'mode=0700').then(
        () => true,
        () => false,
      );
    }
    const dir = path.join(this.stagingRoot, String(++this.serial));
    await fs.mkdir(dir, { mode: 0o755 });
    return dir;
  }

  private async umount(m: StandInMount, flags: number): Promise<void> {
    const now = await this.scan(m.staging, false);
    if (!untouched(now, m.snapshot)) await this.writeBack(m, now);
    await this.real.umount(m.target, flags);
    this.mounts.delete(m.target);
    await fs.rm(m.staging, { recursive: true, force: true });
  }

  private async scan(dir: string, whiteouts: boolean): Promise<BranchScan> {
    const list = await this.real.scanTree(dir, { xattrs: true, sort: true });
    const entries = new Map<string, ScanEntry>();
    const children = new Map<string, string[]>();
    for (const e of list) {
      entries.set(e.path, e);
      if (e.path === '/') continue;
      const parent = parentOf(e.path);
      let c = children.get(parent);
      if (c === undefined) children.set(parent, (c = []));
      c.push(e.path.slice(parent === '/' ? 1 : parent.length + 1));
    }
    return { entries, children, whiteouts };
  }

  private scanBranch(b: Branch): Promise<BranchScan> {
    return this.scan(b.dir, b.perm === 'rw' || b.perm.endsWith('+wh'));
  }

  /** Runs entries in order against `root`; any failure throws. */
  private async apply(root: string, entries: ApplyEntry[], times: Array<{ path: string; e: ScanEntry }>): Promise<void> {
    const fd = fsSync.openSync(root, fsSync.constants.O_RDONLY | fsSync.constants.O_DIRECTORY);
    try {
      for (let i = 0; i < entries.length; i += BATCH) {
        const batch = entries.slice(i, i + BATCH);
        const results = await this.real.applyEntries(fd, batch);
        results.forEach((r, j) => {
          if (r.errno !== 0) throw nativeError(r.code, r.errno, r.syscall, path.join(root, batch[j]!.path), `aufs stand-in: ${batch[j]!.op} failed`);
        });
      }
      const t = times.filter((x) => x.path !== '/').map((x) => ({ path: rel(x.path), mtimeSec: x.e.mtimeSec, mtimeNsec: x.e.mtimeNsec, atimeSec: x.e.atimeSec, atimeNsec: x.e.atimeNsec }));
      for (let i = 0; i < t.length; i += BATCH) await this.real.setTimes(fd, t.slice(i, i + BATCH));
    } finally {
      fsSync.closeSync(fd);
    }
  }

  /**
   * Fills the staging directory with the union of the branches: all of it (emptying the directory first) when
   * `old` is null, else only the entries `old` (what it holds now, untouched) lacks: appended lower branches only
   * add entries, and directories that gain entries get their times back.
   */
  private async materialise(m: StandInMount, old: UnionView | null): Promise<void> {
    if (old === null) for (const n of await fs.readdir(m.staging)) await fs.rm(path.join(m.staging, n), { recursive: true, force: true });
    const view = unionView(m.scans, 0);
    const entries: ApplyEntry[] = [];
    const dirs = new Map<string, ScanEntry>();
    const linked = new Map<string, string>();
    for (const [p, v] of view.entries) {
      if (old?.entries.has(p)) continue;
      const e = v.entry;
      if (old !== null) {
        const parent = parentOf(p);
        const pv = view.entries.get(parent);
        if (pv !== undefined && old.entries.has(parent)) dirs.set(parent, pv.entry);
      }
      if (!isDir(e) && e.nlink > 1) {
        const key = `${v.branch}:${e.ino}`;
        const first = linked.get(key);
        if (first !== undefined) {
          entries.push({ op: 'create', path: rel(p), type: 'link', linkname: rel(first) });
          continue;
        }
        linked.set(key, p);
      }
      const c = await createEntry(p, e, path.join(m.branches[v.branch]!.dir, p));
      if (c === null) continue;
      entries.push(c);
      if (isDir(e)) dirs.set(p, e);
    }
    await this.apply(m.staging, entries, [...dirs].map(([p, e]) => ({ path: p, e })));
    const top = m.scans[0]!.entries.get('/')!;
    await fs.chmod(m.staging, top.mode & 0o7777);
    await fs.chown(m.staging, top.uid, top.gid);
    m.view = view;
    m.snapshot = new Map([...(await this.scan(m.staging, false)).entries].map(([p, e]) => [p, signature(e)]));
  }

  /**
   * Writes what changed in the union since it was built back into the read-write branch, the way aufs would
   * have written it there at once (see the module doc). Read-only unions have nothing to write back.
   */
  private async writeBack(m: StandInMount, S: BranchScan): Promise<void> {
    if (m.branches[0]!.perm !== 'rw') return;
    const rwRoot = m.branches[0]!.dir;
    const R = m.scans[0]!;
    const lower = unionView(m.scans, 1);
    const before = m.view;
    const sPath = (p: string): string => path.join(m.staging, p);

    // Hardlinked files whose links do not all lead to one inode of one branch are written as a group, so the
    // read-write branch keeps them linked (aufs copies a file up when it is linked).
    const groups = new Map<number, string[]>();
    for (const [p, e] of S.entries) {
      if (isDir(e) || e.nlink < 2) continue;
      const g = groups.get(e.ino) ?? [];
      g.push(p);
      groups.set(e.ino, g);
    }
    const forced = new Set<number>();
    for (const [ino, members] of groups) {
      const seen = members.map((p) => before.entries.get(p));
      const keys = new Set(seen.map((v) => (v === undefined ? '' : `${v.branch}:${v.entry.ino}`)));
      if (keys.size !== 1 || keys.has('')) forced.add(ino);
    }
    const isForced = (e: ScanEntry): boolean => !isDir(e) && e.nlink > 1 && forced.has(e.ino);
    // An entry untouched since the union was built is still what its branch holds.
    const fresh = (p: string, e: ScanEntry): boolean => m.snapshot.get(p) === signature(e);

    const ops: ApplyEntry[] = [];
    const rwDirs = new Set<string>();
    for (const [p, e] of R.entries) if (isDir(e)) rwDirs.add(p);
    const touched = new Set<string>();
    const metaFix: string[] = [];
    const written = new Map<number, string>();

    const ensureRwDir = (p: string): void => {
      if (rwDirs.has(p)) return;
      ensureRwDir(parentOf(p));
      const s = S.entries.get(p)!;
      ops.push({ op: 'create', path: rel(p), type: 'dir', mode: s.mode & 0o7777, uid: s.uid, gid: s.gid, deferTimes: true, ...(s.xattrs && Object.keys(s.xattrs).length > 0 ? { xattrs: s.xattrs } : {}) });
      rwDirs.add(p);
      touched.add(p);
    };
    const write = async (p: string, s: ScanEntry): Promise<void> => {
      touched.add(parentOf(p));
      if (!isDir(s) && s.nlink > 1) {
        const first = written.get(s.ino);
        if (first !== undefined) {
          ops.push({ op: 'create', path: rel(p), type: 'link', linkname: rel(first) });
          return;
        }
        written.set(s.ino, p);
      }
      const c = await createEntry(p, s, sPath(p));
      if (c === null) return;
      ops.push(c);
      if (isDir(s)) {
        rwDirs.add(p);
        touched.add(p);
      }
    };

    const syncDir = async (P: string, lowerActive: boolean): Promise<void> => {
      const namesS = (S.children.get(P) ?? []).filter((n) => !n.startsWith(WH));
      const rwKids = R.entries.has(P) && isDir(R.entries.get(P)!) ? (R.children.get(P) ?? []) : [];
      const rwNames = rwKids.filter((n) => !n.startsWith(WH));
      const rwWh = new Set(rwKids.filter((n) => n.startsWith(WH) && !n.startsWith(WH_META)).map((n) => n.slice(WH.length)));
      const rwOpaque = rwKids.includes(OPAQUE);
      const lowerDir = P === '/' || (lower.entries.has(P) && isDir(lower.entries.get(P)!.entry));
      const lowerAt = lowerActive && !rwOpaque && lowerDir;
      const lowerNames = lowerAt ? (lower.children.get(P) ?? []).filter((n) => !rwWh.has(n)) : [];
      const sSet = new Set(namesS);
      const rwSet = new Set(rwNames);
      const lowSet = new Set(lowerNames);
      const lowerIsDir = (c: string): boolean => lower.entries.has(c) && isDir(lower.entries.get(c)!.entry);

      for (const name of new Set([...rwNames, ...lowerNames])) {
        if (sSet.has(name)) continue;
        const C = join(P, name);
        if (rwSet.has(name)) {
          ops.push({ op: 'remove', path: rel(C) });
          touched.add(P);
        }
        if (lowSet.has(name)) {
          ensureRwDir(P);
          ops.push(markerEntry(join(P, `${WH}${name}`)));
          touched.add(P);
        }
      }

      for (const name of namesS) {
        const C = join(P, name);
        const s = S.entries.get(C)!;
        if (rwSet.has(name)) {
          const r = R.entries.get(C)!;
          if (isDir(s) && isDir(r)) {
            if (!sameDirMeta(s, r)) metaFix.push(C);
            await syncDir(C, lowSet.has(name) && lowerIsDir(C));
          } else if (!isForced(s) && (fresh(C, s) || (await sameEntry(s, sPath(C), r, path.join(rwRoot, C))))) {
            // unchanged
          } else {
            ops.push({ op: 'remove', path: rel(C) });
            await write(C, s);
            if (isDir(s)) {
              // A directory replacing the branch's own non-directory: what lies below must stay hidden.
              if (lowerAt && lowerIsDir(C)) ops.push(markerEntry(join(C, OPAQUE)));
              await syncDir(C, false);
            }
          }
        } else if (lowSet.has(name)) {
          const l = lower.entries.get(C)!;
          const lPath = path.join(m.branches[l.branch]!.dir, C);
          if (isDir(s) && isDir(l.entry)) {
            if (!sameDirMeta(s, l.entry)) ensureRwDir(C);
            await syncDir(C, true);
          } else if (!isForced(s) && (fresh(C, s) || (await sameEntry(s, sPath(C), l.entry, lPath)))) {
            // still the lower entry
          } else {
            ensureRwDir(P);
            await write(C, s);
            if (isDir(s)) await syncDir(C, false);
          }
        } else {
          ensureRwDir(P);
          if (rwWh.has(name)) ops.push({ op: 'remove', path: rel(join(P, `${WH}${name}`)) });
          await write(C, s);
          if (isDir(s)) {
            // Re-created over a whiteout: aufs marks the new directory opaque (diropq).
            if (rwWh.has(name) && lowerActive && !rwOpaque && lowerDir && lowerIsDir(C)) ops.push(markerEntry(join(C, OPAQUE)));
            await syncDir(C, false);
          }
        }
      }
    };

    await syncDir('/', true);
    const sRoot = S.entries.get('/')!;
    if (!sameDirMeta(sRoot, R.entries.get('/')!)) metaFix.push('/');
    const times = [...touched].filter((p) => S.entries.has(p) && isDir(S.entries.get(p)!)).map((p) => ({ path: p, e: S.entries.get(p)! }));
    await this.apply(rwRoot, ops, times);
    for (const p of metaFix) {
      const s = S.entries.get(p)!;
      const target = path.join(rwRoot, p);
      await fs.chmod(target, s.mode & 0o7777);
      await fs.lchown(target, s.uid, s.gid);
      for (const [k, v] of Object.entries(s.xattrs ?? {})) await this.real.lsetxattr(target, k, v, 0).catch(() => undefined);
    }
  }
}
