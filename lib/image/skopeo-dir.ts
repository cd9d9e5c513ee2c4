/**
 * Reading the directories `skopeo copy ... dir:DIR` writes (containers/image's directory transport), so that an
 * image fetched by skopeo (from a registry, a daemon, another store) loads without a conversion step:
 *
 * - `version`: `Directory Transport Version: 1.1\n` (1.0 before manifest lists were supported);
 * - `manifest.json`: the image manifest as the source served it (Docker schema 2 or OCI), or, after
 *   `skopeo copy --all`, a manifest list / OCI index whose entries are `<hex>.manifest.json`;
 * - every blob (config, layers) in a file named by the hex of its sha256 digest;
 * - possibly `signature-N` / `<hex>.signature-N` files, which are not read.
 *
 * Nothing in a file name is trusted: blob files are only ever looked up under names derived from digests that
 * passed `sha256:<64 hex>` validation, the manifest (of a list entry) and config are checked against their
 * digests and sizes before use, and every layer blob against its digest and size as it is streamed into the store
 * (and then against the config's diffID). The directory carries no reference: the images load untagged.
 * @module
 */
import { InvalidArchiveError } from '../errors';
import type { ImageArchive } from './archive-files';
import { DOCKER_MANIFEST } from './docker-archive';
import { parseJson, readVerified, type ImagePlan } from './load-plan';
import { descriptors, INDEX_TYPES, MANIFEST_TYPES, pickPlatform, planImageManifest } from './oci-layout';

/** The file that marks a skopeo `dir:` directory. */
export const SKOPEO_VERSION_FILE = 'version';
/** What `version` holds, up to the version number. */
export const SKOPEO_VERSION_PREFIX = 'Directory Transport Version: ';
/** Largest `version` file read (it is 33 bytes). */
const MAX_VERSION = 256;
/** Largest manifest (or manifest list) read. */
const MAX_MANIFEST = 4 << 20;

function bad(why: string): InvalidArchiveError {
  return new InvalidArchiveError(`corrupt skopeo dir: image: ${why}`);
}

/** Path of a blob in the directory: the hex of its (already validated) sha256 digest. */
export function skopeoBlobPath(digest: string): string {
  if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw bad(`malformed digest ${JSON.stringify(digest.slice(0, 100))}`);
  return digest.slice('sha256:'.length);
}

/** Path of the manifest of one entry of a manifest list. */
function instanceManifestPath(digest: string): string {
  return `${skopeoBlobPath(digest)}.manifest.json`;
}

/**
 * Whether the archive is a skopeo `dir:` directory: a `version` file that starts with the transport's marker
 * (read, since `docker save` archives have a `manifest.json` too, and legacy ones `<id>/VERSION` files).
 */
export async function isSkopeoDir(archive: ImageArchive): Promise<boolean> {
  if (!archive.has(SKOPEO_VERSION_FILE) || !archive.has(DOCKER_MANIFEST)) return false;
  if (archive.size(SKOPEO_VERSION_FILE) > MAX_VERSION) return false;
  return (await archive.read(SKOPEO_VERSION_FILE, SKOPEO_VERSION_FILE, MAX_VERSION)).toString('latin1').startsWith(SKOPEO_VERSION_PREFIX);
}

/** What kind of document a manifest is: its mediaType, or (OCI makes it optional) its shape. */
function kindOf(v: unknown): 'index' | 'manifest' | 'schema1' | 'unknown' {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'unknown';
  const o = v as Record<string, unknown>;
  if (o.schemaVersion === 1) return 'schema1';
  if (typeof o.mediaType === 'string') {
    if (INDEX_TYPES.has(o.mediaType)) return 'index';
    if (MANIFEST_TYPES.has(o.mediaType)) return 'manifest';
    return 'unknown';
  }
  if (Array.isArray(o.manifests)) return 'index';
  if (o.config !== undefined && Array.isArray(o.layers)) return 'manifest';
  return 'unknown';
}

/** Reads and checks the image a skopeo `dir:` directory holds (the host platform's, for a manifest list). */
export async function planSkopeoDir(archive: ImageArchive): Promise<ImagePlan[]> {
  const version = (await archive.read(SKOPEO_VERSION_FILE, SKOPEO_VERSION_FILE, MAX_VERSION)).toString('latin1');
  const number = version.startsWith(SKOPEO_VERSION_PREFIX) ? version.slice(SKOPEO_VERSION_PREFIX.length).trim() : '';
  if (!/^1\.\d+$/.test(number)) throw bad(`unsupported directory transport version ${JSON.stringify(version.slice(0, 60))}`);
  const top = await archive.read(DOCKER_MANIFEST, DOCKER_MANIFEST, MAX_MANIFEST);
  const parsed = parseJson(top, DOCKER_MANIFEST);
  const kind = kindOf(parsed);
  if (kind === 'schema1') throw new InvalidArchiveError('skopeo dir: image has a Docker schema 1 manifest, which is not supported (copy it with --format v2s2 or oci)');
  if (kind === 'manifest') return [await planImageManifest(archive, top, DOCKER_MANIFEST, [], DOCKER_MANIFEST, skopeoBlobPath)];
  if (kind !== 'index') throw bad(`${DOCKER_MANIFEST} is neither an image manifest nor a manifest list`);
  const entry = pickPlatform(descriptors(parsed, DOCKER_MANIFEST), DOCKER_MANIFEST);
  // skopeo writes the manifests of a list's entries only, never nested lists.
  if (!MANIFEST_TYPES.has(entry.mediaType)) throw bad(`the entry for this platform in ${DOCKER_MANIFEST} is a ${entry.mediaType}, not an image manifest`);
  const p = instanceManifestPath(entry.digest);
  const manifest = await readVerified(archive, p, 'image manifest', entry.digest, entry.size);
  if (kindOf(parseJson(manifest, p)) !== 'manifest') throw bad(`${p} is not an image manifest`);
  return [await planImageManifest(archive, manifest, entry.digest, [], p, skopeoBlobPath)];
}
