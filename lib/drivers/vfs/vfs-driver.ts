/**
 * The vfs driver, as Docker's: every layer is a plain directory `<home>/dir/<id>` holding a full copy of its
 * parent. No mounts, no kernel features: it works anywhere, also without root (for content an unprivileged user
 * may create). Copies share extents (FICLONE) or go through copy_file_range where the filesystem allows. On xfs
 * mounted with pquota, layers may be limited in size (`size` storage option), as with Docker's vfs.
 * @module
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { loadBindings } from '../../native/bindings';
import type { NativeBindings } from '../../native/types';
import type { CreateOpts, DriverDeps } from '../driver';
import { InvalidOptionError, LayerExistsError, LayerNotFoundError } from '../errors';
import { errCode, isDirectory, pathExists } from '../fs-util';
import { refuseMounted, refuseParent } from '../in-use';
import { LayerDirDriver, LayerDirProtoDriver } from '../layer-dir-driver';
import { checkLayerId, checkParentId } from '../layer-id';
import { parseSize, parseStorageOpts } from '../storage-opts';
import { VfsQuota } from './quota';
import { removeTree } from './remove-tree';

/** Storage options vfs understands, at init (`--storage-opt size=...`, the default for every layer) and per layer
 *  (`storageOpt.size`); both need project quotas (xfs mounted with pquota). */
const KNOWN_OPTIONS = ['size'] as const;

/** Prefixes of the driver's own entries in `dir/`; layer ids never start with '.', so they cannot collide. */
const TMP_PREFIX = '.tmp-';
const REMOVING_PREFIX = '.removing-';

function suffix(): string {
  return randomBytes(6).toString('hex');
}


/**
 * The ProtoDriver half of vfs: layer directories, copies, reference counts and the parent records. The public
 * {@link VfsDriver} wraps it with the naive diff methods.
 *
 * @example
 * ```ts
 * import { loadBindings, VfsProtoDriver } from 'graphdriver';
 *
 * const proto = await VfsProtoDriver.open('/var/lib/graphdriver/vfs', [], loadBindings());
 * await proto.create('base', null);
 * await proto.createReadWrite('c1', 'base'); // <home>/dir/c1, a copy of <home>/dir/base
 * console.log(proto.dir('c1'), proto.parentOf('c1')); // '/var/lib/graphdriver/vfs/dir/c1' 'base'
 * console.log(proto.quotaSupport()); // { supported: false, reason: '...' } unless the home is on xfs with pquota
 * await proto.remove('c1');
 * ```
 */
export class VfsProtoDriver extends LayerDirProtoDriver {
  readonly name = 'vfs';
  /** `<home>/dir`: one directory per layer. */
  readonly layersDir: string;

  private constructor(
    home: string,
    private readonly b: NativeBindings,
    /** Project quota control (xfs with pquota), null elsewhere. */
    private readonly quota: VfsQuota | null,
    /** Why there is no quota control. */
    private readonly quotaReason: string,
    /** Default size limit of every layer (`size` init option), 0 = none. */
    private readonly defaultSize: number,
  ) {
    super(home, path.join(home, 'dir'));
    this.layersDir = path.join(home, 'dir');
  }

  /**
   * Opens (creating when needed) the driver home: mode 0700, leftovers of interrupted creates and removes
   * deleted, parent records loaded, project quotas set up where the home is on xfs with pquota (as Docker).
   * `options` are `--storage-opt` strings; vfs knows only `size` (default limit of every layer), which needs
   * those quotas.
   */
  static async open(home: string, options: readonly string[], bindings: NativeBindings): Promise<VfsProtoDriver> {
    if (typeof home !== 'string' || home === '') throw new TypeError('vfs: home must be a non-empty path');
    const opts = parseStorageOpts('vfs', options, KNOWN_OPTIONS);
    const sizeOpt = opts.get('size');
    const defaultSize = sizeOpt === undefined ? 0 : parseSize(sizeOpt, 'vfs option size');
    const absHome = path.resolve(home);
    await fs.mkdir(absHome, { recursive: true, mode: 0o700 });
    await fs.chmod(absHome, 0o700);
    const layersDir = path.join(absHome, 'dir');
    const { quota, reason } = await VfsQuota.open(absHome, layersDir, bindings);
    if (defaultSize > 0 && quota === null) throw VfsProtoDriver.quotaError(reason);
    const d = new VfsProtoDriver(absHome, bindings, quota, reason, defaultSize);
    await d.removeLeftovers();
    await d.parents.load((id) => isDirectory(d.dir(id)));
    return d;
  }

