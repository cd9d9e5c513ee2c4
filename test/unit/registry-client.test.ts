/**
 * The registry client against the in-process fake registry: WWW-Authenticate parsing, anonymous and
 * credentialled bearer tokens (cached), Basic auth, given registry tokens, refusals; plain http only for
 * loopback; redirects that leave the origin lose the credentials; idle connections are dropped and resumed;
 * unreachable registries fail after the retries; references resolve to the right host.
 */
import { createHash } from 'node:crypto';
import * as net from 'node:net';

import { parseWwwAuthenticate } from '../../lib/registry/auth';
import { RegistryClient } from '../../lib/registry/client';
import { isLoopbackHost, manifestRef, parseRegistryReference } from '../../lib/registry/reference';
import { FakeRegistry, publishImage } from '../support/fake-registry';
import { buildTar } from '../support/tar-builder';

const fast = { retry: { baseDelayMs: 1, maxDelayMs: 5 } };

function randomTar(name: string, size: number): Buffer {
  const blocks: Buffer[] = [];
  for (let i = 0; i * 32 < size; i++) blocks.push(createHash('sha256').update(`${name}/${i}`).digest());
  return buildTar([{ name, data: Buffer.concat(blocks).subarray(0, size) }]);
}

async function drain(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

describe('parseWwwAuthenticate', () => {
  test('Bearer with quoted parameters (commas and escaped quotes inside quotes)', () => {
    expect(parseWwwAuthenticate('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push"')).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/busybox:pull,push' } },
    ]);
    expect(parseWwwAuthenticate('Bearer realm="a\\"b", error="invalid_token"')).toEqual([{ scheme: 'bearer', params: { realm: 'a"b', error: 'invalid_token' } }]);
  });

  test('several challenges, unquoted values, case-insensitive names, token68 skipped', () => {
    expect(parseWwwAuthenticate('Negotiate abc==, Basic Realm=registry, BEARER realm="r",service=s')).toEqual([
      { scheme: 'negotiate', params: {} },
      { scheme: 'basic', params: { realm: 'registry' } },
      { scheme: 'bearer', params: { realm: 'r', service: 's' } },
    ]);
    expect(parseWwwAuthenticate('')).toEqual([]);
    expect(parseWwwAuthenticate('Bearer realm="unterminated')).toEqual([{ scheme: 'bearer', params: { realm: 'unterminated' } }]);
  });
});

