/**
 * The btrfs driver, as Docker's: every layer is a btrfs subvolume `<home>/subvolumes/<id>`, made as a snapshot of
 * its parent's subvolume (or as a new empty subvolume for a base layer). Everything goes through the btrfs ioctls
 * of the addon; btrfs-progs is not needed at run time. The `size` storage option limits a layer with a quota
 * group (quotas are enabled on the filesystem the first time it is used), as Docker does.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { loadBindings } from '../../native/bindings';
import { FsMagic } from '../../native/constants';
import type { NativeBindings } from '../../native/types';
import type { CreateOpts, DriverDeps } from '../driver';
import { InvalidOptionError, LayerExistsError, LayerNotFoundError, PrerequisitesError } from '../errors';
import { errCode, isDirectory, pathExists } from '../fs-util';
import { refuseMounted, refuseParent } from '../in-use';
import { LayerDirDriver, LayerDirProtoDriver } from '../layer-dir-driver';
import { checkLayerId, checkParentId } from '../layer-id';
import { parseSize, parseStorageOpts } from '../storage-opts';
import { removeTree } from '../vfs/remove-tree';

/** Init options (`--storage-opt`): Docker's btrfs knows only `btrfs.min_space`. */
const KNOWN_OPTIONS = ['btrfs.min_space'] as const;
/** Per-layer storage options. */
const KNOWN_LAYER_OPTIONS = ['size'] as const;

/** Inode number of the root directory of every btrfs subvolume (BTRFS_FIRST_FREE_OBJECTID). */
const SUBVOLUME_ROOT_INO = 256;

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
 *
 * @example
 * ```ts
 * import { BtrfsProtoDriver, loadBindings } from 'graphdriver';
 *
 * const proto = await BtrfsProtoDriver.open('/var/lib/graphdriver/btrfs', [], loadBindings());
 * await proto.create('base', null); // a new subvolume
 * await proto.createReadWrite('c1', 'base'); // a snapshot of base
 * console.log(proto.subvolume('c1'), proto.parentOf('c1')); // '/var/lib/graphdriver/btrfs/subvolumes/c1' 'base'
 * console.log(await proto.status()); // Docker's status pairs
 * await proto.remove('c1');
 * ```
 */
export class BtrfsProtoDriver extends LayerDirProtoDriver {
  readonly name = 'btrfs';
  /** `<home>/subvolumes`: one subvolume per layer. */
  readonly subvolumesDir: string;
  private quotaEnabled: Promise<void> | null = null;

  private constructor(
    home: string,
    private readonly b: NativeBindings,
    /** `btrfs.min_space`: smallest `size` a layer may be given (0 = any). */
    readonly minSpace: number,
  ) {
    super(home, path.join(home, 'subvolumes'));
    this.subvolumesDir = path.join(home, 'subvolumes');
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
    return this.layerDir(id);
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

  /**
   * Snapshots the parent's subvolume (or creates an empty subvolume with a 0755 root owned by root), then applies
   * the size limit. A failure after the subvolume exists deletes it again.
   */
  protected async createLayer(id: string, parentArg: string | null | undefined, opts: CreateOpts | undefined): Promise<void> {
    checkLayerId(id);
    const parent = checkParentId(parentArg);
    const size = this.layerSize(opts?.storageOpt);
    await this.withLayerLock(id, async () => {
      const dest = this.subvolume(id);
      if (await pathExists(dest)) throw new LayerExistsError(id);
      // Registered before the snapshot: from here on the parent cannot be removed under us.
      if (parent !== null) await this.claimParent(id, parent);
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
        if (parent !== null) await this.forgetParent(id);
        throw e;
      }
    });
  }

  /**
   * Deletes the subvolume at `dir` with every subvolume nested in it (deepest first); a plain directory is removed
   * as a tree. Walking a layer for nested subvolumes costs a readdir and lstat of every directory in it, which
   * dominated removing a container, while nested subvolumes are rare (something inside the container made them).
   * So a subvolume is deleted right away, and the tree is walked only when the kernel refuses because it still
   * holds others (ENOTEMPTY: a refused delete changes nothing).
   */
  private async deleteSubvolume(dir: string): Promise<void> {
    const isSubvolume = await this.b.btrfsIsSubvolume(dir);
    if (isSubvolume) {
      try {
        await this.b.btrfsSubvolumeDelete(dir);
        return;
      } catch (e) {
        if (errCode(e) !== 'ENOTEMPTY') throw e;
      }
    }
    const nested = await nestedSubvolumes(dir, (p, ino) => (ino === SUBVOLUME_ROOT_INO ? this.b.btrfsIsSubvolume(p) : Promise.resolve(false)));
    for (const sub of nested) await this.b.btrfsSubvolumeDelete(sub);
    if (isSubvolume) await this.b.btrfsSubvolumeDelete(dir);
    else await removeTree(dir, this.b);
  }

  /** Removes the layer: refused while it is got or while layers created from it exist. */
  async remove(id: string): Promise<void> {
    await this.withLayerLock(id, async () => {
      refuseMounted(id, this.refs.count(id));
      const dir = this.subvolume(id);
      await this.graph.run('', async () => {
        refuseParent(id, this.parents.children(id));
        if (!(await pathExists(dir))) throw new LayerNotFoundError(id);
      });
      await this.deleteSubvolume(dir);
      await this.graph.run('', async () => this.parents.drop(id));
      this.refs.reset(id);
      await this.parents.unpersist(id);
    });
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
}

/**
 * The btrfs graph driver: {@link BtrfsProtoDriver} plus Docker's naive diff methods (layers compared as whole
 * trees, diffs applied with whiteouts turned into deletions).
 *
 * @example
 * ```ts
 * import * as fs from 'node:fs';
 * import { BtrfsDriver } from 'graphdriver';
 *
 * // the home must be on btrfs (PrerequisitesError otherwise)
 * const driver = await BtrfsDriver.init('/var/lib/graphdriver/btrfs');
 * await driver.create('base', null);
 * await driver.applyDiff('base', null, fs.createReadStream('base.tar'));
 * await driver.createReadWrite('c1', 'base'); // a snapshot of base's subvolume
 * const rootfs = await driver.get('c1'); // driver.subvolume('c1')
 * fs.writeFileSync(`${rootfs}/hello.txt`, 'hi\n');
 * await driver.put('c1');
 * const tar = await driver.diff('c1', 'base'); // a tar holding /hello.txt
 * ```
 */
export class BtrfsDriver extends LayerDirDriver<BtrfsProtoDriver> {
  /**
   * Opens the driver at `home` (`<root>/btrfs`), which must be on btrfs (PrerequisitesError otherwise).
   * `options` are `--storage-opt` strings: only `btrfs.min_space` is known; any other key is an
   * InvalidOptionError naming it.
   */
  static async init(home: string, options: string[] = [], deps: DriverDeps = {}): Promise<BtrfsDriver> {
    const bindings = deps.bindings ?? loadBindings();
    return new BtrfsDriver(await BtrfsProtoDriver.open(home, options, bindings), bindings);
  }

  /** The subvolume of layer `id` (whether or not it exists). */
  subvolume(id: string): string {
    return this.proto.subvolume(id);
  }
}
