/**
 * The daemon-free store: a graph driver plus Docker's layer, image and container metadata under one root.
 *
 * Layout of `<root>` (as /var/lib/docker):
 * - `graphdriver.lock`: inter-process lock (see {@link StoreLock});
 * - `<driver>/`: the driver home;
 * - `image/<driver>/layerdb/`, `image/<driver>/imagedb/`, `image/<driver>/repositories.json`: see
 *   {@link LayerStore} and {@link ImageStore};
 * - `containers/<id>.json`: container records (see {@link ContainerStore}).
 *
 * The three flows of Docker's storage: registering layers (import, and later load/pull), creating a container
 * (init layer + read-write layer), committing a container (its diff registered as a new layer on the image's top
 * layer, plus a new image config).
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable, Writable } from 'node:stream';

import { changesDirs } from '../archive/changes';
import type { Change } from '../archive/change';
import { exportChanges } from '../archive/diff';
import type { Driver, MountOpts } from '../drivers/driver';
import { newDriver } from '../drivers/registry';
// Registers the built-in drivers with the registry.
import '../drivers';
import { setupInitLayer } from '../container/init-layer';
import { ContainerStore, CONTAINER_NAME_RE, type Container } from '../container/container-store';
import { childConfig, goTime, importConfig, parseImageConfig, serializeConfig, type ImageConfig, type ImportConfigOptions } from '../image/config';
import { ImageStore, type Image, type ImageProblem } from '../image/image-store';
import { loadImageArchive, type LoadImageOptions } from '../image/load';
import { saveImageArchive, type SaveImageOptions } from '../image/save';
import { familiarName, normalizeReference, parseReference } from '../image/reference';
import { listDriverLayers } from '../layer/driver-layers';
import { LayerStore, type Layer, type RegisteredLayer, type RegisterOptions, type LayerReferences, type TarStreamOptions } from '../layer/layer-store';
import type { NativeBindings } from '../native/types';
import { DistributionMetadata } from '../registry/distribution-metadata';
import { pullImage as registryPull, type PullOptions } from '../registry/pull';
import { pushImage as registryPush, type PushOptions } from '../registry/push';
import { ContainerNameInUseError, ImageInUseError, ImageNotFoundError, InvalidReferenceError, InvalidStoreIdError, StoreClosedError } from './errors';
import { errCode, Mutex, randomHex } from './fsutil';
import { realPath, settleMounts, writeKeptMounts } from './stale-mounts';
import { StoreLock } from './lock';

/** Options of {@link Storage.open}. */
export interface StorageOptions {
  /** The store root (created when missing). */
  root: string;
  /** Driver name; default: the driver whose home holds state, else the first that works (overlay2 ... vfs). */
  driver?: string;
  /** Docker `--storage-opt` strings for the driver. */
  driverOptions?: string[];
  /** Native bindings (default: the real addon). */
  bindings?: NativeBindings;
  /** Wait up to this many ms for another process holding the store (default 0: fail with ERR_STORE_LOCKED). */
  lockTimeout?: number;
  /** fsync metadata writes (default true). Turning it off keeps atomicity against crashes of the process, not power loss. */
  sync?: boolean;
  /** Reports non-fatal problems (e.g. leftovers that could not be rolled back at open). */
  onWarning?: (message: string) => void;
}

/** Options of {@link Storage.importImage}. */
export interface ImportImageOptions extends ImportConfigOptions {
  /** Reference to tag the image with (`name[:tag]`). */
  reference?: string;
}

/** Options of {@link Storage.createContainer}. */
export interface CreateContainerOptions {
  /** Unique name (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`). */
  name?: string;
  /** Per-container driver options such as `{ size: '10G' }`. */
  storageOpt?: Record<string, string>;
  /** SELinux mount label. */
  mountLabel?: string;
}

/** Options of {@link Storage.commitContainer}. */
export interface CommitOptions {
  /** Reference to tag the new image with. */
  reference?: string;
  /** Commit message: the history entry's comment (`docker commit -m`). */
  message?: string;
  /** History `created_by` (default 'graphdriver commit'). */
  createdBy?: string;
  /** Author (`docker commit -a`). */
  author?: string;
  /** Container config of the new image (default: the parent image's). */
  config?: Record<string, unknown>;
  /** Receives the diff tar as it is registered (progress, or keeping a copy of the new layer). */
  onData?: (chunk: Buffer) => void;
}

/** Options of {@link Storage.removeImage}. */
export interface RemoveImageOptions {
  /** Remove even when containers use the image or it has several references (Docker's soft conflicts). */
  force?: boolean;
  /** Also delete parent images left untagged and unused (default true, as `docker rmi`). */
  prune?: boolean;
}

