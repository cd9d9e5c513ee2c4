/**
 * The vfs driver against the real kernel: the shared conformance suite, plus vfs specifics (layout, a copy that
 * keeps everything, unprivileged use).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import * as ts from 'typescript';

import { VfsDriver } from '../../lib/drivers/vfs';
import { loadBindings } from '../../lib/native/bindings';
import { diffTrees } from '../conformance/fstest';
import { runDriverConformance } from '../conformance/driver-conformance';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

const execFileP = promisify(execFile);
const REPO = path.resolve(__dirname, '..', '..');
const NOBODY = 65534;

runDriverConformance('vfs', (home) => VfsDriver.init(home), { deepChain: 128 });

/** Why vfs cannot be tested on an xfs loop filesystem here (null when it can). */
function xfsReason(): string | null {
  if (!isRoot) return 'needs root (loop mount)';
  if (!kernelHasFs('xfs')) return 'the kernel has no xfs';
  if (!haveTool('mkfs.xfs')) return 'mkfs.xfs is not installed';
  return null;
}

/** Whether the kernel config says `option` is built in or a module (null when the config is not readable). */
function kernelConfig(option: string): boolean | null {
  try {
    const text = gunzipSync(fs.readFileSync('/proc/config.gz')).toString('latin1');
    return new RegExp(`^${option}=[ym]$`, 'm').test(text);
  } catch {
    return null;
  }
}

/** Why xfs project quotas (the vfs size option) cannot be tested here (null when they can). */
function xfsQuotaReason(): string | null {
  const base = xfsReason();
  if (base !== null) return base;
  if (kernelConfig('CONFIG_XFS_QUOTA') === false) return 'the kernel is built without CONFIG_XFS_QUOTA (xfs cannot mount with pquota)';
  const addon = process.env.GRAPHDRIVER_ADDON ?? path.join(REPO, 'build', 'Release', 'graphdriver.node');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const raw = require(addon) as Record<string, unknown>;
  if (typeof raw.setProjectQuota !== 'function') return 'project quota functions are not in this build of the addon (native/quota.cc not registered)';
  return null;
}

const XFS_REASON = xfsReason();
const QUOTA_REASON = xfsQuotaReason();

