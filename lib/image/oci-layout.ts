/**
 * Reading OCI image layouts (an `oci-layout` file, `index.json` and content-addressed `blobs/sha256/<hex>`), as
 * `skopeo copy ... oci-archive:` and Docker 25+ write them: every blob is checked against its descriptor's
 * digest and size; indexes (manifest lists) are resolved to the host platform; references come from the
 * `io.containerd.image.name` annotation (a full reference) or `org.opencontainers.image.ref.name` when that holds
 * a full reference (`name:tag`; a bare tag such as `latest` names no repository and is not applied).
 * @module
 */
import { InvalidArchiveError } from '../errors';
import { DigestMismatchError } from '../storage/errors';
import type { ImageArchive } from './archive-files';
import { goArch, hostVariant, parseImageConfig } from './config';
import { diffIdsFor, parseJson, readVerified, type ImagePlan, type LayerPlan } from './load-plan';
import { normalizeReference } from './reference';

/** The `oci-layout` marker file and its content. */
export const OCI_LAYOUT_FILE = 'oci-layout';
/** The layout's entry point. */
export const OCI_INDEX_FILE = 'index.json';
/** `{"imageLayoutVersion":"1.0.0"}`. */
export const OCI_LAYOUT_VERSION = '1.0.0';

/** Media types (OCI image spec, and Docker's equivalents). */
export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

/** Annotation holding a full reference (containerd, Docker 25+). */
export const ANNOTATION_IMAGE_NAME = 'io.containerd.image.name';
/** OCI annotation holding a reference or a tag. */
export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';

/** Media types of manifest lists / image indexes. */
export const INDEX_TYPES: ReadonlySet<string> = new Set<string>([MediaType.OciIndex, MediaType.DockerManifestList]);
/** Media types of image manifests. */
export const MANIFEST_TYPES: ReadonlySet<string> = new Set<string>([MediaType.OciManifest, MediaType.DockerManifest]);
const CONFIG_TYPES = new Set<string>([MediaType.OciConfig, MediaType.DockerConfig]);
const LAYER_TYPES = new Set<string>([
  MediaType.OciLayer,
  MediaType.OciLayerGzip,
  MediaType.OciLayerZstd,
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  MediaType.DockerLayerGzip,
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  'application/vnd.docker.image.rootfs.diff.tar',
]);
/** Nested indexes followed at most this deep. */
const MAX_INDEX_DEPTH = 4;

/** An OCI content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
}

function bad(why: string): InvalidArchiveError {
  return new InvalidArchiveError(`corrupt OCI image layout: ${why}`);
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

/** Validates a descriptor (sha256 digests only: the store addresses everything by sha256). */
export function parseDescriptor(v: unknown, what: string): Descriptor {
  const o = obj(v, what);
  if (typeof o.mediaType !== 'string') throw bad(`${what} has no mediaType`);
  if (typeof o.digest !== 'string') throw bad(`${what} has no digest`);
  if (!/^sha256:[0-9a-f]{64}$/.test(o.digest)) {
    throw bad(`${what}: unsupported or malformed digest ${JSON.stringify(o.digest.slice(0, 100))}`);
  }
  if (typeof o.size !== 'number' || !Number.isSafeInteger(o.size) || o.size < 0) throw bad(`${what} has no valid size`);
  const d: Descriptor = { mediaType: o.mediaType, digest: o.digest, size: o.size };
  if (o.annotations !== undefined) {
    const a = obj(o.annotations, `${what} annotations`);
    d.annotations = Object.fromEntries(Object.entries(a).filter((e): e is [string, string] => typeof e[1] === 'string'));
  }
  if (o.platform !== undefined) {
    const p = obj(o.platform, `${what} platform`);
    d.platform = {};
    if (typeof p.os === 'string') d.platform.os = p.os;
    if (typeof p.architecture === 'string') d.platform.architecture = p.architecture;
    if (typeof p.variant === 'string') d.platform.variant = p.variant;
  }
  return d;
}

/** Path of a blob in the layout. */
export function blobPath(digest: string): string {
  return `blobs/sha256/${digest.slice('sha256:'.length)}`;
}

