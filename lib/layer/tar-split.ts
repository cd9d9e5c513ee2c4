/**
 * Exact re-creation of layer tars from metadata, as Docker does with vbatts/tar-split: when a layer is registered,
 * everything of its tar that is not file content (headers, PAX and GNU long-name records, padding, the end marker
 * and whatever follows it) is recorded together with the name, size and CRC-64 of each file body; the bodies
 * themselves are not kept. Later the tar is rebuilt byte for byte from that record and the files of the mounted
 * layer, so `saveImage`/`pushImage` hand out the very tar whose sha256 is the layer's diffID.
 *
 * The record is Docker's `tar-split.json.gz` format (one JSON object per line, gzip-compressed):
 * `{"type":2,"payload":"<base64 raw bytes>","position":0}` for raw segments and
 * `{"type":1,"name":"etc/passwd","size":1234,"payload":"<base64 crc64>","position":1}` for file entries
 * (payload null for empty bodies), positions counting from 0.
 * @module
 */
import { createReadStream } from 'node:fs';
import { createGunzip, createGzip } from 'node:zlib';

import { cleanEntryPath } from '../archive/entry-path';
import { END_OF_INPUT, NEED_INPUT, TarParser } from '../archive/tar-reader';
import { CRC_RANGE_END, CRC_RANGE_START } from '../native/types';
import { goJson } from '../image/config';
import { DigestMismatchError, StoreCorruptError } from '../storage/errors';
import { Crc64 } from '../archive/crc64';

/** File name of the record in a layer's layerdb directory (Docker's). */
export const TAR_SPLIT_FILE = 'tar-split.json.gz';

/** Entry type of a file body (`storage.FileType`). */
export const FILE_ENTRY = 1;
/** Entry type of raw archive bytes (`storage.SegmentType`). */
export const SEGMENT_ENTRY = 2;

/** One record line. */
export type TarSplitEntry =
  | { type: typeof SEGMENT_ENTRY; payload: Buffer; position: number }
  | { type: typeof FILE_ENTRY; name: string; size: number; crc: Buffer | null; position: number };

/** Bytes after the end of the archive are recorded in segments of at most this size (as tar-split does). */
const MAX_SEGMENT = 1 << 20;
/** Deepest path accepted in a record (the archive engine refuses deeper layers anyway). */
const MAX_DEPTH = 1024;
/** Raw bytes without a body in between beyond this are taken as the end of the archive and its trailer. */
const TRAILER_FLUSH = 8 << 20;
/** JSON lines are handed to gzip in batches of about this many characters. */
const GZIP_BATCH = 64 << 10;

/**
 * A record line not written yet. Lines are written in order, and a file entry's line waits for its checksum
 * (computed on the thread pool); the lines behind it wait with it, already built.
 */
interface PendingEntry {
  /**
   * The whole line; for a file entry still waiting, with `\0` where the checksum goes; for a segment, what
   * follows its payload.
   */
  text: string;
  /** A segment's raw bytes: `[bytesOff, bytesOff + bytesLen)` of the recorder's arena (-1: not a segment). */
  bytesOff: number;
  bytesLen: number;
  /** Whether the file entry still waits for its CRC-64. */
  waiting: boolean;
}
/**
 * Records the tar-split metadata of a tar stream fed to it chunk by chunk (see the module documentation).
 *
 * The stream is parsed synchronously by the archive engine's parser, headers only: the file bodies are not
 * read here but described, as byte ranges of each chunk, to whoever hashes the stream ({@link write} returns
 * them in the form of {@link Sha256Stream.update}'s CRC ranges), and their checksums come back through
 * {@link addCrcs} in order. A stream the parser refuses makes {@link result} reject; the caller then keeps the
 * layer without a record (it can still be exported through the driver's diff, just not byte for byte).
 *
 * @example
 * ```ts
 * import * as fs from 'node:fs';
 * import { TarSplitRecorder, makeHasher } from 'graphdriver';
 *
 * const recorder = new TarSplitRecorder();
 * const hasher = await makeHasher(null); // sha256 of the stream plus the bodies' CRC-64s
 * for await (const chunk of fs.createReadStream('/tmp/layer.tar')) {
 *   const ranges = recorder.write(chunk as Buffer);
 *   await hasher.update(chunk as Buffer, undefined, ranges, (crcs) => recorder.addCrcs(crcs));
 * }
 * recorder.end();
 * console.log('diffID', `sha256:${await hasher.digest()}`);
 * fs.writeFileSync('/tmp/tar-split.json.gz', await recorder.result());
 * ```
 */
