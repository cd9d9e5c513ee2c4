/**
 * Computing a layer's change list, the two ways Docker does it:
 *
 * - {@link changesDirs}: the naive algorithm over two complete trees (moby pkg/archive ChangesDirs), used by every
 *   driver without a diff directory of its own (vfs, btrfs, devicemapper) and by overlay2 in Docker since 18.06.
 * - {@link changesUpper}: the native algorithm over a layer's own diff/upper directory (moby pkg/archive
 *   `changes()` with the overlay and aufs whiteout rules), which reads only that directory plus point lookups
 *   in the lower layers.
 *
 * Both read their trees with one native scanTree call per tree, never a syscall per file from JavaScript.
 * @module
 */
import * as fs from 'node:fs';
import { promisify } from 'node:util';

import { GraphdriverError } from '../errors';
import { loadBindings } from '../native/bindings';
import { FileType, OpenFlags } from '../native/constants';
import type { NativeBindings, ScanEntry } from '../native/types';
import { ChangeKind, sortChanges, type Change } from './change';
import { WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from './whiteout';

const fsOpen = promisify(fs.open);
const fsClose = promisify(fs.close);
const fsFstat = promisify(fs.fstat);
const fsRead = promisify(fs.read);

/** The only xattr Docker compares (and carries in diffs). */
export const CAPABILITY_XATTR = 'security.capability';

/** Options shared by the change functions. */
export interface ChangesOptions {
  /** Native bindings (default: the real addon). */
  bindings?: NativeBindings;
}

/** Options of {@link changesDirs}. */
export interface ChangesDirsOptions extends ChangesOptions {
  /**
   * When two non-directories are equal only by the whole-second mtime rule (same second, one side without
   * nanoseconds: typically a file from a tar, rewritten within that second with the same size), compare their
   * content (regular files) or target (symlinks) to decide, as containerd does. Default true. Docker's
   * ChangesDirs does not, and loses such rewrites (moby #21555, #8242); false gives Docker's exact result.
   */
  verifyContent?: boolean;
}

/** Options of {@link changesUpper}. */
export interface UpperChangesOptions extends ChangesOptions {
  /** overlay only: the layers use `user.overlay.*` xattrs (overlay mounted with `userxattr`), not `trusted.overlay.*`. */
  userxattr?: boolean;
  /**
   * Lower-layer lookups (paths x layers) made in a single round trip, one lstatMany per layer, before switching
   * to one round per directory depth that asks each layer only about what it can hold (default 20000).
   */
  prefetchLookups?: number;
}

/**
 * Thrown when an upper directory uses overlay features the native algorithm cannot read (redirects, metacopy).
 *
 * @example
 * ```ts
 * import { changesDirs, changesUpper, NativeDiffUnsupportedError, type Change } from 'graphdriver';
 *
 * let changes: Change[];
 * try {
 *   changes = await changesUpper('/var/lib/graphdriver/overlay2/c1/diff', ['/var/lib/graphdriver/overlay2/base/diff'], 'overlay');
 * } catch (e) {
 *   if (!(e instanceof NativeDiffUnsupportedError)) throw e; // e.code === 'ERR_NATIVE_DIFF_UNSUPPORTED'
 *   // redirect_dir or metacopy in the upper directory: compare the mounted trees instead
 *   changes = await changesDirs('/mnt/c1-merged', '/mnt/base-merged');
 * }
 * ```
 */
export class NativeDiffUnsupportedError extends GraphdriverError {
  constructor(message: string) {
    super('ERR_NATIVE_DIFF_UNSUPPORTED', message);
  }
}

// ---- small helpers on scan entries and '/'-rooted paths ----

/** A directory (by its real file type, S_IFDIR). */
export function isDir(e: ScanEntry): boolean {
  return (e.mode & FileType.S_IFMT) === FileType.S_IFDIR;
}

/** An overlay whiteout: a character device with device number 0/0. */
export function isOverlayWhiteout(e: ScanEntry): boolean {
  return (e.mode & FileType.S_IFMT) === FileType.S_IFCHR && e.rdev === 0;
}

/** The xattr value is exactly "y" (how overlayfs marks opaque directories). */
export function isOpaqueValue(v: Buffer | undefined): boolean {
  return v !== undefined && v.length === 1 && v[0] === 0x79;
}

/** Parent of a '/'-rooted path ('/' for top-level entries). */
export function parentPath(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

function baseName(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

function joinChild(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** First component of a '/'-rooted path. */
function topComponent(p: string): string {
  const i = p.indexOf('/', 1);
  return i < 0 ? p.slice(1) : p.slice(1, i);
}

/**
 * Docker's sameFsTimeSpec: equal times, or the same second with either nanosecond part 0 (tar and older
 * filesystems keep whole seconds, so a file that went through a tar compares equal to its source).
 */
export function sameFsTime(aSec: number, aNsec: number, bSec: number, bNsec: number): boolean {
  return aSec === bSec && (aNsec === bNsec || aNsec === 0 || bNsec === 0);
}

/**
 * Docker's statDifferent: type and permission bits, owner, device number; for non-directories also size and
 * mtime. Directory size and mtime change whenever an entry is added or removed, so they are not a change of the
 * directory itself (moby #9874). Note: moby tests `mode & S_IFDIR`, which also matches block devices and
 * sockets; we test the real file type, so a block device whose mtime changed is reported.
 */
export function statDifferent(o: ScanEntry, n: ScanEntry): boolean {
  if (o.mode !== n.mode || o.uid !== n.uid || o.gid !== n.gid || o.rdev !== n.rdev) return true;
  if (isDir(o)) return false;
  return o.size !== n.size || !sameFsTime(o.mtimeSec, o.mtimeNsec, n.mtimeSec, n.mtimeNsec);
}

/** Times that {@link sameFsTime} calls equal only because one side has no nanoseconds. */
export function ambiguousTimes(o: ScanEntry, n: ScanEntry): boolean {
  return o.mtimeSec === n.mtimeSec && o.mtimeNsec !== n.mtimeNsec && (o.mtimeNsec === 0 || n.mtimeNsec === 0);
}

function isRegular(e: ScanEntry): boolean {
  return (e.mode & FileType.S_IFMT) === FileType.S_IFREG;
}

function isSymlink(e: ScanEntry): boolean {
  return (e.mode & FileType.S_IFMT) === FileType.S_IFLNK;
}

/** Compares one xattr of two entries; absent and empty are the same (as Go's bytes.Equal(nil, []byte{})). */
function sameXattr(a: ScanEntry, b: ScanEntry, name: string): boolean {
  const x = a.xattrs?.[name];
  const y = b.xattrs?.[name];
  if (x === undefined || x.length === 0) return y === undefined || y.length === 0;
  return y !== undefined && x.equals(y);
}

// ---- naive changes over two trees ----

/**
 * The changes that turn the tree `oldEntries` into `newEntries` (both from scanTree of a layer root), by
 * Docker's rules:
 * - a path only in the new tree is Add (so a new directory reports its whole subtree as Add);
 * - a path in both is Modify when {@link statDifferent} or its security.capability differs; a file replaced by
 *   a directory (or the reverse) is therefore Modify, and the new directory's entries are Add while the old
 *   directory's entries are not reported;
 * - a path only in the old tree is Delete when its parent is still a directory in the new tree (a deleted
 *   directory is one Delete);
 * - a directory with any change below it gets a Modify of its own, unless it is itself added or modified.
 * The result is sorted by path.
 */
export function compareTrees(
  newEntries: readonly ScanEntry[],
  oldEntries: readonly ScanEntry[],
  opts: {
    /**
     * Consulted for non-directories that are equal except for {@link ambiguousTimes}: true makes them Modify
     * (see {@link ChangesDirsOptions.verifyContent}).
     */
    contentDiffers?: (o: ScanEntry, n: ScanEntry) => boolean;
  } = {},
): Change[] {
  const oldByPath = new Map<string, ScanEntry>();
  for (const e of oldEntries) oldByPath.set(e.path, e);
  const newByPath = new Map<string, ScanEntry>();
  for (const e of newEntries) newByPath.set(e.path, e);

  const out = new Map<string, ChangeKind>();
  for (const n of newEntries) {
    if (n.path === '/') continue;
    const o = oldByPath.get(n.path);
    if (o === undefined) out.set(n.path, ChangeKind.Add);
    else if (statDifferent(o, n) || !sameXattr(o, n, CAPABILITY_XATTR)) out.set(n.path, ChangeKind.Modify);
    else if (opts.contentDiffers !== undefined && !isDir(n) && ambiguousTimes(o, n) && opts.contentDiffers(o, n)) out.set(n.path, ChangeKind.Modify);
  }
  for (const o of oldEntries) {
    if (o.path === '/' || newByPath.has(o.path)) continue;
    const parent = parentPath(o.path);
    // Docker only looks for deletions inside directories that are directories in the new tree (the root
    // always counts as one); below a replaced or deleted directory nothing more is reported.
    const np = parent === '/' ? undefined : newByPath.get(parent);
    if (parent === '/' || (np !== undefined && isDir(np))) out.set(o.path, ChangeKind.Delete);
  }
  addParentModifies(out);
  return toSortedList(out);
}

/** A directory holding changes is reported Modify (needed to restore its metadata when the diff is applied). */
function addParentModifies(out: Map<string, ChangeKind>): void {
  for (const p of [...out.keys()]) {
    for (let a = parentPath(p); a !== '/'; a = parentPath(a)) {
      if (out.has(a)) break; // reported itself, or already handled with its own ancestors
      out.set(a, ChangeKind.Modify);
    }
  }
}

function toSortedList(m: Map<string, ChangeKind>): Change[] {
  const list: Change[] = [];
  for (const [path, kind] of m) list.push({ path, kind });
  return sortChanges(list);
}

/**
 * Changes of the tree at `newRoot` relative to `oldRoot` (Docker's ChangesDirs, see {@link compareTrees}); with
 * `oldRoot` null every entry is an Add. One scanTree per tree (security.capability read with it); file content
 * is only read for the ambiguous-mtime case of {@link ChangesDirsOptions.verifyContent}.
 */
export async function changesDirs(newRoot: string, oldRoot: string | null, opts: ChangesDirsOptions = {}): Promise<Change[]> {
  const b = opts.bindings ?? loadBindings();
  const scan = { xattrs: [CAPABILITY_XATTR] };
  const [newEntries, oldEntries] = await Promise.all([
    b.scanTree(newRoot, scan),
    oldRoot === null ? Promise.resolve<ScanEntry[]>([]) : b.scanTree(oldRoot, scan),
  ]);
  if (oldRoot === null || opts.verifyContent === false) return compareTrees(newEntries, oldEntries);

  // Regular files whose times are ambiguous get their content compared (rare: a tar-applied parent rewritten
  // within the same second); symlinks compare their targets, already in the scan.
  const oldByPath = new Map<string, ScanEntry>();
  for (const e of oldEntries) oldByPath.set(e.path, e);
  const suspects: string[] = [];
  for (const n of newEntries) {
    const o = oldByPath.get(n.path);
    if (o === undefined || !isRegular(n) || n.size === 0 || statDifferent(o, n) || !ambiguousTimes(o, n)) continue;
    if (sameXattr(o, n, CAPABILITY_XATTR)) suspects.push(n.path);
  }
  const differing = suspects.length === 0 ? new Set<string>() : await differingContents(b, newRoot, oldRoot, suspects);
  return compareTrees(newEntries, oldEntries, {
    contentDiffers: (o, n) => (isSymlink(n) ? o.linkname !== n.linkname : differing.has(n.path)),
  });
}

/** Files compared at once, and the chunk they are compared by. */
const COMPARE_PARALLEL = 8;
const COMPARE_CHUNK = 256 << 10;

/**
 * The paths (regular files of equal size in both trees) whose content differs. Files are opened bounded to
 * their root without following symlinks; anything that cannot be compared (gone, no longer a regular file)
 * counts as different.
 */
async function differingContents(b: NativeBindings, newRoot: string, oldRoot: string, paths: readonly string[]): Promise<Set<string>> {
  const out = new Set<string>();
  const flags = OpenFlags.O_RDONLY | OpenFlags.O_NOFOLLOW | OpenFlags.O_NONBLOCK | OpenFlags.O_NOCTTY;
  const openFile = async (root: string, p: string): Promise<number | null> => {
    let fd: number;
    try {
      fd = await b.openBounded(root, rel(p), { flags });
    } catch {
      return null;
    }
    const st = await fsFstat(fd).catch(() => null);
    if (st === null || !st.isFile()) {
      await fsClose(fd).catch(() => undefined);
      return null;
    }
    return fd;
  };
  const same = async (p: string): Promise<boolean> => {
    const [x, y] = await Promise.all([openFile(newRoot, p), openFile(oldRoot, p)]);
    try {
      if (x === null || y === null) return false;
      const bx = Buffer.allocUnsafe(COMPARE_CHUNK);
      const by = Buffer.allocUnsafe(COMPARE_CHUNK);
      for (let pos = 0; ; pos += COMPARE_CHUNK) {
        const [rx, ry] = await Promise.all([readFull(x, bx, pos), readFull(y, by, pos)]);
        if (rx !== ry || bx.compare(by, 0, ry, 0, rx) !== 0) return false;
        if (rx < COMPARE_CHUNK) return true;
      }
    } finally {
      await Promise.all([x, y].map((fd) => (fd === null ? undefined : fsClose(fd).catch(() => undefined))));
    }
  };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < paths.length) {
      const p = paths[next++]!;
      if (!(await same(p))) out.add(p);
    }
  };
  await Promise.all(Array.from({ length: Math.min(COMPARE_PARALLEL, paths.length) }, worker));
  return out;
}

/** Reads up to buf.length bytes at `pos` (fewer only at end of file). */
async function readFull(fd: number, buf: Buffer, pos: number): Promise<number> {
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fsRead(fd, buf, off, buf.length - off, pos + off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  return off;
}

// ---- native changes over an upper/diff directory ----

/** What the merged lower layers show at one path. */
interface LowerLookup {
  /** The entry of the nearest layer that has the path, null when no layer shows it (absent or whited out). */
  entry: ScanEntry | null;
  /** For a directory: the layers (indices, nearest first) merged into it, i.e. where its children can be. */
  layers: number[];
}

/** Default of {@link UpperChangesOptions.prefetchLookups}. */
const PREFETCH_LOOKUPS = 20_000;

/** Paths are passed to lstatMany relative to each layer root. */
function rel(p: string): string {
  return p === '/' ? '' : p.slice(1);
}

/**
 * Point lookups in a stack of lower layers, resolved the way overlayfs (and aufs) merge them: nearest layer
 * first; a whiteout hides the name in every layer below; a non-directory ends the merge of a path; an opaque
 * directory (overlay xattr, or aufs `.wh..wh..opq` inside it) hides the layers below it; a child is only
 * looked for in the layers where its parent is a merged directory. No layer is ever walked: every lookup is an
 * lstat, batched per layer and per depth into one native lstatMany call.
 */
class LowerView {
  private readonly found = new Map<string, LowerLookup>();

  private constructor(
    private readonly b: NativeBindings,
    private readonly dirs: readonly string[],
    private readonly fds: readonly number[],
    private readonly format: 'overlay' | 'aufs',
    private readonly opaqueXattr: string,
    private readonly prefetch: number,
  ) {}

  static async open(b: NativeBindings, dirs: readonly string[], format: 'overlay' | 'aufs', opaqueXattr: string, prefetch: number): Promise<LowerView> {
    const opened = await Promise.allSettled(dirs.map((d) => fsOpen(d, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)));
    const fds = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) {
      await Promise.all(fds.map((fd) => fsClose(fd).catch(() => undefined)));
      throw failed.reason;
    }
    return new LowerView(b, dirs, fds, format, opaqueXattr, prefetch);
  }

  async close(): Promise<void> {
    await Promise.all(this.fds.map((fd) => fsClose(fd).catch(() => undefined)));
  }

  get(p: string): LowerLookup {
    const r = this.found.get(p);
    if (r === undefined) throw new Error(`internal: lower lookup of ${JSON.stringify(p)} was not resolved`);
    return r;
  }

  /** What is asked of a layer about `p`: the path itself, and for aufs its whiteout and opaque marker. */
  private probes(p: string): string[] {
    if (p === '/') return [this.format === 'overlay' ? '' : WHITEOUT_OPAQUE];
    if (this.format === 'overlay') return [rel(p)];
    return [rel(p), rel(joinChild(parentPath(p), WHITEOUT_PREFIX + baseName(p))), rel(joinChild(p, WHITEOUT_OPAQUE))];
  }

  /** One lstatMany per layer (concurrently), answers indexed by the query path. */
  private async ask(queries: string[][]): Promise<Array<Map<string, ScanEntry | null>>> {
    const opts = this.format === 'overlay' ? { xattrs: [this.opaqueXattr] } : undefined;
    const answers = await Promise.all(queries.map((q, j) => (q.length === 0 ? Promise.resolve([]) : this.b.lstatMany(this.fds[j]!, q, opts))));
    return answers.map((a, j) => {
      const m = new Map<string, ScanEntry | null>();
      queries[j]!.forEach((q, i) => m.set(q, a[i] ?? null));
      return m;
    });
  }

  /**
   * Resolves `paths` ('/'-rooted) and all their ancestors. When the lookups are few (paths x layers within
   * {@link UpperChangesOptions.prefetchLookups}), every layer is asked about every path in one round trip and the merge is worked
   * out in memory; otherwise one round per depth level asks each layer only about paths whose parent it holds.
   */
  async resolve(paths: Iterable<string>): Promise<void> {
    const byDepth: string[][] = [];
    const want = new Set<string>();
    for (const p of paths) {
      for (let a = p; a !== '/' && !this.found.has(a) && !want.has(a); a = parentPath(a)) {
        want.add(a);
        const depth = a.split('/').length - 1;
        (byDepth[depth] ??= []).push(a);
      }
    }
    const needRoot = !this.found.has('/');
    if (want.size === 0 && !needRoot) return;
    const n = this.fds.length;
    let pre: Array<Map<string, ScanEntry | null>> | null = null;
    if ((want.size + 1) * n <= this.prefetch) {
      const all = [...(needRoot ? this.probes('/') : []), ...[...want].flatMap((p) => this.probes(p))];
      pre = await this.ask(Array.from({ length: n }, () => all));
    }
    if (needRoot) this.resolveRoot(pre ?? (await this.ask(Array.from({ length: n }, () => this.probes('/')))));
    for (const level of byDepth) {
      if (level === undefined || level.length === 0) continue;
      let at = pre;
      if (at === null) {
        const queries: string[][] = Array.from({ length: n }, () => []);
        for (const p of level) for (const j of this.get(parentPath(p)).layers) queries[j]!.push(...this.probes(p));
        at = await this.ask(queries);
      }
      for (const p of level) this.resolveOne(p, at);
    }
  }

  /** The root is merged from every layer down to the first one whose root is opaque. */
  private resolveRoot(at: Array<Map<string, ScanEntry | null>>): void {
    const probe = this.probes('/')[0]!;
    const layers: number[] = [];
    for (let j = 0; j < at.length; j++) {
      layers.push(j);
      const st = at[j]!.get(probe) ?? null;
      const opaque = this.format === 'overlay' ? isOpaqueValue(st?.xattrs?.[this.opaqueXattr]) : st !== null;
      if (opaque) break;
    }
    this.found.set('/', { entry: null, layers });
  }

  /** Works out one path from the layers' answers; its parent is already resolved. */
  private resolveOne(p: string, at: Array<Map<string, ScanEntry | null>>): void {
    const [self, whiteoutName, opaqueName] = this.probes(p);
    // undefined: not seen yet; null: whited out before any layer showed it.
    let entry: ScanEntry | null | undefined;
    const layers: number[] = [];
    for (const j of this.get(parentPath(p)).layers) {
      const st = at[j]!.get(self!) ?? null;
      const whiteout = this.format === 'aufs' ? (at[j]!.get(whiteoutName!) ?? null) !== null : st !== null && isOverlayWhiteout(st);
      if (st !== null && !(this.format === 'overlay' && whiteout)) {
        if (entry === undefined) entry = st;
        // A non-directory ends the path's merge (and below a directory, hides the deeper layers). `entry` is
        // not null here: a whiteout ends the loop.
        if (!isDir(st) || !isDir(entry as ScanEntry)) break;
        layers.push(j);
        const opaque = this.format === 'overlay' ? isOpaqueValue(st.xattrs?.[this.opaqueXattr]) : (at[j]!.get(opaqueName!) ?? null) !== null;
        if (opaque) break;
        continue;
      }
      if (whiteout) {
        if (entry === undefined) entry = null;
        break;
      }
    }
    this.found.set(p, { entry: entry ?? null, layers: entry !== null && entry !== undefined && isDir(entry) ? layers : [] });
  }

  /** Names in the directory `p` of each merged layer (one directory read per layer, bounded, no symlinks). */
  async listNames(p: string): Promise<Set<string>> {
    const names = new Set<string>();
    for (const j of this.get(p).layers) {
      const fd = await this.b.openBounded(this.dirs[j]!, p === '/' ? '.' : rel(p), {
        flags: OpenFlags.O_RDONLY | OpenFlags.O_DIRECTORY,
        noSymlinks: true,
      });
      try {
        for (const name of await fs.promises.readdir(`/proc/self/fd/${fd}`)) names.add(name);
      } finally {
        await fsClose(fd);
      }
    }
    return names;
  }
}

/**
 * Changes of a layer from its own diff directory (`upperDir`, an overlay upper dir or an aufs branch) over its
 * lower layers (`lowerDirs`, diff directories of the parent layers, nearest first), like moby's native
 * `changes()` (OverlayChanges / aufs Changes):
 * - the upper directory is read with one scanTree; the lower layers only get lookups (see LowerView);
 * - overlay: a char 0/0 device is a Delete of its path; aufs: `.wh.X` is a Delete of X, and `.wh..wh.*` entries
 *   at the root (aufs metadata, with everything under them) are skipped;
 * - every other entry is Add, or Modify when the lower layers show the path, except a directory identical to
 *   the lower one in size, mode and mtime (copied up only because of its children), which is not reported;
 * - an Add or Delete whose parent directory was not reported gets a Modify of that parent (only the
 *   immediate parent, as moby does);
 * - opaque directories (overlay `trusted.overlay.opaque=y`, aufs `.wh..wh..opq`): moby's own OverlayChanges
 *   reported them as deleted, which was wrong (moby #37313; Docker 18.06+ and v23 compute overlay2 changes
 *   naively, on the mounted trees). Here an opaque directory is reported like any directory, and every entry
 *   of the lower directory it hides gets a Delete, which is what Docker's naive diff reports for it. Listing
 *   those takes one directory read of that directory per lower layer.
 * The result is sorted by path. Redirected or metacopy-only entries (overlay `redirect_dir`/`metacopy`) cannot
 * be read this way and raise {@link NativeDiffUnsupportedError}: use {@link changesDirs} then.
 */
export async function changesUpper(
  upperDir: string,
  lowerDirs: readonly string[],
  format: 'overlay' | 'aufs',
  opts: UpperChangesOptions = {},
): Promise<Change[]> {
  const b = opts.bindings ?? loadBindings();
  const prefix = opts.userxattr ? 'user.overlay.' : 'trusted.overlay.';
  const opaqueXattr = `${prefix}opaque`;
  const unsupported = [`${prefix}redirect`, `${prefix}metacopy`];
  // The upper scan and the opening of the lower layers do not depend on each other.
  const [scanned, opened] = await Promise.allSettled([
    b.scanTree(upperDir, format === 'overlay' ? { xattrs: [opaqueXattr, ...unsupported] } : {}),
    LowerView.open(b, lowerDirs, format, opaqueXattr, opts.prefetchLookups ?? PREFETCH_LOOKUPS),
  ]);
  if (scanned.status === 'rejected' || opened.status === 'rejected') {
    if (opened.status === 'fulfilled') await opened.value.close();
    throw scanned.status === 'rejected' ? scanned.reason : (opened as PromiseRejectedResult).reason;
  }
  const entries = scanned.value;
  const view = opened.value;
  try {
    return await upperChanges(entries, view, format, opaqueXattr, unsupported, upperDir);
  } finally {
    await view.close();
  }
}

/** The body of {@link changesUpper}, once the upper dir is scanned and the lower layers are open. */
async function upperChanges(
  entries: readonly ScanEntry[],
  view: LowerView,
  format: 'overlay' | 'aufs',
  opaqueXattr: string,
  unsupported: readonly string[],
  upperDir: string,
): Promise<Change[]> {
  const visible = new Map<string, ScanEntry>();
  const deletes: string[] = [];
  const opaqueDirs: string[] = [];
  const namesIn = new Map<string, Set<string>>();
  const note = (dir: string, name: string): void => {
    let s = namesIn.get(dir);
    if (s === undefined) namesIn.set(dir, (s = new Set()));
    s.add(name);
  };

  for (const e of entries) {
    if (e.path === '/') {
      if (format === 'overlay' && isOpaqueValue(e.xattrs?.[opaqueXattr])) opaqueDirs.push('/');
      continue;
    }
    const name = baseName(e.path);
    const dir = parentPath(e.path);
    if (format === 'aufs') {
      if (topComponent(e.path).startsWith(WHITEOUT_META_PREFIX)) {
        // aufs metadata (.wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph and their contents) is not part of the layer.
        if (e.path === `/${WHITEOUT_OPAQUE}`) opaqueDirs.push('/');
        continue;
      }
      if (name === WHITEOUT_OPAQUE) {
        opaqueDirs.push(dir);
        continue;
      }
      if (name.startsWith(WHITEOUT_META_PREFIX)) continue;
      if (name.startsWith(WHITEOUT_PREFIX)) {
        const victim = name.slice(WHITEOUT_PREFIX.length);
        if (victim !== '' && victim !== '.' && victim !== '..') {
          deletes.push(joinChild(dir, victim));
          note(dir, victim);
        }
        continue;
      }
    } else {
      for (const x of unsupported) {
        if (e.xattrs?.[x] !== undefined) {
          throw new NativeDiffUnsupportedError(`${JSON.stringify(e.path)} in ${upperDir} has ${x}: native overlay changes cannot follow it`);
        }
      }
      if (isOverlayWhiteout(e)) {
        deletes.push(e.path);
        note(dir, name);
        continue;
      }
      if (isDir(e) && isOpaqueValue(e.xattrs?.[opaqueXattr])) opaqueDirs.push(e.path);
    }
    visible.set(e.path, e);
    note(dir, name);
  }

  await view.resolve(visible.keys());
  const out = new Map<string, ChangeKind>();
  const changedDirs = new Set<string>();
  for (const [p, e] of visible) {
    const lower = view.get(p).entry;
    if (lower === null) {
      out.set(p, ChangeKind.Add);
    } else if (
      isDir(e) &&
      isDir(lower) &&
      e.size === lower.size &&
      e.mode === lower.mode &&
      sameFsTime(e.mtimeSec, e.mtimeNsec, lower.mtimeSec, lower.mtimeNsec)
    ) {
      continue; // copied up only because something below it changed
    } else {
      out.set(p, ChangeKind.Modify);
    }
    if (isDir(e)) changedDirs.add(p);
  }
  for (const d of deletes) if (!out.has(d)) out.set(d, ChangeKind.Delete);

  for (const d of opaqueDirs) {
    const lower = view.get(d);
    if (lower.layers.length === 0) continue; // nothing below to hide (a new directory, or over a non-directory)
    const upperNames = namesIn.get(d) ?? new Set<string>();
    const hidden: string[] = [];
    for (const name of await view.listNames(d)) {
      if (upperNames.has(name)) continue;
      if (format === 'aufs' && name.startsWith(WHITEOUT_PREFIX)) continue;
      hidden.push(joinChild(d, name));
    }
    await view.resolve(hidden);
    for (const h of hidden) if (view.get(h).entry !== null && !out.has(h)) out.set(h, ChangeKind.Delete);
  }

  for (const [p, kind] of [...out]) {
    if (kind === ChangeKind.Modify) continue;
    const parent = parentPath(p);
    if (parent === '/' || changedDirs.has(parent)) continue;
    out.set(parent, ChangeKind.Modify);
    changedDirs.add(parent);
  }
  return toSortedList(out);
}

// ---- size ----

/** Options of {@link diffSize}. */
export interface DiffSizeOptions extends ChangesOptions {
  /** A scanTree of `root` already at hand (e.g. from {@link changesDirs}'s caller): no file system access then. */
  entries?: readonly ScanEntry[];
}

/**
 * Docker's ChangesSize: the sum of the sizes of added and modified non-directories under `root`, each hardlinked
 * inode counted once. Paths that no longer exist are skipped. Sizes come from `opts.entries` or from one
 * batched lstatMany of the changed paths.
 */
export async function diffSize(changes: readonly Change[], root: string, opts: DiffSizeOptions = {}): Promise<number> {
  const paths = changes.filter((c) => c.kind !== ChangeKind.Delete).map((c) => c.path);
  let stats: Array<ScanEntry | null | undefined>;
  if (opts.entries !== undefined) {
    const byPath = new Map<string, ScanEntry>();
    for (const e of opts.entries) byPath.set(e.path, e);
    stats = paths.map((p) => byPath.get(p));
  } else {
    const b = opts.bindings ?? loadBindings();
    const fd = await fsOpen(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try {
      stats = paths.length === 0 ? [] : await b.lstatMany(fd, paths.map(rel));
    } finally {
      await fsClose(fd);
    }
  }
  let size = 0;
  const seen = new Set<number>();
  for (const st of stats) {
    if (st === null || st === undefined || isDir(st)) continue;
    if (st.nlink > 1) {
      if (seen.has(st.ino)) continue;
      seen.add(st.ino);
    }
    size += st.size;
  }
  return size;
}
