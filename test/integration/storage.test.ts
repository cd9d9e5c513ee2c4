/**
 * The store against the real kernel, on overlay2 and vfs: import + commit (a 2-layer image), the container init
 * layer exactly as Docker writes it (planted symlinks included), exact changes, commit diffIDs equal to the
 * exported diff's digest, clean removal; a process killed at random points while registering and committing
 * (the store reopens with nothing partial and verify finds nothing wrong); the lock against a second process;
 * hostile and unknown input.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import * as ts from 'typescript';

import { ChangeKind } from '../../lib/archive/change';
import { readTar } from '../../lib/archive/tar-reader';
import { listDriverLayers } from '../../lib/layer/driver-layers';
import { loadBindings } from '../../lib/native/bindings';
import { UmountFlags } from '../../lib/native/constants';
import { Storage } from '../../lib/storage/storage';
import { describeIf, isRoot, kernelHasFs } from '../support/native';
import { buildTar, type TestEntry } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const execFileP = promisify(execFile);
// Children load the compiled copy of lib/ from a temp dir, whose relative addon path does not exist: point them at
// the addon this test run uses.
const CHILD_ENV = {
  ...process.env,
  GRAPHDRIVER_ADDON: process.env.GRAPHDRIVER_ADDON ?? path.resolve(__dirname, '..', '..', 'build', 'Release', 'graphdriver.node'),
};
const REPO = path.resolve(__dirname, '..', '..');
const b = loadBindings();

const sha = (buf: Buffer): string => `sha256:${createHash('sha256').update(buf).digest('hex')}`;

async function collect(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Entries of a tar (whiteout times left out: naive diffs stamp them with the current time). */
async function tarEntries(tar: Buffer): Promise<Array<{ name: string; type: string; mode: number; size: number; mtime: number | null; body: string }>> {
  const out: Array<{ name: string; type: string; mode: number; size: number; mtime: number | null; body: string }> = [];
  for await (const e of readTar(Readable.from([tar]))) {
    const parts: Buffer[] = [];
    for await (const c of e.body()) parts.push(Buffer.from(c));
    const h = e.header;
    const whiteout = path.posix.basename(h.name).startsWith('.wh.');
    out.push({ name: h.name, type: h.type, mode: h.mode, size: h.size, mtime: whiteout ? null : h.mtimeSec, body: sha(Buffer.concat(parts)) });
  }
  return out;
}

/** Mount points at or below `dir`, from the mount table. */
function mountsBelow(dir: string): string[] {
  const real = fs.realpathSync(dir);
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === real || m.startsWith(`${real}/`));
}

/** Unmounts whatever a failed test left below `dir`, deepest first. */
async function unmountAll(dir: string): Promise<void> {
  if (!fs.existsSync(dir)) return;
  for (const m of mountsBelow(dir).sort().reverse()) await b.umount(m, UmountFlags.MNT_DETACH).catch(() => undefined);
}

const overlayReason = !isRoot ? 'needs root' : !kernelHasFs('overlay') ? 'the kernel has no overlay' : null;
const vfsReason = !isRoot ? 'needs root (ownership and device nodes in the layers)' : null;

/** Base layer: a small root with things the init layer must replace or keep, planted by the image. */
function baseEntries(outside: string): TestEntry[] {
  return [
    { name: 'bin/', type: 'dir' },
    { name: 'bin/sh', data: '#!ELF sh', mode: 0o755 },
    { name: 'bin/sh2', type: 'link', linkname: 'bin/sh' },
    { name: 'bin/tool', data: 'ELF tool', mode: 0o755 },
    { name: 'etc/', type: 'dir' },
    { name: 'etc/os-release', data: 'ID=test\n' },
    { name: 'etc/hosts', data: '10.0.0.1 image-hosts\n', mode: 0o600 },
    // Planted: symlinks that would send the init files outside the layer if they were followed.
    { name: 'etc/hostname', type: 'symlink', linkname: `../../../../../../../../${outside.slice(1)}/hostname` },
    { name: 'etc/mtab', data: 'not a symlink\n' },
    { name: 'dev', type: 'symlink', linkname: outside },
    { name: 'proc/', type: 'dir', mode: 0o555 },
    { name: 'lib/', type: 'dir' },
    { name: 'lib/libx.so', data: 'ELF lib' },
    { name: 'lib/libx.so.1', type: 'symlink', linkname: 'libx.so' },
    { name: 'usr/', type: 'dir' },
    { name: 'usr/share/', type: 'dir' },
    { name: 'usr/share/doc/', type: 'dir' },
    { name: 'usr/share/doc/README', data: 'base readme' },
    { name: 'var/', type: 'dir' },
    { name: 'var/log/', type: 'dir' },
  ];
}

