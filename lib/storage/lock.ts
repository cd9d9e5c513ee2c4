/**
 * The store's inter-process lock: `<root>/graphdriver.lock`, created atomically with link(2) and holding the
 * owner's pid and process start time. Node has no flock(2), so liveness is checked instead: a lock whose process
 * is gone (or whose pid now belongs to a process started at another time) is stale and is taken over.
 * @module
 */
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { StoreLockedError } from './errors';
import { errCode, randomHex } from './fsutil';

/** What a lock file says about its holder. */
export interface LockHolder {
  pid: number;
  /** Start time of the process in clock ticks since boot (/proc/<pid>/stat field 22), null when unknown. */
  startTime: number | null;
}

/** Options of {@link StoreLock.acquire}. */
export interface LockOptions {
  /** How long to wait for a live holder to go away, in ms (default 0: fail at once with ERR_STORE_LOCKED). */
  timeoutMs?: number;
  /** Poll interval while waiting (default 50 ms, growing to 250 ms). */
  pollMs?: number;
}

/** Start time of process `pid`, or null when /proc does not say. */
export function processStartTime(pid: number): number | null {
  try {
    const stat = fsSync.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) may contain spaces and parentheses: fields are counted after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const v = Number(rest[19]);
    return Number.isSafeInteger(v) ? v : null;
  } catch {
    return null;
  }
}

/** Parses lock file content (`<pid> <starttime>\n`); null when it is not a lock we wrote. */
export function parseLockContent(s: string): LockHolder | null {
  const m = /^(\d{1,10})(?: (\d{1,20}|-))?\n?$/.exec(s);
  if (!m) return null;
  const pid = Number(m[1]);
  if (!Number.isSafeInteger(pid) || pid <= 0) return null;
  const st = m[2] === undefined || m[2] === '-' ? null : Number(m[2]);
  return { pid, startTime: st !== null && Number.isSafeInteger(st) ? st : null };
}

/** Whether the holder process still runs (same pid and, when recorded, same start time). */
export function holderAlive(h: LockHolder): boolean {
  try {
    process.kill(h.pid, 0);
  } catch (e) {
    // EPERM: the process exists but belongs to someone else.
    if (errCode(e) !== 'EPERM') return false;
  }
  if (h.startTime === null) return true;
  const now = processStartTime(h.pid);
  return now === null || now === h.startTime;
}

const held = new Set<string>();
let exitHookInstalled = false;

/** Removes the lock files of this process when it exits without closing its stores (best effort). */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const f of held) {
      try {
        if (fsSync.readFileSync(f, 'utf8') === ownContent()) fsSync.unlinkSync(f);
      } catch {
        // already gone
      }
    }
  });
}

