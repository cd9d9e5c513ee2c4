/**
 * `pushImage`: an image of the store to a registry, as `docker push` does it.
 *
 * For each layer (concurrently, 3 at a time by default), the cheapest way to get its blob into the target
 * repository: a blob the distribution metadata knows for the layer that the repository already has (HEAD), or
 * one mounted from another repository of the same registry; otherwise the layer's exact tar
 * ({@link LayerStore.tarStream}, the original bytes of a pulled or loaded layer, checked against its diffID) is
 * gzip-compressed into a temp file, looked up by its digest, and uploaded (one PUT, or PATCH chunks). Then the
 * config blob and the manifest (Docker schema 2 by default, or OCI), whose digest the registry must confirm.
 * What was uploaded is recorded so that the next push of the layer can skip or mount it.
 * @module
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';

import type { Image, ImageStore } from '../image/image-store';
import { parseReference, referenceName } from '../image/reference';
import { digestHex, sha256Digest } from '../layer/digest';
import { DigestMismatchError, InvalidReferenceError } from '../storage/errors';
import { anySignal, RegistryClient, type RegistryOptions } from './client';
import type { DistributionMetadata, V2Metadata } from './distribution-metadata';
import { Limiter } from './limiter';
import { buildImageManifest, layerCompression, MediaType, type Descriptor, type ManifestFormat } from './manifest';
import { clientOptions } from './pull';
import { parseRegistryReference, registryReferenceString } from './reference';
import { abortReason, throwIfAborted } from './retry';

/** Where a layer of a push is. */
export type PushPhase = 'waiting' | 'preparing' | 'pushing' | 'done' | 'already exists' | 'mounted';

/** One progress report about one layer. */
export interface PushProgress {
  /** Short id Docker shows: the first 12 hex digits of the layer's diffID. */
  id: string;
  /** Position of the layer in the image, 0 for the base layer. */
  index: number;
  diffId: string;
  phase: PushPhase;
  /** Bytes of the blob uploaded so far (`pushing`). */
  bytes: number;
  /** Size of the blob (0 while unknown). */
  total: number;
  /** Digest of the blob, once known. */
  digest?: string;
  /** Repository a `mounted` blob came from. */
  from?: string;
}

/** Options of a push. */
export interface PushOptions extends RegistryOptions {
  /** The local image to push (reference or id); default: the pushed reference itself. */
  image?: string;
  /** Manifest format (default 'docker': image manifest v2 schema 2, what `docker push` sends). */
  format?: ManifestFormat;
  /** Upload blobs in chunks of this many bytes (PATCH requests, resumable); default: one monolithic PUT per blob. */
  chunkSize?: number;
  /** Layers uploaded at once (default 3). */
  concurrency?: number;
  /** gzip level of uploaded layers (default 6, zlib's default, as Docker). */
  compressionLevel?: number;
  /** Progress of each layer (must not throw; its errors are ignored). */
  onProgress?: (p: PushProgress) => void;
  /** Called once the manifest is stored, with its digest and size (what `docker push` prints last). */
  onPushed?: (r: PushResult) => void;
}

/** What was pushed. */
export interface PushResult {
  /** The normalised reference pushed (`host/repo:tag`). */
  reference: string;
  /** Digest of the manifest (Docker's "digest: sha256:... size: N"). */
  digest: string;
  /** Size of the manifest in bytes. */
  size: number;
  mediaType: string;
}

/** The store a push reads from. */
export interface PushSource {
  /** The exact tar of a layer (checked against its diffID by the store). */
  layers: { tarStream(chainId: string): Promise<Readable> };
  images: Pick<ImageStore, 'resolve' | 'get' | 'contentDir'>;
  /** Directory for temp files (compressed layers). */
  spoolDir: string;
  /** Known blobs of layers, and where uploads are recorded. */
  distribution?: DistributionMetadata;
}

/** Candidate blobs tried per layer before compressing it ourselves. */
const MAX_CANDIDATES = 5;

/** The media type under which a known blob goes into a manifest of `format`, or null when it cannot. */
function layerMediaType(format: ManifestFormat, known: string | undefined): string | null {
  const c = known === undefined ? 'gzip' : layerCompression(known);
  if (format === 'docker') return c === 'gzip' ? MediaType.DockerLayerGzip : c === 'none' ? MediaType.DockerLayer : null;
  return c === 'gzip' ? MediaType.OciLayerGzip : c === 'zstd' ? MediaType.OciLayerZstd : MediaType.OciLayer;
}

/** Domain of a normalised repository name. */
function domainOf(name: string): string {
  return name.slice(0, name.indexOf('/'));
}

/** Repository path of a normalised name, or null when it is not one. */
function repoPathOf(name: string): string | null {
  try {
    const r = parseReference(name);
    return referenceName(r) === name ? r.path : null;
  } catch {
    return null;
  }
}

