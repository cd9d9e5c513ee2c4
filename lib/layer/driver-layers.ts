/**
 * Lists the layers a driver holds on disk, from the driver's documented home layout (the Driver interface has no
 * listing call, and Docker's drivers have none either). Used by {@link Storage.verify} to find driver layers that
 * no metadata references. Unknown drivers yield null: orphan detection is then skipped.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { readDirIfExists } from '../storage/fsutil';

const LAYER_ID = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

async function dirsIn(dir: string, exclude: ReadonlySet<string> = new Set()): Promise<string[]> {
  const out: string[] = [];
  for (const n of await readDirIfExists(dir)) {
    if (exclude.has(n) || !LAYER_ID.test(n)) continue;
    try {
      const st = await fs.lstat(path.join(dir, n));
      if (st.isDirectory()) out.push(n);
    } catch {
      // vanished meanwhile
    }
  }
  return out.sort();
}

async function filesIn(dir: string, exclude: ReadonlySet<string>): Promise<string[]> {
  return (await readDirIfExists(dir)).filter((n) => !exclude.has(n) && LAYER_ID.test(n)).sort();
}

/**
 * Ids of the layers in a driver home: overlay2 `<home>/<id>` (besides `l/`), vfs `<home>/dir/<id>`, btrfs
 * `<home>/subvolumes/<id>`, aufs `<home>/diff/<id>`, devicemapper `<home>/metadata/<id>` (besides the pool's own
 * files). Temp and half-removed entries (dot-prefixed) are the driver's business and are not listed.
 */
export async function listDriverLayers(driverName: string, home: string): Promise<string[] | null> {
  switch (driverName) {
    case 'overlay2':
      return dirsIn(home, new Set(['l']));
    case 'vfs':
      return dirsIn(path.join(home, 'dir'));
    case 'btrfs':
      return dirsIn(path.join(home, 'subvolumes'));
    case 'aufs':
      return dirsIn(path.join(home, 'diff'));
    case 'devicemapper':
      return filesIn(path.join(home, 'metadata'), new Set(['base', 'deviceset-metadata', 'transaction-metadata']));
    default:
      return null;
  }
}
