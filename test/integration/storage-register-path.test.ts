/**
 * Registering layers from a file path, where the store reads the tar into recycled 1 MiB buffers that go back
 * to the reader once the tar-split recorder, the hash and the driver's apply are all done with them. A buffer
 * given back too early would be overwritten by a later read while still in use: the files on disk, the diffID
 * or the recorded CRCs would then be wrong. Each layer here is re-created from its record (layerTar, which
 * checks every file CRC and the whole sha256) and compared with the original file byte for byte; the files in
 * the mounted layer are compared with the tar's bodies.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { readTar } from '../../lib/archive/tar-reader';
import { Storage } from '../../lib/storage/storage';
import { describeIf, isRoot, kernelHasFs } from '../support/native';
import { buildTar, type TestEntry } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const sha = (buf: Buffer): string => `sha256:${createHash('sha256').update(buf).digest('hex')}`;

/**
 * About 12 MiB of files whose sizes put headers, bodies and padding across every position of the 1 MiB chunk
 * boundaries, with long names (PAX headers) and directories in between; random contents so that a reused
 * buffer shows.
 */
function layerTar(seed: number): Buffer {
  const entries: TestEntry[] = [{ name: 'd/', type: 'dir' }];
  let total = 0;
  for (let i = 0; total < 12 << 20; i++) {
    const size = (i * 7919 + seed * 131) % 3 === 0 ? ((i * 104729) % (900 << 10)) + 1 : (i * 613) % 5000;
    const long = i % 17 === 0 ? `${'n'.repeat(120)}/` : '';
    if (long && i % 34 === 0) entries.push({ name: `d/${long}`, type: 'dir' });
    entries.push({ name: `d/${long}f${i}`, data: randomBytes(size) });
    total += size + 512;
  }
  return buildTar(entries);
}

async function collect(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

const drivers: Array<{ name: string; reason: string | null }> = [
  { name: 'overlay2', reason: !isRoot ? 'needs root' : !kernelHasFs('overlay') ? 'kernel without overlay' : null },
  { name: 'vfs', reason: !isRoot ? 'needs root (layer files keep their owners)' : null },
];

for (const d of drivers) {
  describeIf(d.reason, `registerLayer from a path (${d.name}): recycled read buffers`, () => {
    let dir: string;
    let store: Storage;

    beforeAll(async () => {
      dir = makeTmp('gd-regpath-');
      store = await Storage.open({ root: path.join(dir, 'root'), driver: d.name });
    });

    afterAll(async () => {
      await store?.close();
      removeTmp(dir);
    });

    it('re-creates every layer byte for byte and writes every file intact', async () => {
      let parent: string | null = null;
      const tars: Buffer[] = [];
      for (let seed = 1; seed <= 3; seed++) {
        const tar = layerTar(seed);
        tars.push(tar);
        const file = path.join(dir, `layer${seed}.tar`);
        fs.writeFileSync(file, tar);
        const layer = await store.registerLayer(file, parent);
        expect(layer.diffId).toBe(sha(tar));
        // The record (headers, padding, file CRCs) plus the files on disk give back the very same tar.
        const again = await collect(await store.layerTar(layer.chainId));
        expect(again.length).toBe(tar.length);
        expect(again.equals(tar)).toBe(true);
        parent = layer.chainId;
      }
      // The files of the top layer, read through a container's mount, are the tar's bodies.
      const last = tars[2]!;
      const image = await store.createImage(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: tars.map(sha) } })));
      const ctr = await store.createContainer(image.id);
      const mp = await store.mountContainer(ctr.id);
      let files = 0;
      for await (const e of readTar(Readable.from([last]))) {
        const body = await collect(Readable.from(e.body()));
        if (e.header.type !== 'file') continue;
        const onDisk = fs.readFileSync(path.join(mp, e.header.name));
        expect(onDisk.equals(body)).toBe(true);
        files++;
      }
      expect(files).toBeGreaterThan(20);
      await store.unmountContainer(ctr.id);
      await store.removeContainer(ctr.id);
    }, 120_000);
  });
}
