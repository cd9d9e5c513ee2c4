/**
 * AufsDriver with mocked bindings and kernel probes: the exact mount calls for 1, 2, 42, 127 and 200 layers
 * (data strings, page chunking, remount append order, labels, dirperm1), the page boundary at the driver level
 * (a root path whose length puts the page limit inside a branch path), init refusals and set-up (private bind
 * mount, leftovers), auplink and the EBUSY retries of put, and bad input (ids with separators, a layers file
 * naming a missing parent, a missing diff directory): clear errors, nothing removed. Layer directories are real
 * (in a temp dir); nothing is mounted.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { AufsDriver } from '../../lib/drivers/aufs';
import type { AufsProbe } from '../../lib/drivers/aufs/checks';
import { auplinkFlush } from '../../lib/drivers/aufs/unmount';
import { FsMagic, MountFlags, UmountFlags } from '../../lib/native/constants';
import type { NativeBindings } from '../../lib/native/types';
import { mockBindings } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

const OPTS = 'dio,xino=/dev/shm/aufs.xino';

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

/** Every file and directory below `dir` (relative), to show that nothing was removed. */
function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    for (const n of fs.readdirSync(d).sort()) {
      const p = rel === '' ? n : `${rel}/${n}`;
      out.push(p);
      if (fs.lstatSync(path.join(d, n)).isDirectory()) walk(path.join(d, n), p);
    }
  };
  walk(dir, '');
  return out;
}

function statfsOf(magic: number): Awaited<ReturnType<NativeBindings['statfs']>> {
  return { type: magic, bsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, namelen: 255, flags: 0 };
}

