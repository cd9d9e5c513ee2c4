/**
 * Mount primitives against the real kernel: mount/umount, bind mounts, propagation, mountpoint detection,
 * statfs and the shape of the errors.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import { FsMagic, MountFlags, UmountFlags } from '../../lib/native/constants';
import type { NativeBindings, NativeError } from '../../lib/native/types';
import { describeIf, isRoot, kernelHasFs } from '../support/native';

const ST_RDONLY = 0x1;

/** Optional fields (propagation tags) of the last mountinfo line for `mountPoint`, or null when not mounted. */
function propagationTags(mountPoint: string): string[] | null {
  let tags: string[] | null = null;
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 7 || fields[4] !== mountPoint) continue;
    const sep = fields.indexOf('-', 6);
    tags = fields.slice(6, sep);
  }
  return tags;
}

async function expectNativeError(p: Promise<unknown>, expected: Partial<NativeError>): Promise<void> {
  await expect(p).rejects.toMatchObject(expected);
}

describeIf(isRoot ? null : 'needs root', 'native mount primitives', () => {
  let b: NativeBindings;
  let base: string;
  // Every mount a test makes, so that afterAll can take them down (innermost first) even after a failure.
  const mounted: string[] = [];

  async function mountTmpfs(dir: string, data = 'size=4m'): Promise<void> {
    fs.mkdirSync(dir, { recursive: true });
    await b.mount('tmpfs', dir, 'tmpfs', 0, data);
    mounted.push(dir);
  }

  async function cleanup(dir: string): Promise<void> {
    // Detach every stacked mount at `dir`; EINVAL means nothing (more) is mounted there.
    for (;;) {
      try {
        await b.umount(dir, UmountFlags.MNT_DETACH);
      } catch {
        return;
      }
    }
  }

  beforeAll(() => {
    b = loadBindings();
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-native-mount-'));
  });

  afterAll(async () => {
    for (const dir of [...mounted].reverse()) await cleanup(dir);
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('mounts a tmpfs with options, reports it in statfs and isMountpoint, and unmounts it', async () => {
    const t = path.join(base, 'tmpfs');
    await mountTmpfs(t, 'size=4m,mode=0750');
    const st = await b.statfs(t);
    expect(st.type).toBe(FsMagic.TMPFS);
    expect(st.bsize * st.blocks).toBe(4 * 1024 * 1024);
    expect(st.bfree).toBeLessThanOrEqual(st.blocks);
    expect(st.namelen).toBe(255);
    expect(fs.statSync(t).mode & 0o777).toBe(0o750);
    expect(await b.isMountpoint(t)).toBe(true);

    fs.writeFileSync(path.join(t, 'f'), 'x');
    expect(await b.isMountpoint(path.join(t, 'f'))).toBe(false);

    await b.umount(t, 0);
    expect(await b.isMountpoint(t)).toBe(false);
    expect((await b.statfs(t)).type).not.toBe(FsMagic.TMPFS);
    expect(fs.existsSync(path.join(t, 'f'))).toBe(false);
  });

  it('says false for a plain directory and true for /', async () => {
    const d = path.join(base, 'plain');
    fs.mkdirSync(d);
    expect(await b.isMountpoint(d)).toBe(false);
    expect(await b.isMountpoint('/')).toBe(true);
  });

  it('applies mount flags (MS_RDONLY, then MS_REMOUNT back to read-write)', async () => {
    const t = path.join(base, 'flags');
    fs.mkdirSync(t);
    await b.mount('tmpfs', t, 'tmpfs', MountFlags.MS_RDONLY | MountFlags.MS_NOEXEC, 'size=1m');
    mounted.push(t);
    expect((await b.statfs(t)).flags & ST_RDONLY).toBe(ST_RDONLY);
    expect(() => fs.writeFileSync(path.join(t, 'f'), 'x')).toThrow(expect.objectContaining({ code: 'EROFS' }));
    await b.mount('tmpfs', t, null, MountFlags.MS_REMOUNT, null);
    expect((await b.statfs(t)).flags & ST_RDONLY).toBe(0);
    fs.writeFileSync(path.join(t, 'f'), 'x');
    await b.umount(t, 0);
  });

  it('bind-mounts a directory, and read-only bind mounts refuse writes with EROFS', async () => {
    const src = path.join(base, 'bind-src');
    const rw = path.join(base, 'bind-rw');
    const ro = path.join(base, 'bind-ro');
    for (const d of [src, rw, ro]) fs.mkdirSync(d);
    fs.writeFileSync(path.join(src, 'hello'), 'world');

    await b.bindMount(src, rw);
    mounted.push(rw);
    expect(await b.isMountpoint(rw)).toBe(true);
    expect(fs.readFileSync(path.join(rw, 'hello'), 'utf8')).toBe('world');
    fs.writeFileSync(path.join(rw, 'via-bind'), '1');
    expect(fs.readFileSync(path.join(src, 'via-bind'), 'utf8')).toBe('1');

    await b.bindMount(src, ro, { readOnly: true });
    mounted.push(ro);
    expect((await b.statfs(ro)).flags & ST_RDONLY).toBe(ST_RDONLY);
    expect(fs.readFileSync(path.join(ro, 'hello'), 'utf8')).toBe('world');
    expect(() => fs.writeFileSync(path.join(ro, 'nope'), 'x')).toThrow(expect.objectContaining({ code: 'EROFS' }));
    // The source stays writable: the read-only flag belongs to the bind mount only.
    fs.writeFileSync(path.join(src, 'still-writable'), 'y');

    await b.umount(ro, 0);
    await b.umount(rw, 0);
    expect(await b.isMountpoint(rw)).toBe(false);
  });

  it('carries submounts only with a recursive bind', async () => {
    const src = path.join(base, 'rbind-src');
    const sub = path.join(src, 'sub');
    await mountTmpfs(sub, 'size=1m');
    fs.writeFileSync(path.join(sub, 'inner'), 'in tmpfs');
    const flat = path.join(base, 'rbind-flat');
    const rec = path.join(base, 'rbind-rec');
    fs.mkdirSync(flat);
    fs.mkdirSync(rec);

    await b.bindMount(src, flat);
    mounted.push(flat);
    await b.bindMount(src, rec, { recursive: true });
    mounted.push(rec);

    expect((await b.statfs(path.join(rec, 'sub'))).type).toBe(FsMagic.TMPFS);
    expect(fs.readFileSync(path.join(rec, 'sub', 'inner'), 'utf8')).toBe('in tmpfs');
    expect((await b.statfs(path.join(flat, 'sub'))).type).not.toBe(FsMagic.TMPFS);
    expect(fs.existsSync(path.join(flat, 'sub', 'inner'))).toBe(false);

    await cleanup(rec);
    await b.umount(flat, 0);
    await b.umount(sub, 0);
  });

  it('changes mount propagation (private, shared, slave, unbindable)', async () => {
    const t = path.join(base, 'prop');
    await mountTmpfs(t, 'size=1m');

    await b.makeMount(t, 'private');
    expect(propagationTags(t)).toEqual([]);

    await b.makeMount(t, 'shared');
    const peerGroup = propagationTags(t)?.find((tag) => /^shared:\d+$/.test(tag));
    expect(peerGroup).toBeDefined();

    // A bind of a shared mount joins its peer group; turning it into a slave records that group as master.
    const peer = path.join(base, 'prop-peer');
    fs.mkdirSync(peer);
    await b.bindMount(t, peer);
    mounted.push(peer);
    expect(propagationTags(peer)).toEqual([peerGroup]);
    await b.makeMount(peer, 'slave');
    expect(propagationTags(peer)).toEqual([`master:${peerGroup?.slice('shared:'.length)}`]);

    // Mounts propagate from master to slave but not back.
    fs.mkdirSync(path.join(t, 'down'));
    fs.mkdirSync(path.join(t, 'up'));
    await mountTmpfs(path.join(t, 'down'), 'size=1m');
    expect(await b.isMountpoint(path.join(peer, 'down'))).toBe(true);
    await mountTmpfs(path.join(peer, 'up'), 'size=1m');
    expect(await b.isMountpoint(path.join(t, 'up'))).toBe(false);
    await cleanup(path.join(peer, 'up'));
    await cleanup(path.join(t, 'down'));
    await cleanup(peer);

    await b.makeMount(t, 'unbindable', true);
    expect(propagationTags(t)).toEqual(['unbindable']);
    const target = path.join(base, 'prop-bind');
    fs.mkdirSync(target);
    await expectNativeError(b.bindMount(t, target), { code: 'EINVAL', syscall: 'mount', path: t, dest: target });

    await b.makeMount(t, 'private', true);
    expect(propagationTags(t)).toEqual([]);
    await b.umount(t, 0);
  });

  it('rejects a propagation change on a directory that is not a mount with EINVAL', async () => {
    const d = path.join(base, 'not-a-mount');
    fs.mkdirSync(d);
    await expectNativeError(b.makeMount(d, 'private'), { code: 'EINVAL', syscall: 'mount', path: d });
  });

  describeIf(kernelHasFs('overlay') ? null : 'kernel has no overlay filesystem', 'overlay', () => {
    it('mounts an overlay: lower files read through, writes go to the upper dir', async () => {
      // Inside a tmpfs so the upper/work dirs are on a filesystem overlay accepts as upper everywhere.
      const root = path.join(base, 'ovl');
      await mountTmpfs(root, 'size=8m');
      const [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((n) => path.join(root, n));
      for (const d of [lower, upper, work, merged]) fs.mkdirSync(d);
      fs.writeFileSync(path.join(lower, 'from-lower'), 'lower content');

      await b.mount('overlay', merged, 'overlay', 0, `lowerdir=${lower},upperdir=${upper},workdir=${work}`);
      mounted.push(merged);
      expect((await b.statfs(merged)).type).toBe(FsMagic.OVERLAY);
      expect(await b.isMountpoint(merged)).toBe(true);
      expect(fs.readFileSync(path.join(merged, 'from-lower'), 'utf8')).toBe('lower content');

      fs.writeFileSync(path.join(merged, 'new'), 'upper content');
      expect(fs.readFileSync(path.join(upper, 'new'), 'utf8')).toBe('upper content');
      expect(fs.existsSync(path.join(lower, 'new'))).toBe(false);

      // Modifying a lower file copies it up; the lower layer is never touched.
      fs.appendFileSync(path.join(merged, 'from-lower'), '+changed');
      expect(fs.readFileSync(path.join(upper, 'from-lower'), 'utf8')).toBe('lower content+changed');
      expect(fs.readFileSync(path.join(lower, 'from-lower'), 'utf8')).toBe('lower content');

      await b.umount(merged, 0);
      await b.umount(root, 0);
    });
  });

  it('rejects mounting onto a missing directory with a Node-style ENOENT error', async () => {
    const missing = path.join(base, 'does', 'not', 'exist');
    const err = (await b.mount('tmpfs', missing, 'tmpfs', 0, null).then(
      () => null,
      (e: unknown) => e,
    )) as NativeError | null;
    // The addon creates errors in Node's main realm, not jest's sandbox, so check the brand rather than instanceof.
    expect(Object.prototype.toString.call(err)).toBe('[object Error]');
    expect(err).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'mount', path: 'tmpfs', dest: missing });
    expect(err?.message).toContain('ENOENT');
    expect(err?.message).toContain(missing);
  });

  it('rejects an unknown filesystem type with ENODEV', async () => {
    const t = path.join(base, 'nodev');
    fs.mkdirSync(t);
    await expectNativeError(b.mount('none', t, 'no-such-fs-type', 0, null), { code: 'ENODEV', syscall: 'mount', dest: t });
  });

  it('rejects unmounting something that is not a mount with EINVAL', async () => {
    const d = path.join(base, 'plain-umount');
    fs.mkdirSync(d);
    await expectNativeError(b.umount(d, 0), { code: 'EINVAL', errno: -22, syscall: 'umount2', path: d });
  });

  it('fails with EBUSY on a busy mount and detaches it lazily with MNT_DETACH', async () => {
    const t = path.join(base, 'busy');
    await mountTmpfs(t, 'size=1m');
    const fd = fs.openSync(path.join(t, 'held-open'), 'w');
    try {
      await expectNativeError(b.umount(t, 0), { code: 'EBUSY', syscall: 'umount2', path: t });
      expect(await b.isMountpoint(t)).toBe(true);
      await b.umount(t, UmountFlags.MNT_DETACH);
      expect(await b.isMountpoint(t)).toBe(false);
      // The detached filesystem still serves the open descriptor.
      fs.writeSync(fd, 'still works');
    } finally {
      fs.closeSync(fd);
    }
    expect(fs.existsSync(path.join(t, 'held-open'))).toBe(false);
  });

  it('reports statfs and isMountpoint errors with the path', async () => {
    const missing = path.join(base, 'missing');
    await expectNativeError(b.statfs(missing), { code: 'ENOENT', syscall: 'statfs', path: missing });
    await expectNativeError(b.isMountpoint(missing), { code: 'ENOENT', path: missing });
  });
});