for (const [driverName, reason] of [
  ['overlay2', overlayReason],
  ['vfs', vfsReason],
] as const) {
  describeIf(reason, `Storage on ${driverName}`, () => {
    jest.setTimeout(120_000);
    let tmp: string;
    let root: string;
    let outside: string;
    let s: Storage | null = null;

    beforeAll(() => {
      tmp = makeTmp(`gd-storage-${driverName}-`);
      root = path.join(tmp, 'root');
      outside = path.join(tmp, 'outside');
      fs.mkdirSync(outside);
    });
    afterAll(async () => {
      await s?.close().catch(() => undefined);
      await unmountAll(tmp);
      removeTmp(tmp);
    });

    test('import, commit, containers with exact init files and changes, commit of the diff, clean removal', async () => {
      s = await Storage.open({ root, driver: driverName });
      expect(s.driver.name).toBe(driverName);

      // Layer 1: import. Layer 2: commit of a container.
      const baseTar = buildTar(baseEntries(outside));
      const base = await s.importImage(Readable.from([baseTar]), { reference: 'test/base:1' });
      expect(base.references).toEqual(['docker.io/test/base:1']);
      expect(base.diffIds).toEqual([sha(baseTar)]);
      expect(base.layers).toEqual([sha(baseTar)]);
      const c0 = await s.createContainer('test/base:1');
      const p0 = await s.mountContainer(c0.id);
      fs.writeFileSync(path.join(p0, 'usr/share/doc/README'), 'readme of layer two');
      fs.rmSync(path.join(p0, 'bin/tool'));
      fs.mkdirSync(path.join(p0, 'opt/app'), { recursive: true });
      fs.writeFileSync(path.join(p0, 'opt/app/run'), '#!/bin/sh\n', { mode: 0o755 });
      fs.writeFileSync(path.join(p0, 'opt/app/conf'), 'x=1\n');
      await s.unmountContainer(c0.id);
      const app = await s.commitContainer(c0.id, { reference: 'test/app:2', message: 'layer two' });
      expect(app.diffIds.slice(0, 1)).toEqual(base.diffIds);
      expect(app.diffIds).toHaveLength(2);
      expect(app.layers[0]).toBe(base.layers[0]);
      expect(app.parent).toBe(base.id);
      const appCfg = await s.imageConfig(app.id);
      expect(appCfg.history?.map((h) => [h.created_by, h.comment])).toEqual([
        ['graphdriver import', undefined],
        ['graphdriver commit', 'layer two'],
      ]);

      // A container of the 2-layer image: init files exactly as Docker's initlayer.Setup.
      const c1 = await s.createContainer('test/app:2', { name: 'c1' });
      expect(c1.initId).toBe(`${c1.mountId}-init`);
      expect(fs.readFileSync(path.join(root, 'image', driverName, 'layerdb', 'mounts', c1.id, 'mount-id'), 'utf8')).toBe(c1.mountId);
      expect(fs.readFileSync(path.join(root, 'image', driverName, 'layerdb', 'mounts', c1.id, 'init-id'), 'utf8')).toBe(c1.initId);
      expect(fs.readFileSync(path.join(root, 'image', driverName, 'layerdb', 'mounts', c1.id, 'parent'), 'utf8')).toBe(app.layers[1]);
      expect(await s.containerChanges('c1')).toEqual([]);
      const p1 = await s.mountContainer('c1');
      const kind = (rel: string): [string, number, number, number] => {
        const st = fs.lstatSync(path.join(p1, rel));
        const t = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
        return [t, st.mode & 0o7777, st.uid, t === 'file' ? st.size : 0];
      };
      for (const d of ['dev', 'dev/pts', 'dev/shm', 'sys']) expect([d, kind(d)]).toEqual([d, ['dir', 0o755, 0, 0]]);
      expect(kind('proc')).toEqual(['dir', 0o555, 0, 0]); // existing directories are kept as they are
      for (const f of ['.dockerenv', 'etc/resolv.conf', 'etc/hosts', 'etc/hostname', 'dev/console']) expect([f, kind(f)]).toEqual([f, ['file', 0o755, 0, 0]]);
      expect(kind('etc/mtab')[0]).toBe('symlink');
      expect(fs.readlinkSync(path.join(p1, 'etc/mtab'))).toBe('/proc/mounts');
      expect(fs.readdirSync(outside)).toEqual([]); // the planted symlinks redirected nothing
      // The image's layers are visible through init and rw.
      expect(fs.readFileSync(path.join(p1, 'usr/share/doc/README'), 'utf8')).toBe('readme of layer two');
      expect(fs.existsSync(path.join(p1, 'bin/tool'))).toBe(false);
      expect(fs.readFileSync(path.join(p1, 'bin/sh2'), 'utf8')).toBe('#!ELF sh');

      // Changes in the rw layer.
      fs.writeFileSync(path.join(p1, 'new.txt'), 'new file');
      fs.writeFileSync(path.join(p1, 'etc/os-release'), 'ID=changed\nVERSION=2\n');
      fs.rmSync(path.join(p1, 'usr/share/doc/README'));
      fs.rmSync(path.join(p1, 'opt/app'), { recursive: true });
      fs.mkdirSync(path.join(p1, 'data'));
      fs.writeFileSync(path.join(p1, 'data/f1'), 'one');
      fs.chmodSync(path.join(p1, 'lib/libx.so'), 0o600);
      const C = ChangeKind;
      // Docker's two algorithms: overlay2 reads the upper dir (a modified file's unchanged parents are not
      // listed, a deletion's direct parent is); vfs compares whole trees (every parent of a change is listed).
      const expected =
        driverName === 'overlay2'
          ? [
              { path: '/data', kind: C.Add },
              { path: '/data/f1', kind: C.Add },
              { path: '/etc/os-release', kind: C.Modify },
              { path: '/lib/libx.so', kind: C.Modify },
              { path: '/new.txt', kind: C.Add },
              { path: '/opt', kind: C.Modify },
              { path: '/opt/app', kind: C.Delete },
              { path: '/usr/share/doc', kind: C.Modify },
              { path: '/usr/share/doc/README', kind: C.Delete },
            ]
          : [
              { path: '/data', kind: C.Add },
              { path: '/data/f1', kind: C.Add },
              { path: '/etc', kind: C.Modify },
              { path: '/etc/os-release', kind: C.Modify },
              { path: '/lib', kind: C.Modify },
              { path: '/lib/libx.so', kind: C.Modify },
              { path: '/new.txt', kind: C.Add },
              { path: '/opt', kind: C.Modify },
              { path: '/opt/app', kind: C.Delete },
              { path: '/usr', kind: C.Modify },
              { path: '/usr/share', kind: C.Modify },
              { path: '/usr/share/doc', kind: C.Modify },
              { path: '/usr/share/doc/README', kind: C.Delete },
            ];
      expect(await s.containerChanges(c1.id)).toEqual(expected);
      await s.unmountContainer(c1.id);

      // Commit: one more diffID, the digest of the diff tar. overlay2's native diff is byte-stable, so an
      // export made before the commit has the same digest; naive diffs stamp whiteouts with the current time
      // (as Docker's ExportChanges), so there the commit's own stream is compared with the export entry by entry.
      const exported = await collect(await s.exportContainerDiff('c1'));
      const seen: Buffer[] = [];
      const final = await s.commitContainer('c1', { reference: 'test/final:3', onData: (c) => seen.push(Buffer.from(c)) });
      const committedTar = Buffer.concat(seen);
      expect(final.diffIds).toEqual([...app.diffIds, sha(committedTar)]);
      if (driverName === 'overlay2') expect(sha(committedTar)).toBe(sha(exported));
      else expect(await tarEntries(committedTar)).toEqual(await tarEntries(exported));
      expect((await tarEntries(exported)).map((e) => e.name)).toEqual([
        'data/',
        'data/f1',
        'etc/',
        'etc/os-release',
        'lib/',
        'lib/libx.so',
        'new.txt',
        'opt/',
        'opt/.wh.app',
        'usr/',
        'usr/share/',
        'usr/share/doc/',
        'usr/share/doc/.wh.README',
      ]);
      expect(final.layers.slice(0, 2)).toEqual(app.layers);
      const top = await s.getLayer(final.layers[2]!);
      expect(top).toMatchObject({ diffId: sha(committedTar), parent: app.layers[1] });
      const layerDir = path.join(root, 'image', driverName, 'layerdb', 'sha256', top.chainId.slice(7));
      expect(fs.readFileSync(path.join(layerDir, 'diff'), 'utf8')).toBe(top.diffId);
      expect(fs.readFileSync(path.join(layerDir, 'parent'), 'utf8')).toBe(app.layers[1]);
      expect(fs.readFileSync(path.join(layerDir, 'cache-id'), 'utf8')).toBe(top.cacheId);
      expect(Number(fs.readFileSync(path.join(layerDir, 'size'), 'utf8'))).toBe(top.size);
      expect(final.size).toBe((await Promise.all(final.layers.map((l) => s!.getLayer(l)))).reduce((n, l) => n + l.size, 0));

      // A container of the committed image sees the changes.
      const c2 = await s.createContainer('test/final:3');
      const p2 = await s.mountContainer(c2.id);
      expect(fs.readFileSync(path.join(p2, 'new.txt'), 'utf8')).toBe('new file');
      expect(fs.readFileSync(path.join(p2, 'etc/os-release'), 'utf8')).toBe('ID=changed\nVERSION=2\n');
      expect(fs.readFileSync(path.join(p2, 'data/f1'), 'utf8')).toBe('one');
      expect(fs.lstatSync(path.join(p2, 'lib/libx.so')).mode & 0o7777).toBe(0o600);
      expect(fs.existsSync(path.join(p2, 'usr/share/doc/README'))).toBe(false);
      expect(fs.existsSync(path.join(p2, 'opt/app'))).toBe(false);
      expect(fs.readdirSync(path.join(p2, 'opt'))).toEqual([]);
      expect(fs.readFileSync(path.join(p2, 'bin/sh'), 'utf8')).toBe('#!ELF sh');
      expect(fs.readlinkSync(path.join(p2, 'etc/mtab'))).toBe('/proc/mounts');
      expect(fs.statSync(path.join(p2, 'etc/hosts')).size).toBe(0);
      expect(await s.containerChanges(c2.id)).toEqual([]);

      expect((await s.listImages()).map((i) => i.references)).toEqual(expect.arrayContaining([['docker.io/test/base:1'], ['docker.io/test/app:2'], ['docker.io/test/final:3']]));
      expect((await s.listContainers()).map((c) => c.id).sort()).toEqual([c0.id, c1.id, c2.id].sort());
      expect(await s.verify()).toMatchObject({ ok: true, orphanDriverLayers: [], missingDriverLayers: [], unreferencedLayers: [] });

      // Images in use cannot go; then everything is removed.
      await expect(s.removeImage(final.id)).rejects.toMatchObject({ code: 'ERR_IMAGE_IN_USE' });
      await s.removeContainer(c2.id); // still mounted: unmounted first
      await s.removeContainer('c1');
      await s.removeContainer(c0.id);
      expect(await s.removeImage('test/final:3')).toMatchObject({ deleted: [final.id], deletedLayers: [final.layers[2]] });
      expect(await s.removeImage('test/app:2')).toMatchObject({ deleted: [app.id], deletedLayers: [app.layers[1]] });
      expect(await s.removeImage('test/base:1')).toMatchObject({ deleted: [base.id], deletedLayers: [base.layers[0]] });
      expect(await s.listLayers()).toEqual([]);
      expect(await s.listImages()).toEqual([]);
      expect(await s.listContainers()).toEqual([]);
      const db = path.join(root, 'image', driverName, 'layerdb');
      for (const d of ['sha256', 'mounts', 'tmp']) expect([d, fs.readdirSync(path.join(db, d))]).toEqual([d, []]);
      expect(fs.readdirSync(path.join(root, 'containers'))).toEqual([]);
      expect(fs.readdirSync(path.join(root, 'image', driverName, 'imagedb', 'content', 'sha256'))).toEqual([]);
      expect(await listDriverLayers(driverName, path.join(root, driverName))).toEqual([]);
      expect(mountsBelow(root)).toEqual([]);
      expect((await s.verify()).ok).toBe(true);
      await s.close();
      s = null;
      expect(fs.existsSync(path.join(root, 'graphdriver.lock'))).toBe(false);
    });

    test('import from a directory and from a gzip file; the same content shares one layer', async () => {
      const r3 = path.join(tmp, 'root3');
      s = await Storage.open({ root: r3, driver: driverName });
      const src = path.join(tmp, 'src-tree');
      fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
      fs.writeFileSync(path.join(src, 'etc/motd'), 'welcome\n');
      fs.symlinkSync('motd', path.join(src, 'etc/motd.link'));
      const fromDir = await s.importImage(src, { reference: 'dir:1' });
      expect(fromDir.layers).toHaveLength(1);
      // The layer tar of the directory, exported again from the driver, gzipped and imported from a file.
      const layer = await s.getLayer(fromDir.layers[0]!);
      const tarBytes = await collect(await s.driver.diff(layer.cacheId, null));
      expect(sha(tarBytes)).toBe(layer.diffId);
      const gz = path.join(tmp, 'layer.tar.gz');
      fs.writeFileSync(gz, zlib.gzipSync(tarBytes));
      const fromFile = await s.importImage(gz, { reference: 'file:1', message: 'from a file' });
      expect(fromFile.layers).toEqual(fromDir.layers);
      expect(fromFile.id).not.toBe(fromDir.id);
      expect(await s.layerReferences(layer.chainId)).toEqual({ handles: 2, children: 0, containers: 0 });
      expect(await s.listLayers()).toHaveLength(1);
      const c = await s.createContainer('file:1');
      const p = await s.mountContainer(c.id);
      expect(fs.readFileSync(path.join(p, 'etc/motd'), 'utf8')).toBe('welcome\n');
      expect(fs.readlinkSync(path.join(p, 'etc/motd.link'))).toBe('motd');
      await s.removeContainer(c.id);
      await s.removeImage('dir:1');
      expect(await s.listLayers()).toHaveLength(1);
      await s.removeImage('file:1');
      expect(await s.listLayers()).toEqual([]);
      await s.close();
      s = null;
    });

    test('hostile and unknown input: typed errors, store unchanged', async () => {
      const r2 = path.join(tmp, 'root2');
      s = await Storage.open({ root: r2, driver: driverName });
      const ok = await s.importImage(Readable.from([buildTar([{ name: 'f', data: 'x' }])]), { reference: 'ok' });
      const before = await s.listLayers();
      const hostile = buildTar([
        { name: 'a/', type: 'dir' },
        { name: 'a/../../escape', data: 'x' },
      ]);
      await expect(s.importImage(Readable.from([hostile]), { reference: 'evil' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
      const linkOut = buildTar([
        { name: 'l', type: 'symlink', linkname: outside },
        { name: 'l/pwned', data: 'x' },
      ]);
      await expect(s.importImage(Readable.from([linkOut]))).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
      expect(fs.readdirSync(outside)).toEqual([]);
      expect(fs.existsSync(path.join(tmp, 'escape'))).toBe(false);
      expect(await s.listLayers()).toEqual(before);
      const report = await s.verify();
      expect(report).toMatchObject({ ok: true, orphanDriverLayers: [], unreferencedLayers: [] });
      expect(fs.readdirSync(path.join(r2, 'image', driverName, 'layerdb', 'tmp'))).toEqual([]);

      await expect(s.getImage('nope:1')).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
      await expect(s.getImage('../../etc/passwd')).rejects.toMatchObject({ code: 'ERR_INVALID_REFERENCE' });
      await expect(s.createContainer('nope')).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
      await expect(s.mountContainer('../../../etc')).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
      await expect(s.removeContainer('0123456789ab')).rejects.toMatchObject({ code: 'ERR_CONTAINER_NOT_FOUND' });
      await expect(s.getLayer('sha256:../../../etc/passwd')).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
      await expect(s.getLayer(`sha256:${'a'.repeat(64)}`)).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
      await expect(s.tagImage('ok', 'UPPER')).rejects.toMatchObject({ code: 'ERR_INVALID_REFERENCE' });
      await expect(s.registerLayer(Readable.from([Buffer.from('garbage, not a tar')]))).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
      expect(await s.listLayers()).toEqual(before);
      expect((await s.getImage('ok')).id).toBe(ok.id);
      await s.close();
      s = null;
    });
  });
}

/** Transpiles lib/ to CommonJS in `out` (no type check) so that child processes can run it with plain node. */
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
        fs.mkdirSync(path.dirname(dest), { recursive: true });
        fs.writeFileSync(dest, js);
      }
    }
  };
  walk(path.join(REPO, 'lib'));
}

