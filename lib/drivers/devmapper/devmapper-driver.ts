/**
 * The devicemapper driver, as Docker's: a thin pool on two sparse loop files (or `dm.thinpooldev`), a formatted
 * base device, and one thin snapshot per layer, of its parent's device or of the base. `get` activates the
 * layer's device, mounts it on `<home>/mnt/<id>` and returns `<home>/mnt/<id>/rootfs`; `put` unmounts and
 * deactivates it. Diffs are computed naively (two mounted trees compared) by {@link NaiveDiffDriver}.
 *
 * Home layout (`<root>/devicemapper`): `devicemapper/{data,metadata}` (loop files), `metadata/` (Docker's device
 * records, see metadata.ts), `mnt/<id>` (mount points), `parents/<id>` (which layer a layer was made from, so a
 * parent is not removed under its children), `driver.lock` (one driver instance per home).
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { GraphdriverError } from '../../errors';
import { loadBindings } from '../../native/bindings';
import type { NativeBindings } from '../../native/types';
import { StoreLockedError } from '../../storage/errors';
import { StoreLock } from '../../storage/lock';
import type { CreateOpts, DriverDeps, MountOpts, ProtoDriver } from '../driver';
import { InvalidOptionError, LayerExistsError, LayerInUseError, LayerNotFoundError, NotSupportedError } from '../errors';
import { errCode } from '../fs-util';
import { KeyedLock } from '../keyed-lock';
import { checkLayerId, checkParentId } from '../layer-id';
import { NaiveDiffDriver } from '../naive-diff-driver';
import { RefCounter } from '../ref-counter';
import { ParentIndex } from '../vfs/parents';
import { DeviceSet, type DeviceSetEnv } from './device-set';
import { MAX_DEVICE_ID } from './device-id-bitmap';
import { humanSize } from './human-size';
import { defaultRunner, findTool, kernelSupportsFs, readFilesystem, type Runner } from './mkfs';
import { parseDevmapperOptions, parseLayerSize } from './options';

/** Dependencies of the devicemapper driver; everything but the bindings defaults to the real system. */
export interface DevMapperDeps extends DriverDeps {
  /** Runs mkfs, tune2fs, resize2fs, xfs_growfs. */
  run?: Runner;
  hasTool?: (tool: string) => boolean;
  kernelHasFs?: (fsName: string) => boolean;
  probe?: DeviceSetEnv['probe'];
  /** Device node directory (default /dev/mapper). */
  devDir?: string;
  /** sysfs (default /sys). */
  sysDir?: string;
  /** Removal attempts while a device is busy, and the pause between them (default 200 x 100 ms, as Docker). */
  removeRetries?: number;
  retryDelayMs?: number;
  /** fsync metadata writes (default true). */
  sync?: boolean;
  maxDeviceId?: number;
}

/** Interface version of the DM ioctls that brought deferred removal (Linux 3.13). */
const DEFERRED_REMOVE_VERSION: readonly [number, number] = [4, 27];

/**
 * The ProtoDriver half of devicemapper: layer ids, reference-counted mounts and the parent records, on top of the
 * `DeviceSet` (lib/drivers/devmapper/device-set.ts). {@link DevMapperDriver} adds the naive diff methods.
 *
 * @example
 * ```ts
 * import { DevMapperProtoDriver, NaiveDiffDriver } from 'graphdriver';
 *
 * const proto = await DevMapperProtoDriver.open('/var/lib/graphdriver/devicemapper', ['dm.loopdatasize=20G'], {});
 * await proto.create('base', null); // a thin snapshot of the base device
 * await proto.createReadWrite('c1', 'base');
 * console.log(proto.mountPoint('c1'), proto.parentOf('c1')); // '/var/lib/graphdriver/devicemapper/mnt/c1' 'base'
 * const driver = new NaiveDiffDriver(proto); // what DevMapperDriver.init builds
 * console.log(await driver.changes('c1', 'base'));
 * ```
 */
