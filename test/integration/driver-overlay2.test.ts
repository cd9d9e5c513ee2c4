/**
 * overlay2 against the real kernel: Docker's on-disk layout, mounts (including 128-deep stacks whose mount data
 * does not fit in a page), native diffs from the upper directory, reference counting, errors and cleanup.
 * The shared conformance suite runs at the end.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';

import * as tarStream from 'tar-stream';

import { ChangeKind, type Change } from '../../lib/drivers/driver';
import { Overlay2Driver } from '../../lib/drivers/overlay2';
import { loadBindings } from '../../lib/native/bindings';
import { FileType, UmountFlags } from '../../lib/native/constants';
import type { NativeBindings } from '../../lib/native/types';
import { runDriverConformance } from '../conformance/driver-conformance';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

const reason = !isRoot ? 'needs root' : !kernelHasFs('overlay') ? 'kernel has no overlay' : null;

/** Whether an xfs image can be mounted with pquota here (needs mkfs.xfs and a kernel with XFS quota). */
function xfsQuotaReason(): string | null {
  if (reason !== null) return reason;
  if (!haveTool('mkfs.xfs')) return 'no mkfs.xfs';
  const dir = makeTmp('gd-ov-xfsq-');
  try {
    execFileSync('truncate', ['-s', '300M', path.join(dir, 'img')]);
    execFileSync('mkfs.xfs', ['-q', '-f', path.join(dir, 'img')]);
    fs.mkdirSync(path.join(dir, 'mnt'));
    try {
      execFileSync('mount', ['-o', 'loop,pquota', path.join(dir, 'img'), path.join(dir, 'mnt')], { stdio: 'ignore' });
    } catch {
      return 'the kernel cannot mount xfs with pquota (no XFS quota support)';
    }
    execFileSync('umount', ['-d', path.join(dir, 'mnt')]);
    return null;
  } finally {
    removeTmp(dir);
  }
}

interface MountRow {
  mountPoint: string;
  /** Per-mount options (rw, nodev, ...). */
  mountOptions: string;
  fstype: string;
  superOptions: string;
}

function mounts(): MountRow[] {
  const out: MountRow[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0) continue;
    out.push({ mountPoint: f[4]!.replace(/\\040/g, ' '), mountOptions: f[5]!, fstype: f[sep + 1]!, superOptions: f[sep + 3] ?? '' });
  }
  return out;
}

function mountsAt(p: string): MountRow[] {
  return mounts().filter((m) => m.mountPoint === p);
}

function mountsUnder(dir: string): MountRow[] {
  return mounts().filter((m) => m.mountPoint.startsWith(`${dir}/`));
}

async function detachAllUnder(dir: string): Promise<void> {
  const b = loadBindings();
  const left = mountsUnder(dir).sort((a, c) => c.mountPoint.length - a.mountPoint.length);
  for (const m of left) await b.umount(m.mountPoint, UmountFlags.MNT_DETACH).catch(() => undefined);
}

