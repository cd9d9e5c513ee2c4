/**
 * Pull and push against a real registry (Debian's docker-registry, distribution 2.8, on 127.0.0.1) with skopeo as
 * the independent client: skopeo pushes an image built from generated tars; graphdriver pulls it on vfs and
 * overlay2 (the files a container sees are checked), pushes it back under other names (blobs mounted across
 * repositories, or recompressed from the exact original tars, monolithic or chunked), and skopeo pulls those
 * with its own digest checks; token auth through a JWT token server; a download cut by a proxy resumes; a
 * corrupted blob in the registry's storage is rejected with nothing registered.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';

import type { PullProgress } from '../../lib/registry/pull';
import type { PushProgress, PushResult } from '../../lib/registry/push';
import { Storage } from '../../lib/storage/storage';
import {
  REGISTRY_BIN,
  selfSignedCert,
  sha,
  skopeo,
  startCuttingProxy,
  startRegistry,
  startTokenServer,
  writeOciLayout,
  type CuttingProxy,
  type LayoutImage,
  type RunningRegistry,
  type TokenServer,
} from '../support/docker-registry';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';
import { buildTar, type TestEntry } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const reason = !fs.existsSync(REGISTRY_BIN)
  ? `${REGISTRY_BIN} is missing (apt-get install docker-registry)`
  : !haveTool('skopeo')
    ? 'skopeo is missing (apt-get install skopeo)'
    : !isRoot
      ? 'needs root (layer files owned by other users, overlay mounts)'
      : null;

const drivers = ['vfs', ...(kernelHasFs('overlay') ? ['overlay2'] : [])];

/** Incompressible, reproducible bytes. */
function noise(seed: string, size: number): Buffer {
  const blocks: Buffer[] = [];
  for (let i = 0; i * 32 < size; i++) blocks.push(createHash('sha256').update(`${seed}/${i}`).digest());
  return Buffer.concat(blocks).subarray(0, size);
}

const baseLayer: TestEntry[] = [
  { name: 'bin', type: 'dir' },
  { name: 'bin/tool', data: '#!/bin/sh\necho tool\n', mode: 0o4755 },
  { name: 'bin/alias', type: 'symlink', linkname: 'tool' },
  { name: 'etc', type: 'dir' },
  { name: 'etc/motd', data: 'base\n' },
  { name: 'etc/owned', data: 'owned by 1000:1000\n', uid: 1000, gid: 1000 },
  { name: 'etc/hard', type: 'link', linkname: 'etc/motd' },
  { name: 'opt', type: 'dir' },
  { name: 'opt/old', data: 'replaced by an opaque dir\n' },
  { name: 'var', type: 'dir' },
  { name: 'var/removed', data: 'deleted by a whiteout\n' },
  { name: 'var/blob', data: noise('base', 300_000) },
];
const topLayer: TestEntry[] = [
  { name: 'etc', type: 'dir' },
  { name: 'etc/motd', data: 'top\n' },
  { name: 'opt', type: 'dir' },
  { name: 'opt/.wh..wh..opq', data: '' },
  { name: 'opt/new', data: 'new\n' },
  { name: 'var', type: 'dir' },
  { name: 'var/.wh.removed', data: '' },
];

/** Layer digests, config digest and media type of a manifest on the registry, as skopeo reads it. */
async function remoteManifest(ref: string, creds?: string): Promise<{ mediaType: string; config: string; layers: string[] }> {
  const raw = JSON.parse(await skopeo(['inspect', '--raw', '--tls-verify=false', ...(creds ? ['--creds', creds] : []), `docker://${ref}`])) as {
    mediaType: string;
    config: { digest: string };
    layers: Array<{ digest: string }>;
  };
  return { mediaType: raw.mediaType, config: raw.config.digest, layers: raw.layers.map((l) => l.digest) };
}

/** skopeo copies `ref` into a `dir:` (verifying every digest on the way); resolves to the layers' diffIDs. */
async function skopeoPullDiffIds(ref: string, dest: string, creds?: string): Promise<{ diffIds: string[]; config: string }> {
  await skopeo(['copy', '--src-tls-verify=false', ...(creds ? ['--src-creds', creds] : []), `docker://${ref}`, `dir:${dest}`]);
  const m = JSON.parse(fs.readFileSync(path.join(dest, 'manifest.json'), 'utf8')) as { config: { digest: string }; layers: Array<{ digest: string }> };
  return {
    config: m.config.digest,
    diffIds: m.layers.map((l) => sha(gunzipSync(fs.readFileSync(path.join(dest, l.digest.slice(7)))))),
  };
}