/** Reads a blob and checks its digest and size. */
async function readBlob(archive: ImageArchive, d: Descriptor, what: string): Promise<Buffer> {
  return readVerified(archive, blobPath(d.digest), what, d.digest, d.size);
}

/** The entries of an image index / manifest list (schemaVersion 2, a `manifests` list of descriptors). */
export function descriptors(v: unknown, what: string): Descriptor[] {
  const o = obj(v, what);
  if (o.schemaVersion !== 2) throw bad(`${what}: schemaVersion must be 2`);
  if (!Array.isArray(o.manifests)) throw bad(`${what} has no manifests list`);
  return o.manifests.map((m, i) => parseDescriptor(m, `${what} manifest ${i}`));
}

/** How well a platform fits the host: 2 with the variant too, 1 for os/architecture, 0 not at all. */
function platformScore(p: Descriptor['platform']): number {
  if (p === undefined) return 1;
  if ((p.os ?? 'linux') !== 'linux' || p.architecture !== goArch()) return 0;
  const v = hostVariant();
  return p.variant === undefined || v === undefined || p.variant === v ? 2 : 0;
}

function platformName(p: Descriptor['platform']): string {
  return p === undefined ? 'unknown' : [p.os ?? '?', p.architecture ?? '?', p.variant].filter(Boolean).join('/');
}

/** The manifest for the host platform among an index's entries. */
export function pickPlatform(list: Descriptor[], what: string): Descriptor {
  const manifests = list.filter((d) => MANIFEST_TYPES.has(d.mediaType) || INDEX_TYPES.has(d.mediaType));
  let best: Descriptor | null = null;
  let bestScore = 0;
  for (const d of manifests) {
    const s = platformScore(d.platform);
    if (s > bestScore) {
      best = d;
      bestScore = s;
    }
  }
  if (best === null) {
    const host = ['linux', goArch(), hostVariant()].filter(Boolean).join('/');
    throw new InvalidArchiveError(`${what} has no image for ${host} (it has ${manifests.map((d) => platformName(d.platform)).join(', ') || 'none'})`);
  }
  return best;
}

/** References an index.json entry asks for. */
function referencesOf(d: Descriptor): string[] {
  const a = d.annotations ?? {};
  const full = a[ANNOTATION_IMAGE_NAME];
  if (full !== undefined) return [normalizeReference(full)];
  const name = a[ANNOTATION_REF_NAME];
  if (name === undefined || !/[:/]/.test(name)) return [];
  try {
    return [normalizeReference(name)];
  } catch {
    return []; // OCI allows any string here; one that is no reference is not applied
  }
}

async function planManifest(archive: ImageArchive, d: Descriptor, references: string[], source: string): Promise<ImagePlan> {
  return planImageManifest(archive, await readBlob(archive, d, 'image manifest'), d.digest, references, source, blobPath);
}

/**
 * Plans the image an image manifest (its bytes, already checked against their digest) describes: the config blob
 * is read and verified, every layer blob must be there with the size its descriptor announces (its digest is
 * checked as it is streamed into the store). `pathOf` names a blob's file in the archive: `blobs/sha256/<hex>` in
 * an OCI layout, `<hex>` in a skopeo `dir:` directory.
 */
