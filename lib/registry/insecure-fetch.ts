/**
 * A fetch over `node:https` that does not verify certificates, for registries the user declared insecure
 * (Docker's `insecure-registries`: TLS without verification first, plain http as the fallback). Node's global
 * fetch cannot turn verification off per request, hence this small adapter returning standard Responses.
 * Redirects are never followed here: the registry client follows them itself.
 * @module
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';

import { RegistryError } from './errors';

function toHeaders(h: http.IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const [k, v] of Object.entries(h)) {
    if (Array.isArray(v)) for (const x of v) out.append(k, x);
    else if (v !== undefined) out.set(k, v);
  }
  return out;
}

/** fetch-compatible request without certificate verification (see the module documentation). */
export function insecureFetch(url: URL, init: RequestInit): Promise<Response> {
  return new Promise<Response>((resolve, reject) => {
    const method = (init.method ?? 'GET').toUpperCase();
    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((v, k) => (headers[k] = v));
    const mod = url.protocol === 'https:' ? https : http;
    const options: https.RequestOptions = { method, headers, rejectUnauthorized: false };
    if (init.signal) options.signal = init.signal;
    const req = mod.request(url, options, (res) => {
      const status = res.statusCode ?? 0;
      if (status < 200 || status > 599) {
        res.destroy();
        reject(new RegistryError(`${url.origin}: unusable HTTP status ${status}`, status));
        return;
      }
      const nullBody = method === 'HEAD' || status === 204 || status === 304;
      if (nullBody) res.resume();
      const body = nullBody ? null : (Readable.toWeb(res) as unknown as WebReadableStream<Uint8Array>);
      resolve(new Response(body as unknown as ReadableStream<Uint8Array> | null, { status, statusText: res.statusMessage ?? '', headers: toHeaders(res.headers) }));
    });
    req.on('error', reject);
    const b = init.body;
    if (b === undefined || b === null) req.end();
    else if (typeof b === 'string' || Buffer.isBuffer(b) || b instanceof Uint8Array) req.end(b);
    else if (typeof (b as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === 'function') {
      pipeline(Readable.from(b as AsyncIterable<Uint8Array>, { objectMode: false }), req).catch((e: unknown) => {
        req.destroy(e instanceof Error ? e : new Error(String(e)));
      });
    } else {
      req.destroy();
      reject(new TypeError('insecureFetch: unsupported body type'));
    }
  });
}
