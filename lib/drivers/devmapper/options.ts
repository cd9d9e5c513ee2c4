/**
 * The devicemapper `--storage-opt` strings (`dm.*`), parsed and validated the way Docker's devmapper driver does
 * (daemon/graphdriver/devmapper/deviceset.go NewDeviceSet), before anything on disk or in the kernel is touched.
 * @module
 */
import { InvalidOptionError } from '../errors';
import { parseBool, parseSize, parseStorageOpts } from '../storage-opts';

/** Options this driver understands. `dm.mkfsarg` and `dm.mountopt` may be given several times. */
export const KNOWN_OPTIONS = [
  'dm.basesize',
  'dm.loopdatasize',
  'dm.loopmetadatasize',
  'dm.fs',
  'dm.mkfsarg',
  'dm.mountopt',
  'dm.thinpooldev',
  'dm.blocksize',
  'dm.min_free_space',
  'dm.use_deferred_removal',
  'dm.use_deferred_deletion',
  'dm.blkdiscard',
] as const;

/** Docker's defaults. */
export const DEFAULT_BASE_SIZE = 10 * 1024 ** 3;
export const DEFAULT_DATA_LOOP_SIZE = 100 * 1024 ** 3;
export const DEFAULT_METADATA_LOOP_SIZE = 2 * 1024 ** 3;
export const DEFAULT_BLOCK_SIZE = 64 * 1024;
export const DEFAULT_MIN_FREE_SPACE_PERCENT = 10;

/** Filesystems the base device may be formatted with. */
export type BaseFs = 'ext4' | 'xfs';

/** The parsed options; `*Set` flags tell an explicit value from a default. */
export interface DevmapperOptions {
  /** Size of the base device (and so of every layer made from it), bytes. */
  baseSize: number;
  baseSizeSet: boolean;
  /** Size of the sparse data file, bytes. */
  dataLoopSize: number;
  dataLoopSizeSet: boolean;
  /** Size of the sparse metadata file, bytes. */
  metadataLoopSize: number;
  metadataLoopSizeSet: boolean;
  /** Filesystem for the base device; null = xfs when mkfs.xfs and the kernel support it, else ext4. */
  fs: BaseFs | null;
  /** Extra mkfs arguments, in order, placed before the device. */
  mkfsArgs: string[];
  /** Extra mount options (comma-separated list, flags like `nodev` included). */
  mountOptions: string[];
  /** An existing thin-pool device to use instead of loop files (name under /dev/mapper), or null. */
  thinPoolDev: string | null;
  /** Thin-pool block size in bytes (64 KiB .. 1 GiB, a multiple of 64 KiB). */
  blockSize: number;
  /** Free data/metadata space (percent of the pool) that must remain for a snapshot to be made; 0 = no check. */
  minFreeSpacePercent: number;
  deferredRemoval: boolean;
  deferredDeletion: boolean;
  /** Discard a thin device's blocks before deleting it (returns the space to the sparse data file). */
  blkDiscard: boolean;
}

