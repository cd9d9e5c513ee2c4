/**
 * `pullImage`: an image from a registry into the store, as `docker pull` does it.
 *
 * 1. The manifest (by tag or digest); a manifest list / OCI index is resolved to the entry for the platform
 *    (linux/amd64 unless told otherwise). Every manifest is verified against its digest.
 * 2. The config blob (verified), whose `rootfs.diff_ids` name the uncompressed layers.
 * 3. Layers whose chain is already in the store are skipped ("already exists"). The others are downloaded
 *    concurrently (3 at a time by default) and registered strictly bottom-up, since each layer is applied on
 *    its parent: the layer the store is waiting for is streamed straight from the connection into
 *    {@link LayerStore.register}; layers downloaded ahead of their turn go to a temp file that the registration
 *    reads while the download is still writing it. Every blob is checked against its digest, every layer
 *    against its diffID (ERR_DIGEST_MISMATCH).
 * 4. The image config is stored and tagged. On any failure or abort, the layers this pull registered are
 *    released again, so nothing of a failed pull stays in the store.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { parseImageConfig } from '../image/config';
import type { Image, ImageStore } from '../image/image-store';
import { chainIds } from '../layer/digest';
import type { LayerStore } from '../layer/layer-store';
import { anySignal, RegistryClient, type RegistryClientOptions, type RegistryOptions } from './client';
import type { DistributionMetadata } from './distribution-metadata';
import { NoMatchingPlatformError, UnsupportedManifestError } from './errors';
import { Limiter } from './limiter';
import { indexPlatforms, parseManifest, selectManifest, type Descriptor, type ImageManifest } from './manifest';
import { DEFAULT_PLATFORM, normalizePlatform, parsePlatform, platformRank, platformString, type Platform } from './platform';
import { manifestRef, parseRegistryReference, registryReferenceString } from './reference';
import { abortReason, throwIfAborted } from './retry';
import { Spool } from './spool';

/** Where a layer of a pull is. */
export type PullPhase = 'waiting' | 'downloading' | 'extracting' | 'done' | 'already exists';

/** One progress report about one layer. */
export interface PullProgress {
  /** Short id Docker shows: the first 12 hex digits of the layer blob's digest. */
  id: string;
  /** Position of the layer in the image, 0 for the base layer. */
  index: number;
  /** Digest of the (compressed) layer blob. */
  digest: string;
  phase: PullPhase;
  /** Bytes of the blob downloaded (`downloading`) or applied (`extracting`) so far. */
  bytes: number;
  /** Size of the blob. */
  total: number;
}

/** What a reference resolved to on the registry. */
export interface ResolvedManifest {
  /** The normalised reference pulled. */
  reference: string;
  /** Digest of the manifest the reference names (the list / index for a multi-platform image): Docker's "Digest:". */
  digest: string;
  /** Digest of the image manifest used (equal to `digest` for a single-platform image). */
  manifestDigest: string;
  /** Media type of the image manifest used. */
  mediaType: string;
  /** Platform of the entry chosen from a list / index. */
  platform?: Platform;
}

/** Options of a pull. */
export interface PullOptions extends RegistryOptions {
  /** Platform to pick from a multi-platform image: `os/arch[/variant]` (default linux/amd64). */
  platform?: string | Platform;
  /** Layers downloaded at once (default 3). */
  concurrency?: number;
  /** Progress of each layer (must not throw; its errors are ignored). */
  onProgress?: (p: PullProgress) => void;
  /** Called once the manifest is resolved, before any layer is fetched. */
  onResolved?: (m: ResolvedManifest) => void;
}

/** The store a pull writes into. */
export interface PullTarget {
  layers: Pick<LayerStore, 'has' | 'acquire' | 'release' | 'register'>;
  images: Pick<ImageStore, 'create' | 'tag' | 'get'>;
  /** Directory for temp files (layers downloaded ahead of their turn). */
  spoolDir: string;
  /** Records which blobs hold which layers, for later pushes. */
  distribution?: DistributionMetadata;
}

/** Result of a registry pull (what {@link Storage.pullImage} builds its image from). */
export interface PullResult extends ResolvedManifest {
  image: Image;
}

/** Largest image config accepted. */
const MAX_CONFIG_SIZE = 32 << 20;

