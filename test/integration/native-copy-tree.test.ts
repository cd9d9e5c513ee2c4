/**
 * copyTree on the real kernel: the copy scans identical to the source (apart from inode numbers, device and
 * change times), hardlinks stay hardlinks, holes stay holes, mounts are not crossed, an existing destination is
 * refused, and on btrfs the content is shared with reflinks.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import type { NativeBindings, ScanEntry } from '../../lib/native/types';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

const CAP = (() => {
  const v = Buffer.alloc(20);
  v.writeUInt32LE(0x02000001, 0);
  v.writeUInt32LE(1 << 12, 4);
  return v;
})();

/** Everything a layer diff can observe; inode numbers, device and ctime necessarily differ in a copy. Access
 *  times are left out because scanning/reading the trees (directories, symlinks) updates them. */
function comparable(entries: ScanEntry[]): Array<Record<string, unknown>> {
  return entries.map((e) => ({
    path: e.path, mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, rdev: e.rdev,
    mtime: [e.mtimeSec, e.mtimeNsec], nlink: e.nlink, linkname: e.linkname, xattrs: e.xattrs,
    // directories' sizes depend on the filesystem's directory format, not on the content
    ...((e.mode & 0o170000) === 0o040000 ? { size: 0 } : {}),
  }));
}

function sha(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Builds the test tree under `root` (which must exist). */
async function buildTree(b: NativeBindings, root: string): Promise<void> {
  const p = (x: string): string => path.join(root, x);
  fs.mkdirSync(p('etc/deep/er'), { recursive: true });
  fs.writeFileSync(p('etc/hosts'), '127.0.0.1 localhost\n');
  fs.writeFileSync(p('etc/deep/er/f'), 'deep');
  fs.chownSync(p('etc/hosts'), 1, 2);
  fs.chmodSync(p('etc/hosts'), 0o640);
  fs.writeFileSync(p('suid'), 'ELF');
  fs.chownSync(p('suid'), 5, 6);
  fs.chmodSync(p('suid'), 0o4755);
  await b.lsetxattr(p('suid'), 'security.capability', CAP);
  await b.lsetxattr(p('suid'), 'trusted.t', Buffer.from('tv'));
  await b.lsetxattr(p('suid'), 'user.u', Buffer.from('uv'));
  fs.writeFileSync(p('sgid'), '');
  fs.chmodSync(p('sgid'), 0o2755);
  fs.mkdirSync(p('tmp'));
  fs.chmodSync(p('tmp'), 0o1777);
  fs.mkdirSync(p('opaque'));
  await b.lsetxattr(p('opaque'), 'trusted.overlay.opaque', Buffer.from('y'));
  fs.mkdirSync(p('ro'));
  fs.writeFileSync(p('ro/inside'), 'x');
  fs.chmodSync(p('ro'), 0o555);
  fs.symlinkSync('/etc/hosts', p('abs'));
  fs.symlinkSync('../../no/where', p('etc/dangling'));
  fs.lchownSync(p('abs'), 7, 8);
  await b.lsetxattr(p('abs'), 'trusted.l', Buffer.from('on-link'));
  fs.linkSync(p('etc/hosts'), p('hosts-hard'));
  fs.linkSync(p('etc/hosts'), p('etc/deep/hosts-hard2'));
  fs.linkSync(p('abs'), p('abs-hard'));
  execFileSync('mknod', [p('null'), 'c', '1', '3']);
  execFileSync('mknod', [p('loop'), 'b', '7', '9']);
  execFileSync('mkfifo', [p('fifo')]);
  // A sparse file: data at the start, at 16 MiB and at the end of 64 MiB.
  const fd = fs.openSync(p('sparse'), 'w');
  fs.writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 0);
  fs.writeSync(fd, Buffer.alloc(8192, 2), 0, 8192, 16 << 20);
  fs.writeSync(fd, Buffer.from('end'), 0, 3, (64 << 20) - 3);
  fs.closeSync(fd);
  // A larger regular file with varied content.
  const big = Buffer.alloc(3 << 20);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
  fs.writeFileSync(p('big'), big);
  // Times to the nanosecond, set last (creating children changes directory mtimes).
  const t = (x: string, s: number): void => fs.utimesSync(p(x), new Date(s * 1000 + 123), new Date(s * 1000 + 456));
  t('etc/hosts', 1500000000);
  t('etc/deep/er', 1500000001);
  t('etc/deep', 1500000002);
  t('etc', 1500000003);
  t('tmp', 1500000004);
  t('ro', 1500000005);
  execFileSync('touch', ['-h', '-d', '@1400000000.123456789', p('abs')]);
  execFileSync('touch', ['-d', '@1400000001.987654321', p('big')]);
  t('.', 1500000009);
}

