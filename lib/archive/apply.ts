/**
 * Applying a layer tar onto a directory, in one of three whiteout formats, through a native apply session.
 * Every path is resolved inside the root by the kernel (openat2 RESOLVE_IN_ROOT in native code), so whatever the
 * archive says, nothing outside the root is created, changed or removed.
 *
 * How the work is split (the main thread was the bottleneck, see bench/archive.ts): the main thread only parses
 * headers and decides what each entry means (names, whiteouts, hardlink targets); it packs the resulting
 * operations into batches of binary records whose file contents are slices of the input chunks (nothing is
 * copied), and hands each batch to the session, which runs them in order on the thread pool while the main
 * thread goes on with the next entries. The diffID is hashed on the thread pool as well. With a
 * {@link RecyclableSource} as input (e.g. fileChunks() of a layer file), each input chunk goes back to the
 * source as soon as it is parsed, hashed and written, so the apply works in the same few megabytes of memory
 * throughout (fresh memory costs a page fault per 4 KiB, which on some machines cost more than the apply).
 * @module
 */
import * as fs from 'node:fs';
import { promisify } from 'node:util';

import { InvalidArchiveError } from '../errors';
import { loadBindings } from '../native/bindings';
import { OpenFlags } from '../native/constants';
import type { ApplyBatchResult, ApplySession, EntryType, NativeBindings } from '../native/types';
import { ChunkRefs, isRecyclable } from './byte-source';
import { openDecompressed, type DecompressLimits } from './decompress';
import { makeHasher, noHash, type StreamHasher } from './stream-hash';
import { baseOf, cleanEntryPath, joinPath, parentOf } from './entry-path';
import { END_OF_INPUT, NEED_INPUT, TarParser, type TarHeader, type TarReadLimits } from './tar-reader';
import { OVERLAY_OPAQUE_XATTR, OVERLAY_XATTR_PREFIX, WHITEOUT_LINK_DIR, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from './whiteout';

const fsOpen = promisify(fs.open);
const fsClose = promisify(fs.close);

/**
 * How whiteouts are stored on disk:
 * - `naive`: applied as deletions (vfs, btrfs, devicemapper, and any single-tree layer);
 * - `overlay`: `.wh.X` becomes a char 0/0 device, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr (overlay2);
 * - `aufs`: whiteout files are written as they are (aufs).
 */
export type WhiteoutFormat = 'naive' | 'overlay' | 'aufs';

/** A non-fatal problem while applying (an xattr the filesystem refused, a skipped entry). */
export interface ApplyWarning {
  path: string;
  message: string;
}

/** Options of {@link applyLayer}. */
export interface ApplyOptions extends TarReadLimits, DecompressLimits {
  /** Whiteout format of the target (default 'naive'). */
  format?: WhiteoutFormat;
  /** Native bindings (default: the real addon). */
  bindings?: NativeBindings;
  /** Deepest accepted path, in components (default 512). */
  maxDepth?: number;
  /** Set owners from the archive (default: when running as root). Without it files belong to the caller. */
  keepOwnership?: boolean;
  /** What to do with char/block device entries: create them (default), skip them with a warning, or refuse the archive. */
  devices?: 'create' | 'skip' | 'refuse';
  /** Called for each non-fatal problem. */
  onWarning?: (w: ApplyWarning) => void;
  /** Accept gzip/zstd compressed input (default true). */
  decompress?: boolean;
  /**
   * Compute the diffID (default true). Callers that hash the stream themselves (the layer store does, before
   * the driver sees it) can skip this second hash; `diffId` is then ''.
   */
  hash?: boolean;
}

/** Result of {@link applyLayer}. */
export interface ApplyLayerResult {
  /** Bytes of file content applied (sum of regular-file sizes), as Docker's ApplyDiff reports. */
  size: number;
  /** `sha256:<hex>` of the uncompressed tar stream (the layer's diffID); '' with `hash: false`. */
  diffId: string;
  /** Number of tar entries read. */
  entries: number;
}

/** Files up to this size are written by one operation, once their whole body is buffered; larger ones stream. */
const INLINE_FILE_MAX = 1 << 20;
/**
 * A batch is sent when it holds this many operations or references this many bytes of input chunks. Batches
 * are small enough that the first one reaches the thread pool soon after the apply starts, and large enough
 * that the trips between the threads stay rare.
 */
const BATCH_OPS = 256;
const BATCH_BYTES = 2 << 20;
/**
 * Batches sent and not finished. Their chunks stay referenced until then: with the hash's own limit below this
 * bounds the input an apply holds whatever the layer's size (the 1 GiB layer test in bench/archive.ts), and
 * the buffers a recycling source needs (see byte-source.ts).
 */
const INFLIGHT_BATCHES = 8;
const INFLIGHT_BYTES = 8 << 20;
/** Buffers of packed operations, reused from batch to batch (fresh memory is slow, see the module doc). */
const OPS_BUFFER = 64 << 10;
const opsBuffers: Buffer[] = [];
const OPS_BUFFERS_KEPT = 16;

/**
 * errnos that mean the archive asked for something impossible or hostile, rather than a system failure.
 * ERANGE/E2BIG: an xattr name or value beyond the kernel's limits; EFBIG/EOVERFLOW: sizes or numbers the file
 * system cannot represent.
 */
const ARCHIVE_ERRNOS = new Set([
  'EXDEV',
  'ELOOP',
  'ENOTDIR',
  'EISDIR',
  'EEXIST',
  'ENOENT',
  'EPERM',
  'EINVAL',
  'ENAMETOOLONG',
  'ENOTEMPTY',
  'EMLINK',
  'ERANGE',
  'E2BIG',
  'EFBIG',
  'EOVERFLOW',
]);

/** Largest uid/gid the kernel accepts ((uid_t)-1 means "unchanged" to chown, so it is not an owner). */
const MAX_ID = 0xfffffffe;
/** Linux device numbers: 12-bit major, 20-bit minor (what mknod can encode). */
const MAX_DEV_MAJOR = 0xfff;
const MAX_DEV_MINOR = 0xfffff;

/**
 * Rethrows a rejection of a native call made for entry `name` as an InvalidArchiveError when its errno says the
 * archive asked for something impossible (see ARCHIVE_ERRNOS); other errors (EIO, ENOSPC...) pass unchanged.
 */
function archiveFailure(e: unknown, what: string, name: string): unknown {
  const err = e as NodeJS.ErrnoException | null;
  const code = err?.code;
  if (typeof code !== 'string' || !ARCHIVE_ERRNOS.has(code)) return e;
  const from = typeof err?.syscall === 'string' ? ` from ${err.syscall}` : '';
  const dest = (err as { dest?: unknown } | null)?.dest;
  const about = typeof dest === 'string' && dest !== '' ? ` ${JSON.stringify(dest)}` : '';
  return new InvalidArchiveError(`${what} (${code}${from}${about})`, name, { cause: e });
}

type BatchFailure = NonNullable<ApplyBatchResult['failed']>;

function systemError(f: BatchFailure): Error {
  return Object.assign(new Error(`${f.code}: ${f.syscall} failed for ${JSON.stringify(f.path)} while applying a layer`), {
    code: f.code,
    errno: -f.errno,
    syscall: f.syscall,
    path: f.path,
    ...(f.dest !== '' ? { dest: f.dest } : {}),
  });
}

/** The error for an operation the session reported as failed; `name` is the archive entry it was made for. */
function batchFailure(f: BatchFailure, name: string): Error {
  if (!ARCHIVE_ERRNOS.has(f.code)) return systemError(f);
  const what =
    f.op === 'create'
      ? `cannot create ${f.type}`
      : f.op === 'write'
        ? 'cannot write file'
        : f.op === 'finish'
          ? 'cannot finish file'
          : f.op === 'times'
            ? 'cannot set directory times'
            : `cannot apply ${f.op}`;
  const about = f.dest !== '' ? ` ${JSON.stringify(f.dest)}` : '';
  return new InvalidArchiveError(`${what} (${f.code} from ${f.syscall}${about})`, name, { cause: systemError(f) });
}

// ---------------------------------------------------------------- batches of packed operations

/** Operation codes, entry types and flags of the session's records (native/apply-entries.cc, BatchReader::Next). */
const enum Op {
  Create = 0,
  Remove = 1,
  Whiteout = 2,
  Xattrs = 3,
  Write = 4,
  Finish = 5,
  Times = 6,
}
const TYPE_CODE: Readonly<Record<EntryType, number>> = { file: 1, dir: 2, symlink: 3, link: 4, char: 5, block: 6, fifo: 7 };
const enum Flag {
  Mode = 1,
  Owner = 2,
  Mtime = 4,
  Atime = 8,
  DeferTimes = 16,
  NoReplace = 32,
  Stream = 64,
  Tolerant = 128,
}
const RECORD_HEAD = 56;

/** Metadata of one operation; absent parts are not sent. */
interface Meta {
  mode?: number;
  uid?: number;
  gid?: number;
  mtimeSec?: number;
  mtimeNsec?: number;
  atimeSec?: number;
  atimeNsec?: number;
  devMajor?: number;
  devMinor?: number;
  size?: number;
}

const NO_META: Meta = Object.freeze({});
const EMPTY_OPS = Buffer.alloc(0);

/**
 * One batch being filled: the packed records, the archive name each operation was made for (for errors), and
 * the input chunks its file contents point into.
 */
class Batch {
  private buf = opsBuffers.pop() ?? Buffer.allocUnsafeSlow(OPS_BUFFER);
  private dv = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.length);
  private len = 0;
  readonly names: string[] = [];
  readonly chunks: Buffer[] = [];
  /** Input bytes this batch keeps alive (whole chunks, counted once each). */
  bytes = 0;

  constructor(private readonly refs: ChunkRefs | null) {}

  /** Once the batch is done with (applied or abandoned): its buffer and chunks can be reused. */
  release(): void {
    if (this.buf.length === OPS_BUFFER && opsBuffers.length < OPS_BUFFERS_KEPT) opsBuffers.push(this.buf);
    this.buf = EMPTY_OPS;
    if (this.refs) for (const c of this.chunks) this.refs.drop(c);
  }

  get count(): number {
    return this.names.length;
  }

  /** The records, ready to send. */
  packed(): Buffer {
    return this.buf.subarray(0, this.len);
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    // Not sent yet: the old buffer can serve another batch.
    if (this.buf.length === OPS_BUFFER && opsBuffers.length < OPS_BUFFERS_KEPT) opsBuffers.push(this.buf);
    this.buf = next;
    this.dv = new DataView(next.buffer, next.byteOffset, next.length);
  }

  private u32(v: number): void {
    this.dv.setUint32(this.len, v, true);
    this.len += 4;
  }

  private str(s: string): void {
    // UTF-8 needs at most 3 bytes per UTF-16 unit.
    this.reserve(4 + s.length * 3);
    const n = s.length === 0 ? 0 : this.buf.write(s, this.len + 4, 'utf8');
    this.dv.setUint32(this.len, n, true);
    this.len += 4 + n;
  }

  private bytesField(b: Buffer): void {
    this.reserve(4 + b.length);
    this.dv.setUint32(this.len, b.length, true);
    b.copy(this.buf, this.len + 4);
    this.len += 4 + b.length;
  }

  /**
   * Writes an operation up to its pieces (see {@link pieces}): `name` is the archive entry it is made for,
   * `link` the symlink target or hardlink source.
   */
  begin(name: string, op: Op, type: number, flags: number, m: Meta, path: string, link: string, xattrs: Map<string, Buffer> | null): void {
    this.names.push(name);
    this.reserve(RECORD_HEAD);
    const dv = this.dv;
    const o = this.len;
    if (m.mode !== undefined) flags |= Flag.Mode;
    if (m.uid !== undefined) flags |= Flag.Owner;
    if (m.mtimeSec !== undefined) flags |= Flag.Mtime;
    if (m.atimeSec !== undefined) flags |= Flag.Atime;
    dv.setUint8(o, op);
    dv.setUint8(o + 1, type);
    dv.setUint16(o + 2, flags, true);
    dv.setUint32(o + 4, m.mode ?? 0, true);
    dv.setUint32(o + 8, m.uid ?? 0, true);
    dv.setUint32(o + 12, m.gid ?? 0, true);
    dv.setFloat64(o + 16, m.mtimeSec ?? 0, true);
    dv.setUint32(o + 24, m.mtimeNsec ?? 0, true);
    dv.setUint32(o + 28, m.atimeNsec ?? 0, true);
    dv.setFloat64(o + 32, m.atimeSec ?? 0, true);
    dv.setUint32(o + 40, m.devMajor ?? 0, true);
    dv.setUint32(o + 44, m.devMinor ?? 0, true);
    dv.setFloat64(o + 48, m.size ?? 0, true);
    this.len += RECORD_HEAD;
    this.str(path);
    this.str(link);
    this.reserve(4);
    if (xattrs === null) {
      this.u32(0);
      return;
    }
    this.u32(xattrs.size);
    for (const [k, v] of xattrs) {
      this.str(k);
      this.bytesField(v);
    }
  }

  /** Starts the piece list of the current operation; returns where its count goes (for {@link endPieces}). */
  pieces(): number {
    this.reserve(4);
    const at = this.len;
    this.u32(0);
    return at;
  }

  /** Adds a piece of file content: `len` bytes of `chunk` from `off`. */
  piece(chunk: Buffer, off: number, len: number): void {
    let idx = this.chunks.length - 1;
    if (idx < 0 || this.chunks[idx] !== chunk) {
      this.chunks.push(chunk);
      this.bytes += chunk.length;
      this.refs?.hold(chunk);
      idx++;
    }
    this.reserve(12);
    const dv = this.dv;
    dv.setUint32(this.len, idx, true);
    dv.setUint32(this.len + 4, off, true);
    dv.setUint32(this.len + 8, len, true);
    this.len += 12;
  }

  endPieces(at: number, n: number): void {
    this.dv.setUint32(at, n, true);
  }

  /** A whole operation without content. */
  op(name: string, op: Op, type: number, flags: number, m: Meta, path: string, link = '', xattrs: Map<string, Buffer> | null = null): void {
    this.begin(name, op, type, flags, m, path, link, xattrs);
    this.reserve(4);
    this.u32(0);
  }
}

