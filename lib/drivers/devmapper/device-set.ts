/**
 * Docker's devmapper DeviceSet: the thin devices of one pool and their records. A base device holds an empty
 * filesystem; every layer is a thin snapshot of its parent's device (or of the base). Creates and deletes run as
 * transactions against the pool's transaction id, so that an operation cut short by a crash is rolled back at
 * the next start (see metadata.ts). Devices are activated with a `thin <pool> <id>` table when mounted and removed
 * again when unmounted, with retries while the kernel reports them busy, or deferred when configured.
 * @module
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { GraphdriverError } from '../../errors';
import { FileType, UmountFlags, major, minor } from '../../native/constants';
import type { DmInfo, NativeBindings } from '../../native/types';
import { InvalidOptionError, LayerExistsError, LayerInUseError, LayerNotFoundError } from '../errors';
import { errCode } from '../fs-util';
import { KeyedLock } from '../keyed-lock';
import { formatMountLabel, splitMountFlags } from '../overlay2/layout';
import { DeviceIdBitmap, MAX_DEVICE_ID } from './device-id-bitmap';
import { humanSize } from './human-size';
import { type DeviceInfo, type DeviceSetMetadata, MetadataError, MetadataStore } from './metadata';
import { chooseDefaultFs, growFilesystem, makeFilesystem, readFilesystem, type FsProbe, type Runner } from './mkfs';
import type { BaseFs, DevmapperOptions } from './options';
import { METADATA_BLOCK_SIZE, ThinPool, type PoolStatus } from './pool';

const SECTOR = 512;

/** What the device set needs from the outside world (tests replace all of it). */
export interface DeviceSetEnv {
  b: NativeBindings;
  run: Runner;
  hasTool: (tool: string) => boolean;
  kernelHasFs: (fsName: string) => boolean;
  /** Reads a device's superblock (default: {@link readFilesystem}). */
  probe: (device: string) => Promise<FsProbe | null>;
  /** Where device nodes live (default /dev/mapper). */
  devDir: string;
  /** sysfs mount point (default /sys). */
  sysDir: string;
  /** Attempts and delay for removing a busy device (Docker: 200 x 100 ms). */
  removeRetries: number;
  retryDelayMs: number;
  /** fsync metadata writes. */
  sync: boolean;
  /** Largest thin device id (tests use small ones). */
  maxDeviceId: number;
}

/**
 * The pool has too little free data or metadata space for another snapshot (dm.min_free_space), or is full.
 *
 * @example
 * ```ts
 * import { DevMapperDriver, PoolSpaceError } from 'graphdriver';
 *
 * const driver = await DevMapperDriver.init('/var/lib/graphdriver/devicemapper', ['dm.min_free_space=10%']);
 * try {
 *   await driver.createReadWrite('c1', 'base');
 * } catch (e) {
 *   if (!(e instanceof PoolSpaceError)) throw e; // e.code === 'ENOSPC', e.errno === -28
 *   console.error(`the pool is short of ${e.space} space: remove layers or grow it`);
 * }
 * ```
 */
export class PoolSpaceError extends GraphdriverError {
  readonly errno = -28;

  constructor(
    readonly space: 'data' | 'metadata',
    message: string,
  ) {
    super('ENOSPC', message);
  }
}

/**
 * A device stays busy after every removal attempt.
 *
 * @example
 * ```ts
 * import { DevMapperDriver, DeviceBusyError } from 'graphdriver';
 *
 * const driver = await DevMapperDriver.init('/var/lib/graphdriver/devicemapper');
 * try {
 *   await driver.remove('c1');
 * } catch (e) {
 *   if (!(e instanceof DeviceBusyError)) throw e; // e.code === 'ERR_DEVICE_BUSY'
 *   console.error(`${e.device} is still open elsewhere (a mount in another namespace?)`);
 * }
 * ```
 */
export class DeviceBusyError extends GraphdriverError {
  constructor(
    readonly device: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super('ERR_DEVICE_BUSY', message, options);
  }
}

/** Used/total/available bytes of one pool space. */
export interface SpaceUsage {
  used: number;
  total: number;
  available: number;
}

/** Everything `status()` reports (Docker's devmapper Status). */
export interface DeviceSetStatus {
  poolName: string;
  /** Data block size in bytes. */
  blockSize: number;
  baseDeviceSize: number;
  baseFs: string;
  dataFile: string;
  metadataFile: string;
  dataLoopback: string;
  metadataLoopback: string;
  data: SpaceUsage;
  metadata: SpaceUsage;
  /** Bytes of data space kept free by dm.min_free_space. */
  minFreeSpace: number;
  deferredRemoveEnabled: boolean;
  deferredDeleteEnabled: boolean;
  deferredDeletedDeviceCount: number;
  /** The pool's mode: 'rw', 'ro', 'out_of_data_space', 'Fail'. */
  poolMode: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Largest device-mapper name (DM_NAME_LEN - 1). */
const DM_NAME_MAX = 127;

/** The thin devices of one pool, with their records under `<home>/metadata`. */
export class DeviceSet {
  /** Device records by hash ('' = base), deleted ones included. */
  private readonly devices = new Map<string, DeviceInfo>();
  private ids: DeviceIdBitmap;
  /** Pool transaction id, and the one of the transaction in progress (equal when none is). */
  private transactionId = 0;
  private openTransactionId = 0;
  private setMeta: DeviceSetMetadata = { nextDeviceId: 0, baseDeviceUuid: '', baseDeviceFilesystem: '' };
  /** Serialises transactions, id allocation and record writes (Docker's devices.Lock). */
  private readonly setLock = new KeyedLock();
  /** Per-device activation, mount and suspension (Docker's info.lock). */
  private readonly devLocks = new KeyedLock();
  readonly meta: MetadataStore;
  /** Filesystem of the base device, so of every layer. */
  baseFs: BaseFs = 'ext4';
  /** Device names this process created /dev/mapper nodes for. */
  private readonly nodes = new Set<string>();

