/**
 * Writes directories in the layout `skopeo copy ... dir:DIR` produces (containers/image's directory transport,
 * version 1.1): `version`, `manifest.json` (an image manifest, or a manifest list whose entries are
 * `<hex>.manifest.json`) and every blob in a file named by the hex of its sha256.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import { goArch, hex, imageConfig, sha } from './image-archives';

export const SKOPEO_VERSION = 'Directory Transport Version: 1.1\n';

/** What {@link writeSkopeoDir} wrote. */
export interface SkopeoDirImage {
  dir: string;
  config: Buffer;
  /** Image id (the config's digest). */
  id: string;
  diffIds: string[];
  /** Digests of the layer blobs as written. */
  blobDigests: string[];
  /** The image manifest's bytes (the top-level manifest.json unless `list`). */
  manifest: Buffer;
}

export interface SkopeoDirOptions {
  /** 'docker' (schema 2, gzip layers), 'oci' (OCI manifest without a top-level mediaType, as OCI allows). */
  format?: 'docker' | 'oci';
  /** Gzip the layer blobs (default true). */
  gzip?: boolean;
  /** Wrap the manifest in a manifest list with an entry for another platform too (skopeo copy --all). */
  list?: boolean;
  /** A config of one's own (default: one made for the layers). */
  config?: Buffer;
}

/** Writes a skopeo `dir:` directory holding one image of `layers` (uncompressed tars) into `dir`. */
export function writeSkopeoDir(dir: string, layers: Buffer[], o: SkopeoDirOptions = {}): SkopeoDirImage {
  fs.mkdirSync(dir, { recursive: true });
  const put = (b: Buffer): { digest: string; size: number } => {
    fs.writeFileSync(path.join(dir, hex(sha(b))), b);
    return { digest: sha(b), size: b.length };
  };
  const diffIds = layers.map((l) => sha(l));
  const config = o.config ?? imageConfig(diffIds);
  const gzip = o.gzip ?? true;
  const blobs = layers.map((l) => (gzip ? zlib.gzipSync(l) : l));
  const docker = (o.format ?? 'docker') === 'docker';
  const layerType = docker ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : `application/vnd.oci.image.layer.v1.tar${gzip ? '+gzip' : ''}`;
  const m: Record<string, unknown> = {
    schemaVersion: 2,
    config: { mediaType: docker ? 'application/vnd.docker.container.image.v1+json' : 'application/vnd.oci.image.config.v1+json', ...put(config) },
    layers: blobs.map((b) => ({ mediaType: layerType, ...put(b) })),
  };
  if (docker) m.mediaType = 'application/vnd.docker.distribution.manifest.v2+json';
  const manifest = Buffer.from(JSON.stringify(m));
  const manifestType = docker ? 'application/vnd.docker.distribution.manifest.v2+json' : 'application/vnd.oci.image.manifest.v1+json';
  if (o.list) {
    fs.writeFileSync(path.join(dir, `${hex(sha(manifest))}.manifest.json`), manifest);
    const other = goArch() === 'arm64' ? 'amd64' : 'arm64';
    // The other platform's manifest is absent, as after `skopeo copy` without --all of a partial list: never read.
    const otherManifest = `sha256:${'e'.repeat(64)}`;
    const list = {
      schemaVersion: 2,
      mediaType: docker ? 'application/vnd.docker.distribution.manifest.list.v2+json' : 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { mediaType: manifestType, digest: otherManifest, size: 500, platform: { os: 'linux', architecture: other } },
        { mediaType: manifestType, digest: sha(manifest), size: manifest.length, platform: { os: 'linux', architecture: goArch() } },
      ],
    };
    fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(list));
  } else {
    fs.writeFileSync(path.join(dir, 'manifest.json'), manifest);
  }
  fs.writeFileSync(path.join(dir, 'version'), SKOPEO_VERSION);
  return { dir, config, id: sha(config), diffIds, blobDigests: blobs.map((b) => sha(b)), manifest };
}
