/**
 * applyEntries / finishFile / setTimes on the real kernel: every entry type with its metadata, Docker's replace
 * rules, hardlinks, remove and whiteout ops, streamed and sparse files, deferred directory times, and above all
 * that no entry can reach outside the root through symlinks, '..' or hardlink names.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import { major, minor } from '../../lib/native/constants';
import type { ApplyEntry, ApplyResult, NativeBindings, NativeError } from '../../lib/native/types';
import { describeIf, isRoot } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

/** A VFS_CAP_REVISION_2 security.capability value granting CAP_NET_RAW (bit 13), effective. */
const CAP = (() => {
  const v = Buffer.alloc(20);
  v.writeUInt32LE(0x02000001, 0);
  v.writeUInt32LE(1 << 13, 4);
  return v;
})();

function lst(p: string): fs.BigIntStats {
  return fs.lstatSync(p, { bigint: true });
}

function ns(sec: number, nsec: number): bigint {
  return BigInt(sec) * 1_000_000_000n + BigInt(nsec);
}

function ok(r: ApplyResult): void {
  expect({ errno: r.errno, code: r.code, syscall: r.syscall }).toEqual({ errno: 0, code: '', syscall: '' });
}

/** lgetxattr through the native binding (never follows a symlink). */
async function xattr(b: NativeBindings, p: string, name: string): Promise<Buffer | null> {
  return b.lgetxattr(p, name);
}

