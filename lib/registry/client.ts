/**
 * A client of one registry speaking the OCI distribution API v2 over Node's fetch: scheme discovery (`https`,
 * falling back to plain `http` only for loopback or declared-insecure registries), authentication
 * ({@link Authenticator}), retries with backoff, redirects followed by hand (credentials never leave the
 * registry's origin; no downgrade to `http`), manifests and small blobs verified against their digests, large
 * blobs streamed with digest verification and resumed with `Range` after a cut connection, and blob uploads
 * (cross-repository mount, monolithic, chunked with resume).
 * @module
 */
import { createHash } from 'node:crypto';

import { makeHasher } from '../archive/stream-hash';
import { DigestMismatchError } from '../storage/errors';
import { Authenticator, type Credentials } from './auth';
import { discardBody, readLimited, readLimitedBytes } from './body';
import { insecureFetch } from './insecure-fetch';
import { InsecureRegistryError, ManifestNotFoundError, RegistryAuthError, RegistryError, type RegistryErrorDetail } from './errors';
import { MANIFEST_ACCEPT, MAX_MANIFEST_SIZE, type Descriptor } from './manifest';
import { isLoopbackHost } from './reference';
import {
  abortReason,
  backoffDelay,
  IdleTimeoutError,
  isTlsProtocolError,
  isTransientError,
  isTransientStatus,
  parseRetryAfter,
  retryPolicy,
  sleep,
  throwIfAborted,
  type RetryOptions,
  type RetryPolicy,
} from './retry';

/** A fetch implementation (Node's global fetch by default). */
export type FetchFn = (input: URL, init: RequestInit) => Promise<Response>;

/** Connection options shared by pull and push. */
export interface RegistryOptions {
  /** Credentials for the registry (anonymous when absent). */
  credentials?: Credentials;
  /**
   * Treat the registry as insecure, as Docker's `insecure-registries`: TLS without certificate verification, and
   * plain `http://` when TLS fails (loopback registries may use plain http without this).
   */
  insecure?: boolean;
  /** Retries of transient failures. */
  retry?: RetryOptions;
  /** Drop a connection on which nothing arrived for this long, and retry or resume (default 60 s). */
  idleTimeoutMs?: number;
  /** `User-Agent` header. */
  userAgent?: string;
  /** fetch implementation (tests, proxies). */
  fetch?: FetchFn;
  /** Cancels everything in flight. */
  signal?: AbortSignal;
}

/** Options of {@link RegistryClient}. */
export interface RegistryClientOptions extends Omit<RegistryOptions, 'signal'> {
  /** `host[:port]` to connect to. */
  host: string;
}

/** Body of a request: bytes, or a factory of a stream (called again for each attempt). */
export type RequestBody = Buffer | string | (() => AsyncIterable<Uint8Array>);

/** Options of {@link RegistryClient.request}. */
export interface RequestOptions {
  /** Token scopes the request needs (`repository:<name>:pull`). */
  scopes: readonly string[];
  headers?: Record<string, string>;
  body?: RequestBody;
  signal?: AbortSignal;
  /** Retry transient failures (default true; uploads manage their own retries). */
  retry?: boolean;
}

/** A manifest as fetched: exact bytes, media type and digest (verified). */
export interface FetchedManifest {
  bytes: Buffer;
  /** `Content-Type` of the answer. */
  mediaType: string | null;
  /** `sha256:` of the bytes. */
  digest: string;
}

/** What to do after a blob's bytes (upload or mount). */
export type MountResult = { mounted: true } | { mounted: false; location: URL };

const DEFAULT_IDLE_TIMEOUT = 60_000;
const MAX_REDIRECTS = 10;
const MAX_ERROR_BODY = 64 << 10;
const UPLOAD_CONTENT_TYPE = 'application/octet-stream';

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** Combines the caller's signal with an internal one. */
export function anySignal(signals: Array<AbortSignal | undefined>): AbortSignal | undefined {
  const list = signals.filter((s): s is AbortSignal => s !== undefined);
  if (list.length === 0) return undefined;
  if (list.length === 1) return list[0];
  return AbortSignal.any(list);
}