export class DevMapperProtoDriver implements ProtoDriver {
  readonly name = 'devicemapper';
  private readonly locks = new KeyedLock();
  /** Serialises the short parent/child bookkeeping steps. */
  private readonly graph = new KeyedLock();
  private readonly refs = new RefCounter();
  private readonly parents: ParentIndex;
  /** Layers being removed: no new child may be made from them. */
  private readonly removing = new Set<string>();
  private closed = false;

  private constructor(
    readonly home: string,
    /** @internal The thin pool and its devices (exposed for the driver's own tests). */
    readonly devices: DeviceSet,
    private readonly lock: StoreLock,
    private readonly b: NativeBindings,
  ) {
    this.parents = new ParentIndex(path.join(home, 'parents'));
  }

  /** Opens the driver at `home`; see {@link DevMapperDriver.init}. */
  static async open(home: string, options: readonly string[], deps: DevMapperDeps): Promise<DevMapperProtoDriver> {
    if (typeof home !== 'string' || home === '') throw new TypeError('devicemapper: home must be a non-empty path');
    const opts = parseDevmapperOptions(options);
    const b = deps.bindings ?? loadBindings();
    let version: [number, number, number];
    try {
      version = await b.dmVersion();
    } catch (e) {
      throw new NotSupportedError(`devicemapper: device-mapper is not available (${e instanceof Error ? e.message : String(e)})`, { cause: e });
    }
    if (opts.deferredRemoval && (version[0] < DEFERRED_REMOVE_VERSION[0] || (version[0] === DEFERRED_REMOVE_VERSION[0] && version[1] < DEFERRED_REMOVE_VERSION[1]))) {
      throw new InvalidOptionError(`devicemapper: dm.use_deferred_removal needs DM interface 4.27 or later; the kernel has ${version.join('.')}`);
    }
    const absHome = path.resolve(home);
    // A home made by a start that then fails is removed again, so that it does not count as driver state (the
    // registry picks a driver whose home holds state) and a later start begins clean.
    const fresh = (await fs.readdir(absHome).catch(() => [] as string[])).length === 0;
    await fs.mkdir(absHome, { recursive: true, mode: 0o700 });
    await fs.chmod(absHome, 0o700);

    let lock: StoreLock;
    try {
      lock = await StoreLock.acquire(path.join(absHome, 'driver.lock'));
    } catch (e) {
      if (e instanceof StoreLockedError) {
        throw new GraphdriverError(
          'ERR_DRIVER_LOCKED',
          `devicemapper: ${absHome} is in use by another driver instance (${e.holderPid === null ? 'unknown holder' : `process ${e.holderPid}`}, lock file ${e.lockFile}); clean that one up first`,
          { cause: e },
        );
      }
      throw e;
    }
    try {
      const env: DeviceSetEnv = {
        b,
        run: deps.run ?? defaultRunner,
        hasTool: deps.hasTool ?? ((t) => findTool(t) !== null),
        kernelHasFs: deps.kernelHasFs ?? kernelSupportsFs,
        probe: deps.probe ?? readFilesystem,
        devDir: deps.devDir ?? '/dev/mapper',
        sysDir: deps.sysDir ?? '/sys',
        removeRetries: Math.max(1, deps.removeRetries ?? 200),
        retryDelayMs: Math.max(0, deps.retryDelayMs ?? 100),
        sync: deps.sync ?? true,
        maxDeviceId: deps.maxDeviceId ?? MAX_DEVICE_ID,
      };
      const devices = await DeviceSet.open(absHome, opts, env);
      const d = new DevMapperProtoDriver(absHome, devices, lock, b);
      try {
        await fs.mkdir(path.join(absHome, 'mnt'), { recursive: true, mode: 0o755 });
        await d.parents.load(async (id) => devices.hasDevice(id));
      } catch (e) {
        await devices.shutdown().catch(() => undefined);
        throw e;
      }
      return d;
    } catch (e) {
      await lock.release().catch(() => undefined);
      if (fresh) await fs.rm(absHome, { recursive: true, force: true }).catch(() => undefined);
      throw e;
    }
  }

