/**
 * Layer diffs as tar streams, written the way Docker writes them:
 *
 * - {@link exportChanges}: a change list over a layer root (moby pkg/archive ExportChanges), for drivers that
 *   diff two trees;
 * - {@link exportUpper}: a layer's own diff directory (moby TarWithOptions with the overlay whiteout converter
 *   for overlay2, or the aufs exclusions), for drivers that keep one.
 *
 * Entries are PAX/USTAR (tar-writer), mtimes truncated to whole seconds, no user/group names, directories with a
 * trailing '/', `security.capability` the only xattr carried, hardlinks collapsed (the first path of an inode is
 * the file, later ones TypeLink to it). File content is read through native bounded opens (O_NOFOLLOW, resolved
 * inside the root) and checked to be a regular file, so a path swapped for a symlink or a device between the
 * scan and the read can never make us read outside the layer. Small files (most of a container diff) are read
 * hundreds at a time by one native readFiles call each, straight into their tar slots, the next call under way
 * while the current one is written: a round trip to the thread pool per file, four with open/fstat/read/close
 * from JavaScript, was most of the cost of a diff. Streams are pulled (backpressure) and hold at most a few MiB.
 * @module
 */
import * as fs from 'node:fs';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';

import { loadBindings } from '../native/bindings';
import { FileType, OpenFlags, major, minor } from '../native/constants';
import type { NativeBindings, ReadFilesResult, ScanEntry } from '../native/types';
import { ChangeKind, compareWalkOrder, sortChanges, type Change } from './change';
import { CAPABILITY_XATTR, isOpaqueValue, isOverlayWhiteout } from './changes';
import { BLOCK, type TarEntryType } from './tar-header';
import { encodeHeader, END_OF_ARCHIVE, paddingFor, type TarWriteHeader } from './tar-writer';
import { WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from './whiteout';

const fsOpen = promisify(fs.open);
const fsClose = promisify(fs.close);
const fsFstat = promisify(fs.fstat);
const fsRead = promisify(fs.read);

/** A non-fatal problem while writing a diff (an entry skipped, a file that changed while it was read). */
export interface DiffWarning {
  path: string;
  message: string;
}

/** Options of {@link exportChanges} and {@link exportUpper}. */
export interface ExportOptions {
  /** Native bindings (default: the real addon). */
  bindings?: NativeBindings;
  /**
   * exportChanges only: 'overlay' converts overlay whiteouts and opaque directories found under the root to
   * their aufs/OCI form, as exportUpper does (default 'naive': the root is a plain tree).
   */
  format?: 'naive' | 'overlay';
  /** overlay: opaque directories carry `user.overlay.opaque` (overlay mounted with `userxattr`). */
  userxattr?: boolean;
  /**
   * mtime (seconds) of the `.wh.` entries written for Delete changes. Docker writes the current time (rounded
   * to the second), which is the default; set it for reproducible output.
   */
  whiteoutMtime?: number;
  /** Called for each non-fatal problem. */
  onWarning?: (w: DiffWarning) => void;
}

/** Files up to this size are read whole, many per native readFiles call, one call ahead of where the stream is. */
const SMALL_FILE = 1 << 20;
/** Limits of one readFiles call: files, and bytes of their tar slots (content plus padding). */
const BATCH_FILES = 512;
const BATCH_BYTES = 4 << 20;
/** Chunk size for large files, and the size at which small pieces are flushed as one buffer. */
const CHUNK = 1 << 20;
const FLUSH_AT = 256 << 10;
/** Changes stat'ed per lstatMany call. */
const STAT_BATCH = 1024;
/** errnos meaning a path changed between the scan and the read (the container is still running). */
const VANISHED = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'ENXIO', 'EXDEV']);
/** Content is opened without following a final symlink; O_NONBLOCK: a fifo swapped in must not block a pool
 *  thread; O_NOCTTY: a tty must not become ours. (readFiles opens with the same flags.) */
const READ_FLAGS = OpenFlags.O_RDONLY | OpenFlags.O_NOFOLLOW | OpenFlags.O_NONBLOCK | OpenFlags.O_NOCTTY;

/** VFS_CAP_REVISION_3 (namespaced file capabilities) are written as revision 2, as Docker does. */
export function capabilityForTar(v: Buffer): Buffer {
  const VERSION_OFFSET = 3;
  const CAPS_V2_SIZE = 20;
  if (v.length > VERSION_OFFSET && v[VERSION_OFFSET] === 3) {
    const c = Buffer.from(v.subarray(0, Math.min(CAPS_V2_SIZE, v.length)));
    c[VERSION_OFFSET] = 2;
    return c;
  }
  return v;
}