/** Sends batches to the native session in order, keeping a bounded number in flight. */
class Sender {
  private batch: Batch;
  private session: ApplySession | null = null;
  private readonly inflight: Array<{ done: Promise<void>; bytes: number }> = [];
  private inflightBytes = 0;

  constructor(
    private readonly b: NativeBindings,
    private readonly rootFd: number,
    private readonly warn: (w: ApplyWarning) => void,
    private readonly refs: ChunkRefs | null,
  ) {
    this.batch = new Batch(refs);
  }

  /** The batch to add operations to. */
  get current(): Batch {
    return this.batch;
  }

  /** Batches sent so far. */
  private sent = 0;

  /**
   * Whether the current batch should be sent. The first batches are smaller, so that the thread pool starts
   * writing soon after the apply starts instead of waiting for a full batch to be parsed.
   */
  get full(): boolean {
    return this.batch.count >= (this.sent < 3 ? BATCH_OPS >> (3 - this.sent) : BATCH_OPS) || this.batch.bytes >= BATCH_BYTES;
  }

  /** Sends the current batch (if it has anything); waits while too much is in flight. */
  async send(): Promise<void> {
    const batch = this.batch;
    if (batch.count === 0) return;
    this.batch = new Batch(this.refs);
    this.sent++;
    let run: Promise<ApplyBatchResult>;
    try {
      // Opened with the first batch: an archive refused before any operation needs no native call at all.
      this.session ??= await this.b.openApplySession(this.rootFd);
      run = this.session.run(batch.packed(), batch.chunks);
    } catch (e) {
      batch.release();
      throw e;
    }
    const done = run.finally(() => batch.release()).then((r) => this.check(batch, r));
    // Awaited in order by retire(); until then a failure must not count as an unhandled rejection (it is
    // reported by that await, or swallowed by settle() when an earlier error already ended the apply).
    done.catch(() => undefined);
    this.inflight.push({ done, bytes: batch.bytes });
    this.inflightBytes += batch.bytes;
    while (this.inflight.length > INFLIGHT_BATCHES || (this.inflight.length > 1 && this.inflightBytes > INFLIGHT_BYTES)) await this.retire();
  }

