/**
 * The overlay2 driver, as Docker's: every layer is `<home>/<id>/` holding its own changes in `diff/`, a random
 * short `link` id with a symlink `l/<link>` → `../<id>/diff`, and (above a base layer) a `lower` file listing
 * the `l/<link>` of its ancestors nearest first, a `work/` dir and a `merged/` mount point. `get` mounts an
 * overlay of the layer on `merged/` (reference counted); base layers are their `diff/` directory, unmounted.
 * Diffs are read straight from `diff/` when the kernel's overlay allows it (checked at init), naively otherwise.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';

import { applyLayer } from '../../archive/apply';
import type { Change } from '../../archive/change';
import { changesUpper, NativeDiffUnsupportedError } from '../../archive/changes';
import { exportUpper } from '../../archive/diff';
import { GraphdriverError } from '../../errors';
import { loadBindings } from '../../native/bindings';
import { FileType, FsMagic, RenameFlags, UmountFlags } from '../../native/constants';
import type { ApplyEntry, ApplyResult, NativeBindings } from '../../native/types';
import type { CreateOpts, DriverDeps, MountOpts, ProtoDriver } from '../driver';
import {
  IncompatibleFsError,
  InvalidIdError,
  InvalidOptionError,
  LayerExistsError,
  LayerInUseError,
  LayerNotFoundError,
  NotSupportedError,
} from '../errors';
import { errCode, isDirectory, isMissing, pathExists, readOptional } from '../fs-util';
import { KeyedLock } from '../keyed-lock';
import { LayerGraph } from '../layer-graph';
import { checkLayerId as checkIdPattern, checkParentId as checkParentPattern } from '../layer-id';
import { NaiveDiffDriver } from '../naive-diff-driver';
import { RefCounter } from '../ref-counter';
import { parseBool, parseSize, parseStorageOpts } from '../storage-opts';
import { removeTree } from '../vfs/remove-tree';
import { backingFsName, CHECK_PREFIX, INCOMPATIBLE_FS, OverlayMountTestError, realProbe, type NativeDiffCheck, type OverlayProbe } from './checks';
import {
  COMMITTED_FILE,
  CorruptLayerError,
  DIFF_DIR,
  generateLinkId,
  isLinkId,
  LINK_DIR,
  LINK_FILE,
  LOWER_FILE,
  lowerForChild,
  MERGED_DIR,
  parseLowerFile,
  planMount,
  WORK_DIR,
  type MountPlan,
} from './layout';
import { mountOf, mountsBelow } from './mountinfo';
import { BACKING_FS_DEV, ProjectQuota } from './quota';

/** `--storage-opt` keys overlay2 understands at init. */
const KNOWN_OPTIONS = ['overlay2.size', 'overlay2.override_kernel_check', 'overlay2.mountopt'] as const;
/** Overlay options a user may not set through overlay2.mountopt / MountOpts.options: the driver owns them. */
const RESERVED_MOUNT_OPTIONS = ['lowerdir', 'upperdir', 'workdir', 'datadir', 'lowerdir+', 'datadir+'];

const QUOTA_HEAD = "per-layer sizes are only supported for overlay over xfs with 'pquota' mount option";

/** Prefixes of the driver's own entries in the home; layer ids never start with '.', so they cannot collide. */
const TMP_PREFIX = '.tmp-';
const REMOVING_PREFIX = '.removing-';

/** Dependencies of {@link Overlay2Driver.init}; `probe` replaces kernel checks in tests. */
export interface Overlay2Deps extends DriverDeps {
  probe?: Partial<OverlayProbe>;
  /** Page size for the mount-data limit (default 4096). */
  pageSize?: number;
}

/** Names in the home that are not layers: a layer with such an id would be its link directory or device node. */
const RESERVED_IDS: ReadonlySet<string> = new Set([LINK_DIR, BACKING_FS_DEV]);

/** checkLayerId plus the names overlay2 keeps for itself. */
function checkLayerId(id: unknown): asserts id is string {
  checkIdPattern(id);
  if (RESERVED_IDS.has(id)) throw new InvalidIdError(id);
}

/** checkParentId plus the names overlay2 keeps for itself. */
function checkParentId(parent: string | null | undefined): string | null {
  const p = checkParentPattern(parent);
  if (p !== null && RESERVED_IDS.has(p)) throw new InvalidIdError(p);
  return p;
}

const fsOpen = promisify(fsSync.open);
const fsClose = promisify(fsSync.close);

function suffix(): string {
  return randomBytes(6).toString('hex');
}






/**
 * How new entries must be fixed up after creation: a chown to root when running as root in a home that hands
 * down another group (setgid) or with another egid. (Modes are always set exactly.)
 */
interface Fixups {
  chownRoot: boolean;
}

function umaskStrips(mode: number): boolean {
  // process.umask() without an argument only reads the mask.
  return (mode & process.umask()) !== 0;
}

/** Creates a small file that must not exist yet, with exactly `mode`. */
async function writeNew(file: string, content: string, mode: number, fx: Fixups): Promise<void> {
  await fs.writeFile(file, content, { mode, flag: 'wx' });
  if (umaskStrips(mode)) await fs.chmod(file, mode);
  if (fx.chownRoot) await fs.chown(file, 0, 0);
}

function isValidId(s: string): boolean {
  try {
    checkLayerId(s);
    return true;
  } catch {
    return false;
  }
}

/**
 * Parent/child relations, derived from the layers' `link` and `lower` files (the first lower entry names the
 * parent) and kept in memory from the first create or remove on: the driver refuses to remove a layer that
 * other layers are built on. Callers hold the graph lock.
 */
class Overlay2Graph extends LayerGraph {
  private loaded = false;