/** Parses the registry's JSON error document, when there is one. */
function parseErrors(text: string): RegistryErrorDetail[] {
  try {
    const doc = JSON.parse(text) as { errors?: unknown };
    if (!Array.isArray(doc.errors)) return [];
    return doc.errors
      .filter((e): e is { code?: unknown; message?: unknown } => typeof e === 'object' && e !== null)
      .map((e) => ({ code: typeof e.code === 'string' ? e.code : 'UNKNOWN', message: typeof e.message === 'string' ? e.message : '' }));
  } catch {
    return [];
  }
}

/**
 * A registry client for one host; see the module documentation.
 *
 * @example
 * ```ts
 * import { DEFAULT_PLATFORM, parseManifest, parseRegistryReference, RegistryClient, selectManifest } from 'graphdriver';
 *
 * const ref = parseRegistryReference('busybox'); // host 'registry-1.docker.io', repository 'library/busybox', tag 'latest'
 * const client = new RegistryClient({ host: ref.host });
 * const fetched = await client.getManifest(ref.repository, ref.tag ?? 'latest'); // digest verified
 * let m = parseManifest(fetched.bytes, fetched.mediaType);
 * if (m.kind === 'index') {
 *   const d = selectManifest(m, DEFAULT_PLATFORM); // linux/amd64
 *   if (d === null) throw new Error('no linux/amd64 image');
 *   m = parseManifest((await client.getManifest(ref.repository, d.digest, { expectSize: d.size })).bytes);
 * }
 * if (m.kind === 'image') for await (const chunk of client.blobStream(ref.repository, m.layers[0]!)) process.stdout.write(chunk);
 * ```
 */
export class RegistryClient {
  readonly host: string;
  private readonly auth: Authenticator;
  private readonly policy: RetryPolicy;
  private readonly fetchFn: FetchFn;
  private readonly idleMs: number;
  private readonly userAgent: string;
  private readonly insecure: boolean;
  private base: URL | null = null;
  private pinging: Promise<URL> | null = null;

  constructor(o: RegistryClientOptions) {
    this.host = o.host;
    this.insecure = o.insecure ?? false;
    this.policy = retryPolicy(o.retry);
    // Declared-insecure and loopback registries get TLS without certificate verification (then plain http, see
    // ping), as Docker treats them; only towards that host: a redirect elsewhere is verified as usual.
    const unverified = this.insecure || isLoopbackHost(o.host);
    const ownHost = o.host.toLowerCase();
    this.fetchFn =
      o.fetch ?? (unverified ? (u, i) => (u.protocol === 'https:' && u.host.toLowerCase() === ownHost ? insecureFetch(u, i) : fetch(u, i)) : (u, i) => fetch(u, i));
    this.idleMs = o.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT;
    this.userAgent = o.userAgent ?? `graphdriver (node ${process.version})`;
    const authOpts: ConstructorParameters<typeof Authenticator>[0] = {
      registry: o.host,
      fetch: (url, init) => this.sendRetrying(url, init, init.signal ?? undefined),
      allowHttp: (h) => this.allowHttp(h),
    };
    if (o.credentials !== undefined) authOpts.credentials = o.credentials;
    this.auth = new Authenticator(authOpts);
  }

  /** Whether plain http may be used towards `hostPort`. */
  allowHttp(hostPort: string): boolean {
    return isLoopbackHost(hostPort) || (this.insecure && hostPort.toLowerCase() === this.host.toLowerCase());
  }

  // ---- transport ----

