/**
 * `docker load`: images from a `docker save` archive, an OCI image layout (archive or directory) or a skopeo
 * `dir:` directory into the store, all or nothing. The archive is read in place when it is an uncompressed tar file, spooled otherwise (see
 * {@link ImageArchive}); its manifests, configs and references are all read and checked before the first
 * layer is registered; layers are registered on their parents with the diffIDs the config announces (and the
 * blob digests the archive announces), layers already in the store are shared without reading them (as Docker
 * does); then the images are created and tagged. Any failure, or an abort, undoes what the load did: new
 * references are reverted, new images deleted, and the layers it registered released (so deleted when nothing
 * else holds them).
 * @module
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';

import type { RecyclableSource } from '../archive/byte-source';
import { InvalidArchiveError } from '../errors';
import { chainIdOf } from '../layer/digest';
import type { LayerStore } from '../layer/layer-store';
import { DigestMismatchError, ImageNotFoundError } from '../storage/errors';
import { randomHex, readDirIfExists } from '../storage/fsutil';
import { ImageArchive } from './archive-files';
import { DOCKER_MANIFEST, planDockerArchive } from './docker-archive';
import type { Image, ImageStore } from './image-store';
import type { ImagePlan, LayerPlan } from './load-plan';
import { isOciLayout, planOciLayout } from './oci-layout';
import { isSkopeoDir, planSkopeoDir } from './skopeo-dir';

/** Progress of one layer of a load (the shape the CLI's progress bars take). */
export interface LoadProgress {
  /** The layer's diffID. */
  id: string;
  /** `already exists`, `loading`, `done`. */
  phase: string;
  /** Bytes of the blob read so far. */
  bytes: number;
  /** Size of the blob, when known. */
  total?: number;
}

/** Options of {@link loadImageArchive} (and Storage.loadImage). */
export interface LoadImageOptions {
  /** Called as layers are loaded. It must not throw. */
  onProgress?: (p: LoadProgress) => void;
  /** Aborts the load (everything it did is undone); the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** What the loader needs from the store. */
export interface LoadTarget {
  layers: LayerStore;
  images: ImageStore;
  /** Directory for spool files (`<root>/tmp`); created when needed. */
  tmpDir: string;
}

/** Spool directories of loads in progress in this process (never swept). */
const activeSpools = new Set<string>();
const SPOOL_PREFIX = 'load-';

/** Removes spool directories left by a process that died during a load. */
async function sweepSpools(tmpDir: string): Promise<void> {
  for (const n of await readDirIfExists(tmpDir)) {
    const p = path.join(tmpDir, n);
    if (n.startsWith(SPOOL_PREFIX) && !activeSpools.has(p)) await fs.rm(p, { recursive: true, force: true });
  }
}

/**
 * Reads a blob from the archive, checking its announced size and digest at the end (the failure then fails the
 * layer's registration, before it is published), and the load's abort signal before every chunk. The chunks are
 * the archive reader's recycled buffers: the layer store hands them back when it is done with them.
 */
function verifiedBlob(input: RecyclableSource, l: LayerPlan, onBytes: (n: number) => void, signal?: AbortSignal): RecyclableSource {
  return {
    async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
      // An uncompressed blob named by its diffID is checked by the registration itself.
      const hash = l.digest !== undefined && l.digest !== l.diffId ? createHash('sha256') : null;
      let n = 0;
      for await (const b of input) {
        if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('load aborted');
        hash?.update(b);
        n += b.length;
        if (l.size !== undefined && n > l.size) throw new DigestMismatchError(`${l.size} bytes`, `more than ${l.size} bytes`, `layer blob ${l.path}`);
        onBytes(n);
        yield b;
      }
      if (l.size !== undefined && n !== l.size) throw new DigestMismatchError(`${l.size} bytes`, `${n} bytes`, `layer blob ${l.path}`);
      if (hash !== null) {
        const got = `sha256:${hash.digest('hex')}`;
        if (got !== l.digest) throw new DigestMismatchError(l.digest!, got, `layer blob ${l.path}`);
      }
    },
    recycle: (c) => input.recycle(c),
  };
}

/** What a load did so far, to undo it. */
interface Undo {
  /** Layer handles taken (chain ids, in order). */
  handles: string[];
  /** Images created by this load. */
  images: string[];
  /** References changed: what they pointed at before (null: nothing). */
  tags: Array<{ ref: string; old: string | null }>;
}

