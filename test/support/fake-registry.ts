/**
 * An in-process OCI distribution registry for unit tests (node:http on 127.0.0.1): manifests, blobs with Range,
 * uploads (monolithic, chunked, cross-repository mount), Basic or Bearer auth with its own token endpoint, and
 * fault injection (error statuses, connections cut mid-blob or mid-upload, corrupted content, no Range support).
 */
import { createHash, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { gzipSync } from 'node:zlib';

import { compress as zstdCompress } from 'zstd-napi';

export const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export interface LoggedRequest {
  method: string;
  path: string;
  range?: string;
  contentRange?: string;
  authorization?: string;
  status?: number;
}

interface Session {
  repo: string;
  data: Buffer[];
  size: number;
}

export interface FakeRegistryOptions {
  /** 'none' (default), 'basic' or 'bearer' (token endpoint at /token on the same server). */
  auth?: 'none' | 'basic' | 'bearer';
  /** user → password accepted by Basic auth and by the token endpoint. */
  users?: Record<string, string>;
  /** Repositories anonymous tokens may pull from ('*' for all). */
  anonymousPull?: string[];
  /** Token realm announced in Bearer challenges (default: this server's /token). */
  realm?: string;
}

interface Fault {
  match: RegExp;
  method?: string;
  status: number;
  times: number;
  headers?: Record<string, string>;
}

export class FakeRegistry {
  readonly blobs = new Map<string, Buffer>();
  /** repo → digests present in it. */
  readonly repoBlobs = new Map<string, Set<string>>();
  /** repo → tag or digest → manifest. */
  readonly manifests = new Map<string, Map<string, { bytes: Buffer; mediaType: string }>>();
  readonly requests: LoggedRequest[] = [];
  readonly tokens = new Map<string, { user: string | null; scopes: string[] }>();
  tokenRequests = 0;
  /** Serve blobs without Range support (always 200 with the whole blob). */
  noRange = false;
  /** Blob digest → content served instead of the real one. */
  readonly corrupt = new Map<string, Buffer>();
  /** Blob digest → cut the connection after this many body bytes (for `times` requests). */
  readonly cuts = new Map<string, { after: number; times: number }>();
  /** Blob digest → send this many body bytes, then stall (the connection stays open, silent). */
  readonly stalls = new Map<string, { after: number; times: number }>();
  /** Blob digest → answer GETs with a 307 to this URL. */
  readonly redirects = new Map<string, string>();
  /** Cut PATCH uploads after this many body bytes (for `times` requests). */
  uploadCut: { after: number; times: number } | null = null;
  /** Announce this Docker-Content-Digest on manifest GETs instead of the real one. */
  lieAboutManifestDigest: string | null = null;
  /** Flip a byte of every completed upload (the registry then computes another digest). */
  corruptUploads = false;
  /** Concurrent blob GETs right now, and the most seen. */
  activeBlobGets = 0;
  maxActiveBlobGets = 0;
  /** Delay (ms) before each blob body. */
  blobDelayMs = 0;
  /** While set, blob GETs wait (counted in activeBlobGets) until {@link releaseBlobs}. */
  private hold: { promise: Promise<void>; release: () => void; except: ReadonlySet<string> } | null = null;
  private readonly faults: Fault[] = [];
  private readonly sessions = new Map<string, Session>();
  private readonly sockets = new Set<Socket>();
  private server: http.Server | null = null;
  host = '';

  constructor(readonly opts: FakeRegistryOptions = {}) {}

  async start(): Promise<string> {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => {
        if (!res.headersSent) res.writeHead(500);
        res.end(String(e));
      });
    });
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.host = `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.host;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    if (this.server) await new Promise<void>((r) => this.server!.close(() => r()));
    this.server = null;
  }

  /** Answers `status` to the next `times` requests whose path matches. */
  fail(match: RegExp, status: number, times = 1, extra: { method?: string; headers?: Record<string, string> } = {}): void {
    const f: Fault = { match, status, times };
    if (extra.method !== undefined) f.method = extra.method;
    if (extra.headers !== undefined) f.headers = extra.headers;
    this.faults.push(f);
  }

  /** Makes blob GETs (except of the digests in `except`) wait until {@link releaseBlobs}. */
  holdBlobs(except: Iterable<string> = []): void {
    let release!: () => void;
    const promise = new Promise<void>((r) => (release = r));
    this.hold = { promise, release, except: new Set(except) };
  }

  releaseBlobs(): void {
    this.hold?.release();
    this.hold = null;
  }

  addBlob(repo: string, data: Buffer): string {
    const d = sha(data);
    this.blobs.set(d, data);
    let set = this.repoBlobs.get(repo);
    if (!set) this.repoBlobs.set(repo, (set = new Set()));
    set.add(d);
    return d;
  }

  addManifest(repo: string, tag: string | null, bytes: Buffer, mediaType: string): string {
    const d = sha(bytes);
    let m = this.manifests.get(repo);
    if (!m) this.manifests.set(repo, (m = new Map()));
    m.set(d, { bytes, mediaType });
    if (tag !== null) m.set(tag, { bytes, mediaType });
    return d;
  }

  blobRequests(digest: string): LoggedRequest[] {
    return this.requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`));
  }

  private challenge(scope: string | null): string {
    if (this.opts.auth === 'basic') return 'Basic realm="fake"';
    return `Bearer realm="${this.opts.realm ?? `http://${this.host}/token`}",service="fake-registry"${scope ? `,scope="${scope}"` : ''}`;
  }

  private userOf(h: string | undefined): string | null | undefined {
    if (h === undefined || !h.startsWith('Basic ')) return null;
    const [u, ...rest] = Buffer.from(h.slice(6), 'base64').toString('utf8').split(':');
    const p = rest.join(':');
    return this.opts.users?.[u!] === p ? u! : undefined; // undefined: wrong credentials
  }

  /** Whether the request's credentials grant `action` on `repo`. */
  private allowed(req: http.IncomingMessage, repo: string | null, action: 'pull' | 'push'): boolean {
    const mode = this.opts.auth ?? 'none';
    if (mode === 'none') return true;
    const h = req.headers.authorization;
    if (mode === 'basic') return typeof this.userOf(h) === 'string';
    if (h === undefined || !h.startsWith('Bearer ')) return false;
    const t = this.tokens.get(h.slice(7));
    if (!t) return false;
    if (repo === null) return true;
    return t.scopes.some((s) => {
      const [type, name, actions] = s.split(':');
      return type === 'repository' && name === repo && actions!.split(',').includes(action);
    });
  }

  private token(req: http.IncomingMessage, res: http.ServerResponse, url: URL): void {
    this.tokenRequests++;
    const user = this.userOf(req.headers.authorization);
    if (user === undefined) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end('{"details":"incorrect username or password"}');
      return;
    }
    const granted: string[] = [];
    for (const s of url.searchParams.getAll('scope')) {
      const [type, name, actions] = s.split(':');
      if (type !== 'repository' || name === undefined || actions === undefined) continue;
      const ok = actions.split(',').filter((a) => {
        if (user !== null) return true;
        const anon = this.opts.anonymousPull ?? [];
        return a === 'pull' && (anon.includes('*') || anon.includes(name));
      });
      if (ok.length > 0) granted.push(`repository:${name}:${ok.join(',')}`);
    }
    const tok = randomBytes(16).toString('hex');
    this.tokens.set(tok, { user, scopes: granted });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token: tok, expires_in: 300 }));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', `http://${this.host}`);
    const log: LoggedRequest = { method: req.method ?? 'GET', path: url.pathname + url.search };
    if (req.headers.range) log.range = req.headers.range;
    if (req.headers['content-range']) log.contentRange = String(req.headers['content-range']);
    if (req.headers.authorization) log.authorization = req.headers.authorization;
    this.requests.push(log);
    res.on('close', () => (log.status = res.statusCode));
    const fault = this.faults.find((f) => f.times > 0 && f.match.test(url.pathname) && (f.method === undefined || f.method === req.method));
    if (fault) {
      fault.times--;
      await drain(req);
      res.writeHead(fault.status, fault.headers ?? {});
      res.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'injected fault' }] }));
      return;
    }
    if (url.pathname === '/token') return this.token(req, res, url);
    if (url.pathname === '/v2/' || url.pathname === '/v2') {
      await drain(req);
      if (!this.allowed(req, null, 'pull')) return this.deny(res, null);
      res.writeHead(200, { 'docker-distribution-api-version': 'registry/2.0' });
      res.end('{}');
      return;
    }
    let m = /^\/v2\/(.+)\/blobs\/uploads\/([^/]*)$/.exec(url.pathname);
    if (m) return this.upload(req, res, url, m[1]!, m[2]!);
    m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (!m) {
      await drain(req);
      res.writeHead(404);
      res.end();
      return;
    }
    const [, repo, kind, ref] = m as unknown as [string, string, string, string];
    const write = req.method === 'PUT' || req.method === 'DELETE';
    if (!this.allowed(req, repo, write ? 'push' : 'pull')) {
      await drain(req);
      return this.deny(res, `repository:${repo}:${write ? 'pull,push' : 'pull'}`);
    }
    if (kind === 'manifests') return this.manifest(req, res, repo, ref);
    return this.blob(req, res, repo, ref);
  }

  private deny(res: http.ServerResponse, scope: string | null): void {
    res.writeHead(401, { 'www-authenticate': this.challenge(scope), 'content-type': 'application/json' });
    res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
  }

  private async manifest(req: http.IncomingMessage, res: http.ServerResponse, repo: string, ref: string): Promise<void> {
    if (req.method === 'PUT') {
      const body = await readAll(req);
      const mediaType = String(req.headers['content-type'] ?? '');
      const doc = JSON.parse(body.toString('utf8')) as { config?: { digest: string }; layers?: Array<{ digest: string }> };
      const have = this.repoBlobs.get(repo) ?? new Set<string>();
      for (const d of [doc.config?.digest, ...(doc.layers ?? []).map((l) => l.digest)]) {
        if (d !== undefined && !have.has(d)) {
          res.writeHead(400, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_BLOB_UNKNOWN', message: `blob unknown ${d}` }] }));
          return;
        }
      }
      const d = this.addManifest(repo, ref.startsWith('sha256:') ? null : ref, body, mediaType);
      res.writeHead(201, { 'docker-content-digest': d, location: `/v2/${repo}/manifests/${d}` });
      res.end();
      return;
    }
    await drain(req);
    const entry = this.manifests.get(repo)?.get(ref);
    if (!entry) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
      return;
    }
    res.writeHead(200, {
      'content-type': entry.mediaType,
      'content-length': String(entry.bytes.length),
      'docker-content-digest': this.lieAboutManifestDigest ?? sha(entry.bytes),
    });
    res.end(req.method === 'HEAD' ? undefined : entry.bytes);
  }

  private async blob(req: http.IncomingMessage, res: http.ServerResponse, repo: string, digest: string): Promise<void> {
    await drain(req);
    const real = this.repoBlobs.get(repo)?.has(digest) ? this.blobs.get(digest) : undefined;
    if (real === undefined) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry' }] }));
      return;
    }
    const data = this.corrupt.get(digest) ?? real;
    const to = this.redirects.get(digest);
    if (to !== undefined && req.method === 'GET') {
      res.writeHead(307, { location: to });
      res.end();
      return;
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, { 'content-length': String(data.length), 'docker-content-digest': digest });
      res.end();
      return;
    }
    this.activeBlobGets++;
    this.maxActiveBlobGets = Math.max(this.maxActiveBlobGets, this.activeBlobGets);
    try {
      if (this.hold && !this.hold.except.has(digest)) await this.hold.promise;
      if (this.blobDelayMs > 0) await new Promise((r) => setTimeout(r, this.blobDelayMs));
      let start = 0;
      const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      if (range && !this.noRange) start = Number(range[1]);
      const body = data.subarray(start);
      const headers: Record<string, string> = { 'content-length': String(body.length), 'content-type': 'application/octet-stream', 'docker-content-digest': digest };
      if (start > 0) headers['content-range'] = `bytes ${start}-${data.length - 1}/${data.length}`;
      res.writeHead(start > 0 ? 206 : 200, headers);
      const stall = this.stalls.get(digest);
      if (stall && stall.times > 0 && body.length > stall.after) {
        stall.times--;
        res.write(body.subarray(0, stall.after));
        return; // never ends: the client has to give up on this connection
      }
      const cut = this.cuts.get(digest);
      if (cut && cut.times > 0 && body.length > cut.after) {
        cut.times--;
        await new Promise<void>((r) => res.write(body.subarray(0, cut.after), () => r()));
        // Let the bytes reach the client before the connection dies.
        await new Promise((r) => setTimeout(r, 20));
        res.socket?.destroy();
        return;
      }
      res.end(body);
    } finally {
      this.activeBlobGets--;
    }
  }

  private async upload(req: http.IncomingMessage, res: http.ServerResponse, url: URL, repo: string, id: string): Promise<void> {
    if (!this.allowed(req, repo, 'push')) {
      await drain(req);
      return this.deny(res, `repository:${repo}:pull,push`);
    }
    const method = req.method ?? 'GET';
    if (method === 'POST' && id === '') {
      await drain(req);
      const mount = url.searchParams.get('mount');
      const from = url.searchParams.get('from');
      if (mount !== null && from !== null && this.repoBlobs.get(from)?.has(mount) && this.allowed(req, from, 'pull')) {
        this.addBlob(repo, this.blobs.get(mount)!);
        res.writeHead(201, { location: `/v2/${repo}/blobs/${mount}`, 'docker-content-digest': mount });
        res.end();
        return;
      }
      const sid = randomBytes(8).toString('hex');
      this.sessions.set(sid, { repo, data: [], size: 0 });
      res.writeHead(202, { location: `/v2/${repo}/blobs/uploads/${sid}?_state=x`, range: '0-0', 'docker-upload-uuid': sid });
      res.end();
      return;
    }
    const s = this.sessions.get(id);
    if (!s || s.repo !== repo) {
      await drain(req);
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'BLOB_UPLOAD_UNKNOWN', message: 'upload unknown' }] }));
      return;
    }
    const rangeHeader = (): Record<string, string> => ({ range: `0-${Math.max(0, s.size - 1)}`, location: `/v2/${repo}/blobs/uploads/${id}?_state=y`, 'docker-upload-uuid': id });
    if (method === 'GET') {
      res.writeHead(204, rangeHeader());
      res.end();
      return;
    }
    if (method === 'DELETE') {
      this.sessions.delete(id);
      res.writeHead(204);
      res.end();
      return;
    }
    if (method === 'PATCH' || method === 'PUT') {
      const cr = /^(\d+)-(\d+)$/.exec(String(req.headers['content-range'] ?? ''));
      if (method === 'PATCH' && cr && Number(cr[1]) !== s.size) {
        await drain(req);
        res.writeHead(416, rangeHeader());
        res.end();
        return;
      }
      let got = 0;
      const cut = method === 'PATCH' && this.uploadCut && this.uploadCut.times > 0 ? this.uploadCut : null;
      for await (const c of req as AsyncIterable<Buffer>) {
        let chunk = c;
        if (cut && got + chunk.length > cut.after) {
          chunk = chunk.subarray(0, cut.after - got);
          s.data.push(chunk);
          s.size += chunk.length;
          cut.times--;
          req.socket.destroy();
          return;
        }
        got += chunk.length;
        s.data.push(chunk);
        s.size += chunk.length;
      }
      if (method === 'PATCH') {
        res.writeHead(202, rangeHeader());
        res.end();
        return;
      }
      const digest = url.searchParams.get('digest') ?? '';
      const all = Buffer.concat(s.data);
      if (this.corruptUploads && all.length > 0) all[0] ^= 0xff;
      if (sha(all) !== digest) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'DIGEST_INVALID', message: 'provided digest did not match uploaded content' }] }));
        return;
      }
      this.sessions.delete(id);
      this.addBlob(repo, all);
      res.writeHead(201, { location: `/v2/${repo}/blobs/${digest}`, 'docker-content-digest': digest });
      res.end();
      return;
    }
    await drain(req);
    res.writeHead(405);
    res.end();
  }
}