describe('AufsDriver (mocked bindings)', () => {
  let root: string;
  let home: string;
  let b: jest.Mocked<NativeBindings>;
  let mounted: Set<string>;
  let probe: Partial<AufsProbe>;
  let sleeps: number[];

  beforeEach(() => {
    root = makeTmp('gd-aufs-unit-');
    home = path.join(root, 'aufs');
    mounted = new Set();
    sleeps = [];
    b = mockBindings({
      statfs: jest.fn(async () => statfsOf(FsMagic.EXT4)),
      isMountpoint: jest.fn(async (p: string) => mounted.has(p)),
      bindMount: jest.fn(async (_s: string, target: string) => {
        mounted.add(target);
      }),
      makeMount: jest.fn(async () => undefined),
      mount: jest.fn(async (_s: string, target: string, _t: string | null, flags: number) => {
        if ((flags & MountFlags.MS_REMOUNT) === 0) mounted.add(target);
      }),
      umount: jest.fn(async (target: string) => {
        if (!mounted.delete(target)) throw nativeError('EINVAL', -22, 'umount2');
      }),
    });
    probe = { hasAufs: async () => true, dirperm1: async () => false, auplink: async () => null };
  });

  afterEach(() => removeTmp(root));

  const init = (options: string[] = [], at = home): Promise<AufsDriver> =>
    AufsDriver.init(at, options, {
      bindings: b,
      probe,
      sleep: async (ms) => {
        sleeps.push(ms);
      },
    });

  /** Calls of mount(2) for fstype aufs, as [flags, data] (source 'none', target checked separately). */
  const aufsMounts = (): Array<[number, string]> =>
    b.mount.mock.calls.filter((c) => c[2] === 'aufs' && c[1].includes(`${path.sep}mnt${path.sep}`)).map((c) => [c[3], c[4]!]);

  describe('init', () => {
    it('creates the home and mnt/, diff/, layers/ (0710), makes the home a private bind mount, reports Docker status keys', async () => {
      probe.dirperm1 = async () => true;
      const d = await init();
      for (const p of [home, path.join(home, 'mnt'), path.join(home, 'diff'), path.join(home, 'layers')]) {
        expect(fs.statSync(p).mode & 0o777).toBe(0o710);
      }
      expect(b.bindMount).toHaveBeenCalledWith(home, home);
      expect(b.makeMount).toHaveBeenCalledWith(home, 'private');
      await d.create('a');
      await d.create('b', 'a');
      expect(await d.status()).toEqual([
        ['Root Dir', home],
        ['Backing Filesystem', 'extfs'],
        ['Dirs', '2'],
        ['Dirperm1 Supported', 'true'],
      ]);
    });

    it('a home that is already a mount point is only made private', async () => {
      fs.mkdirSync(home, { recursive: true });
      mounted.add(home);
      await init();
      expect(b.bindMount).not.toHaveBeenCalled();
      expect(b.makeMount).toHaveBeenCalledWith(home, 'private');
    });

    it('without aufs in the kernel: NotSupportedError, nothing else tried or created', async () => {
      probe.hasAufs = async () => false;
      const e = await errorOf(init());
      expect(e.code).toBe('ERR_DRIVER_NOT_SUPPORTED');
      expect(e.constructor.name).toBe('NotSupportedError');
      expect(e.message).toContain('/proc/filesystems');
      expect(b.statfs).not.toHaveBeenCalled();
      expect(b.bindMount).not.toHaveBeenCalled();
      expect(fs.existsSync(home)).toBe(false);
    });

    it.each([
      [FsMagic.AUFS, 'aufs'],
      [FsMagic.BTRFS, 'btrfs'],
      [FsMagic.ECRYPTFS, 'ecryptfs'],
    ])('refuses backing filesystem magic %s (%s) with IncompatibleFsError, creating nothing', async (magic, name) => {
      b.statfs.mockResolvedValue(statfsOf(magic));
      const e = await errorOf(init());
      expect(e.constructor.name).toBe('IncompatibleFsError');
      expect(e.code).toBe('ERR_DRIVER_NOT_SUPPORTED');
      expect(e.message).toContain(name);
      expect(fs.existsSync(home)).toBe(false);
      // Examined where the home is going to be: its nearest existing ancestor.
      expect(b.statfs).toHaveBeenCalledWith(root);
    });

    it('accepts overlay, xfs, tmpfs backing filesystems (only aufs, btrfs and ecryptfs are refused)', async () => {
      for (const [magic, name] of [[FsMagic.OVERLAY, 'overlayfs'], [FsMagic.XFS, 'xfs'], [FsMagic.TMPFS, 'tmpfs']] as const) {
        b.statfs.mockResolvedValue(statfsOf(magic));
        const d = await init([], path.join(root, name));
        expect((await d.status())[1]).toEqual(['Backing Filesystem', name]);
      }
    });

    it('refuses every storage option (aufs has none), naming it', async () => {
      const e = await errorOf(init(['aufs.size=1G']));
      expect(e.code).toBe('ERR_INVALID_OPTION');
      expect(e.message).toContain('"aufs.size"');
      expect(fs.existsSync(home)).toBe(false);
    });

    it('refuses a home whose path would break the branch options', async () => {
      for (const bad of ['a,b', 'a:b', 'a=b']) {
        const e = await errorOf(init([], path.join(root, bad)));
        expect(e.code).toBe('ERR_INVALID_HOME');
      }
      expect(fs.readdirSync(root)).toEqual([]);
    });

    it('removes leftovers of interrupted removes, creates and checks, and nothing else', async () => {
      for (const d of ['diff/x-removing/etc', 'mnt/x-removing', 'diff/keep/etc', '.check-dirperm1-abc/union']) fs.mkdirSync(path.join(home, d), { recursive: true });
      fs.writeFileSync(path.join(home, 'diff', 'x-removing', 'etc', 'f'), 'old');
      fs.mkdirSync(path.join(home, 'layers'), { recursive: true });
      fs.writeFileSync(path.join(home, 'layers', '.tmp-y-123'), 'p\n');
      fs.writeFileSync(path.join(home, 'layers', 'keep'), '');
      await init();
      expect(listTree(home)).toEqual(['diff', 'diff/keep', 'diff/keep/etc', 'layers', 'layers/keep', 'mnt']);
      // the check's test union may still be mounted after a crash
      expect(b.umount).toHaveBeenCalledWith(path.join(home, '.check-dirperm1-abc', 'union'), UmountFlags.MNT_DETACH);
    });

    it('a failure after the bind mount undoes it and removes the home it made', async () => {
      probe.dirperm1 = async () => {
        throw new Error('probe exploded');
      };
      await expect(init()).rejects.toThrow('probe exploded');
      expect(b.umount).toHaveBeenCalledWith(home, UmountFlags.MNT_DETACH);
      expect(fs.existsSync(home)).toBe(false);
      // In a home that existed (empty), only what init made goes again: no state is left behind.
      fs.mkdirSync(home);
      fs.writeFileSync(path.join(home, 'unrelated'), '');
      await expect(init()).rejects.toThrow('probe exploded');
      expect(fs.readdirSync(home)).toEqual(['unrelated']);
    });
  });

  describe('create and remove', () => {
    it("writes Docker's layout: diff/ and mnt/ dirs 0755, layers files parent first then ancestors", async () => {
      const d = await init();
      await d.create('a');
      await d.create('b', 'a');
      await d.createReadWrite('c', 'b');
      expect(fs.readFileSync(path.join(home, 'layers', 'a'), 'utf8')).toBe('');
      expect(fs.readFileSync(path.join(home, 'layers', 'b'), 'utf8')).toBe('a\n');
      expect(fs.readFileSync(path.join(home, 'layers', 'c'), 'utf8')).toBe('b\na\n');
      for (const id of ['a', 'b', 'c']) {
        expect(fs.statSync(path.join(home, 'diff', id)).mode & 0o7777).toBe(0o755);
        expect(fs.statSync(path.join(home, 'mnt', id)).mode & 0o7777).toBe(0o755);
      }
      expect(await d.ancestors('c')).toEqual(['b', 'a']);
      expect(listTree(path.join(home, 'layers'))).toEqual(['a', 'b', 'c']);
      expect(await d.getMetadata('c')).toBeNull();
    });

    it('existing id, missing parent, ids with separators, storage options: typed errors and nothing changed', async () => {
      const d = await init();
      await d.create('a');
      fs.writeFileSync(path.join(home, 'diff', 'a', 'keep'), 'me');
      const before = listTree(home);
      expect((await errorOf(d.create('a'))).code).toBe('ERR_LAYER_EXISTS');
      expect((await errorOf(d.create('x', 'missing'))).code).toBe('ERR_LAYER_NOT_FOUND');
      for (const bad of ['a/b', '../a', '..', '/etc', 'a\\b', 'x-removing', 'a\0b', '']) {
        expect((await errorOf(d.create(bad))).code).toBe('ERR_INVALID_ID');
        expect((await errorOf(d.get(bad))).code).toBe('ERR_INVALID_ID');
        expect((await errorOf(d.remove(bad))).code).toBe('ERR_INVALID_ID');
        if (bad !== '') expect((await errorOf(d.create('ok', bad))).code).toBe('ERR_INVALID_ID');
      }
      const e = await errorOf(d.create('sized', 'a', { storageOpt: { size: '1G' } }));
      expect(e.code).toBe('ERR_INVALID_OPTION');
      expect(e.message).toContain('"size"');
      expect(listTree(home)).toEqual(before);
    });

    it('a diff directory with content but no layers file is not taken over; an empty one is', async () => {
      const d = await init();
      fs.mkdirSync(path.join(home, 'diff', 'orphan'));
      fs.writeFileSync(path.join(home, 'diff', 'orphan', 'data'), 'precious');
      const e = await errorOf(d.create('orphan'));
      expect(e.code).toBe('ERR_LAYER_CORRUPT');
      expect(fs.readFileSync(path.join(home, 'diff', 'orphan', 'data'), 'utf8')).toBe('precious');
      expect(fs.existsSync(path.join(home, 'layers', 'orphan'))).toBe(false);
      expect(await d.exists('orphan')).toBe(false);
      // An empty one (a create interrupted before its layers file) is reused.
      fs.mkdirSync(path.join(home, 'diff', 'half'));
      fs.mkdirSync(path.join(home, 'mnt', 'half'));
      await d.create('half');
      expect(await d.exists('half')).toBe(true);
    });

    it('remove: refused while got or with children; otherwise renamed aside and deleted with its layers file', async () => {
      const d = await init();
      await d.create('a');
      await d.create('b', 'a');
      expect((await errorOf(d.remove('a'))).code).toBe('ERR_LAYER_IN_USE');
      await d.get('b');
      const e = await errorOf(d.remove('b'));
      expect(e.code).toBe('ERR_LAYER_IN_USE');
      expect(e.message).toContain('mounted');
      await d.put('b');
      const renames = jest.spyOn(fs.promises, 'rename');
      try {
        await d.remove('b');
        expect(renames.mock.calls).toEqual([
          [path.join(home, 'diff', 'b'), path.join(home, 'diff', 'b-removing')],
          [path.join(home, 'mnt', 'b'), path.join(home, 'mnt', 'b-removing')],
        ]);
      } finally {
        renames.mockRestore();
      }
      expect(listTree(home)).toEqual(['diff', 'diff/a', 'layers', 'layers/a', 'mnt', 'mnt/a']);
      await d.remove('a');
      expect(listTree(home)).toEqual(['diff', 'layers', 'mnt']);
      expect((await errorOf(d.remove('a'))).code).toBe('ERR_LAYER_NOT_FOUND');
    });

    it('remove unmounts a union left mounted by an earlier process first', async () => {
      const d = await init();
      await d.create('a');
      await d.create('b', 'a');
      mounted.add(path.join(home, 'mnt', 'b'));
      await d.remove('b');
      expect(b.umount).toHaveBeenCalledWith(path.join(home, 'mnt', 'b'), 0);
      expect(await d.exists('b')).toBe(false);
    });

    it('children are known after a restart (read from the layers files)', async () => {
      const d = await init();
      await d.create('a');
      await d.create('b', 'a');
      const d2 = await init();
      expect((await errorOf(d2.remove('a'))).code).toBe('ERR_LAYER_IN_USE');
    });
  });

  describe('get: the exact mount calls', () => {
    /** A home of exactly 64 characters, so that every branch path below is 74 (4-character ids). */
    let home64: string;
    beforeEach(() => {
      home64 = path.join(root, 'h'.repeat(64 - root.length - 1));
      expect(home64).toHaveLength(64);
    });

    /** A chain of `n` layers l000 (base) .. l<n-1>, each on the previous one; resolves to the top id. */
    async function chain(d: AufsDriver, n: number): Promise<string> {
      let parent: string | null = null;
      let id = '';
      for (let i = 0; i < n; i++) {
        id = `l${String(i).padStart(3, '0')}`;
        await d.create(id, parent);
        parent = id;
      }
      return id;
    }

    const diff = (i: number): string => path.join(home64, 'diff', `l${String(i).padStart(3, '0')}`);
    /** Ancestors of layer `top`, nearest first. */
    const below = (top: number): number[] => Array.from({ length: top }, (_, k) => top - 1 - k);
    const seg = (i: number): string => `:${diff(i)}=ro+wh`;
    const app = (is: number[]): string => is.map((i) => `append:${diff(i)}=ro+wh`).join(',');

    it('1 layer: a base layer is its diff directory, nothing is mounted', async () => {
      const d = await init([], home64);
      await chain(d, 1);
      expect(await d.get('l000')).toBe(diff(0));
      expect(aufsMounts()).toEqual([]);
      await d.put('l000');
      expect(b.umount).not.toHaveBeenCalledWith(expect.stringContaining('/mnt/'), expect.anything());
    });

    it('2 layers: one mount(2) of the union on mnt/<id>, source none, type aufs', async () => {
      const d = await init([], home64);
      await chain(d, 2);
      expect(await d.get('l001')).toBe(path.join(home64, 'mnt', 'l001'));
      expect(b.mount.mock.calls.filter((c) => c[2] === 'aufs')).toEqual([['none', path.join(home64, 'mnt', 'l001'), 'aufs', 0, `br:${diff(1)}=rw${seg(0)},${OPTS}`]]);
    });

    it('42 layers: all 41 ancestors in the first call, nearest first', async () => {
      const d = await init([], home64);
      await chain(d, 42);
      await d.get('l041');
      expect(aufsMounts()).toEqual([[0, `br:${diff(41)}=rw${below(41).map(seg).join('')},${OPTS}`]]);
    });

    it('127 layers: 49 ancestors fit the first page (4077 bytes), then appends of 46 and 31 by MS_REMOUNT', async () => {
      const d = await init([], home64);
      await chain(d, 127);
      await d.get('l126');
      const anc = below(126);
      expect(aufsMounts()).toEqual([
        [0, `br:${diff(126)}=rw${anc.slice(0, 49).map(seg).join('')},${OPTS}`],
        [MountFlags.MS_REMOUNT, app(anc.slice(49, 95))],
        [MountFlags.MS_REMOUNT, app(anc.slice(95))],
      ]);
      expect(aufsMounts().map(([, data]) => Buffer.byteLength(data))).toEqual([4077, 4047, 31 * 88 - 1]);
      // nearest first: the append order continues where the first call stopped, down to the base layer
      expect(anc[49]).toBe(76);
      expect(anc[125]).toBe(0);
    });

    it('200 layers: five calls, every branch exactly once, in order', async () => {
      const d = await init([], home64);
      await chain(d, 200);
      await d.get('l199');
      const anc = below(199);
      expect(aufsMounts()).toEqual([
        [0, `br:${diff(199)}=rw${anc.slice(0, 49).map(seg).join('')},${OPTS}`],
        [MountFlags.MS_REMOUNT, app(anc.slice(49, 95))],
        [MountFlags.MS_REMOUNT, app(anc.slice(95, 141))],
        [MountFlags.MS_REMOUNT, app(anc.slice(141, 187))],
        [MountFlags.MS_REMOUNT, app(anc.slice(187))],
      ]);
      const all = aufsMounts()
        .map(([, data]) => data)
        .join(',')
        .match(/l\d{3}=ro\+wh/g);
      expect(all).toEqual(anc.map((i) => `l${String(i).padStart(3, '0')}=ro+wh`));
    });

    it('dirperm1 and the mount label are in every call and counted against the page', async () => {
      probe.dirperm1 = async () => true;
      const d = await init([], home64);
      await chain(d, 127);
      const label = 'system_u:object_r:container_file_t:s0:c1,c2';
      await d.get('l126', { mountLabel: label });
      const anc = below(126);
      const ctx = `,context="${label}"`;
      // first: 80 + 37 + 54 + 48 * 81 = 4059; appends of 45 (54 + 45 * 88 - 1 = 4013), then the other 33
      expect(aufsMounts()).toEqual([
        [0, `br:${diff(126)}=rw${anc.slice(0, 48).map(seg).join('')},${OPTS},dirperm1${ctx}`],
        [MountFlags.MS_REMOUNT, `${app(anc.slice(48, 93))}${ctx}`],
        [MountFlags.MS_REMOUNT, `${app(anc.slice(93))}${ctx}`],
      ]);
      expect(aufsMounts().map(([, data]) => Buffer.byteLength(data))).toEqual([4059, 4013, 54 + 33 * 88 - 1]);
    });

    /** A chain of 60 layers under a home of exactly `len` characters; resolves to the aufs mount calls of the top. */
    async function callsWithHome(len: number): Promise<{ calls: Array<[number, string]>; dd: (i: number) => string }> {
      const h = path.join(root, 'h'.repeat(len - root.length - 1));
      expect(h).toHaveLength(len);
      const d = await init([], h);
      let parent: string | null = null;
      for (let i = 0; i < 60; i++) {
        const id = `l${String(i).padStart(3, '0')}`;
        await d.create(id, parent);
        parent = id;
      }
      b.mount.mockClear();
      await d.get('l059');
      return { calls: aufsMounts(), dd: (i: number) => path.join(h, 'diff', `l${String(i).padStart(3, '0')}`) };
    }

    it('page boundary inside a branch path: the branch the page limit would cut goes whole to the remount', async () => {
      // Home of 64 characters: br:<74>=rw is 80 bytes, each ancestor 81. With a 50th ancestor in the first
      // call its data would be 80 + 50 * 81 + 28 = 4158 bytes, and byte 4095 (the last one the kernel keeps)
      // would fall inside that ancestor's path (bytes 4050-4123).
      const { calls, dd } = await callsWithHome(64);
      const anc = below(59);
      const withOneMore = `br:${dd(59)}=rw${anc.slice(0, 50).map((i) => `:${dd(i)}=ro+wh`).join('')},${OPTS}`;
      const kept = withOneMore.slice(0, 4095);
      const cutPath = kept.slice(kept.lastIndexOf(':') + 1);
      expect(cutPath.length).toBeGreaterThan(0);
      expect(cutPath.length).toBeLessThan(dd(anc[49]!).length);
      expect(dd(anc[49]!).startsWith(cutPath)).toBe(true);
      expect(calls).toEqual([
        [0, `br:${dd(59)}=rw${anc.slice(0, 49).map((i) => `:${dd(i)}=ro+wh`).join('')},${OPTS}`],
        [MountFlags.MS_REMOUNT, anc.slice(49).map((i) => `append:${dd(i)}=ro+wh`).join(',')],
      ]);
    });

    it('page boundary in the options: branches that fit only without the options after them go to the remount', async () => {
      // Home of 70 characters: br:<80>=rw is 86 bytes, each ancestor 87. 46 ancestors end at byte 4088, under
      // the page, but the 28 bytes of options after them would not fit (4116): only 45 go in the first call.
      const { calls, dd } = await callsWithHome(70);
      const anc = below(59);
      expect(Buffer.byteLength(`br:${dd(59)}=rw${anc.slice(0, 46).map((i) => `:${dd(i)}=ro+wh`).join('')}`)).toBe(4088);
      expect(calls).toEqual([
        [0, `br:${dd(59)}=rw${anc.slice(0, 45).map((i) => `:${dd(i)}=ro+wh`).join('')},${OPTS}`],
        [MountFlags.MS_REMOUNT, anc.slice(45).map((i) => `append:${dd(i)}=ro+wh`).join(',')],
      ]);
      expect(Buffer.byteLength(calls[0]![1])).toBe(4029);
    });

    it('concurrent gets share one mount; the last put unmounts (flags 0)', async () => {
      const d = await init([], home64);
      await chain(d, 3);
      const mnt = path.join(home64, 'mnt', 'l002');
      expect(await Promise.all([d.get('l002'), d.get('l002'), d.get('l002')])).toEqual([mnt, mnt, mnt]);
      expect(aufsMounts()).toHaveLength(1);
      await d.put('l002');
      await d.put('l002');
      expect(b.umount).not.toHaveBeenCalledWith(mnt, expect.anything());
      await d.put('l002');
      expect(b.umount).toHaveBeenCalledWith(mnt, 0);
      expect((await errorOf(d.put('l002'))).code).toBe('ERR_NOT_MOUNTED');
    });

    it('a mount left by an earlier process is adopted, not mounted twice', async () => {
      const d = await init([], home64);
      await chain(d, 2);
      mounted.add(path.join(home64, 'mnt', 'l001'));
      await d.get('l001');
      expect(aufsMounts()).toEqual([]);
      await d.put('l001');
      await d.put('l001');
      expect(mounted.has(path.join(home64, 'mnt', 'l001'))).toBe(false);
    });

    it('a failing append unmounts the partial union and keeps the kernel error, with the layer named', async () => {
      const d = await init([], home64);
      await chain(d, 100);
      const mnt = path.join(home64, 'mnt', 'l099');
      b.mount.mockImplementation(async (_s: string, target: string, _t: string | null, flags: number) => {
        if (flags & MountFlags.MS_REMOUNT) throw nativeError('ENOMEM', -12, 'mount');
        mounted.add(target);
      });
      const e = await errorOf(d.get('l099'));
      expect(e.code).toBe('ENOMEM');
      expect(e.errno).toBe(-12);
      expect(e.message).toContain('"l099"');
      expect(e.message).toContain('remount 1 of 2');
      expect(b.umount).toHaveBeenCalledWith(mnt, UmountFlags.MNT_DETACH);
      expect(mounted.has(mnt)).toBe(false);
      // the failed get left no count behind
      expect((await errorOf(d.put('l099'))).code).toBe('ERR_NOT_MOUNTED');
      await d.remove('l099');
    });

    it('refuses a label with a quote and any mount options', async () => {
      const d = await init([], home64);
      await chain(d, 2);
      expect((await errorOf(d.get('l001', { mountLabel: 'a"b' }))).code).toBe('ERR_INVALID_OPTION');
      expect((await errorOf(d.get('l001', { options: ['ro'] }))).code).toBe('ERR_INVALID_OPTION');
      expect(aufsMounts()).toEqual([]);
    });
  });

  describe('bad input on disk: clear errors, nothing removed', () => {
    it('a layers file naming a missing parent: get and create on it fail naming it; nothing mounted or removed', async () => {
      const d = await init();
      await d.create('a');
      await d.create('b', 'a');
      fs.writeFileSync(path.join(home, 'layers', 'b'), 'gone\na\n');
      const before = listTree(home);
      const d2 = await init();
      const e = await errorOf(d2.get('b'));
      expect(e.code).toBe('ERR_LAYER_CORRUPT');
      expect(e.message).toContain('"gone"');
      const e2 = await errorOf(d2.create('c', 'b'));
      expect(e2.code).toBe('ERR_LAYER_CORRUPT');
      expect(e2.message).toContain('"gone"');
      expect(aufsMounts()).toEqual([]);
      expect(listTree(home)).toEqual(before);
      expect((await errorOf(d2.put('b'))).code).toBe('ERR_NOT_MOUNTED');
    });

    it('a layers file with a path in it is refused before any mount', async () => {
      const d = await init();
      await d.create('a');
      await d.create('b', 'a');
      fs.writeFileSync(path.join(home, 'layers', 'b'), '../../../etc\n');
      const before = listTree(home);
      const d2 = await init();
      expect((await errorOf(d2.get('b'))).code).toBe('ERR_LAYER_CORRUPT');
      expect(aufsMounts()).toEqual([]);
      expect(listTree(home)).toEqual(before);
      // the damaged layer can still be removed
      await d2.remove('b');
      expect(await d2.exists('b')).toBe(false);
    });

    it('a missing diff directory: get fails clearly (base and union alike), nothing removed', async () => {
      const d = await init();
      await d.create('a');
      await d.create('b', 'a');
      fs.rmdirSync(path.join(home, 'diff', 'a'));
      const before = listTree(home);
      for (const id of ['a', 'b']) {
        const e = await errorOf(d.get(id));
        expect(e.code).toBe('ERR_LAYER_CORRUPT');
        expect(e.message).toMatch(id === 'a' ? /diff directory .* is missing/ : /ancestor "a"/);
      }
      expect(await d.exists('a')).toBe(true);
      expect(aufsMounts()).toEqual([]);
      expect(listTree(home)).toEqual(before);
      expect((await errorOf(d.changes('b', 'a'))).code).toBe('ERR_LAYER_CORRUPT');
      expect(listTree(home)).toEqual(before);
    });

    it('a missing layers file is LayerNotFound even when a diff directory exists', async () => {
      const d = await init();
      fs.mkdirSync(path.join(home, 'diff', 'stray'));
      expect((await errorOf(d.get('stray'))).code).toBe('ERR_LAYER_NOT_FOUND');
      expect((await errorOf(d.remove('stray'))).code).toBe('ERR_LAYER_NOT_FOUND');
      expect(fs.existsSync(path.join(home, 'diff', 'stray'))).toBe(true);
    });
  });

  describe('put: auplink and busy unmounts', () => {
    it('runs `auplink <mnt> flush` before the unmount when auplink is installed', async () => {
      const log = path.join(root, 'auplink.log');
      const tool = path.join(root, 'auplink');
      fs.writeFileSync(tool, `#!/bin/sh\necho "$@" >> '${log}'\n`, { mode: 0o755 });
      probe.auplink = async () => tool;
      const d = await init();
      await d.create('a');
      await d.create('b', 'a');
      const mnt = path.join(home, 'mnt', 'b');
      let flushedBeforeUmount = false;
      b.umount.mockImplementation(async (target: string) => {
        if (target === mnt) flushedBeforeUmount = fs.existsSync(log) && fs.readFileSync(log, 'utf8') === `${mnt} flush\n`;
        mounted.delete(target);
      });
      await d.get('b');
      await d.put('b');
      expect(flushedBeforeUmount).toBe(true);
      expect(d.features.auplink).toBe(tool);
    });

    it('auplink is retried while it exits with EINVAL (mount table changing), other failures are ignored', async () => {
      const count = path.join(root, 'count');
      const tool = path.join(root, 'auplink');
      fs.writeFileSync(tool, `#!/bin/sh\necho x >> '${count}'\n[ "$(wc -l < '${count}')" -lt 3 ] && exit 22\nexit 0\n`, { mode: 0o755 });
      expect(await auplinkFlush(tool, '/nowhere')).toBe(0);
      expect(fs.readFileSync(count, 'utf8').split('\n').filter(Boolean)).toHaveLength(3);
      const failing = path.join(root, 'failing');
      fs.writeFileSync(failing, '#!/bin/sh\nexit 1\n', { mode: 0o755 });
      expect(await auplinkFlush(failing, '/nowhere')).toBe(1);
      expect(await auplinkFlush(path.join(root, 'missing-tool'), '/nowhere')).toBe(-1);
    });

    it('EBUSY is retried 5 times 100 ms apart; success on a retry is success', async () => {
      const d = await init();
      await d.create('a');
      await d.create('b', 'a');
      const mnt = path.join(home, 'mnt', 'b');
      await d.get('b');
      let busy = 2;
      b.umount.mockImplementation(async (target: string) => {
        if (target === mnt && busy-- > 0) throw nativeError('EBUSY', -16, 'umount2');
        mounted.delete(target);
      });
      await d.put('b');
      expect(b.umount.mock.calls.filter((c) => c[0] === mnt)).toEqual([[mnt, 0], [mnt, 0], [mnt, 0]]);
      expect(sleeps).toEqual([100, 100]);
      expect(mounted.has(mnt)).toBe(false);
    });

    it('still busy after 5 attempts: put rejects with EBUSY, the union stays mounted and counted', async () => {
      const d = await init();
      await d.create('a');
      await d.create('b', 'a');
      const mnt = path.join(home, 'mnt', 'b');
      await d.get('b');
      b.umount.mockImplementation(async (target: string) => {
        if (target === mnt) throw nativeError('EBUSY', -16, 'umount2');
        mounted.delete(target);
      });
      const e = await errorOf(d.put('b'));
      expect(e.code).toBe('EBUSY');
      expect(b.umount.mock.calls.filter((c) => c[0] === mnt)).toHaveLength(5);
      expect(sleeps).toEqual([100, 100, 100, 100]);
      expect(mounted.has(mnt)).toBe(true);
      // the reference is kept: remove refuses, and a later put tries again
      expect((await errorOf(d.remove('b'))).code).toBe('ERR_LAYER_IN_USE');
      await expect(d.put('b')).rejects.toMatchObject({ code: 'EBUSY' });
      expect(b.umount.mock.calls.filter((c) => c[0] === mnt)).toHaveLength(10);
      // cleanup detaches what stays busy, then the home
      b.umount.mockImplementation(async (target: string, flags: number) => {
        if (target === mnt && flags !== UmountFlags.MNT_DETACH) throw nativeError('EBUSY', -16, 'umount2');
        mounted.delete(target);
      });
      await d.cleanup();
      expect(b.umount).toHaveBeenCalledWith(mnt, UmountFlags.MNT_DETACH);
      expect(b.umount).toHaveBeenLastCalledWith(home, UmountFlags.MNT_DETACH);
      expect(mounted.size).toBe(0);
      expect((await errorOf(d.get('b'))).code).toBe('ERR_DRIVER_CLOSED');
    });
  });
});