  constructor(private readonly home: string) {
    super();
  }

  async ensureLoaded(): Promise<void> {
    if (this.loaded) return;
    const names = (await fs.readdir(this.home)).filter(isValidId);
    const linkToId = new Map<string, string>();
    const firstLower = new Map<string, string>();
    await Promise.all(
      names.map(async (id) => {
        const dir = path.join(this.home, id);
        const [link, lower] = await Promise.all([readOptional(path.join(dir, LINK_FILE)), readOptional(path.join(dir, LOWER_FILE))]);
        if (link !== null) linkToId.set(link.trim(), id);
        if (lower !== null) firstLower.set(id, lower.split(':')[0]!.trim());
      }),
    );
    for (const [id, first] of firstLower) {
      const parent = linkToId.get(first.startsWith(`${LINK_DIR}/`) ? first.slice(LINK_DIR.length + 1) : first);
      if (parent !== undefined) this.add(id, parent);
    }
    this.loaded = true;
  }
}

/** What init found out about the kernel's overlay and the backing filesystem, reported by status(). */
export interface Overlay2Features {
  backingFs: string;
  backingMagic: number;
  supportsDType: boolean;
  usingMetacopy: boolean;
  nativeDiff: NativeDiffCheck;
  indexOff: boolean;
  userxattr: boolean;
  /** Project quota control when the backing filesystem has it (xfs mounted with pquota). */
  quota: ProjectQuota | null;
  /** Why there is no quota control. */
  quotaReason: string;
}

/** Parsed init options. */
interface Overlay2Options {
  /** Default quota of read-write layers (overlay2.size), 0 = none. */
  size: number;
  /** overlay2.mountopt, split at commas. */
  mountOpts: string[];
}

