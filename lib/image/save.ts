/**
 * `docker save`: images as one tar that `docker load` (any version), skopeo's `docker-archive:` and
 * {@link loadImageArchive} read. Layer tars are the exact tars the layers were registered from (re-created from
 * their tar-split records, see {@link LayerStore.tarStream}), so a saved image loads with the same diffIDs and the
 * same image id. Two layouts:
 *
 * - `'docker'` (default, what Docker up to 24 writes): `manifest.json`, `repositories`, `<config-hex>.json`,
 *   and per layer `<v1-id>/{VERSION,json,layer.tar}`, a layer shared by several images written once (later
 *   copies are symlinks `../<v1-id>/layer.tar`, as Docker writes them);
 * - `'oci'` (what Docker 25+ writes): an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`) that
 *   also holds `manifest.json` and `repositories`, layers as uncompressed blobs named by their diffID.
 *
 * The metadata comes first in the archive, then the layers. Entry times are the image's creation time, so the
 * same images always give the same bytes.
 * @module
 */
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { encodeHeader, END_OF_ARCHIVE, paddingFor } from '../archive/tar-writer';
import { InvalidArchiveError } from '../errors';
import { digestHex, sha256Digest } from '../layer/digest';
import type { LayerStore } from '../layer/layer-store';
import { InvalidReferenceError } from '../storage/errors';
import { randomHex } from '../storage/fsutil';
import { goJson, type ImageConfig } from './config';
import { DOCKER_MANIFEST, type DockerManifestItem } from './docker-archive';
import type { ImageStore } from './image-store';
import { ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, blobPath, MediaType, OCI_INDEX_FILE, OCI_LAYOUT_FILE, OCI_LAYOUT_VERSION } from './oci-layout';
import { familiarName, familiarString, normalizeReference, parseReference } from './reference';

/** Options of {@link saveImageArchive} (and Storage.saveImage). */
export interface SaveImageOptions {
  /** `'docker'` (default: Docker ≤ 24 layout) or `'oci'` (OCI image layout with a manifest.json, as Docker 25+). */
  format?: 'docker' | 'oci';
  /** Aborts the save; a file destination is then not created. */
  signal?: AbortSignal;
}

/** What the saver needs from the store. */
export interface SaveSource {
  layers: LayerStore;
  images: ImageStore;
  /** Directory for spool files (`<root>/tmp`), used only for layers without a tar-split record. */
  tmpDir: string;
}

/** One member of the archive being written. */
type Member =
  | { kind: 'dir'; name: string; mtime: number }
  | { kind: 'data'; name: string; data: Buffer; mtime: number }
  | { kind: 'symlink'; name: string; target: string; mtime: number }
  | { kind: 'layer'; name: string; chainId: string; size: number; mtime: number; spool?: string };

/** An image to save and the tags to write for it. */
interface Selected {
  id: string;
  /** Normalised tag references. */
  tags: string[];
}

/** Resolves the arguments to images, with the tags named (Docker: a name saves that tag; an id saves no tag). */
function select(images: ImageStore, refs: string[]): Selected[] {
  const out = new Map<string, Selected>();
  for (const r of refs) {
    const id = images.resolve(r);
    const sel = out.get(id) ?? { id, tags: [] };
    out.set(id, sel);
    let key: string | null = null;
    try {
      const parsed = parseReference(r);
      if (parsed.digest === undefined) key = normalizeReference(r);
    } catch {
      key = null; // an id or id prefix
    }
    if (key !== null && images.referencesOf(id).includes(key) && !sel.tags.includes(key)) sel.tags.push(key);
  }
  return [...out.values()];
}

function createdSeconds(cfg: ImageConfig): number {
  const t = typeof cfg.created === 'string' ? Date.parse(cfg.created) : NaN;
  return Number.isFinite(t) && t > 0 ? Math.floor(t / 1000) : 0;
}

function json(v: unknown): Buffer {
  return Buffer.from(goJson(v), 'utf8');
}

/** Docker's legacy v1 id of a layer in a saved image: stable, distinct per chain (and per image for the top). */
function v1Id(chainId: string, parent: string | null, imageId: string | null): string {
  const o: Record<string, string> = { layer_id: chainId };
  if (parent !== null) o.parent = `sha256:${parent}`;
  if (imageId !== null) o.image = imageId;
  return digestHex(sha256Digest(json(o)));
}

/** The v1 `json` file of a layer directory (informative: loaders that read manifest.json ignore it). */
function v1Json(id: string, parent: string | null, cfg: ImageConfig | null): Buffer {
  const o: Record<string, unknown> = {};
  if (cfg !== null) {
    for (const [k, v] of Object.entries(cfg)) if (k !== 'rootfs' && k !== 'history' && v !== undefined) o[k] = v;
  } else {
    o.created = '1970-01-01T00:00:00Z';
    o.container_config = {};
  }
  o.id = id;
  if (parent !== null) o.parent = parent;
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(o).sort()) sorted[k] = o[k];
  return json(sorted);
}

