/**
 * The btrfs driver against the real kernel: a sparse image formatted with mkfs.btrfs, attached with the addon's
 * loopAttach and mounted with its mount; the shared conformance suite (quota included) runs on it, plus btrfs
 * specifics (layers are subvolumes, nested subvolumes are removed, size limits are quota groups).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { BtrfsDriver } from '../../lib/drivers/btrfs';
import { loadBindings } from '../../lib/native/bindings';
import { FsMagic, UmountFlags } from '../../lib/native/constants';
import { runDriverConformance } from '../conformance/driver-conformance';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

const execFileP = promisify(execFile);

function btrfsReason(): string | null {
  if (!isRoot) return 'needs root (loop device, mount, btrfs ioctls)';
  if (!kernelHasFs('btrfs')) return 'the kernel has no btrfs';
  if (!haveTool('mkfs.btrfs')) return 'mkfs.btrfs is not installed (apt-get install btrfs-progs)';
  return null;
}

const REASON = btrfsReason();

const EDQUOT = os.constants.errno.EDQUOT;

/** Whether `e` is EDQUOT or ENOSPC. Node 20's libuv (1.46) has no name for EDQUOT: it arrives as errno -122 with
 *  code "UNKNOWN" or "Unknown system error -122". */
function isQuotaError(e: NodeJS.ErrnoException | null): boolean {
  return e !== null && (e.code === 'EDQUOT' || e.code === 'ENOSPC' || e.errno === -EDQUOT);
}

/** Writes `total` bytes in 1 MiB chunks and fsyncs; resolves to the first error (or null). */
function fill(file: string, total: number): NodeJS.ErrnoException | null {
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  const fd = fs.openSync(file, 'w');
  try {
    for (let written = 0; written < total; ) written += fs.writeSync(fd, chunk, 0, Math.min(chunk.length, total - written));
    fs.fsyncSync(fd);
    return null;
  } catch (e) {
    return e as NodeJS.ErrnoException;
  } finally {
    fs.closeSync(fd);
  }
}

