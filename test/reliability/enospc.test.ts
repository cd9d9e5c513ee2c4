/**
 * Resource exhaustion (issue 11 item 5): the store on a small loop-mounted ext4 (64 MiB), on vfs and overlay2.
 *
 * - a layer bigger than the filesystem is registered: the registration fails with ENOSPC (the error carries
 *   code 'ENOSPC', or is a GraphdriverError whose cause chain does), nothing is registered, the partial layer is
 *   discarded (no driver layer, layerdb/tmp empty, the space is free again);
 * - a container whose changes fill more than half the filesystem is committed: the copy does not fit, the commit
 *   fails with ENOSPC, no image or layer is left from it; once the container is removed the store works again;
 * - the filesystem filled to the last block from outside the store: imports, container creation and commits
 *   fail with ENOSPC and leave nothing partial; after the filler is deleted the same operations succeed;
 * - after each step verify() is clean and nothing is left mounted.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { END_OF_ARCHIVE, encodeHeader, paddingFor } from '../../lib/archive/tar-writer';
import { listDriverLayers } from '../../lib/layer/driver-layers';
import { loadBindings } from '../../lib/native/bindings';
import { Storage } from '../../lib/storage/storage';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';
import { CLEAN_REPORT, loopDevicesBelow, makeLoopFs, mountsBelow, problems, unmountAll, type LoopFs } from './helpers';

const MiB = 1 << 20;
const ENOSPC = 28;
const b = loadBindings();

/** Whether `e` (or an error in its cause chain) is ENOSPC, by code or errno; returns the form it took. */
function noSpace(e: unknown): string | null {
  for (let x: unknown = e, depth = 0; x !== null && typeof x === 'object' && depth < 5; x = (x as { cause?: unknown }).cause, depth++) {
    const o = x as { code?: unknown; errno?: unknown };
    if (o.code === 'ENOSPC') return depth === 0 ? 'code ENOSPC' : `code ENOSPC in cause ${depth}`;
    if (o.errno === -ENOSPC || o.errno === ENOSPC) return depth === 0 ? 'errno ENOSPC' : `errno ENOSPC in cause ${depth}`;
  }
  return null;
}

/** Resolves to the ENOSPC form of the rejection; throws when `p` resolves or fails otherwise. */
async function expectNoSpace(p: Promise<unknown>): Promise<string> {
  const e = await p.then(
    () => {
      throw new Error('expected ENOSPC, but the operation succeeded');
    },
    (x: unknown) => x,
  );
  const form = noSpace(e);
  if (form === null) throw new Error(`expected ENOSPC, got ${(e as { code?: unknown }).code ?? ''} ${(e as Error).stack ?? String(e)}`);
  return form;
}

/** A tar of one `size`-byte file of random data, produced lazily in 1 MiB chunks. */
async function* bigLayer(size: number): AsyncGenerator<Buffer> {
  yield encodeHeader({ name: 'big.bin', type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeSec: 1700000000, size });
  for (let left = size; left > 0; left -= MiB) yield randomBytes(Math.min(MiB, left));
  yield Buffer.alloc(paddingFor(size));
  yield END_OF_ARCHIVE;
}