/** What {@link Storage.removeImage} did. */
export interface RemoveImageResult {
  /** References removed. */
  untagged: string[];
  /** Image ids deleted. */
  deleted: string[];
  /** Layer chains deleted because nothing held them any more. */
  deletedLayers: string[];
}

/** What {@link Storage.verify} found (and, with `repair`, fixed). */
export interface VerifyReport {
  /** True when nothing is wrong (after the repair, when one was asked for). */
  ok: boolean;
  /** Interrupted work in `layerdb/tmp` that could not be rolled back. */
  incomplete: string[];
  /** Layer or container metadata that cannot be read. */
  corruptMetadata: Array<{ path: string; reason: string }>;
  /** Metadata whose driver layer is missing. */
  missingDriverLayers: Array<{ kind: 'layer' | 'container'; id: string; driverId: string }>;
  /** Driver layers no metadata refers to. */
  orphanDriverLayers: string[];
  /** Images whose config does not match its id or cannot be parsed. */
  corruptImages: ImageProblem[];
  /** Images whose layers are missing. */
  danglingImages: ImageProblem[];
  /** References to missing images. */
  danglingReferences: ImageProblem[];
  /** Container records that cannot be read, or container layers without a record. */
  corruptContainers: Array<{ path: string; reason: string }>;
  /** Layers that nothing holds (not an error: e.g. registered and never used; removed with `prune`). */
  unreferencedLayers: string[];
  /** What the repair removed. */
  repaired: string[];
}

/** Options of {@link Storage.verify}. */
export interface VerifyOptions {
  /** Remove what is broken: orphan driver layers, unreadable metadata, images and containers whose layers are gone. */
  repair?: boolean;
  /** Also delete unreferenced layers. */
  prune?: boolean;
}

/** Docker's stringid.GenerateRandomID: 64 hex, never with an all-digit short form (it would read as a number). */
function randomId(): string {
  for (;;) {
    const id = randomHex();
    if (!/^\d{12}$/.test(id.slice(0, 12))) return id;
  }
}

/**
 * Checks a reference an image is about to be tagged with, before any work: normalizeReference accepts
 * `sha256:<tag>` (a repository named "sha256"), which tagging refuses as ambiguous, so without this an import or
 * commit would create its layer and image and only then fail, leaving an untagged image behind.
 */
function checkNewReference(ref: string): void {
  normalizeReference(ref);
  if (familiarName(parseReference(ref)) === 'sha256') throw new InvalidReferenceError(ref, 'refusing to create an ambiguous tag using digest algorithm as name');
}

/** Options of {@link Storage.close}. */
export interface CloseOptions {
  /**
   * Leave mounted containers mounted and the driver's devices attached: only the store lock is released. For
   * short-lived processes (like the CLI) whose `mount` must outlive them; a later process unmounts with
   * `unmountContainer` or its own `close()`. The kept mounts are recorded in `<root>/kept-mounts.json`, which is
   * how the next open tells them from mounts a process that died left behind (those it unmounts).
   */
  keepMounts?: boolean;
}

/**
 * The store; see the module documentation.
 *
 * @example
 * ```ts
 * import { Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' }); // overlay2, btrfs, ..., vfs: the first that works
 * const image = await store.pullImage('busybox:latest');
 * const c = await store.createContainer(image.id, { name: 'job' });
 * const rootfs = await store.mountContainer(c.id);
 * // ... write into rootfs ...
 * console.log(await store.containerChanges(c.id)); // [{ path: '/hello.txt', kind: ChangeKind.Add }, ...]
 * await store.unmountContainer(c.id);
 * await store.commitContainer(c.id, { reference: 'busybox:job', message: 'ran the job' });
 * await store.removeContainer(c.id);
 * await store.close();
 * ```
 */
export class Storage {
  private closed = false;
  /** Mounts taken through {@link mountContainer} by this instance, per container id. */
  private readonly mounted = new Map<string, number>();
  /** Images with a container creation in progress (removeImage treats them as in use). */
  private readonly creating = new Map<string, number>();
  private readonly reservedNames = new Set<string>();
  private readonly gate = new Mutex();
  /** Mount points returned by {@link mountContainer}, per container id (recorded by close({ keepMounts })). */
  private readonly mountPaths = new Map<string, string>();
  /** Containers left mounted on purpose by an earlier process (see CloseOptions.keepMounts), with their mount points. */
  private kept = new Map<string, string>();
  private sync = true;
  /** Registry blobs known per layer (created on first use). */
  private distribution: DistributionMetadata | null = null;

  private constructor(
    /** Absolute store root. */
    readonly root: string,
    /** The graph driver. */
    readonly driver: Driver,
    /** The layer store (registration, references, container layers). */
    readonly layerStore: LayerStore,
    /** The image store. */
    readonly imageStore: ImageStore,
    private readonly containers: ContainerStore,
    private readonly lock: StoreLock,
    private readonly bindings: NativeBindings | undefined,
  ) {}

