/**
 * Per-key mutual exclusion: operations on the same layer id run one after another, different ids concurrently.
 * @module
 */

/**
 * A map of FIFO locks keyed by string; entries disappear when idle.
 *
 * @example
 * ```ts
 * import { KeyedLock } from 'graphdriver';
 *
 * const locks = new KeyedLock();
 * const log: string[] = [];
 * await Promise.all([
 *   locks.run('layer1', async () => log.push('create layer1')),
 *   locks.run('layer1', async () => log.push('mount layer1')), // waits for the create of layer1
 *   locks.run('layer2', async () => log.push('create layer2')), // runs alongside layer1's work
 * ]);
 * console.log(locks.size); // 0: idle keys are dropped
 * ```
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `fn` once every earlier holder of `key` has finished. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Number of keys with a holder or waiters (for tests and diagnostics). */
  get size(): number {
    return this.tails.size;
  }
}
