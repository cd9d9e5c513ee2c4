/**
 * The layer store: content-addressed read-only layers and the read-write layers of containers, with metadata laid
 * out like Docker's layerdb (`image/<driver>/layerdb/`):
 *
 * - `sha256/<chain-hex>/{diff,size,cache-id,parent}`: one published layer (files in Docker's formats);
 * - `mounts/<container-id>/{mount-id,init-id,parent}`: one container's read-write layer and its init layer;
 * - `tmp/`: work in progress. Every change that creates or deletes driver layers first records the driver ids it
 *   is about to create (or is about to delete) in a `tmp/` directory, and publishes or unpublishes with a single
 *   rename(2). At open, whatever is still in `tmp/` is rolled back (driver layers it names are removed unless
 *   published metadata uses them), so after a crash at any point a layer or a container exists whole or not at all.
 *
 * References: a layer is kept while something needs it. Counts are not persisted but recomputed at open from
 * the metadata itself: each child layer and each container holds its parent; images (see the image store) take
 * one handle each on their top layer when they are loaded. Handles taken by direct callers of {@link register}
 * or {@link acquire} live as long as the process; a layer nobody holds after a reopen stays on disk (as in Docker)
 * until it is released or {@link Storage.verify} prunes it.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';

import { ChunkRefs, fileChunks, isRecyclable } from '../archive/byte-source';
import { decompressStream, detectCompression, type DecompressLimits } from '../archive/decompress';
import { makeHasher } from '../archive/stream-hash';
import type { CreateOpts, Driver } from '../drivers/driver';
import { InvalidArchiveError } from '../errors';
import { DigestMismatchError, InvalidStoreIdError, LayerInUseError, LayerNotFoundError, StoreCorruptError } from '../storage/errors';
import { errCode, exists, fsyncDir, fsyncFile, Mutex, randomHex, readDirIfExists, readTextIfExists, writeNewFile, type SyncOpts } from '../storage/fsutil';
import { loadBindings } from '../native/bindings';
import type { NativeBindings } from '../native/types';
import { chainIdOf, checkDigest, DIGEST_RE, digestHex, HEX64_RE } from './digest';
import { boundedLayerFiles } from './layer-files';
import { releasingStream, verifyDiffId } from './tar-export';
import { assembleTar, readTarSplit, TAR_SPLIT_FILE, TarSplitRecorder, tarSplitSize } from './tar-split';

/** A published read-only layer. */
export interface Layer {
  /** `sha256:` chain id (OCI): identifies the layer together with everything below it. */
  chainId: string;
  /** `sha256:` of the uncompressed layer tar. */
  diffId: string;
  /** Chain id of the layer below, null for a base layer. */
  parent: string | null;
  /** The driver's id of the layer (random, 64 hex). */
  cacheId: string;
  /** Bytes applied, as the driver's applyDiff reported them. */
  size: number;
}

/** A container's read-write layer. */
export interface RWLayer {
  containerId: string;
  /** Driver id of the read-write layer. */
  mountId: string;
  /** Driver id of the init layer below it (`<mountId>-init`). */
  initId: string;
  /** Chain id of the image layer below the init layer, null for a container on no image. */
  parent: string | null;
}

/** Who holds a layer. */
export interface LayerReferences {
  /** Handles: images (one each on their top layer) and callers of register/acquire in this process. */
  handles: number;
  /** Layers built directly on this one. */
  children: number;
  /** Containers whose init layer is built on this one. */
  containers: number;
}

/** Metadata that could not be loaded (reported by verify, never used). */
export interface CorruptEntry {
  kind: 'layer' | 'mount' | 'tmp';
  /** Path of the offending directory. */
  path: string;
  reason: string;
}

/** Options of {@link LayerStore.register}. */
export interface RegisterOptions extends DecompressLimits {
  /**
   * Receives every byte of the uncompressed layer tar in order (hashing, progress, or recording tar headers for
   * exact re-creation). It must not throw.
   */
  onData?: (chunk: Buffer) => void;
  /**
   * Extra files stored in the layer's metadata directory, produced once the tar was applied (e.g. Docker's
   * `tar-split.json.gz`); published atomically with the layer. Names: lowercase `[a-z0-9][a-z0-9._-]*`,
   * not one of the store's own files.
   */
  extraFiles?: (diffId: string) => Promise<Record<string, Buffer | string>>;
  /** diffID the tar must have (e.g. from an image config); anything else fails with ERR_DIGEST_MISMATCH. */
  expectedDiffId?: string;
  /**
   * Record the tar's headers and padding (`tar-split.json.gz`, see {@link TarSplitRecorder}) so that
   * {@link LayerStore.tarStream} re-creates it byte for byte (default true).
   */
  tarSplit?: boolean;
}

/** Options of {@link LayerStore.tarStream}. */
export interface TarStreamOptions {
  /** Check that the stream's sha256 is the layer's diffID; it fails with ERR_DIGEST_MISMATCH otherwise (default true). */
  verify?: boolean;
}

/** Result of {@link LayerStore.register}: the layer, and whether the same chain was registered already. */
export interface RegisteredLayer extends Layer {
  /** True when the chain existed: the new copy was discarded and the existing layer is shared. */
  existed: boolean;
}