  /** Opens (creating when needed) the store at `root`; see {@link StorageOptions}. */
  static async open(opts: StorageOptions): Promise<Storage> {
    if (typeof opts?.root !== 'string' || opts.root === '') throw new TypeError('Storage.open: root must be a non-empty path');
    const root = path.resolve(opts.root);
    await fs.mkdir(root, { recursive: true, mode: 0o711 });
    const lockOpts = opts.lockTimeout !== undefined ? { timeoutMs: opts.lockTimeout } : {};
    const lock = await StoreLock.acquire(path.join(root, 'graphdriver.lock'), lockOpts);
    let driver: Driver | null = null;
    try {
      const cfg: Parameters<typeof newDriver>[0] = { root, options: opts.driverOptions ?? [] };
      if (opts.driver !== undefined) cfg.name = opts.driver;
      if (opts.bindings !== undefined) cfg.bindings = opts.bindings;
      driver = await newDriver(cfg);
      // A process that died with the store open (crash, SIGKILL) leaves its mounts behind. The lock proves that no
      // live process uses the store, so every mount below the driver home that was not kept on purpose (close({
      // keepMounts })) is stale: unmounted before the layer store rolls back interrupted work, and before the driver
      // could adopt one as its own (a container's mount/unmount pair would then leave it mounted until close).
      const kept = await settleMounts(root, path.join(root, driver.name), opts.bindings, opts.onWarning ?? (() => undefined));
      const sync = opts.sync ?? true;
      const imageDir = path.join(root, 'image', driver.name);
      const layerOpts: Parameters<typeof LayerStore.open>[0] = { driver, dir: path.join(imageDir, 'layerdb'), sync };
      if (opts.onWarning) layerOpts.onWarning = opts.onWarning;
      if (opts.bindings) layerOpts.bindings = opts.bindings;
      const layers = await LayerStore.open(layerOpts);
      const images = await ImageStore.open({ dir: imageDir, layers, sync });
      const containers = await ContainerStore.open(path.join(root, 'containers'), driver.name, (id) => layers.getRWLayer(id) !== null, sync);
      const s = new Storage(root, driver, layers, images, containers, lock, opts.bindings);
      s.kept = new Map(kept.filter((k) => containers.has(k.container)).map((k) => [k.container, k.path]));
      s.sync = sync;
      return s;
    } catch (e) {
      if (driver) await driver.cleanup().catch(() => undefined);
      await lock.release().catch(() => undefined);
      throw e;
    }
  }

  private check(): void {
    if (this.closed) throw new StoreClosedError();
  }

  // ---- layers ----

  /** Registers a layer tar (uncompressed, gzip or zstd) on `parent` and takes a handle on it; see {@link LayerStore.register}. */
  async registerLayer(tar: Readable | AsyncIterable<Uint8Array> | string, parent: string | null = null, opts: RegisterOptions = {}): Promise<RegisteredLayer> {
    this.check();
    return this.layerStore.register(tar, parent, opts);
  }

  /**
   * The layer's uncompressed tar, byte for byte as it was registered (same diffID); see {@link LayerStore.tarStream}.
   * Consume or destroy the stream: the layer stays mounted until then.
   */
  async layerTar(chainId: string, opts: TarStreamOptions = {}): Promise<Readable> {
    this.check();
    return this.layerStore.tarStream(chainId, opts);
  }

  /** Releases a handle on a layer; see {@link LayerStore.release}. Resolves to the chains deleted. */
  async releaseLayer(chainId: string): Promise<string[]> {
    this.check();
    return this.layerStore.release(chainId);
  }

  /** A layer by chain id. */
  async getLayer(chainId: string): Promise<Layer> {
    this.check();
    return this.layerStore.get(chainId);
  }

  /** Who holds a layer. */
  async layerReferences(chainId: string): Promise<LayerReferences> {
    this.check();
    return this.layerStore.references(chainId);
  }

  /** All layers, sorted by chain id. */
  async listLayers(): Promise<Layer[]> {
    this.check();
    return this.layerStore.list();
  }

  // ---- images ----

  /**
   * Loads the images of a `docker save` archive (Docker ≤ 24 or 25+ layout) or an OCI image layout archive
   * (`skopeo copy ... oci-archive:`), given as a file path or a stream, uncompressed or gzip/zstd-compressed, or a
   * directory: an extracted archive of those kinds or skopeo's `dir:` transport. All or nothing: every digest is verified (configs, layer blobs, diffIDs against the configs), references from
   * the archive are applied, and on any error the store is left as it was. Resolves to the images in archive
   * order. See {@link loadImageArchive}.
   */
  async loadImage(src: string | Readable, opts: LoadImageOptions = {}): Promise<Image[]> {
    this.check();
    return loadImageArchive({ layers: this.layerStore, images: this.imageStore, tmpDir: path.join(this.root, 'tmp') }, src, opts);
  }

