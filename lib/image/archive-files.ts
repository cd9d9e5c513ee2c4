/**
 * Random access to the files of an image archive (`docker save` output, OCI image layout tar) without
 * extracting it:
 *
 * - an uncompressed tar file is indexed in place: only its headers are read, and each member is later streamed
 *   straight from its byte range;
 * - a stream, or a compressed file, is read once: small members are kept in memory, large ones (layer blobs) are
 *   spooled to files in a private directory under the store root, named by number (never by their archive name);
 * - a directory (an extracted archive, an OCI layout directory) is listed and its files are read in place.
 *
 * Member names are cleaned and must stay inside the archive; symlinks and hardlinks between members (`docker
 * save` writes `<id>/layer.tar -> ../<other-id>/layer.tar` for shared layers) are followed inside the archive
 * only, as if its root were `/`. Nothing an archive says can reach a path outside the spool directory.
 * @module
 */
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { fileChunks, type RecyclableSource } from '../archive/byte-source';
import { decompressStream, detectCompression } from '../archive/decompress';
import { BLOCK, decodeHeader, decodePax, isEndBlock, paxInteger, utf8 } from '../archive/tar-header';
import { readTar } from '../archive/tar-reader';
import { ArchiveLimitError, InvalidArchiveError } from '../errors';

/** Limits against hostile archives. */
const MAX_MEMBERS = 1_000_000;
const MAX_META = 1 << 20;
const MAX_LINK_HOPS = 64;
/** Members up to this size are kept in memory when a stream is read... */
const MEMORY_MEMBER = 1 << 20;
/** ...as long as all of them together stay below this. */
const MEMORY_TOTAL = 64 << 20;

type Member =
  | { kind: 'dir' }
  | { kind: 'symlink'; target: string }
  | { kind: 'hardlink'; target: string }
  | { kind: 'range'; offset: number; size: number }
  | { kind: 'memory'; data: Buffer }
  | { kind: 'spool'; file: string; size: number };

/** A readable regular member. */
type FileMember = Extract<Member, { kind: 'range' | 'memory' | 'spool' }>;

/**
 * Cleans a path inside an archive (a member name, a path from a manifest) to `a/b/c` form. `.` and empty
 * components vanish, `..` folds; a path that climbs out of the archive, is absolute, or holds a NUL fails with
 * ERR_INVALID_ARCHIVE (CVE-2014-9358: layer ids such as `../../x` in a manifest).
 */
export function cleanArchivePath(p: string, what = 'path'): string {
  if (typeof p !== 'string' || p === '') throw new InvalidArchiveError(`empty ${what} in the image archive`);
  if (p.includes('\0')) throw new InvalidArchiveError(`NUL byte in ${what}`, p.slice(0, 200));
  if (p.startsWith('/')) throw new InvalidArchiveError(`absolute ${what} in the image archive`, p.slice(0, 200));
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) throw new InvalidArchiveError(`${what} escapes the image archive`, p.slice(0, 200));
      out.pop();
      continue;
    }
    out.push(part);
  }
  return out.join('/');
}

/**
 * The files of an image archive; see the module documentation.
 *
 * @example
 * ```ts
 * import { ImageArchive } from 'graphdriver';
 *
 * // a `docker save` tar is indexed in place; streams and compressed files are spooled into the (new) spool directory
 * const archive = await ImageArchive.open('/tmp/busybox.tar', '/var/lib/graphdriver/tmp/spool-1');
 * try {
 *   const manifest = JSON.parse((await archive.read('manifest.json', 'manifest')).toString('utf8')) as Array<{ Layers: string[] }>;
 *   const firstLayer = manifest[0]!.Layers[0]!;
 *   console.log(firstLayer, archive.size(firstLayer, 'layer')); // e.g. 'blobs/sha256/...' 4535296
 *   archive.open(firstLayer, 'layer').pipe(process.stdout); // the layer tar, streamed from the archive
 * } finally {
 *   await archive.close(); // removes the spool directory
 * }
 * ```
 */
export class ImageArchive {
  private readonly members = new Map<string, Member>();

  private constructor(
    /** The tar file read in place, when there is one. */
    private readonly file: string | null,
    /** The spool directory (removed by {@link close}), when the archive was spooled. */
    private readonly spoolDir: string | null,
  ) {}