export class TarSplitRecorder {
  private readonly parser: TarParser;
  private ended = false;
  private failed: unknown = null;
  private readonly gzip = createGzip({ level: 1 });
  private readonly gzParts: Buffer[] = [];
  private readonly gzDone: Promise<void>;
  /** Finished lines as bytes, handed to gzip in batches (one string per batch would cost a rope flattening). */
  private out: Buffer = Buffer.allocUnsafe(GZIP_BATCH * 2);
  private outLen = 0;
  /** Output buffers gzip is done with. */
  private readonly spare: Buffer[] = [];
  private position = 0;
  /** Entries in record order, from the first one not written yet. */
  private pending: PendingEntry[] = [];
  private pendingHead = 0;
  /** File entries waiting for their checksums, oldest first (indexes into `pending` shift with it). */
  private waiting: PendingEntry[] = [];
  private waitingHead = 0;
  /** Checksums that arrived before their entry (never expected, kept for robustness). */
  private early: Buffer[] = [];
  /**
   * Arena of raw bytes (headers and padding, copied once): `[0, rawStart)` belongs to segment lines still
   * pending, `[rawStart, rawEnd)` is what was seen since the last entry. Emptied whenever nothing is pending.
   */
  private raw: Buffer = Buffer.allocUnsafe(256 << 10);
  private rawStart = 0;
  private rawEnd = 0;
  /** The entry whose body is being read (its name is recorded when the body ends). */
  private current: string | null = null;
  /** Whether the current body's first range was handed out. */
  private bodyStarted = false;
  /** Padding after the last body (part of the end-of-archive segment). */
  private lastPad = 0;
  /** Whether the end-of-archive segment was written (trailing bytes follow in 1 MiB segments). */
  private endDone = false;
  /** CRC ranges of the chunk being parsed. */
  private ranges: number[] = [];

  /**
   * `onChunkDone`, when given, is called with each chunk passed to {@link write} once the recorder no longer
   * looks at it (a header may span two chunks: the first is kept until the second came), so that the chunk's
   * buffer can be reused.
   */
  constructor(onChunkDone?: (chunk: Buffer) => void) {
    this.gzip.on('data', (c: Buffer) => this.gzParts.push(c));
    this.gzDone = new Promise<void>((resolve, reject) => {
      this.gzip.once('end', resolve);
      this.gzip.once('error', reject);
    });
    this.parser = new TarParser({ onSegment: (seg) => this.segment(seg) }, onChunkDone);
  }

  /**
   * Parses the next bytes of the tar (the chunk must not change until the constructor's `onChunkDone` gave it
   * back, or for good when there is none).
   * Returns the CRC-64 ranges of file bodies in this chunk (triples for {@link Sha256Stream.update}; the
   * checksums go to {@link addCrcs}), or null when the chunk holds no body bytes. Never throws: a parse failure
   * shows in {@link result}.
   */
  write(chunk: Buffer): Uint32Array | null {
    if (this.failed !== null || this.ended || chunk.length === 0) return null;
    this.ranges.length = 0;
    try {
      this.parser.push(chunk);
      this.run();
    } catch (e) {
      this.fail(e);
      return null;
    }
    return this.ranges.length > 0 ? Uint32Array.from(this.ranges) : null;
  }

  /** Checksums of bodies, in the order their ranges were handed out (8 bytes big-endian each). */
  addCrcs(crcs: Buffer): void {
    if (this.failed !== null) return;
    if (!Buffer.isBuffer(crcs)) {
      // An addon from before CRC ranges resolves its updates with nothing.
      this.fail(new Error('tar-split: the hash gave no file checksums (native addon out of date?)'));
      return;
    }
    for (let off = 0; off + 8 <= crcs.length; off += 8) {
      const crc = crcs.subarray(off, off + 8);
      const p = this.waiting[this.waitingHead];
      if (p === undefined) {
        this.early.push(crc);
        continue;
      }
      this.waitingHead++;
      p.text = fileLineEnd(p.text, crc);
      p.waiting = false;
    }
    if (this.waitingHead > 1024) {
      this.waiting = this.waiting.slice(this.waitingHead);
      this.waitingHead = 0;
    }
    this.flushPending();
  }

