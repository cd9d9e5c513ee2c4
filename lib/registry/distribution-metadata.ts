/**
 * What the store knows about layers on registries, in Docker's layout (`image/<driver>/distribution/`):
 *
 * - `v2metadata-by-diffid/sha256/<diffid-hex>`: JSON list of `{"Digest","SourceRepository","HMAC"}`, the
 *   compressed blobs known to hold that layer and the repositories they were seen in (newest first);
 * - `diffid-by-digest/sha256/<digest-hex>`: the diffID a compressed blob uncompresses to.
 *
 * Pull records every layer it sees; push uses the records to skip blobs the target already has (HEAD) or to
 * mount them from another repository of the same registry instead of uploading them, and records what it
 * uploaded. We add a `MediaType` field (Docker ignores it) so that a zstd blob is never announced as gzip.
 * The files are a cache: unreadable ones read as empty, and writes are atomic but not fsynced.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { DIGEST_RE, digestHex } from '../layer/digest';
import { atomicWriteFile, Mutex, readTextIfExists } from '../storage/fsutil';

/** One known blob of a layer (Docker's metadata.V2Metadata, plus the media type). */
export interface V2Metadata {
  /** `sha256:` of the compressed blob. */
  Digest: string;
  /** Normalised repository name the blob was seen in (`docker.io/library/busybox`). */
  SourceRepository: string;
  /** Docker's HMAC of the credentials used; always empty here. */
  HMAC: string;
  /** Layer media type of the blob (absent in Docker's records: gzip then). */
  MediaType?: string;
}

/** Docker keeps this many records per layer. */
const MAX_RECORDS = 50;
const NO_SYNC = { sync: false };

/**
 * Docker's distribution metadata store; see the module documentation.
 *
 * @example
 * ```ts
 * import * as path from 'node:path';
 * import { DistributionMetadata, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * const dist = new DistributionMetadata(path.join(store.imageStore.dir, 'distribution')); // what pulls and pushes record
 * const image = await store.getImage('busybox:latest');
 * const diffId = image.diffIds[0]!;
 * for (const m of await dist.get(diffId)) {
 *   console.log(m.Digest, m.SourceRepository); // a compressed blob of the layer, and where it was seen
 *   console.log((await dist.diffIdOf(m.Digest)) === diffId); // true
 * }
 * ```
 */
export class DistributionMetadata {
  private readonly mutex = new Mutex();
  readonly byDiffIdDir: string;
  readonly byDigestDir: string;

  /** `dir` is `<root>/image/<driver>/distribution`. */
  constructor(readonly dir: string) {
    this.byDiffIdDir = path.join(dir, 'v2metadata-by-diffid', 'sha256');
    this.byDigestDir = path.join(dir, 'diffid-by-digest', 'sha256');
  }

  /** Known blobs of a layer, newest first. */
  async get(diffId: string): Promise<V2Metadata[]> {
    if (!DIGEST_RE.test(diffId)) return [];
    const text = await readTextIfExists(path.join(this.byDiffIdDir, digestHex(diffId))).catch(() => null);
    if (text === null) return [];
    try {
      const v = JSON.parse(text) as unknown;
      if (!Array.isArray(v)) return [];
      return v.filter(
        (m): m is V2Metadata =>
          typeof m === 'object' && m !== null && typeof m.Digest === 'string' && DIGEST_RE.test(m.Digest) && typeof m.SourceRepository === 'string',
      );
    } catch {
      return [];
    }
  }

  /** The diffID a blob uncompresses to, when known. */
  async diffIdOf(digest: string): Promise<string | null> {
    if (!DIGEST_RE.test(digest)) return null;
    const t = (await readTextIfExists(path.join(this.byDigestDir, digestHex(digest))).catch(() => null))?.trim();
    return t !== undefined && DIGEST_RE.test(t) ? t : null;
  }

  /** Records that blob `digest` (of `mediaType`) holds layer `diffId` and was seen in `repository`. */
  async add(diffId: string, digest: string, repository: string, mediaType?: string): Promise<void> {
    if (!DIGEST_RE.test(diffId) || !DIGEST_RE.test(digest)) return;
    await this.mutex.run(async () => {
      const old = await this.get(diffId);
      const rec: V2Metadata = { Digest: digest, SourceRepository: repository, HMAC: '' };
      if (mediaType !== undefined) rec.MediaType = mediaType;
      const rest = old.filter((m) => !(m.Digest === digest && m.SourceRepository === repository));
      const list = [rec, ...rest].slice(0, MAX_RECORDS);
      await fs.mkdir(this.byDiffIdDir, { recursive: true, mode: 0o700 });
      await fs.mkdir(this.byDigestDir, { recursive: true, mode: 0o700 });
      await atomicWriteFile(path.join(this.byDiffIdDir, digestHex(diffId)), JSON.stringify(list), NO_SYNC, 0o600);
      await atomicWriteFile(path.join(this.byDigestDir, digestHex(digest)), diffId, NO_SYNC, 0o600);
    });
  }
}
