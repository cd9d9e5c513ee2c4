/**
 * The thin pool: either built by this driver from two sparse files on loop devices
 * (`<home>/devicemapper/{data,metadata}`), or an existing pool named with `dm.thinpooldev`. Everything goes
 * through the addon's device-mapper and loop ioctls; no dmsetup, libdevmapper or lvm is involved.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { GraphdriverError } from '../../errors';
import { major, minor } from '../../native/constants';
import type { DmInfo, NativeBindings } from '../../native/types';
import { InvalidOptionError, NotSupportedError } from '../errors';
import { errCode } from '../fs-util';
import { humanSize } from './human-size';

const SECTOR = 512;
/** Thin-pool metadata blocks are 4 KiB. */
export const METADATA_BLOCK_SIZE = 4096;
/** Docker's low water mark (in data blocks); only dmeventd/lvm act on it. */
const LOW_WATER_MARK = 32768;

/** A thin-pool status line (DM_TABLE_STATUS), see the kernel's thin-provisioning.rst. */
export interface PoolStatus {
  transactionId: number;
  usedMetadataBlocks: number;
  totalMetadataBlocks: number;
  usedDataBlocks: number;
  totalDataBlocks: number;
  /** 'rw', 'ro', 'out_of_data_space', or 'Fail' / 'Error' when the pool has failed. */
  mode: string;
  /** The metadata needs thin_check before the pool can be used read-write again. */
  needsCheck: boolean;
}

/** Parses a thin-pool status line; a failed pool ("Fail") parses with mode 'Fail' and zero counters. */
export function parsePoolStatus(params: string): PoolStatus {
  const f = params.trim().split(/\s+/);
  if (f.length === 1 && (f[0] === 'Fail' || f[0] === 'Error')) {
    return { transactionId: 0, usedMetadataBlocks: 0, totalMetadataBlocks: 0, usedDataBlocks: 0, totalDataBlocks: 0, mode: f[0], needsCheck: false };
  }
  const frac = (s: string | undefined): [number, number] | null => {
    const m = s === undefined ? null : /^(\d+)\/(\d+)$/.exec(s);
    return m ? [Number(m[1]), Number(m[2])] : null;
  };
  const meta = frac(f[1]);
  const data = frac(f[2]);
  if (!/^\d+$/.test(f[0] ?? '') || meta === null || data === null) {
    throw new GraphdriverError('ERR_DEVMAPPER_POOL', `devicemapper: cannot parse thin-pool status ${JSON.stringify(params)}`);
  }
  return {
    transactionId: Number(f[0]),
    usedMetadataBlocks: meta[0],
    totalMetadataBlocks: meta[1],
    usedDataBlocks: data[0],
    totalDataBlocks: data[1],
    mode: f[4] ?? 'rw',
    needsCheck: f.includes('needs_check'),
  };
}

/** `major:minor` of a dev_t, as device-mapper tables name devices. */
export function devString(dev: number): string {
  return `${major(dev)}:${minor(dev)}`;
}

/** Settings for a loop-file pool. */
export interface LoopbackSpec {
  /** `<home>/devicemapper`. */
  dir: string;
  dataSize: number;
  /** The size was given explicitly: a smaller existing file is then an error rather than kept. */
  dataSizeSet: boolean;
  metadataSize: number;
  metadataSizeSet: boolean;
  /** Data block size in bytes. */
  blockSize: number;
}

/** The pool this driver works with. */
export class ThinPool {
  /** Loop devices of the data and metadata files (null for dm.thinpooldev). */
  dataLoop: string | null = null;
  metadataLoop: string | null = null;
  /** The sparse files (null for dm.thinpooldev). */
  dataFile: string | null = null;
  metadataFile: string | null = null;
  /** This process activated the pool (and so removes it at close). */
  activatedHere = false;
  /** The data and metadata files were created now (a brand-new pool). */
  createdFiles = false;

  private constructor(
    private readonly b: NativeBindings,
    private readonly sysDir: string,
    readonly name: string,
    /** dev_t of the pool device, for thin tables. */
    public dev: number,
    /** Data block size in 512-byte sectors. */
    public blockSectors: number,
  ) {}

  /** The pool as thin tables reference it. */
  get devString(): string {
    return devString(this.dev);
  }