  /** Marks the end of the tar. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.failed !== null) return;
    try {
      this.parser.end();
      this.run();
      this.flushTrailer(true);
    } catch (e) {
      this.fail(e);
    }
  }

  /** Stops recording (the registration failed); {@link result} rejects. */
  abort(): void {
    this.fail(new Error('tar-split recording aborted'));
    this.ended = true;
    this.gzip.destroy();
    // Nobody may ask for the result any more: the parser's end must not surface as an unhandled rejection.
    this.gzDone.catch(() => undefined);
  }

  /**
   * The gzip-compressed record, once the whole tar was fed, {@link end} called and every checksum handed to
   * {@link addCrcs}.
   */
  async result(): Promise<Buffer> {
    if (this.failed === null && (!this.ended || this.pendingHead < this.pending.length)) {
      this.fail(new Error(this.ended ? 'tar-split: file checksums missing' : 'tar-split: the tar did not end'));
    }
    if (this.failed !== null) {
      this.gzip.destroy();
      throw this.failed;
    }
    this.flushOut();
    this.gzip.end();
    await this.gzDone;
    return Buffer.concat(this.gzParts);
  }

  private fail(e: unknown): void {
    if (this.failed !== null) return;
    this.failed = e;
    this.pending = [];
    this.waiting = [];
    this.rawStart = this.rawEnd = 0;
  }

  /** Reads every header and body piece the parser has input for. */
  private run(): void {
    const p = this.parser;
    for (;;) {
      if (this.current !== null) {
        // Body pieces: ranges of the chunk just pushed (earlier chunks were read to their end before).
        while (p.takeBody()) {
          const flags = (this.bodyStarted ? 0 : CRC_RANGE_START) | (p.remaining === 0 ? CRC_RANGE_END : 0);
          this.bodyStarted = true;
          this.ranges.push(p.pieceOff, p.pieceLen, flags);
        }
        if (p.remaining > 0) return; // more input needed
      }
      const h = p.next();
      if (h === NEED_INPUT || h === END_OF_INPUT) return;
      this.current = h.name;
      this.bodyStarted = false;
    }
  }

  private segment(seg: Buffer | number): void {
    if (typeof seg === 'number') {
      // A body: what came before it (the previous body's padding, then this entry's headers) is one segment,
      // the body a file entry, exactly as tar-split cuts an archive.
      this.flushRaw();
      const name = this.current;
      if (name === null) throw new Error('tar-split: body without an entry');
      this.fileEntry(name, seg);
      this.current = null;
      this.lastPad = (512 - (seg % 512)) % 512;
      this.endDone = false;
      return;
    }
    // The parser's segments are views of its input, valid during this call: copied here, once.
    if (this.rawEnd + seg.length > this.raw.length) {
      // Pending lines keep their offsets: the arena grows in place, or starts over when nothing is pending.
      const from = this.pendingHead === this.pending.length ? this.rawStart : 0;
      const keep = this.rawEnd - from;
      const target = keep + seg.length > this.raw.length ? Buffer.allocUnsafe(Math.max(this.raw.length * 2, keep + seg.length)) : this.raw;
      this.raw.copy(target, 0, from, this.rawEnd);
      this.raw = target;
      this.rawStart -= from;
      this.rawEnd = keep;
    }
    seg.copy(this.raw, this.rawEnd);
    this.rawEnd += seg.length;
    // Headers between two bodies are a few MiB at most: this much means the end of the archive, followed by
    // (possibly huge) trailing bytes, which must not pile up in memory.
    if (this.rawEnd - this.rawStart >= TRAILER_FLUSH) this.flushTrailer(false);
  }

  /** Raw bytes seen since the last entry. */
  private get rawLen(): number {
    return this.rawEnd - this.rawStart;
  }

  /** Records the first `n` raw bytes as a segment entry and drops them. */
  private segmentEntry(n: number): void {
    const tail = `","position":${this.position++}}\n`;
    if (this.pendingHead === this.pending.length) this.emitSegment(this.rawStart, n, tail);
    else this.pending.push({ text: tail, bytesOff: this.rawStart, bytesLen: n, waiting: false });
    this.rawStart += n;
    this.compactRaw();
  }

