/**
 * The crash child (issue 11 item 3): runs the store's write paths in a loop on `<root>` until it is killed. Run by
 * the crash suites from a transpiled copy of lib/ (test/reliability/helpers.ts transpileLib):
 *
 *   node crash-child.js <root> <driver> <seed>
 *
 * It prints `loaded` once the library is loaded, waits for a `go` line on stdin, prints `opening`, then `ready`
 * once the store is open (after the open rolled back whatever the previous, killed child left), then
 * `op <name>` before each operation, so that the parent knows what a kill interrupted. Operations, picked at
 * random (seeded) within bounds that keep the store small: import (register + image), register on a random
 * layer + createImage, register + release (deletion path), createContainer (left mounted, like a running
 * container, so that a kill leaves mounts behind), write into a mounted container, commit, removeContainer,
 * removeImage. Layers are small (a few KiB) so that a loop turns over fast.
 * @module
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { END_OF_ARCHIVE, encodeHeader, paddingFor } from '../../../lib/archive/tar-writer';
import { Storage } from '../../../lib/storage/storage';

/** xorshift32: a small seeded generator (reproducible op sequences). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

/** A small layer: a directory of files, a symlink, a hardlink and, on top of a parent, a whiteout. */
function layerTar(tag: string, rand: () => number, onParent: boolean): Buffer {
  const parts: Buffer[] = [];
  const hdr = (name: string, type: 'file' | 'dir' | 'symlink' | 'link', size = 0, linkname?: string): Buffer =>
    encodeHeader({ name, type, mode: type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, mtimeSec: 1700000000, size, ...(linkname !== undefined ? { linkname } : {}) });
  parts.push(hdr(`d-${tag}/`, 'dir'));
  const files = 2 + Math.floor(rand() * 6);
  for (let i = 0; i < files; i++) {
    const data = randomBytes(200 + Math.floor(rand() * 3000));
    parts.push(hdr(`d-${tag}/f${i}`, 'file', data.length), data, Buffer.alloc(paddingFor(data.length)));
  }
  parts.push(hdr(`d-${tag}/link`, 'symlink', 0, 'f0'));
  parts.push(hdr(`d-${tag}/hard`, 'link', 0, `d-${tag}/f0`));
  if (onParent) parts.push(hdr('.wh.no-such-file', 'file'));
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

const say = (line: string): void => void fs.writeSync(1, `${line}\n`);

async function main(): Promise<void> {
  const [root, driver, seedArg] = process.argv.slice(2);
  if (!root || !driver) throw new Error('usage: crash-child <root> <driver> <seed>');
  const rand = rng(Number(seedArg ?? 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  // Spawned ahead of time (its start-up overlaps the parent's checks of the previous trial): waits for `go`.
  say('loaded');
  await new Promise<void>((resolve) => {
    let buf = '';
    process.stdin.on('data', (c: Buffer) => {
      buf += c.toString();
      if (buf.includes('go\n')) resolve();
    });
  });
  say('opening');
  const s = await Storage.open({ root, driver, lockTimeout: 30_000 });
  say('ready');
  const mounted = new Set<string>();
  for (let n = 0; ; n++) {
    const images = await s.listImages();
    const containers = await s.listContainers();
    const layers = await s.listLayers();
    const tag = `${process.pid}-${n}`;
    const r = rand();
    let op: string;
    if (images.length === 0 || (images.length < 6 && r < 0.15)) op = 'import';
    else if (containers.length > 3) op = 'removeContainer';
    else if (images.length > 6) op = 'removeImage';
    else op = pick(['register', 'registerRelease', 'createContainer', 'createContainer', 'write', 'commit', 'commit', 'removeContainer', 'removeImage']);
    if ((op === 'write' || op === 'commit' || op === 'removeContainer') && containers.length === 0) op = 'createContainer';
    say(`op ${op}`);
    switch (op) {
      case 'import':
        await s.importImage(Readable.from([layerTar(tag, rand, false)]), { reference: `crash/import:${tag}` });
        break;
      case 'register': {
        // A layer on a random chain, published as an image (createImage: the loaders' path).
        const parent = layers.length > 0 && rand() < 0.8 ? pick(layers) : null;
        const l = await s.registerLayer(Readable.from([layerTar(tag, rand, parent !== null)]), parent?.chainId ?? null);
        // The diffIDs of the whole chain, bottom first.
        const stack: string[] = [];
        for (let c: string | null = l.chainId; c !== null; c = (await s.getLayer(c)).parent) stack.unshift((await s.getLayer(c)).diffId);
        const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', created: new Date().toISOString(), rootfs: { type: 'layers', diff_ids: stack } }));
        await s.createImage(cfg, { reference: `crash/reg:${tag}` });
        await s.releaseLayer(l.chainId);
        break;
      }
      case 'registerRelease': {
        const parent = layers.length > 0 ? pick(layers).chainId : null;
        const l = await s.registerLayer(Readable.from([layerTar(tag, rand, parent !== null)]), parent);
        await s.releaseLayer(l.chainId);
        break;
      }
      case 'createContainer': {
        const c = await s.createContainer(pick(images).id);
        // Left mounted, as a running container would be.
        await s.mountContainer(c.id);
        mounted.add(c.id);
        break;
      }
      case 'write': {
        const c = pick(containers);
        const p = await s.mountContainer(c.id);
        fs.mkdirSync(path.join(p, 'data'), { recursive: true });
        fs.writeFileSync(path.join(p, 'data', `w-${tag}`), randomBytes(1000 + Math.floor(rand() * 4000)));
        fs.rmSync(path.join(p, 'data', 'old'), { force: true });
        fs.writeFileSync(path.join(p, 'data', 'old'), 'x');
        await s.unmountContainer(c.id);
        break;
      }
      case 'commit':
        await s.commitContainer(pick(containers).id, { reference: `crash/commit:${tag}` });
        break;
      case 'removeContainer': {
        const c = pick(containers);
        await s.removeContainer(c.id);
        mounted.delete(c.id);
        break;
      }
      case 'removeImage':
        await s.removeImage(pick(images).id).catch((e: unknown) => {
          // In use by a container or a child image: a refusal is an outcome, not a failure.
          if ((e as { code?: unknown }).code !== 'ERR_IMAGE_IN_USE') throw e;
        });
        break;
    }
    say(`done ${op}`);
  }
}

main().catch((e: unknown) => {
  fs.writeSync(2, `crash child failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
