/**
 * Recursive removal of a layer tree that also copes with directories the caller cannot write (a layer of an
 * image may hold `dr-xr-xr-x` directories; without CAP_DAC_OVERRIDE their entries cannot be unlinked).
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import type { NativeBindings } from '../../native/types';
import { errCode } from '../fs-util';

/** Adds owner rwx to every directory below (and including) `dir` that the caller owns; never follows symlinks. */
async function makeDirsWritable(dir: string, uid: number | undefined): Promise<void> {
  let st;
  try {
    st = await fs.lstat(dir);
  } catch {
    return;
  }
  if (!st.isDirectory()) return;
  if ((st.mode & 0o700) !== 0o700 && (uid === undefined || uid === 0 || st.uid === uid)) {
    await fs.chmod(dir, (st.mode & 0o7777) | 0o700).catch(() => undefined);
  }
  let entries;
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    if (e.isDirectory()) await makeDirsWritable(path.join(dir, e.name), uid);
  }
}

/**
 * Removes `target` and everything below it; a missing target is not an error.
 *
 * With `bindings` this is {@link NativeBindings.removeTree}: one trip to the thread pool (several times faster
 * than fs.rm on a rootfs), never crossing into another mount below `target` (EXDEV then) and coping with 0555
 * directories and chattr +i/+a itself. Without bindings, or with an addon built before removeTree existed
 * (ERR_NATIVE_MISSING), it is fs.rm; when permissions get in the way there the directories are made writable and
 * the removal is retried once. Native failures are not retried with fs.rm: fs.rm would delete through the very
 * mount the native call refused to enter.
 */
export async function removeTree(target: string, bindings?: NativeBindings): Promise<void> {
  if (typeof bindings?.removeTree === 'function') {
    try {
      await bindings.removeTree(target);
      return;
    } catch (e) {
      if (errCode(e) !== 'ERR_NATIVE_MISSING') throw e;
    }
  }
  try {
    await fs.rm(target, { recursive: true, force: true, maxRetries: 2 });
    return;
  } catch (e) {
    const code = errCode(e);
    if (code !== 'EACCES' && code !== 'EPERM') throw e;
  }
  await makeDirsWritable(target, process.getuid?.());
  await fs.rm(target, { recursive: true, force: true, maxRetries: 2 });
}
