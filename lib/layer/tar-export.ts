/**
 * The stream {@link LayerStore.tarStream} hands out: a layer tar pulled from a generator, checked against the
 * layer's diffID, with the resources it holds (mount, pinned layer) released exactly once however it ends
 * (read to the end, failed, or destroyed by the consumer before or during reading).
 * @module
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';

import { DigestMismatchError } from '../storage/errors';

/**
 * Yields `source` unchanged while hashing it; at the end, compares the sha256 with `diffId` and throws
 * ERR_DIGEST_MISMATCH on a difference. The last chunk is held back until the check passed, so a consumer never
 * receives the whole of a wrong tar without an error.
 */
export async function* verifyDiffId(source: AsyncIterable<Uint8Array>, diffId: string, what: string): AsyncGenerator<Buffer> {
  const hash = createHash('sha256');
  let held: Buffer | null = null;
  for await (const c of source) {
    if (c.length === 0) continue;
    const b = Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.length);
    hash.update(b);
    if (held !== null) yield held;
    held = b;
  }
  const got = `sha256:${hash.digest('hex')}`;
  if (got !== diffId) throw new DigestMismatchError(diffId, got, what);
  if (held !== null) yield held;
}

/**
 * A byte stream over an async iterator that calls `release` once: when the iterator is done (before the end of
 * the stream is signalled), when it fails, or when the stream is destroyed.
 */
export function releasingStream(it: AsyncIterator<Buffer>, release: () => Promise<void>, highWaterMark = 1 << 20): Readable {
  let released: Promise<void> | null = null;
  const finish = (): Promise<void> => (released ??= release());
  let reading = false;
  const stream = new Readable({
    highWaterMark,
    read() {
      if (reading) return;
      reading = true;
      void (async () => {
        try {
          for (;;) {
            const r = await it.next();
            if (stream.destroyed) return;
            if (r.done) {
              await finish();
              stream.push(null);
              return;
            }
            if (!stream.push(r.value)) return;
          }
        } catch (e) {
          await finish().catch(() => undefined);
          stream.destroy(e instanceof Error ? e : new Error(String(e)));
        } finally {
          reading = false;
        }
      })();
    },
    destroy(err, cb) {
      void (async () => {
        let failure: Error | null = err;
        try {
          await it.return?.();
        } catch {
          // the iterator's own failure was reported already, or does not matter once the consumer gave up
        }
        try {
          await finish();
        } catch (e) {
          failure ??= e instanceof Error ? e : new Error(String(e));
        }
        cb(failure);
      })();
    },
  });
  return stream;
}