  private constructor(
    readonly home: string,
    /** Device name prefix, `docker-<major>:<minor>-<inode of home>`. */
    readonly prefix: string,
    readonly pool: ThinPool,
    readonly opts: DevmapperOptions,
    private readonly env: DeviceSetEnv,
  ) {
    this.meta = new MetadataStore(path.join(home, 'metadata'), env.sync);
    this.ids = new DeviceIdBitmap(0, env.maxDeviceId);
  }

  private get b(): NativeBindings {
    return this.env.b;
  }

  /**
   * Opens the set: the pool (loop files or dm.thinpooldev), the records, rollback of an unfinished transaction,
   * the base device (created and formatted the first time; UUID checked and grown later), and the reaping of
   * devices whose deletion was deferred.
   */
  static async open(home: string, opts: DevmapperOptions, env: DeviceSetEnv): Promise<DeviceSet> {
    const st = await fs.stat(home);
    const prefix = `docker-${major(st.dev)}:${minor(st.dev)}-${st.ino}`;
    const pool =
      opts.thinPoolDev !== null
        ? await ThinPool.openExisting(env.b, opts.thinPoolDev, env.sysDir)
        : await ThinPool.openLoopback(
            env.b,
            `${prefix}-pool`,
            {
              dir: path.join(home, 'devicemapper'),
              dataSize: opts.dataLoopSize,
              dataSizeSet: opts.dataLoopSizeSet,
              metadataSize: opts.metadataLoopSize,
              metadataSizeSet: opts.metadataLoopSizeSet,
              blockSize: opts.blockSize,
            },
            env.sysDir,
          );
    const ds = new DeviceSet(home, prefix, pool, opts, env);
    try {
      await fs.mkdir(ds.meta.dir, { recursive: true, mode: 0o700 });
      // Tools (dmsetup, lvm) expect every active device under /dev/mapper, the pool included.
      if (pool.activatedHere) await ds.ensureNode(pool.name, pool.dev);
      await ds.initMetadata();
      await ds.resumeLeftSuspended();
      await ds.setupBaseImage();
      await ds.cleanupDeletedDevices();
    } catch (e) {
      if (pool.activatedHere) {
        await pool.close().catch(() => undefined);
        await ds.removeNode(pool.name).catch(() => undefined);
      }
      throw e;
    }
    return ds;
  }

  /**
   * A process that died between suspending an origin and resuming it (around create_snap) leaves the origin
   * suspended, and every I/O to it would hang: resume the set's devices found suspended.
   */
  private async resumeLeftSuspended(): Promise<void> {
    for (const e of await this.b.dmList()) {
      if (!e.name.startsWith(`${this.prefix}-`) || e.name === this.pool.name) continue;
      const info = await this.b.dmInfo(e.name);
      if (info !== null && info.suspended) await this.b.dmResume(e.name);
    }
  }

  // ---- names and nodes ----

  /** The device-mapper name of device `hash`: `<prefix>-<id>` (`-base` for the base), hashed when it would not fit. */
  dmName(hash: string): string {
    if (hash === '') return `${this.prefix}-base`;
    const plain = `${this.prefix}-${hash}`;
    // 'base' and 'pool' would be the base device and the pool themselves.
    if (hash === 'base' || hash === 'pool' || plain.length > DM_NAME_MAX) {
      return `${this.prefix}-@${createHash('sha256').update(hash).digest('hex').slice(0, 64)}`;
    }
    return plain;
  }

  /** `/dev/mapper/<name>` of device `hash`. */
  devPath(hash: string): string {
    return path.join(this.env.devDir, this.dmName(hash));
  }

  /**
   * Makes sure `/dev/mapper/<name>` is the block device `dev`: without udev (containers, the test VM) nobody else
   * creates it, and a node left from an earlier device of the same name may point at another device number.
   */
  private async ensureNode(name: string, dev: number): Promise<void> {
    const node = path.join(this.env.devDir, name);
    try {
      const st = await fs.lstat(node);
      if (st.isSymbolicLink()) return; // udev's link to ../dm-N
      if (st.isBlockDevice() && st.rdev === dev) return;
      await fs.rm(node, { force: true });
    } catch (e) {
      if (errCode(e) !== 'ENOENT') throw e;
    }
    try {
      await this.b.mknod(node, FileType.S_IFBLK | 0o600, dev);
    } catch (e) {
      if (errCode(e) !== 'EEXIST') throw e;
    }
    this.nodes.add(name);
  }