  /** `<home>/mnt/<id>`: where the layer's filesystem is mounted. */
  mountPoint(id: string): string {
    checkLayerId(id);
    return path.join(this.home, 'mnt', id);
  }

  /** The recorded parent of layer `id` (null for base layers). */
  parentOf(id: string): string | null {
    checkLayerId(id);
    return this.parents.parent(id);
  }

  private checkOpen(): void {
    if (this.closed) throw new GraphdriverError('ERR_DRIVER_CLOSED', `devicemapper driver at ${this.home} has been cleaned up`);
  }

  create(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.createLayer(id, parent, opts);
  }

  /** Layers are all writable snapshots: the same as {@link create}. */
  createReadWrite(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.createLayer(id, parent, opts);
  }

  /**
   * Snapshots the parent's device (the base device for a base layer). The `size` storage option gives the new
   * device (and its filesystem) more room than its parent; it cannot be smaller.
   */
  private async createLayer(id: string, parentArg: string | null | undefined, opts: CreateOpts | undefined): Promise<void> {
    checkLayerId(id);
    const parent = checkParentId(parentArg);
    const size = parseLayerSize(opts?.storageOpt);
    this.checkOpen();
    await this.locks.run(id, async () => {
      this.checkOpen();
      if (this.devices.hasDevice(id)) throw new LayerExistsError(id);
      if (parent !== null) {
        // Registered before the snapshot: from here on the parent cannot be removed under us.
        await this.graph.run('', async () => {
          if (!this.devices.hasDevice(parent) || this.removing.has(parent)) throw new LayerNotFoundError(parent);
          this.parents.add(id, parent);
        });
      }
      try {
        await this.devices.addDevice(id, parent ?? '', size);
        if (parent !== null) await this.parents.persist(id, parent);
        else await this.parents.unpersist(id);
      } catch (e) {
        if (parent !== null) {
          await this.graph.run('', async () => this.parents.drop(id));
          if (!this.devices.hasDevice(id)) await this.parents.unpersist(id).catch(() => undefined);
        }
        throw e;
      }
    });
  }

  /** Deletes the layer's device: refused while it is mounted or while layers made from it exist. */
  async remove(id: string): Promise<void> {
    checkLayerId(id);
    this.checkOpen();
    await this.locks.run(id, async () => {
      this.checkOpen();
      const n = this.refs.count(id);
      if (n > 0) throw new LayerInUseError(id, `it is mounted (${n} get${n === 1 ? '' : 's'} without put)`);
      await this.graph.run('', async () => {
        const kids = this.parents.children(id);
        if (kids.length > 0) {
          const shown = kids.slice(0, 3).map((k) => JSON.stringify(k)).join(', ');
          throw new LayerInUseError(id, `it is the parent of ${kids.length} layer${kids.length === 1 ? '' : 's'} (${shown}${kids.length > 3 ? ', ...' : ''})`);
        }
        if (!this.devices.hasDevice(id)) throw new LayerNotFoundError(id);
        this.removing.add(id);
      });
      try {
        const mp = this.mountPoint(id);
        // A mount left by a process that ended without put.
        if (await this.isMounted(mp)) await this.devices.unmountDevice(id, mp);
        await this.devices.deleteDevice(id, false);
        // The device is gone: a mount point that is not empty (files written while it was not mounted) stays
        // behind rather than failing a remove that has already happened.
        await fs.rmdir(mp).catch((e: unknown) => {
          const c = errCode(e);
          if (c === 'ENOTEMPTY' || c === 'EEXIST' || c === 'EBUSY') process.emitWarning(`devicemapper: ${mp} is not empty; left in place`);
          else if (c !== 'ENOENT') throw e;
        });
        await this.graph.run('', async () => this.parents.drop(id));
        this.refs.reset(id);
        await this.parents.unpersist(id);
      } finally {
        this.removing.delete(id);
      }
    });
  }

