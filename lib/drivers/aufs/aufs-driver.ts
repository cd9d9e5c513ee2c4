/**
 * The aufs driver, as Docker's: every layer keeps its own files in `diff/<id>` (deletions as `.wh.` whiteout
 * files, opaque directories marked by `.wh..wh..opq`), `layers/<id>` lists its ancestors nearest first, and `get`
 * mounts a union of the layer's diff directory (read-write) over its ancestors' (read-only, whiteouts honoured)
 * on `mnt/<id>`; a base layer is its diff directory, unmounted. Diffs, changes and sizes are read straight from
 * the diff directory, and diffs applied straight into it, in aufs format; only a diff against some other layer
 * than the parent compares mounted trees (Docker's aufs does the same).
 * @module
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';

import { applyLayer } from '../../archive/apply';
import type { Change } from '../../archive/change';
import { changesUpper } from '../../archive/changes';
import { exportUpper } from '../../archive/diff';
import { WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE } from '../../archive/whiteout';
import { GraphdriverError } from '../../errors';
import { loadBindings } from '../../native/bindings';
import { FileType, FsMagic, UmountFlags } from '../../native/constants';
import type { NativeBindings } from '../../native/types';
import { DelegatingDriver } from '../delegating-driver';
import type { CreateOpts, Driver, DriverDeps, MountOpts, ProtoDriver } from '../driver';
import { IncompatibleFsError, InvalidOptionError, LayerExistsError, LayerNotFoundError, NotSupportedError } from '../errors';
import { errCode, isDirectory, isMissing, pathExists } from '../fs-util';
import { HoldCounter, refuseMounted, refuseParent } from '../in-use';
import { KeyedLock } from '../keyed-lock';
import { NaiveDiffDriver } from '../naive-diff-driver';
import { backingFsName } from '../overlay2/checks';
import { RefCounter } from '../ref-counter';
import { parseStorageOpts } from '../storage-opts';
import { ParentIndex } from '../vfs/parents';
import { removeTree } from '../vfs/remove-tree';
import { FSTYPE, MOUNT_SOURCE, PAGE_SIZE, planAufsMount, type AufsMountCall } from './branches';
import { realProbe, type AufsProbe } from './checks';
import {
  CHECK_PREFIX,
  checkLayerId,
  checkParentId,
  CorruptLayerError,
  DIFF_DIR,
  isLayerId,
  LAYERS_DIR,
  layersFileFor,
  MNT_DIR,
  parseLayersFile,
  REMOVING_SUFFIX,
  TMP_PREFIX,
  TOP_DIRS,
} from './layout';
import { unmountUnion } from './unmount';

/** Docker's aufs takes no `--storage-opt` at all. */
const KNOWN_OPTIONS: readonly string[] = [];

/** Backing filesystems aufs refuses to sit on, as Docker: aufs itself, btrfs and ecryptfs. */
const INCOMPATIBLE_FS: ReadonlySet<number> = new Set([FsMagic.AUFS, FsMagic.BTRFS, FsMagic.ECRYPTFS]);

/** Layers files read at once while loading the parent index (each read holds a descriptor). */
const LOAD_BATCH = 64;

const notMounted = (): Promise<boolean> => Promise.resolve(false);

function suffix(): string {
  return randomBytes(6).toString('hex');
}

/** Dependencies of {@link AufsDriver.init}; tests replace the kernel probes, the page size and the retry pause. */
export interface AufsDeps extends DriverDeps {
  probe?: Partial<AufsProbe>;
  /** Page size for the mount-data limit (default 4096). */
  pageSize?: number;
  /** Pause between unmount attempts (default: a timer). */
  sleep?: (ms: number) => Promise<void>;
}

/** What init found out, reported by status(). */
export interface AufsFeatures {
  backingFs: string;
  backingMagic: number;
  /** The kernel's aufs accepts `dirperm1` (then every union is mounted with it). */
  dirperm1: boolean;
  /** Path of auplink, null when it is not installed (unions are then unmounted without a flush). */
  auplink: string | null;
}

