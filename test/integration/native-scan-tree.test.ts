/**
 * scanTree and lstatMany on the real kernel: every entry type matches fs.lstatSync field by field, xattr
 * selection, bytewise sort order, one-filesystem walks with a tmpfs mounted inside, and lstatMany's nulls.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import { makedev } from '../../lib/native/constants';
import type { NativeBindings, ScanEntry } from '../../lib/native/types';
import { describeIf, isRoot } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

const CAP = (() => {
  const v = Buffer.alloc(20);
  v.writeUInt32LE(0x02000001, 0);
  v.writeUInt32LE(1 << 10, 4);
  return v;
})();

function ns(sec: number, nsec: number): bigint {
  return BigInt(sec) * 1_000_000_000n + BigInt(nsec);
}

/** Compares one ScanEntry with lstat of the same file. */
function expectMatchesLstat(e: ScanEntry, file: string): void {
  const st = fs.lstatSync(file, { bigint: true });
  expect({
    path: e.path, mode: BigInt(e.mode), uid: BigInt(e.uid), gid: BigInt(e.gid), size: BigInt(e.size), blocks: BigInt(e.blocks),
    mtime: ns(e.mtimeSec, e.mtimeNsec), ctime: ns(e.ctimeSec, e.ctimeNsec), rdev: BigInt(e.rdev), dev: BigInt(e.dev),
    ino: BigInt(e.ino), nlink: BigInt(e.nlink), linkname: e.linkname,
  }).toEqual({
    path: e.path, mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, blocks: st.blocks, mtime: st.mtimeNs,
    ctime: st.ctimeNs, rdev: st.rdev, dev: st.dev, ino: st.ino, nlink: st.nlink,
    linkname: st.isSymbolicLink() ? fs.readlinkSync(file) : undefined,
  });
}