/** `repositories`: `{"busybox":{"latest":"<top v1 id or image hex>"}}`. */
function repositories(entries: Array<{ ref: string; value: string }>): Buffer | null {
  if (entries.length === 0) return null;
  const repos: Record<string, Record<string, string>> = {};
  for (const { ref, value } of entries) {
    const r = parseReference(ref);
    if (r.tag === undefined) continue;
    (repos[familiarName(r)] ??= {})[r.tag] = value;
  }
  return json(repos);
}

/** Size of a layer's tar, spooling it (verified) when the layer has no tar-split record. */
async function layerSize(src: SaveSource, chainId: string, spools: string[], signal?: AbortSignal): Promise<{ size: number; spool?: string }> {
  const size = await src.layers.tarSize(chainId);
  if (size !== null) return { size };
  await fs.mkdir(src.tmpDir, { recursive: true, mode: 0o700 });
  const file = path.join(src.tmpDir, `save-${randomHex(8)}.tar`);
  spools.push(file);
  const opts = signal ? { signal } : {};
  await pipeline(await src.layers.tarStream(chainId), fsSync.createWriteStream(file, { flags: 'wx', mode: 0o600 }), opts);
  return { size: (await fs.stat(file)).size, spool: file };
}

async function plan(src: SaveSource, selected: Selected[], format: 'docker' | 'oci', spools: string[], signal?: AbortSignal): Promise<Member[]> {
  const meta: Member[] = [];
  const configs: Member[] = [];
  const layerMembers: Member[] = [];
  const manifest: DockerManifestItem[] = [];
  const repoEntries: Array<{ ref: string; value: string }> = [];
  const indexEntries: unknown[] = [];
  /** Where each chain's tar was written first. */
  const written = new Map<string, string>();
  const sizes = new Map<string, { size: number; spool?: string }>();
  let mtime0 = 0;
  for (const sel of selected) {
    signal?.throwIfAborted();
    const config = await src.images.rawConfig(sel.id);
    const cfg = src.images.config(sel.id);
    const img = src.images.get(sel.id);
    const mtime = createdSeconds(cfg);
    if (mtime0 === 0) mtime0 = mtime;
    const hex = digestHex(sel.id);
    const layerPaths: string[] = [];
    const descriptors: unknown[] = [];
    let parentV1: string | null = null;
    for (const [i, chainId] of img.layers.entries()) {
      let sz = sizes.get(chainId);
      if (sz === undefined) {
        sz = await layerSize(src, chainId, spools, signal);
        sizes.set(chainId, sz);
      }
      const diffId = img.diffIds[i]!;
      descriptors.push({ mediaType: MediaType.OciLayer, digest: diffId, size: sz.size });
      if (format === 'oci') {
        const p = blobPath(diffId);
        layerPaths.push(p);
        if (!written.has(chainId) && ![...written.values()].includes(p)) {
          layerMembers.push({ kind: 'layer', name: p, chainId, size: sz.size, mtime, ...(sz.spool ? { spool: sz.spool } : {}) });
        }
        written.set(chainId, p);
        continue;
      }
      const top = i === img.layers.length - 1;
      const id = v1Id(chainId, parentV1, top ? sel.id : null);
      const dir = id;
      layerPaths.push(`${dir}/layer.tar`);
      if (!layerMembers.some((m) => m.name === `${dir}/`)) {
        layerMembers.push({ kind: 'dir', name: `${dir}/`, mtime });
        layerMembers.push({ kind: 'data', name: `${dir}/VERSION`, data: Buffer.from('1.0'), mtime });
        layerMembers.push({ kind: 'data', name: `${dir}/json`, data: v1Json(id, parentV1, top ? cfg : null), mtime });
        const first = written.get(chainId);
        if (first === undefined) {
          layerMembers.push({ kind: 'layer', name: `${dir}/layer.tar`, chainId, size: sz.size, mtime, ...(sz.spool ? { spool: sz.spool } : {}) });
          written.set(chainId, `${dir}/layer.tar`);
        } else {
          layerMembers.push({ kind: 'symlink', name: `${dir}/layer.tar`, target: `../${first}`, mtime });
        }
      }
      parentV1 = id;
    }
    const configPath = format === 'oci' ? blobPath(sel.id) : `${hex}.json`;
    if (!configs.some((m) => m.name === configPath)) configs.push({ kind: 'data', name: configPath, data: config, mtime });
    manifest.push({ Config: configPath, RepoTags: sel.tags.length > 0 ? sel.tags.map((t) => familiarString(parseReference(t))) : null, Layers: layerPaths });
    for (const t of sel.tags) repoEntries.push({ ref: t, value: format === 'oci' ? hex : (parentV1 ?? hex) });
    if (format === 'oci') {
      const m = json({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: MediaType.OciConfig, digest: sel.id, size: config.length },
        layers: descriptors,
      });
      const d = sha256Digest(m);
      if (!configs.some((x) => x.name === blobPath(d))) configs.push({ kind: 'data', name: blobPath(d), data: m, mtime });
      const desc = { mediaType: MediaType.OciManifest, digest: d, size: m.length };
      if (sel.tags.length === 0) indexEntries.push(desc);
      for (const t of sel.tags) {
        indexEntries.push({ ...desc, annotations: { [ANNOTATION_IMAGE_NAME]: t, [ANNOTATION_REF_NAME]: parseReference(t).tag ?? '' } });
      }
    }
  }
  if (format === 'oci') {
    meta.push({ kind: 'data', name: OCI_LAYOUT_FILE, data: json({ imageLayoutVersion: OCI_LAYOUT_VERSION }), mtime: mtime0 });
    meta.push({ kind: 'data', name: OCI_INDEX_FILE, data: json({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: indexEntries }), mtime: mtime0 });
  }
  meta.push({ kind: 'data', name: DOCKER_MANIFEST, data: json(manifest), mtime: mtime0 });
  const repos = repositories(repoEntries);
  if (repos !== null) meta.push({ kind: 'data', name: 'repositories', data: repos, mtime: mtime0 });
  if (format === 'oci') meta.push({ kind: 'dir', name: 'blobs/', mtime: mtime0 }, { kind: 'dir', name: 'blobs/sha256/', mtime: mtime0 });
  return [...meta, ...configs, ...layerMembers];
}

