/**
 * Streaming tar reader for layer archives. Written here rather than taken from tar-stream because layers need
 * what that parser drops: binary PAX values (xattrs such as security.capability), nanosecond PAX times, strict
 * refusal of malformed headers (hostile input), and the raw header bytes for exact re-creation of the tar.
 *
 * The parser itself ({@link TarParser}) is synchronous and push-fed: it works on the chunks it was given and
 * says when it needs more, so a consumer that has the bytes at hand (the layer apply) pays no promise per
 * header or per body piece, and bodies come out as slices of the input chunks, never copied. {@link readTar}
 * wraps it as an async generator.
 * @module
 */
import { InvalidArchiveError, ArchiveLimitError } from '../errors';
import {
  BLOCK,
  decodeHeader,
  decodePax,
  isEndBlock,
  paxInteger,
  paxTime,
  utf8,
  type RawHeader,
  type TarEntryType,
} from './tar-header';

export type { TarEntryType } from './tar-header';

/** One entry's metadata, after PAX and GNU long-name headers are folded in. */
export interface TarHeader {
  /** The entry name exactly as the archive gives it (not cleaned). */
  name: string;
  type: TarEntryType;
  /** Permission and special bits (07777). */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Bytes of content that follow (0 for everything but regular files). */
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  atimeSec?: number;
  atimeNsec?: number;
  /** Symlink target, or hardlink target name. */
  linkname: string;
  devMajor: number;
  devMinor: number;
  /** Extended attributes from SCHILY.xattr.* (and LIBARCHIVE.xattr.*) records, raw bytes. */
  xattrs: Map<string, Buffer>;
  /** All PAX records that applied to this entry (global then local), raw bytes. */
  pax: Map<string, Buffer>;
}

/** Limits that bound what a hostile archive can make the reader do. */
export interface TarReadLimits {
  /** Largest PAX / GNU long-name header body accepted (default 1 MiB). */
  maxMetaSize?: number;
  /** Largest single entry (default: unlimited within 2^53). */
  maxEntrySize?: number;
  /** Maximum number of entries (default 10 million). */
  maxEntries?: number;
}

/**
 * Receives the archive byte for byte: header/metadata/padding segments as bytes, entry bodies as lengths.
 * Segment bytes are views of the input (or of a scratch buffer) valid only during the call: a sink that keeps
 * them copies them (not copying here saves a copy per header when the sink packs them anyway).
 */
export type SegmentSink = (segment: Buffer | number) => void;

/** Options of {@link readTar}. */
export interface TarReadOptions extends TarReadLimits {
  /** Called with every byte range of the archive in order (for tar-split style reconstruction). */
  onSegment?: SegmentSink;
  /** Called with every byte of input (e.g. to hash it), including trailing data after the end marker. */
  onBytes?: (chunk: Buffer) => void;
}

/** An entry being read: its header, and its body which must be consumed (or skipped) before the next entry. */
export interface TarEntry {
  header: TarHeader;
  /** Yields the body in chunks (zero-copy slices: copy them if you keep them past the next read). */
  body(): AsyncGenerator<Buffer, void, undefined>;
}

const HEADER_ONLY: ReadonlySet<TarEntryType> = new Set(['link', 'symlink', 'char', 'block', 'dir', 'fifo']);

function pad(n: number): number {
  return (BLOCK - (n % BLOCK)) % BLOCK;
}

/** Decodes `LIBARCHIVE.xattr.<urlencoded name>` = base64 value. */
function libarchiveXattr(key: string, v: Buffer): [string, Buffer] {
  let name: string;
  try {
    name = decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length));
  } catch {
    throw new InvalidArchiveError('malformed LIBARCHIVE.xattr name', key);
  }
  return [name, Buffer.from(v.toString('latin1'), 'base64')];
}