/** The client options of a pull or push. */
export function clientOptions(host: string, o: RegistryOptions): RegistryClientOptions {
  const c: RegistryClientOptions = { host };
  if (o.credentials !== undefined) c.credentials = o.credentials;
  if (o.insecure !== undefined) c.insecure = o.insecure;
  if (o.retry !== undefined) c.retry = o.retry;
  if (o.idleTimeoutMs !== undefined) c.idleTimeoutMs = o.idleTimeoutMs;
  if (o.userAgent !== undefined) c.userAgent = o.userAgent;
  if (o.fetch !== undefined) c.fetch = o.fetch;
  return c;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

function wantedPlatform(p: string | Platform | undefined): Platform {
  if (p === undefined) return { ...DEFAULT_PLATFORM };
  if (typeof p === 'string') return parsePlatform(p);
  if (typeof p !== 'object' || p === null || typeof p.os !== 'string' || typeof p.architecture !== 'string') {
    throw new TypeError('platform must be "os/arch[/variant]" or { os, architecture, variant? }');
  }
  return normalizePlatform(p);
}

/** Pulls `ref` into `target`; see the module documentation. */
export async function pullImage(target: PullTarget, refString: string, opts: PullOptions = {}): Promise<PullResult> {
  const ref = parseRegistryReference(refString);
  const wanted = wantedPlatform(opts.platform);
  const concurrency = opts.concurrency ?? 3;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new TypeError('concurrency must be an integer >= 1');
  const signal = opts.signal;
  throwIfAborted(signal);
  const client = new RegistryClient(clientOptions(ref.host, opts));
  const reference = registryReferenceString(ref);

  // 1. Manifest, resolved through lists / indexes.
  const top = await client.getManifest(ref.repository, manifestRef(ref), signal ? { signal } : {});
  let m = parseManifest(top.bytes, top.mediaType);
  let chosen = top;
  let chosenPlatform: Platform | undefined;
  for (let depth = 0; m.kind === 'index'; depth++) {
    if (depth >= 2) throw new UnsupportedManifestError(`${reference}: image indexes nested more than twice`);
    const d = selectManifest(m, wanted);
    if (d === null) throw new NoMatchingPlatformError(reference, platformString(wanted), indexPlatforms(m));
    const o: { signal?: AbortSignal; expectSize: number } = { expectSize: d.size };
    if (signal) o.signal = signal;
    chosen = await client.getManifest(ref.repository, d.digest, o);
    m = parseManifest(chosen.bytes, chosen.mediaType);
    chosenPlatform = d.platform;
  }
  const manifest: ImageManifest = m;

  // 2. Config.
  const configBytes = await client.getBlob(ref.repository, manifest.config, MAX_CONFIG_SIZE, signal);
  const config = parseImageConfig(configBytes);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new UnsupportedManifestError(`${reference}: the manifest lists ${manifest.layers.length} layers but the config ${diffIds.length} diff_ids`);
  }
  if (opts.platform !== undefined && chosenPlatform === undefined && typeof config.os === 'string' && typeof config.architecture === 'string') {
    const have: Platform = { os: config.os, architecture: config.architecture };
    if (typeof config.variant === 'string') have.variant = config.variant;
    if (platformRank(wanted, have) === null) throw new NoMatchingPlatformError(reference, platformString(wanted), [platformString(normalizePlatform(have))]);
  }
  const resolved: ResolvedManifest = { reference, digest: top.digest, manifestDigest: chosen.digest, mediaType: manifest.mediaType };
  if (chosenPlatform !== undefined) resolved.platform = normalizePlatform(chosenPlatform);
  opts.onResolved?.(resolved);

  // 3. Layers.
  const topChain = await fetchLayers(target, client, ref.repository, manifest.layers, diffIds, concurrency, opts);
  try {
    // 4. Image.
    const id = await target.images.create(configBytes);
    await target.images.tag(id, reference);
    if (target.distribution) {
      for (const [i, d] of manifest.layers.entries()) {
        await target.distribution.add(diffIds[i]!, d.digest, ref.name, d.mediaType).catch(() => undefined);
      }
    }
    return { ...resolved, image: target.images.get(id) };
  } finally {
    if (topChain !== null) await target.layers.release(topChain);
  }
}

/**
 * Makes every layer's chain exist, bottom-up. Resolves to the top chain id with one handle held on it (null for
 * an image without layers); on failure, the layers registered here are released and the error is rethrown.
 */