let cachedContent: string | null = null;
function ownContent(): string {
  cachedContent ??= `${process.pid} ${processStartTime(process.pid) ?? '-'}\n`;
  return cachedContent;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A held store lock; {@link release} removes the file.
 *
 * @example
 * ```ts
 * import { StoreLock } from 'graphdriver';
 *
 * // the lock Storage.open takes: one Storage per root at a time, across processes
 * const lock = await StoreLock.acquire('/var/lib/graphdriver/graphdriver.lock', { timeoutMs: 5000 });
 * try {
 *   // ... read or copy the store's files while no Storage can open it ...
 * } finally {
 *   await lock.release();
 * }
 * ```
 */
export class StoreLock {
  private released = false;

  private constructor(readonly file: string) {}

  /**
   * Takes the lock at `file`, waiting up to `timeoutMs` for a live holder. Throws {@link StoreLockedError}
   * (ERR_STORE_LOCKED) when it stays held, including by another Storage of this same process.
   */
  static async acquire(file: string, opts: LockOptions = {}): Promise<StoreLock> {
    const timeout = Math.max(0, opts.timeoutMs ?? 0);
    let poll = Math.max(5, opts.pollMs ?? 50);
    const start = Date.now();
    const content = ownContent();
    await fs.mkdir(path.dirname(file), { recursive: true });
    await StoreLock.sweepTemps(file);
    for (;;) {
      const holder = await StoreLock.tryCreate(file, content);
      if (holder === 'acquired') {
        held.add(file);
        installExitHook();
        return new StoreLock(file);
      }
      if (holder !== null && !holderAlive(holder)) {
        await StoreLock.breakStale(file, holder);
        continue;
      }
      if (holder === null && (await StoreLock.unreadableIsStale(file))) {
        await StoreLock.breakStale(file, null);
        continue;
      }
      const waited = Date.now() - start;
      if (waited >= timeout) throw new StoreLockedError(file, holder?.pid ?? null, waited);
      await sleep(Math.min(poll, timeout - waited));
      poll = Math.min(poll * 2, 250);
    }
  }

  /**
   * Creates the lock with its full content in one step: the content goes to a temp file first, which is then
   * hard-linked to the lock name (link fails with EEXIST when the lock exists), so nobody ever reads a lock file
   * without its pid. Resolves to 'acquired', or to the current holder (null when unreadable).
   */
  private static async tryCreate(file: string, content: string): Promise<'acquired' | LockHolder | null> {
    const tmp = `${file}.${process.pid}.${randomHex(6)}.tmp`;
    await fs.writeFile(tmp, content, { mode: 0o644, flag: 'wx' });
    try {
      await fs.link(tmp, file);
      return 'acquired';
    } catch (e) {
      if (errCode(e) !== 'EEXIST') throw e;
    } finally {
      await fs.unlink(tmp).catch(() => undefined);
    }
    try {
      return parseLockContent(await fs.readFile(file, 'utf8'));
    } catch (e) {
      if (errCode(e) === 'ENOENT') return StoreLock.tryCreate(file, content);
      throw e;
    }
  }

  /** Removes temp files of lock attempts by processes that died between creating and removing them. */
  private static async sweepTemps(file: string): Promise<void> {
    const base = path.basename(file);
    let names: string[];
    try {
      names = await fs.readdir(path.dirname(file));
    } catch {
      return;
    }
    for (const n of names) {
      const m = n.startsWith(`${base}.`) ? /^(\d{1,10})\.[0-9a-f]+\.(?:tmp|stale)$/.exec(n.slice(base.length + 1)) : null;
      if (m && !holderAlive({ pid: Number(m[1]), startTime: null })) await fs.unlink(path.join(path.dirname(file), n)).catch(() => undefined);
    }
  }

  /** A lock file we cannot parse is only considered stale once it is old (someone may be replacing it). */
  private static async unreadableIsStale(file: string): Promise<boolean> {
    try {
      const st = await fs.stat(file);
      return Date.now() - st.mtimeMs > 10_000;
    } catch {
      return true;
    }
  }

  /**
   * Removes a stale lock without racing a process that takes it over at the same moment: the file is renamed
   * aside first, and only deleted when it is still the stale one that was judged; a fresh lock renamed by
   * mistake is linked back.
   */
  private static async breakStale(file: string, stale: LockHolder | null): Promise<void> {
    const aside = `${file}.${process.pid}.${randomHex(6)}.stale`;
    try {
      await fs.rename(file, aside);
    } catch (e) {
      if (errCode(e) === 'ENOENT') return;
      throw e;
    }
    let now: LockHolder | null = null;
    try {
      now = parseLockContent(await fs.readFile(aside, 'utf8'));
    } catch {
      now = null;
    }
    const same = stale === null ? now === null : now !== null && now.pid === stale.pid && now.startTime === stale.startTime;
    if (!same) await fs.link(aside, file).catch(() => undefined);
    await fs.unlink(aside).catch(() => undefined);
  }

  /** Removes the lock file (only when it is still ours). */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    held.delete(this.file);
    try {
      if ((await fs.readFile(this.file, 'utf8')) === ownContent()) await fs.unlink(this.file);
    } catch (e) {
      if (errCode(e) !== 'ENOENT') throw e;
    }
  }
}