  private async retire(): Promise<void> {
    const x = this.inflight.shift()!;
    this.inflightBytes -= x.bytes;
    await x.done;
  }

  /** Waits until every operation so far is applied (throwing the first failure). */
  async drain(): Promise<void> {
    await this.send();
    while (this.inflight.length > 0) await this.retire();
  }

  private check(batch: Batch, r: ApplyBatchResult): void {
    for (const w of r.warnings) this.warn({ path: w.path, message: `xattr not applied: ${w.message}` });
    if (r.failed) throw batchFailure(r.failed, batch.names[r.failed.index] ?? r.failed.path);
    // A skipped batch follows a failed one, whose error is thrown first (batches are awaited in order).
  }

  /**
   * Waits for the batches still running, ignoring their outcome, and ends the session. Called when the apply
   * failed, so that nothing is still being written when the error reaches the caller.
   */
  async settle(): Promise<void> {
    for (const x of this.inflight.splice(0)) await x.done.catch(() => undefined);
    this.inflightBytes = 0;
    await this.close();
  }

  async close(): Promise<void> {
    const s = this.session;
    this.session = null;
    if (s) await s.close();
  }
}

// ---------------------------------------------------------------- input: chunks, hash, parser

/** The input stream feeding the parser and the hash. */
class Feed {
  readonly parser: TarParser;
  private readonly it: AsyncIterator<Uint8Array>;
  private ended = false;

