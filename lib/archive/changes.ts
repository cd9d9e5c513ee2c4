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

/** The only xattr Docker compares (and carries in diffs). */
export const CAPABILITY_XATTR = 'security.capability';

/** Options shared by the change functions. */
export interface ChangesOptions {
  /** Native bindings (default: the real addon). */
  bindings?: NativeBindings;
}

/** Options of {@link changesUpper}. */
export interface UpperChangesOptions extends ChangesOptions {
  /** overlay only: the layers use `user.overlay.*` xattrs (overlay mounted with `userxattr`), not `trusted.overlay.*`. */
  userxattr?: boolean;
}

/** Thrown when an upper directory uses overlay features the native algorithm cannot read (redirects, metacopy). */
export class NativeDiffUnsupportedError extends GraphdriverError {
  constructor(message: string) {
    super('ERR_NATIVE_DIFF_UNSUPPORTED', message);
  }
}

// ---- small helpers on scan entries and '/'-rooted paths ----

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
export function compareTrees(newEntries: readonly ScanEntry[], oldEntries: readonly ScanEntry[]): Change[] {
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
 * Changes of the tree at `newRoot` relative to `oldRoot` (Docker's ChangesDirs); with `oldRoot` null every entry
 * is an Add. One scanTree per tree (security.capability read with it).
 */
export async function changesDirs(newRoot: string, oldRoot: string | null, opts: ChangesOptions = {}): Promise<Change[]> {
  const b = opts.bindings ?? loadBindings();
  const scan = { xattrs: [CAPABILITY_XATTR] };
  const [newEntries, oldEntries] = await Promise.all([
    b.scanTree(newRoot, scan),
    oldRoot === null ? Promise.resolve<ScanEntry[]>([]) : b.scanTree(oldRoot, scan),
  ]);
  return compareTrees(newEntries, oldEntries);
}

// ---- native changes over an upper/diff directory ----

/** What the merged lower layers show at one path. */
interface LowerLookup {
  /** The entry of the nearest layer that has the path, null when no layer shows it (absent or whited out). */
  entry: ScanEntry | null;
  /** For a directory: the layers (indices, nearest first) merged into it, i.e. where its children can be. */
  layers: number[];
}

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
  ) {}

  static async open(b: NativeBindings, dirs: readonly string[], format: 'overlay' | 'aufs', opaqueXattr: string): Promise<LowerView> {
    const fds: number[] = [];
    try {
      for (const d of dirs) fds.push(await fsOpen(d, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY));
    } catch (e) {
      await Promise.all(fds.map((fd) => fsClose(fd).catch(() => undefined)));
      throw e;
    }
    const view = new LowerView(b, dirs, fds, format, opaqueXattr);
    await view.resolveRoot();
    return view;
  }

  async close(): Promise<void> {
    await Promise.all(this.fds.map((fd) => fsClose(fd).catch(() => undefined)));
  }

  get(p: string): LowerLookup {
    const r = this.found.get(p);
    if (r === undefined) throw new Error(`internal: lower lookup of ${JSON.stringify(p)} was not resolved`);
    return r;
  }

  /** The root is merged from every layer down to the first one whose root is opaque. */
  private async resolveRoot(): Promise<void> {
    const probe = this.format === 'overlay' ? '' : WHITEOUT_OPAQUE;
    const opts = this.format === 'overlay' ? { xattrs: [this.opaqueXattr] } : undefined;
    const res = await Promise.all(this.fds.map((fd) => this.b.lstatMany(fd, [probe], opts)));
    const layers: number[] = [];
    for (let j = 0; j < res.length; j++) {
      layers.push(j);
      const st = res[j]![0] ?? null;
      const opaque = this.format === 'overlay' ? isOpaqueValue(st?.xattrs?.[this.opaqueXattr]) : st !== null;
      if (opaque) break;
    }
    this.found.set('/', { entry: null, layers });
  }

  /** Resolves `paths` ('/'-rooted) and all their ancestors. */
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
    for (const level of byDepth) if (level !== undefined && level.length > 0) await this.resolveLevel(level);
  }

  /** One depth level: every parent is already resolved, so each layer is asked only about what it can hold. */
  private async resolveLevel(level: string[]): Promise<void> {
    const n = this.fds.length;
    const queries: string[][] = Array.from({ length: n }, () => []);
    for (const p of level) {
      for (const j of this.get(parentPath(p)).layers) {
        const q = queries[j]!;
        q.push(rel(p));
        if (this.format === 'aufs') {
          q.push(rel(joinChild(parentPath(p), WHITEOUT_PREFIX + baseName(p))));
          q.push(rel(joinChild(p, WHITEOUT_OPAQUE)));
        }
      }
    }
    const opts = this.format === 'overlay' ? { xattrs: [this.opaqueXattr] } : undefined;
    const answers = await Promise.all(queries.map((q, j) => (q.length === 0 ? Promise.resolve([]) : this.b.lstatMany(this.fds[j]!, q, opts))));
    // Index the answers per layer by the query path.
    const at: Array<Map<string, ScanEntry | null>> = answers.map((a, j) => {
      const m = new Map<string, ScanEntry | null>();
      queries[j]!.forEach((q, i) => m.set(q, a[i] ?? null));
      return m;
    });

    for (const p of level) {
      // undefined: not seen yet; null: whited out before any layer showed it.
      let entry: ScanEntry | null | undefined;
      const layers: number[] = [];
      for (const j of this.get(parentPath(p)).layers) {
        const st = at[j]!.get(rel(p)) ?? null;
        const whiteout =
          this.format === 'aufs'
            ? (at[j]!.get(rel(joinChild(parentPath(p), WHITEOUT_PREFIX + baseName(p)))) ?? null) !== null
            : st !== null && isOverlayWhiteout(st);
        if (st !== null && !(this.format === 'overlay' && whiteout)) {
          if (entry === undefined) entry = st;
          // A non-directory ends the path's merge (and below a directory, hides the deeper layers). `entry` is
          // not null here: a whiteout ends the loop.
          if (!isDir(st) || !isDir(entry as ScanEntry)) break;
          layers.push(j);
          const opaque =
            this.format === 'overlay'
              ? isOpaqueValue(st.xattrs?.[this.opaqueXattr])
              : (at[j]!.get(rel(joinChild(p, WHITEOUT_OPAQUE))) ?? null) !== null;
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
  const entries = await b.scanTree(upperDir, format === 'overlay' ? { xattrs: [opaqueXattr, ...unsupported] } : {});

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

  const view = await LowerView.open(b, lowerDirs, format, opaqueXattr);
  try {
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
  } finally {
    await view.close();
  }
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