function tarType(mode: number): TarEntryType | null {
  switch (mode & FileType.S_IFMT) {
    case FileType.S_IFREG:
      return 'file';
    case FileType.S_IFDIR:
      return 'dir';
    case FileType.S_IFLNK:
      return 'symlink';
    case FileType.S_IFCHR:
      return 'char';
    case FileType.S_IFBLK:
      return 'block';
    case FileType.S_IFIFO:
      return 'fifo';
    default:
      return null; // sockets: Go's tar.FileInfoHeader refuses them and Docker skips them
  }
}

/** One entry ready to go out: its header block(s) and, for regular files, where its content comes from. */
interface Planned {
  headers: Buffer;
  /** '/'-rooted path of a regular file whose `size` bytes follow the headers. */
  body?: { path: string; size: number };
}

/** Turns scan entries into tar entries, keeping the hardlink map across the whole archive. */
class Planner {
  /** inode → tar name of its first path. Keyed by inode alone, like Docker's SeenFiles (one filesystem). */
  private readonly seen = new Map<number, string>();

  constructor(
    private readonly convertOverlay: boolean,
    private readonly opaqueXattr: string,
    private readonly warn: (w: DiffWarning) => void,
  ) {}

  /** `name` is the tar name (relative, no trailing slash). Returns nothing for entries Docker skips. */
  plan(name: string, st: ScanEntry, out: Planned[]): void {
    const type = tarType(st.mode);
    if (type === null) {
      this.warn({ path: `/${name}`, message: 'socket skipped (tar cannot hold sockets)' });
      return;
    }
    const h: TarWriteHeader = {
      name,
      type,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      size: type === 'file' ? st.size : 0,
      mtimeSec: st.mtimeSec,
    };
    const cap = st.xattrs?.[CAPABILITY_XATTR];
    if (cap !== undefined) h.xattrs = { [CAPABILITY_XATTR]: capabilityForTar(cap) };
    if (type === 'symlink') h.linkname = st.linkname ?? '';
    if (type === 'char' || type === 'block') {
      h.devMajor = major(st.rdev);
      h.devMinor = minor(st.rdev);
    }

    if (this.convertOverlay && isOverlayWhiteout(st)) {
      // overlayWhiteoutConverter.ConvertWrite: the char 0/0 device becomes an empty `.wh.<name>` file, 0600,
      // keeping owner and mtime. Never a hardlink (overlay shares one whiteout inode between many names).
      const slash = name.lastIndexOf('/');
      h.name = `${name.slice(0, slash + 1)}${WHITEOUT_PREFIX}${name.slice(slash + 1)}`;
      h.type = 'file';
      h.mode = 0o600;
      h.size = 0;
      delete h.devMajor;
      delete h.devMinor;
      out.push({ headers: encodeHeader(h) });
      return;
    }

    if (type !== 'dir' && st.nlink > 1) {
      const first = this.seen.get(st.ino);
      if (first !== undefined) {
        h.type = 'link';
        h.linkname = first;
        h.size = 0;
        out.push({ headers: encodeHeader(h) });
        return;
      }
      this.seen.set(st.ino, name);
    }

    const planned: Planned = { headers: encodeHeader(h) };
    if (type === 'file' && st.size > 0) planned.body = { path: `/${name}`, size: st.size };
    out.push(planned);

    if (this.convertOverlay && type === 'dir' && isOpaqueValue(st.xattrs?.[this.opaqueXattr])) {
      // The opaque marker follows its directory: an empty file with the directory's permission bits and owner,
      // and a zero mtime (Go writes a zero time.Time as the epoch).
      out.push({
        headers: encodeHeader({ name: `${name}/${WHITEOUT_OPAQUE}`, type: 'file', mode: st.mode & 0o777, uid: st.uid, gid: st.gid, size: 0, mtimeSec: 0 }),
      });
    }
  }
}

/** Small-file content of a run of consecutive plans, read by one readFiles call. */
interface SmallBatch {
  /** Plans [start, end) are covered: each small body among them has a slot in the result. */
  start: number;
  end: number;
  /** Plan index → slot offset in the result's data, and its index in `read`. */
  slots: Map<number, { offset: number; k: number }>;
  result: Promise<ReadFilesResult>;
  /** The result once awaited (saves an await per file). */
  done?: ReadFilesResult;
}