/** Fills the filesystem of `file` to the last block; resolves to the bytes written. */
function fillUp(file: string): number {
  const fd = fs.openSync(file, 'w');
  const chunk = Buffer.alloc(MiB, 0x5a);
  let total = 0;
  try {
    for (let len = MiB; len >= 1; ) {
      try {
        total += fs.writeSync(fd, chunk, 0, len);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
        len = Math.floor(len / 2);
      }
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return total;
}

const REASON = !isRoot ? 'needs root (loop device, mount)' : !kernelHasFs('ext4') ? 'the kernel has no ext4' : !haveTool('mkfs.ext4') ? 'mkfs.ext4 is not installed (apt-get install e2fsprogs)' : null;

for (const driverName of ['vfs', 'overlay2'] as const) {
  const reason = REASON ?? (driverName === 'overlay2' && !kernelHasFs('overlay') ? 'the kernel has no overlay' : null);
  describeIf(reason, `a full filesystem (64 MiB ext4, ${driverName})`, () => {
    let tmp: string;
    let loop: LoopFs | null = null;
    let root: string;
    let s: Storage | null = null;
    const forms: string[] = [];

    beforeAll(async () => {
      tmp = makeTmp(`gd-enospc-${driverName}-`);
      // No reserved blocks: root may use them, and the test runs as root.
      loop = await makeLoopFs(tmp, 'ext4', 64, ['-q', '-F', '-m', '0']);
      root = path.join(loop.mnt, 'store');
      s = await Storage.open({ root, driver: driverName });
    });
    afterAll(async () => {
      await s?.close().catch(() => undefined);
      await unmountAll(tmp);
      await loop?.dispose();
      expect(loopDevicesBelow(tmp)).toEqual([]);
      removeTmp(tmp);
      // eslint-disable-next-line no-console
      console.log(`enospc ${driverName}: ENOSPC surfaced as ${JSON.stringify(forms)}`);
    });

    const free = async (): Promise<number> => {
      const st = await b.statfs(loop!.mnt);
      return st.bavail * st.bsize;
    };

    /** Nothing partial: tmp empty, every driver layer is one the metadata names, verify clean, nothing mounted. */
    async function assertClean(): Promise<void> {
      const st = s!;
      expect(fs.readdirSync(path.join(root, 'image', driverName, 'layerdb', 'tmp'))).toEqual([]);
      const live = new Set([...(await st.listLayers()).map((l) => l.cacheId), ...(await st.listContainers()).flatMap((c) => [c.mountId, c.initId])]);
      expect((await listDriverLayers(driverName, path.join(root, driverName)))!.filter((id) => !live.has(id))).toEqual([]);
      expect(problems(await st.verify())).toEqual(CLEAN_REPORT);
      expect(mountsBelow(root).filter((m) => m.endsWith('/merged'))).toEqual([]);
    }

    test('a layer bigger than the filesystem: ENOSPC, nothing registered, the space comes back', async () => {
      const st = s!;
      const before = await free();
      forms.push(await expectNoSpace(st.registerLayer(Readable.from(bigLayer(100 * MiB)))));
      expect(await st.listLayers()).toEqual([]);
      await assertClean();
      // The partial layer's blocks are free again (a little slack for metadata and the journal).
      expect(await free()).toBeGreaterThan(before - 2 * MiB);
      // And the store works.
      const ok = await st.importImage(Readable.from([buildTar([{ name: 'etc/os-release', data: 'ID=small\n' }])]), { reference: 'small:1' });
      expect(ok.layers).toHaveLength(1);
      await assertClean();
    });

    test('committing a container whose changes do not fit twice: ENOSPC, nothing partial, usable after removal', async () => {
      const st = s!;
      const c = await st.createContainer('small:1');
      const p = await st.mountContainer(c.id);
      // More than half of what is free: the container holds it once, the committed layer cannot hold it again.
      const size = Math.floor((await free()) * 0.6);
      const fd = fs.openSync(path.join(p, 'payload.bin'), 'w');
      for (let left = size; left > 0; left -= MiB) fs.writeSync(fd, randomBytes(Math.min(MiB, left)));
      fs.closeSync(fd);
      await st.unmountContainer(c.id);
      const imagesBefore = (await st.listImages()).map((i) => i.id);
      const layersBefore = await st.listLayers();
      forms.push(await expectNoSpace(st.commitContainer(c.id, { reference: 'toobig:1' })));
      expect((await st.listImages()).map((i) => i.id)).toEqual(imagesBefore);
      expect(await st.listLayers()).toEqual(layersBefore);
      await assertClean();
      // Deleting something frees the space; then a commit of a (smaller) container goes through.
      await st.removeContainer(c.id);
      const c2 = await st.createContainer('small:1');
      fs.writeFileSync(path.join(await st.mountContainer(c2.id), 'note'), 'fits');
      await st.unmountContainer(c2.id);
      const img = await st.commitContainer(c2.id, { reference: 'fits:1' });
      expect(img.layers).toHaveLength(2);
      await st.removeContainer(c2.id);
      await st.removeImage('fits:1');
      await assertClean();
    });

    test('the filesystem filled from outside: imports, creations and commits fail with ENOSPC, then work again', async () => {
      const st = s!;
      const c = await st.createContainer('small:1');
      const p = await st.mountContainer(c.id);
      fs.writeFileSync(path.join(p, 'change'), randomBytes(256 * 1024));
      await st.unmountContainer(c.id);
      const filler = path.join(loop!.mnt, 'filler');
      fillUp(filler);
      const state = async (): Promise<unknown> => ({
        images: (await st.listImages()).map((i) => i.id),
        layers: await st.listLayers(),
        containers: (await st.listContainers()).map((x) => x.id),
      });
      const before = await state();
      // Whatever fits in the last blocks may succeed; what fails must fail with ENOSPC and leave nothing.
      const tries: Array<[string, () => Promise<unknown>]> = [
        ['import', () => st.importImage(Readable.from(bigLayer(4 * MiB)), { reference: 'full:1' })],
        ['createContainer', () => st.createContainer('small:1')],
        ['commit', () => st.commitContainer(c.id, { reference: 'full:2' })],
      ];
      for (const [what, op] of tries) {
        const form = await expectNoSpace(op());
        forms.push(`${what}: ${form}`);
        expect([what, await state()]).toEqual([what, before]);
        await assertClean();
      }
      fs.rmSync(filler);
      for (const [, op] of tries) await op();
      // The failed commit let go of the container's layer (its diff stream was destroyed): it can be removed.
      await st.removeContainer(c.id);
      expect((await st.listImages()).length).toBe((before as { images: string[] }).images.length + 2);
      for (const x of await st.listContainers()) await st.removeContainer(x.id);
      for (const ref of ['full:1', 'full:2', 'small:1']) await st.removeImage(ref);
      expect(await st.listLayers()).toEqual([]);
      await assertClean();
      await st.close();
      s = null;
      expect(mountsBelow(root)).toEqual([]);
    });
  });
}