/** Options of {@link LayerStore.createRWLayer}. */
export interface CreateRWLayerOptions extends CreateOpts {
  /** Writes the init layer's content; called with the mounted init layer's root. */
  init?: (root: string) => Promise<void>;
  /** Runs right before the container is published (e.g. to write the container's own metadata). */
  beforePublish?: (rw: RWLayer) => Promise<void>;
}

/** Options of {@link LayerStore.open}. */
export interface LayerStoreOptions {
  /** The driver holding the layers. */
  driver: Driver;
  /** The layerdb directory (`<root>/image/<driver>/layerdb`). */
  dir: string;
  /** fsync metadata (default true). */
  sync?: boolean;
  /** Reports problems met while rolling back interrupted work at open. */
  onWarning?: (message: string) => void;
  /** Native bindings, for reading layer files when re-creating tars (default: the real addon, loaded on first use). */
  bindings?: NativeBindings;
}

interface LayerRec extends Layer {
  handles: number;
  children: number;
  containers: number;
  /** Operations in progress that need the layer (registering a child, creating a container). */
  pending: number;
}

const OWN_FILES = new Set(['diff', 'size', 'cache-id', 'parent', 'mount-id', 'init-id']);
const EXTRA_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const DRIVER_ID = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

function publicLayer(r: LayerRec): Layer {
  return { chainId: r.chainId, diffId: r.diffId, parent: r.parent, cacheId: r.cacheId, size: r.size };
}

/** Resolves when `s` can take more data or is gone. */
function drained(s: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      s.off('drain', done);
      s.off('close', done);
      resolve();
    };
    s.once('drain', done);
    s.once('close', done);
  });
}

/**
 * Destroys an input stream that a failed registration will not read to its end. A failure before the tar is read
 * (a full disk while the write set is made, the driver refusing to create the layer) otherwise left it open: a
 * driver's diff stream then kept the container's layer held (overlay2) or gotten (vfs), so that the container
 * could never be removed by this process, and a file stream kept its descriptor.
 */
function destroyInput(input: Readable | AsyncIterable<Uint8Array>): void {
  const s = input as Partial<Readable>;
  if (typeof s.destroy === 'function' && s.destroyed !== true) s.destroy();
}

/**
 * Content-addressed layers and container layers on one driver; see the module documentation.
 *
 * @example
 * ```ts
 * import { LayerStore, VfsDriver } from 'graphdriver';
 *
 * const driver = await VfsDriver.init('/var/lib/gd/vfs');
 * const layers = await LayerStore.open({ driver, dir: '/var/lib/gd/image/vfs/layerdb' });
 * const base = await layers.register('/tmp/base.tar', null); // a path, a stream or any async iterable of bytes
 * const app = await layers.register('/tmp/app.tar.gz', base.chainId);
 * console.log(app.chainId, app.diffId, app.size);
 * const tar = await layers.tarStream(app.chainId); // the registered tar, byte for byte
 * tar.resume();
 * await layers.release(app.chainId);
 * ```
 */
export class LayerStore {
  private readonly layers = new Map<string, LayerRec>();
  private readonly rw = new Map<string, RWLayer>();
  private readonly meta = new Mutex();
  /** Driver ids being created by operations in progress (not orphans, whatever verify sees meanwhile). */
  private readonly inFlight = new Set<string>();
  private readonly syncOpts: SyncOpts;
  private readonly warn: (m: string) => void;
  private bindings: NativeBindings | undefined;
  /** Entries that could not be loaded at open. */
  readonly corrupt: CorruptEntry[] = [];
  readonly layersDir: string;
  readonly mountsDir: string;
  readonly tmpDir: string;

  private constructor(
    readonly driver: Driver,
    readonly dir: string,
    opts: LayerStoreOptions,
  ) {
    this.syncOpts = { sync: opts.sync ?? true };
    this.warn = opts.onWarning ?? (() => undefined);
    this.bindings = opts.bindings;
    this.layersDir = path.join(dir, 'sha256');
    this.mountsDir = path.join(dir, 'mounts');
    this.tmpDir = path.join(dir, 'tmp');
  }

  /** Loads the metadata and rolls back work a crash interrupted. */
  static async open(opts: LayerStoreOptions): Promise<LayerStore> {
    const s = new LayerStore(opts.driver, opts.dir, opts);
    await fs.mkdir(s.layersDir, { recursive: true, mode: 0o700 });
    await fs.mkdir(s.mountsDir, { recursive: true, mode: 0o700 });
    await fs.mkdir(s.tmpDir, { recursive: true, mode: 0o700 });
    await s.loadLayers();
    await s.loadMounts();
    await s.rollBack();
    return s;
  }

  // ---- loading ----

