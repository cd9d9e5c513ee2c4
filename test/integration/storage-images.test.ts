/**
 * loadImage / saveImage / exact layer tars against the real kernel, on overlay2 and vfs: a multi-layer image with
 * whiteouts (generated tars: our writer with PAX headers, GNU tar in gnu and posix formats with long names and a
 * 10240-byte record, a gzip layer), loaded from `docker save` archives in both Docker layouts and from OCI
 * layouts (gzip and zstd blobs, nested index), from files and streams; container, change, commit, save, load
 * into a second store with the same ids and diffIDs; saved layer tars equal to the originals byte for byte; bad
 * archives rejected with typed errors and the store left exactly as it was.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import * as zlib from 'node:zlib';

import { ChangeKind } from '../../lib/archive/change';
import { listDriverLayers } from '../../lib/layer/driver-layers';
import { loadBindings } from '../../lib/native/bindings';
import { UmountFlags } from '../../lib/native/constants';
import { Storage } from '../../lib/storage/storage';
import { collect, dockerArchive, hex, imageConfig, ociArchive, savedLayers, sha, tarMembers } from '../support/image-archives';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';
import { buildTar, type TestEntry } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const b = loadBindings();

function mountsBelow(dir: string): string[] {
  const real = fs.realpathSync(dir);
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === real || m.startsWith(`${real}/`));
}

async function unmountAll(dir: string): Promise<void> {
  if (!fs.existsSync(dir)) return;
  for (const m of mountsBelow(dir).sort().reverse()) await b.umount(m, UmountFlags.MNT_DETACH).catch(() => undefined);
}

const LONG = `usr/share/doc/${'very-long-package-name-'.repeat(4)}/${'changelog.Debian.'.repeat(4)}gz`;

/** Base layer through our writer: PAX long and non-ASCII names, xattrs, hardlinks, a 2 MiB file. */
function baseLayer(): Buffer {
  const entries: TestEntry[] = [
    { name: 'bin/', type: 'dir' },
    { name: 'bin/sh', data: '#!ELF sh', mode: 0o755 },
    { name: 'bin/ping', data: 'ELF ping', mode: 0o755, xattrs: { 'security.capability': Buffer.from([1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) } },
    { name: 'bin/sh2', type: 'link', linkname: 'bin/sh' },
    { name: 'etc/', type: 'dir' },
    { name: 'etc/os-release', data: 'ID=test\n' },
    { name: 'etc/passwd', data: 'root:x:0:0::/root:/bin/sh\n' },
    { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
    { name: 'opt/', type: 'dir' },
    { name: 'opt/old/', type: 'dir' },
    { name: 'opt/old/a', data: 'old a' },
    { name: 'opt/old/b', data: 'old b' },
    { name: 'tmp/', type: 'dir', mode: 0o1777 },
    { name: 'tmp/deleteme', data: 'to be deleted' },
    { name: 'usr/', type: 'dir' },
    { name: 'usr/lib/', type: 'dir' },
    { name: 'usr/lib/libc.so', data: 'ELF libc' },
    { name: 'usr/share/', type: 'dir' },
    { name: 'usr/share/doc/', type: 'dir' },
    { name: `${path.posix.dirname(LONG)}/`, type: 'dir' },
    { name: LONG, data: 'long name (PAX path)' },
    { name: 'usr/share/doc/ünïcødé', data: 'non-ASCII name' },
    { name: 'var/', type: 'dir' },
    { name: 'var/big.bin', data: Buffer.alloc(2 * 1024 * 1024 + 123, 0x5a) },
  ];
  return buildTar(entries);
}

/** Writes a tree and tars it with GNU tar (numeric owner root, fixed times). */
function gnuTar(dir: string, format: 'gnu' | 'posix', files: Record<string, string | null>): Buffer {
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, data] of Object.entries(files)) {
    const p = path.join(dir, name);
    if (data === null) fs.mkdirSync(p, { recursive: true });
    else {
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.writeFileSync(p, data);
    }
  }
  const args = ['--format', format, '--numeric-owner', '--owner=0', '--group=0', '--mtime=2024-01-02 03:04:05', '--sort=name', '-C', dir, '-cf', '-', '.'];
  if (format === 'posix') args.unshift('--pax-option=delete=atime,delete=ctime');
  return execFileSync('tar', args, { maxBuffer: 64 << 20 });
}

