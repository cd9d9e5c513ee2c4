/**
 * Changes, diffSize and diff export with fabricated scan results (mocked bindings). Real directories are used
 * only where the code opens a directory or reads file content (lower layer roots, file bodies).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { ChangeKind, comparePaths, compareWalkOrder, type Change } from '../../lib/archive/change';
import { changesDirs, changesUpper, compareTrees, diffSize, NativeDiffUnsupportedError } from '../../lib/archive/changes';
import { capabilityForTar, exportChanges, exportUpper, type DiffWarning } from '../../lib/archive/diff';
import { readTar, type TarHeader } from '../../lib/archive/tar-reader';
import { FileType, makedev } from '../../lib/native/constants';
import type { NativeBindings, ScanEntry, ScanOptions } from '../../lib/native/types';
import { mockBindings } from '../support/native';

// ---- fabricated scan entries ----

type Kind = 'f' | 'd' | 'l' | 'c' | 'b' | 'p' | 's';
const TYPE_BITS: Record<Kind, number> = {
  f: FileType.S_IFREG,
  d: FileType.S_IFDIR,
  l: FileType.S_IFLNK,
  c: FileType.S_IFCHR,
  b: FileType.S_IFBLK,
  p: FileType.S_IFIFO,
  s: FileType.S_IFSOCK,
};
let nextIno = 100;

interface EntOpts extends Partial<Omit<ScanEntry, 'path' | 'mode'>> {
  perm?: number;
}

function ent(p: string, kind: Kind, o: EntOpts = {}): ScanEntry {
  const { perm, ...rest } = o;
  return {
    path: p,
    mode: TYPE_BITS[kind] | (perm ?? (kind === 'd' ? 0o755 : 0o644)),
    uid: 0,
    gid: 0,
    size: kind === 'd' ? 4096 : 0,
    blocks: 0,
    mtimeSec: 1_700_000_000,
    mtimeNsec: 123_456_789,
    atimeSec: 1_700_000_000,
    atimeNsec: 0,
    ctimeSec: 1_700_000_000,
    ctimeNsec: 0,
    rdev: 0,
    dev: 42,
    ino: nextIno++,
    nlink: 1,
    ...rest,
  };
}

const root = (o: EntOpts = {}): ScanEntry => ent('/', 'd', o);
/** A copy of an entry with some fields changed (as `cp -a` would give, new inode). */
const like = (e: ScanEntry, o: Partial<ScanEntry> = {}): ScanEntry => ({ ...e, ino: nextIno++, ...o });
const whiteout = (p: string): ScanEntry => ent(p, 'c', { perm: 0, rdev: 0 });

const C = (p: string): Change => ({ path: p, kind: ChangeKind.Modify });
const A = (p: string): Change => ({ path: p, kind: ChangeKind.Add });
const D = (p: string): Change => ({ path: p, kind: ChangeKind.Delete });