function applyPax(h: TarHeader, pax: Map<string, Buffer>): void {
  for (const [key, v] of pax) {
    switch (key) {
      case 'path':
        if (v.includes(0)) throw new InvalidArchiveError('NUL byte in PAX path');
        h.name = utf8(v, 'PAX path');
        break;
      case 'linkpath':
        if (v.includes(0)) throw new InvalidArchiveError('NUL byte in PAX linkpath');
        h.linkname = utf8(v, 'PAX linkpath');
        break;
      case 'size':
        h.size = paxInteger(v, key);
        break;
      case 'uid':
        h.uid = paxInteger(v, key);
        break;
      case 'gid':
        h.gid = paxInteger(v, key);
        break;
      case 'uname':
        h.uname = utf8(v, 'PAX uname');
        break;
      case 'gname':
        h.gname = utf8(v, 'PAX gname');
        break;
      case 'mtime':
        [h.mtimeSec, h.mtimeNsec] = paxTime(v, key);
        break;
      case 'atime':
        [h.atimeSec, h.atimeNsec] = paxTime(v, key);
        break;
      default:
        if (key.startsWith('SCHILY.xattr.')) {
          const name = key.slice('SCHILY.xattr.'.length);
          if (name === '') throw new InvalidArchiveError('empty xattr name in PAX header');
          h.xattrs.set(name, v);
        } else if (key.startsWith('LIBARCHIVE.xattr.')) {
          const [name, value] = libarchiveXattr(key, v);
          if (!h.xattrs.has(name)) h.xattrs.set(name, value);
        } else if (key.startsWith('GNU.sparse.')) {
          throw new InvalidArchiveError('PAX sparse entries are not supported', h.name);
        }
    }
  }
}

/** What {@link TarParser.next} returns when it has no header to give. */
export const NEED_INPUT = 'need-input';
export const END_OF_INPUT = 'end-of-input';

const enum State {
  /** Expecting a header block (or meta header data). */
  Header,
  /** Inside the current entry's body. */
  Body,
  /** Skipping the padding after the current entry's body. */
  Pad,
  /** Skipping bytes that belong to no entry (a volume label's body), passing them to onSegment. */
  Raw,
  /** After the end-of-archive marker (or at end of input without one): reading and discarding the rest. */
  Trailer,
  /** Everything read. */
  Done,
}

/**
 * Synchronous, push-fed tar parser with the semantics of {@link readTar}. Feed it with {@link push} (the chunks
 * are kept by reference: they must not change afterwards) and {@link end}; {@link next} returns the next
 * entry's header, {@link NEED_INPUT}, or {@link END_OF_INPUT} once the whole input (including anything after
 * the end-of-archive marker) has been read. Between two `next` calls the entry's body can be taken piece by
 * piece with {@link takeBody}; what is not taken is skipped. Malformed input throws InvalidArchiveError (or
 * ArchiveLimitError) from `next` or `takeBody`.
 */
export class TarParser {
  private chunks: Buffer[] = [];
  /** Index of the first chunk still holding unread bytes, and the read offset in it. */
  private head = 0;
  private off = 0;
  /** Unread bytes in all chunks. */
  private avail = 0;
  private ended = false;
  private state = State.Header;
  private readonly maxMeta: number;
  private readonly maxEntrySize: number;
  private readonly maxEntries: number;
  private readonly seg: SegmentSink | undefined;
  private entries = 0;
  private globalPax: Map<string, Buffer> | null = null;
  private localPax: Map<string, Buffer> | null = null;
  private longName: string | null = null;
  private longLink: string | null = null;
  /** The current entry (while its body or padding is read). */
  private cur: TarHeader | null = null;
  /** Chunks read past, reported to onChunkDone at the next call (after the caller took hold of the last piece). */
  private finished: Buffer[] = [];
  private bodyLeft = 0;
  private rawLeft = 0;
  /** The last piece taken by {@link takeBody}: `pieceBuf[pieceOff, pieceOff + pieceLen)`. */
  pieceBuf: Buffer = EMPTY;
  pieceOff = 0;
  pieceLen = 0;

  /**
   * `onChunkDone` is called with each pushed chunk once the parser has read past it, at the first call after
   * that (so that a piece just taken by {@link takeBody} can be held by the caller first; pieces may still
   * point into the chunk: their holder keeps track of those).
   */
  constructor(
    opts: TarReadOptions = {},
    private readonly onChunkDone?: (chunk: Buffer) => void,
  ) {
    this.maxMeta = opts.maxMetaSize ?? 1 << 20;
    this.maxEntrySize = opts.maxEntrySize ?? Number.MAX_SAFE_INTEGER;
    this.maxEntries = opts.maxEntries ?? 10_000_000;
    this.seg = opts.onSegment;
  }