export async function planImageManifest(
  archive: ImageArchive,
  manifest: Buffer,
  label: string,
  references: string[],
  source: string,
  pathOf: (digest: string) => string,
): Promise<ImagePlan> {
  const m = obj(parseJson(manifest, `manifest ${label}`), `manifest ${label}`);
  if (m.schemaVersion !== 2) throw bad(`manifest ${label}: schemaVersion must be 2`);
  const cfg = parseDescriptor(m.config, `manifest ${label} config`);
  if (!CONFIG_TYPES.has(cfg.mediaType)) throw new InvalidArchiveError(`${source} is not a container image (config type ${cfg.mediaType})`);
  if (!Array.isArray(m.layers)) throw bad(`manifest ${label} has no layers list`);
  const layerDescs = m.layers.map((l, i) => parseDescriptor(l, `manifest ${label} layer ${i}`));
  for (const l of layerDescs) {
    if (!LAYER_TYPES.has(l.mediaType)) throw new InvalidArchiveError(`${source}: unsupported layer type ${l.mediaType}`);
  }
  const config = await readVerified(archive, pathOf(cfg.digest), 'image config', cfg.digest, cfg.size);
  const diffIds = diffIdsFor(parseImageConfig(config), layerDescs.length, source);
  const layers = layerDescs.map((l, i): LayerPlan => {
    const p = pathOf(l.digest);
    const size = archive.size(p, `layer ${i} of ${source}`);
    if (size !== l.size) throw new DigestMismatchError(`${l.size} bytes`, `${size} bytes`, `layer blob ${p}`);
    return { path: p, diffId: diffIds[i]!, digest: l.digest, size: l.size };
  });
  return { id: cfg.digest, config, layers, references, source };
}

/** Resolves an index.json entry (a manifest, or an index to pick the host's manifest from) to an image. */
async function planEntry(archive: ImageArchive, d: Descriptor, references: string[], source: string, depth: number): Promise<ImagePlan> {
  if (MANIFEST_TYPES.has(d.mediaType)) return planManifest(archive, d, references, source);
  if (!INDEX_TYPES.has(d.mediaType)) throw new InvalidArchiveError(`${source}: unsupported manifest type ${d.mediaType}`);
  if (depth >= MAX_INDEX_DEPTH) throw bad(`${source}: indexes nested too deep`);
  const list = descriptors(parseJson(await readBlob(archive, d, 'image index'), `index ${d.digest}`), `index ${d.digest}`);
  return planEntry(archive, pickPlatform(list, `index ${d.digest}`), references, source, depth + 1);
}

/** Whether the archive looks like an OCI image layout. */
export function isOciLayout(archive: ImageArchive): boolean {
  return archive.has(OCI_LAYOUT_FILE) && archive.has(OCI_INDEX_FILE);
}

/** Reads and checks the images an OCI image layout holds. */
export async function planOciLayout(archive: ImageArchive): Promise<ImagePlan[]> {
  const layout = obj(parseJson(await archive.read(OCI_LAYOUT_FILE, OCI_LAYOUT_FILE), OCI_LAYOUT_FILE), OCI_LAYOUT_FILE);
  if (typeof layout.imageLayoutVersion !== 'string' || !layout.imageLayoutVersion.startsWith('1.')) {
    throw bad(`unsupported imageLayoutVersion ${JSON.stringify(layout.imageLayoutVersion)}`);
  }
  const entries = descriptors(parseJson(await archive.read(OCI_INDEX_FILE, OCI_INDEX_FILE), OCI_INDEX_FILE), OCI_INDEX_FILE);
  // Entries that name the same references and differ by platform (a flattened multi-platform image): the host's.
  const groups = new Map<string, Array<{ d: Descriptor; refs: string[]; i: number }>>();
  for (const [i, d] of entries.entries()) {
    if (!MANIFEST_TYPES.has(d.mediaType) && !INDEX_TYPES.has(d.mediaType)) continue; // e.g. attestations, artifacts
    const refs = referencesOf(d);
    const key = refs.join(' ');
    groups.set(key, [...(groups.get(key) ?? []), { d, refs, i }]);
  }
  const plans: ImagePlan[] = [];
  for (const group of groups.values()) {
    let chosen = group;
    if (group.length > 1 && group.some((g) => g.d.platform !== undefined)) {
      const pick = pickPlatform(group.map((g) => g.d), `${OCI_INDEX_FILE} (${group[0]!.refs.join(', ') || 'untagged'})`);
      chosen = group.filter((g) => g.d === pick);
    }
    for (const g of chosen) plans.push(await planEntry(archive, g.d, g.refs, `${OCI_INDEX_FILE} manifest ${g.i}`, 0));
  }
  if (plans.length === 0) throw bad(`${OCI_INDEX_FILE} lists no image`);
  return plans;
}