  constructor(
    source: AsyncIterable<Uint8Array>,
    private readonly hasher: StreamHasher,
    opts: TarReadLimits,
    private readonly refs: ChunkRefs | null,
  ) {
    this.parser = new TarParser(opts, refs ? (c) => refs.drop(c) : undefined);
    this.it = source[Symbol.asyncIterator]();
  }

  /** Reads the next chunk into the parser (or tells it the input ended). */
  async more(): Promise<void> {
    for (;;) {
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        this.parser.end();
        return;
      }
      const v = r.value;
      if (v.length === 0) continue;
      const c = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.length);
      const refs = this.refs;
      let wait: Promise<void> | undefined;
      if (refs) {
        refs.hold(c, 2); // the parser's and the hash's
        wait = this.hasher.update(c, () => refs.drop(c));
      } else {
        wait = this.hasher.update(c);
      }
      this.parser.push(c);
      if (wait) await wait;
      return;
    }
  }

  /** Stops reading the source early (after an error). */
  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.it.return?.();
  }
}

// ---------------------------------------------------------------- the apply

/** Applies one layer; see {@link applyLayer}. Holds the state that lives for one archive. */
class LayerApplier {
  private readonly b: NativeBindings;
  private readonly format: WhiteoutFormat;
  private readonly maxDepth: number;
  private readonly keepOwner: boolean;
  private readonly devices: 'create' | 'skip' | 'refuse';
  /** Directories known to exist (created or checked during this apply); '' is the root. */
  private readonly knownDirs = new Set<string>(['']);
  /** Every path written by this layer (for opaque directories: what must survive). */
  private readonly written = new Set<string>();
  /** Directory times, set after all entries so that creating children does not disturb them. */
  private readonly dirTimes: Array<{ path: string; meta: Meta }> = [];
  private rootMeta: TarHeader | null = null;
  private rootOpaque = false;
  /** aufs hardlink stash: `.wh..wh.plnk/<name>` files are kept under a temp dir in the root until the end. */
  private plnkDir: string | null = null;
  private readonly plnkNames = new Set<string>();
  readonly sender: Sender;
  size = 0;