/** The nearest existing directory at or above `p` (Docker examines the home, or where it is going to be). */
async function nearestExisting(p: string): Promise<string> {
  for (let dir = p; ; dir = path.dirname(dir)) {
    if (await pathExists(dir)) return dir;
    if (path.dirname(dir) === dir) return dir;
  }
}

/** mkdir that accepts an existing directory; anything else in the way is an error. */
async function ensureDir(dir: string, mode: number): Promise<boolean> {
  try {
    await fs.mkdir(dir, { mode });
    // mkdir's mode is filtered by the umask.
    await fs.chmod(dir, mode);
    return true;
  } catch (e) {
    if (errCode(e) !== 'EEXIST') throw e;
    if (!(await isDirectory(dir))) throw new GraphdriverError('ERR_INVALID_HOME', `aufs: ${dir} exists and is not a directory`);
    return false;
  }
}

/**
 * The ProtoDriver half of aufs: layout, union mounts, reference counts and the parent/child index.
 * {@link AufsDriver} adds the diff methods.
 *
 * @example
 * ```ts
 * import { AufsProtoDriver } from 'graphdriver';
 *
 * const proto = await AufsProtoDriver.open('/var/lib/graphdriver/aufs', [], {});
 * await proto.create('base', null);
 * await proto.createReadWrite('c1', 'base');
 * console.log(await proto.ancestors('c1')); // ['base']
 * console.log(proto.diffDir('c1'), proto.mountDir('c1')); // '<home>/diff/c1' '<home>/mnt/c1'
 * const rootfs = await proto.get('c1'); // reference counted: the last put unmounts
 * await proto.put('c1');
 * ```
 */
export class AufsProtoDriver implements ProtoDriver {
  readonly name = 'aufs';
  private readonly locks = new KeyedLock();
  /** Serialises the parent/child bookkeeping (never held while mounting or deleting trees). */
  private readonly graphLock = new KeyedLock();
  /**
   * Children of every layer, from the first line of the `layers/` files: the driver refuses to remove a parent.
   * Only the in-memory half of ParentIndex is used; aufs's own `layers/` files are the persistent record.
   */
  private readonly graph: ParentIndex;
  private readonly refs = new RefCounter();
  /** Native diff work reading or writing a layer's diff directory without a mount: remove refuses the layer. */
  private readonly holds = new HoldCounter();
  /** Parsed `layers/` files: written once at create and never changed. */
  private readonly ancestorCache = new Map<string, string[]>();
  private closed = false;

  private constructor(
    readonly home: string,
    private readonly b: NativeBindings,
    readonly features: AufsFeatures,
    private readonly pageSize: number,
    private readonly sleep: (ms: number) => Promise<void>,
    /** The home is a bind mount of itself (made by this driver or an earlier run): cleanup undoes it. */
    private readonly ownsHomeMount: boolean,
  ) {
    this.graph = new ParentIndex(path.join(home, LAYERS_DIR));
  }

