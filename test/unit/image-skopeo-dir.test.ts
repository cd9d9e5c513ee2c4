/**
 * The skopeo `dir:` reader without root: detection (a docker save directory also has a manifest.json), plans
 * from Docker schema 2 and OCI manifests and from a manifest list (the host's entry), and refusals with typed
 * errors: digests that would make paths, blobs that do not match their digest or size, links out of the
 * directory, unsupported versions and schema 1.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { ImageArchive } from '../../lib/image/archive-files';
import { isSkopeoDir, planSkopeoDir, skopeoBlobPath } from '../../lib/image/skopeo-dir';
import { hex, sha } from '../support/image-archives';
import { writeSkopeoDir } from '../support/skopeo-dir';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const l1 = buildTar([
  { name: 'etc/', type: 'dir' },
  { name: 'etc/passwd', data: 'root:x:0:0::/root:/bin/sh\n' },
]);
const l2 = buildTar([{ name: 'opt/b', data: Buffer.alloc(5000, 0x62) }]);

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toMatchObject({ code });
}

describe('skopeo dir: reader', () => {
  let tmp: string;
  beforeEach(() => (tmp = makeTmp('gd-skopeo-dir-')));
  afterEach(() => removeTmp(tmp));
  const open = (dir: string): Promise<ImageArchive> => ImageArchive.open(dir, path.join(tmp, `spool-${Math.random()}`));
  const plan = async (dir: string): Promise<Awaited<ReturnType<typeof planSkopeoDir>>> => planSkopeoDir(await open(dir));

  test('detection: the version file decides, not manifest.json', async () => {
    const d = writeSkopeoDir(path.join(tmp, 'd'), [l1]);
    expect(await isSkopeoDir(await open(d.dir))).toBe(true);
    // A docker save directory: manifest.json without the transport's version file.
    const save = path.join(tmp, 'save');
    fs.mkdirSync(save);
    fs.writeFileSync(path.join(save, 'manifest.json'), '[]');
    expect(await isSkopeoDir(await open(save))).toBe(false);
    fs.writeFileSync(path.join(save, 'version'), '1.0');
    expect(await isSkopeoDir(await open(save))).toBe(false);
  });

  for (const format of ['docker', 'oci'] as const) {
    for (const gzip of [true, false]) {
      test(`plan of a ${format} manifest, ${gzip ? 'gzip' : 'uncompressed'} layers`, async () => {
        const d = writeSkopeoDir(path.join(tmp, 'd'), [l1, l2], { format, gzip });
        const [p, ...rest] = await plan(d.dir);
        expect(rest).toEqual([]);
        expect(p!.id).toBe(d.id);
        expect(p!.config.equals(d.config)).toBe(true);
        expect(p!.references).toEqual([]);
        expect(p!.layers).toEqual(
          d.blobDigests.map((digest, i) => ({ path: hex(digest), diffId: d.diffIds[i], digest, size: fs.statSync(path.join(d.dir, hex(digest))).size })),
        );
      });
    }
  }

  test('a manifest list: the host platform entry, read from <hex>.manifest.json and verified', async () => {
    for (const format of ['docker', 'oci'] as const) {
      const d = writeSkopeoDir(path.join(tmp, `list-${format}`), [l1, l2], { format, list: true });
      const [p] = await plan(d.dir);
      expect(p!.id).toBe(d.id);
      expect(p!.source).toBe(`${hex(sha(d.manifest))}.manifest.json`);
    }
    // The entry's manifest changed after the list was written: its digest no longer matches.
    const d = writeSkopeoDir(path.join(tmp, 'tampered'), [l1], { list: true });
    const entry = path.join(d.dir, `${hex(sha(d.manifest))}.manifest.json`);
    fs.writeFileSync(entry, d.manifest.toString().replace('"schemaVersion":2', '"schemaVersion":2 '));
    await expectCode(plan(d.dir), 'ERR_DIGEST_MISMATCH');
  });

  test('digests never make paths: traversal and other algorithms are refused before any file is read', async () => {
    expect(() => skopeoBlobPath('sha256:../../../etc/passwd')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARCHIVE' }));
    const d = writeSkopeoDir(path.join(tmp, 'd'), [l1]);
    const m = JSON.parse(d.manifest.toString()) as { layers: Array<{ digest: string }>; config: { digest: string } };
    for (const digest of ['sha256:../../../../etc/passwd', `sha256:${'0'.repeat(63)}/`, `sha512:${'0'.repeat(128)}`, `sha256:${'A'.repeat(64)}`]) {
      m.layers[0]!.digest = digest;
      fs.writeFileSync(path.join(d.dir, 'manifest.json'), JSON.stringify(m));
      await expectCode(plan(d.dir), 'ERR_INVALID_ARCHIVE');
    }
  });

  test('blobs must match: config digest, layer size; a blob linking out of the directory is missing', async () => {
    const d = writeSkopeoDir(path.join(tmp, 'config'), [l1]);
    fs.writeFileSync(path.join(d.dir, hex(d.id)), Buffer.from(d.config.toString().replace('linux', 'LINUX')));
    await expectCode(plan(d.dir), 'ERR_DIGEST_MISMATCH');

    const s = writeSkopeoDir(path.join(tmp, 'size'), [l1]);
    fs.appendFileSync(path.join(s.dir, hex(s.blobDigests[0]!)), 'x');
    await expectCode(plan(s.dir), 'ERR_DIGEST_MISMATCH');

    // The right bytes, outside the directory, behind a symlink: links resolve inside the directory only.
    const o = writeSkopeoDir(path.join(tmp, 'link'), [l1]);
    const blob = path.join(o.dir, hex(o.blobDigests[0]!));
    const outside = path.join(tmp, 'outside-blob');
    fs.renameSync(blob, outside);
    fs.symlinkSync(outside, blob);
    await expectCode(plan(o.dir), 'ERR_INVALID_ARCHIVE');
    fs.rmSync(blob);
    fs.symlinkSync(path.relative(o.dir, outside), blob); // ../outside-blob: climbs to the directory's root
    await expectCode(plan(o.dir), 'ERR_INVALID_ARCHIVE');
  });

  test('unsupported: version 2, schema 1, a manifest that is neither, a list without the host', async () => {
    const v = writeSkopeoDir(path.join(tmp, 'v2'), [l1]);
    fs.writeFileSync(path.join(v.dir, 'version'), 'Directory Transport Version: 2.0\n');
    await expectCode(plan(v.dir), 'ERR_INVALID_ARCHIVE');

    const s1 = writeSkopeoDir(path.join(tmp, 's1'), [l1]);
    fs.writeFileSync(path.join(s1.dir, 'manifest.json'), JSON.stringify({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] }));
    await expect(plan(s1.dir)).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE', message: expect.stringContaining('schema 1') });

    for (const bad of ['[]', '{"schemaVersion":2}', '{"schemaVersion":2,"mediaType":"application/vnd.example+json"}', 'not json']) {
      fs.writeFileSync(path.join(s1.dir, 'manifest.json'), bad);
      await expectCode(plan(s1.dir), 'ERR_INVALID_ARCHIVE');
    }

    const l = writeSkopeoDir(path.join(tmp, 'list'), [l1], { list: true });
    const list = JSON.parse(fs.readFileSync(path.join(l.dir, 'manifest.json'), 'utf8')) as { manifests: Array<{ platform: { architecture: string } }> };
    list.manifests[1]!.platform.architecture = 's390x-not-here';
    fs.writeFileSync(path.join(l.dir, 'manifest.json'), JSON.stringify(list));
    await expectCode(plan(l.dir), 'ERR_INVALID_ARCHIVE');
  });
});
