// btrfs bindings against a real btrfs: a sparse image formatted with mkfs.btrfs, attached with losetup and
// mounted with mount(8) so that this file depends on nothing but the btrfs ioctls it tests.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import type { NativeError } from '../../lib/native/types';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';

function reason(): string | null {
  if (!isRoot) return 'needs root (losetup, mount, btrfs ioctls)';
  if (!kernelHasFs('btrfs')) return 'kernel has no btrfs';
  for (const tool of ['mkfs.btrfs', 'losetup', 'mount', 'umount']) {
    if (!haveTool(tool)) return `${tool} not installed (apt-get install btrfs-progs util-linux)`;
  }
  return null;
}

async function rejection(p: Promise<unknown>): Promise<NativeError> {
  try {
    await p;
  } catch (e) {
    return e as NativeError;
  }
  throw new Error('expected the call to reject');
}

/** Writes `total` bytes in 1 MiB chunks; resolves to the first error (or null) and the bytes written before it. */
function fill(file: string, total: number): { error: NodeJS.ErrnoException | null; written: number } {
  const chunk = Buffer.alloc(1 << 20, 0xa5);
  const fd = fs.openSync(file, 'w');
  let written = 0;
  try {
    while (written < total) {
      written += fs.writeSync(fd, chunk, 0, Math.min(chunk.length, total - written));
    }
    fs.fsyncSync(fd);
    return { error: null, written };
  } catch (e) {
    return { error: e as NodeJS.ErrnoException, written };
  } finally {
    fs.closeSync(fd);
  }
}

