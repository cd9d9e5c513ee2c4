/**
 * A real registry for integration tests: Debian's `docker-registry` (distribution 2.8) started on 127.0.0.1 with
 * filesystem storage in a temp dir, optionally behind token auth served by a small JWT token server here; a TCP
 * proxy that cuts connections; and an OCI image layout built from generated tars for skopeo to push.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, createPrivateKey, randomBytes, sign, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';

const execFileP = promisify(execFile);

export const REGISTRY_BIN = '/usr/bin/docker-registry';

export const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A free TCP port on 127.0.0.1 (closed again: whoever binds it next must do so soon). */
export async function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

export interface TokenAuth {
  realm: string;
  service: string;
  issuer: string;
  certFile: string;
}

export interface RunningRegistry {
  host: string;
  /** Root of the filesystem storage driver. */
  storage: string;
  proc: ChildProcess;
  /** Path of a blob's data file in the storage. */
  blobFile(digest: string): string;
  stop(): Promise<void>;
}

/** Starts docker-registry on a free port with storage under `dir`; resolves once `/v2/` answers. */
export async function startRegistry(dir: string, auth?: TokenAuth, tls?: { certificate: string; key: string }): Promise<RunningRegistry> {
  const storage = path.join(dir, 'storage');
  fs.mkdirSync(storage, { recursive: true });
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const lines = [
      'version: 0.1',
      'log:',
      '  level: error',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storage}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: 127.0.0.1:${port}`,
    ];
    if (tls) lines.push('  tls:', `    certificate: ${tls.certificate}`, `    key: ${tls.key}`);
    if (auth) {
      lines.push('auth:', '  token:', `    realm: ${auth.realm}`, `    service: ${auth.service}`, `    issuer: ${auth.issuer}`, `    rootcertbundle: ${auth.certFile}`);
    }
    const cfg = path.join(dir, `config-${port}.yml`);
    fs.writeFileSync(cfg, lines.join('\n') + '\n');
    const proc = spawn(REGISTRY_BIN, ['serve', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const host = `127.0.0.1:${port}`;
    const up = await waitUp(host, proc, tls !== undefined);
    if (up) {
      return {
        host,
        storage,
        proc,
        blobFile: (digest) => path.join(storage, 'docker', 'registry', 'v2', 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7), 'data'),
        stop: () => stopProcess(proc),
      };
    }
    await stopProcess(proc);
    if (attempt >= 3) throw new Error(`docker-registry did not start: ${stderr.slice(-2000)}`);
  }
}

async function waitUp(host: string, proc: ChildProcess, tls: boolean): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) return false;
    if (tls) {
      // Self-signed: a TCP connect is all that can be checked without trusting the certificate.
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.connect(Number(host.slice(host.lastIndexOf(':') + 1)), '127.0.0.1');
        s.once('connect', () => (s.destroy(), resolve(true)));
        s.once('error', () => resolve(false));
      });
      if (ok) return true;
    } else {
      try {
        const r = await fetch(`http://${host}/v2/`);
        await r.arrayBuffer();
        if (r.status === 200 || r.status === 401) return true;
      } catch {
        // not listening yet
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

async function stopProcess(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

// ---- token server ----

function b64url(b: Buffer | string): string {
  return Buffer.from(b).toString('base64url');
}

export interface TokenServer {
  auth: TokenAuth;
  /** Token requests received, with the user (null: anonymous) and the scopes asked. */
  requests: Array<{ user: string | null; scopes: string[] }>;
  stop(): Promise<void>;
}

/**
 * A token server as distribution's token auth expects: RS256 JWTs with the signing certificate in `x5c`
 * (trusted through the registry's rootcertbundle). Anonymous users get `pull` on repositories under
 * `anonymousPrefix`; `users` get everything they ask for.
 */
export async function startTokenServer(dir: string, users: Record<string, string>, anonymousPrefix: string): Promise<TokenServer> {
  const key = path.join(dir, 'token.key');
  const certFile = path.join(dir, 'token.crt');
  await execFileP('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', certFile, '-days', '2', '-subj', '/CN=graphdriver test token issuer']);
  const privateKey = createPrivateKey(fs.readFileSync(key));
  const certDer = new X509Certificate(fs.readFileSync(certFile)).raw;
  const service = 'graphdriver-test';
  const issuer = 'graphdriver-test-issuer';
  const requests: TokenServer['requests'] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    let user: string | null = null;
    const h = req.headers.authorization;
    if (h?.startsWith('Basic ')) {
      const [u, ...rest] = Buffer.from(h.slice(6), 'base64').toString().split(':');
      if (users[u!] !== rest.join(':')) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end('{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}');
        return;
      }
      user = u!;
    }
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    requests.push({ user, scopes });
    const access = scopes
      .map((s) => {
        const [type, name, actions] = s.split(':');
        const wanted = (actions ?? '').split(',').filter(Boolean);
        const granted = user !== null ? wanted : name?.startsWith(anonymousPrefix) ? wanted.filter((a) => a === 'pull') : [];
        return { type: type!, name: name!, actions: granted };
      })
      .filter((a) => a.type === 'repository' && a.actions.length > 0);
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [certDer.toString('base64')] };
    const claims = { iss: issuer, sub: user ?? '', aud: service, exp: now + 600, nbf: now - 60, iat: now, jti: randomBytes(8).toString('hex'), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const token = `${input}.${b64url(sign('sha256', Buffer.from(input), privateKey))}`;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: 600, issued_at: new Date().toISOString() }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    auth: { realm: `http://127.0.0.1:${port}/token`, service, issuer, certFile },
    requests,
    stop: () => new Promise<void>((r) => server.close(() => r())),
  };
}

