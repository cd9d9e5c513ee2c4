/**
 * What the drivers whose layers are plain directories holding a whole tree (vfs: copies, btrfs: subvolumes) share:
 * nothing is mounted, so get returns the directory and only counts, the parent of every layer is kept in a
 * {@link ParentIndex} so that a parent cannot be removed, and the public driver adds the naive diff methods.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { GraphdriverError } from '../errors';
import type { NativeBindings } from '../native/types';
import type { CreateOpts, MountOpts, ProtoDriver } from './driver';
import { LayerNotFoundError } from './errors';
import { isDirectory } from './fs-util';
import { KeyedLock } from './keyed-lock';
import { checkLayerId } from './layer-id';
import { NaiveDiffDriver } from './naive-diff-driver';
import { RefCounter } from './ref-counter';
import { ParentIndex } from './vfs/parents';

const notMounted = (): Promise<boolean> => Promise.resolve(false);

/**
 * A ProtoDriver whose layers are directories `<layersDir>/<id>` holding the layer's whole tree. Subclasses make
 * and delete the directories (create, createReadWrite, remove) and report status; the rest is here.
 *
 * @example
 * ```ts
 * import { loadBindings, VfsProtoDriver, type LayerDirProtoDriver } from 'graphdriver';
 *
 * // VfsProtoDriver and BtrfsProtoDriver are LayerDirProtoDrivers: one directory per layer, nothing mounted
 * const proto: LayerDirProtoDriver = await VfsProtoDriver.open('/var/lib/graphdriver/vfs', [], loadBindings());
 * await proto.create('base', null);
 * await proto.createReadWrite('c1', 'base');
 * const dir = await proto.get('c1'); // the layer's directory; get and put only count
 * await proto.put('c1');
 * console.log(proto.parentOf('c1'), await proto.getMetadata('c1')); // 'base' null
 * await proto.remove('base').catch((e: { code?: string }) => console.log(e.code)); // 'ERR_LAYER_IN_USE': c1 is its child
 * ```
 */
export abstract class LayerDirProtoDriver implements ProtoDriver {
  abstract readonly name: string;
  /** Per-layer lock: every operation on one layer runs alone. */
  protected readonly locks = new KeyedLock();
  /** Serialises the short parent/child bookkeeping steps (never held during a copy, snapshot or delete). */
  protected readonly graph = new KeyedLock();
  protected readonly refs = new RefCounter();
  /**
   * The parent of every layer, persisted in `<home>/parents/<id>`.
   * @internal
   */
  protected readonly parents: ParentIndex;
  private closed = false;
  private dirsReady: Promise<void> | null = null;

  protected constructor(
    /** The driver home. */
    readonly home: string,
    /** Where the layer directories are: created with the first layer, so that a home without layers holds no state. */
    private readonly layersRoot: string,
  ) {
    this.parents = new ParentIndex(path.join(home, 'parents'));
  }

  /** The directory of layer `id`, whether or not it exists (`id` is checked). */
  protected layerDir(id: string): string {
    checkLayerId(id);
    return path.join(this.layersRoot, id);
  }

  /** The recorded parent of layer `id` (null for base layers). */
  parentOf(id: string): string | null {
    checkLayerId(id);
    return this.parents.parent(id);
  }

  protected checkOpen(): void {
    if (this.closed) throw new GraphdriverError('ERR_DRIVER_CLOSED', `${this.name} driver at ${this.home} has been cleaned up`);
  }

