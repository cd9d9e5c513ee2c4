/**
 * Storage.loadImage of skopeo `dir:` directories on a real driver:
 *
 * - directories made by skopeo itself (`skopeo copy docker-archive:... dir:...`, layers as they were and gzip
 *   compressed with --dest-compress) load with the image id and diffIDs the `docker save` archive gives, and
 *   the container sees the layers' files;
 * - hostile directories (a layer blob that does not match its digest, a config whose diffID lies, a digest that
 *   would climb out of the directory, a blob that links out of it) fail with typed errors and leave the store
 *   exactly as it was, including an image that shares their base layer.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { listDriverLayers } from '../../lib/layer/driver-layers';
import { Storage } from '../../lib/storage/storage';
import { dockerArchive, hex, imageConfig, sha } from '../support/image-archives';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';
import { writeSkopeoDir } from '../support/skopeo-dir';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const execFileP = promisify(execFile);
const driver = kernelHasFs('overlay') ? 'overlay2' : 'vfs';
const rootReason = isRoot ? null : 'needs root (layer ownership and the driver mounts)';
const skopeoReason = rootReason ?? (haveTool('skopeo') ? null : 'skopeo is not installed (apt-get install skopeo)');

const l1 = buildTar([
  { name: 'etc/', type: 'dir' },
  { name: 'etc/passwd', data: 'root:x:0:0::/root:/bin/sh\n' },
  { name: 'usr/', type: 'dir' },
  { name: 'usr/data.bin', data: Buffer.alloc(200_000, 0x61) },
]);
const l2 = buildTar([
  { name: 'etc/', type: 'dir' },
  { name: 'etc/.wh.passwd', data: '' },
  { name: 'etc/motd', data: 'layer two\n' },
]);

/** Everything a load could change in the store. */
async function snapshot(s: Storage, root: string): Promise<unknown> {
  const imageDir = path.join(root, 'image', s.driver.name);
  const ls = (p: string): string[] => (fs.existsSync(p) ? fs.readdirSync(p).sort() : []);
  return {
    images: await s.listImages(),
    layers: await s.listLayers(),
    repositories: fs.existsSync(path.join(imageDir, 'repositories.json')) ? fs.readFileSync(path.join(imageDir, 'repositories.json'), 'utf8') : null,
    layerdb: ls(path.join(imageDir, 'layerdb', 'sha256')),
    imagedb: ls(path.join(imageDir, 'imagedb', 'content', 'sha256')),
    driverLayers: await listDriverLayers(s.driver.name, path.join(root, s.driver.name)),
    spool: ls(path.join(root, 'tmp')),
  };
}

/** The files a container of the image sees (read through a mount of its root, then removed). */
async function filesOf(s: Storage, image: string, files: string[]): Promise<Array<string | null>> {
  const c = await s.createContainer(image);
  try {
    const root = await s.mountContainer(c.id);
    try {
      return files.map((f) => (fs.existsSync(path.join(root, f)) ? fs.readFileSync(path.join(root, f), 'utf8') : null));
    } finally {
      await s.unmountContainer(c.id);
    }
  } finally {
    await s.removeContainer(c.id);
  }
}

describeIf(skopeoReason, `loadImage of directories made by skopeo copy ... dir: (${driver})`, () => {
  let tmp: string;
  const stores: Storage[] = [];
  beforeEach(() => (tmp = makeTmp('gd-skopeo-dir-it-')));
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close().catch(() => undefined);
    removeTmp(tmp);
  });
  const open = async (name: string): Promise<Storage> => {
    const s = await Storage.open({ root: path.join(tmp, name), driver, sync: false });
    stores.push(s);
    return s;
  };

  test('as copied and gzip-compressed: the ids and diffIDs of the docker save archive, the same files', async () => {
    const archive = path.join(tmp, 'image.tar');
    fs.writeFileSync(archive, dockerArchive([{ layers: [l1, l2], repoTags: ['test/app:1'] }]));
    const fromArchive = (await (await open('archive')).loadImage(archive))[0]!;
    expect(fromArchive.id).toBe(sha(imageConfig([sha(l1), sha(l2)])));

    for (const compress of [false, true]) {
      const dir = path.join(tmp, `dir-${compress}`);
      await execFileP('skopeo', ['--insecure-policy', 'copy', '-q', ...(compress ? ['--dest-compress'] : []), `docker-archive:${archive}`, `dir:${dir}`]);
      expect(fs.readFileSync(path.join(dir, 'version'), 'utf8')).toMatch(/^Directory Transport Version: 1\.\d+\n$/);
      const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { layers: Array<{ digest: string }> };
      const firstBytes = fs.readFileSync(path.join(dir, hex(manifest.layers[0]!.digest))).subarray(0, 2);
      expect(firstBytes.equals(Buffer.from([0x1f, 0x8b]))).toBe(compress);

      const s = await open(`store-${compress}`);
      const imgs = await s.loadImage(dir);
      expect(imgs.map((i) => [i.id, i.diffIds, i.references])).toEqual([[fromArchive.id, [sha(l1), sha(l2)], []]]);
      expect(await filesOf(s, imgs[0]!.id, ['etc/passwd', 'etc/motd', 'usr/data.bin'])).toEqual([null, 'layer two\n', 'a'.repeat(200_000)]);
      // Loading it again finds everything in place.
      expect((await s.loadImage(dir)).map((i) => i.id)).toEqual([fromArchive.id]);
      expect((await s.listLayers()).length).toBe(2);
    }
  });
});

