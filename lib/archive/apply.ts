/**
 * Applying a layer tar onto a directory, in one of three whiteout formats, through the native batched primitives.
 * Every path is resolved inside the root by the kernel (openat2 RESOLVE_IN_ROOT in native code), so whatever the
 * archive says, nothing outside the root is created, changed or removed.
 * @module
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { promisify } from 'node:util';

import { InvalidArchiveError } from '../errors';
import { loadBindings } from '../native/bindings';
import { OpenFlags } from '../native/constants';
import type { ApplyEntry, ApplyResult, EntryType, NativeBindings } from '../native/types';
import { decompressStream, type DecompressLimits } from './decompress';
import { baseOf, cleanEntryPath, joinPath, parentOf } from './entry-path';
import { readTar, type TarHeader, type TarReadLimits } from './tar-reader';
import { OVERLAY_OPAQUE_XATTR, OVERLAY_XATTR_PREFIX, WHITEOUT_LINK_DIR, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from './whiteout';

const fsWrite = promisify(fs.write);
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
}

/** Result of {@link applyLayer}. */
export interface ApplyLayerResult {
  /** Bytes of file content applied (sum of regular-file sizes), as Docker's ApplyDiff reports. */
  size: number;
  /** `sha256:<hex>` of the uncompressed tar stream (the layer's diffID). */
  diffId: string;
  /** Number of tar entries read. */
  entries: number;
}

/** Files up to this size travel inside a batch; larger ones are streamed through an fd. */
const INLINE_FILE_MAX = 1 << 20;
/** A batch is sent when it holds this many entries or bytes. */
const BATCH_ENTRIES = 512;
const BATCH_BYTES = 8 << 20;
const ZERO_BLOCK = Buffer.alloc(4096);
/** Streamed (large) files: writes and bytes kept in flight at once. */
const WRITES_IN_FLIGHT = 4;
const WRITE_BYTES_IN_FLIGHT = 8 << 20;

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

interface Pending {
  entry: ApplyEntry;
  name: string;
}

function systemError(r: ApplyResult, path: string): Error {
  return Object.assign(new Error(`${r.code}: ${r.syscall} failed for ${JSON.stringify(path)} while applying a layer`), {
    code: r.code,
    errno: -r.errno,
    syscall: r.syscall,
    path,
  });
}

