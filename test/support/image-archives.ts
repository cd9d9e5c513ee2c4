/**
 * Builds image archives in memory for tests: `docker save` archives in Docker's two layouts and OCI image
 * layouts, from generated layer tars, plus readers for what saveImage writes.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';

import { compress as zstdCompress, decompress as zstdDecompress } from 'zstd-napi';

import { readTar } from '../../lib/archive/tar-reader';
import { buildTar, type TestEntry } from './tar-builder';

export const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
export const hex = (digest: string): string => digest.slice('sha256:'.length);

/** An image config for the given diffIDs (keys sorted, as Docker writes them). */
export function imageConfig(diffIds: string[], extra: Record<string, unknown> = {}): Buffer {
  const cfg: Record<string, unknown> = {
    architecture: extra.architecture ?? goArch(),
    config: { Cmd: ['/bin/sh'], Env: ['PATH=/usr/bin:/bin'] },
    created: '2024-01-02T03:04:05Z',
    history: diffIds.map((_, i) => ({ created: '2024-01-02T03:04:05Z', created_by: `step ${i}` })),
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: diffIds },
    ...extra,
  };
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(cfg).sort()) sorted[k] = cfg[k];
  return Buffer.from(JSON.stringify(sorted));
}

/** Go's GOARCH of this machine. */
export function goArch(): string {
  return process.arch === 'x64' ? 'amd64' : process.arch;
}

/** One image of a test archive. */
export interface TestImage {
  layers: Buffer[];
  /** Defaults to a config made for the layers' diffIDs (of their uncompressed form). */
  config?: Buffer;
  repoTags?: string[];
}

/** Uncompressed bytes of a (possibly compressed) layer. */
export function uncompressed(layer: Buffer): Buffer {
  if (layer[0] === 0x1f && layer[1] === 0x8b) return zlib.gunzipSync(layer);
  if (layer.length >= 4 && layer.readUInt32LE(0) === 0xfd2fb528) return zstdDecompress(layer);
  return layer;
}

/** The diffIDs of layers given uncompressed. */
export function diffIdsOf(layers: Buffer[]): string[] {
  return layers.map((l) => sha(l));
}

/** Options of {@link dockerArchive}. */
export interface DockerArchiveOptions {
  /** 'legacy' (Docker ≤ 24: `<id>/layer.tar`, `<hex>.json`) or 'blobs' (Docker 25+: `blobs/sha256/`). */
  layout?: 'legacy' | 'blobs';
  /** Changes manifest.json before it is written. */
  mutateManifest?: (m: Array<Record<string, unknown>>) => unknown;
  /** Extra members appended to the archive. */
  extra?: TestEntry[];
  /** Members left out (by name). */
  omit?: string[];
  /** Diff IDs per image (default: sha256 of each layer as given, i.e. layers must be uncompressed). */
  diffIds?: string[][];
}

/** A `docker save` archive. Shared layers in the legacy layout become symlinks, as Docker writes them. */
export function dockerArchive(images: TestImage[], o: DockerArchiveOptions = {}): Buffer {
  const layout = o.layout ?? 'legacy';
  const entries: TestEntry[] = [];
  const manifest: Array<Record<string, unknown>> = [];
  const written = new Map<string, string>();
  images.forEach((img, n) => {
    const diffIds = o.diffIds?.[n] ?? diffIdsOf(img.layers);
    const config = img.config ?? imageConfig(diffIds);
    const configPath = layout === 'legacy' ? `${hex(sha(config))}.json` : `blobs/sha256/${hex(sha(config))}`;
    if (!entries.some((e) => e.name === configPath)) entries.push({ name: configPath, data: config });
    const paths: string[] = [];
    img.layers.forEach((l, i) => {
      const digest = sha(l);
      if (layout === 'blobs') {
        const p = `blobs/sha256/${hex(digest)}`;
        if (!entries.some((e) => e.name === p)) entries.push({ name: p, data: l });
        paths.push(p);
        return;
      }
      const id = hex(sha(`${n}/${i}/${digest}`));
      entries.push({ name: `${id}/`, type: 'dir' }, { name: `${id}/VERSION`, data: '1.0' }, { name: `${id}/json`, data: JSON.stringify({ id }) });
      const first = written.get(digest);
      if (first === undefined) {
        entries.push({ name: `${id}/layer.tar`, data: l });
        written.set(digest, `${id}/layer.tar`);
      } else {
        entries.push({ name: `${id}/layer.tar`, type: 'symlink', linkname: `../${first}` });
      }
      paths.push(`${id}/layer.tar`);
    });
    manifest.push({ Config: configPath, RepoTags: img.repoTags ?? null, Layers: paths });
  });
  const m = o.mutateManifest ? o.mutateManifest(manifest) : manifest;
  entries.push({ name: 'manifest.json', data: typeof m === 'string' ? m : JSON.stringify(m) });
  const all = [...entries, ...(o.extra ?? [])].filter((e) => !(o.omit ?? []).includes(e.name));
  return buildTar(all);
}

