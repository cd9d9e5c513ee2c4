/**
 * What an image archive asks the store to load, once its manifests and configs were read and checked: the
 * common output of the `docker save` reader ({@link planDockerArchive}) and the OCI image layout reader
 * ({@link planOciLayout}), executed by {@link loadImageArchive}.
 * @module
 */
import { sha256Digest } from '../layer/digest';
import { InvalidArchiveError } from '../errors';
import { DigestMismatchError } from '../storage/errors';
import type { ImageArchive } from './archive-files';
import type { ImageConfig } from './config';

/** One layer to register (or to find in the store already). */
export interface LayerPlan {
  /** Path of the layer blob in the archive (cleaned). */
  path: string;
  /** diffID the uncompressed tar must have (from the image config). */
  diffId: string;
  /** sha256 the blob itself must have (compressed bytes), when the archive says. */
  digest?: string;
  /** Size the blob must have, when the archive says. */
  size?: number;
}

/** One image to create. */
export interface ImagePlan {
  /** `sha256:` of the config bytes: the image id. */
  id: string;
  /** The config bytes, stored as they are. */
  config: Buffer;
  /** Layers bottom first, one per `rootfs.diff_ids` entry. */
  layers: LayerPlan[];
  /** Normalised references to point at the image. */
  references: string[];
  /** Where in the archive the image was described (for messages). */
  source: string;
}

/** `blobs/sha256/<hex>` paths carry the digest of their content. */
const BLOB_PATH = /^blobs\/sha256\/([0-9a-f]{64})$/;
/** Legacy `docker save` names the config `<image-id-hex>.json`. */
const LEGACY_CONFIG = /^([0-9a-f]{64})\.json$/;

/** The digest a path promises for its content (`blobs/sha256/<hex>`, `<hex>.json`), if any. */
export function digestOfPath(p: string): string | undefined {
  const m = BLOB_PATH.exec(p) ?? LEGACY_CONFIG.exec(p);
  return m ? `sha256:${m[1]}` : undefined;
}

/** Reads a small member and checks it against the digest (and size) it is announced with. */
export async function readVerified(archive: ImageArchive, p: string, what: string, digest?: string, size?: number): Promise<Buffer> {
  const data = await archive.read(p, what);
  if (size !== undefined && data.length !== size) throw new DigestMismatchError(`${size} bytes`, `${data.length} bytes`, `${what} ${p}`);
  if (digest !== undefined) {
    const got = sha256Digest(data);
    if (got !== digest) throw new DigestMismatchError(digest, got, `${what} ${p}`);
  }
  return data;
}

/** Parses JSON from an archive member; malformed JSON fails with ERR_INVALID_ARCHIVE. */
export function parseJson(data: Buffer, what: string): unknown {
  try {
    return JSON.parse(data.toString('utf8'));
  } catch (e) {
    throw new InvalidArchiveError(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Checks that an image config lists exactly one diffID per layer blob; returns the diffIDs. */
export function diffIdsFor(config: ImageConfig, layerCount: number, source: string): string[] {
  const ids = config.rootfs.diff_ids;
  if (ids.length !== layerCount) {
    throw new InvalidArchiveError(`${source}: the image config lists ${ids.length} layer(s) but the manifest ${layerCount}`);
  }
  return ids;
}