describeIf(reason(), 'btrfs subvolumes, snapshots and quotas', () => {
  const b = loadBindings();
  let tmp = '';
  let mnt = '';
  let loopDev = '';
  let mounted = false;

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-btrfs-'));
    const img = path.join(tmp, 'btrfs.img');
    mnt = path.join(tmp, 'mnt');
    fs.mkdirSync(mnt);
    fs.writeFileSync(img, '');
    fs.truncateSync(img, 300 * 1024 * 1024);
    execFileSync('mkfs.btrfs', ['-q', img], { stdio: 'pipe' });
    loopDev = execFileSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).trim();
    execFileSync('mount', ['-t', 'btrfs', loopDev, mnt], { stdio: 'pipe' });
    mounted = true;
  });

  afterAll(() => {
    const errors: unknown[] = [];
    const attempt = (fn: () => void): void => {
      try {
        fn();
      } catch (e) {
        errors.push(e);
      }
    };
    if (mounted) attempt(() => execFileSync('umount', [mnt], { stdio: 'pipe' }));
    if (loopDev) attempt(() => execFileSync('losetup', ['-d', loopDev], { stdio: 'pipe' }));
    if (tmp) attempt(() => fs.rmSync(tmp, { recursive: true, force: true }));
    if (errors.length > 0) throw errors[0];
  });

  const at = (...p: string[]): string => path.join(mnt, ...p);

  it('creates subvolumes that btrfsIsSubvolume recognises, unlike plain dirs and other filesystems', async () => {
    await b.btrfsSubvolumeCreate(at('sv'));
    expect(fs.statSync(at('sv')).isDirectory()).toBe(true);
    expect(fs.statSync(at('sv')).ino).toBe(256);
    await expect(b.btrfsIsSubvolume(at('sv'))).resolves.toBe(true);
    // the top-level subvolume (id 5) is a subvolume root too
    await expect(b.btrfsIsSubvolume(mnt)).resolves.toBe(true);

    fs.mkdirSync(at('sv', 'plain'));
    await expect(b.btrfsIsSubvolume(at('sv', 'plain'))).resolves.toBe(false);
    fs.writeFileSync(at('sv', 'file'), 'x');
    await expect(b.btrfsIsSubvolume(at('sv', 'file'))).resolves.toBe(false);
    await expect(b.btrfsIsSubvolume(tmp)).resolves.toBe(false); // the tmp dir is not on btrfs

    const info = await b.btrfsSubvolumeInfo(at('sv'));
    expect(info.id).toBeGreaterThan(255);
    expect(info.readOnly).toBe(false);
    await expect(b.btrfsSubvolumeInfo(mnt)).resolves.toEqual({ id: 5, readOnly: false });
  });

  it('accepts a trailing slash and relative paths', async () => {
    await b.btrfsSubvolumeCreate(at('slash') + '/');
    await expect(b.btrfsIsSubvolume(at('slash'))).resolves.toBe(true);
    const rel = path.relative(process.cwd(), at('rel'));
    await b.btrfsSubvolumeCreate(rel);
    await expect(b.btrfsIsSubvolume(at('rel'))).resolves.toBe(true);
    await b.btrfsSubvolumeDelete(at('slash') + '/');
    await b.btrfsSubvolumeDelete(rel);
    expect(fs.existsSync(at('slash'))).toBe(false);
    expect(fs.existsSync(at('rel'))).toBe(false);
  });

  it('snapshots see the parent files and are independent of it', async () => {
    await b.btrfsSubvolumeCreate(at('base'));
    fs.mkdirSync(at('base', 'etc'));
    fs.writeFileSync(at('base', 'etc', 'hostname'), 'parent\n');
    fs.symlinkSync('etc/hostname', at('base', 'link'));

    await b.btrfsSnapshot(at('base'), at('snap'));
    await expect(b.btrfsIsSubvolume(at('snap'))).resolves.toBe(true);
    expect(fs.readFileSync(at('snap', 'etc', 'hostname'), 'utf8')).toBe('parent\n');
    expect(fs.readlinkSync(at('snap', 'link'))).toBe('etc/hostname');

    fs.writeFileSync(at('snap', 'etc', 'hostname'), 'child\n');
    fs.writeFileSync(at('snap', 'new'), 'only in snapshot');
    fs.unlinkSync(at('snap', 'link'));
    expect(fs.readFileSync(at('base', 'etc', 'hostname'), 'utf8')).toBe('parent\n');
    expect(fs.existsSync(at('base', 'new'))).toBe(false);
    expect(fs.readlinkSync(at('base', 'link'))).toBe('etc/hostname');

    // and the other way round
    fs.writeFileSync(at('base', 'later'), 'after the snapshot');
    expect(fs.existsSync(at('snap', 'later'))).toBe(false);
  });

  it('read-only snapshots refuse writes with EROFS and report readOnly', async () => {
    await b.btrfsSnapshot(at('base'), at('ro'), { readOnly: true });
    expect(fs.readFileSync(at('ro', 'etc', 'hostname'), 'utf8')).toBe('parent\n');
    expect(() => fs.writeFileSync(at('ro', 'x'), 'no')).toThrow(expect.objectContaining({ code: 'EROFS' }));
    expect(() => fs.writeFileSync(at('ro', 'etc', 'hostname'), 'no')).toThrow(
      expect.objectContaining({ code: 'EROFS' }),
    );
    await expect(b.btrfsSubvolumeInfo(at('ro'))).resolves.toMatchObject({ readOnly: true });
    await expect(b.btrfsSubvolumeInfo(at('snap'))).resolves.toMatchObject({ readOnly: false });

    // a writable snapshot of a read-only one is writable again
    await b.btrfsSnapshot(at('ro'), at('rw-of-ro'), { readOnly: false });
    fs.writeFileSync(at('rw-of-ro', 'x'), 'yes');
    await expect(b.btrfsSubvolumeInfo(at('rw-of-ro'))).resolves.toMatchObject({ readOnly: false });
  });

  it('gives every subvolume a distinct id above 255', async () => {
    const names = ['sv', 'base', 'snap', 'ro', 'rw-of-ro'];
    const ids = await Promise.all(names.map(async (n) => (await b.btrfsSubvolumeInfo(at(n))).id));
    for (const id of ids) expect(id).toBeGreaterThan(255);
    expect(new Set(ids).size).toBe(names.length);
  });

  it('deletes subvolumes', async () => {
    await b.btrfsSubvolumeCreate(at('gone'));
    fs.writeFileSync(at('gone', 'f'), 'data');
    await b.btrfsSubvolumeDelete(at('gone'));
    expect(fs.existsSync(at('gone'))).toBe(false);
    await b.btrfsSubvolumeDelete(at('rw-of-ro'));
    expect(fs.existsSync(at('rw-of-ro'))).toBe(false);
    // a read-only snapshot can be deleted too
    await b.btrfsSubvolumeDelete(at('ro'));
    expect(fs.existsSync(at('ro'))).toBe(false);
  });

  it('refuses to delete a subvolume that still holds a nested one (ENOTEMPTY) until the child is gone', async () => {
    await b.btrfsSubvolumeCreate(at('outer'));
    await b.btrfsSubvolumeCreate(at('outer', 'inner'));
    fs.writeFileSync(at('outer', 'inner', 'f'), 'x');
    const e = await rejection(b.btrfsSubvolumeDelete(at('outer')));
    expect(e.code).toBe('ENOTEMPTY');
    expect(e.syscall).toBe('ioctl(BTRFS_IOC_SNAP_DESTROY)');
    expect(e.path).toBe(at('outer'));
    expect(fs.existsSync(at('outer', 'inner', 'f'))).toBe(true);

    await b.btrfsSubvolumeDelete(at('outer', 'inner'));
    await b.btrfsSubvolumeDelete(at('outer'));
    expect(fs.existsSync(at('outer'))).toBe(false);
  });

  it('reads files through a 128-deep snapshot chain', async () => {
    const depth = 128;
    const name = (i: number): string => at(`chain-${i}`);
    await b.btrfsSubvolumeCreate(name(0));
    fs.writeFileSync(path.join(name(0), 'f0'), 'layer 0');
    for (let i = 1; i < depth; i++) {
      await b.btrfsSnapshot(name(i - 1), name(i));
      fs.writeFileSync(path.join(name(i), `f${i}`), `layer ${i}`);
    }
    const top = name(depth - 1);
    expect(fs.readdirSync(top)).toHaveLength(depth);
    for (let i = 0; i < depth; i++) {
      expect(fs.readFileSync(path.join(top, `f${i}`), 'utf8')).toBe(`layer ${i}`);
    }
    // each link only has what was there when it was snapshotted
    expect(fs.readdirSync(name(63)).sort()).toEqual(Array.from({ length: 64 }, (_, i) => `f${i}`).sort());

    const ids = new Set<number>();
    for (let i = 0; i < depth; i++) ids.add((await b.btrfsSubvolumeInfo(name(i))).id);
    expect(ids.size).toBe(depth);

    // snapshots are siblings, not nested, so any order works
    for (let i = 0; i < depth; i++) await b.btrfsSubvolumeDelete(name(i));
    expect(fs.readdirSync(mnt).filter((n) => n.startsWith('chain-'))).toEqual([]);
  });

  it('errors carry code, syscall and path', async () => {
    const exists = await rejection(b.btrfsSubvolumeCreate(at('sv')));
    expect(exists).toMatchObject({ code: 'EEXIST', syscall: 'ioctl(BTRFS_IOC_SUBVOL_CREATE)', path: at('sv') });
    expect(exists.errno).toBe(-17);

    const noParent = await rejection(b.btrfsSubvolumeCreate(at('missing', 'child')));
    expect(noParent).toMatchObject({ code: 'ENOENT', syscall: 'open', path: at('missing') });

    const notBtrfs = await rejection(b.btrfsSubvolumeCreate(path.join(tmp, 'sub')));
    expect(notBtrfs).toMatchObject({ code: 'ENOTTY', syscall: 'ioctl(BTRFS_IOC_SUBVOL_CREATE)' });

    const dots = `${mnt}/sv/..`; // not path.join: that would normalise the '..' away
    const badName = await rejection(b.btrfsSubvolumeCreate(dots));
    expect(badName).toMatchObject({ code: 'EINVAL', path: dots });
    const longName = await rejection(b.btrfsSubvolumeCreate(at('n'.repeat(256))));
    expect(longName.code).toBe('ENAMETOOLONG');

    const snapMissing = await rejection(b.btrfsSnapshot(at('nope'), at('dst')));
    expect(snapMissing).toMatchObject({ code: 'ENOENT', syscall: 'open', path: at('nope') });
    const snapExists = await rejection(b.btrfsSnapshot(at('base'), at('sv')));
    expect(snapExists).toMatchObject({
      code: 'EEXIST',
      syscall: 'ioctl(BTRFS_IOC_SNAP_CREATE_V2)',
      path: at('base'),
      dest: at('sv'),
    });

    const delPlain = await rejection(b.btrfsSubvolumeDelete(at('sv', 'plain')));
    expect(delPlain.syscall).toBe('ioctl(BTRFS_IOC_SNAP_DESTROY)');
    expect(['EINVAL', 'EPERM', 'ENOTDIR']).toContain(delPlain.code);
    expect(fs.existsSync(at('sv', 'plain'))).toBe(true);

    const infoPlain = await rejection(b.btrfsSubvolumeInfo(at('sv', 'plain')));
    expect(infoPlain).toMatchObject({ code: 'EINVAL', syscall: 'ioctl(BTRFS_IOC_SUBVOL_GETFLAGS)', path: at('sv', 'plain') });

    const isMissing = await rejection(b.btrfsIsSubvolume(at('nope')));
    expect(isMissing).toMatchObject({ code: 'ENOENT', syscall: 'statfs', path: at('nope') });

    const limitNoQuota = await rejection(b.btrfsQgroupLimit(at('sv'), 1 << 20));
    expect(limitNoQuota).toMatchObject({ syscall: 'ioctl(BTRFS_IOC_QGROUP_LIMIT)', path: at('sv') });
    expect(limitNoQuota.code).toBe('ENOTCONN'); // quotas are not enabled yet
  });

  it('quota: a 20 MiB referenced limit stops a 40 MiB write; clearing the limit lifts it', async () => {
    await b.btrfsQuotaCtl(mnt, true);
    await b.btrfsSubvolumeCreate(at('quota'));
    await b.btrfsQgroupLimit(at('quota'), 20 * 1024 * 1024);

    const limited = fill(at('quota', 'big'), 40 * 1024 * 1024);
    expect(limited.error).not.toBeNull();
    // libuv has no name for EDQUOT (Node reports code 'UNKNOWN'), so compare errno values
    const { EDQUOT, ENOSPC } = os.constants.errno;
    expect([-EDQUOT, -ENOSPC]).toContain(limited.error?.errno);
    expect(limited.written).toBeLessThanOrEqual(20 * 1024 * 1024);
    fs.unlinkSync(at('quota', 'big'));
    execFileSync('sync');

    await b.btrfsQgroupLimit(at('quota'), 0);
    const free = fill(at('quota', 'big'), 40 * 1024 * 1024);
    expect(free.error).toBeNull();
    expect(fs.statSync(at('quota', 'big')).size).toBe(40 * 1024 * 1024);

    await b.btrfsQuotaCtl(mnt, false);
    await b.btrfsSubvolumeDelete(at('quota'));
  });
});