const CAP_V2 = Buffer.from([0x00, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const CAP_V3 = Buffer.concat([Buffer.from([0x00, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0xe8, 0x03, 0, 0])]);

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-changes-unit-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

function mkdirs(...names: string[]): string[] {
  return names.map((n) => {
    const d = path.join(tmp, n);
    fs.mkdirSync(d, { recursive: true });
    return d;
  });
}

/** Where an fd points (the mocks map fds opened by the code under test back to fabricated trees). */
function fdPath(fd: number): string {
  return fs.readlinkSync(`/proc/self/fd/${fd}`);
}

/** lstat of a '/'-rooted path in a fabricated tree: every ancestor must be a directory. */
function lookup(tree: readonly ScanEntry[], rel: string): ScanEntry | null {
  const byPath = new Map(tree.map((e) => [e.path, e]));
  const p = '/' + rel.replace(/^\/+/, '');
  if (p === '/') return byPath.get('/') ?? null;
  const parts = p.split('/').slice(1);
  for (let i = 1; i < parts.length; i++) {
    const a = byPath.get('/' + parts.slice(0, i).join('/'));
    if (a === undefined || (a.mode & FileType.S_IFMT) !== FileType.S_IFDIR) return null;
  }
  return byPath.get(p) ?? null;
}

function withXattrs(e: ScanEntry | null, opts: ScanOptions | undefined): ScanEntry | null {
  if (e === null) return null;
  const names = Array.isArray(opts?.xattrs) ? opts.xattrs : [];
  const x: Record<string, Buffer> = {};
  for (const n of names) if (e.xattrs?.[n] !== undefined) x[n] = e.xattrs[n]!;
  const { xattrs: _drop, ...rest } = e;
  return Object.keys(x).length > 0 ? { ...rest, xattrs: x } : rest;
}

/** Bindings whose scanTree/lstatMany answer from fabricated trees keyed by directory path. */
function treeBindings(
  trees: Record<string, ScanEntry[]>,
  extra: Partial<NativeBindings> = {},
): jest.Mocked<NativeBindings> & { lstatLog: Array<{ dir: string; paths: string[] }> } {
  const lstatLog: Array<{ dir: string; paths: string[] }> = [];
  const m = mockBindings({
    scanTree: jest.fn(async (dir: string, opts?: ScanOptions) => {
      const t = trees[dir];
      if (t === undefined) throw Object.assign(new Error(`ENOENT: ${dir}`), { code: 'ENOENT' });
      return t.map((e) => withXattrs(e, opts)!);
    }),
    lstatMany: jest.fn(async (fd: number, paths: string[], opts?: ScanOptions) => {
      const dir = fdPath(fd);
      lstatLog.push({ dir, paths: [...paths] });
      const t = trees[dir];
      if (t === undefined) throw new Error(`no fabricated tree for fd ${fd} (${dir})`);
      return paths.map((p) => withXattrs(lookup(t, p), opts));
    }),
    // As an addon build without readFiles: the diff writer then reads files one by one through openBounded.
    readFiles: jest.fn(async () => Promise.reject(Object.assign(new Error('native function readFiles is not available in this build'), { code: 'ERR_NATIVE_MISSING' }))),
    ...extra,
  });
  return Object.assign(m, { lstatLog });
}

// ---- ordering ----

describe('path ordering', () => {
  it('sorts by UTF-8 bytes, like Go strings', () => {
    const list = ['/a/b', '/a.b', '/a', '/\u{1F600}', '/\uFFFD', '/Z', '/a-'];
    expect([...list].sort(comparePaths)).toEqual(['/Z', '/a', '/a-', '/a.b', '/a/b', '/\uFFFD', '/\u{1F600}']);
  });
  it('walk order puts a directory’s entries before its longer-named siblings', () => {
    const list = ['/a.b', '/a/b', '/a', '/a/b/c', '/a-c', '/ab'];
    expect([...list].sort(compareWalkOrder)).toEqual(['/a', '/a/b', '/a/b/c', '/a-c', '/a.b', '/ab']);
  });
});

// ---- naive changes ----

describe('compareTrees / changesDirs (Docker ChangesDirs rules)', () => {
  const base = (): ScanEntry[] => [
    root(),
    ent('/etc', 'd'),
    ent('/etc/hosts', 'f', { size: 10 }),
    ent('/etc/passwd', 'f', { size: 20 }),
    ent('/bin', 'd'),
    ent('/bin/ping', 'f', { size: 30, perm: 0o755, xattrs: { 'security.capability': CAP_V2 } }),
    ent('/dev', 'd'),
    ent('/dev/null', 'c', { rdev: makedev(1, 3), perm: 0o666 }),
    ent('/var', 'd'),
    ent('/var/lib', 'd'),
    ent('/var/lib/x', 'd'),
    ent('/var/lib/x/y', 'f', { size: 1 }),
    ent('/lnk', 'l', { linkname: '/etc/hosts', size: 10 }),
  ];
  const copy = (t: ScanEntry[]): ScanEntry[] => t.map((e) => like(e));
  const mutate = (t: ScanEntry[], p: string, o: Partial<ScanEntry>): ScanEntry[] => t.map((e) => (e.path === p ? { ...e, ...o } : e));

  it('reports nothing for identical trees (inodes differ, as after cp -a)', () => {
    const old = base();
    expect(compareTrees(copy(old), old)).toEqual([]);
  });

  it.each<[string, Partial<ScanEntry>]>([
    ['mode', { mode: FileType.S_IFREG | 0o600 }],
    ['uid', { uid: 1 }],
    ['gid', { gid: 1 }],
    ['size', { size: 11 }],
    ['mtime second', { mtimeSec: 1_700_000_001 }],
    ['mtime nanoseconds (both non-zero)', { mtimeNsec: 1 }],
  ])('a file whose %s changed is Modify, with its directory', (_n, change) => {
    const old = base();
    expect(compareTrees(mutate(copy(old), '/etc/hosts', change), old)).toEqual([C('/etc'), C('/etc/hosts')]);
  });

  it('same second with either nanosecond part 0 is no change (tar keeps whole seconds)', () => {
    const old = base();
    expect(compareTrees(mutate(copy(old), '/etc/hosts', { mtimeNsec: 0 }), old)).toEqual([]);
    const old0 = mutate(base(), '/etc/hosts', { mtimeNsec: 0 });
    expect(compareTrees(mutate(copy(old0), '/etc/hosts', { mtimeNsec: 999 }), old0)).toEqual([]);
  });

  it('rdev and capability changes are Modify; an absent and an empty capability are equal', () => {
    const old = base();
    expect(compareTrees(mutate(copy(old), '/dev/null', { rdev: makedev(1, 5) }), old)).toEqual([C('/dev'), C('/dev/null')]);
    const cap = Buffer.from(CAP_V2);
    cap[4] = 0x21;
    expect(compareTrees(mutate(copy(old), '/bin/ping', { xattrs: { 'security.capability': cap } }), old)).toEqual([C('/bin'), C('/bin/ping')]);
    expect(compareTrees(mutate(copy(old), '/bin/ping', { xattrs: {} }), old)).toEqual([C('/bin'), C('/bin/ping')]);
    const noCap = mutate(base(), '/etc/hosts', {});
    expect(compareTrees(mutate(copy(noCap), '/etc/hosts', { xattrs: { 'security.capability': Buffer.alloc(0) } }), noCap)).toEqual([]);
  });

  it('a directory whose mtime or size alone changed is not a change; its mode or owner is', () => {
    const old = base();
    expect(compareTrees(mutate(copy(old), '/etc', { mtimeSec: 1, mtimeNsec: 5, size: 8192 }), old)).toEqual([]);
    expect(compareTrees(mutate(copy(old), '/etc', { mode: FileType.S_IFDIR | 0o700 }), old)).toEqual([C('/etc')]);
    expect(compareTrees(mutate(copy(old), '/etc', { uid: 5 }), old)).toEqual([C('/etc')]);
  });

  it('a new directory reports its whole subtree as Add, a deleted one is a single Delete', () => {
    const old = base();
    const now = [...copy(old).filter((e) => !e.path.startsWith('/var')), ent('/opt', 'd'), ent('/opt/app', 'd'), ent('/opt/app/run', 'f')];
    expect(compareTrees(now, old)).toEqual([A('/opt'), A('/opt/app'), A('/opt/app/run'), D('/var')]);
  });

  it('deep changes give every ancestor directory a Modify', () => {
    const old = base();
    const now = [...mutate(copy(old), '/var/lib/x/y', { size: 2 }), ent('/var/lib/x/z', 'f')];
    expect(compareTrees(now, old)).toEqual([C('/var'), C('/var/lib'), C('/var/lib/x'), C('/var/lib/x/y'), A('/var/lib/x/z')]);
    const del = copy(old).filter((e) => e.path !== '/var/lib/x/y');
    expect(compareTrees(del, old)).toEqual([C('/var'), C('/var/lib'), C('/var/lib/x'), D('/var/lib/x/y')]);
  });

  it('file replaced by a directory is Modify and its entries Add; directory replaced by a file is Modify only', () => {
    const old = base();
    const fileToDir = [...copy(old).filter((e) => e.path !== '/etc/hosts'), ent('/etc/hosts', 'd'), ent('/etc/hosts/a', 'f')];
    expect(compareTrees(fileToDir, old)).toEqual([C('/etc'), C('/etc/hosts'), A('/etc/hosts/a')]);
    const dirToFile = [...copy(old).filter((e) => !e.path.startsWith('/var/lib')), ent('/var/lib', 'f')];
    expect(compareTrees(dirToFile, old)).toEqual([C('/var'), C('/var/lib')]);
    const dirToSymlink = [...copy(old).filter((e) => !e.path.startsWith('/var')), ent('/var', 'l', { linkname: '/tmp' })];
    expect(compareTrees(dirToSymlink, old)).toEqual([C('/var')]);
  });

  it('a modified directory gets no extra Modify for its children; the result is sorted bytewise', () => {
    const old = base();
    const now = [...mutate(copy(old), '/etc', { mode: FileType.S_IFDIR | 0o750 }), ent('/etc/new', 'f'), ent('/etc.d', 'd'), ent('/etc/a.b', 'f')];
    expect(compareTrees(now, old)).toEqual([C('/etc'), A('/etc.d'), A('/etc/a.b'), A('/etc/new')]);
  });

  it('with no old tree everything is Add', async () => {
    const b = treeBindings({ '/new': [root(), ent('/a', 'd'), ent('/a/b', 'f'), ent('/c', 'l')] });
    expect(await changesDirs('/new', null, { bindings: b })).toEqual([A('/a'), A('/a/b'), A('/c')]);
    expect(b.scanTree).toHaveBeenCalledTimes(1);
    expect(b.scanTree).toHaveBeenCalledWith('/new', { xattrs: ['security.capability'] });
  });

  it('changesDirs scans each tree once, reading security.capability', async () => {
    const old = base();
    const b = treeBindings({ '/new': mutate(copy(old), '/bin/ping', { xattrs: {} }), '/old': old });
    expect(await changesDirs('/new', '/old', { bindings: b })).toEqual([C('/bin'), C('/bin/ping')]);
    expect(b.scanTree.mock.calls).toEqual([
      ['/new', { xattrs: ['security.capability'] }],
      ['/old', { xattrs: ['security.capability'] }],
    ]);
    expect(b.lstatMany).not.toHaveBeenCalled();
  });
});

describe('changesDirs: whole-second mtimes that are only equal by the tar rule (docker#21555)', () => {
  // The parent came from a tar (no nanoseconds); the child rewrote the file within the same second, same size.
  function trees(newContent: string, oldContent: string) {
    const [newDir, oldDir] = mkdirs('new', 'old');
    fs.writeFileSync(path.join(newDir!, 'hosts'), newContent);
    fs.writeFileSync(path.join(oldDir!, 'hosts'), oldContent);
    const oldHosts = ent('/hosts', 'f', { size: oldContent.length, mtimeSec: 1_700_000_000, mtimeNsec: 0 });
    const oldLink = ent('/lnk', 'l', { linkname: '/a', size: 2, mtimeSec: 1_700_000_000, mtimeNsec: 0 });
    const b = treeBindings(
      {
        [newDir!]: [root(), like(oldHosts, { mtimeNsec: 5 }), like(oldLink, { mtimeNsec: 5, linkname: '/b' })],
        [oldDir!]: [root(), oldHosts, oldLink],
      },
      { openBounded: jest.fn(async (r: string, p: string) => fs.openSync(path.join(r, p), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)) },
    );
    return { b, newDir: newDir!, oldDir: oldDir! };
  }

  it('compares content (and symlink targets) to decide, by default', async () => {
    const t = trees('mydomain 10.0.0.2', 'mydomain 10.0.0.1');
    expect(await changesDirs(t.newDir, t.oldDir, { bindings: t.b })).toEqual([C('/hosts'), C('/lnk')]);
    expect(t.b.openBounded.mock.calls.map((c) => [c[0], c[1]]).sort()).toEqual([
      [t.newDir, 'hosts'],
      [t.oldDir, 'hosts'],
    ]);
  });

  it('equal content stays unchanged', async () => {
    const t = trees('mydomain 10.0.0.1', 'mydomain 10.0.0.1');
    expect(await changesDirs(t.newDir, t.oldDir, { bindings: t.b })).toEqual([C('/lnk')]);
  });

  it('verifyContent: false is Docker’s exact rule', async () => {
    const t = trees('mydomain 10.0.0.2', 'mydomain 10.0.0.1');
    expect(await changesDirs(t.newDir, t.oldDir, { bindings: t.b, verifyContent: false })).toEqual([]);
    expect(t.b.openBounded).not.toHaveBeenCalled();
  });

  it('a file that cannot be compared counts as changed', async () => {
    const t = trees('x', 'x');
    t.b.openBounded.mockRejectedValue(Object.assign(new Error('ELOOP'), { code: 'ELOOP' }));
    expect(await changesDirs(t.newDir, t.oldDir, { bindings: t.b })).toEqual([C('/hosts'), C('/lnk')]);
  });
});

// ---- Docker's graphtest DriverTestChanges scenario ----

/**
 * moby daemon/graphdriver/graphtest: addManyFiles(base, 20, seed 3) writes /directory-0/file-0..19 (0755, 64
 * bytes); changeManyFiles(upper, 20, seed 6) then, for j = 0..19: j%3 == 0 rewrites file-j (same size, new mtime),
 * j%3 == 1 adds file-6-j, j%3 == 2 removes file-j; the expected list is C /directory-0 plus those 20 changes.
 */
function graphtestScenario(): { base: ScanEntry[]; merged: ScanEntry[]; overlayUpper: ScanEntry[]; aufsUpper: ScanEntry[]; expected: Change[] } {
  const t0 = 1_700_000_000;
  const dirOld = ent('/directory-0', 'd', { mtimeSec: t0, mtimeNsec: 1000 });
  const files = Array.from({ length: 20 }, (_, j) => ent(`/directory-0/file-${j}`, 'f', { perm: 0o755, size: 64, mtimeSec: t0, mtimeNsec: 2000 + j }));
  const base = [root(), dirOld, ...files];
  const dirNew = like(dirOld, { mtimeSec: t0 + 5, mtimeNsec: 7 });
  const merged: ScanEntry[] = [root(), dirNew];
  const overlayUpper: ScanEntry[] = [root(), dirNew];
  const aufsUpper: ScanEntry[] = [root(), dirNew];
  const expected: Change[] = [C('/directory-0')];
  for (let j = 0; j < 20; j++) {
    const f = files[j]!;
    if (j % 3 === 0) {
      const mod = like(f, { mtimeSec: t0 + 5, mtimeNsec: 100 + j });
      merged.push(mod);
      overlayUpper.push(mod);
      aufsUpper.push(mod);
      expected.push(C(f.path));
    } else if (j % 3 === 1) {
      const add = ent(`/directory-0/file-6-${j}`, 'f', { perm: 0o755, size: 64, mtimeSec: t0 + 5 });
      merged.push(like(f), add);
      overlayUpper.push(add);
      aufsUpper.push(add);
      expected.push(A(add.path));
    } else {
      overlayUpper.push(whiteout(f.path));
      aufsUpper.push(ent(`/directory-0/.wh.file-${j}`, 'f', { perm: 0o444 }));
      expected.push(D(f.path));
    }
  }
  // aufs keeps its metadata at the branch root; Docker skips it.
  aufsUpper.push(ent('/.wh..wh.aufs', 'f'), ent('/.wh..wh.plnk', 'd'), ent('/.wh..wh.plnk/1234.567', 'f'), ent('/.wh..wh.orph', 'd'));
  return { base, merged, overlayUpper, aufsUpper, expected: expected.sort((x, y) => comparePaths(x.path, y.path)) };
}

describe('graphtest DriverTestChanges (20 files)', () => {
  it('naive: 21 changes', () => {
    const s = graphtestScenario();
    const got = compareTrees(s.merged, s.base);
    expect(got).toHaveLength(21);
    expect(got).toEqual(s.expected);
  });

  it('overlay upper: the same 21 changes', async () => {
    const s = graphtestScenario();
    const [upper, lower] = mkdirs('upper', 'lower');
    const b = treeBindings({ [upper!]: s.overlayUpper, [lower!]: s.base });
    expect(await changesUpper(upper!, [lower!], 'overlay', { bindings: b })).toEqual(s.expected);
    expect(await changesUpper(upper!, [lower!], 'overlay', { bindings: b, prefetchLookups: 0 })).toEqual(s.expected);
  });

  it('aufs branch: the same 21 changes, aufs metadata skipped', async () => {
    const s = graphtestScenario();
    const [upper, lower] = mkdirs('upper', 'lower');
    const b = treeBindings({ [upper!]: s.aufsUpper, [lower!]: s.base });
    expect(await changesUpper(upper!, [lower!], 'aufs', { bindings: b })).toEqual(s.expected);
    expect(await changesUpper(upper!, [lower!], 'aufs', { bindings: b, prefetchLookups: 0 })).toEqual(s.expected);
  });
});

// ---- native changes over an upper dir ----

describe('changesUpper (overlay)', () => {
  async function run(upperTree: ScanEntry[], lowerTrees: ScanEntry[][], opts: { userxattr?: boolean; prefetchLookups?: number } = {}) {
    const [upper, ...lowers] = mkdirs('upper', ...lowerTrees.map((_, i) => `lower${i}`));
    const trees: Record<string, ScanEntry[]> = { [upper!]: upperTree };
    lowerTrees.forEach((t, i) => (trees[lowers[i]!] = t));
    // Real (empty) lower directories let listNames open them; the fabricated names are created as files.
    for (const [i, t] of lowerTrees.entries()) {
      for (const e of t) {
        if (e.path === '/') continue;
        const p = path.join(lowers[i]!, e.path);
        fs.mkdirSync(path.dirname(p), { recursive: true });
        if ((e.mode & FileType.S_IFMT) === FileType.S_IFDIR) fs.mkdirSync(p, { recursive: true });
        else if (!fs.existsSync(p)) fs.writeFileSync(p, '');
      }
    }
    const b = treeBindings(trees, {
      openBounded: jest.fn(async (r: string, p: string) => fs.openSync(path.join(r, p), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)),
    });
    const changes = await changesUpper(upper!, lowers, 'overlay', { bindings: b, ...opts });
    return { changes, b, lowers, upper: upper! };
  }

  const lowerBase = (): ScanEntry[] => [
    root(),
    ent('/etc', 'd'),
    ent('/etc/hosts', 'f', { size: 5 }),
    ent('/usr', 'd'),
    ent('/usr/lib', 'd'),
    ent('/usr/lib/a', 'f'),
    ent('/usr/lib/b', 'f'),
    ent('/usr/lib/sub', 'd'),
    ent('/usr/lib/sub/x', 'f'),
    ent('/opt', 'f'),
  ];

  it('Add when the lowers do not have it, Modify when they do; the immediate parent of Add/Delete gets Modify', async () => {
    const low = lowerBase();
    const etc = low[1]!;
    const usr = low[3]!;
    const lib = low[4]!;
    const { changes } = await run(
      [root(), like(etc), like(low[2]!, { size: 6 }), like(usr), like(lib), ent('/usr/lib/new', 'f'), whiteout('/usr/lib/a'), ent('/srv', 'd'), ent('/srv/f', 'f')],
      [low],
    );
    // /etc and /usr and /usr/lib are identical copies (copied up for their children): not reported, except
    // /usr/lib, which gets a Modify as the parent of an Add and a Delete. /usr is not (moby only adds the parent).
    expect(changes).toEqual([C('/etc/hosts'), A('/srv'), A('/srv/f'), C('/usr/lib'), D('/usr/lib/a'), A('/usr/lib/new')]);
  });

  it('a directory differing from the lower one in mode, size or mtime is Modify (no second parent Modify)', async () => {
    const low = lowerBase();
    const { changes } = await run([root(), like(low[1]!, { mtimeSec: 1 }), ent('/etc/new', 'f')], [low]);
    expect(changes).toEqual([C('/etc'), A('/etc/new')]);
  });

  it('looks through several lowers, nearest first, honouring whiteouts, opaque dirs and non-directories', async () => {
    const deep = [root(), ent('/a', 'd'), ent('/a/f', 'f'), ent('/b', 'd'), ent('/b/f', 'f'), ent('/c', 'd'), ent('/c/f', 'f'), ent('/d', 'd'), ent('/d/f', 'f'), ent('/e', 'f')];
    const near = [
      root(),
      whiteout('/a'), // /a deleted in the nearer layer
      ent('/b', 'd', { xattrs: { 'trusted.overlay.opaque': Buffer.from('y') } }), // /b recreated opaque
      ent('/c', 'f'), // /c replaced by a file
      ent('/d', 'd'), // merged with the deeper /d
    ];
    const upper = [root(), ent('/a', 'd'), ent('/a/f', 'f'), ent('/b', 'd'), ent('/b/f', 'f'), ent('/c', 'd'), ent('/c/f', 'f'), ent('/d', 'd'), ent('/d/f', 'f'), ent('/e', 'f')];
    // /b: identical to the nearer opaque /b, reported as the parent of an Add; /d: identical, merged, not reported.
    const want = [A('/a'), A('/a/f'), C('/b'), A('/b/f'), C('/c'), A('/c/f'), C('/d/f'), C('/e')];
    // Few lookups: one lstatMany per layer, everything asked at once.
    const once = await run(upper, [near, deep]);
    expect(once.changes).toEqual(want);
    expect(once.b.lstatLog.map((c) => c.dir)).toEqual(once.lowers);
    // Many lookups: one round per depth; children only looked up in the layers where their parent is merged.
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(tmp);
    const { changes, b, lowers } = await run(upper, [near, deep], { prefetchLookups: 0 });
    expect(changes).toEqual(want);
    const askedDeep = b.lstatLog.filter((c) => c.dir === lowers[1]).flatMap((c) => c.paths);
    expect(askedDeep).toEqual(expect.arrayContaining(['d/f', 'b', 'c', 'd', 'e']));
    expect(askedDeep).not.toContain('a/f');
    expect(askedDeep).not.toContain('b/f');
    expect(askedDeep).not.toContain('c/f');
  });

  it('a whiteout hides a path in deeper layers (re-created file is Add)', async () => {
    const { changes } = await run([root(), ent('/x', 'f')], [[root(), whiteout('/x')], [root(), ent('/x', 'f')]]);
    expect(changes).toEqual([A('/x')]);
  });

  it('opaque directory over a lower directory: entries the lower view had are deleted', async () => {
    const low = lowerBase();
    const lib = like(low[4]!, { mtimeSec: 1_800_000_000, xattrs: { 'trusted.overlay.opaque': Buffer.from('y') } });
    const deeper = [root(), ent('/usr', 'd'), ent('/usr/lib', 'd'), ent('/usr/lib/old', 'f'), ent('/usr/lib/b', 'f')];
    const lowWithWh = [...low, whiteout('/usr/lib/gone')];
    const deeperWithGone = [...deeper, ent('/usr/lib/gone', 'f')];
    const upperTree = [root(), like(low[3]!), lib, ent('/usr/lib/b', 'f'), ent('/usr/lib/c', 'f')];
    const { changes } = await run(upperTree, [lowWithWh, deeperWithGone]);
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(tmp);
    expect((await run(upperTree, [lowWithWh, deeperWithGone], { prefetchLookups: 0 })).changes).toEqual(changes);
    // a, sub (nearest lower) and old (deeper lower) were visible: Delete; b is replaced (Modify); c is new;
    // 'gone' was already whited out in the nearer lower, so it was not visible and is not reported.
    expect(changes).toEqual([C('/usr/lib'), D('/usr/lib/a'), C('/usr/lib/b'), A('/usr/lib/c'), D('/usr/lib/old'), D('/usr/lib/sub')]);
  });

  it('a new opaque directory (the kernel marks every directory made in merged) is a plain Add', async () => {
    const { changes, b } = await run([root(), ent('/new', 'd', { xattrs: { 'trusted.overlay.opaque': Buffer.from('y') } }), ent('/new/f', 'f')], [lowerBase()]);
    expect(changes).toEqual([A('/new'), A('/new/f')]);
    expect(b.openBounded).not.toHaveBeenCalled();
  });

  it('honours user.overlay.opaque with userxattr', async () => {
    const low = lowerBase();
    const lib = like(low[4]!, { mtimeSec: 5, xattrs: { 'user.overlay.opaque': Buffer.from('y') } });
    const { changes } = await run([root(), like(low[3]!), lib], [low], { userxattr: true });
    expect(changes).toEqual([C('/usr/lib'), D('/usr/lib/a'), D('/usr/lib/b'), D('/usr/lib/sub')]);
  });

  it('no lowers: everything is Add, whiteouts are still Delete (as moby)', async () => {
    const { changes } = await run([root(), ent('/a', 'd'), ent('/a/b', 'f'), whiteout('/z')], []);
    expect(changes).toEqual([A('/a'), A('/a/b'), D('/z')]);
  });

  it('refuses redirect_dir / metacopy upper dirs', async () => {
    const [upper] = mkdirs('upper');
    const b = treeBindings({ [upper!]: [root(), ent('/d', 'd', { xattrs: { 'trusted.overlay.redirect': Buffer.from('/x') } })] });
    await expect(changesUpper(upper!, [], 'overlay', { bindings: b })).rejects.toBeInstanceOf(NativeDiffUnsupportedError);
    await expect(changesUpper(upper!, [], 'overlay', { bindings: b })).rejects.toMatchObject({ code: 'ERR_NATIVE_DIFF_UNSUPPORTED' });
  });
});

describe('changesUpper (aufs)', () => {
  it('.wh.X deletes X, root metadata and nested opaque markers are not changes, lookups honour aufs whiteouts', async () => {
    const [upper, l0, l1] = mkdirs('upper', 'l0', 'l1');
    const deep = [root(), ent('/a', 'd'), ent('/a/x', 'f'), ent('/a/y', 'f'), ent('/k', 'f'), ent('/m', 'd'), ent('/m/q', 'f')];
    const near = [root(), ent('/.wh.k', 'f'), ent('/m', 'd'), ent('/m/.wh..wh..opq', 'f')];
    for (const [dir, t] of [
      [l0!, near],
      [l1!, deep],
    ] as const) {
      for (const e of t) {
        if (e.path === '/') continue;
        const p = path.join(dir, e.path);
        if ((e.mode & FileType.S_IFMT) === FileType.S_IFDIR) fs.mkdirSync(p, { recursive: true });
        else fs.writeFileSync(p, '');
      }
    }
    const upperTree = [
      root(),
      ent('/.wh..wh.plnk', 'd'),
      ent('/.wh..wh.plnk/99.1', 'f'),
      ent('/a', 'd', { mtimeSec: 9 }),
      ent('/a/.wh..wh..opq', 'f'),
      ent('/a/z', 'f'),
      ent('/k', 'f'), // whited out in l0: re-created here, Add
      ent('/m', 'd'),
      ent('/m/q', 'f'), // l0's /m is opaque: l1's /m/q is hidden, so Add
      ent('/.wh.gone', 'f'),
    ];
    const b = treeBindings(
      { [upper!]: upperTree, [l0!]: near, [l1!]: deep },
      { openBounded: jest.fn(async (r: string, p: string) => fs.openSync(path.join(r, p), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)) },
    );
    const want = [C('/a'), D('/a/x'), D('/a/y'), A('/a/z'), D('/gone'), A('/k'), C('/m'), A('/m/q')];
    expect(await changesUpper(upper!, [l0!, l1!], 'aufs', { bindings: b })).toEqual(want);
    expect(await changesUpper(upper!, [l0!, l1!], 'aufs', { bindings: b, prefetchLookups: 0 })).toEqual(want);
  });
});

// ---- size ----

describe('diffSize (Docker ChangesSize)', () => {
  const entries = [
    root(),
    ent('/d', 'd', { size: 4096 }),
    ent('/d/a', 'f', { size: 100, ino: 1, nlink: 2 }),
    ent('/d/b', 'f', { size: 100, ino: 1, nlink: 2 }),
    ent('/d/c', 'f', { size: 7 }),
    ent('/l', 'l', { size: 9 }),
    ent('/gone-but-deleted', 'f', { size: 1000 }),
  ];
  const changes = [C('/d'), A('/d/a'), A('/d/b'), C('/d/c'), A('/l'), D('/gone-but-deleted'), A('/missing')];

  it('sums added/modified non-directories, hardlinks once, from a scan at hand', async () => {
    const b = mockBindings();
    expect(await diffSize(changes, '/nowhere', { entries, bindings: b })).toBe(100 + 7 + 9);
    expect(b.lstatMany).not.toHaveBeenCalled();
  });

  it('or from one batched lstatMany of the changed paths', async () => {
    const [dir] = mkdirs('layer');
    const b = treeBindings({ [dir!]: entries });
    expect(await diffSize(changes, dir!, { bindings: b })).toBe(116);
    expect(b.lstatMany).toHaveBeenCalledTimes(1);
    expect(b.lstatMany.mock.calls[0]![1]).toEqual(['d', 'd/a', 'd/b', 'd/c', 'l', 'missing']);
  });
});

// ---- diff export ----

async function readBack(stream: NodeJS.ReadableStream): Promise<Array<{ h: TarHeader; data: Buffer }>> {
  const out: Array<{ h: TarHeader; data: Buffer }> = [];
  for await (const e of readTar(stream as AsyncIterable<Buffer>)) {
    const parts: Buffer[] = [];
    for await (const c of e.body()) parts.push(Buffer.from(c));
    out.push({ h: e.header, data: Buffer.concat(parts) });
  }
  return out;
}

describe('exportChanges', () => {
  function layer(files: Record<string, string | Buffer>): string {
    const [dir] = mkdirs('layer');
    for (const [p, c] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(dir!, p)), { recursive: true });
      fs.writeFileSync(path.join(dir!, p), c);
    }
    return dir!;
  }

  it('writes Docker-style entries: sorted, whiteouts, trailing slashes, seconds, no names, caps, hardlinks, devices', async () => {
    const dir = layer({ 'etc/hosts': 'hello', 'bin/ping': 'ELF!', 'x/a': 'AAAA' });
    const tree = [
      root(),
      ent('/etc', 'd', { perm: 0o755, uid: 1, gid: 2, mtimeSec: 1_600_000_000, mtimeNsec: 999_999_999 }),
      ent('/etc/hosts', 'f', { size: 5, perm: 0o4755, uid: 1000, gid: 1001 }),
      ent('/bin', 'd'),
      ent('/bin/ping', 'f', { size: 4, xattrs: { 'security.capability': CAP_V3, 'user.other': Buffer.from('no') } }),
      ent('/x', 'd'),
      ent('/x/a', 'f', { size: 4, ino: 7, nlink: 3 }),
      ent('/x/b', 'f', { size: 4, ino: 7, nlink: 3 }),
      ent('/dev', 'd'),
      ent('/dev/null', 'c', { rdev: makedev(1, 3), perm: 0o666 }),
      ent('/dev/sda', 'b', { rdev: makedev(8, 0), perm: 0o660 }),
      ent('/fifo', 'p'),
      ent('/sock', 's'),
      ent('/lnk', 'l', { linkname: '../etc/hosts' }),
    ];
    const b = treeBindings(
      { [dir]: tree },
      { openBounded: jest.fn(async (r: string, p: string) => fs.openSync(path.join(r, p), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)) },
    );
    const warnings: DiffWarning[] = [];
    const changes = [A('/x/b'), C('/etc'), A('/etc/hosts'), D('/etc/old'), A('/bin/ping'), A('/x'), A('/x/a'), A('/dev/null'), A('/dev/sda'), A('/fifo'), A('/sock'), A('/lnk'), A('/vanished'), D('/zz')];
    const got = await readBack(exportChanges(dir, changes, { bindings: b, whiteoutMtime: 1_234_567_890, onWarning: (w) => warnings.push(w) }));
    expect(got.map((e) => [e.h.name, e.h.type])).toEqual([
      ['bin/ping', 'file'],
      ['dev/null', 'char'],
      ['dev/sda', 'block'],
      ['etc/', 'dir'],
      ['etc/hosts', 'file'],
      ['etc/.wh.old', 'file'],
      ['fifo', 'fifo'],
      ['lnk', 'symlink'],
      ['x/', 'dir'],
      ['x/a', 'file'],
      ['x/b', 'link'],
      ['.wh.zz', 'file'],
    ]);
    const by = new Map(got.map((e) => [e.h.name, e]));
    const etc = by.get('etc/')!.h;
    expect([etc.mode, etc.uid, etc.gid, etc.mtimeSec, etc.mtimeNsec, etc.uname, etc.gname]).toEqual([0o755, 1, 2, 1_600_000_000, 0, '', '']);
    const hosts = by.get('etc/hosts')!;
    expect([hosts.h.mode, hosts.h.uid, hosts.h.gid, hosts.h.size, hosts.data.toString()]).toEqual([0o4755, 1000, 1001, 5, 'hello']);
    const wh = by.get('etc/.wh.old')!.h;
    expect([wh.mode, wh.uid, wh.gid, wh.size, wh.mtimeSec]).toEqual([0, 0, 0, 0, 1_234_567_890]);
    // Only security.capability travels, and a v3 (namespaced) capability is written as v2.
    const ping = by.get('bin/ping')!;
    expect([...ping.h.xattrs.keys()]).toEqual(['security.capability']);
    expect(ping.h.xattrs.get('security.capability')).toEqual(capabilityForTar(CAP_V3));
    expect(ping.h.xattrs.get('security.capability')!.length).toBe(20);
    expect(ping.h.xattrs.get('security.capability')![3]).toBe(2);
    expect(by.get('x/a')!.data.toString()).toBe('AAAA');
    expect([by.get('x/b')!.h.linkname, by.get('x/b')!.h.size]).toEqual(['x/a', 0]);
    expect([by.get('dev/null')!.h.devMajor, by.get('dev/null')!.h.devMinor, by.get('dev/null')!.h.mode]).toEqual([1, 3, 0o666]);
    expect([by.get('dev/sda')!.h.devMajor, by.get('dev/sda')!.h.devMinor]).toEqual([8, 0]);
    expect(by.get('lnk')!.h.linkname).toBe('../etc/hosts');
    expect(warnings.map((w) => w.path).sort()).toEqual(['/sock', '/vanished']);
    // One batched lstatMany for the whole (small) change list, with security.capability.
    expect(b.lstatMany).toHaveBeenCalledTimes(1);
    expect(b.lstatMany.mock.calls[0]![2]).toEqual({ xattrs: ['security.capability'] });
    // Content was opened bounded, without following a final symlink.
    expect(b.openBounded.mock.calls.map((c) => c[1]).sort()).toEqual(['bin/ping', 'etc/hosts', 'x/a']);
    for (const c of b.openBounded.mock.calls) expect((c[2]!.flags ?? 0) & 0o400000).toBe(0o400000);
  });

  it('keeps the archive valid when files change while being read: pad, truncate, zeros for swapped paths', async () => {
    const dir = layer({ shrank: 'abc', grew: 'abcdefgh', swapped: 'secret' });
    const big = Buffer.alloc(3 * (1 << 20) + 5, 7);
    fs.writeFileSync(path.join(dir, 'big'), big.subarray(0, 1 << 20));
    const tree = [root(), ent('/shrank', 'f', { size: 10 }), ent('/grew', 'f', { size: 4 }), ent('/swapped', 'f', { size: 6 }), ent('/big', 'f', { size: big.length })];
    const b = treeBindings(
      { [dir]: tree },
      {
        openBounded: jest.fn(async (r: string, p: string) => {
          if (p === 'swapped') throw Object.assign(new Error('ELOOP'), { code: 'ELOOP' });
          return fs.openSync(path.join(r, p), fs.constants.O_RDONLY);
        }),
      },
    );
    const warnings: DiffWarning[] = [];
    const got = await readBack(exportChanges(dir, [A('/shrank'), A('/grew'), A('/swapped'), A('/big')], { bindings: b, onWarning: (w) => warnings.push(w) }));
    const by = new Map(got.map((e) => [e.h.name, e.data]));
    expect(by.get('shrank')).toEqual(Buffer.concat([Buffer.from('abc'), Buffer.alloc(7)]));
    expect(by.get('grew')!.toString()).toBe('abcd');
    expect(by.get('swapped')).toEqual(Buffer.alloc(6));
    expect(by.get('big')!.length).toBe(big.length);
    expect(by.get('big')!.subarray(0, 1 << 20)).toEqual(big.subarray(0, 1 << 20));
    expect(by.get('big')!.subarray(1 << 20).equals(Buffer.alloc(big.length - (1 << 20)))).toBe(true);
    expect(warnings.map((w) => w.path).sort()).toEqual(['/big', '/shrank', '/swapped']);
  });

  it('refuses to read something that is no longer a regular file', async () => {
    const [dir] = mkdirs('layer', 'layer/adir');
    const b = treeBindings({ [dir!]: [root(), ent('/adir', 'f', { size: 3 })] }, { openBounded: jest.fn(async (r: string, p: string) => fs.openSync(path.join(r, p), 'r')) });
    const warnings: DiffWarning[] = [];
    const got = await readBack(exportChanges(dir!, [A('/adir')], { bindings: b, onWarning: (w) => warnings.push(w) }));
    expect(got[0]!.data).toEqual(Buffer.alloc(3));
    expect(warnings[0]!.message).toMatch(/regular file/);
  });

  it('errors other than a vanished path fail the stream', async () => {
    const dir = layer({ f: 'x' });
    const b = treeBindings({ [dir]: [root(), ent('/f', 'f', { size: 1 })] }, { openBounded: jest.fn(async () => Promise.reject(Object.assign(new Error('EIO'), { code: 'EIO' }))) });
    await expect(readBack(exportChanges(dir, [A('/f')], { bindings: b }))).rejects.toMatchObject({ code: 'EIO' });
  });

  it('is pulled: nothing is read before the consumer asks', async () => {
    const dir = layer({});
    const b = treeBindings({ [dir]: [root()] });
    const s = exportChanges(dir, [D('/a')], { bindings: b, whiteoutMtime: 0 });
    await new Promise((r) => setImmediate(r));
    expect(b.lstatMany).not.toHaveBeenCalled();
    const got = await readBack(s);
    expect(got.map((e) => e.h.name)).toEqual(['.wh.a']);
  });
});

