/**
 * Per-layer size limits for vfs through xfs project quotas, as Docker's vfs does with daemon/graphdriver/quota:
 * a layer directory gets its own project id before anything is copied into it (new entries inherit the id), and
 * the project a block limit. quotactl needs a block device node of the filesystem: `<home>/backingFsBlockDev`.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { FileType, FsMagic } from '../../native/constants';
import type { NativeBindings } from '../../native/types';

/** Name of the device node in the home (Docker's). */
export const BACKING_FS_DEV = 'backingFsBlockDev';

/** Project quota control for the layers of one vfs home. */
export class VfsQuota {
  private constructor(
    private readonly b: NativeBindings,
    readonly device: string,
    /** Lowest project id this home hands out (the home's own id plus one). */
    private readonly minId: number,
    private nextId: number,
  ) {}

  /**
   * Sets up quota control when the home is on xfs and project quotas work there (tested by setting a limit of 0
   * on the first id, as Docker does); otherwise resolves to the reason there is none. Project ids already used by
   * layers in `layersDir` are skipped, so a restart never hands out an id twice.
   */
  static async open(home: string, layersDir: string, b: NativeBindings): Promise<{ quota: VfsQuota | null; reason: string }> {
    const sf = await b.statfs(home);
    if (sf.type !== FsMagic.XFS) return { quota: null, reason: `${home} is not on xfs` };
    const device = path.join(home, BACKING_FS_DEV);
    let minId: number;
    try {
      minId = (await b.getProjectId(home)) + 1;
      const st = await fs.stat(home);
      await fs.rm(device, { force: true });
      await b.mknod(device, FileType.S_IFBLK | 0o600, st.dev);
      await b.setProjectQuota(device, minId, 0);
    } catch (e) {
      await fs.rm(device, { force: true }).catch(() => undefined);
      const code = (e as { code?: string }).code;
      if (code === 'ERR_NATIVE_MISSING') return { quota: null, reason: 'project quota control is not in this build of the addon' };
      return { quota: null, reason: `project quotas do not work on the xfs filesystem of ${home} (mount it with pquota): ${e instanceof Error ? e.message : String(e)}` };
    }
    let next = minId + 1;
    let names: string[] = [];
    try {
      names = await fs.readdir(layersDir);
    } catch {
      // no layers yet
    }
    for (const name of names) {
      const id = await b.getProjectId(path.join(layersDir, name)).catch(() => 0);
      if (id >= next) next = id + 1;
    }
    return { quota: new VfsQuota(b, device, minId, next), reason: '' };
  }

  /** Gives the (empty) directory `dir` a new project id, inherited by what is created below it, limited to `bytes`. */
  async limit(dir: string, bytes: number): Promise<number> {
    const id = this.nextId++;
    await this.b.setProjectId(dir, id);
    await this.b.setProjectQuota(this.device, id, bytes);
    return id;
  }

  /** Limit and usage of the project of `dir` (null when it has no project id of ours). */
  async usage(dir: string): Promise<{ hardLimit: number; used: number } | null> {
    const id = await this.b.getProjectId(dir);
    return id <= this.minId ? null : this.b.getProjectQuota(this.device, id);
  }
}
