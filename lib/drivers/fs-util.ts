/**
 * Small filesystem helpers shared by the drivers: existence checks that treat only "missing" as false.
 * @module
 */
import * as fs from 'node:fs/promises';

/** The `code` of an error-like value, if it has one. */
export function errCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : undefined;
}

/** Whether an error says the path (or one of its parents) does not exist. */
export function isMissing(e: unknown): boolean {
  const c = errCode(e);
  return c === 'ENOENT' || c === 'ENOTDIR';
}

/** Whether `p` is a directory (not following a final symlink); false when missing, other errors throw. */
export async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await fs.lstat(p)).isDirectory();
  } catch (e) {
    if (isMissing(e)) return false;
    throw e;
  }
}

/** Whether anything exists at `p` (not following a final symlink); other errors than "missing" throw. */
export async function pathExists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch (e) {
    if (isMissing(e)) return false;
    throw e;
  }
}

/** The text of `file`, or null when it does not exist. */
export async function readOptional(file: string): Promise<string | null> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    if (isMissing(e)) return null;
    throw e;
  }
}