  private async isMounted(mp: string): Promise<boolean> {
    try {
      return await this.b.isMountpoint(mp);
    } catch (e) {
      if (errCode(e) === 'ENOENT' || errCode(e) === 'ENOTDIR') return false;
      throw e;
    }
  }

  /**
   * Mounts the layer (the first get; later ones share the mount) and returns `<home>/mnt/<id>/rootfs`, creating
   * `rootfs` (0755) and Docker's `id` file next to it on the first mount of a device.
   */
  async get(id: string, opts?: MountOpts): Promise<string> {
    checkLayerId(id);
    this.checkOpen();
    return this.locks.run(id, async () => {
      this.checkOpen();
      if (!this.devices.hasDevice(id)) throw new LayerNotFoundError(id);
      const mp = this.mountPoint(id);
      const rootfs = path.join(mp, 'rootfs');
      const n = await this.refs.increment(id, async () => false);
      if (n > 1) return rootfs;
      let mounted = false;
      try {
        await fs.mkdir(mp, { recursive: true, mode: 0o755 });
        // A mount left by a process that ended without put is taken over rather than mounted twice.
        if (!(await this.isMounted(mp))) await this.devices.mountDevice(id, mp, opts?.mountLabel, opts?.options ?? []);
        mounted = true;
        await ensureDir(rootfs);
        await fs.writeFile(path.join(mp, 'id'), id, { mode: 0o600, flag: 'wx' }).catch((e: unknown) => {
          if (errCode(e) !== 'EEXIST') throw e;
        });
        return rootfs;
      } catch (e) {
        await this.refs.decrement(id, async () => false).catch(() => undefined);
        if (mounted) await this.devices.unmountDevice(id, mp).catch(() => undefined);
        throw e;
      }
    });
  }

  /** Releases one {@link get}; the last one unmounts and deactivates the device. NotMountedError without a get. */
  async put(id: string): Promise<void> {
    checkLayerId(id);
    this.checkOpen();
    await this.locks.run(id, async () => {
      const n = await this.refs.decrement(id, async () => false);
      if (n > 0) return;
      try {
        await this.devices.unmountDevice(id, this.mountPoint(id));
      } catch (e) {
        // Still mounted (or at least still active): keep counting it, so remove refuses it.
        await this.refs.increment(id, async () => false);
        throw e;
      }
    });
  }

  async exists(id: string): Promise<boolean> {
    checkLayerId(id);
    return this.devices.hasDevice(id);
  }

  /** Docker's devicemapper status keys, in Docker's order. */
  async status(): Promise<Array<[string, string]>> {
    this.checkOpen();
    const s = await this.devices.status();
    const out: Array<[string, string]> = [
      ['Pool Name', s.poolName],
      ['Pool Blocksize', humanSize(s.blockSize)],
      ['Base Device Size', humanSize(s.baseDeviceSize)],
      ['Backing Filesystem', s.baseFs],
      ['Udev Sync Supported', 'false'],
    ];
    if (s.dataFile !== '') out.push(['Data file', s.dataFile]);
    if (s.metadataFile !== '') out.push(['Metadata file', s.metadataFile]);
    out.push(
      ['Data Space Used', humanSize(s.data.used)],
      ['Data Space Total', humanSize(s.data.total)],
      ['Data Space Available', humanSize(s.data.available)],
      ['Metadata Space Used', humanSize(s.metadata.used)],
      ['Metadata Space Total', humanSize(s.metadata.total)],
      ['Metadata Space Available', humanSize(s.metadata.available)],
      ['Thin Pool Minimum Free Space', humanSize(s.minFreeSpace)],
      ['Deferred Removal Enabled', String(s.deferredRemoveEnabled)],
      ['Deferred Deletion Enabled', String(s.deferredDeleteEnabled)],
      ['Deferred Deleted Device Count', String(s.deferredDeletedDeviceCount)],
    );
    if (s.dataLoopback !== '') out.push(['Data loop file', s.dataLoopback]);
    if (s.metadataLoopback !== '') out.push(['Metadata loop file', s.metadataLoopback]);
    return out;
  }

