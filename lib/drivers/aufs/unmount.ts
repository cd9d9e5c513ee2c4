/**
 * Unmounting a union as Docker's aufs Unmount does: `auplink <mnt> flush` first when the tool is installed (it
 * writes the pseudo-links of hardlinked files back to the branch, without which they are lost), then umount2
 * retried while the kernel answers EBUSY, which is often transient right after the last file is closed.
 * @module
 */
import type { NativeBindings } from '../../native/types';
import { errCode } from '../fs-util';
import { runQuietly } from './checks';

/** umount2 attempts while the kernel answers EBUSY, and the pause between them. */
export const UNMOUNT_ATTEMPTS = 5;
export const UNMOUNT_RETRY_MS = 100;
/** auplink exits with EINVAL when it reads /proc/self/mounts while the table changes; Docker retries then. */
const AUPLINK_ATTEMPTS = 6;
const EINVAL = 22;

/** What an unmount needs. */
export interface UnmountDeps {
  b: NativeBindings;
  /** Path of auplink, null when it is not installed. */
  auplink: string | null;
  sleep: (ms: number) => Promise<void>;
}

/** `auplink <target> flush`; failures are not fatal (Docker only logs them). Resolves to the last exit code. */
export async function auplinkFlush(auplink: string, target: string): Promise<number> {
  let code = 0;
  for (let i = 0; i < AUPLINK_ATTEMPTS; i++) {
    code = await runQuietly(auplink, [target, 'flush']);
    if (code !== EINVAL) break;
  }
  return code;
}

/** Flushes (when auplink exists) and unmounts `target`; the last EBUSY (or any other error) is thrown. */
export async function unmountUnion(target: string, deps: UnmountDeps): Promise<void> {
  if (deps.auplink !== null) await auplinkFlush(deps.auplink, target);
  for (let attempt = 1; ; attempt++) {
    try {
      await deps.b.umount(target, 0);
      return;
    } catch (e) {
      if (errCode(e) !== 'EBUSY' || attempt >= UNMOUNT_ATTEMPTS) throw e;
    }
    await deps.sleep(UNMOUNT_RETRY_MS);
  }
}
