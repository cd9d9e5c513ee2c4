/**
 * overlay2 with mocked bindings and kernel probes: link ids, lower files, the exact mount data (absolute, and
 * relative from the home when it exceeds a page), init refusals, and the error paths of get/put/create/remove.
 * Layer directories are real (in a temp dir); nothing is mounted.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Overlay2Driver } from '../../lib/drivers/overlay2';
import {
  CorruptLayerError,
  formatMountLabel,
  generateLinkId,
  isLinkId,
  lowerForChild,
  MaxDepthError,
  MountDataTooLargeError,
  parseLowerFile,
  planMount,
  splitMountFlags,
} from '../../lib/drivers/overlay2/layout';
import { OverlayMountTestError, type OverlayProbe } from '../../lib/drivers/overlay2/checks';
import * as layout from '../../lib/drivers/overlay2/layout';
import { parseMountInfo } from '../../lib/drivers/overlay2/mountinfo';
import { FsMagic, MountFlags, UmountFlags } from '../../lib/native/constants';
import type { ApplyEntry, NativeBindings } from '../../lib/native/types';
import { mockBindings } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

async function errorOf(p: Promise<unknown>): Promise<Error & { code?: string; errno?: number; syscall?: string }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

function nativeError(code: string, errno: number, syscall: string): Error {
  return Object.assign(new Error(`${code}: kernel said no, ${syscall}`), { code, errno, syscall });
}

describe('overlay2 layout helpers', () => {
  it('link ids are 26 base32 characters, as Docker', () => {
    const id = generateLinkId();
    expect(id).toMatch(/^[A-Z2-7]{26}$/);
    expect(isLinkId(id)).toBe(true);
    expect(generateLinkId(() => Buffer.alloc(17, 0))).toBe('A'.repeat(26));
    expect(generateLinkId(() => Buffer.alloc(17, 0xff))).toBe('7'.repeat(26));
    // 0x08 0x42 ... = 00001 00001 00001 ... in 5-bit groups: 'B' repeated.
    expect(generateLinkId(() => Buffer.from('0842108421084210842108421084210842', 'hex'))).toBe('B'.repeat(26));
    expect(new Set(Array.from({ length: 200 }, () => generateLinkId())).size).toBe(200);
    expect(isLinkId('abc')).toBe(false);
  });

  it('lower files: nearest first, at most 128, entries must be l/<link>', () => {
    expect(lowerForChild('p', 'AAAA', [])).toBe('l/AAAA');
    expect(lowerForChild('p', 'AAAA', ['l/BBBB', 'l/CCCC'])).toBe('l/AAAA:l/BBBB:l/CCCC');
    const full = Array.from({ length: 127 }, (_, i) => `l/X${i}`);
    expect(lowerForChild('p', 'TOP', full).split(':')).toHaveLength(128);
    expect(() => lowerForChild('p', 'TOP', [...full, 'l/ONE'])).toThrow(MaxDepthError);
    expect(() => lowerForChild('p', 'TOP', [...full, 'l/ONE'])).toThrow(/max depth exceeded/);

    expect(parseLowerFile('x', 'l/AB:l/CD')).toEqual(['l/AB', 'l/CD']);
    expect(parseLowerFile('x', 'l/AB\n')).toEqual(['l/AB']);
    for (const bad of ['', 'l/', '/etc', 'l/AB,upperdir=/x', 'l/../../x', 'l/AB::l/CD', 'AB']) {
      expect(() => parseLowerFile('x', bad)).toThrow(CorruptLayerError);
    }
    expect(() => parseLowerFile('x', Array.from({ length: 129 }, () => 'l/A').join(':'))).toThrow(CorruptLayerError);
  });

  it('mount labels and generic mount flags', () => {
    expect(formatMountLabel('a=b', undefined)).toBe('a=b');
    expect(formatMountLabel('a=b', 'system_u:object_r:x:s0')).toBe('a=b,context="system_u:object_r:x:s0"');
    expect(formatMountLabel('', 'l')).toBe('context="l"');
    const s = splitMountFlags(['nodev', 'xino=off', 'ro', 'rw', 'noexec']);
    expect(s.flags).toBe(MountFlags.MS_NODEV | MountFlags.MS_NOEXEC);
    expect(s.data).toEqual(['xino=off']);
    expect(s.flagOptions).toEqual(['nodev', 'ro', 'rw', 'noexec']);
  });

  describe('planMount', () => {
    const base = { home: '/var/lib/docker/overlay2', id: 'c1', indexOff: true, userxattr: false, extra: [] as string[] };

    it('absolute paths when they fit in a page', () => {
      const p = planMount({ ...base, lowers: ['l/AAA', 'l/BBB'], readonly: false });
      expect(p).toEqual({
        data: 'index=off,lowerdir=/var/lib/docker/overlay2/l/AAA:/var/lib/docker/overlay2/l/BBB,upperdir=/var/lib/docker/overlay2/c1/diff,workdir=/var/lib/docker/overlay2/c1/work',
        target: '/var/lib/docker/overlay2/c1/merged',
        flags: 0,
        flagOptions: [],
      });
      expect(p.from).toBeUndefined();
    });

    it('read-only (committed) layers put their own diff on top of the lowers, without upper and work', () => {
      const p = planMount({ ...base, indexOff: false, lowers: ['l/AAA'], readonly: true });
      expect(p.data).toBe('lowerdir=/var/lib/docker/overlay2/c1/diff:/var/lib/docker/overlay2/l/AAA');
    });

    it('userxattr, extra options, flags and the label', () => {
      const p = planMount({ ...base, userxattr: true, lowers: ['l/AAA'], readonly: false, extra: ['nodev', 'xino=off'], mountLabel: 'lbl' });
      expect(p.data).toBe(
        'index=off,userxattr,lowerdir=/var/lib/docker/overlay2/l/AAA,upperdir=/var/lib/docker/overlay2/c1/diff,workdir=/var/lib/docker/overlay2/c1/work,xino=off,context="lbl"',
      );
      expect(p.flags).toBe(MountFlags.MS_NODEV);
    });

    it('relative paths from the home when the absolute data exceeds a page (128 lowers)', () => {
      const lowers = Array.from({ length: 128 }, () => `l/${generateLinkId()}`);
      const p = planMount({ ...base, lowers, readonly: false });
      expect(p.from).toBe('/var/lib/docker/overlay2');
      expect(p.target).toBe('c1/merged');
      expect(p.data).toBe(`index=off,lowerdir=${lowers.join(':')},upperdir=c1/diff,workdir=c1/work`);
      expect(Buffer.byteLength(p.data)).toBeLessThan(4096);
      const ro = planMount({ ...base, lowers, readonly: true });
      expect(ro.data).toBe(`index=off,lowerdir=c1/diff:${lowers.join(':')}`);
    });

    it('the page limit counts bytes and is page-1; past it even relatively is MountDataTooLargeError', () => {
      const lowers = ['l/AAA'];
      const exact = planMount({ ...base, lowers, readonly: true, indexOff: false });
      const len = Buffer.byteLength(exact.data);
      expect(planMount({ ...base, lowers, readonly: true, indexOff: false, pageSize: len + 1 }).from).toBeUndefined();
      expect(planMount({ ...base, lowers, readonly: true, indexOff: false, pageSize: len }).from).toBe(base.home);
      expect(() => planMount({ ...base, lowers, readonly: false, mountLabel: 'x'.repeat(5000) })).toThrow(MountDataTooLargeError);
    });
  });

  it('parses mountinfo, unescaping mount points', () => {
    const text =
      '36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n' +
      '40 36 0:50 / /x/merged rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n' +
      'garbage line\n';
    expect(parseMountInfo(text)).toEqual([
      { mountPoint: '/mnt/a b', fstype: 'ext3', source: '/dev/root', superOptions: ['rw', 'errors=continue'] },
      { mountPoint: '/x/merged', fstype: 'overlay', source: 'overlay', superOptions: ['rw', 'lowerdir=/l', 'upperdir=/u', 'workdir=/w'] },
    ]);
  });
});

describe('Overlay2Driver (mocked bindings)', () => {
  let root: string;
  let home: string;
  let b: jest.Mocked<NativeBindings>;
  let mounted: Set<string>;
  let probe: Partial<OverlayProbe>;

  beforeEach(() => {
    root = makeTmp('gd-ov-unit-');
    home = path.join(root, 'overlay2');
    mounted = new Set();
    b = mockBindings({
      statfs: jest.fn(async () => ({ type: FsMagic.EXT4, bsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, namelen: 255, flags: 0 })),
      renameat2: jest.fn(async (from: string, to: string) => {
        if (fs.existsSync(to)) throw Object.assign(new Error('EEXIST'), { code: 'EEXIST', errno: -17, syscall: 'renameat2' });
        fs.renameSync(from, to);
      }),
      isMountpoint: jest.fn(async (p: string) => mounted.has(p)),
      mount: jest.fn(async (_s: string, target: string) => {
        mounted.add(target);
      }),
      mountFrom: jest.fn(async (dir: string, _s: string, target: string) => {
        mounted.add(path.join(dir, target));
      }),
      // The batched create, done with fs on the home (the only root the driver passes).
      applyEntries: jest.fn(async (_fd: number, entries: ApplyEntry[]) =>
        entries.map((e) => {
          const p = path.join(home, e.path);
          try {
            if (e.type === 'dir') {
              if (!fs.existsSync(p)) fs.mkdirSync(p);
              fs.chmodSync(p, e.mode ?? 0o755);
            } else if (e.type === 'file') {
              fs.writeFileSync(p, e.data ?? Buffer.alloc(0), { flag: e.noReplace ? 'wx' : 'w' });
              fs.chmodSync(p, e.mode ?? 0o644);
            } else if (e.type === 'symlink') {
              fs.symlinkSync(e.linkname!, p);
            }
            return { errno: 0, code: '', syscall: '', fd: -1 };
          } catch (err) {
            const code = (err as { code: string }).code;
            return { errno: code === 'EEXIST' ? 17 : 2, code, syscall: 'x', fd: -1 };
          }
        }),
      ),
      umount: jest.fn(async (target: string) => {
        if (!mounted.delete(target)) throw Object.assign(new Error('EINVAL'), { code: 'EINVAL', errno: -22, syscall: 'umount2' });
      }),
    });
    probe = {
      hasOverlay: async () => true,
      supportsDType: async () => true,
      nativeDiff: async () => ({ ok: true, reason: '' }),
      metacopy: async () => false,
      indexParam: async () => true,
      mountInfo: async () => [],
    };
  });

  afterEach(() => removeTmp(root));

  const init = (options: string[] = [], extra: { pageSize?: number } = {}): Promise<Overlay2Driver> =>
    Overlay2Driver.init(home, options, { bindings: b, probe, ...extra });

  const linkOf = (id: string): string => fs.readFileSync(path.join(home, id, 'link'), 'utf8');

  describe('init', () => {
    it('creates the home (0710) and l/ (0700) and reports Docker status keys in order', async () => {
      probe.metacopy = async () => true;
      probe.nativeDiff = async () => ({ ok: false, reason: 'kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled' });
      const d = await init();
      expect(fs.statSync(home).mode & 0o777).toBe(0o710);
      expect(fs.statSync(path.join(home, 'l')).mode & 0o777).toBe(0o700);
      expect(await d.status()).toEqual([
        ['Backing Filesystem', 'extfs'],
        ['Supports d_type', 'true'],
        ['Using metacopy', 'true'],
        ['Native Overlay Diff', 'false'],
        ['userxattr', 'false'],
      ]);
      expect(d.nativeDiffReason).toContain('REDIRECT_DIR');
    });

    it('without overlay in the kernel: NotSupportedError, nothing else tried or created', async () => {
      probe.hasOverlay = async () => false;
      const e = await errorOf(init());
      expect(e.code).toBe('ERR_DRIVER_NOT_SUPPORTED');
      expect(e.message).toContain('/proc/filesystems');
      expect(b.statfs).not.toHaveBeenCalled();
      expect(fs.existsSync(home)).toBe(false);
    });

    it.each([
      [FsMagic.AUFS, 'aufs'],
      [FsMagic.OVERLAY, 'overlayfs'],
      [FsMagic.ZFS, 'zfs'],
      [FsMagic.ECRYPTFS, 'ecryptfs'],
    ])('refuses backing filesystem magic %s (%s) with IncompatibleFsError and removes the home it made', async (magic, name) => {
      b.statfs.mockResolvedValue({ type: magic, bsize: 0, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, namelen: 0, flags: 0 });
      const e = await errorOf(init());
      expect(e.constructor.name).toBe('IncompatibleFsError');
      expect(e.code).toBe('ERR_DRIVER_NOT_SUPPORTED');
      expect(e.message).toContain(name);
      expect(fs.existsSync(home)).toBe(false);
    });

    it('refuses a filesystem without d_type, with the xfs hint', async () => {
      b.statfs.mockResolvedValue({ type: FsMagic.XFS, bsize: 0, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, namelen: 0, flags: 0 });
      probe.supportsDType = async () => false;
      const e = await errorOf(init());
      expect(e.constructor.name).toBe('IncompatibleFsError');
      expect(e.message).toContain('d_type');
      expect(e.message).toContain('ftype=1');
    });

    it('a failing test mount is NotSupportedError keeping the cause', async () => {
      const cause = nativeError('EINVAL', -22, 'mount');
      probe.nativeDiff = async () => {
        throw new OverlayMountTestError(cause);
      };
      const e = await errorOf(init());
      expect(e.code).toBe('ERR_DRIVER_NOT_SUPPORTED');
      expect((e as { cause?: unknown }).cause).toBe(cause);
    });

    it('options: unknown keys named; overlay2.size refused with the reason; others accepted', async () => {
      const e1 = await errorOf(init(['overlay2.nope=1']));
      expect(e1.code).toBe('ERR_INVALID_OPTION');
      expect(e1.message).toContain('"overlay2.nope"');
      const e2 = await errorOf(init(['overlay2.size=1G']));
      expect(e2.code).toBe('ERR_INVALID_OPTION');
      expect(e2.message).toContain("xfs with 'pquota'");
      expect(e2.message).toContain('extfs');
      b.statfs.mockResolvedValue({ type: FsMagic.XFS, bsize: 0, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, namelen: 0, flags: 0 });
      probe.mountInfo = async () => [{ mountPoint: '/', fstype: 'xfs', source: '/dev/sda', superOptions: ['rw', 'noquota'] }];
      const e3 = await errorOf(init(['overlay2.size=1G']));
      expect(e3.message).toContain('without pquota');
      expect((await errorOf(init(['overlay2.size=lots']))).code).toBe('ERR_INVALID_OPTION');
      expect((await errorOf(init(['overlay2.mountopt=lowerdir=/x']))).message).toContain('lowerdir');
      expect((await errorOf(init(['overlay2.override_kernel_check=maybe']))).code).toBe('ERR_INVALID_OPTION');
      await init(['overlay2.override_kernel_check=1', 'overlay2.mountopt=nodev']);
    });

    it('refuses a home whose path would break the mount options', async () => {
      const e = await errorOf(Overlay2Driver.init(path.join(root, 'a,b'), [], { bindings: b, probe }));
      expect(e.code).toBe('ERR_INVALID_HOME');
    });

    it('removes leftovers of interrupted creates, removes and checks', async () => {
      fs.mkdirSync(path.join(home, '.tmp-x-123', 'diff'), { recursive: true });
      fs.mkdirSync(path.join(home, '.removing-y-456'), { recursive: true });
      fs.mkdirSync(path.join(home, '.check-opaque-abc', 'merged'), { recursive: true });
      fs.mkdirSync(path.join(home, 'keep'), { recursive: true });
      await init();
      expect(fs.readdirSync(home).sort()).toEqual(['keep', 'l']);
    });
  });

  describe('create', () => {
    it('writes link, l/ symlink and lower files; parent marked committed; nothing temporary left', async () => {
      const d = await init();
      await d.create('a');
      await d.create('b', 'a');
      await d.createReadWrite('c', 'b');
      expect(fs.readlinkSync(path.join(home, 'l', linkOf('a')))).toBe('../a/diff');
      expect(fs.readFileSync(path.join(home, 'b', 'lower'), 'utf8')).toBe(`l/${linkOf('a')}`);
      expect(fs.readFileSync(path.join(home, 'c', 'lower'), 'utf8')).toBe(`l/${linkOf('b')}:l/${linkOf('a')}`);
      expect(fs.existsSync(path.join(home, 'a', 'committed'))).toBe(true);
      expect(fs.existsSync(path.join(home, 'b', 'committed'))).toBe(true);
      expect(fs.existsSync(path.join(home, 'c', 'committed'))).toBe(false);
      expect(fs.readdirSync(home).sort()).toEqual(['a', 'b', 'c', 'l']);
      expect(b.renameat2).toHaveBeenCalledWith(expect.stringContaining(`${home}/.tmp-c-`), path.join(home, 'c'), 1);
    });

    it('existing id, missing parent, invalid ids, too deep: typed errors and nothing changed', async () => {
      const d = await init();
      await d.create('a');
      const link = linkOf('a');
      expect((await errorOf(d.create('a'))).code).toBe('ERR_LAYER_EXISTS');
      expect(linkOf('a')).toBe(link);
      expect((await errorOf(d.create('x', 'missing'))).code).toBe('ERR_LAYER_NOT_FOUND');
      for (const bad of ['', '.', '..', 'a/b', '../a', '-x', 'a\0', 'é', 'l', 'backingFsBlockDev']) {
        expect((await errorOf(d.create(bad))).code).toBe('ERR_INVALID_ID');
        // An empty parent means "no parent" (Docker's ""), so only the others are invalid parents.
        if (bad !== '') expect((await errorOf(d.create('ok', bad))).code).toBe('ERR_INVALID_ID');
      }
      expect(fs.readdirSync(home).sort()).toEqual(['a', 'l']);
      expect(fs.readdirSync(path.join(home, 'l'))).toEqual([link]);
      // The link directory is not a layer, whatever is asked.
      expect((await errorOf(d.remove('l'))).code).toBe('ERR_INVALID_ID');
      expect((await errorOf(d.exists('l'))).code).toBe('ERR_INVALID_ID');
      expect((await errorOf(d.get('l'))).code).toBe('ERR_INVALID_ID');

      // A lower file already at 128 entries: one more layer is "max depth exceeded".
      // (link and lower are cached once read: a fresh instance reads the tampered file)
      fs.writeFileSync(path.join(home, 'a', 'lower'), Array.from({ length: 128 }, (_, i) => `l/Z${i}`).join(':'));
      const e = await errorOf((await init()).create('deep', 'a'));
      expect(e.code).toBe('ERR_MAX_DEPTH');
      expect(fs.existsSync(path.join(home, 'deep'))).toBe(false);
      expect(fs.readdirSync(path.join(home, 'l'))).toEqual([link]);
    });

    it('a link id that is taken is replaced by a fresh one, leaving the other symlink alone', async () => {
      const d = await init();
      const taken = 'A'.repeat(26);
      fs.symlinkSync('../other/diff', path.join(home, 'l', taken));
      const spy = jest.spyOn(layout, 'generateLinkId').mockReturnValueOnce(taken).mockReturnValueOnce('B'.repeat(26));
      try {
        await d.create('a');
      } finally {
        spy.mockRestore();
      }
      expect(linkOf('a')).toBe('B'.repeat(26));
      expect(fs.readlinkSync(path.join(home, 'l', taken))).toBe('../other/diff');
      expect(fs.readlinkSync(path.join(home, 'l', 'B'.repeat(26)))).toBe('../a/diff');
    });

    it('a rename that finds the id taken (another process) is LayerExistsError and cleans up', async () => {
      const d = await init();
      b.renameat2.mockRejectedValueOnce(Object.assign(new Error('EEXIST'), { code: 'EEXIST' }));
      expect((await errorOf(d.create('a'))).code).toBe('ERR_LAYER_EXISTS');
      expect(fs.readdirSync(home)).toEqual(['l']);
      expect(fs.readdirSync(path.join(home, 'l'))).toEqual([]);
    });

    it('size storage options: only for read-write layers, and only with project quotas', async () => {
      const d = await init();
      await d.create('a');
      expect((await errorOf(d.create('r', 'a', { storageOpt: { size: '1G' } }))).message).toContain('only supported for ReadWrite layers');
      expect((await errorOf(d.createReadWrite('w', 'a', { storageOpt: { size: '1G' } }))).message).toContain('pquota');
      expect((await errorOf(d.createReadWrite('w', 'a', { storageOpt: { bogus: '1' } }))).message).toContain('"bogus"');
      expect(fs.readdirSync(home).sort()).toEqual(['a', 'l']);
    });
  });

  describe('project quotas (xfs pquota, mocked)', () => {
    beforeEach(() => {
      b.statfs.mockResolvedValue({ type: FsMagic.XFS, bsize: 0, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, namelen: 0, flags: 0 });
      probe.mountInfo = async () => [{ mountPoint: '/', fstype: 'xfs', source: '/dev/sda', superOptions: ['rw', 'prjquota'] }];
      const projects = new Map<string, number>();
      b.getProjectId.mockImplementation(async (p: string) => projects.get(p) ?? 0);
      b.setProjectId.mockImplementation(async (p: string, id: number) => {
        projects.set(p, id);
      });
      b.setProjectQuota.mockResolvedValue(undefined);
      b.mknod.mockResolvedValue(undefined);
    });

    it('sets a project id on the new layer directory and a limit, as Docker (default from overlay2.size)', async () => {
      const d = await init(['overlay2.size=10M']);
      const dev = path.join(home, 'backingFsBlockDev');
      expect(b.mknod).toHaveBeenCalledWith(dev, 0o060600, fs.statSync(home).dev);
      // The probe: a limit of 0 on the first id (the home's project id + 1).
      expect(b.setProjectQuota).toHaveBeenCalledWith(dev, 1, 0);
      await d.create('a');
      expect(b.setProjectId).not.toHaveBeenCalled();
      await d.createReadWrite('c', 'a');
      expect(b.setProjectId).toHaveBeenCalledWith(expect.stringContaining(`${home}/.tmp-c-`), 2);
      expect(b.setProjectQuota).toHaveBeenLastCalledWith(dev, 2, 10 * 1024 * 1024);
      await d.createReadWrite('c2', 'a', { storageOpt: { size: '1G' } });
      expect(b.setProjectQuota).toHaveBeenLastCalledWith(dev, 3, 1024 ** 3);
      expect((await errorOf(d.create('r', 'a', { storageOpt: { size: '1G' } }))).message).toContain('only supported for ReadWrite');
    });

    it('a filesystem that refuses the probe limit: overlay2.size is refused with the reason', async () => {
      b.setProjectQuota.mockRejectedValue(nativeError('ENOSYS', -38, 'quotactl(Q_XSETQLIM)'));
      const e = await errorOf(init(['overlay2.size=10M']));
      expect(e.code).toBe('ERR_INVALID_OPTION');
      expect(e.message).toContain('ENOSYS');
      // Without a size the driver works, and refuses sizes per layer.
      const d = await init();
      await d.create('a');
      expect((await errorOf(d.createReadWrite('c', 'a', { storageOpt: { size: '1G' } }))).message).toContain('project quotas do not work');
    });

    it('an addon without the quota functions: a clear reason', async () => {
      b.getProjectId.mockRejectedValue(Object.assign(new Error('missing'), { code: 'ERR_NATIVE_MISSING' }));
      expect((await errorOf(init(['overlay2.size=10M']))).message).toContain('not available in this build');
    });
  });

  describe('get/put', () => {
    it('mounts with the exact option string, shares the mount, unmounts with MNT_DETACH on the last put', async () => {
      const d = await init();
      await d.create('a');
      await d.createReadWrite('c', 'a');
      const [m1, m2] = await Promise.all([d.get('c'), d.get('c')]);
      expect(m1).toBe(path.join(home, 'c', 'merged'));
      expect(m2).toBe(m1);
      expect(b.mount).toHaveBeenCalledTimes(1);
      expect(b.mount).toHaveBeenCalledWith(
        'overlay',
        m1,
        'overlay',
        0,
        `index=off,lowerdir=${home}/l/${linkOf('a')},upperdir=${home}/c/diff,workdir=${home}/c/work`,
      );
      await d.put('c');
      expect(b.umount).not.toHaveBeenCalled();
      await d.put('c');
      expect(b.umount).toHaveBeenCalledWith(m1, UmountFlags.MNT_DETACH);
      expect(fs.existsSync(m1)).toBe(false);
      expect((await errorOf(d.put('c'))).code).toBe('ERR_NOT_MOUNTED');
    });

    it('without index support, with a label and extra options', async () => {
      probe.indexParam = async () => false;
      const d = await init(['overlay2.mountopt=nodev,xino=off']);
      await d.create('a');
      await d.createReadWrite('c', 'a');
      await d.get('c', { mountLabel: 'system_u:object_r:container_file_t:s0', options: ['noexec'] });
      expect(b.mount.mock.calls[0]![3]).toBe(MountFlags.MS_NODEV | MountFlags.MS_NOEXEC);
      expect(b.mount.mock.calls[0]![4]).toBe(
        `lowerdir=${home}/l/${linkOf('a')},upperdir=${home}/c/diff,workdir=${home}/c/work,xino=off,context="system_u:object_r:container_file_t:s0"`,
      );
      expect((await errorOf(d.get('c', { mountLabel: 'a",b' }))).code).toBe('ERR_INVALID_OPTION');
      expect((await errorOf(d.get('c', { options: ['upperdir=/tmp'] }))).code).toBe('ERR_INVALID_OPTION');
    });

    it('long mount data: relative paths, mounted from the home via mountFrom', async () => {
      const d = await init([], { pageSize: 256 });
      let parent: string | null = null;
      for (const id of ['l0', 'l1', 'l2', 'l3', 'l4']) {
        await d.create(id, parent);
        parent = id;
      }
      await d.createReadWrite('top', 'l4');
      expect(await d.get('top')).toBe(path.join(home, 'top', 'merged'));
      expect(b.mount).not.toHaveBeenCalled();
      const lowers = fs.readFileSync(path.join(home, 'top', 'lower'), 'utf8');
      expect(b.mountFrom).toHaveBeenCalledWith(home, 'overlay', 'top/merged', 'overlay', 0, `index=off,lowerdir=${lowers},upperdir=top/diff,workdir=top/work`);
      await d.put('top');
      expect(b.umount).toHaveBeenCalledWith(path.join(home, 'top', 'merged'), UmountFlags.MNT_DETACH);
    });

    it('a committed layer is mounted read-only: its diff on top of its lowers', async () => {
      const d = await init();
      await d.create('a');
      await d.create('b', 'a');
      await d.create('c', 'b');
      await d.get('b');
      expect(b.mount.mock.calls[0]![4]).toBe(`index=off,lowerdir=${home}/b/diff:${home}/l/${linkOf('a')}`);
    });

    it('a base layer is its diff dir, counted but not mounted', async () => {
      const d = await init();
      await d.create('a');
      expect(await d.get('a')).toBe(path.join(home, 'a', 'diff'));
      expect(b.mount).not.toHaveBeenCalled();
      expect((await errorOf(d.remove('a'))).code).toBe('ERR_LAYER_IN_USE');
      await d.put('a');
      expect((await errorOf(d.put('a'))).code).toBe('ERR_NOT_MOUNTED');
      await d.remove('a');
    });

    it('a refused mount keeps the kernel errno and leaves no count or mount point', async () => {
      const d = await init();
      await d.create('a');
      await d.createReadWrite('c', 'a');
      b.mount.mockRejectedValueOnce(nativeError('EINVAL', -22, 'mount'));
      const e = await errorOf(d.get('c'));
      expect(e.code).toBe('EINVAL');
      expect(e.errno).toBe(-22);
      expect(e.syscall).toBe('mount');
      expect(e.message).toContain('"c"');
      expect(fs.existsSync(path.join(home, 'c', 'merged'))).toBe(false);
      expect((await errorOf(d.put('c'))).code).toBe('ERR_NOT_MOUNTED');
      expect((await errorOf(d.remove('nope'))).code).toBe('ERR_LAYER_NOT_FOUND');
      await d.remove('c');
    });

    it('adopts a mount that exists already (restart) and unmounts it on the matching put', async () => {
      const d0 = await init();
      await d0.create('a');
      await d0.createReadWrite('c', 'a');
      const merged = path.join(home, 'c', 'merged');
      mounted.add(merged);
      const d = await init(); // the restarted process
      expect(await d.get('c')).toBe(merged);
      expect(b.mount).not.toHaveBeenCalled();
      await d.put('c');
      expect(mounted.has(merged)).toBe(true);
      await d.put('c');
      expect(mounted.has(merged)).toBe(false);
    });

    it('a damaged lower file is refused before anything is mounted', async () => {
      const d = await init();
      await d.create('a');
      await d.createReadWrite('c', 'a');
      fs.writeFileSync(path.join(home, 'c', 'lower'), 'l/AAA,upperdir=/etc');
      // A fresh instance (this one has the lower entries cached from create).
      expect((await errorOf((await init()).get('c'))).code).toBe('ERR_LAYER_CORRUPT');
      expect(b.mount).not.toHaveBeenCalled();
    });
  });

  describe('remove, metadata, cleanup', () => {
    it('remove refuses mounted layers (also mounts it did not make) and parents; removes the l/ link', async () => {
      const d = await init();
      await d.create('a');
      await d.createReadWrite('c', 'a');
      await d.get('c');
      expect((await errorOf(d.remove('c'))).code).toBe('ERR_LAYER_IN_USE');
      await d.put('c');
      mounted.add(path.join(home, 'c', 'merged'));
      expect((await errorOf(d.remove('c'))).message).toContain('is mounted');
      mounted.clear();
      expect((await errorOf(d.remove('a'))).message).toContain('parent of 1 layer');
      const link = linkOf('c');
      await d.remove('c');
      expect(fs.existsSync(path.join(home, 'l', link))).toBe(false);
      await d.remove('a');
      expect(fs.readdirSync(home)).toEqual(['l']);
      expect(fs.readdirSync(path.join(home, 'l'))).toEqual([]);
    });

    it('children are found from the lower files of layers made before this instance', async () => {
      const d1 = await init();
      await d1.create('a');
      await d1.create('b', 'a');
      const d2 = await init();
      expect((await errorOf(d2.remove('a'))).code).toBe('ERR_LAYER_IN_USE');
      await d2.remove('b');
      await d2.remove('a');
    });

    it('metadata as Docker: LowerDir only above a base layer', async () => {
      const d = await init();
      await d.create('a');
      await d.createReadWrite('c', 'a');
      expect(await d.getMetadata('a')).toEqual({ MergedDir: `${home}/a/merged`, UpperDir: `${home}/a/diff`, WorkDir: `${home}/a/work` });
      expect(await d.getMetadata('c')).toEqual({
        LowerDir: `${home}/a/diff`,
        MergedDir: `${home}/c/merged`,
        UpperDir: `${home}/c/diff`,
        WorkDir: `${home}/c/work`,
      });
      expect((await errorOf(d.getMetadata('zz'))).code).toBe('ERR_LAYER_NOT_FOUND');
    });

    it('cleanup unmounts every mount below the home, deepest first, and closes the driver', async () => {
      fs.mkdirSync(home, { recursive: true });
      const real = fs.realpathSync(home);
      probe.mountInfo = async () => [
        { mountPoint: '/', fstype: 'ext4', source: '/dev/vda', superOptions: [] },
        { mountPoint: `${real}/c/merged`, fstype: 'overlay', source: 'overlay', superOptions: [] },
        { mountPoint: `${real}/c/merged/proc`, fstype: 'proc', source: 'proc', superOptions: [] },
        { mountPoint: `${real}2/x`, fstype: 'tmpfs', source: 'tmpfs', superOptions: [] },
      ];
      const d = await init();
      mounted.add(`${real}/c/merged`).add(`${real}/c/merged/proc`);
      await d.cleanup();
      expect(b.umount.mock.calls.map((c) => c[0])).toEqual([`${real}/c/merged/proc`, `${real}/c/merged`]);
      expect((await errorOf(d.create('x'))).code).toBe('ERR_DRIVER_CLOSED');
    });
  });
});