  /** DeviceId, DeviceSize (bytes) and DeviceName (the device-mapper name), as Docker reports them. */
  async getMetadata(id: string): Promise<Record<string, string> | null> {
    checkLayerId(id);
    const info = this.devices.info(id);
    if (info === undefined || info.deleted) throw new LayerNotFoundError(id);
    return { DeviceId: String(info.deviceId), DeviceSize: String(info.size), DeviceName: this.devices.dmName(id) };
  }

  /** Unmounts everything, removes the devices and the pool this driver activated, detaches the loop devices. */
  async cleanup(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.devices.shutdown();
    } finally {
      for (const id of this.refs.active()) this.refs.reset(id);
      await this.lock.release();
    }
  }
}

/** Creates `dir` with mode 0755 whatever the umask; an existing directory (from a parent layer) is kept as it is. */
async function ensureDir(dir: string): Promise<void> {
  try {
    await fs.mkdir(dir, { mode: 0o755 });
  } catch (e) {
    if (errCode(e) === 'EEXIST') return;
    throw e;
  }
  await fs.chmod(dir, 0o755);
}

/**
 * The devicemapper graph driver: {@link DevMapperProtoDriver} plus Docker's naive diff methods (layers compared as
 * whole trees, diffs applied with whiteouts turned into deletions).
 *
 * @example
 * ```ts
 * import * as fs from 'node:fs';
 * import { DevMapperDriver } from 'graphdriver';
 *
 * // a thin pool on sparse loop files in the home (or an existing one: dm.thinpooldev=<name>)
 * const driver = await DevMapperDriver.init('/var/lib/graphdriver/devicemapper', ['dm.basesize=20G', 'dm.fs=xfs']);
 * await driver.create('base', null);
 * await driver.applyDiff('base', null, fs.createReadStream('base.tar'));
 * await driver.createReadWrite('c1', 'base'); // a thin snapshot of base's device
 * const rootfs = await driver.get('c1'); // <home>/mnt/c1/rootfs on the mounted device
 * console.log(await driver.getMetadata('c1')); // { DeviceId, DeviceSize, DeviceName }
 * await driver.put('c1');
 * await driver.cleanup(); // unmounts, removes the devices and the pool, detaches the loop devices
 * ```
 */
export class DevMapperDriver extends NaiveDiffDriver {
  private constructor(
    private readonly dm: DevMapperProtoDriver,
    bindings: NativeBindings,
  ) {
    super(dm, { bindings, format: 'naive' });
  }

  /**
   * Opens the driver at `home` (`<root>/devicemapper`). Throws NotSupportedError without device-mapper (or without
   * loop devices for a loop-file pool), InvalidOptionError for a bad `--storage-opt`, ERR_DRIVER_LOCKED while
   * another instance uses the home, and refuses a pool it does not own or metadata it cannot read.
   */
  static async init(home: string, options: string[] = [], deps: DevMapperDeps = {}): Promise<DevMapperDriver> {
    const bindings = deps.bindings ?? loadBindings();
    const proto = await DevMapperProtoDriver.open(home, options, { ...deps, bindings });
    return new DevMapperDriver(proto, bindings);
  }

  /** The driver home. */
  get home(): string {
    return this.dm.home;
  }

  /** @internal The underlying device set (pool, devices, records). */
  get devices(): DeviceSet {
    return this.dm.devices;
  }

  /** `<home>/mnt/<id>`. */
  mountPoint(id: string): string {
    return this.dm.mountPoint(id);
  }

  /** The parent layer `id` was created from (null for base layers). */
  parentOf(id: string): string | null {
    return this.dm.parentOf(id);
  }
}