  private static quotaError(reason: string): InvalidOptionError {
    return new InvalidOptionError(
      `vfs: storage option "size" is not supported here: per-layer size limits need xfs project quotas (xfs mounted with pquota); ${reason}`,
    );
  }

  /** Deletes temp copies and half-removed layers left by a crash. */
  private async removeLeftovers(): Promise<void> {
    let names: string[];
    try {
      names = await fs.readdir(this.layersDir);
    } catch (e) {
      if (errCode(e) === 'ENOENT') return;
      throw e;
    }
    await Promise.all(
      names
        .filter((n) => n.startsWith(TMP_PREFIX) || n.startsWith(REMOVING_PREFIX))
        .map((n) => removeTree(path.join(this.layersDir, n), this.b)),
    );
  }

  /** The directory of layer `id` (Docker's vfs `Dir`). */
  dir(id: string): string {
    return this.layerDir(id);
  }

  /** Validates per-layer storage options before anything is touched; resolves to the layer's size limit (0 = none). */
  private layerSize(storageOpt: Record<string, string> | undefined): number {
    let size = this.defaultSize;
    if (storageOpt === undefined || storageOpt === null) return size;
    if (typeof storageOpt !== 'object') throw new InvalidOptionError('vfs: storageOpt must be an object');
    for (const [rawKey, value] of Object.entries(storageOpt)) {
      const key = rawKey.toLowerCase();
      if (key !== 'size') {
        throw new InvalidOptionError(`vfs: storage option ${JSON.stringify(rawKey)} is not supported (known: ${KNOWN_OPTIONS.join(', ')})`);
      }
      if (typeof value !== 'string') throw new InvalidOptionError('vfs: storage option "size" must be a string');
      size = parseSize(value, 'vfs storage option size');
    }
    if (size > 0 && this.quota === null) throw VfsProtoDriver.quotaError(this.quotaReason);
    return size;
  }

  /**
   * Builds the layer under a temp name (an empty 0755 directory owned by root for a base layer, else a copy of
   * the parent) and renames it into place, so a failure or crash never leaves a half-made layer behind. With a
   * size limit the layer is built inside a staging directory that carries the project id, so that everything
   * copied inherits it (and counts against the limit), then moved out.
   */
  protected async createLayer(id: string, parentArg: string | null | undefined, opts: CreateOpts | undefined): Promise<void> {
    checkLayerId(id);
    const parent = checkParentId(parentArg);
    const size = this.layerSize(opts?.storageOpt);
    await this.withLayerLock(id, async () => {
      const dest = this.dir(id);
      if (await pathExists(dest)) throw new LayerExistsError(id);
      // Registered before the copy: from here on the parent cannot be removed under us.
      if (parent !== null) await this.claimParent(id, parent);
      await this.ensureDirs();
      const staging = path.join(this.layersDir, `${TMP_PREFIX}${id}-${suffix()}`);
      const tmp = size > 0 ? path.join(staging, 'root') : staging;
      try {
        if (size > 0 && this.quota !== null) {
          await fs.mkdir(staging, { mode: 0o700 });
          await this.quota.limit(staging, size);
        }
        if (parent === null) {
          await fs.mkdir(tmp, { mode: 0o755 });
          // mkdir's mode is filtered by the umask, and a set-group-id home would hand down its group.
          await fs.chmod(tmp, 0o755);
          if (process.geteuid?.() === 0) await fs.chown(tmp, 0, 0);
          await this.parents.unpersist(id);
        } else {
          await this.b.copyTree(this.dir(parent), tmp, { reflink: true });
          await this.parents.persist(id, parent);
        }
        await fs.rename(tmp, dest);
      } catch (e) {
        await removeTree(staging, this.b).catch(() => undefined);
        if (parent !== null) await this.forgetParent(id);
        throw e;
      }
      // The layer is in place; an empty staging directory that cannot go now is removed at the next init.
      if (tmp !== staging) await fs.rmdir(staging).catch(() => undefined);
    });
  }

