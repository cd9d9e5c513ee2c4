/**
 * The driver's own records, in Docker's layout and JSON format under `<home>/metadata/`:
 *
 * - `<id>` per layer device (`base` for the base device): `{"device_id":N,"size":B,"transaction_id":T,
 *   "initialized":bool,"deleted":bool}`;
 * - `deviceset-metadata`: `{"next_device_id":N,"base_device_uuid":"...","base_device_filesystem":"ext4"}`;
 * - `transaction-metadata`: `{"open_transaction_id":T,"device_hash":"<id>","device_id":N}`, the device a create
 *   or delete is working on. When the pool's transaction id is behind `open_transaction_id` at the next start,
 *   that operation did not finish and is rolled back (the device deleted, its record removed).
 *
 * Every file is replaced atomically (temp file, fsync, rename, directory fsync). A record that cannot be read is
 * a {@link MetadataError} naming the file: nothing is deleted or rewritten on the strength of a corrupt record.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { GraphdriverError } from '../../errors';
import { atomicWriteFile } from '../../storage/fsutil';
import { checkLayerId } from '../layer-id';
import { MAX_DEVICE_ID } from './device-id-bitmap';

/** One thin device as recorded. `hash` is the layer id, '' for the base device. */
export interface DeviceInfo {
  hash: string;
  deviceId: number;
  /** Virtual size in bytes. */
  size: number;
  /** Pool transaction in which the device was created. */
  transactionId: number;
  /** The device holds a usable filesystem (the base device only becomes initialized after mkfs). */
  initialized: boolean;
  /** Marked for deferred deletion: the kernel refused the delete because the device was busy. */
  deleted: boolean;
}

/** `deviceset-metadata`. */
export interface DeviceSetMetadata {
  nextDeviceId: number;
  baseDeviceUuid: string;
  baseDeviceFilesystem: string;
}

/** `transaction-metadata`. */
export interface TransactionMetadata {
  openTransactionId: number;
  deviceHash: string;
  deviceId: number;
}

export const DEVICE_SET_FILE = 'deviceset-metadata';
export const TRANSACTION_FILE = 'transaction-metadata';
const BASE_FILE = 'base';
/** Layer ids that would collide with the fixed file names are stored as `@<id>` (never a valid id itself). */
const RESERVED = new Set([BASE_FILE, DEVICE_SET_FILE, TRANSACTION_FILE]);

/**
 * A metadata file is missing, unreadable or not what this driver writes.
 *
 * @example
 * ```ts
 * import { DevMapperDriver, MetadataError } from 'graphdriver';
 *
 * try {
 *   await DevMapperDriver.init('/var/lib/graphdriver/devicemapper');
 * } catch (e) {
 *   if (!(e instanceof MetadataError)) throw e; // e.code === 'ERR_DEVMAPPER_METADATA'
 *   console.error(`repair or restore ${e.file}; nothing was changed`);
 * }
 * ```
 */
export class MetadataError extends GraphdriverError {
  constructor(
    readonly file: string,
    problem: string,
    options?: { cause?: unknown },
  ) {
    super('ERR_DEVMAPPER_METADATA', `devicemapper: metadata file ${file} ${problem}; nothing was changed (repair or restore it, or remove the driver home to start over)`, options);
  }
}

function isValidId(s: string): boolean {
  try {
    checkLayerId(s);
    return true;
  } catch {
    return false;
  }
}

const isUint = (v: unknown, max = Number.MAX_SAFE_INTEGER): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;

/** Validates a parsed per-device record; the problem as text, or null when it is fine. */
function deviceProblem(j: Record<string, unknown>): string | null {
  if (!isUint(j.device_id, MAX_DEVICE_ID)) return `has an invalid device_id ${JSON.stringify(j.device_id)}`;
  if (!isUint(j.size)) return `has an invalid size ${JSON.stringify(j.size)}`;
  if (!isUint(j.transaction_id)) return `has an invalid transaction_id ${JSON.stringify(j.transaction_id)}`;
  if (j.initialized !== undefined && typeof j.initialized !== 'boolean') return 'has a non-boolean "initialized"';
  if (j.deleted !== undefined && typeof j.deleted !== 'boolean') return 'has a non-boolean "deleted"';
  return null;
}

/** Reads and validates the records in one metadata directory. */
export class MetadataStore {
  /** fsync every write (tests on throwaway homes may turn it off). */
  private readonly sync: { sync: boolean };

  constructor(
    readonly dir: string,
    sync = true,
  ) {
    this.sync = { sync };
  }

  /** The file of device `hash` ('' = base). */
  fileFor(hash: string): string {
    if (hash === '') return path.join(this.dir, BASE_FILE);
    return path.join(this.dir, RESERVED.has(hash) ? `@${hash}` : hash);
  }

