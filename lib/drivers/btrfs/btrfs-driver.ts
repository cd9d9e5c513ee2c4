/**
 * The btrfs driver, as Docker's: every layer is a btrfs subvolume `<home>/subvolumes/<id>`, made as a snapshot of
 * its parent's subvolume (or as a new empty subvolume for a base layer). Everything goes through the btrfs ioctls
 * of the addon; btrfs-progs is not needed at run time. The `size` storage option limits a layer with a quota
 * group (quotas are enabled on the filesystem the first time it is used), as Docker does.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { GraphdriverError } from '../../errors';
import { loadBindings } from '../../native/bindings';
import { FsMagic } from '../../native/constants';
import type { NativeBindings } from '../../native/types';
import type { CreateOpts, DriverDeps, MountOpts, ProtoDriver } from '../driver';
import { InvalidOptionError, LayerExistsError, LayerInUseError, LayerNotFoundError, PrerequisitesError } from '../errors';
import { KeyedLock } from '../keyed-lock';
import { checkLayerId, checkParentId } from '../layer-id';
import { NaiveDiffDriver } from '../naive-diff-driver';
import { RefCounter } from '../ref-counter';
import { parseSize, parseStorageOpts } from '../storage-opts';
import { ParentIndex } from '../vfs/parents';
import { errCode, isDirectory, pathExists } from '../fs-util';
import { removeTree } from '../vfs/remove-tree';

/** Init options (`--storage-opt`): Docker's btrfs knows only `btrfs.min_space`. */
const KNOWN_OPTIONS = ['btrfs.min_space'] as const;
/** Per-layer storage options. */
const KNOWN_LAYER_OPTIONS = ['size'] as const;

/** Inode number of the root directory of every btrfs subvolume (BTRFS_FIRST_FREE_OBJECTID). */
const SUBVOLUME_ROOT_INO = 256;



const notMounted = (): Promise<boolean> => Promise.resolve(false);

/**
 * Subvolumes nested below `root` (not `root` itself), deepest first, so that deleting them in this order never
 * meets a subvolume that still holds another. A directory is a candidate when its inode is 256 (every subvolume
 * root has that inode, few plain directories do), and `isSubvolume` confirms it. Symlinks are never followed.
 */
export async function nestedSubvolumes(root: string, isSubvolume: (dir: string, ino: number) => Promise<boolean>): Promise<string[]> {
  const found: Array<{ dir: string; depth: number }> = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    let entries;
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch (e) {
      if (errCode(e) === 'ENOENT' || errCode(e) === 'ENOTDIR') return;
      throw e;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const child = path.join(dir, e.name);
      const st = await fs.lstat(child);
      if (await isSubvolume(child, st.ino)) found.push({ dir: child, depth: depth + 1 });
      await walk(child, depth + 1);
    }
  };
  await walk(root, 0);
  // Stable sort: deeper first; a subvolume always lies deeper than the one holding it.
  return found.sort((a, b) => b.depth - a.depth).map((f) => f.dir);
}

/**
 * The ProtoDriver half of btrfs: subvolumes, reference counts and the parent records. The public
 * {@link BtrfsDriver} wraps it with the naive diff methods.
 */
export class BtrfsProtoDriver implements ProtoDriver {
  readonly name = 'btrfs';
  /** `<home>/subvolumes`: one subvolume per layer. */
  readonly subvolumesDir: string;
  private readonly locks = new KeyedLock();
  /** Serialises the short parent/child bookkeeping steps (never held during a snapshot or a delete). */
  private readonly graph = new KeyedLock();
  private readonly refs = new RefCounter();
  private readonly parents: ParentIndex;
  private closed = false;
  private dirsReady: Promise<void> | null = null;
  private quotaEnabled: Promise<void> | null = null;

  private constructor(
    readonly home: string,
    private readonly b: NativeBindings,
    /** `btrfs.min_space`: smallest `size` a layer may be given (0 = any). */
    readonly minSpace: number,
  ) {
    this.subvolumesDir = path.join(home, 'subvolumes');
    this.parents = new ParentIndex(path.join(home, 'parents'));
  }