/** The archive's bytes, member by member. */
async function* writeArchive(src: SaveSource, members: Member[], signal?: AbortSignal): AsyncGenerator<Buffer> {
  const base = { uid: 0, gid: 0 };
  for (const m of members) {
    signal?.throwIfAborted();
    if (m.kind === 'dir') {
      yield encodeHeader({ ...base, name: m.name, type: 'dir', mode: 0o755, size: 0, mtimeSec: m.mtime });
    } else if (m.kind === 'symlink') {
      yield encodeHeader({ ...base, name: m.name, type: 'symlink', mode: 0o777, size: 0, mtimeSec: m.mtime, linkname: m.target });
    } else if (m.kind === 'data') {
      yield encodeHeader({ ...base, name: m.name, type: 'file', mode: 0o644, size: m.data.length, mtimeSec: m.mtime });
      yield m.data;
      if (paddingFor(m.data.length) > 0) yield Buffer.alloc(paddingFor(m.data.length));
    } else {
      yield encodeHeader({ ...base, name: m.name, type: 'file', mode: 0o644, size: m.size, mtimeSec: m.mtime });
      const stream = m.spool !== undefined ? fsSync.createReadStream(m.spool, { highWaterMark: 1 << 20 }) : await src.layers.tarStream(m.chainId);
      let n = 0;
      try {
        for await (const c of stream) {
          const b = c as Buffer;
          n += b.length;
          if (n > m.size) break;
          yield b;
        }
      } finally {
        stream.destroy();
      }
      // The header announced the size: anything else would make the rest of the archive unreadable.
      if (n !== m.size) throw new InvalidArchiveError(`layer ${m.chainId} is ${n > m.size ? 'longer' : 'shorter'} than its recorded size ${m.size}`);
      if (paddingFor(m.size) > 0) yield Buffer.alloc(paddingFor(m.size));
    }
  }
  yield END_OF_ARCHIVE;
}

/**
 * Writes the images named by `refs` (references, ids or id prefixes) as one archive to `dest` (a file path,
 * written through a temp file and renamed, or a stream, which is ended). Unknown references fail with
 * ERR_IMAGE_NOT_FOUND before anything is written.
 */
export async function saveImageArchive(src: SaveSource, refs: string | string[], dest: string | Writable, opts: SaveImageOptions = {}): Promise<void> {
  const list = typeof refs === 'string' ? [refs] : refs;
  if (!Array.isArray(list) || list.length === 0) throw new InvalidReferenceError(String(refs), 'no image to save');
  const format = opts.format ?? 'docker';
  if (format !== 'docker' && format !== 'oci') throw new TypeError(`saveImage: unknown format ${JSON.stringify(format)}`);
  const selected = select(src.images, list);
  // Handles on the top layers keep every layer of the saved images alive while they are written.
  const held: string[] = [];
  const spools: string[] = [];
  let tmp: string | null = null;
  try {
    for (const s of selected) {
      const top = src.images.get(s.id).layers.at(-1);
      if (top !== undefined) {
        await src.layers.acquire(top);
        held.push(top);
      }
    }
    const members = await plan(src, selected, format, spools, opts.signal);
    const body = Readable.from(writeArchive(src, members, opts.signal), { objectMode: false, highWaterMark: 1 << 20 });
    const popts = opts.signal ? { signal: opts.signal } : {};
    if (typeof dest === 'string') {
      tmp = path.join(path.dirname(path.resolve(dest)), `.${path.basename(dest)}.tmp-${randomHex(6)}`);
      await pipeline(body, fsSync.createWriteStream(tmp, { flags: 'wx', mode: 0o644 }), popts);
      await fs.rename(tmp, dest);
      tmp = null;
    } else {
      await pipeline(body, dest, popts);
    }
  } finally {
    if (tmp !== null) await fs.rm(tmp, { force: true }).catch(() => undefined);
    for (const f of spools) await fs.rm(f, { force: true }).catch(() => undefined);
    for (const chain of held) await src.layers.release(chain).catch(() => undefined);
  }
}