describe('exportChanges with batched reads (readFiles)', () => {
  /** readFiles answering from fixed contents: a string is the file, -1/'ENOENT'-style codes are outcomes. */
  function readFilesFrom(files: Record<string, string | number | { code: string }>): jest.Mock {
    return jest.fn(async (_fd: number, paths: string[], sizes: number[], opts?: { align?: number }) => {
      const align = opts?.align ?? 1;
      const slots = sizes.map((n) => Math.ceil(n / align) * align);
      const data = Buffer.alloc(slots.reduce((a, n) => a + n, 0));
      let off = 0;
      const read = paths.map((p, i) => {
        const f = files[p];
        const at = off;
        off += slots[i]!;
        if (typeof f === 'string') return data.write(f.slice(0, sizes[i]!), at, 'latin1');
        if (typeof f === 'number') return f;
        return Object.assign(new Error(`${f?.code ?? 'ENOENT'}: ${p}`), { code: f?.code ?? 'ENOENT', syscall: 'openat2', path: p });
      });
      return { data, read };
    });
  }

  it('reads small files in one call on the root fd, in tar slots, and handles every outcome', async () => {
    const [dir] = mkdirs('layer');
    const tree = [
      root(),
      ent('/a', 'f', { size: 5 }),
      ent('/d', 'd'),
      ent('/d/b', 'f', { size: 600 }),
      ent('/d/gone', 'f', { size: 3 }),
      ent('/d/shrank', 'f', { size: 8 }),
      ent('/d/swapped', 'f', { size: 4 }),
      ent('/e', 'f', { size: 0 }),
    ];
    const readFiles = readFilesFrom({ a: 'hello', 'd/b': 'B'.repeat(600), 'd/gone': { code: 'ENOENT' }, 'd/shrank': 'abc', 'd/swapped': -1 });
    const b = treeBindings({ [dir!]: tree }, { readFiles });
    const warnings: DiffWarning[] = [];
    const got = await readBack(exportChanges(dir!, ['/a', '/d', '/d/b', '/d/gone', '/d/shrank', '/d/swapped', '/e'].map(A), { bindings: b, onWarning: (w) => warnings.push(w) }));
    expect(got.map((e) => [e.h.name, e.data.toString('latin1')])).toEqual([
      ['a', 'hello'],
      ['d/', ''],
      ['d/b', 'B'.repeat(600)],
      ['d/gone', '\0\0\0'],
      ['d/shrank', 'abc\0\0\0\0\0'],
      ['d/swapped', '\0\0\0\0'],
      ['e', ''],
    ]);
    // One call for the five non-empty files, on an fd of the root, 512-byte slots; no per-file opens.
    expect(readFiles).toHaveBeenCalledTimes(1);
    const [fd, paths, sizes, opts] = readFiles.mock.calls[0]!;
    expect(paths).toEqual(['a', 'd/b', 'd/gone', 'd/shrank', 'd/swapped']);
    expect(sizes).toEqual([5, 600, 3, 8, 4]);
    expect(opts).toEqual({ align: 512 });
    expect(typeof fd).toBe('number');
    expect(b.openBounded).not.toHaveBeenCalled();
    expect(warnings.map((w) => [w.path, w.message.split(' ')[0]])).toEqual([
      ['/d/gone', 'file'],
      ['/d/shrank', 'file'],
      ['/d/swapped', 'no'],
    ]);
  });

  it('batches by count, reads the next batch ahead, and streams large files between them', async () => {
    const [dir] = mkdirs('layer');
    const big = 1536 << 10; // above the small-file limit: streamed through openBounded
    fs.writeFileSync(path.join(dir!, 'f0599z'), Buffer.alloc(big, 0x6d)); // sorts between f0599 and f0600
    const names = Array.from({ length: 1100 }, (_, i) => `f${String(i).padStart(4, '0')}`);
    const tree = [root(), ...names.slice(0, 600).map((n) => ent(`/${n}`, 'f', { size: 2 })), ent('/f0599z', 'f', { size: big }), ...names.slice(600).map((n) => ent(`/${n}`, 'f', { size: 2 }))];
    const readFiles = readFilesFrom(Object.fromEntries(names.map((n) => [n, n.slice(-2)])));
    const b = treeBindings({ [dir!]: tree }, { readFiles, openBounded: jest.fn(async (r: string, p: string) => fs.openSync(path.join(r, p), 'r')) });
    const got = await readBack(exportChanges(dir!, [...names, 'f0599z'].map((n) => A(`/${n}`)), { bindings: b }));
    expect(got.map((e) => e.h.name)).toEqual([...names.slice(0, 600), 'f0599z', ...names.slice(600)]);
    for (const e of got) expect(e.data.toString('latin1')).toBe(e.h.name === 'f0599z' ? 'm'.repeat(big) : e.h.name.slice(-2));
    // 1024 changes per lstatMany batch, at most 512 files per readFiles, never across the large file.
    expect(readFiles.mock.calls.map((c) => (c[1] as string[]).length)).toEqual([512, 88, 423, 77]);
    expect(b.openBounded.mock.calls.map((c) => c[1])).toEqual(['f0599z']);
  });

  it('fails the stream on a read error other than a vanished path', async () => {
    const [dir] = mkdirs('layer');
    const b = treeBindings({ [dir!]: [root(), ent('/f', 'f', { size: 1 })] }, { readFiles: readFilesFrom({ f: { code: 'EIO' } }) });
    await expect(readBack(exportChanges(dir!, [A('/f')], { bindings: b }))).rejects.toMatchObject({ code: 'EIO', path: 'f' });
  });
});