  private flushRaw(): void {
    if (this.rawLen > 0) this.segmentEntry(this.rawLen);
  }

  /**
   * The end of the archive as tar-split records it: the last body's padding and the end marker (what Go's
   * tar reader consumes when it meets the end) as one segment, whatever follows in segments of at most 1 MiB,
   * and at the very end an empty segment (tar-split's last read, which returned nothing).
   */
  private flushTrailer(final: boolean): void {
    if (!this.endDone) {
      const n = Math.min(this.rawLen, this.lastPad + 1024);
      if (n > 0) this.segmentEntry(n);
      this.endDone = true;
    }
    while (this.rawLen >= MAX_SEGMENT || (final && this.rawLen > 0)) this.segmentEntry(Math.min(MAX_SEGMENT, this.rawLen));
    if (final) this.entry(`{"type":2,"payload":"","position":${this.position++}}\n`);
  }

  /** A file entry: its line is finished when the body's checksum arrives (an empty body has none). */
  private fileEntry(name: string, size: number): void {
    // Field order and encoding of Go's encoding/json for storage.Entry.
    const head = `{"type":1,"name":${goJson(name)}${size > 0 ? `,"size":${size}` : ''},"payload":`;
    const tail = `,"position":${this.position++}}\n`;
    if (size === 0) {
      this.entry(`${head}null${tail}`);
      return;
    }
    const p: PendingEntry = { text: head + '\0' + tail, bytesOff: -1, bytesLen: 0, waiting: true };
    const early = this.early.shift();
    if (early !== undefined) {
      p.text = fileLineEnd(p.text, early);
      p.waiting = false;
    } else {
      this.waiting.push(p);
    }
    this.pending.push(p);
    this.flushPending();
  }

  private entry(text: string): void {
    if (this.pendingHead === this.pending.length) {
      // Nothing waits: straight out.
      this.emit(text);
      return;
    }
    this.pending.push({ text, bytesOff: -1, bytesLen: 0, waiting: false });
  }

  /** Writes the lines that are complete, in order. */
  private flushPending(): void {
    while (this.pendingHead < this.pending.length) {
      const p = this.pending[this.pendingHead]!;
      if (p.waiting) break;
      this.pendingHead++;
      if (p.bytesOff >= 0) this.emitSegment(p.bytesOff, p.bytesLen, p.text);
      else this.emit(p.text);
    }
    if (this.pendingHead > 1024 || this.pendingHead === this.pending.length) {
      this.pending = this.pending.slice(this.pendingHead);
      this.pendingHead = 0;
    }
    this.compactRaw();
  }

  /** Once no line is pending, the arena's written part is free: what was seen since the last entry moves down. */
  private compactRaw(): void {
    if (this.rawStart === 0 || this.pendingHead !== this.pending.length) return;
    if (this.rawEnd > this.rawStart) this.raw.copy(this.raw, 0, this.rawStart, this.rawEnd);
    this.rawEnd -= this.rawStart;
    this.rawStart = 0;
    // A trailer can have grown the arena to megabytes: give that back once it is drained.
    if (this.rawEnd === 0 && this.raw.length > 4 << 20) this.raw = Buffer.allocUnsafe(256 << 10);
  }

  private emit(line: string): void {
    // UTF-8 needs at most 3 bytes per UTF-16 unit.
    const need = line.length * 3;
    if (this.outLen + need > this.out.length) {
      this.flushOut();
      if (need > this.out.length) this.out = Buffer.allocUnsafe(need);
    }
    this.outLen += this.out.write(line, this.outLen, 'utf8');
    if (this.outLen >= GZIP_BATCH) this.flushOut();
  }

  /** Writes a segment line whose payload is `n` bytes of the arena at `off`. */
  private emitSegment(off: number, n: number, tail: string): void {
    const need = SEGMENT_HEAD.length + Math.ceil(n / 3) * 4 + tail.length;
    if (this.outLen + need > this.out.length) {
      this.flushOut();
      if (need > this.out.length) this.out = Buffer.allocUnsafe(need);
    }
    const out = this.out;
    let o = this.outLen + out.write(SEGMENT_HEAD, this.outLen, 'latin1');
    o += out.write(this.raw.toString('base64', off, off + n), o, 'latin1');
    this.outLen = o + out.write(tail, o, 'latin1');
    if (this.outLen >= GZIP_BATCH) this.flushOut();
  }