  /** Data block size in bytes. */
  get blockSize(): number {
    return this.blockSectors * SECTOR;
  }

  /** Opens the pool named by dm.thinpooldev, which must exist and be a thin-pool. */
  static async openExisting(b: NativeBindings, name: string, sysDir = '/sys'): Promise<ThinPool> {
    const info = await b.dmInfo(name);
    if (info === null || !info.liveTable) {
      throw new InvalidOptionError(`devicemapper: dm.thinpooldev=${name}: no active device-mapper device of that name`);
    }
    const table = await b.dmTable(name);
    const t = table[0];
    if (table.length !== 1 || t === undefined || t.type !== 'thin-pool') {
      throw new InvalidOptionError(`devicemapper: dm.thinpooldev=${name} is not a thin-pool (table: ${table.map((x) => x.type).join(', ') || 'empty'})`);
    }
    const blockSectors = Number(t.params.trim().split(/\s+/)[2]);
    if (!Number.isSafeInteger(blockSectors) || blockSectors <= 0) {
      throw new GraphdriverError('ERR_DEVMAPPER_POOL', `devicemapper: cannot read the block size of thin-pool ${name} from ${JSON.stringify(t.params)}`);
    }
    return new ThinPool(b, sysDir, name, info.dev, blockSectors);
  }

  /**
   * Creates or reuses the sparse files, attaches them to loop devices and activates the thin-pool `name` on
   * them, or adopts the pool when it is still active (a previous process ended without cleanup). Growing a file
   * grows the pool; shrinking one is refused.
   */
  static async openLoopback(b: NativeBindings, name: string, spec: LoopbackSpec, sysDir = '/sys'): Promise<ThinPool> {
    await fs.mkdir(spec.dir, { recursive: true, mode: 0o700 });
    const dataFile = path.join(spec.dir, 'data');
    const metadataFile = path.join(spec.dir, 'metadata');
    const dataNew = await ensureImage(b, dataFile, spec.dataSize, spec.dataSizeSet, 'dm.loopdatasize');
    const metaNew = await ensureImage(b, metadataFile, spec.metadataSize, spec.metadataSizeSet, 'dm.loopmetadatasize');
    const blockSectors = spec.blockSize / SECTOR;

    const existing = await b.dmInfo(name);
    if (existing !== null && existing.liveTable) {
      const pool = new ThinPool(b, sysDir, name, existing.dev, blockSectors);
      pool.dataFile = dataFile;
      pool.metadataFile = metadataFile;
      await pool.adopt();
      await pool.growIfNeeded(dataFile);
      return pool;
    }
    // A pool device without a live table is the remains of a failed activation: remove it and start over.
    if (existing !== null) await b.dmRemove(name).catch(() => undefined);

    const pool = new ThinPool(b, sysDir, name, 0, blockSectors);
    pool.dataFile = dataFile;
    pool.metadataFile = metadataFile;
    pool.createdFiles = dataNew && metaNew;
    let attached: string[] = [];
    try {
      pool.dataLoop = (await attach(b, dataFile)).device;
      attached.push(pool.dataLoop);
      pool.metadataLoop = (await attach(b, metadataFile)).device;
      attached.push(pool.metadataLoop);
      const dataBytes = (await fs.stat(dataFile)).size;
      const info = await pool.activate(dataBytes);
      pool.dev = info.dev;
      pool.activatedHere = true;
      attached = [];
      return pool;
    } finally {
      for (const dev of attached) await b.loopDetach(dev).catch(() => undefined);
    }
  }

  /** Creates and resumes the pool device on the attached loop devices. */
  private async activate(dataBytes: number): Promise<DmInfo> {
    const b = this.b;
    const metaDev = await this.loopDevNumber(this.metadataLoop!);
    const dataDev = await this.loopDevNumber(this.dataLoop!);
    const created = await b.dmCreate(this.name);
    try {
      await b.dmLoad(this.name, [this.tableFor(dataBytes, metaDev, dataDev)]);
      return await b.dmResume(this.name);
    } catch (e) {
      await b.dmRemove(this.name).catch(() => undefined);
      if (errCode(e) === 'EINVAL' && !(await pathExists(`/sys/module/dm_thin_pool`))) {
        throw new NotSupportedError('devicemapper: the kernel has no thin-pool target (dm-thin-pool)', { cause: e });
      }
      throw new GraphdriverError(
        'ERR_DEVMAPPER_POOL',
        `devicemapper: cannot activate thin-pool ${this.name} on ${this.dataFile} and ${this.metadataFile} (device ${created.major}:${created.minor}): ${e instanceof Error ? e.message : String(e)}` +
          ' (a pool created with another dm.blocksize cannot be opened with this one; the kernel log says more)',
        { cause: e },
      );
    }
  }