describe('exportUpper', () => {
  it('overlay: walk order, char 0/0 whiteouts to .wh. files, opaque dirs followed by .wh..wh..opq', async () => {
    const [up] = mkdirs('upper');
    fs.writeFileSync(path.join(up!, 'f'), 'data');
    const wh1 = ent('/a/gone', 'c', { perm: 0, uid: 3, gid: 4, mtimeSec: 1_650_000_000, ino: 55, nlink: 3 });
    const wh2 = ent('/b.c', 'c', { perm: 0, ino: 55, nlink: 3 });
    const tree = [
      root({ xattrs: { 'trusted.overlay.opaque': Buffer.from('y') } }),
      ent('/a', 'd', { perm: 0o2755, uid: 7, gid: 8, xattrs: { 'trusted.overlay.opaque': Buffer.from('y') } }),
      wh1,
      ent('/a.b', 'f'),
      wh2,
      ent('/f', 'f', { size: 4 }),
      ent('/dev', 'd'),
      ent('/dev/tty', 'c', { rdev: makedev(5, 0) }),
    ];
    const b = treeBindings({ [up!]: tree }, { openBounded: jest.fn(async (r: string, p: string) => fs.openSync(path.join(r, p), 'r')) });
    const got = await readBack(exportUpper(up!, 'overlay', { bindings: b }));
    expect(got.map((e) => [e.h.name, e.h.type])).toEqual([
      ['a/', 'dir'],
      ['a/.wh..wh..opq', 'file'],
      ['a/.wh.gone', 'file'],
      ['a.b', 'file'],
      ['.wh.b.c', 'file'],
      ['dev/', 'dir'],
      ['dev/tty', 'char'],
      ['f', 'file'],
    ]);
    const opq = got[1]!.h;
    expect([opq.mode, opq.uid, opq.gid, opq.mtimeSec, opq.size]).toEqual([0o755, 7, 8, 0, 0]);
    const gone = got[2]!.h;
    expect([gone.mode, gone.uid, gone.gid, gone.mtimeSec, gone.size]).toEqual([0o600, 3, 4, 1_650_000_000, 0]);
    expect(got[7]!.data.toString()).toBe('data');
    // The opaque xattr itself never travels.
    expect(got.every((e) => !e.h.xattrs.has('trusted.overlay.opaque'))).toBe(true);
    expect(b.scanTree.mock.calls[0]![1]).toEqual({ xattrs: ['security.capability', 'trusted.overlay.opaque'], sort: false });
  });

  it('aufs: as stored, minus root metadata except .wh..wh..opq; aufs whiteout hardlinks become TypeLink', async () => {
    const [up] = mkdirs('upper');
    const tree = [
      root(),
      ent('/.wh..wh.aufs', 'f', { ino: 9, nlink: 3 }),
      ent('/.wh..wh.plnk', 'd'),
      ent('/.wh..wh.plnk/1.2', 'f'),
      ent('/.wh..wh..opq', 'f'),
      ent('/d', 'd'),
      ent('/d/.wh..wh..opq', 'f'),
      ent('/d/.wh.x', 'f', { ino: 9, nlink: 3 }),
      ent('/.wh.y', 'f', { ino: 9, nlink: 3 }),
    ];
    const b = treeBindings({ [up!]: tree });
    const got = await readBack(exportUpper(up!, 'aufs', { bindings: b }));
    expect(got.map((e) => [e.h.name, e.h.type, e.h.linkname])).toEqual([
      ['.wh..wh..opq', 'file', ''],
      ['.wh.y', 'file', ''],
      ['d/', 'dir', ''],
      ['d/.wh..wh..opq', 'file', ''],
      ['d/.wh.x', 'link', '.wh.y'],
    ]);
  });
});