  /** Removes the layer: refused while it is got or while layers created from it exist. */
  async remove(id: string): Promise<void> {
    await this.withLayerLock(id, async () => {
      refuseMounted(id, this.refs.count(id));
      const doomed = path.join(this.layersDir, `${REMOVING_PREFIX}${id}-${suffix()}`);
      await this.graph.run('', async () => {
        refuseParent(id, this.parents.children(id));
        try {
          await fs.rename(this.dir(id), doomed);
        } catch (e) {
          if (errCode(e) === 'ENOENT') throw new LayerNotFoundError(id);
          throw e;
        }
        this.parents.drop(id);
      });
      this.refs.reset(id);
      await this.parents.unpersist(id);
      await removeTree(doomed, this.b);
    });
  }

  /** Docker's vfs reports no status. */
  async status(): Promise<Array<[string, string]>> {
    return [];
  }

  /** Whether per-layer size limits work here, and why not. */
  quotaSupport(): { supported: boolean; reason: string } {
    return { supported: this.quota !== null, reason: this.quotaReason };
  }

  /** Size limit and usage of layer `id` in bytes, null when it has no limit. */
  async quotaUsage(id: string): Promise<{ hardLimit: number; used: number } | null> {
    if (this.quota === null) return null;
    if (!(await isDirectory(this.dir(id)))) throw new LayerNotFoundError(id);
    return this.quota.usage(this.dir(id));
  }
}

/**
 * The vfs graph driver: {@link VfsProtoDriver} plus Docker's naive diff methods (layers compared as whole trees,
 * diffs applied with whiteouts turned into deletions).
 *
 * @example
 * ```ts
 * import * as fs from 'node:fs';
 * import { VfsDriver } from 'graphdriver';
 *
 * const driver = await VfsDriver.init('/var/lib/graphdriver/vfs'); // ['size=10G'] needs xfs with pquota
 * await driver.create('base', null);
 * await driver.applyDiff('base', null, fs.createReadStream('base.tar'));
 * await driver.createReadWrite('c1', 'base'); // a full copy of base (reflinks where the filesystem can)
 * const rootfs = await driver.get('c1'); // driver.dir('c1'): a plain directory, nothing is mounted
 * fs.writeFileSync(`${rootfs}/hello.txt`, 'hi\n');
 * await driver.put('c1');
 * console.log(await driver.changes('c1', 'base')); // [{ path: '/hello.txt', kind: ChangeKind.Add }]
 * ```
 */
export class VfsDriver extends LayerDirDriver<VfsProtoDriver> {
  /**
   * Opens the driver at `home` (`<root>/vfs`). `options` are `--storage-opt` strings: only `size` (default limit
   * of every layer) is known, and it needs xfs project quotas; any other key is an InvalidOptionError naming it.
   */
  static async init(home: string, options: string[] = [], deps: DriverDeps = {}): Promise<VfsDriver> {
    const bindings = deps.bindings ?? loadBindings();
    return new VfsDriver(await VfsProtoDriver.open(home, options, bindings), bindings);
  }

  /** The directory of layer `id` (whether or not it exists). */
  dir(id: string): string {
    return this.proto.dir(id);
  }

  /** Whether the `size` storage option works here (xfs with pquota), and why not. */
  quotaSupport(): { supported: boolean; reason: string } {
    return this.proto.quotaSupport();
  }

  /** Size limit and usage of layer `id` in bytes (null without a limit). */
  quotaUsage(id: string): Promise<{ hardLimit: number; used: number } | null> {
    return this.proto.quotaUsage(id);
  }
}
