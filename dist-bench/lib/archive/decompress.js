"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.detectCompression = detectCompression;
exports.decompressStream = decompressStream;
/**
 * Transparent decompression of layer streams by magic bytes (gzip, zstd, or none), with limits against
 * decompression bombs.
 * @module
 */
const node_zlib_1 = require("node:zlib");
const node_stream_1 = require("node:stream");
const zstd_napi_1 = require("zstd-napi");
const errors_1 = require("../errors");
const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
/** Identifies the compression of a stream from its first bytes. */
function detectCompression(head) {
    const starts = (m) => head.length >= m.length && m.every((b, i) => head[i] === b);
    if (starts(GZIP_MAGIC))
        return 'gzip';
    if (starts(ZSTD_MAGIC))
        return 'zstd';
    return 'none';
}
async function* prepend(first, rest) {
    yield first;
    for (;;) {
        const r = await rest.next();
        if (r.done)
            return;
        yield r.value;
    }
}
/**
 * Returns the uncompressed bytes of `input`, detecting gzip/zstd by magic. Corrupt compressed data raises
 * InvalidArchiveError; exceeding a limit raises ArchiveLimitError.
 */
async function* decompressStream(input, limits = {}) {
    const it = input[Symbol.asyncIterator]();
    // Gather enough bytes to see the magic (chunks may be tiny).
    let head = Buffer.alloc(0);
    while (head.length < 4) {
        const r = await it.next();
        if (r.done)
            break;
        head = Buffer.concat([head, r.value]);
    }
    const kind = detectCompression(head);
    if (kind === 'none') {
        yield* prepend(head, it);
        return;
    }
    let compressed = 0;
    const counted = node_stream_1.Readable.from((async function* () {
        for await (const c of prepend(head, it)) {
            compressed += c.length;
            yield c;
        }
    })(), { objectMode: false });
    const decoder = kind === 'gzip' ? (0, node_zlib_1.createGunzip)({ chunkSize: 256 * 1024 }) : new zstd_napi_1.DecompressStream();
    let inputError = null;
    counted.on('error', (e) => {
        inputError = e;
        decoder.destroy(e);
    });
    counted.pipe(decoder);
    const maxSize = limits.maxUncompressedSize ?? Number.POSITIVE_INFINITY;
    const maxRatio = limits.maxRatio ?? 2000;
    const floor = limits.ratioFloor ?? 1 << 30;
    let out = 0;
    try {
        for await (const c of decoder) {
            out += c.length;
            if (out > maxSize)
                throw new errors_1.ArchiveLimitError(`uncompressed layer exceeds ${maxSize} bytes`);
            if (out > floor && out > maxRatio * Math.max(compressed, 1)) {
                throw new errors_1.ArchiveLimitError(`decompression ratio above ${maxRatio}:1 (possible decompression bomb)`);
            }
            yield c;
        }
    }
    catch (e) {
        if (e instanceof errors_1.InvalidArchiveError || e === inputError)
            throw e;
        const err = e;
        if (err.code?.startsWith('Z_') || kind === 'zstd') {
            throw new errors_1.InvalidArchiveError(`corrupt ${kind} stream: ${err.message}`, undefined, { cause: e });
        }
        throw e;
    }
    finally {
        counted.destroy();
        decoder.destroy();
    }
}
//# sourceMappingURL=decompress.js.map