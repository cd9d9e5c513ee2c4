/**
 * Small durable-file helpers for the store's metadata: files written then fsynced, atomic replacement through a
 * temp file and rename(2), directory fsync so renames survive a power cut.
 * @module
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

/** `n` random bytes as lowercase hex (64 characters by default, like Docker's ids). */
export function randomHex(bytes = 32): string {
  return randomBytes(bytes).toString('hex');
}

/** The errno code of a caught error ('' when there is none). */
export function errCode(e: unknown): string {
  return typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string' ? (e as { code: string }).code : '';
}

/** Durability switch shared by the helpers: tests and throwaway stores may turn fsync off. */
export interface SyncOpts {
  sync: boolean;
}

/** fsyncs a directory so that entries created, renamed or removed in it are on disk. */
export async function fsyncDir(dir: string, o: SyncOpts): Promise<void> {
  if (!o.sync) return;
  const h = await fs.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** fsyncs a file written earlier without sync. */
export async function fsyncFile(file: string, o: SyncOpts): Promise<void> {
  if (!o.sync) return;
  const h = await fs.open(file, fs.constants.O_RDONLY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** Creates `file` (which must not exist) with `data`, fsynced. */
export async function writeNewFile(file: string, data: string | Buffer, o: SyncOpts, mode = 0o644): Promise<void> {
  const h = await fs.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode);
  try {
    await h.writeFile(data);
    if (o.sync) await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * Replaces `file` atomically: readers see the old content or the new one, never a mix or an empty file, also
 * after a crash. The temp file lives in the same directory (`.tmp-*`, swept by {@link removeTempFiles}).
 */
export async function atomicWriteFile(file: string, data: string | Buffer, o: SyncOpts, mode = 0o644): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.tmp-${randomHex(8)}-${path.basename(file)}`);
  try {
    await writeNewFile(tmp, data, o, mode);
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
  await fsyncDir(dir, o);
}

/** Removes `.tmp-*` files left in `dir` by an interrupted {@link atomicWriteFile}. */
export async function removeTempFiles(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (e) {
    if (errCode(e) === 'ENOENT') return;
    throw e;
  }
  await Promise.all(names.filter((n) => n.startsWith('.tmp-')).map((n) => fs.rm(path.join(dir, n), { force: true, recursive: true })));
}

/** Reads a small text file; null when it does not exist. */
export async function readTextIfExists(file: string): Promise<string | null> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    if (errCode(e) === 'ENOENT') return null;
    throw e;
  }
}

/** Directory entries, [] when the directory does not exist. */
export async function readDirIfExists(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch (e) {
    if (errCode(e) === 'ENOENT') return [];
    throw e;
  }
}

/** Whether `p` exists (without following a final symlink). */
export async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch (e) {
    if (errCode(e) === 'ENOENT') return false;
    throw e;
  }
}

/** A single-holder async mutex (FIFO). */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => (release = r));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