  private async removeNode(name: string): Promise<void> {
    const node = path.join(this.env.devDir, name);
    try {
      const st = await fs.lstat(node);
      // udev's links are udev's business; our own nodes go with the device.
      if (!st.isSymbolicLink()) await fs.rm(node, { force: true });
    } catch (e) {
      if (errCode(e) !== 'ENOENT') throw e;
    }
    this.nodes.delete(name);
  }

  // ---- records ----

  private async initMetadata(): Promise<void> {
    const status = await this.pool.status();
    this.transactionId = status.transactionId;
    this.openTransactionId = this.transactionId;
    const setMeta = await this.meta.loadDeviceSet();
    const base = await this.meta.loadDevice('');

    if (base === null) {
      // A home without a base device record: only a brand-new pool may be taken over. A pool that has been used
      // belongs to someone else, or this driver's records were lost; deleting anything would destroy data.
      if (status.transactionId !== 0 || status.usedDataBlocks !== 0) {
        const why = status.transactionId !== 0 ? `transaction id ${status.transactionId}` : `${status.usedDataBlocks} used data blocks`;
        throw new GraphdriverError(
          'ERR_DEVMAPPER_FOREIGN_POOL',
          `devicemapper: refusing to take over thin-pool ${this.pool.name}: it has ${why} but ${this.meta.fileFor('')} does not exist ` +
            '(the pool is used by something else, or this driver\'s metadata was lost); nothing was changed',
        );
      }
    } else {
      // deviceset-metadata is written together with the finished base device.
      if (setMeta === null && base.initialized) throw new MetadataError(path.join(this.meta.dir, 'deviceset-metadata'), 'is missing although the base device exists');
      if (this.transactionId !== 0 && (await this.meta.loadTransaction()) === null) {
        throw new MetadataError(path.join(this.meta.dir, 'transaction-metadata'), `is missing although the pool is at transaction ${this.transactionId}`);
      }
    }
    if (setMeta !== null) this.setMeta = setMeta;
    this.ids = new DeviceIdBitmap(this.setMeta.nextDeviceId, this.env.maxDeviceId);

    // Every record is read (and validated) before anything is rolled back.
    const all = await this.meta.loadAllDevices();
    const rolledBack = await this.processPendingTransaction();
    for (const loaded of all) {
      // The record of a rolled-back transaction is gone now (or rewritten); any other record ahead of the pool
      // is ignored, as Docker does: its device was lost in a crash.
      if (rolledBack !== null && loaded.hash === rolledBack.hash && rolledBack.record === null) continue;
      const info = rolledBack !== null && loaded.hash === rolledBack.hash && rolledBack.record !== null ? rolledBack.record : loaded;
      if (info.transactionId > this.transactionId) continue;
      this.devices.set(info.hash, info);
      if (info.deviceId <= this.ids.max) this.ids.markUsed(info.deviceId);
    }
  }

  /**
   * Rolls back the transaction recorded in transaction-metadata when the pool never reached it: the device it
   * created (or was deleting) is deleted and its record removed, which finishes a delete and undoes a create.
   * Resolves to the device rolled back and its record now (null when removed); null when there was nothing to do.
   */
  private async processPendingTransaction(): Promise<{ hash: string; record: DeviceInfo | null } | null> {
    const t = await this.meta.loadTransaction();
    if (t === null || t.openTransactionId <= this.transactionId) return null;
    const name = this.dmName(t.deviceHash);
    // A device being created may have been activated (the base device during mkfs): it must go first.
    if ((await this.b.dmInfo(name)) !== null) await this.b.dmRemove(name).catch(() => undefined);
    if ((await this.b.dmInfo(name)) === null) await this.removeNode(name).catch(() => undefined);
    this.openTransactionId = this.transactionId;
    try {
      await this.pool.message(`delete ${t.deviceId}`);
    } catch (e) {
      // Still open somewhere: keep its record, marked for deferred deletion, rather than losing track of it.
      const rec = errCode(e) === 'EBUSY' ? await this.meta.loadDevice(t.deviceHash) : null;
      if (rec !== null && rec.deviceId === t.deviceId) {
        const record = { ...rec, deleted: true, transactionId: Math.min(rec.transactionId, this.transactionId) };
        await this.meta.saveDevice(record);
        return { hash: t.deviceHash, record };
      }
      // Otherwise it was never created, or is already deleted: nothing left to undo.
    }
    await this.meta.removeDevice(t.deviceHash);
    return { hash: t.deviceHash, record: null };
  }

  private async openTransaction(hash: string, deviceId: number): Promise<void> {
    this.openTransactionId = this.transactionId + 1;
    await this.meta.saveTransaction({ openTransactionId: this.openTransactionId, deviceHash: hash, deviceId });
  }