  constructor(
    private readonly root: string,
    private readonly rootFd: number,
    private readonly feed: Feed,
    b: NativeBindings,
    opts: ApplyOptions,
    private readonly warn: (w: ApplyWarning) => void,
    refs: ChunkRefs | null,
  ) {
    this.b = b;
    this.format = opts.format ?? 'naive';
    this.maxDepth = opts.maxDepth ?? 512;
    this.keepOwner = opts.keepOwnership ?? process.getuid?.() === 0;
    this.devices = opts.devices ?? 'create';
    this.sender = new Sender(b, rootFd, warn, refs);
  }

  /**
   * Adds a content-less operation; sends the batch when it is full (only then is there something to wait for:
   * most entries complete without a promise).
   */
  private op(name: string, op: Op, type: number, flags: number, m: Meta, path: string, link = '', xattrs: Map<string, Buffer> | null = null): Promise<void> | undefined {
    this.sender.current.op(name, op, type, flags, m, path, link, xattrs);
    return this.sender.full ? this.sender.send() : undefined;
  }

  /** Forgets known directories at or under `p` (after a removal or replacement). */
  private forget(p: string): void {
    if (!this.knownDirs.has(p)) return;
    const prefix = p + '/';
    for (const d of this.knownDirs) if (d === p || d.startsWith(prefix)) this.knownDirs.delete(d);
  }

  /**
   * Makes sure the parent directories of `p` exist. Layers normally list every directory before its contents;
   * when one is missing, it is created 0755 root-owned, as Docker does.
   */
  private async ensureParents(p: string, name: string): Promise<void> {
    const parent = parentOf(p);
    if (this.knownDirs.has(parent)) return;
    const chain: string[] = [];
    for (let d = parent; d !== '' && !this.knownDirs.has(d); d = parentOf(d)) chain.unshift(d);
    await this.sender.drain();
    const stats = await this.b.lstatMany(this.rootFd, chain).catch((e: unknown) => {
      throw archiveFailure(e, 'cannot resolve the parent directories', name);
    });
    for (let i = 0; i < chain.length; i++) {
      const st = stats[i];
      const d = chain[i]!;
      if (st === null || st === undefined) {
        await this.op(name, Op.Create, TYPE_CODE.dir, 0, this.keepOwner ? { mode: 0o755, uid: 0, gid: 0 } : { mode: 0o755 }, d);
      } else if ((st.mode & 0o170000) !== 0o040000 && (st.mode & 0o170000) !== 0o120000) {
        throw new InvalidArchiveError(`parent ${JSON.stringify(d)} is not a directory`, name);
      }
      this.knownDirs.add(d);
    }
  }

  /** Refuses numbers the kernel cannot take. */
  private checkNumbers(h: TarHeader): void {
    if (this.keepOwner && (h.uid > MAX_ID || h.gid > MAX_ID)) {
      throw new InvalidArchiveError(`uid/gid ${h.uid}/${h.gid} out of range`, h.name);
    }
    if ((h.type === 'char' || h.type === 'block') && (h.devMajor > MAX_DEV_MAJOR || h.devMinor > MAX_DEV_MINOR)) {
      throw new InvalidArchiveError(`device number ${h.devMajor}:${h.devMinor} out of range`, h.name);
    }
  }

  /** The entry's xattrs as sent (overlay's own attributes dropped), or null. */
  private xattrs(h: TarHeader, p: string): Map<string, Buffer> | null {
    if (h.xattrs.size === 0) return null;
    let out: Map<string, Buffer> | null = null;
    for (const [k, v] of h.xattrs) {
      // overlayfs interprets trusted.overlay.* (opaque, redirect, metacopy): only our own conversion may set them.
      if (k.startsWith(OVERLAY_XATTR_PREFIX)) {
        this.warn({ path: p, message: `ignored overlay xattr ${k} from the archive` });
        continue;
      }
      // A name the kernel could never take (LIBARCHIVE.xattr names are URL-encoded: %00 decodes to NUL).
      if (k === '' || k.includes('\0')) throw new InvalidArchiveError('xattr name empty or with a NUL byte', h.name);
      (out ??= new Map()).set(k, v);
    }
    return out;
  }