function isSmall(p: Planned): boolean {
  return p.body !== undefined && p.body.size <= SMALL_FILE;
}

/** Reads file content through bounded opens. */
class ContentReader {
  /** Whether the addon has readFiles (an older build has not: files are then read one by one). */
  private native = true;

  constructor(
    private readonly b: NativeBindings,
    private readonly root: string,
    /** An O_DIRECTORY fd of `root`, open for the life of the reader. */
    private readonly rootFd: number,
    private readonly warn: (w: DiffWarning) => void,
  ) {}

  /**
   * Starts reading the small files of the plans from `from` on, up to the next large file or the batch limits;
   * null when there is no small file left. Plans without content inside the run are covered too.
   */
  batch(plans: readonly Planned[], from: number): SmallBatch | null {
    let start = from;
    while (start < plans.length && !isSmall(plans[start]!)) start++;
    if (start >= plans.length) return null;
    const paths: string[] = [];
    const sizes: number[] = [];
    const slots = new Map<number, { offset: number; k: number }>();
    let bytes = 0;
    let end = start;
    for (; end < plans.length; end++) {
      const body = plans[end]!.body;
      if (body === undefined) continue;
      if (body.size > SMALL_FILE) break;
      const slot = body.size + paddingFor(body.size);
      if (paths.length > 0 && (paths.length >= BATCH_FILES || bytes + slot > BATCH_BYTES)) break;
      slots.set(end, { offset: bytes, k: paths.length });
      paths.push(body.path.slice(1));
      sizes.push(body.size);
      bytes += slot;
    }
    const result = this.readFiles(paths, sizes);
    result.catch(() => undefined); // observed when awaited; keeps an abandoned read from being "unhandled"
    return { start, end, slots, result };
  }

  private async readFiles(paths: string[], sizes: number[]): Promise<ReadFilesResult> {
    if (this.native) {
      try {
        return await this.b.readFiles(this.rootFd, paths, sizes, { align: BLOCK });
      } catch (e) {
        if ((e as { code?: unknown }).code !== 'ERR_NATIVE_MISSING') throw e;
        this.native = false;
      }
    }
    return this.readFilesOneByOne(paths, sizes);
  }

  /** readFiles done with one openBounded, fstat, read and close per file (addon builds without readFiles). */
  private async readFilesOneByOne(paths: string[], sizes: number[]): Promise<ReadFilesResult> {
    const slots = sizes.map((n) => n + paddingFor(n));
    const data = Buffer.alloc(slots.reduce((a, n) => a + n, 0));
    const read: ReadFilesResult['read'] = [];
    let offset = 0;
    for (let i = 0; i < paths.length; i++) {
      read.push(await this.readInto(paths[i]!, data.subarray(offset, offset + sizes[i]!)));
      offset += slots[i]!;
    }
    return { data, read };
  }