  /**
   * Opens (creating when needed) the driver home, which must be on btrfs (checked on the home, or on its parent
   * directory while it does not exist yet, as Docker does) — PrerequisitesError otherwise.
   */
  static async open(home: string, options: readonly string[], bindings: NativeBindings): Promise<BtrfsProtoDriver> {
    if (typeof home !== 'string' || home === '') throw new TypeError('btrfs: home must be a non-empty path');
    const opts = parseStorageOpts('btrfs', options, KNOWN_OPTIONS);
    const min = opts.get('btrfs.min_space');
    const minSpace = min === undefined ? 0 : parseSize(min, 'btrfs option btrfs.min_space');
    const absHome = path.resolve(home);
    const probe = (await pathExists(absHome)) ? absHome : path.dirname(absHome);
    let magic: number;
    try {
      magic = (await bindings.statfs(probe)).type;
    } catch (e) {
      throw new PrerequisitesError(`btrfs: cannot statfs ${probe}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    if (magic !== FsMagic.BTRFS) {
      throw new PrerequisitesError(`btrfs: ${probe} is not on a btrfs filesystem (magic 0x${magic.toString(16)})`);
    }
    await fs.mkdir(absHome, { recursive: true, mode: 0o700 });
    await fs.chmod(absHome, 0o700);
    const d = new BtrfsProtoDriver(absHome, bindings, minSpace);
    await d.parents.load((id) => isDirectory(d.subvolume(id)));
    return d;
  }

  /** The subvolume of layer `id` (whether or not it exists). */
  subvolume(id: string): string {
    checkLayerId(id);
    return path.join(this.subvolumesDir, id);
  }

  /** The recorded parent of layer `id` (null for base layers). */
  parentOf(id: string): string | null {
    checkLayerId(id);
    return this.parents.parent(id);
  }

  private checkOpen(): void {
    if (this.closed) throw new GraphdriverError('ERR_DRIVER_CLOSED', `btrfs driver at ${this.home} has been cleaned up`);
  }

  /** `subvolumes/` is created with the first layer, so that a home without layers holds no state (see newDriver). */
  private ensureDirs(): Promise<void> {
    this.dirsReady ??= fs.mkdir(this.subvolumesDir, { recursive: true, mode: 0o700 }).then(
      () => undefined,
      (e: unknown) => {
        this.dirsReady = null;
        throw e;
      },
    );
    return this.dirsReady;
  }

  /** Validates per-layer storage options before anything is touched; resolves to the size limit (0 = none). */
  private layerSize(storageOpt: Record<string, string> | undefined): number {
    if (storageOpt === undefined || storageOpt === null) return 0;
    if (typeof storageOpt !== 'object') throw new InvalidOptionError('btrfs: storageOpt must be an object');
    let size = 0;
    for (const [rawKey, value] of Object.entries(storageOpt)) {
      if (rawKey.toLowerCase() !== 'size') {
        throw new InvalidOptionError(`btrfs: storage option ${JSON.stringify(rawKey)} is not supported (known: ${KNOWN_LAYER_OPTIONS.join(', ')})`);
      }
      if (typeof value !== 'string') throw new InvalidOptionError('btrfs: storage option "size" must be a string');
      size = parseSize(value, 'btrfs storage option size');
    }
    if (size > 0 && this.minSpace > 0 && size < this.minSpace) {
      throw new InvalidOptionError(`btrfs: storage option size ${size} is below btrfs.min_space (${this.minSpace} bytes)`);
    }
    return size;
  }

  /** Enables quota groups on the filesystem once per driver (enabling them again is harmless). */
  private enableQuota(): Promise<void> {
    this.quotaEnabled ??= this.b.btrfsQuotaCtl(this.subvolumesDir, true).catch((e: unknown) => {
      this.quotaEnabled = null;
      throw new InvalidOptionError(
        `btrfs: storage option "size" needs btrfs quota groups, which cannot be enabled on ${this.home}: ${e instanceof Error ? e.message : String(e)}`,
      );
    });
    return this.quotaEnabled;
  }

  create(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.createLayer(id, parent, opts);
  }

  /** btrfs layers are all writable subvolumes: the same as {@link create}. */
  createReadWrite(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.createLayer(id, parent, opts);
  }

  /**
   * Snapshots the parent's subvolume (or creates an empty subvolume with a 0755 root owned by root), then applies
   * the size limit. A failure after the subvolume exists deletes it again.
   */
  private async createLayer(id: string, parentArg: string | null | undefined, opts: CreateOpts | undefined): Promise<void> {
    checkLayerId(id);
    const parent = checkParentId(parentArg);
    const size = this.layerSize(opts?.storageOpt);
    this.checkOpen();
    await this.locks.run(id, async () => {
      this.checkOpen();
      const dest = this.subvolume(id);
      if (await pathExists(dest)) throw new LayerExistsError(id);
      if (parent !== null) {
        // Registered before the snapshot: from here on the parent cannot be removed under us.
        await this.graph.run('', async () => {
          if (!(await isDirectory(this.subvolume(parent)))) throw new LayerNotFoundError(parent);
          this.parents.add(id, parent);
        });
      }
      let made = false;
      try {
        await this.ensureDirs();
        if (parent === null) {
          await this.b.btrfsSubvolumeCreate(dest);
          made = true;
          // The root's mode comes from the umask and its owner from the caller.
          await fs.chmod(dest, 0o755);
          if (process.geteuid?.() === 0) await fs.chown(dest, 0, 0);
          await this.parents.unpersist(id);
        } else {
          await this.b.btrfsSnapshot(this.subvolume(parent), dest);
          made = true;
          await this.parents.persist(id, parent);
        }
        if (size > 0) {
          await this.enableQuota();
          await this.b.btrfsQgroupLimit(dest, size);
        }
      } catch (e) {
        if (made) await this.deleteSubvolume(dest).catch(() => undefined);
        if (parent !== null) {
          await this.graph.run('', async () => this.parents.drop(id));
          await this.parents.unpersist(id).catch(() => undefined);
        }
        throw e;
      }
    });
  }

  /** Deletes the subvolume at `dir` with every subvolume nested in it (deepest first); a plain directory is removed as a tree. */
  private async deleteSubvolume(dir: string): Promise<void> {
    const nested = await nestedSubvolumes(dir, (p, ino) => (ino === SUBVOLUME_ROOT_INO ? this.b.btrfsIsSubvolume(p) : Promise.resolve(false)));
    for (const sub of nested) await this.b.btrfsSubvolumeDelete(sub);
    if (await this.b.btrfsIsSubvolume(dir)) await this.b.btrfsSubvolumeDelete(dir);
    else await removeTree(dir);
  }

  /** Removes the layer: refused while it is got or while layers created from it exist. */
  async remove(id: string): Promise<void> {
    checkLayerId(id);
    this.checkOpen();
    await this.locks.run(id, async () => {
      this.checkOpen();
      const n = this.refs.count(id);
      if (n > 0) throw new LayerInUseError(id, `it is mounted (${n} get${n === 1 ? '' : 's'} without put)`);
      const dir = this.subvolume(id);
      await this.graph.run('', async () => {
        const kids = this.parents.children(id);
        if (kids.length > 0) {
          const shown = kids.slice(0, 3).map((k) => JSON.stringify(k)).join(', ');
          throw new LayerInUseError(id, `it is the parent of ${kids.length} layer${kids.length === 1 ? '' : 's'} (${shown}${kids.length > 3 ? ', ...' : ''})`);
        }
        if (!(await pathExists(dir))) throw new LayerNotFoundError(id);
      });
      await this.deleteSubvolume(dir);
      await this.graph.run('', async () => this.parents.drop(id));
      this.refs.reset(id);
      await this.parents.unpersist(id);
    });
  }

  /** Returns the subvolume directory (nothing to mount); reference counted so that remove can refuse a layer in use. */
  async get(id: string, _opts?: MountOpts): Promise<string> {
    checkLayerId(id);
    this.checkOpen();
    return this.locks.run(id, async () => {
      this.checkOpen();
      const dir = this.subvolume(id);
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
    return isDirectory(this.subvolume(id));
  }

  /**
   * Docker reports the btrfs-progs headers it was built with ("Build Version") and libbtrfs's version ("Library
   * Version"), leaving out a key whose value is unknown. This driver uses the kernel ioctls directly and links no
   * library, so it reports how it talks to btrfs under "Build Version" and, as Docker does without a library
   * version, no "Library Version".
   */
  async status(): Promise<Array<[string, string]>> {
    return [['Build Version', 'kernel ioctls (no btrfs-progs)']];
  }

  /** btrfs layers have no metadata (null); unknown ids are LayerNotFoundError. */
  async getMetadata(id: string): Promise<Record<string, string> | null> {
    checkLayerId(id);
    if (!(await isDirectory(this.subvolume(id)))) throw new LayerNotFoundError(id);
    return null;
  }

  /** Nothing is mounted; forgets the reference counts and refuses further use. */
  async cleanup(): Promise<void> {
    this.closed = true;
    for (const id of this.refs.active()) this.refs.reset(id);
  }
}

/**
 * The btrfs graph driver: {@link BtrfsProtoDriver} plus Docker's naive diff methods (layers compared as whole
 * trees, diffs applied with whiteouts turned into deletions).
 */
export class BtrfsDriver extends NaiveDiffDriver {
  private constructor(
    private readonly btrfs: BtrfsProtoDriver,
    bindings: NativeBindings,
  ) {
    super(btrfs, { bindings, format: 'naive' });
  }

  /**
   * Opens the driver at `home` (`<root>/btrfs`), which must be on btrfs (PrerequisitesError otherwise).
   * `options` are `--storage-opt` strings: only `btrfs.min_space` is known; any other key is an
   * InvalidOptionError naming it.
   */
  static async init(home: string, options: string[] = [], deps: DriverDeps = {}): Promise<BtrfsDriver> {
    const bindings = deps.bindings ?? loadBindings();
    const proto = await BtrfsProtoDriver.open(home, options, bindings);
    return new BtrfsDriver(proto, bindings);
  }

  /** The driver home. */
  get home(): string {
    return this.btrfs.home;
  }

  /** The subvolume of layer `id` (whether or not it exists). */
  subvolume(id: string): string {
    return this.btrfs.subvolume(id);
  }

  /** The parent layer `id` was created from, as recorded at create (null for base layers). */
  parentOf(id: string): string | null {
    return this.btrfs.parentOf(id);
  }
}