  /** Owner, mode and times of an entry as the archive gives them. */
  private meta(h: TarHeader): Meta {
    const m: Meta = { mode: h.mode, mtimeSec: h.mtimeSec, mtimeNsec: h.mtimeNsec };
    if (this.keepOwner) {
      m.uid = h.uid;
      m.gid = h.gid;
    }
    if (h.atimeSec !== undefined) {
      m.atimeSec = h.atimeSec;
      m.atimeNsec = h.atimeNsec ?? 0;
    }
    return m;
  }

  /**
   * Applies one entry (its body, for files, is read from the feed here). Returns a promise only when the entry
   * had to wait (for input, a batch, or the file system); refusals are thrown.
   */
  entry(h: TarHeader): Promise<void> | undefined {
    const p = cleanEntryPath(h.name, this.maxDepth);
    this.checkNumbers(h);
    if (h.type === 'file') this.size += h.size;

    if (p === '') {
      // The root directory itself: only its metadata can be applied.
      if (h.type !== 'dir') throw new InvalidArchiveError('entry replaces the layer root with a non-directory', h.name);
      this.rootMeta = h;
      return undefined;
    }

    // aufs metadata at the root: skipped, except hardlink targets kept for later links.
    if (p.startsWith(WHITEOUT_META_PREFIX)) {
      if (p.startsWith(WHITEOUT_LINK_DIR + '/') && h.type === 'file' && this.format !== 'aufs') return this.stashPlnk(h, p);
      if (p !== WHITEOUT_OPAQUE) return undefined;
    }

    const base = baseOf(p);
    if (base.startsWith(WHITEOUT_PREFIX) && this.format !== 'aufs') return this.whiteout(p, base, h);
    if (base.startsWith(WHITEOUT_PREFIX)) {
      // aufs keeps whiteouts as files; still refuse names that could never be legal whiteouts.
      const target = base.slice(WHITEOUT_PREFIX.length);
      if (target === '' || target === '.' || target === '..') throw new InvalidArchiveError('whiteout names no file', h.name);
    }

    if (!this.knownDirs.has(parentOf(p))) return this.ensureParents(p, h.name).then(() => this.create(h, p));
    return this.create(h, p);
  }

  /** The creation part of {@link entry}, once the parents exist. */
  private create(h: TarHeader, p: string): Promise<void> | undefined {
    if (h.type === 'char' || h.type === 'block') {
      if (this.devices === 'refuse') throw new InvalidArchiveError('device nodes are not allowed in this layer', h.name);
      if (this.devices === 'skip') {
        this.warn({ path: p, message: 'device node skipped' });
        return undefined;
      }
    }

    this.forget(p);
    this.written.add(p);
    const xattrs = this.xattrs(h, p);

    switch (h.type) {
      case 'dir': {
        this.knownDirs.add(p);
        const m = this.meta(h);
        this.dirTimes.push({ path: p, meta: { mtimeSec: h.mtimeSec, mtimeNsec: h.mtimeNsec, atimeSec: m.atimeSec ?? h.mtimeSec, atimeNsec: m.atimeNsec ?? h.mtimeNsec } });
        return this.op(h.name, Op.Create, TYPE_CODE.dir, Flag.DeferTimes, m, p, '', xattrs);
      }
      case 'symlink':
        return this.op(h.name, Op.Create, TYPE_CODE.symlink, 0, this.meta(h), p, h.linkname, xattrs);
      case 'link':
        return this.op(h.name, Op.Create, TYPE_CODE.link, 0, NO_META, p, this.linkTarget(h));
      case 'char':
      case 'block': {
        const m = this.meta(h);
        m.devMajor = h.devMajor;
        m.devMinor = h.devMinor;
        return this.op(h.name, Op.Create, TYPE_CODE[h.type], 0, m, p, '', xattrs);
      }
      case 'fifo':
        return this.op(h.name, Op.Create, TYPE_CODE.fifo, 0, this.meta(h), p, '', xattrs);
      case 'file':
        return this.file(h.name, p, h.size, this.meta(h), xattrs);
    }
  }

  /** Resolves a hardlink's target name (cleaned, inside the root; aufs plnk targets map to the stash). */
  private linkTarget(h: TarHeader): string {
    const t = cleanEntryPath(h.linkname, this.maxDepth, 'hardlink target', h.name);
    if (t === '') throw new InvalidArchiveError('hardlink to the layer root', h.name);
    if (t.startsWith(WHITEOUT_LINK_DIR + '/') && this.format !== 'aufs') {
      const stashed = baseOf(t);
      if (!this.plnkNames.has(stashed) || this.plnkDir === null) throw new InvalidArchiveError('hardlink to a missing aufs link target', h.name);
      return joinPath(this.plnkDir, stashed);
    }
    return t;
  }