  /**
   * Runs `fn` under the lock of layer `id` (which is checked), while the driver is open: checked before waiting
   * for the lock and again once it is held, since a cleanup may have come meanwhile.
   */
  protected withLayerLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    checkLayerId(id);
    this.checkOpen();
    return this.locks.run(id, async () => {
      this.checkOpen();
      return fn();
    });
  }

  /** Creates the layers directory once (again after a failure). */
  protected ensureDirs(): Promise<void> {
    this.dirsReady ??= fs.mkdir(this.layersRoot, { recursive: true, mode: 0o700 }).then(
      () => undefined,
      (e: unknown) => {
        this.dirsReady = null;
        throw e;
      },
    );
    return this.dirsReady;
  }

  /**
   * Records that `id` is being built on `parent` (LayerNotFoundError when the parent does not exist): from here on
   * the parent cannot be removed. Undo with {@link forgetParent} when the layer cannot be made.
   */
  protected async claimParent(id: string, parent: string): Promise<void> {
    await this.graph.run('', async () => {
      if (!(await isDirectory(this.layerDir(parent)))) throw new LayerNotFoundError(parent);
      this.parents.add(id, parent);
    });
  }

  /** Undoes {@link claimParent} and deletes any persisted record, for a layer that was not made. */
  protected async forgetParent(id: string): Promise<void> {
    await this.graph.run('', async () => this.parents.drop(id));
    await this.parents.unpersist(id).catch(() => undefined);
  }

  create(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.createLayer(id, parent, opts);
  }

  /** Layers of these drivers are all writable directories: the same as {@link create}. */
  createReadWrite(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.createLayer(id, parent, opts);
  }

  /** Makes layer `id` (read-only and read-write layers are made alike). */
  protected abstract createLayer(id: string, parent: string | null | undefined, opts: CreateOpts | undefined): Promise<void>;

  abstract remove(id: string): Promise<void>;

  abstract status(): Promise<Array<[string, string]>>;

  /** Returns the layer directory (nothing to mount); reference counted so that remove can refuse a layer in use. */
  async get(id: string, _opts?: MountOpts): Promise<string> {
    return this.withLayerLock(id, async () => {
      const dir = this.layerDir(id);
      if (!(await isDirectory(dir))) throw new LayerNotFoundError(id);
      await this.refs.increment(id, notMounted);
      return dir;
    });
  }

  /** Releases one {@link get}; NotMountedError without one. */
  async put(id: string): Promise<void> {
    checkLayerId(id);
    this.checkOpen();
    await this.locks.run(id, async () => {
      await this.refs.decrement(id, notMounted);
    });
  }

  async exists(id: string): Promise<boolean> {
    checkLayerId(id);
    return isDirectory(this.layerDir(id));
  }

  /** These layers have no metadata (null); unknown ids are LayerNotFoundError. */
  async getMetadata(id: string): Promise<Record<string, string> | null> {
    checkLayerId(id);
    if (!(await isDirectory(this.layerDir(id)))) throw new LayerNotFoundError(id);
    return null;
  }

  /** Nothing is mounted; forgets the reference counts and refuses further use. */
  async cleanup(): Promise<void> {
    this.closed = true;
    for (const id of this.refs.active()) this.refs.reset(id);
  }
}

/**
 * The public driver over a {@link LayerDirProtoDriver}: Docker's naive diff methods (layers compared as whole
 * trees, diffs applied with whiteouts turned into deletions) plus the home and the parent records.
 *
 * @example
 * ```ts
 * import { VfsDriver, type LayerDirDriver, type LayerDirProtoDriver } from 'graphdriver';
 *
 * // VfsDriver and BtrfsDriver are LayerDirDrivers: naive diffs, plus the home and the parent records
 * const driver: LayerDirDriver<LayerDirProtoDriver> = await VfsDriver.init('/var/lib/graphdriver/vfs');
 * await driver.create('base', null);
 * await driver.createReadWrite('c1', 'base');
 * console.log(driver.home, driver.parentOf('c1')); // '/var/lib/graphdriver/vfs' 'base'
 * console.log(await driver.changes('c1', 'base')); // the two trees compared
 * ```
 */
export class LayerDirDriver<P extends LayerDirProtoDriver> extends NaiveDiffDriver<P> {
  /** Drivers are made by their static `init`. */
  protected constructor(proto: P, bindings: NativeBindings) {
    super(proto, { bindings, format: 'naive' });
  }

  /** The driver home. */
  get home(): string {
    return this.proto.home;
  }

  /** The parent layer `id` was created from, as recorded at create (null for base layers). */
  parentOf(id: string): string | null {
    return this.proto.parentOf(id);
  }
}