  /** Opens the driver at `home`; see {@link AufsDriver.init}. */
  static async open(home: string, options: readonly string[], deps: AufsDeps): Promise<AufsProtoDriver> {
    if (typeof home !== 'string' || home === '') throw new TypeError('aufs: home must be a non-empty path');
    parseStorageOpts('aufs', options, KNOWN_OPTIONS);
    const b = deps.bindings ?? loadBindings();
    const probe: AufsProbe = { ...realProbe, ...deps.probe };
    const absHome = path.resolve(home);
    // Branch paths are written into the mount data as <dir>=<perm> separated by ':' and ','.
    if (/[,:=\\\n"]/.test(absHome)) {
      throw new GraphdriverError('ERR_INVALID_HOME', `aufs: home ${JSON.stringify(absHome)} must not contain ',', ':', '=', '"', '\\' or newlines (they break aufs branch options)`);
    }
    if (!(await probe.hasAufs())) {
      throw new NotSupportedError('aufs: the kernel does not support aufs (not listed in /proc/filesystems, and modprobe aufs did not load it)');
    }

    const st = await b.statfs(await nearestExisting(absHome));
    const backingMagic = st.type >>> 0;
    const backingFs = backingFsName(backingMagic);
    if (INCOMPATIBLE_FS.has(backingMagic)) {
      throw new IncompatibleFsError(`aufs: AUFS is not supported over ${backingFs} (${absHome})`);
    }

    let created = false;
    const madeDirs: string[] = [];
    let bound = false;
    try {
      await fs.mkdir(path.dirname(absHome), { recursive: true, mode: 0o700 });
      created = await ensureDir(absHome, 0o710);
      for (const d of TOP_DIRS) if (await ensureDir(path.join(absHome, d), 0o710)) madeDirs.push(path.join(absHome, d));

      // Docker's MakePrivate: the home becomes a mount of its own, so that union mounts below it do not
      // propagate to (or from) other mount namespaces.
      if (!(await b.isMountpoint(absHome))) {
        await b.bindMount(absHome, absHome);
        bound = true;
      }
      await b.makeMount(absHome, 'private');
      // A bind mount of the home onto itself is the driver's to undo at cleanup; a filesystem the administrator
      // mounted there is not (it is another device than the parent directory's).
      const ownsHomeMount = bound || (await fs.stat(absHome)).dev === (await fs.stat(path.dirname(absHome))).dev;

      await AufsProtoDriver.removeLeftovers(absHome, b);
      const dirperm1 = await probe.dirperm1(absHome, b);
      const auplink = await probe.auplink();
      const features: AufsFeatures = { backingFs, backingMagic, dirperm1, auplink };
      const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
      const d = new AufsProtoDriver(absHome, b, features, deps.pageSize ?? PAGE_SIZE, sleep, ownsHomeMount);
      await d.loadGraph();
      return d;
    } catch (e) {
      // Leave nothing behind when this driver cannot be used here (the registry then tries the next one).
      if (bound) await b.umount(absHome, UmountFlags.MNT_DETACH).catch(() => undefined);
      if (created) await fs.rm(absHome, { recursive: true, force: true }).catch(() => undefined);
      // In a home that existed, only the (still empty) directories made here go: they would read as state.
      else for (const dir of madeDirs) await fs.rmdir(dir).catch(() => undefined);
      throw e;
    }
  }

  /** Deletes half-removed layers (`<id>-removing`), temp layers files and check directories left by a crash. */
  private static async removeLeftovers(home: string, b: NativeBindings): Promise<void> {
    const list = (dir: string): Promise<string[]> => fs.readdir(dir).catch(() => []);
    const doomed: string[] = [];
    for (const d of [MNT_DIR, DIFF_DIR]) {
      for (const n of await list(path.join(home, d))) if (n.endsWith(REMOVING_SUFFIX)) doomed.push(path.join(home, d, n));
    }
    for (const n of await list(path.join(home, LAYERS_DIR))) if (n.startsWith(TMP_PREFIX)) doomed.push(path.join(home, LAYERS_DIR, n));
    for (const n of await list(home)) {
      if (!n.startsWith(CHECK_PREFIX)) continue;
      // A crash in the middle of the dirperm1 check can leave its test union mounted.
      await b.umount(path.join(home, n, 'union'), UmountFlags.MNT_DETACH).catch(() => undefined);
      doomed.push(path.join(home, n));
    }
    await Promise.all(doomed.map((p) => removeTree(p, b)));
  }

  /** Reads every `layers/` file once: parents of the child index, and the ancestor cache. Damaged files are skipped. */
  private async loadGraph(): Promise<void> {
    const names = (await fs.readdir(path.join(this.home, LAYERS_DIR))).filter(isLayerId);
    for (let i = 0; i < names.length; i += LOAD_BATCH) {
      await Promise.all(
        names.slice(i, i + LOAD_BATCH).map(async (id) => {
          let ancestors: string[];
          try {
            ancestors = parseLayersFile(id, await fs.readFile(this.layersFile(id), 'utf8'));
          } catch {
            return; // damaged or vanished: reported when the layer is used, never "repaired" here
          }
          this.ancestorCache.set(id, ancestors);
          if (ancestors.length > 0) this.graph.add(id, ancestors[0]!);
        }),
      );
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new GraphdriverError('ERR_DRIVER_CLOSED', 'aufs: the driver was cleaned up');
  }

  /** `diff/<id>`: the layer's own files. */
  diffDir(id: string): string {
    return path.join(this.home, DIFF_DIR, id);
  }

  /** `mnt/<id>`: the union mount point. */
  mountDir(id: string): string {
    return path.join(this.home, MNT_DIR, id);
  }

  private layersFile(id: string): string {
    return path.join(this.home, LAYERS_DIR, id);
  }

  /** The ancestors of `id`, nearest first (empty for a base layer). LayerNotFoundError without a layers file. */
  async ancestors(id: string): Promise<string[]> {
    const cached = this.ancestorCache.get(id);
    if (cached !== undefined) return cached;
    let text: string;
    try {
      text = await fs.readFile(this.layersFile(id), 'utf8');
    } catch (e) {
      if (isMissing(e)) throw new LayerNotFoundError(id);
      throw e;
    }
    const out = parseLayersFile(id, text);
    this.ancestorCache.set(id, out);
    return out;
  }

  /** Throws CorruptLayerError (naming the culprit) unless every layer of `chain` has its diff directory. */
  private async checkDiffDirs(id: string, chain: readonly string[]): Promise<void> {
    const present = await Promise.all(chain.map((l) => isDirectory(this.diffDir(l))));
    const missing = chain.findIndex((_l, i) => !present[i]);
    if (missing < 0) return;
    const culprit = chain[missing]!;
    throw new CorruptLayerError(
      id,
      culprit === id ? `its diff directory ${this.diffDir(id)} is missing` : `its ancestor ${JSON.stringify(culprit)} (named in its layers file) has no diff directory`,
    );
  }

  private checkStorageOpt(storageOpt: Record<string, string> | undefined): void {
    if (storageOpt === undefined || storageOpt === null) return;
    if (typeof storageOpt !== 'object') throw new InvalidOptionError('aufs: storageOpt must be an object');
    const keys = Object.keys(storageOpt);
    if (keys.length > 0) throw new InvalidOptionError(`aufs: --storage-opt is not supported for aufs (got ${keys.map((k) => JSON.stringify(k)).join(', ')}; no size limits either)`);
  }

  create(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.createLayer(id, parent, opts);
  }

  /** aufs layers are all mounted read-write: the same as {@link create}. */
  createReadWrite(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.createLayer(id, parent, opts);
  }

  /**
   * Makes `mnt/<id>` and `diff/<id>` (0755, root-owned when running as root) and then publishes `layers/<id>`
   * (the layer exists from that moment on), written to a temp file and linked into place so that it is never
   * seen half-written and never replaces another layer's.
   */
  private async createLayer(id: string, parentArg: string | null | undefined, opts: CreateOpts | undefined): Promise<void> {
    checkLayerId(id);
    const parent = checkParentId(parentArg);
    this.checkStorageOpt(opts?.storageOpt);
    this.checkOpen();
    await this.locks.run(id, async () => {
      this.checkOpen();
      if (this.ancestorCache.has(id) || (await pathExists(this.layersFile(id)))) throw new LayerExistsError(id);
      let chain: string[] = [];
      if (parent !== null) {
        // Registered before anything is written: from here on the parent cannot be removed under us.
        await this.graphLock.run('', async () => {
          const parentAncestors = await this.ancestors(parent);
          chain = [parent, ...parentAncestors];
          if (chain.includes(id)) throw new CorruptLayerError(parent, `its layers file names ${JSON.stringify(id)}, the layer being created`);
          await this.checkDiffDirs(parent, chain);
          this.graph.add(id, parent);
        });
      }
      const made: string[] = [];
      try {
        for (const dir of [this.mountDir(id), this.diffDir(id)]) {
          if (await this.makeLayerDir(id, dir)) made.push(dir);
        }
        await this.publish(id, layersFileFor(parent, chain.slice(1)));
      } catch (e) {
        for (const dir of made.reverse()) await fs.rmdir(dir).catch(() => undefined);
        if (parent !== null) await this.graphLock.run('', async () => this.graph.drop(id));
        throw e;
      }
      this.ancestorCache.set(id, chain);
    });
  }

  /**
   * Creates one layer directory. An empty one left by an interrupted create is taken over; one with content
   * but no layers file is not this driver's to touch, so creating that id fails without changing anything.
   * Resolves to whether the directory was made now.
   */
  private async makeLayerDir(id: string, dir: string): Promise<boolean> {
    let made = true;
    try {
      await fs.mkdir(dir, { mode: 0o755 });
    } catch (e) {
      if (errCode(e) !== 'EEXIST') throw e;
      const st = await fs.lstat(dir);
      if (!st.isDirectory() || (await fs.readdir(dir)).length > 0) {
        throw new CorruptLayerError(id, `${dir} exists with content but the layer has no layers file; nothing was changed (remove it by hand)`);
      }
      made = false;
    }
    await fs.chmod(dir, 0o755);
    // A set-group-id home or another egid would otherwise hand down another group.
    if (process.geteuid?.() === 0) await fs.chown(dir, 0, 0);
    return made;
  }

  private async publish(id: string, content: string): Promise<void> {
    const final = this.layersFile(id);
    const tmp = path.join(this.home, LAYERS_DIR, `${TMP_PREFIX}${id}-${suffix()}`);
    try {
      await fs.writeFile(tmp, content, { mode: 0o644, flag: 'wx' });
      try {
        // link(2) never replaces: a layer published meanwhile under this id stays as it is.
        await fs.link(tmp, final);
      } catch (e) {
        if (errCode(e) === 'EEXIST') throw new LayerExistsError(id);
        throw e;
      }
    } finally {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
    }
  }

  /**
   * Removes the layer: refused while it is got, held by a diff or the parent of other layers. A union left
   * mounted by an earlier process is unmounted first. `diff/<id>` and `mnt/<id>` are renamed to
   * `<id>-removing` and the layers file deleted in one step under the graph lock, then the trees are deleted.
   */
  async remove(id: string): Promise<void> {
    checkLayerId(id);
    this.checkOpen();
    await this.locks.run(id, async () => {
      this.checkOpen();
      refuseMounted(id, this.refs.count(id));
      this.holds.refuse(id, 'using');
      if (!(await pathExists(this.layersFile(id)))) throw new LayerNotFoundError(id);
      const mnt = this.mountDir(id);
      if (await this.isMounted(mnt)) await this.unmount(mnt);
      const doomed: string[] = [];
      await this.graphLock.run('', async () => {
        refuseParent(id, this.graph.children(id));
        for (const dir of [this.diffDir(id), mnt]) {
          const target = `${dir}${REMOVING_SUFFIX}`;
          if (await this.renameAside(dir, target)) doomed.push(target);
        }
        try {
          await fs.rm(this.layersFile(id));
        } catch (e) {
          if (!isMissing(e)) throw e;
        }
        this.graph.drop(id);
        this.ancestorCache.delete(id);
      });
      this.refs.reset(id);
      for (const d of doomed) await removeTree(d, this.b);
    });
  }

  /** Renames `dir` to `target` (a leftover at `target` is deleted first); false when `dir` does not exist. */
  private async renameAside(dir: string, target: string): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      try {
        await fs.rename(dir, target);
        return true;
      } catch (e) {
        if (isMissing(e)) return false;
        const code = errCode(e);
        if ((code !== 'ENOTEMPTY' && code !== 'EEXIST') || attempt > 0) throw e;
      }
      await removeTree(target, this.b);
    }
  }