async function tarEntries(stream: Readable): Promise<Array<{ name: string; type: string; data: string }>> {
  const extract = tarStream.extract();
  const out: Array<{ name: string; type: string; data: string }> = [];
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (h, s, next) => {
      const chunks: Buffer[] = [];
      s.on('data', (c: unknown) => chunks.push(c as Buffer));
      s.on('end', () => {
        out.push({ name: h.name, type: h.type ?? 'file', data: Buffer.concat(chunks).toString() });
        next();
      });
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  stream.pipe(extract);
  await done;
  return out;
}

function kinds(changes: Change[]): string[] {
  return changes.map((c) => `${c.kind === ChangeKind.Add ? 'A' : c.kind === ChangeKind.Modify ? 'C' : 'D'} ${c.path}`);
}

async function errorOf(p: Promise<unknown>): Promise<Error & { code?: string; errno?: number; syscall?: string }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

describeIf(reason, 'overlay2 driver (real kernel)', () => {
  jest.setTimeout(300_000);
  let root: string;
  let home: string;
  let d: Overlay2Driver;
  const extra: Overlay2Driver[] = [];

  beforeEach(async () => {
    root = makeTmp('gd-ov-');
    home = path.join(root, 'overlay2');
    d = await Overlay2Driver.init(home);
  });

  afterEach(async () => {
    for (const x of [d, ...extra.splice(0)]) await x.cleanup().catch(() => undefined);
    await detachAllUnder(root);
    removeTmp(root);
  });

  /** Writes files straight into a layer's own diff directory (content placement, not what is tested). */
  function writeUpper(id: string, files: Record<string, string>): void {
    for (const [p, content] of Object.entries(files)) {
      const f = path.join(d.dir(id), 'diff', p);
      fs.mkdirSync(path.dirname(f), { recursive: true });
      fs.writeFileSync(f, content);
    }
  }

  describe('init', () => {
    it('makes the home 0710 with l/ 0700, reports Docker status keys, leaves no check directories', async () => {
      expect(fs.statSync(home).mode & 0o7777).toBe(0o710);
      expect(fs.statSync(path.join(home, 'l')).mode & 0o7777).toBe(0o700);
      expect(fs.readdirSync(home)).toEqual(['l']);
      const status = await d.status();
      expect(status.map(([k]) => k)).toEqual(['Backing Filesystem', 'Supports d_type', 'Using metacopy', 'Native Overlay Diff', 'userxattr']);
      expect(status[0]![1]).toBe('extfs');
      expect(status[1]![1]).toBe('true');
      const redirectDir = fs.readFileSync('/sys/module/overlay/parameters/redirect_dir', 'utf8').trim();
      // The kernel default decides; with redirect_dir off the upper dirs are diffable natively.
      if (redirectDir === 'N') expect(status[3]![1]).toBe('true');
      expect(status[4]![1]).toBe('false');
      const metacopy = fs.readFileSync('/sys/module/overlay/parameters/metacopy', 'utf8').trim();
      expect(status[2]![1]).toBe(metacopy === 'Y' ? 'true' : 'false');
    });

    it('refuses unknown options naming them, and overlay2.size without xfs project quotas', async () => {
      const e1 = await errorOf(Overlay2Driver.init(path.join(root, 'x1'), ['overlay2.bogus=1']));
      expect(e1.code).toBe('ERR_INVALID_OPTION');
      expect(e1.message).toContain('overlay2.bogus');
      const e2 = await errorOf(Overlay2Driver.init(path.join(root, 'x2'), ['overlay2.size=10G']));
      expect(e2.code).toBe('ERR_INVALID_OPTION');
      expect(e2.message).toMatch(/xfs.*pquota/);
      expect(e2.message).toContain('extfs');
      // Nothing is left behind by a refused init.
      expect(fs.existsSync(path.join(root, 'x1'))).toBe(false);
      expect(fs.existsSync(path.join(root, 'x2'))).toBe(false);
      const ok = await Overlay2Driver.init(path.join(root, 'x3'), ['overlay2.override_kernel_check=true', 'overlay2.mountopt=nodev']);
      extra.push(ok);
      await ok.create('base');
      await ok.create('top', 'base');
      // overlay2.mountopt: generic options become mount flags (as mount(8) does), the rest overlay data.
      const merged = await ok.get('top', { options: ['noexec'] });
      expect(mountsAt(merged)[0]!.mountOptions.split(',')).toEqual(expect.arrayContaining(['nodev', 'noexec']));
      await ok.put('top');
    });

    it('refuses the size storage option of layers with a clear reason, creating nothing', async () => {
      await d.create('base');
      const e = await errorOf(d.createReadWrite('c', 'base', { storageOpt: { size: '1G' } }));
      expect(e.code).toBe('ERR_INVALID_OPTION');
      expect(e.message).toContain('pquota');
      const ro = await errorOf(d.create('r', 'base', { storageOpt: { size: '1G' } }));
      expect(ro.message).toContain('only supported for ReadWrite layers');
      const unk = await errorOf(d.createReadWrite('u', 'base', { storageOpt: { foo: 'x' } }));
      expect(unk.message).toContain('"foo"');
      expect(fs.readdirSync(home).sort()).toEqual(['base', 'l']);
    });

    const dtypeReason = haveTool('mkfs.ext4') ? null : 'no mkfs.ext4';
    (dtypeReason ? it.skip : it)('refuses a backing filesystem without d_type (ext4 -O ^filetype) with IncompatibleFsError', async () => {
      const img = path.join(root, 'nodtype.img');
      const mnt = path.join(root, 'nodtype');
      fs.mkdirSync(mnt);
      execFileSync('truncate', ['-s', '64M', img]);
      execFileSync('mkfs.ext4', ['-q', '-F', '-O', '^filetype', img]);
      execFileSync('mount', ['-o', 'loop', img, mnt]);
      try {
        const e = await errorOf(Overlay2Driver.init(path.join(mnt, 'overlay2')));
        expect(e.code).toBe('ERR_DRIVER_NOT_SUPPORTED');
        expect(e.constructor.name).toBe('IncompatibleFsError');
        expect(e.message).toContain('d_type');
        expect(fs.existsSync(path.join(mnt, 'overlay2'))).toBe(false);
      } finally {
        execFileSync('umount', ['-d', mnt]);
      }
    });

    it('refuses to run on top of an overlay mount (IncompatibleFsError)', async () => {
      await d.create('base');
      await d.create('top', 'base');
      const merged = await d.get('top');
      const e = await errorOf(Overlay2Driver.init(path.join(merged, 'nested')));
      expect(e.constructor.name).toBe('IncompatibleFsError');
      expect(e.message).toContain('overlayfs');
      await d.put('top');
    });
  });

  describe('layout', () => {
    it('writes diff, link, l/<link>, lower, work, merged and marks parents committed, as Docker', async () => {
      await d.create('base');
      const base = d.dir('base');
      expect(fs.readdirSync(base).sort()).toEqual(['diff', 'link']);
      expect(fs.statSync(path.join(base, 'diff')).mode & 0o7777).toBe(0o755);
      const baseLink = fs.readFileSync(path.join(base, 'link'), 'utf8');
      expect(baseLink).toMatch(/^[A-Z2-7]{26}$/);
      expect(fs.readlinkSync(path.join(home, 'l', baseLink))).toBe('../base/diff');

      await d.create('mid', 'base');
      const midLink = fs.readFileSync(path.join(d.dir('mid'), 'link'), 'utf8');
      expect(fs.readFileSync(path.join(d.dir('mid'), 'lower'), 'utf8')).toBe(`l/${baseLink}`);
      expect(fs.statSync(path.join(d.dir('mid'), 'work')).mode & 0o7777).toBe(0o700);
      expect(fs.existsSync(path.join(base, 'committed'))).toBe(true);

      await d.createReadWrite('top', 'mid');
      expect(fs.readFileSync(path.join(d.dir('top'), 'lower'), 'utf8')).toBe(`l/${midLink}:l/${baseLink}`);
      expect(fs.existsSync(path.join(d.dir('mid'), 'committed'))).toBe(true);
      expect(fs.existsSync(path.join(d.dir('top'), 'committed'))).toBe(false);
      expect(fs.readdirSync(d.dir('top')).sort()).toEqual(['diff', 'link', 'lower', 'merged', 'work']);

      expect(await d.getMetadata('top')).toEqual({
        LowerDir: `${path.join(home, 'mid', 'diff')}:${path.join(home, 'base', 'diff')}`,
        MergedDir: path.join(home, 'top', 'merged'),
        UpperDir: path.join(home, 'top', 'diff'),
        WorkDir: path.join(home, 'top', 'work'),
      });
      expect(Object.keys((await d.getMetadata('base'))!)).toEqual(['MergedDir', 'UpperDir', 'WorkDir']);
      // No temp names are left in the home.
      expect(fs.readdirSync(home).sort()).toEqual(['base', 'l', 'mid', 'top']);
    });

    it('remove deletes the layer and its l/ symlink; a parent with children is refused', async () => {
      await d.create('base');
      await d.create('top', 'base');
      const link = fs.readFileSync(path.join(d.dir('top'), 'link'), 'utf8');
      expect((await errorOf(d.remove('base'))).code).toBe('ERR_LAYER_IN_USE');
      await d.remove('top');
      expect(fs.existsSync(d.dir('top'))).toBe(false);
      expect(fs.existsSync(path.join(home, 'l', link))).toBe(false);
      await d.remove('base');
      expect(fs.readdirSync(path.join(home, 'l'))).toEqual([]);
      expect(fs.readdirSync(home)).toEqual(['l']);
    });
  });

  describe('mounts', () => {
    it('a base layer is its diff dir (no mount); other layers mount overlay on merged with index=off', async () => {
      await d.create('base');
      writeUpper('base', { 'a.txt': 'A' });
      await d.createReadWrite('top', 'base');
      const baseDir = await d.get('base');
      expect(baseDir).toBe(path.join(home, 'base', 'diff'));
      expect(mountsUnder(home)).toEqual([]);
      const merged = await d.get('top');
      expect(merged).toBe(path.join(home, 'top', 'merged'));
      const rows = mountsAt(merged);
      expect(rows).toHaveLength(1);
      expect(rows[0]!.fstype).toBe('overlay');
      expect(rows[0]!.superOptions).toContain(`upperdir=${path.join(home, 'top', 'diff')}`);
      expect(fs.readFileSync(path.join(merged, 'a.txt'), 'utf8')).toBe('A');
      fs.writeFileSync(path.join(merged, 'b.txt'), 'B');
      expect(fs.readFileSync(path.join(home, 'top', 'diff', 'b.txt'), 'utf8')).toBe('B');
      await d.put('top');
      await d.put('base');
      expect(mountsUnder(home)).toEqual([]);
      // put removes the mount point, as Docker; the next get recreates it.
      expect(fs.existsSync(merged)).toBe(false);
      expect(await d.get('top')).toBe(merged);
      expect(fs.readFileSync(path.join(merged, 'b.txt'), 'utf8')).toBe('B');
      await d.put('top');
    });

    it('a committed layer (one with children) is mounted read-only without upper dir', async () => {
      await d.create('base');
      await d.create('mid', 'base');
      await d.create('top', 'mid');
      const merged = await d.get('mid');
      const row = mountsAt(merged)[0]!;
      expect(row.superOptions).not.toContain('upperdir=');
      expect(() => fs.writeFileSync(path.join(merged, 'x'), 'x')).toThrow(/EROFS/);
      await d.put('mid');
    });

    it('32 concurrent gets share one mount; the last of 32 puts unmounts', async () => {
      await d.create('base');
      await d.createReadWrite('c', 'base');
      const paths = await Promise.all(Array.from({ length: 32 }, () => d.get('c')));
      expect(new Set(paths).size).toBe(1);
      expect(mountsAt(paths[0]!)).toHaveLength(1);
      await Promise.all(Array.from({ length: 31 }, () => d.put('c')));
      expect(mountsAt(paths[0]!)).toHaveLength(1);
      await d.put('c');
      expect(mountsAt(paths[0]!)).toHaveLength(0);
      expect((await errorOf(d.put('c'))).code).toBe('ERR_NOT_MOUNTED');
    });

    it('a new driver instance adopts an existing mount (restart) instead of mounting twice', async () => {
      await d.create('base');
      await d.createReadWrite('c', 'base');
      const merged = await d.get('c');
      const d2 = await Overlay2Driver.init(home);
      extra.push(d2);
      expect(await d2.get('c')).toBe(merged);
      expect(mountsAt(merged)).toHaveLength(1);
      await d2.put('c');
      expect(mountsAt(merged)).toHaveLength(1);
      await d2.put('c');
      expect(mountsAt(merged)).toHaveLength(0);
    });

    it('mounts a 128-deep chain (mount data beyond a page, relative paths) and reads the bottom file; 129 is refused', async () => {
      let parent: string | null = null;
      for (let i = 0; i < 128; i++) {
        const id = `L${i}`;
        await d.create(id, parent);
        writeUpper(id, { [`f${i}`]: `layer ${i}` });
        parent = id;
      }
      await d.createReadWrite('top', 'L127');
      expect(fs.readFileSync(path.join(d.dir('top'), 'lower'), 'utf8').split(':')).toHaveLength(128);
      const merged = await d.get('top');
      expect(mountsAt(merged)).toHaveLength(1);
      expect(fs.readFileSync(path.join(merged, 'f0'), 'utf8')).toBe('layer 0');
      expect(fs.readFileSync(path.join(merged, 'f127'), 'utf8')).toBe('layer 127');
      expect(fs.readdirSync(merged)).toHaveLength(128);
      // The process cwd is never changed by the relative mount.
      expect(process.cwd()).not.toBe(home);
      // L127 is now committed: mounted read-only with 128 layers as lowers, also beyond a page.
      const ro = await d.get('L127');
      expect(fs.readFileSync(path.join(ro, 'f0'), 'utf8')).toBe('layer 0');
      await d.put('L127');
      await d.put('top');
      const e = await errorOf(d.create('toodeep', 'top'));
      expect(e.code).toBe('ERR_MAX_DEPTH');
      expect(e.message).toContain('max depth exceeded');
      expect(fs.existsSync(d.dir('toodeep'))).toBe(false);
    });

    it('mounts a 128-deep chain through mount(8) when the addon lacks mountFrom', async () => {
      const real = loadBindings();
      const b: NativeBindings = Object.assign(Object.create(real) as NativeBindings, {
        mountFrom: async () => {
          throw Object.assign(new Error('native function mountFrom is not available in this build'), { code: 'ERR_NATIVE_MISSING' });
        },
      });
      const d2 = await Overlay2Driver.init(path.join(root, 'tool', 'overlay2'), [], { bindings: b });
      extra.push(d2);
      let parent: string | null = null;
      for (let i = 0; i < 128; i++) {
        await d2.create(`L${i}`, parent);
        fs.writeFileSync(path.join(d2.dir(`L${i}`), 'diff', `f${i}`), `layer ${i}`);
        parent = `L${i}`;
      }
      await d2.createReadWrite('top', parent);
      const merged = await d2.get('top');
      expect(fs.readFileSync(path.join(merged, 'f0'), 'utf8')).toBe('layer 0');
      await d2.put('top');
      expect(mountsAt(merged)).toHaveLength(0);
    });
  });

  describe('native diff', () => {
    async function baseWithFiles(): Promise<void> {
      await d.create('base');
      writeUpper('base', { 'a.txt': 'a', 'keep.txt': 'k', 'dir/x': 'x', 'dir/y': 'y', 'other/z': 'z' });
    }

    it('changes of a container layer list only its upper changes; deleting a lower file is a .wh. entry in the diff', async () => {
      if (!d.nativeDiff) return; // kernel with redirect_dir: covered by the naive tests
      await baseWithFiles();
      await d.createReadWrite('c', 'base');
      const m = await d.get('c');
      fs.rmSync(path.join(m, 'a.txt'));
      fs.writeFileSync(path.join(m, 'other', 'z'), 'zz');
      fs.writeFileSync(path.join(m, 'new.txt'), 'n');
      await d.put('c');
      // The deletion is an overlay whiteout (char 0/0) in the upper dir.
      const wh = fs.lstatSync(path.join(home, 'c', 'diff', 'a.txt'));
      expect(wh.isCharacterDevice()).toBe(true);
      expect(wh.rdev).toBe(0);

      // /other is copied up for z but unchanged itself, so it is not a change (as the naive comparison says).
      expect(kinds(await d.changes('c', 'base'))).toEqual(['D /a.txt', 'A /new.txt', 'C /other/z']);
      const entries = await tarEntries(await d.diff('c', 'base'));
      expect(entries.map((e) => e.name).sort()).toEqual(['.wh.a.txt', 'new.txt', 'other/', 'other/z'].sort());
      expect(entries.find((e) => e.name === 'other/z')!.data).toBe('zz');
      expect(await d.diffSize('c', 'base')).toBe(3); // 'zz' + 'n' (whiteout devices have size 0)
    });

    it('an opaque directory (rm -rf then mkdir over a lower dir) is exported with .wh..wh..opq', async () => {
      if (!d.nativeDiff) return;
      await baseWithFiles();
      await d.createReadWrite('c', 'base');
      const m = await d.get('c');
      fs.rmSync(path.join(m, 'dir'), { recursive: true });
      fs.mkdirSync(path.join(m, 'dir'));
      fs.writeFileSync(path.join(m, 'dir', 'new'), 'N');
      await d.put('c');
      const opaque = await loadBindings().lgetxattr(path.join(home, 'c', 'diff', 'dir'), 'trusted.overlay.opaque');
      expect(opaque?.toString()).toBe('y');
      const entries = await tarEntries(await d.diff('c', 'base'));
      expect(entries.map((e) => e.name).sort()).toEqual(['dir/', 'dir/.wh..wh..opq', 'dir/new'].sort());
      expect(kinds(await d.changes('c', 'base'))).toEqual(['C /dir', 'A /dir/new', 'D /dir/x', 'D /dir/y']);

      // Applying that diff natively onto a sibling reproduces the opaque directory.
      await d.create('s', 'base');
      const size = await d.applyDiff('s', 'base', await d.diff('c', 'base'));
      expect(size).toBe(await d.diffSize('s', 'base'));
      expect((await loadBindings().lgetxattr(path.join(home, 's', 'diff', 'dir'), 'trusted.overlay.opaque'))?.toString()).toBe('y');
      await d.create('s2', 's');
      const sm = await d.get('s');
      expect(fs.readdirSync(path.join(sm, 'dir'))).toEqual(['new']);
      await d.put('s');
    });

    it('applyDiff writes overlay whiteouts in the upper dir and returns the size of diff/', async () => {
      if (!d.nativeDiff) return;
      await baseWithFiles();
      await d.createReadWrite('c', 'base');
      const m = await d.get('c');
      fs.rmSync(path.join(m, 'keep.txt'));
      fs.writeFileSync(path.join(m, 'n1'), '12345');
      await d.put('c');
      await d.create('s', 'base');
      const n = await d.applyDiff('s', 'base', await d.diff('c', 'base'));
      expect(n).toBe(5);
      const st = fs.lstatSync(path.join(home, 's', 'diff', 'keep.txt'));
      expect((st.mode & FileType.S_IFMT) === FileType.S_IFCHR && st.rdev === 0).toBe(true);
    });

    it('a diff against a layer that is not the parent falls back to the naive comparison', async () => {
      await baseWithFiles();
      await d.create('mid', 'base');
      writeUpper('mid', { 'm.txt': 'm' });
      await d.createReadWrite('c', 'mid');
      const m = await d.get('c');
      fs.writeFileSync(path.join(m, 'c.txt'), 'c');
      await d.put('c');
      // Against base: both mid's and c's files (naive, through mounts); natively against mid: only c's.
      expect(kinds(await d.changes('c', 'base'))).toEqual(['A /c.txt', 'A /m.txt']);
      expect(kinds(await d.changes('c', 'mid'))).toEqual(['A /c.txt']);
      expect(mountsUnder(home)).toEqual([]);
    });
  });

  describe('errors', () => {
    it('put without get, remove while mounted, existing id, missing parent and invalid ids', async () => {
      await d.create('base');
      await d.createReadWrite('c', 'base');
      expect((await errorOf(d.put('base'))).code).toBe('ERR_NOT_MOUNTED');
      expect((await errorOf(d.put('c'))).code).toBe('ERR_NOT_MOUNTED');
      await d.get('c');
      expect((await errorOf(d.remove('c'))).code).toBe('ERR_LAYER_IN_USE');
      await d.put('c');
      await d.get('base');
      expect((await errorOf(d.remove('base'))).code).toBe('ERR_LAYER_IN_USE');
      await d.put('base');

      const link = fs.readFileSync(path.join(d.dir('c'), 'link'), 'utf8');
      expect((await errorOf(d.create('c', 'base'))).code).toBe('ERR_LAYER_EXISTS');
      expect(fs.readFileSync(path.join(d.dir('c'), 'link'), 'utf8')).toBe(link);
      expect((await errorOf(d.create('n', 'nope'))).code).toBe('ERR_LAYER_NOT_FOUND');
      expect((await errorOf(d.get('nope'))).code).toBe('ERR_LAYER_NOT_FOUND');
      expect((await errorOf(d.remove('nope'))).code).toBe('ERR_LAYER_NOT_FOUND');
      for (const bad of ['', '..', '../x', 'a/b', 'a\0b', '.hidden', 'x'.repeat(129)]) {
        expect((await errorOf(d.create(bad))).code).toBe('ERR_INVALID_ID');
        expect((await errorOf(d.get(bad))).code).toBe('ERR_INVALID_ID');
      }
      expect(fs.readdirSync(home).sort()).toEqual(['base', 'c', 'l']);
      expect(fs.readdirSync(path.join(home, 'l'))).toHaveLength(2);
    });

    it('a mount the kernel refuses keeps the errno, and the count is not left behind', async () => {
      await d.create('base');
      await d.createReadWrite('c', 'base');
      const baseLink = fs.readFileSync(path.join(d.dir('base'), 'link'), 'utf8');
      fs.unlinkSync(path.join(home, 'l', baseLink));
      const e = await errorOf(d.get('c'));
      expect(e.code).toBe('ENOENT');
      expect(e.errno).toBe(-2);
      expect(e.syscall).toBe('mount');
      expect(e.message).toContain('"c"');
      expect((await errorOf(d.put('c'))).code).toBe('ERR_NOT_MOUNTED');
      expect(fs.existsSync(path.join(d.dir('c'), 'merged'))).toBe(false);
    });
  });

  it('cleanup unmounts everything below the home and closes the driver', async () => {
    await d.create('base');
    await d.createReadWrite('a', 'base');
    await d.createReadWrite('b', 'base');
    await d.get('a');
    await d.get('b');
    await d.get('b');
    expect(mountsUnder(home)).toHaveLength(2);
    await d.cleanup();
    expect(mountsUnder(home)).toHaveLength(0);
    expect((await errorOf(d.get('a'))).code).toBe('ERR_DRIVER_CLOSED');
    const d2 = await Overlay2Driver.init(home);
    extra.push(d2);
    expect(await d2.exists('a')).toBe(true);
  });
});

describeIf(xfsQuotaReason(), 'overlay2 quotas on xfs with pquota (real kernel)', () => {
  let root: string;
  let mnt: string;
  let d: Overlay2Driver | undefined;

  beforeAll(() => {
    root = makeTmp('gd-ov-quota-');
    mnt = path.join(root, 'mnt');
    fs.mkdirSync(mnt);
    execFileSync('truncate', ['-s', '300M', path.join(root, 'img')]);
    execFileSync('mkfs.xfs', ['-q', '-f', path.join(root, 'img')]);
    execFileSync('mount', ['-o', 'loop,pquota', path.join(root, 'img'), mnt]);
  });

  afterAll(async () => {
    await d?.cleanup().catch(() => undefined);
    await detachAllUnder(mnt);
    execFileSync('umount', ['-d', mnt]);
    removeTmp(root);
  });

  it('limits a container layer to overlay2.size (Docker DriverTestSetQuota)', async () => {
    d = await Overlay2Driver.init(path.join(mnt, 'overlay2'), ['overlay2.size=20M']);
    await d.create('base');
    await d.createReadWrite('c', 'base');
    const merged = await d.get('c');
    fs.writeFileSync(path.join(merged, 'small'), Buffer.alloc(5 << 20, 1));
    let err: unknown;
    try {
      fs.writeFileSync(path.join(merged, 'big'), Buffer.alloc(30 << 20, 1));
    } catch (e) {
      err = e;
    }
    expect(['EDQUOT', 'ENOSPC']).toContain((err as { code?: string }).code);
    await d.put('c');
  });
});

runDriverConformance('overlay2', (home) => Overlay2Driver.init(home), { deepChain: 128, skip: reason });