  /**
   * Writes images (references, ids or id prefixes) in `docker save` format to a file path or a stream; layer tars
   * are the exact tars the layers were registered from, so loading the archive gives the same image ids and
   * diffIDs. See {@link saveImageArchive}.
   */
  async saveImage(refs: string | string[], dest: string | Writable, opts: SaveImageOptions = {}): Promise<void> {
    this.check();
    return saveImageArchive({ layers: this.layerStore, images: this.imageStore, tmpDir: path.join(this.root, 'tmp') }, refs, dest, opts);
  }

  /**
   * Imports one tar (a file path, a directory whose content becomes the layer, or a stream; uncompressed, gzip
   * or zstd) as a one-layer image, like `docker import`.
   */
  async importImage(src: string | Readable, opts: ImportImageOptions = {}): Promise<Image> {
    this.check();
    if (opts.reference !== undefined) checkNewReference(opts.reference); // invalid references fail before any work
    let input: Readable | string;
    if (typeof src === 'string') {
      const st = await fs.stat(src);
      if (st.isDirectory()) {
        const b = this.bindings ? { bindings: this.bindings } : {};
        input = exportChanges(src, await changesDirs(src, null, b), b);
      } else {
        input = src;
      }
    } else {
      input = src;
    }
    const layer = await this.layerStore.register(input, null);
    try {
      const cfg = importConfig(layer.diffId, opts);
      const id = await this.imageStore.create(serializeConfig(cfg));
      if (opts.reference !== undefined) await this.imageStore.tag(id, opts.reference);
      return this.imageStore.get(id);
    } finally {
      await this.layerStore.release(layer.chainId);
    }
  }

  /**
   * Stores an image from its config bytes (its layers must be registered already); resolves to the image. Used by
   * loaders; the id is the sha256 of the bytes as given.
   */
  async createImage(config: Buffer, opts: { reference?: string; parent?: string } = {}): Promise<Image> {
    this.check();
    if (opts.reference !== undefined) checkNewReference(opts.reference);
    // The parent is written to imagedb/metadata as given: only the full id of an image of this store is taken, so
    // that nothing else (e.g. a path from a hostile archive, CVE-2014-9358 style) is ever recorded as one.
    if (opts.parent !== undefined) {
      if (typeof opts.parent !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(opts.parent)) throw new InvalidStoreIdError('parent image id', opts.parent);
      if (!this.imageStore.has(opts.parent)) throw new ImageNotFoundError(opts.parent);
    }
    const id = await this.imageStore.create(config, opts.parent !== undefined ? { parent: opts.parent } : {});
    if (opts.reference !== undefined) await this.imageStore.tag(id, opts.reference);
    return this.imageStore.get(id);
  }

  /**
   * Pulls an image from a registry (OCI distribution API v2) and tags it with `ref`; see {@link PullOptions}
   * (platform, credentials, progress, AbortSignal). Layers already in the store are not downloaded again; a failed
   * or aborted pull leaves nothing behind.
   */
  async pullImage(ref: string, opts: PullOptions = {}): Promise<Image> {
    this.check();
    return (await registryPull(this.registryTarget(), ref, opts)).image;
  }

  /**
   * Pushes the image `opts.image` (default: `ref` itself) to a registry as `ref`, with each layer's original tar.
   * See {@link PushOptions}; `opts.onPushed` receives the manifest's digest and size.
   */
  async pushImage(ref: string, opts: PushOptions = {}): Promise<void> {
    this.check();
    await registryPush(this.registryTarget(), ref, opts);
  }

  /** What the registry client reads and writes: the stores, a temp dir swept at open, Docker's distribution metadata. */
  private registryTarget(): { layers: LayerStore; images: ImageStore; spoolDir: string; distribution: DistributionMetadata } {
    this.distribution ??= new DistributionMetadata(path.join(this.imageStore.dir, 'distribution'));
    return { layers: this.layerStore, images: this.imageStore, spoolDir: this.layerStore.tmpDir, distribution: this.distribution };
  }

  /** Points `ref` at the image `src` (a reference, id or id prefix). Resolves to the normalised reference. */
  async tagImage(src: string, ref: string): Promise<string> {
    this.check();
    return this.imageStore.tag(this.imageStore.resolve(src), ref);
  }

  /** All images, sorted by id. */
  async listImages(): Promise<Image[]> {
    this.check();
    return this.imageStore.list();
  }

  /** An image by reference (`busybox`, `docker.io/library/busybox:latest`), id (`sha256:...`) or unique id prefix. */
  async getImage(ref: string): Promise<Image> {
    this.check();
    return this.imageStore.get(this.imageStore.resolve(ref));
  }