  /** Moves the pool's transaction id forward: from here on the operation counts as done. */
  private async closeTransaction(): Promise<void> {
    if (this.openTransactionId === this.transactionId) return;
    await this.pool.message(`set_transaction_id ${this.transactionId} ${this.openTransactionId}`);
    this.transactionId = this.openTransactionId;
  }

  /**
   * Writes deviceset-metadata. The id cursor in it is only a hint (ids in use are known from the records), so it is
   * written with the base device and at shutdown rather than after every create.
   */
  private async saveDeviceSetMetadata(): Promise<void> {
    this.setMeta.nextDeviceId = this.ids.nextId;
    await this.meta.saveDeviceSet(this.setMeta);
  }

  /** Device `hash` exists and is not waiting for a deferred deletion. */
  hasDevice(hash: string): boolean {
    const info = this.devices.get(hash);
    return info !== undefined && !info.deleted;
  }

  /** The record of `hash` (deleted ones included). */
  info(hash: string): DeviceInfo | undefined {
    return this.devices.get(hash);
  }

  /** Ids of live layer devices (not the base, not deferred-deleted ones). */
  layerIds(): string[] {
    return [...this.devices.values()].filter((d) => d.hash !== '' && !d.deleted).map((d) => d.hash);
  }

  /** Number of devices waiting for a deferred deletion. */
  get deletedCount(): number {
    let n = 0;
    for (const d of this.devices.values()) if (d.deleted) n++;
    return n;
  }

  // ---- free space ----

  /** Docker's poolHasFreeSpace: refuses a snapshot when less than dm.min_free_space of data or metadata is free. */
  private async checkFreeSpace(): Promise<void> {
    const st = await this.pool.status();
    if (st.mode === 'Fail' || st.mode === 'Error' || st.needsCheck || st.mode === 'ro') {
      throw new GraphdriverError(
        'ERR_DEVMAPPER_POOL',
        `devicemapper: thin-pool ${this.pool.name} is ${st.needsCheck ? 'marked needs_check' : st.mode === 'ro' ? 'read-only' : 'failed'}: its metadata must be checked (thin_check) before layers can be created`,
      );
    }
    if (st.mode === 'out_of_data_space') {
      throw new PoolSpaceError('data', `devicemapper: thin-pool ${this.pool.name} is out of data space (${humanSize(st.usedDataBlocks * this.pool.blockSize)} used of ${humanSize(st.totalDataBlocks * this.pool.blockSize)}); remove layers or grow dm.loopdatasize`);
    }
    const pct = this.opts.minFreeSpacePercent;
    if (pct === 0) return;
    const check = (space: 'data' | 'metadata', used: number, total: number): void => {
      const min = Math.max(1, Math.floor((total * pct) / 100));
      const free = total - used;
      if (free < min) {
        throw new PoolSpaceError(
          space,
          `devicemapper: thin-pool ${this.pool.name} has ${free} free ${space} blocks, less than the ${min} required by dm.min_free_space=${pct}%; ` +
            `free some space (remove layers) or change dm.min_free_space`,
        );
      }
    };
    check('data', st.usedDataBlocks, st.totalDataBlocks);
    check('metadata', st.usedMetadataBlocks, st.totalMetadataBlocks);
  }

  // ---- creating devices ----

  private allocateId(): number {
    const id = this.ids.allocate();
    if (id === null) throw new GraphdriverError('ERR_DEVMAPPER_POOL', `devicemapper: no free thin device id left (all ${this.ids.max + 1} are in use)`);
    return id;
  }

  /**
   * Creates thin device `hash` in a transaction: `create_thin` for a new device, `create_snap` of `origin`
   * otherwise (suspending the origin while it is active, so its filesystem is frozen at a consistent point).
   * An id the pool already knows (EEXIST, a leftover) is skipped. Callers hold the set lock (and the origin's
   * device lock).
   */
  private async createRegisterDevice(hash: string, size: number, origin: DeviceInfo | null): Promise<DeviceInfo> {
    const originName = origin === null ? null : this.dmName(origin.hash);
    for (;;) {
      const id = this.allocateId();
      await this.openTransaction(hash, id);
      let suspended = false;
      try {
        if (origin !== null) {
          const oi = await this.b.dmInfo(originName!);
          if (oi !== null && oi.liveTable && !oi.suspended) {
            await this.b.dmSuspend(originName!);
            suspended = true;
          }
          await this.pool.message(`create_snap ${id} ${origin.deviceId}`);
        } else {
          await this.pool.message(`create_thin ${id}`);
        }
      } catch (e) {
        if (errCode(e) === 'EEXIST') continue; // the id stays marked used: it belongs to something
        this.ids.markFree(id);
        this.openTransactionId = this.transactionId;
        throw e;
      } finally {
        if (suspended) await this.b.dmResume(originName!);
      }
      const info: DeviceInfo = { hash, deviceId: id, size, transactionId: this.openTransactionId, initialized: false, deleted: false };
      try {
        this.devices.set(hash, info);
        await this.meta.saveDevice(info);
        await this.closeTransaction();
      } catch (e) {
        // Undo here; were the process to die instead, the next start would roll the transaction back.
        this.devices.delete(hash);
        await this.meta.removeDevice(hash).catch(() => undefined);
        await this.pool.message(`delete ${id}`).catch(() => undefined);
        this.ids.markFree(id);
        this.openTransactionId = this.transactionId;
        throw e;
      }
      return info;
    }
  }