interface Fixture {
  l1: Buffer;
  l2: Buffer;
  l3: Buffer;
  /** l3 gzip-compressed, as it sits in the archive. */
  l3gz: Buffer;
  diffIds: string[];
  configA: Buffer;
  configB: Buffer;
}

function fixture(tmp: string): Fixture {
  const l1 = baseLayer();
  // GNU format: GNU long names (over 100 bytes), whiteouts, an opaque directory, the 10240-byte record padding.
  const l2 = gnuTar(path.join(tmp, 'l2'), 'gnu', {
    'tmp/.wh.deleteme': '',
    'opt/old/.wh..wh..opq': '',
    'opt/old/new': 'new in layer 2',
    [`usr/share/gnu/${'x'.repeat(90)}/${'y'.repeat(60)}`]: 'GNU long name',
    'etc/os-release': 'ID=test\nVERSION=2\n',
  });
  // POSIX (PAX) format from GNU tar, gzip-compressed in the archive.
  const l3 = gnuTar(path.join(tmp, 'l3'), 'posix', {
    'etc/app.conf': 'key=value\n',
    [`srv/${'p'.repeat(120)}`]: 'PAX long name from GNU tar',
    'usr/lib/.wh.libc.so': '',
  });
  const l3gz = zlib.gzipSync(l3);
  const diffIds = [sha(l1), sha(l2), sha(l3)];
  return { l1, l2, l3, l3gz, diffIds, configA: imageConfig(diffIds), configB: imageConfig([diffIds[0]!], { created: '2023-05-06T07:08:09Z' }) };
}

/** Image A (3 layers, tagged test/app:1) and image B (the base layer, tagged test/base:latest, shared). */
function archiveOf(f: Fixture, layout: 'legacy' | 'blobs'): Buffer {
  return dockerArchive(
    [
      { layers: [f.l1, f.l2, f.l3gz], config: f.configA, repoTags: ['test/app:1'] },
      { layers: [f.l1], config: f.configB, repoTags: ['test/base:latest'] },
    ],
    { layout, diffIds: [f.diffIds, [f.diffIds[0]!]] },
  );
}

/** Everything a load could change. */
async function snapshot(s: Storage, root: string): Promise<unknown> {
  const imageDir = path.join(root, 'image', s.driver.name);
  const read = (p: string): string | null => (fs.existsSync(p) ? fs.readFileSync(p, 'utf8') : null);
  const ls = (p: string): string[] => (fs.existsSync(p) ? fs.readdirSync(p).sort() : []);
  return {
    images: await s.listImages(),
    layers: await s.listLayers(),
    repositories: read(path.join(imageDir, 'repositories.json')),
    layerdb: ls(path.join(imageDir, 'layerdb', 'sha256')),
    layerdbTmp: ls(path.join(imageDir, 'layerdb', 'tmp')),
    imagedb: ls(path.join(imageDir, 'imagedb', 'content', 'sha256')),
    driverLayers: await listDriverLayers(s.driver.name, path.join(root, s.driver.name)),
    spool: ls(path.join(root, 'tmp')),
  };
}

const overlayReason = !isRoot ? 'needs root' : !kernelHasFs('overlay') ? 'the kernel has no overlay' : null;
const vfsReason = !isRoot ? 'needs root (ownership, xattrs and device nodes in the layers)' : null;
const tarReason = haveTool('tar') ? null : 'GNU tar is not installed (apt-get install tar)';

