/**
 * A counting semaphore whose waits can be aborted: bounds concurrent blob transfers.
 * @module
 */
import { abortReason } from './retry';

/** See the module documentation. */
export class Limiter {
  private active = 0;
  private readonly queue: Array<{ go: () => void; fail: (e: unknown) => void }> = [];

  constructor(readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw new TypeError('concurrency must be an integer >= 1');
  }

  /** Takes a slot, waiting while all are taken; rejects with the abort reason if `signal` aborts first. */
  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    if (this.active < this.max) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const entry = {
        go: (): void => {
          signal?.removeEventListener('abort', onAbort);
          this.active++;
          resolve();
        },
        fail: reject,
      };
      const onAbort = (): void => {
        const i = this.queue.indexOf(entry);
        if (i >= 0) this.queue.splice(i, 1);
        reject(abortReason(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(entry);
    });
  }

  /** Gives a slot back. */
  release(): void {
    this.active--;
    const next = this.queue.shift();
    if (next) next.go();
  }

  /** Runs `fn` in a slot. */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.acquire(signal);
    try {
      return await fn();
    } finally {
      this.release();
    }
  }
}
