/**
 * Reading file bodies out of a mounted layer for tar re-creation ({@link assembleTar}). Every path is opened
 * through the native bounded open (resolved inside the layer root, final component not followed), and must be a
 * regular file: a symlink in the layer, absolute or not, can never make us read a file of the host.
 * @module
 */
import * as fs from 'node:fs';
import { promisify } from 'node:util';

import { OpenFlags } from '../native/constants';
import type { NativeBindings } from '../native/types';
import { DigestMismatchError } from '../storage/errors';
import type { LayerFiles } from './tar-split';

const fsRead = promisify(fs.read);
const fsClose = promisify(fs.close);
const fsFstat = promisify(fs.fstat);

/** Chunk size of streamed reads. */
const CHUNK = 1 << 20;

/** {@link LayerFiles} over the layer mounted at `root`. */
export function boundedLayerFiles(root: string, bindings: NativeBindings): LayerFiles {
  const open = async (name: string): Promise<number> => {
    const fd = await bindings.openBounded(root, name, {
      // O_NONBLOCK: a fifo in the layer must not block a pool thread; O_NOCTTY: a tty must not become ours.
      flags: OpenFlags.O_RDONLY | OpenFlags.O_NOFOLLOW | OpenFlags.O_NONBLOCK | OpenFlags.O_NOCTTY,
    });
    try {
      const st = await fsFstat(fd);
      if (!st.isFile()) throw new DigestMismatchError('a regular file', 'another file type', `content of ${JSON.stringify(name)}`);
    } catch (e) {
      await fsClose(fd).catch(() => undefined);
      throw e;
    }
    return fd;
  };
  /** Reads up to `max` bytes at `pos` into a fresh buffer; shorter only at end of file. */
  const readAt = async (fd: number, pos: number, max: number): Promise<Buffer> => {
    const buf = Buffer.allocUnsafe(max);
    let got = 0;
    while (got < max) {
      const { bytesRead } = await fsRead(fd, buf, got, max - got, pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got === max ? buf : buf.subarray(0, got);
  };
  return {
    async readAll(name: string, size: number): Promise<Buffer> {
      const fd = await open(name);
      try {
        return await readAt(fd, 0, size);
      } finally {
        await fsClose(fd);
      }
    },
    async *stream(name: string, size: number): AsyncGenerator<Buffer> {
      const fd = await open(name);
      try {
        for (let pos = 0; pos < size; ) {
          const c = await readAt(fd, pos, Math.min(CHUNK, size - pos));
          if (c.length === 0) return;
          pos += c.length;
          yield c;
        }
      } finally {
        await fsClose(fd);
      }
    },
  };
}