  private async loadLayers(): Promise<void> {
    const names = await readDirIfExists(this.layersDir);
    const loaded = await Promise.all(
      names.map(async (name): Promise<LayerRec | CorruptEntry> => {
        const dir = path.join(this.layersDir, name);
        const bad = (reason: string): CorruptEntry => ({ kind: 'layer', path: dir, reason });
        if (!HEX64_RE.test(name)) return bad('not a chain id');
        try {
          const [diff, size, cacheId, parent] = await Promise.all(['diff', 'size', 'cache-id', 'parent'].map((f) => readTextIfExists(path.join(dir, f))));
          if (diff === null || !DIGEST_RE.test(diff.trim())) return bad('missing or malformed diff file');
          if (cacheId === null || !DRIVER_ID.test(cacheId.trim())) return bad('missing or malformed cache-id file');
          if (size === null || !/^\d{1,16}$/.test(size.trim())) return bad('missing or malformed size file');
          if (parent !== null && !DIGEST_RE.test(parent.trim())) return bad('malformed parent file');
          const chainId = `sha256:${name}`;
          const p = parent === null ? null : parent.trim();
          if (chainIdOf(p, diff.trim()) !== chainId) return bad('chain id does not match its parent and diff');
          return { chainId, diffId: diff.trim(), parent: p, cacheId: cacheId.trim(), size: Number(size.trim()), handles: 0, children: 0, containers: 0, pending: 0 };
        } catch (e) {
          return bad(`unreadable: ${(e as Error).message}`);
        }
      }),
    );
    for (const r of loaded) {
      if ('kind' in r) this.corrupt.push(r);
      else this.layers.set(r.chainId, r);
    }
    // A layer whose parent is missing cannot be mounted: it is reported (verify) and not used.
    let changed = true;
    while (changed) {
      changed = false;
      for (const r of this.layers.values()) {
        if (r.parent !== null && !this.layers.has(r.parent)) {
          this.layers.delete(r.chainId);
          this.corrupt.push({ kind: 'layer', path: path.join(this.layersDir, digestHex(r.chainId)), reason: `parent ${r.parent} does not exist` });
          changed = true;
        }
      }
    }
    for (const r of this.layers.values()) if (r.parent !== null) this.layers.get(r.parent)!.children++;
  }

  private async loadMounts(): Promise<void> {
    for (const name of await readDirIfExists(this.mountsDir)) {
      const dir = path.join(this.mountsDir, name);
      const bad = (reason: string): void => void this.corrupt.push({ kind: 'mount', path: dir, reason });
      if (!HEX64_RE.test(name)) {
        bad('not a container id');
        continue;
      }
      const [mountId, initId, parent] = await Promise.all(['mount-id', 'init-id', 'parent'].map((f) => readTextIfExists(path.join(dir, f))));
      if (mountId === null || !DRIVER_ID.test(mountId.trim())) {
        bad('missing or malformed mount-id file');
        continue;
      }
      if (initId === null || !DRIVER_ID.test(initId.trim())) {
        bad('missing or malformed init-id file');
        continue;
      }
      const p = parent === null || parent.trim() === '' ? null : parent.trim();
      if (p !== null && !DIGEST_RE.test(p)) {
        bad('malformed parent file');
        continue;
      }
      if (p !== null && !this.layers.has(p)) {
        bad(`parent layer ${p} does not exist`);
        continue;
      }
      this.rw.set(name, { containerId: name, mountId: mountId.trim(), initId: initId.trim(), parent: p });
      if (p !== null) this.layers.get(p)!.containers++;
    }
  }

  /** Driver ids used by published metadata (layers and containers). */
  private liveDriverIds(): Set<string> {
    const ids = new Set<string>();
    for (const l of this.layers.values()) ids.add(l.cacheId);
    for (const m of this.rw.values()) {
      ids.add(m.mountId);
      ids.add(m.initId);
    }
    return ids;
  }

  /**
   * Removes a driver layer that may be missing. With `unmountStale`, a layer still mounted (by a process that
   * died: the store lock rules out a live one) is unmounted first.
   */
  private async removeDriverLayer(id: string, unmountStale: boolean): Promise<void> {
    if (!(await this.driver.exists(id))) return;
    try {
      await this.driver.remove(id);
    } catch (e) {
      if (errCode(e) === 'ERR_LAYER_NOT_FOUND') return;
      if (errCode(e) !== 'ERR_LAYER_IN_USE' || !unmountStale) throw e;
      // Mounted by a process that died: a put without get adopts the kernel mount and unmounts it.
      await this.driver.put(id).catch(() => undefined);
      await this.driver.remove(id);
    }
  }

  /**
   * Rolls back every `tmp/` entry: write sets of registrations and container creations that never published,
   * and unpublished layers and containers whose deletion did not finish.
   */
  private async rollBack(): Promise<void> {
    const live = this.liveDriverIds();
    for (const name of await readDirIfExists(this.tmpDir)) {
      const dir = path.join(this.tmpDir, name);
      try {
        // The rw layer (mount-id) sits on the init layer: remove it first.
        const ids: string[] = [];
        for (const f of ['mount-id', 'init-id', 'cache-id']) {
          const v = (await readTextIfExists(path.join(dir, f)).catch(() => null))?.trim();
          if (v !== undefined && DRIVER_ID.test(v)) ids.push(v);
        }
        for (const id of ids) if (!live.has(id)) await this.removeDriverLayer(id, true);
        await fs.rm(dir, { recursive: true, force: true });
      } catch (e) {
        this.warn(`could not roll back ${dir}: ${(e as Error).message}`);
        this.corrupt.push({ kind: 'tmp', path: dir, reason: `interrupted work could not be rolled back: ${(e as Error).message}` });
      }
    }
    await fsyncDir(this.tmpDir, this.syncOpts);
  }

  // ---- queries ----