// ---- a proxy that cuts connections ----

export interface CuttingProxy {
  host: string;
  /** Request heads (first lines and headers) seen, in order. */
  heads: string[];
  /** Cut the next `times` responses that carry more than `after` bytes. */
  cut(after: number, times: number): void;
  stop(): Promise<void>;
}

/** A TCP proxy to `target` (host:port) that can cut a connection after some bytes of response. */
export async function startCuttingProxy(target: string): Promise<CuttingProxy> {
  const [thost, tport] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const heads: string[] = [];
  const sockets = new Set<net.Socket>();
  let plan: { after: number; times: number } | null = null;
  const server = net.createServer((client) => {
    sockets.add(client);
    const upstream = net.connect(tport, thost);
    sockets.add(upstream);
    let sent = 0;
    let myCut: { after: number } | null = null;
    client.on('data', (c: Buffer) => {
      const text = c.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (/^(GET|HEAD|PUT|POST|PATCH|DELETE) /.test(text)) {
        heads.push(end >= 0 ? text.slice(0, end) : text);
        sent = 0;
        myCut = null;
        if (plan && plan.times > 0 && text.startsWith('GET ') && text.includes('/blobs/')) myCut = { after: plan.after };
      }
      upstream.write(c);
    });
    upstream.on('data', (c: Buffer) => {
      if (myCut && sent + c.length > myCut.after) {
        client.write(c.subarray(0, Math.max(0, myCut.after - sent)), () => {
          plan!.times--;
          client.destroy();
          upstream.destroy();
        });
        myCut = null;
        return;
      }
      sent += c.length;
      client.write(c);
    });
    const close = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', () => {
      sockets.delete(client);
      upstream.end();
    });
    upstream.on('close', () => {
      sockets.delete(upstream);
      client.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    host: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    heads,
    cut: (after, times) => void (plan = { after, times }),
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

// ---- OCI image layouts for skopeo ----

export interface LayoutImage {
  dir: string;
  tag: string;
  config: Buffer;
  configDigest: string;
  diffIds: string[];
  blobDigests: string[];
  manifestDigest: string;
}

/** Writes an OCI image layout holding one image made of `tars` (gzip layers), tagged `tag`. */
export function writeOciLayout(dir: string, tag: string, tars: Buffer[], created = '2024-01-01T00:00:00Z'): LayoutImage {
  const blobs = path.join(dir, 'blobs', 'sha256');
  fs.mkdirSync(blobs, { recursive: true });
  const put = (b: Buffer): string => {
    const d = sha(b);
    fs.writeFileSync(path.join(blobs, d.slice(7)), b);
    return d;
  };
  const gz = tars.map((t) => gzipSync(t));
  const blobDigests = gz.map(put);
  const diffIds = tars.map((t) => sha(t));
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created,
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: tars.map(() => ({ created, created_by: 'graphdriver test' })),
    }),
  );
  const configDigest = put(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: gz.map((g, i) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: blobDigests[i], size: g.length })),
    }),
  );
  const manifestDigest = put(manifest);
  fs.writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  fs.writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifestDigest, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
  return { dir, tag, config, configDigest, diffIds, blobDigests, manifestDigest };
}

/** Runs skopeo (policy-free, so that a missing /etc/containers/policy.json does not matter). */
export async function skopeo(args: string[]): Promise<string> {
  const { stdout } = await execFileP('skopeo', ['--insecure-policy', ...args], { maxBuffer: 64 << 20 });
  return stdout;
}

/** A self-signed certificate and key for `cn` (openssl), as PEM files in `dir`. */
export async function selfSignedCert(dir: string, cn: string): Promise<{ certificate: string; key: string }> {
  const key = path.join(dir, `${cn}.key`);
  const certificate = path.join(dir, `${cn}.crt`);
  await execFileP('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', certificate, '-days', '2', '-subj', `/CN=${cn}`, '-addext', `subjectAltName=IP:${cn}`]);
  return { certificate, key };
}
