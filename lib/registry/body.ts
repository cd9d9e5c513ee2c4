/**
 * Bounded reading of small response bodies (manifests, configs, token answers, error documents): a hostile or
 * broken server cannot make the client buffer more than the caller allows.
 * @module
 */
import { RegistryError } from './errors';

/** Reads a response body, refusing more than `max` bytes. */
export async function readLimitedBytes(res: Response, max: number, what = 'response'): Promise<Buffer> {
  if (res.body === null) return Buffer.alloc(0);
  const len = Number(res.headers.get('content-length') ?? NaN);
  if (len > max) {
    await res.body.cancel().catch(() => undefined);
    throw new RegistryError(`${what} of ${len} bytes is larger than the ${max} bytes allowed`, res.status);
  }
  const parts: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    total += chunk.length;
    if (total > max) throw new RegistryError(`${what} is larger than the ${max} bytes allowed`, res.status);
    parts.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
  }
  return Buffer.concat(parts);
}

/** Reads a response body as UTF-8 text, refusing more than `max` bytes. */
export async function readLimited(res: Response, max: number, what = 'response'): Promise<string> {
  return (await readLimitedBytes(res, max, what)).toString('utf8');
}

/** Discards a response body (so the connection can be reused) without failing. */
export async function discardBody(res: Response): Promise<void> {
  if (res.body === null) return;
  await res.body.cancel().catch(() => undefined);
}
