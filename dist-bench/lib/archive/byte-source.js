"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.ByteSource = void 0;
/**
 * A pull-based reader over an async iterable of byte chunks, for the tar parser: exact reads of header blocks
 * and zero-copy slices of bodies.
 * @module
 */
const errors_1 = require("../errors");
const EMPTY = Buffer.alloc(0);
/** Reads exact byte counts and bounded slices from an async chunk source. */
class ByteSource {
    it;
    buf = EMPTY;
    off = 0;
    ended = false;
    /** Total bytes consumed by reads and skips so far. */
    position = 0;
    constructor(source) {
        this.it = source[Symbol.asyncIterator]();
    }
    async fill() {
        while (!this.ended) {
            const r = await this.it.next();
            if (r.done) {
                this.ended = true;
                return false;
            }
            const v = r.value;
            if (v.length === 0)
                continue;
            this.buf = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.length);
            this.off = 0;
            return true;
        }
        return false;
    }
    /**
     * Reads exactly `n` bytes. Resolves to null when the source ended before the first byte; throws an
     * InvalidArchiveError when it ends part-way (a truncated archive).
     */
    async readExact(n, what) {
        if (this.buf.length - this.off >= n) {
            const out = this.buf.subarray(this.off, this.off + n);
            this.off += n;
            this.position += n;
            return out;
        }
        const parts = [];
        let got = 0;
        while (got < n) {
            if (this.off >= this.buf.length && !(await this.fill())) {
                if (got === 0)
                    return null;
                throw new errors_1.InvalidArchiveError(`unexpected end of archive in ${what} (${got} of ${n} bytes)`);
            }
            const take = Math.min(n - got, this.buf.length - this.off);
            parts.push(this.buf.subarray(this.off, this.off + take));
            this.off += take;
            got += take;
        }
        this.position += n;
        return parts.length === 1 ? parts[0] : Buffer.concat(parts, n);
    }
    /** Returns up to `max` bytes (at least one) without copying; throws on end of input. */
    async readSome(max, what) {
        if (this.off >= this.buf.length && !(await this.fill())) {
            throw new errors_1.InvalidArchiveError(`unexpected end of archive in ${what}`);
        }
        const take = Math.min(max, this.buf.length - this.off);
        const out = this.buf.subarray(this.off, this.off + take);
        this.off += take;
        this.position += take;
        return out;
    }
    /** Reads everything left (trailing bytes after the end-of-archive marker), calling `sink` per chunk. */
    async drain(sink) {
        let n = 0;
        for (;;) {
            if (this.off < this.buf.length) {
                const rest = this.buf.subarray(this.off);
                this.off = this.buf.length;
                n += rest.length;
                this.position += rest.length;
                sink?.(rest);
            }
            if (!(await this.fill()))
                return n;
        }
    }
    /** Stops reading the source (closing it if it supports return()). */
    async close() {
        if (!this.ended) {
            this.ended = true;
            await this.it.return?.();
        }
    }
}
exports.ByteSource = ByteSource;
//# sourceMappingURL=byte-source.js.map