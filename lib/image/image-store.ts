/**
 * The image store, laid out like Docker's (`<root>/image/<driver>/`):
 *
 * - `imagedb/content/sha256/<hex>`: the image config, whose sha256 is the image id;
 * - `imagedb/metadata/sha256/<hex>/parent`: the image a committed image was made from;
 * - `repositories.json`: references, `{"Repositories":{"busybox":{"busybox:latest":"sha256:..."}}}` (Docker's
 *   familiar names in the file; normalised names such as `docker.io/library/busybox:latest` in the API).
 *
 * Each image holds one handle on its top layer in the {@link LayerStore} (taken again at every open).
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { chainIds, DIGEST_RE, digestHex, HEX64_RE, sha256Digest } from '../layer/digest';
import type { LayerStore } from '../layer/layer-store';
import { AmbiguousIdError, ImageNotFoundError, InvalidReferenceError, LayerNotFoundError } from '../storage/errors';
import { atomicWriteFile, errCode, fsyncDir, Mutex, readDirIfExists, readTextIfExists, removeTempFiles, type SyncOpts } from '../storage/fsutil';
import { parseImageConfig, type ImageConfig } from './config';
import { favorDigest, familiarName, familiarString, parseReference, referenceString, withDefaultTag } from './reference';

/** An image as the store shows it. */
export interface Image {
  /** `sha256:` of the config bytes. */
  id: string;
  /** References pointing at it, normalised (`docker.io/library/busybox:latest`), sorted. */
  references: string[];
  /** Chain ids of its layers, bottom first. */
  layers: string[];
  /** diffIDs of its layers, bottom first. */
  diffIds: string[];
  /** Sum of the layers' sizes. */
  size: number;
  /** Creation time from the config, when it has one. */
  created?: string;
  /** Image this one was committed from, when known. */
  parent?: string;
}

/** Something the image store could not load. */
export interface ImageProblem {
  /** Image id or reference concerned. */
  id: string;
  /** File concerned. */
  path: string;
  reason: string;
}

interface ImageRec {
  id: string;
  config: ImageConfig;
  layers: string[];
  diffIds: string[];
  parent?: string;
}

/** Options of {@link ImageStore.open}. */
export interface ImageStoreOptions {
  /** `<root>/image/<driver>`. */
  dir: string;
  layers: LayerStore;
  sync?: boolean;
}

/**
 * Images, their configs and references; see the module documentation.
 *
 * @example
 * ```ts
 * import { Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * const images = store.imageStore; // an ImageStore, Docker's image/<driver>/imagedb and repositories.json
 * const id = images.resolve('busybox'); // reference, full id or unique id prefix
 * console.log(images.get(id).layers); // chain ids, bottom first
 * console.log(images.referencesOf(id)); // ['docker.io/library/busybox:latest']
 * console.log(images.config(id).architecture, images.children(id));
 * const raw = await images.rawConfig(id); // its sha256 is the id
 * ```
 */
export class ImageStore {
  private readonly images = new Map<string, ImageRec>();
  /** Normalised reference → image id. */
  private readonly refs = new Map<string, string>();
  private readonly mutex = new Mutex();
  private readonly syncOpts: SyncOpts;
  readonly contentDir: string;
  readonly metadataDir: string;
  readonly repositoriesFile: string;
  /** Configs that do not match their id or cannot be parsed. */
  readonly corrupt: ImageProblem[] = [];
  /** Images whose layers are missing (not usable, not listed). */
  readonly dangling: ImageProblem[] = [];
  /** References to images that do not exist, or that cannot be parsed. */
  readonly danglingRefs: ImageProblem[] = [];

  private constructor(
    readonly dir: string,
    private readonly layers: LayerStore,
    sync: boolean,
  ) {
    this.syncOpts = { sync };
    this.contentDir = path.join(dir, 'imagedb', 'content', 'sha256');
    this.metadataDir = path.join(dir, 'imagedb', 'metadata', 'sha256');
    this.repositoriesFile = path.join(dir, 'repositories.json');
  }

