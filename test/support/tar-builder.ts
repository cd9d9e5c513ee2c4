/**
 * Builds tar archives in memory for tests: well-formed ones through our writer, and raw hostile ones.
 */
import { encodeHeader, END_OF_ARCHIVE, paddingFor, type TarWriteHeader } from '../../lib/archive/tar-writer';

/** One entry to write: header fields with defaults, plus content for files. */
export type TestEntry = Partial<TarWriteHeader> & { name: string; data?: Buffer | string };

/** Fills defaults (root-owned, 0644 files / 0755 dirs, mtime 1700000000). */
export function header(e: TestEntry): TarWriteHeader {
  const type = e.type ?? 'file';
  const data = e.data === undefined ? Buffer.alloc(0) : Buffer.from(e.data);
  return {
    mode: type === 'dir' ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    mtimeSec: 1700000000,
    ...e,
    type,
    size: type === 'file' ? (e.size ?? data.length) : 0,
  };
}

/** Encodes entries into a complete archive. */
export function buildTar(entries: TestEntry[], opts: { end?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const h = header(e);
    parts.push(encodeHeader(h));
    if (h.type === 'file') {
      const data = e.data === undefined ? Buffer.alloc(h.size) : Buffer.from(e.data);
      parts.push(data, Buffer.alloc(paddingFor(data.length)));
    }
  }
  if (opts.end !== false) parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

/** Recomputes the checksum of a 512-byte header block after a test tampered with it. */
export function fixChecksum(block: Buffer): Buffer {
  block.write('        ', 148, 8, 'latin1');
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += block[i]!;
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return block;
}

/** Yields a buffer in small chunks, to exercise chunk boundaries. */
export async function* chunked(buf: Buffer, size = 7): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

/** Yields a buffer as one chunk. */
export async function* once(buf: Buffer): AsyncGenerator<Buffer> {
  yield buf;
}
