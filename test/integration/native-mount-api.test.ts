/**
 * mountFrom (native/mount-api.cc) and the project-quota calls (native/quota.cc) against the real kernel. Both
 * files need registering in the addon; builds without them print why these tests do not run.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import { UmountFlags } from '../../lib/native/constants';
import type { NativeBindings } from '../../lib/native/types';
import { describeIf, isRoot, kernelHasFs } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

function addonHas(name: string): boolean {
  try {
    const file = process.env.GRAPHDRIVER_ADDON ?? path.join(__dirname, '..', '..', 'build', 'Release', 'graphdriver.node');
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return typeof (require(file) as Record<string, unknown>)[name] === 'function';
  } catch {
    return false;
  }
}

const mountReason = !isRoot
  ? 'needs root'
  : !kernelHasFs('overlay')
    ? 'kernel has no overlay'
    : !addonHas('mountFrom')
      ? 'addon built without native/mount-api.cc (RegisterMountApi)'
      : null;

describeIf(mountReason, 'native mountFrom', () => {
  let b: NativeBindings;
  let dir: string;

  beforeAll(() => {
    b = loadBindings();
  });
  beforeEach(() => {
    dir = makeTmp('gd-mountfrom-');
    for (const d of ['l/a', 'l/b', 'u', 'w', 'm']) fs.mkdirSync(path.join(dir, d), { recursive: true });
    fs.writeFileSync(path.join(dir, 'l', 'a', 'fa'), 'A');
    fs.writeFileSync(path.join(dir, 'l', 'b', 'fb'), 'B');
  });
  afterEach(async () => {
    await b.umount(path.join(dir, 'm'), UmountFlags.MNT_DETACH).catch(() => undefined);
    removeTmp(dir);
  });

  it('mounts with paths relative to dir, leaving the process cwd alone', async () => {
    const cwd = process.cwd();
    await b.mountFrom(dir, 'overlay', 'm', 'overlay', 0, 'lowerdir=l/a:l/b,upperdir=u,workdir=w');
    expect(process.cwd()).toBe(cwd);
    expect(fs.readdirSync(path.join(dir, 'm')).sort()).toEqual(['fa', 'fb']);
    expect(await b.isMountpoint(path.join(dir, 'm'))).toBe(true);
    // Relative paths in the caller's own calls still resolve from the unchanged cwd.
    expect(fs.existsSync('l/a')).toBe(fs.existsSync(path.join(cwd, 'l/a')));
  });

  it('keeps the kernel errno: a missing lower is ENOENT on mount with dest dir/target', async () => {
    await expect(b.mountFrom(dir, 'overlay', 'm', 'overlay', 0, 'lowerdir=l/nope,upperdir=u,workdir=w')).rejects.toMatchObject({
      code: 'ENOENT',
      errno: -2,
      syscall: 'mount',
      path: 'overlay',
      dest: path.join(dir, 'm'),
    });
  });

  it('a missing directory is ENOENT on open', async () => {
    await expect(b.mountFrom(path.join(dir, 'missing'), 'overlay', 'm', 'overlay', 0, null)).rejects.toMatchObject({
      code: 'ENOENT',
      syscall: 'open',
      path: path.join(dir, 'missing'),
    });
  });

  it('many concurrent relative mounts from different dirs do not mix up their cwd', async () => {
    const dirs = Array.from({ length: 8 }, (_, i) => {
      const d = path.join(dir, `c${i}`);
      for (const s of ['lo', 'u', 'w', 'm']) fs.mkdirSync(path.join(d, s), { recursive: true });
      fs.writeFileSync(path.join(d, 'lo', `only-${i}`), '');
      return d;
    });
    try {
      await Promise.all(dirs.map((d) => b.mountFrom(d, 'overlay', 'm', 'overlay', 0, 'lowerdir=lo,upperdir=u,workdir=w')));
      dirs.forEach((d, i) => expect(fs.readdirSync(path.join(d, 'm'))).toEqual([`only-${i}`]));
    } finally {
      for (const d of dirs) await b.umount(path.join(d, 'm'), UmountFlags.MNT_DETACH).catch(() => undefined);
    }
  });

  it('refuses bad arguments before native code', async () => {
    await expect(b.mountFrom('', 'overlay', 'm', 'overlay', 0, null)).rejects.toThrow(TypeError);
    await expect(b.mountFrom(dir, 'overlay', 'm', 'overlay', -1, null)).rejects.toThrow(RangeError);
    await expect(b.mountFrom(dir, 'overlay', 'm\0x', 'overlay', 0, null)).rejects.toThrow(TypeError);
  });
});

const quotaReason = !isRoot ? 'needs root' : !addonHas('getProjectId') ? 'addon built without native/quota.cc (RegisterQuota)' : null;

describeIf(quotaReason, 'native project quota calls', () => {
  let b: NativeBindings;
  let dir: string;
  beforeAll(() => {
    b = loadBindings();
    dir = makeTmp('gd-quota-');
  });
  afterAll(() => removeTmp(dir));

  it('reads the project id of a directory', async () => {
    const id = await b.getProjectId(dir);
    expect(Number.isInteger(id)).toBe(true);
    expect(id).toBeGreaterThanOrEqual(0);
  });

  it('reports failures with errno and the ioctl/quotactl name', async () => {
    await expect(b.getProjectId(path.join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open' });
    // Not a block device with quotas: the kernel refuses (the exact errno depends on the kernel build).
    const err = await b.setProjectQuota(path.join(dir), 1, 0).then(
      () => null,
      (e: unknown) => e as { errno?: number; syscall?: string },
    );
    expect(err).not.toBeNull();
    expect(typeof err!.errno).toBe('number');
    expect(err!.syscall).toBe('quotactl(Q_XSETQLIM)');
    // Thrown by the addon itself (its realm's RangeError), before any syscall.
    await expect(b.setProjectId(dir, 2 ** 32)).rejects.toMatchObject({ name: 'RangeError' });
  });
});