  /** Loads every image (verifying its id) and the references. */
  static async open(opts: ImageStoreOptions): Promise<ImageStore> {
    const s = new ImageStore(opts.dir, opts.layers, opts.sync ?? true);
    await fs.mkdir(s.contentDir, { recursive: true, mode: 0o700 });
    await fs.mkdir(s.metadataDir, { recursive: true, mode: 0o700 });
    await removeTempFiles(s.contentDir);
    await removeTempFiles(s.dir);
    await s.loadImages();
    await s.loadReferences();
    return s;
  }

  private async loadImages(): Promise<void> {
    for (const name of await readDirIfExists(this.contentDir)) {
      const file = path.join(this.contentDir, name);
      const id = `sha256:${name}`;
      if (!HEX64_RE.test(name)) {
        this.corrupt.push({ id: name, path: file, reason: 'not an image id' });
        continue;
      }
      let bytes: Buffer;
      try {
        bytes = await fs.readFile(file);
      } catch (e) {
        this.corrupt.push({ id, path: file, reason: `unreadable: ${(e as Error).message}` });
        continue;
      }
      if (sha256Digest(bytes) !== id) {
        this.corrupt.push({ id, path: file, reason: `content does not match its id (sha256 is ${sha256Digest(bytes)})` });
        continue;
      }
      let config: ImageConfig;
      try {
        config = parseImageConfig(bytes);
      } catch (e) {
        this.corrupt.push({ id, path: file, reason: (e as Error).message });
        continue;
      }
      const diffIds = config.rootfs.diff_ids;
      const layers = chainIds(diffIds);
      const top = layers[layers.length - 1];
      if (top !== undefined && !this.layers.has(top)) {
        this.dangling.push({ id, path: file, reason: `layer ${top} does not exist` });
        continue;
      }
      if (top !== undefined) await this.layers.acquire(top);
      const rec: ImageRec = { id, config, layers, diffIds };
      const parent = (await readTextIfExists(path.join(this.metadataDir, name, 'parent')))?.trim();
      if (parent !== undefined && DIGEST_RE.test(parent)) rec.parent = parent;
      this.images.set(id, rec);
    }
  }