  /** Appends input. */
  push(chunk: Buffer): void {
    if (this.finished.length > 0) this.report();
    if (chunk.length === 0) return;
    if (this.head > 32 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
    this.chunks.push(chunk);
    this.avail += chunk.length;
  }

  /** Marks the end of input. */
  end(): void {
    this.ended = true;
  }

  /** Whether {@link end} was called. */
  get inputEnded(): boolean {
    return this.ended;
  }

  /** Bytes of the current entry's body not taken yet. */
  get remaining(): number {
    return this.state === State.Body ? this.bodyLeft : 0;
  }

  /** Body bytes of the current entry available without more input. */
  get bufferedBody(): number {
    return this.state === State.Body ? Math.min(this.bodyLeft, this.avail) : 0;
  }

  /**
   * Takes the next piece (up to `max` bytes) of the current entry's body that is already buffered, into
   * pieceBuf/pieceOff/pieceLen (no copy). Returns false when no body byte is buffered (push more input; at the
   * end of input this throws) or the body is complete.
   */
  takeBody(max = Number.MAX_SAFE_INTEGER): boolean {
    if (this.finished.length > 0) this.report();
    if (this.state !== State.Body || this.bodyLeft === 0) return false;
    if (this.avail === 0) {
      if (this.ended) throw new InvalidArchiveError(`unexpected end of archive in content of ${JSON.stringify(this.cur!.name)}`);
      return false;
    }
    const c = this.chunks[this.head]!;
    const n = Math.min(max, this.bodyLeft, c.length - this.off);
    this.pieceBuf = c;
    this.pieceOff = this.off;
    this.pieceLen = n;
    this.consume(n);
    this.bodyLeft -= n;
    return true;
  }

  /** The next header, or NEED_INPUT / END_OF_INPUT. Skips whatever is left of the previous entry's body. */
  next(): TarHeader | typeof NEED_INPUT | typeof END_OF_INPUT {
    if (this.finished.length > 0) this.report();
    for (;;) {
      switch (this.state) {
        case State.Body: {
          if (this.bodyLeft > 0) {
            const n = Math.min(this.bodyLeft, this.avail);
            this.skip(n);
            this.bodyLeft -= n;
            if (this.bodyLeft > 0) {
              if (this.ended) throw new InvalidArchiveError('unexpected end of archive in skipped content');
              return NEED_INPUT;
            }
          }
          this.seg?.(this.cur!.size);
          this.state = State.Pad;
          continue;
        }
        case State.Pad: {
          const p = pad(this.cur!.size);
          if (p > 0) {
            if (this.avail < p) {
              if (!this.ended) return NEED_INPUT;
              if (this.avail === 0) throw new InvalidArchiveError('unexpected end of archive in padding', this.cur!.name);
              throw new InvalidArchiveError(`unexpected end of archive in padding (${this.avail} of ${p} bytes)`);
            }
            if (this.seg) this.seg(this.peek(p));
            this.skip(p);
          }
          this.cur = null;
          this.state = State.Header;
          continue;
        }
        case State.Raw: {
          while (this.rawLeft > 0 && this.avail > 0) {
            const c = this.chunks[this.head]!;
            const n = Math.min(this.rawLeft, c.length - this.off);
            if (this.seg) this.seg(c.subarray(this.off, this.off + n));
            this.consume(n);
            this.rawLeft -= n;
          }
          if (this.rawLeft > 0) {
            if (this.ended) throw new InvalidArchiveError('unexpected end of archive in skipped content');
            return NEED_INPUT;
          }
          this.state = State.Header;
          continue;
        }
        case State.Header: {
          const r = this.header();
          if (r !== null) return r;
          continue;
        }
        case State.Trailer: {
          // Everything after the first end block (the second zero block, padding to the record size, garbage)
          // is read, for hashing and reconstruction, but never interpreted.
          if (this.avail > 0) {
            if (this.seg) {
              while (this.avail > 0) {
                const c = this.chunks[this.head]!;
                const rest = this.off === 0 ? c : c.subarray(this.off);
                this.consume(rest.length);
                this.seg(rest);
              }
            } else {
              this.skip(this.avail);
            }
          }
          if (!this.ended) return NEED_INPUT;
          this.state = State.Done;
          this.chunks = [];
          this.head = 0;
          return END_OF_INPUT;
        }
        case State.Done:
          return END_OF_INPUT;
      }
    }
  }

  /**
   * Reads one header block (and a meta header's data). Returns the entry header, NEED_INPUT, or null to go on
   * (a meta header was folded in, or the archive ended: state changed).
   */
  private header(): TarHeader | typeof NEED_INPUT | null {
    const pending = this.localPax !== null || this.longName !== null || this.longLink !== null;
    if (this.avail < BLOCK) {
      if (!this.ended) return NEED_INPUT;
      if (this.avail > 0) throw new InvalidArchiveError(`unexpected end of archive in header (${this.avail} of ${BLOCK} bytes)`);
      if (pending) throw new InvalidArchiveError('archive ends after an extended header');
      // No end marker: accepted, as Docker does.
      this.state = State.Trailer;
      return null;
    }
    // A meta header's data must be buffered in full before the block is consumed (so that NEED_INPUT can
    // resume here): peek at the block first.
    const block = this.peek(BLOCK);
    // A real header never starts with NUL (a name, or a checksum further on, is there): only then can it be the
    // all-zero end block.
    if (block[0] === 0 && isEndBlock(block)) {
      this.skip(BLOCK);
      this.seg?.(block);
      if (pending) throw new InvalidArchiveError('end-of-archive marker after an extended header');
      this.state = State.Trailer;
      return null;
    }
    const h = decodeHeader(block);
    const t = h.typeflag;
    if (t === 'pax' || t === 'pax-global' || t === 'gnu-longname' || t === 'gnu-longlink') {
      if (h.size > this.maxMeta) throw new ArchiveLimitError(`extended header of ${h.size} bytes exceeds the ${this.maxMeta}-byte limit`);
      const p = pad(h.size);
      if (this.avail < BLOCK + h.size + p) {
        if (!this.ended) return NEED_INPUT;
        const got = this.avail - BLOCK;
        if (got <= 0) throw new InvalidArchiveError('unexpected end of archive in extended header');
        if (got < h.size) throw new InvalidArchiveError(`unexpected end of archive in extended header (${got} of ${h.size} bytes)`);
        if (got === h.size) throw new InvalidArchiveError('unexpected end of archive in padding');
        throw new InvalidArchiveError(`unexpected end of archive in padding (${got - h.size} of ${p} bytes)`);
      }
      this.skip(BLOCK);
      this.seg?.(block);
      const data = this.take(h.size);
      this.seg?.(data);
      if (p > 0) {
        if (this.seg) this.seg(this.peek(p));
        this.skip(p);
      }
      if (t === 'pax') {
        this.localPax ??= new Map();
        decodePax(data, this.localPax);
      } else if (t === 'pax-global') {
        this.globalPax ??= new Map();
        decodePax(data, this.globalPax);
      } else {
        const nul = data.indexOf(0);
        const text = utf8(nul >= 0 ? data.subarray(0, nul) : data, 'GNU long name');
        if (t === 'gnu-longname') this.longName = text;
        else this.longLink = text;
      }
      return null;
    }
    this.skip(BLOCK);
    this.seg?.(block);
    if (t === 'volume') {
      // A GNU volume label describes the archive, not a file: its body and padding are skipped.
      this.rawLeft = h.size + pad(h.size);
      this.state = State.Raw;
      return null;
    }
    return this.entry(h);
  }

  private entry(raw: RawHeader): TarHeader {
    if (++this.entries > this.maxEntries) throw new ArchiveLimitError(`archive has more than ${this.maxEntries} entries`);
    const header: TarHeader = {
      name: this.longName ?? raw.name,
      type: raw.typeflag as TarEntryType,
      mode: raw.mode & 0o7777,
      uid: raw.uid,
      gid: raw.gid,
      uname: raw.uname,
      gname: raw.gname,
      size: raw.size,
      mtimeSec: raw.mtime,
      mtimeNsec: 0,
      linkname: this.longLink ?? raw.linkname,
      devMajor: raw.devMajor,
      devMinor: raw.devMinor,
      xattrs: new Map(),
      pax: EMPTY_PAX,
    };
    const local = this.localPax;
    this.localPax = null;
    this.longName = null;
    this.longLink = null;
    if (this.globalPax) {
      header.pax = new Map(this.globalPax);
      if (local) for (const [k, v] of local) header.pax.set(k, v);
    } else {
      // The local records were collected for this entry alone: they become its map.
      header.pax = local ?? new Map();
    }
    if (header.pax.size > 0) applyPax(header, header.pax);
    if (header.name === '') throw new InvalidArchiveError('entry with an empty name');
    // Header-only types carry no body whatever their size field says (as Go's archive/tar reads them).
    if (HEADER_ONLY.has(header.type)) header.size = 0;
    if (header.size > this.maxEntrySize) {
      throw new ArchiveLimitError(`entry of ${header.size} bytes exceeds the ${this.maxEntrySize}-byte limit`, header.name);
    }
    this.cur = header;
    this.bodyLeft = header.size;
    this.state = State.Body;
    return header;
  }

  /** Advances over `n` buffered bytes. */
  private consume(n: number): void {
    this.avail -= n;
    this.off += n;
    while (this.head < this.chunks.length && this.off >= this.chunks[this.head]!.length) {
      const c = this.chunks[this.head]!;
      this.off -= c.length;
      this.chunks[this.head] = EMPTY; // let the chunk go as soon as it is read
      this.head++;
      if (this.onChunkDone) this.finished.push(c);
    }
  }

  private report(): void {
    const done = this.finished;
    this.finished = [];
    for (const c of done) this.onChunkDone!(c);
  }

  private skip(n: number): void {
    this.consume(n);
  }

  /** The next `n` buffered bytes without consuming them: a slice of one chunk, or a copy when they span chunks. */
  private peek(n: number): Buffer {
    const c = this.chunks[this.head]!;
    if (c.length - this.off >= n) return c.subarray(this.off, this.off + n);
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    for (let i = this.head, o = this.off; got < n; i++, o = 0) {
      const src = this.chunks[i]!;
      const k = Math.min(n - got, src.length - o);
      src.copy(out, got, o, o + k);
      got += k;
    }
    return out;
  }

  /**
   * Consumes and returns the next `n` buffered bytes, always as a copy: extended header data outlives the
   * chunk it came in (PAX values end up in the entry's header), and chunks may be reused once read.
   */
  private take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const c = this.chunks[this.head]!;
    let out: Buffer;
    if (c.length - this.off >= n) {
      out = Buffer.allocUnsafe(n);
      c.copy(out, 0, this.off, this.off + n);
    } else {
      out = this.peek(n);
    }
    this.consume(n);
    return out;
  }
}

