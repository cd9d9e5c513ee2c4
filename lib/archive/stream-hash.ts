/**
 * The diffID hash of a layer stream (sha256 of every uncompressed byte), and optionally the CRC-64 of file bodies
 * inside it (tar-split's per-file checksums): on the thread pool when the addon can (one job per chunk, in order,
 * see native/sha256.cc), else with node:crypto and the JavaScript CRC-64 on this thread.
 * @module
 */
import { createHash } from 'node:crypto';

import { loadBindings } from '../native/bindings';
import type { NativeBindings, Sha256Stream } from '../native/types';
import { CRC_RANGE_END, CRC_RANGE_START } from '../native/types';
import { Crc64 } from './crc64';

/** Input bytes queued for hashing and not hashed yet before {@link StreamHasher.update} asks the caller to wait. */
const HASH_PENDING_MAX = 8 << 20;

/** Receives the CRC-64s completed by one chunk's ranges: 8 bytes big-endian each, in order. */
export type CrcSink = (crcs: Buffer) => void;

/** A running sha256 (and CRC-64 ranges) over a stream fed chunk by chunk. */
export interface StreamHasher {
  /**
   * Hashes a chunk, calls `release` once the chunk is no longer needed, and with `crcRanges` (triples as in
   * {@link Sha256Stream.update}) hands the completed checksums to `onCrcs`, in chunk order. Returns a promise
   * when the caller should wait for the hash to catch up, else undefined. The chunk must not change until
   * `release`.
   */
  update(chunk: Buffer, release?: () => void, crcRanges?: Uint32Array | null, onCrcs?: CrcSink): Promise<void> | undefined;
  /** The lowercase hex digest ('' for {@link noHash}); fails if any update failed. */
  digest(): Promise<string>;
}

/** Hashes on the libuv pool through the addon's {@link Sha256Stream}. */
class PoolHasher implements StreamHasher {
  private readonly queue: Array<{ done: Promise<void>; end: number }> = [];
  private head = 0;
  private submitted = 0;
  private hashed = 0;

  constructor(private readonly s: Sha256Stream) {}

  update(c: Buffer, release?: () => void, crcRanges?: Uint32Array | null, onCrcs?: CrcSink): Promise<void> | undefined {
    this.submitted += c.length;
    const end = this.submitted;
    let hashed: Promise<unknown> = crcRanges ? this.s.update(c, crcRanges).then((crcs) => onCrcs?.(crcs)) : this.s.update(c);
    if (release) hashed = hashed.finally(release);
    const done = hashed.then(() => {
      this.hashed = Math.max(this.hashed, end);
    });
    done.catch(() => undefined);
    this.queue.push({ done, end });
    while (this.head < this.queue.length && this.queue[this.head]!.end <= this.hashed) this.head++;
    if (this.head > 64) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    return this.submitted - this.hashed > HASH_PENDING_MAX ? this.wait() : undefined;
  }

  private async wait(): Promise<void> {
    while (this.submitted - this.hashed > HASH_PENDING_MAX && this.head < this.queue.length) await this.queue[this.head++]!.done;
  }

  async digest(): Promise<string> {
    // Updates run in order: the digest job runs after all of them, but their failures must surface.
    for (let i = this.head; i < this.queue.length; i++) await this.queue[i]!.done;
    return this.s.digest();
  }
}

/** CRC-64 ranges on this thread (the fallback of both hashers). */
class LocalCrc {
  private crc = new Crc64();

  run(c: Buffer, ranges: Uint32Array): Buffer {
    const out: Buffer[] = [];
    for (let i = 0; i + 2 < ranges.length; i += 3) {
      const off = ranges[i]!;
      const len = ranges[i + 1]!;
      const flags = ranges[i + 2]!;
      if (flags & CRC_RANGE_START) this.crc = new Crc64();
      this.crc.update(c.subarray(off, off + len));
      if (flags & CRC_RANGE_END) out.push(this.crc.digest());
    }
    return Buffer.concat(out);
  }
}

/** Hashes with node:crypto on this thread. */
class LocalHasher implements StreamHasher {
  private readonly h: ReturnType<typeof createHash> | null;
  private readonly crc = new LocalCrc();

  constructor(sha: boolean) {
    this.h = sha ? createHash('sha256') : null;
  }

  update(c: Buffer, release?: () => void, crcRanges?: Uint32Array | null, onCrcs?: CrcSink): undefined {
    this.h?.update(c);
    if (crcRanges) onCrcs?.(this.crc.run(c, crcRanges));
    release?.();
    return undefined;
  }

  async digest(): Promise<string> {
    return this.h ? this.h.digest('hex') : '';
  }
}

/** Hashes nothing (`hash: false`), computes CRC ranges only when given (on this thread). */
export function noHash(): StreamHasher {
  return new LocalHasher(false);
}

/**
 * A pool hasher when the addon provides one, else the same hash on this thread. `b`: the bindings to use
 * (default: the real addon if it loads; null: hash on this thread).
 */
export async function makeHasher(b?: Pick<NativeBindings, 'createSha256'> | null): Promise<StreamHasher> {
  if (b === undefined) {
    try {
      b = loadBindings();
    } catch {
      b = null;
    }
  }
  if (b !== null) {
    try {
      const s = await b.createSha256();
      // Mocked bindings may hand back nothing usable.
      if (typeof s?.update === 'function' && typeof s.digest === 'function') return new PoolHasher(s);
    } catch {
      // An addon without it (or bindings that do not provide it): the same hash, on this thread.
    }
  }
  return new LocalHasher(true);
}