  /** The parsed config of an image. */
  async imageConfig(ref: string): Promise<ImageConfig> {
    this.check();
    return this.imageStore.config(this.imageStore.resolve(ref));
  }

  /**
   * Removes a reference or an image, with Docker's rules: a reference that is not the image's last one is only
   * untagged; otherwise the image is deleted unless child images need it (never forceable) or containers use it
   * or it has several references (unless `force`). A last reference removed from an image still in use leaves the
   * image untagged, as `docker rmi name` does.
   */
  async removeImage(ref: string, opts: RemoveImageOptions = {}): Promise<RemoveImageResult> {
    this.check();
    return this.gate.run(async () => {
      const force = opts.force ?? false;
      const prune = opts.prune ?? true;
      const id = this.imageStore.resolve(ref);
      const out: RemoveImageResult = { untagged: [], deleted: [], deletedLayers: [] };
      const byName = this.isReferenceFor(ref, id);
      if (byName !== null) {
        await this.imageStore.untag(ref);
        out.untagged.push(byName);
        if (this.imageStore.referencesOf(id).length > 0) return out;
        // Last reference gone: delete the image too unless something needs it (then it stays, untagged).
        if (this.conflict(id, force, false) !== null) return out;
      } else {
        const refs = this.imageStore.referencesOf(id);
        const c = this.conflict(id, force, refs.length > 1);
        if (c !== null) throw new ImageInUseError(id, c);
      }
      await this.deleteImage(id, out, prune);
      return out;
    });
  }

  /** The normalised reference when `ref` named the image by reference (not by id or id prefix), else null. */
  private isReferenceFor(ref: string, id: string): string | null {
    if (/^(?:sha256:)?[0-9a-f]{1,64}$/.test(ref) && id.startsWith(ref.startsWith('sha256:') ? ref : `sha256:${ref}`)) {
      // Could still be a name that happens to be hex: Docker treats it as a reference when one exists.
      try {
        return this.imageStore.referencesOf(id).includes(normalizeReference(ref)) ? normalizeReference(ref) : null;
      } catch {
        return null;
      }
    }
    try {
      return normalizeReference(ref);
    } catch {
      return null;
    }
  }

  /** Why the image cannot be deleted (null: it can). Children are a hard conflict; containers and several references soft. */
  private conflict(id: string, force: boolean, multipleRefs: boolean): string | null {
    const kids = this.imageStore.children(id);
    if (kids.length > 0) return `image has ${kids.length} dependent child image(s)`;
    if (force) return null;
    const users = this.containers.usingImage(id);
    if (users.length > 0) return `used by container(s) ${users.map((c) => c.slice(0, 12)).join(', ')}`;
    if ((this.creating.get(id) ?? 0) > 0) return 'a container is being created from it';
    if (multipleRefs) return 'image is referenced in multiple repositories';
    return null;
  }

  private async deleteImage(id: string, out: RemoveImageResult, prune: boolean): Promise<void> {
    const parent = this.imageStore.get(id).parent;
    for (const r of this.imageStore.referencesOf(id)) out.untagged.push(r);
    out.deletedLayers.push(...(await this.imageStore.delete(id)));
    out.deleted.push(id);
    if (!prune || parent === undefined || !this.imageStore.has(parent)) return;
    // Docker prunes a parent left dangling: untagged, without children or containers.
    if (this.imageStore.referencesOf(parent).length === 0 && this.conflict(parent, false, false) === null) {
      await this.deleteImage(parent, out, prune);
    }
  }

  // ---- containers ----