  /**
   * Creates layer device `hash` as a snapshot of `baseHash` ('' = the base device), of `size` bytes (0 = the
   * origin's size; larger sizes grow the new filesystem; smaller ones are refused).
   */
  async addDevice(hash: string, baseHash: string, size: number): Promise<void> {
    if (hash === '') throw new TypeError('devicemapper: a layer device needs an id');
    const origin = this.devices.get(baseHash);
    if (origin === undefined || origin.deleted) throw new LayerNotFoundError(baseHash === '' ? 'base device' : baseHash);
    await this.cleanupDeletedDevices();
    const old = this.devices.get(hash);
    if (old !== undefined) {
      if (!old.deleted) throw new LayerExistsError(hash);
      throw new LayerInUseError(hash, 'the device of an earlier layer with this id is still busy and waits for its deferred deletion');
    }
    if (size !== 0 && size < origin.size) {
      throw new InvalidOptionError(`devicemapper: a layer cannot be smaller than its parent: size ${humanSize(size)} < ${humanSize(origin.size)}`);
    }
    const newSize = size === 0 ? origin.size : size;
    const info = await this.devLocks.run(baseHash, () =>
      this.setLock.run('', async () => {
        await this.checkFreeSpace();
        return this.createRegisterDevice(hash, newSize, origin);
      }),
    );
    if (newSize > origin.size) {
      try {
        await this.devLocks.run(hash, () => this.growFs(info));
      } catch (e) {
        await this.deleteDevice(hash, true).catch(() => undefined);
        throw e;
      }
    }
  }

  // ---- base device ----

  /**
   * Docker's setupBaseImage: reuses an initialized base device (checking its UUID and growing it when dm.basesize
   * grew), deletes a half-made one, and otherwise creates, formats and records a new one.
   */
  private async setupBaseImage(): Promise<void> {
    const old = this.devices.get('');
    if (old !== undefined && old.initialized && !old.deleted) {
      this.baseFs = this.setMeta.baseDeviceFilesystem === 'xfs' ? 'xfs' : 'ext4';
      if (this.opts.fs !== null && this.opts.fs !== this.baseFs) {
        process.emitWarning(`devicemapper: the base device already holds ${this.baseFs}; dm.fs=${this.opts.fs} is ignored`);
      }
      await this.verifyBaseDeviceUuid(old);
      await this.checkGrowBaseDevice(old);
      return;
    }
    if (old !== undefined) await this.deleteDevice('', true);
    await this.createBaseImage();
  }

  private async createBaseImage(): Promise<void> {
    this.baseFs = this.opts.fs ?? chooseDefaultFs(this.opts.baseSize, this.env);
    const info = await this.setLock.run('', async () => {
      // The base device is created in one transaction; mkfs runs after it, and an interrupted mkfs leaves an
      // uninitialized base that the next start deletes and makes again.
      return this.createRegisterDevice('', this.opts.baseSize, null);
    });
    await this.devLocks.run('', async () => {
      try {
        await this.activate(info);
        await makeFilesystem(this.env.run, this.baseFs, this.devPath(''), this.opts.mkfsArgs, this.env.hasTool);
        const probe = await this.env.probe(this.devPath(''));
        if (probe === null) throw new GraphdriverError('ERR_DEVMAPPER_BASE', `devicemapper: mkfs.${this.baseFs} left no recognisable filesystem on ${this.devPath('')}`);
        info.initialized = true;
        await this.setLock.run('', async () => {
          await this.meta.saveDevice(info);
          this.setMeta.baseDeviceUuid = probe.uuid;
          this.setMeta.baseDeviceFilesystem = probe.type;
          await this.saveDeviceSetMetadata();
        });
      } finally {
        await this.deactivate(info, false);
      }
    });
  }

  /** The base device's filesystem UUID must be the one recorded: otherwise this is not the pool it was made in. */
  private async verifyBaseDeviceUuid(info: DeviceInfo): Promise<void> {
    await this.devLocks.run('', async () => {
      try {
        await this.activate(info);
        const probe = await this.env.probe(this.devPath(''));
        if (probe === null) {
          throw new GraphdriverError('ERR_DEVMAPPER_BASE', `devicemapper: the base device ${this.dmName('')} holds no filesystem (expected ${this.baseFs})`);
        }
        if (this.setMeta.baseDeviceUuid === '') {
          // Records from before the UUID was kept: take the current one, as Docker does.
          this.setMeta.baseDeviceUuid = probe.uuid;
          this.setMeta.baseDeviceFilesystem = probe.type;
          await this.setLock.run('', () => this.saveDeviceSetMetadata());
          return;
        }
        if (probe.uuid !== this.setMeta.baseDeviceUuid) {
          throw new GraphdriverError(
            'ERR_DEVMAPPER_UUID_MISMATCH',
            `devicemapper: the base device's filesystem UUID ${probe.uuid} does not match the recorded ${this.setMeta.baseDeviceUuid} ` +
              `(in ${path.join(this.meta.dir, 'deviceset-metadata')}): possibly a different thin-pool than last time; nothing was changed`,
          );
        }
        this.baseFs = probe.type;
      } finally {
        await this.deactivate(info, false);
      }
    });
  }