  async exists(id: string): Promise<boolean> {
    checkLayerId(id);
    return pathExists(this.layersFile(id));
  }

  private async isMounted(target: string): Promise<boolean> {
    try {
      return await this.b.isMountpoint(target);
    } catch (e) {
      if (isMissing(e)) return false;
      throw e;
    }
  }

  private unmount(target: string): Promise<void> {
    return unmountUnion(target, { b: this.b, auplink: this.features.auplink, sleep: this.sleep });
  }

  /**
   * Mounts the union (first get) and returns `mnt/<id>`; a base layer returns its diff directory without a
   * mount. Concurrent gets share one mount. A mount the kernel refuses rejects with the kernel's errno.
   */
  async get(id: string, opts?: MountOpts): Promise<string> {
    checkLayerId(id);
    this.checkOpen();
    const mountLabel = opts?.mountLabel;
    // The label is quoted in the mount data (MCS categories contain commas); a quote would end it early.
    if (mountLabel !== undefined && (typeof mountLabel !== 'string' || /[\0\n"]/.test(mountLabel))) {
      throw new InvalidOptionError('aufs: mountLabel must be a string without quotes or newlines');
    }
    if (opts?.options !== undefined && (!Array.isArray(opts.options) || opts.options.length > 0)) {
      throw new InvalidOptionError('aufs: mount options are not supported (the driver sets every aufs option itself)');
    }
    return this.locks.run(id, async () => {
      this.checkOpen();
      const ancestors = await this.ancestors(id);
      if (ancestors.length === 0) {
        await this.checkDiffDirs(id, [id]);
        // Counted although nothing is mounted, so that remove refuses it and a put without get is an error.
        await this.refs.increment(id, notMounted);
        return this.diffDir(id);
      }
      const mnt = this.mountDir(id);
      if ((await this.refs.increment(id, () => this.isMounted(mnt))) > 1) return mnt;
      try {
        await this.checkDiffDirs(id, [id, ...ancestors]);
        const calls = planAufsMount({
          rw: this.diffDir(id),
          ro: ancestors.map((a) => this.diffDir(a)),
          dirperm1: this.features.dirperm1,
          ...(mountLabel !== undefined ? { mountLabel } : {}),
          pageSize: this.pageSize,
        });
        await ensureDir(mnt, 0o755);
        await this.mountCalls(id, mnt, calls);
      } catch (e) {
        await this.refs.decrement(id, notMounted).catch(() => undefined);
        throw e;
      }
      return mnt;
    });
  }

  /** Runs the calls of a mount plan; when an append fails the partial union is unmounted again. */
  private async mountCalls(id: string, target: string, calls: readonly AufsMountCall[]): Promise<void> {
    for (const [i, call] of calls.entries()) {
      try {
        await this.b.mount(MOUNT_SOURCE, target, FSTYPE, call.flags, call.data);
      } catch (e) {
        if (i > 0) await this.b.umount(target, UmountFlags.MNT_DETACH).catch(() => undefined);
        // Native errors keep code/errno/syscall/path; the message gains the layer and the step.
        const ne = e as { errno?: unknown; message?: unknown };
        if (typeof e === 'object' && e !== null && typeof ne.errno === 'number' && typeof ne.message === 'string') {
          ne.message = `aufs: mounting layer ${JSON.stringify(id)} (${i === 0 ? 'mount' : `remount ${i} of ${calls.length - 1} appending branches`}): ${ne.message}`;
        }
        throw e;
      }
    }
  }

  /**
   * Releases one get; the last one flushes (auplink) and unmounts the union, retrying while it is busy. When it
   * stays busy the put fails and the reference is kept: the layer is still mounted, and a later put retries.
   */
  async put(id: string): Promise<void> {
    checkLayerId(id);
    this.checkOpen();
    await this.locks.run(id, async () => {
      const ancestors = await this.ancestors(id);
      if (ancestors.length === 0) {
        await this.refs.decrement(id, notMounted);
        return;
      }
      const mnt = this.mountDir(id);
      if ((await this.refs.decrement(id, () => this.isMounted(mnt))) > 0) return;
      try {
        await this.unmount(mnt);
      } catch (e) {
        // Unmounted meanwhile by someone else: the goal is reached.
        if (errCode(e) === 'EINVAL' || isMissing(e)) return;
        // Still mounted (busy): the reference stays, so that remove refuses the layer and a later put retries.
        await this.refs.increment(id, notMounted);
        throw e;
      }
    });
  }

  /**
   * Marks the layer busy for native diff work on its diff directory; the returned function (idempotent)
   * releases it. LayerNotFoundError when the layer does not exist.
   */
  async hold(id: string): Promise<() => void> {
    checkLayerId(id);
    this.checkOpen();
    return this.locks.run(id, async () => {
      await this.ancestors(id);
      await this.checkDiffDirs(id, [id]);
      return this.holds.take(id);
    });
  }

  /** Diff directories of the ancestors of `id`, nearest first; CorruptLayerError when one is missing. */
  async lowerDirs(id: string): Promise<string[]> {
    const ancestors = await this.ancestors(id);
    await this.checkDiffDirs(id, ancestors);
    return ancestors.map((a) => this.diffDir(a));
  }

  /** Whether `parent` is the layer `id` was created on (null: `id` is a base layer): only then are diffs native. */
  async isParent(id: string, parent: string | null): Promise<boolean> {
    const ancestors = await this.ancestors(id);
    return ancestors.length === 0 ? parent === null : ancestors[0] === parent;
  }

  /**
   * Size of the layer's own files (Docker's directory.Size of `diff/<id>`): non-directories, hardlinked inodes
   * once, without the aufs metadata at its root (`.wh..wh.plnk` may hold pseudo-links of other layers' files).
   */
  async diffDirSize(id: string): Promise<number> {
    const entries = await this.b.scanTree(this.diffDir(id), { sort: false });
    const seen = new Set<string>();
    let size = 0;
    for (const e of entries) {
      if ((e.mode & FileType.S_IFMT) === FileType.S_IFDIR) continue;
      const slash = e.path.indexOf('/', 1);
      const top = slash < 0 ? e.path.slice(1) : e.path.slice(1, slash);
      if (top.startsWith(WHITEOUT_META_PREFIX) && e.path !== `/${WHITEOUT_OPAQUE}`) continue;
      if (e.nlink > 1) {
        const key = `${e.dev}:${e.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      size += e.size;
    }
    return size;
  }

  /** Docker's keys, in Docker's order. */
  async status(): Promise<Array<[string, string]>> {
    const names = await fs.readdir(path.join(this.home, LAYERS_DIR)).catch(() => []);
    return [
      ['Root Dir', this.home],
      ['Backing Filesystem', this.features.backingFs],
      ['Dirs', String(names.filter(isLayerId).length)],
      ['Dirperm1 Supported', String(this.features.dirperm1)],
    ];
  }

  /** Docker's aufs has no per-layer metadata: null; unknown ids are LayerNotFoundError. */
  async getMetadata(id: string): Promise<Record<string, string> | null> {
    checkLayerId(id);
    if (!(await pathExists(this.layersFile(id)))) throw new LayerNotFoundError(id);
    return null;
  }

  /**
   * Unmounts every union below `mnt/` (forcing a detach when one stays busy), then the home's own bind mount,
   * and forgets the counts; the driver is closed afterwards.
   */
  async cleanup(): Promise<void> {
    this.closed = true;
    const failures: unknown[] = [];
    const names = await fs.readdir(path.join(this.home, MNT_DIR)).catch(() => []);
    for (const name of names) {
      if (!isLayerId(name)) continue;
      const mnt = this.mountDir(name);
      if (!(await this.isMounted(mnt).catch(() => false))) continue;
      try {
        await this.unmount(mnt);
      } catch (e) {
        if (errCode(e) === 'EINVAL' || isMissing(e)) continue;
        await this.b.umount(mnt, UmountFlags.MNT_DETACH).catch(() => failures.push(e));
      }
    }
    for (const id of this.refs.active()) this.refs.reset(id);
    if (this.ownsHomeMount && (await this.isMounted(this.home).catch(() => false))) {
      await this.b.umount(this.home, UmountFlags.MNT_DETACH).catch((e: unknown) => failures.push(e));
    }
    if (failures.length > 0) {
      throw new GraphdriverError('ERR_CLEANUP', `aufs: ${failures.length} mount(s) below ${this.home} could not be unmounted`, { cause: failures[0] });
    }
  }
}

/**
 * The aufs graph driver: {@link AufsProtoDriver} plus diffs in aufs format straight from the layer's diff
 * directory (whiteout files kept as they are, the aufs metadata at its root left out), changes from the diff
 * directory against the ancestors' (`.wh.X` → Delete, present below → Modify, else Add), diffs applied into the
 * diff directory with whiteouts kept, and sizes from the diff directory. As in Docker's aufs, a diff against
 * another layer than the parent compares the mounted trees instead.
 *
 * @example
 * ```ts
 * import * as fs from 'node:fs';
 * import { AufsDriver } from 'graphdriver';
 *
 * const driver = await AufsDriver.init('/var/lib/graphdriver/aufs'); // NotSupportedError without aufs
 * console.log(driver.features); // backing filesystem, dirperm1, auplink
 * await driver.create('base', null);
 * await driver.applyDiff('base', null, fs.createReadStream('base.tar')); // into diff/base, whiteouts kept
 * await driver.createReadWrite('c1', 'base');
 * const rootfs = await driver.get('c1'); // the union mounted at driver.mountDir('c1')
 * fs.writeFileSync(`${rootfs}/hello.txt`, 'hi\n');
 * await driver.put('c1');
 * const tar = await driver.diff('c1', 'base'); // straight from driver.diffDir('c1')
 * ```
 */
export class AufsDriver extends DelegatingDriver<AufsProtoDriver> implements Driver {
  /** Docker's aufs naiveDiff: only for diffs against another layer than the parent. */
  private readonly fallback: NaiveDiffDriver;

  private constructor(
    proto: AufsProtoDriver,
    private readonly b: NativeBindings,
  ) {
    super(proto);
    this.fallback = new NaiveDiffDriver(proto, { bindings: b });
  }

  /**
   * Opens the driver at `home` (`<root>/aufs`). Throws NotSupportedError when the kernel has no aufs (after a
   * modprobe attempt), IncompatibleFsError on aufs, btrfs or ecryptfs, InvalidOptionError for any option
   * (aufs has none). The home becomes a private bind mount; leftovers of interrupted removes are deleted.
   */
  static async init(home: string, options: string[] = [], deps: AufsDeps = {}): Promise<AufsDriver> {
    const b = deps.bindings ?? loadBindings();
    const proto = await AufsProtoDriver.open(home, options, { ...deps, bindings: b });
    return new AufsDriver(proto, b);
  }

  /** The driver home. */
  get home(): string {
    return this.proto.home;
  }

  /** What init found out (backing filesystem, dirperm1, auplink). */
  get features(): AufsFeatures {
    return this.proto.features;
  }

  /** `diff/<id>` (whether or not it exists). */
  diffDir(id: string): string {
    checkLayerId(id);
    return this.proto.diffDir(id);
  }

  /** `mnt/<id>` (whether or not it exists). */
  mountDir(id: string): string {
    checkLayerId(id);
    return this.proto.mountDir(id);
  }

  /** The ancestors of `id` from its layers file, nearest first. */
  ancestors(id: string): Promise<string[]> {
    checkLayerId(id);
    return this.proto.ancestors(id);
  }

  private async native(id: string, parent: string | null | undefined): Promise<boolean> {
    checkLayerId(id);
    return this.proto.isParent(id, checkParentId(parent));
  }

  /** Runs native work on the layer's diff directory while remove refuses the layer. */
  private async holding<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const release = await this.proto.hold(id);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Tar of `diff/<id>`; the layer stays held (not removable) until the stream ends, fails or is destroyed. */
  async diff(id: string, parent?: string | null): Promise<Readable> {
    if (!(await this.native(id, parent))) return this.fallback.diff(id, parent);
    const release = await this.proto.hold(id);
    try {
      const stream = exportUpper(this.proto.diffDir(id), 'aufs', { bindings: this.b });
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

  async changes(id: string, parent?: string | null): Promise<Change[]> {
    if (!(await this.native(id, parent))) return this.fallback.changes(id, parent);
    return this.holding(id, async () => changesUpper(this.proto.diffDir(id), await this.proto.lowerDirs(id), 'aufs', { bindings: this.b }));
  }

  /** Extracts the diff into `diff/<id>` keeping whiteout files; resolves to the size of `diff/<id>`, as Docker. */
  async applyDiff(id: string, parent: string | null | undefined, diff: Readable): Promise<number> {
    if (!(await this.native(id, parent))) return this.fallback.applyDiff(id, parent, diff);
    return this.holding(id, async () => {
      await applyLayer(this.proto.diffDir(id), diff, { format: 'aufs', bindings: this.b, hash: false });
      return this.proto.diffDirSize(id);
    });
  }

  async diffSize(id: string, parent?: string | null): Promise<number> {
    if (!(await this.native(id, parent))) return this.fallback.diffSize(id, parent);
    return this.holding(id, () => this.proto.diffDirSize(id));
  }
}