  /**
   * Creates a container from an image: `createReadWrite('<mountId>-init', top)`, the init files, then
   * `createReadWrite(mountId, '<mountId>-init')`; metadata published atomically.
   */
  async createContainer(image: string, opts: CreateContainerOptions = {}): Promise<Container> {
    this.check();
    const name = opts.name;
    if (name !== undefined && (typeof name !== 'string' || !CONTAINER_NAME_RE.test(name.startsWith('/') ? name.slice(1) : name))) {
      throw new InvalidReferenceError(String(name), 'invalid container name (use [a-zA-Z0-9][a-zA-Z0-9_.-]+)');
    }
    const plainName = name?.startsWith('/') ? name.slice(1) : name;
    const { imageId, top } = await this.gate.run(async () => {
      const imageId = this.imageStore.resolve(image);
      if (plainName !== undefined) {
        const owner = this.containers.nameOwner(plainName);
        if (owner !== undefined) throw new ContainerNameInUseError(plainName, owner);
        if (this.reservedNames.has(plainName)) throw new ContainerNameInUseError(plainName, '(being created)');
        this.reservedNames.add(plainName);
      }
      this.creating.set(imageId, (this.creating.get(imageId) ?? 0) + 1);
      const layers = this.imageStore.get(imageId).layers;
      return { imageId, top: layers[layers.length - 1] ?? null };
    });
    try {
      const id = randomId();
      const record: Container = { id, image: imageId, mountId: '', initId: '', created: goTime(), layer: top };
      if (plainName !== undefined) record.name = plainName;
      const createOpts: Parameters<LayerStore['createRWLayer']>[2] = {
        init: (root) => setupInitLayer(root, this.bindings ? { bindings: this.bindings } : {}),
        beforePublish: async (rw) => {
          record.mountId = rw.mountId;
          record.initId = rw.initId;
          await this.containers.write(record);
        },
      };
      if (opts.storageOpt !== undefined) createOpts.storageOpt = opts.storageOpt;
      if (opts.mountLabel !== undefined) createOpts.mountLabel = opts.mountLabel;
      try {
        await this.layerStore.createRWLayer(id, top, createOpts);
      } catch (e) {
        if (record.mountId !== '') await this.containers.remove(id).catch(() => undefined);
        throw e;
      }
      this.containers.add(record);
      return this.containers.resolve(id);
    } finally {
      await this.gate.run(async () => {
        if (plainName !== undefined) this.reservedNames.delete(plainName);
        const n = (this.creating.get(imageId) ?? 1) - 1;
        if (n <= 0) this.creating.delete(imageId);
        else this.creating.set(imageId, n);
      });
    }
  }

  /** A container by id, unique id prefix or name. */
  async getContainer(idOrName: string): Promise<Container> {
    this.check();
    return this.containers.resolve(idOrName);
  }

  /** All containers, sorted by id. */
  async listContainers(): Promise<Container[]> {
    this.check();
    return this.containers.list();
  }

  /** Mounts the container's root filesystem (reference counted) and resolves to its path. */
  async mountContainer(idOrName: string, opts?: MountOpts): Promise<string> {
    this.check();
    const c = this.containers.resolve(idOrName);
    // Counted before the driver call, not after: a removeContainer started meanwhile must put this mount (the driver
    // runs get and put of one layer in call order). Counted late, the removal saw no mount of ours, unmounted it as a
    // dead process's leftover, and this count then outlived the driver's: every later removal of the container
    // failed with "put without get".
    this.mounted.set(c.id, (this.mounted.get(c.id) ?? 0) + 1);
    try {
      const p = await this.driver.get(c.mountId, opts);
      this.mountPaths.set(c.id, p);
      return p;
    } catch (e) {
      const n = (this.mounted.get(c.id) ?? 1) - 1;
      if (n <= 0) this.mounted.delete(c.id);
      else this.mounted.set(c.id, n);
      throw e;
    }
  }

  /** Releases one {@link mountContainer}; the last one unmounts. */
  async unmountContainer(idOrName: string): Promise<void> {
    this.check();
    const c = this.containers.resolve(idOrName);
    const own = this.mounted.get(c.id) ?? 0;
    await this.driver.put(c.mountId);
    // Without a mount of ours, the put released one an earlier process kept: it is no longer kept.
    if (own <= 0) this.kept.delete(c.id);
    // Read again after the await: concurrent unmounts of one container each take one off the current count.
    const n = (this.mounted.get(c.id) ?? 0) - 1;
    if (n <= 0) {
      this.mounted.delete(c.id);
      this.mountPaths.delete(c.id);
    } else this.mounted.set(c.id, n);
  }

  /** Changes of the container's read-write layer against its init layer, sorted by path. */
  async containerChanges(idOrName: string): Promise<Change[]> {
    this.check();
    const c = this.containers.resolve(idOrName);
    return this.driver.changes(c.mountId, c.initId);
  }

  /** Tar of the container's read-write layer against its init layer (aufs/OCI whiteouts). */
  async exportContainerDiff(idOrName: string): Promise<Readable> {
    this.check();
    const c = this.containers.resolve(idOrName);
    return this.driver.diff(c.mountId, c.initId);
  }