async function undo(t: LoadTarget, u: Undo): Promise<void> {
  for (const { ref, old } of u.tags.reverse()) {
    if (old === null) await t.images.untag(ref).catch(() => undefined);
    else await t.images.tag(old, ref).catch(() => undefined);
  }
  for (const id of u.images.reverse()) if (t.images.has(id)) await t.images.delete(id).catch(() => undefined);
  for (const chain of u.handles.reverse()) await t.layers.release(chain).catch(() => undefined);
}

/** The image a reference points at now, or null. */
function target(images: ImageStore, ref: string): string | null {
  try {
    return images.resolve(ref);
  } catch (e) {
    if (e instanceof ImageNotFoundError) return null;
    throw e;
  }
}

async function registerLayers(t: LoadTarget, archive: ImageArchive, plan: ImagePlan, u: Undo, opts: LoadImageOptions): Promise<void> {
  let parent: string | null = null;
  for (const l of plan.layers) {
    opts.signal?.throwIfAborted();
    const chain = chainIdOf(parent, l.diffId);
    if (t.layers.has(chain)) {
      try {
        await t.layers.acquire(chain);
        u.handles.push(chain);
        opts.onProgress?.({ id: l.diffId, phase: 'already exists', bytes: 0 });
        parent = chain;
        continue;
      } catch {
        // deleted meanwhile: registered below
      }
    }
    const total = l.size ?? archive.size(l.path);
    const progress = (bytes: number): void => opts.onProgress?.({ id: l.diffId, phase: 'loading', bytes, total });
    const reg = await t.layers.register(verifiedBlob(archive.chunks(l.path), l, progress, opts.signal), parent, { expectedDiffId: l.diffId });
    u.handles.push(reg.chainId);
    opts.onProgress?.({ id: l.diffId, phase: 'done', bytes: total, total });
    parent = chain;
  }
}

/** Loads the images of an archive; see the module documentation. Resolves to the images, in archive order. */
export async function loadImageArchive(t: LoadTarget, src: string | Readable, opts: LoadImageOptions = {}): Promise<Image[]> {
  opts.signal?.throwIfAborted();
  await fs.mkdir(t.tmpDir, { recursive: true, mode: 0o700 });
  await sweepSpools(t.tmpDir);
  const spool = path.join(t.tmpDir, `${SPOOL_PREFIX}${randomHex(8)}`);
  activeSpools.add(spool);
  let archive: ImageArchive | null = null;
  try {
    archive = await ImageArchive.open(src, spool, opts.signal);
    let plans: ImagePlan[];
    // A skopeo dir: has a manifest.json too (an object, not docker save's list): its `version` file tells.
    if (await isSkopeoDir(archive)) plans = await planSkopeoDir(archive);
    else if (archive.has(DOCKER_MANIFEST)) plans = await planDockerArchive(archive);
    else if (isOciLayout(archive)) plans = await planOciLayout(archive);
    else {
      throw new InvalidArchiveError(
        `not an image archive: no ${DOCKER_MANIFEST} (docker save), no oci-layout + index.json (OCI image layout), no version + ${DOCKER_MANIFEST} (skopeo dir:)`,
      );
    }
    const u: Undo = { handles: [], images: [], tags: [] };
    try {
      for (const plan of plans) await registerLayers(t, archive, plan, u, opts);
      opts.signal?.throwIfAborted();
      for (const plan of plans) {
        const existed = t.images.has(plan.id);
        await t.images.create(plan.config);
        if (!existed) u.images.push(plan.id);
      }
      for (const plan of plans) {
        for (const ref of plan.references) {
          const old = target(t.images, ref);
          if (old === plan.id) continue;
          await t.images.tag(plan.id, ref);
          u.tags.push({ ref, old });
        }
      }
      opts.signal?.throwIfAborted();
    } catch (e) {
      await undo(t, u);
      throw e;
    }
    // The images hold their layers now; the load's own handles go.
    for (const chain of u.handles.reverse()) await t.layers.release(chain);
    const seen = new Set<string>();
    return plans.filter((p) => !seen.has(p.id) && seen.add(p.id)).map((p) => t.images.get(p.id));
  } finally {
    await archive?.close();
    await fs.rm(spool, { recursive: true, force: true }).catch(() => undefined);
    activeSpools.delete(spool);
  }
}