  /**
   * Opens an archive: `src` is a path (an uncompressed tar is indexed in place, a gzip/zstd one is spooled) or a
   * stream (spooled). `spoolDir` must not exist; it is created when needed and removed by {@link close}.
   */
  static async open(src: string | Readable, spoolDir: string, signal?: AbortSignal): Promise<ImageArchive> {
    if (typeof src === 'string') {
      if ((await fs.stat(src)).isDirectory()) {
        const a = new ImageArchive(null, null);
        await a.walk(src, '', 0, signal);
        return a;
      }
      const fh = await fs.open(src, 'r');
      let head: Buffer;
      try {
        const b = Buffer.alloc(4);
        const { bytesRead } = await fh.read(b, 0, 4, 0);
        head = b.subarray(0, bytesRead);
      } finally {
        await fh.close();
      }
      if (detectCompression(head) === 'none') {
        const a = new ImageArchive(src, null);
        await a.index(src, signal);
        return a;
      }
      return ImageArchive.spool(fsSync.createReadStream(src), spoolDir, signal);
    }
    return ImageArchive.spool(src, spoolDir, signal);
  }

  private static async spool(src: Readable, spoolDir: string, signal?: AbortSignal): Promise<ImageArchive> {
    const a = new ImageArchive(null, spoolDir);
    try {
      await a.readStream(src, spoolDir, signal);
    } catch (e) {
      src.destroy();
      await a.close();
      throw e;
    }
    return a;
  }

  private add(rawName: string, m: Member): void {
    const name = cleanArchivePath(rawName, 'member name');
    if (name === '') return; // the archive root ("./")
    if (this.members.size >= MAX_MEMBERS) throw new ArchiveLimitError(`image archive has more than ${MAX_MEMBERS} members`);
    // A later member replaces an earlier one, as when the archive is extracted.
    this.members.set(name, m);
  }

  /** Indexes an uncompressed tar file by reading its headers only. */
  private async index(file: string, signal?: AbortSignal): Promise<void> {
    const fh = await fs.open(file, 'r');
    try {
      const total = (await fh.stat()).size;
      const read = async (pos: number, n: number, what: string): Promise<Buffer> => {
        if (pos + n > total) throw new InvalidArchiveError(`image archive is truncated (in ${what})`);
        const b = Buffer.alloc(n);
        let got = 0;
        while (got < n) {
          const { bytesRead } = await fh.read(b, got, n - got, pos + got);
          if (bytesRead === 0) throw new InvalidArchiveError(`image archive is truncated (in ${what})`);
          got += bytesRead;
        }
        return b;
      };
      const padded = (n: number): number => n + ((BLOCK - (n % BLOCK)) % BLOCK);
      let pos = 0;
      let pax: Map<string, Buffer> | null = null;
      let global: Map<string, Buffer> | null = null;
      let longName: string | null = null;
      let longLink: string | null = null;
      while (pos + BLOCK <= total) {
        signal?.throwIfAborted();
        const block = await read(pos, BLOCK, 'a header');
        if (isEndBlock(block)) return;
        const h = decodeHeader(block);
        pos += BLOCK;
        if (h.typeflag === 'pax' || h.typeflag === 'pax-global' || h.typeflag === 'gnu-longname' || h.typeflag === 'gnu-longlink') {
          if (h.size > MAX_META) throw new ArchiveLimitError(`extended header of ${h.size} bytes in the image archive`);
          const data = await read(pos, h.size, 'an extended header');
          pos += padded(h.size);
          if (h.typeflag === 'pax') decodePax(data, (pax ??= new Map()));
          else if (h.typeflag === 'pax-global') decodePax(data, (global ??= new Map()));
          else {
            const nul = data.indexOf(0);
            const text = utf8(nul >= 0 ? data.subarray(0, nul) : data, 'GNU long name');
            if (h.typeflag === 'gnu-longname') longName = text;
            else longLink = text;
          }
          continue;
        }
        const all = new Map<string, Buffer>([...(global ?? []), ...(pax ?? [])]);
        const name = all.has('path') ? utf8(all.get('path')!, 'PAX path') : (longName ?? h.name);
        const link = all.has('linkpath') ? utf8(all.get('linkpath')!, 'PAX linkpath') : (longLink ?? h.linkname);
        const size = all.has('size') ? paxInteger(all.get('size')!, 'size') : h.size;
        pax = null;
        longName = null;
        longLink = null;
        const hasBody = h.typeflag === 'file' || h.typeflag === 'volume';
        const body = hasBody ? size : 0;
        if (pos + body > total) throw new InvalidArchiveError('image archive is truncated (in a member)', name);
        if (h.typeflag === 'file') this.add(name, { kind: 'range', offset: pos, size });
        else if (h.typeflag === 'dir') this.add(name, { kind: 'dir' });
        else if (h.typeflag === 'symlink') this.add(name, { kind: 'symlink', target: link });
        else if (h.typeflag === 'link') this.add(name, { kind: 'hardlink', target: link });
        // Devices, fifos and volume labels have no place in an image archive: ignored, as nothing reads them.
        pos += padded(body);
      }
    } finally {
      await fh.close();
    }
  }