/**
 * The crash child: opens the store, clears what earlier (killed) children left, then loops over the store's
 * write paths (import = register + image, create, mount + write, commit, remove, plain registration on a chain)
 * until it is killed. Prints "ready" once the store is open.
 */
const CRASH_CHILD = `
const path = require('path');
const { randomBytes } = require('crypto');
const [lib, root, driver] = process.argv.slice(1);
const { Storage } = require(path.join(lib, 'lib/storage/storage'));
const { encodeHeader, paddingFor, END_OF_ARCHIVE } = require(path.join(lib, 'lib/archive/tar-writer'));
function tar(n) {
  const parts = [];
  parts.push(encodeHeader({ name: 'd' + n + '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeSec: 1700000000, size: 0 }));
  for (let i = 0; i < 20; i++) {
    const data = randomBytes(1000 + i * 97);
    parts.push(encodeHeader({ name: 'd' + n + '/f' + i, type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeSec: 1700000000, size: data.length }), data, Buffer.alloc(paddingFor(data.length)));
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}
(async () => {
  const s = await Storage.open({ root, driver, lockTimeout: 10000 });
  process.stdout.write('ready\\n');
  for (const c of await s.listContainers()) await s.removeContainer(c.id);
  for (const i of await s.listImages()) await s.removeImage(i.id, { force: true }).catch(() => undefined);
  for (let n = 0; ; n++) {
    const img = await s.importImage(require('stream').Readable.from([tar(n)]), { reference: 'crash/base:' + n });
    const c = await s.createContainer(img.id);
    const p = await s.mountContainer(c.id);
    require('fs').writeFileSync(path.join(p, 'changed-' + n), randomBytes(3000));
    await s.unmountContainer(c.id);
    const committed = await s.commitContainer(c.id, { reference: 'crash/commit:' + n });
    const l = await s.registerLayer(require('stream').Readable.from([tar(n + 1000)]), committed.layers[committed.layers.length - 1]);
    await s.releaseLayer(l.chainId);
    await s.removeContainer(c.id);
    if (n % 2 === 0) await s.removeImage(committed.id);
  }
})().catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(1); });
`;