describeIf(isRoot ? null : 'needs root (ownership, device nodes, trusted.* xattrs, mounts)', 'native copyTree', () => {
  let b: NativeBindings;
  let tmp = '';
  let src = '';
  const mounts: string[] = [];

  beforeAll(async () => {
    b = loadBindings();
    tmp = makeTmp('gd-copy-');
    src = path.join(tmp, 'src');
    fs.mkdirSync(src);
    await buildTree(b, src);
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

  it('copies everything: types, owners, modes, times, xattrs, symlinks, devices, content', async () => {
    const dst = path.join(tmp, 'copy1');
    const r = await b.copyTree(src, dst);
    const before = await b.scanTree(src, { xattrs: true });
    const after = await b.scanTree(dst, { xattrs: true });
    expect(comparable(after)).toEqual(comparable(before));
    expect(r.entries).toBe(before.length);
    expect(r.bytes).toBeGreaterThanOrEqual((64 << 20) + (3 << 20));
    // The copy of a regular file keeps the source's access time (and reading the source did not change it).
    expect(fs.statSync(path.join(dst, 'big'), { bigint: true }).atimeNs).toBe(1400000001987654321n);
    expect(fs.statSync(path.join(src, 'big'), { bigint: true }).atimeNs).toBe(1400000001987654321n);
    for (const f of ['etc/hosts', 'suid', 'big', 'sparse', 'etc/deep/er/f', 'ro/inside']) {
      expect(sha(path.join(dst, f))).toBe(sha(path.join(src, f)));
    }
  });

  it('keeps hardlinks linked (files and symlinks) and holes as holes', async () => {
    const dst = path.join(tmp, 'copy2');
    await b.copyTree(src, dst, { reflink: false });
    const ino = (x: string): bigint => fs.lstatSync(path.join(dst, x), { bigint: true }).ino;
    expect(ino('hosts-hard')).toBe(ino('etc/hosts'));
    expect(ino('etc/deep/hosts-hard2')).toBe(ino('etc/hosts'));
    expect(fs.lstatSync(path.join(dst, 'etc/hosts')).nlink).toBe(3);
    expect(ino('abs-hard')).toBe(ino('abs'));
    expect(fs.lstatSync(path.join(dst, 'abs-hard')).isSymbolicLink()).toBe(true);
    expect(ino('suid')).not.toBe(ino('sgid'));
    const sp = fs.statSync(path.join(dst, 'sparse'));
    expect(sp.size).toBe(64 << 20);
    expect(sp.blocks * 512).toBeLessThanOrEqual(1 << 20);
    expect(sha(path.join(dst, 'sparse'))).toBe(sha(path.join(src, 'sparse')));
  });

  it('refuses an existing destination with EEXIST and a missing source with ENOENT', async () => {
    const dst = path.join(tmp, 'exists');
    fs.mkdirSync(dst);
    await expect(b.copyTree(src, dst)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(fs.readdirSync(dst)).toEqual([]);
    await expect(b.copyTree(path.join(tmp, 'nope'), path.join(tmp, 'nope2'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(fs.existsSync(path.join(tmp, 'nope2'))).toBe(false);
  });

  it('does not cross into other mounts (the mount point is copied empty)', async () => {
    const s = path.join(tmp, 'withmount');
    fs.mkdirSync(path.join(s, 'mnt'), { recursive: true });
    fs.writeFileSync(path.join(s, 'top'), 'top');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0710', 'tmpfs', path.join(s, 'mnt')]);
    mounts.push(path.join(s, 'mnt'));
    fs.writeFileSync(path.join(s, 'mnt/inside'), 'on tmpfs');
    const dst = path.join(tmp, 'withmount-copy');
    const r = await b.copyTree(s, dst);
    expect(r.entries).toBe(3);
    expect(fs.readdirSync(path.join(dst, 'mnt'))).toEqual([]);
    expect(fs.statSync(path.join(dst, 'mnt')).mode & 0o7777).toBe(0o710);
    expect(fs.readFileSync(path.join(dst, 'top'), 'utf8')).toBe('top');
  });

  const btrfsSkip = !kernelHasFs('btrfs') ? 'kernel has no btrfs' : !haveTool('mkfs.btrfs') ? 'mkfs.btrfs not installed' : null;
  describeIf(btrfsSkip, 'on btrfs', () => {
    let mnt = '';
    beforeAll(() => {
      const img = path.join(tmp, 'btrfs.img');
      fs.writeFileSync(img, '');
      fs.truncateSync(img, 256 << 20);
      execFileSync('mkfs.btrfs', ['-q', '-f', img]);
      mnt = path.join(tmp, 'btrfs');
      fs.mkdirSync(mnt);
      // autoclear loop device: it goes away with the unmount
      execFileSync('mount', ['-o', 'loop', img, mnt]);
      mounts.push(mnt);
    });

    it('shares file content with reflinks (and copies without them when asked)', async () => {
      const s = path.join(mnt, 'src');
      fs.mkdirSync(s);
      await buildTree(b, s);
      const r = await b.copyTree(s, path.join(mnt, 'dst'));
      expect(r.reflinked).toBeGreaterThan(0);
      const before = await b.scanTree(s, { xattrs: true });
      const after = await b.scanTree(path.join(mnt, 'dst'), { xattrs: true });
      expect(comparable(after)).toEqual(comparable(before));
      expect(sha(path.join(mnt, 'dst/big'))).toBe(sha(path.join(s, 'big')));
      const plain = await b.copyTree(s, path.join(mnt, 'dst2'), { reflink: false });
      expect(plain.reflinked).toBe(0);
      expect(sha(path.join(mnt, 'dst2/sparse'))).toBe(sha(path.join(s, 'sparse')));
    });
  });
});