async function drain(req: http.IncomingMessage): Promise<void> {
  for await (const _ of req) void _;
}

async function readAll(req: http.IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
}

// ---- building images on the fake registry ----

export const MT = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociTar: 'application/vnd.oci.image.layer.v1.tar',
};

export interface PublishedImage {
  manifest: Buffer;
  manifestDigest: string;
  mediaType: string;
  config: Buffer;
  configDigest: string;
  diffIds: string[];
  /** Compressed blobs, bottom first. */
  blobs: Buffer[];
  blobDigests: string[];
}

/** Compresses `tars`, uploads blobs, config and manifest to `repo` (tagged `tag` unless null). */
export function publishImage(
  reg: FakeRegistry,
  repo: string,
  tag: string | null,
  tars: Buffer[],
  o: { format?: 'docker' | 'oci'; compression?: 'gzip' | 'zstd' | 'none'; architecture?: string; os?: string; variant?: string; diffIds?: string[] } = {},
): PublishedImage {
  const format = o.format ?? 'docker';
  const compression = o.compression ?? 'gzip';
  const blobs = tars.map((t) => (compression === 'gzip' ? gzipSync(t) : compression === 'zstd' ? zstdCompress(t) : t));
  const blobDigests = blobs.map((b) => reg.addBlob(repo, b));
  const diffIds = o.diffIds ?? tars.map((t) => sha(t));
  const cfg: Record<string, unknown> = {
    architecture: o.architecture ?? 'amd64',
    os: o.os ?? 'linux',
    config: { Env: ['PATH=/usr/bin'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: tars.map(() => ({ created_by: 'test' })),
  };
  if (o.variant !== undefined) cfg.variant = o.variant;
  const config = Buffer.from(JSON.stringify(cfg));
  const configDigest = reg.addBlob(repo, config);
  const layerType = format === 'docker' ? MT.dockerGzip : compression === 'gzip' ? MT.ociGzip : compression === 'zstd' ? MT.ociZstd : MT.ociTar;
  const mediaType = format === 'docker' ? MT.dockerManifest : MT.ociManifest;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: { mediaType: format === 'docker' ? MT.dockerConfig : MT.ociConfig, size: config.length, digest: configDigest },
      layers: blobs.map((b, i) => ({ mediaType: layerType, size: b.length, digest: blobDigests[i] })),
    }),
  );
  const manifestDigest = reg.addManifest(repo, tag, manifest, mediaType);
  return { manifest, manifestDigest, mediaType, config, configDigest, diffIds, blobs, blobDigests };
}

/** Uploads an index pointing at already published images. */
export function publishIndex(
  reg: FakeRegistry,
  repo: string,
  tag: string,
  entries: Array<{ image: PublishedImage; platform: { os: string; architecture: string; variant?: string } }>,
  format: 'docker' | 'oci' = 'oci',
): string {
  const mediaType = format === 'docker' ? MT.dockerList : MT.ociIndex;
  const doc = {
    schemaVersion: 2,
    mediaType,
    manifests: entries.map((e) => ({ mediaType: e.image.mediaType, size: e.image.manifest.length, digest: e.image.manifestDigest, platform: e.platform })),
  };
  return reg.addManifest(repo, tag, Buffer.from(JSON.stringify(doc)), mediaType);
}