  /**
   * One exchange, redirects followed by hand: the `Authorization` header is dropped when a redirect leaves the
   * origin (blob storage behind a CDN must not see registry credentials), and `https` never redirects to `http`
   * unless that host may use it.
   */
  private async send(url: URL, init: RequestInit): Promise<Response> {
    let target = url;
    let req: RequestInit = { ...init, redirect: 'manual' };
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const res = await this.fetchFn(target, req);
      if (![301, 302, 303, 307, 308].includes(res.status)) return res;
      const loc = res.headers.get('location');
      if (loc === null) return res;
      await discardBody(res);
      const next = new URL(loc, target);
      if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new RegistryError(`redirect to unsupported URL ${next.protocol}`, res.status);
      if (next.protocol === 'http:' && !this.allowHttp(next.host)) throw new InsecureRegistryError(next.host, `${this.host} redirected to ${next.origin}`);
      if (next.origin !== target.origin) {
        const h = new Headers(req.headers);
        h.delete('authorization');
        req = { ...req, headers: h };
      }
      const method = (req.method ?? 'GET').toUpperCase();
      if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === 'POST')) {
        req = { ...req, method: 'GET' };
        delete req.body;
        delete req.duplex;
      }
      target = next;
    }
    throw new RegistryError(`${this.host}: more than ${MAX_REDIRECTS} redirects`);
  }

  /** {@link send} with retries of network failures and transient statuses. */
  private async sendRetrying(url: URL, init: RequestInit, signal: AbortSignal | undefined, retry = true): Promise<Response> {
    for (let attempt = 1; ; attempt++) {
      throwIfAborted(signal);
      let res: Response;
      try {
        res = await this.send(url, signal ? { ...init, signal } : init);
      } catch (e) {
        if (signal?.aborted) throw abortReason(signal);
        if (retry && isTransientError(e) && attempt < this.policy.attempts) {
          await sleep(backoffDelay(attempt, this.policy), signal);
          continue;
        }
        throw this.networkError(url, e);
      }
      if (retry && isTransientStatus(res.status) && attempt < this.policy.attempts) {
        const after = parseRetryAfter(res.headers.get('retry-after'));
        await discardBody(res);
        await sleep(backoffDelay(attempt, this.policy, after), signal);
        continue;
      }
      return res;
    }
  }

  /** Wraps a network failure (fetch's bare "fetch failed") into an error that names the registry; anything else passes. */
  private networkError(url: URL, e: unknown): unknown {
    const network = isTransientError(e) || isTlsProtocolError(e) || isCertificateError((e as { cause?: unknown })?.cause) || (e instanceof TypeError && e.message === 'fetch failed');
    if (!network) return e;
    let detail = e instanceof Error ? e.message : String(e);
    for (let c: unknown = (e as { cause?: unknown })?.cause; c; c = (c as { cause?: unknown }).cause) {
      if (c instanceof Error) detail += `: ${c.message}`;
      if (!(c as { cause?: unknown }).cause) break;
    }
    return new RegistryError(`cannot reach ${url.origin}: ${detail}`, undefined, [], 'ERR_REGISTRY', { cause: e });
  }

  /**
   * The base URL (`https://host/` or, for loopback and insecure registries whose https fails at the TLS layer,
   * `http://host/`), found by pinging `/v2/`; the answer's challenge (401) is remembered for authentication.
   */
  async endpoint(signal?: AbortSignal): Promise<URL> {
    if (this.base) return this.base;
    if (!this.pinging) {
      this.pinging = this.ping(signal).finally(() => {
        this.pinging = null;
      });
    }
    return this.pinging;
  }

  private async ping(signal?: AbortSignal): Promise<URL> {
    const schemes = ['https:'];
    if (this.allowHttp(this.host)) schemes.push('http:');
    let lastError: unknown = null;
    for (const scheme of schemes) {
      const base = new URL(`${scheme}//${this.host}/`);
      let res: Response;
      try {
        res = await this.sendRetrying(new URL('v2/', base), { method: 'GET', headers: this.baseHeaders() }, signal);
      } catch (e) {
        if (signal?.aborted) throw abortReason(signal);
        lastError = e;
        // A TLS failure against an endpoint that may speak plain http: try http. Anything else is final.
        const cause = (e as { cause?: unknown }).cause ?? e;
        if (scheme === 'https:' && schemes.length > 1 && (isTlsProtocolError(cause) || isTlsProtocolError(e) || isCertificateError(cause))) continue;
        throw e;
      }
      await discardBody(res);
      if (res.status === 401) this.auth.learn(res);
      else if (!res.ok) {
        throw new RegistryError(`${base.origin}/v2/ answered HTTP ${res.status}: not an OCI distribution (v2) registry`, res.status);
      }
      this.base = base;
      return base;
    }
    throw lastError ?? new RegistryError(`cannot reach ${this.host}`);
  }

  private baseHeaders(): Record<string, string> {
    return { 'user-agent': this.userAgent };
  }

  /**
   * An authenticated request to `path` (relative to the registry root, or an absolute URL on it, such as an
   * upload location). Answers a 401 challenge once, retries transient failures, and throws
   * {@link RegistryAuthError} when access stays refused. Other statuses are the caller's to check.
   */
  async request(method: string, path: string | URL, o: RequestOptions): Promise<Response> {
    const base = await this.endpoint(o.signal);
    const url = typeof path === 'string' ? new URL(path, base) : path;
    if (url.protocol === 'http:' && !this.allowHttp(url.host)) throw new InsecureRegistryError(url.host, 'the registry sent a plain http location');
    let reauthed = false;
    for (;;) {
      const headers: Record<string, string> = { ...this.baseHeaders(), ...(o.headers ?? {}) };
      const authz = await this.auth.authorization(o.scopes, o.signal);
      if (authz !== undefined && url.origin === base.origin) headers.authorization = authz;
      const init: RequestInit = { method, headers };
      if (o.body !== undefined) {
        if (typeof o.body === 'function') {
          init.body = o.body();
          init.duplex = 'half';
        } else {
          init.body = o.body;
        }
      }
      const res = await this.sendRetrying(url, init, o.signal, (o.retry ?? true) && typeof o.body !== 'function');
      if (res.status !== 401) {
        if (res.status === 403) throw await this.fail(res, `${method} ${url.pathname}`);
        return res;
      }
      await discardBody(res);
      if (!reauthed && (await this.auth.onUnauthorized(res, o.scopes, o.signal))) {
        reauthed = true;
        continue;
      }
      throw new RegistryAuthError(
        `${this.host}: authentication required for ${o.scopes.join(', ') || url.pathname}` +
          (this.auth.scheme === null ? '' : ' (access refused with the credentials given; pass credentials that grant it)'),
        401,
      );
    }
  }

  /** The error for an unexpected answer (consumes the body). */
  async fail(res: Response, what: string): Promise<RegistryError> {
    const text = await readLimited(res, MAX_ERROR_BODY).catch(() => '');
    const details = parseErrors(text);
    const summary = details.length > 0 ? details.map((d) => `${d.code}: ${d.message}`).join('; ') : text.slice(0, 200).trim();
    const msg = `${this.host}: ${what}: HTTP ${res.status}${summary ? ` (${summary})` : ''}`;
    if (res.status === 401 || res.status === 403) return new RegistryAuthError(msg, res.status, details);
    return new RegistryError(msg, res.status, details);
  }

  // ---- manifests ----

  /**
   * Fetches a manifest by tag or digest. Its digest is verified: against the digest asked for, and against the
   * registry's `Docker-Content-Digest` when fetched by tag. `expectSize` (from a descriptor) is checked too.
   */
  async getManifest(repository: string, ref: string, o: { signal?: AbortSignal; expectSize?: number } = {}): Promise<FetchedManifest> {
    const path = `v2/${repository}/manifests/${ref}`;
    const req: RequestOptions = { scopes: [`repository:${repository}:pull`], headers: { accept: MANIFEST_ACCEPT } };
    if (o.signal) req.signal = o.signal;
    const res = await this.request('GET', path, req);
    if (res.status === 404) {
      const text = await readLimited(res, MAX_ERROR_BODY).catch(() => '');
      throw new ManifestNotFoundError(`${this.host}/${repository}${ref.startsWith('sha256:') ? '@' : ':'}${ref}`, parseErrors(text));
    }
    if (!res.ok) throw await this.fail(res, `manifest ${repository}:${ref}`);
    const bytes = await readLimitedBytes(res, MAX_MANIFEST_SIZE, 'manifest');
    const digest = sha256(bytes);
    if (ref.startsWith('sha256:') && digest !== ref) throw new DigestMismatchError(ref, digest, `manifest ${repository}@${ref}`);
    const announced = res.headers.get('docker-content-digest');
    if (!ref.startsWith('sha256:') && announced !== null && announced.startsWith('sha256:') && announced !== digest) {
      throw new DigestMismatchError(announced, digest, `manifest ${repository}:${ref}`);
    }
    if (o.expectSize !== undefined && bytes.length !== o.expectSize) {
      throw new DigestMismatchError(ref, `${digest} (${bytes.length} bytes, expected ${o.expectSize})`, `manifest ${repository}@${ref}`);
    }
    return { bytes, mediaType: res.headers.get('content-type'), digest };
  }

  /** Uploads a manifest under a tag or digest; resolves to its digest (checked against the registry's). */
  async putManifest(repository: string, ref: string, bytes: Buffer, mediaType: string, signal?: AbortSignal): Promise<string> {
    const req: RequestOptions = { scopes: [`repository:${repository}:pull,push`], headers: { 'content-type': mediaType }, body: bytes };
    if (signal) req.signal = signal;
    const res = await this.request('PUT', `v2/${repository}/manifests/${ref}`, req);
    if (res.status !== 201 && res.status !== 200 && res.status !== 202) throw await this.fail(res, `manifest upload ${repository}:${ref}`);
    await discardBody(res);
    const digest = sha256(bytes);
    const announced = res.headers.get('docker-content-digest');
    if (announced !== null && announced !== '' && announced !== digest) throw new DigestMismatchError(digest, announced, `manifest ${repository}:${ref} as stored by the registry`);
    return digest;
  }

  // ---- blobs ----

  /** Size of a blob in a repository, or null when the registry does not have it there. */
  async blobSize(repository: string, digest: string, signal?: AbortSignal, scopes?: readonly string[]): Promise<number | null> {
    const req: RequestOptions = { scopes: scopes ?? [`repository:${repository}:pull`] };
    if (signal) req.signal = signal;
    const res = await this.request('HEAD', `v2/${repository}/blobs/${digest}`, req);
    await discardBody(res);
    if (res.status === 404) return null;
    if (!res.ok) throw await this.fail(res, `blob ${digest}`);
    const len = Number(res.headers.get('content-length'));
    return Number.isSafeInteger(len) && len >= 0 ? len : -1;
  }

  /** A small blob (an image config) read whole and verified. */
  async getBlob(repository: string, desc: Descriptor, max: number, signal?: AbortSignal): Promise<Buffer> {
    if (desc.size > max) throw new RegistryError(`blob ${desc.digest} of ${desc.size} bytes is larger than the ${max} allowed`);
    const parts: Buffer[] = [];
    const o: BlobStreamOptions = {};
    if (signal) o.signal = signal;
    for await (const c of this.blobStream(repository, desc, o)) parts.push(c);
    return Buffer.concat(parts);
  }

  /**
   * Streams a blob and verifies it: never more bytes than the descriptor's size, and the sha256 checked at the
   * end. The last chunk is only released once the digest matched: a consumer that stops at the end of the
   * stream has seen verified bytes, and a mismatch reaches it as an error (ERR_DIGEST_MISMATCH) before the end.
   * A connection cut (or silent for `idleTimeoutMs`) is resumed with a `Range` request from the first missing
   * byte; a registry that answers the whole blob again has the part already seen skipped.
   */
  async *blobStream(repository: string, desc: Descriptor, o: BlobStreamOptions = {}): AsyncGenerator<Buffer> {
    // On the thread pool (the addon's sha256): the main thread has the HTTP stream and the layer to parse.
    const hash = await makeHasher();
    const path = `v2/${repository}/blobs/${desc.digest}`;
    let received = 0;
    let failures = 0;
    let held: Buffer | null = null;
    for (;;) {
      throwIfAborted(o.signal);
      const attempt = new AbortController();
      const signal = anySignal([o.signal, attempt.signal])!;
      let timer: NodeJS.Timeout | undefined;
      const arm = (): void => {
        clearTimeout(timer);
        timer = setTimeout(() => attempt.abort(new IdleTimeoutError(`blob ${desc.digest}`, this.idleMs)), this.idleMs);
      };
      let progressed = false;
      try {
        arm();
        const headers: Record<string, string> = { accept: '*/*' };
        if (received > 0) headers.range = `bytes=${received}-`;
        const res = await this.request('GET', path, { scopes: o.scopes ?? [`repository:${repository}:pull`], headers, signal });
        let skip = 0;
        if (res.status === 206 && received > 0) {
          const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
          if (!m || Number(m[1]) !== received) {
            await discardBody(res);
            throw new RegistryError(`blob ${desc.digest}: the registry resumed at the wrong offset (${res.headers.get('content-range') ?? 'no Content-Range'})`, 206);
          }
        } else if (res.status === 200) {
          skip = received; // no range support: the part already seen comes again
        } else if (res.status === 404) {
          const text = await readLimited(res, MAX_ERROR_BODY).catch(() => '');
          throw new RegistryError(`${this.host}: blob ${desc.digest} not found in ${repository}`, 404, parseErrors(text));
        } else {
          throw await this.fail(res, `blob ${desc.digest}`);
        }
        if (res.body === null) throw new RegistryError(`blob ${desc.digest}: empty answer`, res.status);
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          arm();
          let c = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
          if (skip > 0) {
            const n = Math.min(skip, c.length);
            skip -= n;
            c = c.subarray(n);
            if (c.length === 0) continue;
          }
          received += c.length;
          progressed = true;
          if (received > desc.size) {
            throw new DigestMismatchError(desc.digest, `more than ${desc.size} bytes`, `blob ${desc.digest}`);
          }
          const hashing = hash.update(c);
          if (hashing) await hashing;
          o.onBytes?.(received);
          // One chunk is held back so that the end of the stream can be withheld until the digest is checked.
          if (held !== null) {
            // The consumer's time is not the network's silence: no idle timer while it holds the chunk.
            clearTimeout(timer);
            yield held;
            arm();
          }
          held = c;
        }
        clearTimeout(timer);
        if (skip > 0 || received < desc.size) {
          // A body that ended early without a socket error (some proxies do that): resume like a cut.
          throw Object.assign(new Error('terminated'), { code: 'UND_ERR_SOCKET' });
        }
        break;
      } catch (e) {
        clearTimeout(timer);
        if (o.signal?.aborted) throw abortReason(o.signal);
        const cause = attempt.signal.aborted ? attempt.signal.reason : e;
        if (progressed) failures = 0; // a resumed transfer that advanced earns fresh attempts
        if (!isTransientError(cause) || ++failures >= this.policy.attempts) throw this.networkError(new URL(path, this.base ?? `https://${this.host}/`), cause);
        await sleep(backoffDelay(failures, this.policy), o.signal);
      } finally {
        clearTimeout(timer);
      }
    }
    const actual = `sha256:${await hash.digest()}`;
    if (actual !== desc.digest) throw new DigestMismatchError(desc.digest, actual, `blob ${desc.digest}`);
    if (held !== null) yield held;
  }

  // ---- uploads ----

  /**
   * Asks the registry to mount `digest` from repository `from` into `repository` (same registry). Resolves to
   * `{ mounted: true }`, or to the upload session the registry opened instead (it may refuse to mount).
   */
  async mountBlob(repository: string, digest: string, from: string, signal?: AbortSignal): Promise<MountResult> {
    const q = new URLSearchParams({ mount: digest, from });
    const req: RequestOptions = { scopes: [`repository:${repository}:pull,push`, `repository:${from}:pull`], headers: { 'content-length': '0' } };
    if (signal) req.signal = signal;
    const res = await this.request('POST', `v2/${repository}/blobs/uploads/?${q.toString()}`, req);
    await discardBody(res);
    if (res.status === 201) return { mounted: true };
    if (res.status === 202) return { mounted: false, location: this.location(res) };
    throw await this.fail(res, `mount of ${digest} from ${from}`);
  }

  /** Opens an upload session; resolves to its location. */
  async startUpload(repository: string, signal?: AbortSignal): Promise<URL> {
    const req: RequestOptions = { scopes: [`repository:${repository}:pull,push`], headers: { 'content-length': '0' } };
    if (signal) req.signal = signal;
    const res = await this.request('POST', `v2/${repository}/blobs/uploads/`, req);
    await discardBody(res);
    if (res.status !== 202) throw await this.fail(res, `upload to ${repository}`);
    return this.location(res);
  }

  /** Abandons an upload session (best effort). */
  async cancelUpload(repository: string, location: URL, signal?: AbortSignal): Promise<void> {
    const req: RequestOptions = { scopes: [`repository:${repository}:pull,push`], retry: false };
    if (signal) req.signal = signal;
    await this.request('DELETE', location, req).then(discardBody, () => undefined);
  }

  private location(res: Response): URL {
    const loc = res.headers.get('location');
    if (loc === null || loc === '') throw new RegistryError(`${this.host}: upload answer without a Location`, res.status);
    return new URL(loc, this.base ?? `https://${this.host}/`);
  }

  /**
   * Uploads a blob whose digest and size are known, from `open(offset)` (a stream of the blob's bytes from
   * `offset`; called again for retries). Monolithic (one PUT) by default; with `chunkSize`, PATCH requests of
   * that many bytes, and a transfer that fails midway resumes from the offset the registry reports. Failures
   * that cannot resume restart with a new session, up to the retry policy's attempts.
   */
  async uploadBlob(repository: string, digest: string, size: number, open: (offset: number) => AsyncIterable<Uint8Array>, o: UploadOptions = {}): Promise<void> {
    const scopes = [`repository:${repository}:pull,push`];
    for (let attempt = 1; ; attempt++) {
      throwIfAborted(o.signal);
      let location: URL | null = null;
      try {
        location = attempt === 1 && o.location !== undefined ? o.location : await this.startUpload(repository, o.signal);
        if (o.chunkSize === undefined || o.chunkSize >= size) {
          await this.putFinal(location, digest, size, size > 0 ? () => counted(open(0), 0, o.onBytes) : null, scopes, o.signal);
        } else {
          await this.uploadChunks(location, digest, size, open, o.chunkSize, scopes, o);
        }
        return;
      } catch (e) {
        if (o.signal?.aborted) throw abortReason(o.signal);
        const cause = (e as { cause?: unknown }).cause ?? e;
        const transient = isTransientError(cause) || (e instanceof RegistryError && e.status !== undefined && isTransientStatus(e.status));
        if (location !== null) await this.cancelUpload(repository, location, o.signal);
        if (!transient || attempt >= this.policy.attempts) throw e;
        await sleep(backoffDelay(attempt, this.policy), o.signal);
      }
    }
  }

  private async putFinal(
    location: URL,
    digest: string,
    size: number,
    body: (() => AsyncIterable<Uint8Array>) | null,
    scopes: string[],
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const url = new URL(location.href);
    url.searchParams.set('digest', digest);
    const req: RequestOptions = { scopes, headers: { 'content-type': UPLOAD_CONTENT_TYPE, 'content-length': String(body === null ? 0 : size) }, retry: false };
    if (body !== null) req.body = body;
    if (signal) req.signal = signal;
    const res = await this.request('PUT', url, req);
    if (res.status !== 201 && res.status !== 204 && res.status !== 200) {
      const err = await this.fail(res, `upload of ${digest}`);
      if (err.details.some((d) => d.code === 'DIGEST_INVALID')) throw new DigestMismatchError(digest, 'another digest (the registry computed a different one)', `blob ${digest} as received by the registry`);
      throw err;
    }
    await discardBody(res);
  }

  private async uploadChunks(
    start: URL,
    digest: string,
    size: number,
    open: (offset: number) => AsyncIterable<Uint8Array>,
    chunkSize: number,
    scopes: string[],
    o: UploadOptions,
  ): Promise<void> {
    let location = start;
    let offset = 0;
    let failures = 0;
    while (offset < size) {
      throwIfAborted(o.signal);
      const n = Math.min(chunkSize, size - offset);
      const from = offset;
      const req: RequestOptions = {
        scopes,
        headers: { 'content-type': UPLOAD_CONTENT_TYPE, 'content-range': `${from}-${from + n - 1}`, 'content-length': String(n) },
        body: () => counted(limit(open(from), n), from, o.onBytes),
        retry: false,
      };
      if (o.signal) req.signal = o.signal;
      try {
        const res = await this.request('PATCH', location, req);
        if (res.status !== 202 && res.status !== 204) throw await this.fail(res, `chunk ${from}-${from + n - 1} of ${digest}`);
        await discardBody(res);
        if (res.headers.get('location')) location = this.location(res);
        const end = rangeEnd(res.headers.get('range'));
        offset = end === null ? from + n : end + 1;
        failures = 0;
      } catch (e) {
        if (o.signal?.aborted) throw abortReason(o.signal);
        const cause = (e as { cause?: unknown }).cause ?? e;
        const transient = isTransientError(cause) || (e instanceof RegistryError && e.status !== undefined && isTransientStatus(e.status));
        if (!transient || ++failures >= this.policy.attempts) throw e;
        await sleep(backoffDelay(failures, this.policy), o.signal);
        // Where did the registry get to? (GET on the session reports the bytes it has as `Range: 0-<last>`.)
        const st: RequestOptions = { scopes };
        if (o.signal) st.signal = o.signal;
        const res = await this.request('GET', location, st);
        await discardBody(res);
        if (res.status !== 204 && res.status !== 200) throw e;
        if (res.headers.get('location')) location = this.location(res);
        const end = rangeEnd(res.headers.get('range'));
        offset = end === null ? 0 : end + 1;
      }
    }
    await this.putFinal(location, digest, size, null, scopes, o.signal);
  }
}