  /**
   * The thin-pool table: `<metadata dev> <data dev> <block sectors> <low water mark> 2 skip_block_zeroing
   * error_if_no_space`. Block zeroing is skipped as Docker does (every layer is a filesystem that never reads
   * blocks it did not write); a full pool fails writes at once instead of queueing them for a minute, since no
   * one extends a loop-file pool behind the driver's back.
   */
  private tableFor(dataBytes: number, metaDev: string, dataDev: string): { start: number; length: number; type: string; params: string } {
    const blocks = Math.floor(dataBytes / this.blockSize);
    if (blocks < 1) throw new InvalidOptionError(`devicemapper: the data file (${humanSize(dataBytes)}) is smaller than one pool block (${humanSize(this.blockSize)})`);
    return {
      start: 0,
      length: blocks * this.blockSectors,
      type: 'thin-pool',
      params: `${metaDev} ${dataDev} ${this.blockSectors} ${LOW_WATER_MARK} 2 skip_block_zeroing error_if_no_space`,
    };
  }

  /** Finds the loop devices of an active pool from its table and checks they hold our files. */
  private async adopt(): Promise<void> {
    const table = await this.b.dmTable(this.name);
    const t = table[0];
    if (table.length !== 1 || t === undefined || t.type !== 'thin-pool') {
      throw new GraphdriverError('ERR_DEVMAPPER_POOL', `devicemapper: device ${this.name} exists but is not a thin-pool`);
    }
    const [meta, data, block] = t.params.trim().split(/\s+/);
    if (Number(block) !== this.blockSectors) {
      throw new InvalidOptionError(
        `devicemapper: thin-pool ${this.name} has ${humanSize(Number(block) * SECTOR)} blocks, not the ${humanSize(this.blockSize)} of dm.blocksize`,
      );
    }
    this.metadataLoop = await this.loopOf(meta ?? '', this.metadataFile!);
    this.dataLoop = await this.loopOf(data ?? '', this.dataFile!);
  }

  /** The /dev/loopN behind `maj:min`, checked to be backed by `file`. */
  private async loopOf(majMin: string, file: string): Promise<string> {
    let name: string;
    try {
      name = path.basename(await fs.readlink(path.join(this.sysDir, 'dev', 'block', majMin)));
    } catch (e) {
      throw new GraphdriverError('ERR_DEVMAPPER_POOL', `devicemapper: thin-pool ${this.name} uses device ${majMin}, which is unknown to ${this.sysDir}`, { cause: e });
    }
    const device = path.join(this.loopDir, name);
    let backing = '';
    try {
      backing = (await this.b.loopInfo(device)).backingFile;
    } catch {
      backing = '';
    }
    const want = await fs.realpath(file);
    if (backing !== want && backing !== file) {
      throw new GraphdriverError(
        'ERR_DEVMAPPER_POOL',
        `devicemapper: thin-pool ${this.name} is active on ${device} (${backing || 'not a loop device'}), not on ${file}: another pool of the same name is in the way`,
      );
    }
    return device;
  }

  /** Picks up grown data/metadata files of an active pool (loop capacity, then a table reload). */
  private async growIfNeeded(dataFile: string): Promise<void> {
    const b = this.b;
    const want = Math.floor((await fs.stat(dataFile)).size / this.blockSize) * this.blockSectors;
    const metaFileSize = (await fs.stat(this.metadataFile!)).size;
    const metaLoopSize = await b.blockDeviceSize(this.metadataLoop!);
    const table = await b.dmTable(this.name);
    const t = table[0]!;
    if (t.length === want && metaLoopSize === metaFileSize) return;
    if (t.length > want) {
      throw new InvalidOptionError(`devicemapper: thin-pool ${this.name} is larger than its data file ${dataFile}; a pool cannot shrink`);
    }
    await b.loopSetCapacity(this.dataLoop!);
    await b.loopSetCapacity(this.metadataLoop!);
    const metaDev = await this.loopDevNumber(this.metadataLoop!);
    const dataDev = await this.loopDevNumber(this.dataLoop!);
    await b.dmLoad(this.name, [this.tableFor((await fs.stat(dataFile)).size, metaDev, dataDev)]);
    // The pool notices bigger data and metadata devices when it resumes.
    await b.dmSuspend(this.name);
    await b.dmResume(this.name);
  }