/** Joins comma-separated mount options, dropping empty items (Docker's joinMountOptions). */
function splitOptions(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

function positiveSize(value: string, key: string): number {
  const n = parseSize(value, `devicemapper option ${key}`);
  if (n <= 0) throw new InvalidOptionError(`devicemapper: ${key} must be larger than 0 (got ${JSON.stringify(value)})`);
  return n;
}

/**
 * Parses `--storage-opt` strings. Unknown keys, malformed sizes and booleans, an unsupported filesystem, a block
 * size out of range, a `dm.min_free_space` without `%` or of 100% and more, loop sizes together with
 * `dm.thinpooldev`, and deferred deletion without deferred removal are {@link InvalidOptionError}s naming the option.
 */
export function parseDevmapperOptions(options: readonly string[]): DevmapperOptions {
  if (!Array.isArray(options)) throw new InvalidOptionError('devicemapper: options must be an array of key=value strings');
  const o: DevmapperOptions = {
    baseSize: DEFAULT_BASE_SIZE,
    baseSizeSet: false,
    dataLoopSize: DEFAULT_DATA_LOOP_SIZE,
    dataLoopSizeSet: false,
    metadataLoopSize: DEFAULT_METADATA_LOOP_SIZE,
    metadataLoopSizeSet: false,
    fs: null,
    mkfsArgs: [],
    mountOptions: [],
    thinPoolDev: null,
    blockSize: DEFAULT_BLOCK_SIZE,
    minFreeSpacePercent: DEFAULT_MIN_FREE_SPACE_PERCENT,
    deferredRemoval: false,
    deferredDeletion: false,
    blkDiscard: true,
  };
  let blkDiscardSet = false;
  // One option at a time: dm.mkfsarg and dm.mountopt accumulate, which a key -> value map would lose.
  for (const opt of options) {
    const [[key, value]] = [...parseStorageOpts('devicemapper', [opt], KNOWN_OPTIONS)] as [[string, string]];
    switch (key) {
      case 'dm.basesize':
        o.baseSize = positiveSize(value, key);
        o.baseSizeSet = true;
        break;
      case 'dm.loopdatasize':
        o.dataLoopSize = positiveSize(value, key);
        o.dataLoopSizeSet = true;
        break;
      case 'dm.loopmetadatasize':
        o.metadataLoopSize = positiveSize(value, key);
        o.metadataLoopSizeSet = true;
        break;
      case 'dm.fs':
        if (value !== 'ext4' && value !== 'xfs') {
          throw new InvalidOptionError(`devicemapper: unsupported filesystem ${JSON.stringify(value)} for dm.fs (use ext4 or xfs)`);
        }
        o.fs = value;
        break;
      case 'dm.mkfsarg':
        if (value === '') throw new InvalidOptionError('devicemapper: dm.mkfsarg must not be empty');
        o.mkfsArgs.push(value);
        break;
      case 'dm.mountopt':
        o.mountOptions.push(...splitOptions(value));
        break;
      case 'dm.thinpooldev': {
        const name = value.startsWith('/dev/mapper/') ? value.slice('/dev/mapper/'.length) : value;
        if (name === '' || name.includes('/') || name.length > 127) {
          throw new InvalidOptionError(`devicemapper: invalid dm.thinpooldev ${JSON.stringify(value)} (a device-mapper name or /dev/mapper/<name>)`);
        }
        o.thinPoolDev = name;
        break;
      }
      case 'dm.blocksize': {
        const n = parseSize(value, 'devicemapper option dm.blocksize');
        if (n < 64 * 1024 || n > 1024 ** 3 || n % (64 * 1024) !== 0) {
          throw new InvalidOptionError(`devicemapper: dm.blocksize must be between 64K and 1G and a multiple of 64K (got ${JSON.stringify(value)})`);
        }
        o.blockSize = n;
        break;
      }
      case 'dm.min_free_space': {
        const m = /^([0-9]{1,3})%$/.exec(value);
        if (!value.endsWith('%')) throw new InvalidOptionError(`devicemapper: dm.min_free_space requires a % suffix (got ${JSON.stringify(value)})`);
        if (!m || Number(m[1]) >= 100) throw new InvalidOptionError(`devicemapper: invalid value ${JSON.stringify(value)} for dm.min_free_space (0% to 99%)`);
        o.minFreeSpacePercent = Number(m[1]);
        break;
      }
      case 'dm.use_deferred_removal':
        o.deferredRemoval = parseBool(value, 'devicemapper option dm.use_deferred_removal');
        break;
      case 'dm.use_deferred_deletion':
        o.deferredDeletion = parseBool(value, 'devicemapper option dm.use_deferred_deletion');
        break;
      case 'dm.blkdiscard':
        o.blkDiscard = parseBool(value, 'devicemapper option dm.blkdiscard');
        blkDiscardSet = true;
        break;
    }
  }
  if (o.thinPoolDev !== null && (o.dataLoopSizeSet || o.metadataLoopSizeSet)) {
    throw new InvalidOptionError('devicemapper: dm.loopdatasize and dm.loopmetadatasize cannot be used with dm.thinpooldev (the pool already exists)');
  }
  if (o.deferredDeletion && !o.deferredRemoval) {
    throw new InvalidOptionError('devicemapper: deferred deletion cannot be enabled without deferred removal: add dm.use_deferred_removal=true');
  }
  // As Docker: discarding blocks by hand is a workaround for sparse loop files; on a real pool it is slow and
  // rarely useful, so it is off unless asked for.
  if (o.thinPoolDev !== null && !blkDiscardSet) o.blkDiscard = false;
  return o;
}

/** Parses a layer's `storageOpt` (only `size`, case-insensitive); resolves to the size in bytes, 0 when absent. */
export function parseLayerSize(storageOpt: Record<string, string> | undefined): number {
  if (storageOpt === undefined || storageOpt === null) return 0;
  if (typeof storageOpt !== 'object') throw new InvalidOptionError('devicemapper: storageOpt must be an object');
  let size = 0;
  for (const [key, value] of Object.entries(storageOpt)) {
    if (key.toLowerCase() !== 'size') {
      throw new InvalidOptionError(`devicemapper: unknown storage option ${JSON.stringify(key)} (known: size)`);
    }
    if (typeof value !== 'string') throw new InvalidOptionError('devicemapper: storage option "size" must be a string');
    size = parseSize(value, 'devicemapper storage option size');
  }
  return size;
}