/** Options of {@link RegistryClient.blobStream}. */
export interface BlobStreamOptions {
  signal?: AbortSignal;
  /** Called with the number of verified-so-far bytes received. */
  onBytes?: (received: number) => void;
  /** Token scopes (default pull on the repository). */
  scopes?: readonly string[];
}

/** Options of {@link RegistryClient.uploadBlob}. */
export interface UploadOptions {
  /** Upload in PATCH requests of this many bytes (default: one monolithic PUT). */
  chunkSize?: number;
  signal?: AbortSignal;
  /** Called with the number of bytes handed to the connection so far. */
  onBytes?: (sent: number) => void;
  /** An upload session already open (e.g. left by a refused mount). */
  location?: URL;
}

/** Whether a certificate could not be verified (an insecure registry with a self-signed certificate). */
function isCertificateError(e: unknown): boolean {
  const code = typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code);
}

/** The last byte of a `Range: 0-<last>` header (null when absent or malformed). */
function rangeEnd(v: string | null): number | null {
  const m = /^(?:bytes=)?0-(\d+)$/.exec(v?.trim() ?? '');
  return m ? Number(m[1]) : null;
}

/** Passes bytes through, reporting `base + bytes so far`. */
async function* counted(src: AsyncIterable<Uint8Array>, base: number, onBytes?: (n: number) => void): AsyncGenerator<Uint8Array> {
  let n = base;
  for await (const c of src) {
    n += c.length;
    yield c;
    onBytes?.(n);
  }
}

/** The first `n` bytes of a stream. */
async function* limit(src: AsyncIterable<Uint8Array>, n: number): AsyncGenerator<Uint8Array> {
  let left = n;
  if (left <= 0) return;
  for await (const c of src) {
    if (c.length >= left) {
      yield c.subarray(0, left);
      return;
    }
    left -= c.length;
    yield c;
  }
}
