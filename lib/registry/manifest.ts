/**
 * Manifests of the distribution API: Docker image manifest v2 schema 2 and OCI image manifests (a config blob
 * and layer blobs), Docker manifest lists and OCI image indexes (one manifest per platform). Parsing checks
 * everything the client later trusts (digests, sizes, media types); schema 1 and artifacts are refused.
 * @module
 */
import { UnsupportedManifestError } from './errors';
import { normalizePlatform, platformRank, platformString, type Platform } from './platform';

/** Media types the client reads and writes. */
export const MediaType = {
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  DockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerLayerZstd: 'application/vnd.docker.image.rootfs.diff.tar.zstd',
  DockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OciNondistributableLayer: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  OciNondistributableLayerGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  OciNondistributableLayerZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
} as const;

/** `Accept` header of manifest requests: every manifest kind the client can use, the indexes first. */
export const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.DockerManifestList, MediaType.OciManifest, MediaType.DockerManifest].join(', ');

const LAYER_TYPES = new Set<string>([
  MediaType.DockerLayer,
  MediaType.DockerLayerGzip,
  MediaType.DockerLayerZstd,
  MediaType.DockerForeignLayerGzip,
  MediaType.OciLayer,
  MediaType.OciLayerGzip,
  MediaType.OciLayerZstd,
  MediaType.OciNondistributableLayer,
  MediaType.OciNondistributableLayerGzip,
  MediaType.OciNondistributableLayerZstd,
]);
const CONFIG_TYPES = new Set<string>([MediaType.DockerConfig, MediaType.OciConfig]);
const INDEX_TYPES = new Set<string>([MediaType.DockerManifestList, MediaType.OciIndex]);
const IMAGE_TYPES = new Set<string>([MediaType.DockerManifest, MediaType.OciManifest]);

/** Compression of a layer blob, from its media type. */
export type LayerCompression = 'none' | 'gzip' | 'zstd';

/** Compression a layer media type announces. */
export function layerCompression(mediaType: string): LayerCompression {
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.gzip')) return 'gzip';
  if (mediaType.endsWith('+zstd') || mediaType.endsWith('.zstd')) return 'zstd';
  return 'none';
}

/** An OCI content descriptor. */
export interface Descriptor {
  mediaType: string;
  /** `sha256:<hex>`. */
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
}

/** A manifest list / OCI index. */
export interface IndexManifest {
  kind: 'index';
  mediaType: string;
  manifests: Descriptor[];
}