describe('btrfs on a loop-mounted image', () => {
  jest.setTimeout(600_000);
  const b = loadBindings();
  let dir: string | undefined;
  let mnt = '';
  let loopDev = '';
  let mounted = false;

  beforeAll(async () => {
    if (REASON !== null) return;
    dir = makeTmp('gd-btrfs-drv-');
    mnt = path.join(dir, 'mnt');
    fs.mkdirSync(mnt);
    const img = path.join(dir, 'btrfs.img');
    fs.closeSync(fs.openSync(img, 'w'));
    fs.truncateSync(img, 1024 * 1024 * 1024);
    await execFileP('mkfs.btrfs', ['-q', img]);
    loopDev = (await b.loopAttach(img)).device;
    await b.mount(loopDev, mnt, 'btrfs', 0, null);
    mounted = true;
  });

  afterAll(async () => {
    const errors: unknown[] = [];
    if (mounted) await b.umount(mnt, 0).catch(async (e: unknown) => {
      errors.push(e);
      await b.umount(mnt, UmountFlags.MNT_DETACH).catch(() => undefined);
    });
    if (loopDev) await b.loopDetach(loopDev).catch((e: unknown) => errors.push(e));
    removeTmp(dir);
    if (errors.length > 0) throw errors[0];
  });

  runDriverConformance('btrfs', (home) => BtrfsDriver.init(home), {
    deepChain: 128,
    quota: true,
    tmpBase: () => mnt,
    label: 'loop-mounted btrfs',
    skip: REASON,
  });

  describeIf(REASON, 'btrfs specifics', () => {
    let root: string;
    let d: BtrfsDriver;

    beforeEach(async () => {
      root = fs.mkdtempSync(path.join(mnt, 'spec-'));
      d = await BtrfsDriver.init(path.join(root, 'btrfs'));
    });

    afterEach(async () => {
      await d.cleanup();
      // layers a failed test left behind are subvolumes: rm cannot delete them, the driver can
      const fresh = await BtrfsDriver.init(path.join(root, 'btrfs'));
      const subs = path.join(root, 'btrfs', 'subvolumes');
      const ids = fs.existsSync(subs) ? fs.readdirSync(subs) : [];
      // children first: repeat until nothing more goes
      for (let pass = 0; pass < ids.length; pass++) {
        for (const id of fs.readdirSync(subs)) await fresh.remove(id).catch(() => undefined);
      }
      await fresh.cleanup();
      removeTmp(root);
    });

    it('refuses a home that is not on btrfs', async () => {
      const other = makeTmp('gd-btrfs-notbtrfs-');
      try {
        expect((await b.statfs(other)).type).not.toBe(FsMagic.BTRFS);
        await expect(BtrfsDriver.init(path.join(other, 'btrfs'))).rejects.toMatchObject({ code: 'ERR_DRIVER_NOT_SUPPORTED' });
      } finally {
        removeTmp(other);
      }
    });

    it('makes every layer a subvolume, snapshots share extents, and nested subvolumes are removed with the layer', async () => {
      await d.create('base', null);
      expect(await b.btrfsIsSubvolume(d.subvolume('base'))).toBe(true);
      const base = await d.get('base');
      fs.writeFileSync(path.join(base, 'blob'), Buffer.alloc(32 * 1024 * 1024, 7));
      await d.put('base');
      await execFileP('sync', []);
      const before = await b.statfs(mnt);
      await d.create('child', 'base');
      const after = await b.statfs(mnt);
      // a copy would take 32 MiB more; a snapshot takes a few metadata blocks
      expect((before.bfree - after.bfree) * before.bsize).toBeLessThan(8 * 1024 * 1024);
      expect(await b.btrfsIsSubvolume(d.subvolume('child'))).toBe(true);
      expect((await b.btrfsSubvolumeInfo(d.subvolume('child'))).id).not.toBe((await b.btrfsSubvolumeInfo(d.subvolume('base'))).id);

      // a container that made subvolumes inside its layer, one nested in another
      const child = await d.get('child');
      fs.mkdirSync(path.join(child, 'var', 'lib'), { recursive: true });
      await b.btrfsSubvolumeCreate(path.join(child, 'var', 'lib', 'outer'));
      fs.mkdirSync(path.join(child, 'var', 'lib', 'outer', 'x'));
      await b.btrfsSubvolumeCreate(path.join(child, 'var', 'lib', 'outer', 'x', 'inner'));
      fs.writeFileSync(path.join(child, 'var', 'lib', 'outer', 'x', 'inner', 'f'), 'deep');
      await b.btrfsSubvolumeCreate(path.join(child, 'side'));
      await expect(d.remove('child')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
      await d.put('child');
      await expect(d.remove('base')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
      await d.remove('child');
      expect(fs.existsSync(d.subvolume('child'))).toBe(false);
      await d.remove('base');
      expect(fs.readdirSync(path.join(root, 'btrfs', 'subvolumes'))).toEqual([]);
    });

    it('limits a layer to its size with a quota group: writing past it fails with EDQUOT', async () => {
      await d.create('base', null);
      await d.createReadWrite('limited', 'base', { storageOpt: { size: '20M' } });
      await d.createReadWrite('free', 'base');
      const limited = await d.get('limited');
      const free = await d.get('free');
      try {
        expect(fill(path.join(limited, 'small'), 8 * 1024 * 1024)).toBeNull();
        const err = fill(path.join(limited, 'big'), 40 * 1024 * 1024);
        expect(isQuotaError(err)).toBe(true);
        // the limit is per layer: a layer without one takes the same amount
        expect(fill(path.join(free, 'big'), 40 * 1024 * 1024)).toBeNull();
      } finally {
        await d.put('limited');
        await d.put('free');
      }
      await d.remove('limited');
      await d.remove('free');
      await d.remove('base');
    });

    it('refuses a size below btrfs.min_space', async () => {
      const strict = await BtrfsDriver.init(path.join(root, 'btrfs'), ['btrfs.min_space=64M']);
      try {
        await strict.create('base', null);
        await expect(strict.createReadWrite('tiny', 'base', { storageOpt: { size: '10M' } })).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' });
        expect(await strict.exists('tiny')).toBe(false);
        await strict.remove('base');
      } finally {
        await strict.cleanup();
      }
    });
  });
});
