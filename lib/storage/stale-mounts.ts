/**
 * Mounts left behind in a store by a process that died (crash, SIGKILL, power cut of a container host's daemon).
 * @module
 */
import * as fs from 'node:fs/promises';

import { mountsBelow, readMountInfo } from '../drivers/overlay2/mountinfo';
import { loadBindings } from '../native/bindings';
import { UmountFlags } from '../native/constants';
import type { NativeBindings } from '../native/types';

/**
 * Unmounts (MNT_DETACH, deepest first) every mount strictly below `home`, a driver home whose store lock the caller
 * holds: no live process uses the store then, so whatever is mounted there was left by one that died. The home
 * itself may be a mount point (a dedicated filesystem) and is left alone. Failures are reported through `warn`
 * and skipped (the layer store's own rollback unmounts what it needs again). Resolves to the mount points unmounted.
 */
export async function unmountStale(home: string, bindings: NativeBindings | undefined, warn: (m: string) => void): Promise<string[]> {
  let real: string;
  try {
    real = await fs.realpath(home);
  } catch {
    return [];
  }
  const stale = mountsBelow(await readMountInfo(), real);
  if (stale.length === 0) return [];
  const b = bindings ?? loadBindings();
  const done: string[] = [];
  for (const m of stale) {
    try {
      await b.umount(m.mountPoint, UmountFlags.MNT_DETACH);
      done.push(m.mountPoint);
    } catch (e) {
      warn(`could not unmount ${m.mountPoint}, left mounted by a process that died: ${(e as Error).message}`);
    }
  }
  return done;
}
