/**
 * Reference counts of mounted layers: concurrent gets of one id share one mount, the last put unmounts.
 * @module
 */
import { NotMountedError } from './errors';

/**
 * Counts active gets per id. Callers hold the per-id lock around increment/decrement and the mount work.
 *
 * @example
 * ```ts
 * import { KeyedLock, RefCounter } from 'graphdriver';
 *
 * const locks = new KeyedLock();
 * const refs = new RefCounter();
 * const isMounted = async (): Promise<boolean> => false; // e.g. look the mount point up in /proc/self/mountinfo
 * const get = (id: string): Promise<void> => locks.run(id, async () => {
 *   if ((await refs.increment(id, isMounted)) === 1) console.log(`mount ${id}`); // only the first get mounts
 * });
 * const put = (id: string): Promise<void> => locks.run(id, async () => {
 *   if ((await refs.decrement(id, isMounted)) === 0) console.log(`unmount ${id}`); // only the last put unmounts
 * });
 * await get('c1'); await get('c1'); await put('c1'); await put('c1'); // logs 'mount c1', then 'unmount c1'
 * ```
 */
export class RefCounter {
  private readonly counts = new Map<string, number>();

  /**
   * Increments the count; `isMounted` is consulted the first time an id is seen, so a mount left by an earlier
   * process (or before a restart) is adopted with a count of one rather than mounted twice.
   * Resolves to the count after incrementing.
   */
  async increment(id: string, isMounted: () => Promise<boolean>): Promise<number> {
    let n = this.counts.get(id);
    if (n === undefined) n = (await isMounted()) ? 1 : 0;
    n += 1;
    this.counts.set(id, n);
    return n;
  }

  /** Decrements the count; resolves to the count after decrementing. Throws NotMountedError at zero. */
  async decrement(id: string, isMounted: () => Promise<boolean>): Promise<number> {
    let n = this.counts.get(id);
    if (n === undefined) n = (await isMounted()) ? 1 : 0;
    if (n <= 0) {
      this.counts.delete(id);
      throw new NotMountedError(id);
    }
    n -= 1;
    if (n === 0) this.counts.delete(id);
    else this.counts.set(id, n);
    return n;
  }

  /** Current count (0 when unknown). */
  count(id: string): number {
    return this.counts.get(id) ?? 0;
  }

  /** Forgets an id (after remove or cleanup). */
  reset(id: string): void {
    this.counts.delete(id);
  }

  /** Ids with a positive count. */
  active(): string[] {
    return [...this.counts.keys()];
  }
}