const EMPTY = Buffer.alloc(0);
const EMPTY_PAX: Map<string, Buffer> = new Map();

/**
 * Reads a tar archive entry by entry. The generator validates every header; anything malformed, truncated or
 * over a limit throws an {@link InvalidArchiveError}. After the end-of-archive marker the rest of the input is
 * read too (so a hash over `onBytes` covers the whole stream).
 */
export async function* readTar(
  source: AsyncIterable<Uint8Array>,
  opts: TarReadOptions = {},
): AsyncGenerator<TarEntry, void, undefined> {
  const parser = new TarParser(opts);
  const it = source[Symbol.asyncIterator]();
  let done = false;
  const more = async (): Promise<void> => {
    for (;;) {
      const r = await it.next();
      if (r.done) {
        done = true;
        parser.end();
        return;
      }
      const v = r.value;
      if (v.length === 0) continue;
      const c = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.length);
      opts.onBytes?.(c);
      parser.push(c);
      return;
    }
  };
  try {
    for (;;) {
      const h = parser.next();
      if (h === NEED_INPUT) {
        await more();
        continue;
      }
      if (h === END_OF_INPUT) break;
      let consumed = false;
      const entry: TarEntry = {
        header: h,
        async *body() {
          if (consumed) throw new Error('tar entry body can only be read once');
          consumed = true;
          for (;;) {
            if (parser.takeBody()) {
              yield parser.pieceBuf.subarray(parser.pieceOff, parser.pieceOff + parser.pieceLen);
              continue;
            }
            if (parser.remaining === 0) return;
            await more();
          }
        },
      };
      yield entry;
    }
  } finally {
    if (!done) await it.return?.();
  }
}