describe('vfs on xfs (reflink copies)', () => {
  jest.setTimeout(300_000);
  let dir: string | undefined;
  let mnt = '';
  let mounted = false;

  beforeAll(async () => {
    if (XFS_REASON !== null) return;
    dir = makeTmp('gd-vfs-xfs-');
    mnt = path.join(dir, 'mnt');
    fs.mkdirSync(mnt);
    const img = path.join(dir, 'xfs.img');
    fs.closeSync(fs.openSync(img, 'w'));
    fs.truncateSync(img, 1024 * 1024 * 1024);
    await execFileP('mkfs.xfs', ['-q', '-m', 'reflink=1', img]);
    await execFileP('mount', ['-o', QUOTA_REASON === null ? 'loop,pquota' : 'loop', img, mnt]);
    mounted = true;
  });

  afterAll(async () => {
    if (mounted) await execFileP('umount', [mnt]);
    removeTmp(dir);
  });

  runDriverConformance('vfs', (home) => VfsDriver.init(home), {
    deepChain: 32,
    quota: QUOTA_REASON === null,
    tmpBase: () => mnt,
    label: QUOTA_REASON === null ? 'xfs, reflink, pquota' : 'xfs, reflink',
    skip: XFS_REASON,
  });

  describeIf(XFS_REASON, 'vfs copies on xfs', () => {
    it('shares extents with the parent (FICLONE) and reports no quota support without pquota', async () => {
      const root = fs.mkdtempSync(path.join(mnt, 'reflink-'));
      const d = await VfsDriver.init(path.join(root, 'vfs'));
      try {
        await d.create('base', null);
        const base = await d.get('base');
        fs.writeFileSync(path.join(base, 'blob'), Buffer.alloc(16 * 1024 * 1024, 3));
        await d.put('base');
        const before = (await loadBindings().statfs(mnt)).bfree;
        await d.create('child', 'base');
        const after = (await loadBindings().statfs(mnt)).bfree;
        const bsize = (await loadBindings().statfs(mnt)).bsize;
        // a real copy would take 16 MiB more; a reflink takes (almost) nothing
        expect((before - after) * bsize).toBeLessThan(4 * 1024 * 1024);
        expect(fs.readFileSync(path.join(d.dir('child'), 'blob')).equals(Buffer.alloc(16 * 1024 * 1024, 3))).toBe(true);
        if (QUOTA_REASON !== null) expect(d.quotaSupport().supported).toBe(false);
        await d.remove('child');
        await d.remove('base');
      } finally {
        await d.cleanup();
        removeTmp(root);
      }
    });
  });

  describeIf(QUOTA_REASON, 'vfs size limits on xfs with pquota', () => {
    let root: string;
    let d: VfsDriver;

    beforeEach(async () => {
      root = fs.mkdtempSync(path.join(mnt, 'limits-'));
      d = await VfsDriver.init(path.join(root, 'vfs'));
    });

    afterEach(async () => {
      await d.cleanup();
      removeTmp(root);
    });

    it('reports support, counts the copied parent against the limit, and refuses a parent too big for it', async () => {
      expect(d.quotaSupport()).toEqual({ supported: true, reason: '' });
      await d.create('base', null);
      const base = await d.get('base');
      fs.writeFileSync(path.join(base, 'big'), Buffer.alloc(8 * 1024 * 1024, 1));
      await d.put('base');

      await d.createReadWrite('roomy', 'base', { storageOpt: { size: '32M' } });
      const usage = await d.quotaUsage('roomy');
      expect(usage?.hardLimit).toBe(32 * 1024 * 1024);
      expect(usage!.used).toBeGreaterThanOrEqual(8 * 1024 * 1024);
      expect(await d.quotaUsage('base')).toBeNull();

      // the copy itself exceeds a 4M limit: create fails and leaves nothing
      const err = await d.createReadWrite('tight', 'base', { storageOpt: { size: '4M' } }).catch((e: unknown) => e);
      expect((err as { code?: string }).code).toMatch(/^(EDQUOT|ENOSPC)$/);
      expect(await d.exists('tight')).toBe(false);
      expect(fs.readdirSync(path.join(root, 'vfs', 'dir')).sort()).toEqual(['base', 'roomy']);
      await d.remove('roomy');
      await d.remove('base');
    });

    it('the init option size limits every layer', async () => {
      await d.cleanup();
      d = await VfsDriver.init(path.join(root, 'vfs'), ['size=16M']);
      await d.create('base', null);
      expect((await d.quotaUsage('base'))?.hardLimit).toBe(16 * 1024 * 1024);
      const dirPath = await d.get('base');
      try {
        const err = await fs.promises.writeFile(path.join(dirPath, 'too-big'), Buffer.alloc(32 * 1024 * 1024, 2)).catch((e: unknown) => e);
        expect((err as { code?: string }).code).toMatch(/^(EDQUOT|ENOSPC)$/);
      } finally {
        await d.put('base');
      }
    });
  });
});