function byteSorted(paths: string[]): string[] {
  return [...paths].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

describeIf(isRoot ? null : 'needs root (device nodes, ownership, trusted.* xattrs, mounts)', 'native scanTree / lstatMany', () => {
  let b: NativeBindings;
  let tmp = '';
  let root = '';
  const mounts: string[] = [];

  beforeAll(async () => {
    b = loadBindings();
    tmp = makeTmp('gd-scan-');
    root = path.join(tmp, 'root');
    const p = (x: string): string => path.join(root, x);
    fs.mkdirSync(p('dir/sub'), { recursive: true });
    fs.writeFileSync(p('dir/file'), 'hello');
    fs.chownSync(p('dir/file'), 1, 2);
    fs.chmodSync(p('dir/file'), 0o4755);
    fs.utimesSync(p('dir/file'), new Date(1500000000123), new Date(1600000000456));
    fs.linkSync(p('dir/file'), p('dir/hard'));
    fs.symlinkSync('../dir/file', p('dir/sym'));
    fs.lchownSync(p('dir/sym'), 3, 4);
    fs.writeFileSync(p('dir/sub/deep'), 'x'.repeat(10000));
    execFileSync('mknod', [p('chr'), 'c', '1', '3']);
    execFileSync('mknod', [p('blk'), 'b', '7', '200']);
    execFileSync('mkfifo', [p('fifo')]);
    fs.mkdirSync(p('sticky'), { mode: 0o1777 });
    fs.chmodSync(p('sticky'), 0o1777);
    // Bytewise order traps: '.' (0x2e) and '-' (0x2d) sort before '/' (0x2f); UTF-8 bytes sort after ASCII.
    fs.mkdirSync(p('a'));
    fs.writeFileSync(p('a/b'), '');
    fs.writeFileSync(p('a.b'), '');
    fs.writeFileSync(p('a-b'), '');
    fs.writeFileSync(p('é'), '');
    fs.writeFileSync(p('z'), '');
    fs.writeFileSync(p('Z'), '');
    await b.lsetxattr(p('dir/file'), 'security.capability', CAP);
    await b.lsetxattr(p('dir/file'), 'user.one', Buffer.from('1'));
    await b.lsetxattr(p('dir/file'), 'trusted.two', Buffer.from([0, 2, 255]));
    await b.lsetxattr(p('dir'), 'trusted.overlay.opaque', Buffer.from('y'));
    await b.lsetxattr(p('dir/sym'), 'trusted.onlink', Buffer.from('L'));
    // A tmpfs mounted inside the tree: not descended into by default.
    fs.mkdirSync(p('mnt'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', p('mnt')]);
    mounts.push(p('mnt'));
    fs.writeFileSync(p('mnt/inside'), 'tmpfs file');
  });

  afterAll(() => {
    for (const m of mounts.reverse()) {
      try {
        execFileSync('umount', ['-l', m]);
      } catch {
        // already gone
      }
    }
    removeTmp(tmp);
  });

  it('reports every entry with the same data as lstat, including the root', async () => {
    const entries = await b.scanTree(root);
    const paths = entries.map((e) => e.path);
    expect(paths[0]).toBe('/');
    expect(paths).toEqual(expect.arrayContaining(['/dir', '/dir/file', '/dir/hard', '/dir/sym', '/dir/sub/deep', '/chr', '/blk', '/fifo', '/sticky', '/mnt']));
    for (const e of entries) expectMatchesLstat(e, path.join(root, e.path));
    const byPath = new Map(entries.map((e) => [e.path, e]));
    expect(byPath.get('/dir/file')!.ino).toBe(byPath.get('/dir/hard')!.ino);
    expect(byPath.get('/dir/file')!.nlink).toBe(2);
    expect(byPath.get('/dir/sym')!.linkname).toBe('../dir/file');
    expect(byPath.get('/chr')!.rdev).toBe(makedev(1, 3));
    expect(byPath.get('/blk')!.rdev).toBe(makedev(7, 200));
    expect(byPath.get('/sticky')!.mode & 0o7777).toBe(0o1777);
    expect(byPath.get('/dir/file')!.mode & 0o7777).toBe(0o4755);
    expect(byPath.get('/dir/file')!.atimeSec).toBe(1500000000);
    expect(entries.every((e) => e.xattrs === undefined)).toBe(true);
  });

  it('sorts by path bytes by default; sort:false returns the same set', async () => {
    const sorted = (await b.scanTree(root)).map((e) => e.path);
    expect(sorted).toEqual(byteSorted(sorted));
    expect(sorted.indexOf('/a-b')).toBeLessThan(sorted.indexOf('/a.b'));
    expect(sorted.indexOf('/a.b')).toBeLessThan(sorted.indexOf('/a/b'));
    expect(sorted.indexOf('/Z')).toBeLessThan(sorted.indexOf('/a'));
    expect(sorted.indexOf('/z')).toBeLessThan(sorted.indexOf('/é'));
    const unsorted = (await b.scanTree(root, { sort: false })).map((e) => e.path);
    expect(byteSorted(unsorted)).toEqual(sorted);
  });

  it('reads all xattrs, a chosen list, or none', async () => {
    const all = new Map((await b.scanTree(root, { xattrs: true })).map((e) => [e.path, e]));
    expect(all.get('/dir/file')!.xattrs).toEqual({
      'security.capability': CAP, 'user.one': Buffer.from('1'), 'trusted.two': Buffer.from([0, 2, 255]),
    });
    expect(all.get('/dir')!.xattrs).toEqual({ 'trusted.overlay.opaque': Buffer.from('y') });
    // Read from the symlink itself, not from its target.
    expect(all.get('/dir/sym')!.xattrs).toEqual({ 'trusted.onlink': Buffer.from('L') });
    expect(all.get('/dir/hard')!.xattrs!['user.one']).toEqual(Buffer.from('1'));
    expect(all.get('/chr')!.xattrs).toBeUndefined();

    const some = new Map((await b.scanTree(root, { xattrs: ['security.capability', 'trusted.overlay.opaque', 'user.absent'] })).map((e) => [e.path, e]));
    expect(some.get('/dir/file')!.xattrs).toEqual({ 'security.capability': CAP });
    expect(some.get('/dir')!.xattrs).toEqual({ 'trusted.overlay.opaque': Buffer.from('y') });
    expect(some.get('/dir/sym')!.xattrs).toBeUndefined();

    const none = await b.scanTree(root, { xattrs: false });
    expect(none.every((e) => e.xattrs === undefined)).toBe(true);
  });

  it('stays on one filesystem by default but reports the mount point itself', async () => {
    const one = await b.scanTree(root);
    const mnt = one.find((e) => e.path === '/mnt');
    expect(mnt).toBeDefined();
    expect(mnt!.dev).not.toBe(one[0]!.dev);
    expect(one.some((e) => e.path === '/mnt/inside')).toBe(false);
    const all = await b.scanTree(root, { oneFilesystem: false });
    const inside = all.find((e) => e.path === '/mnt/inside');
    expect(inside).toBeDefined();
    expect(inside!.size).toBe('tmpfs file'.length);
  });

  it('scans a non-directory root as a single entry and rejects a missing root', async () => {
    const single = await b.scanTree(path.join(root, 'dir/sym'));
    expect(single).toHaveLength(1);
    expect(single[0]!.path).toBe('/');
    expect(single[0]!.linkname).toBe('../dir/file');
    await expect(b.scanTree(path.join(root, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('lstatMany returns lstat data, null for missing paths, and never follows the leaf', async () => {
    const fd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try {
      const res = await b.lstatMany(fd, ['dir/file', 'missing', 'missing/child', 'dir/file/child', 'dir/sym', '', '/dir/sub/deep'], { xattrs: ['user.one'] });
      expect(res).toHaveLength(7);
      expectMatchesLstat(res[0]!, path.join(root, 'dir/file'));
      expect(res[0]!.path).toBe('/dir/file');
      expect(res[0]!.xattrs).toEqual({ 'user.one': Buffer.from('1') });
      expect(res[1]).toBeNull();
      expect(res[2]).toBeNull();
      expect(res[3]).toBeNull();
      expectMatchesLstat(res[4]!, path.join(root, 'dir/sym'));
      expect(res[4]!.linkname).toBe('../dir/file');
      expect(res[4]!.xattrs).toBeUndefined();
      expect(res[5]!.path).toBe('/');
      expect(res[5]!.ino).toBe(Number(fs.statSync(root, { bigint: true }).ino));
      expectMatchesLstat(res[6]!, path.join(root, 'dir/sub/deep'));
      // Paths resolve inside the root: an absolute symlink in a parent points into the root.
      fs.symlinkSync('/dir', path.join(root, 'abslink'));
      const [via] = await b.lstatMany(fd, ['abslink/file']);
      expect(via!.ino).toBe(res[0]!.ino);
    } finally {
      fs.rmSync(path.join(root, 'abslink'), { force: true });
      fs.closeSync(fd);
    }
  });
});