/** Compression of a layer blob in an OCI layout. */
export type BlobCompression = 'none' | 'gzip' | 'zstd';

/** An OCI image layout archive (as `skopeo copy ... oci-archive:` writes it). */
export function ociArchive(
  images: Array<TestImage & { refName?: string; imageName?: string; compression?: BlobCompression; platform?: Record<string, string> }>,
  o: { mutate?: (blobs: Map<string, Buffer>, index: Record<string, unknown>) => void; wrapInIndex?: boolean } = {},
): Buffer {
  const blobs = new Map<string, Buffer>();
  const put = (b: Buffer): { digest: string; size: number } => {
    blobs.set(sha(b), b);
    return { digest: sha(b), size: b.length };
  };
  const manifests: Array<Record<string, unknown>> = [];
  for (const img of images) {
    const diffIds = diffIdsOf(img.layers);
    const config = img.config ?? imageConfig(diffIds);
    const c = img.compression ?? 'gzip';
    const layers = img.layers.map((l) => {
      const blob = c === 'gzip' ? zlib.gzipSync(l) : c === 'zstd' ? zstdCompress(l) : l;
      const mediaType = `application/vnd.oci.image.layer.v1.tar${c === 'none' ? '' : `+${c}`}`;
      return { mediaType, ...put(blob) };
    });
    const manifest = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...put(config) }, layers }),
    );
    let desc: Record<string, unknown> = { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...put(manifest) };
    if (img.platform) desc.platform = img.platform;
    if (o.wrapInIndex) {
      const nested = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ ...desc, platform: img.platform ?? { os: 'linux', architecture: goArch() } }] }));
      desc = { mediaType: 'application/vnd.oci.image.index.v1+json', ...put(nested) };
    }
    const annotations: Record<string, string> = {};
    if (img.refName !== undefined) annotations['org.opencontainers.image.ref.name'] = img.refName;
    if (img.imageName !== undefined) annotations['io.containerd.image.name'] = img.imageName;
    if (Object.keys(annotations).length > 0) desc.annotations = annotations;
    manifests.push(desc);
  }
  const index: Record<string, unknown> = { schemaVersion: 2, manifests };
  o.mutate?.(blobs, index);
  const entries: TestEntry[] = [
    { name: 'oci-layout', data: JSON.stringify({ imageLayoutVersion: '1.0.0' }) },
    { name: 'index.json', data: JSON.stringify(index) },
    { name: 'blobs/', type: 'dir' },
    { name: 'blobs/sha256/', type: 'dir' },
    ...[...blobs].map(([d, b]) => ({ name: `blobs/sha256/${hex(d)}`, data: b })),
  ];
  return buildTar(entries);
}

/** The members of a tar (regular files with content; symlinks as `-> target`). */
export async function tarMembers(tar: Buffer): Promise<Map<string, Buffer | string>> {
  const out = new Map<string, Buffer | string>();
  for await (const e of readTar(Readable.from([tar]))) {
    const parts: Buffer[] = [];
    for await (const c of e.body()) parts.push(Buffer.from(c));
    const name = e.header.name.replace(/^\.\//, '');
    if (e.header.type === 'file') out.set(name, Buffer.concat(parts));
    else if (e.header.type === 'symlink') out.set(name, `-> ${e.header.linkname}`);
  }
  return out;
}

/** The layer tars of a `docker save` archive, per image in manifest order (symlinks followed). */
export async function savedLayers(archive: Buffer): Promise<Array<{ config: Buffer; repoTags: string[] | null; layers: Buffer[] }>> {
  const members = await tarMembers(archive);
  const get = (p: string): Buffer => {
    let cur = p;
    for (let i = 0; i < 10; i++) {
      const v = members.get(cur);
      if (v === undefined) throw new Error(`missing ${p}`);
      if (Buffer.isBuffer(v)) return v;
      const target = v.slice(3);
      cur = target.startsWith('../') ? target.slice(3) : `${cur.slice(0, cur.lastIndexOf('/') + 1)}${target}`;
    }
    throw new Error(`link loop at ${p}`);
  };
  const manifest = JSON.parse(get('manifest.json').toString()) as Array<{ Config: string; RepoTags: string[] | null; Layers: string[] }>;
  return manifest.map((m) => ({ config: get(m.Config), repoTags: m.RepoTags, layers: m.Layers.map(get) }));
}

/** Collects a stream. */
export async function collect(r: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(Buffer.from(c as Buffer));
  return Buffer.concat(parts);
}
