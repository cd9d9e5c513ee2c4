/**
 * Image archives without root: reading archives in place and spooled (path cleaning, links followed inside the
 * archive only, implicit directories, spool cleanup), the `docker save` and OCI layout readers (shapes, digests,
 * platforms, references), and loadImage/saveImage through Storage on an in-memory driver whose mounts show the
 * layers' files (so exact tars are re-created from tar-split records).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import * as zlib from 'node:zlib';

import { readTar } from '../../lib/archive/tar-reader';
import { registerDriver } from '../../lib/drivers/registry';
import { cleanArchivePath, ImageArchive } from '../../lib/image/archive-files';
import { parseDockerManifest, planDockerArchive } from '../../lib/image/docker-archive';
import { planOciLayout } from '../../lib/image/oci-layout';
import type { NativeBindings } from '../../lib/native/types';
import { Storage } from '../../lib/storage/storage';
import { FakeDriver } from '../support/fake-driver';
import { collect, dockerArchive, goArch, hex, imageConfig, ociArchive, savedLayers, sha } from '../support/image-archives';
import { mockBindings } from '../support/native';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const l1 = buildTar([
  { name: 'etc/', type: 'dir' },
  { name: 'etc/passwd', data: 'root:x:0:0::/root:/bin/sh\n' },
  { name: 'opt/', type: 'dir' },
  { name: 'opt/a', data: 'a' },
  { name: `usr/share/${'n'.repeat(120)}`, data: 'long' },
]);
const l2 = buildTar([
  { name: 'opt/', type: 'dir' },
  { name: 'opt/.wh.a', data: '' },
  { name: 'opt/b', data: Buffer.alloc(5000, 0x62) },
]);

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toMatchObject({ code });
}

describe('cleanArchivePath', () => {
  test('cleans, and refuses what leaves the archive', () => {
    expect(cleanArchivePath('./a//b/./c')).toBe('a/b/c');
    expect(cleanArchivePath('a/../b')).toBe('b');
    for (const bad of ['../x', 'a/../../x', '/etc/passwd', 'a\0b', '']) expect(() => cleanArchivePath(bad)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARCHIVE' }));
  });
});

describe('ImageArchive', () => {
  let tmp: string;
  beforeEach(() => (tmp = makeTmp('gd-archive-')));
  afterEach(() => removeTmp(tmp));

  const tar = (): Buffer =>
    buildTar([
      { name: 'dir/', type: 'dir' },
      { name: 'dir/file', data: 'content' },
      { name: 'nodir/deep/file', data: 'no directory entries above me' },
      { name: 'big', data: Buffer.alloc(3 << 20, 0x7a) },
      { name: 'rel', type: 'symlink', linkname: 'dir/file' },
      { name: 'dir/up', type: 'symlink', linkname: '../big' },
      { name: 'abs', type: 'symlink', linkname: '/dir/file' },
      { name: 'escape', type: 'symlink', linkname: '../../../../dir/file' },
      { name: 'host', type: 'symlink', linkname: '/etc/passwd' },
      { name: 'dirlink', type: 'symlink', linkname: 'dir' },
      { name: 'hard', type: 'link', linkname: 'dir/file' },
      { name: 'loop1', type: 'symlink', linkname: 'loop2' },
      { name: 'loop2', type: 'symlink', linkname: 'loop1' },
      { name: 'dir/file', data: 'replaced' },
    ]);

  for (const how of ['file', 'stream', 'gzip file'] as const) {
    test(`reads members and follows links inside the archive only (${how})`, async () => {
      const file = path.join(tmp, 'a.tar');
      fs.writeFileSync(file, how === 'gzip file' ? zlib.gzipSync(tar()) : tar());
      const spool = path.join(tmp, 'spool');
      const a = await ImageArchive.open(how === 'stream' ? Readable.from([tar()]) : file, spool);
      try {
        // A later member replaces an earlier one; links resolve as if the archive root were '/'.
        for (const p of ['dir/file', 'rel', 'abs', 'escape', 'hard', 'dirlink/file', './dir/../dir/file']) expect((await a.read(p, 'x')).toString()).toBe('replaced');
        expect((await a.read('nodir/deep/file', 'x')).toString()).toBe('no directory entries above me');
        expect(a.size('dir/up')).toBe(3 << 20);
        expect((await collect(a.open('dir/up'))).equals(Buffer.alloc(3 << 20, 0x7a))).toBe(true);
        expect(a.has('host')).toBe(false); // /etc/passwd inside the archive: not there
        expect(a.has('dir')).toBe(false); // directories are not files
        expect(() => a.has('loop1')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARCHIVE' }));
        expect(() => a.has('../x')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARCHIVE' }));
        await expectCode(a.read('big', 'x', 1024), 'ERR_INVALID_ARCHIVE');
        // Only big members of read streams are spooled; an uncompressed file is read in place.
        expect(fs.existsSync(spool)).toBe(how !== 'file');
      } finally {
        await a.close();
      }
      expect(fs.existsSync(spool)).toBe(false);
    });
  }

  test('reads an extracted archive directory in place; its symlinks stay inside it', async () => {
    const dir = path.join(tmp, 'dir');
    fs.mkdirSync(path.join(dir, 'blobs/sha256'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'blobs/sha256/f'), 'blob');
    fs.symlinkSync('blobs/sha256/f', path.join(dir, 'rel'));
    fs.symlinkSync('/etc/passwd', path.join(dir, 'host'));
    fs.symlinkSync('../../../../../../etc/passwd', path.join(dir, 'up'));
    const a = await ImageArchive.open(dir, path.join(tmp, 'spool'));
    expect((await a.read('rel', 'x')).toString()).toBe('blob');
    expect((await collect(a.open('blobs/sha256/f'))).toString()).toBe('blob');
    expect([a.has('host'), a.has('up')]).toEqual([false, false]);
    await a.close();
    expect(fs.existsSync(path.join(dir, 'blobs/sha256/f'))).toBe(true); // never removed
    expect(fs.existsSync(path.join(tmp, 'spool'))).toBe(false);
  });

  test('refuses member names that climb out, and truncated archives', async () => {
    const evil = buildTar([{ name: '../../evil', data: 'x' }]);
    const file = path.join(tmp, 'evil.tar');
    fs.writeFileSync(file, evil);
    await expectCode(ImageArchive.open(file, path.join(tmp, 's1')), 'ERR_INVALID_ARCHIVE');
    await expectCode(ImageArchive.open(Readable.from([evil]), path.join(tmp, 's2')), 'ERR_INVALID_ARCHIVE');
    fs.writeFileSync(file, buildTar([{ name: 'a', data: Buffer.alloc(4096) }]).subarray(0, 2048));
    await expectCode(ImageArchive.open(file, path.join(tmp, 's3')), 'ERR_INVALID_ARCHIVE');
    expect(fs.readdirSync(tmp)).toEqual(['evil.tar']);
  });
});

describe('archive readers', () => {
  let tmp: string;
  beforeEach(() => (tmp = makeTmp('gd-plan-')));
  afterEach(() => removeTmp(tmp));
  const open = (b: Buffer): Promise<ImageArchive> => ImageArchive.open(Readable.from([b]), path.join(tmp, `spool-${Math.random()}`));

  test('manifest.json shapes', () => {
    const bad = ['{', '{}', '[]', '[1]', '[{"Layers":[]}]', '[{"Config":"c","Layers":[1]}]', '[{"Config":"c","Layers":[],"RepoTags":"x"}]'];
    for (const b of bad) expect(() => parseDockerManifest(Buffer.from(b))).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARCHIVE' }));
    expect(parseDockerManifest(Buffer.from('[{"Config":"c.json","RepoTags":null,"Layers":["a/layer.tar"]}]'))).toEqual([{ Config: 'c.json', Layers: ['a/layer.tar'] }]);
  });

  test('docker save plans: both layouts, digests from names, tags normalised', async () => {
    for (const layout of ['legacy', 'blobs'] as const) {
      const a = await open(dockerArchive([{ layers: [l1, l2], repoTags: ['app:1', 'example.org/x/y:2'] }], { layout }));
      const [p] = await planDockerArchive(a);
      expect(p!.id).toBe(sha(imageConfig([sha(l1), sha(l2)])));
      expect(p!.references).toEqual(['docker.io/library/app:1', 'example.org/x/y:2']);
      expect(p!.layers.map((l) => l.diffId)).toEqual([sha(l1), sha(l2)]);
      expect(p!.layers.map((l) => l.digest)).toEqual(layout === 'blobs' ? [sha(l1), sha(l2)] : [undefined, undefined]);
      await a.close();
    }
    const digestOnly = await open(dockerArchive([{ layers: [l1], repoTags: [`app@${sha('x')}`] }]));
    await expectCode(planDockerArchive(digestOnly), 'ERR_INVALID_REFERENCE');
    const badConfig = await open(dockerArchive([{ layers: [l1], config: Buffer.from('{"rootfs":{"type":"layers","diff_ids":["nope"]}}') }]));
    await expectCode(planDockerArchive(badConfig), 'ERR_INVALID_IMAGE_CONFIG');
  });

  test('OCI layout plans: the host platform out of an index or a flat list; refs; bad descriptors', async () => {
    const other = { os: 'linux', architecture: goArch() === 'arm64' ? 'amd64' : 'arm64' };
    const host = { os: 'linux', architecture: goArch() };
    const flat = await open(
      ociArchive([
        { layers: [l1], refName: 'example.org/app:1', platform: other },
        { layers: [l1, l2], refName: 'example.org/app:1', platform: host },
        { layers: [l2], imageName: 'docker.io/library/solo:2' },
      ]),
    );
    const plans = await planOciLayout(flat);
    expect(plans.map((p) => [p.references, p.layers.length])).toEqual([
      [['example.org/app:1'], 2],
      [['docker.io/library/solo:2'], 1],
    ]);
    const nested = await open(ociArchive([{ layers: [l1], platform: host }], { wrapInIndex: true }));
    expect((await planOciLayout(nested))[0]!.layers.map((l) => l.diffId)).toEqual([sha(l1)]);

    const mutate = async (fn: (blobs: Map<string, Buffer>, index: Record<string, unknown>) => void): Promise<unknown> =>
      planOciLayout(await open(ociArchive([{ layers: [l1] }], { mutate: fn })));
    await expectCode(
      mutate((_b, index) => {
        (index.manifests as Array<Record<string, unknown>>)[0]!.digest = `sha512:${'0'.repeat(128)}`;
      }),
      'ERR_INVALID_ARCHIVE',
    );
    await expectCode(
      mutate((_b, index) => {
        (index.manifests as Array<Record<string, unknown>>)[0]!.size = 3;
      }),
      'ERR_DIGEST_MISMATCH',
    );
    await expectCode(
      mutate((blobs, index) => {
        const d = (index.manifests as Array<{ digest: string }>)[0]!.digest;
        const m = JSON.parse(blobs.get(d)!.toString()) as { layers: Array<{ mediaType: string }> };
        m.layers[0]!.mediaType = 'application/vnd.example.unknown';
        const bytes = Buffer.from(JSON.stringify(m));
        blobs.delete(d);
        blobs.set(sha(bytes), bytes);
        Object.assign((index.manifests as Array<Record<string, unknown>>)[0]!, { digest: sha(bytes), size: bytes.length });
      }),
      'ERR_INVALID_ARCHIVE',
    );
    const noLayout = await open(buildTar([{ name: 'index.json', data: '{"schemaVersion":2,"manifests":[]}' }, { name: 'oci-layout', data: '{"imageLayoutVersion":"2.0.0"}' }]));
    await expectCode(planOciLayout(noLayout), 'ERR_INVALID_ARCHIVE');
  });
});

/** A FakeDriver whose mounts hold the files of the layer and its parents (enough for tar re-creation). */
class FilesDriver extends FakeDriver {
  override async get(id: string): Promise<string> {
    const dir = await super.get(id);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    const chain: Buffer[] = [];
    for (let cur: string | null = id; cur !== null; cur = this.layers.get(cur)!.parent) chain.unshift(this.layers.get(cur)!.data);
    for (const tar of chain) {
      if (tar.length === 0) continue;
      for await (const e of readTar(Readable.from([tar]))) {
        const p = path.join(dir, e.header.name);
        const parts: Buffer[] = [];
        for await (const c of e.body()) parts.push(Buffer.from(c));
        const base = path.basename(p);
        if (base.startsWith('.wh.')) fs.rmSync(path.join(path.dirname(p), base.slice(4)), { recursive: true, force: true });
        else if (e.header.type === 'dir') fs.mkdirSync(p, { recursive: true });
        else if (e.header.type === 'file') {
          fs.mkdirSync(path.dirname(p), { recursive: true });
          fs.writeFileSync(p, Buffer.concat(parts));
        }
      }
    }
    return dir;
  }
}

