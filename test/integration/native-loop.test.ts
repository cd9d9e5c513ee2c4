/**
 * Loop devices against the real kernel: attach a sparse file, size it, format and mount it, grow it, discard,
 * detach; both the LOOP_CONFIGURE path and the LOOP_SET_FD + LOOP_SET_STATUS64 fallback.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import { FsMagic, UmountFlags } from '../../lib/native/constants';
import type { LoopDevice, NativeBindings } from '../../lib/native/types';
import { describeIf, haveTool, isRoot } from '../support/native';

const MiB = 1024 * 1024;
const mkfsReason = haveTool('mkfs.ext4') ? null : 'mkfs.ext4 not installed';

function loopReason(): string | null {
  if (!isRoot) return 'needs root';
  if (!fs.existsSync('/dev/loop-control')) return 'no /dev/loop-control (loop driver missing)';
  return null;
}

describeIf(loopReason(), 'native loop devices', () => {
  let b: NativeBindings;
  let base: string;
  const attached: string[] = [];
  const mounted: string[] = [];

  async function attach(file: string, opts?: Parameters<NativeBindings['loopAttach']>[1]): Promise<LoopDevice> {
    const dev = await b.loopAttach(file, opts);
    attached.push(dev.device);
    return dev;
  }

  /**
   * After a detach the device must no longer serve `file`. Loop indexes are shared by every process on the host,
   * so a concurrent attacher may already have reused the index: then it must be backed by something else.
   */
  async function expectDetachedFrom(device: string, file: string): Promise<void> {
    const result = await b.loopInfo(device).then(
      (info) => ({ info }),
      (err: unknown) => ({ err }),
    );
    if ('err' in result) {
      expect(result.err).toMatchObject({ code: 'ENXIO', syscall: 'ioctl(LOOP_GET_STATUS64)', path: device });
    } else {
      expect(result.info.backingFile).not.toBe(file);
    }
  }

  beforeAll(() => {
    b = loadBindings();
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-native-loop-'));
  });

  afterAll(async () => {
    for (const m of mounted.reverse()) await b.umount(m, UmountFlags.MNT_DETACH).catch(() => undefined);
    for (const d of attached) await b.loopDetach(d).catch(() => undefined);
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('loopGetFree returns a loop index', async () => {
    const idx = await b.loopGetFree();
    expect(Number.isInteger(idx)).toBe(true);
    expect(idx).toBeGreaterThanOrEqual(0);
  });

  describe('a sparse image through its life cycle', () => {
    // A path longer than the 64 bytes the kernel keeps in lo_file_name, to check the sysfs lookup.
    let dir: string;
    let img: string;
    let dev: LoopDevice;

    beforeAll(() => {
      dir = path.join(base, 'a-directory-name-long-enough-to-exceed-lo-file-name-'.padEnd(80, 'x'));
      fs.mkdirSync(dir);
      img = path.join(dir, 'disk.img');
    });

    it('creates a sparse image with truncate(create)', async () => {
      await b.truncate(img, 64 * MiB, true);
      const st = fs.statSync(img);
      expect(st.size).toBe(64 * MiB);
      expect(st.mode & 0o777).toBe(0o600);
      expect(st.blocks).toBeLessThanOrEqual(8);
    });

    it('attaches it with LOOP_CONFIGURE and reports size and status', async () => {
      expect(img.length).toBeGreaterThan(64);
      dev = await attach(img);
      expect(dev.device).toBe(`/dev/loop${dev.index}`);
      expect(fs.statSync(dev.device).isBlockDevice()).toBe(true);
      expect(await b.blockDeviceSize(dev.device)).toBe(64 * MiB);

      const st = fs.statSync(img);
      const info = await b.loopInfo(dev.device);
      expect(info).toEqual({
        device: dev.device,
        index: dev.index,
        backingFile: img,
        backingDev: st.dev,
        backingInode: st.ino,
        offset: 0,
        sizeLimit: 0,
        autoclear: true,
        readOnly: false,
      });
    });

    describeIf(mkfsReason, 'with a filesystem', () => {
      it('formats it with mkfs.ext4 and mounts it through mount()', async () => {
        execFileSync('mkfs.ext4', ['-q', '-F', dev.device], { stdio: 'pipe' });
        const mnt = path.join(base, 'mnt');
        fs.mkdirSync(mnt);
        await b.mount(dev.device, mnt, 'ext4', 0, null);
        mounted.push(mnt);
        expect((await b.statfs(mnt)).type).toBe(FsMagic.EXT4);
        fs.writeFileSync(path.join(mnt, 'hello'), 'on a loop device');
        await b.umount(mnt, 0);
        mounted.pop();

        // Mount again: the data went to the image, not just the page cache of one mount.
        await b.mount(dev.device, mnt, 'ext4', 0, null);
        mounted.push(mnt);
        expect(fs.readFileSync(path.join(mnt, 'hello'), 'utf8')).toBe('on a loop device');
        await b.umount(mnt, 0);
        mounted.pop();
        expect(fs.statSync(img).blocks).toBeGreaterThan(0);
      });
    });

    it('picks up a grown backing file with loopSetCapacity', async () => {
      await b.truncate(img, 128 * MiB);
      expect(await b.blockDeviceSize(dev.device)).toBe(64 * MiB);
      await b.loopSetCapacity(dev.device);
      expect(await b.blockDeviceSize(dev.device)).toBe(128 * MiB);
    });

    it('detaches it, after which loopInfo rejects with ENXIO', async () => {
      await b.loopDetach(dev.device);
      attached.splice(attached.indexOf(dev.device), 1);
      await expectDetachedFrom(dev.device, img);
    });
  });

  describeIf(mkfsReason, 'autoclear with a mounted filesystem', () => {
    it('keeps an autoclear device while it is mounted and detaches it on the last unmount', async () => {
      const img = path.join(base, 'autoclear.img');
      await b.truncate(img, 32 * MiB, true);
      const dev = await attach(img);
      execFileSync('mkfs.ext4', ['-q', '-F', dev.device], { stdio: 'pipe' });
      const mnt = path.join(base, 'autoclear-mnt');
      fs.mkdirSync(mnt);
      await b.mount(dev.device, mnt, 'ext4', 0, null);
      mounted.push(mnt);

      // The mount holds the device: the detach is deferred until the filesystem lets go of it.
      await b.loopDetach(dev.device);
      const info = await b.loopInfo(dev.device);
      expect(info.backingFile).toBe(img);
      expect(info.autoclear).toBe(true);
      fs.writeFileSync(path.join(mnt, 'still-usable'), 'yes');

      await b.umount(mnt, 0);
      mounted.pop();
      attached.splice(attached.indexOf(dev.device), 1);
      await expectDetachedFrom(dev.device, img);
    });
  });

  it('keeps a device without autoclear attached until loopDetach', async () => {
    const img = path.join(base, 'persistent.img');
    await b.truncate(img, 8 * MiB, true);
    const dev = await attach(img, { autoclear: false });
    // Open and close the device: without autoclear the last close must not detach it.
    fs.closeSync(fs.openSync(dev.device, 'r'));
    const info = await b.loopInfo(dev.device);
    expect(info.autoclear).toBe(false);
    expect(info.backingFile).toBe(img);
    await b.loopDetach(dev.device);
    attached.splice(attached.indexOf(dev.device), 1);
    await expectDetachedFrom(dev.device, img);
  });

  describe.each([
    ['LOOP_CONFIGURE', false],
    ['LOOP_SET_FD + LOOP_SET_STATUS64 fallback', true],
  ])('read-only attach with offset and size limit via %s', (_name, noConfigure) => {
    it('honours offset, sizeLimit, readOnly and autoclear', async () => {
      const img = path.join(base, `window-${noConfigure ? 'setfd' : 'configure'}.img`);
      await b.truncate(img, 32 * MiB, true);
      // Mark the start of the window so that reading the device proves the offset was applied.
      const fd = fs.openSync(img, 'r+');
      fs.writeSync(fd, Buffer.from('window start'), 0, 12, 4 * MiB);
      fs.closeSync(fd);

      const saved = process.env.GRAPHDRIVER_LOOP_NO_CONFIGURE;
      if (noConfigure) process.env.GRAPHDRIVER_LOOP_NO_CONFIGURE = '1';
      else delete process.env.GRAPHDRIVER_LOOP_NO_CONFIGURE;
      let pending: Promise<LoopDevice>;
      try {
        // The variable is read synchronously when the call is made, so it can be restored right away.
        pending = b.loopAttach(img, { readOnly: true, autoclear: false, offset: 4 * MiB, sizeLimit: 8 * MiB });
      } finally {
        if (saved === undefined) delete process.env.GRAPHDRIVER_LOOP_NO_CONFIGURE;
        else process.env.GRAPHDRIVER_LOOP_NO_CONFIGURE = saved;
      }
      const dev = await pending;
      attached.push(dev.device);

      const info = await b.loopInfo(dev.device);
      expect(info).toMatchObject({ backingFile: img, offset: 4 * MiB, sizeLimit: 8 * MiB, readOnly: true, autoclear: false });
      expect(await b.blockDeviceSize(dev.device)).toBe(8 * MiB);

      const head = Buffer.alloc(12);
      const dfd = fs.openSync(dev.device, 'r');
      try {
        fs.readSync(dfd, head, 0, 12, 0);
      } finally {
        fs.closeSync(dfd);
      }
      expect(head.toString()).toBe('window start');
      // A read-only device refuses writes (the open itself may succeed) and discards.
      const wfd = fs.openSync(dev.device, 'r+');
      try {
        expect(() => fs.writeSync(wfd, Buffer.alloc(512, 1), 0, 512, 0)).toThrow(expect.objectContaining({ code: 'EPERM' }));
      } finally {
        fs.closeSync(wfd);
      }
      await expect(b.blkDiscard(dev.device, 0, 4096)).rejects.toMatchObject({ code: 'EPERM', syscall: 'ioctl(BLKDISCARD)' });
      expect(fs.readFileSync(img).subarray(0, 512).every((x) => x === 0)).toBe(true);

      await b.loopDetach(dev.device);
      attached.splice(attached.indexOf(dev.device), 1);
      await expectDetachedFrom(dev.device, img);
    });
  });

  it('discards a range with blkDiscard, punching a hole in the backing file', async () => {
    const img = path.join(base, 'discard.img');
    await b.truncate(img, 16 * MiB, true);
    const dev = await attach(img);
    const fd = fs.openSync(dev.device, 'r+');
    try {
      fs.writeSync(fd, Buffer.alloc(4 * MiB, 0xab), 0, 4 * MiB, 0);
      fs.fsyncSync(fd);
      const before = fs.statSync(img).blocks;
      expect(before * 512).toBeGreaterThanOrEqual(4 * MiB);

      await b.blkDiscard(dev.device, 0, 2 * MiB);
      const after = fs.statSync(img).blocks;
      expect((before - after) * 512).toBeGreaterThanOrEqual(2 * MiB);

      const back = Buffer.alloc(4 * MiB);
      fs.readSync(fd, back, 0, 4 * MiB, 0);
      expect(back.subarray(0, 2 * MiB).every((x) => x === 0)).toBe(true);
      expect(back.subarray(2 * MiB).every((x) => x === 0xab)).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
    // Unaligned ranges are refused by the block layer.
    await expect(b.blkDiscard(dev.device, 1, 511)).rejects.toMatchObject({ code: 'EINVAL', syscall: 'ioctl(BLKDISCARD)', path: dev.device });
  });

  it('gives concurrent attachers distinct devices (retrying when another one took the free index)', async () => {
    const imgs = [0, 1, 2, 3].map((i) => path.join(base, `concurrent-${i}.img`));
    await Promise.all(imgs.map((img) => b.truncate(img, 4 * MiB, true)));
    const devs = await Promise.all(imgs.map((img) => attach(img)));
    expect(new Set(devs.map((d) => d.device)).size).toBe(imgs.length);
    const infos = await Promise.all(devs.map((d) => b.loopInfo(d.device)));
    expect(infos.map((i) => i.backingFile)).toEqual(imgs);
    for (const d of devs) {
      await b.loopDetach(d.device);
      attached.splice(attached.indexOf(d.device), 1);
    }
  });

  it('rejects attaching a missing file with ENOENT and the path', async () => {
    const missing = path.join(base, 'missing.img');
    await expect(b.loopAttach(missing)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open', path: missing });
  });

  it('rejects size queries on something that is not a block device', async () => {
    const file = path.join(base, 'not-a-device');
    fs.writeFileSync(file, 'x');
    await expect(b.blockDeviceSize(file)).rejects.toMatchObject({ code: 'ENOTTY', syscall: 'ioctl(BLKGETSIZE64)', path: file });
    await expect(b.loopInfo(file)).rejects.toMatchObject({ code: 'ENOTTY', path: file });
  });
});
