/**
 * pullImage against the in-process fake registry, into a Storage on the in-memory driver: manifests and indexes,
 * platform selection, gzip/zstd/plain layers, layers already present, concurrency with in-order registration,
 * retries, Range resume after a cut connection, digest verification (nothing registered on mismatch), abort.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { registerDriver } from '../../lib/drivers/registry';
import { pullImage, type PullProgress } from '../../lib/registry/pull';
import { Storage } from '../../lib/storage/storage';
import { FakeDriver } from '../support/fake-driver';
import { fakeFsBindings } from '../support/fake-fs-bindings';
import { FakeRegistry, publishImage, publishIndex, sha } from '../support/fake-registry';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const fast = { retry: { baseDelayMs: 1, maxDelayMs: 5 } };

function layerTar(name: string, size = 1000): Buffer {
  // Pseudo-random content so that gzip does not shrink it to nothing (cuts need bytes to cut).
  const blocks: Buffer[] = [];
  for (let i = 0; i * 32 < size; i++) blocks.push(createHash('sha256').update(`${name}/${i}`).digest());
  const data = Buffer.concat(blocks).subarray(0, size);
  return buildTar([
    { name: `${name}/`, type: 'dir' },
    { name: `${name}/file`, data },
  ]);
}

describe('pullImage', () => {
  let tmp: string;
  let reg: FakeRegistry;
  let drivers: FakeDriver[];
  let storage: Storage;

  beforeAll(() => {
    registerDriver('fake', async (home) => {
      fs.mkdirSync(home, { recursive: true });
      const d = new FakeDriver(home);
      drivers.push(d);
      return d;
    });
  });
  beforeEach(async () => {
    tmp = makeTmp('gd-pull-unit-');
    drivers = [];
    reg = new FakeRegistry();
    await reg.start();
    storage = await Storage.open({ root: tmp, driver: 'fake', bindings: fakeFsBindings().bindings, sync: false });
  });
  afterEach(async () => {
    await storage.close().catch(() => undefined);
    await reg.stop();
    removeTmp(tmp);
  });

  const driver = (): FakeDriver => drivers[drivers.length - 1]!;
  /** The uncompressed tar the driver received for each layer of an image, bottom first. */
  const appliedTars = async (layers: string[]): Promise<Buffer[]> =>
    Promise.all(layers.map(async (c) => driver().layers.get((await storage.getLayer(c)).cacheId)!.data));
  const tmpEntries = (): string[] => fs.readdirSync(storage.layerStore.tmpDir);

  test('pulls a Docker schema 2 image: layers applied in order, verified, tagged, progress per layer', async () => {
    const tars = [layerTar('a'), layerTar('b'), layerTar('c')];
    const pub = publishImage(reg, 'team/app', 'v1', tars);
    const events: PullProgress[] = [];
    const resolved: string[] = [];
    const img = await storage.pullImage(`${reg.host}/team/app:v1`, {
      ...fast,
      onProgress: (p) => events.push(p),
      onResolved: (r) => resolved.push(r.digest),
    });
    expect(img.id).toBe(pub.configDigest);
    expect(img.diffIds).toEqual(tars.map((t) => sha(t)));
    expect(img.references).toEqual([`${reg.host}/team/app:v1`]);
    expect(await appliedTars(img.layers)).toEqual(tars);
    expect(resolved).toEqual([pub.manifestDigest]);
    for (let i = 0; i < 3; i++) {
      const mine = events.filter((e) => e.index === i);
      expect(mine[0]).toMatchObject({ phase: 'waiting', id: pub.blobDigests[i]!.slice(7, 19), total: pub.blobs[i]!.length });
      expect(mine[mine.length - 1]).toMatchObject({ phase: 'done', bytes: pub.blobs[i]!.length });
      const dl = mine.filter((e) => e.phase === 'downloading');
      expect(dl.length).toBeGreaterThan(0);
      expect(dl[dl.length - 1]!.bytes).toBe(pub.blobs[i]!.length);
    }
    // Registration order is the chain order even though downloads overlap.
    const dones = events.filter((e) => e.phase === 'done').map((e) => e.index);
    expect(dones).toEqual([0, 1, 2]);
    // Docker-compatible distribution metadata was recorded for later pushes.
    const meta = JSON.parse(fs.readFileSync(path.join(storage.imageStore.dir, 'distribution', 'v2metadata-by-diffid', 'sha256', img.diffIds[0]!.slice(7)), 'utf8'));
    expect(meta).toEqual([{ Digest: pub.blobDigests[0], SourceRepository: `${reg.host}/team/app`, HMAC: '', MediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip' }]);
    expect(tmpEntries()).toEqual([]);
  });

  test('downloads at most `concurrency` blobs at once and still registers bottom-up', async () => {
    /** Holds every blob GET until `limit` are waiting, checks no more come, releases them. */
    const pullHeld = async (repo: string, limit: number, concurrency?: number): Promise<void> => {
      const tars = Array.from({ length: 6 }, (_, i) => layerTar(`${repo}${i}`, 20000));
      const pub = publishImage(reg, repo, 'latest', tars);
      reg.maxActiveBlobGets = 0;
      reg.holdBlobs([pub.configDigest]);
      const p = storage.pullImage(`${reg.host}/${repo}`, concurrency === undefined ? fast : { ...fast, concurrency });
      while (reg.activeBlobGets < limit) await new Promise((r) => setTimeout(r, 5));
      // Nothing finishes while they are held, so no further download may start.
      await new Promise((r) => setTimeout(r, 100));
      expect(reg.activeBlobGets).toBe(limit);
      reg.releaseBlobs();
      const img = await p;
      expect(reg.maxActiveBlobGets).toBe(limit);
      expect(await appliedTars(img.layers)).toEqual(tars);
    };
    await pullHeld('two', 2, 2);
    await pullHeld('three', 3);
  });

  test('OCI manifests with zstd, gzip and uncompressed layers', async () => {
    const z = publishImage(reg, 'oci/z', 'latest', [layerTar('z1'), layerTar('z2')], { format: 'oci', compression: 'zstd' });
    const n = publishImage(reg, 'oci/n', 'latest', [layerTar('n1')], { format: 'oci', compression: 'none' });
    const zi = await storage.pullImage(`${reg.host}/oci/z`, fast);
    expect(zi.id).toBe(z.configDigest);
    expect(await appliedTars(zi.layers)).toEqual([layerTar('z1'), layerTar('z2')]);
    const ni = await storage.pullImage(`${reg.host}/oci/n`, fast);
    expect(ni.id).toBe(n.configDigest);
  });

  test('layers already in the store are not downloaded again', async () => {
    const base = [layerTar('base1'), layerTar('base2')];
    const a = publishImage(reg, 'app', 'a', base);
    const b = publishImage(reg, 'app', 'b', [...base, layerTar('top')]);
    await storage.pullImage(`${reg.host}/app:a`, fast);
    const events: PullProgress[] = [];
    const img = await storage.pullImage(`${reg.host}/app:b`, { ...fast, onProgress: (p) => events.push(p) });
    expect(img.id).toBe(b.configDigest);
    expect(events.filter((e) => e.phase === 'already exists').map((e) => e.index)).toEqual([0, 1]);
    for (const d of a.blobDigests) expect(reg.blobRequests(d)).toHaveLength(1);
    expect(reg.blobRequests(b.blobDigests[2]!)).toHaveLength(1);
    // Pulling the same image again downloads nothing.
    const before = reg.requests.length;
    await storage.pullImage(`${reg.host}/app:b`, fast);
    expect(reg.requests.slice(before).filter((r) => r.path.includes('/blobs/sha256:') && r.method === 'GET').map((r) => r.path)).toEqual([
      `/v2/app/blobs/${b.configDigest}`,
    ]);
    expect((await storage.listLayers()).length).toBe(3);
  });

  test('a manifest list resolves to linux/amd64 by default, or to the platform asked for', async () => {
    const amd = publishImage(reg, 'multi', null, [layerTar('amd')], { architecture: 'amd64' });
    const arm = publishImage(reg, 'multi', null, [layerTar('arm')], { architecture: 'arm64', variant: 'v8' });
    const armv6 = publishImage(reg, 'multi', null, [layerTar('armv6')], { architecture: 'arm', variant: 'v6' });
    const idx = publishIndex(reg, 'multi', 'latest', [
      { image: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { image: armv6, platform: { os: 'linux', architecture: 'arm', variant: 'v6' } },
      { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
    ]);
    const resolved: Array<{ digest: string; manifestDigest: string }> = [];
    const img = await storage.pullImage(`${reg.host}/multi`, { ...fast, onResolved: (r) => resolved.push(r) });
    expect(img.id).toBe(amd.configDigest);
    expect(resolved).toEqual([expect.objectContaining({ digest: idx, manifestDigest: amd.manifestDigest, platform: { os: 'linux', architecture: 'amd64' } })]);
    await storage.removeImage(img.id);
    expect((await storage.pullImage(`${reg.host}/multi`, { ...fast, platform: 'linux/aarch64' })).id).toBe(arm.configDigest);
    // An arm/v7 machine runs v6 images.
    expect((await storage.pullImage(`${reg.host}/multi`, { ...fast, platform: 'linux/arm/v7' })).id).toBe(armv6.configDigest);
  });

  test('no entry for the platform: ERR_NO_MATCHING_PLATFORM naming what there is, nothing stored', async () => {
    const arm = publishImage(reg, 'armonly', null, [layerTar('x')], { architecture: 'arm64' });
    publishIndex(reg, 'armonly', 'latest', [{ image: arm, platform: { os: 'linux', architecture: 'arm64' } }], 'docker');
    await expect(storage.pullImage(`${reg.host}/armonly`, fast)).rejects.toMatchObject({
      code: 'ERR_NO_MATCHING_PLATFORM',
      message: expect.stringContaining('linux/arm64'),
    });
    // A single-platform image that does not match an explicit platform is refused too.
    publishImage(reg, 'single', 'latest', [layerTar('s')], { architecture: 'arm64' });
    await expect(storage.pullImage(`${reg.host}/single`, { ...fast, platform: 'linux/amd64' })).rejects.toMatchObject({ code: 'ERR_NO_MATCHING_PLATFORM' });
    expect(await storage.listLayers()).toEqual([]);
    expect(await storage.listImages()).toEqual([]);
  });

  test('pull by digest; a tampered manifest fails with ERR_DIGEST_MISMATCH', async () => {
    const pub = publishImage(reg, 'pinned', 'latest', [layerTar('p')]);
    const img = await storage.pullImage(`${reg.host}/pinned@${pub.manifestDigest}`, fast);
    expect(img.references).toEqual([`${reg.host}/pinned@${pub.manifestDigest}`]);
    // Same bytes served under another digest.
    const fake = `sha256:${'1'.repeat(64)}`;
    reg.manifests.get('pinned')!.set(fake, { bytes: pub.manifest, mediaType: pub.mediaType });
    await expect(storage.pullImage(`${reg.host}/pinned@${fake}`, fast)).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    // By tag, the registry's Docker-Content-Digest must match the bytes.
    reg.lieAboutManifestDigest = fake;
    await expect(storage.pullImage(`${reg.host}/pinned:latest`, fast)).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
  });

  test('a corrupted blob is rejected and nothing of the pull stays, even layers registered before it', async () => {
    const tars = [layerTar('ok1'), layerTar('ok2'), layerTar('bad', 50000)];
    const pub = publishImage(reg, 'corrupt', 'latest', tars);
    const bad = Buffer.from(pub.blobs[2]!);
    bad[bad.length - 20] ^= 0xff;
    reg.corrupt.set(pub.blobDigests[2]!, bad);
    await expect(storage.pullImage(`${reg.host}/corrupt`, fast)).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    expect(await storage.listLayers()).toEqual([]);
    expect(await storage.listImages()).toEqual([]);
    expect([...driver().layers.keys()]).toEqual([]);
    expect(tmpEntries()).toEqual([]);
  });

  test('a corrupted config blob, or a layer whose tar is not the diffID the config names, is rejected', async () => {
    const pub = publishImage(reg, 'cfg', 'latest', [layerTar('c')]);
    reg.corrupt.set(pub.configDigest, Buffer.from(pub.config.toString().replace('amd64', 'arm64')));
    await expect(storage.pullImage(`${reg.host}/cfg`, fast)).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });

    const wrong = publishImage(reg, 'diffid', 'latest', [layerTar('d1'), layerTar('d2')], { diffIds: [sha(layerTar('d1')), sha('something else')] });
    await expect(storage.pullImage(`${reg.host}/diffid`, fast)).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    expect(await storage.listLayers()).toEqual([]);
    expect(wrong.blobDigests).toHaveLength(2);
  });

  test('transient errors are retried with backoff (503, 429 with Retry-After, on manifests and blobs)', async () => {
    const pub = publishImage(reg, 'flaky', 'latest', [layerTar('f')]);
    reg.fail(/\/manifests\//, 503, 2);
    reg.fail(/\/blobs\/sha256:/, 429, 1, { headers: { 'retry-after': '0' } });
    reg.fail(new RegExp(pub.blobDigests[0]!), 502, 1);
    const img = await storage.pullImage(`${reg.host}/flaky`, fast);
    expect(img.id).toBe(pub.configDigest);
    expect(reg.requests.filter((r) => r.status === 503 || r.status === 429 || r.status === 502)).toHaveLength(4);
  });

  test('retries give up after the configured attempts with ERR_REGISTRY; a 404 is not retried', async () => {
    publishImage(reg, 'down', 'latest', [layerTar('x')]);
    reg.fail(/\/manifests\//, 503, 3);
    await expect(storage.pullImage(`${reg.host}/down`, { retry: { attempts: 3, baseDelayMs: 1 } })).rejects.toMatchObject({ code: 'ERR_REGISTRY', status: 503 });
    expect(reg.requests.filter((r) => r.path.includes('/manifests/'))).toHaveLength(3);
    const before = reg.requests.length;
    await expect(storage.pullImage(`${reg.host}/nothing:here`, fast)).rejects.toMatchObject({ code: 'ERR_MANIFEST_NOT_FOUND' });
    expect(reg.requests.slice(before).filter((r) => r.path.includes('/manifests/'))).toHaveLength(1);
  });

  test('a connection cut mid-blob resumes with a Range request from the first missing byte', async () => {
    const tars = [layerTar('big', 200000)];
    const pub = publishImage(reg, 'resume', 'latest', tars);
    const d = pub.blobDigests[0]!;
    reg.cuts.set(d, { after: 65536, times: 2 });
    const img = await storage.pullImage(`${reg.host}/resume`, fast);
    expect(await appliedTars(img.layers)).toEqual(tars);
    const gets = reg.blobRequests(d);
    expect(gets).toHaveLength(3);
    expect(gets[0]!.range).toBeUndefined();
    expect(gets[1]!.range).toBe('bytes=65536-');
    expect(gets[2]!.range).toBe(`bytes=${65536 * 2}-`);
  });

  test('a registry without Range support sends the whole blob again: the part already seen is skipped', async () => {
    const tars = [layerTar('norange', 150000)];
    const pub = publishImage(reg, 'norange', 'latest', tars);
    reg.noRange = true;
    reg.cuts.set(pub.blobDigests[0]!, { after: 40000, times: 1 });
    const img = await storage.pullImage(`${reg.host}/norange`, fast);
    expect(await appliedTars(img.layers)).toEqual(tars);
    expect(reg.blobRequests(pub.blobDigests[0]!).map((r) => r.status)).toEqual([200, 200]);
  });

  test('an aborted pull rejects with the abort reason and leaves nothing behind', async () => {
    const tars = [layerTar('ab1', 100000), layerTar('ab2', 100000), layerTar('ab3', 100000)];
    publishImage(reg, 'abort', 'latest', tars);
    reg.blobDelayMs = 20;
    const ac = new AbortController();
    let registered = 0;
    const p = storage.pullImage(`${reg.host}/abort`, {
      ...fast,
      signal: ac.signal,
      onProgress: (e) => {
        if (e.phase === 'done') registered++;
        if (e.phase === 'done' && e.index === 0) ac.abort();
      },
    });
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    expect(registered).toBe(1);
    expect(await storage.listLayers()).toEqual([]);
    expect(tmpEntries()).toEqual([]);
    // An already aborted signal fails at once.
    await expect(storage.pullImage(`${reg.host}/abort`, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
  });

  test('schema 1 manifests and artifacts are refused with ERR_UNSUPPORTED_MANIFEST', async () => {
    reg.addManifest('old', 'latest', Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'old', tag: 'latest', fsLayers: [] })), 'application/vnd.docker.distribution.manifest.v1+prettyjws');
    await expect(storage.pullImage(`${reg.host}/old`, fast)).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_MANIFEST' });
    const cfg = reg.addBlob('art', Buffer.from('{}'));
    reg.addManifest(
      'art',
      'latest',
      Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.cncf.helm.config.v1+json', digest: cfg, size: 2 }, layers: [] })),
      'application/vnd.oci.image.manifest.v1+json',
    );
    await expect(storage.pullImage(`${reg.host}/art`, fast)).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_MANIFEST' });
  });

  test('the lower-level pullImage reports the manifest it used', async () => {
    const pub = publishImage(reg, 'low', 'x', [layerTar('low')]);
    const r = await pullImage({ layers: storage.layerStore, images: storage.imageStore, spoolDir: storage.layerStore.tmpDir }, `${reg.host}/low:x`, fast);
    expect(r).toMatchObject({ reference: `${reg.host}/low:x`, digest: pub.manifestDigest, manifestDigest: pub.manifestDigest, mediaType: pub.mediaType });
    expect(r.image.id).toBe(pub.configDigest);
  });
});