  /**
   * Commits a container: its diff (rw layer against the init layer) registered on the image's top layer, and a
   * new image whose config is the parent's plus the new diffID and a history entry (Docker's NewChildImage).
   */
  async commitContainer(idOrName: string, opts: CommitOptions = {}): Promise<Image> {
    this.check();
    if (opts.reference !== undefined) checkNewReference(opts.reference);
    const c = this.containers.resolve(idOrName);
    const top = c.layer ?? null;
    const parentExists = this.imageStore.has(c.image);
    // The parent config; when the image was force-removed, a bare one rebuilt from the container's layers.
    const parentCfg: ImageConfig = parentExists
      ? this.imageStore.config(c.image)
      : parseImageConfig(JSON.stringify({ rootfs: { type: 'layers', diff_ids: top === null ? [] : this.layerStore.stack(top).map((l) => l.diffId) } }));
    const diff = await this.driver.diff(c.mountId, c.initId);
    const layer = await this.layerStore.register(diff, top, opts.onData ? { onData: opts.onData } : {});
    try {
      const child: Parameters<typeof childConfig>[1] = { diffId: layer.diffId, containerId: c.id };
      if (opts.message !== undefined) child.comment = opts.message;
      if (opts.createdBy !== undefined) child.createdBy = opts.createdBy;
      if (opts.author !== undefined) child.author = opts.author;
      if (opts.config !== undefined) child.config = opts.config;
      const cfg = childConfig(parentCfg, child);
      const id = await this.imageStore.create(serializeConfig(cfg), parentExists ? { parent: c.image } : {});
      if (opts.reference !== undefined) await this.imageStore.tag(id, opts.reference);
      return this.imageStore.get(id);
    } finally {
      await this.layerStore.release(layer.chainId);
    }
  }

  /**
   * Deletes a container: unmounts what this store mounted, removes the rw and init layers, then the record. (Mounts
   * left by a process that died were unmounted by {@link open}.) A layer still in use otherwise, e.g. read by a
   * commit in progress, makes the removal fail with ERR_LAYER_IN_USE and the container stays whole.
   */
  async removeContainer(idOrName: string): Promise<void> {
    this.check();
    const c = this.containers.resolve(idOrName);
    for (let n = this.mounted.get(c.id) ?? 0; n > 0; n--) await this.driver.put(c.mountId);
    this.mounted.delete(c.id);
    this.mountPaths.delete(c.id);
    // A mount an earlier process kept on purpose goes with the container (the driver adopts it and unmounts it).
    if (this.kept.delete(c.id)) await this.driver.put(c.mountId).catch(() => undefined);
    try {
      // Not `unmountStale`: every use of the layers left in this process is live (stale mounts went at open), and
      // treating one as a dead process's leftover put it away from under its user: a diff being read for a commit
      // on vfs lost its layer mid-stream (ENOENT), and a racing mountContainer's count outlived the driver's.
      await this.layerStore.releaseRWLayer(c.id, { unmountStale: false });
    } catch (e) {
      // Half removed (the rw layer went, the init layer did not): the container is gone all the same.
      if (this.layerStore.getRWLayer(c.id) === null) await this.containers.remove(c.id);
      throw e;
    }
    await this.containers.remove(c.id);
  }

  // ---- maintenance ----

  /** Compares the metadata with the driver's state; with `repair`, removes what is broken. */
  async verify(opts: VerifyOptions = {}): Promise<VerifyReport> {
    this.check();
    const found = await this.scan();
    if (!opts.repair && !opts.prune) return found;
    const repaired: string[] = [];
    if (opts.repair) await this.repair(found, repaired);
    if (opts.prune) repaired.push(...(await this.layerStore.pruneUnreferenced()).map((c) => `layer ${c}`));
    const after = await this.scan();
    return { ...found, ok: after.ok, unreferencedLayers: after.unreferencedLayers, repaired };
  }

  private async scan(): Promise<VerifyReport> {
    const ls = this.layerStore;
    const report: VerifyReport = {
      ok: true,
      incomplete: ls.corrupt.filter((c) => c.kind === 'tmp').map((c) => c.path),
      corruptMetadata: ls.corrupt.filter((c) => c.kind !== 'tmp').map((c) => ({ path: c.path, reason: c.reason })),
      missingDriverLayers: [],
      orphanDriverLayers: [],
      corruptImages: [...this.imageStore.corrupt],
      danglingImages: [...this.imageStore.dangling],
      danglingReferences: [...this.imageStore.danglingRefs],
      corruptContainers: [...this.containers.corrupt],
      unreferencedLayers: ls.unreferencedLayers(),
      repaired: [],
    };
    for (const l of ls.list()) {
      if (!(await this.driver.exists(l.cacheId))) report.missingDriverLayers.push({ kind: 'layer', id: l.chainId, driverId: l.cacheId });
    }
    for (const m of ls.listRWLayers()) {
      for (const d of [m.mountId, m.initId]) {
        if (!(await this.driver.exists(d))) report.missingDriverLayers.push({ kind: 'container', id: m.containerId, driverId: d });
      }
      if (!this.containers.has(m.containerId)) {
        report.corruptContainers.push({ path: path.join(ls.mountsDir, m.containerId), reason: 'container layers without a container record' });
      }
    }
    const onDisk = await listDriverLayers(this.driver.name, path.join(this.root, this.driver.name));
    if (onDisk !== null) {
      const live = ls.driverIds();
      report.orphanDriverLayers = onDisk.filter((id) => !live.has(id));
    }
    report.ok =
      report.incomplete.length === 0 &&
      report.corruptMetadata.length === 0 &&
      report.missingDriverLayers.length === 0 &&
      report.orphanDriverLayers.length === 0 &&
      report.corruptImages.length === 0 &&
      report.danglingImages.length === 0 &&
      report.danglingReferences.length === 0 &&
      report.corruptContainers.length === 0;
    return report;
  }