  /** Whether the chain is registered. */
  has(chainId: string): boolean {
    return this.layers.has(chainId);
  }

  /** The layer with this chain id (ERR_LAYER_NOT_FOUND otherwise). */
  get(chainId: string): Layer {
    return publicLayer(this.rec(chainId));
  }

  private rec(chainId: string): LayerRec {
    checkDigest(chainId, 'chain id');
    const r = this.layers.get(chainId);
    if (!r) throw new LayerNotFoundError(chainId);
    return r;
  }

  /** All layers, sorted by chain id. */
  list(): Layer[] {
    return [...this.layers.values()].map(publicLayer).sort((a, b) => (a.chainId < b.chainId ? -1 : a.chainId > b.chainId ? 1 : 0));
  }

  /** The layer and its ancestors, bottom first. */
  stack(chainId: string): Layer[] {
    const out: Layer[] = [];
    for (let r: LayerRec | undefined = this.rec(chainId); r; r = r.parent === null ? undefined : this.layers.get(r.parent)) out.unshift(publicLayer(r));
    return out;
  }

  /** Who holds the layer. */
  references(chainId: string): LayerReferences {
    const r = this.rec(chainId);
    return { handles: r.handles, children: r.children, containers: r.containers };
  }

  /** Read-write layer of a container (ERR_CONTAINER_NOT_FOUND is the caller's business: this returns null). */
  getRWLayer(containerId: string): RWLayer | null {
    const m = this.rw.get(containerId);
    return m ? { ...m } : null;
  }

  /** All container layers. */
  listRWLayers(): RWLayer[] {
    return [...this.rw.values()].map((m) => ({ ...m }));
  }

  // ---- registration ----

  /** Pins a layer for an operation in progress (so that it is not deleted meanwhile). */
  private pin(chainId: string | null): Promise<LayerRec | null> {
    if (chainId === null) return Promise.resolve(null);
    return this.meta.run(async () => {
      const r = this.rec(chainId);
      r.pending++;
      return r;
    });
  }

  private unpin(r: LayerRec | null): Promise<void> {
    if (r === null) return Promise.resolve();
    return this.meta.run(async () => {
      r.pending--;
    });
  }

  /**
   * Registers a layer tar (uncompressed, gzip or zstd) on `parent` (a chain id, or null for a base layer) and
   * takes one handle on it. The tar is applied into a new driver layer through the driver's applyDiff; its
   * diffID is the sha256 of the uncompressed stream. If the resulting chain exists already, the new copy is
   * removed and the existing layer is shared. Nothing is visible until the metadata is published by one rename.
   * `tar` is a stream, any async iterable of bytes, or the path of a file (read in large chunks: the fastest).
   */
  async register(tar: Readable | AsyncIterable<Uint8Array> | string, parent: string | null, opts: RegisterOptions = {}): Promise<RegisteredLayer> {
    // A path is read in 1 MiB chunks: a default fs.ReadStream hands out fresh 64 KiB buffers, whose allocation
    // and the trips through the event loop cost more main-thread time than parsing the tar.
    const input = typeof tar === 'string' ? fileChunks(tar) : tar;
    let parentRec: LayerRec | null;
    try {
      if (parent !== null) checkDigest(parent, 'parent chain id');
      if (opts.expectedDiffId !== undefined) checkDigest(opts.expectedDiffId, 'diff id');
      parentRec = await this.pin(parent);
    } catch (e) {
      destroyInput(input);
      throw e;
    }
    const cacheId = randomHex();
    this.inFlight.add(cacheId);
    try {
      const ws = path.join(this.tmpDir, `write-set-${randomHex(16)}`);
      await fs.mkdir(ws, { mode: 0o700 });
      // Recorded before the driver layer exists, so that a crash from here on is rolled back at open.
      await writeNewFile(path.join(ws, 'cache-id'), cacheId, this.syncOpts);
      await fsyncDir(ws, this.syncOpts);
      await fsyncDir(this.tmpDir, this.syncOpts);
      let created = false;
      let published = false;
      let recorder: TarSplitRecorder | null = null;
      try {
        await this.driver.create(cacheId, parentRec?.cacheId ?? null);
        created = true;
        // Chunks of a recyclable input (a path) go back to it once the recorder, the hash and the driver are
        // done with them: the layer is then read into the same few megabytes instead of fresh memory.
        const recycler = isRecyclable(input) && opts.onData === undefined ? new ChunkRefs(input) : null;
        recorder = opts.tarSplit === false ? null : new TarSplitRecorder(recycler ? (c) => recycler.drop(c) : undefined);
        const { diffId, size } = await this.applyTar(cacheId, parentRec?.cacheId ?? null, input, opts, recorder, recycler);
        if (opts.expectedDiffId !== undefined && opts.expectedDiffId !== diffId) {
          throw new DigestMismatchError(opts.expectedDiffId, diffId, 'layer');
        }
        const chainId = chainIdOf(parent, diffId);
        const files: Record<string, Buffer | string> = {};
        if (recorder) {
          // A tar the driver applied but the recorder refused still makes a layer, just not an exact one.
          const split = await recorder.result().catch((e: unknown) => {
            this.warn(`layer ${diffId}: no tar-split record, its tar cannot be re-created exactly: ${(e as Error).message}`);
            return null;
          });
          if (split !== null) files[TAR_SPLIT_FILE] = split;
        }
        const extra = opts.extraFiles ? await opts.extraFiles(diffId) : {};
        for (const [name, data] of Object.entries(extra)) {
          if (!EXTRA_NAME.test(name) || OWN_FILES.has(name)) throw new TypeError(`invalid layer metadata file name ${JSON.stringify(name)}`);
          files[name] = data;
        }
        files.diff = diffId;
        files.size = String(size);
        if (parent !== null) files.parent = parent;
        // Written (and fsynced) concurrently: the journal commits them together.
        await Promise.all(Object.entries(files).map(([name, data]) => writeNewFile(path.join(ws, name), data, this.syncOpts)));
        await fsyncDir(ws, this.syncOpts);
        const result = await this.meta.run(async (): Promise<RegisteredLayer> => {
          const existing = this.layers.get(chainId);
          if (existing) {
            existing.handles++;
            return { ...publicLayer(existing), existed: true };
          }
          const target = path.join(this.layersDir, digestHex(chainId));
          try {
            await fs.rename(ws, target);
          } catch (e) {
            if (errCode(e) === 'ENOTEMPTY' || errCode(e) === 'EEXIST') {
              throw new StoreCorruptError(`layer metadata ${target} exists but could not be loaded; run verify({ repair: true })`, { cause: e });
            }
            throw e;
          }
          published = true;
          const rec: LayerRec = { chainId, diffId, parent, cacheId, size, handles: 1, children: 0, containers: 0, pending: 0 };
          this.layers.set(chainId, rec);
          if (parentRec) parentRec.children++;
          await fsyncDir(this.layersDir, this.syncOpts);
          return { ...publicLayer(rec), existed: false };
        });
        if (result.existed) await this.discard(ws, cacheId);
        return result;
      } catch (e) {
        recorder?.abort();
        if (!published) {
          if (created) await this.discard(ws, cacheId);
          else await fs.rm(ws, { recursive: true, force: true }).catch(() => undefined);
        }
        throw e;
      }
    } catch (e) {
      destroyInput(input);
      throw e;
    } finally {
      this.inFlight.delete(cacheId);
      await this.unpin(parentRec);
    }
  }

