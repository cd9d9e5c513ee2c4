/**
 * Transparent decompression of layer streams by magic bytes (gzip, zstd, or none), with limits against
 * decompression bombs.
 * @module
 */
import { createGunzip } from 'node:zlib';
import { Readable } from 'node:stream';

import { DecompressStream } from 'zstd-napi';

import { ArchiveLimitError, InvalidArchiveError } from '../errors';

/** Compression detected on a layer stream. */
export type Compression = 'none' | 'gzip' | 'zstd';

/** Limits on what decompression may produce. */
export interface DecompressLimits {
  /** Refuse more than this many uncompressed bytes (default: unlimited). */
  maxUncompressedSize?: number;
  /**
   * Refuse output larger than this multiple of the compressed input once it exceeds `ratioFloor` bytes
   * (default 2000; deflate tops out near 1032:1, so only crafted zstd or nested streams get there).
   */
  maxRatio?: number;
  /** Output size below which the ratio is not checked (default 1 GiB). */
  ratioFloor?: number;
}

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** Identifies the compression of a stream from its first bytes. */
export function detectCompression(head: Uint8Array): Compression {
  const starts = (m: number[]): boolean => head.length >= m.length && m.every((b, i) => head[i] === b);
  if (starts(GZIP_MAGIC)) return 'gzip';
  if (starts(ZSTD_MAGIC)) return 'zstd';
  return 'none';
}

function asBuffer(c: Uint8Array): Buffer {
  return Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.length);
}

/**
 * `first`, then the rest of `rest`. The source is closed (return()) when the consumer stops early, so that a
 * file or socket behind it is released.
 */
async function* prepend(first: Buffer, rest: AsyncIterator<Uint8Array>): AsyncGenerator<Uint8Array> {
  let done = false;
  try {
    if (first.length > 0) yield first;
    for (;;) {
      const r = await rest.next();
      if (r.done) {
        done = true;
        return;
      }
      yield r.value;
    }
  } finally {
    if (!done) await rest.return?.();
  }
}

/** A layer stream after detection: its compression and its uncompressed bytes. */
export interface DecompressedInput {
  compression: Compression;
  /**
   * The uncompressed bytes. Uncompressed input passes through unchanged: the chunks are the input's own
   * (except when its first chunks were shorter than a magic number, which are joined).
   */
  stream: AsyncGenerator<Uint8Array>;
}

/**
 * Reads the first bytes of `input` to detect its compression and returns the uncompressed stream. Corrupt
 * compressed data raises InvalidArchiveError while reading; exceeding a limit raises ArchiveLimitError.
 */
export async function openDecompressed(input: AsyncIterable<Uint8Array>, limits: DecompressLimits = {}): Promise<DecompressedInput> {
  const it = input[Symbol.asyncIterator]();
  // Gather enough bytes to see the magic (chunks may be tiny).
  let head: Buffer = Buffer.alloc(0);
  while (head.length < 4) {
    const r = await it.next();
    if (r.done) break;
    head = head.length === 0 ? asBuffer(r.value) : Buffer.concat([head, r.value]);
  }
  const compression = detectCompression(head);
  if (compression === 'none') return { compression, stream: prepend(head, it) };
  return { compression, stream: decompress(compression, head, it, limits) };
}

async function* decompress(kind: 'gzip' | 'zstd', head: Buffer, it: AsyncIterator<Uint8Array>, limits: DecompressLimits): AsyncGenerator<Uint8Array> {
  let compressed = 0;
  const counted = Readable.from(
    (async function* () {
      for await (const c of prepend(head, it)) {
        compressed += c.length;
        yield c;
      }
    })(),
    { objectMode: false },
  );
  const decoder = kind === 'gzip' ? createGunzip({ chunkSize: 256 * 1024 }) : new DecompressStream();
  let inputError: unknown = null;
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
    for await (const c of decoder as AsyncIterable<Buffer>) {
      out += c.length;
      if (out > maxSize) throw new ArchiveLimitError(`uncompressed layer exceeds ${maxSize} bytes`);
      if (out > floor && out > maxRatio * Math.max(compressed, 1)) {
        throw new ArchiveLimitError(`decompression ratio above ${maxRatio}:1 (possible decompression bomb)`);
      }
      yield c;
    }
  } catch (e) {
    if (e instanceof InvalidArchiveError || e === inputError) throw e;
    const err = e as NodeJS.ErrnoException;
    if (err.code?.startsWith('Z_') || kind === 'zstd') {
      throw new InvalidArchiveError(`corrupt ${kind} stream: ${err.message}`, undefined, { cause: e });
    }
    throw e;
  } finally {
    counted.destroy();
    decoder.destroy();
  }
}

/**
 * Returns the uncompressed bytes of `input`, detecting gzip/zstd by magic. Corrupt compressed data raises
 * InvalidArchiveError; exceeding a limit raises ArchiveLimitError.
 */
export async function* decompressStream(input: AsyncIterable<Uint8Array>, limits: DecompressLimits = {}): AsyncGenerator<Uint8Array> {
  const { stream } = await openDecompressed(input, limits);
  yield* stream;
}