  /** Where loop device nodes live: the directory of the nodes loopAttach returned, /dev otherwise. */
  private get loopDir(): string {
    return this.dataLoop !== null ? path.dirname(this.dataLoop) : this.metadataLoop !== null ? path.dirname(this.metadataLoop) : '/dev';
  }

  /** `major:minor` of a loop device, from sysfs (`/sys/block/loopN/dev`). */
  private async loopDevNumber(device: string): Promise<string> {
    const file = path.join(this.sysDir, 'block', path.basename(device), 'dev');
    const text = await fs.readFile(file, 'utf8').catch(() => '');
    const m = /^(\d+):(\d+)\s*$/.exec(text);
    if (!m) throw new GraphdriverError('ERR_DEVMAPPER_POOL', `devicemapper: cannot read the device number of ${device} from ${file}`);
    return `${m[1]}:${m[2]}`;
  }

  /** The pool's status line. */
  async status(): Promise<PoolStatus> {
    const st = await this.b.dmStatus(this.name);
    const t = st[0];
    if (t === undefined || t.type !== 'thin-pool') {
      throw new GraphdriverError('ERR_DEVMAPPER_POOL', `devicemapper: ${this.name} reports no thin-pool status`);
    }
    return parsePoolStatus(t.params);
  }

  /** Sends a message (`create_thin`, `create_snap`, `delete`, `set_transaction_id`) to the pool. */
  message(msg: string): Promise<string> {
    return this.b.dmMessage(this.name, 0, msg);
  }

  /**
   * Removes the pool when this process activated it (not while thin devices still use it: those are deferred
   * removals still held open; the pool then stays) and lets go of the loop devices, which detach themselves
   * once the pool is gone (autoclear).
   */
  async close(): Promise<void> {
    if (this.dataFile === null) return;
    try {
      await this.b.dmRemove(this.name);
    } catch (e) {
      if (errCode(e) !== 'ENXIO' && errCode(e) !== 'EBUSY') throw e;
    }
    for (const dev of [this.dataLoop, this.metadataLoop]) {
      if (dev !== null) await this.b.loopDetach(dev).catch(() => undefined);
    }
    this.dataLoop = null;
    this.metadataLoop = null;
    this.activatedHere = false;
  }
}

async function pathExists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}

async function attach(b: NativeBindings, file: string): Promise<{ device: string }> {
  try {
    return await b.loopAttach(file);
  } catch (e) {
    if (errCode(e) === 'ENOENT' && (e as { path?: string }).path === '/dev/loop-control') {
      throw new NotSupportedError('devicemapper: loop devices are not available (/dev/loop-control is missing)', { cause: e });
    }
    throw e;
  }
}

/**
 * Docker's ensureImage: creates `file` sparse at `size`, or grows an existing smaller one. An existing larger file
 * is kept when the size is the default, and refused when the size was set explicitly (a pool cannot shrink).
 * Resolves to true when the file was created now.
 */
async function ensureImage(b: NativeBindings, file: string, size: number, explicit: boolean, option: string): Promise<boolean> {
  let current: number;
  try {
    const st = await fs.stat(file);
    if (!st.isFile()) throw new GraphdriverError('ERR_DEVMAPPER_POOL', `devicemapper: ${file} is not a regular file`);
    current = st.size;
  } catch (e) {
    if (errCode(e) !== 'ENOENT') throw e;
    await b.truncate(file, size, true);
    return true;
  }
  if (current < size) await b.truncate(file, size);
  else if (current > size && explicit) {
    throw new InvalidOptionError(
      `devicemapper: ${option}=${humanSize(size)} is smaller than the existing ${file} (${humanSize(current)}); a pool cannot shrink (use at least ${current} bytes, or start with an empty home)`,
    );
  }
  return false;
}