  /** Docker's checkGrowBaseDeviceFS: an explicit dm.basesize larger than the base device grows it; smaller is an error. */
  private async checkGrowBaseDevice(info: DeviceInfo): Promise<void> {
    if (!this.opts.baseSizeSet || this.opts.baseSize === info.size) return;
    if (this.opts.baseSize < info.size) {
      throw new InvalidOptionError(`devicemapper: dm.basesize cannot be smaller than the existing base device (${humanSize(info.size)}; asked for ${humanSize(this.opts.baseSize)})`);
    }
    // Grown first, recorded after: a crash in between only means growing (a no-op) again next time.
    const grown = { ...info, size: this.opts.baseSize };
    await this.devLocks.run('', () => this.growFs(grown));
    info.size = grown.size;
    await this.setLock.run('', () => this.meta.saveDevice(info));
  }

  /**
   * Grows the filesystem of `info` to its recorded size: the device is (re)activated with the new size, mounted
   * on a private directory, and resize2fs / xfs_growfs run online. Callers hold the device lock.
   */
  private async growFs(info: DeviceInfo): Promise<void> {
    const wasActive = (await this.b.dmInfo(this.dmName(info.hash))) !== null;
    await this.activate(info);
    const mp = path.join(this.home, 'mnt', `.growfs-${createHash('sha256').update(info.hash).digest('hex').slice(0, 16)}`);
    await fs.mkdir(mp, { recursive: true, mode: 0o700 });
    try {
      const { flags, data } = this.mountArgs('');
      await this.b.mount(this.devPath(info.hash), mp, this.baseFs, flags, data);
      try {
        await growFilesystem(this.env.run, this.baseFs, this.devPath(info.hash), mp);
      } finally {
        await this.b.umount(mp, 0).catch(() => this.b.umount(mp, UmountFlags.MNT_DETACH));
      }
    } finally {
      await fs.rmdir(mp).catch(() => undefined);
      if (!wasActive) await this.deactivate(info, false);
    }
  }

  // ---- activation ----

  private thinTable(info: DeviceInfo): { start: number; length: number; type: string; params: string } {
    return { start: 0, length: Math.floor(info.size / SECTOR), type: 'thin', params: `${this.pool.devString} ${info.deviceId}` };
  }

  /**
   * Activates thin device `info` (`thin <pool> <id>`), or takes over an active one: a pending deferred removal is
   * cancelled, and a table of another size (the device was grown) is replaced. Ensures the /dev/mapper node.
   * Callers hold the device lock.
   */
  private async activate(info: DeviceInfo): Promise<DmInfo> {
    const b = this.b;
    const name = this.dmName(info.hash);
    let di = await b.dmInfo(name);
    if (di !== null && di.deferredRemove) {
      await this.cancelDeferredRemoval(name);
      di = await b.dmInfo(name);
    }
    const want = this.thinTable(info);
    if (di !== null && di.liveTable) {
      const live = (await b.dmTable(name))[0];
      if (live === undefined || live.type !== 'thin' || live.params.trim() !== want.params) {
        throw new GraphdriverError('ERR_DEVICE_BUSY', `devicemapper: device ${name} is active with another table (${live ? `${live.type} ${live.params}` : 'none'}); expected thin ${want.params}`);
      }
      if (live.length !== want.length) {
        await b.dmLoad(name, [want]);
        await b.dmSuspend(name);
        di = await b.dmResume(name);
      }
      await this.ensureNode(name, di.dev);
      return di;
    }
    if (di === null) di = await b.dmCreate(name);
    try {
      await b.dmLoad(name, [want]);
      di = await b.dmResume(name);
    } catch (e) {
      await b.dmRemove(name).catch(() => undefined);
      throw e;
    }
    await this.ensureNode(name, di.dev);
    return di;
  }

