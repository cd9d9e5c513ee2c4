/**
 * Streaming tar reader for layer archives. Written here rather than taken from tar-stream because layers need
 * what that parser drops: binary PAX values (xattrs such as security.capability), nanosecond PAX times, strict
 * refusal of malformed headers (hostile input), and the raw header bytes for exact re-creation of the tar.
 * @module
 */
import { InvalidArchiveError, ArchiveLimitError } from '../errors';
import { ByteSource } from './byte-source';
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

/** Receives the archive byte for byte: header/metadata/padding segments as bytes, entry bodies as lengths. */
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

/** Hashing/recording wrapper: everything read passes through here once. */
async function* tap(src: AsyncIterable<Uint8Array>, onBytes?: (c: Buffer) => void): AsyncGenerator<Uint8Array> {
  for await (const c of src) {
    if (c.length === 0) continue;
    onBytes?.(Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.length));
    yield c;
  }
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

/**
 * Reads a tar archive entry by entry. The generator validates every header; anything malformed, truncated or
 * over a limit throws an {@link InvalidArchiveError}. After the end-of-archive marker the rest of the input is
 * read too (so a hash over `onBytes` covers the whole stream).
 */
export async function* readTar(
  source: AsyncIterable<Uint8Array>,
  opts: TarReadOptions = {},
): AsyncGenerator<TarEntry, void, undefined> {
  const maxMeta = opts.maxMetaSize ?? 1 << 20;
  const maxEntrySize = opts.maxEntrySize ?? Number.MAX_SAFE_INTEGER;
  const maxEntries = opts.maxEntries ?? 10_000_000;
  const seg = opts.onSegment;
  const src = new ByteSource(tap(source, opts.onBytes));
  let globalPax: Map<string, Buffer> | null = null;
  let entries = 0;
  let ended = false;

  try {
    for (;;) {
      // Meta headers (PAX, GNU long names) accumulate until the real entry header.
      let localPax: Map<string, Buffer> | null = null;
      let longName: string | null = null;
      let longLink: string | null = null;
      let raw: RawHeader | null = null;
      while (raw === null) {
        const block = await src.readExact(BLOCK, 'header');
        if (block === null) {
          if (localPax || longName !== null || longLink !== null) {
            throw new InvalidArchiveError('archive ends after an extended header');
          }
          ended = true; // no end marker: accepted, as Docker does
          break;
        }
        seg?.(Buffer.from(block));
        if (isEndBlock(block)) {
          if (localPax || longName !== null || longLink !== null) {
            throw new InvalidArchiveError('end-of-archive marker after an extended header');
          }
          ended = true;
          break;
        }
        const h = decodeHeader(block);
        if (h.typeflag === 'pax' || h.typeflag === 'pax-global' || h.typeflag === 'gnu-longname' || h.typeflag === 'gnu-longlink') {
          if (h.size > maxMeta) throw new ArchiveLimitError(`extended header of ${h.size} bytes exceeds the ${maxMeta}-byte limit`);
          const data = await src.readExact(h.size, 'extended header');
          if (data === null) throw new InvalidArchiveError('unexpected end of archive in extended header');
          const padding = pad(h.size) > 0 ? await src.readExact(pad(h.size), 'padding') : null;
          if (pad(h.size) > 0 && padding === null) throw new InvalidArchiveError('unexpected end of archive in padding');
          if (seg) {
            if (data) seg(Buffer.from(data));
            if (padding) seg(Buffer.from(padding));
          }
          const body = data;
          if (h.typeflag === 'pax') {
            localPax ??= new Map();
            decodePax(body, localPax);
          } else if (h.typeflag === 'pax-global') {
            globalPax ??= new Map();
            decodePax(body, globalPax);
          } else {
            const nul = body.indexOf(0);
            const bytes = nul >= 0 ? body.subarray(0, nul) : body;
            const text = utf8(bytes, 'GNU long name');
            if (h.typeflag === 'gnu-longname') longName = text;
            else longLink = text;
          }
          continue;
        }
        if (h.typeflag === 'volume') {
          // A GNU volume label describes the archive, not a file: skip its body.
          await skip(src, h.size + pad(h.size), seg);
          continue;
        }
        raw = h;
      }
      if (raw === null) break;

      if (++entries > maxEntries) throw new ArchiveLimitError(`archive has more than ${maxEntries} entries`);
      const header: TarHeader = {
        name: longName ?? raw.name,
        type: raw.typeflag as TarEntryType,
        mode: raw.mode & 0o7777,
        uid: raw.uid,
        gid: raw.gid,
        uname: raw.uname,
        gname: raw.gname,
        size: raw.size,
        mtimeSec: raw.mtime,
        mtimeNsec: 0,
        linkname: longLink ?? raw.linkname,
        devMajor: raw.devMajor,
        devMinor: raw.devMinor,
        xattrs: new Map(),
        pax: new Map(),
      };
      if (globalPax) for (const [k, v] of globalPax) header.pax.set(k, v);
      if (localPax) for (const [k, v] of localPax) header.pax.set(k, v);
      if (header.pax.size > 0) applyPax(header, header.pax);
      if (header.name === '') throw new InvalidArchiveError('entry with an empty name');
      // Header-only types carry no body whatever their size field says (as Go's archive/tar reads them).
      if (HEADER_ONLY.has(header.type)) header.size = 0;
      if (header.size > maxEntrySize) {
        throw new ArchiveLimitError(`entry of ${header.size} bytes exceeds the ${maxEntrySize}-byte limit`, header.name);
      }

      let remaining = header.size;
      let consumed = false;
      const entry: TarEntry = {
        header,
        async *body() {
          if (consumed) throw new Error('tar entry body can only be read once');
          consumed = true;
          while (remaining > 0) {
            const chunk = await src.readSome(remaining, `content of ${JSON.stringify(header.name)}`);
            remaining -= chunk.length;
            yield chunk;
          }
        },
      };
      yield entry;
      if (remaining > 0 || !consumed) {
        if (seg) seg(header.size);
        await skip(src, remaining, undefined);
        remaining = 0;
      } else if (seg) {
        seg(header.size);
      }
      const p = pad(header.size);
      if (p > 0) {
        const padding = await src.readExact(p, 'padding');
        if (padding === null) throw new InvalidArchiveError('unexpected end of archive in padding', header.name);
        seg?.(Buffer.from(padding));
      }
    }
    // Everything after the first end block (the second zero block, padding to the record size, garbage) is
    // kept byte for byte for reconstruction and hashing, but never interpreted.
    if (ended) {
      await src.drain(seg ? (c) => seg(Buffer.from(c)) : undefined);
    }
  } finally {
    await src.close();
  }
}

async function skip(src: ByteSource, n: number, seg: SegmentSink | undefined): Promise<void> {
  let left = n;
  while (left > 0) {
    const c = await src.readSome(left, 'skipped content');
    seg?.(Buffer.from(c));
    left -= c.length;
  }
}