  private async readInto(p: string, buf: Buffer): Promise<number | NodeJS.ErrnoException> {
    let fd: number;
    try {
      fd = await this.b.openBounded(this.root, p, { flags: READ_FLAGS });
    } catch (e) {
      return e as NodeJS.ErrnoException;
    }
    try {
      if (!(await fsFstat(fd)).isFile()) return -1;
      let off = 0;
      while (off < buf.length) {
        const { bytesRead } = await fsRead(fd, buf, off, buf.length - off, off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      return off;
    } catch (e) {
      return e as NodeJS.ErrnoException;
    } finally {
      await fsClose(fd);
    }
  }

  /**
   * The tar slot (content and padding) of one small file in its batch's result: zeros where it could not be read
   * (with a warning); errors other than a vanished path fail the diff.
   */
  slot(batch: ReadFilesResult, at: { offset: number; k: number }, body: { path: string; size: number }): Buffer {
    const r = batch.read[at.k];
    if (typeof r === 'number') {
      if (r === -1) this.warn({ path: body.path, message: 'no longer a regular file: content written as zeros' });
      else if (r < body.size) this.short(body.path, r, body.size);
    } else {
      const code = r?.code;
      if (typeof code !== 'string' || !VANISHED.has(code)) throw r ?? new Error(`internal: no readFiles result for ${body.path}`);
      this.warn({ path: body.path, message: `file changed while the diff was written (${code}): content written as zeros` });
    }
    return batch.data.subarray(at.offset, at.offset + body.size + paddingFor(body.size));
  }

  /** Opens a regular file without following symlinks anywhere outside the root; null when it went away. */
  private async open(p: string): Promise<number | null> {
    let fd: number;
    try {
      fd = await this.b.openBounded(this.root, p.slice(1), { flags: READ_FLAGS });
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (typeof code === 'string' && VANISHED.has(code)) {
        this.warn({ path: p, message: `file changed while the diff was written (${code}): content written as zeros` });
        return null;
      }
      throw e;
    }
    try {
      const st = await fsFstat(fd);
      if (!st.isFile()) {
        this.warn({ path: p, message: 'no longer a regular file: content written as zeros' });
        await fsClose(fd);
        return null;
      }
    } catch (e) {
      await fsClose(fd).catch(() => undefined);
      throw e;
    }
    return fd;
  }

  private short(p: string, got: number, size: number): void {
    this.warn({ path: p, message: `file shrank while the diff was written (${got} of ${size} bytes): padded with zeros` });
  }

  /**
   * Exactly `size` bytes of the file in chunks: truncated if it grew, zero-padded if it shrank. The next chunk
   * is read while the consumer handles the current one (two chunks in memory at most).
   */
  async *readLarge(p: string, size: number): AsyncGenerator<Buffer> {
    const fd = await this.open(p);
    let off = 0;
    const readAt = async (pos: number): Promise<Buffer> => {
      const want = Math.min(CHUNK, size - pos);
      const buf = Buffer.allocUnsafe(want);
      const { bytesRead } = await fsRead(fd!, buf, 0, want, pos);
      return bytesRead === want ? buf : buf.subarray(0, bytesRead);
    };
    let next: Promise<Buffer> | null = null;
    try {
      if (fd !== null) {
        next = readAt(0);
        while (off < size) {
          const chunk: Buffer = await (next as Promise<Buffer>);
          next = null;
          if (chunk.length === 0) {
            this.short(p, off, size);
            break;
          }
          off += chunk.length;
          if (off < size) next = readAt(off);
          yield chunk;
        }
      }
    } finally {
      if (next !== null) await next.catch(() => undefined);
      if (fd !== null) await fsClose(fd);
    }
    while (off < size) {
      const n = Math.min(CHUNK, size - off);
      off += n;
      yield Buffer.alloc(n);
    }
  }
}

/** Small pieces are gathered and handed out as one buffer. */
class Gather {
  private parts: Buffer[] = [];
  bytes = 0;

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.parts.push(b);
    this.bytes += b.length;
  }

  take(): Buffer {
    const b = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.bytes);
    this.parts = [];
    this.bytes = 0;
    return b;
  }
}

/**
 * Writes planned entries: headers, content, padding. Small files come from readFiles batches, the next batch read
 * while the current one is written; large files are streamed.
 */
async function* emit(plans: readonly Planned[], reader: ContentReader, out: Gather): AsyncGenerator<Buffer> {
  let current: SmallBatch | null = null;
  let next: SmallBatch | null = null;
  try {
    for (let i = 0; i < plans.length; i++) {
      const p = plans[i]!;
      out.push(p.headers);
      if (p.body !== undefined) {
        if (p.body.size <= SMALL_FILE) {
          if (current === null || i >= current.end) {
            current = next !== null && next.start <= i && i < next.end ? next : reader.batch(plans, i);
            next = current === null ? null : reader.batch(plans, current.end);
          }
          const b = current!;
          b.done ??= await b.result;
          out.push(reader.slot(b.done, b.slots.get(i)!, p.body));
        } else {
          for await (const chunk of reader.readLarge(p.body.path, p.body.size)) {
            if (out.bytes > 0) yield out.take();
            yield chunk;
          }
          out.push(Buffer.alloc(paddingFor(p.body.size)));
        }
      }
      if (out.bytes >= FLUSH_AT) yield out.take();
    }
  } finally {
    // A consumer that stops early may leave a batch in flight: let it finish (the worker closes its files).
    await Promise.allSettled([current?.result, next?.result]);
  }
}

function whiteoutHeader(path: string, mtimeSec: number): Buffer {
  const slash = path.lastIndexOf('/');
  const name = `${path.slice(1, slash + 1)}${WHITEOUT_PREFIX}${path.slice(slash + 1)}`;
  // As Docker: a USTAR regular file, mode 0, root-owned, empty.
  return encodeHeader({ name, type: 'file', mode: 0, uid: 0, gid: 0, size: 0, mtimeSec });
}

function opaqueName(opts: ExportOptions): string {
  return opts.userxattr ? 'user.overlay.opaque' : 'trusted.overlay.opaque';
}