  /** The device hash a file name stands for; null for files that are not device records. */
  static hashOf(name: string): string | null {
    if (name === BASE_FILE) return '';
    if (name.startsWith('@')) return RESERVED.has(name.slice(1)) ? name.slice(1) : null;
    if (RESERVED.has(name)) return null;
    return isValidId(name) ? name : null;
  }

  private async readJson(file: string): Promise<Record<string, unknown> | null> {
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') return null;
      throw new MetadataError(file, `cannot be read (${e instanceof Error ? e.message : String(e)})`, { cause: e });
    }
    let j: unknown;
    try {
      j = JSON.parse(text);
    } catch (e) {
      throw new MetadataError(file, 'is not valid JSON', { cause: e });
    }
    if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new MetadataError(file, 'does not hold a JSON object');
    return j as Record<string, unknown>;
  }

  /** The record of device `hash`, or null when there is none. */
  async loadDevice(hash: string): Promise<DeviceInfo | null> {
    const file = this.fileFor(hash);
    const j = await this.readJson(file);
    if (j === null) return null;
    const problem = deviceProblem(j);
    if (problem !== null) throw new MetadataError(file, problem);
    return {
      hash,
      deviceId: j.device_id as number,
      size: j.size as number,
      transactionId: j.transaction_id as number,
      initialized: j.initialized === true,
      deleted: j.deleted === true,
    };
  }

  /** Every device record in the directory (temp files and other names skipped). */
  async loadAllDevices(): Promise<DeviceInfo[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.dir);
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') return [];
      throw e;
    }
    const out: DeviceInfo[] = [];
    for (const name of names.sort()) {
      const hash = MetadataStore.hashOf(name);
      if (hash === null) continue;
      const info = await this.loadDevice(hash);
      if (info !== null) out.push(info);
    }
    return out;
  }

  async saveDevice(info: DeviceInfo): Promise<void> {
    const json = JSON.stringify({
      device_id: info.deviceId,
      size: info.size,
      transaction_id: info.transactionId,
      initialized: info.initialized,
      deleted: info.deleted,
    });
    await atomicWriteFile(this.fileFor(info.hash), json, this.sync, 0o600);
  }

  /** Removes the record of `hash` (a missing record is fine). */
  async removeDevice(hash: string): Promise<void> {
    await fs.rm(this.fileFor(hash), { force: true });
  }

  async loadDeviceSet(): Promise<DeviceSetMetadata | null> {
    const file = path.join(this.dir, DEVICE_SET_FILE);
    const j = await this.readJson(file);
    if (j === null) return null;
    if (!isUint(j.next_device_id, MAX_DEVICE_ID)) throw new MetadataError(file, `has an invalid next_device_id ${JSON.stringify(j.next_device_id)}`);
    for (const k of ['base_device_uuid', 'base_device_filesystem']) {
      if (j[k] !== undefined && typeof j[k] !== 'string') throw new MetadataError(file, `has a non-string "${k}"`);
    }
    return {
      nextDeviceId: j.next_device_id,
      baseDeviceUuid: (j.base_device_uuid as string | undefined) ?? '',
      baseDeviceFilesystem: (j.base_device_filesystem as string | undefined) ?? '',
    };
  }

  async saveDeviceSet(m: DeviceSetMetadata): Promise<void> {
    const json = JSON.stringify({
      next_device_id: m.nextDeviceId,
      base_device_uuid: m.baseDeviceUuid,
      base_device_filesystem: m.baseDeviceFilesystem,
    });
    await atomicWriteFile(path.join(this.dir, DEVICE_SET_FILE), json, this.sync, 0o600);
  }

  async loadTransaction(): Promise<TransactionMetadata | null> {
    const file = path.join(this.dir, TRANSACTION_FILE);
    const j = await this.readJson(file);
    if (j === null) return null;
    if (!isUint(j.open_transaction_id)) throw new MetadataError(file, `has an invalid open_transaction_id ${JSON.stringify(j.open_transaction_id)}`);
    if (!isUint(j.device_id, MAX_DEVICE_ID)) throw new MetadataError(file, `has an invalid device_id ${JSON.stringify(j.device_id)}`);
    if (typeof j.device_hash !== 'string' || (j.device_hash !== '' && !isValidId(j.device_hash))) {
      throw new MetadataError(file, `has an invalid device_hash ${JSON.stringify(j.device_hash)}`);
    }
    return { openTransactionId: j.open_transaction_id, deviceHash: j.device_hash, deviceId: j.device_id };
  }

  async saveTransaction(t: TransactionMetadata): Promise<void> {
    const json = JSON.stringify({ open_transaction_id: t.openTransactionId, device_hash: t.deviceHash, device_id: t.deviceId });
    await atomicWriteFile(path.join(this.dir, TRANSACTION_FILE), json, this.sync, 0o600);
  }
}