function splitMountOptions(value: string, what: string): string[] {
  const opts = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const o of opts) {
    const key = o.split('=')[0]!.toLowerCase();
    if (RESERVED_MOUNT_OPTIONS.includes(key)) throw new InvalidOptionError(`overlay2: ${what} must not set ${key}: the driver sets it`);
    if (/[\0\n"]/.test(o)) throw new InvalidOptionError(`overlay2: ${what} contains an invalid character: ${JSON.stringify(o)}`);
  }
  return opts;
}

function parseOptions(options: readonly string[]): Overlay2Options {
  const raw = parseStorageOpts('overlay2', options, KNOWN_OPTIONS);
  const out: Overlay2Options = { size: 0, mountOpts: [] };
  for (const [key, value] of raw) {
    switch (key) {
      case 'overlay2.size':
        out.size = parseSize(value, 'overlay2.size');
        break;
      case 'overlay2.override_kernel_check':
        // Accepted for compatibility; Docker ignores it too (the kernel is probed, not its version compared).
        parseBool(value, 'overlay2.override_kernel_check');
        break;
      case 'overlay2.mountopt':
        out.mountOpts = splitMountOptions(value, 'overlay2.mountopt');
        break;
    }
  }
  return out;
}

/**
 * The ProtoDriver half of overlay2: layout, mounts, reference counts. {@link Overlay2Driver} adds the diff
 * methods (native from the upper directory when possible, naive otherwise).
 *
 * @example
 * ```ts
 * import { Overlay2ProtoDriver } from 'graphdriver';
 *
 * const proto = await Overlay2ProtoDriver.open('/var/lib/graphdriver/overlay2', ['overlay2.mountopt=nodev'], {});
 * await proto.create('base', null);
 * await proto.createReadWrite('c1', 'base');
 * console.log(await proto.lowerDirs('c1')); // ['/var/lib/graphdriver/overlay2/base/diff']
 * console.log(await proto.getMetadata('c1')); // { LowerDir, MergedDir, UpperDir, WorkDir }
 * const merged = await proto.get('c1'); // reference counted: the last put unmounts
 * await proto.put('c1');
 * ```
 */
export class Overlay2ProtoDriver implements ProtoDriver {
  readonly name = 'overlay2';
  private readonly locks = new KeyedLock();
  /** Serialises the parent/child bookkeeping (never held during I/O-heavy work). */
  private readonly graphLock = new KeyedLock();
  private readonly graph: Overlay2Graph;
  private readonly refs = new RefCounter();
  /** Native diff work reading a layer's `diff/` directly (no mount): remove refuses the layer meanwhile. */
  private readonly holds = new Map<string, number>();
  private closed = false;
  /** Set once the addon turned out to lack mountFrom; mount(8) is used for relative mounts from then on. */
  private noMountFrom = false;
  /** link and lower of layers: written once at create and never changed, so they are read once. */
  private readonly infoCache = new Map<string, { link: string; lowers: string[] | null }>();
  private readonly fixups: Fixups;
  /** Layers known to carry the `committed` marker. */
  private readonly committed = new Set<string>();
  /** Layers this instance created and has not mounted yet: `merged/` exists, nothing is mounted on it. */
  private readonly fresh = new Set<string>();

  private constructor(
    readonly home: string,
    /** `home` with symlinks resolved, as the kernel reports mount points. */
    readonly realHome: string,
    private readonly b: NativeBindings,
    readonly features: Overlay2Features,
    private readonly options: Overlay2Options,
    private readonly probe: OverlayProbe,
    private readonly pageSize: number,
    chownRoot: boolean,
    /** An O_DIRECTORY descriptor of the home, root of the batched creates; closed by cleanup(). */
    private readonly homeFd: number,
  ) {
    this.graph = new Overlay2Graph(home);
    this.fixups = { chownRoot: chownRoot };
  }

  /** Opens the driver at `home`; see {@link Overlay2Driver.init}. */
  static async open(home: string, options: readonly string[], deps: Overlay2Deps): Promise<Overlay2ProtoDriver> {
    if (typeof home !== 'string' || home === '') throw new TypeError('overlay2: home must be a non-empty path');
    const opts = parseOptions(options);
    const b = deps.bindings ?? loadBindings();
    const probe: OverlayProbe = { ...realProbe, ...deps.probe };
    const absHome = path.resolve(home);
    // These characters separate or escape overlay mount options; Docker does not guard against them.
    if (/[,:\\\n]/.test(absHome)) {
      throw new GraphdriverError('ERR_INVALID_HOME', `overlay2: home ${JSON.stringify(absHome)} must not contain ',', ':', '\\' or newlines (they break overlay mount options)`);
    }

    if (!(await probe.hasOverlay())) {
      throw new NotSupportedError('overlay2: the kernel does not support overlay (not listed in /proc/filesystems)');
    }

    let created = false;
    try {
      await fs.mkdir(path.dirname(absHome), { recursive: true, mode: 0o700 });
      try {
        await fs.mkdir(absHome, { mode: 0o710 });
        created = true;
        await fs.chmod(absHome, 0o710);
      } catch (e) {
        if (errCode(e) !== 'EEXIST') throw e;
        if (!(await isDirectory(absHome))) throw new GraphdriverError('ERR_INVALID_HOME', `overlay2: home ${absHome} is not a directory`);
      }
      const realHome = await fs.realpath(absHome);

      const st = await b.statfs(absHome);
      const backingMagic = st.type >>> 0;
      const backingFs = backingFsName(backingMagic);
      if (INCOMPATIBLE_FS.has(backingMagic)) {
        throw new IncompatibleFsError(`overlay2: the backing ${backingFs} filesystem of ${absHome} is not supported (overlay cannot use it as upper layer)`);
      }
      if (!(await probe.supportsDType(absHome))) {
        let msg = `overlay2: the backing ${backingFs} filesystem is formatted without d_type support, which leads to incorrect behavior.`;
        if (backingFs === 'xfs') msg += ' Reformat the filesystem with ftype=1 to enable d_type support.';
        if (backingFs === 'extfs') msg += ' Reformat the filesystem (or use tune2fs) with -O filetype flag to enable d_type support.';
        throw new IncompatibleFsError(`${msg} Backing filesystems without d_type support are not supported.`);
      }

      await fs.mkdir(path.join(absHome, LINK_DIR), { recursive: true, mode: 0o700 });
      await Overlay2ProtoDriver.removeLeftovers(absHome, b);

      let nativeDiff: NativeDiffCheck;
      try {
        nativeDiff = await probe.nativeDiff(absHome, b);
      } catch (e) {
        if (e instanceof OverlayMountTestError) {
          throw new NotSupportedError(`overlay2: overlay does not work on ${absHome} (${backingFs}): ${e.message}`, { cause: e.cause });
        }
        throw e;
      }
      const usingMetacopy = await probe.metacopy(absHome, b);
      const indexOff = await probe.indexParam();
      const { quota, quotaReason } = await Overlay2ProtoDriver.setupQuota(absHome, realHome, backingMagic, backingFs, b, probe);
      if (opts.size > 0 && quota === null) throw new InvalidOptionError(`overlay2: storage option overlay2.size not supported: ${QUOTA_HEAD}; ${quotaReason}`);
      const features: Overlay2Features = { backingFs, backingMagic, supportsDType: true, usingMetacopy, nativeDiff, indexOff, userxattr: false, quota, quotaReason };
      const homeStat = await fs.stat(absHome);
      const isRoot = process.getuid?.() === 0;
      const chownRoot = isRoot && ((homeStat.mode & 0o2000) !== 0 || process.getegid?.() !== 0);
      const homeFd = await fsOpen(absHome, fsSync.constants.O_RDONLY | fsSync.constants.O_DIRECTORY);  // libuv adds O_CLOEXEC
      return new Overlay2ProtoDriver(absHome, realHome, b, features, opts, probe, deps.pageSize ?? 4096, chownRoot, homeFd);
    } catch (e) {
      // Leave nothing behind when this driver cannot be used here (the registry then tries the next one).
      if (created) await fs.rm(absHome, { recursive: true, force: true }).catch(() => undefined);
      throw e;
    }
  }

  /** Deletes temp layers, half-removed layers and check directories left by a crash. */
  private static async removeLeftovers(home: string, b: NativeBindings): Promise<void> {
    const names = await fs.readdir(home);
    await Promise.all(
      names
        .filter((n) => n.startsWith(TMP_PREFIX) || n.startsWith(REMOVING_PREFIX) || n.startsWith(CHECK_PREFIX))
        .map(async (n) => {
          const dir = path.join(home, n);
          // A crash in the middle of a check can leave its test overlay mounted.
          await b.umount(path.join(dir, 'merged'), UmountFlags.MNT_DETACH).catch(() => undefined);
          await removeTree(dir, b);
        }),
    );
  }

  private checkOpen(): void {
    if (this.closed) throw new GraphdriverError('ERR_DRIVER_CLOSED', 'overlay2: the driver was cleaned up');
  }

  /** `<home>/<id>`. */
  dir(id: string): string {
    return path.join(this.home, id);
  }

  /** Whether layer diffs can be read from the upper directories (init's native-diff check). */
  get nativeDiff(): boolean {
    return this.features.nativeDiff.ok;
  }

  /** Project quota control where the backing filesystem offers it (xfs mounted with pquota), as Docker's quota.NewControl. */
  private static async setupQuota(
    home: string,
    realHome: string,
    magic: number,
    fsName: string,
    b: NativeBindings,
    probe: OverlayProbe,
  ): Promise<{ quota: ProjectQuota | null; quotaReason: string }> {
    if (magic !== FsMagic.XFS) return { quota: null, quotaReason: `${home} is on ${fsName}` };
    const mnt = mountOf(await probe.mountInfo(), realHome);
    if (!(mnt?.superOptions ?? []).some((o) => o === 'prjquota' || o === 'pquota' || o === 'pqnoenforce')) {
      return { quota: null, quotaReason: `the xfs filesystem at ${mnt?.mountPoint ?? '?'} is mounted without pquota` };
    }
    try {
      return { quota: await ProjectQuota.open(home, b), quotaReason: '' };
    } catch (e) {
      if (errCode(e) === 'ERR_NATIVE_MISSING') return { quota: null, quotaReason: 'project quota control is not available in this build of the addon' };
      return { quota: null, quotaReason: `project quotas do not work there: ${e instanceof Error ? e.message : String(e)}` };
    }
  }

  /** Validates per-layer storage options (only `size`, only for read-write layers); resolves to the size limit (0 = none). */
  private checkStorageOpt(storageOpt: Record<string, string> | undefined, readWrite: boolean): number {
    let size = readWrite ? this.options.size : 0;
    if (storageOpt !== undefined && storageOpt !== null) {
      if (typeof storageOpt !== 'object') throw new InvalidOptionError('overlay2: storageOpt must be an object');
      for (const [rawKey, value] of Object.entries(storageOpt)) {
        const key = rawKey.toLowerCase();
        if (key !== 'size') throw new InvalidOptionError(`overlay2: unknown storage option ${JSON.stringify(rawKey)} (known: size)`);
        if (typeof value !== 'string') throw new InvalidOptionError('overlay2: storage option "size" must be a string');
        if (!readWrite) throw new InvalidOptionError('overlay2: --storage-opt size is only supported for ReadWrite layers');
        size = parseSize(value, 'overlay2 storage option size');
      }
    }
    if (size > 0 && this.features.quota === null) {
      throw new InvalidOptionError(`overlay2: --storage-opt size is not supported: ${QUOTA_HEAD}; ${this.features.quotaReason}`);
    }
    return size;
  }

  create(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.createLayer(id, parent, opts, false);
  }

  createReadWrite(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.createLayer(id, parent, opts, true);
  }

  /**
   * Builds `<id>` under a temp name (diff 0755, link, l/<link> symlink, and above a base layer lower, work,
   * merged) and renames it into place, so a failure never leaves a half-made layer. The parent is marked
   * `committed` (it is mounted read-only from then on, as Docker does).
   */
  private async createLayer(id: string, parentArg: string | null | undefined, opts: CreateOpts | undefined, readWrite: boolean): Promise<void> {
    checkLayerId(id);
    const parent = checkParentId(parentArg);
    this.checkOpen();
    const size = this.checkStorageOpt(opts?.storageOpt, readWrite);
    await this.locks.run(id, async () => {
      this.checkOpen();
      const dest = this.dir(id);
      // An existing id is caught by the final rename (RENAME_NOREPLACE), which leaves it untouched; looking
      // first would cost every create a stat for the sake of a failure path.
      if (this.infoCache.has(id)) throw new LayerExistsError(id);
      let lower: string | null = null;
      if (parent !== null) {
        const p = await this.info(parent);
        lower = lowerForChild(parent, p.link, p.lowers ?? []);
        // Registered before anything is written: from here on the parent cannot be removed under us. remove()
        // drops its cache entry under this lock, so a cached parent still exists.
        await this.graphLock.run('', async () => {
          await this.graph.ensureLoaded();
          // A layer with a parent exists already (creates of one id are serialised): do not touch its record.
          if (this.graph.hasParent(id)) throw new LayerExistsError(id);
          if (!this.infoCache.has(parent) && !(await isDirectory(this.dir(parent)))) throw new LayerNotFoundError(parent);
          this.graph.add(id, parent);
        });
      }
      const tmpName = `${TMP_PREFIX}${id}-${suffix()}`;
      const tmp = path.join(this.home, tmpName);
      let linkPath: string | null = null;
      let link = '';
      try {
        link = await this.makeSkeleton(id, tmpName, lower, size, (p) => (linkPath = p));
        try {
          await this.b.renameat2(tmp, dest, RenameFlags.RENAME_NOREPLACE);
        } catch (e) {
          if (errCode(e) === 'EEXIST' || errCode(e) === 'ENOTEMPTY') throw new LayerExistsError(id);
          throw e;
        }
      } catch (e) {
        await removeTree(tmp, this.b).catch(() => undefined);
        if (linkPath !== null) await fs.rm(linkPath, { force: true }).catch(() => undefined);
        if (parent !== null) await this.graphLock.run('', async () => this.graph.drop(id));
        throw e;
      }
      this.infoCache.set(id, { link, lowers: lower === null ? null : lower.split(':') });
      // Made here and never mounted: the first get needs no mount-table or marker lookups.
      this.fresh.add(id);
      if (parent !== null && !this.committed.has(parent)) {
        // Docker marks the parent committed (then it is mounted read-only); an empty marker needs no atomicity.
        try {
          await writeNew(path.join(this.dir(parent), COMMITTED_FILE), '', 0o600, this.fixups);
        } catch (e) {
          if (errCode(e) !== 'EEXIST') throw e;
        }
        this.committed.add(parent);
      }
    });
  }

  /**
   * Creates the layer directory under the temp name `tmpName` in one batch (applyEntries, resolved inside the
   * home): the directory 0710, diff 0755, above a base layer work and merged 0700 and the lower file, the link
   * file and the `l/<link>` symlink (relative to the final place; it dangles only until the rename). A link id
   * that is taken is replaced by a new one. `onLink` learns the symlink path as soon as it exists (for cleanup).
   * Resolves to the link id.
   */
  private async makeSkeleton(id: string, tmpName: string, lower: string | null, size: number, onLink: (p: string) => void): Promise<string> {
    const owner = this.fixups.chownRoot ? { uid: 0, gid: 0 } : {};
    const run = async (entries: ApplyEntry[]): Promise<ApplyResult[]> => {
      const results = await this.b.applyEntries(this.homeFd, entries);
      return results;
    };
    const fail = (e: ApplyEntry, r: ApplyResult): Error => {
      const p = path.join(this.home, e.path);
      return Object.assign(new Error(`${r.code}: ${r.syscall} '${p}'`), { code: r.code, errno: -r.errno, syscall: r.syscall, path: p });
    };
    const entries: ApplyEntry[] = [];
    const top: ApplyEntry = { op: 'create', path: tmpName, type: 'dir', mode: 0o710, noReplace: true, ...owner };
    if (size > 0) {
      // The project id must be on the directory before anything is created inside (it is inherited).
      const [r] = await run([top]);
      if (r!.errno !== 0) throw fail(top, r!);
      await this.features.quota!.set(path.join(this.home, tmpName), id, size);
    } else {
      entries.push(top);
    }
    entries.push({ op: 'create', path: `${tmpName}/${DIFF_DIR}`, type: 'dir', mode: 0o755, ...owner });
    if (lower !== null) {
      entries.push({ op: 'create', path: `${tmpName}/${WORK_DIR}`, type: 'dir', mode: 0o700, ...owner });
      entries.push({ op: 'create', path: `${tmpName}/${MERGED_DIR}`, type: 'dir', mode: 0o700, ...owner });
      entries.push({ op: 'create', path: `${tmpName}/${LOWER_FILE}`, type: 'file', mode: 0o644, data: Buffer.from(lower), noReplace: true, ...owner });
    }
    for (let attempt = 0; ; attempt++) {
      const link = generateLinkId();
      const batch: ApplyEntry[] = [
        ...entries,
        { op: 'create', path: `${LINK_DIR}/${link}`, type: 'symlink', linkname: `../${id}/${DIFF_DIR}`, noReplace: true, ...owner },
        { op: 'create', path: `${tmpName}/${LINK_FILE}`, type: 'file', mode: 0o644, data: Buffer.from(link), ...owner },
      ];
      const results = await run(batch);
      const symIdx = entries.length;
      if (results[symIdx]!.errno === 0) onLink(path.join(this.home, LINK_DIR, link));
      for (let i = 0; i < symIdx; i++) if (results[i]!.errno !== 0) throw fail(batch[i]!, results[i]!);
      if (results[symIdx]!.code === 'EEXIST' && attempt < 8) {
        entries.length = 0; // the rest exists now; only the link is tried again
        continue;
      }
      if (results[symIdx]!.errno !== 0) throw fail(batch[symIdx]!, results[symIdx]!);
      if (results[symIdx + 1]!.errno !== 0) throw fail(batch[symIdx + 1]!, results[symIdx + 1]!);
      return link;
    }
  }

  /** The link id and parsed lower entries of `id` (lowers null for a base layer); cached, as they never change. */
  private async info(id: string): Promise<{ link: string; lowers: string[] | null }> {
    const cached = this.infoCache.get(id);
    if (cached !== undefined) return cached;
    const dir = this.dir(id);
    const [linkText, lowerText] = await Promise.all([readOptional(path.join(dir, LINK_FILE)), readOptional(path.join(dir, LOWER_FILE))]);
    if (linkText === null) {
      if (!(await isDirectory(dir))) throw new LayerNotFoundError(id);
      throw new CorruptLayerError(id, 'it has no link file');
    }
    const link = linkText.trim();
    if (!isLinkId(link) && !/^[A-Za-z0-9]{1,64}$/.test(link)) throw new CorruptLayerError(id, `link file holds ${JSON.stringify(link.slice(0, 80))}`);
    const out = { link, lowers: lowerText === null ? null : parseLowerFile(id, lowerText) };
    this.infoCache.set(id, out);
    return out;
  }

  /** The parsed `lower` file of `id`, null for a base layer; LayerNotFoundError when the layer does not exist. */
  private async readLowers(id: string): Promise<string[] | null> {
    const cached = this.infoCache.get(id);
    if (cached !== undefined) return cached.lowers;
    const text = await readOptional(path.join(this.dir(id), LOWER_FILE));
    if (text === null) {
      if (!(await isDirectory(this.dir(id)))) throw new LayerNotFoundError(id);
      return null;
    }
    return parseLowerFile(id, text);
  }

  /** Absolute diff directories of the lower layers of `id`, nearest first (empty for a base layer). */
  async lowerDirs(id: string): Promise<string[]> {
    const lowers = (await this.readLowers(id)) ?? [];
    return Promise.all(
      lowers.map(async (l) => {
        const target = await fs.readlink(path.join(this.home, l));
        return path.resolve(this.home, LINK_DIR, target);
      }),
    );
  }

  /** Whether `parent` is the layer `id` was created on (Docker's isParent): only then are native diffs valid. */
  async isParent(id: string, parent: string | null): Promise<boolean> {
    let lowers: string[];
    try {
      lowers = await this.lowerDirs(id);
    } catch (e) {
      if (e instanceof LayerNotFoundError) throw e;
      return false;
    }
    if (lowers.length === 0) return parent === null;
    if (parent === null) return false;
    return path.dirname(lowers[0]!) === this.dir(parent);
  }

  private async isMounted(target: string): Promise<boolean> {
    try {
      return await this.b.isMountpoint(target);
    } catch (e) {
      if (isMissing(e)) return false;
      throw e;
    }
  }

  /**
   * Mounts (first get) and returns `<id>/merged`; a base layer returns its `diff` directory without a mount.
   * Concurrent gets share one mount. A mount the kernel refuses rejects with the kernel's errno.
   */
  async get(id: string, opts?: MountOpts): Promise<string> {
    checkLayerId(id);
    this.checkOpen();
    const mountLabel = opts?.mountLabel;
    // The label is quoted in the mount data (MCS categories contain commas); a quote would end it early.
    if (mountLabel !== undefined && (typeof mountLabel !== 'string' || /[\0\n"]/.test(mountLabel))) {
      throw new InvalidOptionError('overlay2: mountLabel must be a string without quotes or newlines');
    }
    const extra = [...this.options.mountOpts];
    if (opts?.options !== undefined) {
      if (!Array.isArray(opts.options)) throw new InvalidOptionError('overlay2: MountOpts.options must be an array of strings');
      for (const o of opts.options) {
        if (typeof o !== 'string') throw new InvalidOptionError('overlay2: MountOpts.options must be an array of strings');
        extra.push(...splitMountOptions(o, 'mount option'));
      }
    }
    return this.locks.run(id, async () => {
      this.checkOpen();
      const dir = this.dir(id);
      const lowers = await this.readLowers(id);
      if (lowers === null) {
        // Counted although nothing is mounted, so that remove refuses it and a put without get is an error.
        await this.refs.increment(id, async () => false);
        return path.join(dir, DIFF_DIR);
      }
      const merged = path.join(dir, MERGED_DIR);
      if (this.fresh.delete(id)) {
        // Created by this instance and never mounted: merged/ exists, nothing is mounted, committed is known.
        await this.refs.increment(id, async () => false);
        try {
          await this.mountPlan(this.plan(id, lowers, this.committed.has(id), extra, mountLabel));
        } catch (e) {
          throw await this.mountFailed(id, merged, e);
        }
        return merged;
      }
      // Started together with the mount check (one trip instead of three); harmless when already mounted.
      const committed = pathExists(path.join(dir, COMMITTED_FILE));
      const mountPoint = fs.mkdir(merged, { mode: 0o700 }).then(
        () => undefined,
        (e: unknown) => {
          if (errCode(e) !== 'EEXIST') throw e;
        },
      );
      committed.catch(() => undefined);
      mountPoint.catch(() => undefined);
      if ((await this.refs.increment(id, () => this.isMounted(merged))) > 1) return merged;
      try {
        const [readonly] = await Promise.all([committed, mountPoint]);
        if (readonly) this.committed.add(id);
        await this.mountPlan(this.plan(id, lowers, readonly, extra, mountLabel));
      } catch (e) {
        throw await this.mountFailed(id, merged, e);
      }
      return merged;
    });
  }

  private plan(id: string, lowers: string[], readonly: boolean, extra: string[], mountLabel: string | undefined): MountPlan {
    return planMount({
      home: this.home,
      id,
      lowers,
      readonly,
      indexOff: this.features.indexOff,
      userxattr: this.features.userxattr,
      extra,
      ...(mountLabel !== undefined ? { mountLabel } : {}),
      pageSize: this.pageSize,
    });
  }

  /** Undoes the count and the mount point of a failed first get; returns the error to throw. */
  private async mountFailed(id: string, merged: string, e: unknown): Promise<unknown> {
    await this.refs.decrement(id, async () => false).catch(() => undefined);
    await fs.rmdir(merged).catch(() => undefined);
    // Native errors keep code/errno/syscall/path; the message gains the layer (jest realms defeat instanceof).
    const ne = e as { errno?: unknown; message?: unknown };
    if (typeof e === 'object' && e !== null && typeof ne.errno === 'number' && typeof ne.message === 'string') {
      ne.message = `overlay2: mounting layer ${JSON.stringify(id)}: ${ne.message}`;
    }
    return e;
  }

  /** Runs one mount plan: mount(2) for absolute data, mountFrom (or mount(8) run in the home) for relative. */
  private async mountPlan(plan: MountPlan): Promise<void> {
    if (plan.from === undefined) {
      await this.b.mount('overlay', plan.target, 'overlay', plan.flags, plan.data);
      return;
    }
    if (!this.noMountFrom) {
      try {
        await this.b.mountFrom(plan.from, 'overlay', plan.target, 'overlay', plan.flags, plan.data);
        return;
      } catch (e) {
        if (errCode(e) !== 'ERR_NATIVE_MISSING') throw e;
        this.noMountFrom = true;
      }
    }
    await mountWithTool(plan);
  }

  /** Releases one get; the last one unmounts (MNT_DETACH) and removes `merged`, as Docker does. */
  async put(id: string): Promise<void> {
    checkLayerId(id);
    this.checkOpen();
    await this.locks.run(id, async () => {
      const dir = this.dir(id);
      const lowers = await this.readLowers(id);
      if (lowers === null) {
        await this.refs.decrement(id, async () => false);
        return;
      }
      const merged = path.join(dir, MERGED_DIR);
      if ((await this.refs.decrement(id, () => this.isMounted(merged))) > 0) return;
      try {
        await this.b.umount(merged, UmountFlags.MNT_DETACH);
      } catch (e) {
        if (errCode(e) !== 'EINVAL' && !isMissing(e)) throw e;
      }
      // Removing the mount point also drops copies of the mount in other mount namespaces (kernel 3.18+).
      await fs.rmdir(merged).catch(() => undefined);
    });
  }

  /** Removes the layer: refused while it is mounted or other layers are built on it. */
  async remove(id: string): Promise<void> {
    checkLayerId(id);
    this.checkOpen();
    await this.locks.run(id, async () => {
      this.checkOpen();
      const n = this.refs.count(id);
      if (n > 0) throw new LayerInUseError(id, `it is mounted (${n} get${n === 1 ? '' : 's'} without put)`);
      const h = this.holds.get(id) ?? 0;
      if (h > 0) throw new LayerInUseError(id, `${h} diff operation${h === 1 ? ' is' : 's are'} reading it`);
      const merged = path.join(this.dir(id), MERGED_DIR);
      if (await this.isMounted(merged)) throw new LayerInUseError(id, `${merged} is mounted`);
      const doomed = path.join(this.home, `${REMOVING_PREFIX}${id}-${suffix()}`);
      await this.graphLock.run('', async () => {
        await this.graph.ensureLoaded();
        const kids = this.graph.children(id);
        if (kids.length > 0) {
          const shown = kids.slice(0, 3).map((k) => JSON.stringify(k)).join(', ');
          throw new LayerInUseError(id, `it is the parent of ${kids.length} layer${kids.length === 1 ? '' : 's'} (${shown}${kids.length > 3 ? ', ...' : ''})`);
        }
        try {
          await fs.rename(this.dir(id), doomed);
        } catch (e) {
          if (isMissing(e)) throw new LayerNotFoundError(id);
          throw e;
        }
        this.graph.drop(id);
        this.infoCache.delete(id);
        this.committed.delete(id);
        this.fresh.delete(id);
      });
      this.refs.reset(id);
      this.features.quota?.forget(id);
      const link = (await readOptional(path.join(doomed, LINK_FILE)))?.trim();
      if (link !== undefined && link !== '' && /^[A-Za-z0-9]{1,64}$/.test(link)) {
        const linkPath = path.join(this.home, LINK_DIR, link);
        // Only the symlink that points at this layer: a damaged link file must not remove another layer's link.
        const target = await fs.readlink(linkPath).catch(() => null);
        if (target === path.join('..', id, DIFF_DIR)) await fs.rm(linkPath, { force: true });
      }
      await removeTree(doomed, this.b);
    });
  }

  async exists(id: string): Promise<boolean> {
    checkLayerId(id);
    return isDirectory(this.dir(id));
  }

  /**
   * Marks the layer busy for a native diff operation that reads or writes `diff/` without a mount; the returned
   * function (idempotent) releases it. LayerNotFoundError when the layer does not exist.
   */
  async hold(id: string): Promise<() => void> {
    checkLayerId(id);
    this.checkOpen();
    return this.locks.run(id, async () => {
      if (!(await isDirectory(this.dir(id)))) throw new LayerNotFoundError(id);
      this.holds.set(id, (this.holds.get(id) ?? 0) + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const n = (this.holds.get(id) ?? 1) - 1;
        if (n <= 0) this.holds.delete(id);
        else this.holds.set(id, n);
      };
    });
  }

  /** Docker's keys, in Docker's order. */
  async status(): Promise<Array<[string, string]>> {
    const f = this.features;
    return [
      ['Backing Filesystem', f.backingFs],
      ['Supports d_type', String(f.supportsDType)],
      ['Using metacopy', String(f.usingMetacopy)],
      ['Native Overlay Diff', String(f.nativeDiff.ok)],
      ['userxattr', String(f.userxattr)],
    ];
  }

  /** LowerDir (absent for base layers), MergedDir, UpperDir, WorkDir, as Docker. */
  async getMetadata(id: string): Promise<Record<string, string> | null> {
    checkLayerId(id);
    const dir = this.dir(id);
    if (!(await isDirectory(dir))) throw new LayerNotFoundError(id);
    const lowers = await this.lowerDirs(id);
    const out: Record<string, string> = {};
    if (lowers.length > 0) out.LowerDir = lowers.join(':');
    out.MergedDir = path.join(dir, MERGED_DIR);
    out.UpperDir = path.join(dir, DIFF_DIR);
    out.WorkDir = path.join(dir, WORK_DIR);
    return out;
  }

  /** Unmounts every mount below the home (deepest first) and forgets the counts; the driver is closed afterwards. */
  async cleanup(): Promise<void> {
    if (!this.closed) await fsClose(this.homeFd).catch(() => undefined);
    this.closed = true;
    const failures: unknown[] = [];
    for (const m of mountsBelow(await this.probe.mountInfo(), this.realHome)) {
      try {
        await this.b.umount(m.mountPoint, UmountFlags.MNT_DETACH);
      } catch (e) {
        if (errCode(e) !== 'EINVAL' && !isMissing(e)) failures.push(e);
        continue;
      }
      if (path.basename(m.mountPoint) === MERGED_DIR) await fs.rmdir(m.mountPoint).catch(() => undefined);
    }
    for (const id of this.refs.active()) this.refs.reset(id);
    if (failures.length > 0) {
      throw new GraphdriverError('ERR_CLEANUP', `overlay2: ${failures.length} mount(s) below ${this.home} could not be unmounted`, { cause: failures[0] });
    }
  }

  /** Size of the layer's own files (`diff/`): non-directories, hardlinked inodes once (Docker's directory.Size). */
  async upperSize(id: string): Promise<number> {
    const entries = await this.b.scanTree(path.join(this.dir(id), DIFF_DIR), { sort: false });
    const seen = new Set<string>();
    let size = 0;
    for (const e of entries) {
      if ((e.mode & FileType.S_IFMT) === FileType.S_IFDIR) continue;
      if (e.nlink > 1) {
        const key = `${e.dev}:${e.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      size += e.size;
    }
    return size;
  }
}

/**
 * Relative mount through util-linux mount(8) run in the home, for addons without mountFrom (Docker forks a
 * helper for the same reason). The kernel's errno is not available this way; mount(8)'s message is kept.
 */
function mountWithTool(plan: MountPlan): Promise<void> {
  return new Promise((resolve, reject) => {
    const data = [plan.data, ...plan.flagOptions].join(',');
    const child = spawn('mount', ['-n', '-i', '-t', 'overlay', '-o', data, 'overlay', plan.target], {
      cwd: plan.from,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      if (stderr.length < 4096) stderr += c.toString();
    });
    child.on('error', (e) => reject(new GraphdriverError('ERR_MOUNT', `overlay2: cannot run mount(8) for ${plan.target}: ${e.message}`, { cause: e })));
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(Object.assign(new GraphdriverError('ERR_MOUNT', `overlay2: mount(8) of ${plan.target} failed (exit ${code}): ${stderr.trim()}`), { syscall: 'mount', path: 'overlay' }));
    });
  });
}

/**
 * The overlay2 graph driver: {@link Overlay2ProtoDriver} plus diffs read straight from the layer's `diff/`
 * directory (overlay whiteouts and opaque directories turned into `.wh.` entries) when the kernel's overlay
 * allows it and the diff is against the layer's own parent, naive diffs (mounted trees compared) otherwise.
 *
 * @example
 * ```ts
 * import * as fs from 'node:fs';
 * import { Overlay2Driver } from 'graphdriver';
 *
 * const driver = await Overlay2Driver.init('/var/lib/graphdriver/overlay2'); // NotSupportedError without overlay
 * await driver.create('base', null);
 * await driver.applyDiff('base', null, fs.createReadStream('base.tar'));
 * await driver.createReadWrite('c1', 'base');
 * const merged = await driver.get('c1'); // an overlay mount: base below, c1/diff on top
 * fs.rmSync(`${merged}/etc/motd`);
 * await driver.put('c1');
 * console.log(driver.nativeDiff || driver.nativeDiffReason);
 * const tar = await driver.diff('c1', 'base'); // read from c1/diff: the deletion as an etc/.wh.motd entry
 * ```
 */
export class Overlay2Driver extends NaiveDiffDriver {
  private constructor(
    private readonly ovl: Overlay2ProtoDriver,
    private readonly b: NativeBindings,
  ) {
    super(ovl, { bindings: b, format: 'naive' });
  }

  /**
   * Opens the driver at `home` (`<root>/overlay2`). Throws NotSupportedError when the kernel has no overlay,
   * IncompatibleFsError on aufs/overlay/zfs/ecryptfs or without d_type, InvalidOptionError for unknown options
   * (`overlay2.size`, `overlay2.override_kernel_check`, `overlay2.mountopt` are known) and for a size without
   * xfs project quotas.
   */
  static async init(home: string, options: string[] = [], deps: Overlay2Deps = {}): Promise<Overlay2Driver> {
    const b = deps.bindings ?? loadBindings();
    const proto = await Overlay2ProtoDriver.open(home, options, { ...deps, bindings: b });
    return new Overlay2Driver(proto, b);
  }

  /** The driver home. */
  get home(): string {
    return this.ovl.home;
  }

  /** `<home>/<id>` (whether or not it exists). */
  dir(id: string): string {
    return this.ovl.dir(id);
  }

  /** Whether diffs are read natively from upper directories (status "Native Overlay Diff"). */
  get nativeDiff(): boolean {
    return this.ovl.nativeDiff;
  }

  /** Why native diff is off ('' when it is on). */
  get nativeDiffReason(): string {
    return this.ovl.features.nativeDiff.reason;
  }

  private async useNative(id: string, parent: string | null | undefined): Promise<boolean> {
    checkLayerId(id);
    const p = checkParentId(parent);
    if (!this.ovl.nativeDiff) return false;
    return this.ovl.isParent(id, p);
  }

  private upper(id: string): string {
    return path.join(this.ovl.dir(id), DIFF_DIR);
  }

  /** Runs native work on the layer's `diff/` while remove refuses the layer. */
  private async holding<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const release = await this.ovl.hold(id);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** The layer stays held (not removable) until the stream ends, fails or is destroyed. */
  override async diff(id: string, parent?: string | null): Promise<Readable> {
    if (!(await this.useNative(id, parent))) return super.diff(id, parent);
    const release = await this.ovl.hold(id);
    try {
      const stream = exportUpper(this.upper(id), 'overlay', { bindings: this.b });
      // Released synchronously on end/error/close, before listeners added later see the stream finish.
      stream.once('end', release);
      stream.once('error', release);
      stream.once('close', release);
      return stream;
    } catch (e) {
      release();
      throw e;
    }
  }

  override async changes(id: string, parent?: string | null): Promise<Change[]> {
    if (!(await this.useNative(id, parent))) return super.changes(id, parent);
    try {
      return await this.holding(id, async () => changesUpper(this.upper(id), await this.ovl.lowerDirs(id), 'overlay', { bindings: this.b }));
    } catch (e) {
      // Redirects or metacopy entries (set up by another tool, or a kernel default) cannot be read natively.
      if (e instanceof NativeDiffUnsupportedError) return super.changes(id, parent);
      throw e;
    }
  }

  /** Extracts the diff into `diff/` in overlay format; resolves to the size of `diff/`, as Docker. */
  override async applyDiff(id: string, parent: string | null | undefined, diff: Readable): Promise<number> {
    if (!(await this.useNative(id, parent))) return super.applyDiff(id, parent, diff);
    return this.holding(id, async () => {
      await applyLayer(this.upper(id), diff, { format: 'overlay', bindings: this.b, hash: false });
      return this.ovl.upperSize(id);
    });
  }

  override async diffSize(id: string, parent?: string | null): Promise<number> {
    if (!(await this.useNative(id, parent))) return super.diffSize(id, parent);
    return this.holding(id, () => this.ovl.upperSize(id));
  }
}