const LOCK_CHILD = `
const path = require('path');
const [lib, root, driver, timeout] = process.argv.slice(1);
const { Storage } = require(path.join(lib, 'lib/storage/storage'));
(async () => {
  const t0 = Date.now();
  try {
    const s = await Storage.open({ root, driver, lockTimeout: Number(timeout) });
    await s.close();
    process.stdout.write(JSON.stringify({ opened: true, waitedMs: Date.now() - t0 }));
  } catch (e) {
    process.stdout.write(JSON.stringify({ opened: false, code: e.code, message: e.message }));
  }
})();
`;

describeIf(overlayReason, 'Storage across processes (overlay2)', () => {
  jest.setTimeout(180_000);
  let tmp: string;
  let js: string;

  beforeAll(() => {
    tmp = makeTmp('gd-storage-proc-');
    js = path.join(tmp, 'js');
    transpileLib(js);
    // The transpiled lib resolves its dependencies (zstd-napi, ...) from the checkout.
    fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(js, 'node_modules'));
  });
  afterAll(async () => {
    await unmountAll(tmp);
    removeTmp(tmp);
  });

  test('a second process gets ERR_STORE_LOCKED, or waits for the lock', async () => {
    const root = path.join(tmp, 'lock-root');
    const s = await Storage.open({ root, driver: 'overlay2' });
    try {
      const { stdout } = await execFileP(process.execPath, ['-e', LOCK_CHILD, js, root, 'overlay2', '0'], { env: CHILD_ENV });
      const r = JSON.parse(stdout) as { opened: boolean; code?: string; message?: string };
      expect(r).toMatchObject({ opened: false, code: 'ERR_STORE_LOCKED' });
      expect(r.message).toContain(`process ${process.pid}`);
      const waiting = execFileP(process.execPath, ['-e', LOCK_CHILD, js, root, 'overlay2', '20000'], { env: CHILD_ENV });
      await new Promise((res) => setTimeout(res, 500));
      await s.close();
      const w = JSON.parse((await waiting).stdout) as { opened: boolean; waitedMs: number };
      expect(w.opened).toBe(true);
    } finally {
      await s.close();
    }
  });

  test('killed at random points while registering and committing: reopen shows whole layers only, verify finds nothing wrong', async () => {
    const root = path.join(tmp, 'crash-root');
    const trials = 30;
    const started = Date.now();
    let interrupted = 0;
    let lastLayers = 0;
    for (let t = 0; t < trials; t++) {
      const child = spawn(process.execPath, ['-e', CRASH_CHILD, js, root, 'overlay2'], { stdio: ['ignore', 'pipe', 'pipe'], env: CHILD_ENV });
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
      await new Promise<void>((res, rej) => {
        child.stdout.on('data', (c: Buffer) => {
          if (c.toString().includes('ready')) res();
        });
        void exited.then(() => rej(new Error(`crash child exited before it was ready: ${stderr}`)));
      });
      // Random point: during the clean-up of the previous trial's leftovers, or in the work loop.
      await new Promise((res) => setTimeout(res, Math.floor(Math.random() * 400)));
      child.kill('SIGKILL');
      expect(await exited).toBeNull();
      expect(stderr).toBe('');

      const tmpDir = path.join(root, 'image', 'overlay2', 'layerdb', 'tmp');
      if (fs.readdirSync(tmpDir).length > 0) interrupted++;
      const s = await Storage.open({ root, driver: 'overlay2' });
      try {
        const report = await s.verify();
        expect({ trial: t, ...report, unreferencedLayers: [] }).toEqual({
          trial: t,
          ok: true,
          incomplete: [],
          corruptMetadata: [],
          missingDriverLayers: [],
          orphanDriverLayers: [],
          corruptImages: [],
          danglingImages: [],
          danglingReferences: [],
          corruptContainers: [],
          unreferencedLayers: [],
          repaired: [],
        });
        expect(fs.readdirSync(tmpDir)).toEqual([]);
        // Every listed layer is whole: metadata complete, driver layer there, chain consistent.
        const layers = await s.listLayers();
        for (const l of layers) {
          const dir = path.join(root, 'image', 'overlay2', 'layerdb', 'sha256', l.chainId.slice(7));
          expect(fs.readdirSync(dir).sort()).toEqual(l.parent === null ? ['cache-id', 'diff', 'size', 'tar-split.json.gz'] : ['cache-id', 'diff', 'parent', 'size', 'tar-split.json.gz']);
          expect(await s.driver.exists(l.cacheId)).toBe(true);
        }
        for (const img of await s.listImages()) for (const c of img.layers) expect(layers.some((l) => l.chainId === c)).toBe(true);
        for (const c of await s.listContainers()) {
          expect(await s.driver.exists(c.mountId)).toBe(true);
          expect(await s.driver.exists(c.initId)).toBe(true);
        }
        lastLayers = layers.length;
      } finally {
        await s.close();
      }
    }
    // eslint-disable-next-line no-console
    console.log(`crash test: ${trials} kills in ${Date.now() - started} ms, ${interrupted} interrupted with work in layerdb/tmp, ${lastLayers} layers at the end`);

    // Everything can still be removed afterwards.
    const s = await Storage.open({ root, driver: 'overlay2' });
    try {
      for (const c of await s.listContainers()) await s.removeContainer(c.id);
      // Children before parents: whatever is refused now goes in a later round.
      for (let round = 0; round < 10 && (await s.listImages()).length > 0; round++) {
        for (const i of await s.listImages()) await s.removeImage(i.id, { force: true }).catch(() => undefined);
      }
      expect(await s.listImages()).toEqual([]);
      await s.verify({ prune: true });
      expect(await s.listLayers()).toEqual([]);
      expect(await listDriverLayers('overlay2', path.join(root, 'overlay2'))).toEqual([]);
    } finally {
      await s.close();
    }
    expect(mountsBelow(root)).toEqual([]);
  });
});