  private async loadReferences(): Promise<void> {
    const text = await readTextIfExists(this.repositoriesFile);
    if (text === null) return;
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      this.danglingRefs.push({ id: '', path: this.repositoriesFile, reason: `not JSON: ${(e as Error).message}` });
      return;
    }
    const repos = (doc as { Repositories?: unknown } | null)?.Repositories;
    if (typeof repos !== 'object' || repos === null) return;
    for (const repo of Object.values(repos as Record<string, unknown>)) {
      if (typeof repo !== 'object' || repo === null) continue;
      for (const [refStr, id] of Object.entries(repo as Record<string, unknown>)) {
        let key: string;
        try {
          key = referenceString(favorDigest(withDefaultTag(parseReference(refStr))));
        } catch (e) {
          this.danglingRefs.push({ id: refStr, path: this.repositoriesFile, reason: (e as Error).message });
          continue;
        }
        if (typeof id !== 'string' || !this.images.has(id)) {
          this.danglingRefs.push({ id: key, path: this.repositoriesFile, reason: `points at missing image ${String(id)}` });
          continue;
        }
        this.refs.set(key, id);
      }
    }
  }

  /** Writes repositories.json in Docker's format (familiar names, keys sorted). */
  private async saveReferences(): Promise<void> {
    const repos: Record<string, Record<string, string>> = {};
    for (const [key, id] of [...this.refs.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const r = parseReference(key);
      const name = familiarName(r);
      (repos[name] ??= {})[familiarString(r)] = id;
    }
    const sorted: Record<string, Record<string, string>> = {};
    for (const k of Object.keys(repos).sort()) sorted[k] = repos[k]!;
    await atomicWriteFile(this.repositoriesFile, JSON.stringify({ Repositories: sorted }), this.syncOpts, 0o600);
  }

  private view(r: ImageRec): Image {
    let size = 0;
    for (const c of r.layers) {
      try {
        size += this.layers.get(c).size;
      } catch {
        // a layer dropped by a repair: counted as 0
      }
    }
    const img: Image = {
      id: r.id,
      references: this.referencesOf(r.id),
      layers: [...r.layers],
      diffIds: [...r.diffIds],
      size,
    };
    if (typeof r.config.created === 'string') img.created = r.config.created;
    if (r.parent !== undefined) img.parent = r.parent;
    return img;
  }

  /** Normalised references of an image, sorted. */
  referencesOf(id: string): string[] {
    const out: string[] = [];
    for (const [k, v] of this.refs) if (v === id) out.push(k);
    return out.sort();
  }

  /** Whether an image with this id exists. */
  has(id: string): boolean {
    return this.images.has(id);
  }

  /** The image with this exact id. */
  get(id: string): Image {
    const r = this.images.get(id);
    if (!r) throw new ImageNotFoundError(id);
    return this.view(r);
  }

  /** The parsed config of an image. */
  config(id: string): ImageConfig {
    const r = this.images.get(id);
    if (!r) throw new ImageNotFoundError(id);
    return structuredClone(r.config);
  }

  /** The config bytes exactly as stored (their sha256 is the id). */
  async rawConfig(id: string): Promise<Buffer> {
    if (!this.images.has(id)) throw new ImageNotFoundError(id);
    return fs.readFile(path.join(this.contentDir, digestHex(id)));
  }

  /** All images, sorted by id. */
  list(): Image[] {
    return [...this.images.values()].sort((a, b) => (a.id < b.id ? -1 : 1)).map((r) => this.view(r));
  }

  /** Images committed from `id`. */
  children(id: string): string[] {
    return [...this.images.values()].filter((r) => r.parent === id).map((r) => r.id);
  }

  /**
   * Resolves a reference, a full id (`sha256:<hex>` or `<hex>`) or a unique id prefix to an image id, in
   * Docker's order: ids, then references, then id prefixes.
   */
  resolve(refOrId: string): string {
    if (typeof refOrId !== 'string') throw new InvalidReferenceError(String(refOrId), 'not a string');
    if (DIGEST_RE.test(refOrId) || HEX64_RE.test(refOrId)) {
      const id = refOrId.startsWith('sha256:') ? refOrId : `sha256:${refOrId}`;
      if (!this.images.has(id)) throw new ImageNotFoundError(refOrId);
      return id;
    }
    let refError: InvalidReferenceError | null = null;
    try {
      const key = referenceString(favorDigest(withDefaultTag(parseReference(refOrId))));
      const id = this.refs.get(key);
      if (id !== undefined) return id;
    } catch (e) {
      if (!(e instanceof InvalidReferenceError)) throw e;
      refError = e;
    }
    const m = /^(?:sha256:)?([0-9a-f]{1,63})$/.exec(refOrId);
    if (m) {
      const hits = [...this.images.keys()].filter((id) => id.startsWith(`sha256:${m[1]}`));
      if (hits.length === 1) return hits[0]!;
      if (hits.length > 1) throw new AmbiguousIdError('image', refOrId, hits.length);
    }
    if (refError) throw refError;
    throw new ImageNotFoundError(refOrId);
  }

  /**
   * Stores an image config (its layers must be registered) and resolves to the image id. Storing an existing
   * config is a no-op. The image takes a handle on its top layer.
   */
  async create(configBytes: Buffer, opts: { parent?: string } = {}): Promise<string> {
    const config = parseImageConfig(configBytes);
    const id = sha256Digest(configBytes);
    const layers = chainIds(config.rootfs.diff_ids);
    const top = layers[layers.length - 1];
    return this.mutex.run(async () => {
      if (this.images.has(id)) return id;
      if (top !== undefined && !this.layers.has(top)) throw new LayerNotFoundError(top);
      if (top !== undefined) await this.layers.acquire(top);
      try {
        const hex = digestHex(id);
        if (opts.parent !== undefined) {
          const metaDir = path.join(this.metadataDir, hex);
          await fs.mkdir(metaDir, { recursive: true, mode: 0o700 });
          await atomicWriteFile(path.join(metaDir, 'parent'), opts.parent, this.syncOpts);
        }
        // The content file is the commit point: the image exists once it is there under its id.
        await atomicWriteFile(path.join(this.contentDir, hex), configBytes, this.syncOpts, 0o600);
      } catch (e) {
        if (top !== undefined) await this.layers.release(top).catch(() => undefined);
        throw e;
      }
      const rec: ImageRec = { id, config, layers, diffIds: [...config.rootfs.diff_ids] };
      if (opts.parent !== undefined) rec.parent = opts.parent;
      this.images.set(id, rec);
      return id;
    });
  }

  /** Points a reference at an image (replacing what it pointed at, as `docker tag` does). */
  async tag(id: string, ref: string): Promise<string> {
    if (!this.images.has(id)) throw new ImageNotFoundError(id);
    const parsed = favorDigest(withDefaultTag(parseReference(ref)));
    if (familiarName(parsed) === 'sha256') throw new InvalidReferenceError(ref, 'refusing to create an ambiguous tag using digest algorithm as name');
    const key = referenceString(parsed);
    await this.mutex.run(async () => {
      const old = this.refs.get(key);
      if (old === id) return;
      if (parsed.digest !== undefined && old !== undefined) throw new InvalidReferenceError(ref, `cannot overwrite digest reference (points at ${old})`);
      this.refs.set(key, id);
      try {
        await this.saveReferences();
      } catch (e) {
        if (old === undefined) this.refs.delete(key);
        else this.refs.set(key, old);
        throw e;
      }
    });
    return key;
  }

  /** Removes a reference; resolves to the image it pointed at (ImageNotFoundError when there is none). */
  async untag(ref: string): Promise<string> {
    const key = referenceString(favorDigest(withDefaultTag(parseReference(ref))));
    return this.mutex.run(async () => {
      const id = this.refs.get(key);
      if (id === undefined) throw new ImageNotFoundError(ref);
      this.refs.delete(key);
      try {
        await this.saveReferences();
      } catch (e) {
        this.refs.set(key, id);
        throw e;
      }
      return id;
    });
  }

  /**
   * Deletes an image: its references, config and metadata; releases its top layer (deleting the layers that
   * nothing else holds). Resolves to the deleted layer chains. Callers check containers and children first.
   */
  async delete(id: string): Promise<string[]> {
    return this.mutex.run(async () => {
      const r = this.images.get(id);
      if (!r) throw new ImageNotFoundError(id);
      const hex = digestHex(id);
      let refsChanged = false;
      for (const [k, v] of [...this.refs]) {
        if (v === id) {
          this.refs.delete(k);
          refsChanged = true;
        }
      }
      if (refsChanged) await this.saveReferences();
      await fs.rm(path.join(this.contentDir, hex), { force: true });
      await fsyncDir(this.contentDir, this.syncOpts);
      await fs.rm(path.join(this.metadataDir, hex), { recursive: true, force: true });
      this.images.delete(id);
      for (const c of this.images.values()) if (c.parent === id) delete c.parent;
      const top = r.layers[r.layers.length - 1];
      if (top === undefined) return [];
      try {
        return await this.layers.release(top);
      } catch (e) {
        if (errCode(e) === 'ERR_LAYER_NOT_FOUND') return [];
        throw e;
      }
    });
  }

  /** Removes unusable entries found at open (verify repair): corrupt and dangling configs, dangling references. */
  async repair(): Promise<string[]> {
    return this.mutex.run(async () => {
      const fixed: string[] = [];
      for (const p of [...this.corrupt, ...this.dangling]) {
        await fs.rm(p.path, { force: true });
        if (HEX64_RE.test(path.basename(p.path))) await fs.rm(path.join(this.metadataDir, path.basename(p.path)), { recursive: true, force: true });
        fixed.push(p.path);
      }
      if (this.danglingRefs.length > 0) {
        await this.saveReferences();
        fixed.push(...this.danglingRefs.map((r) => `${this.repositoriesFile}: ${r.id}`));
      }
      this.corrupt.length = 0;
      this.dangling.length = 0;
      this.danglingRefs.length = 0;
      return fixed;
    });
  }

  /** Forgets images whose layers were dropped by a repair (their config files are removed). */
  async dropImagesOnLayers(chains: ReadonlySet<string>): Promise<string[]> {
    const doomed = [...this.images.values()].filter((r) => r.layers.some((c) => chains.has(c)));
    const out: string[] = [];
    await this.mutex.run(async () => {
      for (const r of doomed) {
        for (const [k, v] of [...this.refs]) if (v === r.id) this.refs.delete(k);
        await fs.rm(path.join(this.contentDir, digestHex(r.id)), { force: true });
        await fs.rm(path.join(this.metadataDir, digestHex(r.id)), { recursive: true, force: true });
        this.images.delete(r.id);
        out.push(r.id);
      }
      if (out.length > 0) await this.saveReferences();
    });
    return out;
  }
}