  /**
   * Lists an extracted archive (e.g. an OCI layout directory from `skopeo copy ... oci:DIR`) without following
   * its symlinks: they are resolved inside the directory like those of a tar. Files are read in place.
   */
  private async walk(root: string, rel: string, depth: number, signal?: AbortSignal): Promise<void> {
    if (depth > 64) throw new ArchiveLimitError('image directory is nested too deep');
    for (const d of await fs.readdir(path.join(root, rel), { withFileTypes: true })) {
      signal?.throwIfAborted();
      const name = rel === '' ? d.name : `${rel}/${d.name}`;
      const full = path.join(root, name);
      if (d.isDirectory()) {
        this.add(name, { kind: 'dir' });
        await this.walk(root, name, depth + 1, signal);
      } else if (d.isSymbolicLink()) {
        this.add(name, { kind: 'symlink', target: await fs.readlink(full) });
      } else if (d.isFile()) {
        this.add(name, { kind: 'spool', file: full, size: (await fs.lstat(full)).size });
      }
    }
  }

  /** Reads a (possibly compressed) tar stream once, keeping or spooling every regular member. */
  private async readStream(src: Readable, spoolDir: string, signal?: AbortSignal): Promise<void> {
    let inMemory = 0;
    let n = 0;
    for await (const e of readTar(decompressStream(src), { maxEntries: MAX_MEMBERS })) {
      signal?.throwIfAborted();
      const h = e.header;
      if (h.type === 'dir') this.add(h.name, { kind: 'dir' });
      else if (h.type === 'symlink') this.add(h.name, { kind: 'symlink', target: h.linkname });
      else if (h.type === 'link') this.add(h.name, { kind: 'hardlink', target: h.linkname });
      if (h.type !== 'file') continue;
      cleanArchivePath(h.name, 'member name'); // refuse a bad name before spending anything on its body
      if (h.size <= MEMORY_MEMBER && inMemory + h.size <= MEMORY_TOTAL) {
        const parts: Buffer[] = [];
        for await (const c of e.body()) parts.push(Buffer.from(c));
        inMemory += h.size;
        this.add(h.name, { kind: 'memory', data: Buffer.concat(parts, h.size) });
        continue;
      }
      if (n === 0) await fs.mkdir(spoolDir, { mode: 0o700 });
      const file = path.join(spoolDir, String(n++));
      const out = await fs.open(file, 'wx', 0o600);
      try {
        for await (const c of e.body()) {
          signal?.throwIfAborted();
          await out.write(c);
        }
      } finally {
        await out.close();
      }
      this.add(h.name, { kind: 'spool', file, size: h.size });
    }
  }