/** Pushes a local image as `refString`; see the module documentation. */
export async function pushImage(source: PushSource, refString: string, opts: PushOptions = {}): Promise<PushResult> {
  const ref = parseRegistryReference(refString);
  if (ref.digest !== undefined) throw new InvalidReferenceError(refString, 'cannot push to a digest reference; push a tag');
  const tag = ref.tag ?? 'latest';
  const format: ManifestFormat = opts.format ?? 'docker';
  if (format !== 'docker' && format !== 'oci') throw new TypeError(`format must be 'docker' or 'oci'`);
  const concurrency = opts.concurrency ?? 3;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new TypeError('concurrency must be an integer >= 1');
  if (opts.chunkSize !== undefined && (!Number.isSafeInteger(opts.chunkSize) || opts.chunkSize < 1)) throw new TypeError('chunkSize must be a positive integer');
  const level = opts.compressionLevel ?? 6;
  throwIfAborted(opts.signal);

  const id = source.images.resolve(opts.image ?? refString);
  const image: Image = source.images.get(id);
  const configBytes = await fs.readFile(path.join(source.images.contentDir, digestHex(id)));
  if (sha256Digest(configBytes) !== id) throw new DigestMismatchError(id, sha256Digest(configBytes), 'image config in the store');

  const client = new RegistryClient(clientOptions(ref.host, opts));
  const internal = new AbortController();
  const signal = anySignal([opts.signal, internal.signal])!;
  const ctx: PushContext = {
    source,
    client,
    repo: ref.repository,
    name: ref.name,
    domain: ref.domain,
    format,
    level,
    signal,
    opts,
    spoolDir: null,
  };
  const limiter = new Limiter(concurrency);
  const emit = (p: PushProgress): void => {
    try {
      opts.onProgress?.(p);
    } catch {
      // A progress callback's failure is not the push's.
    }
  };
  ctx.emit = emit;
  for (const [i, d] of image.diffIds.entries()) emit({ id: digestHex(d).slice(0, 12), index: i, diffId: d, phase: 'waiting', bytes: 0, total: 0 });

  // The same layer twice in an image is uploaded once.
  const byDiffId = new Map<string, Promise<Descriptor>>();
  let failure: unknown = null;
  try {
    const layerDescs = await Promise.all(
      image.diffIds.map((diffId, i) => {
        let p = byDiffId.get(diffId);
        if (p === undefined) {
          p = limiter.run(() => pushLayer(ctx, i, image.layers[i]!, diffId), signal);
          byDiffId.set(diffId, p);
        } else {
          p = p.then((d) => {
            emit({ id: digestHex(diffId).slice(0, 12), index: i, diffId, phase: 'already exists', bytes: 0, total: d.size, digest: d.digest });
            return d;
          });
        }
        return p.catch((e: unknown) => {
          if (failure === null) {
            failure = signal.aborted && opts.signal?.aborted ? abortReason(opts.signal) : e;
            internal.abort(failure);
          }
          throw failure;
        });
      }),
    );
    const configDesc: Descriptor = {
      mediaType: format === 'docker' ? MediaType.DockerConfig : MediaType.OciConfig,
      digest: id,
      size: configBytes.length,
    };
    if ((await client.blobSize(ctx.repo, id, signal, [`repository:${ctx.repo}:pull,push`])) === null) {
      await client.uploadBlob(ctx.repo, id, configBytes.length, () => once(configBytes), uploadOpts(ctx));
    }
    const manifest = buildImageManifest(format, configDesc, layerDescs);
    const mediaType = format === 'docker' ? MediaType.DockerManifest : MediaType.OciManifest;
    const digest = await client.putManifest(ctx.repo, tag, manifest, mediaType, signal);
    const result: PushResult = { reference: registryReferenceString({ ...ref, tag }), digest, size: manifest.length, mediaType };
    opts.onPushed?.(result);
    return result;
  } catch (e) {
    if (failure === null) internal.abort(e);
    await Promise.allSettled([...byDiffId.values()]);
    throw failure ?? e;
  } finally {
    if (ctx.spoolDir !== null) {
      const dir = await ctx.spoolDir.catch(() => null);
      if (dir !== null) await fs.rm(dir, { recursive: true, force: true });
    }
  }
}

interface PushContext {
  source: PushSource;
  client: RegistryClient;
  repo: string;
  name: string;
  domain: string;
  format: ManifestFormat;
  level: number;
  signal: AbortSignal;
  opts: PushOptions;
  spoolDir: Promise<string> | null;
  emit?: (p: PushProgress) => void;
}

async function* once(b: Buffer): AsyncGenerator<Uint8Array> {
  yield b;
}

