/**
 * VfsDriver error paths with mocked bindings (copyTree is the only native call of create): nothing is left
 * half-created, bad options and ids are refused before anything is touched, leftovers are cleaned at init.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { newDriver, registeredDrivers } from '../../lib/drivers';
import { VfsDriver } from '../../lib/drivers/vfs';
import { FsMagic } from '../../lib/native/constants';
import type { NativeBindings, StatfsInfo } from '../../lib/native/types';
import { mockBindings } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

/** A copyTree that copies with Node's fs.cp (no native code). */
async function fakeCopyTree(source: string, dest: string): Promise<{ entries: number; bytes: number; reflinked: number }> {
  if (fs.existsSync(dest)) throw Object.assign(new Error('exists'), { code: 'EEXIST' });
  fs.cpSync(source, dest, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
  return { entries: 1, bytes: 0, reflinked: 0 };
}

function statfsOf(type: number): StatfsInfo {
  return { type, bsize: 4096, blocks: 1000, bfree: 500, bavail: 500, files: 100, ffree: 50, namelen: 255, flags: 0 };
}

function codeOf(e: unknown): string | undefined {
  return (e as { code?: string }).code;
}

describe('VfsDriver (mocked bindings)', () => {
  let root: string;
  let home: string;
  let b: jest.Mocked<NativeBindings>;

  beforeEach(() => {
    root = makeTmp('gd-vfs-unit-');
    home = path.join(root, 'vfs');
    b = mockBindings();
    b.copyTree.mockImplementation(fakeCopyTree);
    b.statfs.mockResolvedValue(statfsOf(FsMagic.EXT4));
  });

  afterEach(() => removeTmp(root));

  const open = (options: string[] = []): Promise<VfsDriver> => VfsDriver.init(home, options, { bindings: b });

  describe('init', () => {
    it('creates the home 0700 and no state until the first layer', async () => {
      const d = await open();
      expect(d.name).toBe('vfs');
      expect(fs.statSync(home).mode & 0o777).toBe(0o700);
      expect(fs.readdirSync(home)).toEqual([]);
      await d.create('base', null);
      expect(fs.statSync(path.join(home, 'dir')).mode & 0o777).toBe(0o700);
      expect(d.dir('base')).toBe(path.join(home, 'dir', 'base'));
      expect(await d.status()).toEqual([]);
      expect(await d.getMetadata('base')).toBeNull();
      await expect(d.getMetadata('missing')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    });

    it('refuses an unknown option, naming it, before creating anything', async () => {
      const err = await open(['vfs.size=10G']).catch((e: unknown) => e);
      expect(codeOf(err)).toBe('ERR_INVALID_OPTION');
      expect((err as Error).message).toContain('vfs.size');
      expect(fs.existsSync(home)).toBe(false);
    });

    it('refuses size (no quotas) with a clear message, and a malformed size as such', async () => {
      const err = await open(['size=10G']).catch((e: unknown) => e);
      expect(codeOf(err)).toBe('ERR_INVALID_OPTION');
      expect((err as Error).message).toMatch(/xfs project quotas.*not on xfs/);
      const bad = await open(['size=lots']).catch((e: unknown) => e);
      expect(codeOf(bad)).toBe('ERR_INVALID_OPTION');
      expect((bad as Error).message).toMatch(/invalid size/);
      const notKv = await open(['size']).catch((e: unknown) => e);
      expect(codeOf(notKv)).toBe('ERR_INVALID_OPTION');
    });

    it('removes leftovers of interrupted creates/removes and stale parent records, keeping real layers', async () => {
      const d = await open();
      await d.create('base', null);
      await d.create('child', 'base');
      // layer ids may contain "-tmp-" or "-removing": they must survive
      await d.create('x-tmp-0123456789ab', null);
      await d.create('y-removing', null);
      await d.cleanup();
      const dir = path.join(home, 'dir');
      fs.mkdirSync(path.join(dir, '.tmp-half-abcdef012345', 'sub'), { recursive: true });
      fs.mkdirSync(path.join(dir, '.removing-old-abcdef012345'));
      fs.writeFileSync(path.join(home, 'parents', 'ghost'), 'base\n');
      fs.writeFileSync(path.join(home, 'parents', '.tmp-child-123'), 'base\n');

      const d2 = await open();
      expect(fs.readdirSync(dir).sort()).toEqual(['base', 'child', 'x-tmp-0123456789ab', 'y-removing']);
      expect(fs.readdirSync(path.join(home, 'parents'))).toEqual(['child']);
      expect(d2.parentOf('child')).toBe('base');
      // the stale record does not pin base; the real child does
      await expect(d2.remove('base')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
      await d2.remove('child');
      await d2.remove('base');
    });
  });

  describe('create', () => {
    it('a base layer is an empty 0755 directory', async () => {
      const d = await open();
      const old = process.umask(0o077);
      try {
        await d.create('base', null);
      } finally {
        process.umask(old);
      }
      const st = fs.statSync(d.dir('base'));
      expect(st.isDirectory()).toBe(true);
      expect(st.mode & 0o7777).toBe(0o755);
      expect(fs.readdirSync(d.dir('base'))).toEqual([]);
      expect(b.copyTree).not.toHaveBeenCalled();
    });

    it('a child is a copy of its parent made under a temp name', async () => {
      const d = await open();
      await d.create('base', null);
      fs.writeFileSync(path.join(d.dir('base'), 'f'), 'x');
      await d.createReadWrite('child', 'base');
      expect(b.copyTree).toHaveBeenCalledTimes(1);
      const [src, dest] = b.copyTree.mock.calls[0]!;
      expect(src).toBe(d.dir('base'));
      expect(path.dirname(dest)).toBe(path.join(home, 'dir'));
      expect(path.basename(dest)).toMatch(/^\.tmp-child-[0-9a-f]+$/);
      expect(fs.readFileSync(path.join(d.dir('child'), 'f'), 'utf8')).toBe('x');
      expect(d.parentOf('child')).toBe('base');
      expect(fs.readFileSync(path.join(home, 'parents', 'child'), 'utf8').trim()).toBe('base');
    });

    it('a failed copy leaves nothing behind and does not pin the parent', async () => {
      const d = await open();
      await d.create('base', null);
      b.copyTree.mockImplementationOnce(async (_src: string, dest: string) => {
        fs.mkdirSync(path.join(dest, 'partial'), { recursive: true });
        throw Object.assign(new Error('no space'), { code: 'ENOSPC', syscall: 'copy_file_range' });
      });
      await expect(d.create('child', 'base')).rejects.toMatchObject({ code: 'ENOSPC' });
      expect(await d.exists('child')).toBe(false);
      expect(fs.readdirSync(path.join(home, 'dir'))).toEqual(['base']);
      expect(fs.existsSync(path.join(home, 'parents', 'child'))).toBe(false);
      expect(d.parentOf('child')).toBeNull();
      await d.remove('base');
    });

    it('an existing id is LayerExistsError with nothing changed', async () => {
      const d = await open();
      await d.create('base', null);
      await d.create('child', 'base');
      fs.writeFileSync(path.join(d.dir('child'), 'mine'), '1');
      b.copyTree.mockClear();
      await expect(d.create('child', 'base')).rejects.toMatchObject({ code: 'ERR_LAYER_EXISTS' });
      await expect(d.createReadWrite('child', null)).rejects.toMatchObject({ code: 'ERR_LAYER_EXISTS' });
      expect(b.copyTree).not.toHaveBeenCalled();
      expect(fs.readdirSync(d.dir('child'))).toEqual(['mine']);
      expect(d.parentOf('child')).toBe('base');
    });

    it('a missing parent is LayerNotFoundError and nothing is created', async () => {
      const d = await open();
      await expect(d.create('child', 'ghost')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND', id: 'ghost' });
      expect(b.copyTree).not.toHaveBeenCalled();
      expect(await d.exists('child')).toBe(false);
    });

    it('storage options: size needs quotas, unknown keys are named; nothing is created', async () => {
      const d = await open();
      const e1 = await d.create('a', null, { storageOpt: { size: '10G' } }).catch((e: unknown) => e);
      expect(codeOf(e1)).toBe('ERR_INVALID_OPTION');
      expect((e1 as Error).message).toMatch(/quota/);
      const e2 = await d.create('a', null, { storageOpt: { inodes: '5' } }).catch((e: unknown) => e);
      expect(codeOf(e2)).toBe('ERR_INVALID_OPTION');
      expect((e2 as Error).message).toContain('inodes');
      const e3 = await d.create('a', null, { storageOpt: { size: 'huge' } }).catch((e: unknown) => e);
      expect(codeOf(e3)).toBe('ERR_INVALID_OPTION');
      expect(await d.exists('a')).toBe(false);
      await d.create('a', null, { storageOpt: {} });
      expect(await d.exists('a')).toBe(true);
    });

    it('the parent cannot be removed while a child is being copied from it', async () => {
      const d = await open();
      await d.create('base', null);
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let copying!: () => void;
      const started = new Promise<void>((r) => (copying = r));
      b.copyTree.mockImplementationOnce(async (src: string, dest: string) => {
        copying();
        await gate;
        return fakeCopyTree(src, dest);
      });
      const creating = d.create('child', 'base');
      await started;
      await expect(d.remove('base')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
      release();
      await creating;
      expect(await d.exists('child')).toBe(true);
    });

    it('concurrent creates of one id: one wins, the other is LayerExistsError', async () => {
      const d = await open();
      await d.create('base', null);
      const results = await Promise.allSettled([d.create('same', 'base'), d.create('same', 'base')]);
      expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
      const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(codeOf(rejected.reason)).toBe('ERR_LAYER_EXISTS');
      expect(fs.readdirSync(path.join(home, 'dir')).sort()).toEqual(['base', 'same']);
    });

    it('invalid ids are refused before anything is touched', async () => {
      const d = await open();
      for (const bad of ['', '..', 'a/b', '.x', '-x', 'a\0b']) {
        await expect(d.create(bad, null)).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
        await expect(d.exists(bad)).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
      }
      expect(fs.readdirSync(home)).toEqual([]);
    });
  });

  describe('get/put/remove', () => {
    it('get of a missing layer is LayerNotFoundError; put without get is NotMountedError', async () => {
      const d = await open();
      await expect(d.get('nope')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
      await d.create('l', null);
      await expect(d.put('l')).rejects.toMatchObject({ code: 'ERR_NOT_MOUNTED' });
      expect(await d.get('l')).toBe(d.dir('l'));
      await d.put('l');
      await expect(d.put('l')).rejects.toMatchObject({ code: 'ERR_NOT_MOUNTED' });
    });

    it('remove refuses a layer that is got, then succeeds after put', async () => {
      const d = await open();
      await d.create('l', null);
      await d.get('l');
      await d.get('l');
      const err = await d.remove('l').catch((e: unknown) => e);
      expect(codeOf(err)).toBe('ERR_LAYER_IN_USE');
      expect((err as Error).message).toMatch(/2 gets/);
      await d.put('l');
      await expect(d.remove('l')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
      await d.put('l');
      await d.remove('l');
      expect(await d.exists('l')).toBe(false);
      expect(fs.readdirSync(path.join(home, 'dir'))).toEqual([]);
    });

    it('remove refuses a parent, naming its children', async () => {
      const d = await open();
      await d.create('p', null);
      await d.create('c1', 'p');
      await d.create('c2', 'p');
      const err = await d.remove('p').catch((e: unknown) => e);
      expect(codeOf(err)).toBe('ERR_LAYER_IN_USE');
      expect((err as Error).message).toContain('"c1"');
      expect((err as Error).message).toContain('2 layers');
      await d.remove('c1');
      await d.remove('c2');
      await d.remove('p');
      expect(fs.readdirSync(path.join(home, 'parents'))).toEqual([]);
    });

    it('remove of a missing layer is LayerNotFoundError', async () => {
      const d = await open();
      await expect(d.remove('nope')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    });

    it('after cleanup the driver refuses work', async () => {
      const d = await open();
      await d.create('l', null);
      await d.get('l');
      await d.cleanup();
      await expect(d.get('l')).rejects.toMatchObject({ code: 'ERR_DRIVER_CLOSED' });
      await expect(d.create('m', null)).rejects.toMatchObject({ code: 'ERR_DRIVER_CLOSED' });
      await expect(d.remove('l')).rejects.toMatchObject({ code: 'ERR_DRIVER_CLOSED' });
      // the layer itself is kept
      expect(fs.existsSync(path.join(home, 'dir', 'l'))).toBe(true);
    });
  });

  describe('quota (xfs project quotas, mocked)', () => {
    beforeEach(() => {
      b.statfs.mockResolvedValue(statfsOf(FsMagic.XFS));
      b.getProjectId.mockResolvedValue(0);
      b.mknod.mockResolvedValue(undefined);
      b.setProjectQuota.mockResolvedValue(undefined);
      b.setProjectId.mockResolvedValue(undefined);
    });

    it('without working project quotas on xfs, size is refused with the reason', async () => {
      b.setProjectQuota.mockRejectedValue(Object.assign(new Error('quotactl: ESRCH'), { code: 'ESRCH' }));
      const d = await open();
      expect(d.quotaSupport().supported).toBe(false);
      expect(d.quotaSupport().reason).toMatch(/pquota/);
      expect(fs.existsSync(path.join(home, 'backingFsBlockDev'))).toBe(false);
      const err = await d.create('a', null, { storageOpt: { size: '1G' } }).catch((e: unknown) => e);
      expect(codeOf(err)).toBe('ERR_INVALID_OPTION');
      expect((err as Error).message).toMatch(/ESRCH/);
      expect(await d.exists('a')).toBe(false);
    });

    it('a limited layer is built in a staging dir carrying a new project id, then moved into place', async () => {
      const d = await open();
      expect(d.quotaSupport()).toEqual({ supported: true, reason: '' });
      // the probe: a limit of 0 on the first id (home's id + 1) through the device node in the home
      expect(b.mknod).toHaveBeenCalledWith(path.join(home, 'backingFsBlockDev'), 0o060600, expect.any(Number));
      expect(b.setProjectQuota).toHaveBeenCalledWith(path.join(home, 'backingFsBlockDev'), 1, 0);
      await d.create('base', null);
      fs.writeFileSync(path.join(d.dir('base'), 'f'), 'x');
      await d.createReadWrite('limited', 'base', { storageOpt: { size: '50M' } });
      const [stagingDir, projectId] = b.setProjectId.mock.calls[0]!;
      expect(path.basename(stagingDir)).toMatch(/^\.tmp-limited-/);
      expect(projectId).toBe(2);
      expect(b.setProjectQuota).toHaveBeenLastCalledWith(path.join(home, 'backingFsBlockDev'), 2, 50 * 1024 * 1024);
      expect(b.copyTree).toHaveBeenCalledWith(d.dir('base'), path.join(stagingDir, 'root'), { reflink: true });
      expect(fs.readFileSync(path.join(d.dir('limited'), 'f'), 'utf8')).toBe('x');
      expect(fs.readdirSync(path.join(home, 'dir')).sort()).toEqual(['base', 'limited']);
      // a second limited layer gets the next id
      await d.create('limited2', null, { storageOpt: { size: '1M' } });
      expect(b.setProjectId.mock.calls[1]![1]).toBe(3);
    });

    it('the init size option limits every layer; a failing limit leaves nothing behind', async () => {
      const d = await open(['size=10M']);
      await d.create('a', null);
      expect(b.setProjectQuota).toHaveBeenLastCalledWith(expect.any(String), 2, 10 * 1024 * 1024);
      b.setProjectQuota.mockRejectedValueOnce(Object.assign(new Error('quotactl failed'), { code: 'EIO' }));
      await expect(d.create('b', 'a')).rejects.toMatchObject({ code: 'EIO' });
      expect(fs.readdirSync(path.join(home, 'dir'))).toEqual(['a']);
      expect(d.parentOf('b')).toBeNull();
      await d.remove('a');
    });

    it('after a restart, project ids of existing layers are not handed out again', async () => {
      const d = await open();
      await d.create('a', null, { storageOpt: { size: '1M' } });
      await d.cleanup();
      b.getProjectId.mockImplementation(async (p: string) => (p === path.join(home, 'dir', 'a') ? 7 : 0));
      const d2 = await open();
      await d2.create('b', null, { storageOpt: { size: '1M' } });
      expect(b.setProjectId).toHaveBeenLastCalledWith(expect.stringContaining('.tmp-b-'), 8);
    });
  });

  describe('registry', () => {
    it('registers vfs and newDriver opens it at <root>/vfs', async () => {
      expect(registeredDrivers()).toContain('vfs');
      const d = await newDriver({ name: 'vfs', root, bindings: b });
      expect(d).toBeInstanceOf(VfsDriver);
      expect((d as VfsDriver).home).toBe(home);
      await expect(newDriver({ name: 'vfs', root, bindings: b, options: ['bogus=1'] })).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' });
    });
  });
});
