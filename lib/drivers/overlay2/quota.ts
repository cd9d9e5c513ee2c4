/**
 * Per-layer size limits through xfs project quotas, as Docker's daemon/graphdriver/quota Control: each limited
 * layer directory gets its own project id (inherited by everything created below it) and that project a block
 * limit, set through a block device node of the backing filesystem kept in the driver home.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { FileType } from '../../native/constants';
import type { NativeBindings } from '../../native/types';

/** Name of the device node in the home (Docker's). */
export const BACKING_FS_DEV = 'backingFsBlockDev';

/**
 * Project quota control for the filesystem of one directory.
 *
 * @example
 * ```ts
 * import * as fs from 'node:fs/promises';
 * import { loadBindings, ProjectQuota } from 'graphdriver';
 *
 * // the home must be on xfs mounted with pquota (open throws otherwise)
 * const home = '/var/lib/graphdriver/overlay2';
 * const quota = await ProjectQuota.open(home, loadBindings());
 * await fs.mkdir(`${home}/layer1`);
 * await quota.set(`${home}/layer1`, 'layer1', 10 * 1024 ** 3); // 10 GiB for layer1 and everything created below it
 * console.log(await quota.get('layer1')); // { hardLimit: 10737418240, used: <bytes written below layer1> }
 * ```
 */
export class ProjectQuota {
  private constructor(
    private readonly b: NativeBindings,
    /** The block device node quotactl is called on. */
    readonly device: string,
    private nextId: number,
    /** Project ids of directories that have one, by directory name. */
    private readonly ids: Map<string, number>,
  ) {}

  /**
   * Sets up quota control for `home`: the project id of `home` plus one is the first id used; the device node is
   * (re)made; a limit of 0 on that id is set as the test that the filesystem enforces project quotas (throws
   * otherwise); directories of `home` that already have project ids are remembered, and new ids start above them.
   */
  static async open(home: string, b: NativeBindings): Promise<ProjectQuota> {
    const minId = (await b.getProjectId(home)) + 1;
    const device = path.join(home, BACKING_FS_DEV);
    const st = await fs.stat(home);
    await fs.rm(device, { force: true });
    await b.mknod(device, FileType.S_IFBLK | 0o600, st.dev);
    await b.setProjectQuota(device, minId, 0);
    const ids = new Map<string, number>();
    let next = minId + 1;
    for (const e of await fs.readdir(home, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const id = await b.getProjectId(path.join(home, e.name)).catch(() => 0);
      if (id > 0 && id >= minId) {
        ids.set(e.name, id);
        if (id >= next) next = id + 1;
      }
    }
    return new ProjectQuota(b, device, next, ids);
  }

  /**
   * Limits `dir` (a new, still empty directory) to `bytes`; `name` is the directory's final name in the home
   * (it may be created under a temp name and renamed).
   */
  async set(dir: string, name: string, bytes: number): Promise<number> {
    let id = this.ids.get(name);
    if (id === undefined) {
      id = this.nextId++;
      this.ids.set(name, id);
    }
    await this.b.setProjectId(dir, id);
    await this.b.setProjectQuota(this.device, id, bytes);
    return id;
  }

  /** Forgets the project of a removed directory (the id is not reused, as Docker). */
  forget(name: string): void {
    this.ids.delete(name);
  }

  /** Limit and usage of the project of `name`, null when it has none. */
  async get(name: string): Promise<{ hardLimit: number; used: number } | null> {
    const id = this.ids.get(name);
    return id === undefined ? null : this.b.getProjectQuota(this.device, id);
  }
}
