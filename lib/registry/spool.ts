/**
 * A temp file written by one producer and read by one consumer at the same time: the reader follows the writer
 * (waiting at the end for more), so a layer downloaded ahead of its turn can be applied while its download is
 * still running, and a layer whose turn comes later costs disk, not memory.
 * @module
 */
import * as fs from 'node:fs/promises';

import { abortReason } from './retry';

const READ_SIZE = 256 << 10;

/** See the module documentation. */
export class Spool {
  private written = 0;
  private finished = false;
  private error: unknown = null;
  private wake: Array<() => void> = [];
  private closed = false;

  private constructor(
    /** The file's path. */
    readonly file: string,
    private readonly fh: fs.FileHandle,
  ) {}

  /** Creates the file (which must not exist). */
  static async create(file: string): Promise<Spool> {
    const fh = await fs.open(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    return new Spool(file, fh);
  }

  /** Bytes written so far. */
  get size(): number {
    return this.written;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = [];
    for (const f of w) f();
  }

  /** Appends a chunk. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.finished || this.closed) throw new Error('spool: write after the end');
    let off = 0;
    while (off < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, off, chunk.length - off, this.written);
      off += bytesWritten;
      this.written += bytesWritten;
    }
    this.notify();
  }

  /** Marks the end of the data. */
  finish(): void {
    this.finished = true;
    this.notify();
  }

  /** Marks the data as bad: the reader fails with `e` (at once, even with unread bytes). */
  fail(e: unknown): void {
    if (this.error === null) this.error = e;
    this.finished = true;
    this.notify();
  }

  /** Reads everything from the start, following the writer; `onBytes` gets the bytes read so far. */
  async *reader(onBytes?: (read: number) => void, signal?: AbortSignal): AsyncGenerator<Buffer> {
    let pos = 0;
    for (;;) {
      if (signal?.aborted) throw abortReason(signal);
      if (this.error !== null) throw this.error;
      if (pos < this.written) {
        const n = Math.min(READ_SIZE, this.written - pos);
        const buf = Buffer.allocUnsafe(n);
        const { bytesRead } = await this.fh.read(buf, 0, n, pos);
        if (bytesRead === 0) throw new Error(`spool ${this.file}: short read at ${pos}`);
        pos += bytesRead;
        // The error may have been set while reading: the bytes are not handed out then.
        if (this.error !== null) throw this.error;
        onBytes?.(pos);
        yield bytesRead === n ? buf : buf.subarray(0, bytesRead);
        continue;
      }
      if (this.finished) return;
      await new Promise<void>((resolve) => {
        const onAbort = (): void => resolve();
        signal?.addEventListener('abort', onAbort, { once: true });
        this.wake.push(() => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    }
  }

  /** Closes and deletes the file; a reader still waiting ends with an error. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.error === null) this.error = new Error(`spool ${this.file} closed`);
    this.finished = true;
    this.notify();
    await this.fh.close().catch(() => undefined);
    await fs.rm(this.file, { force: true });
  }
}
