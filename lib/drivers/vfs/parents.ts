/**
 * Which vfs layer was created from which. Docker's vfs keeps no such record (each layer is a full copy), but the
 * driver contract refuses to remove a layer that other layers name as their parent, so the driver records the
 * parent of every layer in `<home>/parents/<id>` (one small file holding the parent id) and keeps an in-memory
 * index of children, loaded once at init.
 * @module
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { checkLayerId } from '../layer-id';
import { errCode } from '../fs-util';
import { LayerGraph } from '../layer-graph';

function isValidId(s: string): boolean {
  try {
    checkLayerId(s);
    return true;
  } catch {
    return false;
  }
}

/** The persistent parent records over the in-memory {@link LayerGraph}. Callers serialise changes (the driver's graph lock). */
export class ParentIndex extends LayerGraph {
  constructor(readonly dir: string) {
    super();
  }

  /**
   * Reads the records. Records of layers that do not exist (left by a crash between writing the record and
   * publishing the layer, or between unpublishing and deleting it), temp files and unreadable records are removed.
   */
  async load(layerExists: (id: string) => Promise<boolean>): Promise<void> {
    let names: string[];
    try {
      names = await fs.readdir(this.dir);
    } catch (e) {
      if (errCode(e) === 'ENOENT') return;
      throw e;
    }
    await Promise.all(
      names.map(async (name) => {
        const file = path.join(this.dir, name);
        if (!isValidId(name)) {
          if (name.startsWith('.tmp-')) await fs.rm(file, { force: true });
          return;
        }
        let parent: string;
        try {
          parent = (await fs.readFile(file, 'utf8')).trim();
        } catch {
          return;
        }
        if (!isValidId(parent) || !(await layerExists(name))) {
          await fs.rm(file, { force: true });
          return;
        }
        this.add(name, parent);
      }),
    );
  }

  /** Writes the record of `child` atomically (temp file + rename). */
  async persist(child: string, parent: string): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = path.join(this.dir, `.tmp-${child}-${randomBytes(6).toString('hex')}`);
    try {
      await fs.writeFile(tmp, `${parent}\n`, { mode: 0o600 });
      await fs.rename(tmp, path.join(this.dir, child));
    } catch (e) {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
      throw e;
    }
  }

  /** Deletes the record of `id` (a missing record is fine). */
  async unpersist(id: string): Promise<void> {
    await fs.rm(path.join(this.dir, id), { force: true });
  }
}
