/**
 * Reading `docker save` archives: `manifest.json` lists, per image, its config and its layer tars, and the
 * references (`RepoTags`) to set. Both layouts Docker writes are the same to this reader, as they differ only in
 * the paths the manifest names:
 *
 * - up to Docker 24: `<config-hex>.json` and `<v1-id>/layer.tar` (shared layers as symlinks to another
 *   `<v1-id>/layer.tar`), plus `repositories` and `<v1-id>/{VERSION,json}` for older tools;
 * - Docker 25+: `blobs/sha256/<hex>` for configs and layers (an OCI image layout with a `manifest.json`).
 *
 * Every path is checked to stay inside the archive, every digest a name promises is verified, the config must
 * list one diffID per layer (the layers themselves are checked against those diffIDs as they are registered).
 * @module
 */
import { InvalidArchiveError } from '../errors';
import { sha256Digest } from '../layer/digest';
import { InvalidReferenceError } from '../storage/errors';
import { cleanArchivePath, type ImageArchive } from './archive-files';
import { parseImageConfig } from './config';
import { diffIdsFor, digestOfPath, parseJson, readVerified, type ImagePlan } from './load-plan';
import { parseReference, normalizeReference } from './reference';

/** Name of the manifest of a `docker save` archive. */
export const DOCKER_MANIFEST = 'manifest.json';

/** One entry of `manifest.json` (Docker's tarexport.manifestItem). */
export interface DockerManifestItem {
  /** Path of the image config in the archive. */
  Config: string;
  /** References, `name:tag` (null or absent for an image saved by id). */
  RepoTags?: string[] | null;
  /** Paths of the layer tars, bottom first. */
  Layers: string[];
  /** Image the saved one was built from (informative). */
  Parent?: string;
  /** Foreign layer descriptors by diffID (Windows base layers). */
  LayerSources?: Record<string, unknown>;
}

function bad(why: string): InvalidArchiveError {
  return new InvalidArchiveError(`corrupt ${DOCKER_MANIFEST}: ${why}`);
}

/** Validates the shape of `manifest.json`. */
export function parseDockerManifest(data: Buffer): DockerManifestItem[] {
  const v = parseJson(data, DOCKER_MANIFEST);
  if (!Array.isArray(v)) throw bad('not a list');
  if (v.length === 0) throw bad('no images');
  return v.map((item: unknown, i): DockerManifestItem => {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) throw bad(`entry ${i} is not an object`);
    const o = item as Record<string, unknown>;
    if (typeof o.Config !== 'string' || o.Config === '') throw bad(`entry ${i} has no Config`);
    if (!Array.isArray(o.Layers) || !o.Layers.every((l) => typeof l === 'string' && l !== '')) throw bad(`entry ${i}: Layers must be a list of paths`);
    if (o.RepoTags !== undefined && o.RepoTags !== null && (!Array.isArray(o.RepoTags) || !o.RepoTags.every((t) => typeof t === 'string'))) {
      throw bad(`entry ${i}: RepoTags must be a list of references`);
    }
    const out: DockerManifestItem = { Config: o.Config, Layers: o.Layers as string[] };
    if (Array.isArray(o.RepoTags)) out.RepoTags = o.RepoTags as string[];
    if (typeof o.Parent === 'string') out.Parent = o.Parent;
    return out;
  });
}

/** A `RepoTags` entry: a reference with a tag (Docker refuses digests and bare names here). */
function repoTag(tag: string, source: string): string {
  const r = parseReference(tag);
  if (r.tag === undefined || r.digest !== undefined) throw new InvalidReferenceError(tag, `${source}: RepoTags entries must be name:tag`);
  return normalizeReference(tag);
}

/** Reads and checks the images a `docker save` archive holds. */
export async function planDockerArchive(archive: ImageArchive): Promise<ImagePlan[]> {
  const items = parseDockerManifest(await archive.read(DOCKER_MANIFEST, DOCKER_MANIFEST, 64 << 20));
  const plans: ImagePlan[] = [];
  for (const [i, item] of items.entries()) {
    const source = `${DOCKER_MANIFEST} entry ${i}`;
    // Paths are cleaned (and refused when they climb out) before anything is read through them.
    const configPath = cleanArchivePath(item.Config, 'Config path');
    const layerPaths = item.Layers.map((l) => cleanArchivePath(l, 'layer path'));
    const references = (item.RepoTags ?? []).map((t) => repoTag(t, source));
    const config = await readVerified(archive, configPath, 'image config', digestOfPath(configPath));
    const diffIds = diffIdsFor(parseImageConfig(config), layerPaths.length, source);
    const layers = layerPaths.map((p, j) => {
      archive.size(p, `layer ${j} of ${source}`); // a missing layer fails here, before anything is registered
      const digest = digestOfPath(p);
      return digest === undefined ? { path: p, diffId: diffIds[j]! } : { path: p, diffId: diffIds[j]!, digest };
    });
    plans.push({ id: sha256Digest(config), config, layers, references, source });
  }
  return plans;
}