describeIf(reason, 'registry pull and push against docker-registry', () => {
  let tmp: string;
  let reg: RunningRegistry;
  let img: LayoutImage;
  let big: LayoutImage;
  const open: Storage[] = [];

  const store = async (name: string, driver: string): Promise<Storage> => {
    const s = await Storage.open({ root: path.join(tmp, 'stores', name), driver, sync: false });
    open.push(s);
    return s;
  };

  beforeAll(async () => {
    tmp = makeTmp('gd-registry-it-');
    reg = await startRegistry(path.join(tmp, 'registry'));
    img = writeOciLayout(path.join(tmp, 'layout-img'), 'v1', [buildTar(baseLayer), buildTar(topLayer)]);
    big = writeOciLayout(path.join(tmp, 'layout-big'), 'v1', [buildTar([{ name: 'big', data: noise('big', 6 << 20) }]), buildTar(topLayer)]);
    await skopeo(['copy', '--dest-tls-verify=false', `oci:${img.dir}:v1`, `docker://${reg.host}/test/img:v1`]);
    await skopeo(['copy', '--dest-tls-verify=false', `oci:${big.dir}:v1`, `docker://${reg.host}/test/big:v1`]);
  });

  afterEach(async () => {
    for (const s of open.splice(0)) await s.close().catch(() => undefined);
  });

  afterAll(async () => {
    for (const s of open.splice(0)) await s.close().catch(() => undefined);
    await reg?.stop();
    removeTmp(tmp);
  });

  describe.each(drivers)('on %s', (driver) => {
    test('pulls what skopeo pushed: same image id and diffIDs, the files a container sees, progress', async () => {
      const s = await store(`pull-${driver}`, driver);
      const events: PullProgress[] = [];
      const digests: string[] = [];
      const image = await s.pullImage(`${reg.host}/test/img:v1`, { onProgress: (p) => events.push(p), onResolved: (r) => digests.push(r.digest) });
      expect(image.id).toBe(img.configDigest);
      expect(image.diffIds).toEqual(img.diffIds);
      expect(image.references).toEqual([`${reg.host}/test/img:v1`]);
      expect(digests).toEqual([img.manifestDigest]);
      expect(events.filter((e) => e.phase === 'done').map((e) => e.index)).toEqual([0, 1]);

      const c = await s.createContainer(image.id);
      const root = await s.mountContainer(c.id);
      try {
        expect(fs.readFileSync(path.join(root, 'etc/motd'), 'utf8')).toBe('top\n');
        expect(fs.existsSync(path.join(root, 'var/removed'))).toBe(false);
        expect(fs.readdirSync(path.join(root, 'opt'))).toEqual(['new']);
        expect(fs.readlinkSync(path.join(root, 'bin/alias'))).toBe('tool');
        expect(fs.statSync(path.join(root, 'bin/tool')).mode & 0o7777).toBe(0o4755);
        expect(fs.statSync(path.join(root, 'etc/owned'))).toMatchObject({ uid: 1000, gid: 1000 });
        expect(fs.readFileSync(path.join(root, 'var/blob'))).toEqual(noise('base', 300_000));
      } finally {
        await s.unmountContainer(c.id);
        await s.removeContainer(c.id);
      }

      // A second pull finds everything in place.
      const again: PullProgress[] = [];
      await s.pullImage(`${reg.host}/test/img:v1`, { onProgress: (p) => again.push(p) });
      expect(again.map((e) => e.phase)).toEqual(['already exists', 'already exists']);
    });

    test('pushes back under another name: blobs mounted, skopeo pulls the same image', async () => {
      const s = await store(`push-${driver}`, driver);
      await s.pullImage(`${reg.host}/test/img:v1`);
      const events: PushProgress[] = [];
      const pushed: PushResult[] = [];
      await s.pushImage(`${reg.host}/copies/${driver}:v1`, { image: `${reg.host}/test/img:v1`, onProgress: (p) => events.push(p), onPushed: (r) => pushed.push(r) });
      // Layers go concurrently: order the events by layer.
      expect(events.filter((e) => e.phase === 'mounted').sort((a, b) => a.index - b.index).map((e) => e.digest)).toEqual(img.blobDigests);
      const remote = await remoteManifest(`${reg.host}/copies/${driver}:v1`);
      expect(remote).toEqual({ mediaType: 'application/vnd.docker.distribution.manifest.v2+json', config: img.configDigest, layers: img.blobDigests });
      const inspect = JSON.parse(await skopeo(['inspect', '--tls-verify=false', `docker://${reg.host}/copies/${driver}:v1`])) as { Digest: string };
      expect(pushed.map((p) => p.digest)).toEqual([inspect.Digest]);
      const got = await skopeoPullDiffIds(`${reg.host}/copies/${driver}:v1`, path.join(tmp, `skopeo-copy-${driver}`));
      expect(got).toEqual({ config: img.configDigest, diffIds: img.diffIds });
    });

    test('with nothing known about the blobs, the exact original tars are recompressed and uploaded (monolithic and chunked)', async () => {
      const s = await store(`recompress-${driver}`, driver);
      await s.pullImage(`${reg.host}/test/img:v1`);
      await s.pullImage(`${reg.host}/test/big:v1`);
      // Forget the pulled blobs: the push has to produce the layers from the store.
      fs.rmSync(path.join(s.root, 'image', driver, 'distribution'), { recursive: true, force: true });
      const events: PushProgress[] = [];
      await s.pushImage(`${reg.host}/fresh/${driver}:v1`, { image: `${reg.host}/test/img:v1`, onProgress: (p) => events.push(p) });
      expect(events.filter((e) => e.phase === 'pushing').length).toBeGreaterThan(0);
      const got = await skopeoPullDiffIds(`${reg.host}/fresh/${driver}:v1`, path.join(tmp, `skopeo-fresh-${driver}`));
      expect(got).toEqual({ config: img.configDigest, diffIds: img.diffIds });

      await s.pushImage(`${reg.host}/chunked/${driver}:v1`, { image: `${reg.host}/test/big:v1`, chunkSize: 1 << 20, format: 'oci' });
      const remote = await remoteManifest(`${reg.host}/chunked/${driver}:v1`);
      expect(remote.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
      const gotBig = await skopeoPullDiffIds(`${reg.host}/chunked/${driver}:v1`, path.join(tmp, `skopeo-chunked-${driver}`));
      expect(gotBig).toEqual({ config: big.configDigest, diffIds: big.diffIds });
    });
  });

  test('an image imported into the store (never pulled) pushes, and skopeo reads it back', async () => {
    const s = await store('imported', drivers[drivers.length - 1]!);
    const tar = buildTar(baseLayer);
    const image = await s.importImage(Readable.from([tar]), { reference: `${reg.host}/imported/app:1` });
    await s.pushImage(`${reg.host}/imported/app:1`);
    const got = await skopeoPullDiffIds(`${reg.host}/imported/app:1`, path.join(tmp, 'skopeo-imported'));
    expect(got).toEqual({ config: image.id, diffIds: [sha(tar)] });
  });

  test('a download cut by the network resumes with a Range request', async () => {
    let proxy: CuttingProxy | null = null;
    try {
      proxy = await startCuttingProxy(reg.host);
      proxy.cut(1 << 20, 1);
      const s = await store('resume', 'vfs');
      const image = await s.pullImage(`${proxy.host}/test/big:v1`, { retry: { baseDelayMs: 10 } });
      expect(image.diffIds).toEqual(big.diffIds);
      const ranged = proxy.heads.filter((h) => h.startsWith(`GET /v2/test/big/blobs/${big.blobDigests[0]}`) && /\r\nrange: bytes=\d+-/i.test(h));
      expect(ranged.length).toBe(1);
      const start = Number(/\r\nrange: bytes=(\d+)-/i.exec(ranged[0]!)![1]);
      expect(start).toBeGreaterThan(0);
      expect(start).toBeLessThanOrEqual(1 << 20);
    } finally {
      await proxy?.stop();
    }
  });

  test('a blob corrupted in the registry storage is rejected and nothing is registered', async () => {
    const layout = writeOciLayout(path.join(tmp, 'layout-corrupt'), 'v1', [buildTar([{ name: 'c', data: noise('corrupt', 200_000) }])]);
    await skopeo(['copy', '--dest-tls-verify=false', `oci:${layout.dir}:v1`, `docker://${reg.host}/test/corrupt:v1`]);
    const file = reg.blobFile(layout.blobDigests[0]!);
    const data = fs.readFileSync(file);
    data[data.length >> 1] ^= 0x55;
    fs.writeFileSync(file, data);
    const s = await store('corrupt', 'vfs');
    await expect(s.pullImage(`${reg.host}/test/corrupt:v1`)).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    expect(await s.listLayers()).toEqual([]);
    expect(await s.listImages()).toEqual([]);
    expect(fs.readdirSync(path.join(s.root, 'vfs', 'dir'))).toEqual([]);
  });

  describeIf(haveTool('openssl') ? null : 'openssl is missing (self-signed certificate)', 'over TLS with a self-signed certificate', () => {
    let tlsReg: RunningRegistry;
    beforeAll(async () => {
      const dir = path.join(tmp, 'tls');
      fs.mkdirSync(dir, { recursive: true });
      tlsReg = await startRegistry(dir, undefined, await selfSignedCert(dir, '127.0.0.1'));
      await skopeo(['copy', '--dest-tls-verify=false', `oci:${img.dir}:v1`, `docker://${tlsReg.host}/test/img:v1`]);
    });
    afterAll(async () => {
      await tlsReg?.stop();
    });

    test('a loopback registry is used over TLS without verification, as Docker does', async () => {
      const s = await store('tls', 'vfs');
      const image = await s.pullImage(`${tlsReg.host}/test/img:v1`);
      expect(image.id).toBe(img.configDigest);
      await s.pushImage(`${tlsReg.host}/copy/img:v1`, { image: image.id });
      expect((await remoteManifest(`${tlsReg.host}/copy/img:v1`)).layers).toEqual(img.blobDigests);
      // Uploads over the unverified TLS connection too, monolithic and chunked (nothing known: recompressed).
      fs.rmSync(path.join(s.root, 'image', 'vfs', 'distribution'), { recursive: true, force: true });
      await s.pushImage(`${tlsReg.host}/mono/img:v1`, { image: image.id });
      await s.pushImage(`${tlsReg.host}/chunks/img:v1`, { image: image.id, chunkSize: 100_000 });
      for (const repo of ['mono', 'chunks']) {
        const got = await skopeoPullDiffIds(`${tlsReg.host}/${repo}/img:v1`, path.join(tmp, `skopeo-tls-${repo}`));
        expect(got).toEqual({ config: img.configDigest, diffIds: img.diffIds });
      }
    });
  });

  describeIf(haveTool('openssl') ? null : 'openssl is missing (token server certificate)', 'behind token auth', () => {
    let authDir: string;
    let tokens: TokenServer;
    let secured: RunningRegistry;
    const creds = { username: 'alice', password: 's3cret' };

    beforeAll(async () => {
      authDir = path.join(tmp, 'auth');
      fs.mkdirSync(authDir, { recursive: true });
      tokens = await startTokenServer(authDir, { alice: 's3cret' }, 'public/');
      secured = await startRegistry(path.join(tmp, 'secured'), tokens.auth);
      await skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:s3cret', `oci:${img.dir}:v1`, `docker://${secured.host}/public/img:v1`]);
    });
    afterAll(async () => {
      await secured?.stop();
      await tokens?.stop();
    });

    test('anonymous pull of a public repository; push needs credentials; skopeo reads the result', async () => {
      const s = await store('token', 'vfs');
      const image = await s.pullImage(`${secured.host}/public/img:v1`);
      expect(image.id).toBe(img.configDigest);
      expect(tokens.requests.some((r) => r.user === null && r.scopes.includes('repository:public/img:pull'))).toBe(true);
      await expect(s.pushImage(`${secured.host}/private/img:v1`, { image: image.id })).rejects.toMatchObject({ code: 'ERR_REGISTRY_AUTH' });
      await s.pushImage(`${secured.host}/private/img:v1`, { image: image.id, credentials: creds });
      expect(tokens.requests.some((r) => r.user === 'alice' && r.scopes.includes('repository:private/img:pull,push'))).toBe(true);
      const remote = await remoteManifest(`${secured.host}/private/img:v1`, 'alice:s3cret');
      expect(remote.config).toBe(img.configDigest);
      // The layers came over by cross-repository mount (the token covered pull on the source).
      expect(remote.layers).toEqual(img.blobDigests);
      await expect(s.pullImage(`${secured.host}/private/img:v1`)).rejects.toMatchObject({ code: 'ERR_REGISTRY_AUTH' });
      expect((await s.pullImage(`${secured.host}/private/img:v1`, { credentials: creds })).id).toBe(img.configDigest);
    });
  });
});
