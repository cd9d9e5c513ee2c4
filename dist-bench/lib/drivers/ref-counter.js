"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.RefCounter = void 0;
/**
 * Reference counts of mounted layers: concurrent gets of one id share one mount, the last put unmounts.
 * @module
 */
const errors_1 = require("./errors");
/** Counts active gets per id. Callers hold the per-id lock around increment/decrement and the mount work. */
class RefCounter {
    counts = new Map();
    /**
     * Increments the count; `isMounted` is consulted the first time an id is seen, so a mount left by an earlier
     * process (or before a restart) is adopted with a count of one rather than mounted twice.
     * Resolves to the count after incrementing.
     */
    async increment(id, isMounted) {
        let n = this.counts.get(id);
        if (n === undefined)
            n = (await isMounted()) ? 1 : 0;
        n += 1;
        this.counts.set(id, n);
        return n;
    }
    /** Decrements the count; resolves to the count after decrementing. Throws NotMountedError at zero. */
    async decrement(id, isMounted) {
        let n = this.counts.get(id);
        if (n === undefined)
            n = (await isMounted()) ? 1 : 0;
        if (n <= 0) {
            this.counts.delete(id);
            throw new errors_1.NotMountedError(id);
        }
        n -= 1;
        if (n === 0)
            this.counts.delete(id);
        else
            this.counts.set(id, n);
        return n;
    }
    /** Current count (0 when unknown). */
    count(id) {
        return this.counts.get(id) ?? 0;
    }
    /** Forgets an id (after remove or cleanup). */
    reset(id) {
        this.counts.delete(id);
    }
    /** Ids with a positive count. */
    active() {
        return [...this.counts.keys()];
    }
}
exports.RefCounter = RefCounter;
//# sourceMappingURL=ref-counter.js.map