  /**
   * The regular member a path names, following symlinks and hardlinks inside the archive; null when there is
   * none. Paths that climb out of the archive fail with ERR_INVALID_ARCHIVE.
   */
  private lookup(p: string): FileMember | null {
    let hops = 0;
    let pending = cleanArchivePath(p).split('/').filter(Boolean);
    const done: string[] = [];
    while (pending.length > 0) {
      const part = pending.shift()!;
      if (part === '..') {
        done.pop(); // in-root: '..' at the top stays at the top
        continue;
      }
      done.push(part);
      const m = this.members.get(done.join('/'));
      if (m === undefined) {
        if (pending.length === 0) return null;
        continue; // archives need not list the directories of their members
      }
      if (m.kind === 'symlink' || (m.kind === 'hardlink' && pending.length === 0)) {
        if (++hops > MAX_LINK_HOPS) throw new InvalidArchiveError('too many levels of links in the image archive', p);
        done.pop();
        const target = m.target.split('/').filter((x) => x !== '' && x !== '.');
        // Hardlink targets are archive-root relative; symlinks relative to their directory (absolute: the root).
        if (m.kind === 'hardlink' || m.target.startsWith('/')) done.length = 0;
        pending = [...target, ...pending];
        continue;
      }
      if (m.kind === 'hardlink') return null; // a hardlink is no directory
      if (pending.length === 0) return m.kind === 'dir' ? null : m;
      if (m.kind !== 'dir') return null;
    }
    return null;
  }

  /** Whether the path names a regular member. */
  has(p: string): boolean {
    return this.lookup(p) !== null;
  }

  /** Names of all members (cleaned), for format detection. */
  names(): string[] {
    return [...this.members.keys()];
  }

  private need(p: string, what: string): FileMember {
    const m = this.lookup(p);
    if (m === null) throw new InvalidArchiveError(`${what} is missing from the image archive`, p);
    return m;
  }

  /** Size of a member (ERR_INVALID_ARCHIVE when it is missing). */
  size(p: string, what = 'file'): number {
    const m = this.need(p, what);
    return m.kind === 'memory' ? m.data.length : m.size;
  }

  /** The whole content of a small member (a manifest, a config); bigger than `limit` fails. */
  async read(p: string, what: string, limit = 16 << 20): Promise<Buffer> {
    const m = this.need(p, what);
    const size = m.kind === 'memory' ? m.data.length : m.size;
    if (size > limit) throw new ArchiveLimitError(`${what} is ${size} bytes (limit ${limit})`, p);
    if (m.kind === 'memory') return m.data;
    const fh = await fs.open(m.kind === 'range' ? this.file! : m.file, fsSync.constants.O_RDONLY | fsSync.constants.O_NOFOLLOW);
    try {
      const b = Buffer.alloc(size);
      let got = 0;
      while (got < size) {
        const { bytesRead } = await fh.read(b, got, size - got, (m.kind === 'range' ? m.offset : 0) + got);
        if (bytesRead === 0) throw new InvalidArchiveError(`${what} is truncated`, p);
        got += bytesRead;
      }
      return b;
    } finally {
      await fh.close();
    }
  }

  /** A member's content as a stream. */
  open(p: string, what = 'file'): Readable {
    const m = this.need(p, what);
    if (m.kind === 'memory') return Readable.from([m.data], { objectMode: false });
    const size = m.size;
    if (size === 0) return Readable.from([], { objectMode: false });
    const start = m.kind === 'range' ? m.offset : 0;
    // O_NOFOLLOW: a file of an extracted directory swapped for a symlink since it was listed is not followed.
    const fd = fsSync.openSync(m.kind === 'range' ? this.file! : m.file, fsSync.constants.O_RDONLY | fsSync.constants.O_NOFOLLOW);
    return fsSync.createReadStream('', { fd, start, end: start + size - 1, highWaterMark: 1 << 20 });
  }

  /**
   * A member's content in chunks read into recycled buffers (see {@link fileChunks}): what the layer store
   * reads fastest. Opened (O_NOFOLLOW, as {@link open}) when iterated.
   */
  chunks(p: string, what = 'file'): RecyclableSource {
    const m = this.need(p, what);
    if (m.kind === 'memory') {
      const data = m.data;
      return {
        async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
          if (data.length > 0) yield data;
        },
        recycle: () => undefined,
      };
    }
    const file = m.kind === 'range' ? this.file! : m.file;
    return fileChunks(file, { start: m.kind === 'range' ? m.offset : 0, length: m.size, openFlags: fsSync.constants.O_NOFOLLOW });
  }

  /** Removes the spool directory. */
  async close(): Promise<void> {
    if (this.spoolDir !== null) await fs.rm(this.spoolDir, { recursive: true, force: true });
  }
}