  private async repair(found: VerifyReport, repaired: string[]): Promise<void> {
    const ls = this.layerStore;
    // Unreadable metadata first: the driver layers it named become orphans, removed below.
    const corruptPaths = ls.corrupt.filter((c) => c.kind !== 'tmp').map((c) => c.path);
    if (corruptPaths.length > 0) {
      await ls.removeMetadata(corruptPaths);
      ls.corrupt.splice(0, ls.corrupt.length, ...ls.corrupt.filter((c) => c.kind === 'tmp'));
      repaired.push(...corruptPaths);
    }
    repaired.push(...(await this.containers.dropCorrupt()));
    // Layers whose driver layer is gone: they, what is built on them, and the images using them are dropped.
    const broken = new Set(found.missingDriverLayers.filter((m) => m.kind === 'layer').map((m) => m.id));
    if (broken.size > 0) {
      const affected = new Set<string>();
      for (const l of ls.list()) if (ls.stack(l.chainId).some((s) => broken.has(s.chainId))) affected.add(l.chainId);
      repaired.push(...(await this.imageStore.dropImagesOnLayers(affected)).map((i) => `image ${i}`));
      for (const chain of broken) {
        if (!ls.has(chain)) continue;
        const d = await ls.dropBroken(chain);
        repaired.push(...d.layers.map((l) => `layer ${l}`));
        for (const cid of d.containers) {
          if (this.containers.has(cid)) await this.containers.remove(cid);
          repaired.push(`container ${cid}`);
        }
      }
    }
    // Containers with a missing layer, and container layers without a record.
    const badContainers = new Set(found.missingDriverLayers.filter((m) => m.kind === 'container').map((m) => m.id));
    for (const m of ls.listRWLayers()) if (!this.containers.has(m.containerId)) badContainers.add(m.containerId);
    for (const cid of badContainers) {
      if (ls.getRWLayer(cid) === null) continue;
      this.mounted.delete(cid);
      await ls.releaseRWLayer(cid, { unmountStale: true });
      if (this.containers.has(cid)) await this.containers.remove(cid);
      repaired.push(`container ${cid}`);
    }
    repaired.push(...(await this.imageStore.repair()));
    // Orphan driver layers last (children before parents: retried while progress is made).
    const onDisk = await listDriverLayers(this.driver.name, path.join(this.root, this.driver.name));
    if (onDisk !== null) {
      let orphans = onDisk.filter((id) => !ls.driverIds().has(id));
      for (let progress = true; progress && orphans.length > 0; ) {
        progress = false;
        const left: string[] = [];
        for (const id of orphans) {
          try {
            await this.driver.remove(id);
            repaired.push(`driver layer ${id}`);
            progress = true;
          } catch (e) {
            if (errCode(e) === 'ERR_LAYER_NOT_FOUND') continue;
            if (errCode(e) === 'ERR_LAYER_IN_USE') {
              await this.driver.put(id).catch(() => undefined);
            }
            left.push(id);
          }
        }
        orphans = left;
      }
    }
  }

  /** Unmounts what this store mounted, cleans up the driver and releases the lock (with `keepMounts`, only the lock). */
  async close(opts: CloseOptions = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const failures: unknown[] = [];
    if (!opts.keepMounts) {
      for (const [id, n] of this.mounted) {
        const c = this.containers.has(id) ? this.containers.resolve(id) : null;
        if (!c) continue;
        for (let i = 0; i < n; i++) await this.driver.put(c.mountId).catch((e: unknown) => failures.push(e));
      }
      this.mounted.clear();
      await this.driver.cleanup().catch((e: unknown) => failures.push(e));
      // The driver's cleanup unmounted everything below its home: nothing is kept any more.
      await writeKeptMounts(this.root, [], this.sync).catch((e: unknown) => failures.push(e));
    } else {
      // Recorded before the lock goes, so that the next open keeps these and unmounts only a dead process's leftovers.
      const kept = new Map(this.kept);
      for (const [id, n] of this.mounted) {
        const p = this.mountPaths.get(id);
        if (n > 0 && p !== undefined) kept.set(id, await realPath(p).catch(() => p));
      }
      await writeKeptMounts(this.root, [...kept].map(([container, p]) => ({ container, path: p })), this.sync).catch((e: unknown) => failures.push(e));
    }
    await this.lock.release().catch((e: unknown) => failures.push(e));
    if (failures.length > 0) throw failures[0];
  }
}
