/**
 * Byte sources for the archive engine: reading a file in chunks whose buffers are reused once the consumer hands
 * them back.
 *
 * Why: a Node stream allocates a fresh buffer for every read, and the first write to fresh memory costs a page
 * fault per 4 KiB. On some machines (VMs with expensive faults) that alone cost more than GNU tar's whole
 * extraction of the same file: reading 180 MB through fs.createReadStream took about 0.4 s of system time there,
 * 0.04 s into reused buffers. {@link applyLayer} recycles the chunks of a {@link RecyclableSource} as soon as
 * nothing refers to them any more (parsed, hashed, written).
 * @module
 */
import * as fs from 'node:fs';

/**
 * An async source of byte chunks whose buffers may be handed back for reuse. Until a chunk is recycled the
 * source never touches it; a consumer that never recycles simply gets fresh buffers.
 */
export interface RecyclableSource extends AsyncIterable<Buffer> {
  /** Hands back a chunk this source yielded, which the caller no longer uses: the source may overwrite it. */
  recycle(chunk: Buffer): void;
}

/**
 * Reference counts on a recyclable source's chunks: every holder (a parser, a hash job, a write batch, a
 * recorder) holds a chunk while it uses it, and the chunk goes back to the source when the last one lets go.
 * A holder that never lets go only costs the reuse of that chunk.
 */
export class ChunkRefs {
  private readonly counts = new Map<Buffer, number>();

  constructor(private readonly source: RecyclableSource) {}

  /** Adds `n` holders of `c`. */
  hold(c: Buffer, n = 1): void {
    this.counts.set(c, (this.counts.get(c) ?? 0) + n);
  }

  /** One holder of `c` lets go; the last one hands it back to the source. */
  drop(c: Buffer): void {
    const n = this.counts.get(c);
    if (n === undefined) return;
    if (n > 1) {
      this.counts.set(c, n - 1);
      return;
    }
    this.counts.delete(c);
    this.source.recycle(c);
  }
}

/** Whether `x` implements {@link RecyclableSource}. */
export function isRecyclable(x: unknown): x is RecyclableSource {
  return typeof (x as Partial<RecyclableSource> | null)?.recycle === 'function';
}

/** Options of {@link fileChunks}. */
export interface FileChunksOptions {
  /** Bytes per read (default 1 MiB). */
  chunkSize?: number;
  /** Offset of the first byte to read (default 0): with `length`, a member of an archive read in place. */
  start?: number;
  /** Bytes to read from `start` (default: to the end of the file). Fewer in the file is not an error here. */
  length?: number;
  /** Extra open(2) flags, e.g. O_NOFOLLOW (read-only is implied). */
  openFlags?: number;
}

const DEFAULT_CHUNK = 1 << 20;
/**
 * Recycled buffers kept for the next reads, per chunk size, across sources: a layer apply holds about 20 MiB of
 * input at most (batches in flight and hashing, see lib/archive/apply.ts), so after the first apply a process
 * reads layers without faulting in new memory. Released after a while without use.
 */
const IDLE_BYTES = 32 << 20;
const IDLE_TIMEOUT_MS = 30_000;
const idle = new Map<number, Buffer[]>();
let idleTimer: NodeJS.Timeout | null = null;
/** Buffers lent out by a source and not recycled yet: only those may come back (never twice). */
const lent = new WeakSet<ArrayBuffer>();

function takeBuffer(size: number): Buffer {
  const b = idle.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size);
  lent.add(b.buffer as ArrayBuffer);
  return b;
}

function giveBack(chunk: Buffer): void {
  const ab = chunk.buffer as ArrayBuffer;
  if (!lent.has(ab)) return;
  lent.delete(ab);
  const size = ab.byteLength;
  const list = idle.get(size) ?? [];
  if ((list.length + 1) * size > IDLE_BYTES) return;
  list.push(Buffer.from(ab, 0, size));
  idle.set(size, list);
  idleTimer ??= setTimeout(() => {
    idle.clear();
    idleTimer = null;
  }, IDLE_TIMEOUT_MS).unref();
  idleTimer.refresh();
}

function read(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, 0, buf.length, pos, (e, n) => (e ? reject(e) : resolve(n))));
}

/** Reads issued ahead of the consumer, so that the disk works while the previous chunk is processed. */
const READ_AHEAD = 2;

interface PendingRead {
  buf: Buffer;
  pos: number;
  done: Promise<number>;
}

/**
 * The bytes of the file at `path`, in chunks read into recycled buffers (see {@link RecyclableSource}), with a
 * couple of reads in flight ahead of the consumer. Each iteration opens the file anew and reads it from the
 * start.
 */
export function fileChunks(path: string, opts: FileChunksOptions = {}): RecyclableSource {
  const size = opts.chunkSize ?? DEFAULT_CHUNK;
  if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`chunkSize must be a positive integer, got ${size}`);
  const start = opts.start ?? 0;
  const end = opts.length === undefined ? Number.MAX_SAFE_INTEGER : start + opts.length;
  if (!Number.isSafeInteger(start) || start < 0 || !Number.isSafeInteger(end) || end < start) {
    throw new RangeError(`invalid range: start ${String(opts.start)}, length ${String(opts.length)}`);
  }
  return {
    async *[Symbol.asyncIterator](): AsyncGenerator<Buffer, void, undefined> {
      const fh = await fs.promises.open(path, fs.constants.O_RDONLY | (opts.openFlags ?? 0));
      const pending: PendingRead[] = [];
      let next = start;
      const issue = (): void => {
        const buf = takeBuffer(size);
        // The last read of a range asks for what is left of it only (a view of the recycled buffer).
        const want = Math.min(size, end - next);
        const done = read(fh.fd, want === size ? buf : buf.subarray(0, want), next);
        done.catch(() => undefined); // awaited below, or dropped after an earlier failure
        pending.push({ buf, pos: next, done });
        next += want;
      };
      try {
        for (;;) {
          while (pending.length < READ_AHEAD) issue();
          const r = pending.shift()!;
          let n: number;
          try {
            n = await r.done;
          } catch (e) {
            giveBack(r.buf);
            throw e;
          }
          if (n === 0) {
            giveBack(r.buf);
            return;
          }
          if (n < size) {
            // A short read: the reads issued after it started at the wrong offset. Drop them and go on from
            // where this one ended (a regular file ends with one; the next read then returns 0).
            await discard(pending);
            next = r.pos + n;
            yield r.buf.subarray(0, n);
            continue;
          }
          yield r.buf;
        }
      } finally {
        // Reads still in flight write into their buffers: wait for them before the buffers or the fd go.
        await discard(pending);
        await fh.close();
      }
    },
    recycle: giveBack,
  };
}

async function discard(pending: PendingRead[]): Promise<void> {
  for (const r of pending.splice(0)) {
    await r.done.catch(() => undefined);
    giveBack(r.buf);
  }
}
