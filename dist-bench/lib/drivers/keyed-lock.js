"use strict";
/**
 * Per-key mutual exclusion: operations on the same layer id run one after another, different ids concurrently.
 * @module
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.KeyedLock = void 0;
/** A map of FIFO locks keyed by string; entries disappear when idle. */
class KeyedLock {
    tails = new Map();
    /** Runs `fn` once every earlier holder of `key` has finished. */
    async run(key, fn) {
        const prev = this.tails.get(key) ?? Promise.resolve();
        let release;
        const mine = new Promise((r) => (release = r));
        const tail = prev.then(() => mine);
        this.tails.set(key, tail);
        await prev;
        try {
            return await fn();
        }
        finally {
            release();
            if (this.tails.get(key) === tail)
                this.tails.delete(key);
        }
    }
    /** Number of keys with a holder or waiters (for tests and diagnostics). */
    get size() {
        return this.tails.size;
    }
}
exports.KeyedLock = KeyedLock;
//# sourceMappingURL=keyed-lock.js.map