/** An image manifest (Docker schema 2 or OCI). */
export interface ImageManifest {
  kind: 'image';
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

/** Either kind of manifest. */
export type Manifest = IndexManifest | ImageManifest;

/** Largest manifest the client accepts (Docker's limit too). */
export const MAX_MANIFEST_SIZE = 4 << 20;

const SHA256_RE = /^sha256:[0-9a-f]{64}$/;

function bad(why: string): UnsupportedManifestError {
  return new UnsupportedManifestError(`invalid manifest: ${why}`);
}

function parseDescriptor(v: unknown, where: string): Descriptor {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${where} is not an object`);
  const d = v as Record<string, unknown>;
  if (typeof d.mediaType !== 'string' || d.mediaType === '') throw bad(`${where} has no mediaType`);
  if (typeof d.digest !== 'string') throw bad(`${where} has no digest`);
  if (!SHA256_RE.test(d.digest)) {
    throw new UnsupportedManifestError(`${where} has digest ${JSON.stringify(d.digest.slice(0, 80))}: only sha256 digests are supported`);
  }
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw bad(`${where} has an invalid size`);
  const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.urls !== undefined) {
    if (!Array.isArray(d.urls) || !d.urls.every((u) => typeof u === 'string')) throw bad(`${where}.urls is not a list of strings`);
    out.urls = d.urls as string[];
  }
  if (d.annotations !== undefined && typeof d.annotations === 'object' && d.annotations !== null) {
    out.annotations = d.annotations as Record<string, string>;
  }
  if (d.platform !== undefined) {
    const p = d.platform as Record<string, unknown> | null;
    if (typeof p !== 'object' || p === null || typeof p.os !== 'string' || typeof p.architecture !== 'string') throw bad(`${where}.platform lacks os/architecture`);
    const plat: Platform = { os: p.os, architecture: p.architecture };
    if (typeof p.variant === 'string' && p.variant !== '') plat.variant = p.variant;
    if (typeof p['os.version'] === 'string') plat['os.version'] = p['os.version'];
    out.platform = plat;
  }
  return out;
}

/**
 * Parses a manifest. The kind comes from the document's `mediaType`, else the response's `Content-Type`, else
 * its shape (`manifests` vs `layers`), as registries and clients disagree on which of them to fill in.
 */
export function parseManifest(bytes: Buffer, contentType?: string | null): Manifest {
  if (bytes.length > MAX_MANIFEST_SIZE) throw bad(`${bytes.length} bytes is larger than the ${MAX_MANIFEST_SIZE} allowed`);
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw bad(`not JSON (${(e as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw bad('not a JSON object');
  const m = doc as Record<string, unknown>;
  const ct = contentType?.split(';')[0]?.trim().toLowerCase() || undefined;
  const declared = typeof m.mediaType === 'string' && m.mediaType !== '' ? m.mediaType : ct;
  if (m.schemaVersion === 1 || declared === MediaType.DockerSchema1 || declared === MediaType.DockerSchema1Signed) {
    throw new UnsupportedManifestError('Docker image manifest schema 1 is not supported (deprecated by Docker too); push the image again with a current client');
  }
  if (m.schemaVersion !== 2) throw bad(`schemaVersion ${JSON.stringify(m.schemaVersion)} (expected 2)`);
  const isIndex = declared !== undefined && INDEX_TYPES.has(declared) ? true : declared !== undefined && IMAGE_TYPES.has(declared) ? false : Array.isArray(m.manifests);
  if (declared !== undefined && !INDEX_TYPES.has(declared) && !IMAGE_TYPES.has(declared) && declared !== 'application/json') {
    throw new UnsupportedManifestError(`manifest media type ${JSON.stringify(declared)} is not an image (artifact?)`);
  }
  if (isIndex) {
    if (!Array.isArray(m.manifests)) throw bad('index without a manifests list');
    return {
      kind: 'index',
      mediaType: declared && INDEX_TYPES.has(declared) ? declared : MediaType.OciIndex,
      manifests: m.manifests.map((d, i) => parseDescriptor(d, `manifests[${i}]`)),
    };
  }
  if (!Array.isArray(m.layers)) throw bad('image manifest without a layers list');
  const config = parseDescriptor(m.config, 'config');
  if (!CONFIG_TYPES.has(config.mediaType)) {
    throw new UnsupportedManifestError(`config media type ${JSON.stringify(config.mediaType)} is not an image configuration (artifact?)`);
  }
  const layers = m.layers.map((d, i) => parseDescriptor(d, `layers[${i}]`));
  for (const [i, l] of layers.entries()) {
    if (!LAYER_TYPES.has(l.mediaType)) throw new UnsupportedManifestError(`layers[${i}] has media type ${JSON.stringify(l.mediaType)}, not an image layer`);
  }
  return { kind: 'image', mediaType: declared && IMAGE_TYPES.has(declared) ? declared : MediaType.OciManifest, config, layers };
}

/**
 * The entry of an index for `wanted`: the best-ranked match ({@link platformRank}), the first of equals. Entries
 * without a platform, or that are not image manifests (attestations, artifacts), are never chosen.
 */
export function selectManifest(index: IndexManifest, wanted: Platform): Descriptor | null {
  let best: Descriptor | null = null;
  let bestRank = Number.POSITIVE_INFINITY;
  for (const d of index.manifests) {
    if (d.platform === undefined || !(IMAGE_TYPES.has(d.mediaType) || INDEX_TYPES.has(d.mediaType))) continue;
    const r = platformRank(wanted, d.platform);
    if (r !== null && r < bestRank) {
      best = d;
      bestRank = r;
    }
  }
  return best;
}

/** Platforms an index offers (for error messages). */
export function indexPlatforms(index: IndexManifest): string[] {
  return index.manifests.filter((d) => d.platform !== undefined && d.platform.os !== 'unknown').map((d) => platformString(normalizePlatform(d.platform!)));
}

/** Manifest formats the client can push. */
export type ManifestFormat = 'docker' | 'oci';

/**
 * Serialises an image manifest the way Docker's distribution library does (keys in schema order, three-space
 * indentation), so that what we push looks like what `docker push` sends.
 */
export function buildImageManifest(format: ManifestFormat, config: Descriptor, layers: Descriptor[]): Buffer {
  const desc = (d: Descriptor): Record<string, unknown> => {
    const o: Record<string, unknown> = { mediaType: d.mediaType, size: d.size, digest: d.digest };
    if (d.urls !== undefined) o.urls = d.urls;
    if (d.annotations !== undefined) o.annotations = d.annotations;
    return o;
  };
  const doc = {
    schemaVersion: 2,
    mediaType: format === 'docker' ? MediaType.DockerManifest : MediaType.OciManifest,
    config: desc(config),
    layers: layers.map(desc),
  };
  return Buffer.from(JSON.stringify(doc, null, 3), 'utf8');
}
