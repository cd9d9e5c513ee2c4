/**
 * Recursive removal of a layer tree that also copes with directories the caller cannot write (a layer of an
 * image may hold `dr-xr-xr-x` directories; without CAP_DAC_OVERRIDE their entries cannot be unlinked).
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

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
 * Removes `target` and everything below it; a missing target is not an error. When permissions get in the way
 * the directories are made writable and the removal is retried once.
 */
export async function removeTree(target: string): Promise<void> {
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