describeIf(isRoot ? null : 'needs root (ownership, device nodes, trusted.* xattrs)', 'native applyEntries', () => {
  let b: NativeBindings;
  let tmp = '';
  let root = '';
  let victim = '';
  let rootFd = -1;

  beforeAll(() => {
    b = loadBindings();
  });

  beforeEach(() => {
    tmp = makeTmp('gd-apply-entries-');
    root = path.join(tmp, 'root');
    victim = path.join(tmp, 'victim');
    fs.mkdirSync(root);
    fs.mkdirSync(victim);
    fs.writeFileSync(path.join(victim, 'secret'), 'do not touch');
    rootFd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  });

  afterEach(() => {
    if (rootFd >= 0) fs.closeSync(rootFd);
    rootFd = -1;
    removeTmp(tmp);
  });

  const apply = (entries: ApplyEntry[]): Promise<ApplyResult[]> => b.applyEntries(rootFd, entries);

  function victimUntouched(): void {
    expect(fs.readdirSync(victim)).toEqual(['secret']);
    const st = lst(path.join(victim, 'secret'));
    expect(st.nlink).toBe(1n);
    expect(fs.readFileSync(path.join(victim, 'secret'), 'utf8')).toBe('do not touch');
  }

  it('creates every entry type with owner, mode, nanosecond times and xattrs', async () => {
    const t = { mtimeSec: 1600000000, mtimeNsec: 123456789, atimeSec: 1500000000, atimeNsec: 987654321 };
    const res = await apply([
      { op: 'create', path: 'd', type: 'dir', mode: 0o1777, uid: 1, gid: 2, ...t },
      { op: 'create', path: 'd/file', type: 'file', mode: 0o640, uid: 1, gid: 2, data: Buffer.from('hello'), ...t },
      {
        op: 'create', path: 'd/suid', type: 'file', mode: 0o4755, uid: 1, gid: 2, data: Buffer.from('ELF'),
        xattrs: { 'security.capability': CAP, 'trusted.t': Buffer.from('tv'), 'user.u': Buffer.from('uv') }, ...t,
      },
      { op: 'create', path: 'd/sgid', type: 'file', mode: 0o2755, uid: 1, gid: 2, data: Buffer.alloc(0), ...t },
      { op: 'create', path: 'd/sgiddir', type: 'dir', mode: 0o2755, uid: 1, gid: 2, xattrs: { 'trusted.overlay.opaque': Buffer.from('y') }, ...t },
      { op: 'create', path: 'd/sym', type: 'symlink', linkname: '/no/such/target', uid: 3, gid: 4, ...t },
      { op: 'create', path: 'd/chr', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666, uid: 1, gid: 2, ...t },
      { op: 'create', path: 'd/blk', type: 'block', devMajor: 259, devMinor: 300, mode: 0o660, uid: 1, gid: 2, ...t },
      { op: 'create', path: 'd/fifo', type: 'fifo', mode: 0o600, uid: 1, gid: 2, ...t },
    ]);
    res.forEach(ok);
    expect(res.every((r) => r.fd === -1)).toBe(true);

    const d = lst(path.join(root, 'd'));
    expect(d.isDirectory()).toBe(true);
    expect([d.mode & 0o7777n, d.uid, d.gid]).toEqual([0o1777n, 1n, 2n]);

    const f = lst(path.join(root, 'd/file'));
    expect([f.mode & 0o7777n, f.uid, f.gid, f.size]).toEqual([0o640n, 1n, 2n, 5n]);
    expect(f.mtimeNs).toBe(ns(t.mtimeSec, t.mtimeNsec));
    expect(f.atimeNs).toBe(ns(t.atimeSec, t.atimeNsec));
    expect(fs.readFileSync(path.join(root, 'd/file'), 'utf8')).toBe('hello');

    // setuid survives because chmod runs after chown; the capability because xattrs come after chown.
    const s = lst(path.join(root, 'd/suid'));
    expect([s.mode & 0o7777n, s.uid, s.gid]).toEqual([0o4755n, 1n, 2n]);
    expect(await xattr(b, path.join(root, 'd/suid'), 'security.capability')).toEqual(CAP);
    expect(await xattr(b, path.join(root, 'd/suid'), 'trusted.t')).toEqual(Buffer.from('tv'));
    expect(await xattr(b, path.join(root, 'd/suid'), 'user.u')).toEqual(Buffer.from('uv'));
    expect(lst(path.join(root, 'd/sgid')).mode & 0o7777n).toBe(0o2755n);
    const sd = lst(path.join(root, 'd/sgiddir'));
    expect([sd.mode & 0o7777n, sd.mtimeNs]).toEqual([0o2755n, ns(t.mtimeSec, t.mtimeNsec)]);
    expect(await xattr(b, path.join(root, 'd/sgiddir'), 'trusted.overlay.opaque')).toEqual(Buffer.from('y'));

    const l = lst(path.join(root, 'd/sym'));
    expect(l.isSymbolicLink()).toBe(true);
    expect(fs.readlinkSync(path.join(root, 'd/sym'))).toBe('/no/such/target');
    expect([l.uid, l.gid, l.mtimeNs]).toEqual([3n, 4n, ns(t.mtimeSec, t.mtimeNsec)]);

    const c = lst(path.join(root, 'd/chr'));
    expect(c.isCharacterDevice()).toBe(true);
    expect([major(Number(c.rdev)), minor(Number(c.rdev)), c.mode & 0o7777n, c.uid, c.gid]).toEqual([1, 3, 0o666n, 1n, 2n]);
    const bl = lst(path.join(root, 'd/blk'));
    expect(bl.isBlockDevice()).toBe(true);
    expect([major(Number(bl.rdev)), minor(Number(bl.rdev)), bl.mode & 0o7777n]).toEqual([259, 300, 0o660n]);
    const fi = lst(path.join(root, 'd/fifo'));
    expect(fi.isFIFO()).toBe(true);
    expect([fi.mode & 0o7777n, fi.uid, fi.mtimeNs]).toEqual([0o600n, 1n, ns(t.mtimeSec, t.mtimeNsec)]);
  });

  it('reports xattrs the filesystem refuses as warnings, not failures', async () => {
    // user.* xattrs are not allowed on symlinks (EPERM).
    const [r] = await apply([{ op: 'create', path: 's', type: 'symlink', linkname: 'x', xattrs: { 'user.no': Buffer.from('1') } }]);
    ok(r);
    expect(r.warnings).toEqual(['user.no: EPERM']);
    expect(lst(path.join(root, 's')).isSymbolicLink()).toBe(true);
  });

  it('xattrs op sets attributes on an existing entry, the root included, without following a symlink', async () => {
    fs.mkdirSync(path.join(root, 'opq'));
    fs.symlinkSync('opq', path.join(root, 'lnk'));
    const y = Buffer.from('y');
    const res = await apply([
      { op: 'xattrs', path: 'opq', xattrs: { 'trusted.overlay.opaque': y } },
      { op: 'xattrs', path: '', xattrs: { 'trusted.overlay.opaque': y } },
      { op: 'xattrs', path: 'lnk', xattrs: { 'trusted.onlink': y } },
      { op: 'xattrs', path: 'missing', xattrs: { 'trusted.x': y } },
    ]);
    [0, 1, 2].forEach((i) => ok(res[i]));
    expect(res[3]).toMatchObject({ code: 'ENOENT' });
    expect(await xattr(b, path.join(root, 'opq'), 'trusted.overlay.opaque')).toEqual(y);
    expect(await xattr(b, root, 'trusted.overlay.opaque')).toEqual(y);
    expect(await xattr(b, path.join(root, 'lnk'), 'trusted.onlink')).toEqual(y);
    expect(await xattr(b, path.join(root, 'opq'), 'trusted.onlink')).toBeNull();
  });

  it('applies Docker replace rules: file over dir, dir over file, dir over dir keeps children', async () => {
    fs.mkdirSync(path.join(root, 'a/deep/er'), { recursive: true });
    fs.writeFileSync(path.join(root, 'a/deep/er/f'), 'x');
    fs.writeFileSync(path.join(root, 'b'), 'file');
    fs.mkdirSync(path.join(root, 'c'), { mode: 0o700 });
    fs.writeFileSync(path.join(root, 'c/child'), 'kept');
    fs.writeFileSync(path.join(root, 'e'), 'old');
    fs.writeFileSync(path.join(root, 'g'), 'old');
    const res = await apply([
      { op: 'create', path: 'a', type: 'file', data: Buffer.from('now a file'), mode: 0o644 },
      { op: 'create', path: 'b', type: 'dir', mode: 0o755 },
      { op: 'create', path: 'c', type: 'dir', mode: 0o751, uid: 7, gid: 8, mtimeSec: 1234, mtimeNsec: 5 },
      { op: 'create', path: 'e', type: 'symlink', linkname: 'target' },
      { op: 'create', path: 'g', type: 'file', data: Buffer.from('new'), noReplace: true },
    ]);
    res.slice(0, 4).forEach(ok);
    expect(res[4]).toMatchObject({ errno: 17, code: 'EEXIST' });
    expect(fs.readFileSync(path.join(root, 'a'), 'utf8')).toBe('now a file');
    expect(lst(path.join(root, 'b')).isDirectory()).toBe(true);
    const c = lst(path.join(root, 'c'));
    expect([c.mode & 0o7777n, c.uid, c.gid, c.mtimeNs]).toEqual([0o751n, 7n, 8n, ns(1234, 5)]);
    expect(fs.readFileSync(path.join(root, 'c/child'), 'utf8')).toBe('kept');
    expect(fs.readlinkSync(path.join(root, 'e'))).toBe('target');
    expect(fs.readFileSync(path.join(root, 'g'), 'utf8')).toBe('old');
  });

  it('makes hardlinks to files and to symlinks, refuses directories and missing targets', async () => {
    const res = await apply([
      { op: 'create', path: 'f', type: 'file', data: Buffer.from('data'), mode: 0o644 },
      { op: 'create', path: 'sub', type: 'dir', mode: 0o755 },
      { op: 'create', path: 'sub/hard', type: 'link', linkname: 'f' },
      { op: 'create', path: 'sym', type: 'symlink', linkname: '/etc/passwd' },
      { op: 'create', path: 'hardsym', type: 'link', linkname: 'sym' },
      { op: 'create', path: 'hdir', type: 'link', linkname: 'sub' },
      { op: 'create', path: 'hmissing', type: 'link', linkname: 'nope' },
      { op: 'create', path: 'f2', type: 'link', linkname: 'sub/hard' },
      { op: 'create', path: 'f2', type: 'link', linkname: 'f' },
    ]);
    [0, 1, 2, 3, 4, 7, 8].forEach((i) => ok(res[i]));
    expect(res[5]).toMatchObject({ errno: 1, code: 'EPERM', syscall: 'linkat' });
    expect(res[6]).toMatchObject({ errno: 2, code: 'ENOENT', syscall: 'linkat' });
    const f = lst(path.join(root, 'f'));
    expect(lst(path.join(root, 'sub/hard')).ino).toBe(f.ino);
    expect(lst(path.join(root, 'f2')).ino).toBe(f.ino);
    expect(f.nlink).toBe(3n);
    const hs = lst(path.join(root, 'hardsym'));
    expect(hs.isSymbolicLink()).toBe(true);
    expect(hs.ino).toBe(lst(path.join(root, 'sym')).ino);
    expect(fs.existsSync(path.join(root, 'hdir'))).toBe(false);
  });

  it('resolves each entry against the tree as earlier entries of the same batch left it', async () => {
    const res = await apply([
      { op: 'create', path: 'e', type: 'dir', mode: 0o755 },
      { op: 'create', path: 'd', type: 'dir', mode: 0o755 },
      { op: 'create', path: 'd/x', type: 'file', data: Buffer.from('x') },
      // d (a dir with a child) becomes a symlink to e: later d/... entries go through the symlink
      { op: 'create', path: 'd', type: 'symlink', linkname: 'e' },
      { op: 'create', path: 'd/y', type: 'file', data: Buffer.from('y') },
      { op: 'create', path: 'a', type: 'dir', mode: 0o755 },
      { op: 'create', path: 'a/b', type: 'dir', mode: 0o755 },
      { op: 'create', path: 'a/b/f1', type: 'file', data: Buffer.from('1') },
      { op: 'remove', path: 'a/b' },
      { op: 'create', path: 'a/b', type: 'dir', mode: 0o700 },
      { op: 'create', path: 'a/b/f2', type: 'file', data: Buffer.from('2') },
      { op: 'whiteout', path: 'a/b' },
      { op: 'create', path: 'a/b/f3', type: 'file', data: Buffer.from('3') },
    ]);
    res.slice(0, 12).forEach(ok);
    expect(res[12]).toMatchObject({ code: 'ENOTDIR' });
    expect(fs.readFileSync(path.join(root, 'e/y'), 'utf8')).toBe('y');
    expect(fs.readlinkSync(path.join(root, 'd'))).toBe('e');
    expect(fs.readdirSync(path.join(root, 'e'))).toEqual(['y']);
    expect(lst(path.join(root, 'a/b')).isCharacterDevice()).toBe(true);
    expect(fs.readdirSync(path.join(root, 'a'))).toEqual(['b']);
  });

  it('remove op removes recursively and treats a missing path as success', async () => {
    fs.mkdirSync(path.join(root, 'tree/a/b/c'), { recursive: true });
    fs.writeFileSync(path.join(root, 'tree/a/b/c/f'), 'x');
    fs.symlinkSync('/', path.join(root, 'tree/a/rootlink'));
    fs.mkdirSync(path.join(root, 'ro'), { mode: 0o500 });
    fs.writeFileSync(path.join(root, 'file'), 'x');
    const res = await apply([
      { op: 'remove', path: 'tree' },
      { op: 'remove', path: 'file' },
      { op: 'remove', path: 'missing' },
      { op: 'remove', path: 'missing/parent/too' },
      { op: 'remove', path: 'file/not-a-dir' },
    ]);
    res.forEach(ok);
    expect(fs.readdirSync(root).sort()).toEqual(['ro']);
  });

  it('whiteout op replaces what is there with a 0/0 character device owned by root', async () => {
    fs.mkdirSync(path.join(root, 'dir/sub'), { recursive: true });
    fs.writeFileSync(path.join(root, 'dir/sub/f'), 'x');
    const res = await apply([
      { op: 'whiteout', path: 'dir' },
      { op: 'whiteout', path: 'new' },
      { op: 'whiteout', path: 'missing/parent' },
    ]);
    ok(res[0]);
    ok(res[1]);
    expect(res[2]).toMatchObject({ code: 'ENOENT' });
    for (const n of ['dir', 'new']) {
      const st = lst(path.join(root, n));
      expect(st.isCharacterDevice()).toBe(true);
      expect([st.rdev, st.mode & 0o7777n, st.uid, st.gid]).toEqual([0n, 0n, 0n, 0n]);
    }
  });

  it('keepOpen returns an fd; finishFile sets size (sparse), owner, mode, xattrs and times, and closes it', async () => {
    const [r] = await apply([{ op: 'create', path: 'big', type: 'file', keepOpen: true }]);
    ok(r);
    expect(r.fd).toBeGreaterThan(2);
    fs.writeSync(r.fd, Buffer.from('head'), 0, 4, 0);
    await b.finishFile(r.fd, {
      mode: 0o4711, uid: 11, gid: 12, mtimeSec: 1700000000, mtimeNsec: 999999999, atimeSec: 1, atimeNsec: 2,
      xattrs: { 'security.capability': CAP }, size: 64 * 1024 * 1024,
    });
    // The fd is closed: using it again fails.
    expect(() => fs.fstatSync(r.fd)).toThrow();
    const st = lst(path.join(root, 'big'));
    expect([st.size, st.mode & 0o7777n, st.uid, st.gid]).toEqual([64n * 1024n * 1024n, 0o4711n, 11n, 12n]);
    expect(st.mtimeNs).toBe(ns(1700000000, 999999999));
    expect(st.atimeNs).toBe(ns(1, 2));
    expect(st.blocks).toBeLessThan(64n);
    expect(await xattr(b, path.join(root, 'big'), 'security.capability')).toEqual(CAP);
    const head = Buffer.alloc(4);
    const fd = fs.openSync(path.join(root, 'big'), 'r');
    fs.readSync(fd, head, 0, 4, 0);
    fs.closeSync(fd);
    expect(head.toString()).toBe('head');
  });

  it('finishFile rejects on failure and still closes the fd', async () => {
    const [r] = await apply([{ op: 'create', path: 'f', type: 'file', keepOpen: true }]);
    ok(r);
    await expect(b.finishFile(r.fd, { mode: 0o644, uid: 0, gid: 0, mtimeSec: 1, mtimeNsec: 0, xattrs: { 'trusted.big': Buffer.alloc(65537) } }))
      .rejects.toMatchObject({ code: 'E2BIG', syscall: 'fsetxattr' });
    expect(() => fs.fstatSync(r.fd)).toThrow();
  });

  it('keeps runs of zero blocks as holes and extends to the declared size', async () => {
    const data = Buffer.alloc(1024 * 1024);
    data.write('start', 0);
    data.write('end', data.length - 3);
    const [r] = await apply([{ op: 'create', path: 'sparse', type: 'file', mode: 0o644, data, size: 8 * 1024 * 1024 }]);
    ok(r);
    const st = lst(path.join(root, 'sparse'));
    expect(st.size).toBe(8n * 1024n * 1024n);
    expect(st.blocks * 512n).toBeLessThanOrEqual(64n * 1024n);
    const back = fs.readFileSync(path.join(root, 'sparse'));
    expect(back.subarray(0, data.length).equals(data)).toBe(true);
    expect(back.subarray(data.length).every((x) => x === 0)).toBe(true);
  });

  it('deferTimes leaves directory times for setTimes, which sets them exactly and never follows symlinks', async () => {
    const res = await apply([
      { op: 'create', path: 'd', type: 'dir', mode: 0o755, mtimeSec: 1000, mtimeNsec: 1, deferTimes: true },
      { op: 'create', path: 'd/f', type: 'file', data: Buffer.from('x'), mode: 0o644, mtimeSec: 2000, mtimeNsec: 0 },
      { op: 'create', path: 'link', type: 'symlink', linkname: 'd' },
    ]);
    res.forEach(ok);
    expect(lst(path.join(root, 'd')).mtimeNs).not.toBe(ns(1000, 1));
    const dirBefore = lst(path.join(root, 'd')).mtimeNs;
    await b.setTimes(rootFd, [
      { path: 'd', mtimeSec: 1000, mtimeNsec: 1, atimeSec: 900, atimeNsec: 9 },
      { path: 'link', mtimeSec: 3000, mtimeNsec: 3 },
      { path: '', mtimeSec: 4000, mtimeNsec: 4 },
    ]);
    const d = lst(path.join(root, 'd'));
    expect([d.mtimeNs, d.atimeNs]).toEqual([ns(1000, 1), ns(900, 9)]);
    expect(dirBefore).not.toBe(d.mtimeNs);
    expect(lst(path.join(root, 'link')).mtimeNs).toBe(ns(3000, 3));
    expect(lst(root).mtimeNs).toBe(ns(4000, 4));
    await expect(b.setTimes(rootFd, [{ path: 'missing', mtimeSec: 1, mtimeNsec: 0 }])).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('reports per-entry failures without rejecting and keeps going', async () => {
    const res = await apply([
      { op: 'create', path: 'no/parent', type: 'file', data: Buffer.from('x') },
      { op: 'create', path: 'fine', type: 'file', data: Buffer.from('x'), mode: 0o600 },
      { op: 'create', path: 'fine/child', type: 'dir' },
      { op: 'remove', path: '' },
      { op: 'create', path: 'last', type: 'dir', mode: 0o700 },
    ]);
    expect(res).toHaveLength(5);
    expect(res[0]).toMatchObject({ errno: 2, code: 'ENOENT', fd: -1 });
    expect(res[0].syscall).not.toBe('');
    ok(res[1]);
    expect(res[2]).toMatchObject({ code: 'ENOTDIR' });
    expect(res[3]).toMatchObject({ code: 'EINVAL' });
    ok(res[4]);
    expect(fs.readdirSync(root).sort()).toEqual(['fine', 'last']);
  });

  it('rejects malformed arguments before touching anything', async () => {
    await expect(b.applyEntries(rootFd, [{ op: 'bogus', path: 'x' } as unknown as ApplyEntry])).rejects.toThrow(TypeError);
    await expect(b.applyEntries(rootFd, [{ op: 'create', path: 'x', type: 'file', data: 'str' } as unknown as ApplyEntry])).rejects.toThrow(TypeError);
    expect(fs.readdirSync(root)).toEqual([]);
  });

  describe('security: nothing outside the root is touched', () => {
    it('an entry below a symlink to ../victim stays inside the root', async () => {
      fs.symlinkSync('../victim', path.join(root, 'evil'));
      const res = await apply([
        { op: 'create', path: 'evil/x', type: 'file', data: Buffer.from('pwned') },
        { op: 'create', path: 'evil/secret', type: 'file', data: Buffer.from('pwned') },
        { op: 'create', path: 'evil/d', type: 'dir' },
      ]);
      // '../victim' resolved inside the root is <root>/victim, which does not exist.
      res.forEach((r) => expect(r.code).toBe('ENOENT'));
      victimUntouched();
      expect(fs.readdirSync(root)).toEqual(['evil']);
    });

    it('lands inside the root when <root>/victim exists as the in-root target', async () => {
      fs.symlinkSync('../victim', path.join(root, 'evil'));
      fs.mkdirSync(path.join(root, 'victim'));
      const [r] = await apply([{ op: 'create', path: 'evil/x', type: 'file', data: Buffer.from('inside') }]);
      ok(r);
      expect(fs.readFileSync(path.join(root, 'victim/x'), 'utf8')).toBe('inside');
      victimUntouched();
    });

    it('an absolute symlink parent resolves against the root, not the host', async () => {
      const name = `gd-apply-abs-${process.pid}-${Date.now()}`;
      fs.symlinkSync('/', path.join(root, 'abs'));
      fs.mkdirSync(path.join(root, 'tmp'));
      const res = await apply([
        { op: 'create', path: `abs/tmp/${name}`, type: 'file', data: Buffer.from('x') },
        { op: 'create', path: `abs/${path.relative('/', victim)}/y`, type: 'file', data: Buffer.from('x') },
      ]);
      ok(res[0]);
      expect(res[1].code).toBe('ENOENT');
      expect(fs.existsSync(path.join(root, 'tmp', name))).toBe(true);
      expect(fs.existsSync(path.join('/tmp', name))).toBe(false);
      victimUntouched();
    });

    it('hardlinks cannot link files outside the root', async () => {
      fs.symlinkSync('../victim', path.join(root, 'evil'));
      fs.symlinkSync(victim, path.join(root, 'absevil'));
      fs.symlinkSync(path.join(victim, 'secret'), path.join(root, 'secretlink'));
      const res = await apply([
        { op: 'create', path: 'h1', type: 'link', linkname: '../../victim/secret' },
        { op: 'create', path: 'h2', type: 'link', linkname: 'evil/secret' },
        { op: 'create', path: 'h3', type: 'link', linkname: 'absevil/secret' },
        { op: 'create', path: 'h4', type: 'link', linkname: `/${path.relative('/', victim)}/secret` },
        { op: 'create', path: 'h5', type: 'link', linkname: 'secretlink' },
      ]);
      [0, 1, 2, 3].forEach((i) => expect(res[i].code).toBe('ENOENT'));
      // Linking the symlink itself is fine: it is an inode inside the root.
      ok(res[4]);
      expect(lst(path.join(root, 'h5')).isSymbolicLink()).toBe(true);
      victimUntouched();
    });

    it('remove and whiteout through symlinks never delete outside content', async () => {
      fs.symlinkSync('../victim', path.join(root, 'evil'));
      fs.symlinkSync(victim, path.join(root, 'absevil'));
      fs.symlinkSync(victim, path.join(root, 'dirlink'));
      const res = await apply([
        { op: 'remove', path: 'evil/secret' },
        { op: 'remove', path: 'absevil/secret' },
        { op: 'whiteout', path: 'evil/secret' },
        { op: 'whiteout', path: 'absevil/secret' },
        { op: 'remove', path: 'dirlink' },
        { op: 'create', path: 'absevil', type: 'dir', mode: 0o755 },
      ]);
      expect(res[0].errno).toBe(0);
      expect(res[1].errno).toBe(0);
      expect(res[2].code).toBe('ENOENT');
      expect(res[3].code).toBe('ENOENT');
      ok(res[4]);
      ok(res[5]);
      // The symlinks themselves were removed / replaced, their targets were not followed.
      expect(fs.existsSync(path.join(root, 'dirlink'))).toBe(false);
      expect(lst(path.join(root, 'absevil')).isDirectory()).toBe(true);
      victimUntouched();
    });

    it('a file entry over a symlink replaces the symlink instead of writing through it', async () => {
      fs.symlinkSync(path.join(victim, 'secret'), path.join(root, 'f'));
      const [r] = await apply([{ op: 'create', path: 'f', type: 'file', data: Buffer.from('mine'), mode: 0o644 }]);
      ok(r);
      expect(lst(path.join(root, 'f')).isFile()).toBe(true);
      expect(fs.readFileSync(path.join(root, 'f'), 'utf8')).toBe('mine');
      victimUntouched();
    });

    it('setTimes and lstatMany do not escape through symlinks either', async () => {
      fs.symlinkSync('../victim', path.join(root, 'evil'));
      const before = lst(path.join(victim, 'secret')).mtimeNs;
      await expect(b.setTimes(rootFd, [{ path: 'evil/secret', mtimeSec: 1, mtimeNsec: 0 }])).rejects.toMatchObject({ code: 'ENOENT' });
      expect(lst(path.join(victim, 'secret')).mtimeNs).toBe(before);
      expect(await b.lstatMany(rootFd, ['evil/secret'])).toEqual([null]);
    });
  });

  it('native errors carry Node-style fields', async () => {
    const err = (await b.setTimes(rootFd, [{ path: 'x/y', mtimeSec: 1, mtimeNsec: 0 }]).catch((e: unknown) => e)) as NativeError;
    expect(err.code).toBe('ENOENT');
    expect(err.errno).toBe(-2);
    expect(typeof err.syscall).toBe('string');
  });
});