for (const [driverName, reason] of [
  ['overlay2', overlayReason ?? tarReason],
  ['vfs', vfsReason ?? tarReason],
] as const) {
  describeIf(reason, `loadImage / saveImage on ${driverName}`, () => {
    let tmp: string;
    let f: Fixture;
    const stores: Storage[] = [];
    const open = async (name: string): Promise<Storage> => {
      const s = await Storage.open({ root: path.join(tmp, name), driver: driverName, sync: false });
      stores.push(s);
      return s;
    };

    beforeAll(() => {
      tmp = makeTmp(`gd-images-${driverName}-`);
      f = fixture(tmp);
    });
    afterAll(async () => {
      for (const s of stores) await s.close().catch(() => undefined);
      await unmountAll(tmp);
      removeTmp(tmp);
    });

    test('load (Docker ≤ 24 layout, file) → container → change → commit → save → load elsewhere: same ids, diffIDs and bytes', async () => {
      const s1 = await open('s1');
      const file = path.join(tmp, 'app.tar');
      fs.writeFileSync(file, archiveOf(f, 'legacy'));
      const loaded = await s1.loadImage(file);
      const idA = sha(f.configA);
      const idB = sha(f.configB);
      expect(loaded.map((i) => i.id)).toEqual([idA, idB]);
      expect(loaded[0]!.diffIds).toEqual(f.diffIds);
      expect(loaded[0]!.references).toEqual(['docker.io/test/app:1']);
      expect(loaded[1]!.references).toEqual(['docker.io/test/base:latest']);
      expect((await s1.listLayers()).length).toBe(3); // the base layer is shared
      // Nothing of the archive is left behind (read in place, no spool).
      expect(fs.readdirSync(path.join(tmp, 's1', 'tmp'))).toEqual([]);

      // The layers as registered: whiteouts applied, long names, the committed change later.
      const c = await s1.createContainer('test/app:1');
      const mnt = await s1.mountContainer(c.id);
      expect(fs.existsSync(path.join(mnt, 'tmp/deleteme'))).toBe(false);
      expect(fs.readdirSync(path.join(mnt, 'opt/old')).sort()).toEqual(['new']);
      expect(fs.readFileSync(path.join(mnt, `usr/share/gnu/${'x'.repeat(90)}/${'y'.repeat(60)}`), 'utf8')).toBe('GNU long name');
      expect(fs.readFileSync(path.join(mnt, `srv/${'p'.repeat(120)}`), 'utf8')).toBe('PAX long name from GNU tar');
      expect(fs.readFileSync(path.join(mnt, LONG), 'utf8')).toBe('long name (PAX path)');
      expect(fs.existsSync(path.join(mnt, 'usr/lib/libc.so'))).toBe(false);
      fs.writeFileSync(path.join(mnt, 'etc/committed'), 'committed change\n');
      fs.rmSync(path.join(mnt, 'etc/passwd'));
      await s1.unmountContainer(c.id);
      expect(await s1.containerChanges(c.id)).toEqual([
        { path: '/etc', kind: ChangeKind.Modify },
        { path: '/etc/committed', kind: ChangeKind.Add },
        { path: '/etc/passwd', kind: ChangeKind.Delete },
      ]);
      const committed = await s1.commitContainer(c.id, { reference: 'test/app:2', message: 'edit' });
      expect(committed.diffIds.slice(0, 3)).toEqual(f.diffIds);

      // Save all three: the layer tars are the originals, byte for byte (the gzip layer uncompressed).
      const saved = path.join(tmp, 'saved.tar');
      await s1.saveImage(['test/app:1', 'test/base', 'test/app:2'], saved);
      const out = await savedLayers(fs.readFileSync(saved));
      expect(out.map((o) => o.repoTags)).toEqual([['test/app:1'], ['test/base:latest'], ['test/app:2']]);
      expect(out[0]!.config.equals(f.configA)).toBe(true);
      expect(out[0]!.layers.map(sha)).toEqual(f.diffIds);
      expect(out[0]!.layers[0]!.equals(f.l1)).toBe(true);
      expect(out[0]!.layers[1]!.equals(f.l2)).toBe(true); // GNU long names and the 10240-byte record kept
      expect(out[0]!.layers[2]!.equals(f.l3)).toBe(true);
      expect(out[1]!.layers.map(sha)).toEqual([f.diffIds[0]]);
      expect(out[2]!.layers.map(sha)).toEqual(committed.diffIds);
      const diff = await tarMembers(out[2]!.layers[3]!);
      expect(diff.get('etc/committed')?.toString()).toBe('committed change\n');
      expect(diff.has('etc/.wh.passwd')).toBe(true);
      // The base layer is stored once; its other copies are symlinks, as Docker writes them.
      const members = await tarMembers(fs.readFileSync(saved));
      expect([...members.values()].filter((v) => typeof v === 'string' && v.startsWith('-> ../')).length).toBe(2);

      // Saving again gives the same bytes (deterministic output).
      const again = new PassThrough();
      const [bytes] = await Promise.all([collect(again), s1.saveImage(['test/app:1', 'test/base', 'test/app:2'], again)]);
      expect(sha(bytes)).toBe(sha(fs.readFileSync(saved)));

      // A second store loads the saved archive as a stream: same image ids, diffIDs and references.
      const s2 = await open('s2');
      const again2 = await s2.loadImage(fs.createReadStream(saved));
      expect(again2.map((i) => [i.id, i.diffIds, i.references])).toEqual([
        [idA, f.diffIds, ['docker.io/test/app:1']],
        [idB, [f.diffIds[0]], ['docker.io/test/base:latest']],
        [committed.id, committed.diffIds, ['docker.io/test/app:2']],
      ]);
      const c2 = await s2.createContainer('test/app:2');
      const m2 = await s2.mountContainer(c2.id);
      expect(fs.readFileSync(path.join(m2, 'etc/committed'), 'utf8')).toBe('committed change\n');
      expect(fs.existsSync(path.join(m2, 'etc/passwd'))).toBe(false);
      expect(fs.readFileSync(path.join(m2, 'etc/os-release'), 'utf8')).toBe('ID=test\nVERSION=2\n');
      await s2.unmountContainer(c2.id);
      await s2.removeContainer(c2.id);
      // ...and the layers it registered re-create the same tars (s2's records come from the saved tars).
      for (const [i, chain] of again2[2]!.layers.entries()) expect(sha(await collect(await s2.layerTar(chain)))).toBe(committed.diffIds[i]);
      expect(fs.readdirSync(path.join(tmp, 's2', 'tmp'))).toEqual([]);

      // OCI layout output (Docker 25+ style) loads into a third store, gzip-compressed, with the same ids.
      const oci = path.join(tmp, 'saved-oci.tar');
      await s1.saveImage(['test/app:2', idB], oci, { format: 'oci' });
      const ociMembers = await tarMembers(fs.readFileSync(oci));
      expect(ociMembers.has('oci-layout')).toBe(true);
      const index = JSON.parse((ociMembers.get('index.json') as Buffer).toString()) as { manifests: Array<{ annotations?: Record<string, string> }> };
      expect(index.manifests.map((m) => m.annotations?.['io.containerd.image.name'])).toEqual(['docker.io/test/app:2', undefined]);
      for (const d of committed.diffIds) expect(sha(ociMembers.get(`blobs/sha256/${hex(d)}`) as Buffer)).toBe(d);
      const s3 = await open('s3');
      const viaOci = await s3.loadImage(Readable.from([zlib.gzipSync(fs.readFileSync(oci))]));
      expect(viaOci.map((i) => [i.id, i.references])).toEqual([
        [committed.id, ['docker.io/test/app:2']],
        [idB, []],
      ]);
      await s1.removeContainer(c.id);
    });

    test('Docker 25+ layout (blobs/sha256 with manifest.json), gzip-compressed archive stream', async () => {
      const s = await open('s-blobs');
      const archive = zlib.gzipSync(archiveOf(f, 'blobs'));
      const imgs = await s.loadImage(Readable.from([archive]));
      expect(imgs.map((i) => i.id)).toEqual([sha(f.configA), sha(f.configB)]);
      expect(imgs[0]!.diffIds).toEqual(f.diffIds);
      expect(fs.readdirSync(path.join(tmp, 's-blobs', 'tmp'))).toEqual([]); // the spool went away
      // The exact tars come back, also for the layer that arrived gzip-compressed.
      for (const [i, chain] of imgs[0]!.layers.entries()) {
        expect((await collect(await s.layerTar(chain))).equals([f.l1, f.l2, f.l3][i]!)).toBe(true);
      }
    });

    test('OCI image layouts: gzip and zstd blobs, a nested index, references from annotations', async () => {
      const s = await open('s-oci');
      const archive = ociArchive([
        { layers: [f.l1, f.l2], compression: 'zstd', imageName: 'registry.example:5000/team/app:v1' },
        { layers: [f.l1, f.l2, f.l3], compression: 'gzip', refName: 'example.org/other:2' },
        { layers: [f.l1], compression: 'none', refName: 'latest' },
      ]);
      const imgs = await s.loadImage(Readable.from([archive]));
      expect(imgs.map((i) => i.references)).toEqual([['registry.example:5000/team/app:v1'], ['example.org/other:2'], []]);
      expect(imgs[1]!.diffIds).toEqual(f.diffIds);
      expect((await s.listLayers()).length).toBe(3);
      const nested = ociArchive([{ layers: [f.l1] }], { wrapInIndex: true });
      const [n] = await s.loadImage(Readable.from([nested]));
      expect(n!.diffIds).toEqual([f.diffIds[0]]);
    });

    test('bad archives fail with typed errors and leave the store exactly as it was', async () => {
      const s = await open('s-bad');
      const root = path.join(tmp, 's-bad');
      await s.loadImage(Readable.from([dockerArchive([{ layers: [f.l1], config: f.configB, repoTags: ['test/base:latest'] }], { diffIds: [[f.diffIds[0]!]] })]));
      const before = await snapshot(s, root);
      const good = [f.l1, f.l2, f.l3];
      const cases: Array<[string, Buffer, string]> = [
        ['not a tar', Buffer.from('this is not an archive at all'.repeat(40)), 'ERR_INVALID_ARCHIVE'],
        ['a tar without manifests', buildTar([{ name: 'hello', data: 'x' }]), 'ERR_INVALID_ARCHIVE'],
        ['corrupt manifest.json', dockerArchive([{ layers: good }], { mutateManifest: () => '[{"Config": ' }), 'ERR_INVALID_ARCHIVE'],
        ['manifest.json not a list', dockerArchive([{ layers: good }], { mutateManifest: () => ({ Config: 'x' }) }), 'ERR_INVALID_ARCHIVE'],
        ['layer count differs from the config', dockerArchive([{ layers: good, config: imageConfig(f.diffIds.slice(0, 2)) }]), 'ERR_INVALID_ARCHIVE'],
        ['config not matching its name', dockerArchive([{ layers: good }], { mutateManifest: (m) => [{ ...m[0], Config: `${hex(sha('other'))}.json` }], extra: [{ name: `${hex(sha('other'))}.json`, data: imageConfig(f.diffIds) }] }), 'ERR_DIGEST_MISMATCH'],
        // Layers 1 and 2 register before layer 3 turns out wrong: both must go again.
        ['last layer not matching its diffID', dockerArchive([{ layers: good, config: imageConfig([f.diffIds[0]!, f.diffIds[1]!, sha('something else')]) }]), 'ERR_DIGEST_MISMATCH'],
        ['missing layer blob', dockerArchive([{ layers: good }], { layout: 'blobs', omit: [`blobs/sha256/${hex(f.diffIds[2]!)}`] }), 'ERR_INVALID_ARCHIVE'],
        ['layer path climbing out (CVE-2014-9358)', dockerArchive([{ layers: good }], { mutateManifest: (m) => [{ ...m[0], Layers: ['../../../../etc/passwd', ...(m[0]!.Layers as string[]).slice(1)] }] }), 'ERR_INVALID_ARCHIVE'],
        ['config path climbing out', dockerArchive([{ layers: good }], { mutateManifest: (m) => [{ ...m[0], Config: '../../etc/hostname' }] }), 'ERR_INVALID_ARCHIVE'],
        ['absolute layer path', dockerArchive([{ layers: good }], { mutateManifest: (m) => [{ ...m[0], Layers: ['/etc/passwd', ...(m[0]!.Layers as string[]).slice(1)] }] }), 'ERR_INVALID_ARCHIVE'],
        ['member name climbing out', dockerArchive([{ layers: good }], { extra: [{ name: '../../evil', data: 'x' }] }), 'ERR_INVALID_ARCHIVE'],
        ['layer.tar symlinked to a host file', dockerArchive([{ layers: [f.l1] }], { mutateManifest: (m) => [{ ...m[0], Layers: ['evil/layer.tar'] }], extra: [{ name: 'evil/layer.tar', type: 'symlink', linkname: '/etc/passwd' }] }), 'ERR_INVALID_ARCHIVE'],
        ['invalid RepoTags', dockerArchive([{ layers: good, repoTags: ['Not/Valid:tag'] }]), 'ERR_INVALID_REFERENCE'],
        ['a layer that is not a tar', dockerArchive([{ layers: [f.l1, Buffer.alloc(1024, 0x41)] }]), 'ERR_INVALID_ARCHIVE'],
        ['OCI blob not matching its digest', ociArchive([{ layers: good, compression: 'none' }], { mutate: (blobs) => {
          // Same size, one byte of a file body changed: the tar stays valid, only the digests tell.
          const blob = blobs.get(f.diffIds[2]!)!;
          const at = blob.indexOf('key=value');
          blob[at] = 0x4b;
        } }), 'ERR_DIGEST_MISMATCH'],
        ['OCI manifest missing', ociArchive([{ layers: good }], { mutate: (blobs, index) => {
          const m = (index.manifests as Array<{ digest: string }>)[0]!;
          blobs.delete(m.digest);
        } }), 'ERR_INVALID_ARCHIVE'],
        ['OCI index for another platform only', ociArchive([{ layers: good, platform: { os: 'linux', architecture: 'mips64' } }], { wrapInIndex: true }), 'ERR_INVALID_ARCHIVE'],
      ];
      for (const [name, archive, code] of cases) {
        for (const asFile of [true, false]) {
          const file = path.join(tmp, 'bad.tar');
          fs.writeFileSync(file, archive);
          const err = await s.loadImage(asFile ? file : Readable.from([archive])).then(
            () => null,
            (e: unknown) => e as { code?: string; message?: string },
          );
          expect([name, asFile, err?.code]).toEqual([name, asFile, code]);
          expect(await snapshot(s, root)).toEqual(before);
        }
      }
      // Nothing outside was touched, and the symlinked host file was never read into a layer.
      expect(fs.existsSync(path.join(tmp, 'evil'))).toBe(false);

      // An aborted load is undone too.
      const ac = new AbortController();
      const slow = new PassThrough();
      const p = s.loadImage(slow, { signal: ac.signal, onProgress: () => ac.abort(new Error('stop')) });
      slow.end(archiveOf(f, 'legacy'));
      await expect(p).rejects.toThrow();
      expect(await snapshot(s, root)).toEqual(before);

      // Unknown references to save: typed error, no file.
      const dest = path.join(tmp, 'never.tar');
      await expect(s.saveImage(['test/base', 'no/such:image'], dest)).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
      await expect(s.saveImage([], dest)).rejects.toMatchObject({ code: 'ERR_INVALID_REFERENCE' });
      expect(fs.existsSync(dest)).toBe(false);
      expect(fs.readdirSync(tmp).filter((n) => n.includes('never'))).toEqual([]);
    });

    test('a layer changed on disk is refused by layerTar and saveImage (ERR_DIGEST_MISMATCH); the mount is released', async () => {
      const s = await open('s-tamper');
      const [img] = await s.loadImage(Readable.from([dockerArchive([{ layers: [f.l1], config: f.configB, repoTags: ['test/base:latest'] }], { diffIds: [[f.diffIds[0]!]] })]));
      const layer = await s.getLayer(img!.layers[0]!);
      const home = path.join(tmp, 's-tamper', driverName);
      const file = driverName === 'vfs' ? path.join(home, 'dir', layer.cacheId, 'etc/passwd') : path.join(home, layer.cacheId, 'diff', 'etc/passwd');
      fs.writeFileSync(file, 'root:x:0:0::/root:/bin/bash\n'); // same size, other bytes
      await expect(collect(await s.layerTar(layer.chainId))).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
      const dest = path.join(tmp, 'tampered.tar');
      await expect(s.saveImage('test/base', dest)).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
      expect(fs.existsSync(dest)).toBe(false);
      // Nothing stays mounted or pinned: the image and its layer can be removed.
      expect(mountsBelow(path.join(tmp, 's-tamper')).filter((m) => m !== home)).toEqual([]);
      await s.removeImage('test/base');
      expect(await s.listLayers()).toEqual([]);
    });

    test('layers registered without a record fall back to the driver’s diff, checked against the diffID', async () => {
      const s = await open('s-fallback');
      // A tar the driver writes back identically: the diff of a layer, registered again without a record.
      const first = await s.registerLayer(Readable.from([f.l1]), null);
      const canonical = await collect(await s.driver.diff(first.cacheId, null));
      const l = await s.registerLayer(Readable.from([canonical]), null, { tarSplit: false });
      expect(fs.existsSync(path.join(tmp, 's-fallback', 'image', driverName, 'layerdb', 'sha256', hex(l.chainId), 'tar-split.json.gz'))).toBe(false);
      expect((await collect(await s.layerTar(l.chainId))).equals(canonical)).toBe(true);
      // A tar the driver does not reproduce (other order, other headers): refused, unless unverified.
      const odd = await s.registerLayer(Readable.from([f.l2]), null, { tarSplit: false });
      await expect(collect(await s.layerTar(odd.chainId))).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
      expect((await collect(await s.layerTar(odd.chainId, { verify: false }))).length).toBeGreaterThan(0);
      for (const x of [first, l, odd]) await s.releaseLayer(x.chainId);
    });
  });
}