describeIf(isRoot ? null : 'needs root (device nodes, owners, trusted xattrs)', 'vfs layout and copies', () => {
  jest.setTimeout(120_000);
  let root: string;
  let d: VfsDriver;
  const b = loadBindings();

  beforeEach(async () => {
    root = makeTmp('gd-vfs-');
    d = await VfsDriver.init(path.join(root, 'vfs'));
  });

  afterEach(async () => {
    await d.cleanup();
    removeTmp(root);
  });

  it("uses Docker's layout: <home>/dir/<id>, home 0700, no temp names left", async () => {
    await d.create('base', null);
    await d.create('child', 'base');
    expect(fs.statSync(path.join(root, 'vfs')).mode & 0o777).toBe(0o700);
    expect(fs.readdirSync(path.join(root, 'vfs', 'dir')).sort()).toEqual(['base', 'child']);
    expect(await d.get('child')).toBe(path.join(root, 'vfs', 'dir', 'child'));
    await d.put('child');
    await d.remove('child');
    expect(fs.readdirSync(path.join(root, 'vfs', 'dir'))).toEqual(['base']);
  });

  it('a child is an exact copy: owners, modes, times, xattrs, hardlinks, devices, fifos, sockets, symlinks, holes', async () => {
    await d.create('base', null);
    const base = await d.get('base');
    fs.mkdirSync(path.join(base, 'etc'), { mode: 0o755 });
    fs.writeFileSync(path.join(base, 'etc', 'passwd'), 'root:x:0:0\n');
    fs.chownSync(path.join(base, 'etc', 'passwd'), 0, 42);
    fs.writeFileSync(path.join(base, 'ping'), Buffer.alloc(3000, 7));
    fs.chmodSync(path.join(base, 'ping'), 0o4755);
    // a file capability (v2, cap_net_raw) and a trusted and a user xattr
    const cap = Buffer.alloc(20);
    cap.writeUInt32LE(0x02000001, 0);
    cap.writeUInt32LE(1 << 13, 4);
    await b.lsetxattr(path.join(base, 'ping'), 'security.capability', cap);
    await b.lsetxattr(path.join(base, 'etc'), 'trusted.note', Buffer.from('t'));
    await b.lsetxattr(path.join(base, 'etc', 'passwd'), 'user.note', Buffer.from('u'));
    fs.linkSync(path.join(base, 'etc', 'passwd'), path.join(base, 'etc', 'passwd-hardlink'));
    fs.symlinkSync('etc/passwd', path.join(base, 'link'));
    fs.symlinkSync('/nowhere', path.join(base, 'dangling'));
    fs.mkdirSync(path.join(base, 'dev'), { mode: 0o755 });
    await b.mknod(path.join(base, 'dev', 'null'), 0o020666, (1 << 8) | 3);
    await b.mknod(path.join(base, 'dev', 'sda'), 0o060660, (8 << 8) | 0);
    await b.mknod(path.join(base, 'fifo'), 0o010644, 0);
    await execFileP(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path.join(base, 'sock'))}, function () { process.exit(0); })`]);
    const sparse = path.join(base, 'sparse');
    const fd = fs.openSync(sparse, 'w');
    fs.writeSync(fd, Buffer.from('start'), 0, 5, 0);
    fs.writeSync(fd, Buffer.from('end'), 0, 3, 64 * 1024 * 1024);
    fs.closeSync(fd);
    fs.mkdirSync(path.join(base, 'tmp'), { mode: 0o1777 });
    fs.chmodSync(path.join(base, 'tmp'), 0o1777);
    fs.mkdirSync(path.join(base, 'owned'));
    fs.chownSync(path.join(base, 'owned'), 1000, 1000);
    fs.utimesSync(path.join(base, 'etc', 'passwd'), 1_000_000_000.123, 1_000_000_000.456);
    await d.put('base');

    await d.create('child', 'base');
    const [p, c] = [await d.get('base'), await d.get('child')];
    try {
      expect(await diffTrees(p, c)).toEqual([]);
      // times with nanoseconds, directories included (a naive diff would see every file as changed otherwise)
      for (const rel of ['etc/passwd', 'etc', 'ping', 'tmp', 'owned', '.']) {
        const [ps, cs] = [fs.lstatSync(path.join(p, rel), { bigint: true }), fs.lstatSync(path.join(c, rel), { bigint: true })];
        expect({ rel, mtime: cs.mtimeNs }).toEqual({ rel, mtime: ps.mtimeNs });
      }
      // the hole stays a hole
      const st = fs.statSync(path.join(c, 'sparse'));
      expect(st.size).toBe(64 * 1024 * 1024 + 3);
      expect(st.blocks * 512).toBeLessThan(1024 * 1024);
      expect((await b.lgetxattr(path.join(c, 'ping'), 'security.capability'))?.equals(cap)).toBe(true);
      // and a copy is a copy: writing the child does not touch the parent
      fs.writeFileSync(path.join(c, 'etc', 'passwd'), 'changed');
      expect(fs.readFileSync(path.join(p, 'etc', 'passwd'), 'utf8')).toBe('root:x:0:0\n');
      expect(fs.readFileSync(path.join(c, 'etc', 'passwd-hardlink'), 'utf8')).toBe('changed');
    } finally {
      await d.put('base');
      await d.put('child');
    }
    expect(await d.changes('child', 'base')).toEqual([
      { path: '/etc', kind: 0 },
      { path: '/etc/passwd', kind: 0 },
      { path: '/etc/passwd-hardlink', kind: 0 },
    ]);
  });
});

/** Transpiles lib/ to plain CommonJS in `out` (no type check) so that a child process can run it. */
function transpileLib(out: string): void {
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) walk(full);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) {
        const js = ts.transpileModule(fs.readFileSync(full, 'utf8'), {
          compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
        }).outputText;
        const dest = path.join(out, path.relative(REPO, full)).replace(/\.ts$/, '.js');
        fs.mkdirSync(path.dirname(dest), { recursive: true, mode: 0o755 });
        fs.writeFileSync(dest, js, { mode: 0o644 });
      }
    }
  };
  walk(path.join(REPO, 'lib'));
}

/** What the unprivileged child process does, phase by phase (it prints JSON). */
const CHILD_SCRIPT = `
const fs = require('fs');
const path = require('path');
const { Readable } = require('stream');
const [lib, home, phase] = process.argv.slice(1);
const { VfsDriver } = require(path.join(lib, 'lib/drivers/vfs'));
const { loadBindings } = require(path.join(lib, 'lib/native/bindings'));
(async () => {
  const d = await VfsDriver.init(home);
  const b = loadBindings();
  const out = { uid: process.geteuid() };
  if (phase === 'build') {
    await d.create('base', null);
    const base = await d.get('base');
    fs.mkdirSync(path.join(base, 'd'));
    fs.writeFileSync(path.join(base, 'd', 'f'), 'hello');
    await b.lsetxattr(path.join(base, 'd', 'f'), 'user.note', Buffer.from('x'));
    fs.linkSync(path.join(base, 'd', 'f'), path.join(base, 'd', 'h'));
    fs.symlinkSync('d/f', path.join(base, 'ln'));
    await b.mknod(path.join(base, 'fifo'), 0o010600, 0);
    fs.mkdirSync(path.join(base, 'ro', 'deeper'), { recursive: true });
    fs.writeFileSync(path.join(base, 'ro', 'deeper', 'x'), 'x');
    fs.chmodSync(path.join(base, 'ro', 'deeper'), 0o555);
    fs.chmodSync(path.join(base, 'ro'), 0o555);
    await d.put('base');
    await d.create('child', 'base');
    const child = await d.get('child');
    fs.writeFileSync(path.join(child, 'new'), 'new');
    fs.rmSync(path.join(child, 'ln'));
    await d.put('child');
    out.changes = await d.changes('child', 'base');
    await d.create('applied', 'base');
    out.applied = await d.applyDiff('applied', 'base', await d.diff('child', 'base'));
    out.diffSize = await d.diffSize('child', 'base');
    out.dirs = { base: d.dir('base'), child: d.dir('child'), applied: d.dir('applied') };
  } else {
    await d.remove('applied');
    await d.remove('child');
    await d.remove('base');
    out.left = fs.readdirSync(path.join(home, 'dir'));
  }
  await d.cleanup();
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(1); });
`;

describeIf(isRoot ? null : 'needs root to switch to an unprivileged user', 'vfs without privileges', () => {
  jest.setTimeout(120_000);
  let root: string;

  beforeAll(() => {
    root = makeTmp('gd-vfs-nobody-');
    fs.chmodSync(root, 0o755);
    transpileLib(path.join(root, 'js'));
    fs.mkdirSync(path.join(root, 'store'));
    fs.chownSync(path.join(root, 'store'), NOBODY, NOBODY);
  });

  afterAll(() => removeTmp(root));

  async function runAsNobody(phase: string): Promise<Record<string, unknown>> {
    const addon = process.env.GRAPHDRIVER_ADDON ?? path.join(REPO, 'build', 'Release', 'graphdriver.node');
    const { stdout } = await execFileP(process.execPath, ['-e', CHILD_SCRIPT, path.join(root, 'js'), path.join(root, 'store', 'vfs'), phase], {
      uid: NOBODY,
      gid: NOBODY,
      cwd: '/',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', GRAPHDRIVER_ADDON: addon, NODE_PATH: path.join(REPO, 'node_modules') },
    });
    return JSON.parse(stdout) as Record<string, unknown>;
  }

  it('creates, copies, diffs, applies and removes layers as an ordinary user', async () => {
    const built = await runAsNobody('build');
    expect(built.uid).toBe(NOBODY);
    expect(built.changes).toEqual([
      { path: '/ln', kind: 2 },
      { path: '/new', kind: 1 },
    ]);
    expect(built.applied).toBe(3);
    expect(built.diffSize).toBe(3);
    const dirs = built.dirs as Record<string, string>;
    // the copy kept everything an unprivileged user can make, and the applied diff reproduces the child
    const st = fs.lstatSync(path.join(dirs.child!, 'd', 'f'));
    expect(st.uid).toBe(NOBODY);
    expect(st.nlink).toBe(2);
    expect(fs.lstatSync(path.join(dirs.child!, 'fifo')).isFIFO()).toBe(true);
    expect(fs.statSync(path.join(dirs.child!, 'ro')).mode & 0o777).toBe(0o555);
    expect(await diffTrees(dirs.child!, dirs.applied!)).toEqual([]);
    expect((await diffTrees(dirs.base!, dirs.child!)).sort()).toEqual(['missing /ln', 'unexpected /new']);

    // removal copes with the read-only directories without any privilege
    const removed = await runAsNobody('remove');
    expect(removed.left).toEqual([]);
  });
});