describe('references and hosts', () => {
  test('Docker Hub names go to registry-1.docker.io under library/, with latest by default', () => {
    expect(parseRegistryReference('busybox')).toEqual({ domain: 'docker.io', host: 'registry-1.docker.io', repository: 'library/busybox', name: 'docker.io/library/busybox', tag: 'latest' });
    const d = `sha256:${'a'.repeat(64)}`;
    const r = parseRegistryReference(`localhost:5000/team/app:v1@${d}`);
    expect(r).toEqual({ domain: 'localhost:5000', host: 'localhost:5000', repository: 'team/app', name: 'localhost:5000/team/app', tag: 'v1', digest: d });
    expect(manifestRef(r)).toBe(d);
    expect(() => parseRegistryReference('team/App')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_REFERENCE' }));
  });

  test('loopback hosts', () => {
    for (const h of ['localhost', 'localhost:5000', 'registry.localhost:80', '127.0.0.1:5000', '127.1.2.3', '[::1]:5000', '::1']) expect(isLoopbackHost(h)).toBe(true);
    for (const h of ['docker.io', '10.0.0.1:5000', '128.0.0.1', '[::2]:5000', 'localhost.example.com', 'mylocalhost']) expect(isLoopbackHost(h)).toBe(false);
  });
});

describe('RegistryClient', () => {
  const regs: FakeRegistry[] = [];
  const start = async (o: ConstructorParameters<typeof FakeRegistry>[0] = {}): Promise<FakeRegistry> => {
    const r = new FakeRegistry(o);
    regs.push(r);
    await r.start();
    return r;
  };
  afterEach(async () => {
    for (const r of regs.splice(0)) await r.stop();
  });

  test('anonymous bearer tokens: one token fetch serves every request of the same scope', async () => {
    const reg = await start({ auth: 'bearer', anonymousPull: ['pub'] });
    const pub = publishImage(reg, 'pub', 'latest', [randomTar('a', 5000), randomTar('b', 5000)]);
    const c = new RegistryClient({ host: reg.host, ...fast });
    const m = await c.getManifest('pub', 'latest');
    expect(m.digest).toBe(pub.manifestDigest);
    for (const [i, d] of pub.blobDigests.entries()) expect(await drain(c.blobStream('pub', { mediaType: 'x', digest: d, size: pub.blobs[i]!.length }))).toEqual(pub.blobs[i]);
    expect(reg.tokenRequests).toBe(1);
    // The challenge learnt at the ping is answered up front: no request after the ping met a 401.
    expect(reg.requests.filter((r) => r.status === 401).map((r) => r.path)).toEqual(['/v2/']);
    // Another repository needs another token, and anonymous access to it is refused.
    await expect(c.getManifest('private', 'latest')).rejects.toMatchObject({ code: 'ERR_REGISTRY_AUTH', status: 401 });
  });

  test('bearer tokens with credentials; wrong credentials are refused by the token server', async () => {
    const reg = await start({ auth: 'bearer', users: { bob: 'pw' } });
    const pub = publishImage(reg, 'team/private', 'v1', [randomTar('p', 1000)]);
    const ok = new RegistryClient({ host: reg.host, credentials: { username: 'bob', password: 'pw' }, ...fast });
    expect((await ok.getManifest('team/private', 'v1')).digest).toBe(pub.manifestDigest);
    const bad = new RegistryClient({ host: reg.host, credentials: { username: 'bob', password: 'nope' }, ...fast });
    await expect(bad.getManifest('team/private', 'v1')).rejects.toMatchObject({ code: 'ERR_REGISTRY_AUTH', message: expect.stringContaining('credentials') });
    // A registry token given as is goes straight to the registry.
    const tok = [...reg.tokens.keys()][0]!;
    const given = new RegistryClient({ host: reg.host, credentials: { registryToken: tok }, ...fast });
    const before = reg.tokenRequests;
    expect((await given.getManifest('team/private', 'v1')).digest).toBe(pub.manifestDigest);
    expect(reg.tokenRequests).toBe(before);
  });

  test('Basic auth: credentials on every request after the challenge; none given is an auth error', async () => {
    const reg = await start({ auth: 'basic', users: { u: 'p:with:colons' } });
    publishImage(reg, 'b', 'latest', [randomTar('b', 100)]);
    const c = new RegistryClient({ host: reg.host, credentials: { username: 'u', password: 'p:with:colons' }, ...fast });
    await c.getManifest('b', 'latest');
    const auth = reg.requests.filter((r) => r.path.includes('/manifests/')).map((r) => r.authorization);
    expect(auth).toEqual([`Basic ${Buffer.from('u:p:with:colons').toString('base64')}`]);
    await expect(new RegistryClient({ host: reg.host, ...fast }).getManifest('b', 'latest')).rejects.toMatchObject({ code: 'ERR_REGISTRY_AUTH' });
  });

  test('plain http only for loopback or declared-insecure registries', async () => {
    const reg = await start();
    publishImage(reg, 'x', 'latest', [randomTar('x', 100)]);
    // A remote host whose https port speaks plain http: routed to the fake by an injected fetch.
    const seen: string[] = [];
    const fetchFn = async (url: URL, init: RequestInit): Promise<Response> => {
      seen.push(`${url.protocol}//${url.host}${url.pathname}`);
      if (url.protocol === 'https:') {
        throw new TypeError('fetch failed', { cause: Object.assign(new Error('wrong version number'), { code: 'ERR_SSL_WRONG_VERSION_NUMBER' }) });
      }
      return fetch(new URL(url.pathname + url.search, `http://${reg.host}`), init);
    };
    const strict = new RegistryClient({ host: 'registry.example.com', fetch: fetchFn, ...fast });
    await expect(strict.getManifest('x', 'latest')).rejects.toMatchObject({ code: 'ERR_REGISTRY', message: expect.stringContaining('wrong version number') });
    expect(seen).toEqual(['https://registry.example.com/v2/']);
    seen.length = 0;
    const insecure = new RegistryClient({ host: 'registry.example.com', insecure: true, fetch: fetchFn, ...fast });
    await insecure.getManifest('x', 'latest');
    expect(seen).toEqual(['https://registry.example.com/v2/', 'http://registry.example.com/v2/', 'http://registry.example.com/v2/x/manifests/latest']);
  });

  test('a plain-http token realm on a non-loopback host is refused before any connection', async () => {
    const reg = await start({ auth: 'bearer', realm: 'http://auth.example.com/token', anonymousPull: ['*'] });
    publishImage(reg, 'x', 'latest', [randomTar('x', 100)]);
    const c = new RegistryClient({ host: reg.host, ...fast });
    await expect(c.getManifest('x', 'latest')).rejects.toMatchObject({ code: 'ERR_INSECURE_REGISTRY' });
  });

  test('redirects: credentials stay on the registry origin; a redirect to plain http elsewhere is refused', async () => {
    const reg = await start({ auth: 'basic', users: { u: 'p' } });
    const cdn = await start();
    const pub = publishImage(reg, 'r', 'latest', [randomTar('r', 3000)]);
    cdn.addBlob('cdn', pub.blobs[0]!);
    reg.redirects.set(pub.blobDigests[0]!, `http://${cdn.host}/v2/cdn/blobs/${pub.blobDigests[0]}`);
    const c = new RegistryClient({ host: reg.host, credentials: { username: 'u', password: 'p' }, ...fast });
    const desc = { mediaType: 'x', digest: pub.blobDigests[0]!, size: pub.blobs[0]!.length };
    expect(await drain(c.blobStream('r', desc))).toEqual(pub.blobs[0]);
    expect(cdn.requests).toHaveLength(1);
    expect(cdn.requests[0]!.authorization).toBeUndefined();
    expect(reg.requests.filter((r) => r.path.includes('/blobs/'))[0]!.authorization).toMatch(/^Basic /);
    reg.redirects.set(pub.blobDigests[0]!, `http://blobs.example.com/x`);
    await expect(drain(c.blobStream('r', desc))).rejects.toMatchObject({ code: 'ERR_INSECURE_REGISTRY' });
  });

  test('a silent connection is dropped after idleTimeoutMs and the blob resumed', async () => {
    const reg = await start();
    const pub = publishImage(reg, 'slow', 'latest', [randomTar('s', 100000)]);
    reg.stalls.set(pub.blobDigests[0]!, { after: 30000, times: 1 });
    const c = new RegistryClient({ host: reg.host, idleTimeoutMs: 1000, ...fast });
    const got = await drain(c.blobStream('slow', { mediaType: 'x', digest: pub.blobDigests[0]!, size: pub.blobs[0]!.length }));
    expect(got).toEqual(pub.blobs[0]);
    // (A loaded machine may add a resume of its own; the first two requests are the stall and its resume.)
    expect(reg.blobRequests(pub.blobDigests[0]!).map((r) => r.range).slice(0, 2)).toEqual([undefined, 'bytes=30000-']);
  });

  test('a blob longer than its descriptor is cut off with ERR_DIGEST_MISMATCH', async () => {
    const reg = await start();
    const pub = publishImage(reg, 'long', 'latest', [randomTar('l', 1000)]);
    const c = new RegistryClient({ host: reg.host, ...fast });
    await expect(drain(c.blobStream('long', { mediaType: 'x', digest: pub.blobDigests[0]!, size: 10 }))).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
  });

  test('an unreachable registry fails with ERR_REGISTRY after the retries', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer();
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const c = new RegistryClient({ host: `127.0.0.1:${port}`, retry: { attempts: 2, baseDelayMs: 1 } });
    await expect(c.getManifest('x', 'latest')).rejects.toMatchObject({ code: 'ERR_REGISTRY', message: expect.stringContaining('cannot reach') });
  });

  test('an endpoint that is not a v2 registry is named as such', async () => {
    const reg = await start();
    reg.fail(/^\/v2\/$/, 404, 1);
    const c = new RegistryClient({ host: reg.host, ...fast });
    await expect(c.getManifest('x', 'latest')).rejects.toMatchObject({ code: 'ERR_REGISTRY', status: 404, message: expect.stringContaining('not an OCI distribution') });
  });
});