function uploadOpts(ctx: PushContext, onBytes?: (n: number) => void): Parameters<RegistryClient['uploadBlob']>[4] {
  const o: Parameters<RegistryClient['uploadBlob']>[4] = { signal: ctx.signal };
  if (ctx.opts.chunkSize !== undefined) o.chunkSize = ctx.opts.chunkSize;
  if (onBytes) o.onBytes = onBytes;
  return o;
}

/** Gets one layer's blob into the target repository; resolves to its descriptor. */
async function pushLayer(ctx: PushContext, index: number, chainId: string, diffId: string): Promise<Descriptor> {
  const { client, repo, signal } = ctx;
  const id = digestHex(diffId).slice(0, 12);
  const report = (phase: PushPhase, bytes: number, total: number, digest?: string, from?: string): void => {
    const p: PushProgress = { id, index, diffId, phase, bytes, total };
    if (digest !== undefined) p.digest = digest;
    if (from !== undefined) p.from = from;
    ctx.emit?.(p);
  };
  const pushScopes = [`repository:${repo}:pull,push`];

  // 1. A blob known to hold the layer: already in the target, or mountable from a sibling repository.
  const known = ctx.source.distribution ? await ctx.source.distribution.get(diffId) : [];
  const ranked = rankCandidates(known, ctx).slice(0, MAX_CANDIDATES);
  for (const c of ranked) {
    throwIfAborted(signal);
    const mediaType = layerMediaType(ctx.format, c.MediaType)!;
    const size = await client.blobSize(repo, c.Digest, signal, pushScopes);
    if (size !== null && size >= 0) {
      report('already exists', size, size, c.Digest);
      await record(ctx, diffId, c.Digest, c.MediaType);
      return { mediaType, digest: c.Digest, size };
    }
    const fromPath = repoPathOf(c.SourceRepository);
    if (domainOf(c.SourceRepository) === ctx.domain && c.SourceRepository !== ctx.name && fromPath !== null) {
      const r = await client.mountBlob(repo, c.Digest, fromPath, signal).catch(() => null);
      if (r === null) continue;
      if (r.mounted) {
        const mountedSize = await client.blobSize(repo, c.Digest, signal, pushScopes);
        if (mountedSize !== null && mountedSize >= 0) {
          report('mounted', mountedSize, mountedSize, c.Digest, c.SourceRepository);
          await record(ctx, diffId, c.Digest, c.MediaType);
          return { mediaType, digest: c.Digest, size: mountedSize };
        }
      } else {
        await client.cancelUpload(repo, r.location, signal);
      }
    }
  }

  // 2. Compress the exact tar into a temp file.
  report('preparing', 0, 0);
  ctx.spoolDir ??= fs.mkdtemp(path.join(ctx.source.spoolDir, 'spool-push-'));
  const file = path.join(await ctx.spoolDir, `layer-${index}.tar.gz`);
  try {
    const tar = await ctx.source.layers.tarStream(chainId);
    const hash = createHash('sha256');
    let size = 0;
    await pipeline(
      tar,
      createGzip({ level: ctx.level }),
      async function* (src: AsyncIterable<Buffer>) {
        for await (const c of src) {
          hash.update(c);
          size += c.length;
          yield c;
        }
      },
      createWriteStream(file, { flags: 'wx', mode: 0o600 }),
      { signal },
    );
    const digest = `sha256:${hash.digest('hex')}`;
    const mediaType = ctx.format === 'docker' ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip;

    // 3. The same bytes may be there already (gzip output is deterministic for a given zlib and level).
    const existing = await client.blobSize(repo, digest, signal, pushScopes);
    if (existing === size) {
      report('already exists', size, size, digest);
    } else {
      report('pushing', 0, size, digest);
      await client.uploadBlob(
        repo,
        digest,
        size,
        (offset) => createReadStream(file, { start: offset, highWaterMark: 1 << 20 }),
        uploadOpts(ctx, (n) => report('pushing', n, size, digest)),
      );
    }
    await record(ctx, diffId, digest, MediaType.OciLayerGzip);
    report('done', size, size, digest);
    return { mediaType, digest, size };
  } finally {
    await fs.rm(file, { force: true });
  }
}

/** Known blobs in the order worth trying: the target repository, then its registry (mountable), then the rest. */
function rankCandidates(known: V2Metadata[], ctx: PushContext): V2Metadata[] {
  const usable = known.filter((m) => layerMediaType(ctx.format, m.MediaType) !== null);
  const score = (m: V2Metadata): number => (m.SourceRepository === ctx.name ? 0 : domainOf(m.SourceRepository) === ctx.domain ? 1 : 2);
  return usable.sort((a, b) => score(a) - score(b));
}

async function record(ctx: PushContext, diffId: string, digest: string, mediaType: string | undefined): Promise<void> {
  await ctx.source.distribution?.add(diffId, digest, ctx.name, mediaType).catch(() => undefined);
}