/** openBounded in plain JS for the unit tests (no symlinks in these layers). */
function jsBindings(): NativeBindings {
  return mockBindings({
    openBounded: jest.fn(async (root: string, p: string, o?: { flags?: number }) => fs.openSync(path.join(root, p), o?.flags ?? fs.constants.O_RDONLY)),
  });
}

describe('Storage.loadImage / saveImage on an in-memory driver', () => {
  let tmp: string;
  beforeAll(() => {
    registerDriver('fakefiles', async (home) => {
      fs.mkdirSync(home, { recursive: true });
      return new FilesDriver(home, 'fakefiles');
    });
  });
  beforeEach(() => (tmp = makeTmp('gd-load-unit-')));
  afterEach(() => removeTmp(tmp));
  const open = (name: string): Promise<Storage> => Storage.open({ root: path.join(tmp, name), driver: 'fakefiles', bindings: jsBindings(), sync: false });

  test('load → save → load: same ids, diffIDs, references and layer bytes; both output formats', async () => {
    const s = await open('a');
    const archive = dockerArchive([
      { layers: [l1, l2], repoTags: ['app:1'] },
      { layers: [l1], repoTags: ['base:1'] },
    ]);
    const imgs = await s.loadImage(Readable.from([archive]));
    expect(imgs.map((i) => i.references)).toEqual([['docker.io/library/app:1'], ['docker.io/library/base:1']]);
    expect((await s.listLayers()).length).toBe(2);
    for (const format of ['docker', 'oci'] as const) {
      const out = new PassThrough();
      const [bytes] = await Promise.all([collect(out), s.saveImage(['app:1', 'base:1'], out, { format })]);
      if (format === 'docker') {
        const saved = await savedLayers(bytes);
        expect(saved.map((x) => x.layers.map((l) => hex(sha(l))))).toEqual([[hex(sha(l1)), hex(sha(l2))], [hex(sha(l1))]]);
        expect(saved[0]!.layers[1]!.equals(l2)).toBe(true);
      }
      const t = await open(`b-${format}`);
      const again = await t.loadImage(Readable.from([bytes]));
      expect(again.map((i) => [i.id, i.diffIds, i.references])).toEqual(imgs.map((i) => [i.id, i.diffIds, i.references]));
      await t.close();
    }
    await s.close();
  });

  test('a load that fails half-way leaves nothing; saving an unknown image writes nothing', async () => {
    const s = await open('c');
    const bad = dockerArchive([{ layers: [l1, l2], config: imageConfig([sha(l1), sha('not l2')]), repoTags: ['app:1'] }]);
    await expectCode(s.loadImage(Readable.from([bad])), 'ERR_DIGEST_MISMATCH');
    expect(await s.listLayers()).toEqual([]);
    expect(await s.listImages()).toEqual([]);
    const dest = path.join(tmp, 'out.tar');
    await expectCode(s.saveImage('nope:1', dest), 'ERR_IMAGE_NOT_FOUND');
    expect(fs.existsSync(dest)).toBe(false);
    await s.close();
  });
});