/**
 * A tar stream of `changes` over the tree at `root` (Docker's ExportChanges): changes sorted by path; Delete
 * becomes an empty `.wh.<name>` file; Add/Modify write the entry as it is now (one batched lstatMany per 1024
 * changes), paths that disappeared meanwhile are skipped with a warning.
 */
export function exportChanges(root: string, changes: readonly Change[], opts: ExportOptions = {}): Readable {
  const b = opts.bindings ?? loadBindings();
  const warn = opts.onWarning ?? (() => undefined);
  const overlay = opts.format === 'overlay';
  const opaque = opaqueName(opts);
  const xattrs = overlay ? [CAPABILITY_XATTR, opaque] : [CAPABILITY_XATTR];

  async function* generate(): AsyncGenerator<Buffer> {
    const sorted = sortChanges(changes.filter((c) => c.path !== '/' && c.path !== '').map((c) => ({ ...c })));
    const whiteoutMtime = opts.whiteoutMtime ?? Math.round(Date.now() / 1000);
    const planner = new Planner(overlay, opaque, warn);
    const out = new Gather();
    const rootFd = await fsOpen(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    const reader = new ContentReader(b, root, rootFd, warn);
    try {
      for (let i = 0; i < sorted.length; i += STAT_BATCH) {
        const batch = sorted.slice(i, i + STAT_BATCH);
        const wanted = batch.filter((c) => c.kind !== ChangeKind.Delete);
        const stats = wanted.length === 0 ? [] : await b.lstatMany(rootFd, wanted.map((c) => c.path.slice(1)), { xattrs });
        const plans: Planned[] = [];
        let k = 0;
        for (const c of batch) {
          if (c.kind === ChangeKind.Delete) {
            plans.push({ headers: whiteoutHeader(c.path, whiteoutMtime) });
            continue;
          }
          const st = stats[k++] ?? null;
          if (st === null) {
            warn({ path: c.path, message: 'changed path no longer exists: skipped' });
            continue;
          }
          planner.plan(c.path.slice(1), st, plans);
        }
        yield* emit(plans, reader, out);
      }
    } finally {
      await fsClose(rootFd);
    }
    out.push(END_OF_ARCHIVE);
    yield out.take();
  }

  return Readable.from(generate(), { objectMode: false });
}

/**
 * A tar stream of a layer's own diff directory (Docker's overlay2 / aufs Diff): every entry below `upperDir`
 * (not the directory itself) in walk order (each directory's entries by name, depth first, as Go's
 * filepath.Walk), from one scanTree.
 * - 'overlay': char 0/0 whiteouts become `.wh.<name>` files, opaque directories are followed by a
 *   `.wh..wh..opq` entry (moby's overlayWhiteoutConverter);
 * - 'aufs': written as stored, minus the aufs metadata at the root (`.wh..wh.*` and what is below it) except
 *   `.wh..wh..opq`.
 */
export function exportUpper(upperDir: string, format: 'overlay' | 'aufs', opts: ExportOptions = {}): Readable {
  const b = opts.bindings ?? loadBindings();
  const warn = opts.onWarning ?? (() => undefined);
  const overlay = format === 'overlay';
  const opaque = opaqueName(opts);

  async function* generate(): AsyncGenerator<Buffer> {
    const scan = await b.scanTree(upperDir, { xattrs: overlay ? [CAPABILITY_XATTR, opaque] : [CAPABILITY_XATTR], sort: false });
    const entries = scan.filter((e) => {
      if (e.path === '/') return false;
      if (overlay) return true;
      const slash = e.path.indexOf('/', 1);
      const top = slash < 0 ? e.path.slice(1) : e.path.slice(1, slash);
      return !top.startsWith(WHITEOUT_META_PREFIX) || e.path === `/${WHITEOUT_OPAQUE}`;
    });
    entries.sort((x, y) => compareWalkOrder(x.path, y.path));
    const planner = new Planner(overlay, opaque, warn);
    const out = new Gather();
    const rootFd = await fsOpen(upperDir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    const reader = new ContentReader(b, upperDir, rootFd, warn);
    try {
      for (let i = 0; i < entries.length; i += STAT_BATCH) {
        const plans: Planned[] = [];
        for (const e of entries.slice(i, i + STAT_BATCH)) planner.plan(e.path.slice(1), e, plans);
        yield* emit(plans, reader, out);
      }
    } finally {
      await fsClose(rootFd);
    }
    out.push(END_OF_ARCHIVE);
    yield out.take();
  }

  return Readable.from(generate(), { objectMode: false });
}