  /** Docker's cancelDeferredRemoval: `@cancel_deferred_remove`, retried while busy; a device already gone is fine. */
  private async cancelDeferredRemoval(name: string): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        await this.b.dmMessage(name, 0, '@cancel_deferred_remove');
        return;
      } catch (e) {
        if (errCode(e) === 'ENXIO') return;
        if (errCode(e) !== 'EBUSY' || i + 1 >= Math.min(100, this.env.removeRetries)) throw e;
        await sleep(this.env.retryDelayMs);
      }
    }
  }

  /** Docker's removeDevice: DM_DEV_REMOVE, retried while the kernel says EBUSY (a closing mount, a scanning tool). */
  private async removeWithRetries(name: string): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        await this.b.dmRemove(name);
        return;
      } catch (e) {
        const c = errCode(e);
        if (c === 'ENXIO') return;
        if (c !== 'EBUSY') throw e;
        if (i + 1 >= this.env.removeRetries) {
          throw new DeviceBusyError(name, `devicemapper: device ${name} is still busy after ${this.env.removeRetries} removal attempts (mounted elsewhere or held open?)`, { cause: e });
        }
        await sleep(this.env.retryDelayMs);
      }
    }
  }

  /**
   * Removes the device of `info` when it is active: at once with retries, or as a deferred removal (the kernel
   * removes it when its last user closes it). Callers hold the device lock.
   */
  private async deactivate(info: DeviceInfo, deferred: boolean): Promise<void> {
    const name = this.dmName(info.hash);
    const di = await this.b.dmInfo(name);
    if (di === null) {
      await this.removeNode(name);
      return;
    }
    if (deferred) {
      try {
        await this.b.dmRemove(name, { deferred: true });
      } catch (e) {
        if (errCode(e) !== 'ENXIO') throw e;
      }
      // Removed at once when nobody had it open; otherwise the node stays for the holder until then.
      if ((await this.b.dmInfo(name)) === null) await this.removeNode(name);
      return;
    }
    await this.removeWithRetries(name);
    await this.removeNode(name);
  }

  // ---- deleting devices ----

  /**
   * Docker's issueDiscard: hands the device's blocks back to the pool, and through the loop device to the sparse
   * file, before the device is deleted. Skipped while something holds the device open. Callers hold the device lock.
   */
  private async issueDiscard(info: DeviceInfo): Promise<void> {
    const di = await this.activate(info);
    if (di.openCount !== 0) return;
    const bytes = Math.floor(info.size / SECTOR) * SECTOR;
    if (bytes > 0) await this.b.blkDiscard(this.devPath(info.hash), 0, bytes);
  }

  /**
   * Deletes device `hash`: discard (dm.blkdiscard), deactivation, then the `delete` message in a transaction.
   * With deferred deletion and without `sync`, a device the kernel still finds busy is marked deleted instead
   * and deleted later by {@link cleanupDeletedDevices}.
   */
  async deleteDevice(hash: string, sync: boolean): Promise<void> {
    const info = this.devices.get(hash);
    if (info === undefined) throw new LayerNotFoundError(hash === '' ? 'base device' : hash);
    await this.devLocks.run(hash, async () => {
      // Someone else (a concurrent reaping of deferred deletions) got here first.
      if (this.devices.get(hash) !== info) return;
      if (this.opts.blkDiscard) {
        try {
          await this.issueDiscard(info);
        } catch (e) {
          // Only an optimisation: the delete below still frees the pool's blocks.
          process.emitWarning(`devicemapper: discarding ${this.dmName(hash)} before deleting it failed: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
      // With deferred removal but without deferred deletion the device must really be gone before the delete
      // message, so it is removed synchronously (busy-waiting on short-lived holders), as Docker does.
      await this.deactivate(info, this.opts.deferredRemoval && this.opts.deferredDeletion);
      await this.setLock.run('', () => this.deleteTransaction(info, sync));
    });
  }

  private async deleteTransaction(info: DeviceInfo, sync: boolean): Promise<void> {
    await this.openTransaction(info.hash, info.deviceId);
    let busy = false;
    try {
      try {
        await this.pool.message(`delete ${info.deviceId}`);
      } catch (e) {
        if (sync || !this.opts.deferredDeletion || errCode(e) !== 'EBUSY') throw e;
        busy = true;
      }
      if (!busy) {
        await this.meta.removeDevice(info.hash);
        this.devices.delete(info.hash);
        this.ids.markFree(info.deviceId);
      } else if (!info.deleted) {
        info.deleted = true;
        await this.meta.saveDevice(info);
      }
    } finally {
      await this.closeTransaction();
    }
  }

  /** Deletes the devices whose deletion was deferred, where the kernel now allows it (failures are left for later). */
  async cleanupDeletedDevices(): Promise<void> {
    for (const info of [...this.devices.values()]) {
      if (!info.deleted) continue;
      // A device still open is still busy: do not even try.
      const di = await this.b.dmInfo(this.dmName(info.hash)).catch(() => null);
      if (di !== null && di.openCount > 0) continue;
      await this.deleteDevice(info.hash, false).catch(() => undefined);
    }
  }

  // ---- mounting ----

  private mountArgs(mountLabel: string | undefined, extra: readonly string[] = []): { flags: number; data: string | null } {
    const options = [...(this.baseFs === 'xfs' ? ['nouuid'] : []), ...this.opts.mountOptions, ...extra];
    const { flags, data } = splitMountFlags(options);
    const joined = formatMountLabel(data.join(','), mountLabel);
    return { flags, data: joined === '' ? null : joined };
  }

  /** Activates device `hash` and mounts its filesystem on `mountPath` (xfs with nouuid, plus dm.mountopt). */
  async mountDevice(hash: string, mountPath: string, mountLabel?: string, extraOptions: readonly string[] = []): Promise<void> {
    const info = this.devices.get(hash);
    if (info === undefined) throw new LayerNotFoundError(hash);
    if (info.deleted) throw new LayerNotFoundError(hash);
    await this.devLocks.run(hash, async () => {
      await this.activate(info);
      const { flags, data } = this.mountArgs(mountLabel, extraOptions);
      try {
        await this.b.mount(this.devPath(hash), mountPath, this.baseFs, flags, data);
      } catch (e) {
        await this.deactivate(info, false).catch(() => undefined);
        throw e;
      }
    });
  }

  /**
   * Unmounts `mountPath` and deactivates device `hash` (deferred with dm.use_deferred_removal). A filesystem still
   * busy is detached lazily, so the device removal then waits (retries) or is deferred.
   */
  async unmountDevice(hash: string, mountPath: string): Promise<void> {
    const info = this.devices.get(hash);
    if (info === undefined) throw new LayerNotFoundError(hash);
    await this.devLocks.run(hash, async () => {
      try {
        await this.b.umount(mountPath, 0);
      } catch (e) {
        const c = errCode(e);
        if (c === 'EBUSY') await this.b.umount(mountPath, UmountFlags.MNT_DETACH);
        else if (c !== 'EINVAL' && c !== 'ENOENT') throw e;
      }
      await this.deactivate(info, this.opts.deferredRemoval);
    });
  }

  // ---- status and shutdown ----

  private async underlyingAvailable(file: string | null): Promise<number> {
    if (file === null) return Number.POSITIVE_INFINITY;
    try {
      const s = await this.b.statfs(path.dirname(file));
      return s.bavail * s.bsize;
    } catch {
      return Number.POSITIVE_INFINITY;
    }
  }

  async status(): Promise<DeviceSetStatus> {
    const st: PoolStatus = await this.pool.status();
    const bs = this.pool.blockSize;
    const data = { used: st.usedDataBlocks * bs, total: st.totalDataBlocks * bs, available: 0 };
    data.available = Math.min(data.total - data.used, await this.underlyingAvailable(this.pool.dataFile));
    const metadata = { used: st.usedMetadataBlocks * METADATA_BLOCK_SIZE, total: st.totalMetadataBlocks * METADATA_BLOCK_SIZE, available: 0 };
    metadata.available = Math.min(metadata.total - metadata.used, await this.underlyingAvailable(this.pool.metadataFile));
    return {
      poolName: this.pool.name,
      blockSize: bs,
      baseDeviceSize: this.devices.get('')?.size ?? this.opts.baseSize,
      baseFs: this.baseFs,
      dataFile: this.pool.dataLoop ?? '',
      metadataFile: this.pool.metadataLoop ?? '',
      dataLoopback: this.pool.dataFile ?? '',
      metadataLoopback: this.pool.metadataFile ?? '',
      data,
      metadata,
      minFreeSpace: Math.floor((st.totalDataBlocks * this.opts.minFreeSpacePercent) / 100) * bs,
      deferredRemoveEnabled: this.opts.deferredRemoval,
      deferredDeleteEnabled: this.opts.deferredDeletion,
      deferredDeletedDeviceCount: this.deletedCount,
      poolMode: st.mode,
    };
  }

  /**
   * Docker's Shutdown: unmounts everything under `<home>/mnt`, removes every active device of this set (deferred
   * where configured), then the pool when this process activated it, and lets go of the loop devices.
   */
  async shutdown(): Promise<void> {
    const failures: unknown[] = [];
    const mnt = path.join(this.home, 'mnt');
    let entries: string[] = [];
    try {
      entries = await fs.readdir(mnt);
    } catch (e) {
      if (errCode(e) !== 'ENOENT') failures.push(e);
    }
    for (const name of entries) {
      const m = path.join(mnt, name);
      try {
        if (!(await this.b.isMountpoint(m))) continue;
        // Anything mounted below the layer (by its user) makes a plain umount fail: then detach the whole tree.
        await this.b.umount(m, 0).catch(() => this.b.umount(m, UmountFlags.MNT_DETACH));
      } catch (e) {
        failures.push(e);
      }
    }
    const ours = (await this.b.dmList()).filter((d) => d.name.startsWith(`${this.prefix}-`) && d.name !== this.pool.name);
    for (const d of ours) {
      await this.devLocks
        .run(d.name, async () => {
          if (this.opts.deferredRemoval) await this.b.dmRemove(d.name, { deferred: true });
          else await this.removeWithRetries(d.name);
          if ((await this.b.dmInfo(d.name)) === null) await this.removeNode(d.name);
        })
        .catch((e: unknown) => {
          if (errCode(e) !== 'ENXIO') failures.push(e);
        });
    }
    if (this.setMeta.baseDeviceUuid !== '') {
      await this.setLock.run('', () => this.saveDeviceSetMetadata()).catch((e: unknown) => failures.push(e));
    }
    if (this.pool.dataFile !== null) await this.pool.close().catch((e: unknown) => failures.push(e));
    for (const name of [...this.nodes]) {
      if ((await this.b.dmInfo(name).catch(() => null)) === null) await this.removeNode(name).catch(() => undefined);
    }
    if (failures.length > 0) {
      const first = failures[0];
      throw new GraphdriverError('ERR_DEVMAPPER_SHUTDOWN', `devicemapper: cleanup left ${failures.length} problem(s); first: ${first instanceof Error ? first.message : String(first)}`, { cause: first });
    }
  }
}

export { MAX_DEVICE_ID };