  /** Removes an unpublished driver layer and its write set; on failure the write set stays for the next open. */
  private async discard(ws: string, cacheId: string): Promise<void> {
    try {
      await this.removeDriverLayer(cacheId, true);
      await fs.rm(ws, { recursive: true, force: true });
    } catch (e) {
      this.warn(`could not remove unpublished layer ${cacheId} (left for the next open): ${(e as Error).message}`);
    }
  }

  /**
   * Feeds the uncompressed tar to the driver's applyDiff while hashing every byte (Docker's layer store does the
   * same: the digest is taken on the decompressed stream handed to the driver). Whatever the driver leaves
   * unread is still read and hashed, so the diffID always covers the whole stream.
   */
  private async applyTar(
    cacheId: string,
    parentCacheId: string | null,
    input: Readable | AsyncIterable<Uint8Array>,
    opts: RegisterOptions,
    recorder: TarSplitRecorder | null = null,
    recycler: ChunkRefs | null = null,
  ): Promise<{ diffId: string; size: number; bytes: number }> {
    const hasher = await makeHasher(this.bindings);
    let bytes = 0;
    let head = Buffer.alloc(0);
    let aborted = false;
    /** The pump's own failure (input or decompression error), when it came before the driver gave up. */
    let pumpFailure: unknown = null;
    const limits: DecompressLimits = {};
    if (opts.maxUncompressedSize !== undefined) limits.maxUncompressedSize = opts.maxUncompressedSize;
    if (opts.maxRatio !== undefined) limits.maxRatio = opts.maxRatio;
    if (opts.ratioFloor !== undefined) limits.ratioFloor = opts.ratioFloor;
    const it = decompressStream(input, limits)[Symbol.asyncIterator]();
    // Object mode on the readable side: the driver gets the chunks as they are. In byte mode every read of a
    // stream with several chunks buffered returns them concatenated, a fresh copy of most of the layer.
    const pass = new PassThrough({ writableHighWaterMark: 1 << 20, readableObjectMode: true, readableHighWaterMark: 16 });
    // A driver that applies with the archive engine hands each chunk back when it has written it.
    if (recycler) Object.assign(pass, { recycle: (c: Buffer) => recycler.drop(c) });
    // The pump's failure reaches the caller through `pump` below, and the driver sees the stream fail when it
    // reads. The stream's own 'error' event must not go unheard: a layer that fails before the driver subscribed
    // (a bad gzip CRC at the end of a small layer, a decompression limit) was an uncaught exception that killed
    // the process.
    pass.on('error', () => undefined);
    const pump = (async (): Promise<void> => {
      try {
        for (;;) {
          if (aborted) {
            await it.return?.(undefined);
            return;
          }
          const r = await it.next();
          if (r.done) break;
          const c = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.length);
          if (head.length < 4) {
            head = Buffer.concat([head, c.subarray(0, 4 - head.length)]);
            // A compressed stream inside the compressed stream: the driver would decompress it again, and the
            // diffID (taken here) would not describe the tar actually applied.
            if (head.length >= 4 && detectCompression(head) !== 'none') throw new InvalidArchiveError('layer is compressed twice');
          }
          // The recorder parses the headers now; the file bodies' checksums are computed with the hash, on
          // the thread pool, and come back to it in order.
          // Held by the hash, the driver and the recorder (each lets go when done; input chunks that only
          // passed through decompression are not the source's and are simply never recycled).
          recycler?.hold(c, recorder ? 3 : 2);
          const ranges = recorder?.write(c) ?? null;
          // The hash lets go when its job is done (update only waits when too much is pending).
          const hashing = hasher.update(c, recycler ? () => recycler.drop(c) : undefined, ranges, recorder && ranges ? (crcs) => recorder.addCrcs(crcs) : undefined);
          bytes += c.length;
          opts.onData?.(c);
          if (!pass.destroyed && !pass.write(c)) await drained(pass);
          if (hashing) await hashing;
        }
        recorder?.end();
        pass.end();
      } catch (e) {
        // After `aborted`, a failure here is only the echo of destroying the input below (e.g. "Premature close"),
        // never the cause.
        if (!aborted) pumpFailure ??= e;
        recorder?.abort();
        pass.destroy(e instanceof Error ? e : new Error(String(e)));
        throw e;
      }
    })();
    // Awaited below, possibly only after the driver finished: observed now so that a pump failing while the
    // driver is still busy is not an unhandled rejection (fatal by default) in the meantime.
    pump.catch(() => undefined);
    let size: number;
    try {
      size = await this.driver.applyDiff(cacheId, parentCacheId, pass);
    } catch (e) {
      aborted = true;
      recorder?.abort();
      pass.destroy();
      const src = input as Partial<Readable>;
      if (typeof src.destroy === 'function') src.destroy();
      // A decompression or input error that came first is the real cause (the driver only saw the stream fail);
      // otherwise the driver's own error is (ENOSPC, EIO, an invalid entry), not what destroying the input caused.
      await pump.catch(() => undefined);
      throw pumpFailure ?? e;
    }
    // Anything the driver did not read is discarded here, but still hashed by the pump.
    pass.resume();
    await pump;
    return { diffId: `sha256:${await hasher.digest()}`, size, bytes };
  }

  // ---- exact tars ----

  /**
   * The layer's tar, uncompressed: re-created byte for byte from its tar-split record and the files of the
   * mounted layer (the driver's get/put), or, for a layer registered without a record, the driver's diff against
   * its parent. Unless `verify` is false, the stream fails with ERR_DIGEST_MISMATCH when its sha256 is not the
   * diffID (a layer changed on disk, or a driver diff that differs from the original tar). The layer stays
   * mounted and cannot be deleted until the stream ends or is destroyed: consume it or destroy it.
   */
  async tarStream(chainId: string, opts: TarStreamOptions = {}): Promise<Readable> {
    const r = await this.pin(chainId);
    if (r === null) throw new LayerNotFoundError(String(chainId));
    const what = `tar of layer ${chainId}`;
    let source: AsyncIterable<Buffer>;
    let release: () => Promise<void>;
    try {
      const split = path.join(this.layersDir, digestHex(chainId), TAR_SPLIT_FILE);
      if (await exists(split)) {
        const bindings = (this.bindings ??= loadBindings());
        const root = await this.driver.get(r.cacheId);
        source = assembleTar(readTarSplit(split), boundedLayerFiles(root, bindings));
        release = () => this.driver.put(r.cacheId);
      } else {
        const parent = r.parent === null ? null : (this.layers.get(r.parent)?.cacheId ?? null);
        const diff = await this.driver.diff(r.cacheId, parent);
        source = diff;
        release = async () => void diff.destroy();
      }
    } catch (e) {
      await this.unpin(r);
      throw e;
    }
    const out = opts.verify === false ? source : verifyDiffId(source, r.diffId, what);
    return releasingStream(out[Symbol.asyncIterator](), async () => {
      try {
        await release();
      } finally {
        await this.unpin(r);
      }
    });
  }

  /** Length of the tar {@link tarStream} re-creates from the layer's tar-split record; null without a record. */
  async tarSize(chainId: string): Promise<number | null> {
    const r = await this.pin(chainId);
    try {
      return await tarSplitSize(path.join(this.layersDir, digestHex(chainId), TAR_SPLIT_FILE));
    } catch (e) {
      if (errCode(e) === 'ENOENT') return null;
      throw e;
    } finally {
      await this.unpin(r);
    }
  }

  /** Takes one more handle on a layer. */
  async acquire(chainId: string): Promise<Layer> {
    return this.meta.run(async () => {
      const r = this.rec(chainId);
      r.handles++;
      return publicLayer(r);
    });
  }

  /**
   * Releases one handle. When nothing holds the layer any more (no handle, child layer, container or operation
   * in progress) it is deleted, and so are its ancestors that nothing else holds. Releasing a layer that has no
   * handle left while children or containers need it fails with ERR_LAYER_IN_USE. Resolves to the deleted chains.
   */
  async release(chainId: string): Promise<string[]> {
    return this.meta.run(async () => {
      const r = this.rec(chainId);
      if (r.handles > 0) r.handles--;
      else if (r.children > 0 || r.containers > 0 || r.pending > 0) {
        const why = [
          r.children > 0 ? `${r.children} child layer(s)` : '',
          r.containers > 0 ? `${r.containers} container(s)` : '',
          r.pending > 0 ? `${r.pending} operation(s) in progress` : '',
        ].filter(Boolean);
        throw new LayerInUseError(chainId, `needed by ${why.join(', ')}`);
      }
      return this.collect(r);
    });
  }

  private unreferenced(r: LayerRec): boolean {
    return r.handles === 0 && r.children === 0 && r.containers === 0 && r.pending === 0;
  }

  /** Deletes `r` and then each ancestor that became unreferenced. Caller holds the meta lock. */
  private async collect(start: LayerRec): Promise<string[]> {
    const deleted: string[] = [];
    for (let r: LayerRec | undefined = start; r && this.unreferenced(r); ) {
      await this.deleteLayer(r);
      deleted.push(r.chainId);
      r = r.parent === null ? undefined : this.layers.get(r.parent);
    }
    return deleted;
  }

  /**
   * Unpublishes the metadata (renamed into `tmp/`, where it still names the cache id for a rollback after a
   * crash), then removes the driver layer. On failure the metadata is published again.
   */
  private async deleteLayer(r: LayerRec): Promise<void> {
    const dir = path.join(this.layersDir, digestHex(r.chainId));
    const doomed = path.join(this.tmpDir, `remove-${randomHex(16)}`);
    await fs.rename(dir, doomed);
    await fsyncDir(this.layersDir, this.syncOpts);
    try {
      await this.removeDriverLayer(r.cacheId, false);
    } catch (e) {
      await fs.rename(doomed, dir);
      await fsyncDir(this.layersDir, this.syncOpts);
      throw e;
    }
    this.layers.delete(r.chainId);
    if (r.parent !== null) {
      const p = this.layers.get(r.parent);
      if (p) p.children--;
    }
    await fs.rm(doomed, { recursive: true, force: true });
  }

  // ---- container layers ----

  /**
   * Creates a container's layers as Docker does: `createReadWrite('<mountId>-init', parent)`, the init content
   * written through `opts.init`, then `createReadWrite(mountId, '<mountId>-init')`, and publishes
   * `mounts/<containerId>`. The parent layer is held until {@link releaseRWLayer}.
   */
  async createRWLayer(containerId: string, parent: string | null, opts: CreateRWLayerOptions = {}): Promise<RWLayer> {
    if (typeof containerId !== 'string' || !HEX64_RE.test(containerId)) throw new InvalidStoreIdError('container id', containerId);
    if (parent !== null) checkDigest(parent, 'parent chain id');
    const parentRec = await this.meta.run(async () => {
      if (this.rw.has(containerId)) throw new InvalidStoreIdError('container id (already in use)', containerId);
      if (parent === null) return null;
      const r = this.rec(parent);
      r.pending++;
      return r;
    });
    const mountId = randomHex();
    const rw: RWLayer = { containerId, mountId, initId: `${mountId}-init`, parent };
    this.inFlight.add(rw.mountId).add(rw.initId);
    const createOpts: CreateOpts = {};
    if (opts.mountLabel !== undefined) createOpts.mountLabel = opts.mountLabel;
    if (opts.storageOpt !== undefined) createOpts.storageOpt = opts.storageOpt;
    const ws = path.join(this.tmpDir, `mount-set-${randomHex(16)}`);
    let published = false;
    try {
      await fs.mkdir(ws, { mode: 0o700 });
      // Not fsynced yet: the ids only need to survive a crash of the process (a power cut before the sync can
      // leave driver layers no metadata names, which verify() reports and repairs). They are synced before the
      // publishing rename, together with the caller's own metadata, to keep container creation fast.
      const files: Array<[string, string]> = [
        ['mount-id', rw.mountId],
        ['init-id', rw.initId],
      ];
      if (parent !== null) files.push(['parent', parent]);
      const noSync = { sync: false };
      await Promise.all(files.map(([f, v]) => writeNewFile(path.join(ws, f), v, noSync)));
      await this.driver.createReadWrite(rw.initId, parentRec?.cacheId ?? null, createOpts);
      if (opts.init) {
        const root = await this.driver.get(rw.initId, opts.mountLabel !== undefined ? { mountLabel: opts.mountLabel } : undefined);
        try {
          await opts.init(root);
        } finally {
          await this.driver.put(rw.initId);
        }
      }
      await this.driver.createReadWrite(rw.mountId, rw.initId, createOpts);
      await Promise.all([
        ...files.map(([f]) => fsyncFile(path.join(ws, f), this.syncOpts)),
        fsyncDir(ws, this.syncOpts),
        opts.beforePublish?.({ ...rw }),
      ]);
      await this.meta.run(async () => {
        await fs.rename(ws, path.join(this.mountsDir, containerId));
        published = true;
        this.rw.set(containerId, rw);
        if (parentRec) parentRec.containers++;
        await fsyncDir(this.mountsDir, this.syncOpts);
      });
      return { ...rw };
    } catch (e) {
      if (!published) {
        try {
          await this.removeDriverLayer(rw.mountId, true);
          await this.removeDriverLayer(rw.initId, true);
          await fs.rm(ws, { recursive: true, force: true });
        } catch (ce) {
          this.warn(`could not remove the layers of a failed container creation (left for the next open): ${(ce as Error).message}`);
        }
      }
      throw e;
    } finally {
      this.inFlight.delete(rw.mountId);
      this.inFlight.delete(rw.initId);
      await this.unpin(parentRec);
    }
  }

  /**
   * Deletes a container's read-write and init layers and its metadata; the parent layer is released (and
   * deleted if nothing else holds it). The layers must not be mounted, unless `unmountStale` says that mounts
   * this process does not hold are leftovers of a dead process, to be unmounted. Resolves to the deleted chains.
   */
  async releaseRWLayer(containerId: string, opts: { unmountStale?: boolean } = {}): Promise<string[]> {
    const stale = opts.unmountStale ?? false;
    return this.meta.run(async () => {
      const m = this.rw.get(containerId);
      if (!m) throw new InvalidStoreIdError('container id (no such container layer)', containerId);
      const dir = path.join(this.mountsDir, containerId);
      const doomed = path.join(this.tmpDir, `remove-${randomHex(16)}`);
      await fs.rename(dir, doomed);
      await fsyncDir(this.mountsDir, this.syncOpts);
      try {
        await this.removeDriverLayer(m.mountId, stale);
        await this.removeDriverLayer(m.initId, stale);
      } catch (e) {
        if (await this.driver.exists(m.mountId)) {
          // Nothing removed (e.g. the rw layer is mounted): the container is published again, unchanged.
          await fs.rename(doomed, dir);
          await fsyncDir(this.mountsDir, this.syncOpts);
        } else {
          // Half removed: the container is gone; its entry in tmp/ finishes the removal at the next open.
          this.rw.delete(containerId);
          const p = m.parent === null ? undefined : this.layers.get(m.parent);
          if (p) p.containers--;
        }
        throw e;
      }
      this.rw.delete(containerId);
      await fs.rm(doomed, { recursive: true, force: true });
      if (m.parent === null) return [];
      const p = this.layers.get(m.parent);
      if (!p) return [];
      p.containers--;
      return this.collect(p);
    });
  }

  /** Deletes layers nothing holds (e.g. registered by a process that crashed before it used them). */
  async pruneUnreferenced(): Promise<string[]> {
    return this.meta.run(async () => {
      const out: string[] = [];
      let found = true;
      while (found) {
        found = false;
        for (const r of [...this.layers.values()]) {
          if (this.layers.has(r.chainId) && this.unreferenced(r)) {
            out.push(...(await this.collect(r)));
            found = true;
          }
        }
      }
      return out;
    });
  }

  /** Chains that nothing holds. */
  unreferencedLayers(): string[] {
    return [...this.layers.values()].filter((r) => this.unreferenced(r)).map((r) => r.chainId).sort();
  }

  /** Driver ids used by published metadata or by operations in progress. */
  driverIds(): Set<string> {
    const ids = this.liveDriverIds();
    for (const id of this.inFlight) ids.add(id);
    return ids;
  }

  /**
   * Drops broken metadata reported in {@link corrupt} and layers/containers whose driver layer is missing
   * (used by verify's repair). Resolves to the paths removed.
   */
  async removeMetadata(paths: string[]): Promise<void> {
    await this.meta.run(async () => {
      for (const p of paths) {
        const rel = path.relative(this.dir, p);
        if (rel.startsWith('..') || path.isAbsolute(rel)) throw new TypeError(`not in the layer store: ${p}`);
        await fs.rm(p, { recursive: true, force: true });
      }
    });
  }

  /**
   * Forgets a layer whose driver layer is gone (verify repair): its metadata is removed, and so are the
   * containers and layers built on it (the caller removes images first). Resolves to what was dropped.
   */
  async dropBroken(chainId: string): Promise<{ layers: string[]; containers: string[] }> {
    return this.meta.run(async () => {
      const out = { layers: [] as string[], containers: [] as string[] };
      const drop = async (r: LayerRec): Promise<void> => {
        for (const m of [...this.rw.values()]) {
          if (m.parent !== r.chainId) continue;
          const doomed = path.join(this.tmpDir, `remove-${randomHex(16)}`);
          await fs.rename(path.join(this.mountsDir, m.containerId), doomed);
          await this.removeDriverLayer(m.mountId, true).catch(() => undefined);
          await this.removeDriverLayer(m.initId, true).catch(() => undefined);
          await fs.rm(doomed, { recursive: true, force: true });
          this.rw.delete(m.containerId);
          out.containers.push(m.containerId);
        }
        for (const c of [...this.layers.values()]) if (c.parent === r.chainId) await drop(c);
        const doomed = path.join(this.tmpDir, `remove-${randomHex(16)}`);
        await fs.rename(path.join(this.layersDir, digestHex(r.chainId)), doomed);
        await this.removeDriverLayer(r.cacheId, true).catch(() => undefined);
        await fs.rm(doomed, { recursive: true, force: true });
        this.layers.delete(r.chainId);
        if (r.parent !== null) {
          const p = this.layers.get(r.parent);
          if (p) p.children--;
        }
        out.layers.push(r.chainId);
      };
      const r = this.layers.get(chainId);
      if (r) await drop(r);
      await fsyncDir(this.layersDir, this.syncOpts);
      await fsyncDir(this.mountsDir, this.syncOpts);
      return out;
    });
  }
}