  private flushOut(): void {
    if (this.outLen === 0) return;
    // gzip keeps the buffer until it has compressed it; then it serves again (fresh memory for every batch
    // cost a page fault per 4 KiB, more than the encoding itself).
    const full = this.out;
    this.gzip.write(full.subarray(0, this.outLen), () => {
      if (full.length === GZIP_BATCH * 2 && this.spare.length < 4) this.spare.push(full);
    });
    this.out = this.spare.pop() ?? Buffer.allocUnsafe(GZIP_BATCH * 2);
    this.outLen = 0;
  }
}

const SEGMENT_HEAD = '{"type":2,"payload":"';
/** Completes a waiting file line: `\0` marks where the checksum goes. */
function fileLineEnd(text: string, crc: Buffer): string {
  const at = text.indexOf('\0');
  return `${text.slice(0, at)}"${crc.toString('base64')}"${text.slice(at + 1)}`;
}

function corrupt(file: string, line: number, why: string): StoreCorruptError {
  return new StoreCorruptError(`tar-split record ${file}, line ${line}: ${why}`);
}

function base64Field(v: unknown, file: string, line: number, what: string): Buffer {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) throw corrupt(file, line, `${what} is not base64`);
  return Buffer.from(v, 'base64');
}

/** Parses one record line (Docker's or ours). */
function parseLine(text: string, file: string, line: number, expected: number): TarSplitEntry {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw corrupt(file, line, `not JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null) throw corrupt(file, line, 'not an object');
  const o = v as Record<string, unknown>;
  const position = o.position ?? 0;
  if (position !== expected) throw corrupt(file, line, `position ${String(position)} where ${expected} was expected`);
  if (o.type === SEGMENT_ENTRY) {
    return { type: SEGMENT_ENTRY, payload: base64Field(o.payload ?? '', file, line, 'payload'), position: expected };
  }
  if (o.type !== FILE_ENTRY) throw corrupt(file, line, `unknown entry type ${JSON.stringify(o.type)}`);
  const size = o.size ?? 0;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw corrupt(file, line, 'invalid size');
  let name: string;
  if (typeof o.name === 'string' && o.name !== '') name = o.name;
  else if (o.name_raw !== undefined && o.name_raw !== null) name = base64Field(o.name_raw, file, line, 'name_raw').toString('utf8');
  else throw corrupt(file, line, 'file entry without a name');
  let crc: Buffer | null = null;
  if (o.payload !== null && o.payload !== undefined) {
    crc = base64Field(o.payload, file, line, 'payload');
    if (crc.length !== 8) throw corrupt(file, line, 'checksum is not 8 bytes');
  }
  if (size > 0 && crc === null) throw corrupt(file, line, 'file entry with content but no checksum');
  return { type: FILE_ENTRY, name, size, crc, position: expected };
}

/** Reads a `tar-split.json.gz` record entry by entry (corrupt records fail with ERR_STORE_CORRUPT). */
export async function* readTarSplit(file: string): AsyncGenerator<TarSplitEntry> {
  const gunzip = createGunzip();
  const input = createReadStream(file);
  input.on('error', (e) => gunzip.destroy(e));
  input.pipe(gunzip);
  let rest: Buffer = Buffer.alloc(0);
  let line = 0;
  const parse = (bytes: Buffer): TarSplitEntry => {
    line++;
    return parseLine(bytes.toString('utf8'), file, line, line - 1);
  };
  try {
    for await (const chunk of gunzip as AsyncIterable<Buffer>) {
      rest = rest.length === 0 ? chunk : Buffer.concat([rest, chunk]);
      let start = 0;
      let nl: number;
      while ((nl = rest.indexOf(0x0a, start)) >= 0) {
        const text = rest.subarray(start, nl);
        start = nl + 1;
        if (text.length > 0) yield parse(text);
      }
      rest = rest.subarray(start);
    }
  } catch (e) {
    if ((e as { code?: string }).code?.startsWith('Z_')) throw new StoreCorruptError(`tar-split record ${file} is not valid gzip: ${(e as Error).message}`, { cause: e });
    throw e;
  } finally {
    input.destroy();
    gunzip.destroy();
  }
  if (rest.length > 0) yield parse(rest);
}

/** Length of the tar a record re-creates. */
export async function tarSplitSize(file: string): Promise<number> {
  let n = 0;
  for await (const e of readTarSplit(file)) n += e.type === SEGMENT_ENTRY ? e.payload.length : e.size;
  return n;
}

/** Where {@link assembleTar} reads file bodies from (a mounted layer). */
export interface LayerFiles {
  /** The whole content of a small file (exactly `size` bytes expected). */
  readAll(name: string, size: number): Promise<Buffer>;
  /** The content of a file in chunks. */
  stream(name: string, size: number): AsyncIterable<Buffer>;
}

/** Options of {@link assembleTar}. */
export interface AssembleOptions {
  /** Files up to this size are read ahead, several at a time (default 1 MiB). */
  prefetchSize?: number;
  /** How many entries are read ahead (default 16). */
  prefetchCount?: number;
}

type Pending =
  | { entry: TarSplitEntry & { type: typeof SEGMENT_ENTRY } }
  | { entry: TarSplitEntry & { type: typeof FILE_ENTRY }; data?: Promise<Buffer> };

function crcHex(b: Buffer | null): string {
  return `crc64:${b === null ? '-' : b.toString('hex')}`;
}

/** Errors that mean "the file is not there (any more)": the layer does not hold what the record says. */
const MISSING = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'EXDEV']);

function missing(e: TarSplitEntry & { type: typeof FILE_ENTRY }, err: unknown): unknown {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !MISSING.has(code)) return err;
  return new DigestMismatchError(crcHex(e.crc), `missing file (${code})`, `content of ${JSON.stringify(e.name)}`);
}

/**
 * Re-creates a tar from its record and the files (see the module documentation). Each body is checked against
 * its recorded size and CRC-64; a file that is missing or differs fails with ERR_DIGEST_MISMATCH. Small files
 * are read ahead concurrently (the reads are the slow part: one open per file).
 */
export async function* assembleTar(entries: AsyncIterable<TarSplitEntry>, files: LayerFiles, opts: AssembleOptions = {}): AsyncGenerator<Buffer> {
  const prefetchSize = opts.prefetchSize ?? 1 << 20;
  const prefetchCount = opts.prefetchCount ?? 16;
  const it = entries[Symbol.asyncIterator]();
  const window: Pending[] = [];
  let done = false;
  const fill = async (): Promise<void> => {
    while (!done && window.length < prefetchCount) {
      const r = await it.next();
      if (r.done) {
        done = true;
        break;
      }
      const e = r.value;
      if (e.type === SEGMENT_ENTRY) {
        window.push({ entry: e });
        continue;
      }
      const p: Pending = { entry: e };
      if (e.size > 0 && e.size <= prefetchSize) {
        const data = files.readAll(cleanEntryPath(e.name, MAX_DEPTH), e.size);
        // Rejections are observed when the entry is reached; until then they must not count as unhandled.
        data.catch(() => undefined);
        p.data = data;
      }
      window.push(p);
    }
  };
  try {
    for (;;) {
      await fill();
      const p = window.shift();
      if (p === undefined) return;
      const e = p.entry;
      if (e.type === SEGMENT_ENTRY) {
        if (e.payload.length > 0) yield e.payload;
        continue;
      }
      if (e.size === 0) continue;
      const crc = new Crc64();
      let got = 0;
      if ('data' in p && p.data !== undefined) {
        let buf: Buffer;
        try {
          buf = await p.data;
        } catch (err) {
          throw missing(e, err);
        }
        crc.update(buf);
        got = buf.length;
        if (got === e.size && crc.digest().equals(e.crc!)) {
          yield buf;
          continue;
        }
      } else {
        try {
          for await (const c of files.stream(cleanEntryPath(e.name, MAX_DEPTH), e.size)) {
            got += c.length;
            if (got > e.size) break;
            crc.update(c);
            yield c;
          }
        } catch (err) {
          throw missing(e, err);
        }
        if (got === e.size && crc.digest().equals(e.crc!)) continue;
      }
      throw new DigestMismatchError(crcHex(e.crc), got === e.size ? crcHex(crc.digest()) : `${got} of ${e.size} bytes`, `content of ${JSON.stringify(e.name)}`);
    }
  } finally {
    // Reads still in flight hold files of the layer open: let them finish before the caller unmounts it.
    await Promise.allSettled(window.map((p) => ('data' in p ? p.data : undefined)));
    await it.return?.();
  }
}