describeIf(rootReason, `loadImage of hostile skopeo dir: directories leaves the store as it was (${driver})`, () => {
  let tmp: string;
  let s: Storage;
  let before: unknown;
  beforeEach(async () => {
    tmp = makeTmp('gd-skopeo-dir-hostile-');
    s = await Storage.open({ root: path.join(tmp, 'store'), driver, sync: false });
    // A good image holding the base layer the hostile ones share.
    const base = writeSkopeoDir(path.join(tmp, 'base'), [l1]);
    expect((await s.loadImage(base.dir)).map((i) => i.id)).toEqual([base.id]);
    before = await snapshot(s, path.join(tmp, 'store'));
  });
  afterEach(async () => {
    await s?.close().catch(() => undefined);
    removeTmp(tmp);
  });

  const expectRefused = async (dir: string, code: string): Promise<void> => {
    await expect(s.loadImage(dir)).rejects.toMatchObject({ code });
    expect(await snapshot(s, path.join(tmp, 'store'))).toEqual(before);
  };

  test('a layer blob whose bytes do not match its digest (same size)', async () => {
    const d = writeSkopeoDir(path.join(tmp, 'd'), [l1, l2], { gzip: false });
    const blob = path.join(d.dir, hex(d.blobDigests[1]!));
    const bytes = fs.readFileSync(blob);
    const at = bytes.indexOf('layer two');
    expect(at).toBeGreaterThan(0);
    bytes.write('LAYER', at);
    fs.writeFileSync(blob, bytes);
    await expectRefused(d.dir, 'ERR_DIGEST_MISMATCH');
  });

  test('a gzip layer blob replaced by another valid gzip layer', async () => {
    const d = writeSkopeoDir(path.join(tmp, 'd'), [l1, l2]);
    const other = writeSkopeoDir(path.join(tmp, 'other'), [buildTar([{ name: 'etc/motd', data: 'evil\n' }])]);
    fs.copyFileSync(path.join(other.dir, hex(other.blobDigests[0]!)), path.join(d.dir, hex(d.blobDigests[1]!)));
    // Sizes differ: refused before anything is read; same size would fail on the digest as above.
    await expectRefused(d.dir, 'ERR_DIGEST_MISMATCH');
  });

  test('a config whose diffID does not match the layer', async () => {
    const d = writeSkopeoDir(path.join(tmp, 'd'), [l1, l2], { config: imageConfig([sha(l1), sha('not l2')]) });
    await expectRefused(d.dir, 'ERR_DIGEST_MISMATCH');
  });

  test('blob names: a digest that climbs out, a blob that links out', async () => {
    const d = writeSkopeoDir(path.join(tmp, 'd'), [l1, l2]);
    const m = JSON.parse(d.manifest.toString()) as { layers: Array<{ digest: string }> };
    const good = m.layers[1]!.digest;
    m.layers[1]!.digest = `sha256:../../../../${'0'.repeat(52)}`;
    fs.writeFileSync(path.join(d.dir, 'manifest.json'), JSON.stringify(m));
    await expectRefused(d.dir, 'ERR_INVALID_ARCHIVE');

    m.layers[1]!.digest = good;
    fs.writeFileSync(path.join(d.dir, 'manifest.json'), JSON.stringify(m));
    const blob = path.join(d.dir, hex(good));
    const outside = path.join(tmp, 'outside');
    fs.renameSync(blob, outside);
    fs.symlinkSync(outside, blob);
    await expectRefused(d.dir, 'ERR_INVALID_ARCHIVE');
  });
});