  /**
   * A regular file of `size` bytes whose body is next in the feed. Small files are one operation holding the
   * whole body (as slices of the input chunks); larger ones are created, then written piece by piece as the
   * input arrives (whole 4 KiB blocks of zeros are skipped natively, so sparse files stay sparse), then finished
   * with their metadata: memory stays bounded whatever the size.
   */
  private file(name: string, p: string, size: number, m: Meta, xattrs: Map<string, Buffer> | null): Promise<void> | undefined {
    const parser = this.feed.parser;
    if (size > INLINE_FILE_MAX) return this.streamFile(name, p, size, m, xattrs);
    // The whole body first (nothing is sent while the operation is incomplete), then one operation.
    if (parser.bufferedBody < parser.remaining && !parser.inputEnded) return this.bufferBody().then(() => this.file(name, p, size, m, xattrs));
    const batch = this.sender.current;
    if (size > 0) m.size = size;
    batch.begin(name, Op.Create, TYPE_CODE.file, 0, m, p, '', xattrs);
    const at = batch.pieces();
    let n = 0;
    while (parser.takeBody()) {
      batch.piece(parser.pieceBuf, parser.pieceOff, parser.pieceLen);
      n++;
    }
    batch.endPieces(at, n);
    return this.sender.full ? this.sender.send() : undefined;
  }

  /** Reads input until the current entry's body is buffered (or the input ends). */
  private async bufferBody(): Promise<void> {
    const parser = this.feed.parser;
    while (parser.bufferedBody < parser.remaining && !parser.inputEnded) await this.feed.more();
  }

  private async streamFile(name: string, p: string, size: number, m: Meta, xattrs: Map<string, Buffer> | null): Promise<void> {
    const parser = this.feed.parser;
    await this.op(name, Op.Create, TYPE_CODE.file, Flag.Stream, NO_META, p);
    while (parser.remaining > 0) {
      if (!parser.takeBody()) {
        await this.feed.more();
        continue;
      }
      const batch = this.sender.current;
      batch.begin(name, Op.Write, 0, 0, NO_META, p, '', null);
      const at = batch.pieces();
      batch.piece(parser.pieceBuf, parser.pieceOff, parser.pieceLen);
      batch.endPieces(at, 1);
      if (this.sender.full) await this.sender.send();
    }
    m.size = size;
    await this.op(name, Op.Finish, 0, 0, m, p, '', xattrs);
  }

  private async whiteout(p: string, base: string, h: TarHeader): Promise<void> {
    const dir = parentOf(p);
    if (base === WHITEOUT_OPAQUE) {
      await this.ensureParents(p, h.name);
      if (this.format === 'overlay') {
        if (dir === '') {
          // The root of an overlay diff is the layer's upper dir: opaque there means "hide all lowers".
          this.rootOpaque = true;
          return;
        }
        this.written.add(p);
        await this.op(h.name, Op.Xattrs, 0, 0, NO_META, dir, '', new Map([[OVERLAY_OPAQUE_XATTR, Buffer.from('y')]]));
        return;
      }
      await this.opaque(dir, h.name);
      return;
    }
    const victim = base.slice(WHITEOUT_PREFIX.length);
    if (victim === '' || victim === '.' || victim === '..' || victim.startsWith(WHITEOUT_META_PREFIX)) {
      throw new InvalidArchiveError('whiteout names no file that can be removed', h.name);
    }
    const target = joinPath(dir, victim);
    this.forget(target);
    this.written.delete(target);
    if (this.format === 'overlay') {
      await this.ensureParents(target, h.name);
      this.written.add(target);
      await this.op(h.name, Op.Whiteout, 0, 0, NO_META, target);
    } else {
      await this.op(h.name, Op.Remove, 0, 0, NO_META, target);
    }
  }

  /** Naive opaque directory: removes every entry under `dir` that this layer did not write. */
  private async opaque(dir: string, name: string): Promise<void> {
    await this.sender.drain();
    let fd: number;
    try {
      fd = await this.b.openBounded(this.root, dir === '' ? '.' : dir, { flags: OpenFlags.O_RDONLY | OpenFlags.O_DIRECTORY });
    } catch (e) {
      throw archiveFailure(e, 'opaque marker in a directory that cannot be opened', name);
    }
    let children: string[];
    try {
      children = await fs.promises.readdir(`/proc/self/fd/${fd}`);
    } finally {
      await fsClose(fd);
    }
    for (const c of children) {
      const p = joinPath(dir, c);
      if (!this.written.has(p)) {
        this.forget(p);
        await this.op(name, Op.Remove, 0, 0, NO_META, p);
      } else if (this.knownDirs.has(p)) {
        await this.opaque(p, name);
      }
    }
  }

