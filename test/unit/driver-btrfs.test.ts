/**
 * BtrfsDriver with mocked bindings: the home must be on btrfs, options are checked before anything is touched,
 * a base layer is a new subvolume and a child a snapshot, nested subvolumes go first, removes are refused while
 * a layer is got or has children, and size limits go through the quota ioctls.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';

import { newDriver, PrerequisitesError, registeredDrivers } from '../../lib/drivers';
import { BtrfsDriver, nestedSubvolumes } from '../../lib/drivers/btrfs';
import { FsMagic } from '../../lib/native/constants';
import type { NativeBindings, StatfsInfo } from '../../lib/native/types';
import { mockBindings } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

function statfsOf(type: number): StatfsInfo {
  return { type, bsize: 4096, blocks: 1000, bfree: 500, bavail: 500, files: 100, ffree: 50, namelen: 255, flags: 0 };
}

function codeOf(e: unknown): string | undefined {
  return (e as { code?: string }).code;
}

describe('BtrfsDriver (mocked bindings)', () => {
  let root: string;
  let home: string;
  let b: jest.Mocked<NativeBindings>;
  /** Paths the fake "kernel" regards as subvolume roots. */
  let subvols: Set<string>;

  beforeEach(() => {
    root = makeTmp('gd-btrfs-unit-');
    home = path.join(root, 'btrfs');
    subvols = new Set();
    b = mockBindings();
    b.statfs.mockResolvedValue(statfsOf(FsMagic.BTRFS));
    b.btrfsSubvolumeCreate.mockImplementation(async (p: string) => {
      fs.mkdirSync(p, { mode: 0o700 });
      subvols.add(p);
    });
    b.btrfsSnapshot.mockImplementation(async (src: string, dest: string) => {
      if (!subvols.has(src)) throw Object.assign(new Error('not a subvolume'), { code: 'EINVAL' });
      fs.cpSync(src, dest, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
      subvols.add(dest);
    });
    b.btrfsSubvolumeDelete.mockImplementation(async (p: string) => {
      for (const s of subvols) {
        if (s.startsWith(`${p}/`)) throw Object.assign(new Error('nested subvolume'), { code: 'ENOTEMPTY' });
      }
      fs.rmSync(p, { recursive: true, force: true });
      subvols.delete(p);
    });
    b.btrfsIsSubvolume.mockImplementation(async (p: string) => subvols.has(p));
    b.btrfsQuotaCtl.mockResolvedValue(undefined);
    b.btrfsQgroupLimit.mockResolvedValue(undefined);
  });

  afterEach(() => removeTmp(root));

  const open = (options: string[] = []): Promise<BtrfsDriver> => BtrfsDriver.init(home, options, { bindings: b });

  describe('init', () => {
    it('refuses a home that is not on btrfs with PrerequisitesError, creating nothing', async () => {
      b.statfs.mockResolvedValue(statfsOf(FsMagic.EXT4));
      const err = await open().catch((e: unknown) => e);
      expect(codeOf(err)).toBe('ERR_DRIVER_NOT_SUPPORTED');
      expect(err).toBeInstanceOf(Error);
      expect(err).toBeInstanceOf(PrerequisitesError);
      expect((err as Error).message).toMatch(/not on a btrfs filesystem/);
      // the home does not exist yet, so its parent directory is what was checked
      expect(b.statfs).toHaveBeenCalledWith(root);
      expect(fs.existsSync(home)).toBe(false);
    });

    it('creates the home 0700, no state until the first layer, and reports status and metadata', async () => {
      const d = await open();
      expect(d.name).toBe('btrfs');
      expect(fs.statSync(home).mode & 0o777).toBe(0o700);
      expect(fs.readdirSync(home)).toEqual([]);
      await d.create('base', null);
      expect(d.subvolume('base')).toBe(path.join(home, 'subvolumes', 'base'));
      expect(fs.statSync(path.join(home, 'subvolumes')).mode & 0o777).toBe(0o700);
      expect(await d.status()).toEqual([['Build Version', expect.stringMatching(/ioctl/)]]);
      expect(await d.getMetadata('base')).toBeNull();
      await expect(d.getMetadata('missing')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    });

    it('refuses unknown options naming the key, and malformed min_space, before creating anything', async () => {
      const err = await open(['btrfs.size=10G']).catch((e: unknown) => e);
      expect(codeOf(err)).toBe('ERR_INVALID_OPTION');
      expect((err as Error).message).toContain('btrfs.size');
      const bad = await open(['btrfs.min_space=lots']).catch((e: unknown) => e);
      expect(codeOf(bad)).toBe('ERR_INVALID_OPTION');
      expect((bad as Error).message).toMatch(/invalid size/);
      expect(fs.existsSync(home)).toBe(false);
    });

    it('is registered as btrfs and chosen by newDriver on btrfs', async () => {
      expect(registeredDrivers()).toContain('btrfs');
      const d = await newDriver({ root, name: 'btrfs', bindings: b });
      expect(d.name).toBe('btrfs');
    });
  });

  describe('create', () => {
    it('makes a base layer with subvolume create (root 0755) and a child with a snapshot of the parent', async () => {
      const d = await open();
      await d.create('base', null);
      expect(b.btrfsSubvolumeCreate).toHaveBeenCalledWith(d.subvolume('base'));
      expect(fs.statSync(d.subvolume('base')).mode & 0o777).toBe(0o755);
      fs.writeFileSync(path.join(d.subvolume('base'), 'f'), 'x');
      await d.createReadWrite('child', 'base');
      expect(b.btrfsSnapshot).toHaveBeenCalledWith(d.subvolume('base'), d.subvolume('child'));
      expect(b.btrfsSubvolumeCreate).toHaveBeenCalledTimes(1);
      expect(fs.readFileSync(path.join(d.subvolume('child'), 'f'), 'utf8')).toBe('x');
      expect(d.parentOf('child')).toBe('base');
      expect(await d.exists('child')).toBe(true);
      expect(b.btrfsQuotaCtl).not.toHaveBeenCalled();
    });

    it('refuses an existing id, a missing parent and an unknown storage option without touching anything', async () => {
      const d = await open();
      await d.create('base', null);
      await expect(d.create('base', null)).rejects.toMatchObject({ code: 'ERR_LAYER_EXISTS' });
      await expect(d.create('orphan', 'nope')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
      expect(await d.exists('orphan')).toBe(false);
      const err = await d.create('x', 'base', { storageOpt: { inodes: '5' } }).catch((e: unknown) => e);
      expect(codeOf(err)).toBe('ERR_INVALID_OPTION');
      expect((err as Error).message).toContain('inodes');
      expect(b.btrfsSnapshot).not.toHaveBeenCalled();
      // the failed creates left no parent record behind: base can go
      await d.remove('base');
    });

    it('limits a layer with size: enables quotas once and sets the qgroup limit on the new subvolume', async () => {
      const d = await open();
      await d.create('base', null);
      await d.createReadWrite('a', 'base', { storageOpt: { size: '50M' } });
      await d.createReadWrite('b', 'base', { storageOpt: { SIZE: '1G' } });
      expect(b.btrfsQuotaCtl).toHaveBeenCalledTimes(1);
      expect(b.btrfsQuotaCtl).toHaveBeenCalledWith(path.join(home, 'subvolumes'), true);
      expect(b.btrfsQgroupLimit).toHaveBeenCalledWith(d.subvolume('a'), 50 * 1024 * 1024);
      expect(b.btrfsQgroupLimit).toHaveBeenCalledWith(d.subvolume('b'), 1024 * 1024 * 1024);
    });

    it('refuses a size below btrfs.min_space before snapshotting', async () => {
      const d = await open(['btrfs.min_space=100M']);
      await d.create('base', null);
      const err = await d.createReadWrite('small', 'base', { storageOpt: { size: '50M' } }).catch((e: unknown) => e);
      expect(codeOf(err)).toBe('ERR_INVALID_OPTION');
      expect((err as Error).message).toMatch(/min_space/);
      expect(b.btrfsSnapshot).not.toHaveBeenCalled();
      await d.createReadWrite('big', 'base', { storageOpt: { size: '200M' } });
      expect(await d.exists('big')).toBe(true);
    });

    it('deletes the new subvolume again when quotas cannot be enabled, with a clear error', async () => {
      const d = await open();
      await d.create('base', null);
      b.btrfsQuotaCtl.mockRejectedValueOnce(Object.assign(new Error('EPERM'), { code: 'EPERM' }));
      const err = await d.createReadWrite('sized', 'base', { storageOpt: { size: '50M' } }).catch((e: unknown) => e);
      expect(codeOf(err)).toBe('ERR_INVALID_OPTION');
      expect((err as Error).message).toMatch(/quota/);
      expect(await d.exists('sized')).toBe(false);
      expect(b.btrfsSubvolumeDelete).toHaveBeenCalledWith(d.subvolume('sized'));
      await d.remove('base');
    });
  });

  describe('remove', () => {
    it('deletes nested subvolumes deepest first, then the layer', async () => {
      const d = await open();
      await d.create('base', null);
      const top = d.subvolume('base');
      const outer = path.join(top, 'a', 'outer');
      const inner = path.join(outer, 'b', 'inner');
      const side = path.join(top, 'side');
      for (const s of [outer, inner, side]) {
        fs.mkdirSync(s, { recursive: true });
        subvols.add(s);
      }
      fs.mkdirSync(path.join(top, 'plain', 'dir'), { recursive: true });
      // Every real subvolume root has inode 256, which the driver checks before asking the kernel.
      // (spied on the module object itself: the driver's namespace import reads through to it)
      const fspModule = jest.requireActual<typeof fsp>('node:fs/promises');
      const realLstat = fspModule.lstat.bind(fspModule);
      const spy = jest.spyOn(fspModule, 'lstat').mockImplementation((async (p: fs.PathLike) => {
        const st = await realLstat(p);
        if (subvols.has(String(p))) st.ino = 256;
        return st;
      }) as typeof fsp.lstat);
      try {
        await d.remove('base');
      } finally {
        spy.mockRestore();
      }
      expect(b.btrfsIsSubvolume).not.toHaveBeenCalledWith(path.join(top, 'plain'));
      // The layer is tried first; the kernel refuses it (ENOTEMPTY) while it holds subvolumes, and only then is
      // the tree walked for them.
      const order = b.btrfsSubvolumeDelete.mock.calls.map((c) => c[0]);
      expect(order).toHaveLength(5);
      expect(order[0]).toBe(top);
      const after = order.slice(1);
      expect(after.indexOf(inner)).toBeLessThan(after.indexOf(outer));
      expect(after[3]).toBe(top);
      expect(after).toContain(side);
      expect(fs.existsSync(top)).toBe(false);
    });

    it('deletes a layer without nested subvolumes with one ioctl and no walk of its tree', async () => {
      const d = await open();
      await d.create('base', null);
      fs.mkdirSync(path.join(d.subvolume('base'), 'usr', 'lib'), { recursive: true });
      const fspModule = jest.requireActual<typeof fsp>('node:fs/promises');
      const spy = jest.spyOn(fspModule, 'readdir');
      try {
        await d.remove('base');
        expect(spy).not.toHaveBeenCalledWith(expect.stringContaining(d.subvolume('base')), expect.anything());
      } finally {
        spy.mockRestore();
      }
      expect(b.btrfsSubvolumeDelete.mock.calls).toEqual([[d.subvolume('base')]]);
      expect(fs.existsSync(d.subvolume('base'))).toBe(false);
    });

    it('passes on an error of the delete other than ENOTEMPTY and keeps the layer', async () => {
      const d = await open();
      await d.create('base', null);
      b.btrfsSubvolumeDelete.mockRejectedValueOnce(Object.assign(new Error('busy'), { code: 'EBUSY' }));
      await expect(d.remove('base')).rejects.toMatchObject({ code: 'EBUSY' });
      expect(await d.exists('base')).toBe(true);
      expect(b.btrfsSubvolumeDelete).toHaveBeenCalledTimes(1);
      await d.remove('base');
      expect(await d.exists('base')).toBe(false);
    });

    it('nestedSubvolumes lists deeper subvolumes first and skips plain directories and symlinks', async () => {
      const t = path.join(root, 'tree');
      fs.mkdirSync(path.join(t, 'x', 'y', 'z'), { recursive: true });
      fs.mkdirSync(path.join(t, 'w'), { recursive: true });
      fs.symlinkSync(path.join(t, 'x'), path.join(t, 'link'));
      const marked = new Set([path.join(t, 'x'), path.join(t, 'x', 'y', 'z'), path.join(t, 'w')]);
      const found = await nestedSubvolumes(t, async (p) => marked.has(p));
      expect(found[0]).toBe(path.join(t, 'x', 'y', 'z'));
      expect(new Set(found)).toEqual(marked);
    });

    it('is refused while the layer is got or has children, and missing layers are LayerNotFound', async () => {
      const d = await open();
      await d.create('base', null);
      await d.create('child', 'base');
      await expect(d.remove('base')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
      const dir = await d.get('child');
      expect(dir).toBe(d.subvolume('child'));
      await expect(d.remove('child')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
      await d.put('child');
      await expect(d.put('child')).rejects.toMatchObject({ code: 'ERR_NOT_MOUNTED' });
      await d.remove('child');
      await d.remove('base');
      await expect(d.remove('base')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
      expect(b.btrfsSubvolumeDelete).toHaveBeenCalledTimes(2);
    });

    it('keeps the parent records across a restart', async () => {
      const d = await open();
      await d.create('base', null);
      await d.create('child', 'base');
      await d.cleanup();
      const again = await open();
      expect(again.parentOf('child')).toBe('base');
      await expect(again.remove('base')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
    });
  });
});