async function fetchLayers(
  target: PullTarget,
  client: RegistryClient,
  repository: string,
  layers: Descriptor[],
  diffIds: string[],
  concurrency: number,
  opts: PullOptions,
): Promise<string | null> {
  const chains = chainIds(diffIds);
  const emit = (i: number, phase: PullPhase, bytes: number): void => {
    const d = layers[i]!;
    try {
      opts.onProgress?.({ id: d.digest.slice(7, 19), index: i, digest: d.digest, phase, bytes, total: d.size });
    } catch {
      // A progress callback's failure is not the pull's.
    }
  };
  // Chains nest: the highest existing one implies all below it.
  let have = -1;
  for (let i = chains.length - 1; i >= 0; i--) {
    if (target.layers.has(chains[i]!)) {
      have = i;
      break;
    }
  }
  let held: string | null = null;
  if (have >= 0) {
    await target.layers.acquire(chains[have]!);
    held = chains[have]!;
  }
  for (let i = 0; i <= have; i++) emit(i, 'already exists', 0);
  const todo: number[] = [];
  for (let i = have + 1; i < layers.length; i++) todo.push(i);
  for (const i of todo) emit(i, 'waiting', 0);
  if (todo.length === 0) return held;

  const internal = new AbortController();
  const sig = anySignal([opts.signal, internal.signal])!;
  let failure: unknown = null;
  const fail = (e: unknown): void => {
    if (failure === null) {
      failure = sig.aborted ? abortReason(sig) : e;
      internal.abort(failure);
    }
  };
  const limiter = new Limiter(concurrency);
  const sources = todo.map(() => deferred<AsyncIterable<Buffer>>());
  const spools = new Map<number, Spool>();
  const downloads: Array<Promise<void>> = [];
  let spoolDir: Promise<string> | null = null;
  let next = 0;

  const blob = (i: number): AsyncGenerator<Buffer> => client.blobStream(repository, layers[i]!, { signal: sig, onBytes: (b) => emit(i, 'downloading', b) });

  async function* direct(i: number): AsyncGenerator<Buffer> {
    try {
      for await (const c of blob(i)) yield c;
      emit(i, 'extracting', layers[i]!.size);
    } finally {
      limiter.release();
    }
  }

  const spoolDownload = async (i: number, spool: Spool): Promise<void> => {
    try {
      for await (const c of blob(i)) await spool.write(c);
      spool.finish();
    } catch (e) {
      spool.fail(e);
      throw e;
    } finally {
      limiter.release();
    }
  };

  const starter = (async (): Promise<void> => {
    for (let pos = 0; pos < todo.length; pos++) {
      await limiter.acquire(sig);
      const i = todo[pos]!;
      if (pos === next) {
        // The store is waiting for this layer: straight from the connection into the registration.
        sources[pos]!.resolve(direct(i));
        continue;
      }
      let spool: Spool;
      try {
        spoolDir ??= fs.mkdtemp(path.join(target.spoolDir, 'spool-pull-'));
        spool = await Spool.create(path.join(await spoolDir, `layer-${i}`));
      } catch (e) {
        limiter.release();
        throw e;
      }
      spools.set(pos, spool);
      sources[pos]!.resolve(spool.reader((b) => emit(i, 'extracting', b), sig));
      downloads.push(spoolDownload(i, spool).catch(fail));
    }
  })().catch(fail);

  const failed = new Promise<never>((_, reject) => {
    sig.addEventListener('abort', () => reject(abortReason(sig)), { once: true });
  });
  failed.catch(() => undefined);

  try {
    for (let pos = 0; pos < todo.length; pos++) {
      const i = todo[pos]!;
      const src = await Promise.race([sources[pos]!.promise, failed]);
      const reg = await target.layers.register(src, held, { expectedDiffId: diffIds[i]! });
      const prev = held;
      held = reg.chainId;
      // The new layer holds its parent from now on.
      if (prev !== null) await target.layers.release(prev);
      next = pos + 1;
      const spool = spools.get(pos);
      if (spool) await spool.close();
      emit(i, 'done', layers[i]!.size);
    }
    await starter;
    await Promise.all(downloads);
    if (failure !== null) throw failure;
    return held;
  } catch (e) {
    fail(e);
    await starter;
    await Promise.allSettled(downloads);
    if (held !== null) await target.layers.release(held).catch(() => undefined);
    throw failure ?? e;
  } finally {
    for (const s of spools.values()) await s.close();
    if (spoolDir !== null) {
      const dir = await (spoolDir as Promise<string>).catch(() => null);
      if (dir !== null) await fs.rm(dir, { recursive: true, force: true });
    }
  }
}