  private async stashPlnk(h: TarHeader, p: string): Promise<void> {
    if (this.plnkDir === null) {
      this.plnkDir = `.graphdriver-plnk-${process.pid}-${Date.now().toString(36)}`;
      await this.op(h.name, Op.Create, TYPE_CODE.dir, 0, { mode: 0o700 }, this.plnkDir);
    }
    const stashName = baseOf(p);
    this.plnkNames.add(stashName);
    const m: Meta = { mode: h.mode, mtimeSec: h.mtimeSec, mtimeNsec: h.mtimeNsec };
    if (this.keepOwner) {
      m.uid = h.uid;
      m.gid = h.gid;
    }
    await this.file(h.name, joinPath(this.plnkDir, stashName), h.size, m, null);
  }

  /** Finishes: pending entries, stash removal, directory times, root metadata. */
  async finish(): Promise<void> {
    if (this.plnkDir !== null) await this.op(this.plnkDir, Op.Remove, 0, 0, NO_META, this.plnkDir);
    // Only directories that still exist as written (a later entry may have replaced or removed them); one that
    // no longer resolves to where this layer wrote it (removed or replaced through another name) is skipped.
    for (const d of this.dirTimes) {
      if (this.written.has(d.path) && this.knownDirs.has(d.path)) await this.op(d.path, Op.Times, 0, Flag.Tolerant, d.meta, d.path);
    }
    await this.sender.drain();
    await this.sender.close();
    if (this.rootMeta) {
      const h = this.rootMeta;
      const fd = await fsOpen(this.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      const x = this.xattrs(h, '');
      const xattrs: Record<string, Buffer> = x ? Object.fromEntries(x) : {};
      if (this.rootOpaque) xattrs[OVERLAY_OPAQUE_XATTR] = Buffer.from('y');
      await this.b
        .finishFile(fd, {
          mode: h.mode,
          ...(this.keepOwner ? { uid: h.uid, gid: h.gid } : { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }),
          mtimeSec: h.mtimeSec,
          mtimeNsec: h.mtimeNsec,
          xattrs,
        })
        .catch((e: unknown) => {
          throw archiveFailure(e, 'cannot apply the root directory metadata', h.name);
        });
    } else if (this.rootOpaque) {
      await this.b.lsetxattr(this.root, OVERLAY_OPAQUE_XATTR, Buffer.from('y'));
    }
  }
}

/**
 * Applies a layer archive onto `root` and returns the bytes applied and the diffID. Input may be uncompressed,
 * gzip or zstd (detected by magic bytes). Hostile or malformed archives throw {@link InvalidArchiveError} and
 * leave a partial apply inside `root` (callers discard the layer).
 *
 * The input's chunks are used in place (file contents are written straight from them, on the thread pool):
 * a source must not modify a chunk after yielding it, as Node's streams never do.
 */
export async function applyLayer(root: string, input: AsyncIterable<Uint8Array>, opts: ApplyOptions = {}): Promise<ApplyLayerResult> {
  const warn = opts.onWarning ?? (() => undefined);
  const b = opts.bindings ?? loadBindings();
  const hasher = opts.hash === false ? noHash() : await makeHasher(b);
  const rootFd = await fsOpen(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  let source: AsyncIterable<Uint8Array> = input;
  let refs: ChunkRefs | null = null;
  try {
    if (opts.decompress !== false) {
      const d = await openDecompressed(input, opts);
      source = d.stream;
      // Decompressed chunks are the decoder's: only the input's own chunks can go back to it.
      if (d.compression === 'none' && isRecyclable(input)) refs = new ChunkRefs(input);
    } else if (isRecyclable(input)) {
      refs = new ChunkRefs(input);
    }
  } catch (e) {
    await fsClose(rootFd).catch(() => undefined);
    throw e;
  }
  const feed = new Feed(source, hasher, opts, refs);
  const applier = new LayerApplier(root, rootFd, feed, b, opts, warn, refs);
  const parser = feed.parser;
  let entries = 0;
  let diffId: string;
  try {
    for (;;) {
      const h = parser.next();
      if (h === NEED_INPUT) {
        await feed.more();
        continue;
      }
      if (h === END_OF_INPUT) break;
      entries++;
      const wait = applier.entry(h);
      if (wait) await wait;
    }
    await applier.finish();
    diffId = await hasher.digest();
  } catch (e) {
    // Nothing may still be writing when the error reaches the caller (see Sender.settle()).
    await applier.sender.settle().catch(() => undefined);
    await feed.close().catch(() => undefined);
    throw e;
  } finally {
    await fsClose(rootFd).catch(() => undefined);
  }
  return { size: applier.size, diffId: diffId === '' ? '' : `sha256:${diffId}`, entries };
}