function entryType(h: TarHeader): EntryType {
  switch (h.type) {
    case 'dir':
      return 'dir';
    default:
      return h.type;
  }
}

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
  private readonly dirTimes: Array<{ path: string; mtimeSec: number; mtimeNsec: number; atimeSec: number; atimeNsec: number }> = [];
  private batch: Pending[] = [];
  private batchBytes = 0;
  private inflight: Promise<void> | null = null;
  private rootMeta: TarHeader | null = null;
  private rootOpaque = false;
  /** aufs hardlink stash: `.wh..wh.plnk/<name>` files are kept under a temp dir in the root until the end. */
  private plnkDir: string | null = null;
  private readonly plnkNames = new Set<string>();
  size = 0;

  constructor(
    private readonly root: string,
    private readonly rootFd: number,
    opts: ApplyOptions,
    private readonly warn: (w: ApplyWarning) => void,
  ) {
    this.b = opts.bindings ?? loadBindings();
    this.format = opts.format ?? 'naive';
    this.maxDepth = opts.maxDepth ?? 512;
    this.keepOwner = opts.keepOwnership ?? process.getuid?.() === 0;
    this.devices = opts.devices ?? 'create';
  }

  /** Sends the current batch; waits for the previous one first so entries apply strictly in archive order. */
  private async flush(): Promise<void> {
    if (this.inflight) {
      const p = this.inflight;
      this.inflight = null;
      await p;
    }
    if (this.batch.length === 0) return;
    const items = this.batch;
    this.batch = [];
    this.batchBytes = 0;
    const p = this.b.applyEntries(this.rootFd, items.map((p) => p.entry)).then((results) => this.check(items, results));
    // Awaited by the next flush; until then a failure must not count as an unhandled rejection (it is reported
    // by that await, or swallowed by settle() when an earlier error already ended the apply).
    p.catch(() => undefined);
    this.inflight = p;
  }

  /**
   * Waits for a batch still running on the thread pool, ignoring its outcome. Called when the apply failed, before
   * the root fd is closed: a batch still using that fd number after close() could resolve its paths against
   * whatever directory the number is reused for.
   */
  async settle(): Promise<void> {
    const p = this.inflight;
    this.inflight = null;
    if (p) await p.catch(() => undefined);
  }

  /** Waits until every queued entry is on disk. */
  private async drain(): Promise<void> {
    await this.flush();
    await this.flush();
  }

  private check(items: Pending[], results: ApplyResult[]): void {
    results.forEach((r, i) => {
      const it = items[i]!;
      for (const w of r.warnings ?? []) this.warn({ path: it.entry.path, message: `xattr not applied: ${w}` });
      if (r.errno === 0) return;
      if (ARCHIVE_ERRNOS.has(r.code)) {
        const what = it.entry.op === 'create' ? `cannot create ${it.entry.type}` : `cannot apply ${it.entry.op}`;
        throw new InvalidArchiveError(`${what} (${r.code} from ${r.syscall})`, it.name, {
          cause: systemError(r, it.entry.path),
        });
      }
      throw systemError(r, it.entry.path);
    });
  }

  private async push(entry: ApplyEntry, name: string, bytes = 0): Promise<void> {
    this.batch.push({ entry, name });
    this.batchBytes += bytes;
    if (this.batch.length >= BATCH_ENTRIES || this.batchBytes >= BATCH_BYTES) await this.flush();
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
    await this.drain();
    const stats = await this.b.lstatMany(this.rootFd, chain).catch((e: unknown) => {
      throw archiveFailure(e, 'cannot resolve the parent directories', name);
    });
    for (let i = 0; i < chain.length; i++) {
      const st = stats[i];
      const d = chain[i]!;
      if (st === null || st === undefined) {
        await this.push({ op: 'create', path: d, type: 'dir', mode: 0o755, ...(this.keepOwner ? { uid: 0, gid: 0 } : {}) }, name);
      } else if ((st.mode & 0o170000) !== 0o040000 && (st.mode & 0o170000) !== 0o120000) {
        throw new InvalidArchiveError(`parent ${JSON.stringify(d)} is not a directory`, name);
      }
      this.knownDirs.add(d);
    }
  }

  private owner(h: TarHeader): { uid?: number; gid?: number } {
    return this.keepOwner ? { uid: h.uid, gid: h.gid } : {};
  }

  /** Refuses numbers the kernel cannot take (they would otherwise fail as argument errors of the native call). */
  private checkNumbers(h: TarHeader): void {
    if (this.keepOwner && (h.uid > MAX_ID || h.gid > MAX_ID)) {
      throw new InvalidArchiveError(`uid/gid ${h.uid}/${h.gid} out of range`, h.name);
    }
    if ((h.type === 'char' || h.type === 'block') && (h.devMajor > MAX_DEV_MAJOR || h.devMinor > MAX_DEV_MINOR)) {
      throw new InvalidArchiveError(`device number ${h.devMajor}:${h.devMinor} out of range`, h.name);
    }
  }

  private xattrs(h: TarHeader, p: string): Record<string, Buffer> | undefined {
    if (h.xattrs.size === 0) return undefined;
    const out: Record<string, Buffer> = {};
    for (const [k, v] of h.xattrs) {
      // overlayfs interprets trusted.overlay.* (opaque, redirect, metacopy): only our own conversion may set them.
      if (k.startsWith(OVERLAY_XATTR_PREFIX)) {
        this.warn({ path: p, message: `ignored overlay xattr ${k} from the archive` });
        continue;
      }
      out[k] = Buffer.from(v);
    }
    return Object.keys(out).length > 0 ? out : undefined;
  }

  /** Applies one entry. */
  async entry(h: TarHeader, body: () => AsyncGenerator<Buffer, void, undefined>): Promise<void> {
    const p = cleanEntryPath(h.name, this.maxDepth);
    this.checkNumbers(h);
    if (h.type === 'file') this.size += h.size;

    if (p === '') {
      // The root directory itself: only its metadata can be applied.
      if (h.type !== 'dir') throw new InvalidArchiveError('entry replaces the layer root with a non-directory', h.name);
      this.rootMeta = h;
      return;
    }

    // aufs metadata at the root: skipped, except hardlink targets kept for later links.
    if (p.startsWith(WHITEOUT_META_PREFIX)) {
      if (p.startsWith(WHITEOUT_LINK_DIR + '/') && h.type === 'file' && this.format !== 'aufs') {
        await this.stashPlnk(h, body, p);
        return;
      }
      if (p !== WHITEOUT_OPAQUE) return;
    }

    const base = baseOf(p);
    if (base.startsWith(WHITEOUT_PREFIX) && this.format !== 'aufs') {
      await this.whiteout(p, base, h);
      return;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      // aufs keeps whiteouts as files; still refuse names that could never be legal whiteouts.
      const target = base.slice(WHITEOUT_PREFIX.length);
      if (target === '' || target === '.' || target === '..') throw new InvalidArchiveError('whiteout names no file', h.name);
    }

    await this.ensureParents(p, h.name);
    if (h.type === 'char' || h.type === 'block') {
      if (this.devices === 'refuse') throw new InvalidArchiveError('device nodes are not allowed in this layer', h.name);
      if (this.devices === 'skip') {
        this.warn({ path: p, message: 'device node skipped' });
        return;
      }
    }

    this.forget(p);
    this.written.add(p);
    const common = {
      op: 'create' as const,
      path: p,
      type: entryType(h),
      mode: h.mode,
      ...this.owner(h),
      mtimeSec: h.mtimeSec,
      mtimeNsec: h.mtimeNsec,
      atimeSec: h.atimeSec ?? h.mtimeSec,
      atimeNsec: h.atimeNsec ?? h.mtimeNsec,
    };
    const xattrs = this.xattrs(h, p);
    if (xattrs) Object.assign(common, { xattrs });

    switch (h.type) {
      case 'dir':
        this.knownDirs.add(p);
        this.dirTimes.push({ path: p, mtimeSec: h.mtimeSec, mtimeNsec: h.mtimeNsec, atimeSec: common.atimeSec, atimeNsec: common.atimeNsec });
        await this.push({ ...common, deferTimes: true }, h.name);
        return;
      case 'symlink':
        await this.push({ ...common, linkname: h.linkname }, h.name);
        return;
      case 'link': {
        const target = this.linkTarget(h);
        await this.push({ op: 'create', path: p, type: 'link', linkname: target }, h.name);
        return;
      }
      case 'char':
      case 'block':
        await this.push({ ...common, devMajor: h.devMajor, devMinor: h.devMinor }, h.name);
        return;
      case 'fifo':
        await this.push(common, h.name);
        return;
      case 'file':
        await this.file(common, h, body);
        return;
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

  private async file(common: ApplyEntry, h: TarHeader, body: () => AsyncGenerator<Buffer, void, undefined>): Promise<void> {
    if (h.size <= INLINE_FILE_MAX) {
      const parts: Buffer[] = [];
      for await (const c of body()) parts.push(Buffer.from(c));
      const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts, h.size);
      await this.push({ ...common, data, size: h.size }, h.name, h.size);
      return;
    }
    // Large file: create it open, stream the body through the fd skipping zero blocks (keeps sparse files
    // sparse), then set size and metadata.
    await this.drain();
    const [r] = await this.b.applyEntries(this.rootFd, [{ ...common, keepOpen: true }]);
    this.check([{ entry: common, name: h.name }], [r!]);
    const fd = r!.fd;
    const writer = new SparseWriter(fd);
    try {
      for await (const chunk of body()) await writer.write(chunk);
      await writer.end();
    } catch (e) {
      // Writes still in flight use the fd number: closing it first could let them land in whatever file
      // reuses the number.
      await writer.settle();
      await fsClose(fd).catch(() => undefined);
      throw e;
    }
    await this.b
      .finishFile(fd, {
        mode: h.mode,
        ...this.finishOwner(h),
        mtimeSec: h.mtimeSec,
        mtimeNsec: h.mtimeNsec,
        atimeSec: common.atimeSec ?? h.mtimeSec,
        atimeNsec: common.atimeNsec ?? h.mtimeNsec,
        size: h.size,
        ...(common.xattrs ? { xattrs: common.xattrs } : {}),
      })
      .catch((e: unknown) => {
        throw archiveFailure(e, 'cannot finish file', h.name);
      });
  }

  /** finishFile always sets an owner: the archive's, or the caller's own when ownership is not kept. */
  private finishOwner(h: TarHeader): { uid: number; gid: number } {
    return this.keepOwner ? { uid: h.uid, gid: h.gid } : { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
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
        await this.push({ op: 'xattrs', path: dir, xattrs: { [OVERLAY_OPAQUE_XATTR]: Buffer.from('y') } }, h.name);
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
      await this.push({ op: 'whiteout', path: target }, h.name);
    } else {
      await this.push({ op: 'remove', path: target }, h.name);
    }
  }

  /** Naive opaque directory: removes every entry under `dir` that this layer did not write. */
  private async opaque(dir: string, name: string): Promise<void> {
    await this.drain();
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
        await this.push({ op: 'remove', path: p }, name);
      } else if (this.knownDirs.has(p)) {
        await this.opaque(p, name);
      }
    }
  }

  private async stashPlnk(h: TarHeader, body: () => AsyncGenerator<Buffer, void, undefined>, p: string): Promise<void> {
    if (this.plnkDir === null) {
      this.plnkDir = `.graphdriver-plnk-${process.pid}-${Date.now().toString(36)}`;
      await this.push({ op: 'create', path: this.plnkDir, type: 'dir', mode: 0o700 }, h.name);
    }
    const stashName = baseOf(p);
    this.plnkNames.add(stashName);
    const parts: Buffer[] = [];
    for await (const c of body()) parts.push(Buffer.from(c));
    await this.push(
      {
        op: 'create',
        path: joinPath(this.plnkDir, stashName),
        type: 'file',
        mode: h.mode,
        ...this.owner(h),
        mtimeSec: h.mtimeSec,
        mtimeNsec: h.mtimeNsec,
        data: Buffer.concat(parts),
      },
      h.name,
    );
  }

  /**
   * Sets directory times in one native call; when that fails, one by one, skipping directories that are no
   * longer where this layer wrote them: a later entry can remove or replace a directory through a path the
   * bookkeeping cannot see (another name for it via a symlink), and its time then no longer matters.
   */
  private async setDirTimes(chunk: typeof this.dirTimes): Promise<void> {
    try {
      await this.b.setTimes(this.rootFd, chunk);
      return;
    } catch {
      // fall through: find the entry at fault
    }
    for (const d of chunk) {
      try {
        await this.b.setTimes(this.rootFd, [d]);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') continue;
        throw archiveFailure(e, 'cannot set directory times', d.path);
      }
    }
  }

  /** Finishes: pending entries, stash removal, directory times, root metadata. */
  async finish(): Promise<void> {
    if (this.plnkDir !== null) await this.push({ op: 'remove', path: this.plnkDir }, this.plnkDir);
    await this.drain();
    for (let i = 0; i < this.dirTimes.length; i += 4096) {
      // Only directories that still exist as written (a later entry may have replaced or removed them).
      const chunk = this.dirTimes.slice(i, i + 4096).filter((d) => this.written.has(d.path) && this.knownDirs.has(d.path));
      if (chunk.length > 0) await this.setDirTimes(chunk);
    }
    if (this.rootMeta) {
      const h = this.rootMeta;
      const fd = await fsOpen(this.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      await this.b
        .finishFile(fd, {
          mode: h.mode,
          ...this.finishOwner(h),
          mtimeSec: h.mtimeSec,
          mtimeNsec: h.mtimeNsec,
          xattrs: { ...(this.xattrs(h, '') ?? {}), ...(this.rootOpaque ? { [OVERLAY_OPAQUE_XATTR]: Buffer.from('y') } : {}) },
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
 * Writes a file body sequentially through an fd, skipping whole 4 KiB blocks of zeros (file-offset aligned) so
 * sparse files stay sparse. Chunks arrive at arbitrary offsets, so an unaligned tail is carried to the next one.
 */
class SparseWriter {
  private pos = 0;
  private carry: Buffer | null = null;
  /**
   * Writes issued and not finished, with their sizes. They are positional, so several can be in flight while
   * the next chunks are read and hashed (awaiting each one left the thread pool and the main thread taking
   * turns: a third of the rootfs apply went to its 12 files over 1 MiB). They never reject: a failure is kept
   * in `failure` and thrown by the next write or end.
   */
  private readonly inflight = new Map<Promise<void>, number>();
  private inflightBytes = 0;
  private failure: { error: unknown } | null = null;

  constructor(private readonly fd: number) {}

  async write(chunk: Buffer): Promise<void> {
    // Writes outlive this call, and reader chunks are only valid until the next read: the data is copied
    // (concatenating the carry copies it anyway).
    let buf = this.carry ? Buffer.concat([this.carry, chunk]) : Buffer.from(chunk);
    this.carry = null;
    const usable = buf.length - (buf.length % 4096);
    if (usable < buf.length) {
      this.carry = buf.subarray(usable);
      buf = buf.subarray(0, usable);
    }
    await this.flushBlocks(buf);
  }

  async end(): Promise<void> {
    if (this.carry) {
      await this.issue(this.carry, this.pos);
      this.pos += this.carry.length;
      this.carry = null;
    }
    await this.settle();
    this.rethrow();
  }

  /** Waits until no write is in flight (also after a failure, before the fd may be closed). */
  async settle(): Promise<void> {
    await Promise.all(this.inflight.keys());
  }

  /** Starts a write; waits while too many writes or bytes are in flight. */
  private async issue(buf: Buffer, pos: number): Promise<void> {
    this.rethrow();
    const p: Promise<void> = writeAll(this.fd, buf, pos).then(
      () => this.done(p),
      (e: unknown) => {
        this.failure ??= { error: e };
        this.done(p);
      },
    );
    this.inflight.set(p, buf.length);
    this.inflightBytes += buf.length;
    while (this.inflight.size >= WRITES_IN_FLIGHT || (this.inflight.size > 0 && this.inflightBytes >= WRITE_BYTES_IN_FLIGHT)) {
      await Promise.race(this.inflight.keys());
    }
    this.rethrow();
  }

  private rethrow(): void {
    if (this.failure) throw this.failure.error;
  }

  private done(p: Promise<void>): void {
    this.inflightBytes -= this.inflight.get(p) ?? 0;
    this.inflight.delete(p);
  }

  /** `buf` starts at this.pos, which is always 4 KiB aligned here, and holds whole blocks. */
  private async flushBlocks(buf: Buffer): Promise<void> {
    let start = 0;
    for (let i = 0; i < buf.length; i += 4096) {
      if (isZeroBlock(buf, i)) {
        if (i > start) await this.issue(buf.subarray(start, i), this.pos + start);
        start = i + 4096;
      }
    }
    if (start < buf.length) await this.issue(buf.subarray(start), this.pos + start);
    this.pos += buf.length;
  }
}

/** Whether the 4 KiB block at `i` is all zeros, without allocating a view per block. */
function isZeroBlock(buf: Buffer, i: number): boolean {
  // Almost every data block has a non-zero byte at one of these: answered without a native call.
  if (buf[i] !== 0 || buf[i + 2048] !== 0 || buf[i + 4095] !== 0) return false;
  return buf.compare(ZERO_BLOCK, 0, 4096, i, i + 4096) === 0;
}

async function writeAll(fd: number, buf: Buffer, pos: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fsWrite(fd, buf, off, buf.length - off, pos + off);
    off += bytesWritten;
  }
}

/**
 * Applies a layer archive onto `root` and returns the bytes applied and the diffID. Input may be uncompressed,
 * gzip or zstd (detected by magic bytes). Hostile or malformed archives throw {@link InvalidArchiveError} and
 * leave a partial apply inside `root` (callers discard the layer).
 */
export async function applyLayer(root: string, input: AsyncIterable<Uint8Array>, opts: ApplyOptions = {}): Promise<ApplyLayerResult> {
  const warn = opts.onWarning ?? (() => undefined);
  const hash = createHash('sha256');
  const source = opts.decompress === false ? input : decompressStream(input, opts);
  const rootFd = await fsOpen(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  const applier = new LayerApplier(root, rootFd, opts, warn);
  let entries = 0;
  try {
    for await (const e of readTar(source, { ...opts, onBytes: (c) => hash.update(c) })) {
      entries++;
      await applier.entry(e.header, () => e.body());
    }
    await applier.finish();
  } catch (e) {
    // Nothing may still be working on rootFd once it is closed (see settle()).
    await applier.settle();
    throw e;
  } finally {
    await fsClose(rootFd).catch(() => undefined);
  }
  return { size: applier.size, diffId: `sha256:${hash.digest('hex')}`, entries };
}
