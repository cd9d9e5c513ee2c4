/**
 * Store flows on overlay2: createContainer (init + rw layer, metadata published) on a 2-layer image, median of N
 * runs; and commit of a container with ~200 changes (adds, modifications, deletions), median of M runs.
 *
 *   npx tsc -p bench/tsconfig.json --outDir /tmp/gd-bench && node /tmp/gd-bench/bench/storage.js [runs] [driver]
 *
 * Needs root for overlay2. GRAPHDRIVER_ADDON selects the addon build.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { encodeHeader, END_OF_ARCHIVE, paddingFor } from '../lib/archive/tar-writer';
import { Storage } from '../lib/storage/storage';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function ms(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** A base layer: `dirs` directories of `files` files of 1-4 KiB. */
function baseTar(dirs: number, files: number): Buffer {
  const parts: Buffer[] = [];
  const hdr = { uid: 0, gid: 0, mtimeSec: 1700000000 };
  for (const d of ['etc', 'bin', 'usr', 'usr/share']) parts.push(encodeHeader({ ...hdr, name: `${d}/`, type: 'dir', mode: 0o755, size: 0 }));
  for (let d = 0; d < dirs; d++) {
    parts.push(encodeHeader({ ...hdr, name: `usr/share/d${d}/`, type: 'dir', mode: 0o755, size: 0 }));
    for (let f = 0; f < files; f++) {
      const data = Buffer.alloc(1024 + ((d * files + f) % 4) * 1024, d + f);
      parts.push(encodeHeader({ ...hdr, name: `usr/share/d${d}/f${f}`, type: 'file', mode: 0o644, size: data.length }), data, Buffer.alloc(paddingFor(data.length)));
    }
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 10);
  const driver = process.argv[3] ?? 'overlay2';
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-bench-store-'));
  const s = await Storage.open({ root, driver });
  try {
    const base = await s.importImage(Readable.from([baseTar(20, 50)]), { reference: 'bench/base' });
    const c0 = await s.createContainer(base.id);
    const p0 = await s.mountContainer(c0.id);
    fs.writeFileSync(path.join(p0, 'etc/app.conf'), 'x=1\n');
    await s.unmountContainer(c0.id);
    const image = await s.commitContainer(c0.id, { reference: 'bench/app' });
    await s.removeContainer(c0.id);

    // createContainer
    await s.removeContainer((await s.createContainer(image.id)).id); // warm-up
    const create: number[] = [];
    const ids: string[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = process.hrtime.bigint();
      const c = await s.createContainer(image.id);
      create.push(ms(t0));
      ids.push(c.id);
    }
    const createMount: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = process.hrtime.bigint();
      const c = await s.createContainer(image.id);
      await s.mountContainer(c.id);
      createMount.push(ms(t0));
      ids.push(c.id);
    }
    for (const id of ids) await s.removeContainer(id);

    // commit with ~200 changes: 80 new files, 80 modified, 40 deleted
    const commit: number[] = [];
    const commitRuns = Math.max(3, Math.min(runs, 5));
    let changes = 0;
    for (let i = 0; i < commitRuns; i++) {
      const c = await s.createContainer(image.id);
      const p = await s.mountContainer(c.id);
      fs.mkdirSync(path.join(p, 'data'));
      for (let f = 0; f < 80; f++) fs.writeFileSync(path.join(p, 'data', `n${f}`), Buffer.alloc(2048, f));
      for (let f = 0; f < 80; f++) fs.writeFileSync(path.join(p, `usr/share/d${f % 20}/f${Math.floor(f / 20)}`), Buffer.alloc(3000, f));
      for (let f = 0; f < 40; f++) fs.rmSync(path.join(p, `usr/share/d${f % 20}/f${10 + Math.floor(f / 20)}`));
      await s.unmountContainer(c.id);
      changes = (await s.containerChanges(c.id)).length;
      const t0 = process.hrtime.bigint();
      const img = await s.commitContainer(c.id, { reference: `bench/commit:${i}` });
      commit.push(ms(t0));
      await s.removeContainer(c.id);
      await s.removeImage(img.id);
    }
    const r = (x: number): string => x.toFixed(2);
    console.log(`driver ${driver}, image of 2 layers (${(await s.getImage(image.id)).size} bytes)`);
    console.log(`createContainer: median ${r(median(create))} ms (min ${r(Math.min(...create))}, max ${r(Math.max(...create))}, n=${runs})`);
    console.log(`createContainer + mountContainer: median ${r(median(createMount))} ms (n=${runs})`);
    console.log(`commitContainer with ${changes} changes: median ${r(median(commit))} ms (min ${r(Math.min(...commit))}, max ${r(Math.max(...commit))}, n=${commitRuns})`);
  } finally {
    for (const c of await s.listContainers()) await s.removeContainer(c.id).catch(() => undefined);
    await s.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
